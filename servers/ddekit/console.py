"""DDEKit print, panic and assert.

    console.print_(text)             # one line on the task's log (stdout), flushed
    console.printf(fmt, *args)       # printf-style (`%` formatting)
    console.panic(fmt, *args)        # prints "ddekit: panic: ..." and a stack, raises Panic
    console.assert_(cond, fmt="", *args)    # panic unless cond

Contract: a panic ends the driver task. `Panic` is a BaseException, so a driver's
`except Exception` does not swallow it; escaping the main thread it ends the task with
a non-zero status (the supervisor's restart policy decides what follows), escaping another
DDEKit thread it ends the process at once with PANIC_STATUS.
"""
from __future__ import annotations

import sys
import traceback
from typing import Any

PANIC_STATUS = 70


class Panic(BaseException):
    """The driver found itself in a state it cannot go on from."""


def print_(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def printf(fmt: str, *args: Any) -> None:
    print_(fmt % args if args else fmt)


def panic(fmt: str, *args: Any) -> None:
    msg = fmt % args if args else fmt
    print_(f"ddekit: panic: {msg}")
    traceback.print_stack(limit=8, file=sys.stdout)
    sys.stdout.flush()
    raise Panic(msg)


def assert_(cond: Any, fmt: str = "", *args: Any) -> None:
    if not cond:
        panic("assertion failed" + (f": {fmt % args if args else fmt}" if fmt else ""))
