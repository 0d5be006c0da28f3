/* The clock calls (clock_gettime, gettimeofday, time, clock_getres), which libc makes
 * through the vDSO, in a process and in a fork child: tests/l4linux/test_clocks.py counts
 * them in the personality and checks the values are the host's time. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int reads(int n) {
    int bad = 0;
    struct timespec last = {0, 0}, now, res;
    for (int i = 0; i < n; i++) {
        struct timeval tv;
        struct timespec rt;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec < last.tv_sec || (now.tv_sec == last.tv_sec && now.tv_nsec < last.tv_nsec))
            bad++;                              /* monotonic went back */
        last = now;
        clock_gettime(CLOCK_REALTIME, &rt);
        gettimeofday(&tv, NULL);
        time_t t = time(NULL);
        if (tv.tv_sec + 1 < rt.tv_sec || t + 1 < tv.tv_sec || t > rt.tv_sec + 2)
            bad++;                              /* the realtime readings disagree */
        if (clock_getres(CLOCK_MONOTONIC, &res) != 0 || res.tv_sec != 0 || res.tv_nsec <= 0)
            bad++;
    }
    return bad;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 100;
    int bad = reads(n);
    pid_t pid = fork();
    if (pid == 0)
        _exit(reads(n) ? 1 : 0);
    int status = -1;
    waitpid(pid, &status, 0);
    printf("time %lld bad %d child %d\n", (long long)time(NULL), bad, status);
    return bad || status;
}
