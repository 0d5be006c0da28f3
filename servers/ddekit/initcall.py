"""DDEKit init calls: functions registered at a level, run once in level order.

    init.register(init.DEVICE, probe_my_device)     # any int level; names below
    init.run_all() -> [(level, name, result)]        # every call not yet run, in order

Like Linux's initcalls: lower levels first (CORE 1 .. LATE 7, module_init is DEVICE);
within a level, in the order registered. Each call runs once: a later `run_all` runs only
calls registered since. Contract: an exception in a call stops `run_all` and propagates
(the calls after it stay pending), as a failing initcall does not go unnoticed.
"""
from __future__ import annotations

import itertools
import threading
from typing import Any, Callable

CORE, POSTCORE, ARCH, SUBSYS, FS, DEVICE, LATE = 1, 2, 3, 4, 5, 6, 7

_lock = threading.Lock()
_seq = itertools.count()
_pending: list[tuple[int, int, str, Callable[[], Any]]] = []     # guarded by _lock


def register(level: int, fn: Callable[[], Any], name: str | None = None) -> Callable[[], Any]:
    """Register `fn` (also usable as a decorator through functools.partial)."""
    label = name or str(getattr(fn, "__name__", repr(fn)))
    with _lock:
        _pending.append((int(level), next(_seq), label, fn))
    return fn


def run_all() -> list[tuple[int, str, Any]]:
    done: list[tuple[int, str, Any]] = []
    while True:
        with _lock:
            if not _pending:
                return done
            _pending.sort(key=lambda e: (e[0], e[1]))
            level, _, name, fn = _pending.pop(0)
        done.append((level, name, fn()))


def pending() -> list[str]:
    with _lock:
        return [name for _, _, name, _ in sorted(_pending, key=lambda e: (e[0], e[1]))]
