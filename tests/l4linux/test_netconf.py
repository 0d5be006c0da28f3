"""L⁴Linux: network configuration as Linux programs see it (servers/l4linux/netconf.py,
/proc/net in procfs.py, /etc in initramfs.py; docs/L4LINUX.md "Network configuration").

Two halves. In-process, netconf's answers for an interface that is a real netstack Stack
on an in-memory wire (servers.netstack.MemLink) with a second stack at its gateway: the
ioctl structures, rtnetlink dumps parsed back, the refusals, junk never raising, the
/proc/net text. Booted, a personality (no network: `lo` only) where busybox itself is the
judge — hostname, ifconfig, ip addr/link/route, route -n, cat /proc/net/dev — and a static C
probe (netconf.c, built against the Linux UAPI headers) checks the layouts, the setting
ioctls' EPERM and malformed netlink requests; a DNS responder (dns.c) on the loopback shows
that resolv.conf names the server busybox's and musl's resolvers ask.
"""
from __future__ import annotations

import errno
import os
import random
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from kernel.user.testing import System
from servers.l4linux import netconf, procfs, process, rtnetlink
from servers.netstack import MemLink, Stack

from .rootfs import HERE, compile_c, write
from .test_personality import Linux

pytestmark = pytest.mark.skipif(not os.path.exists("/bin/busybox") or not shutil.which("musl-gcc"),
                                reason="needs busybox-static and musl-gcc")
GAI_C = r"""
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        struct addrinfo hints, *res;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_INET;
        hints.ai_socktype = SOCK_STREAM;
        int e = getaddrinfo(argv[i], "http", &hints, &res);
        if (e) { printf("%s: not found\n", argv[i]); continue; }
        struct sockaddr_in *sin = (struct sockaddr_in *)res->ai_addr;
        printf("%s %s %d\n", argv[i], inet_ntoa(sin->sin_addr), ntohs(sin->sin_port));
        freeaddrinfo(res);
    }
    return 0;
}
"""


def _uapi(tmp: str) -> str:
    """An include directory with the host's Linux UAPI headers, for musl-gcc (whose own
    include path has none)."""
    inc = os.path.join(tmp, "uapi")
    os.makedirs(inc, exist_ok=True)
    for name, target in (("linux", "/usr/include/linux"), ("asm-generic", "/usr/include/asm-generic"),
                         ("asm", "/usr/include/x86_64-linux-gnu/asm")):
        if not os.path.lexists(os.path.join(inc, name)):
            os.symlink(target, os.path.join(inc, name))
    return inc


def _build(tmp: str, name: str, source: str, glibc: bool = False) -> str:
    if glibc:
        return compile_c(tmp, name + "-glibc", source, ("gcc", "-O2"))
    return compile_c(tmp, name, source, extra=("-idirafter", _uapi(tmp)))


def _programs(tmp: str, gai: str, *names: str) -> dict[str, str]:
    """gai (written by the fixture) and HERE/NAME.c, built with musl-gcc."""
    return {"gai": _build(tmp, "gai", gai),
            **{name: _build(tmp, name, os.path.join(HERE, name + ".c")) for name in names}}


# -- in-process: netconf over a real stack ------------------------------------------------------

class Net:
    def __init__(self, stack: Stack) -> None:
        self.stack, self.name = stack, "eth0"


class Px:
    """What netconf reads of a personality: its network (`net`), the serving thread's tid
    (netlink's autobind) and the process table (/proc/net/unix)."""

    def __init__(self, stack: Stack | None) -> None:
        self.net = Net(stack) if stack is not None else None
        self.tid = os.getpid()
        self.procs = process.Table()


@pytest.fixture
def px() -> Iterator[Px]:
    a, b = MemLink.pair()
    ours = Stack(a, "10.0.2.15/24", gateway="10.0.2.2").start()
    gateway = Stack(b, "10.0.2.2/24").start()
    try:
        assert ours.ping("10.0.2.2", timeout=5.0) is not None      # frames counted, ARP filled
        yield Px(ours)
    finally:
        ours.stop()
        gateway.stop()


def _ifreq(name: str, tail: bytes = b"") -> bytes:
    return name.encode().ljust(16, b"\0") + tail.ljust(24, b"\0")


