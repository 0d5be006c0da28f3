"""The task side of memory: an address-space view over the frames we were given, with a TLB.

`VM(l4)` joins the RAM (MEM_ATTACH, which needs WRITE on our own task capability) through an
`Attachment`: a view of all physical RAM reserved PROT_NONE in this process (frame n at
base + n * 4096) and our memory channel to the kernel (a Unix socket the kernel
authenticates by a token and our pid). Over the channel the kernel sends us the memfd of
each frame our page table maps, when we first touch it — O_RDONLY for a read-only mapping —
and we map it MAP_FIXED at its place in the view and close it; a frame we lose is replaced
with PROT_NONE memory. So what this process can reach is exactly what its page table maps
(docs/MEMORY.md). Every access goes through `read`, `write`, `view` (a zero-copy memoryview
of a range) and is translated by the TLB, a cache of the kernel's page table: a miss, or a
write to a page cached read-only, is a page fault (MEM_FAULT). The kernel answers from its
page table, or asks the thread's pager and answers once the pager mapped the page. An
unresolvable fault raises `PageFault`.

Shootdown contract: the kernel bumps the epoch word in our control page (a memfd of our
own, sent first on the channel) when it unmaps anything of ours, after sending the list of
frames we must drop (REVOKE). Each access first compares the word with the epoch our TLB
was filled under; if it moved, we read the channel (dropping those frames), drop the TLB
and write the epoch to our acknowledgement word. With `signal` (the default in the main
thread) the kernel also sends SHOOTDOWN_SIGNAL so an idle, computing or blocked task
acknowledges at once; a signal arriving in the middle of an access is acknowledged when the
access ends. The kernel checks /proc that the frames are really gone before the unmapper
is answered, and kills a task that keeps them. So once `mem_unmap` returns, we can reach
nothing of those frames.

A memoryview from `view()` bypasses the TLB: it is valid only until the next unmap of that
range is acknowledged (like a pointer into a page you may lose: after that it faults the
process). One `VM` per task (a second MEM_ATTACH is refused), shared by the task's threads:
a thread's faults go to the kernel over the `L4` connection it named with `fault_via` (an L4
thread that OS thread owns), else over the one the VM was made with. A shootdown is
acknowledged only while no thread holds a translation (`accessing` minus `faulting`); until
then the old mappings stay valid (the kernel reuses no frame before the acknowledgement),
and the last thread to finish its access acknowledges. The channel is read by one thread at
a time, in order (`Attachment.pump`).
"""
from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import select
import signal as _signal
import socket
import struct
import threading
import time
from typing import Any, Callable, Iterator

from . import errors
from ..osutil import MAP_ANON, MAP_FIXED, MAP_NORESERVE, MAP_PRIVATE, MAP_SHARED, mmap_at, munmap
from ..abi import (CHAN_HEAD, CHAN_MAX_FDS, CTL_ACK, CTL_EPOCH, FIRST_FREE_SLOT, PAGE_SHIFT,
                   PAGE_SIZE, SHOOTDOWN_SIGNAL, Chan, Item, MemRights)

_WORD = struct.Struct("<Q")
_R, _W, _RW = int(MemRights.R), int(MemRights.W), int(MemRights.RW)   # ints: IntFlag ops are slow
_MASK = PAGE_SIZE - 1
GRANT_WAIT_S = 10.0          # a frame the kernel answered a fault with arrives at once




