"""DDE/Linux core: modules, printk, kmalloc, jiffies and delays, BUG/WARN, errno.

    kernel.boot(l4)                   # ddekit.start + the glue (in the task's main thread, once)
    @module_init / @module_exit       # a driver module's init (-> 0 or -errno) and exit
    kernel.load(module) -> int        # import it (a name or a module) and run its init calls
    kernel.unload()                   # exit calls, last loaded first
    kernel.shutdown()                 # unload, stop the glue's threads, ddekit.stop()
    printk(KERN_INFO "fmt", *args)    # a level prefix, then printf-style, one log line
    p = kmalloc(size, GFP_KERNEL); kzalloc(...); kfree(p)       # DDEKit addresses (ints)
    mem_read(p, n) / mem_write(p, data) / memset(p, c, n)         # bytes at those addresses
    jiffies(), HZ, msecs_to_jiffies(ms), time_after(a, b), msleep(ms), udelay(us)
    BUG_ON(cond), WARN_ON(cond); ENOMEM, EINVAL, EIO, EBUSY, ENODEV, ETIMEDOUT ...

Mapping onto DDEKit (servers/ddekit): kmalloc is DDEKit's malloc (slabs of size classes,
large blocks past 2 KiB), so every kmalloc'd byte is sigma0 memory the driver holds, with a
physical address (GFP_DMA changes nothing: all of it is DMA-able and contiguous); jiffies,
HZ and the sleeps are DDEKit's timer and thread calls. Linux's "process context" is any
DDEKit thread; "interrupt context" is the line's DDEKit handler thread (servers/dde_linux/irq.py).

Contracts:
- A module's init answers 0 or a negative errno, as in Linux; `load` answers it, running the
  module's init calls in the order they were declared and stopping at the first failure
  (whose module is then not loaded: its exit calls are not run).
- `kfree(p)` of a pointer kmalloc did not answer raises BadAddress (the caller's bug); of
  0/None is nothing. `shutdown()` frees what a leaking driver left (DDEKit returns all
  memory at stop): the quota always comes back.
- BUG_ON(True) is a DDEKit panic: it ends the driver task (its restart policy decides what
  follows); WARN_ON prints a warning with a stack and answers the condition.
- `on_shutdown(fn)` registers glue clean-up (work queues, tasklets), run by `shutdown`
  before DDEKit stops, last registered first.
"""
from __future__ import annotations

import importlib
import math
import sys
import threading
import traceback
import types
from typing import Any, Callable

import servers.ddekit as ddekit
from kernel.user.client import L4
from servers.ddekit import memory as _mem
from servers.ddekit import thread as _thread
from servers.ddekit import timer as _timer

# -- errno (Linux's numbers; functions answer them negated) -----------------------------------
EPERM, ENOENT, EIO, ENXIO, ENOMEM, EFAULT, EBUSY, ENODEV, EINVAL, ENOSPC = \
    1, 2, 5, 6, 12, 14, 16, 19, 22, 28
EAGAIN, ETIMEDOUT, EOPNOTSUPP = 11, 110, 95

# -- printk levels --------------------------------------------------------------------------
KERN_EMERG, KERN_ALERT, KERN_CRIT, KERN_ERR = "<0>", "<1>", "<2>", "<3>"
KERN_WARNING, KERN_NOTICE, KERN_INFO, KERN_DEBUG = "<4>", "<5>", "<6>", "<7>"
_LEVEL_NAMES = {"<0>": "emerg", "<1>": "alert", "<2>": "crit", "<3>": "err", "<4>": "warn",
                "<5>": "notice", "<6>": "info", "<7>": "debug"}

# -- allocation flags (accepted for Linux's signatures: every block is DMA-able here) ---------
GFP_KERNEL, GFP_ATOMIC, GFP_DMA, GFP_NOWAIT, __GFP_ZERO = 0x1, 0x2, 0x4, 0x8, 0x100

HZ = ddekit.HZ


class Module(types.SimpleNamespace):
    """What `load` knows about a module: its name and its init/exit calls."""


_lock = threading.Lock()
_inits: dict[str, list[Callable[[], int]]] = {}   # module name -> init calls; _lock
_exits: dict[str, list[Callable[[], None]]] = {}  # module name -> exit calls; _lock
_loaded: list[str] = []                           # in load order; _lock
_shutdown_hooks: list[Callable[[], None]] = []    # _lock
_kmalloced: dict[int, int] = {}                   # pointer -> size; _lock
_booted = False


# -- modules --------------------------------------------------------------------------------
def module_init(fn: Callable[[], int]) -> Callable[[], int]:
    with _lock:
        _inits.setdefault(fn.__module__, []).append(fn)
    return fn


def module_exit(fn: Callable[[], None]) -> Callable[[], None]:
    with _lock:
        _exits.setdefault(fn.__module__, []).append(fn)
    return fn


def load(module: str | types.ModuleType) -> int:
    """Import `module` and run its init calls: 0, or the first init's negative errno."""
    mod = importlib.import_module(module) if isinstance(module, str) else module
    name = mod.__name__
    with _lock:
        if name in _loaded:
            return -EBUSY
        calls = list(_inits.get(name, []))
    for fn in calls:
        ret = fn()
        if ret:
            printk(KERN_ERR + "%s: init %s failed: %d", name, fn.__name__, ret)
            return int(ret)
    with _lock:
        _loaded.append(name)
    return 0


