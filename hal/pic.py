"""The interrupt controller: lines, mask, pending, in-service, end-of-interrupt.

Each line is delivered through a kernel IRQ object the HAL holds (`irq_slots[line]`); the
driver attached to that IRQ object receives the interrupt as Proto.IRQ IPC. Per line:

    raise:   pending = 1, then try to deliver
    deliver: only if pending, not masked and not in service -> in service, pending = 0,
             kernel irq_trigger
    EOI:     in service = 0, then try to deliver (a raise during service is held)
    unmask:  masked = 0, then try to deliver (a raise while masked is held)

Lines start masked: nothing is delivered before a driver has attached and unmasked.
Several raises while held coalesce into one delivery (a level, not a counter), as on a
real controller. Contract: `raise_line` may be called from any thread; the kernel call
goes through `trigger`, which the machine binds to the calling thread's own L4
connection (one L4 thread per OS thread). State changes happen under `self.lock`, the
kernel call after it is released.

As a device (kind "pic", its own I/O capability, no line of its own) it exposes the
whole controller: see hal/DEVICES.md. Fault knobs: `lost` (probability that a raise is
dropped), `spurious` is injected with the control socket's `irq` op.
"""
from __future__ import annotations

from typing import Callable

from .device import Device, ErrCode, IrqCtrl
from .ram import Ram


class Pic(Device):
    kind = "pic"
    ID = 0x50494301
    REGS = {"LINES": (8, "ro"), "MASK": (9, "rw"), "PENDING": (10, "ro"),
            "INSERVICE": (11, "ro"), "EOI": (12, "wo"), "MASK_LINE": (13, "wo"),
            "UNMASK_LINE": (14, "wo"), "RAISED": (15, "ro"), "DELIVERED": (16, "ro"),
            "LOST": (17, "ro")}
    KNOBS = {"lost": float}

    def __init__(self, name: str, lines: int, ram: Ram,
                 trigger: Callable[[int], None] | None = None) -> None:
        super().__init__(name, None, self, ram)
        if not 1 <= lines <= 64:
            raise ValueError(f"interrupt controller {name}: {lines} lines, must be 1..64")
        self.lines = lines
        self.mask = (1 << lines) - 1        # all masked at reset
        self.pending = 0
        self.inservice = 0
        self.counts = {"RAISED": 0, "DELIVERED": 0, "LOST": 0}
        self.trigger = trigger or (lambda line: None)

    # -- the mechanism ------------------------------------------------------------------
    def raise_line(self, line: int) -> None:
        with self.lock:
            self.counts["RAISED"] += 1
            lost = self.knobs["lost"]
            if lost and self.rng.random() < lost:
                self.counts["LOST"] += 1
                return
            self.pending |= 1 << line
            go = self._take(line)
        if go:
            self.trigger(line)

    def _take(self, line: int) -> bool:
        """Under the lock: may `line` be delivered now? If so, mark it in service."""
        bit = 1 << line
        if self.pending & bit and not (self.mask | self.inservice) & bit:
            self.pending &= ~bit
            self.inservice |= bit
            self.counts["DELIVERED"] += 1
            return True
        return False

    def control(self, line: int, what: IrqCtrl) -> None:
        bit = 1 << line
        with self.lock:
            if what == IrqCtrl.MASK:
                self.mask |= bit
                return
            if what == IrqCtrl.UNMASK:
                self.mask &= ~bit
            else:
                self.inservice &= ~bit
            go = self._take(line)
        if go:
            self.trigger(line)

    def line_state(self, line: int | None) -> int:
        """bit0 masked, bit1 pending, bit2 in service."""
        if line is None:
            return 0
        bit = 1 << line
        return ((self.mask & bit) and 1) | ((self.pending & bit) and 2) | ((self.inservice & bit) and 4)

    # -- the register file ---------------------------------------------------------------
    def read_reg(self, name: str) -> int:
        if name == "LINES":
            return self.lines
        if name == "MASK":
            return self.mask
        if name == "PENDING":
            return self.pending
        if name == "INSERVICE":
            return self.inservice
        if name in self.counts:
            return self.counts[name]
        return super().read_reg(name)

    def write_reg(self, name: str, value: int) -> None:
        if name in ("EOI", "MASK_LINE", "UNMASK_LINE"):
            if not 0 <= value < self.lines:
                self.fail(ErrCode.BAD_VALUE)
                return
            what = {"EOI": IrqCtrl.EOI, "MASK_LINE": IrqCtrl.MASK, "UNMASK_LINE": IrqCtrl.UNMASK}[name]
            self.control(value, what)
        elif name == "MASK":
            if value >> self.lines:
                self.fail(ErrCode.BAD_VALUE)
                return
            unmasked = self.mask & ~value
            self.mask = value
            for line in range(self.lines):
                if unmasked >> line & 1:
                    self.control(line, IrqCtrl.UNMASK)
        else:
            super().write_reg(name, value)

    def stats(self) -> dict:
        return {**super().stats(), "mask": self.mask, "pending": self.pending,
                "inservice": self.inservice, **{k.lower(): v for k, v in self.counts.items()}}
