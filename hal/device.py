"""The register file every HAL device shares: common registers, error status, fault knobs.

A device is a set of 64-bit registers addressed by index. Indices 0..7 are common to all
devices (ID, STATUS, ERROR, IRQ_LINE, IRQ_CTRL); each device declares its own from 8 up in
`REGS` as name -> (index, "ro"|"rw"|"wo"). Access comes from the HAL's main thread (register
IPC) and from the device's own worker threads; `self.lock` guards the register state.

Contract: `read`/`write` never raise for anything a driver sends. An unknown index or a
write to a read-only register sets ERROR=BAD_REGISTER; a bad value sets ERROR=BAD_VALUE
(or a more precise code) and leaves the register unchanged. Writing ERROR clears it.

Fault knobs (`knobs`, set at run time through the control socket) are validated by name
and type against `KNOBS`; every device has `irq_lost` (probability that an interrupt the
device raises is lost). Randomness comes from `self.rng`, seeded by the `seed` knob, so
a chaos run can be reproduced.
"""
from __future__ import annotations

import random
import threading
from enum import IntEnum, IntFlag
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .iommu import Iommu

if TYPE_CHECKING:
    from .pic import Pic
    from .ram import Ram

MASK64 = (1 << 64) - 1


class Status(IntFlag):
    READY = 0x1      # the device is configured and can take work
    BUSY = 0x2       # a command is in progress
    ERROR = 0x4      # the last operation failed; ERROR says why
    DONE = 0x8       # the last command completed (with or without error)


class ErrCode(IntEnum):
    NONE = 0
    BAD_REGISTER = 1   # no such register, or the register is read-only / write-only
    BAD_VALUE = 2      # a value out of range for the register
    DMA_RANGE = 3      # a DMA address range outside physical RAM
    LBA_RANGE = 4      # a sector range past the end of the disk
    IO_ERROR = 5       # the backing store failed (or a fault knob said so)
    BAD_COMMAND = 6    # an unknown command code
    BUSY = 7           # the device is busy / enabled and can't be reconfigured now
    NO_BUFFERS = 8     # no receive buffer was available
    NOT_ENABLED = 9    # the device (or that part of it) is not enabled
    DMA_DENIED = 10    # the IOMMU refused: memory the device's DMA domain does not map


class IrqCtrl(IntEnum):
    """Values written to IRQ_CTRL: the device's own interrupt line at the controller."""
    MASK = 1
    UNMASK = 2
    EOI = 3


COMMON = {"ID": (0, "ro"), "STATUS": (1, "ro"), "ERROR": (2, "rw"), "IRQ_LINE": (3, "ro"),
          "IRQ_CTRL": (4, "rw")}
NO_LINE = MASK64


