"""The packet stream: submit and acknowledge queues of descriptors into a shared buffer.

A `nic` session (servers/nic/protocol.py) shares one memory block of SESSION_SIZE bytes
between the nic server and its client: two streams of STREAM_SIZE bytes each, the TX stream
(client -> server) at 0 and the RX stream (server -> client) at STREAM_SIZE. In the style
of Genode's packet streams, each stream has a *source* (it owns the packet buffer: allocates
packets in it and reuses them once acknowledged) and a *sink* (it takes submitted packets and
acknowledges them when done):

    stream offset  size     written by  contents
    0x0000         64       server      header: MAGIC, VERSION, RING, BUF_OFF, BUF_SIZE, SLOT
    0x0040         4        source      submit tail   (free-running u32 counters: index mod
    0x0080         4        sink        submit head    RING is the entry; tail - head is the
    0x00C0         4        sink        ack tail       number queued, at most RING)
    0x0100         4        source      ack head
    0x0140         4        server      RX stream only: link state (bit 0 up)
    0x0144         4        server      RX stream only: link changes so far
    0x1000         RING*16  source      submit queue: descriptors
    0x2000         RING*16  sink        acknowledge queue: descriptors
    0x3000         BUF_SIZE source      the packet buffer

    descriptor (16 bytes, little-endian): u32 offset (into the packet buffer), u32 length,
                                          u32 status (acks: OK, MALFORMED, DROPPED), u32 0

TX: the client is the source (it writes a frame into its buffer, submits the descriptor), the
server the sink (sends the frame, acknowledges it). RX: the server is the source, the client
the sink (it reads the frame and acknowledges the descriptor, which frees the packet).

Each side keeps its own indices privately and only *reads* the peer's, so a peer can lie
only about its own index: a value that would mean more than RING entries queued is refused
(`BadIndex`, counted by the server as malformed) and nothing moves. A descriptor is a claim
too: the sink checks that offset and length lie inside the packet buffer before it touches
anything (`valid`). Index words are written after the descriptors they publish (x86 keeps
stores in order; each word is one aligned 4-byte store).

Memory access goes through an accessor: `ViewMem` (a memoryview of memory the side owns:
the server's) or `VmMem` (the task's VM, for memory another task owns and may take away:
the client's; an access after that raises `kernel.user.vm.PageFault`, never a crash).
"""
from __future__ import annotations

import struct
import time
from collections.abc import Iterable
from typing import Any, Protocol as TypingProtocol

from kernel.user.errors import L4Error

MAGIC = 0x5350344C              # "L4PS"
VERSION = 1
SESSION_ORDER = 20              # the shared block: 2**20 bytes, both streams
SESSION_SIZE = 1 << SESSION_ORDER
STREAM_SIZE = SESSION_SIZE // 2
TX_STREAM, RX_STREAM = 0, STREAM_SIZE
RING = 256                      # descriptors per queue
SLOT = 2048                     # the packet size each source allocates (a frame fits)

SUBMIT_TAIL, SUBMIT_HEAD, ACK_TAIL, ACK_HEAD = 0x40, 0x80, 0xC0, 0x100
LINK, LINK_CHANGES = 0x140, 0x144
SUBMIT_RING, ACK_RING, BUF_OFF = 0x1000, 0x2000, 0x3000
BUF_SIZE = STREAM_SIZE - BUF_OFF
SLOTS = BUF_SIZE // SLOT

OK, MALFORMED, DROPPED = 0, 1, 2
STATUS_NAMES = {OK: "ok", MALFORMED: "malformed", DROPPED: "dropped"}

DESC = struct.Struct("<IIII")
U32 = struct.Struct("<I")
HEADER = struct.Struct("<IIIIII")
MASK32 = 0xFFFF_FFFF

Desc = tuple[int, int, int]      # offset, length, status


class BadIndex(ValueError):
    """The peer's index word claims more than RING entries: the peer broke the protocol."""


class Mem(TypingProtocol):
    def read(self, off: int, n: int) -> bytes | memoryview: ...
    def write(self, off: int, data: bytes | bytearray | memoryview) -> None: ...


