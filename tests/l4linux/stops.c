/* Job-control stops of a child: SIGSTOP and SIGTSTP (its default action) stop it, SIGCONT
 * continues it; the parent's wait4 (WUNTRACED, WCONTINUED) and waitid (WSTOPPED,
 * WCONTINUED) report each change once, SIGCHLD comes; a sleep the child was in
 * goes on after it is continued. tests/l4linux/test_personality.py compares with the
 * native run. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile int chld;
static void on_chld(int sig) { (void)sig; chld++; }

static void nap(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0) {}
}

static const char *how(int st) {
    static char buf[64];
    if (WIFSTOPPED(st)) snprintf(buf, sizeof buf, "stopped by %d", WSTOPSIG(st));
    else if (WIFCONTINUED(st)) snprintf(buf, sizeof buf, "continued");
    else if (WIFEXITED(st)) snprintf(buf, sizeof buf, "exited %d", WEXITSTATUS(st));
    else snprintf(buf, sizeof buf, "killed by %d", WTERMSIG(st));
    return buf;
}

int main(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_chld;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    int fds[2];
    pipe(fds);
    pid_t pid = fork();
    if (pid == 0) {
        nap(300);                                   /* stopped and continued meanwhile */
        write(fds[1], "slept\n", 6);
        for (;;)
            pause();
    }
    int st;
    nap(50);
    kill(pid, SIGSTOP);
    printf("wait4: %s\n", waitpid(pid, &st, WUNTRACED) == pid ? how(st) : "?");
    printf("again (WNOHANG): %d\n", waitpid(pid, &st, WUNTRACED | WNOHANG));
    kill(pid, SIGCONT);
    printf("wait4: %s\n", waitpid(pid, &st, WCONTINUED) == pid ? how(st) : "?");
    kill(pid, SIGTSTP);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    waitid(P_PID, pid, &si, WSTOPPED);
    printf("waitid: code %d status %d\n", si.si_code, si.si_status);
    kill(pid, SIGCONT);
    memset(&si, 0, sizeof si);
    waitid(P_PID, pid, &si, WCONTINUED);
    printf("waitid: code %d status %d\n", si.si_code, si.si_status);
    char buf[16];
    ssize_t n = read(fds[0], buf, sizeof buf);
    printf("child: %.*s", (int)n, buf);
    kill(pid, SIGTERM);
    printf("wait4: %s\n", waitpid(pid, &st, 0) == pid ? how(st) : "?");
    printf("SIGCHLD %s\n", chld > 0 ? "came" : "missing");
    return 0;
}
