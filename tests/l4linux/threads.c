/* Threads of one Linux process (CLONE_THREAD): four workers take turns under a mutex and
 * a condition variable and write their lines to one pipe the main thread reads; each has
 * its own tid; one ends by pthread_exit, the rest by returning; join collects their
 * results. With an argument: "group-exit" — a thread ends the whole process with exit(7)
 * while the main thread waits in a read; "leader-exits" — the main thread ends first
 * (pthread_exit) and the process lives on in its other thread; "thread-signal" — a signal
 * sent to one thread (pthread_kill) ends that thread's read with EINTR, runs the handler
 * in that thread, and leaves the main thread's sleep alone; "process-signal" — a signal to
 * the whole process (kill) that every thread but the reader blocks is taken by the reader,
 * ending its read with EINTR.
 * tests/l4linux/test_threads.py compares output and status with the native run. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 4
#define LINES 50

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t turn_changed = PTHREAD_COND_INITIALIZER;
static int turn, fds[2];
static long tids[WORKERS];

static void *worker(void *arg) {
    int me = (int)(long)arg;
    tids[me] = syscall(SYS_gettid);
    for (int n = 0; n < LINES; n++) {
        pthread_mutex_lock(&lock);
        while (turn % WORKERS != me)
            pthread_cond_wait(&turn_changed, &lock);
        char line[32];
        int len = snprintf(line, sizeof line, "t%d %d\n", me, n);
        if (write(fds[1], line, len) != len)
            abort();
        turn++;
        pthread_cond_broadcast(&turn_changed);
        pthread_mutex_unlock(&lock);
    }
    if (me == WORKERS - 1)
        pthread_exit((void *)(long)(100 + me));
    return (void *)(long)(100 + me);
}

static void *sleeper(void *arg) {
    struct timespec t = {0, 100 * 1000 * 1000};
    nanosleep(&t, NULL);
    if (arg) {
        printf("worker: exit 7\n");
        fflush(stdout);
        exit(7);                        /* exit_group: every thread goes */
    }
    printf("worker: the main thread is gone, I am not\n");
    return NULL;                        /* the last thread: the process ends, status 0 */
}

static volatile long handled_in;

static void on_usr1(int sig) {
    (void)sig;
    handled_in = syscall(SYS_gettid);
}

static void *reader(void *arg) {
    (void)arg;
    char c;
    tids[0] = syscall(SYS_gettid);
    ssize_t n = read(fds[0], &c, 1);                /* nobody writes */
    printf("reader: read %zd %s, handler ran in %s\n", n, n < 0 && errno == EINTR ? "EINTR" : "?",
           handled_in == tids[0] ? "the reader" : "another thread");
    return NULL;
}

int main(int argc, char **argv) {
    pthread_t th[WORKERS];
    if (pipe(fds) != 0)
        return 2;
    if (argc > 1 && strcmp(argv[1], "process-signal") == 0) {
        struct sigaction sa;
        sigset_t usr1;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_usr1;                    /* no SA_RESTART: read ends in EINTR */
        sigaction(SIGUSR1, &sa, NULL);
        setvbuf(stdout, NULL, _IONBF, 0);
        if (pthread_create(&th[0], NULL, reader, NULL) != 0)
            return 3;
        sigemptyset(&usr1);
        sigaddset(&usr1, SIGUSR1);
        pthread_sigmask(SIG_BLOCK, &usr1, NULL);    /* only the reader may take it */
        struct timespec t = {0, 200 * 1000 * 1000};
        nanosleep(&t, NULL);                        /* the reader waits in its read */
        kill(getpid(), SIGUSR1);
        pthread_join(th[0], NULL);
        printf("main: kill(getpid()) taken by %s\n",
               handled_in == tids[0] ? "the reader" : "another thread");
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "thread-signal") == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_usr1;                    /* no SA_RESTART: read ends in EINTR */
        sigaction(SIGUSR1, &sa, NULL);
        setvbuf(stdout, NULL, _IONBF, 0);
        if (pthread_create(&th[0], NULL, reader, NULL) != 0)
            return 3;
        struct timespec t = {0, 200 * 1000 * 1000}, left = {0, 0};
        nanosleep(&t, NULL);                        /* the reader waits in its read */
        pthread_kill(th[0], SIGUSR1);
        t.tv_nsec = 50 * 1000 * 1000;
        int slept = nanosleep(&t, &left);           /* not interrupted: not this thread's */
        pthread_join(th[0], NULL);
        printf("main: nanosleep %d, handler ran %s main\n", slept,
               handled_in == getpid() ? "in" : "not in");
        return 0;
    }
    if (argc > 1) {
        int group = strcmp(argv[1], "group-exit") == 0;
        setvbuf(stdout, NULL, _IONBF, 0);
        if (pthread_create(&th[0], NULL, sleeper, group ? (void *)1 : NULL) != 0)
            return 3;
        if (group) {
            char c;
            read(fds[0], &c, 1);        /* nobody writes: exit(7) ends it */
            return 5;
        }
        printf("main: pthread_exit\n");
        pthread_exit(NULL);
    }
    for (long i = 0; i < WORKERS; i++)
        if (pthread_create(&th[i], NULL, worker, (void *)i) != 0)
            return 3;
    /* read every line while the workers write (the pipe holds less than all of them) */
    static char all[WORKERS * LINES * 16];
    size_t got = 0;
    int lines = 0;
    while (lines < WORKERS * LINES) {
        ssize_t n = read(fds[0], all + got, sizeof all - got);
        if (n <= 0)
            return 4;
        for (ssize_t i = 0; i < n; i++)
            lines += all[got + i] == '\n';
        got += n;
    }
    long sum = 0;
    for (int i = 0; i < WORKERS; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        sum += (long)ret;
    }
    int distinct = 1;
    for (int i = 0; i < WORKERS; i++)
        for (int j = 0; j < WORKERS; j++)
            if ((i != j && tids[i] == tids[j]) || tids[i] == getpid() || tids[i] <= 0)
                distinct = 0;
    fwrite(all, 1, got, stdout);
    printf("joined %ld tids distinct %d main tid is pid %d\n", sum, distinct,
           (int)syscall(SYS_gettid) == getpid());
    return 0;
}