class ViewMem:
    """Memory this side owns, as a memoryview (offsets from the session block's start)."""

    def __init__(self, view: memoryview) -> None:
        self.view = view

    def read(self, off: int, n: int) -> memoryview:
        return self.view[off:off + n]

    def write(self, off: int, data: bytes | bytearray | memoryview) -> None:
        self.view[off:off + len(data)] = data


class VmMem:
    """Memory another task owns, through our VM (safe after it is taken away: PageFault)."""

    def __init__(self, vm: Any, base: int) -> None:
        self.vm, self.base = vm, base

    def read(self, off: int, n: int) -> bytes:
        return self.vm.read(self.base + off, n)

    def write(self, off: int, data: bytes | bytearray | memoryview) -> None:
        self.vm.write(self.base + off, data)


def init_stream(mem: Mem, base: int) -> None:
    """The server formats a stream: header, indices 0 (the block comes zeroed)."""
    mem.write(base, HEADER.pack(MAGIC, VERSION, RING, BUF_OFF, BUF_SIZE, SLOT))


def check_header(mem: Mem, base: int) -> None:
    got = HEADER.unpack(bytes(mem.read(base, HEADER.size)))
    want = (MAGIC, VERSION, RING, BUF_OFF, BUF_SIZE, SLOT)
    if got != want:
        raise ValueError(f"packet stream header {got} is not {want} (another version?)")


def valid(offset: int, length: int, lo: int = 1) -> bool:
    """Does the descriptor lie inside the packet buffer?"""
    return lo <= length and 0 <= offset and offset + length <= BUF_SIZE


def _u32(mem: Mem, off: int) -> int:
    return int(U32.unpack(bytes(mem.read(off, 4)))[0])


def _read_descs(mem: Mem, ring: int, first: int, n: int) -> list[Desc]:
    """n descriptors from index `first` of the queue at `ring` (in at most two reads)."""
    out: list[Desc] = []
    while n:
        i = first % RING
        k = min(n, RING - i)
        raw = bytes(mem.read(ring + i * DESC.size, k * DESC.size))
        out.extend((o, ln, st) for o, ln, st, _ in DESC.iter_unpack(raw))
        first, n = first + k, n - k
    return out


def _write_descs(mem: Mem, ring: int, first: int, descs: list[Desc]) -> None:
    pos = 0
    while pos < len(descs):
        i = (first + pos) % RING
        k = min(len(descs) - pos, RING - i)
        mem.write(ring + i * DESC.size,
                  b"".join(DESC.pack(o, ln, st, 0) for o, ln, st in descs[pos:pos + k]))
        pos += k


class Source:
    """The side that owns the packet buffer: submits packets, takes acknowledgements back.
    Owned by one thread at a time (the caller's lock)."""

    def __init__(self, mem: Mem, base: int) -> None:
        self.mem, self.base = mem, base
        self.submit_tail = 0          # ours: published at SUBMIT_TAIL
        self.ack_head = 0             # ours: published at ACK_HEAD
        self.free = list(range((SLOTS - 1) * SLOT, -1, -SLOT))   # packet offsets, a stack
        self.out: set[int] = set()    # offsets submitted and not yet acknowledged

    def room(self) -> int:
        """How many more descriptors the submit queue takes now."""
        head = _u32(self.mem, self.base + SUBMIT_HEAD)
        queued = (self.submit_tail - head) & MASK32
        if queued > RING:
            raise BadIndex(f"submit head {head} is {queued} behind tail {self.submit_tail}")
        return RING - queued

    def alloc(self) -> int | None:
        return self.free.pop() if self.free else None

    def submit(self, descs: list[Desc]) -> None:
        """Publish `descs` (the caller checked `room`): descriptors first, then the tail."""
        _write_descs(self.mem, self.base + SUBMIT_RING, self.submit_tail, descs)
        self.submit_tail = (self.submit_tail + len(descs)) & MASK32
        self.mem.write(self.base + SUBMIT_TAIL, U32.pack(self.submit_tail))
        self.out.update(o for o, _, _ in descs)

    def acked(self) -> tuple[list[Desc], int]:
        """Take every acknowledgement: (the descriptors, how many named no packet of ours).
        Packets acknowledged go back to the free list."""
        tail = _u32(self.mem, self.base + ACK_TAIL)
        n = (tail - self.ack_head) & MASK32
        if n > RING:
            raise BadIndex(f"ack tail {tail} is {n} ahead of head {self.ack_head}")
        if not n:
            return [], 0
        descs = _read_descs(self.mem, self.base + ACK_RING, self.ack_head, n)
        self.ack_head = (self.ack_head + n) & MASK32
        self.mem.write(self.base + ACK_HEAD, U32.pack(self.ack_head))
        bad = 0
        for o, _, _ in descs:
            if o in self.out:
                self.out.discard(o)
                self.free.append(o)
            else:
                bad += 1
        return descs, bad


