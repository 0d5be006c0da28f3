"""Native runs for the differential tests: the host program starts as the personality
starts its own processes, so the two sides see the same signal state.

The personality's loader sets every signal to its default action (but those an execve
keeps ignored); a test process may inherit ignored signals from whatever started pytest (a
background job of a non-interactive shell ignores SIGINT and SIGQUIT, and POSIX shells then
refuse to trap them), and may sit in an orphaned process group (where the host discards
SIGTSTP with its default action). `run` gives the native program default dispositions and
a process group of its own in pytest's session (not orphaned: its parent is in another
group of the same session).
"""
from __future__ import annotations

import signal
import subprocess
from typing import Any


def _defaults() -> None:
    for sig in range(1, signal.NSIG):
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def run(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
    """`subprocess.run(argv, **kw)` with default signal dispositions, an empty mask and a
    process group of its own."""
    return subprocess.run(argv, preexec_fn=_defaults, process_group=0, **kw)
