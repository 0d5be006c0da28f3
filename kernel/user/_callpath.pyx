# cython: language_level=3, boundscheck=False, wraparound=False
"""The task library's frames in C: a thread's request sent and its answer read through
libzmq's C API, for the plain calls of `kernel/user/client.py` (its docstring).

Mechanism: `send(sock, header, payload)` writes one request ([header] or [header, payload])
to a thread's DEALER; `recv(sock)` reads one answer, every frame as bytes, waiting as the
socket's receive timeout says; `call` is both. pyzmq's `Socket.send`/`recv(copy=False)`
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

libzmq is found as `kernel/core/_fastpath.pyx` finds it: dlsym in the libzmq pyzmq loaded.
When this module is not built, or `L4PY_CALLPATH=python`, the library uses pyzmq.

Ownership: the calling thread's socket; one call at a time per socket (an L4 thread).
"""
from libc.stdint cimport uintptr_t
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_CheckSignals

from zmq.error import _check_rc

cdef extern from *:
    """
    #include <dlfcn.h>
    #include <errno.h>
    typedef struct { unsigned char _[64] __attribute__((aligned(sizeof(void *)))); } cp_msg_t;
    typedef int (*cp_msg_init_t)(cp_msg_t *);
    typedef int (*cp_msg_recv_t)(cp_msg_t *, void *, int);
    typedef void *(*cp_msg_data_t)(cp_msg_t *);
    typedef size_t (*cp_msg_size_t)(const cp_msg_t *);
    typedef int (*cp_msg_more_t)(const cp_msg_t *);
    typedef int (*cp_msg_close_t)(cp_msg_t *);
    typedef int (*cp_send_t)(void *, const void *, size_t, int);
    typedef int (*cp_errno_t)(void);
    static cp_msg_init_t cp_msg_init;
    static cp_msg_recv_t cp_msg_recv;
    static cp_msg_data_t cp_msg_data;
    static cp_msg_size_t cp_msg_size;
    static cp_msg_more_t cp_msg_more;
    static cp_msg_close_t cp_msg_close;
    static cp_send_t cp_send;
    static cp_errno_t cp_errno;
    static const char *cp_bind_zmq(const char *path) {
        void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
        if (!h) return "pyzmq's backend is not loaded";
    #define CP_SYM(var, name) if (!(var = (void *)dlsym(h, name))) return name;
        CP_SYM(cp_msg_init, "zmq_msg_init")
        CP_SYM(cp_msg_recv, "zmq_msg_recv")
        CP_SYM(cp_msg_data, "zmq_msg_data")
        CP_SYM(cp_msg_size, "zmq_msg_size")
        CP_SYM(cp_msg_more, "zmq_msg_more")
        CP_SYM(cp_msg_close, "zmq_msg_close")
        CP_SYM(cp_send, "zmq_send")
        CP_SYM(cp_errno, "zmq_errno")
        return NULL;
    }
    """
    ctypedef struct cp_msg_t:
        pass
    int cp_msg_init(cp_msg_t *) nogil
    int cp_msg_recv(cp_msg_t *, void *, int) nogil
    void *cp_msg_data(cp_msg_t *) nogil
    size_t cp_msg_size(const cp_msg_t *) nogil
    int cp_msg_more(const cp_msg_t *) nogil
    int cp_msg_close(cp_msg_t *) nogil
    int cp_send(void *, const void *, size_t, int) nogil
    int cp_errno() nogil
    const char *cp_bind_zmq(const char *path)
    int EAGAIN, EINTR

cdef int ZMQ_SNDMORE = 2


cdef str _bind():
    import zmq.backend.cython._zmq as backend
    cdef const char *err = cp_bind_zmq(backend.__file__.encode())
    if err != NULL:
        return "libzmq symbol not found: " + (<bytes>err).decode()
    return None


ERROR = _bind()          # None: usable; else why not (the library then uses pyzmq)


cdef int send_frame(void *handle, bytes frame, int flags) except -1:
    cdef const char *p = PyBytes_AS_STRING(frame)
    cdef size_t n = PyBytes_GET_SIZE(frame)
    cdef int rc, err
    while True:
        with nogil:
            rc = cp_send(handle, p, n, flags)
            err = cp_errno() if rc < 0 else 0
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
    cdef cp_msg_t msg
    cdef int rc, err
    cp_msg_init(&msg)
    while True:
        with nogil:
            rc = cp_msg_recv(&msg, handle, 0)
            err = cp_errno() if rc < 0 else 0
        if rc >= 0:
            break
        if err == EINTR:
            try:
                PyErr_CheckSignals()
            except BaseException:
                cp_msg_close(&msg)
                raise
            continue
        cp_msg_close(&msg)
        if err == EAGAIN and first:
            return None
        _check_rc(-1, err)
    try:
        out = PyBytes_FromStringAndSize(<char *>cp_msg_data(&msg), cp_msg_size(&msg))
        more[0] = cp_msg_more(&msg)
    finally:
        cp_msg_close(&msg)
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
