/* netconf.c: the interface ioctls and rtnetlink as a Linux program sees them (tests/l4linux/
 * test_netconf.py runs it in the personality; built with musl-gcc -static).
 *
 *   netconf layout      sizes of the structures (checked against the Linux UAPI headers)
 *   netconf ioctls      SIOCGIFCONF, then every SIOCGIF* of each interface, one line each
 *   netconf setting     the setting ioctls: their errno (EPERM expected)
 *   netconf netlink     malformed and refused rtnetlink requests: each answer's type/errno
 *   netconf fionread    FIONREAD (SIOCINQ) and TIOCOUTQ on a socketpair and a UDP socket
 */
#include <errno.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

static const char *ip(struct sockaddr *sa)
{
    return inet_ntoa(((struct sockaddr_in *)sa)->sin_addr);
}

static int layout(void)
{
    printf("ifreq %zu ifconf %zu ifc_buf %zu ifmap %zu\n", sizeof(struct ifreq),
           sizeof(struct ifconf), (size_t)&((struct ifconf *)0)->ifc_buf, sizeof(struct ifmap));
    printf("nlmsghdr %zu nlmsgerr %zu sockaddr_nl %zu ifinfomsg %zu ifaddrmsg %zu rtmsg %zu "
           "rtattr %zu\n", sizeof(struct nlmsghdr), sizeof(struct nlmsgerr),
           sizeof(struct sockaddr_nl), sizeof(struct ifinfomsg), sizeof(struct ifaddrmsg),
           sizeof(struct rtmsg), sizeof(struct rtattr));
    return 0;
}

static int ioctls(void)
{
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    if (s < 0) {
        printf("socket: %s\n", strerror(errno));
        return 1;
    }
    struct ifreq reqs[8];
    struct ifconf ifc = { .ifc_len = 0, .ifc_buf = NULL };
    if (ioctl(s, SIOCGIFCONF, &ifc) < 0)
        return printf("SIOCGIFCONF(NULL): %s\n", strerror(errno)), 1;
    printf("ifconf needs %d\n", ifc.ifc_len);
    ifc.ifc_len = sizeof reqs;
    ifc.ifc_req = reqs;
    if (ioctl(s, SIOCGIFCONF, &ifc) < 0)
        return printf("SIOCGIFCONF: %s\n", strerror(errno)), 1;
    for (int i = 0; i < ifc.ifc_len / (int)sizeof(struct ifreq); i++) {
        struct ifreq r;
        char name[IFNAMSIZ + 1] = { 0 };
        memcpy(name, reqs[i].ifr_name, IFNAMSIZ);
        printf("%s addr %s", name, ip(&reqs[i].ifr_addr));
        memcpy(r.ifr_name, name, IFNAMSIZ);
        if (ioctl(s, SIOCGIFINDEX, &r) == 0) {
            int index = r.ifr_ifindex;
            printf(" index %d", index);
            memset(&r, 0, sizeof r);
            r.ifr_ifindex = index;
            if (ioctl(s, SIOCGIFNAME, &r) == 0)
                printf(" name %s", r.ifr_name);
        }
        memcpy(r.ifr_name, name, IFNAMSIZ);
        if (ioctl(s, SIOCGIFFLAGS, &r) == 0)
            printf(" flags 0x%x", (unsigned short)r.ifr_flags);
        if (ioctl(s, SIOCGIFNETMASK, &r) == 0)
            printf(" mask %s", ip(&r.ifr_netmask));
        if (ioctl(s, SIOCGIFBRDADDR, &r) == 0)
            printf(" brd %s", ip(&r.ifr_broadaddr));
        if (ioctl(s, SIOCGIFDSTADDR, &r) == 0)
            printf(" dst %s", ip(&r.ifr_dstaddr));
        if (ioctl(s, SIOCGIFMTU, &r) == 0)
            printf(" mtu %d", r.ifr_mtu);
        if (ioctl(s, SIOCGIFMETRIC, &r) == 0)
            printf(" metric %d", r.ifr_metric);
        if (ioctl(s, SIOCGIFTXQLEN, &r) == 0)
            printf(" qlen %d", r.ifr_qlen);
        if (ioctl(s, SIOCGIFMAP, &r) == 0)
            printf(" irq %d", r.ifr_map.irq);
        if (ioctl(s, SIOCGIFHWADDR, &r) == 0) {
            unsigned char *m = (unsigned char *)r.ifr_hwaddr.sa_data;
            printf(" hw %d %02x:%02x:%02x:%02x:%02x:%02x", r.ifr_hwaddr.sa_family,
                   m[0], m[1], m[2], m[3], m[4], m[5]);
        }
        printf("\n");
    }
    struct ifreq r = { .ifr_name = "nosuch0" };
    printf("nosuch0 %s\n", ioctl(s, SIOCGIFFLAGS, &r) < 0 ? strerror(errno) : "found");
    close(s);
    return 0;
}

