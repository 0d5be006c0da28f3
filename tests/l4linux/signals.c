/* Signals under the personality, compared with the host (tests/l4linux/test_personality.py):
   - a SIGCHLD handler without SA_RESTART, children exiting all the time, and calls that
     never fail with EINTR on Linux (pipe, close, getpid, fork) made meanwhile: none fails;
   - a read of an empty pipe interrupted by a handled signal: EINTR without SA_RESTART,
     made again (and completed by the second write) with it;
   - nanosleep interrupted: EINTR (even with SA_RESTART) and the time left written back. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

static volatile int got;
static void on_signal(int sig) { (void)sig; got++; }

static void handle(int sig, int flags) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = flags;
    sigaction(sig, &sa, 0);
}

static int interrupted_read(int flags) {
    int p[2];
    pipe(p);
    handle(SIGUSR1, flags);
    pid_t c = fork();
    if (c == 0) {
        usleep(100000);
        kill(getppid(), SIGUSR1);
        usleep(100000);
        write(p[1], "y", 1);
        _exit(0);
    }
    char b;
    errno = 0;
    int n = read(p[0], &b, 1);
    int e = errno;
    if (n < 0) read(p[0], &b, 1);   /* the byte still comes */
    waitpid(c, 0, 0);
    close(p[0]); close(p[1]);
    return n < 0 ? -e : n;
}

int main(void) {
    handle(SIGCHLD, 0);
    int failures = 0, children = 0;
    for (int i = 0; i < 40; i++) {
        pid_t c = fork();
        if (c < 0) { failures++; continue; }
        if (c == 0) _exit(0);
        children++;
        for (int j = 0; j < 20; j++) {
            int p[2];
            if (pipe(p) < 0) { failures++; continue; }
            if (close(p[0]) < 0 || close(p[1]) < 0) failures++;
            if (getpid() <= 0) failures++;
        }
    }
    while (children > 0) {
        pid_t w = waitpid(-1, 0, 0);
        if (w > 0) children--;
        else if (errno != EINTR) break;
    }
    printf("sigchld: children left %d, calls failed %d\n", children, failures);
    printf("read, no SA_RESTART: %d (EINTR is -%d)\n", interrupted_read(0), EINTR);
    printf("read, SA_RESTART: %d\n", interrupted_read(SA_RESTART));
    handle(SIGUSR2, SA_RESTART);
    pid_t c = fork();
    if (c == 0) { usleep(100000); kill(getppid(), SIGUSR2); _exit(0); }
    struct timespec req = {5, 0}, rem = {0, 0};
    int n = nanosleep(&req, &rem);
    int e = errno;
    waitpid(c, 0, 0);
    printf("nanosleep: %d errno %d, left 4-5 s: %d\n", n, e, rem.tv_sec == 4);
    return 0;
}
