# cython: language_level=3, boundscheck=False, wraparound=False
"""The task library's frames in C: a thread's request sent and its answer read through
libzmq's C API, for the plain calls of `kernel/user/client.py` (its docstring).

Mechanism: `send(sock, header, payload)` writes one request ([header] or [header, payload])
to a thread's DEALER; `recv(sock)` reads one answer, every frame as bytes, waiting as the
socket's receive timeout says; `call` is both; `Waiter(socks).wait(timeout)` is the poll of
`MultiWait` (zmq_poll over its threads' sockets, the item array built once). pyzmq's `Socket.send`/`recv(copy=False)`
do the same work through Python-level wrappers and a Frame object per frame, and reading
"more frames follow" through `getsockopt` costs as much as the frame itself; here it is
zmq_msg_more. The waits release the GIL, as pyzmq's do.

Contract — pyzmq's behaviour, so the library's callers see no difference:
- an interrupted wait (EINTR) runs the signal handlers (an exception they raise comes
  out of the call) and waits again;
- the socket's receive timeout passing before an answer came (EAGAIN) is not an error
  here: `recv`/`call` answer None and the caller goes on waiting its own way (the
  library's `_answer` checks that the kernel still lives);
- any other failure raises pyzmq's exception for it (`zmq.error._check_rc`): a closed
  socket is ENOTSOCK, as pyzmq raises it.

libzmq's functions come from the libzmq pyzmq loaded (kernel/_libzmq.pxi, shared with the
kernel's `kernel/core/_fastpath.pyx`).
When this module is not built, or `L4PY_CALLPATH=python`, the library uses pyzmq.

Ownership: the calling thread's socket; one call at a time per socket (an L4 thread).
"""
from libc.stdint cimport uintptr_t
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals
from cpython.mem cimport PyMem_Malloc, PyMem_Free

from zmq.error import _check_rc

include "_libzmq.pxi"

ERROR = bind_libzmq()    # None: usable; else why not (the library then uses pyzmq)


cdef int send_frame(void *handle, bytes frame, int flags) except -1:
    cdef const char *p = PyBytes_AS_STRING(frame)
    cdef size_t n = PyBytes_GET_SIZE(frame)
    cdef int rc, err
    while True:
        with nogil:
            rc = zq_send(handle, p, n, flags)
            err = zq_errno() if rc < 0 else 0
        if rc >= 0:
            return 0
        if err != EINTR:
            _check_rc(-1, err)
        PyErr_CheckSignals()


def send(object sock, bytes header, bytes payload) -> None:
    """[header] or, with a non-empty payload, [header, payload] on `sock`."""
    cdef void *handle = <void *><uintptr_t>sock.underlying
    if payload:
        send_frame(handle, header, ZMQ_SNDMORE)
        send_frame(handle, payload, 0)
    else:
        send_frame(handle, header, 0)


cdef object recv_frame(void *handle, bint first, bint *more):
    """One frame as bytes; None: the first frame's wait timed out."""
    cdef zq_msg_t msg
    cdef int rc, err
    zq_msg_init(&msg)
    while True:
        with nogil:
            rc = zq_msg_recv(&msg, handle, 0)
            err = zq_errno() if rc < 0 else 0
        if rc >= 0:
            break
        if err == EINTR:
            try:
                PyErr_CheckSignals()
            except BaseException:
                zq_msg_close(&msg)
                raise
            continue
        zq_msg_close(&msg)
        if err == EAGAIN and first:
            return None
        _check_rc(-1, err)
    try:
        out = PyBytes_FromStringAndSize(<char *>zq_msg_data(&msg), zq_msg_size(&msg))
        more[0] = zq_msg_more(&msg)
    finally:
        zq_msg_close(&msg)
    return out


def recv(object sock):
    """The next answer on `sock` as a list of bytes; None if the socket's receive timeout
    passed first (nothing was read)."""
    cdef void *handle = <void *><uintptr_t>sock.underlying
    cdef bint more = False
    first = recv_frame(handle, True, &more)
    if first is None:
        return None
    frames = [first]
    while more:                       # the rest of a message is there already
        frames.append(recv_frame(handle, False, &more))
    return frames


def call(object sock, bytes header, bytes payload):
    """`send` then `recv`."""
    send(sock, header, payload)
    return recv(sock)


cdef class Waiter:
    """`zmq.Poller.poll` for POLLIN over a fixed list of sockets (`MultiWait`'s threads),
    its item array built once: `wait(timeout_ms)` answers the indices of the sockets with
    a message waiting, [] when `timeout_ms` (< 0: forever) passed first. An interrupted
    wait runs the signal handlers (what they raise comes out) and waits again."""
    cdef zq_pollitem_t *items
    cdef int n
    cdef tuple socks                 # keeps the sockets (and so their handles) alive

    def __cinit__(self, socks):
        self.socks = tuple(socks)
        self.n = len(self.socks)
        self.items = <zq_pollitem_t *>PyMem_Malloc(sizeof(zq_pollitem_t) * (self.n or 1))
        if self.items == NULL:
            raise MemoryError()
        for i, sock in enumerate(self.socks):
            self.items[i].socket = <void *><uintptr_t>sock.underlying
            self.items[i].fd = 0
            self.items[i].events = ZMQ_POLLIN
            self.items[i].revents = 0

    def __dealloc__(self):
        PyMem_Free(self.items)

    def wait(self, long timeout_ms):
        cdef int rc, err, i
        cdef double end = zq_monotonic() + timeout_ms / 1000.0
        cdef long left = timeout_ms
        while True:
            with nogil:
                rc = zq_poll(self.items, self.n, left)
                err = zq_errno() if rc < 0 else 0
            if rc >= 0:
                break
            if err != EINTR:
                _check_rc(-1, err)
            PyErr_CheckSignals()
            if timeout_ms >= 0:
                left = <long>((end - zq_monotonic()) * 1000)
                if left < 0:
                    left = 0
        return [i for i in range(self.n) if self.items[i].revents & ZMQ_POLLIN]
