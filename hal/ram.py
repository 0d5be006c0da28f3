"""Physical RAM as the HAL's devices see it: one mmap'd file, addresses are byte offsets.

Contract: every DMA access names a physical range [addr, addr+length); `view()` answers a
memoryview of exactly that range or raises `DmaError` if any byte lies outside RAM (a device
turns that into an error status; the HAL keeps running). Nothing else of the HAL touches
the mapping.

The kernel owns physical RAM: one memfd per frame (kernel/core/frames.py, docs/MEMORY.md).
In a system the HAL is the hardware, so it reaches every frame: the launcher makes its task
the machine's DMA engine (MEM_DMA, the kernel capability, before the HAL's process starts)
and `Ram.attach(l4)` joins through the HAL's memory channel, which then carries every frame,
mapped into one contiguous view (`kernel.user.vm.Attachment`). No task can ask for that:
MEM_DMA needs the kernel capability. DMA addresses are the kernel's physical addresses and
drivers reach the same frames through their address spaces (only those they were given).
On its own (e.g. in tests) the HAL runs on a file instead: a path that does not exist is
created with the given size and removed again by `close()`; an open descriptor works too.
"""
from __future__ import annotations

import mmap
import os
from typing import Any


class DmaError(Exception):
    """A DMA range lies (partly) outside physical RAM."""


class Ram:
    """Physical RAM of the machine. Owned by the HAL process; thread-safe for disjoint ranges."""

    @classmethod
    def attach(cls, l4: Any) -> "Ram":
        """The kernel's RAM, every frame, through this DMA task's memory channel."""
        from kernel.user.vm import Attachment
        ram: Ram = cls.__new__(cls)
        att = Attachment(l4)
        if len(att.held) < att.frames:
            att.close()
            raise ValueError("this task is not the machine's DMA engine (MEM_DMA)")
        ram.path, ram.created, ram._own_fd, ram.fd = None, False, False, -1
        ram.att, ram.size, ram.map, ram.mv = att, att.size, att.ram, att.ram
        return ram

    def __init__(self, path: str | None = None, size: int = 0, *, fd: int | None = None) -> None:
        self.path = path
        self.created = False
        self.att: Any = None
        self.map: Any
        if fd is None:
            if path is None:
                raise ValueError("Ram needs a path or an fd")
            if not os.path.exists(path):
                if size <= 0:
                    raise ValueError(f"RAM file {path} does not exist and no size was given")
                self.created = True
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            self._own_fd = True
        else:
            self._own_fd = False
        self.fd = fd
        have = os.fstat(fd).st_size
        if size <= 0:
            size = have
        if size <= 0 or size % mmap.PAGESIZE:
            raise ValueError(f"RAM size {size} must be a positive multiple of {mmap.PAGESIZE}")
        if have < size:
            os.ftruncate(fd, size)
        self.size = size
        self.map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.mv = memoryview(self.map)

    def check(self, addr: int, length: int) -> bool:
        return 0 <= addr and 0 <= length and addr + length <= self.size

    def view(self, addr: int, length: int) -> memoryview:
        """The range [addr, addr+length) of RAM, or DmaError naming the range."""
        if not self.check(addr, length):
            raise DmaError(f"DMA range {addr:#x}+{length:#x} outside RAM of {self.size:#x} bytes")
        return self.mv[addr:addr + length]

    def read(self, addr: int, length: int) -> bytes:
        return bytes(self.view(addr, length))

    def write(self, addr: int, data: bytes | memoryview) -> None:
        self.view(addr, len(data))[:] = data

    def close(self) -> None:
        if self.att is not None:
            self.att.close()
            return
        try:
            self.mv.release()
            self.map.close()
        except BufferError:
            pass            # a view is still exported; the process is ending anyway
        if self._own_fd:
            os.close(self.fd)
        if self.created and self.path and os.path.exists(self.path):
            os.unlink(self.path)
