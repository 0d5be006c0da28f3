"""Boot a real kernel in a run directory and spawn real task processes (for tests and benches).

`System` is a minimal root task: it starts `python -m kernel`, connects as root, and spawns
tasks with `spawn()` — each a real OS process running `python -m kernel.user.task`, watched by
the kernel through its pid, with named capabilities mapped into its slots. `close()` kills
every process it started and the kernel, then checks that nothing of the system is left and
raises `LeakError` naming what is: a process of it (one it started, or any process whose
command line or environment names its run directory), a socket file in the run directory, a
descriptor of this process onto the kernel's frames (`memfd:l4py-ram-PID`) or a new `/dev/shm`
segment with "l4" in its name. Leaving the `with` block on an exception still cleans up but
reports nothing over that exception.

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
import threading
import time
from typing import Any

from . import spawn as _spawn
from .client import L4, NewTask, NewThread
from .spawn import FIRST_NAMED_SLOT, PROJECT_ROOT, NamedCap, Wiring

__all__ = ["FIRST_NAMED_SLOT", "PROJECT_ROOT", "LeakError", "System", "TaskProc", "leaks",
           "wait_for"]


class LeakError(AssertionError):
    """A system was closed, and something of it outlived it (the list says what)."""


def _memfds() -> set[str]:
    """This process's descriptors onto L4Py memory: {"fd N -> memfd:l4py…"}."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("/memfd:l4py"):
            out.add(f"fd {fd} -> {target}")
    return out


def _shm() -> set[str]:
    try:
        return {f for f in os.listdir("/dev/shm") if "l4" in f.lower()}
    except FileNotFoundError:
        return set()


def _naming(run_dir: str) -> list[str]:
    """Live processes (not zombies) whose command line or environment names `run_dir`."""
    import psutil
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        if p.info["pid"] == os.getpid() or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            text = " ".join(p.info["cmdline"] or [])
            if run_dir not in text:
                text = " ".join(p.environ().values())
        except (psutil.Error, OSError):
            continue
        if run_dir in text:
            found.append(f"process {p.info['pid']} ({' '.join(p.info['cmdline'] or [])[:60]})")
    return found


def leaks(run_dir: str, pids: list[int], memfds_before: set[str],
          shm_before: set[str]) -> list[str]:
    """What of the system in `run_dir` is still there (an empty list: nothing). `pids`: its
    processes, the kernel last (its frames are the memfds named l4py-ram-KERNELPID; other
    systems of this process may hold theirs)."""
    import psutil
    left = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                left.append(f"process {pid}")
        except psutil.NoSuchProcess:
            pass
    left += [x for x in _naming(run_dir) if x.split(" (")[0] not in left]
    if os.path.isdir(run_dir):
        left += [f"socket {os.path.join(run_dir, f)}" for f in sorted(os.listdir(run_dir))
                 if f.endswith(".sock")]
    left += sorted(f for f in _memfds() - memfds_before
                   if not pids or f.endswith(f"l4py-ram-{pids[-1]}") or f"l4py-ram-{pids[-1]} " in f)
    left += [f"/dev/shm/{f}" for f in sorted(_shm() - shm_before)]
    return left


def wait_for(pred: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def caller_blocked_on(root: L4, caller: L4, caller_slot: int, gate: int,
                      data: bytes = b"are you there?") -> tuple[threading.Thread, dict[str, Any]]:
    """Start `caller` calling `gate` in a thread and wait (via `root`'s view of
    `caller_slot`) until it is blocked sending; its error, if the call ends in one, lands in
    the dict's "err" (its answer in "msg")."""
    result: dict[str, Any] = {}

    def call() -> None:
        try:
            result["msg"] = caller.call(gate, data)
        except Exception as e:          # noqa: BLE001 — the test asserts which
            result["err"] = e
    th = threading.Thread(target=call)
    th.start()
    wait_for(lambda: root.cap_inspect(caller_slot)["state"] == "sending",
             what="the caller to block sending on the gate's thread")
    return th, result


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
        self._before = (_memfds(), _shm())
        self.leaks: list[str] = []
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
            self.close(check=False)
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

    def close(self, check: bool = True) -> None:
        """End every task and the kernel; then, with `check`, raise `LeakError` if anything
        of the system is left (`self.leaks` holds the list either way)."""
        for t in getattr(self, "tasks", []):
            t.kill()
        for t in getattr(self, "tasks", []):
            try:
                t.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if hasattr(self, "root"):
            self.root.close()
        if self.kernel.poll() is not None and os.path.isdir(self.run_dir):
            # The kernel died before us (a test killed it): its sockets are stale and ours to
            # remove, as the launcher does. A kernel we end below must remove them itself.
            for f in os.listdir(self.run_dir):
                if f.endswith(".sock"):
                    os.unlink(os.path.join(self.run_dir, f))
        if self.kernel.poll() is None:
            self.kernel.terminate()
            try:
                self.kernel.wait(10)
            except subprocess.TimeoutExpired:
                self.kernel.kill()
                self.kernel.wait()
        pids = [t.pid for t in getattr(self, "tasks", [])] + [self.kernel.pid]
        self.leaks = leaks(self.run_dir, pids, *self._before)
        if self._tmp is not None:
            self._tmp.cleanup()
        if check and self.leaks:
            raise LeakError(f"system in {self.run_dir} left behind: {'; '.join(self.leaks)}")

    def __enter__(self) -> "System":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close(check=exc[0] is None)