def test_ioctl_answers_describe_the_stack(px: Px) -> None:
    ifaces = netconf.interfaces(px)
    assert [i.name for i in ifaces] == ["lo", "eth0"]
    ask = lambda cmd, name="eth0": netconf.ifreq_answer(ifaces, cmd, _ifreq(name))  # noqa: E731
    flags = ask(netconf.SIOCGIFFLAGS)
    assert isinstance(flags, bytes) and struct.unpack_from("<H", flags, 16)[0] == 0x1043
    assert struct.unpack_from("<H", ask(netconf.SIOCGIFFLAGS, "lo"), 16)[0] == 0x49
    addr = ask(netconf.SIOCGIFADDR)
    assert addr[16:20] == b"\x02\x00\x00\x00" and addr[20:24] == bytes([10, 0, 2, 15])
    assert ask(netconf.SIOCGIFNETMASK)[20:24] == b"\xff\xff\xff\x00"
    assert ask(netconf.SIOCGIFBRDADDR)[20:24] == bytes([10, 0, 2, 255])
    hw = ask(netconf.SIOCGIFHWADDR)
    assert struct.unpack_from("<H", hw, 16)[0] == netconf.ARPHRD_ETHER and hw[18:24] == px.net.stack.mac
    assert struct.unpack_from("<i", ask(netconf.SIOCGIFMTU), 16)[0] == 1500
    assert struct.unpack_from("<i", ask(netconf.SIOCGIFMTU, "lo"), 16)[0] == 65536
    assert struct.unpack_from("<i", ask(netconf.SIOCGIFINDEX), 16)[0] == 2
    name = netconf.ifreq_answer(ifaces, netconf.SIOCGIFNAME, _ifreq("", struct.pack("<i", 2)))
    assert isinstance(name, bytes) and name[:5] == b"eth0\0"
    assert ask(netconf.SIOCGIFMAP)[16:] == bytes(24)
    assert ask(netconf.SIOCGIFFLAGS, "wlan0") == -errno.ENODEV
    assert netconf.ifreq_answer(ifaces, netconf.SIOCGIFFLAGS, b"short") == -errno.EFAULT
    conf = netconf.ifconf_entries(ifaces)
    assert len(conf) == 2 * netconf.IFREQ and conf[40:44] == b"eth0" and conf[60:64] == bytes([10, 0, 2, 15])


def test_setting_ioctls_are_eperm() -> None:
    for cmd in sorted(netconf.SETTING):     # refused before anything is read
        assert netconf.ioctl(None, None, None, cmd, 0) == -errno.EPERM  # type: ignore[arg-type]


def _messages(datagrams: list[bytes]) -> list[tuple[int, int, int, int, bytes]]:
    """(type, flags, seq, pid, body) of every message, checking the alignment as busybox's
    NLMSG_OK/NLMSG_NEXT walk does (nothing left over)."""
    out = []
    for d in datagrams:
        pos = 0
        while pos < len(d):
            length, kind, flags, seq, pid = rtnetlink.NLMSG_HDR.unpack_from(d, pos)
            assert 16 <= length <= len(d) - pos
            out.append((kind, flags, seq, pid, d[pos + 16:pos + length]))
            pos += (length + 3) & ~3
        assert pos == len(d)
    return out


def _attrs(data: bytes) -> dict[int, bytes]:
    out, pos = {}, 0
    while pos + 4 <= len(data):
        length, kind = struct.unpack_from("<HH", data, pos)
        out[kind] = data[pos + 4:pos + length]
        pos += (length + 3) & ~3
    return out


def _dump(sock: rtnetlink.NetlinkSocket, kind: int, seq: int) -> list[tuple[int, int, int, int, bytes]]:
    req = rtnetlink.message(kind, rtnetlink.NLM_F_REQUEST | rtnetlink.NLM_F_DUMP, seq, 0, b"\0")
    assert sock.sendmsg(req, None, 0) == len(req)
    got = []
    while sock.queue:
        data, addr = sock.recvmsg(8192, 0)
        assert addr == struct.pack("<HHII", netconf.AF_NETLINK, 0, 0, 0)     # the kernel's
        got.append(data)
    msgs = _messages(got)
    assert msgs[-1][0] == rtnetlink.NLMSG_DONE
    assert all(m[2] == seq and m[3] == sock.port for m in msgs)
    return msgs[:-1]


