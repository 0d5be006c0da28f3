"""Physical RAM as frames, and the per-task channel that hands frames out.

Mechanism. Each 4 KiB frame is its own memfd (`memfd:l4py-ram-<kernel pid>`, mode 0600),
created on first use and mapped MAP_SHARED|MAP_FIXED into one contiguous view of the
kernel's own (`Frames.base`: frame n at base + n * 4096, reserved PROT_NONE at boot); its
descriptor is closed right after mapping, so the kernel holds no descriptor per frame (the
hard RLIMIT_NOFILE here is below the frame count). When a task's page table maps a frame
and the task touches it, the kernel reopens that one frame from its own view
(`/proc/self/map_files/START-END`: O_RDONLY for a read-only mapping, so the task's mapping
can never be made writable) and passes the descriptor over the task's channel
(SCM_RIGHTS). The task maps it at frame * 4096 in a view of its own and closes it.

The channel (`Channel`): one listening SOCK_SEQPACKET socket, RUN_DIR/mem.sock. MEM_ATTACH
answers a one-time token; the task connects and sends it; the kernel accepts the connection
only if SO_PEERCRED says the peer is the task's own process (the pid the spawner watched).
Then it sends the task its control page (`Control`: epoch and ack words for the shootdown,
one memfd per task, so no task can touch another's counters).

Contracts:
- No task is ever sent a descriptor of a frame its page table does not map, nor of the
  whole RAM (there is no whole-RAM file). A DMA space (MEM_DMA: the HAL, the hardware) is
  sent every frame.
- `Frames.ident(n)` is the (st_dev, st_ino) of frame n's file: what `holds` looks for in
  a process's /proc/PID/maps and /proc/PID/fd to verify a revocation.

Ownership: the kernel's event-loop thread only (memory.py calls in; `Channel.ready` is
called by the transport's poll loop).
"""
from __future__ import annotations

import errno
import mmap
import os
import secrets
import select
import signal
import socket
import struct
from typing import Any, Callable, Iterable, Protocol

from ..osutil import (MAP_ANON, MAP_FIXED, MAP_NORESERVE, MAP_PRIVATE, MAP_SHARED, mmap_at,
                      munmap, peer_cred)
from ..abi import (CHAN_HEAD, CHAN_MAX_FDS, CTL_ACK, CTL_EPOCH, MEM_CHANNEL, MEM_TOKEN_BYTES,
                   PAGE_SHIFT, PAGE_SIZE, Chan, MemRights)

_PROT_NONE, _PROT_RW = 0, mmap.PROT_READ | mmap.PROT_WRITE
_WORD = struct.Struct("<Q")
_MR, _MW = int(MemRights.R), int(MemRights.W)
_RW = _MR | _MW



class Frames:
    """The RAM: `frames` frames, each its own memfd, all mapped into the kernel's view."""

    def __init__(self, size: int) -> None:
        if size < PAGE_SIZE * 16 or size % PAGE_SIZE:
            raise ValueError(f"RAM size {size} must be a multiple of {PAGE_SIZE}, at least 64 KiB")
        self.size = size
        self.frames = size >> PAGE_SHIFT
        self.name = f"l4py-ram-{os.getpid()}"
        self.base = mmap_at(None, size, _PROT_NONE, MAP_PRIVATE | MAP_ANON | MAP_NORESERVE, -1)
        self._ids: list[tuple[int, int] | None] = [None] * self.frames
        self.created = 0

    def ident(self, n: int) -> tuple[int, int]:
        """(st_dev, st_ino) of frame n's file, creating the frame on first use."""
        ident = self._ids[n]
        if ident is None:
            fd = os.memfd_create(self.name, os.MFD_CLOEXEC)
            try:
                # 0600: only the kernel's uid may reopen it (e.g. through /proc/PID/fd/N),
                # so a task under its own uid cannot turn a read-only descriptor writable.
                os.fchmod(fd, 0o600)
                os.ftruncate(fd, PAGE_SIZE)
                st = os.fstat(fd)
                mmap_at(self.base + (n << PAGE_SHIFT), PAGE_SIZE, _PROT_RW, MAP_SHARED | MAP_FIXED, fd)
            finally:
                os.close(fd)
            ident = self._ids[n] = (st.st_dev, st.st_ino)
            self.created += 1
        return ident

    def open(self, n: int, writable: bool) -> int:
        """A new descriptor of frame n: O_RDWR or O_RDONLY. The caller closes it."""
        self.ident(n)
        start = self.base + (n << PAGE_SHIFT)
        return os.open(f"/proc/self/map_files/{start:x}-{start + PAGE_SIZE:x}",
                       (os.O_RDWR if writable else os.O_RDONLY) | os.O_CLOEXEC)

    def close(self) -> None:
        munmap(self.base, self.size)


