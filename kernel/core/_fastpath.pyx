# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled IPC fast path: `kernel/core/fastpath.py` (its docstring) in C.

`drain(transport, port)` serves every message waiting on `port.router`: it receives the
frames through libzmq's C API, decodes the request header with an inline msgpack reader
for the one shape it serves, and does a `call` or `reply_and_wait` with the same checks,
state changes and counters as `fastpath.try_fast` — no Python bytecode runs for such a
message. Anything else (another call, another shape, items, windows, alien threads, armed
faults, tracing, a timeout to set, any check that fails) is handed, unchanged, to
`transport._handle`, which is the Python kernel.

The state read and written is the Python kernel's own objects (Thread, Gate, CapNode,
SendRecord, the State's counters), through the C API: there is no second copy.

libzmq: its functions come from the libzmq pyzmq already loaded (kernel/_libzmq.pxi, shared
with the task library's kernel/user/_callpath.pyx). Socket handles come from
`Socket.underlying`.

Ownership: the kernel's event-loop thread only.
"""
from libc.stdint cimport int64_t, uint64_t, uint8_t, uintptr_t
from libc.string cimport memcpy
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE

import sys
import traceback

from kernel import abi as _abi
from kernel.core import faults as _faults
from kernel.core import ipc as _ipc
from kernel.core import trace as _trace
from kernel.core.objects import Gate as _Gate, TState as _TState

include "_libzmq.pxi"

DEF MAXF = 4          # frames kept of a message (the transport keeps as many)

cdef int64_t NEVER = _abi.NEVER
cdef int64_t MAX_TIMEOUT = _abi.MAX_TIMEOUT_MS
cdef Py_ssize_t MAX_HEADER = _abi.MAX_HEADER, MAX_PAYLOAD = _abi.MAX_PAYLOAD
cdef int64_t SYS_CALL = int(_abi.Sys.CALL), SYS_RW = int(_abi.Sys.REPLY_WAIT)
cdef long INVOKE = int(_abi.Rights.INVOKE)
cdef long ST_RECEIVING = int(_TState.RECEIVING)
cdef object IDLE = _TState.IDLE, SENDING = _TState.SENDING
cdef object AWAIT = _TState.AWAIT_REPLY, RECEIVING = _TState.RECEIVING
cdef object K_CALL = int(_abi.Sys.CALL), K_RW = int(_abi.Sys.REPLY_WAIT)
cdef object Gate = _Gate
cdef object SendRecord = _ipc.SendRecord
cdef object new_record = _ipc.SendRecord.__new__
cdef object ipc_wait = _ipc.wait
cdef object seq = _ipc._seq
cdef object faults_mod = _faults, trace_mod = _trace
cdef object NO_ITEMS = []           # replaced by fastpath._NO_ITEMS (init)
cdef bytes OK_ANSWER = _abi.encode_ok()

# SendRecord is built here slot by slot (its __init__ is Python): the slots this module sets.
RECORD_SLOTS = ("sender", "gate", "label", "rights", "proto", "items", "payload", "call",
                "window", "rcv_timeout", "key", "on_reply", "on_error", "live", "target", "mem")

ERROR = bind_libzmq()
if ERROR is not None:
    pass
elif tuple(_ipc.SendRecord.__slots__) != RECORD_SLOTS:
    ERROR = "ipc.SendRecord's slots changed; this module builds the record itself"


def init(no_items) -> None:
    """Share the Python fast path's empty item list (the records' `items`)."""
    global NO_ITEMS
    NO_ITEMS = no_items


cdef class Received:
    """What `transport._frame` holds for a message handed on: `get(zmq.SRCFD)` (HELLO)."""
    cdef public int srcfd

    def get(self, prop):
        return self.srcfd


# -- msgpack: the request header --------------------------------------------------------

cdef struct Req:
    int n                 # array length
    int64_t v[7]          # the integers
    uint8_t kind[7]       # 0 int, 1 nil, 2 empty array


cdef int read_int(const uint8_t *p, Py_ssize_t n, Py_ssize_t *pos, int64_t *out) noexcept:
    """One msgpack integer (or nil, empty array) at p[pos]; 0 int, 1 nil, 2 [], -1 other."""
    cdef Py_ssize_t i = pos[0]
    cdef uint8_t b
    cdef uint64_t u
    cdef int w, j
    if i >= n:
        return -1
    b = p[i]
    if b <= 0x7f:
        out[0] = b; pos[0] = i + 1; return 0
    if b >= 0xe0:
        out[0] = <int64_t>(<signed char>b); pos[0] = i + 1; return 0
    if b == 0xc0:
        pos[0] = i + 1; return 1
    if b == 0x90:
        pos[0] = i + 1; return 2
    if 0xcc <= b <= 0xcf:
        w = 1 << (b - 0xcc)
    elif 0xd0 <= b <= 0xd3:
        w = 1 << (b - 0xd0)
    else:
        return -1
    if i + 1 + w > n:
        return -1
    u = 0
    for j in range(w):
        u = (u << 8) | p[i + 1 + j]
    if b <= 0xcf:                              # unsigned
        if u > <uint64_t>0x7fffffffffffffff:
            return -1                          # past int64: the Python path says so
        out[0] = <int64_t>u
    elif w == 1:
        out[0] = <int64_t>(<signed char>u)
    elif w == 2:
        out[0] = <int64_t>(<short>u)
    elif w == 4:
        out[0] = <int64_t>(<int>u)
    else:
        out[0] = <int64_t>u
    pos[0] = i + 1 + w
    return 0


cdef bint parse(const uint8_t *p, Py_ssize_t n, Req *r) noexcept:
    """A fixarray of 6 or 7 ints / nils / empty arrays filling exactly `n` bytes."""
    cdef Py_ssize_t pos = 1
    cdef int i, k
    if n < 1 or p[0] < 0x96 or p[0] > 0x97:
        return False
    r.n = p[0] - 0x90
    for i in range(r.n):
        k = read_int(p, n, &pos, &r.v[i])
        if k < 0:
            return False
        r.kind[i] = <uint8_t>k
    return pos == n


cdef inline bint timeout_ok(Req *r, int i) noexcept:
    return r.kind[i] == 0 and (r.v[i] == NEVER or 0 <= r.v[i] <= MAX_TIMEOUT)


cdef inline bint call_shape(Req *r) noexcept:
    """abi.FAST_SHAPES[CALL]: [CALL, cap, proto, [], snd, rcv, nil]."""
    return (r.n == 7 and r.v[0] == SYS_CALL and r.kind[0] == 0 and r.kind[1] == 0
            and r.kind[2] == 0 and r.kind[3] == 2 and timeout_ok(r, 4) and timeout_ok(r, 5)
            and r.kind[6] == 1)


cdef inline bint rw_shape(Req *r) noexcept:
    """abi.FAST_SHAPES[REPLY_WAIT]: [REPLY_WAIT, reply, proto, [], nil, timeout]."""
    return (r.n == 6 and r.v[0] == SYS_RW and r.kind[0] == 0 and r.kind[1] == 0
            and r.kind[2] == 0 and r.kind[3] == 2 and r.kind[4] == 1 and timeout_ok(r, 5))


# -- msgpack: the receipt (abi.encode_receipt with no items, as msgpack packs it) -------------

cdef Py_ssize_t put_int(uint8_t *p, int64_t v) noexcept:
    cdef uint64_t u
    cdef int w, j
    if 0 <= v <= 0x7f:
        p[0] = <uint8_t>v; return 1
    if -32 <= v < 0:
        p[0] = <uint8_t>(v & 0xff); return 1
    if v > 0:
        if v <= 0xff: p[0] = 0xcc; w = 1
        elif v <= 0xffff: p[0] = 0xcd; w = 2
        elif v <= 0xffffffff: p[0] = 0xce; w = 4
        else: p[0] = 0xcf; w = 8
    else:
        if v >= -0x80: p[0] = 0xd0; w = 1
        elif v >= -0x8000: p[0] = 0xd1; w = 2
        elif v >= -0x80000000: p[0] = 0xd2; w = 4
        else: p[0] = 0xd3; w = 8
    u = <uint64_t>v
    for j in range(w):
        p[w - j] = <uint8_t>(u & 0xff)
        u >>= 8
    return 1 + w


cdef bytes receipt(object label, object rights, object reply, int64_t proto):
    """[0, label, rights, reply, proto, []]; label, rights, reply are kernel ints in int64."""
    cdef uint8_t buf[48]
    cdef Py_ssize_t n = 2
    buf[0] = 0x96
    buf[1] = 0
    n += put_int(buf + n, <int64_t>label)
    n += put_int(buf + n, <int64_t>rights)
    n += put_int(buf + n, <int64_t>reply)
    n += put_int(buf + n, proto)
    buf[n] = 0x90
    return PyBytes_FromStringAndSize(<char *>buf, n + 1)


# -- the mechanisms (fastpath.py's, line for line) ----------------------------------------------

cdef inline void bump(dict d, object key):
    d[key] = d[key] + 1


cdef inline object set_state(object th, object state):
    th.state = state
    tok = th.token + 1
    th.token = tok
    return tok


cdef void answer(object th, bytes header, object payload) except *:
    """transport.answer: [conn, header(, payload)] on the thread's port."""
    cdef object conn = th.conn
    if conn is None:
        return
    cdef void *sock = <void *><uintptr_t>(th.port.handle)
    zq_send(sock, PyBytes_AS_STRING(conn), PyBytes_GET_SIZE(conn), ZMQ_SNDMORE)
    if payload is None:
        zq_send(sock, PyBytes_AS_STRING(header), PyBytes_GET_SIZE(header), 0)
    else:
        zq_send(sock, PyBytes_AS_STRING(header), PyBytes_GET_SIZE(header), ZMQ_SNDMORE)
        zq_send(sock, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload), 0)


