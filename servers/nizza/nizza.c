/* nizza: the untrusted part's helper, a static hybrid Linux program (docs/NIZZA.md).
 * Built with musl-gcc -static against servers/l4linux/include/l4py.h by servers/nizza/build.py.
 *
 *   nizza pubkey            the signer's public key, in hex           (SIGNER.pubkey)
 *   nizza sign FILE         ask the signer to sign FILE: the user approves it with the
 *                           PIN in the signer's window; the signature in hex (SIGNER.sign)
 *   nizza seal NAME         stdin -> stdout: sealed by the vault under NAME (VAULT.seal)
 *   nizza unseal NAME       stdin -> stdout: the inverse                (VAULT.unseal)
 *   nizza probe NAME        whether this program may use capability NAME (the handle,
 *                           or the error): what an attacker learns by trying
 *   nizza raw NAME TAG HEX  send the bytes HEX with protocol tag TAG through NAME; print
 *                           the answer in hex (a hand-made, possibly forged, request)
 *
 * It holds no key and sees no PIN: it only passes bytes to the trusted tasks through the
 * capabilities "signer" and "vault" the image grants /bin/nizza ([linux] hybrid). Messages
 * are the protocols' msgpack (servers/nizza/protocol.py): request [op, args...], answer
 * [0, bin] or [status, error, reason].
 * Exit: 0 done, 1 the server refused (its declared error on stderr), 2 an L4 error (no
 * capability, timeout...), 3 an answer out of protocol, 64 usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "l4py.h"

#define SIGNER_TAG 0x5347
#define VAULT_TAG 0x5654
#define MAX_DATA 60000
#define BUF (MAX_DATA + 512)

static unsigned char req[BUF], ans[BUF];

static size_t put_len(unsigned char *p, unsigned char base8, size_t n)
{   /* a str or bin header: base8 is 0xd9 (str8) or 0xc4 (bin8); +1 / +2 are 16 / 32 bit */
    if (base8 == 0xd9 && n < 32) { p[0] = (unsigned char)(0xa0 | n); return 1; }
    if (n < 256) { p[0] = base8; p[1] = (unsigned char)n; return 2; }
    if (n < 65536) { p[0] = base8 + 1; p[1] = (unsigned char)(n >> 8); p[2] = (unsigned char)n; return 3; }
    p[0] = base8 + 2; p[1] = (unsigned char)(n >> 24); p[2] = (unsigned char)(n >> 16);
    p[3] = (unsigned char)(n >> 8); p[4] = (unsigned char)n; return 5;
}

static size_t put(unsigned char *p, unsigned char base8, const void *data, size_t n)
{
    size_t h = put_len(p, base8, n);
    memcpy(p + h, data, n);
    return h + n;
}

/* A str or bin at ans[*off]: its length (or -1), *off moved to its bytes. */
static long get_len(size_t *off, size_t end)
{
    if (*off >= end) return -1;
    unsigned char c = ans[*off];
    size_t n, h;
    if ((c & 0xe0) == 0xa0) { n = c & 0x1f; h = 1; }
    else if (c == 0xc4 || c == 0xd9) { if (*off + 2 > end) return -1; n = ans[*off + 1]; h = 2; }
    else if (c == 0xc5 || c == 0xda) {
        if (*off + 3 > end) return -1;
        n = (size_t)ans[*off + 1] << 8 | ans[*off + 2]; h = 3;
    } else if (c == 0xc6 || c == 0xdb) {
        if (*off + 5 > end) return -1;
        n = (size_t)ans[*off + 1] << 24 | (size_t)ans[*off + 2] << 16 |
            (size_t)ans[*off + 3] << 8 | ans[*off + 4]; h = 5;
    } else return -1;
    if (*off + h + n > end) return -1;
    *off += h;
    return (long)n;
}

