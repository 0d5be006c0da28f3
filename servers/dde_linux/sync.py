"""DDE/Linux synchronisation: spinlocks, mutexes, wait queues, completions.

    spin_lock_init(l); spin_lock(l); spin_unlock(l)
    flags = spin_lock_irqsave(l); spin_unlock_irqrestore(l, flags)
    mutex_init(m); mutex_lock(m); mutex_trylock(m); mutex_unlock(m)
    init_waitqueue_head(wq); wait_event(wq, lambda: cond)
    left = wait_event_timeout(wq, lambda: cond, timeout_jiffies)   # 0: timed out
    wake_up(wq); wake_up_all(wq)
    init_completion(c); complete(c); complete_all(c); wait_for_completion(c)
    left = wait_for_completion_timeout(c, timeout_jiffies)          # 0: timed out

All of it is DDEKit's locks and condition variables (servers/ddekit/sync.py): the driver's
threads are OS threads of one process. A spinlock is a DDEKit lock; `_irqsave` takes the same
lock (interrupt handlers are threads and take the lock too, which is what excludes them) and
answers flags 0. Linux's conditions are C expressions re-evaluated after each wake-up; here
they are callables, re-evaluated under the wait queue's lock.

Contracts:
- wait_event returns only once `condition()` is true; the waker makes it true *before*
  wake_up (as in Linux), and a wake_up before the wait is not lost (the condition is checked
  under the queue's lock before sleeping).
- wait_event_timeout answers the jiffies left (at least 1) if the condition became true,
  0 if the timeout passed with it false.
- A completion counts complete() calls: each lets one wait through; complete_all lets every
  present and future wait through until reinit_completion.
- A spinlock or mutex unlocked by a thread that does not hold it raises DDEKit's LockError.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from servers.ddekit import sync as _sync

from .kernel import HZ, jiffies


class spinlock_t:
    def __init__(self) -> None:
        self.lock = _sync.Lock()

    def __enter__(self) -> "spinlock_t":
        self.lock.lock()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.lock.unlock()


class mutex(spinlock_t):
    """`struct mutex`: the same DDEKit lock (a holder may sleep: threads are real)."""


def spin_lock_init(lock: spinlock_t) -> None:
    lock.lock = _sync.Lock()


def spin_lock(lock: spinlock_t) -> None:
    lock.lock.lock()


def spin_unlock(lock: spinlock_t) -> None:
    lock.lock.unlock()


def spin_lock_irqsave(lock: spinlock_t) -> int:
    lock.lock.lock()
    return 0


def spin_unlock_irqrestore(lock: spinlock_t, flags: int) -> None:
    lock.lock.unlock()


spin_lock_irq, spin_unlock_irq, spin_lock_bh, spin_unlock_bh = \
    spin_lock, spin_unlock, spin_lock, spin_unlock


def DEFINE_SPINLOCK() -> spinlock_t:
    return spinlock_t()


def mutex_init(m: mutex) -> None:
    m.lock = _sync.Lock()


def mutex_lock(m: mutex) -> None:
    m.lock.lock()


def mutex_trylock(m: mutex) -> int:
    return 1 if m.lock.try_lock() else 0


def mutex_unlock(m: mutex) -> None:
    m.lock.unlock()


def DEFINE_MUTEX() -> mutex:
    return mutex()


# -- wait queues ------------------------------------------------------------------------------
class wait_queue_head_t:
    def __init__(self) -> None:
        self.lock = _sync.Lock()
        self.cv = _sync.Condvar()
        self.wakeups = 0              # wake_up calls so far (guarded by lock; a statistic)


def init_waitqueue_head(wq: wait_queue_head_t) -> None:
    wait_queue_head_t.__init__(wq)


def DECLARE_WAIT_QUEUE_HEAD() -> wait_queue_head_t:
    return wait_queue_head_t()


def wait_event(wq: wait_queue_head_t, condition: Callable[[], Any]) -> None:
    with wq.lock:
        while not condition():
            wq.cv.wait(wq.lock)


def wait_event_timeout(wq: wait_queue_head_t, condition: Callable[[], Any], timeout: int) -> int:
    deadline = time.monotonic() + max(0, timeout) / HZ
    with wq.lock:
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                return 0
            wq.cv.wait_timed(wq.lock, left * 1e3)
        return max(1, round((deadline - time.monotonic()) * HZ))


wait_event_interruptible = wait_event


def wake_up(wq: wait_queue_head_t) -> None:
    with wq.lock:
        wq.wakeups += 1
        wq.cv.broadcast()


wake_up_all = wake_up
wake_up_interruptible = wake_up


# -- completions ------------------------------------------------------------------------------
_ALL = 1 << 62


class completion:
    def __init__(self) -> None:
        self.done = 0
        self.wait = wait_queue_head_t()


def init_completion(c: completion) -> None:
    completion.__init__(c)


def reinit_completion(c: completion) -> None:
    with c.wait.lock:
        c.done = 0


def DECLARE_COMPLETION() -> completion:
    return completion()


def complete(c: completion) -> None:
    with c.wait.lock:
        if c.done != _ALL:
            c.done += 1
        c.wait.cv.broadcast()


def complete_all(c: completion) -> None:
    with c.wait.lock:
        c.done = _ALL
        c.wait.cv.broadcast()


def _take(c: completion) -> bool:
    if not c.done:
        return False
    if c.done != _ALL:
        c.done -= 1
    return True


def wait_for_completion(c: completion) -> None:
    wait_event(c.wait, lambda: _take(c))


def wait_for_completion_timeout(c: completion, timeout: int) -> int:
    return wait_event_timeout(c.wait, lambda: _take(c), timeout)


def try_wait_for_completion(c: completion) -> bool:
    with c.wait.lock:
        return _take(c)


def completion_done(c: completion) -> bool:
    with c.wait.lock:
        return c.done > 0


__all__ = [n for n in dir() if not n.startswith("_") and n not in ("Any", "Callable", "time",
                                                                      "HZ", "jiffies")]
