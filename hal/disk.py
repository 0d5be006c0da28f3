"""The block disk: an image file of 512-byte sectors, DMA to/from RAM, completion interrupt.

Two ways to submit work, both handled by one worker thread per disk, in order:

1. Registers: LBA, COUNT, DMA_ADDR, then CMD (1 READ, 2 WRITE, 3 FLUSH). STATUS.BUSY while it
   runs; then STATUS.DONE (and STATUS.ERROR + ERROR on failure) and the completion interrupt.
2. A request queue in RAM (like virtio/NVMe): Q_BASE (32-byte aligned), Q_SIZE (entries, a
   power of two 1..1024), then the driver fills entries and writes Q_TAIL (the doorbell).
   The device works through the entries from Q_HEAD to Q_TAIL, writes each entry's status,
   advances Q_HEAD and raises one interrupt each time the queue runs empty. A driver may
   also poll the status words in RAM (set them to a non-zero "pending" value when it
   submits) and keep the queue full, doorbell after doorbell, without waiting.
   Entry (32 bytes, little-endian): u32 op, u32 count, u64 lba, u64 addr, u32 status, u32 0.

Checks before acting: COUNT 1..MAX_SECTORS, the sector range inside the disk (else
LBA_RANGE), the DMA range inside RAM (else DMA_RANGE), a known command (else BAD_COMMAND).
FLUSH is fsync of the image. Adjacent queued requests in one direction are merged into one
host I/O (pwritev/preadv), as a block layer does; each keeps its own status. Fault knobs: `error_rate` (probability a request fails with
IO_ERROR), `latency_ms` (added to each request). Not a fault: `trace` (N > 0: `stats` shows
the last N queue jobs' stage times — doorbell, worker start, IOMMU check done, I/O done,
interrupt raised — host monotonic seconds, kept for the last TRACE_KEPT jobs always).

Real time: while the worker thread runs in a real-time class (the CPU reservation manager
boosts the HAL for a reserved job, servers/rt/server.py), the HAL's interpreter switch
interval is cut to RT_SWITCH_S: each of a request's wake-ups (the latency's sleep, the DMA
check's answer, the interrupt's delivery) waits for the interpreter, by default up to 5 ms
whenever another device's thread (the NIC's, under a network flood) is running Python —
measured: a 2 ms request took 2.7-4.4 ms on average and up to 33 ms.
"""
from __future__ import annotations

import os
import queue
import struct
import sys
import threading
import time
from collections import deque

from .device import Device, ErrCode, Status
from .pic import Pic
from .ram import DmaError, Ram

SECTOR = 512
MAX_SECTORS = 2048            # 1 MiB per request
MAX_QUEUE = 1024
MERGE_REQS = 256              # at most this many queued requests merged into one host I/O
MERGE_SECTORS = 8192          # ... and at most 4 MiB
ENTRY = struct.Struct("<IIQQII")
READ, WRITE, FLUSH = 1, 2, 3
RT_SWITCH_S = 0.0005          # the interpreter's switch interval while the worker is real-time
REALTIME = (os.SCHED_FIFO, os.SCHED_RR, 6)   # 6: SCHED_DEADLINE (the rt manager's path)
TRACE_KEPT = 40_000           # queue jobs whose stage times are kept (the `trace` knob shows them)


