"""Pipes: a bounded byte buffer between reader and writer ends, with Linux's EOF and EPIPE.

Contract: a read of an empty pipe with writers left, or a write to a full one with readers
left, answers `BLOCK`: the system-call layer keeps the caller's reply capability and
retries the call when something changed (`Personality.wake`), so other processes go on.
A read with no writer left is EOF (b""); a write with no reader left is -EPIPE (SIGPIPE is
not delivered yet: docs/L4LINUX.md, what is left).

Ownership: the personality's single serving thread.
"""
from __future__ import annotations

import errno
from typing import Any

CAPACITY = 65536
BLOCK: Any = object()          # the call must wait (answered later)


class Pipe:
    def __init__(self) -> None:
        self.buf = bytearray()
        self.readers = 0
        self.writers = 0

    def read(self, n: int) -> Any:
        if self.buf:
            data = bytes(self.buf[:n])
            del self.buf[:n]
            return data
        return b"" if self.writers == 0 else BLOCK

    def write(self, data: bytes) -> Any:
        if self.readers == 0:
            return -errno.EPIPE
        room = CAPACITY - len(self.buf)
        if room <= 0:
            return BLOCK
        self.buf += data[:room]
        return min(len(data), room)