class Control:
    """One task's shootdown counters: a one-page memfd the kernel maps and hands over."""

    def __init__(self, name: str) -> None:
        self.fd: int | None = os.memfd_create(name, os.MFD_CLOEXEC)
        os.fchmod(self.fd, 0o600)
        os.ftruncate(self.fd, PAGE_SIZE)
        self.map = mmap.mmap(self.fd, PAGE_SIZE)

    def take_fd(self) -> int | None:
        """The descriptor, once (for the channel); the kernel keeps only the mapping."""
        fd, self.fd = self.fd, None
        return fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.map.close()


class Holding:
    """What one task's process holds of RAM, and its channel (kernel side).

    `held`: frame -> rights (R or RW) it was sent; `revoking`: frame -> file id of what it
    was told to drop at `revoke_epoch` and has not been verified to have dropped. Owned by
    the task's `memory.AddressSpace`."""

    def __init__(self) -> None:
        self.dma = False                    # MEM_DMA: sent every frame at connect
        self.attached = False               # MEM_ATTACH was called (counts to MAX_SPACES)
        self.token: bytes | None = None     # MEM_ATTACH's, until the channel connects
        self.ctl: Control | None = None
        self.chan: socket.socket | None = None
        self.pidfd: int | None = None       # of the process that connected the channel
        self.held: dict[int, int] = {}
        self.revoking: dict[int, tuple[int, int]] = {}
        self.revoke_epoch = 0

    def ack(self) -> int:
        return _WORD.unpack_from(self.ctl.map, CTL_ACK)[0] if self.ctl is not None else 0

    def set_epoch(self, epoch: int) -> None:
        if self.ctl is not None:
            _WORD.pack_into(self.ctl.map, CTL_EPOCH, epoch)

    def connect(self, conn: socket.socket, pid: int, ram: Frames) -> bool:
        """The task's process connected: it gets its control page (and, DMA, every frame)."""
        assert self.ctl is not None
        try:
            self.pidfd = os.pidfd_open(pid)
        except OSError:
            return False
        self.chan = conn
        fd = self.ctl.take_fd()
        send(conn, Chan.CONTROL, fds=[fd] if fd is not None else [])
        if fd is not None:
            os.close(fd)
        if self.dma:
            self._give_all(ram)
        return True

    def _give_all(self, ram: Frames) -> None:
        """Every frame, CHAN_MAX_FDS per message (the HAL reads as we send)."""
        assert self.chan is not None
        self.chan.settimeout(10.0)
        try:
            for start in range(0, ram.frames, CHAN_MAX_FDS):
                nums = list(range(start, min(start + CHAN_MAX_FDS, ram.frames)))
                fds = [ram.open(n, True) for n in nums]
                try:
                    grant(self.chan, nums, [_RW] * len(nums), fds)
                finally:
                    for fd in fds:
                        os.close(fd)
                self.held.update((n, _RW) for n in nums)
        finally:
            self.chan.setblocking(False)

    def give(self, ram: Frames, frame: int, rights: int) -> bool:
        """Make sure the task holds `frame` for `rights` (an O_RDONLY descriptor unless W):
        True if it was sent now. Raises OSError if the channel does not take it."""
        want = _RW if rights & _MW else _MR
        if self.chan is None or self.held.get(frame, 0) & want == want:
            return False
        fd = ram.open(frame, bool(want & _MW))
        try:
            grant(self.chan, [frame], [want], [fd])
        finally:
            os.close(fd)
        self.held[frame] = want
        self.revoking.pop(frame, None)       # mapped again: holding it is right
        return True

    def take(self, ram: Frames, epoch: int, stale: list[int]) -> None:
        """Tell the task to drop `stale` before it acknowledges `epoch`."""
        for f in stale:
            del self.held[f]
            self.revoking[f] = ram.ident(f)
        self.revoke_epoch = epoch
        if self.chan is not None:
            try:
                revoke(self.chan, epoch, stale)
            except OSError:
                pass            # it will not drop them: the verification faults it

    def verified(self, pid: int | None) -> bool:
        """Its process (gone, or `pid`) maps and holds none of `revoking`; then clear it."""
        gone = self.pidfd is None or bool(select.select([self.pidfd], [], [], 0)[0])
        if not gone and pid is not None and holds(pid, set(self.revoking.values())) is not None:
            return False
        self.revoking.clear()
        return True

    def kill(self) -> None:
        """SIGKILL its process and wait (bounded) until it is gone, its mappings with it."""
        if self.pidfd is None:
            return
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            select.select([self.pidfd], [], [], 2.0)    # readable: exited, its mm is gone
        except OSError:
            pass

    def close(self) -> None:
        if self.chan is not None:
            self.chan.close()
            self.chan = None
        if self.ctl is not None:
            self.ctl.close()
            self.ctl = None
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


