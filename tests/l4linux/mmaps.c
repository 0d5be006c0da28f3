/* File-backed mmap of files of the personality's RAM file system: MAP_PRIVATE maps of a
 * file (whole, at a page offset), a write to a private mapping that leaves the file as it
 * was, a shared read-only map, /dev/zero, and the errors Linux answers (a pipe, a bad
 * descriptor, a write-only one). tests/l4linux/test_personality.py compares with the
 * native run; the file is made by the program itself. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(void) {
    char page[4096 * 2];
    for (int i = 0; i < (int)sizeof page; i++)
        page[i] = 'a' + i / 4096;
    int fd = open("mapped.txt", O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, page, sizeof page) != (ssize_t)sizeof page)
        return 2;
    char *m = mmap(NULL, sizeof page, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED)
        return 3;
    printf("private: %c %c\n", m[0], m[4096]);
    m[0] = 'X';                                      /* copy-on-write: the file keeps 'a' */
    char c;
    pread(fd, &c, 1, 0);
    printf("after a private write: mapping %c file %c\n", m[0], c);
    char *second = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 4096);
    printf("offset: %c\n", second == MAP_FAILED ? '?' : second[0]);
    char *shared = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
    printf("shared read-only: %c\n", shared == MAP_FAILED ? '?' : shared[10]);
    close(fd);
    printf("still mapped after close: %c\n", m[4097]);
    int z = open("/dev/zero", O_RDONLY);
    char *zero = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, z, 0);
    printf("/dev/zero: %d\n", zero == MAP_FAILED ? -1 : zero[100]);
    int p[2];
    pipe(p);
    void *bad = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, p[0], 0);
    printf("pipe: %s\n", bad == MAP_FAILED ? strerror(errno) : "mapped");
    bad = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, 99, 0);
    printf("bad fd: %s\n", bad == MAP_FAILED ? strerror(errno) : "mapped");
    int wo = open("mapped.txt", O_WRONLY);
    bad = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, wo, 0);
    printf("write-only: %s\n", bad == MAP_FAILED ? strerror(errno) : "mapped");
    unlink("mapped.txt");
    return 0;
}
