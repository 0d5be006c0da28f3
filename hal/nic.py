"""The Ethernet NIC: MAC, link, RX/TX descriptor rings in RAM, DMA, RX/TX interrupts.

Rings (like e1000): a ring is SIZE descriptors of 16 bytes at BASE in RAM (16-byte aligned,
SIZE a power of two 8..4096). Descriptor, little-endian: u64 addr, u16 len, u16 flags, u32 0.
flags: bit0 DONE (the device finished with it), bit1 ERROR.

- TX: the driver fills descriptors (addr, len, flags 0) from TX_TAIL on, then writes TX_TAIL
  (the doorbell) = index after the last one. The device sends every descriptor from TX_HEAD
  up to TX_TAIL *as one batch* (one doorbell, many frames), sets DONE (or ERROR: length
  outside 14..MAX_FRAME or DMA outside RAM), advances TX_HEAD, sets ISR.TX and raises the line.
- RX: the driver posts empty buffers (addr, len = buffer size, flags 0) and writes RX_TAIL =
  index after the last posted one (keep one slot free). The device owns [RX_HEAD, RX_TAIL):
  each received frame is copied to the buffer at RX_HEAD, its len and DONE written, RX_HEAD
  advanced; if no buffer is left the frame is dropped (RX_DROPPED). After each batch: ISR.RX
  and the line. A frame longer than its buffer: descriptor gets ERROR, the frame is dropped.

Registers from 8: MAC, LINK, CTRL (bit0 RX_EN, bit1 TX_EN), ISR (bit0 RX, bit1 TX; write 1s to
clear), RX_BASE, RX_SIZE, RX_HEAD, RX_TAIL, TX_BASE, TX_SIZE, TX_HEAD, TX_TAIL, RX_FRAMES,
TX_FRAMES, RX_DROPPED, TX_ERRORS. A ring can't be changed while its direction is enabled
(BUSY); enabling checks the ring (BAD_VALUE / DMA_RANGE) and resets its head (and TX tail).

The NIC is promiscuous (receives every frame). Fault knobs (applied when sending): `loss`,
`corrupt`, `duplicate` (probabilities per frame), `link_down` (bool: every frame lost).
"""
from __future__ import annotations

import queue
import struct
import threading
import zlib

from .cable import Backend, make_backend
from .device import Device, ErrCode
from .pic import Pic
from .ram import Ram

DESC = struct.Struct("<QHHI")
DONE, ERROR = 0x1, 0x2
RX_EN, TX_EN = 0x1, 0x2
ISR_RX, ISR_TX = 0x1, 0x2
MIN_FRAME, MAX_FRAME = 14, 2048
MIN_RING, MAX_RING = 8, 4096


def parse_mac(text: str) -> int:
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(f"bad MAC address {text!r} (like 02:00:00:00:00:01)")
    return int("".join(parts), 16)


