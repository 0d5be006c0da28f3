"""The output sink of `l4run linux run` (and of `--init`): no terminal.

A `Console` is a sink for fds 1 and 2 (and a source of EOF for fd 0): the bytes are kept
for whoever asked for them (`l4run linux run` collects the output of its command) and
copied, a line at a time, to the personality's task log. It is no terminal (TCGETS answers
ENOTTY, so programs see a pipe-like stdout); the terminal of `l4run console` is `tty.Tty`.

Ownership: the personality's single serving thread.
"""
from __future__ import annotations

import sys


class Console:
    def __init__(self, name: str, echo: bool = True) -> None:
        self.name = name
        self.out = bytearray()
        self.echo = echo
        self._line = bytearray()

    def write(self, data: bytes) -> int:
        self.out += data
        if self.echo:
            self._line += data
            while b"\n" in self._line:
                line, _, rest = bytes(self._line).partition(b"\n")
                print(f"[{self.name}] {line.decode(errors='replace')}", file=sys.stderr,
                      flush=True)
                self._line = bytearray(rest)
        return len(data)

    def can_read(self) -> bool:
        return True            # EOF is always there

    def read(self, n: int) -> bytes:
        return b""             # no terminal input yet: EOF
