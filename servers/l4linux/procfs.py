"""/proc, as far as busybox `ps` needs it: made fresh from the process table.

A process inside a hybrid L4 call is in state D (UNINTERRUPTIBLE, `Process.l4call`).

`refresh(px, caller)` replaces the /proc directory of the RAM file system with a new one
before a path-taking system call: /proc/PID/{stat,status,cmdline,comm,exe,fd/N} for every Linux
process, /proc/self (a symlink to the caller's pid), /proc/meminfo, /proc/uptime,
/proc/stat, /proc/loadavg, /proc/mounts, /proc/version (busybox `ps`, `top`), and /proc/net
(`proc_net`: dev, route, arp; tcp, udp and unix from the processes' socket descriptions;
the IPv6 and raw ones with their headings only: busybox
`ifconfig`, `route -n`, `arp`, `netstat` read them; the interfaces are netconf.py's). Files are
read-only snapshots; a descriptor opened on one keeps the snapshot it opened (as reading a
/proc file at once would).

Ownership: the personality's single serving thread.
"""
from __future__ import annotations

import stat
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import fs, netconf

if TYPE_CHECKING:
    from .process import Process
    from .server import Personality

BOOT = time.time()
_STATE = {"running": "S", "loading": "R", "zombie": "Z"}


def _state(p: "Process") -> str:
    """The state letter: D (UNINTERRUPTIBLE) while inside a hybrid L4 call (hybrid.py)."""
    return "D" if p.l4call and p.state != "zombie" else _STATE.get(p.state, "S")


def _file(parent: fs.Inode, px: "Personality", name: str, data: bytes) -> None:
    node = fs.Inode(stat.S_IFREG | 0o444)
    node.data = bytearray(data)
    px.fs.link_into(parent, name, node)


class _Lazy(fs.Inode):
    """A read-only /proc file whose bytes are made at their first use (its stat or read),
    and kept from then on: /proc is made afresh before every path-taking call, and the
    files nobody looks at should cost nothing (/proc/net's take ~50 µs together)."""

    def __init__(self, make: Callable[[], bytes]) -> None:
        self._make: Callable[[], bytes] | None = make
        self._data: bytearray | None = None
        super().__init__(stat.S_IFREG | 0o444)

    @property                                   # type: ignore[override]
    def data(self) -> bytearray:
        if self._data is None:
            self._data = bytearray(self._make() if self._make is not None else b"")
            self._make = None
        return self._data

    @data.setter
    def data(self, value: bytearray) -> None:
        if value or self._make is None:         # (Inode.__init__'s empty bytearray: not yet)
            self._data, self._make = value, None


def _stat_line(p: "Process") -> bytes:
    start = int((p.started - BOOT) * 100)
    fields = [p.pid, f"({p.comm})", _state(p), p.ppid, p.pgid, p.sid, 0, -1,
              0x400000, 0, 0, 0, 0, 0, 0, 0, 0, 20, 0, 1, 0, start, 0, 0]
    return (" ".join(str(f) for f in fields) + "\n").encode()


def _status(p: "Process") -> bytes:
    return (f"Name:\t{p.comm}\nState:\t{_state(p)}\nTgid:\t{p.pid}\n"
            f"Pid:\t{p.pid}\nPPid:\t{p.ppid}\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n"
            f"Threads:\t{p.threads}\n").encode()


def _fd_dir(px: "Personality", parent: fs.Inode, p: "Process") -> None:
    """PID/fd: a symlink per descriptor, to the file's path or Linux's `pipe:[N]`."""
    d = fs.Inode(stat.S_IFDIR | 0o500)
    px.fs.link_into(parent, "fd", d)
    for fd, (f, _) in sorted(p.fds.fds.items()):
        link = fs.Inode(stat.S_IFLNK | 0o700)
        link.target = (f.path if f.path
                       else f"pipe:[{id(f.pipe) & 0xFFFFFF}]".encode() if f.pipe is not None
                       else b"/dev/console" if f.kind == "console" else b"/dev/null")
        px.fs.link_into(d, str(fd), link)