def test_netlink_dumps_of_links_addresses_routes_neighbours(px: Px) -> None:
    sock = rtnetlink.NetlinkSocket(px, rtnetlink.SOCK_RAW, rtnetlink.NETLINK_ROUTE)
    assert sock.bind(struct.pack("<HHII", netconf.AF_NETLINK, 0, 0, 0)) == 0
    family, _, port, _ = struct.unpack("<HHII", sock.getsockname())
    assert family == netconf.AF_NETLINK and port == sock.port != 0
    links = _dump(sock, rtnetlink.RTM_GETLINK, 5)
    assert [m[0] for m in links] == [rtnetlink.RTM_NEWLINK] * 2
    by_name = {_attrs(m[4][16:])[rtnetlink.IFLA_IFNAME]: m[4] for m in links}
    eth0 = by_name[b"eth0\0"]
    assert struct.unpack_from("<BxHiII", eth0)[1:4] == (netconf.ARPHRD_ETHER, 2, 0x11043)
    attrs = _attrs(eth0[16:])
    assert attrs[rtnetlink.IFLA_ADDRESS] == px.net.stack.mac
    assert struct.unpack("<I", attrs[rtnetlink.IFLA_MTU])[0] == 1500
    assert struct.unpack_from("<Q", attrs[rtnetlink.IFLA_STATS64])[0] > 0         # rx packets
    addrs = _dump(sock, rtnetlink.RTM_GETADDR, 6)
    eth_addr = [m[4] for m in addrs if m[4][4] == 2][0]         # ifa_index
    assert struct.unpack_from("<BBBBI", eth_addr) == (netconf.AF_INET, 24, 0x80, 0, 2)
    a = _attrs(eth_addr[8:])
    assert a[rtnetlink.IFA_LOCAL] == bytes([10, 0, 2, 15]) and a[rtnetlink.IFA_BROADCAST] == bytes([10, 0, 2, 255])
    assert a[rtnetlink.IFA_LABEL] == b"eth0\0"
    routes = _dump(sock, rtnetlink.RTM_GETROUTE, 7)
    main = [m[4] for m in routes if m[4][4] == netconf.RT_TABLE_MAIN]
    default = [r for r in main if r[1] == 0][0]
    assert _attrs(default[12:])[rtnetlink.RTA_GATEWAY] == bytes([10, 0, 2, 2])
    assert struct.unpack("<I", _attrs(default[12:])[rtnetlink.RTA_OIF])[0] == 2
    get = _answer(sock, rtnetlink.message(rtnetlink.RTM_GETROUTE, rtnetlink.NLM_F_REQUEST, 9, 0, bytes(12)
                                        + rtnetlink._attr(rtnetlink.RTA_DST, bytes([192, 0, 2, 1]))))
    assert [m[0] for m in get] == [rtnetlink.RTM_NEWROUTE] and get[0][2] == 9
    assert _attrs(get[0][4][12:])[rtnetlink.RTA_GATEWAY] == bytes([10, 0, 2, 2])
    neigh = _dump(sock, rtnetlink.RTM_GETNEIGH, 8)
    assert [_attrs(m[4][12:])[rtnetlink.NDA_DST] for m in neigh] == [bytes([10, 0, 2, 2])]
    sock.close()


def _answer(sock: rtnetlink.NetlinkSocket, data: bytes) -> list[tuple[int, int, int, int, bytes]]:
    assert sock.sendmsg(data, None, 0) == len(data)
    got = []
    while sock.queue:
        got.append(sock.recvmsg(8192, 0)[0])
    return _messages(got)


def _errno_of(msgs: list[tuple[int, int, int, int, bytes]]) -> int:
    assert msgs and msgs[0][0] == rtnetlink.NLMSG_ERROR
    return -struct.unpack_from("<i", msgs[0][4])[0]


