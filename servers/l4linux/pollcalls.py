"""Waiting for descriptors: poll 7, ppoll 271, select 23, pselect6 270 (`syscalls.TABLE`
entries; the conventions are `syscalls`'s).

Mechanism. Readiness is the open file's (`files.Open.poll`: a pipe with bytes or no writer
left, a pipe with room or no reader left, a terminal with input, a file always). Nothing
ready: the call answers BLOCK and is retried after every change, its timeout kept as the
process's sleep (`Personality.sleep`); a timeout of zero answers at once. An answer that
is not a timeout drops the sleep, so a later nanosleep starts afresh.

The signal mask of ppoll/pselect6 is not applied (the host process's own; a signal with a
handler interrupts the wait as any other: EINTR).

Ownership: the personality's single serving thread.
"""
from __future__ import annotations

import errno
import struct
from typing import TYPE_CHECKING, Any

from . import files
from .files import POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT
from .pipe import BLOCK
from .syscalls import _i32, sys

if TYPE_CHECKING:
    from .process import Process
    from .server import Personality

MAX_SELECT = files.MAX_FDS


def _timespec(px: "Personality", p: "Process", addr: int, usec: bool = False) -> float | None:
    """A timeout argument (NULL: none); -1.0 for a bad one."""
    if not addr:
        return None
    sec, frac = struct.unpack("<qq", px.read(p, addr, 16))
    if sec < 0 or frac < 0 or frac >= (10 ** 6 if usec else 10 ** 9):
        return -1.0
    return sec + frac / (1e6 if usec else 1e9)


def _wait(px: "Personality", p: "Process", ready: int, timeout: float | None) -> Any:
    """What a wait answers: `ready` if anything is, else BLOCK until the timeout (0)."""
    if ready:
        px.sleepers.pop(px.tid, None)
        return ready
    if timeout is None:
        return BLOCK
    if timeout == 0:
        return 0
    return px.sleep(p, timeout)


@sys(7, 271)
def sys_poll(px: "Personality", p: "Process", a: list[int]) -> Any:
    n = a[1]
    if n > files.MAX_FDS:
        return -errno.EINVAL
    if px.nr == 7:
        timeout = _i32(a[2]) / 1000 if _i32(a[2]) >= 0 else None
    else:
        timeout = _timespec(px, p, a[2])
        if timeout == -1.0:
            return -errno.EINVAL
    raw = px.read(p, a[0], 8 * n) if n else b""
    out, ready = bytearray(), 0
    for fd, events, _ in struct.iter_unpack("<ihh", raw):
        f = p.fds.get(fd) if fd >= 0 else None
        rev = 0 if fd < 0 else POLLNVAL if f is None else f.poll(events)
        ready += bool(rev)
        out += struct.pack("<ihh", fd, events, rev)
    got = _wait(px, p, ready, timeout)
    if got is not BLOCK and n:
        px.write(p, a[0], bytes(out))
    return got


@sys(23, 270)
def sys_select(px: "Personality", p: "Process", a: list[int]) -> Any:
    nfds = _i32(a[0])
    if not 0 <= nfds <= MAX_SELECT:
        return -errno.EINVAL
    timeout = _timespec(px, p, a[4], usec=px.nr == 23)
    if timeout == -1.0:
        return -errno.EINVAL
    size = (nfds + 63) // 64 * 8
    sets = [int.from_bytes(px.read(p, addr, size), "little") if addr and size else 0
            for addr in a[1:4]]
    wanted = (POLLIN, POLLOUT, POLLERR)
    out, ready = [0, 0, 0], 0
    for fd in range(nfds):
        bit = 1 << fd
        if not (sets[0] | sets[1] | sets[2]) & bit:
            continue
        f = p.fds.get(fd)
        if f is None:
            return -errno.EBADF
        rev = f.poll(POLLIN | POLLOUT)
        for i, ev in enumerate(wanted):
            # as Linux: a hang-up makes a descriptor readable, an error writable too
            hit = rev & (ev | (POLLHUP if i == 0 else POLLERR if i == 1 else 0))
            if sets[i] & bit and hit:
                out[i] |= bit
                ready += 1
    got = _wait(px, p, ready, timeout)
    if got is BLOCK:
        return BLOCK
    for addr, bits in zip(a[1:4], out):
        if addr and size:
            px.write(p, addr, bits.to_bytes(size, "little"))
    return got
