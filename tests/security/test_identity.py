"""Identity that cannot be stolen (issue 11, item 4), attacked from outside.

The kernel binds a connection to a thread only if it presents the thread's one-time secret
*and* comes from the task's own process (SO_PEERCRED of the `ipc://` connection, against
the pid TASK_WATCH named, or the pid of the task's first thread). Each test hands a hostile
process a secret directly — as if it had leaked — and checks that the secret is no good
from there, the honest process still connects, and the kernel counts the refusal
(KERNEL_INFO stats.wrong_process, errors.NOT_AUTH). kernel.sock is reachable by other uids
but nobody else can replace it; the kernel's memory (where its Curve secret key lives) is
not readable by another uid.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any, Callable, Iterator

import pytest

from kernel.user import spawn
from kernel.user.client import L4
from kernel.user.testing import PROJECT_ROOT, System, wait_for
from servers.hello.protocol import HELLO

from .hostile import as_uid, dir_in_tmp, run_python

HELLO_SERVER = "servers.hello.server:serve"

# A thief: says HELLO with the secret it was handed; prints how the kernel answered.
TRY_HELLO = """
import json, os
from kernel.user import errors
from kernel.user.client import L4
try:
    L4(os.environ["SOCK"], bytes.fromhex(os.environ["SECRET"])).close()
    print(json.dumps({"bound": True}))
except errors.L4Error as e:
    print(json.dumps({"refused": type(e).__name__, "reason": str(e)}))
"""

# A thief that holds on: binds, says so, then waits for a line and tries one call.
BIND_AND_HOLD = """
import json, os, sys
from kernel.user import errors
from kernel.user.client import L4
l4 = L4(os.environ["SOCK"], bytes.fromhex(os.environ["SECRET"]))
print("bound", flush=True)
sys.stdin.readline()
try:
    l4.kernel_info()
    print(json.dumps({"call": "ok"}), flush=True)
except errors.L4Error as e:
    print(json.dumps({"call": type(e).__name__}), flush=True)
"""


def counters(s: System) -> tuple[int, int]:
    info = s.root.kernel_info()
    return info["stats"]["wrong_process"], info["errors"].get("NOT_AUTH", 0)


def late_start(w: spawn.Wiring, sock: str, target: str = HELLO_SERVER) -> subprocess.Popen[bytes]:
    """The task's honest process, which connects only once told to (a line on stdin): the
    shell execs the task in place, so the pid we watch is the pid that connects."""
    env = spawn.environment(w, sock, base=os.environ, pythonpath=PROJECT_ROOT)
    return subprocess.Popen(["/bin/sh", "-c", 'read go; exec "$0" "$@"', *spawn.argv(target)],
                            env=env, cwd=PROJECT_ROOT, stdin=subprocess.PIPE)


def go(p: subprocess.Popen[bytes]) -> None:
    assert p.stdin is not None
    p.stdin.write(b"go\n")
    p.stdin.close()


def end(*procs: subprocess.Popen[Any]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def connected(s: System, thread_slot: int) -> bool:
    return bool(s.root.cap_inspect(thread_slot).get("connected"))


def test_a_leaked_secret_is_no_good_from_another_process() -> None:
    """The launcher told the kernel the task's pid; a thief with the secret is refused
    (counted), the secret stays unspent, and the task's own process then connects."""
    with System() as s:
        w = spawn.create(s.root, "victim", 64)
        honest = late_start(w, s.sock)
        try:
            spawn.watch(s.root, w, honest.pid)
            wrong, not_auth = counters(s)
            got = run_python(TRY_HELLO, SOCK=s.sock, SECRET=w.task.secret.hex())
            assert got["refused"] == "NotAuthenticated", got
            assert "is not task 'victim''s process" in got["reason"]
            assert counters(s) == (wrong + 1, not_auth + 1)
            assert not connected(s, w.task.thread)
            go(honest)
            wait_for(lambda: connected(s, w.task.thread), 20, "the honest task to connect")
            gate = s.root.create_gate(7, thread=w.task.thread)
            assert "label 7" in HELLO.client(s.root, gate).hello("root")
        finally:
            end(honest)


