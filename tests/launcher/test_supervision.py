"""Supervision with real processes: policies, budgets, dependents, recovery, attach, routes.

The launcher runs in the test process (its main loop driven by `step()`), the kernel, the
zygote and every task are real processes.
"""
from __future__ import annotations

import os
import signal
import time
from typing import Iterator

import pytest

from launcher.image import load_image
from launcher.system import Launcher

from .helpers import CLIENT, HELLO, write

T = "tests.launcher.tasks"


@pytest.fixture
def boot(tmp_path) -> Iterator:
    started: list[Launcher] = []

    def make(body: str) -> Launcher:
        img = load_image(write(str(tmp_path / "img.toml"), '[system]\nname = "t"\n' + body))
        la = Launcher(img, str(tmp_path / "run"), on_event=lambda s: None)
        started.append(la)
        la.boot(timeout=30)
        return la

    yield make
    for la in started:
        la.shutdown()


def until(la: Launcher, pred, timeout: float = 20.0) -> None:
    la.run_until(pred, timeout)


def log(la: Launcher, task: str) -> str:
    with open(os.path.join(la.logs, f"{task}.log")) as f:
        return f.read()


def test_never_leaves_a_failed_task_down(boot):
    la = boot(f'[[task]]\nname = "x"\nrun = "{T}:exit_with"\nargs = ["3", "50"]\nrestart = "never"\n')
    until(la, lambda: la.tasks["x"].state == "failed")
    assert la.tasks["x"].restarts == 0 and "status 3" in la.tasks["x"].last_exit


def test_on_failure_restarts_crashes_but_not_clean_exits(boot):
    la = boot(f'''
[[task]]
name = "ok"
run = "{T}:exit_with"
args = ["0", "50"]
restart = "on-failure"
[[task]]
name = "bad"
run = "{T}:crash"
restart = "on-failure"
restart_budget = "2/60s"
''')
    until(la, lambda: la.tasks["ok"].state == "exited" and la.tasks["bad"].state == "failed")
    assert la.tasks["ok"].restarts == 0
    assert la.tasks["bad"].restarts == 2 and "budget exhausted" in la.tasks["bad"].last_exit
    assert "RuntimeError: crashing on purpose" in log(la, "bad")


def test_always_restarts_clean_exits_until_the_budget_runs_out(boot):
    la = boot(f'[[task]]\nname = "x"\nrun = "{T}:exit_with"\nargs = ["0", "20"]\n'
              f'restart = "always"\nrestart_budget = "3/60s"\n')
    until(la, lambda: la.tasks["x"].state == "failed")
    assert la.tasks["x"].restarts == 3
    la.cmd_start("x")                       # a user start resets the budget
    until(la, lambda: la.tasks["x"].restarts > 3)


CLIENT_SERVER = f'''
[[task]]
name = "hello"
run = "{HELLO}"
provides = ["hello"]
restart = "on-failure"
restart_budget = "50/60s"
[[task]]
name = "client"
run = "{CLIENT}"
args = ["t", "20"]
[task.caps]
hello = {{ service = "hello", rights = "invoke", label = 5 }}
'''


def test_client_recovers_after_its_server_is_killed(boot):
    la = boot(CLIENT_SERVER)
    until(la, lambda: "(#3, label 5)" in log(la, "client"))
    old = la.tasks["hello"].pid
    os.kill(old, signal.SIGKILL)
    until(la, lambda: la.tasks["hello"].restarts == 1 and la.tasks["hello"].state == "running")
    assert la.tasks["hello"].pid != old
    # the client's old capability reaches the new incarnation: its count starts again at #1
    until(la, lambda: "(#2, label 5)" in log(la, "client").split("(#3, label 5)", 1)[1])
    assert la.tasks["client"].restarts == 0 and la.tasks["client"].state == "running"


def test_dependents_restart_with_their_server(boot):
    la = boot(CLIENT_SERVER.replace('restart_budget = "50/60s"',
                                    'restart_budget = "50/60s"\nrestart_dependents = true'))
    client_pid = la.tasks["client"].pid
    os.kill(la.tasks["hello"].pid, signal.SIGKILL)
    until(la, lambda: la.tasks["client"].restarts == 1 and la.tasks["client"].state == "running")
    assert la.tasks["client"].pid != client_pid