class Disk(Device):
    kind = "disk"
    ID = 0x4449534B
    WORKERS = 1
    REGS = {"SECTORS": (8, "ro"), "LBA": (9, "rw"), "COUNT": (10, "rw"), "DMA_ADDR": (11, "rw"),
            "CMD": (12, "wo"), "Q_BASE": (13, "rw"), "Q_SIZE": (14, "rw"), "Q_TAIL": (15, "rw"),
            "Q_HEAD": (16, "ro"), "COMPLETED": (17, "ro")}
    KNOBS = {"error_rate": float, "latency_ms": float, "trace": int}

    def __init__(self, name: str, line: int | None, pic: Pic, ram: Ram, image: str, size: int = 0) -> None:
        super().__init__(name, line, pic, ram)
        self.image = image
        if not os.path.exists(image):
            if size <= 0:
                raise ValueError(f"device {name}: image {image} does not exist and no size was given")
        self.fd = os.open(image, os.O_RDWR | os.O_CREAT, 0o644)
        have = os.fstat(self.fd).st_size
        if have < size:
            os.ftruncate(self.fd, size)
            have = size
        if have < SECTOR:
            os.close(self.fd)
            raise ValueError(f"device {name}: image {image} is smaller than one sector")
        self.sectors = have // SECTOR
        self.q_head = 0
        self.completed = 0
        self.latched = (0, 0, 0, 0)
        self.work: queue.Queue[str | None] = queue.Queue()
        self.thread: threading.Thread | None = None
        # per queue job (the worker's): [doorbell, start, checked, done, irq raised] (host
        # monotonic s) and its entries; `stats` shows the last `trace` (knob) of them
        self.door_t = 0.0                    # the last doorbell's time (main thread)
        self._checked = 0.0                  # the current job's IOMMU check done (worker)
        self.trace: deque[tuple[float, ...]] = deque(maxlen=TRACE_KEPT)

    # -- registers --------------------------------------------------------------------
    def read_reg(self, name: str) -> int:
        if name == "SECTORS":
            return self.sectors
        if name == "Q_HEAD":
            return self.q_head
        if name == "COMPLETED":
            return self.completed
        return super().read_reg(name)

    def write_reg(self, name: str, value: int) -> None:
        if name == "CMD":
            self._command(value)
        elif name in ("Q_BASE", "Q_SIZE"):
            if self.regs.get("Q_TAIL", 0) != self.q_head:
                self.fail(ErrCode.BUSY)
                return
            base = value if name == "Q_BASE" else self.regs.get("Q_BASE", 0)
            size = value if name == "Q_SIZE" else self.regs.get("Q_SIZE", 0)
            if name == "Q_BASE" and value % ENTRY.size:
                self.fail(ErrCode.BAD_VALUE)
            elif name == "Q_SIZE" and not (1 <= value <= MAX_QUEUE and value & (value - 1) == 0):
                self.fail(ErrCode.BAD_VALUE)
            elif size and (err := self.dma([(base, size * ENTRY.size, True)])):
                self.fail(err)
            else:
                self.regs[name] = value
                self.regs["Q_TAIL"] = self.q_head = 0
        elif name == "Q_TAIL":
            size = self.regs.get("Q_SIZE", 0)
            if not size or not self.ram.check(self.regs.get("Q_BASE", 0), size * ENTRY.size):
                self.fail(ErrCode.NOT_ENABLED)
            elif value >= size:
                self.fail(ErrCode.BAD_VALUE)
            else:
                self.regs["Q_TAIL"] = value
                self.status |= Status.BUSY
                self.door_t = time.monotonic()
                self.work.put("queue")
        else:
            super().write_reg(name, value)

    def _command(self, cmd: int) -> None:
        """Latch LBA/COUNT/DMA_ADDR with the command; the worker runs it."""
        if self.status & Status.BUSY:
            self.fail(ErrCode.BUSY)
            return
        self.status &= ~(Status.DONE | Status.ERROR)
        self.error = ErrCode.NONE
        self.status |= Status.BUSY
        r = self.regs
        self.latched = (cmd, r.get("LBA", 0), r.get("COUNT", 0), r.get("DMA_ADDR", 0))
        self.work.put("cmd")

    # -- the work (worker thread) -------------------------------------------------------
    def check(self, op: int, lba: int, count: int, addr: int) -> ErrCode:
        """Check one request before touching anything."""
        if op == FLUSH:
            return ErrCode.NONE
        if op not in (READ, WRITE):
            return ErrCode.BAD_COMMAND
        if not 1 <= count <= MAX_SECTORS:
            return ErrCode.BAD_VALUE
        if lba < 0 or lba + count > self.sectors:
            return ErrCode.LBA_RANGE
        if not self.ram.check(addr, count * SECTOR):
            return ErrCode.DMA_RANGE
        return ErrCode.NONE

    def execute(self, op: int, lba: int, count: int, addr: int, checked: bool = False,
                t0: float | None = None) -> ErrCode:
        """One request; its DMA range goes through the IOMMU unless the batch was `checked`.
        The latency knob's time counts from `t0` (the request's start: the IOMMU check, a
        call to the kernel, is made during the latency, not added to it)."""
        t0 = time.monotonic() if t0 is None else t0
        err = self.check(op, lba, count, addr)
        if not err and not checked and op != FLUSH:
            err = self.dma([(addr, count * SECTOR, op == READ)])
        if err:
            return err
        knobs = self.knobs
        if knobs["latency_ms"]:
            left = knobs["latency_ms"] / 1000 - (time.monotonic() - t0)
            if left > 0:
                time.sleep(left)
        if knobs["error_rate"] and self.rng.random() < knobs["error_rate"]:
            return ErrCode.IO_ERROR
        try:
            if op == FLUSH:
                os.fsync(self.fd)
                return ErrCode.NONE
            n = count * SECTOR
            buf = self.ram.view(addr, n)
            if op == READ:
                got = os.preadv(self.fd, [buf], lba * SECTOR)
                if got < n:
                    buf[got:] = bytes(n - got)
            else:
                done = 0
                while done < n:
                    done += os.pwrite(self.fd, buf[done:], lba * SECTOR + done)
            return ErrCode.NONE
        except (OSError, DmaError):
            return ErrCode.IO_ERROR

    def _run_command(self) -> None:
        op, lba, count, addr = self.latched
        err = self.execute(op, lba, count, addr)
        with self.lock:
            self.completed += 1
            self.status = (self.status & ~Status.BUSY) | Status.DONE
            if err:
                self.fail(err)
        self.raise_irq()

    def _next_batch(self, base: int, size: int, head: int, tail: int) -> tuple[list[tuple[int, ...]], int]:
        """Entries from `head`: one, or a run of valid same-direction requests on adjacent
        sectors (merged into one host I/O, as a block layer merges), when no fault knob is set."""
        mem = self.ram.map
        merge = not (self.knobs["error_rate"] or self.knobs["latency_ms"])
        batch: list[tuple[int, ...]] = []
        total = 0
        h = head
        while h != tail and len(batch) < MERGE_REQS:
            off = base + h * ENTRY.size
            op, count, lba, addr, _, _ = ENTRY.unpack_from(mem, off)
            ok = merge and op in (READ, WRITE) and not self.check(op, lba, count, addr)
            if batch:
                prev = batch[-1]
                if not ok or op != prev[1] or lba != prev[2] + prev[3] or total + count > MERGE_SECTORS:
                    break
            batch.append((off, op, lba, count, addr))
            total += count
            h = (h + 1) % size
            if not ok:
                break
        return batch, h

    def _execute_batch(self, batch: list[tuple[int, ...]],
                       ring: tuple[int, int]) -> list[ErrCode] | None:
        """The batch, after one IOMMU check of the ring and every buffer in it (if that is
        refused: request by request, so only the refused ones fail). None: the ring itself
        is refused (nothing is done, and nothing is written into it)."""
        t0 = time.monotonic()
        ranges = [(ring[0], ring[1], True)] + [(addr, count * SECTOR, op == READ)
                                               for _, op, _, count, addr in batch
                                               if op in (READ, WRITE) and 1 <= count <= MAX_SECTORS]
        denied = self.dma(ranges)
        if not self._checked:
            self._checked = time.monotonic()
        if denied:
            if self.dma(ranges[:1]):
                return None
            return [self.execute(op, lba, count, addr) for _, op, lba, count, addr in batch]
        if len(batch) == 1:
            _, op, lba, count, addr = batch[0]
            return [self.execute(op, lba, count, addr, checked=True, t0=t0)]
        views = [self.ram.view(addr, count * SECTOR) for _, _, _, count, addr in batch]
        n = sum(len(v) for v in views)
        pos = batch[0][2] * SECTOR
        try:
            got = (os.pwritev if batch[0][1] == WRITE else os.preadv)(self.fd, views, pos)
        except OSError:
            got = -1
        if got == n:
            return [ErrCode.NONE] * len(batch)
        return [self.execute(op, lba, count, addr, checked=True)     # a short transfer: one by one
                for _, op, lba, count, addr in batch]

    def _run_queue(self) -> None:
        door, start = self.door_t, time.monotonic()
        self._checked = 0.0
        done = 0
        while True:
            with self.lock:
                size, base, tail = self.regs.get("Q_SIZE", 0), self.regs.get("Q_BASE", 0), self.regs.get("Q_TAIL", 0)
                head = self.q_head
            if not size or head == tail:
                break
            batch, head = self._next_batch(base, size, head, tail)
            mem = self.ram.map
            errs = self._execute_batch(batch, (base, size * ENTRY.size))
            if errs is None:                    # the queue is not the driver's memory (now)
                with self.lock:
                    self.status &= ~Status.BUSY
                    self.fail(ErrCode.DMA_DENIED)
                self.raise_irq()
                return
            for (off, *_), err in zip(batch, errs):
                # one aligned 32-bit store (struct.pack_into would zero the word first,
                # and a polling driver could read that 0 as "done, no error")
                mem[off + 24:off + 28] = int(err).to_bytes(4, "little")
            with self.lock:
                self.q_head = head
                self.completed += len(batch)
            done += len(batch)
        if not done:                # an extra doorbell for entries already done
            return
        with self.lock:
            self.status = (self.status & ~Status.BUSY) | Status.DONE
        io = time.monotonic()
        self.raise_irq()
        self.trace.append((door, start, self._checked, io, time.monotonic(), done))

    def _run(self) -> None:
        self.bind_thread()
        while True:
            job = self.work.get()
            if job is None:
                return
            if sys.getswitchinterval() > RT_SWITCH_S and os.sched_getscheduler(0) & ~0x40000000 in REALTIME:
                sys.setswitchinterval(RT_SWITCH_S)
            try:
                if job == "cmd":
                    self._run_command()
                else:
                    self._run_queue()
            except Exception as e:              # never let the device thread die
                with self.lock:
                    self.status &= ~Status.BUSY
                    self.fail(ErrCode.IO_ERROR)
                print(f"[disk {self.name}] {type(e).__name__}: {e}", flush=True)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"disk-{self.name}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.work.put(None)
            self.thread.join(10)
            self.thread = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def stats(self) -> dict:
        out = {**super().stats(), "sectors": self.sectors, "image": self.image,
               "completed": self.completed}
        if self.knobs["trace"] > 0:
            keep = list(self.trace)[-self.knobs["trace"]:]
            out["trace"] = {"fields": ["doorbell", "start", "checked", "done", "irq", "entries"],
                            "rows": [[round(v, 6) for v in row] for row in keep]}
        return out