def test_netlink_refusals_and_malformed_requests(px: Px) -> None:
    sock = rtnetlink.NetlinkSocket(px, rtnetlink.SOCK_RAW, rtnetlink.NETLINK_ROUTE)
    req = lambda kind, flags, body=b"\0" * 8, seq=1: rtnetlink.message(  # noqa: E731
        kind, rtnetlink.NLM_F_REQUEST | flags, seq, 0, body)
    assert _errno_of(_answer(sock, req(rtnetlink.RTM_NEWADDR, rtnetlink.NLM_F_ACK))) == errno.EPERM
    assert _errno_of(_answer(sock, req(rtnetlink.RTM_NEWROUTE, 0))) == errno.EPERM
    assert _errno_of(_answer(sock, req(19, 0, bytes(16)))) == errno.EPERM          # RTM_SETLINK
    assert _errno_of(_answer(sock, req(200, 0))) == errno.EOPNOTSUPP
    assert _errno_of(_answer(sock, req(rtnetlink.RTM_GETLINK, rtnetlink.NLM_F_DUMP, b""))) == errno.EINVAL
    assert _errno_of(_answer(sock, req(rtnetlink.RTM_GETLINK, 0, b"\0" * 4))) == errno.EINVAL
    overlong = bytearray(req(rtnetlink.RTM_GETLINK, rtnetlink.NLM_F_DUMP))
    overlong[0:4] = struct.pack("<I", 1000)
    assert _errno_of(_answer(sock, bytes(overlong))) == errno.EINVAL
    assert _errno_of(_answer(sock, struct.pack("<IHHII", 8, 18, 1, 1, 0))) == errno.EINVAL
    one = _answer(sock, req(rtnetlink.RTM_GETLINK, rtnetlink.NLM_F_ACK, struct.pack("<BxHiII", 0, 0, 2, 0, 0)))
    assert [m[0] for m in one] == [rtnetlink.RTM_NEWLINK, rtnetlink.NLMSG_ERROR] and _errno_of(one[1:]) == 0
    assert _errno_of(_answer(sock, req(rtnetlink.RTM_GETLINK, 0, struct.pack("<BxHiII", 0, 0, 9, 0, 0)))) \
        == errno.ENODEV
    assert _answer(sock, rtnetlink.message(rtnetlink.NLMSG_NOOP, 0, 1, 0, b"")) == []
    assert sock.sendmsg(req(rtnetlink.RTM_GETLINK, 0), struct.pack("<HHII", 16, 0, 99, 0), 0) \
        == -errno.ECONNREFUSED
    assert sock.bind(b"\x02\x00") == -errno.EINVAL
    rng = random.Random(16)
    for _ in range(300):                  # junk: answered or dropped, never an exception
        junk = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 120)))
        if len(junk) >= 4 and rng.random() < 0.5:
            junk = struct.pack("<I", len(junk)) + junk[4:]
        sock.sendmsg(junk, None, 0)
        while sock.queue:
            _messages([sock.recvmsg(8192, 0)[0]])
    assert sock.recvmsg(8192, 0) is rtnetlink.BLOCK
    sock.close()


def test_proc_net_files_from_the_stack(px: Px) -> None:
    files = procfs.proc_net(px)
    dev = files["dev"].decode().splitlines()
    assert dev[1].split("|")[1].split()[:2] == ["bytes", "packets"]
    eth0 = [line for line in dev if line.strip().startswith("eth0:")][0].split(":")[1].split()
    assert int(eth0[1]) > 0 and int(eth0[9]) > 0          # rx and tx packets
    route = files["route"].decode().splitlines()
    assert all(len(line) == 127 for line in route)
    assert route[1].split()[:4] == ["eth0", "00000000", "0202000A", "0003"]
    assert route[2].split()[:4] == ["eth0", "0002000A", "00000000", "0001"]
    arp = files["arp"].decode().splitlines()
    assert arp[1].split() == ["10.0.2.2", "0x1", "0x2", "02:00:00:00:00:02", "*", "eth0"]


def test_without_a_network_only_lo() -> None:
    px = Px(None)
    assert [i.name for i in netconf.interfaces(px)] == ["lo"]
    assert procfs.proc_net(px)["route"].decode().count("\n") == 1
    sock = rtnetlink.NetlinkSocket(px, rtnetlink.SOCK_RAW, rtnetlink.NETLINK_ROUTE)
    assert len(_dump(sock, rtnetlink.RTM_GETADDR, 3)) == 1
    assert _dump(sock, rtnetlink.RTM_GETNEIGH, 4) == []
    sock.close()


def test_layouts_are_the_kernel_headers(tmp_path: Any) -> None:
    """The sizes netconf packs, against the host's Linux UAPI headers (glibc build)."""
    if not shutil.which("gcc"):
        pytest.skip("needs gcc")
    exe = _build(str(tmp_path), "netconf", os.path.join(HERE, "netconf.c"), glibc=True)
    out = subprocess.run([exe, "layout"], capture_output=True, check=True, timeout=30).stdout.split()
    sizes = dict(zip(out[0::2], (int(v) for v in out[1::2])))
    assert sizes[b"ifreq"] == netconf.IFREQ and sizes[b"ifconf"] == 16 and sizes[b"ifc_buf"] == 8
    assert sizes[b"ifmap"] == 24 and sizes[b"nlmsghdr"] == rtnetlink.NLMSG_HDR.size
    assert sizes[b"sockaddr_nl"] == rtnetlink.SOCKADDR_NL.size and sizes[b"nlmsgerr"] == 20
    assert sizes[b"ifinfomsg"] == struct.calcsize("<BxHiII")
    assert sizes[b"ifaddrmsg"] == struct.calcsize("<BBBBI")
    assert sizes[b"rtmsg"] == struct.calcsize("<BBBBBBBBI") and sizes[b"rtattr"] == 4


