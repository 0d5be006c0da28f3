"""The spawner: a pre-forked process that starts task processes on request.

`python -m launcher.zygote` imports the task runtime (kernel.user.client, zmq, msgpack) and the
image's task modules once, then forks a task for every request instead of starting a fresh
interpreter (≈ 2 ms instead of ≈ 250 ms). `--exec` mode forks and execs
`python -m kernel.user.task` instead (for comparison and for code that must not share a parent).

It is also the janitor of its run directory: it dies with the launcher (parent-death
SIGTERM), and whenever it ends — launcher gone, its pipe closed, SIGTERM — it kills every task
it started (they also die with it by parent-death SIGKILL) and removes the socket files it was
told about, so even `kill -9` of the launcher leaves no process and no socket behind.

Protocol (JSON lines; requests on its stdin, answers and events on its stdout):
    {"op": "spawn", "id": N, "target": "MOD:FN", "args": [...], "env": {...}, "log": PATH,
     "cwd": DIR, "secret": BOOL, "sandbox": PLAN | null}
        -> {"id": N, "pid": P} | {"id": N, "error": "..."}
    With "secret": true the launcher has first sent, over the descriptor socket (`--fds`, a
    SOCK_SEQPACKET pair), the read end of a pipe holding the task's secrets
    (`kernel.user.spawn.secret_payload`). The zygote passes that descriptor on to the child
    and names it in L4_SECRET_FD; it never reads it, so no secret is ever in the zygote's
    memory, which every later task would inherit by fork. The child applies PLAN
    (`launcher.sandbox.enter`: uid, capabilities, Landlock, seccomp) before any task code.
    {"op": "signal", "pid": P, "sig": S}       (only to pids it started; no answer)
    event: {"event": "exit", "pid": P, "status": S}   (S: exit code, -N for signal N)

Ownership: single-threaded; the launcher's main thread is the only writer of its stdin.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from kernel.osutil import freeze_heap
# PROJECT_ROOT is re-exported: the launcher's modules find the project's files by it.
from kernel.user.client import ENV_SECRET_FD
from kernel.user.spawn import PROJECT_ROOT, TASK_MODULE, argv as task_argv

from . import sandbox


# ---------------------------------------------------------------------------
# Zygote side

class Zygote:
    def __init__(self, out_fd: int, exec_mode: bool, cleanup: list[str],
                 fds: socket.socket | None = None, trees: Sequence[str] = ()) -> None:
        self.out_fd = out_fd
        self.exec_mode = exec_mode
        self.cleanup = cleanup
        self.fds = fds                 # descriptors from the launcher (secret pipes)
        self.trees = list(trees)       # directories removed at the end (the scratch tree)
        self.children: set[int] = set()
        self.buf = b""
        self.stopping = False          # set by SIGTERM; run() then returns
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)

    def emit(self, obj: dict[str, Any]) -> None:
        data = (json.dumps(obj) + "\n").encode()
        while data:
            data = data[os.write(self.out_fd, data):]

    def spawn(self, req: dict[str, Any]) -> int:
        secret = -1
        if req.get("secret"):
            if self.fds is None:
                raise ValueError("a secret descriptor was announced but there is no --fds socket")
            _, got, _, _ = socket.recv_fds(self.fds, 16, 1)
            if len(got) != 1:
                raise ValueError("the launcher's secret descriptor did not arrive")
            secret = got[0]
        # 0600: a task reads only its own log, through this descriptor (it cannot open others)
        log = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            if req.get("sandbox") is not None:
                sandbox.before_fork(req["sandbox"])     # scratch dir, shared mount namespace
            pid = os.fork()
            if pid == 0:
                self._child(req, log, secret)      # never returns
            return pid
        finally:
            os.close(log)
            if secret >= 0:
                os.close(secret)

    def _child(self, req: dict[str, Any], log: int, secret: int) -> None:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for s in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
                signal.signal(s, signal.SIG_DFL)
            from kernel.osutil import die_with_parent
            die_with_parent(signal.SIGKILL)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            for fd in (null, log, self.out_fd, self.wake_r, self.wake_w):
                os.close(fd)
            if self.fds is not None:
                self.fds.close()
            env = dict(req["env"])
            if secret >= 0:
                os.set_inheritable(secret, True)      # exec mode: the task reads it there
                env[ENV_SECRET_FD] = str(secret)
            # Both are the interpreter's TextIOWrappers here; typeshed types them as TextIO.
            sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
            sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
            if req.get("sandbox") is not None:     # it makes the scratch directory (the cwd)
                sandbox.enter(req["sandbox"])
                # a change of uid cleared the parent-death signal: ask again
                die_with_parent(signal.SIGKILL)
            os.chdir(req["cwd"])
            if self.exec_mode:     # the launcher built the env (kernel.user.spawn.environment)
                os.execve(sys.executable, task_argv(req["target"], req["args"]),
                          {**env, "PYTHONUNBUFFERED": "1"})
            os.environ.clear()
            os.environ.update(env)
            for d in reversed(env.get("PYTHONPATH", "").split(os.pathsep)):
                if d and d not in sys.path:     # e.g. the directory of an attached snippet
                    sys.path.insert(0, d)
            sys.argv = [TASK_MODULE, req["target"], *req["args"]]
            from kernel.user import task
            code = task.main([req["target"], *req["args"]])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code & 0xFF)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.emit({"event": "exit", "pid": pid, "status": os.waitstatus_to_exitcode(status)})

    def handle(self, line: bytes) -> None:
        req = json.loads(line)
        if req["op"] == "spawn":
            try:
                pid = self.spawn(req)
                self.children.add(pid)
                self.emit({"id": req["id"], "pid": pid})
            except Exception as e:
                self.emit({"id": req["id"], "error": f"{type(e).__name__}: {e}"})
        elif req["op"] == "signal" and req["pid"] in self.children:
            try:
                os.kill(req["pid"], req["sig"])
            except ProcessLookupError:
                pass

    def run(self) -> None:
        while not self.stopping:
            try:
                ready, _, _ = select.select([0, self.wake_r], [], [])
            except InterruptedError:
                continue
            if self.wake_r in ready:
                try:
                    while os.read(self.wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
                self.reap()
            if 0 in ready:
                data = os.read(0, 65536)
                if not data:
                    return
                self.buf += data
                while b"\n" in self.buf:
                    line, self.buf = self.buf.split(b"\n", 1)
                    if line.strip():
                        self.handle(line)

    def finish(self) -> None:
        """Kill every task we started, reap them, remove the socket files."""
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        for path in self.cleanup:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError:
                pass
        for tree in self.trees:
            shutil.rmtree(tree, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m launcher.zygote")
    p.add_argument("--exec", action="store_true", help="fork+exec each task instead of forking")
    p.add_argument("--preload", action="append", default=[], help="module to import up front")
    p.add_argument("--cleanup", action="append", default=[], help="file to remove at the end")
    p.add_argument("--cleanup-tree", action="append", default=[],
                   help="directory to remove at the end")
    p.add_argument("--fds", type=int, default=-1, help="socket the launcher sends fds over")
    ns = p.parse_args(argv)
    from kernel.osutil import die_with_parent
    die_with_parent(signal.SIGTERM)
    out_fd = os.dup(1)
    os.dup2(2, 1)                  # stray prints must not corrupt the protocol
    fds = socket.socket(fileno=ns.fds) if ns.fds >= 0 else None
    z = Zygote(out_fd, ns.exec, ns.cleanup, fds, ns.cleanup_tree)

    def term(signum: int, frame: Any) -> None:
        # A flag, not an exception: a launcher killed by SIGKILL may deliver several
        # parent-death SIGTERMs (one per exiting thread), and an exception raised by a later
        # one inside the `finally` below would skip the cleanup. The wakeup fd ends select().
        z.stopping = True

    signal.signal(signal.SIGTERM, term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, lambda s, f: None)
    signal.set_wakeup_fd(z.wake_w)
    sandbox.prepare()              # the seccomp filters, built once for every child
    if not ns.exec:
        import kernel.user.client  # noqa: F401  (the point: import once, fork many times)
        import kernel.user.task  # noqa: F401
        for mod in ns.preload:
            try:
                __import__(mod)
            except Exception as e:
                print(f"[zygote] preload of {mod} failed: {e}", file=sys.stderr, flush=True)
    freeze_heap()                  # every child inherits the preloaded heap as permanent
    z.emit({"event": "ready", "pid": os.getpid()})
    try:
        z.run()
    except SystemExit:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        z.finish()
    return 0


# ---------------------------------------------------------------------------
# Launcher side

class SpawnError(Exception):
    pass


class Spawner:
    """The launcher's handle on its zygote. Not thread-safe: main thread only."""

    def __init__(self, env: dict[str, str], exec_mode: bool = False, preload: Sequence[str] = (),
                 cleanup: Sequence[str] = (), stderr: Any = None,
                 cleanup_trees: Sequence[str] = ()) -> None:
        cmd = [sys.executable, "-m", "launcher.zygote"]
        cmd += ["--exec"] if exec_mode else []
        for m in preload:
            cmd += ["--preload", m]
        for c in cleanup:
            cmd += ["--cleanup", c]
        for c in cleanup_trees:
            cmd += ["--cleanup-tree", c]
        self.fds, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        cmd += ["--fds", str(theirs.fileno())]
        self.proc = subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=stderr, process_group=0,
                                     pass_fds=(theirs.fileno(),))
        theirs.close()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.out = self.proc.stdout.fileno()
        os.set_blocking(self.out, False)
        self.buf = b""
        self.events: list[dict[str, Any]] = []     # exit events not yet collected
        self.next_id = 1
        self.ready = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def fileno(self) -> int:
        return self.out

    def _send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(obj) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            raise SpawnError("the spawner (zygote) is gone") from None

    def pump(self, block: bool = False) -> list[dict[str, Any]]:
        """Read what the zygote wrote; answers are returned, events are queued."""
        if block:
            select.select([self.out], [], [], 5.0)
        try:
            data = os.read(self.out, 65536)
        except BlockingIOError:
            return []
        if not data:
            raise SpawnError(f"the spawner (zygote, pid {self.proc.pid}) exited")
        self.buf += data
        answers = []
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            msg = json.loads(line)
            if msg.get("event") == "ready":
                self.ready = True
            elif "event" in msg:
                self.events.append(msg)
            else:
                answers.append(msg)
        return answers

    def wait_ready(self) -> None:
        while not self.ready:
            self.pump(block=True)

    def spawn(self, target: str, args: list[str], env: dict[str, str], log: str, cwd: str,
              secret: bytes | None = None, sandbox: dict[str, Any] | None = None) -> int:
        """Start a task process; `secret` (kernel.user.spawn.secret_payload) reaches it
        through a pipe, `sandbox` (launcher.sandbox.plan) is applied before its code runs."""
        rid = self.next_id
        self.next_id += 1
        if secret is not None:
            self._send_secret(secret)
        self._send({"op": "spawn", "id": rid, "target": target, "args": args, "env": env,
                    "log": log, "cwd": cwd, "secret": secret is not None, "sandbox": sandbox})
        while True:
            for a in self.pump(block=True):
                if a.get("id") == rid:
                    if "error" in a:
                        raise SpawnError(a["error"])
                    return int(a["pid"])

    def _send_secret(self, payload: bytes) -> None:
        """A pipe holding `payload` (a few hundred bytes: within the pipe buffer, so the write
        never blocks), its read end sent to the zygote, both our ends closed."""
        r, w = os.pipe()
        try:
            os.write(w, payload)
            os.close(w)
            w = -1
            socket.send_fds(self.fds, [b"s"], [r])
        except OSError as e:
            raise SpawnError(f"cannot hand the zygote a secret descriptor: {e}") from None
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)

    def signal(self, pid: int, sig: int) -> None:
        self._send({"op": "signal", "pid": pid, "sig": int(sig)})

    def take_events(self) -> list[dict[str, Any]]:
        ev, self.events = self.events, []
        return ev

    def close(self, timeout: float = 5.0) -> None:
        """Close its pipe: it kills its tasks, removes the socket files and exits."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.fds.close()


if __name__ == "__main__":
    sys.exit(main())
