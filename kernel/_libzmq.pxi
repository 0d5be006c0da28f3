# The part of libzmq's C API the compiled modules use (kernel/core/_fastpath.pyx, the
# kernel's; kernel/user/_callpath.pyx, the task library's), written once and included by both.
#
# Mechanism: the functions are looked up at import in the libzmq pyzmq already loaded
# (`bind_libzmq`: dlopen with RTLD_NOLOAD of pyzmq's backend module, then dlsym), so neither
# module needs zmq.h nor a link against a library whose file name pyzmq chooses; socket
# handles come from `Socket.underlying`. A zmq_msg_t is 64 opaque bytes (zmq.h's size).
#
# Contract: `bind_libzmq()` answers None when every symbol was found, else why not (the
# including module then reports it as its ERROR and the Python path runs). Until it
# answered None, none of the zq_ functions may be called.
from libc.stdint cimport uint32_t

cdef extern from *:
    """
    #include <dlfcn.h>
    #include <errno.h>
    #include <sys/epoll.h>
    #include <time.h>
    typedef struct { unsigned char _[64] __attribute__((aligned(sizeof(void *)))); } zq_msg_t;
    typedef struct { void *socket; int fd; short events; short revents; } zq_pollitem_t;
    static int (*zq_msg_init)(zq_msg_t *);
    static int (*zq_msg_recv)(zq_msg_t *, void *, int);
    static void *(*zq_msg_data)(zq_msg_t *);
    static size_t (*zq_msg_size)(const zq_msg_t *);
    static int (*zq_msg_more)(const zq_msg_t *);
    static int (*zq_msg_get)(const zq_msg_t *, int);
    static int (*zq_msg_close)(zq_msg_t *);
    static int (*zq_send)(void *, const void *, size_t, int);
    static int (*zq_getsockopt)(void *, int, void *, size_t *);
    static int (*zq_errno)(void);
    static int (*zq_poll)(zq_pollitem_t *, int, long);
    static const char *zq_bind(const char *path) {
        void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
        if (!h) return "pyzmq's backend is not loaded";
    #define ZQ_SYM(var, name) if (!(*(void **)&var = dlsym(h, name))) return name;
        ZQ_SYM(zq_msg_init, "zmq_msg_init")
        ZQ_SYM(zq_msg_recv, "zmq_msg_recv")
        ZQ_SYM(zq_msg_data, "zmq_msg_data")
        ZQ_SYM(zq_msg_size, "zmq_msg_size")
        ZQ_SYM(zq_msg_more, "zmq_msg_more")
        ZQ_SYM(zq_msg_get, "zmq_msg_get")
        ZQ_SYM(zq_msg_close, "zmq_msg_close")
        ZQ_SYM(zq_send, "zmq_send")
        ZQ_SYM(zq_getsockopt, "zmq_getsockopt")
        ZQ_SYM(zq_errno, "zmq_errno")
        ZQ_SYM(zq_poll, "zmq_poll")
    #undef ZQ_SYM
        return NULL;
    }
    /* ZMQ_EVENTS of a socket (its commands processed): the ZMQ_POLL* bits, -1 on error. */
    static int zq_events(void *sock) {
        int ev = 0;
        size_t len = sizeof ev;
        if (zq_getsockopt(sock, 15 /* ZMQ_EVENTS */, &ev, &len) < 0) return -1;
        return ev;
    }
    typedef struct epoll_event zq_epoll_event_t;
    static int zq_epoll_fd(const zq_epoll_event_t *e) { return e->data.fd; }
    static int zq_os_errno(void) { return errno; }
    static double zq_monotonic(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    }
    """
    ctypedef struct zq_msg_t:
        pass
    ctypedef struct zq_pollitem_t:
        void *socket
        int fd
        short events
        short revents
    int zq_msg_init(zq_msg_t *) nogil
    int zq_msg_recv(zq_msg_t *, void *, int) nogil
    void *zq_msg_data(zq_msg_t *) nogil
    size_t zq_msg_size(const zq_msg_t *) nogil
    int zq_msg_more(const zq_msg_t *) nogil
    int zq_msg_get(const zq_msg_t *, int) nogil
    int zq_msg_close(zq_msg_t *) nogil
    int zq_send(void *, const void *, size_t, int) nogil
    int zq_errno() nogil
    int zq_poll(zq_pollitem_t *, int, long) nogil
    int zq_events(void *) nogil
    double zq_monotonic() nogil
    const char *zq_bind(const char *path)
    int EAGAIN, EINTR
    ctypedef struct zq_epoll_event_t:
        uint32_t events
    int epoll_wait(int, zq_epoll_event_t *, int, int) nogil
    int zq_epoll_fd(const zq_epoll_event_t *) nogil
    int zq_os_errno() nogil


cdef int ZMQ_DONTWAIT = 1, ZMQ_SNDMORE = 2, ZMQ_SRCFD = 2, ZMQ_POLLIN = 1


cdef str bind_libzmq():
    """Find libzmq's functions in the library pyzmq loaded; None, or the reason they are not."""
    import zmq.backend.cython._zmq as backend
    cdef const char *err = zq_bind(backend.__file__.encode())
    if err != NULL:
        return "libzmq symbol not found: " + (<bytes>err).decode()
    return None
