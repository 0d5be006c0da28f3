"""DDEKit threads: each one an L4 kernel thread of the driver task driven by an OS thread.

    t = thread.create("irq-helper", fn, arg)     # fn(arg) runs in the new thread
    thread.current()                              # the calling DDEKit thread
    t.set_data(x); t.get_data()                   # per-thread data (also set_my_data/get_my_data)
    thread.msleep(10); thread.usleep(500); thread.nsleep(n)
    thread.sleep(lock); thread.wakeup(t)          # sleep on a held lock / wake a sleeper
    thread.exit()                                 # end the calling thread (not the main one)
    t.join(timeout_s)                             # wait until it ended

Why L4 threads: a driver thread talks to devices and servers by IPC, and an L4 thread is
sequential (one call at a time), so every DDEKit thread owns one (`t.l4`, created with
THREAD_CREATE from the task's factory and connected from its own OS thread) and never waits
behind another thread's call; interrupts are IPC to an attached kernel thread, so IRQ
handler threads are DDEKit threads too (servers/ddekit/interrupt.py). The main thread of the
task is adopted as the DDEKit thread "main" by `ddekit.start`.

Contracts:
- A thread's kernel object is destroyed when its function returns, raises, or calls `exit()`:
  its connection is closed and its capability deleted, so its quota goes back to the task's
  factory before `join` returns.
- `sleep(lock)` releases `lock` (held by the caller), blocks until `wakeup`, and takes the
  lock again. A wakeup sent before the sleep is not lost: it makes the next sleep return at
  once (at most one wakeup is pending per thread: a binary semaphore).
- An exception escaping a thread function is printed and ends that thread only;
  `ddekit.panic` ends the whole driver task (servers/ddekit/console.py).
"""
from __future__ import annotations

import os
import threading
import time
import traceback
from typing import Any, Callable

from kernel.abi import SLOT_THREAD
from kernel.user.client import L4

from . import console as _console
from . import env as _env

JOIN_ON_STOP_S = 2.0


class ThreadExit(BaseException):
    """Raised by `exit()` to end the calling DDEKit thread (not an error)."""


class Thread:
    """One DDEKit thread. `l4` and `data` belong to the thread itself; `name`, `id` and
    `slot` are fixed at creation; `done` is set once its kernel thread is gone."""

    def __init__(self, name: str, l4: L4 | None, slot: int, tid: int) -> None:
        self.name = name
        self.l4: L4 | None = l4
        self.slot = slot              # our capability to its kernel thread
        self.id = tid                 # the kernel's thread id
        self.data: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._wake = threading.Condition()   # guards _woken: one pending wakeup at most
        self._woken = False

    def get_data(self) -> Any:
        return self.data

    def set_data(self, data: Any) -> None:
        self.data = data

    def join(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def __repr__(self) -> str:
        return f"<ddekit thread {self.name!r} id {self.id}>"


_local = threading.local()
_live: set[Thread] = set()
_live_lock = threading.Lock()


def adopt_main(l4: L4) -> Thread:
    """Make the calling (main) OS thread the DDEKit thread "main" (ddekit.start does)."""
    t = Thread("main", l4, SLOT_THREAD, l4.thread_id)
    _local.thread = t
    _env.get().on_stop.append(_stop_all)
    return t


def current() -> Thread:
    t = getattr(_local, "thread", None)
    if t is None:
        raise RuntimeError(f"OS thread {threading.current_thread().name!r} is not a DDEKit "
                           f"thread (create threads with ddekit.thread.create)")
    return t


def my_l4() -> L4:
    l4 = current().l4
    assert l4 is not None
    return l4


def create(name: str, fn: Callable[[Any], Any], arg: Any = None) -> Thread:
    """Start `fn(arg)` in a new DDEKit thread; answers once its L4 thread is connected."""
    env = _env.get()
    new = env.kcall(lambda svc: svc.create_thread())
    t = Thread(name, None, new.slot, new.thread_id)
    ready = threading.Event()
    failed: list[BaseException] = []

    def body() -> None:
        try:
            t.l4 = L4(env.l4.kernel_sock, new.secret, env.l4.caps, env.l4.ctx, env.l4.server_key)
        except BaseException as e:          # noqa: BLE001 - handed to the creator
            failed.append(e)
            ready.set()
            env.cap_delete(t.slot)
            t.done.set()
            return
        _local.thread = t
        ready.set()
        try:
            fn(arg)
        except ThreadExit:
            pass
        except _console.Panic:
            os._exit(_console.PANIC_STATUS)     # a panic ends the driver (console.py)
        except BaseException as e:          # noqa: BLE001 - a thread's death is reported
            t.error = e
            print(f"ddekit: thread {name!r} died: {e!r}", flush=True)
            traceback.print_exc()
        finally:
            _finish(env, t)

    with _live_lock:
        _live.add(t)
    threading.Thread(target=body, name=f"ddekit:{name}", daemon=True).start()
    ready.wait()
    if failed:
        with _live_lock:
            _live.discard(t)
        raise failed[0]
    return t


def _finish(env: _env.Env, t: Thread) -> None:
    assert t.l4 is not None
    env.forget_stubs(t.l4)
    env.cap_delete(t.slot)       # the last capability: the kernel destroys the thread now
    t.l4.close()
    with _live_lock:
        _live.discard(t)
    t.done.set()


def _stop_all() -> None:
    with _live_lock:
        left = list(_live)
    for t in left:
        if not t.join(JOIN_ON_STOP_S):
            print(f"ddekit: thread {t.name!r} still runs at stop", flush=True)


def live() -> list[Thread]:
    with _live_lock:
        return sorted(_live, key=lambda t: t.id)


def exit() -> None:
    if current().name == "main" and current().slot == SLOT_THREAD:
        raise RuntimeError("the main thread ends by returning from the task function")
    raise ThreadExit()


def get_my_data() -> Any:
    return current().data


def set_my_data(data: Any) -> None:
    current().data = data


def msleep(ms: float) -> None:
    time.sleep(max(0.0, ms) / 1e3)


def usleep(us: float) -> None:
    time.sleep(max(0.0, us) / 1e6)


def nsleep(ns: float) -> None:
    time.sleep(max(0.0, ns) / 1e9)


def sleep(lock: Any) -> None:
    """Release `lock` (a ddekit Lock the caller holds), wait for `wakeup`, take it again."""
    t = current()
    with t._wake:
        lock.unlock()             # under _wake: a wakeup from now on is not missed
        while not t._woken:
            t._wake.wait()
        t._woken = False
    lock.lock()                   # outside _wake: a waker may hold `lock` while it wakes us


def wakeup(t: Thread) -> None:
    with t._wake:
        t._woken = True           # one pending wakeup: a second before the sleep is absorbed
        t._wake.notify()


def yield_() -> None:
    time.sleep(0)