cdef void finish(object k, object th, bytes header, object payload) except *:
    """State.finish (fastpath._finish)."""
    set_state(th, IDLE)
    th.sending = None
    if th.on_answer is None:
        th.busy = False
        answer(th, header, payload)
    else:
        k.answer(th, header, payload)


cdef inline void count_ipc(dict stats, object sender, object receiver) except *:
    bump(stats, "ipc")
    bump(sender.task.stats, "sent")
    bump(receiver.task.stats, "received")


cdef object record(object th, object gate, object rights, object proto, object payload,
                   object rcv_timeout):
    """ipc.SendRecord(th, gate, rights, proto, [], payload, True, None, rcv_timeout,
    th.priority), without running its __init__."""
    rec = new_record(SendRecord)
    rec.sender = th
    rec.gate = gate
    rec.label = gate.label
    rec.rights = rights
    rec.proto = proto
    rec.items = NO_ITEMS
    rec.payload = payload
    rec.call = True
    rec.window = None
    rec.rcv_timeout = rcv_timeout
    rec.key = (-th.priority, next(seq))
    rec.on_reply = None
    rec.on_error = None
    rec.live = True
    rec.target = None
    rec.mem = None
    return rec


cdef void insort(list queue, object rec) except *:
    """bisect.insort(queue, rec) by the records' keys (SendRecord.__lt__ compares keys)."""
    cdef Py_ssize_t lo = 0, hi = len(queue), mid
    key = rec.key
    while lo < hi:
        mid = (lo + hi) // 2
        if key < queue[mid].key:
            hi = mid
        else:
            lo = mid + 1
    queue.insert(lo, rec)


