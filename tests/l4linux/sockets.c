/* Socket semantics a Linux program relies on, printed so that a run in the personality can be
 * compared line by line with a native run (tests/l4linux/test_sockets.py): AF_UNIX stream and
 * datagram (socketpair, paths, abstract names), TCP and UDP on the loopback, errno values,
 * non-blocking calls, poll/select readiness, EOF, EPIPE, ECONNRESET, shutdown, fork sharing a
 * socket, options. Nothing printed depends on port numbers or timing. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <unistd.h>

static const char *en(int e) {
    switch (e) {
    case 0: return "0"; case EAGAIN: return "EAGAIN"; case EPIPE: return "EPIPE";
    case ECONNREFUSED: return "ECONNREFUSED"; case ECONNRESET: return "ECONNRESET";
    case EADDRINUSE: return "EADDRINUSE"; case ENOTCONN: return "ENOTCONN";
    case EISCONN: return "EISCONN"; case EINPROGRESS: return "EINPROGRESS";
    case ENOENT: return "ENOENT"; case EINVAL: return "EINVAL"; case ENOTSOCK: return "ENOTSOCK";
    case EBADF: return "EBADF"; case EDESTADDRREQ: return "EDESTADDRREQ";
    case EAFNOSUPPORT: return "EAFNOSUPPORT"; case EOPNOTSUPP: return "EOPNOTSUPP";
    case EALREADY: return "EALREADY"; case EFAULT: return "EFAULT"; case ENOPROTOOPT: return "ENOPROTOOPT";
    default: { static char b[32]; snprintf(b, sizeof b, "errno%d", e); return b; }
    }
}
#define R(what, call) do { errno = 0; long r_ = (long)(call); \
    printf("%s = %ld %s\n", what, r_ < 0 ? -1L : r_, r_ < 0 ? en(errno) : ""); } while (0)

static int pollev(int fd, int ev) {
    struct pollfd p = { fd, (short)ev, 0 };
    poll(&p, 1, 0);
    return p.revents;
}

static struct sockaddr_in lo(int port) {
    struct sockaddr_in a; memset(&a, 0, sizeof a);
    a.sin_family = AF_INET; a.sin_port = htons(port); a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static int portof(int fd) {
    struct sockaddr_in a; socklen_t n = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &n);
    return ntohs(a.sin_port);
}

static void unix_pairs(void) {
    int sv[2]; char buf[64];
    puts("-- socketpair stream");
    R("socketpair", socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
    printf("poll fresh = %d\n", pollev(sv[0], POLLIN | POLLOUT));
    R("write", write(sv[0], "hello", 5));
    printf("poll readable = %d\n", pollev(sv[1], POLLIN | POLLOUT));
    R("recv peek", recv(sv[1], buf, 3, MSG_PEEK));
    R("read", read(sv[1], buf, sizeof buf));
    R("recv dontwait", recv(sv[1], buf, sizeof buf, MSG_DONTWAIT));
    R("shutdown wr", shutdown(sv[0], SHUT_WR));
    R("read eof", read(sv[1], buf, sizeof buf));
    R("write after shut", write(sv[0], "x", 1));
    printf("poll after shut = %d\n", pollev(sv[1], POLLIN | POLLOUT));
    close(sv[1]);
    R("send to closed", send(sv[0], "x", 1, 0));
    printf("poll peer closed = %d\n", pollev(sv[0], POLLIN | POLLOUT));
    close(sv[0]);

    puts("-- socketpair dgram");
    R("socketpair", socketpair(AF_UNIX, SOCK_DGRAM, 0, sv));
    R("send a", send(sv[0], "abcdef", 6, 0));
    R("send b", send(sv[0], "gh", 2, 0));
    R("recv trunc", recv(sv[1], buf, 3, MSG_TRUNC));
    R("recv next", recv(sv[1], buf, sizeof buf, 0));
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    R("recv empty nonblock", recv(sv[1], buf, sizeof buf, 0));
    close(sv[0]); close(sv[1]);

    puts("-- fork shares a socket");
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        write(sv[1], "child", 5);
        _exit(0);
    }
    close(sv[1]);
    waitpid(pid, NULL, 0);
    R("read from child", read(sv[0], buf, sizeof buf));
    R("read eof after child", read(sv[0], buf, sizeof buf));
    close(sv[0]);
}

static void unix_names(void) {
    char buf[64]; struct sockaddr_un a, b; socklen_t n; struct stat st;
    puts("-- AF_UNIX paths");
    unlink("/tmp/l4s.sock");
    memset(&a, 0, sizeof a); a.sun_family = AF_UNIX; strcpy(a.sun_path, "/tmp/l4s.sock");
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    R("connect missing", connect(c, (struct sockaddr *)&a, sizeof a));
    R("bind", bind(l, (struct sockaddr *)&a, sizeof a));
    R("stat is socket", stat("/tmp/l4s.sock", &st) == 0 && S_ISSOCK(st.st_mode));
    R("connect not listening", connect(c, (struct sockaddr *)&a, sizeof a));
    int l2 = socket(AF_UNIX, SOCK_STREAM, 0);
    R("bind again", bind(l2, (struct sockaddr *)&a, sizeof a));
    close(l2);
    R("listen", listen(l, 4));
    fcntl(l, F_SETFL, O_NONBLOCK);
    R("accept none", accept(l, NULL, NULL));
    R("connect", connect(c, (struct sockaddr *)&a, sizeof a));
    R("connect again", connect(c, (struct sockaddr *)&a, sizeof a));
    printf("poll listener = %d\n", pollev(l, POLLIN));
    int s = accept(l, NULL, NULL);
    R("accepted", s >= 0);
    n = sizeof b; getpeername(c, (struct sockaddr *)&b, &n);
    printf("peer = %s len %d\n", b.sun_path, (int)n);
    n = sizeof b; getsockname(s, (struct sockaddr *)&b, &n);
    printf("accepted name = %s\n", b.sun_path);
    R("send", send(c, "ping", 4, 0));
    R("recv", recv(s, buf, sizeof buf, 0));
    close(c); close(s); close(l);
    R("unlink", unlink("/tmp/l4s.sock"));

    puts("-- AF_UNIX abstract and datagrams");
    memset(&a, 0, sizeof a); a.sun_family = AF_UNIX; memcpy(a.sun_path, "\0l4py-test", 10);
    int d1 = socket(AF_UNIX, SOCK_DGRAM, 0), d2 = socket(AF_UNIX, SOCK_DGRAM, 0);
    socklen_t alen = offsetof(struct sockaddr_un, sun_path) + 10;
    R("bind abstract", bind(d1, (struct sockaddr *)&a, alen));
    R("bind abstract again", bind(d2, (struct sockaddr *)&a, alen));
    R("sendto", sendto(d2, "dgram", 5, 0, (struct sockaddr *)&a, alen));
    n = sizeof b;
    R("recvfrom", recvfrom(d1, buf, sizeof buf, 0, (struct sockaddr *)&b, &n));
    printf("from len = %d\n", (int)n);
    R("send unconnected", send(d2, "x", 1, 0));
    memcpy(a.sun_path, "\0nobody-here", 12);
    R("sendto nobody", sendto(d2, "x", 1, 0, (struct sockaddr *)&a, offsetof(struct sockaddr_un, sun_path) + 12));
    close(d1); close(d2);
}

static void tcp_loopback(void) {
    char buf[256]; int one = 1, v; socklen_t n;
    puts("-- TCP loopback");
    int l = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = lo(0);
    R("bind", bind(l, (struct sockaddr *)&a, sizeof a));
    int port = portof(l);
    R("listen", listen(l, 8));
    int l2 = socket(AF_INET, SOCK_STREAM, 0);
    a = lo(port);
    R("bind in use", bind(l2, (struct sockaddr *)&a, sizeof a));
    close(l2);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    errno = 0;
    int r = connect(c, (struct sockaddr *)&a, sizeof a);
    printf("connect nonblock ok = %d\n", r == 0 || errno == EINPROGRESS);
    struct pollfd pf = { c, POLLOUT, 0 };
    poll(&pf, 1, 5000);
    n = sizeof v; getsockopt(c, SOL_SOCKET, SO_ERROR, &v, &n);
    printf("so_error = %s\n", en(v));
    R("connect again", connect(c, (struct sockaddr *)&a, sizeof a));
    int s = accept(l, NULL, NULL);
    R("accepted", s >= 0);
    R("recv nothing", recv(c, buf, sizeof buf, 0));
    R("send", send(s, "hello tcp", 9, 0));
    pf.fd = c; pf.events = POLLIN; poll(&pf, 1, 5000);
    R("recv", recv(c, buf, sizeof buf, 0));
    struct sockaddr_in p; n = sizeof p;
    getpeername(c, (struct sockaddr *)&p, &n);
    printf("peer port ok = %d addr %s\n", ntohs(p.sin_port) == port, inet_ntoa(p.sin_addr));
    n = sizeof v; getsockopt(s, SOL_SOCKET, SO_TYPE, &v, &n); printf("so_type = %d\n", v);
    R("nodelay", setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one));
    n = sizeof v; getsockopt(s, IPPROTO_TCP, TCP_NODELAY, &v, &n); printf("nodelay = %d\n", v != 0);
    n = sizeof v; getsockopt(l, SOL_SOCKET, SO_ACCEPTCONN, &v, &n); printf("acceptconn = %d\n", v);
    v = 4096; setsockopt(s, SOL_SOCKET, SO_RCVBUF, &v, sizeof v);
    n = sizeof v; getsockopt(s, SOL_SOCKET, SO_RCVBUF, &v, &n); printf("rcvbuf doubled = %d\n", v == 8192);
    R("bad level", getsockopt(s, 9999, 1, &v, &n));
    struct timeval tv = { 0, 100000 };
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    R("recv timeout", recv(s, buf, sizeof buf, 0));
    R("shutdown wr", shutdown(c, SHUT_WR));
    R("recv eof", recv(s, buf, sizeof buf, 0));
    R("send after shutdown", send(c, "x", 1, MSG_NOSIGNAL));
    R("send back", send(s, "bye", 3, 0));
    pf.fd = c; pf.events = POLLIN; poll(&pf, 1, 5000);
    R("recv back", recv(c, buf, sizeof buf, 0));
    close(c); close(s);

    puts("-- TCP reset and refused");
    c = socket(AF_INET, SOCK_STREAM, 0);
    R("connect", connect(c, (struct sockaddr *)&a, sizeof a));
    s = accept(l, NULL, NULL);
    send(c, "unread", 6, 0);
    usleep(50000);
    close(s);                        /* unread data: RST */
    pf.fd = c; pf.events = POLLIN; poll(&pf, 1, 5000);
    R("recv after reset", recv(c, buf, sizeof buf, 0));
    close(c);
    close(l);
    c = socket(AF_INET, SOCK_STREAM, 0);
    R("connect refused", connect(c, (struct sockaddr *)&a, sizeof a));
    close(c);
    R("recv on non-socket", recv(0, buf, 1, MSG_DONTWAIT));
}

