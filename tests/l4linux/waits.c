/* select, pselect6, poll, waitid, statx: run under the personality and natively, the
   output compared (tests/l4linux/test_personality.py). */
#define _GNU_SOURCE
#include <stdio.h>
#include <unistd.h>
#include <poll.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <time.h>
int main(void) {
    int p[2]; pipe(p);
    fd_set r; FD_ZERO(&r); FD_SET(p[0], &r);
    struct timeval tv = {0, 100000};
    int n = select(p[0] + 1, &r, 0, 0, &tv);
    printf("select empty: %d\n", n);
    write(p[1], "x", 1);
    FD_ZERO(&r); FD_SET(p[0], &r);
    fd_set w; FD_ZERO(&w); FD_SET(p[1], &w);
    n = select(p[1] + 1, &r, &w, 0, 0);
    printf("select: %d r=%d w=%d\n", n, FD_ISSET(p[0], &r), FD_ISSET(p[1], &w));
    struct timespec ts = {0, 50000000};
    FD_ZERO(&r); FD_SET(p[0], &r);
    n = pselect(p[0] + 1, &r, 0, 0, &ts, 0);
    printf("pselect: %d\n", n);
    struct pollfd pf = {p[0], POLLIN, 0};
    n = poll(&pf, 1, 0);
    printf("poll: %d %d\n", n, pf.revents);
    pid_t c = fork();
    if (c == 0) { usleep(100000); _exit(9); }
    siginfo_t si = {0};
    n = waitid(P_PID, c, &si, WEXITED | WNOWAIT);
    printf("waitid nowait: %d code=%d status=%d same=%d\n", n, si.si_code, si.si_status, si.si_pid == c);
    n = waitid(P_ALL, 0, &si, WEXITED);
    printf("waitid: %d code=%d status=%d\n", n, si.si_code, si.si_status);
    n = waitid(P_ALL, 0, &si, WEXITED);
    printf("waitid none: %d\n", n);
    c = fork();
    if (c == 0) { pause(); _exit(0); }
    kill(c, SIGTERM);
    n = waitid(P_ALL, 0, &si, WEXITED);
    printf("waitid killed: %d code=%d status=%d\n", n, si.si_code, si.si_status);
    unsigned char sx[256];
    n = syscall(SYS_statx, AT_FDCWD, "/bin", 0, 0x7ff, sx);
    printf("statx: %d dir=%d\n", n, S_ISDIR(*(unsigned short *)(sx + 28)));
    n = syscall(SYS_statx, AT_FDCWD, "/nonexistent", 0, 0x7ff, sx);
    printf("statx missing: %d\n", n);
    return 0;
}