cdef bint do_call(object k, dict stats, object th, Req *r, object payload) except -1:
    """fastpath._call; False: nothing was done."""
    cdef int64_t snd = r.v[4], rcv = r.v[5]
    node = th.task.space.slots.get(r.v[1])
    if node is None or r.v[2] < 0:
        return False
    rights = node.rights
    if not (<long>rights & INVOKE):
        return False
    gate = node.obj
    if type(gate) is not Gate:
        return False
    target = gate.thread
    if target is None or not target.alive:
        return False
    try:
        <int64_t>gate.label              # the receipt packs it as msgpack does an int64
    except OverflowError:
        return False
    cdef bint waiting = <long>target.state == ST_RECEIVING and not target.irqs
    if not waiting and snd == 0:
        return False
    if rcv != NEVER or (not waiting and snd != NEVER):
        return False               # a timer to set: the Python path sets it
    # Accepted: ipc.send for a message without items, then ipc.deliver or blocking.
    th.busy = True
    bump(th.task.stats, "calls")
    handled = k.handled
    handled[K_CALL] = handled.get(K_CALL, 0) + 1
    proto = r.v[2]
    rec = record(th, gate, rights, proto, payload, NEVER)
    rec.target = target
    th.sending = rec
    if not waiting:
        insort(target.queue, rec)
        set_state(th, SENDING)
        return True
    reply = target.next_reply
    target.next_reply = reply + 1
    target.replies[reply] = rec
    set_state(th, AWAIT)
    count_ipc(stats, th, target)
    finish(k, target, receipt(rec.label, rights, reply, r.v[2]), payload)
    return True


