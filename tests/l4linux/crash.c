/* Crashes as Linux reports them (tests/l4linux/test_crash.py): `crash segv` dereferences
 * NULL (SIGSEGV), `crash abort` calls abort() (SIGABRT), `crash fpe` divides by zero
 * (SIGFPE). The shell that runs it says 128 + the signal, under the personality as natively. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    volatile int zero = 0;
    int *volatile null = NULL;
    const char *how = argc > 1 ? argv[1] : "";
    fflush(stdout);
    if (!strcmp(how, "segv"))
        return *null;
    if (!strcmp(how, "abort"))
        abort();
    if (!strcmp(how, "fpe"))
        return (argc + 40) / zero;      /* not 1 / x: gcc makes that a comparison */
    printf("usage: crash segv|abort|fpe\n");
    return 2;
}
