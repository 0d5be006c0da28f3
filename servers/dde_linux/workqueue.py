"""DDE/Linux deferred work: work queues and tasklets, each served by a DDEKit thread.

    INIT_WORK(work, fn)                      # fn(work) runs in a worker thread
    schedule_work(work) -> bool              # on the system work queue ("events")
    wq = create_workqueue("l4disk"); queue_work(wq, work); flush_workqueue(wq)
    cancel_work_sync(work) -> bool; flush_work(work); destroy_workqueue(wq)
    tasklet_init(t, fn, data); tasklet_schedule(t); tasklet_kill(t)   # fn(data)

A work queue is a DDEKit thread ("kworker/NAME", an L4 thread of its own, so work may talk
to devices and servers) running queued items in order. Tasklets — Linux's softirq bottom
halves — run in one thread ("ksoftirqd"), in the order scheduled. The system work queue and
ksoftirqd start on first use and stop at `kernel.shutdown()`.

Contracts (Linux's):
- Queueing a work item that is pending (queued, not yet started) does nothing and answers
  False; one that runs now is queued again (it runs once more).
- flush_workqueue returns once every item queued before the call has run.
- cancel_work_sync takes a pending item off its queue (True) and waits until it no longer
  runs; destroy_workqueue flushes, then ends the thread.
- A tasklet scheduled while scheduled runs once; tasklet_kill waits until it is neither
  scheduled nor running. A work function's exception is printed; the queue goes on.
"""
from __future__ import annotations

import threading
import traceback
from collections import deque
from typing import Any, Callable

from servers.ddekit import thread as _thread

from . import kernel as _kernel


class work_struct:
    def __init__(self, func: Callable[["work_struct"], Any] | None = None) -> None:
        self.func = func
        self.pending = False            # guarded by the queue's cond
        self.running = False
        self.wq: "workqueue_struct | None" = None


def INIT_WORK(work: work_struct, func: Callable[[work_struct], Any]) -> None:
    work_struct.__init__(work, func)


class workqueue_struct:
    def __init__(self, name: str) -> None:
        self.name = name
        self.cond = threading.Condition()
        self.items: deque[work_struct] = deque()   # guarded by cond
        self.seq = 0                                # items taken so far; cond
        self.done_seq = 0                           # items finished so far; cond
        self.queued_seq = 0                         # items queued so far; cond
        self.dying = False
        self.thread = _thread.create(f"kworker/{name}", self._run)

    def _run(self, _: Any) -> None:
        while True:
            with self.cond:
                while not self.items and not self.dying:
                    self.cond.wait()
                if not self.items:
                    return
                w = self.items.popleft()
                w.pending, w.running = False, True
                self.seq += 1
            try:
                assert w.func is not None
                w.func(w)
            except Exception:           # noqa: BLE001 - the queue goes on
                print(f"dde_linux: work {w.func!r} on {self.name} failed", flush=True)
                traceback.print_exc()
            with self.cond:
                w.running = False
                self.done_seq += 1
                self.cond.notify_all()

    def queue(self, w: work_struct) -> bool:
        with self.cond:
            if self.dying:
                raise RuntimeError(f"work queue {self.name} is being destroyed")
            if w.pending:
                return False
            w.pending, w.wq = True, self
            self.items.append(w)
            self.queued_seq += 1
            self.cond.notify_all()
            return True

    def flush(self) -> None:
        with self.cond:
            target = self.queued_seq
            while self.done_seq < target:
                self.cond.wait()

    def destroy(self) -> None:
        self.flush()
        with self.cond:
            self.dying = True
            self.cond.notify_all()
        self.thread.join(5.0)


_lock = threading.Lock()
_queues: list[workqueue_struct] = []          # every live queue; _lock
_system: workqueue_struct | None = None       # _lock


def create_workqueue(name: str) -> workqueue_struct:
    wq = workqueue_struct(name)
    with _lock:
        _queues.append(wq)
    _kernel.on_shutdown(_destroy_all)
    return wq


def alloc_workqueue(name: str, flags: int = 0, max_active: int = 0) -> workqueue_struct:
    return create_workqueue(name)


create_singlethread_workqueue = create_workqueue


def destroy_workqueue(wq: workqueue_struct) -> None:
    global _system
    wq.destroy()
    with _lock:
        if wq in _queues:
            _queues.remove(wq)
        if _system is wq:
            _system = None


def queue_work(wq: workqueue_struct, work: work_struct) -> bool:
    return wq.queue(work)


def flush_workqueue(wq: workqueue_struct) -> None:
    wq.flush()


def system_wq() -> workqueue_struct:
    global _system
    with _lock:
        if _system is not None:
            return _system
    wq = create_workqueue("events")
    with _lock:
        if _system is None:
            _system = wq
            return wq
    destroy_workqueue(wq)                 # lost a race: the other one stays
    return system_wq()


def schedule_work(work: work_struct) -> bool:
    return system_wq().queue(work)


def flush_scheduled_work() -> None:
    system_wq().flush()


def flush_work(work: work_struct) -> None:
    wq = work.wq
    if wq is not None:
        with wq.cond:
            while work.pending or work.running:
                wq.cond.wait()


def cancel_work_sync(work: work_struct) -> bool:
    wq = work.wq
    if wq is None:
        return False
    with wq.cond:
        was = work.pending
        if was:
            wq.items.remove(work)
            work.pending = False
            wq.done_seq += 1            # it counts as done for flush
            wq.cond.notify_all()
        while work.running:
            wq.cond.wait()
    return was


def _destroy_all() -> None:
    with _lock:
        qs = list(_queues)
    for wq in qs:
        destroy_workqueue(wq)


# -- tasklets ---------------------------------------------------------------------------------
class tasklet_struct(work_struct):
    def __init__(self, func: Callable[[Any], Any] | None = None, data: Any = None) -> None:
        super().__init__(lambda w: tasklet_struct._call(self))
        self.tfunc = func
        self.data = data
        self.killed = False

    def _call(self) -> None:
        if self.tfunc is not None and not self.killed:
            self.tfunc(self.data)


_softirq: workqueue_struct | None = None     # _lock


def tasklet_init(t: tasklet_struct, func: Callable[[Any], Any], data: Any) -> None:
    tasklet_struct.__init__(t, func, data)


def tasklet_setup(t: tasklet_struct, func: Callable[[Any], Any]) -> None:
    """The 5.9+ shape: func gets the tasklet itself."""
    tasklet_struct.__init__(t, func, t)


def _ksoftirqd() -> workqueue_struct:
    global _softirq
    with _lock:
        if _softirq is not None and _softirq in _queues:
            return _softirq
    wq = create_workqueue("ksoftirqd")
    with _lock:
        _softirq = wq
    return wq


def tasklet_schedule(t: tasklet_struct) -> None:
    if not t.killed:
        _ksoftirqd().queue(t)


tasklet_hi_schedule = tasklet_schedule


def tasklet_kill(t: tasklet_struct) -> None:
    cancel_work_sync(t)
    t.killed = True


def tasklet_enable(t: tasklet_struct) -> None:
    t.killed = False