def unload(module: str | None = None) -> None:
    """Run the exit calls of `module` (None: of every loaded module, last loaded first)."""
    with _lock:
        names = [module] if module is not None else list(reversed(_loaded))
    for name in names:
        with _lock:
            if name not in _loaded:
                continue
            _loaded.remove(name)
            calls = list(_exits.get(name, []))
        for fn in calls:
            try:
                fn()
            except Exception:          # noqa: BLE001 - the other modules still unload
                printk(KERN_ERR + "%s: exit %s failed", name, fn.__name__)
                traceback.print_exc()


def loaded() -> list[str]:
    with _lock:
        return list(_loaded)


# -- life of the glue -------------------------------------------------------------------------
def boot(l4: L4) -> None:
    """Start DDEKit in this task and the glue on it (the task's main thread, once)."""
    global _booted
    ddekit.start(l4)
    _booted = True
    printk(KERN_INFO + "dde_linux: up, HZ=%d", HZ)


def on_shutdown(fn: Callable[[], None]) -> None:
    with _lock:
        if fn not in _shutdown_hooks:
            _shutdown_hooks.append(fn)


def shutdown() -> None:
    """Unload every module, stop the glue's threads, give everything back (ddekit.stop)."""
    global _booted
    unload()
    with _lock:
        hooks = list(reversed(_shutdown_hooks))
        _shutdown_hooks.clear()
    for fn in hooks:
        try:
            fn()
        except Exception:              # noqa: BLE001 - stop goes on
            traceback.print_exc()
    with _lock:
        _kmalloced.clear()
    _booted = False
    ddekit.stop()


# -- printk -----------------------------------------------------------------------------------
def printk(fmt: str, *args: Any) -> None:
    level = "info"
    if len(fmt) >= 3 and fmt[0] == "<" and fmt[2] == ">" and fmt[:3] in _LEVEL_NAMES:
        level, fmt = _LEVEL_NAMES[fmt[:3]], fmt[3:]
    text = fmt % args if args else fmt
    ddekit.print_(f"[{jiffies():>8}] {level}: {text.rstrip()}")


def pr_err(fmt: str, *args: Any) -> None:
    printk(KERN_ERR + fmt, *args)


def pr_info(fmt: str, *args: Any) -> None:
    printk(KERN_INFO + fmt, *args)


# -- memory -----------------------------------------------------------------------------------
def kmalloc(size: int, flags: int = GFP_KERNEL) -> int:
    """A pointer to `size` bytes, or 0 (Linux's NULL) when sigma0 has no memory left."""
    if size <= 0:
        return 0
    try:
        p = _mem.malloc(size)
    except _mem.OutOfMemory:
        return 0
    with _lock:
        _kmalloced[p] = size
    if flags & __GFP_ZERO:
        _mem.fill(p, size, 0)
    return p


def kzalloc(size: int, flags: int = GFP_KERNEL) -> int:
    return kmalloc(size, flags | __GFP_ZERO)


def kcalloc(n: int, size: int, flags: int = GFP_KERNEL) -> int:
    return kzalloc(n * size, flags)


def kfree(p: int | None) -> None:
    if not p:
        return
    with _lock:
        if _kmalloced.pop(p, None) is None:
            raise _mem.BadAddress(f"kfree of {p:#x}: not a kmalloc'd pointer (or freed already)")
    _mem.free(p)


def ksize(p: int) -> int:
    with _lock:
        return _kmalloced.get(p, 0)


def kmalloc_usage() -> dict[str, int]:
    """Live kmalloc pointers and bytes (the test's quota check), and DDEKit's blocks."""
    with _lock:
        return {"pointers": len(_kmalloced), "bytes": sum(_kmalloced.values()),
                **{f"ddekit_{k}": v for k, v in _mem.usage().items()}}


def mem_read(addr: int, n: int) -> bytes:
    return _mem.read(addr, n)


def mem_write(addr: int, data: bytes | bytearray | memoryview) -> None:
    _mem.write(addr, data)


def memset(addr: int, c: int, n: int) -> int:
    _mem.fill(addr, n, c & 0xFF)
    return addr


def virt_to_phys(addr: int) -> int:
    pa = _mem.virt_to_phys(addr)
    if pa is None:
        raise _mem.BadAddress(f"virt_to_phys({addr:#x}): no DDEKit memory there")
    return pa


# -- time -------------------------------------------------------------------------------------
def jiffies() -> int:
    return _timer.jiffies()


def msecs_to_jiffies(ms: float) -> int:
    return max(0, math.ceil(ms * HZ / 1000))


def jiffies_to_msecs(j: int) -> int:
    return j * 1000 // HZ


def time_after(a: int, b: int) -> bool:
    """Whether jiffies value `a` is later than `b`."""
    return b - a < 0


def time_before(a: int, b: int) -> bool:
    return time_after(b, a)


def msleep(ms: float) -> None:
    _thread.msleep(ms)


def udelay(us: float) -> None:
    _thread.usleep(us)


def usleep_range(lo: float, hi: float) -> None:
    _thread.usleep(lo)


# -- BUG / WARN -------------------------------------------------------------------------------
def BUG_ON(cond: Any) -> None:
    if cond:
        ddekit.panic("BUG_ON at %s", _caller())


def BUG() -> None:
    ddekit.panic("BUG at %s", _caller())


def WARN_ON(cond: Any) -> bool:
    if cond:
        printk(KERN_WARNING + "WARNING at %s", _caller())
        traceback.print_stack(limit=4, file=sys.stdout)
    return bool(cond)


def _caller() -> str:
    f = sys._getframe(2)
    return f"{f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno} ({f.f_code.co_name})"


def IS_ERR_VALUE(v: int) -> bool:
    return -4095 <= v < 0
