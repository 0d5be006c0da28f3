"""Spawning a task: create and wire it in the kernel, then say how its process starts.

The one path every root task that starts tasks takes: the launcher (`launcher/system.py`, its
processes forked by `launcher/zygote.py`) and `kernel.user.testing.System`. The steps:

1. `create(root, name, quota, caps, ...)`: TASK_CREATE; the extra threads asked for; each
   `NamedCap` mapped into the new task from `FIRST_NAMED_SLOT` up, in the order given (rights
   reduced as asked); its exception handler and priority set. Answers a `Wiring`.
2. The caller may wire more before the process starts (the launcher binds service gates and
   maps a memory session at `Wiring.next_slot`, adding its name to `Wiring.caps`).
3. `environment(wiring, kernel, ...)` and `argv(target, args)`: what the process is started
   with, `python -m kernel.user.task TARGET ARGS` under L4_KERNEL, L4_CAPS and the secrets (and
   L4_KERNEL_KEY, L4_DIE_WITH_PARENT when they apply). `kernel.user.task` reads them. The
   secrets: with `secret_by_fd` (the launcher's local tasks) none is in the environment — the
   spawner writes `secret_payload(wiring)` into a pipe the process inherits and names in
   L4_SECRET_FD; otherwise (remote tasks, `kernel.user.testing`) L4_SECRET and L4_THREADS.
4. `watch(root, wiring, pid)` once a local process runs: the kernel then ends the task when
   that pid dies. A remote task is never watched (its pid means nothing here).

Contract: a task's identity and capabilities come only from its `Wiring`,
never from the spawner's own environment (inherited L4_* task variables are dropped), and the
caller's extra variables cannot override them. Everything here runs in the root task's thread
that owns `root` (one call at a time, as any `L4`).
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from ..abi import Rights
from .client import (ENV_CAPS, ENV_KERNEL, ENV_KERNEL_KEY, ENV_SECRET, ENV_SECRET_FD, ENV_THREADS,
                     L4, NewTask, NewThread)

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASK_MODULE = "kernel.user.task"   # the runner: `python -m kernel.user.task MODULE:FUNC ARGS`
FIRST_NAMED_SLOT = 16              # named capabilities land here and up (below: the fixed slots)
ENV_DIE_WITH_PARENT = "L4_DIE_WITH_PARENT"   # "1": the task process dies with its parent
TASK_VARS = (ENV_KERNEL, ENV_SECRET, ENV_CAPS, ENV_THREADS, ENV_KERNEL_KEY, ENV_DIE_WITH_PARENT,
             ENV_SECRET_FD)


class NamedCap(NamedTuple):
    """A capability for the new task: `l4.caps[name]` there is a copy of root's `slot`."""
    name: str
    slot: int
    rights: int = Rights.ALL


class Wiring(NamedTuple):
    """A task made by `create`, its process not started yet."""
    task: NewTask               # root's capabilities to the task and its main thread, its secret
    caps: dict[str, int]        # its own slots, by name (what L4_CAPS tells it)
    threads: list[NewThread]    # extra threads: root's capabilities to them, their secrets
    next_slot: int              # the first slot of the task above its named capabilities


def create(root: L4, name: str, quota: int, caps: Iterable[NamedCap] = (), *,
           handler: int | None = None, priority: int | None = None, threads: int = 0) -> Wiring:
    """Create task `name` with `quota` kernel objects and wire it (steps in the docstring).
    `handler` is a root gate slot; None leaves the handler (and `priority`) as the kernel set
    it. Kernel errors propagate as `kernel.user.errors` exceptions."""
    new = root.create_task(name, quota)
    extra = [root.create_thread(new.slot) for _ in range(threads)]
    mine: dict[str, int] = {}
    slot = FIRST_NAMED_SLOT
    for cap in caps:
        root.task_map(new.slot, cap.slot, slot, cap.rights)
        mine[cap.name] = slot
        slot += 1
    if handler is not None or priority is not None:
        root.thread_control(new.thread, handler=handler, priority=priority)
    return Wiring(new, mine, extra, slot)


def environment(w: Wiring, kernel: str, *, base: Mapping[str, str] | None = None,
                extra: Mapping[str, str] | None = None, pythonpath: str | None = None,
                key: str | None = None, die_with_parent: bool = True,
                secret_by_fd: bool = False) -> dict[str, str]:
    """The environment of `w`'s process, connecting to `kernel` (kernel.sock's path, or a
    tcp:// endpoint whose CurveZMQ public key is `key`). Layers, later ones winning: `base`
    (e.g. PATH; without L4_* task variables), `extra` (the caller's variables), PYTHONPATH
    (if given), the task's own variables. `secret_by_fd`: leave the secrets out (the spawner
    delivers `secret_payload(w)` through a descriptor and sets L4_SECRET_FD)."""
    env = {k: v for k, v in (base or {}).items() if k not in TASK_VARS}
    env.update(extra or {})
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    env[ENV_KERNEL] = kernel
    env[ENV_CAPS] = json.dumps(w.caps)
    if not secret_by_fd:
        env[ENV_SECRET] = w.task.secret.hex()
        if w.threads:
            env[ENV_THREADS] = ",".join(t.secret.hex() for t in w.threads)
    if key is not None:
        env[ENV_KERNEL_KEY] = key
    if die_with_parent:
        env[ENV_DIE_WITH_PARENT] = "1"
    return env


def secret_payload(w: Wiring) -> bytes:
    """What the pipe named by L4_SECRET_FD holds (`client.secrets_from_env` reads it)."""
    return json.dumps({"secret": w.task.secret.hex(),
                       "threads": [t.secret.hex() for t in w.threads]}).encode()


def argv(target: str, args: Sequence[str] = (), python: str = sys.executable) -> list[str]:
    """The command line of a task process: `PYTHON -m kernel.user.task TARGET ARGS`."""
    return [python, "-m", TASK_MODULE, target, *args]


def watch(root: L4, w: Wiring, pid: int) -> None:
    """Tell the kernel that `pid` runs `w`'s task: its death ends the task."""
    root.task_watch(w.task.slot, pid)
