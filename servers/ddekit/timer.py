"""DDEKit timers: handlers called at an absolute time in jiffies, in a timer thread.

    HZ                                   # jiffies per second (250)
    timer.jiffies() -> int               # since DDEKit was loaded, from the monotonic clock
    tid = timer.add(fn, arg, expires)    # fn(arg) once jiffies() >= expires
    timer.delete(tid) -> bool            # False if it fired (or was deleted) already
    timer.pending(tid) -> bool

Handlers run one at a time in the DDEKit thread "timer" (an L4 thread of its own, so a
handler may touch devices and servers), in order of expiry; timers with the same expiry run
in the order they were added. A timer added with an expiry in the past runs at once. The
clock is the host's monotonic clock (the HAL's timer device keeps the same clock, NOW_US):
jiffies = floor((monotonic - start) * HZ), never going back.

Contracts: `delete` from a handler (even of a timer that is due) is honoured for any timer
that has not started running. The thread starts with an `add` when none runs and ends after
IDLE_S without timers (or at `ddekit.stop()`), so an idle driver holds no timer thread. An exception in a handler is printed; later timers still run.
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
import traceback
from typing import Any, Callable

from . import thread as _thread

HZ = 250
_start = time.monotonic()
_cond = threading.Condition()
_heap: list[tuple[int, int]] = []                    # (expires, id); guarded by _cond
_timers: dict[int, tuple[Callable[[Any], Any], Any]] = {}   # id -> (fn, arg); guarded by _cond
_ids = itertools.count(1)
_worker: _thread.Thread | None = None               # guarded by _cond
_running = False                                    # a worker runs or starts; _cond
_stopping = False
IDLE_S = 0.2            # an idle worker ends after this long (its L4 thread goes back)


def jiffies() -> int:
    return int((time.monotonic() - _start) * HZ)


def _time_of(j: int) -> float:
    return _start + j / HZ


def add(fn: Callable[[Any], Any], arg: Any, expires: int) -> int:
    global _worker, _stopping, _running
    with _cond:
        tid = next(_ids)
        _timers[tid] = (fn, arg)
        heapq.heappush(_heap, (int(expires), tid))
        start = not _running
        _running = True
        _stopping = False
        _cond.notify()
    if start:
        t = _thread.create("timer", _run)
        with _cond:
            _worker = t
    return tid


def delete(tid: int) -> bool:
    with _cond:
        return _timers.pop(tid, None) is not None     # its heap entry is skipped later


def pending(tid: int) -> bool:
    with _cond:
        return tid in _timers


def _run(_: Any) -> None:
    global _running
    while True:
        with _cond:
            idle_since: float | None = None
            while True:
                if _stopping:
                    _running = False
                    return
                while _heap and _heap[0][1] not in _timers:
                    heapq.heappop(_heap)                # deleted
                if not _heap:
                    now = time.monotonic()
                    idle_since = now if idle_since is None else idle_since
                    if now - idle_since >= IDLE_S:
                        _running = False                # the next add starts a new worker
                        return
                    _cond.wait(IDLE_S)
                    continue
                delay = _time_of(_heap[0][0]) - time.monotonic()
                if delay <= 0:
                    _, tid = heapq.heappop(_heap)
                    fn, arg = _timers.pop(tid)
                    break
                _cond.wait(delay)
        try:
            fn(arg)
        except Exception:               # noqa: BLE001 - one timer must not stop the others
            print(f"ddekit: timer handler {fn!r} failed", flush=True)
            traceback.print_exc()


def stop() -> None:
    """End the timer thread; timers not yet run are dropped (ddekit.stop calls this)."""
    global _worker, _stopping
    with _cond:
        _stopping = True
        _heap.clear()
        _timers.clear()
        t, _worker = _worker, None
        _cond.notify_all()
    if t is not None:
        t.join(5.0)
