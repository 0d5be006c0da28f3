"""`python -m kernel.user.task MODULE:FUNCTION [ARGS...]`: run a function as an L4 task.

Whoever spawns a task (the launcher, `kernel.user.testing`) creates it in the kernel, maps its
capabilities and starts this runner through `kernel.user.spawn`, which writes L4_KERNEL and
L4_CAPS (and L4_KERNEL_KEY when it applies) into the environment, and the one-time secrets
into an inherited pipe named by L4_SECRET_FD (remote and test tasks: L4_SECRET, L4_THREADS);
`kernel.user.client.secrets_from_env` reads them once.
The function is called as `FUNCTION(l4, *ARGS)` with the connected main thread; its return
value (an int or None) is the exit status. With L4_DIE_WITH_PARENT=1 the process dies with
its parent. SIGUSR1 writes every thread's Python stack to the task's log (stderr) and the task
runs on — how to see where a task that does not answer is waiting.
"""
from __future__ import annotations

import faulthandler
import importlib
import os
import signal
import sys
import traceback
from typing import Any

from .client import L4
from .errors import KernelGone
from .spawn import ENV_DIE_WITH_PARENT
from ..osutil import die_with_parent, freeze_heap


def load(target: str) -> Any:
    module, _, func = target.partition(":")
    if not module or not func:
        raise SystemExit(f"kernel.user.task: target must be MODULE:FUNCTION, got {target!r}")
    return getattr(importlib.import_module(module), func)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    if os.environ.get(ENV_DIE_WITH_PARENT) == "1":
        die_with_parent()
    # Dumped from the signal handler itself, no GIL needed: works on a task stuck in C too.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    fn = load(argv[0])
    l4 = L4.from_env()
    freeze_heap(collect=False)      # forked: the spawner collected; exec'd: little garbage yet
    try:
        status = fn(l4, *argv[1:])
    except KernelGone as e:
        print(f"[{l4.task_name}] kernel gone: {e}", file=sys.stderr, flush=True)
        return 3
    except Exception:
        traceback.print_exc()
        sys.stderr.flush()
        return 1
    code = int(status or 0)
    try:
        l4.exit(code)
    except Exception:
        pass
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
