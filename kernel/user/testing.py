"""Boot a real kernel in a run directory and spawn real task processes (for tests and benches).

`System` is a minimal root task: it starts `python -m kernel`, connects as root, and spawns
tasks with `spawn()` — each a real OS process running `python -m kernel.user.task`, watched by
the kernel through its pid, with named capabilities mapped into its slots. `close()` kills
every process it started and the kernel, and checks that the socket file is gone.

Task creation, wiring and the task's environment are `kernel.user.spawn`'s, the same path
the launcher (`launcher/`) takes; the launcher adds images, supervision and restarts.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from . import spawn as _spawn
from .client import L4, NewTask, NewThread
from .spawn import FIRST_NAMED_SLOT, PROJECT_ROOT, NamedCap, Wiring

__all__ = ["FIRST_NAMED_SLOT", "PROJECT_ROOT", "System", "TaskProc", "wait_for"]


def wait_for(pred: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


class TaskProc:
    """A spawned task: its process and our capabilities to it."""

    def __init__(self, name: str, new: NewTask, proc: subprocess.Popen[bytes], caps: dict[str, int]) -> None:
        self.name = name
        self.slot = new.slot          # root's capability to the task
        self.thread = new.thread      # root's capability to its main thread
        self.task_id = new.task_id
        self.proc = proc
        self.caps = caps              # its own slots, by name
        self.threads: list[NewThread] = []   # extra threads: root's capabilities to them

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout)


class System:
    def __init__(self, run_dir: str | None = None, verbose: bool = False,
                 root_quota: int | None = None, kernel_args: tuple[str, ...] = ()) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="l4py-") if run_dir is None else None
        self.run_dir = run_dir or self._tmp.name  # type: ignore[union-attr]
        self.sock = os.path.join(self.run_dir, "kernel.sock")
        secret = secrets.token_bytes(16)
        cmd = [sys.executable, "-m", "kernel", "--run-dir", self.run_dir, "--die-with-parent"]
        if verbose:
            cmd.append("-v")
        if root_quota is not None:
            cmd += ["--root-quota", str(root_quota)]
        cmd += list(kernel_args)
        env = {**os.environ, "L4_ROOT_SECRET": secret.hex(), "PYTHONPATH": PROJECT_ROOT}
        self.kernel = subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT)
        self.tasks: list[TaskProc] = []
        try:
            wait_for(lambda: os.path.exists(self.sock) or self.kernel.poll() is not None,
                     what="kernel socket")
            if self.kernel.poll() is not None:
                raise RuntimeError(f"kernel exited with {self.kernel.returncode}")
            self.root = L4(self.sock, secret)
        except BaseException:
            self.close()
            raise

    def spawn(self, target: str, name: str | None = None, *, args: tuple[str, ...] = (),
              caps: dict[str, int | tuple[int, int]] | None = None, quota: int = 256,
              handler: int | None = None, stderr: Any = None, env: dict[str, str] | None = None,
              threads: int = 0) -> TaskProc:
        """Start `python -m kernel.user.task TARGET ARGS` as a new task.

        `caps` maps a name to one of root's slots (or (slot, rights)); the task finds it in
        `l4.caps[name]`. `handler` (a root gate slot) becomes its exception handler.
        `threads` extra threads are made in the task first (`l4.threads_from_env()` connects
        them; root's capabilities to them are in `TaskProc.threads`, to bind gates to)."""
        name = name or target.rpartition(":")[2]
        w = self._make_task(name, caps, quota, handler, threads)
        penv = _spawn.environment(w, self.sock, base=os.environ, extra=env, pythonpath=PROJECT_ROOT)
        proc = subprocess.Popen(_spawn.argv(target, args), env=penv, cwd=PROJECT_ROOT,
                                stderr=stderr)
        _spawn.watch(self.root, w, proc.pid)
        return self._track(name, w, proc)

    def spawn_remote(self, target: str, name: str | None = None, *, args: tuple[str, ...] = (),
                     caps: dict[str, int | tuple[int, int]] | None = None, quota: int = 256,
                     handler: int | None = None) -> TaskProc:
        """Like `spawn`, but as a task on another machine: the process knows only the
        kernel's tcp:// endpoint, its public key and the task's secret (its environment has
        nothing else of ours), and the kernel is not told its pid. Needs a kernel started
        with `kernel_args=("--tcp", "127.0.0.1:0")`."""
        name = name or target.rpartition(":")[2]
        info = self.tcp_info()
        w = self._make_task(name, caps, quota, handler, 0)
        penv = _spawn.environment(w, info["endpoint"], key=info["public_key"],
                                  base={"PATH": os.environ.get("PATH", "")},
                                  pythonpath=PROJECT_ROOT)
        proc = subprocess.Popen(_spawn.argv(target, args), env=penv, cwd=PROJECT_ROOT)
        return self._track(name, w, proc)

    def tcp_info(self) -> dict[str, str]:
        """{"endpoint", "public_key"} of a kernel started with --tcp (RUN_DIR/kernel.tcp)."""
        path = os.path.join(self.run_dir, "kernel.tcp")
        wait_for(lambda: os.path.exists(path), what="kernel.tcp (is the kernel's --tcp set?)")
        with open(path) as f:
            return dict(json.load(f))

    def _make_task(self, name: str, caps: dict[str, int | tuple[int, int]] | None, quota: int,
                   handler: int | None, threads: int) -> Wiring:
        named = [NamedCap(cname, *spec) if isinstance(spec, tuple) else NamedCap(cname, spec)
                 for cname, spec in (caps or {}).items()]
        return _spawn.create(self.root, name, quota, named, handler=handler, threads=threads)

    def _track(self, name: str, w: Wiring, proc: subprocess.Popen[bytes]) -> TaskProc:
        tp = TaskProc(name, w.task, proc, w.caps)
        tp.threads = w.threads
        self.tasks.append(tp)
        return tp

    def gate(self, label: int = 0) -> int:
        """A gate bound to root's main thread (for handlers and test servers)."""
        return self.root.create_gate(label)

    def close(self) -> None:
        for t in getattr(self, "tasks", []):
            t.kill()
        for t in getattr(self, "tasks", []):
            try:
                t.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if hasattr(self, "root"):
            self.root.close()
        if self.kernel.poll() is None:
            self.kernel.terminate()
            try:
                self.kernel.wait(10)
            except subprocess.TimeoutExpired:
                self.kernel.kill()
                self.kernel.wait()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> "System":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