def mounts(px: "Personality") -> bytes:
    """/proc/mounts: the RAM tree (or the disk at /), /dev and /proc, the disk elsewhere."""
    drive = px.drive
    at = drive.at if drive is not None else None
    ro = "ro" if drive is not None and drive.disk is not None and \
        drive.disk.mount_.fs.readonly else "rw"
    dev = "/dev/l4disk"
    lines = [f"{dev} / ext2 {ro} 0 0" if at == b"/" else "rootfs / rootfs rw 0 0",
             "devtmpfs /dev devtmpfs rw 0 0", "proc /proc proc rw 0 0"]
    if at is not None and at != b"/":
        lines.append(f"{dev} {at.decode(errors='replace')} ext2 {ro} 0 0")
    return ("\n".join(lines) + "\n").encode()


def refresh(px: "Personality", caller: "Process") -> None:
    root = px.fs.root
    old = root.entries.get("proc")
    if old is not None:
        del root.entries["proc"]
        root.nlink -= 1
    proc = fs.Inode(stat.S_IFDIR | 0o555)
    px.fs.link_into(root, "proc", proc)
    for p in list(px.procs.by_pid.values()):
        d = fs.Inode(stat.S_IFDIR | 0o555)
        px.fs.link_into(proc, str(p.pid), d)
        _file(d, px, "stat", _stat_line(p))
        _file(d, px, "status", _status(p))
        _file(d, px, "cmdline", b"".join(a + b"\0" for a in p.argv))
        _file(d, px, "comm", p.comm.encode() + b"\n")
        _fd_dir(px, d, p)
        if p.exe:
            exe = fs.Inode(stat.S_IFLNK | 0o777)
            exe.target = p.exe
            px.fs.link_into(d, "exe", exe)
    self_link = fs.Inode(stat.S_IFLNK | 0o777)
    self_link.target = str(caller.pid).encode()
    px.fs.link_into(proc, "self", self_link)
    up = time.time() - BOOT
    _file(proc, px, "uptime", f"{up:.2f} {up:.2f}\n".encode())
    _file(proc, px, "meminfo", b"MemTotal:       65536 kB\nMemFree:        32768 kB\n"
                               b"MemAvailable:   32768 kB\nBuffers:            0 kB\n"
                               b"Cached:             0 kB\nSwapTotal:          0 kB\n"
                               b"SwapFree:           0 kB\n")
    ticks = int(up * 100)
    blocked = sum(1 for p in px.procs.by_pid.values() if _state(p) == "D")
    _file(proc, px, "stat", f"cpu  {ticks // 2} 0 {ticks // 4} {ticks} 0 0 0 0 0 0\n"
                            f"cpu0 {ticks // 2} 0 {ticks // 4} {ticks} 0 0 0 0 0 0\n"
                            f"btime {int(BOOT)}\nprocesses {len(px.procs.by_pid)}\n"
                            f"procs_running 1\nprocs_blocked {blocked}\n".encode())
    _file(proc, px, "loadavg", f"0.00 0.00 0.00 1/{len(px.procs.by_pid)} 0\n".encode())
    _file(proc, px, "mounts", mounts(px))
    _file(proc, px, "filesystems", b"nodev\ttmpfs\nnodev\tproc\n\text2\n")
    _file(proc, px, "version", b"Linux version 6.1.0-l4py (L4Py personality)\n")
    net = fs.Inode(stat.S_IFDIR | 0o555)
    px.fs.link_into(proc, "net", net)
    for name, make in proc_net_files(px).items():
        px.fs.link_into(net, name, _Lazy(make))


# -- /proc/net --------------------------------------------------------------------------------

ATF_COM = 0x2                       # an ARP entry that is complete
TCP_STATES = {"ESTABLISHED": 1, "SYN_SENT": 2, "SYN_RCVD": 3, "FIN_WAIT_1": 4,
              "FIN_WAIT_2": 5, "TIME_WAIT": 6, "CLOSED": 7, "CLOSE_WAIT": 8, "LAST_ACK": 9,
              "LISTEN": 10, "CLOSING": 11}