def test_a_thread_bound_before_task_watch_from_another_process_ends_the_task() -> None:
    """A thief quick enough to say HELLO before TASK_WATCH arrives gets nothing: TASK_WATCH
    finds the thread bound from another process and ends the task (the thief's connection
    with it); the honest process, whose secret was spent, cannot become the task either."""
    with System() as s:
        w = spawn.create(s.root, "victim", 64)
        thief = subprocess.Popen([sys.executable, "-c", BIND_AND_HOLD], cwd=PROJECT_ROOT,
                                 env={**os.environ, "PYTHONPATH": PROJECT_ROOT, "SOCK": s.sock,
                                      "SECRET": w.task.secret.hex()},
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        honest = late_start(w, s.sock)
        try:
            assert thief.stdout is not None and thief.stdin is not None
            assert thief.stdout.readline().strip() == "bound"
            assert connected(s, w.task.thread)
            wrong, _ = counters(s)
            spawn.watch(s.root, w, honest.pid)
            wait_for(lambda: all(t["id"] != w.task.task_id for t in s.root.kernel_info()["tasks"]),
                     10, "the task to end")
            assert counters(s)[0] == wrong + 1
            thief.stdin.write("call\n")
            thief.stdin.flush()
            assert json.loads(thief.stdout.readline())["call"] != "ok"
            go(honest)
            assert honest.wait(20) != 0          # its HELLO is refused: the task is gone
        finally:
            end(thief, honest)


def test_every_thread_of_a_task_comes_from_its_process() -> None:
    """A task's first thread pins its process (no TASK_WATCH here: the test process runs
    the task); another thread's secret is no good from anywhere else."""
    with System() as s:
        new = s.root.create_task("two", 16)
        extra = s.root.create_thread(new.slot)
        main = L4(s.sock, new.secret)
        try:
            wrong, not_auth = counters(s)
            got = run_python(TRY_HELLO, SOCK=s.sock, SECRET=extra.secret.hex())
            assert got["refused"] == "NotAuthenticated", got
            assert counters(s) == (wrong + 1, not_auth + 1)
            second = L4(s.sock, extra.secret, ctx=main.ctx)     # from the task's process
            assert second.thread_id == extra.thread_id
            second.close()
        finally:
            main.close()


@pytest.fixture
def careless_run_dir() -> Iterator[str]:
    """A run directory anyone may write to (mode 0777), reachable by every uid (in /tmp)."""
    yield from dir_in_tmp(0o777)


def try_to_replace(run_dir: str, kernel_pid: int) -> dict[str, str]:
    """What an unprivileged process manages against kernel.sock and the kernel's process."""
    sock = os.path.join(run_dir, "kernel.sock")
    out: dict[str, str] = {}

    def attempt(name: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
            out[name] = "done"
        except OSError as e:
            out[name] = os.strerror(e.errno or 0)

    def plant() -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(os.path.join(run_dir, "evil.sock"))

    def connect() -> None:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(sock)

    def read(path: str) -> None:
        with open(path, "rb") as f:
            f.read(1)

    attempt("unlink", lambda: os.unlink(sock))
    attempt("rename", lambda: os.rename(sock, sock + ".old"))
    attempt("plant", plant)
    attempt("connect", connect)
    attempt("kernel_mem", lambda: read(f"/proc/{kernel_pid}/mem"))
    attempt("kernel_environ", lambda: read(f"/proc/{kernel_pid}/environ"))
    attempt("kernel_fds", lambda: os.listdir(f"/proc/{kernel_pid}/fd"))
    return out


def test_another_uid_reaches_kernel_sock_but_cannot_replace_it(careless_run_dir: str) -> None:
    """Run as an unprivileged uid: kernel.sock accepts its connection (tasks run under
    uids of their own), but it can neither remove, rename nor put a socket beside it (the
    kernel made its run directory writable by itself alone), nor read the kernel's memory,
    environment or descriptors (its Curve secret key and RAM live there, in no file)."""
    with System(run_dir=careless_run_dir, kernel_args=("--tcp", "127.0.0.1:0")) as s:
        info = s.tcp_info()
        assert set(info) == {"endpoint", "public_key"}     # only the public half is written
        got = as_uid(lambda: try_to_replace(s.run_dir, s.kernel.pid))
        denied = os.strerror(13)                            # EACCES
        assert got == {"unlink": denied, "rename": denied, "plant": denied, "connect": "done",
                       "kernel_mem": denied, "kernel_environ": denied, "kernel_fds": denied}, got
        assert os.stat(s.run_dir).st_mode & 0o022 == 0
        assert os.stat(s.sock).st_mode & 0o777 == 0o666
        new = s.root.create_task("still-works", 8)       # the kernel still serves
        with L4(s.sock, new.secret) as t:
            assert t.task_name == "still-works"
