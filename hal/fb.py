"""The framebuffer: width x height 32-bit pixels in physical RAM, mode registers, screenshots.

Registers (from 8): WIDTH, HEIGHT (1..MAX_WIDTH/MAX_HEIGHT), STRIDE (bytes per line,
read-only: WIDTH*4), BPP (read-only: 32), BASE (physical address of the first pixel, 4-byte
aligned), CTRL (bit0 ENABLE), MAX_WIDTH, MAX_HEIGHT (read-only). Pixel format XRGB8888,
little-endian: bytes B, G, R, X at BASE + y*STRIDE + x*4.

ENABLE is accepted only if the mode is valid and the whole frame [BASE, BASE+STRIDE*HEIGHT)
lies in RAM (else BAD_VALUE / DMA_RANGE, and ENABLE stays clear); changing the mode while
enabled is re-checked the same way. The framebuffer raises no interrupt.

`screenshot()` (control socket; `l4run screenshot`) renders what is on screen now as a PNG.
"""
from __future__ import annotations

import io

from .device import Device, ErrCode
from .pic import Pic
from .ram import Ram

ENABLE = 0x1


class Framebuffer(Device):
    kind = "fb"
    ID = 0x46420001
    REGS = {"WIDTH": (8, "rw"), "HEIGHT": (9, "rw"), "STRIDE": (10, "ro"), "BPP": (11, "ro"),
            "BASE": (12, "rw"), "CTRL": (13, "rw"), "MAX_WIDTH": (14, "ro"), "MAX_HEIGHT": (15, "ro")}

    def __init__(self, name: str, line: int | None, pic: Pic, ram: Ram, max_width: int = 1024,
                 max_height: int = 768) -> None:
        super().__init__(name, line, pic, ram)
        if not (1 <= max_width <= 8192 and 1 <= max_height <= 8192):
            raise ValueError(f"device {name}: mode {max_width}x{max_height} outside 1..8192")
        self.max_width, self.max_height = max_width, max_height
        self.regs.update(WIDTH=max_width, HEIGHT=max_height, BASE=0, CTRL=0)

    def read_reg(self, name: str) -> int:
        if name == "STRIDE":
            return self.regs["WIDTH"] * 4
        if name == "BPP":
            return 32
        if name == "MAX_WIDTH":
            return self.max_width
        if name == "MAX_HEIGHT":
            return self.max_height
        return super().read_reg(name)

    def _valid(self, mode: dict[str, int]) -> ErrCode:
        if not (1 <= mode["WIDTH"] <= self.max_width and 1 <= mode["HEIGHT"] <= self.max_height):
            return ErrCode.BAD_VALUE
        if mode["BASE"] % 4 or mode["CTRL"] & ~ENABLE:
            return ErrCode.BAD_VALUE
        if mode["CTRL"] & ENABLE:
            return self.dma([(mode["BASE"], mode["WIDTH"] * 4 * mode["HEIGHT"], False)])
        return ErrCode.NONE

    def write_reg(self, name: str, value: int) -> None:
        if name in ("WIDTH", "HEIGHT", "BASE", "CTRL"):
            mode = {**self.regs, name: value}
            err = self._valid(mode)
            if err:
                self.fail(err)
            else:
                self.regs[name] = value
        else:
            super().write_reg(name, value)

    def pixels(self) -> dict:
        """The screen now as raw XRGB8888 bytes (w * 4 a line); disabled: all zero."""
        with self.lock:
            w, h, base, on = self.regs["WIDTH"], self.regs["HEIGHT"], self.regs["BASE"], self.regs["CTRL"] & ENABLE
            data = self.ram.read(base, w * h * 4) if on else bytes(w * h * 4)
        return {"data": bytes(data), "width": w, "height": h, "enabled": bool(on)}

    def screenshot(self) -> dict:
        """The screen now as PNG bytes; a disabled framebuffer shows black."""
        from PIL import Image
        with self.lock:
            w, h, base, on = self.regs["WIDTH"], self.regs["HEIGHT"], self.regs["BASE"], self.regs["CTRL"] & ENABLE
            data = self.ram.read(base, w * h * 4) if on else None
        if data is None:
            img = Image.new("RGB", (w, h))
        else:
            img = Image.frombuffer("RGB", (w, h), data, "raw", "BGRX", w * 4, 1)
        out = io.BytesIO()
        img.save(out, format="PNG")
        return {"png": out.getvalue(), "width": w, "height": h, "enabled": bool(on)}