static int setting(void)
{
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct ifreq r = { .ifr_name = "lo" };
    struct rtentry rt;
    memset(&rt, 0, sizeof rt);
    static const struct { unsigned long cmd; const char *name; } cmds[] = {
        { SIOCSIFFLAGS, "SIOCSIFFLAGS" }, { SIOCSIFADDR, "SIOCSIFADDR" },
        { SIOCSIFNETMASK, "SIOCSIFNETMASK" }, { SIOCSIFMTU, "SIOCSIFMTU" },
        { SIOCSIFHWADDR, "SIOCSIFHWADDR" }, { SIOCSIFNAME, "SIOCSIFNAME" },
        { SIOCADDRT, "SIOCADDRT" }, { SIOCDELRT, "SIOCDELRT" },
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        void *arg = cmds[i].cmd == SIOCADDRT || cmds[i].cmd == SIOCDELRT ? (void *)&rt : (void *)&r;
        int e = ioctl(s, cmds[i].cmd, arg) < 0 ? errno : 0;
        printf("%s %s\n", cmds[i].name, e ? strerror(e) : "ok");
    }
    return 0;
}

/* Send `len` bytes of `msg` to the kernel; print the answer's first message. */
static void ask(int s, const char *what, const void *msg, size_t len)
{
    struct sockaddr_nl k = { .nl_family = AF_NETLINK };
    char buf[8192];
    if (sendto(s, msg, len, 0, (struct sockaddr *)&k, sizeof k) < 0) {
        printf("%s send: %s\n", what, strerror(errno));
        return;
    }
    ssize_t n = recv(s, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0) {
        printf("%s: no answer (%s)\n", what, strerror(errno));
        return;
    }
    struct nlmsghdr *h = (struct nlmsghdr *)buf;
    if (h->nlmsg_type == NLMSG_ERROR) {
        struct nlmsgerr *e = NLMSG_DATA(h);
        printf("%s: error %s seq %u\n", what, e->error ? strerror(-e->error) : "0 (ack)",
               h->nlmsg_seq);
    } else {
        printf("%s: type %d\n", what, h->nlmsg_type);
    }
}

static int netlink(void)
{
    int s = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
    if (s < 0)
        return printf("socket: %s\n", strerror(errno)), 1;
    struct sockaddr_nl me = { .nl_family = AF_NETLINK };
    socklen_t len = sizeof me;
    if (bind(s, (struct sockaddr *)&me, sizeof me) < 0 ||
        getsockname(s, (struct sockaddr *)&me, &len) < 0)
        return printf("bind: %s\n", strerror(errno)), 1;
    printf("bound len %u family %d pid %s\n", (unsigned)len, me.nl_family,
           me.nl_pid ? "set" : "zero");
    struct { struct nlmsghdr h; struct ifaddrmsg a; char pad[64]; } req;
    memset(&req, 0, sizeof req);
    req.h.nlmsg_len = NLMSG_LENGTH(sizeof req.a);
    req.h.nlmsg_type = RTM_NEWADDR;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    req.h.nlmsg_seq = 11;
    req.a.ifa_family = AF_INET;
    ask(s, "RTM_NEWADDR", &req, req.h.nlmsg_len);
    req.h.nlmsg_type = RTM_DELROUTE;
    req.h.nlmsg_seq = 12;
    ask(s, "RTM_DELROUTE", &req, req.h.nlmsg_len);
    req.h.nlmsg_len = 1000;                     /* longer than what is sent */
    req.h.nlmsg_type = RTM_GETLINK;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.h.nlmsg_seq = 13;
    ask(s, "overlong", &req, 40);
    req.h.nlmsg_len = 8;                        /* shorter than a header */
    req.h.nlmsg_seq = 14;
    ask(s, "short", &req, 16);
    req.h.nlmsg_len = NLMSG_LENGTH(0);          /* a dump without its family byte */
    req.h.nlmsg_seq = 15;
    ask(s, "no family", &req, req.h.nlmsg_len);
    req.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtgenmsg));
    req.h.nlmsg_type = 200;                     /* no such family */
    req.h.nlmsg_seq = 16;
    ask(s, "type 200", &req, req.h.nlmsg_len);
    unsigned char junk[37];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)(i * 37 + 5);
    ask(s, "junk", junk, sizeof junk);
    req.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtgenmsg));
    req.h.nlmsg_type = RTM_GETADDR;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.h.nlmsg_seq = 17;
    ask(s, "RTM_GETADDR dump", &req, req.h.nlmsg_len);
    close(s);
    return 0;
}

static int fionread(void)
{
    int sv[2], n = -1, out = -1, u = -1;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return printf("socketpair: %s\n", strerror(errno)), 1;
    if (write(sv[0], "hello", 5) != 5 || ioctl(sv[1], FIONREAD, &n) < 0 ||
        ioctl(sv[0], TIOCOUTQ, &out) < 0)
        return printf("unix: %s\n", strerror(errno)), 1;
    int a = socket(AF_INET, SOCK_DGRAM, 0), b = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(5999) };
    inet_aton("127.0.0.1", &to.sin_addr);
    if (bind(b, (struct sockaddr *)&to, sizeof to) < 0 ||
        sendto(a, "7 bytes", 7, 0, (struct sockaddr *)&to, sizeof to) != 7)
        return printf("udp: %s\n", strerror(errno)), 1;
    for (int i = 0; i < 100 && (ioctl(b, FIONREAD, &u) < 0 || u == 0); i++)
        usleep(10000);
    printf("unix %d outq %d udp %d\n", n, out, u);
    return 0;
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "layout"))
        return layout();
    if (!strcmp(what, "ioctls"))
        return ioctls();
    if (!strcmp(what, "setting"))
        return setting();
    if (!strcmp(what, "netlink"))
        return netlink();
    if (!strcmp(what, "fionread"))
        return fionread();
    fprintf(stderr, "usage: netconf layout|ioctls|setting|netlink|fionread\n");
    return 2;
}