/* Call `capname` with req[0..len): the answer's bytes at ans + *out, their count, or exit. */
static size_t call(const char *capname, size_t len, long tag, long timeout_ms, size_t *out)
{
    long cap = l4_cap(capname);
    if (cap < 0) {
        fprintf(stderr, "nizza: capability %s: %s\n", capname, strerror((int)-cap));
        exit(2);
    }
    struct l4_msg m = { .snd = req, .snd_len = len, .rcv = ans, .rcv_max = sizeof ans,
                        .proto = tag, .timeout_ms = timeout_ms };
    long r = l4_call(cap, &m);
    if (r < 0) {
        fprintf(stderr, "nizza: call %s: %s (L4 error %ld)\n", capname, strerror((int)-r),
                (long)m.err);
        exit(2);
    }
    size_t end = m.rcv_len < sizeof ans ? m.rcv_len : sizeof ans, off = 2;
    if (end >= 2 && ans[0] == 0x92 && ans[1] == 0x00) {
        long n = get_len(&off, end);
        if (n >= 0) { *out = off; return (size_t)n; }
    } else if (end >= 2 && ans[0] == 0x93 && ans[1] > 0 && ans[1] < 0x80) {
        long n = get_len(&off, end);
        if (n >= 0) {
            size_t e = off;
            off += (size_t)n;
            long rn = get_len(&off, end);
            fprintf(stderr, "nizza: %s refused: %.*s: %.*s\n", capname, (int)n, ans + e,
                    (int)(rn > 0 ? rn : 0), ans + off);
            exit(1);
        }
    }
    fprintf(stderr, "nizza: %s answered out of protocol (%lu bytes)\n", capname,
            (unsigned long)end);
    exit(3);
}

static size_t read_all(int fd, unsigned char *buf, size_t max)
{
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, max - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) { perror("nizza: read"); exit(2); }
        if (r == 0) return n;
        n += (size_t)r;
        if (n == max) {
            unsigned char extra;
            if (read(fd, &extra, 1) > 0) {
                fprintf(stderr, "nizza: more than %lu bytes\n", (unsigned long)max);
                exit(64);
            }
            return n;
        }
    }
}

static void hex(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        printf("%02x", p[i]);
    printf("\n");
}

static int write_all(const unsigned char *p, size_t n)
{
    while (n) {
        ssize_t w = write(1, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) { perror("nizza: write"); return 2; }
        p += w; n -= (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static unsigned char data[MAX_DATA];
    size_t at;
    if (argc == 2 && !strcmp(argv[1], "pubkey")) {
        req[0] = 0x91; req[1] = 0x01;
        size_t n = call("signer", 2, SIGNER_TAG, 10000, &at);
        hex(ans + at, n);
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "sign")) {
        int fd = open(argv[2], O_RDONLY);
        if (fd < 0) { perror(argv[2]); return 2; }
        size_t len = read_all(fd, data, sizeof data);
        close(fd);
        req[0] = 0x92; req[1] = 0x02;
        size_t n = call("signer", 2 + put(req + 2, 0xc4, data, len), SIGNER_TAG,
                        L4_NEVER, &at);       /* the user takes their time; the signer
                                                 ends the wait (TIMEOUT) */
        hex(ans + at, n);
        return 0;
    }
    if (argc == 3 && (!strcmp(argv[1], "seal") || !strcmp(argv[1], "unseal"))) {
        size_t len = read_all(0, data, sizeof data), nl = strlen(argv[2]);
        if (nl > 255) { fprintf(stderr, "nizza: name too long\n"); return 64; }
        req[0] = 0x93; req[1] = argv[1][0] == 's' ? 0x01 : 0x02;
        size_t off = 2 + put(req + 2, 0xd9, argv[2], nl);
        off += put(req + off, 0xc4, data, len);
        size_t n = call("vault", off, VAULT_TAG, 10000, &at);
        return write_all(ans + at, n);
    }
    if (argc == 3 && !strcmp(argv[1], "probe")) {
        long r = l4_cap(argv[2]);
        if (r < 0)
            printf("probe %s: %s\n", argv[2], strerror((int)-r));
        else
            printf("probe %s: handle %ld\n", argv[2], r);
        return r < 0;
    }
    if (argc == 5 && !strcmp(argv[1], "raw")) {
        size_t n = strlen(argv[4]) / 2;
        if (n > sizeof req) return 64;
        for (size_t i = 0; i < n; i++)
            sscanf(argv[4] + 2 * i, "%2hhx", &req[i]);
        long cap = l4_cap(argv[2]);
        if (cap < 0) {
            printf("raw %s: %s\n", argv[2], strerror((int)-cap));
            return 2;
        }
        struct l4_msg m = { .snd = req, .snd_len = n, .rcv = ans, .rcv_max = sizeof ans,
                            .proto = atol(argv[3]), .timeout_ms = 10000 };
        long r = l4_call(cap, &m);
        if (r < 0) {
            printf("raw %s: %s (L4 error %ld)\n", argv[2], strerror((int)-r), (long)m.err);
            return 2;
        }
        hex(ans, m.rcv_len < sizeof ans ? m.rcv_len : sizeof ans);
        return 0;
    }
    fprintf(stderr, "usage: nizza pubkey | sign FILE | seal NAME | unseal NAME | "
                    "probe NAME | raw NAME TAG HEX\n");
    return 64;
}