cdef bint do_reply_wait(object k, dict stats, object th, Req *r, object payload) except -1:
    """fastpath._reply_wait; False: nothing was done."""
    cdef int64_t timeout = r.v[5]
    replies = th.replies
    rec = replies.get(r.v[1])
    if rec is None or not rec.live:
        return False
    caller = rec.sender
    if caller is None:
        return False
    th.busy = True
    bump(th.task.stats, "calls")
    handled = k.handled
    handled[K_RW] = handled.get(K_RW, 0) + 1
    del replies[r.v[1]]
    rec.live = False
    count_ipc(stats, th, caller)
    finish(k, caller, receipt(0, 0, 0, r.v[2]), payload)
    wait(k, stats, th, timeout)
    return True


cdef void wait(object k, dict stats, object th, int64_t timeout) except *:
    """ipc.wait(k, th, None, timeout): inline when no IRQ is pending and the first blocked
    sender (if any) is a thread's message without items, or the wait just blocks forever;
    otherwise ipc.wait itself."""
    queue = th.queue
    if th.irqs or (not queue and timeout != NEVER):
        ipc_wait(k, th, None, timeout)
        return
    if queue:
        rec = queue[0]
        sender = rec.sender
        if rec.items or sender is None or (rec.call and rec.rcv_timeout != NEVER):
            ipc_wait(k, th, None, timeout)
            return
    th.window = None
    set_state(th, RECEIVING)
    if not queue:
        return
    # ipc.deliver of a queued message without items
    del queue[0]
    reply = 0
    if rec.call:
        reply = th.next_reply
        th.next_reply = reply + 1
        th.replies[reply] = rec
        sender.sending = rec
        set_state(sender, AWAIT)
    count_ipc(stats, sender, th)
    finish(k, th, receipt(rec.label, rec.rights, reply, rec.proto), rec.payload)
    if not rec.call:
        finish(k, sender, OK_ANSWER, None)


cdef bint serve(object k, dict stats, dict conns, zq_msg_t *msgs, int n) except -1:
    """fastpath.try_fast for a message of `n` frames; False: nothing was done."""
    cdef Py_ssize_t hlen
    cdef Req r
    if n != 2 and n != 3:
        return False
    hlen = zq_msg_size(&msgs[1])
    if hlen > MAX_HEADER:
        return False
    if n == 3 and <Py_ssize_t>zq_msg_size(&msgs[2]) > MAX_PAYLOAD:
        return False
    if not parse(<const uint8_t *>zq_msg_data(&msgs[1]), hlen, &r):
        return False
    if not (call_shape(&r) or rw_shape(&r)):
        return False
    conn = PyBytes_FromStringAndSize(<char *>zq_msg_data(&msgs[0]), zq_msg_size(&msgs[0]))
    th = conns.get(conn)
    if th is None or th.busy or th.alien or faults_mod.ARMED or trace_mod.ON:
        return False
    payload = None
    if n == 3:
        payload = PyBytes_FromStringAndSize(<char *>zq_msg_data(&msgs[2]), zq_msg_size(&msgs[2]))
    if r.n == 7:
        return do_call(k, stats, th, &r, payload)
    return do_reply_wait(k, stats, th, &r, payload)


