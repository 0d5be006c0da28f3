"""DDEKit: the driver environment kit (paper §4.4), basic driver mechanisms on L4Py's services.

A driver task calls `ddekit.start(l4)` in its main thread, then uses the modules below;
`ddekit.stop()` gives everything back (threads joined, timers dropped, interrupt lines
detached, devices released, memory returned to sigma0). The DDE/Linux glue is built on this
interface; drivers never talk to the HAL, sigma0 or io themselves.

    memory     contiguous (DMA) and large blocks, slab caches, malloc/free, bytes at addresses
    pgtab      the page table of regions: virt <-> phys, failing after a region is cleared
    interrupt  attach/detach a handler to an IRQ line (thread per line, shared lines), enable, disable
    thread     threads with names and per-thread data, sleeps, sleep-on-lock/wakeup, exit
    sync       locks, semaphores (timed down), condition variables
    timer      timers at an absolute time in jiffies (HZ), run in order in a timer thread
    bus        a PCI-like scan of the devices io offers, request/release of their resources
    console    print, panic, assert
    initcall   ordered init calls (levels like Linux's)
    env        the per-task state the modules share (service thread, VM, capability slots)

What a driver task needs in its image: `devices = [...]` (its io policy: capability "io")
and a capability "sigma0" with a label of its own (its DMA memory); see configs/ddekit.toml.

## Design: DDEKit threads are L4 kernel threads, each driven by an OS thread

Interrupts reach a task only as IPC to a kernel thread an IRQ object is attached to, and an
L4 thread makes one call at a time. So every DDEKit thread (and the handler thread of each
IRQ line, and the timer thread) owns an L4 thread of the task (THREAD_CREATE against the
task's quota, its own connection to the kernel), driven by a Python OS thread of the driver
process: a thread blocked in a device or server call never holds up another, an interrupt
handler runs in its own thread as in L4Re's DDEKit, and the kernel sees (and accounts for)
every DDEKit thread. Locks, semaphores and condition variables are the host's primitives
(the threads share one process: no IPC needed). Memory: blocks from sigma0 mapped into our
address space, reached through the task's one VM (kernel.user.vm), so a driver holds only the
frames it allocated. Jiffies come from the host's monotonic clock (the HAL's clock).
"""
from __future__ import annotations

from kernel.user.client import L4

from . import bus, console, env, initcall, interrupt, memory, pgtab, sync, thread, timer
from .console import Panic, assert_, panic, print_, printf
from .env import NotStarted
from .timer import HZ

init = initcall

__all__ = ["HZ", "NotStarted", "Panic", "assert_", "bus", "console", "env", "init", "initcall",
           "interrupt", "memory", "panic", "pgtab", "print_", "printf", "start", "stop",
           "sync", "thread", "timer"]


def start(l4: L4) -> None:
    """Start DDEKit in this task (its main thread, once): service thread, VM, main thread."""
    e = env.start(l4)
    thread.adopt_main(l4)                       # its stop hook runs last: threads joined
    e.on_stop.append(memory.release_all)
    e.on_stop.append(bus.release_all)
    e.on_stop.append(interrupt.detach_all)
    e.on_stop.append(timer.stop)


def stop() -> None:
    """Give back everything DDEKit holds, then close its threads and VM."""
    env.stop()
