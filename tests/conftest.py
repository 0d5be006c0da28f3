"""Shared fixtures: real kernels in temporary run directories, real task processes.

`Kit` wraps `kernel.user.testing.System` (a booted kernel plus the root task, which is the test
process itself) with what the kernel tests need:

- `kit.agent()`: spawn a remote-controlled task (`tests.kernel.tasks:agent`). `agent.do(op, ...)`
  makes the agent perform one system call and answers its result (or raises the library's
  exception for the error the kernel gave the agent); `agent.start(...)` does the same in the
  background and answers a Future, for calls that block; `agent.wait_in_op(state)` waits until
  the agent is blocked in that state inside the command.
  Each agent is driven by its own root-side L4 thread, so the root's main thread stays free to
  receive (`kit.collect`) and to inspect.
- `kit.server()`: spawn a task and a gate (held by root) bound to its main thread.
- `kit.state(thread_slot)`: the kernel's view of a thread (sending, receiving, await_reply …).
- `kit.collect(label)`: receive on root's main thread until a message with that label arrives;
  messages with other labels are kept for later `collect` calls.

Fixtures: `shared_kit` (one system per test module, for tests that leave each other alone)
and `kit` (a fresh system per test, for death, clean-up and quota tests). Tear-down is
`System.close()`, which fails the test (LeakError) if any process, socket file, memfd or
shared-memory segment of the system is left.
"""
from __future__ import annotations

import os
from pathlib import Path
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterator

import pytest

from kernel.user import errors
from kernel.abi import Rights, pack, unpack
from kernel.user.client import L4, Message
from kernel.user.testing import System, TaskProc, wait_for

from tests.kernel.tasks import CTRL_LABEL
from tests.leaks import Snapshot

TASKS = "tests.kernel.tasks"


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """`@pytest.mark.slow` tests (soaks, long runs) run only with L4PY_SLOW=1: the default
    run stays within the suite's time budget."""
    if os.environ.get("L4PY_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set L4PY_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
DO_TIMEOUT = 20.0        # generous bound on one agent operation (a hang fails, never a timing)


LOG_TAIL = 30            # lines of each task's log shown when a booted-system test fails


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    """A failed test that booted a system under its tmp_path, or uses a shared system (a
    fixture answering a dict whose "rd" is the run directory), shows the tail of the
    launcher's log and of every task's (run-dir/launcher.log, run-dir/logs/*.log) in its
    report: CI keeps no run directories, and "timed out waiting for ..." says nothing of
    why without them."""
    outcome = yield
    report = outcome.get_result()
    args = getattr(item, "funcargs", {})
    if not report.failed:
        return
    roots = [args["tmp_path"]] if "tmp_path" in args else []
    roots += [Path(v["rd"]) for v in args.values() if isinstance(v, dict) and isinstance(v.get("rd"), str)]
    for root in roots:
        logs = sorted(root.glob("**/launcher.log")) + sorted(root.glob("**/logs/*.log"))
        for log in logs[:40]:
            try:
                lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL:]
            except OSError:
                continue
            report.sections.append((f"log {log.relative_to(root)}", "\n".join(lines)))


