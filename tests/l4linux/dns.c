/* dns.c: a tiny DNS responder for tests/l4linux/test_netconf.py (musl-gcc -static).
 *
 *   dns ADDRESS NAME=A.B.C.D ...
 *
 * Listens on UDP ADDRESS:53; answers each A query for a NAME with its address (TTL 60),
 * other types of a known name with no answer, unknown names NXDOMAIN; prints one line per
 * query ("query NAME type T") and flushes it, so the test sees which server a resolver
 * asked. Runs until it is killed (or its personality ends).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: dns ADDRESS NAME=A.B.C.D ...\n");
        return 2;
    }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in me = { .sin_family = AF_INET, .sin_port = htons(53) };
    inet_aton(argv[1], &me.sin_addr);
    if (s < 0 || bind(s, (struct sockaddr *)&me, sizeof me) < 0) {
        perror("dns: bind");
        return 1;
    }
    printf("listening\n");
    fflush(stdout);
    for (;;) {
        unsigned char q[512], a[600];
        struct sockaddr_in peer;
        socklen_t plen = sizeof peer;
        ssize_t n = recvfrom(s, q, sizeof q, 0, (struct sockaddr *)&peer, &plen);
        if (n < 12)
            continue;
        char name[256] = "";
        size_t pos = 12, len = 0;
        while (pos < (size_t)n && q[pos] && q[pos] < 64 && pos + 1 + q[pos] < (size_t)n) {
            if (len)
                name[len++] = '.';
            if (len + q[pos] >= sizeof name - 1)
                break;
            memcpy(name + len, q + pos + 1, q[pos]);
            len += q[pos];
            pos += 1 + q[pos];
        }
        name[len] = 0;
        if (pos + 5 > (size_t)n)
            continue;
        unsigned type = q[pos + 1] << 8 | q[pos + 2];
        size_t qend = pos + 5;
        printf("query %s type %u\n", name, type);
        fflush(stdout);
        const char *addr = NULL;
        for (int i = 2; i < argc; i++) {
            const char *eq = strchr(argv[i], '=');
            if (eq && (size_t)(eq - argv[i]) == len && !strncasecmp(argv[i], name, len))
                addr = eq + 1;
        }
        memcpy(a, q, qend);
        a[2] = 0x81;                                  /* response, recursion desired */
        a[3] = addr ? 0x80 : 0x83;                    /* recursion available; NXDOMAIN */
        a[6] = 0, a[7] = addr && type == 1;           /* answers */
        a[8] = a[9] = a[10] = a[11] = 0;
        size_t out = qend;
        if (addr && type == 1) {
            static const unsigned char rr[] = { 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4 };
            struct in_addr ip;
            inet_aton(addr, &ip);
            memcpy(a + out, rr, sizeof rr);
            memcpy(a + out + sizeof rr, &ip, 4);
            out += sizeof rr + 4;
        }
        sendto(s, a, out, 0, (struct sockaddr *)&peer, plen);
    }
}