class Device:
    kind = "device"
    ID = 0
    REGS: dict[str, tuple[int, str]] = {}
    KNOBS: dict[str, type] = {}
    WORKERS = 0          # worker threads that need an L4 thread of their own (bind_thread)

    def __init__(self, name: str, line: int | None, pic: "Pic", ram: "Ram") -> None:
        self.name = name
        self.line = line
        self.pic = pic
        self.ram = ram
        self.lock = threading.RLock()
        self.status = Status.READY
        self.error = ErrCode.NONE
        self.regs: dict[str, int] = {}          # plain rw registers, by name
        self.all_regs = {**COMMON, **self.REGS}
        self.by_index = {idx: (n, mode) for n, (idx, mode) in self.all_regs.items()}
        self.knob_types: dict[str, type] = {"irq_lost": float, "seed": int, **self.KNOBS}
        self.knobs: dict[str, Any] = {k: t() for k, t in self.knob_types.items()}
        self.rng = random.Random(0)
        self.bind_thread: Callable[[], None] = lambda: None   # set by the machine
        # Its DMA domain (hal/iommu.py); the machine replaces it with an enforcing one when
        # the RAM is the kernel's.
        self.iommu = Iommu(ram, False, lambda: None)

    def dma(self, ranges: Sequence[tuple[int, int, bool]]) -> "ErrCode":
        """May the device access these (address, length, device writes) ranges now?
        NONE, DMA_RANGE (outside RAM) or DMA_DENIED (its domain does not map them)."""
        if not all(self.ram.check(a, n) for a, n, _ in ranges):
            return ErrCode.DMA_RANGE
        return ErrCode.NONE if self.iommu.allowed(ranges) else ErrCode.DMA_DENIED

    # -- the register interface (HAL main thread) -------------------------------------
    def read(self, reg: int) -> int:
        with self.lock:
            entry = self.by_index.get(reg)
            if entry is None or entry[1] == "wo":
                self.fail(ErrCode.BAD_REGISTER)
                return MASK64
            return self.read_reg(entry[0]) & MASK64

    def write(self, reg: int, value: int) -> int:
        with self.lock:
            entry = self.by_index.get(reg)
            if entry is None or entry[1] == "ro":
                self.fail(ErrCode.BAD_REGISTER)
            elif not 0 <= value <= MASK64:
                self.fail(ErrCode.BAD_VALUE)
            else:
                self.write_reg(entry[0], value)
            return int(self.status)

    def read_reg(self, name: str) -> int:
        if name == "ID":
            return self.ID
        if name == "STATUS":
            return int(self.status)
        if name == "ERROR":
            return int(self.error)
        if name == "IRQ_LINE":
            return NO_LINE if self.line is None else self.line
        if name == "IRQ_CTRL":
            return self.pic.line_state(self.line) if self.line is not None else 0
        return self.regs.get(name, 0)

    def write_reg(self, name: str, value: int) -> None:
        if name == "ERROR":
            self.error = ErrCode.NONE
            self.status &= ~Status.ERROR
        elif name == "IRQ_CTRL":
            if self.line is None or value not in (1, 2, 3):
                self.fail(ErrCode.BAD_VALUE)
            else:
                self.pic.control(self.line, IrqCtrl(value))
        else:
            self.regs[name] = value

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "line": self.line,
                "regs": {n: i for n, (i, _) in self.all_regs.items()}}

    # -- for the device's own code ------------------------------------------------------
    def fail(self, code: ErrCode) -> None:
        """Report an error the way hardware does: ERROR register + STATUS.ERROR."""
        self.error = code
        self.status |= Status.ERROR

    def ok(self) -> None:
        self.error = ErrCode.NONE
        self.status &= ~Status.ERROR

    def raise_irq(self) -> None:
        """Raise this device's line at the interrupt controller (any thread)."""
        if self.line is None:
            return
        lost = self.knobs["irq_lost"]
        if lost and self.rng.random() < lost:
            return
        self.pic.raise_line(self.line)

    def set_knobs(self, knobs: dict[str, Any]) -> dict[str, Any]:
        """Check every knob first, then set them all. Raises ValueError naming the knob."""
        for k, v in knobs.items():
            t = self.knob_types.get(k)
            if t is None:
                raise ValueError(f"device {self.name} has no fault knob {k!r} "
                                 f"(knobs: {', '.join(sorted(self.knob_types))})")
            if t is float and not (type(v) in (int, float) and v >= 0):
                raise ValueError(f"device {self.name} knob {k}: must be a number >= 0, got {v!r}")
            if t is int and type(v) is not int:
                raise ValueError(f"device {self.name} knob {k}: must be an integer, got {v!r}")
            if t is bool and type(v) is not bool:
                raise ValueError(f"device {self.name} knob {k}: must be true/false, got {v!r}")
        with self.lock:
            for k, v in knobs.items():
                self.knobs[k] = self.knob_types[k](v)
            if "seed" in knobs:
                self.rng.seed(knobs["seed"])
            return dict(self.knobs)

    def start(self) -> None:
        """Start worker threads (after the HAL is wired)."""

    def stop(self) -> None:
        """Stop worker threads and release host resources."""

    def stats(self) -> dict[str, Any]:
        return {"kind": self.kind, "line": self.line, "status": int(self.status),
                "error": int(self.error), "knobs": dict(self.knobs)}