class Attachment:
    """Our view of physical RAM and the channel that fills it (one per process and task).

    `ram` is a memoryview of the whole view: offsets are physical addresses, and a frame we
    do not hold is PROT_NONE there (touching it kills the process, as real hardware would).
    `held` is frame -> rights (R or RW) of the frames mapped in. `on_revoke` is called after
    frames were dropped (the VM drops its TLB)."""

    def __init__(self, l4: Any, signal: bool = False) -> None:
        info = l4.mem_attach(signal)
        self.size: int = info["size"]
        self.frames: int = info["frames"]
        self.base = mmap_at(None, self.size, 0, MAP_PRIVATE | MAP_ANON | MAP_NORESERVE, -1)
        self.ram = memoryview((ctypes.c_char * self.size).from_address(self.base)).cast("B")
        self.held: dict[int, int] = {}
        self.revokes = 0                    # REVOKE messages handled so far
        self._turn = threading.Lock()       # held by the one thread reading the channel
        self.on_revoke: Callable[[], None] = lambda: None
        self.ctl: mmap.mmap | None = None
        self.chan = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.chan.connect(info["channel"])
        self.chan.send(info["token"])
        # Non-blocking: a waiting pump selects first (a socket with a timeout would wait
        # even for MSG_DONTWAIT).
        self.chan.setblocking(False)
        while self.ctl is None:
            self.pump(True)
        if info.get("dma"):                 # the machine's DMA: every frame comes now
            while len(self.held) < self.frames:
                self.pump(True)

    @property
    def in_pump(self) -> bool:
        return self._turn.locked()

    def pump(self, block: bool, wait_turn: bool = False) -> bool:
        """Handle one channel message; False if none was waiting (`block` False), or if a
        pump is already running (messages are handled in order, never one inside another —
        a revocation must not overtake the grant before it) and `wait_turn` is False:
        a signal handler never waits (the pump it interrupted may be its own thread's)."""
        if block and not select.select([self.chan], [], [], GRANT_WAIT_S)[0]:
            raise errors.KernelGone("the kernel sent nothing on the memory channel")
        if not self._turn.acquire(blocking=wait_turn):
            return False
        try:
            return self._one()
        finally:
            self._turn.release()

    def _one(self) -> bool:
        try:
            data, fds, _, _ = socket.recv_fds(self.chan, 65536, CHAN_MAX_FDS,
                                              socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return False
        if not data:
            raise errors.KernelGone("the kernel closed the memory channel")
        kind, count, _epoch = CHAN_HEAD.unpack_from(data)
        at = CHAN_HEAD.size
        try:
            if kind == Chan.CONTROL and fds:
                self.ctl = mmap.mmap(fds[0], PAGE_SIZE)
            elif kind == Chan.GRANT:
                nums = struct.unpack_from(f"<{count}I", data, at)
                rights = data[at + 4 * count:at + 5 * count]
                for f, r, fd in zip(nums, rights, fds):
                    prot = mmap.PROT_READ | (mmap.PROT_WRITE if r & _W else 0)
                    mmap_at(self.base + (f << PAGE_SHIFT), PAGE_SIZE, prot,
                            MAP_SHARED | MAP_FIXED, fd)
                    self.held[f] = r
            elif kind == Chan.REVOKE:
                for f in struct.unpack_from(f"<{count}I", data, at):
                    mmap_at(self.base + (f << PAGE_SHIFT), PAGE_SIZE, 0,
                            MAP_PRIVATE | MAP_ANON | MAP_FIXED, -1)
                    self.held.pop(f, None)
                self.revokes += 1
                self.on_revoke()
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def drain(self) -> None:
        """Handle every message waiting (revocations before an acknowledgement), after the
        one another thread may be handling."""
        while self.pump(False, wait_turn=True):
            pass

    def need(self, frame: int, rights: int, pump: Callable[[], bool] | None = None) -> bool:
        """The kernel answered a fault with `frame`: wait until its file is mapped in.
        False if frames were revoked meanwhile (the answer may be stale: fault again).
        `pump`: how to handle one message (the VM's: only while no thread holds a
        translation, since a revocation ahead of the grant unmaps)."""
        held = self.held
        want = _W if rights & _W else _R
        gen = self.revokes
        deadline = time.monotonic() + GRANT_WAIT_S
        while held.get(frame, 0) & want != want:
            if self.revokes != gen:
                return False
            if time.monotonic() > deadline:
                raise errors.KernelGone("the kernel did not send a frame it answered a fault with")
            # The kernel sent it before it answered: it is normally there already. Else
            # short waits: a signal handler may take the message from under a long one.
            if not (pump() if pump is not None else self.pump(False)):
                select.select([self.chan], [], [], 0.05)
        return True

    def epoch(self) -> int:
        assert self.ctl is not None
        return _WORD.unpack_from(self.ctl, CTL_EPOCH)[0]

    def ack(self, epoch: int) -> None:
        assert self.ctl is not None
        _WORD.pack_into(self.ctl, CTL_ACK, epoch)

    def close(self) -> None:
        self.chan.close()
        if self.ctl is not None:
            self.ctl.close()
        try:
            self.ram.release()
        except BufferError:
            return              # a view is still exported: leave the mapping to the exit
        munmap(self.base, self.size)


class PageFault(errors.PartnerError):
    """A page fault that the kernel and the pager could not resolve."""


def map_mem(vaddr: int, order: int, rights: int = MemRights.RW) -> list[int]:
    """Item: the receiver gets the flexpage [vaddr, 2**order) mapped with `rights`."""
    return [int(Item.MAP_MEM), vaddr, order, int(rights)]


def grant_mem(vaddr: int, order: int, rights: int = MemRights.RW) -> list[int]:
    """Item: the flexpage moves to the receiver (we lose it)."""
    return [int(Item.GRANT_MEM), vaddr, order, int(rights)]


def window(vaddr: int, order: int, cap_base: int = FIRST_FREE_SLOT,
           cap_count: int = 0) -> tuple[int, int, int, int]:
    """A receive window taking memory items into [vaddr, 2**order) (and caps, if counted)."""
    return (cap_base, cap_count, vaddr, order)


class VM:
    """This task's address space as seen through its TLB."""

    def __init__(self, l4: Any, signal: bool | None = None) -> None:
        main = threading.current_thread() is threading.main_thread()
        use_signal = main if signal is None else (signal and main)
        self.l4 = l4
        self.att = att = Attachment(l4, use_signal)
        att.on_revoke = self._drop_tlb
        assert att.ctl is not None
        self.mm = att.ctl           # our control page: the epoch and ack words
        self._epoch_at, self._ack_at = CTL_EPOCH, CTL_ACK
        self.ram = att.ram
        self.size = att.size
        self.frames = att.frames
        self.tlb: dict[int, tuple[int, int]] = {}
        # The last physically contiguous run walked: (first vpage, first frame, pages, rights).
        # Part of the TLB: dropped with it.
        self.run: tuple[int, int, int, int] = (0, 0, 0, 0)
        self.seen = 0
        self._count = threading.Lock()   # guards the counts and `syncing`
        self._cv = threading.Condition(self._count)
        self.syncing = False             # a thread is acknowledging: no access starts
        self.accessing = 0               # threads in an access (holding a translation or
        self.faulting = 0                # getting one); of them, inside a fault (holding none)
        self._conn = threading.local()   # .l4: this OS thread's connection for faults
        self.pending = False
        self.faults = 0
        self._old_handler: Any = None
        self._sync()
        if use_signal:
            self._old_handler = _signal.signal(SHOOTDOWN_SIGNAL, self._on_signal)

    # -- shootdown ----------------------------------------------------------------
    def _drop_tlb(self) -> None:
        self.tlb.clear()
        self.run = (0, 0, 0, 0)

    def _sync(self) -> None:
        e = _WORD.unpack_from(self.mm, self._epoch_at)[0]
        if e != self.seen:
            # The kernel sent what we lose before it moved the epoch: drop it first.
            self.att.drain()
            self._drop_tlb()
            self.seen = e
        _WORD.pack_into(self.mm, self._ack_at, e)

    def fault_via(self, l4: Any) -> None:
        """The calling OS thread's faults go to the kernel over `l4` (an L4 thread of this
        task that this OS thread owns), not over the VM's own connection."""
        self._conn.l4 = l4

    # -- who holds a translation (the shootdown's gate) ----------------------------
    # An access (`translate`, `_walk`, `deferred`) is counted in `accessing`; inside a
    # fault a thread holds no translation (`faulting`). Acknowledging drains the channel,
    # which unmaps revoked frames: it runs only while no thread holds a translation, and
    # while it runs (`syncing`) and while it waits (`pending`) no new access starts, so the
    # holders drain and the last one out acknowledges — never starved by overlapping
    # accesses. A thread's nested access (an access inside `deferred`) just counts.
    def _holders(self) -> int:
        """Threads holding a translation now (in an access, not inside a fault)."""
        return self.accessing - self.faulting

    def _claim(self, holders: int) -> bool:
        """With the lock held: take the channel (`syncing`) if nobody does and at most
        `holders` threads hold a translation; else leave the acknowledgement due."""
        now = not self.syncing and self._holders() <= holders
        if now:
            self.pending, self.syncing = False, True
        else:
            self.pending = True
        return now

    def _unclaim(self) -> None:
        with self._cv:
            self.syncing = False
            self._cv.notify_all()

    def _sync_alone(self) -> None:
        """`_sync` with new accesses held off (`syncing` was set under the lock)."""
        try:
            self._sync()
        finally:
            self._unclaim()

    def _fault_l4(self) -> Any:
        """The connection this OS thread's faults go over (`fault_via`, else the VM's)."""
        return getattr(self._conn, "l4", None) or self.l4

    def _pump_alone(self) -> bool:
        """One channel message, read while no other thread holds a translation (a fault's
        wait for its frame: a revocation may be queued ahead of the grant). Else False
        with new accesses held off (`pending`): the last holder out drains the channel
        itself (and acknowledges), and the fault finds its frame then."""
        own = getattr(self._conn, "depth", 1) - 1   # this thread's outer accesses
        with self._cv:
            if self.syncing or self._holders() > own:
                self.pending = True
                return False
            self.syncing = True
        try:
            return self.att.pump(False, wait_turn=True)
        finally:
            self._unclaim()

    def _enter(self) -> None:
        depth = getattr(self._conn, "depth", 0)
        self._conn.depth = depth + 1
        with self._cv:
            if depth:
                self.accessing += 1
                return
            while self.pending or self.syncing:
                if not self.syncing and self._holders() == 0:
                    self.pending, self.syncing = False, True
                    break
                self._cv.wait(0.01)
            else:
                self.accessing += 1
                return
        self._sync_alone()
        with self._cv:
            self.accessing += 1

    def _leave(self) -> None:
        self._conn.depth -= 1
        with self._cv:
            self.accessing -= 1
            due = self.pending and not self.syncing and self._holders() == 0
            if due:
                self.pending, self.syncing = False, True
            elif self.pending:
                self._cv.notify_all()       # a waiting access may now acknowledge
        if due:
            self._sync_alone()

    def _on_signal(self, signum: int, frame: Any) -> None:
        # A translation in some thread's hand, mid-pump, or the counts' lock held (perhaps
        # by the very code this handler interrupted): later — the last access to end
        # acknowledges, and the kernel signals again meanwhile. Inside a fault: now.
        if self.att.in_pump or not self._count.acquire(blocking=False):
            self.pending = True
            return
        try:
            now = self._claim(0)
        finally:
            self._count.release()
        if now:
            self._sync_alone()

    def flush(self) -> None:
        """Drop the whole TLB (after giving pages away ourselves, for instance)."""
        self.tlb.clear()
        self.run = (0, 0, 0, 0)
        self._sync()

    # -- translation --------------------------------------------------------------
    def _frame(self, vp: int, access: int, ip: int) -> int:
        while True:
            if _WORD.unpack_from(self.mm, self._epoch_at)[0] != self.seen:
                # We hold no translation here. Nobody else does: acknowledge now; else the
                # old mappings stay valid until the last holder acknowledges.
                with self._cv:
                    now = self._claim(1)
                if now:
                    self._sync_alone()
            ent = self.tlb.get(vp)
            if ent is not None and ent[1] & access == access:
                return ent[0]
            self.faults += 1
            # Inside the kernel we hold no translation: the signal handler may drop frames
            # now (our pager may unmap while it serves us, copy-on-write does).
            with self._count:
                self.faulting += 1
                gen = self.att.revokes
            fresh = False
            try:
                frame, rights = self._fault_l4().mem_fault(vp << PAGE_SHIFT, access, ip)
                fresh = self.att.need(frame, rights, self._pump_alone)   # sent before the answer
            except errors.L4Error as e:
                raise PageFault(f"page fault at 0x{vp << PAGE_SHIFT:x}: {e.reason}", e.err) from None
            finally:
                # Holding a translation again: not while another thread acknowledges (it
                # began while we held none), and not one a revocation since overtook.
                with self._cv:
                    while self.syncing:
                        self._cv.wait(0.01)
                    self.faulting -= 1
                    fresh = fresh and self.att.revokes == gen
            if fresh:
                self.tlb[vp] = (frame, rights)

    def translate(self, vaddr: int, access: int = _R, ip: int = 0) -> int:
        """The RAM offset backing `vaddr` for `access` (faulting it in if needed)."""
        self._enter()               # the signal handler must not read the channel meanwhile
        try:
            frame = self._frame(vaddr >> PAGE_SHIFT, int(access), ip)
        finally:
            self._leave()
        return (frame << PAGE_SHIFT) | (vaddr & _MASK)

    def _walk(self, vaddr: int, n: int, access: int, ip: int,
              fn: Callable[[int, int, int], None]) -> None:
        """Call fn(ram_offset, pos, length) over runs of physically contiguous pages."""
        if n < 0 or vaddr < 0:
            raise errors.InvalidArgument(f"bad range 0x{vaddr:x}+{n}")
        self._enter()
        try:
            pos = 0
            tlb = self.tlb
            while pos < n:
                va = vaddr + pos
                vp = va >> PAGE_SHIFT
                frame = self._frame(vp, access, ip)     # checks the epoch first
                length = min(PAGE_SIZE - (va & _MASK), n - pos)
                rvp, rframe, rcount, rrights = self.run
                if rvp <= vp < rvp + rcount and rframe + vp - rvp == frame \
                        and rrights & access == access:
                    # inside the cached run: it goes on to the run's end
                    length = min(length + (rvp + rcount - vp - 1) * PAGE_SIZE, n - pos)
                    vp = rvp + rcount - 1
                else:
                    # extend the run while the TLB has the next pages contiguous
                    first, ffirst, rights = vp, frame, tlb[vp][1]
                    nxt = frame + 1
                    while pos + length < n:
                        ent = tlb.get(vp + 1)
                        if ent is None or ent[0] != nxt or ent[1] & access != access:
                            break
                        vp += 1
                        nxt += 1
                        rights &= ent[1]
                        length = min(length + PAGE_SIZE, n - pos)
                    if vp > first:
                        self.run = (first, ffirst, vp - first + 1, rights)
                fn((frame << PAGE_SHIFT) | (va & _MASK), pos, length)
                pos += length
        finally:
            self._leave()

    # -- access ---------------------------------------------------------------------
    def read(self, vaddr: int, n: int, ip: int = 0) -> bytes:
        out = bytearray(n)
        ram = self.ram

        def copy(off: int, pos: int, length: int) -> None:
            out[pos:pos + length] = ram[off:off + length]
        self._walk(vaddr, n, _R, ip, copy)
        return bytes(out)

    def read_into(self, vaddr: int, buf: Any, ip: int = 0) -> None:
        mv = memoryview(buf).cast("B")
        ram = self.ram

        def copy(off: int, pos: int, length: int) -> None:
            mv[pos:pos + length] = ram[off:off + length]
        self._walk(vaddr, len(mv), _R, ip, copy)

    def write(self, vaddr: int, data: Any, ip: int = 0) -> None:
        src = memoryview(data).cast("B")
        ram = self.ram

        def copy(off: int, pos: int, length: int) -> None:
            ram[off:off + length] = src[pos:pos + length]
        self._walk(vaddr, len(src), _W, ip, copy)

    def fill(self, vaddr: int, n: int, byte: int = 0) -> None:
        ram = self.ram

        def put(off: int, pos: int, length: int) -> None:
            ram[off:off + length] = bytes([byte]) * length
        self._walk(vaddr, n, _W, 0, put)

    def view(self, vaddr: int, n: int, writable: bool = False) -> memoryview:
        """A zero-copy view of [vaddr, vaddr+n): the pages must be physically contiguous."""
        runs: list[tuple[int, int]] = []
        self._walk(vaddr, n, _RW if writable else _R, 0,
                   lambda off, pos, length: runs.append((off, length)))
        if len(runs) > 1:
            raise errors.InvalidArgument(f"0x{vaddr:x}+{n} is not backed by contiguous frames; "
                                         f"use read/write")
        off = runs[0][0] if runs else 0
        mv = self.ram[off:off + n]
        return mv if writable else mv.toreadonly()

    # -- bulk access: views held across many copies -------------------------------------
    # A server that copies much (Nitpicker composing frames) walks its regions once into
    # views of RAM (`runs`) and keeps them while the epoch it built them under holds
    # (`moved`); inside `deferred()` a shootdown's acknowledgement waits (the kernel allows
    # SHOOTDOWN_MS), so the views stay valid until it ends. Inside `deferred()` nothing may
    # call the VM's own accesses (they end the deferral early).
    def runs(self, vaddr: int, n: int, writable: bool = False) -> list[tuple[int, memoryview]]:
        """[vaddr, vaddr+n) as physically contiguous runs: (offset in the range, a view of
        RAM), faulting in what is missing (PageFault if it cannot be mapped)."""
        runs: list[tuple[int, int, int]] = []

        def run(off: int, pos: int, length: int) -> None:
            if runs and runs[-1][1] + runs[-1][2] == off:        # physically adjacent
                runs[-1] = (runs[-1][0], runs[-1][1], runs[-1][2] + length)
            else:
                runs.append((pos, off, length))
        self._walk(vaddr, n, _RW if writable else _R, 0, run)
        return [(pos, self.ram[off:off + length]) for pos, off, length in runs]

    def moved(self, since: int) -> bool:
        """Whether the address space changed since epoch `since` (views built then may
        be stale), or a change is there that we have not acknowledged."""
        return bool(_WORD.unpack_from(self.mm, self._epoch_at)[0] != self.seen
                    or self.seen != since)

    def sync(self) -> int:
        """Acknowledge every change (dropping the TLB if there was one): the epoch now."""
        self._sync()
        return self.seen

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """While inside, a shootdown's acknowledgement waits until the end."""
        self._enter()
        try:
            yield
        finally:
            self._leave()

    def mapped(self, vaddr: int, order: int = PAGE_SHIFT) -> list[list[int]]:
        """The kernel's page table (not the TLB) for a flexpage of ours."""
        return self._fault_l4().mem_query(vaddr, order)

    def close(self) -> None:
        if self._old_handler is not None:
            _signal.signal(SHOOTDOWN_SIGNAL, self._old_handler)
            self._old_handler = None
        self.att.close()

    def __enter__(self) -> "VM":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