def test_stop_start_restart(boot):
    la = boot(CLIENT_SERVER)
    la.cmd_stop("hello")
    until(la, lambda: la.tasks["hello"].state == "stopped")
    assert la.tasks["hello"].restarts == 0
    la.cmd_start("hello")
    until(la, lambda: la.tasks["hello"].state == "running")
    pid = la.tasks["hello"].pid
    la.cmd_restart("hello")
    until(la, lambda: la.tasks["hello"].pid != pid and la.tasks["hello"].state == "running")


def test_attach_a_server_and_route_it_to_a_running_task(boot):
    la = boot(f'''
[[task]]
name = "hello"
run = "{HELLO}"
provides = ["hello"]
[[task]]
name = "waiter"
run = "{T}:lookup_then_call"
args = ["echo"]
''')
    ans = la.cmd_attach({"task": [
        {"name": "echo", "run": HELLO, "args": ["echo"], "provides": ["echo"]},
        {"name": "user", "run": CLIENT, "args": ["u", "20", "2", "echo"], "caps": {"echo": "echo"},
         "restart": "never"}],
        "route": [{"task": "waiter", "service": "echo", "label": 9}]}, "snippet.toml")
    assert ans["tasks"] == ["echo", "user"] and ans["routes"] == ["waiter.echo"]
    until(la, lambda: la.tasks["user"].state == "exited")
    assert "echo, u 1" in log(la, "user")
    until(la, lambda: "LOOKUP echo, via lookup" in log(la, "waiter"))
    assert "label 9" in log(la, "waiter")
    bad = la.cmd_attach({"task": [{"name": "n", "run": HELLO, "caps": {"x": "nosuch"}}]}, "s.toml")
    assert bad["ok"] is False and "unknown service 'nosuch'" in bad["problems"][0]


def test_env_and_caps_reach_the_task(boot):
    la = boot(f'''
[[task]]
name = "hello"
run = "{HELLO}"
provides = ["hello"]
[[task]]
name = "e"
run = "{T}:show_env"
env = {{ GREETING = "hi" }}
caps = {{ h = "hello" }}
''')
    until(la, lambda: "ENV" in log(la, "e"))
    assert "ENV GREETING=hi caps=['h', 'launcher']" in log(la, "e")
    rows = {r["name"]: r for r in la.cmd_ps()["tasks"]}
    assert rows["e"]["ipc"] is not None and rows["e"]["rss_kb"] > 0
    time.sleep(0)


def _waits(la: Launcher) -> list[str]:
    return [e.rpartition("restarting in ")[2].rstrip("s") for _, e in la.events if "crash loop" in e]


def test_a_crash_loop_backs_off_doubling_up_to_the_limit(boot):
    la = boot(f'[[task]]\nname = "x"\nrun = "{T}:exit_with"\nargs = ["1", "20"]\n'
              f'restart = "on-failure"\nrestart_budget = "100/60s"\n'
              f'restart_backoff = "200ms..800ms"\n')
    until(la, lambda: la.tasks["x"].restarts >= 5, timeout=30)
    # the first quick death restarts at once; then 0.2 s, doubling, at most 0.8 s
    assert _waits(la)[:4] == ["0.2", "0.4", "0.8", "0.8"]
    until(la, lambda: la.tasks["x"].state == "backoff")
    assert la.cmd_ps()["tasks"][0]["state"] == "backoff"
    seen = len(_waits(la))
    la.cmd_start("x")                        # a user start ends the wait and the count
    until(la, lambda: len(_waits(la)) > seen, timeout=30)
    assert _waits(la)[seen] == "0.2"
    until(la, lambda: la.tasks["x"].state == "backoff")
    la.cmd_stop("x")                         # stopped while waiting: no restart comes
    restarts = la.tasks["x"].restarts
    assert la.tasks["x"].state == "stopped"
    with pytest.raises(Exception, match="timed out"):
        until(la, lambda: la.tasks["x"].restarts > restarts, timeout=1.5)
    assert la.tasks["x"].state == "stopped"


