"""The timer: periodic or one-shot expiry with an interrupt.

Registers (from 8): CTRL (bit0 ENABLE, bit1 PERIODIC), PERIOD_US (1..3_600_000_000),
TICKS (expiries so far, read-only), NOW_US (the machine's monotonic clock, read-only).
Writing CTRL with ENABLE arms the timer from now; a one-shot timer clears ENABLE when it
fires. Each expiry raises the timer's line (expiries while the line is held coalesce, the
TICKS register counts them all). PERIOD_US out of range, or ENABLE with no period, is
BAD_VALUE and changes nothing.

One worker thread per timer sleeps on a condition until the next deadline.
"""
from __future__ import annotations

import threading
import time

from .device import Device, ErrCode
from .pic import Pic
from .ram import Ram

ENABLE = 0x1
PERIODIC = 0x2
MAX_PERIOD_US = 3_600_000_000


class Timer(Device):
    kind = "timer"
    ID = 0x54494D52
    WORKERS = 1
    REGS = {"CTRL": (8, "rw"), "PERIOD_US": (9, "rw"), "TICKS": (10, "ro"), "NOW_US": (11, "ro")}

    def __init__(self, name: str, line: int | None, pic: Pic, ram: Ram) -> None:
        super().__init__(name, line, pic, ram)
        self.cond = threading.Condition(self.lock)
        self.deadline: float | None = None     # monotonic seconds of the next expiry
        self.ticks = 0
        self.running = False
        self.thread: threading.Thread | None = None

    def read_reg(self, name: str) -> int:
        if name == "TICKS":
            return self.ticks
        if name == "NOW_US":
            return int(time.monotonic() * 1e6)
        return super().read_reg(name)

    def write_reg(self, name: str, value: int) -> None:
        if name == "PERIOD_US":
            if not 1 <= value <= MAX_PERIOD_US:
                self.fail(ErrCode.BAD_VALUE)
                return
            self.regs[name] = value
        elif name == "CTRL":
            if value & ~(ENABLE | PERIODIC) or (value & ENABLE and not self.regs.get("PERIOD_US")):
                self.fail(ErrCode.BAD_VALUE)
                return
            self.regs[name] = value
            self.deadline = (time.monotonic() + self.regs["PERIOD_US"] / 1e6) if value & ENABLE else None
            self.cond.notify()
        else:
            super().write_reg(name, value)

    def start(self) -> None:
        self.running = True
        self.thread = threading.Thread(target=self._run, name=f"timer-{self.name}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        with self.lock:
            self.running = False
            self.cond.notify()
        if self.thread is not None:
            self.thread.join(5)

    def _run(self) -> None:
        self.bind_thread()
        while True:
            with self.lock:
                while self.running:
                    now = time.monotonic()
                    if self.deadline is not None and now >= self.deadline:
                        break
                    self.cond.wait(None if self.deadline is None else self.deadline - now)
                if not self.running:
                    return
                self.ticks += 1
                ctrl = self.regs.get("CTRL", 0)
                if ctrl & PERIODIC:
                    period = self.regs["PERIOD_US"] / 1e6
                    assert self.deadline is not None
                    self.deadline += period
                    if self.deadline < time.monotonic():        # fell behind: skip, don't storm
                        self.deadline = time.monotonic() + period
                else:
                    self.regs["CTRL"] = ctrl & ~ENABLE
                    self.deadline = None
            self.raise_irq()

    def stats(self) -> dict:
        return {**super().stats(), "ticks": self.ticks}
