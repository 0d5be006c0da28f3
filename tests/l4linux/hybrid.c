/* A hybrid Linux/L4 program (docs/L4LINUX.md "Hybrid processes"): a static Linux binary
 * that makes L4 calls through servers/l4linux/include/l4py.h.
 *
 *   hybrid call NAME TEXT [MS]  call the hello server behind capability NAME: hello(TEXT)
 *                           (HELLO, servers/hello/protocol.py: msgpack [1, TEXT] with tag
 *                           0x484C; the answer is [0, GREETING]) and print the greeting;
 *                           MS: the timeout (default 10 s)
 *   hybrid serve NAME N     serve gate NAME: answer N messages "served DATA (label L)"
 *   hybrid nocap NAME       try capability NAME and a made-up handle: print the errors,
 *                           then go on
 *   hybrid hold GATE SINK   receive one call on gate GATE, then call SINK before answering
 *                           it (killed meanwhile: both partners see PEER_DIED)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "l4py.h"

#define HELLO_TAG 0x484C

static int call(const char *name, const char *text, long timeout_ms)
{
    long cap = l4_cap(name);
    if (cap < 0) {
        printf("l4_cap %s: %s\n", name, strerror((int)-cap));
        return 1;
    }
    size_t n = strlen(text);
    if (n > 31)
        n = 31;                                   /* a msgpack fixstr */
    unsigned char req[40], ans[512];
    req[0] = 0x92; req[1] = 0x01; req[2] = (unsigned char)(0xa0 | n);
    memcpy(req + 3, text, n);
    struct l4_msg m = { .snd = req, .snd_len = 3 + n, .rcv = ans, .rcv_max = sizeof ans,
                        .proto = HELLO_TAG, .timeout_ms = timeout_ms };
    long r = l4_call(cap, &m);
    if (r < 0) {
        printf("l4_call: %s (L4 error %ld)\n", strerror((int)-r), (long)m.err);
        return 2;
    }
    /* [0, str]: 0x92 0x00, then fixstr (0xa0|len) or str8 (0xd9 len) */
    size_t off = 2, len;
    if (m.rcv_len < 3 || ans[0] != 0x92 || ans[1] != 0x00) {
        printf("not a HELLO answer (%lu bytes)\n", (unsigned long)m.rcv_len);
        return 3;
    }
    if ((ans[off] & 0xe0) == 0xa0) {
        len = ans[off] & 0x1f; off += 1;
    } else if (ans[off] == 0xd9) {
        len = ans[off + 1]; off += 2;
    } else {
        printf("not a string\n");
        return 3;
    }
    if (off + len > m.rcv_len)
        len = m.rcv_len - off;
    printf("answer: %.*s\n", (int)len, (const char *)ans + off);
    return 0;
}

static int serve(const char *name, int count)
{
    long gate = l4_cap(name);
    if (gate < 0) {
        printf("l4_cap %s: %s\n", name, strerror((int)-gate));
        return 1;
    }
    char in[256], out[320];
    struct l4_msg m = { .rcv = in, .rcv_max = sizeof in - 1, .timeout_ms = L4_NEVER };
    long r = l4_wait(gate, &m);
    for (int i = 0; r == 0; i++) {
        size_t n = m.rcv_len < sizeof in - 1 ? m.rcv_len : sizeof in - 1;
        in[n] = 0;
        int len = snprintf(out, sizeof out, "served %s (label %lu, proto %ld)", in,
                           (unsigned long)m.label, (long)m.proto);
        m.snd = out; m.snd_len = (uint64_t)len; m.proto = 0;
        if (i + 1 == count) {
            r = l4_reply(&m);
            printf("served %d, last reply %ld\n", count, r);
            return r == 0 ? 0 : 4;
        }
        r = l4_reply_wait(gate, &m);
    }
    printf("l4_wait: %s (L4 error %ld)\n", strerror((int)-r), (long)m.err);
    return 2;
}

static int nocap(const char *name)
{
    long r = l4_cap(name);
    printf("l4_cap %s: %ld %s\n", name, r, r < 0 ? strerror((int)-r) : "");
    char buf[8];
    struct l4_msg m = { .snd = "x", .snd_len = 1, .rcv = buf, .rcv_max = sizeof buf,
                        .timeout_ms = 1000 };
    r = l4_call(64, &m);
    printf("l4_call 64: %ld %s\n", r, r < 0 ? strerror((int)-r) : "");
    r = l4_reply(&m);
    printf("l4_reply: %ld %s\n", r, r < 0 ? strerror((int)-r) : "");
    printf("still running, pid %d\n", (int)getpid());
    return 0;
}

static int hold(const char *gate_name, const char *sink_name)
{
    long gate = l4_cap(gate_name), sink = l4_cap(sink_name);
    if (gate < 0 || sink < 0) {
        printf("l4_cap: %ld %ld\n", gate, sink);
        return 1;
    }
    char in[256], back[64];
    struct l4_msg m = { .rcv = in, .rcv_max = sizeof in, .timeout_ms = L4_NEVER };
    long r = l4_wait(gate, &m);
    printf("l4_wait: %ld, %lu bytes\n", r, (unsigned long)m.rcv_len);
    struct l4_msg s = { .snd = "held", .snd_len = 4, .rcv = back, .rcv_max = sizeof back,
                        .timeout_ms = L4_NEVER };
    r = l4_call(sink, &s);
    printf("l4_call: %ld\n", r);
    m.snd = "late"; m.snd_len = 4; m.proto = 0;
    return l4_reply(&m) == 0 ? 0 : 4;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    if ((argc == 4 || argc == 5) && !strcmp(argv[1], "call"))
        return call(argv[2], argv[3], argc == 5 ? atol(argv[4]) : 10000);
    if (argc == 4 && !strcmp(argv[1], "serve"))
        return serve(argv[2], atoi(argv[3]));
    if (argc == 3 && !strcmp(argv[1], "nocap"))
        return nocap(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "hold"))
        return hold(argv[2], argv[3]);
    fprintf(stderr, "usage: hybrid call NAME TEXT [MS] | serve NAME N | nocap NAME | hold GATE SINK\n");
    return 64;
}
