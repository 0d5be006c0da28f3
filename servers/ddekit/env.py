"""The DDEKit environment: the one per-task state every other DDEKit module reaches.

`start(l4)` (from the task's main OS thread, once) builds it: a *service* L4 thread of the
task (`svc`, used under `svc_lock` only, for small kernel calls made on behalf of any DDEKit
thread: creating threads and gates, deleting capabilities, probing slots) and the task's
address-space view (`vm`, `kernel.user.vm.VM`, on an L4 thread of its own that carries its
page faults; its shootdown signal is handled by the main OS thread). `get()` answers it; DDEKit calls made
before `start` or after `stop` raise `NotStarted`.

Contracts:
- `svc_lock` is held only around calls the kernel answers by itself (never an IPC to a
  server that could call back into us), so it cannot deadlock against a shootdown: sigma0
  unmapping our frames needs only the main OS thread's signal handler, not `svc`.
- Every access to the VM goes through `mem_lock` (the VM is used from one OS thread at a
  time; its faults travel on its own L4 thread, which nothing else uses).
- Calls to servers (sigma0, io, device registers) go through the *calling* DDEKit thread's
  own L4 thread (`thread.current().l4`), so threads never queue behind each other's IPC;
  `stub(proto, slot, l4)` caches one stub per (L4 thread, protocol, slot).
- Capability slots for received capabilities come from `slots(n)`: consecutive empty slots
  at or after SLOT_BASE, each handed out to one caller until `cap_delete` gives it back
  (then it may be handed out again: a released device's handle refuses use, bus.py).
"""
from __future__ import annotations

import threading
from typing import Any, Callable

from kernel.abi import MAX_SLOTS
from kernel.user.client import L4
from kernel.user.errors import L4Error, NoCapability
from kernel.user.vm import VM

SLOT_BASE = 2048            # where DDEKit places capabilities it receives (io grants)
SIGMA0_CAP = "sigma0"       # the task's capability to sigma0 (DMA memory), as in images
IO_CAP = "io"               # the task's capability to io (its devices)
CALL_TIMEOUT_MS = 30_000    # bound on one server call (a hang fails, it never blocks forever)


class NotStarted(RuntimeError):
    """A DDEKit call before `ddekit.start(l4)` (or after `ddekit.stop()`): the caller's bug."""


class Env:
    """The per-task DDEKit state. Owned by the task; fields below say who may touch what."""

    def __init__(self, l4: L4) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("ddekit.start must run in the task's main OS thread "
                               "(it handles the memory shootdown signal)")
        self.l4 = l4                                  # the task's main L4 thread
        self.svc_lock = threading.Lock()
        self.svc, self._svc_slot = own_thread(l4)     # guarded by svc_lock
        self.mem_lock = threading.RLock()
        self.mem_l4, self._mem_slot = own_thread(l4)  # the VM's faults; guarded by mem_lock
        self.vm = VM(self.mem_l4, signal=True)        # guarded by mem_lock
        self._taken: set[int] = set()                 # slots handed out; guarded by svc_lock
        self._stubs: dict[tuple[Any, str, int], Any] = {}    # (L4 thread, proto, slot)
        self._stubs_lock = threading.Lock()
        self.on_stop: list[Callable[[], None]] = []   # run by stop(), last registered first

    # -- service calls ----------------------------------------------------------------
    def kcall(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run `fn(svc, *args)` (a kernel call) on the service thread."""
        with self.svc_lock:
            return fn(self.svc, *args, **kw)

    def slots(self, count: int) -> int:
        """The first of `count` consecutive empty capability slots, the caller's from now on
        (until `cap_delete`); LookupError when the slot table has no such run left."""
        with self.svc_lock:
            base = SLOT_BASE
            while base + count <= MAX_SLOTS:
                for s in range(base, base + count):
                    if s in self._taken or not self._empty(s):
                        base = s + 1
                        break
                else:
                    self._taken.update(range(base, base + count))
                    return base
            raise LookupError(f"ddekit: no {count} free capability slots left "
                              f"in {SLOT_BASE}..{MAX_SLOTS - 1}")

    def _empty(self, slot: int) -> bool:
        try:
            self.svc.cap_inspect(slot)
        except NoCapability:
            return True
        return False

    def cap_delete(self, *slots: int | None) -> None:
        """Delete our capabilities in `slots` (None: skipped); the slots are free again."""
        with self.svc_lock:
            for s in slots:
                if s is None:
                    continue
                self._taken.discard(s)
                try:
                    self.svc.cap_delete(s)
                except L4Error:
                    pass                # already gone (revoked by io): nothing to give back

    def stub(self, proto: Any, slot: int, l4: L4) -> Any:
        """A client stub of `proto` on `slot`, bound to the L4 thread `l4` (the caller's)."""
        key = (l4, proto.name, slot)
        with self._stubs_lock:
            s = self._stubs.get(key)
            if s is None:
                s = self._stubs[key] = proto.client(l4, slot, timeout=CALL_TIMEOUT_MS)
            return s

    def cap(self, name: str) -> int:
        if name not in self.l4.caps:
            hint = {SIGMA0_CAP: 'caps = { sigma0 = { service = "sigma0", label = N } }',
                    IO_CAP: "devices = [...]"}.get(name, "")
            raise LookupError(f"ddekit: this task has no capability {name!r} "
                              f"(give its image entry {hint})")
        return self.l4.caps[name]

    def forget_stubs(self, l4: L4) -> None:
        with self._stubs_lock:
            for k in [k for k in self._stubs if k[0] is l4]:
                del self._stubs[k]

    def close(self) -> None:
        for fn in reversed(self.on_stop):
            fn()
        self.on_stop.clear()
        # Each thread's capability is deleted before its connection closes: the thread is
        # destroyed at once (a closed connection is noticed by the kernel only later).
        with self.mem_lock:
            self.vm.close()
            self.cap_delete(self._mem_slot)
            self.mem_l4.close()
        with self.svc_lock:
            self.l4.cap_delete(self._svc_slot)     # stop() runs in the main thread: l4 is ours
            self.svc.close()


def own_thread(l4: L4) -> tuple[L4, int]:
    """A new L4 thread of the task, connected, and our capability to it: deleting that
    capability destroys the thread at once (its quota goes back), unlike a closed connection,
    which the kernel notices later."""
    new = l4.create_thread()
    return L4(l4.kernel_sock, new.secret, l4.caps, l4.ctx, l4.server_key), new.slot


_env: Env | None = None


def get() -> Env:
    if _env is None:
        raise NotStarted("ddekit is not started: call ddekit.start(l4) in the task's main thread")
    return _env


def start(l4: L4) -> Env:
    global _env
    if _env is not None:
        raise RuntimeError("ddekit is already started in this task")
    _env = Env(l4)
    return _env


def stop() -> None:
    """Run the registered stop hooks (threads, timers, IRQs, memory go back), then close."""
    global _env
    if _env is not None:
        try:
            _env.close()
        finally:
            _env = None