TCP_HEAD = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid"
            "  timeout inode")
UDP_HEAD = TCP_HEAD + " ref pointer drops"


def _hex(addr: bytes) -> str:
    """An IPv4 address as /proc/net prints it: the 32-bit word in host (little-endian) order."""
    return f"{int.from_bytes(addr, 'little'):08X}"


def proc_net_dev(px: Any) -> bytes:
    lines = ["Inter-|   Receive                                                |  Transmit",
             " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets"
             " errs drop fifo colls carrier compressed"]
    for i in netconf.interfaces(px):
        s = i.stats
        lines.append(f"{i.name:>6}:{s['rx_bytes']:8d} {s['rx_packets']:7d}    0 "
                     f"{s['rx_dropped']:4d}    0     0          0         0 {s['tx_bytes']:8d} "
                     f"{s['tx_packets']:7d}    0    0    0     0       0          0")
    return ("\n".join(lines) + "\n").encode()


def proc_net_route(px: Any) -> bytes:
    """Table main, as Linux's fib_route_seq_show pads it: each line 127 characters."""
    lines = ["Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU"
             "\tWindow\tIRTT"]
    for r in netconf.routes(px):
        if r.table != netconf.RT_TABLE_MAIN:
            continue
        flags = 0x1 | (0x2 if r.gateway else 0) | (0x4 if r.plen == 32 else 0)
        mask = ((0xFFFFFFFF << (32 - r.plen)) & 0xFFFFFFFF).to_bytes(4, "big")
        lines.append(f"{r.iface.name}\t{_hex(r.dst)}\t{_hex(r.gateway or bytes(4))}\t"
                     f"{flags:04X}\t0\t0\t0\t{_hex(mask)}\t0\t0\t0")
    return "".join(f"{line:<127}\n" for line in lines).encode()


def proc_net_arp(px: Any) -> bytes:
    out = "IP address       HW type     Flags       HW address            Mask     Device\n"
    stack = netconf.stack_of(px)
    if stack is not None:
        name = str(getattr(px.net, "name", "eth0"))
        with stack.lock:
            arp = [(bytes(ip), bytes(mac)) for ip, (mac, _) in stack.arp.items()]
        for ip, mac in arp:
            dotted = ".".join(str(b) for b in ip)
            out += (f"{dotted:<16} 0x{netconf.ARPHRD_ETHER:<10x}0x{ATF_COM:<10x}"
                    f"{mac.hex(':')}     *        {name}\n")
    return out.encode()


def _endpoint_line(n: int, laddr: bytes, lport: int, raddr: bytes, rport: int, state: int,
                   txq: int, rxq: int, inode: int) -> str:
    return (f"{n:4d}: {_hex(laddr)}:{lport:04X} {_hex(raddr)}:{rport:04X} {state:02X} "
            f"{txq:08X}:{rxq:08X} 00:00000000 00000000     0        0 {inode} 2 "
            f"0000000000000000 100 0 0 10 0")


def _sockets(px: Any, family: int) -> list[tuple[Any, Any]]:
    """(Open, Socket) of every socket description of `family` the processes hold, once."""
    out, seen = [], set()
    for p in list(px.procs.by_pid.values()):
        for f, _ in list(p.fds.fds.values()):
            sock = getattr(f, "sock", None)
            if f.kind == "socket" and sock is not None and id(sock) not in seen and \
                    getattr(sock, "family", None) == family:
                seen.add(id(sock))
                out.append((f, sock))
    return out


def _inet(raw: Any) -> tuple[bytes, int]:
    """The address and port of a struct sockaddr_in (0.0.0.0:0 for anything else)."""
    if isinstance(raw, bytes) and len(raw) >= 8:
        return raw[4:8], int.from_bytes(raw[2:4], "big")
    return bytes(4), 0