# -- booted: busybox is the judge ---------------------------------------------------------------

@pytest.fixture(scope="module")
def linux(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Linux]:
    tmp = str(tmp_path_factory.mktemp("netconf"))
    gai = os.path.join(tmp, "gai.c")
    with open(gai, "w") as f:
        f.write(GAI_C)
    path = write(os.path.join(tmp, "rootfs.cpio"), _programs(tmp, gai, "netconf", "dns"),
                 hosts=["10.0.2.2\tgateway gw"])
    with System() as s:
        yield Linux(s, path)


def _sockets(linux: Linux) -> bool:
    status, out = linux.run("/bin/netconf", "setting")
    return b"Address family not supported" not in out and b"Bad file" not in out


def test_hostname_and_etc_hosts(linux: Linux) -> None:
    assert linux.run("hostname") == (0, b"l4py\n")
    assert linux.run("hostname", "-i") == (0, b"127.0.1.1\n")        # glibc's NSS: files
    status, out = linux.sh("cat /etc/resolv.conf; grep ^hosts: /etc/nsswitch.conf")
    assert (status, out) == (0, b"nameserver 10.0.2.3\nhosts: files dns\n")
    # (a name /etc/hosts lacks goes to DNS: one try of 1 s at a server that is not there)
    assert linux.sh("cp /etc/resolv.conf /tmp/resolv.keep; "
                    "printf 'nameserver 127.0.0.1\\noptions timeout:1 attempts:1\\n' > /etc/resolv.conf; "
                    "/bin/gai localhost gateway gw l4py nosuch; cp /tmp/resolv.keep /etc/resolv.conf") == (
        0, b"localhost 127.0.0.1 80\ngateway 10.0.2.2 80\ngw 10.0.2.2 80\nl4py 127.0.1.1 80\n"
           b"nosuch: not found\n")


def test_proc_net_as_busybox_reads_it(linux: Linux) -> None:
    status, out = linux.run("cat", "/proc/net/dev")
    assert status == 0 and [line.split(":")[0].strip() for line in out.decode().splitlines()[2:]] == ["lo"]
    status, out = linux.run("route", "-n")
    assert status == 0 and out.decode().splitlines()[:2] == [
        "Kernel IP routing table",
        "Destination     Gateway         Genmask         Flags Metric Ref    Use Iface"], out
    status, out = linux.run("arp", "-n")
    assert b"No match found" in out or status == 0, out


def test_busybox_ifconfig_and_ip(linux: Linux) -> None:
    if not _sockets(linux):
        pytest.skip("socket(2) not served yet (sockets.py's system calls)")
    status, out = linux.run("ifconfig")
    assert status == 0 and out.startswith(b"lo "), out
    text = out.decode()
    assert "inet addr:127.0.0.1  Mask:255.0.0.0" in text and "UP LOOPBACK RUNNING  MTU:65536" in text
    assert linux.run("ifconfig", "-a")[1] == out
    status, out = linux.run("ip", "addr")
    assert status == 0 and out.decode().splitlines()[:3] == [
        "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue qlen 1000",   # (no "state": this
        # busybox is built without IFF_DORMANT, so it prints no IFLA_OPERSTATE)
        "    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00",
        "    inet 127.0.0.1/8 scope host lo"], out
    status, out = linux.run("ip", "link")
    assert status == 0 and out.startswith(b"1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536"), out
    assert linux.run("ip", "route") == (0, b"")
    assert linux.run("ip", "route", "get", "127.0.0.1") == (0, b"local 127.0.0.1 dev lo  src 127.0.0.1 \n")
    status, out = linux.run("ip", "route", "get", "10.1.2.3")
    assert status != 0 and b"Network is unreachable" in out, out
    status, out = linux.run("ip", "route", "show", "table", "local")
    assert status == 0 and b"local 127.0.0.1 dev lo" in out, out
    status, out = linux.run("ip", "addr", "add", "10.9.9.9/24", "dev", "lo")
    assert status != 0 and b"Operation not permitted" in out, out
    status, out = linux.run("ifconfig", "lo", "mtu", "1400")
    assert status != 0 and b"Operation not permitted" in out, out


