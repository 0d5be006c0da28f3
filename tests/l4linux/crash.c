/* Crashes as Linux reports them (tests/l4linux/test_crash.py): `crash segv` dereferences
 * NULL (SIGSEGV), `crash abort` calls abort() (SIGABRT), `crash fpe` divides by zero
 * (SIGFPE). The shell that runs it says 128 + the signal, under the personality as natively.
 * `crash fork HOW`: a fork child crashes so, without an execve (its host parent is this
 * process, not the personality), and this parent prints what waitpid said. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int crash(const char *how, int argc);

int main(int argc, char **argv) {
    const char *how = argc > 1 ? argv[1] : "";
    fflush(stdout);
    if (!strcmp(how, "fork") && argc > 2) {
        int status = 0;
        pid_t pid = fork();
        if (pid == 0)
            _exit(crash(argv[2], argc));
        if (pid < 0 || waitpid(pid, &status, 0) != pid)
            return 3;
        if (WIFSIGNALED(status))
            printf("child killed by signal %d\n", WTERMSIG(status));
        else
            printf("child exited %d\n", WEXITSTATUS(status));
        return 0;
    }
    return crash(how, argc);
}

static int crash(const char *how, int argc) {
    volatile int zero = 0;
    int *volatile null = NULL;
    if (!strcmp(how, "segv"))
        return *null;
    if (!strcmp(how, "abort"))
        abort();
    if (!strcmp(how, "fpe"))
        return (argc + 40) / zero;      /* not 1 / x: gcc makes that a comparison */
    printf("usage: crash segv|abort|fpe\n");
    return 2;
}
