"""DDE/Linux kernel timers: timer_list over DDEKit's timers (absolute expiry in jiffies).

    timer_setup(t, callback, 0)          # callback(t) when it expires
    mod_timer(t, jiffies() + HZ) -> 1 if it was pending, else 0
    add_timer(t)                         # at t.expires
    del_timer(t) -> 1 if it was pending; del_timer_sync(t): and waits until it no longer runs
    timer_pending(t) -> bool

Callbacks run in DDEKit's timer thread (servers/ddekit/timer.py) one at a time, in expiry
order — Linux's softirq context for timers. Contracts: mod_timer of a pending timer moves it
(it fires once, at the new time); a callback may re-arm its own timer with mod_timer; after
del_timer_sync returns the callback neither runs nor is pending (unless it re-armed itself
meanwhile, as in Linux: do not). An exception in a callback is printed (DDEKit's timer
thread goes on).
"""
from __future__ import annotations

import threading
from typing import Any, Callable

from servers.ddekit import timer as _timer

_lock = threading.Condition()


class timer_list:
    def __init__(self, function: Callable[["timer_list"], Any] | None = None,
                 expires: int = 0) -> None:
        self.function = function
        self.expires = expires
        self.flags = 0
        self._id: int | None = None       # DDEKit's timer id while pending; _lock
        self._running = False             # _lock
        self._gen = 0                     # arming generation: a stale expiry is ignored; _lock
        self.fired = 0                    # callbacks run (a statistic)


def timer_setup(t: timer_list, callback: Callable[[timer_list], Any], flags: int = 0) -> None:
    timer_list.__init__(t, callback)
    t.flags = flags


def _fire(arg: tuple[timer_list, int]) -> None:
    t, gen = arg
    with _lock:
        if gen != t._gen:
            return                        # re-armed or deleted after DDEKit took it
        t._id = None
        t._running = True
    try:
        if t.function is not None:
            t.function(t)
    finally:
        with _lock:
            t._running = False
            t.fired += 1
            _lock.notify_all()


def mod_timer(t: timer_list, expires: int) -> int:
    with _lock:
        was = t._id is not None and _timer.delete(t._id)
        t.expires = int(expires)
        t._gen += 1
        t._id = _timer.add(_fire, (t, t._gen), t.expires)
    return 1 if was else 0


def add_timer(t: timer_list) -> None:
    mod_timer(t, t.expires)


def del_timer(t: timer_list) -> int:
    with _lock:
        was = t._id is not None and _timer.delete(t._id)
        t._id = None
        t._gen += 1
    return 1 if was else 0


def del_timer_sync(t: timer_list) -> int:
    was = del_timer(t)
    with _lock:
        while t._running and threading.current_thread().name != "ddekit:timer":
            _lock.wait()
    return was


def timer_pending(t: timer_list) -> bool:
    with _lock:
        return t._id is not None and _timer.pending(t._id)