def test_probe_ioctls_setting_and_netlink(linux: Linux) -> None:
    if not _sockets(linux):
        pytest.skip("socket(2) not served yet (sockets.py's system calls)")
    status, out = linux.run("/bin/netconf", "ioctls")
    assert status == 0, out
    lines = out.decode().splitlines()
    assert lines[1] == ("lo addr 127.0.0.1 index 1 name lo flags 0x49 mask 255.0.0.0 brd 0.0.0.0 "
                        "dst 127.0.0.1 mtu 65536 metric 0 qlen 1000 irq 0 hw 772 00:00:00:00:00:00")
    assert lines[-1] == "nosuch0 No such device"
    status, out = linux.run("/bin/netconf", "setting")
    assert status == 0 and all(line.endswith("Operation not permitted")
                               for line in out.decode().splitlines()), out
    assert linux.run("/bin/netconf", "fionread") == (0, b"unix 5 outq 0 udp 7\n")
    status, out = linux.run("/bin/netconf", "netlink")
    assert status == 0, out
    lines = out.decode().splitlines()
    assert lines[7].startswith("junk: error Invalid argument"), lines
    assert lines[:7] + lines[8:] == [
        "bound len 12 family 16 pid set",
        "RTM_NEWADDR: error Operation not permitted seq 11",
        "RTM_DELROUTE: error Operation not permitted seq 12",
        "overlong: error Invalid argument seq 13",
        "short: error Invalid argument seq 14",
        "no family: error Invalid argument seq 15",
        "type 200: error Not supported seq 16",                  # (musl: EOPNOTSUPP)
        "RTM_GETADDR dump: type 20"]


def test_resolv_conf_names_the_server_resolvers_ask(linux: Linux) -> None:
    """A DNS responder (dns.c) on 127.0.0.1:53 and resolv.conf naming it: busybox nslookup,
    musl's getaddrinfo (gai) and glibc's (busybox ping) all ask it, and only for what
    /etc/hosts does not answer."""
    if not _sockets(linux):
        pytest.skip("socket(2) not served yet (sockets.py's system calls)")
    status, out = linux.sh(
        "cp /etc/resolv.conf /tmp/resolv.keep; echo 'nameserver 127.0.0.1' > /etc/resolv.conf; "
        "/bin/dns 127.0.0.1 web.l4=10.0.2.80 > /tmp/dns.log & "
        "i=0; until grep -q listening /tmp/dns.log || [ $i -ge 100 ]; do sleep 0.1; i=$((i+1)); done; "
        "nslookup web.l4; /bin/gai web.l4 nope.l4 gateway; ping -c1 -W1 web.l4; "
        "kill $!; cp /tmp/resolv.keep /etc/resolv.conf; cat /tmp/dns.log")
    text = out.decode()
    assert "Server:\t\t127.0.0.1" in text and "Address: 10.0.2.80" in text, text
    assert "web.l4 10.0.2.80 80\nnope.l4: not found\ngateway 10.0.2.2 80\n" in text, text
    assert "PING web.l4 (10.0.2.80)" in text, text
    queries = [line for line in text.splitlines() if line.startswith("query ")]
    assert queries.count("query web.l4 type 1") == 3 and "query nope.l4 type 1" in queries, text
    assert not any("gateway" in q for q in queries), text          # /etc/hosts answered it


# -- booted under the launcher with eth0: an ORe session, a peer at the gateway ---------------

MAC = "02:00:00:00:00:20"


def _launcher_net() -> bool:
    from launcher import linux as launcher_linux
    return "net" in getattr(launcher_linux, "LINUX_KEYS", ())