class Poller(Protocol):
    def register(self, fd: int, flags: int) -> None: ...
    def unregister(self, fd: int) -> None: ...


class Channel:
    """RUN_DIR/mem.sock: tasks connect with their MEM_ATTACH token; `on_peer(token, pid,
    conn)` answers whether the connection is that task's (and takes it), else it is closed."""

    def __init__(self, run_dir: str, on_peer: Callable[[bytes, int, socket.socket], bool]) -> None:
        self.path = os.path.join(run_dir, MEM_CHANNEL)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.bind(self.path)
        # Any local process may connect (tasks run under their own uids); only a token and
        # the peer's pid make a connection a task's.
        os.chmod(self.path, 0o666)
        self.sock.listen(64)
        self.sock.setblocking(False)
        self.on_peer = on_peer
        self.poller: Poller | None = None
        self.waiting: dict[int, socket.socket] = {}     # accepted, token not read yet
        self.fds: set[int] = {self.sock.fileno()}      # what the poll loop hands to `ready`

    def start(self, poller: Poller, pollin: int) -> None:
        self.poller, self._pollin = poller, pollin
        poller.register(self.sock.fileno(), pollin)

    @staticmethod
    def token() -> bytes:
        return secrets.token_bytes(MEM_TOKEN_BYTES)

    def ready(self, fd: int) -> None:
        if fd == self.sock.fileno():
            self._accept()
            return
        conn = self.waiting.pop(fd, None)
        self.fds.discard(fd)
        if self.poller is not None:
            self.poller.unregister(fd)
        if conn is None:
            return
        try:
            token = conn.recv(64)
        except OSError:
            token = b""
        peer = peer_cred(conn.fileno())
        pid = peer.pid if peer is not None else 0
        if not self.on_peer(token, pid, conn):      # (it counts what it refuses)
            conn.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            if len(self.waiting) >= 256:        # a flood of idle connections: drop the oldest
                old = next(iter(self.waiting))
                self.ready(old)
            self.waiting[conn.fileno()] = conn
            self.fds.add(conn.fileno())
            if self.poller is not None:
                self.poller.register(conn.fileno(), self._pollin)

    def close(self) -> None:
        for conn in self.waiting.values():
            conn.close()
        self.waiting.clear()
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def send(conn: socket.socket, kind: Chan, body: bytes = b"", fds: Iterable[int] = (),
         count: int = 0, epoch: int = 0) -> None:
    """One channel message. Raises BlockingIOError if the task does not read its channel."""
    data = CHAN_HEAD.pack(int(kind), count, epoch) + body
    fds = list(fds)
    assert len(fds) <= CHAN_MAX_FDS
    if fds:
        socket.send_fds(conn, [data], fds)
    else:
        conn.send(data)


def grant(conn: socket.socket, frames: list[int], rights: list[int], fds: list[int]) -> None:
    send(conn, Chan.GRANT, struct.pack(f"<{len(frames)}I{len(frames)}B", *frames, *rights),
         fds, len(frames))


def revoke(conn: socket.socket, epoch: int, frames: list[int]) -> None:
    for i in range(0, len(frames), 4096):
        part = frames[i:i + 4096]
        send(conn, Chan.REVOKE, struct.pack(f"<{len(part)}I", *part), (), len(part), epoch)


def holds(pid: int, idents: set[tuple[int, int]]) -> str | None:
    """Does process `pid` map or hold a descriptor of any of these files? A description of
    the first one found, or None. A process that is gone holds nothing."""
    inodes = {ino for _, ino in idents}
    devs = {f"{os.major(d):02x}:{os.minor(d):02x}" for d, _ in idents}
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(None, 5)
                if len(parts) >= 5 and parts[4] != "0" and int(parts[4]) in inodes \
                        and parts[3] in devs:
                    return f"maps {parts[0]} ({parts[1]})"
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                st = os.stat(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in idents:
                return f"holds descriptor {name}"
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ESRCH):
            return None
        return f"cannot be inspected ({e.strerror})"
    return None