def test_without_backoff_a_crash_loop_restarts_at_once(boot):
    la = boot(f'[[task]]\nname = "x"\nrun = "{T}:exit_with"\nargs = ["1", "20"]\n'
              f'restart = "on-failure"\nrestart_budget = "3/60s"\n')
    until(la, lambda: la.tasks["x"].state == "failed")
    assert la.tasks["x"].restarts == 3 and _waits(la) == []


REMOTE_IMAGE = f"""
[system]
name = "r"
tcp = "127.0.0.1:0"

[[task]]
name = "far"
run = "servers.hello.server:serve"
args = ["far"]
provides = ["hello"]
remote = true

[[task]]
name = "near"
run = "servers.hello.client:run"
args = ["world", "20"]
[task.caps]
hello = {{ service = "hello", rights = "invoke", label = 1 }}
"""


def _run_remote(la: Launcher) -> "subprocess.Popen[bytes]":
    import subprocess
    import sys

    from kernel.user.testing import PROJECT_ROOT
    r = la.cmd_remote("far")
    # "the other machine": a process that knows only the endpoint, the key and the secret
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": PROJECT_ROOT, **r["env"]}
    return subprocess.Popen([sys.executable, *r["argv"][1:]], env=env, cwd=PROJECT_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_a_remote_task_is_awaited_served_and_awaited_again_after_its_death(tmp_path):
    img = load_image(write(str(tmp_path / "r.toml"), REMOTE_IMAGE))
    la = Launcher(img, str(tmp_path / "run"), on_event=lambda s: None)
    procs = []
    try:
        la.boot(timeout=30)                       # does not wait for the remote process
        assert la.tasks["far"].state == "awaiting" and la.tasks["near"].state == "waiting"
        first = la.cmd_remote("far")["env"]
        assert first["L4_KERNEL"].startswith("tcp://127.0.0.1:") and len(first["L4_KERNEL_KEY"]) == 40
        procs.append(_run_remote(la))
        until(la, lambda: la.tasks["far"].state == "running" and la.tasks["near"].state == "running")
        until(la, lambda: "far, world" in log(la, "near"))
        with pytest.raises(ValueError, match="already connected"):
            la.cmd_remote("far")
        with pytest.raises(ValueError, match="another machine"):
            la.cmd_kill("far")
        procs[0].kill()                           # the remote machine's process dies
        until(la, lambda: la.tasks["far"].restarts == 1 and la.tasks["far"].state == "awaiting")
        assert la.tasks["far"].last_exit.startswith("died")   # no status: no process here
        second = la.cmd_remote("far")["env"]
        assert second["L4_SECRET"] != first["L4_SECRET"]       # a new incarnation
        procs.append(_run_remote(la))
        until(la, lambda: la.tasks["far"].state == "running")
        la.cmd_restart("far")                     # a new incarnation, awaited again
        until(la, lambda: la.tasks["far"].restarts == 2 and la.tasks["far"].state == "awaiting")
        assert la.cmd_remote("far")["env"]["L4_SECRET"] != second["L4_SECRET"]
        la.cmd_stop("far")                        # ends the incarnation in the kernel
        until(la, lambda: la.tasks["far"].state == "stopped")
    finally:
        for p in procs:
            p.kill()
            p.wait()
        la.shutdown()


def test_remote_tasks_need_a_tcp_port_and_no_memory(tmp_path):
    from launcher.image import ImageError
    bad = REMOTE_IMAGE.replace('tcp = "127.0.0.1:0"\n', "").replace(
        "remote = true", "remote = true\nmemory = \"1M\"")
    with pytest.raises(ImageError) as e:
        load_image(write(str(tmp_path / "bad.toml"), bad))
    text = str(e.value)
    assert "task[0] (far).remote: a remote task needs [system] tcp" in text
    assert "cannot have memory or devices" in text