@pytest.fixture(scope="module")
def eth0(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[str], str, dict[str, str]]]:
    """A launcher image: ORe, a netstack peer at 10.0.2.2 (UDP/TCP echo, HTTP), the
    personality "linux" with eth0 at 10.0.2.20/24 (gateway 10.0.2.2; its /etc/hosts names
    the peer "gateway") and a second personality "dns" at 10.0.2.3 — the address the root
    file system's resolv.conf names — whose init is the DNS responder (dns.c). Yields
    `l4run linux run`'s command, the run directory and the environment."""
    if not _launcher_net():
        pytest.skip("the image's [linux] net key is not there yet (launcher/linux.py)")
    import sys as _sys
    from kernel.user.testing import PROJECT_ROOT, wait_for
    from launcher.netimage import net_image, task, value
    tmp = str(tmp_path_factory.mktemp("eth0"))
    gai = os.path.join(tmp, "gai.c")
    with open(gai, "w") as f:
        f.write(GAI_C)
    programs = _programs(tmp, gai, "dns")
    # In the project's build/, readable by all: a sandboxed personality (a uid of its own)
    # sees the project's tree, not /tmp.
    os.makedirs(os.path.join(PROJECT_ROOT, "build"), exist_ok=True)
    build = tempfile.mkdtemp(prefix="test-netconf-", dir=os.path.join(PROJECT_ROOT, "build"))
    os.chmod(build, 0o755)
    rootfs = write(os.path.join(build, "rootfs.cpio"), programs, hosts=["10.0.2.2\tgateway"])
    os.chmod(rootfs, 0o644)
    image = net_image("netconf", ore={"clients": {}}, tasks=[task(
        "peer", "servers.netstack.demo:serve", net={"switch": "ore", "ip": "10.0.2.2/24"})])
    image += f"""
[[linux]]
name = "linux"
rootfs = {value(rootfs)}
net = {{ switch = "ore", ip = "10.0.2.20/24", gw = "10.0.2.2", mac = "{MAC}" }}

[[linux]]
name = "dns"
rootfs = {value(rootfs)}
net = {{ switch = "ore", ip = "10.0.2.3/24", gw = "10.0.2.2" }}
init = ["/bin/dns", "10.0.2.3", "web.l4=10.0.2.80"]
"""
    path = os.path.join(tmp, "netconf.toml")
    with open(path, "w") as f:
        f.write(image)
    rd = os.path.join(tmp, "run")
    l4run = [_sys.executable, "-m", "launcher"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [PROJECT_ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    # (a loaded shared host may take more than boot's default 30 s to start every task)
    boot = subprocess.run([*l4run, "boot", path, "--detach", "--timeout", "120", "--run-dir", rd],
                          env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=240)
    try:
        assert boot.returncode == 0, boot.stdout + boot.stderr
        wait_for(lambda: os.path.exists(os.path.join(rd, "scratch", "linux", "linux.sock")),
                 60, "the personality's door")
        yield [*l4run, "linux", "run", "--task", "linux", "--run-dir", rd, "--"], rd, env
    finally:
        subprocess.run([*l4run, "down", "--timeout", "50", "--run-dir", rd], env=env,
                       cwd=PROJECT_ROOT, capture_output=True, timeout=90)
        shutil.rmtree(build, ignore_errors=True)


def _run(eth0: tuple[list[str], str, dict[str, str]], *argv: str) -> tuple[int, str]:
    cmd, rd, env = eth0
    try:
        r = subprocess.run([*cmd, *argv], env=env, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        log = os.path.join(rd, "logs", "linux.log")
        tail = open(log, errors="replace").read()[-3000:] if os.path.exists(log) else ""
        pytest.fail(f"{' '.join(argv)}: no answer in 90 s; the personality's log ends:\n{tail}")
    return r.returncode, r.stdout + r.stderr


def test_eth0_in_route_and_proc_net(eth0: tuple[list[str], str, dict[str, str]]) -> None:
    status, out = _run(eth0, "route", "-n")
    assert status == 0 and out.splitlines()[2:] == [
        "0.0.0.0         10.0.2.2        0.0.0.0         UG    0      0        0 eth0",
        "10.0.2.0        0.0.0.0         255.255.255.0   U     0      0        0 eth0"], out
    status, out = _run(eth0, "sh", "-c", "wget -q -O /dev/null http://10.0.2.2/; "
                                         "cat /proc/net/dev; cat /proc/net/arp; hostname")
    assert status == 0, out
    lines = out.splitlines()
    counts = [line for line in lines if line.strip().startswith("eth0:")][0].split(":")[1].split()
    assert int(counts[1]) > 0 and int(counts[9]) > 0, out            # frames in and out
    assert any(line.split()[:1] == ["10.0.2.2"] and line.split()[-1] == "eth0"
               for line in lines), out                             # the peer, resolved
    assert lines[-1] == "l4py", out


def test_eth0_in_ifconfig_and_ip(eth0: tuple[list[str], str, dict[str, str]]) -> None:
    status, out = _run(eth0, "ifconfig", "eth0")
    if "socket: Operation not permitted" in out:
        pytest.skip("the launcher's sandbox answers EPERM for a UDP or netlink socket() of "
                    "the personality's processes (launcher/sandbox.py lets only AF_UNIX and "
                    "TCP through; of stacked filters the strictest answer wins)")
    assert status == 0, out
    assert out.startswith(f"eth0      Link encap:Ethernet  HWaddr {MAC.upper()}"), out
    assert "inet addr:10.0.2.20  Bcast:10.0.2.255  Mask:255.255.255.0" in out, out
    assert "UP BROADCAST RUNNING MULTICAST  MTU:1500  Metric:1" in out, out
    status, out = _run(eth0, "ifconfig")
    assert status == 0 and "eth0      Link encap:Ethernet" in out and "lo        Link" in out, out
    status, out = _run(eth0, "ip", "addr")
    assert status == 0, out
    assert f"2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast qlen 1000\n" \
           f"    link/ether {MAC} brd ff:ff:ff:ff:ff:ff\n" \
           f"    inet 10.0.2.20/24 brd 10.0.2.255 scope global eth0\n" in out, out
    status, out = _run(eth0, "ip", "link")
    assert status == 0 and f"link/ether {MAC}" in out, out
    status, out = _run(eth0, "ip", "route")
    assert (status, out) == (0, "default via 10.0.2.2 dev eth0 \n"
                                "10.0.2.0/24 dev eth0 scope link  src 10.0.2.20 \n"), out
    assert _run(eth0, "ip", "route", "get", "10.0.2.2") == (0, "10.0.2.2 dev eth0  src 10.0.2.20 \n")
    assert _run(eth0, "ip", "route", "get", "10.9.8.7") == (
        0, "10.9.8.7 via 10.0.2.2 dev eth0  src 10.0.2.20 \n")


def test_netstat_lists_the_processes_sockets(linux: Linux) -> None:
    """/proc/net/tcp, udp and unix are the sockets the Linux processes hold: a TCP listener
    (nc -l), a UDP server (dns.c on 127.0.0.1:53, named through /etc/hosts and
    /etc/services) and syslogd's /dev/log."""
    if not _sockets(linux):
        pytest.skip("socket(2) not served yet (sockets.py's system calls)")
    status, out = linux.sh(
        "/bin/dns 127.0.0.1 > /tmp/dns2.log & nc -l -p 8080 > /dev/null & syslogd -n -O /tmp/log & "
        "i=0; until grep -q listening /tmp/dns2.log && [ -e /dev/log ] || [ $i -ge 100 ]; do "
        "sleep 0.1; i=$((i+1)); done; netstat -ltn; netstat -lu; netstat -x; kill %1 %2 %3")
    text = out.decode()
    assert status == 0, text
    assert "tcp        0      0 0.0.0.0:8080            0.0.0.0:*               LISTEN" in text, text
    assert "udp        0      0 localhost:domain        0.0.0.0:*" in text, text
    assert any(line.startswith("unix") and line.split()[-1] == "/dev/log" and "DGRAM" in line
               for line in text.splitlines()), text


def test_eth0_resolv_conf_nameserver_is_asked(eth0: tuple[list[str], str, dict[str, str]]) -> None:
    """The root file system's resolv.conf names 10.0.2.3: the query goes out of eth0, over
    ORe, to the other personality's DNS responder, which logs it and answers; /etc/hosts
    answers "gateway" without a query."""
    from kernel.user.testing import wait_for
    _, rd, _ = eth0
    log = os.path.join(rd, "logs", "dns.log")
    wait_for(lambda: os.path.exists(log) and "listening" in open(log).read(), 60,
             "the DNS responder")
    status, out = _run(eth0, "nslookup", "web.l4")
    assert status == 0 and "Server:\t\t10.0.2.3" in out and "Address: 10.0.2.80" in out, out
    assert _run(eth0, "/bin/gai", "web.l4", "gateway") == (
        0, "web.l4 10.0.2.80 80\ngateway 10.0.2.2 80\n")
    queries = [line for line in open(log).read().splitlines() if "query " in line]
    assert sum("query web.l4 type 1" in q for q in queries) >= 2, queries
    assert not any("gateway" in q for q in queries), queries
