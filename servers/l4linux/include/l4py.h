/* l4py.h: L4 calls from a Linux program under the L4Py L4Linux personality (a *hybrid*
 * process; docs/L4LINUX.md "Hybrid processes").
 *
 * Each function is one Linux system call with a number the personality reserves
 * (kernel/abi.py `LinuxL4`). It traps like every call; the personality checks that the
 * image's policy grants the program the capability, marks the process UNINTERRUPTIBLE
 * (state D in /proc and ps) and lets the kernel make the L4 call as the process's own L4
 * thread; when the call is complete the process runs again. Data goes in and out through
 * `struct l4_msg`. Results: 0 (or a handle), or -errno:
 *   -EPERM       the capability is not granted to this program (or no such name)
 *   -EBADF       NO_CAP        -EACCES  NO_RIGHTS     -ETIMEDOUT  TIMEOUT
 *   -ECONNRESET  PEER_DIED (the partner died, or a gate was rebound)
 *   -EINVAL      INVALID       -E2BIG   TOO_BIG       -EBUSY      BUSY
 *   -EFAULT      a pointer in the message is bad
 * `msg.err` holds the exact L4 error code (kernel/ABI.md, Err).
 *
 * Needs no library: static inline functions around the `syscall` instruction; builds with
 * musl-gcc -static or gcc -static.
 */
#ifndef L4PY_H
#define L4PY_H

#include <stdint.h>

#define L4PY_NR_CAP        0x4C40
#define L4PY_NR_CALL       0x4C41
#define L4PY_NR_WAIT       0x4C42
#define L4PY_NR_REPLY_WAIT 0x4C43
#define L4PY_NR_REPLY      0x4C44

#define L4_NEVER (-1)        /* timeout_ms: wait for ever */

struct l4_msg {
    const void *snd;         /* in: the data to send (CALL, REPLY_WAIT, REPLY) */
    uint64_t snd_len;        /* in: its length, at most 65536 */
    void *rcv;               /* in: where a received message's data goes */
    uint64_t rcv_max;        /* in: room there (more is cut off; rcv_len says how much came) */
    int64_t proto;           /* in: the protocol tag sent (>= 0); out: the one received */
    int64_t timeout_ms;      /* in: L4_NEVER or 0..86400000 ms: how long to wait for the
                                partner to receive (CALL) and for a message to come */
    uint64_t rcv_len;        /* out: bytes of the message received */
    uint64_t label;          /* out: label of the gate it came through (the kernel's word) */
    int64_t err;             /* out: the L4 error, 0 OK */
};

static inline long l4py_syscall2(long nr, long a, long b)
{
    long ret;
    __asm__ volatile ("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b)
                      : "rcx", "r11", "memory");
    return ret;
}

/* The handle of capability `name` (the image's [linux] l4caps), or -EPERM. */
static inline long l4_cap(const char *name)
{
    return l4py_syscall2(L4PY_NR_CAP, (long)name, 0);
}

/* Send m->snd through gate `cap` and receive the reply into m->rcv. */
static inline long l4_call(long cap, struct l4_msg *m)
{
    return l4py_syscall2(L4PY_NR_CALL, cap, (long)m);
}

/* Serve gate `gate` (bound to this process's thread) and receive the next message. */
static inline long l4_wait(long gate, struct l4_msg *m)
{
    return l4py_syscall2(L4PY_NR_WAIT, gate, (long)m);
}

/* Answer the last message received with m->snd, then receive the next one on `gate`. */
static inline long l4_reply_wait(long gate, struct l4_msg *m)
{
    return l4py_syscall2(L4PY_NR_REPLY_WAIT, gate, (long)m);
}

/* Answer the last message received with m->snd. */
static inline long l4_reply(struct l4_msg *m)
{
    return l4py_syscall2(L4PY_NR_REPLY, 0, (long)m);
}

#endif
