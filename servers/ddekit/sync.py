"""DDEKit locks, semaphores and condition variables, for the threads of one driver task.

    l = Lock(); l.lock(); l.try_lock(); l.unlock(); l.owner()     # owner: a ddekit Thread
    s = Semaphore(1); s.down(); s.down_try(); s.down_timed(ms); s.up()
    c = Condvar(); c.wait(l); c.wait_timed(l, ms); c.signal(); c.broadcast()

DDEKit threads are OS threads of one process (servers/ddekit/thread.py), so these are built
on the host's thread primitives: no IPC, no kernel object, nothing to give back.

Contracts:
- A Lock is not recursive; `unlock` by a thread that does not hold it raises `LockError`
  (the caller's bug), as does locking a lock one already holds (it would deadlock).
- `down_timed(ms)` answers True if it got the semaphore, False after `ms` milliseconds.
- Condvar: the caller holds `lock` around `wait`; `wait` releases it while waiting and holds
  it again when it returns. `signal` wakes the longest waiter, `broadcast` every waiter;
  a signal with no waiter is lost (as in DDEKit). `wait_timed` answers False on timeout.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any

from . import thread as _thread


class LockError(RuntimeError):
    """A lock used against its contract (unlocked by a non-owner, locked twice)."""


def _me() -> Any:
    try:
        return _thread.current()
    except RuntimeError:
        return threading.current_thread()      # a lock may also be used outside DDEKit threads


class Lock:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: Any = None

    def lock(self) -> None:
        me = _me()
        if self._owner is me:
            raise LockError(f"{me!r} locks a lock it already holds")
        self._lock.acquire()
        self._owner = me

    def try_lock(self) -> bool:
        if not self._lock.acquire(blocking=False):
            return False
        self._owner = _me()
        return True

    def unlock(self) -> None:
        me = _me()
        if self._owner is not me:
            raise LockError(f"{me!r} unlocks a lock held by {self._owner!r}")
        self._owner = None
        self._lock.release()

    def owner(self) -> Any:
        return self._owner

    def __enter__(self) -> "Lock":
        self.lock()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.unlock()


class Semaphore:
    def __init__(self, value: int = 0) -> None:
        if value < 0:
            raise ValueError(f"semaphore value {value} < 0")
        self._sem = threading.Semaphore(value)

    def down(self) -> None:
        self._sem.acquire()

    def down_try(self) -> bool:
        return self._sem.acquire(blocking=False)

    def down_timed(self, ms: float) -> bool:
        return self._sem.acquire(timeout=max(0.0, ms) / 1e3)

    def up(self) -> None:
        self._sem.release()


class Condvar:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()    # guarded by _guard

    def wait(self, lock: Lock) -> None:
        self.wait_timed(lock, None)

    def wait_timed(self, lock: Lock, ms: float | None) -> bool:
        waiter = threading.Lock()
        waiter.acquire()
        with self._guard:
            self._waiters.append(waiter)
        lock.unlock()
        try:
            got = waiter.acquire() if ms is None else waiter.acquire(timeout=max(0.0, ms) / 1e3)
            if not got:
                with self._guard:
                    try:
                        self._waiters.remove(waiter)
                    except ValueError:
                        got = True          # signalled between the timeout and now
            return got
        finally:
            lock.lock()

    def signal(self) -> None:
        with self._guard:
            if self._waiters:
                self._waiters.popleft().release()

    def broadcast(self) -> None:
        with self._guard:
            while self._waiters:
                self._waiters.popleft().release()