def _inet_lines(px: Any, stream: bool) -> list[str]:
    """The AF_INET sockets of the processes (loopback and eth0 alike), TCP or UDP, in the
    columns of /proc/net/tcp and udp; a TCP socket's state is its connection's."""
    lines: list[str] = []
    for _, sock in _sockets(px, netconf.AF_INET):
        kind = int(getattr(sock, "type", 0)) & 0xF
        if stream != (kind == 1) or (not stream and getattr(sock, "protocol", 0) not in (0, 17)):
            continue
        (laddr, lport), peer = _inet(sock.getsockname()), sock.getpeername()
        raddr, rport = _inet(peer)
        tcb = getattr(sock, "tcb", None)
        if stream:
            state = TCP_STATES["LISTEN"] if getattr(sock, "listening", False) else \
                TCP_STATES.get(str(getattr(tcb, "state", "")), TCP_STATES[
                    "ESTABLISHED" if isinstance(peer, bytes) else "CLOSED"])
        else:
            state = TCP_STATES["ESTABLISHED" if isinstance(peer, bytes) else "CLOSED"]
        lines.append(_endpoint_line(len(lines), laddr, lport, raddr, rport, state, 0, 0,
                                    id(sock) & 0xFFFFFF))
    return lines


def proc_net_tcp(px: Any) -> bytes:
    lines = [f"{TCP_HEAD:<149}"] + _inet_lines(px, stream=True)
    return "".join(f"{line:<149}\n" for line in lines).encode()


def proc_net_udp(px: Any) -> bytes:
    lines = [f"{UDP_HEAD:<127}"] + [line + " 0" for line in _inet_lines(px, stream=False)]
    return "".join(f"{line:<127}\n" for line in lines).encode()


def proc_net_unix(px: Any) -> bytes:
    """The AF_UNIX sockets the Linux processes hold."""
    out = "Num       RefCount Protocol Flags    Type St Inode Path\n"
    for f, sock in _sockets(px, netconf.AF_UNIX):
        name = sock.getsockname()
        path = name[2:].split(b"\0", 1)[0].decode(errors="replace") \
            if isinstance(name, bytes) and len(name) > 2 else ""
        if isinstance(name, bytes) and name[2:3] == b"\0" and len(name) > 3:
            path = "@" + name[3:].decode(errors="replace")       # an abstract name
        listening = getattr(sock, "listening", False)
        state = 1 if listening else 3 if isinstance(sock.getpeername(), bytes) else 1
        out += (f"0000000000000000: {f.refs:08X} 00000000 {0x10000 if listening else 0:08X} "
                f"{int(getattr(sock, 'type', 1)) & 0xF:04X} {state:02X} "
                f"{id(sock) & 0xFFFFFF:5d}" + (f" {path}" if path else "") + "\n")
    return out.encode()


TCP6_HEAD = TCP_HEAD.replace("local_address", "local_address                        ").replace(
    "rem_address  ", "remote_address                       ")


def proc_net_files(px: Any) -> dict[str, Callable[[], bytes]]:
    """The files of /proc/net, each as what makes it (busybox route -n, ifconfig, arp,
    netstat read them); tcp6, udp6, raw and raw6 are there with their headings only
    (netstat warns of a missing one)."""
    return {"dev": lambda: proc_net_dev(px), "route": lambda: proc_net_route(px),
            "arp": lambda: proc_net_arp(px), "tcp": lambda: proc_net_tcp(px),
            "udp": lambda: proc_net_udp(px), "unix": lambda: proc_net_unix(px),
            "tcp6": lambda: (TCP6_HEAD + "\n").encode(),
            "udp6": lambda: (TCP6_HEAD + " ref pointer drops\n").encode(),
            "raw": lambda: (UDP_HEAD + "\n").encode(),
            "raw6": lambda: (TCP6_HEAD + " ref pointer drops\n").encode()}


def proc_net(px: Any) -> dict[str, bytes]:
    """/proc/net's files as they are now."""
    return {name: make() for name, make in proc_net_files(px).items()}
