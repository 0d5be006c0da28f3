/* Random system-call numbers and arguments (tests/l4linux): the personality must answer
 * every one (mostly -EFAULT, -EINVAL, -ENOSYS) and keep serving. Skipped: calls that end,
 * fork, block or signal this process, or change its own memory natively (a crash would
 * end the run early; that a crash is survived is tested elsewhere), and 335 (uretprobe:
 * the host itself answers SIGILL). Never run it natively. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>
static const int skip[] = {0, 3, 9, 335, 33, 292, 7, 10, 11, 12, 13, 15, 22, 23, 25, 28, 34, 35, 56, 57, 58, 59, 60, 61, 62,
    101, 128, 130, 158, 200, 202, 218, 230, 231, 234, 270, 271, 281, 293, 322, 435, -1};
static unsigned long long rnd(void) {
    unsigned long long r = ((unsigned long long)random() << 33) ^ ((unsigned long long)random() << 2) ^ random();
    switch (random() % 6) { case 0: return r & 0xff; case 1: return 0; case 2: return (unsigned long long)-1; default: return r; }
}
int main(int argc, char **argv) {
    srandom(argc > 1 ? atoi(argv[1]) : 1);
    int n = 0;
    for (int i = 0; i < 3000; i++) {
        long nr = random() % 450; int bad = 0;
        for (int j = 0; skip[j] >= 0; j++) if (skip[j] == nr) bad = 1;
        if (bad) continue;
        syscall(nr, rnd(), rnd(), rnd(), rnd(), rnd(), rnd());
        n++;
    }
    char msg[64]; int len = snprintf(msg, sizeof msg, "survived %d\n", n);
    syscall(SYS_write, 1, msg, len);
    return 0;
}