class Nic(Device):
    kind = "nic"
    ID = 0x4E494331
    WORKERS = 2
    REGS = {"MAC": (8, "ro"), "LINK": (9, "ro"), "CTRL": (10, "rw"), "ISR": (11, "rw"),
            "RX_BASE": (12, "rw"), "RX_SIZE": (13, "rw"), "RX_HEAD": (14, "ro"), "RX_TAIL": (15, "rw"),
            "TX_BASE": (16, "rw"), "TX_SIZE": (17, "rw"), "TX_HEAD": (18, "ro"), "TX_TAIL": (19, "rw"),
            "RX_FRAMES": (20, "ro"), "TX_FRAMES": (21, "ro"), "RX_DROPPED": (22, "ro"),
            "TX_ERRORS": (23, "ro")}
    KNOBS = {"loss": float, "corrupt": float, "duplicate": float, "link_down": bool}

    def __init__(self, name: str, line: int | None, pic: Pic, ram: Ram, backend: str = "loopback",
                 port: int = 0, peer: str | None = None, tap: str = "l4tap0", mac: str | None = None) -> None:
        super().__init__(name, line, pic, ram)
        self.backend: Backend = make_backend(backend, port, peer, tap)
        self.mac = parse_mac(mac) if mac else (0x02 << 40 | zlib.crc32(f"{name}/{self.backend.info()}".encode()))
        self.regs.update(CTRL=0, ISR=0, RX_BASE=0, RX_SIZE=0, RX_TAIL=0, TX_BASE=0, TX_SIZE=0, TX_TAIL=0)
        self.rx_head = self.tx_head = 0
        self.counters = {"RX_FRAMES": 0, "TX_FRAMES": 0, "RX_DROPPED": 0, "TX_ERRORS": 0}
        self.work: queue.Queue[bool] = queue.Queue()
        self.thread: threading.Thread | None = None

    # -- registers ----------------------------------------------------------------------
    def read_reg(self, name: str) -> int:
        if name == "MAC":
            return self.mac
        if name == "LINK":
            return int(self.backend.link_up and not self.knobs["link_down"])
        if name == "RX_HEAD":
            return self.rx_head
        if name == "TX_HEAD":
            return self.tx_head
        if name in self.counters:
            return self.counters[name]
        return super().read_reg(name)

    def _ring_ok(self, d: str) -> ErrCode:
        base, size = self.regs[f"{d}_BASE"], self.regs[f"{d}_SIZE"]
        if base % 16 or not (MIN_RING <= size <= MAX_RING and size & (size - 1) == 0):
            return ErrCode.BAD_VALUE
        return self.dma([(base, size * DESC.size, True)])

    def write_reg(self, name: str, value: int) -> None:
        ctrl = self.regs["CTRL"]
        if name in ("RX_BASE", "RX_SIZE", "TX_BASE", "TX_SIZE"):
            if ctrl & (RX_EN if name[0] == "R" else TX_EN):
                self.fail(ErrCode.BUSY)
            else:
                self.regs[name] = value
        elif name == "CTRL":
            if value & ~(RX_EN | TX_EN):
                self.fail(ErrCode.BAD_VALUE)
                return
            for bit, d in ((RX_EN, "RX"), (TX_EN, "TX")):
                if value & bit and not ctrl & bit:
                    err = self._ring_ok(d)
                    if err:
                        self.fail(err)
                        return
            if value & RX_EN and not ctrl & RX_EN:
                self.rx_head = 0
                self.regs["RX_TAIL"] = 0
            if value & TX_EN and not ctrl & TX_EN:
                self.tx_head = 0
                self.regs["TX_TAIL"] = 0
            self.regs["CTRL"] = value
        elif name == "ISR":
            self.regs["ISR"] &= ~value
        elif name in ("RX_TAIL", "TX_TAIL"):
            d = name[:2]
            if not ctrl & (RX_EN if d == "RX" else TX_EN):
                self.fail(ErrCode.NOT_ENABLED)
            elif value >= self.regs[f"{d}_SIZE"]:
                self.fail(ErrCode.BAD_VALUE)
            else:
                self.regs[name] = value
                if d == "TX":
                    self.work.put(True)
        else:
            super().write_reg(name, value)

    # -- transmit (worker thread) ---------------------------------------------------------
    def _transmit(self) -> None:
        with self.lock:
            if not self.regs["CTRL"] & TX_EN:
                return
            base, size, tail, head = self.regs["TX_BASE"], self.regs["TX_SIZE"], self.regs["TX_TAIL"], self.tx_head
        if head == tail:
            return
        mem = self.ram.map
        knobs = self.knobs
        faulty = knobs["loss"] or knobs["corrupt"] or knobs["duplicate"] or knobs["link_down"]
        frames: list[bytes] = []
        errors = sent = 0
        unpack_from, pack_into = DESC.unpack_from, struct.pack_into
        allowed = self._allowed_buffers(base, size, head, tail, False)
        if allowed is None:
            self._dma_refused()                 # the ring is not the driver's (now)
            return
        while head != tail:
            off = base + head * 16
            addr, ln, _, _ = unpack_from(mem, off)
            if MIN_FRAME <= ln <= MAX_FRAME and (addr, ln) in allowed:
                frame = mem[addr:addr + ln]
                if faulty:
                    frames.extend(self._faults(frame))
                else:
                    frames.append(frame)
                pack_into("<H", mem, off + 10, DONE)
                sent += 1
            else:
                pack_into("<H", mem, off + 10, DONE | ERROR)
                errors += 1
            head = (head + 1) & (size - 1)
        if frames:
            self.backend.send(frames)
        with self.lock:
            self.tx_head = head
            self.counters["TX_FRAMES"] += sent
            self.counters["TX_ERRORS"] += errors
            self.regs["ISR"] |= ISR_TX
        self.raise_irq()

    def _allowed_buffers(self, base: int, size: int, head: int, tail: int,
                         write: bool) -> set[tuple[int, int]] | None:
        """The (addr, length) buffers of descriptors head..tail that the IOMMU allows, or
        None if the ring itself is refused. One kernel check for the ring and all the
        buffers of the batch (the common case); if that is refused, the ring alone, then
        one check per buffer (so only the refused ones fail). Nothing is kept for the next
        batch: its ranges are checked again."""
        mem, bufs = self.ram.map, []
        while head != tail:
            addr, ln, _, _ = DESC.unpack_from(mem, base + head * 16)
            if 0 < ln <= MAX_FRAME and self.ram.check(addr, ln):
                bufs.append((addr, ln))
            head = (head + 1) & (size - 1)
        ring = (base, size * DESC.size, True)
        if not self.dma([ring, *((a, n, write) for a, n in bufs)]):
            return set(bufs)
        if self.dma([ring]):
            return None
        return {(a, n) for a, n in bufs if not self.dma([(a, n, write)])}

    def _dma_refused(self) -> None:
        with self.lock:
            self.fail(ErrCode.DMA_DENIED)
            self.counters["TX_ERRORS"] += 1

    def _faults(self, frame: bytes) -> list[bytes]:
        k, rng = self.knobs, self.rng
        if k["link_down"] or (k["loss"] and rng.random() < k["loss"]):
            return []
        if k["corrupt"] and rng.random() < k["corrupt"]:
            b = bytearray(frame)
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
            frame = bytes(b)
        if k["duplicate"] and rng.random() < k["duplicate"]:
            return [frame, frame]
        return [frame]

    # -- receive (the back end's thread) ------------------------------------------------------
    def receive(self, frames: list[bytes]) -> None:
        mem = self.ram.map
        unpack_from, pack_into = DESC.unpack_from, DESC.pack_into
        got = 0
        with self.lock:
            if not self.regs["CTRL"] & RX_EN or self.knobs["link_down"]:
                self.counters["RX_DROPPED"] += len(frames)
                return
            base, size, tail, head = self.regs["RX_BASE"], self.regs["RX_SIZE"], self.regs["RX_TAIL"], self.rx_head
            mask = size - 1
            end = (head + min(len(frames), (tail - head) & mask)) & mask
            allowed = self._allowed_buffers(base, size, head, end, True)
            if allowed is None:
                self.fail(ErrCode.DMA_DENIED)   # the ring is not the driver's (now)
                self.counters["RX_DROPPED"] += len(frames)
                return
            for f in frames:
                if head == tail:
                    self.counters["RX_DROPPED"] += 1
                    continue
                off = base + head * 16
                addr, cap, _, _ = unpack_from(mem, off)
                n = len(f)
                if n > cap or (addr, cap) not in allowed:
                    pack_into(mem, off, addr, 0, DONE | ERROR, 0)
                    self.counters["RX_DROPPED"] += 1
                else:
                    mem[addr:addr + n] = f
                    pack_into(mem, off, addr, n, DONE, 0)
                    got += 1
                head = (head + 1) & mask
            self.rx_head = head
            self.counters["RX_FRAMES"] += got
            self.regs["ISR"] |= ISR_RX
        self.raise_irq()

    # -- life cycle ---------------------------------------------------------------------------
    def _run(self) -> None:
        self.bind_thread()
        while True:
            if not self.work.get():
                return
            while not self.work.empty():         # coalesce doorbells
                if not self.work.get_nowait():
                    return
            try:
                self._transmit()
            except Exception as e:
                print(f"[nic {self.name}] {type(e).__name__}: {e}", flush=True)

    def start(self) -> None:
        self.backend.open(self.receive, self.bind_thread)
        self.thread = threading.Thread(target=self._run, name=f"nic-tx-{self.name}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.work.put(False)
            self.thread.join(10)
            self.thread = None
        self.backend.close()

    def set_peer(self, peer: str) -> None:
        if not hasattr(self.backend, "set_peer"):
            raise ValueError(f"device {self.name}: the {self.backend.kind} back end has no peer")
        self.backend.set_peer(peer)

    def stats(self) -> dict:
        return {**super().stats(), "mac": f"{self.mac:012x}", **self.backend.info(),
                "rx_head": self.rx_head, "tx_head": self.tx_head,
                **{k.lower(): v for k, v in self.counters.items()},
                "bad_datagrams": self.backend.bad_datagrams}