cdef int recv_more(zq_msg_t *msg, void *sock) noexcept:
    """The next frame of a message being read (initialises `msg`); whether more follow."""
    zq_msg_init(msg)
    while zq_msg_recv(msg, sock, 0) < 0 and zq_errno() == EINTR:
        pass
    return zq_msg_more(msg)


def drain(object transport, object port, uintptr_t urgent=0) -> bool:
    """Serve every message waiting on `port.router` (the transport set `_port`/`conns`):
    False when none is left; True as soon as a message waits on the socket `urgent` (a
    libzmq handle, 0: none), before the next of `port`'s (the real-time port's go first)."""
    cdef void *sock = <void *><uintptr_t>(port.handle)
    cdef void *first = <void *>urgent
    cdef zq_msg_t msgs[MAXF]
    cdef zq_msg_t extra
    cdef int n, i, rc, more
    k = transport.state
    cdef dict stats = k.stats
    cdef dict conns = port.conns
    handle = transport._handle
    guard = transport._guard
    while True:
        if first != NULL and zq_events(first) & ZMQ_POLLIN:
            return True
        zq_msg_init(&msgs[0])
        rc = zq_msg_recv(&msgs[0], sock, ZMQ_DONTWAIT)
        if rc < 0:
            rc = zq_errno()
            zq_msg_close(&msgs[0])
            if rc == EINTR:
                continue
            return False                    # EAGAIN: nothing more waiting
        n = 1
        more = zq_msg_more(&msgs[0])
        while more:                         # the rest of a message is there already
            if n < MAXF:
                more = recv_more(&msgs[n], sock)
            else:
                more = recv_more(&extra, sock)
                zq_msg_close(&extra)
            n += 1
        kept = n if n < MAXF else MAXF
        try:
            done = False
            if k.fastpath:
                try:
                    done = serve(k, stats, conns, msgs, n)
                except Exception:
                    bug(transport, k, msgs)
                    continue
            if done:
                bump(stats, "requests")
                bump(stats, "fastpath")
                bump(stats, "fastpath_compiled")
                continue
            # handed on: the frames as transport._read makes them
            frames = [PyBytes_FromStringAndSize(<char *>zq_msg_data(&msgs[i]), zq_msg_size(&msgs[i]))
                      for i in range(kept)]
            frames.extend([b""] * (n - kept))
            got = Received()
            got.srcfd = zq_msg_get(&msgs[kept - 1], ZMQ_SRCFD)
            transport._frame = got
        finally:
            for i in range(kept):
                zq_msg_close(&msgs[i])
        guard(handle, frames)


cdef void bug(object transport, object k, zq_msg_t *msgs):
    """transport._guard's handling of a failure in the compiled path."""
    k.stats["kernel_bugs"] += 1
    print("[kernel] internal error in the compiled fast path (counted, loop continues):\n"
          + traceback.format_exc(), file=sys.stderr, flush=True)
    try:
        conn = PyBytes_FromStringAndSize(<char *>zq_msg_data(&msgs[0]), zq_msg_size(&msgs[0]))
        th = transport.conns.get(conn)
        if th is not None and th.busy:
            k.fail(th, _abi.Err.INVALID, "kernel internal error; call aborted")
    except Exception:
        pass


# -- the event loop's poll ----------------------------------------------------------------------

cdef double first_deadline(object timers) except? -2.0:
    """The earliest deadline of `timers` (state.Timers: heap and calls), -1: none."""
    heap = timers.heap
    calls = timers.calls
    cdef double first = -1.0, c
    if heap:
        first = heap[0][0]
    if calls:
        c = calls[0][0]
        if first < 0 or c < first:
            first = c
    return first


