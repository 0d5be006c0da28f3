"""The initramfs: "newc" cpio archives (the format Linux unpacks at boot), read and written.

An archive is a sequence of entries, each a 110-byte ASCII header ("070701", then 13
eight-digit hex fields: ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
rdevmajor, rdevminor, namesize, check), the NUL-terminated name, padding to 4 bytes, the
data, padding to 4 bytes; the entry named "TRAILER!!!" ends it. A symlink's data is its
target. Hard links share an inode number; the data is stored with the last of them (as
the kernel's gen_init_cpio does), the others have size 0.

`build(busybox, applets)` is the root file system of the personality: a skeleton (/bin,
/sbin, /etc, /tmp, /proc, /dev, /root, /home, /usr/bin) with busybox as /bin/busybox and
every applet a symlink to it. /etc holds what name resolution reads — hosts (localhost, the
host name l4py, and the caller's lines), resolv.conf (the nameservers), nsswitch.conf
("hosts: files dns"), host.conf, services and protocols (the common ones) — besides passwd,
group, hostname and motd. The host's busybox file is read here, at build time; the
personality's processes never name a host file.

Pure functions: no state, safe from any thread.
"""
from __future__ import annotations

import stat
from collections.abc import Iterable, Iterator
from typing import NamedTuple

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
_HEADER = 110


class Entry(NamedTuple):
    name: str           # relative path, no leading "/"
    mode: int           # st_mode: type and permissions
    data: bytes = b""   # file contents, or a symlink's target
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    ino: int = 0        # equal non-zero inos: hard links


def _pad(n: int) -> int:
    return (4 - n % 4) % 4


def write(entries: Iterable[Entry]) -> bytes:
    """The archive of `entries` (directories should come before what is in them)."""
    out = bytearray()
    ino = 1000
    links: dict[int, int] = {}
    entries = list(entries)
    for e in entries:
        if e.ino:
            links[e.ino] = links.get(e.ino, 0) + 1
    for e in [*entries, Entry(TRAILER, 0)]:
        name = e.name.encode() + b"\0"
        ino += 1
        fields = [e.ino or ino, e.mode, e.uid, e.gid, links.get(e.ino, 1) if e.ino else
                  (2 if stat.S_ISDIR(e.mode) else 1), e.mtime, len(e.data), 0, 0, 0, 0,
                  len(name), 0]
        out += MAGIC + b"".join(b"%08X" % f for f in fields) + name
        out += b"\0" * _pad(_HEADER + len(name))
        out += e.data + b"\0" * _pad(len(e.data))
    return bytes(out)


def read(archive: bytes) -> Iterator[Entry]:
    """The entries of a newc archive, in order. Raises ValueError on a malformed one."""
    pos = 0
    while True:
        if archive[pos:pos + 6] != MAGIC:
            raise ValueError(f"not a newc cpio header at offset {pos}")
        try:
            f = [int(archive[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise ValueError(f"bad header fields at offset {pos}") from None
        ino, mode, uid, gid, _nlink, mtime, size, *_, namesize, _check = f
        start = pos + _HEADER
        name = archive[start:start + namesize - 1].decode()
        pos = start + namesize + _pad(_HEADER + namesize)
        data = archive[pos:pos + size]
        if len(data) != size:
            raise ValueError(f"entry {name!r} is cut short")
        pos += size + _pad(size)
        if name == TRAILER:
            return
        yield Entry(name.lstrip("/").removeprefix("./") or ".", mode, data, uid, gid, mtime,
                    ino)


DIRS = ("bin", "sbin", "etc", "tmp", "proc", "dev", "root", "home", "usr", "usr/bin",
        "usr/sbin", "var")
FILES = {"etc/passwd": b"root:x:0:0:root:/root:/bin/sh\n",
         "etc/group": b"root:x:0:\n",
         "etc/hostname": b"l4py\n",
         "etc/motd": b"L4Py: Linux programs as L4 tasks (L4Linux).\n",
         # Name resolution (busybox's glibc and musl both read these; docs/L4LINUX.md
         # "Network configuration"): /etc/hosts first, then the DNS servers of resolv.conf.
         "etc/nsswitch.conf": b"passwd: files\ngroup: files\nhosts: files dns\n"
                              b"networks: files\nprotocols: files\nservices: files\n",
         "etc/host.conf": b"multi on\n",
         "etc/protocols": b"ip\t0\tIP\nicmp\t1\tICMP\nigmp\t2\tIGMP\ntcp\t6\tTCP\n"
                          b"udp\t17\tUDP\nipv6\t41\tIPv6\nipv6-icmp\t58\tIPv6-ICMP\n",
         "etc/services": b"".join(b"%s\t%d/%s\n" % (name, port, proto) for name, port, protos in (
             (b"echo", 7, b"tu"), (b"discard", 9, b"tu"), (b"daytime", 13, b"tu"),
             (b"ftp-data", 20, b"t"), (b"ftp", 21, b"t"), (b"ssh", 22, b"t"),
             (b"telnet", 23, b"t"), (b"smtp", 25, b"t"), (b"time", 37, b"tu"),
             (b"domain", 53, b"tu"), (b"bootps", 67, b"u"), (b"bootpc", 68, b"u"),
             (b"tftp", 69, b"u"), (b"http", 80, b"t"), (b"pop3", 110, b"t"),
             (b"ntp", 123, b"u"), (b"https", 443, b"t"), (b"syslog", 514, b"u"))
             for proto in (b"tcp" if c == "t" else b"udp" for c in protos.decode()))}
HOSTS = b"127.0.0.1\tlocalhost\n127.0.1.1\tl4py\n::1\tlocalhost ip6-localhost ip6-loopback\n"
NAMESERVERS = ("10.0.2.3",)        # the network's usual resolver address (configs/net.toml's
                                   # 10.0.2.0/24: gateway .2, the DNS at .3)


def build(busybox: bytes, applets: Iterable[str], hosts: Iterable[str] = (),
          nameservers: Iterable[str] = NAMESERVERS) -> bytes:
    """The skeleton with busybox and its applet links (module docstring). `hosts`: lines
    added to /etc/hosts after localhost and the host name ("10.0.2.2 gateway");
    `nameservers`: the addresses /etc/resolv.conf names."""
    entries = [Entry(d, stat.S_IFDIR | (0o1777 if d == "tmp" else 0o755)) for d in DIRS]
    entries += [Entry(p, stat.S_IFREG | 0o644, data) for p, data in FILES.items()]
    entries.append(Entry("etc/hosts", stat.S_IFREG | 0o644,
                         HOSTS + b"".join(line.encode() + b"\n" for line in hosts)))
    entries.append(Entry("etc/resolv.conf", stat.S_IFREG | 0o644,
                         b"".join(b"nameserver %s\n" % a.encode() for a in nameservers)))
    entries.append(Entry("bin/busybox", stat.S_IFREG | 0o755, busybox))
    for name in sorted(set(applets) - {"busybox"}):
        if name and "/" not in name:
            entries.append(Entry(f"bin/{name}", stat.S_IFLNK | 0o777, b"busybox"))
    return write(entries)


def applets(busybox_path: str = "/bin/busybox") -> list[str]:
    """The applet names of a host busybox (`busybox --list`: the build step runs it)."""
    import subprocess
    out = subprocess.run([busybox_path, "--list"], capture_output=True, check=True, timeout=30)
    return out.stdout.decode().split()
