"""kernel.user.aio.AsyncL4 against a real kernel process: the same calls as coroutines.

Servers are task processes (tests/kernel/rpc_tasks.py) or AsyncL4 threads in this process;
the asyncio tests run on pytest-asyncio's loop, the uvloop ones on a uvloop Runner.
"""
from __future__ import annotations

import asyncio
import signal
from typing import Iterator

import pytest
import uvloop

from kernel.user import errors
from kernel.abi import Rights
from kernel.user.aio import AsyncL4
from kernel.user.testing import System

ECHO = "tests.kernel.rpc_tasks:echo_server"


@pytest.fixture(scope="module")
def system() -> Iterator[System]:
    """One kernel for the module: the tests create their own tasks and leave each other alone."""
    s = System()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def own_system() -> Iterator[System]:
    """A kernel of its own, for a test that kills it."""
    s = System()
    try:
        yield s
    finally:
        s.close()


async def new_task(s: System, name: str, caps: dict[str, int] | None = None) -> tuple[AsyncL4, int]:
    """A task created by root, connected in this process as AsyncL4; also root's thread cap."""
    new = s.root.create_task(name, 32)
    mine = {}
    for i, (cname, slot) in enumerate((caps or {}).items()):
        s.root.task_map(new.slot, slot, 16 + i, Rights.INVOKE | Rights.GRANT)
        mine[cname] = 16 + i
    return await AsyncL4.connect(s.sock, new.secret, mine), new.thread


async def test_call_a_server_process(system: System) -> None:
    srv = system.spawn(ECHO, "echo")
    gate = system.root.create_gate(5, thread=srv.thread)
    a, _ = await new_task(system, "client", {"echo": gate})
    try:
        assert a.task_name == "client" and a.kernel_pid == system.kernel.pid
        for size in (0, 64, 4096):
            msg = await a.call(a.caps["echo"], b"x" * size, proto=3, rcv_timeout=10_000)
            assert msg.data == b"x" * size and msg.proto == 3
        assert (await a.call(a.caps["echo"], b"stop")).data == b"bye"
    finally:
        a.close()
    assert srv.wait(20) == 0


async def test_server_and_client_coroutines_share_one_loop(system: System) -> None:
    """A blocked wait() suspends only its coroutine: both ends live in this event loop."""
    srv, srv_thread = await new_task(system, "srv")
    gate = system.root.create_gate(77, thread=srv_thread)
    cli, _ = await new_task(system, "cli", {"svc": gate})

    async def serve(n: int) -> list[int]:
        labels = []
        msg = await srv.wait(timeout=10_000)
        for i in range(n):
            labels.append(msg.label)
            if i == n - 1:
                await srv.reply(msg.reply, msg.data.upper())
            else:
                msg = await srv.reply_and_wait(msg.reply, msg.data.upper(), timeout=10_000)
        return labels

    async def client(n: int) -> list[bytes]:
        return [(await cli.call(cli.caps["svc"], f"m{i}".encode(), rcv_timeout=10_000)).data
                for i in range(n)]

    try:
        labels, replies = await asyncio.gather(serve(20), client(20))
        assert labels == [77] * 20
        assert replies == [f"M{i}".encode() for i in range(20)]
    finally:
        srv.close()
        cli.close()


async def test_errors_are_the_sync_exceptions(system: System) -> None:
    a, _ = await new_task(system, "errs")
    try:
        with pytest.raises(errors.NoCapability):
            await a.call(999, b"x")
        with pytest.raises(errors.Timeout):
            await a.wait(timeout=0)
        info = await a.cap_inspect(1)
        assert info["type"] == "task"
        gate = await a.create_gate(label=3)
        assert (await a.cap_inspect(gate))["label"] == 3
    finally:
        a.close()


async def test_one_call_in_flight_per_thread(system: System) -> None:
    a, _ = await new_task(system, "busy")
    try:
        w = asyncio.ensure_future(a.wait(timeout=300))
        await asyncio.sleep(0)                 # let the wait go out
        with pytest.raises(errors.Busy):
            await a.cap_inspect(1)
        with pytest.raises(errors.Timeout):
            await w
        t2 = await a.spawn_thread()            # a second thread may block independently
        try:
            w2 = asyncio.ensure_future(t2.wait(timeout=300))
            assert (await a.cap_inspect(1))["type"] == "task"
            with pytest.raises(errors.Timeout):
                await w2
        finally:
            t2.close()
    finally:
        a.close()


async def test_cancelled_call_keeps_answers_in_step(system: System) -> None:
    a, _ = await new_task(system, "cancel")
    try:
        w = asyncio.ensure_future(a.wait(timeout=200))
        await asyncio.sleep(0.01)
        w.cancel()
        with pytest.raises(asyncio.CancelledError):
            await w
        # The kernel still owes the wait's answer (a TIMEOUT); it is read and dropped first.
        assert (await a.cap_inspect(2))["type"] == "thread"
        assert (await a.cap_inspect(1))["type"] == "task"
    finally:
        a.close()


async def test_from_env(system: System, monkeypatch: pytest.MonkeyPatch) -> None:
    new = system.root.create_task("envtask", 8)
    monkeypatch.setenv("L4_KERNEL", system.sock)
    monkeypatch.setenv("L4_SECRET", new.secret.hex())
    monkeypatch.setenv("L4_CAPS", '{"x": 3}')
    a = await AsyncL4.from_env()
    try:
        assert a.task_name == "envtask" and a.caps == {"x": 3}
    finally:
        a.close()
    monkeypatch.delenv("L4_SECRET")
    with pytest.raises(errors.NotAuthenticated):
        await AsyncL4.from_env()


async def test_bad_secret_is_refused(system: System) -> None:
    with pytest.raises(errors.NotAuthenticated):
        await AsyncL4.connect(system.sock, b"\0" * 16)
    new = system.root.create_task("once", 8)
    (await AsyncL4.connect(system.sock, new.secret)).close()
    with pytest.raises(errors.NotAuthenticated):      # a secret is good for one HELLO only
        await AsyncL4.connect(system.sock, new.secret)


async def test_kernel_death_is_noticed_while_waiting(own_system: System) -> None:
    system = own_system
    a, _ = await new_task(system, "orphan")
    a.POLL_MS = 50
    try:
        w = asyncio.ensure_future(a.wait())               # waits forever
        await asyncio.sleep(0.05)
        system.kernel.send_signal(signal.SIGKILL)
        system.kernel.wait(10)
        with pytest.raises(errors.KernelGone):
            await asyncio.wait_for(w, 20)
    finally:
        a.close()


def _uvloop_round_trip(s: System, gate: int) -> list[bytes]:
    async def main() -> list[bytes]:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        a, _ = await new_task(s, "uv", {"echo": gate})
        try:
            return [(await a.call(a.caps["echo"], bytes([i]) * 100, rcv_timeout=10_000)).data
                    for i in range(10)]
        finally:
            a.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def test_under_uvloop(system: System) -> None:
    srv = system.spawn(ECHO, "echo")
    gate = system.root.create_gate(1, thread=srv.thread)
    assert _uvloop_round_trip(system, gate) == [bytes([i]) * 100 for i in range(10)]
    system.root.call(gate, b"stop")
    assert srv.wait(20) == 0