DEF MAXEV = 64        # epoll events taken per wait (level-triggered: the rest come next)


cdef long wait_ms(object timers) except? -2:
    """Timers.next_ms: -1 (no timer), else the ms until the first is due, rounded up."""
    cdef double first = first_deadline(timers)
    cdef long timeout
    if first < 0:
        return -1
    timeout = <long>((first - zq_monotonic()) * 1000) + 1
    return timeout if timeout > 0 else 0


def poll(object transport, object timers) -> list:
    """`transport.poller.poll(timers.next_ms())` (waitset.Waitset's wait, made here in C),
    except that ready ports are drained here (`drain`) and the wait repeated, as long as
    nothing else is ready, no timer is due and the loop has nothing else to do (no Linux
    process to reap); then what is ready besides the ports is answered, as
    `Waitset.poll` would answer it (possibly nothing: a timer is due, or a signal
    interrupted the wait).

    ZMQ_EVENTS is asked as `Waitset.poll` asks it, with two exceptions that save libzmq's
    command checks (a poll(2) and a getpid(2) each) per wake: a port whose ZMQ_FD fired is
    drained without asking (its receive processes the commands itself), and a wait repeated
    after a drain asks nothing first when the kernel has one port — the drain's last
    receive found nothing with every command processed, and nothing touched the monitor
    since it was last asked (only `_disconnections` reads it, and it reads it empty)."""
    cdef zq_epoll_event_t evs[MAXEV]
    cdef Py_ssize_t i, nhot
    cdef long timeout
    cdef int rc, fd, j, err
    cdef bint drained, settled = False
    cdef void *handle
    by_socket = transport._by_socket
    ws = transport.poller
    cdef int epfd = ws.epfd
    cdef bint one_port = len(transport.ports) == 1
    rt = transport.rt
    k = transport.state
    linux = k.linux
    while True:
        timeout = wait_ms(timers)
        hot = ws.hot                         # [Hot(sock, handle, fd, events)], a few
        hot_fds = ws.hot_fds
        ready_hot = []                       # ZeroMQ sockets with a message waiting
        if not settled:
            nhot = len(hot)
            for i in range(nhot):
                h = hot[i]
                handle = <void *><uintptr_t>(h.handle)
                if zq_events(handle) & ZMQ_POLLIN:
                    ready_hot.append(h.sock)
        with nogil:
            rc = epoll_wait(epfd, evs, MAXEV, 0 if ready_hot else timeout)
            err = zq_os_errno() if rc < 0 else 0
        if rc < 0:
            if err == EINTR:
                return []           # a signal: the loop checks it, then waits again
            raise OSError(err, "epoll_wait of the kernel's waitset")
        ready = []
        for j in range(rc):
            fd = zq_epoll_fd(&evs[j])
            h = hot_fds.get(fd)
            if h is None:
                ready.append((fd, evs[j].events))
                continue
            sock = h.sock
            if sock in ready_hot:
                continue
            port = by_socket.get(sock)
            if (port is not None and sock is port.router) or (
                    zq_events(<void *><uintptr_t>(h.handle)) & ZMQ_POLLIN):
                ready_hot.append(sock)
        drained = False
        if rt is not None and len(ready_hot) > 1 and rt.router in ready_hot:
            ready_hot.remove(rt.router)
            ready_hot.insert(0, rt.router)  # the real-time port first
        for sock in ready_hot:
            port = by_socket.get(sock)
            if port is not None and sock is port.router:
                if rt is None or port is rt:
                    transport._port, transport.conns = port, port.conns
                    drain(transport, port)
                else:
                    transport._drain(port)  # the real-time port's messages between its own
                drained = True
            else:
                ready.append((sock, ZMQ_POLLIN))
        if ready or not drained or not transport.running:
            return ready
        first = first_deadline(timers)
        if (first >= 0 and first <= zq_monotonic()) or linux.listeners or linux.by_pid:
            return ready
        settled = one_port