class Agent:
    """A spawned `agent` task and the root-side means to drive it."""

    def __init__(self, kit: "Kit", proc: TaskProc, ctrl: int, caller: L4, caller_slot: int) -> None:
        self.kit = kit
        self.proc = proc
        self.ctrl = ctrl                  # root's slot of the agent's control gate
        self.caller = caller              # root thread that sends the commands
        self.caller_slot = caller_slot    # root's capability to that thread
        self.next_slot = 64               # where `Kit.give` maps capabilities into it
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"agent-{proc.name}")

    @property
    def name(self) -> str:
        return self.proc.name

    @property
    def thread(self) -> int:
        """Root's capability to the agent's main thread."""
        return self.proc.thread

    @property
    def task(self) -> int:
        """Root's capability to the agent's task."""
        return self.proc.slot

    @property
    def caps(self) -> dict[str, int]:
        return self.proc.caps

    def _command(self, op: str, args: tuple[Any, ...], kw: dict[str, Any]) -> Any:
        msg = self.caller.call(self.ctrl, pack([op, list(args), kw]))
        res = unpack(msg.data)
        if "ok" in res:
            return res["ok"]
        if res["err"] == -1:
            raise RuntimeError(res["reason"])
        raise errors.from_code(res["err"], res["reason"])

    def start(self, op: str, *args: Any, **kw: Any) -> "Future[Any]":
        return self._pool.submit(self._command, op, args, kw)

    def do(self, op: str, *args: Any, **kw: Any) -> Any:
        return self.start(op, *args, **kw).result(DO_TIMEOUT)

    def wait_in_op(self, state: str, timeout: float = 10.0) -> None:
        """Wait until the agent, running a command from `start`, is blocked in `state`
        (not merely back in its control loop: the command is still unanswered)."""
        kit = self.kit
        wait_for(lambda: kit.state(self.caller_slot) == "await_reply" and kit.state(self.thread) == state,
                 timeout, f"agent {self.name} to be {state} inside a command")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class Kit:
    def __init__(self, **system_kw: Any) -> None:
        self.sys = System(**system_kw)
        self.root = self.sys.root
        self.agents: list[Agent] = []
        self._callers: list[L4] = []
        self._stash: list[Message] = []

    # -- tasks -------------------------------------------------------------------
    def agent(self, name: str | None = None, *, quota: int = 64,
              caps: dict[str, int | tuple[int, int]] | None = None,
              handler: int | None = None) -> Agent:
        proc = self.sys.spawn(f"{TASKS}:agent", name or f"agent{len(self.agents)}", caps=caps,
                              quota=quota, handler=handler)
        ctrl = self.root.create_gate(CTRL_LABEL, thread=proc.thread)
        caller, caller_slot = self._root_thread()
        a = Agent(self, proc, ctrl, caller, caller_slot)
        self.agents.append(a)
        return a

    def server(self, label: int, target: str = "echo_server", name: str | None = None, *,
               caps: dict[str, int | tuple[int, int]] | None = None,
               handler: int | None = None, quota: int = 64) -> tuple[TaskProc, int]:
        """Spawn `target` and create a gate (root holds it) with `label` bound to its thread."""
        proc = self.sys.spawn(f"{TASKS}:{target}", name or target, caps=caps, quota=quota,
                              handler=handler)
        return proc, self.root.create_gate(label, thread=proc.thread)

    def give(self, agent: Agent, slot: int, rights: int = Rights.ALL) -> int:
        """Map root's `slot` into `agent` (rights reduced to `rights`); answers the agent's slot."""
        dst = agent.next_slot
        agent.next_slot += 1
        self.root.task_map(agent.task, slot, dst, rights)
        return dst

    def gate_to(self, agent: Agent, label: int) -> int:
        """A new gate (root holds it) bound to `agent`'s main thread."""
        return self.root.create_gate(label, thread=agent.thread)

    def spawn(self, target: str, name: str | None = None, **kw: Any) -> TaskProc:
        return self.sys.spawn(f"{TASKS}:{target}", name, **kw)

    def _root_thread(self) -> tuple[L4, int]:
        new = self.root.create_thread()
        t = L4(self.sys.sock, new.secret, ctx=self.root.ctx)
        self._callers.append(t)
        return t, new.slot

    def root_thread(self) -> L4:
        """Another L4 thread of the root task (for blocking calls from the test process)."""
        return self._root_thread()[0]

    # -- observing the kernel --------------------------------------------------------
    def state(self, thread_slot: int) -> str:
        return str(self.root.cap_inspect(thread_slot)["state"])

    def wait_state(self, thread_slot: int, state: str, timeout: float = 10.0) -> None:
        wait_for(lambda: self.state(thread_slot) == state, timeout,
                 f"thread in root slot {thread_slot} to be {state}")

    def task_alive(self, task_id: int) -> bool:
        return any(t["id"] == task_id for t in self.root.kernel_info()["tasks"])

    def wait_gone(self, proc: TaskProc, timeout: float = 10.0) -> None:
        """Wait until the kernel has noticed that `proc`'s task is gone."""
        wait_for(lambda: not self.task_alive(proc.task_id), timeout, f"task {proc.name} to go")

    def collect(self, label: int, timeout: float = 10.0) -> Message:
        """The next message on root's main thread that came with `label` (others are kept)."""
        for i, m in enumerate(self._stash):
            if m.label == label:
                return self._stash.pop(i)
        while True:
            m = self.root.wait(timeout=timeout * 1000)
            if m.label == label:
                return m
            self._stash.append(m)

    # -- tear-down ---------------------------------------------------------------------
    def close(self) -> None:
        # Tasks first: a command still blocked in an agent then gets its answer (PeerDied)
        # and the pool threads let go of their sockets before we close them (closing a ZeroMQ
        # socket under a thread blocked on it aborts the process).
        for t in self.sys.tasks:
            t.kill()
            t.wait()
        for a in self.agents:
            a.close()
        for c in self._callers:
            c.close()
        self.sys.close()      # raises LeakError naming any process, socket or memfd left


@pytest.fixture
def kit() -> Iterator[Kit]:
    k = Kit()
    try:
        yield k
    finally:
        k.close()


@pytest.fixture(scope="module")
def shared_kit() -> Iterator[Kit]:
    k = Kit()
    try:
        yield k
    finally:
        k.close()


@pytest.fixture(autouse=True)
def nothing_left_behind(request: pytest.FixtureRequest,
                        tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test: no process, socket file, memfd or /dev/shm segment it started outlives it
    (tests/leaks.py says exactly what counts)."""
    base = str(tmp_path_factory.getbasetemp())
    before = Snapshot.take(base)
    yield
    tmp = request.node.funcargs.get("tmp_path")
    left = before.left(base, str(tmp) if tmp is not None else None)
    if left:
        pytest.fail(f"{request.node.nodeid} left behind: {'; '.join(left)}", pytrace=False)