class Sink:
    """The side that takes submitted packets and acknowledges them."""

    def __init__(self, mem: Mem, base: int) -> None:
        self.mem, self.base = mem, base
        self.submit_head = 0          # ours: published at SUBMIT_HEAD
        self.ack_tail = 0             # ours: published at ACK_TAIL

    def pending(self, limit: int = RING) -> list[Desc]:
        """The submitted descriptors not yet taken (at most `limit`), not consumed yet."""
        tail = _u32(self.mem, self.base + SUBMIT_TAIL)
        n = (tail - self.submit_head) & MASK32
        if n > RING:
            raise BadIndex(f"submit tail {tail} is {n} ahead of head {self.submit_head}")
        n = min(n, limit)
        return _read_descs(self.mem, self.base + SUBMIT_RING, self.submit_head, n) if n else []

    def ack_room(self) -> int:
        head = _u32(self.mem, self.base + ACK_HEAD)
        queued = (self.ack_tail - head) & MASK32
        if queued > RING:
            raise BadIndex(f"ack head {head} is {queued} behind tail {self.ack_tail}")
        return RING - queued

    def consume(self, n: int) -> None:
        self.submit_head = (self.submit_head + n) & MASK32
        self.mem.write(self.base + SUBMIT_HEAD, U32.pack(self.submit_head))

    def ack(self, descs: list[Desc]) -> None:
        """Publish acknowledgements (the caller checked `ack_room`)."""
        if not descs:
            return
        _write_descs(self.mem, self.base + ACK_RING, self.ack_tail, descs)
        self.ack_tail = (self.ack_tail + len(descs)) & MASK32
        self.mem.write(self.base + ACK_TAIL, U32.pack(self.ack_tail))


def packet(base: int, offset: int) -> int:
    """Where a packet lies in the session block."""
    return base + BUF_OFF + offset


def set_link(mem: Mem, up: bool, changes: int) -> None:
    mem.write(RX_STREAM + LINK, U32.pack(int(up)) + U32.pack(changes & MASK32))


def get_link(mem: Mem) -> tuple[bool, int]:
    raw = bytes(mem.read(RX_STREAM + LINK, 8))
    up, changes = struct.unpack("<II", raw)
    return bool(up & 1), changes


# -- the server's side: sessions whose client went away ----------------------------------
def gone(l4: Any, sessions: Iterable[Any], label: int | None, grace_s: float) -> list[Any]:
    """The sessions (of `label`, or all) whose client is gone: its signal IRQ is attached to
    no thread any more (or a trigger failed: `dead`), or was never attached within `grace_s`
    of the open. Marks `attached` on those seen attached. Used by the nic server and ORe."""
    now = time.monotonic()
    out = []
    for s in list(sessions):
        if label is not None and s.label != label:
            continue
        try:
            attached = l4.cap_inspect(s.sig).get("thread") is not None
        except L4Error:
            attached = False
        s.attached = s.attached or attached
        if s.dead or (not attached and (s.attached or now - s.opened > grace_s)):
            out.append(s)
    return out