static void udp_loopback(void) {
    char buf[64]; struct sockaddr_in from; socklen_t n = sizeof from;
    puts("-- UDP loopback");
    int u = socket(AF_INET, SOCK_DGRAM, 0), w = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = lo(0);
    R("bind", bind(u, (struct sockaddr *)&a, sizeof a));
    a = lo(portof(u));
    R("send unconnected", send(w, "x", 1, 0));
    R("sendto", sendto(w, "datagram", 8, 0, (struct sockaddr *)&a, sizeof a));
    R("sendto 2", sendto(w, "second", 6, 0, (struct sockaddr *)&a, sizeof a));
    fd_set rs; FD_ZERO(&rs); FD_SET(u, &rs); struct timeval tv = { 2, 0 };
    R("select", select(u + 1, &rs, NULL, NULL, &tv));
    R("recvfrom trunc", recvfrom(u, buf, 4, MSG_TRUNC, (struct sockaddr *)&from, &n));
    printf("from port ok = %d addr %s\n", ntohs(from.sin_port) == portof(w), inet_ntoa(from.sin_addr));
    struct iovec iov = { buf, sizeof buf };
    struct msghdr m; memset(&m, 0, sizeof m); m.msg_iov = &iov; m.msg_iovlen = 1;
    m.msg_name = &from; m.msg_namelen = sizeof from;
    R("recvmsg", recvmsg(u, &m, 0));
    printf("namelen = %d flags = %d\n", (int)m.msg_namelen, m.msg_flags);
    R("connect", connect(w, (struct sockaddr *)&a, sizeof a));
    R("send connected", send(w, "c", 1, 0));
    R("recv", recv(u, buf, sizeof buf, 0));
    R("recv empty", recv(u, buf, sizeof buf, MSG_DONTWAIT));
    close(u); close(w);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    signal(SIGPIPE, SIG_IGN);
    unix_pairs();
    unix_names();
    tcp_loopback();
    udp_loopback();
    puts("done");
    return 0;
}
