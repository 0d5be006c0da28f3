"""Tasks on other machines: the kernel's tcp:// port with CurveZMQ (issue 2's "connection is
lost" for tasks whose process the kernel cannot watch).

Real processes on this machine stand in for the other machine: they reach the kernel only
through `tcp://127.0.0.1:PORT` with the kernel's public key and their one-time secret, and
the kernel is never told their pid — so it learns of their end only from the connection.
"""
from __future__ import annotations

import signal

import pytest

from kernel.abi import unpack
from kernel.user.client import L4
from kernel.user.errors import KernelGone, NotAuthenticated
from kernel.user.testing import System, wait_for


@pytest.fixture
def remote_kernel():
    with System(kernel_args=("--tcp", "127.0.0.1:0")) as s:
        info = s.tcp_info()
        assert info["endpoint"].startswith("tcp://127.0.0.1:") and len(info["public_key"]) == 40
        yield s, info


def _remote_echo(s: System, info: dict, name: str, label: int) -> tuple:
    """An echo server task reached only over tcp, its handler a root gate with `label`;
    checks one call through a gate to it. Answers (gate, process)."""
    new = s.spawn_remote("tests.kernel.tasks:echo_server", name, handler=s.gate(label=label))
    proc = new.proc
    try:
        gate = s.root.create_gate(0x55, thread=new.thread)
        answer = unpack(s.root.call(gate, b"over tcp", rcv_timeout=20_000).data)
        assert answer == {"label": 0x55, "rights": answer["rights"], "proto": 0,
                          "data": b"over tcp", "server": name}
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return gate, proc


def test_a_remote_task_serves_over_curve_and_its_death_is_seen_by_the_connection(remote_kernel):
    s, info = remote_kernel
    _gate, proc = _remote_echo(s, info, "far", 3)
    try:
        proc.kill()                       # no pidfd: only the tcp connection tells the kernel
        proc.wait()
        msg = s.root.wait(timeout=15_000)
        body = msg.body()
        assert msg.label == 3 and body["task"] == "far" and body["pid"] is None
        assert "connection to the kernel was lost" in body["reason"]
    finally:
        proc.kill()
        proc.wait()


def test_a_silent_remote_task_is_declared_lost_by_heartbeat(remote_kernel):
    """A stopped process keeps its tcp connection open but answers no heartbeat."""
    s, info = remote_kernel
    _gate, proc = _remote_echo(s, info, "quiet", 4)
    try:
        proc.send_signal(signal.SIGSTOP)
        msg = s.root.wait(timeout=20_000)   # heartbeat timeout is 3 s
        assert msg.label == 4 and "connection to the kernel was lost" in msg.body()["reason"]
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait()


def test_a_remote_thread_needs_the_kernels_key(remote_kernel):
    s, info = remote_kernel
    new = s.root.create_task("nokey", 8)
    with pytest.raises(NotAuthenticated, match="public key"):
        L4(info["endpoint"], new.secret, server_key=b"")
    import zmq
    wrong, _ = zmq.curve_keypair()        # a key, but not this kernel's
    with pytest.raises(KernelGone, match="handshake failed|connection was lost"):
        L4(info["endpoint"], new.secret, server_key=wrong)
    good = L4(info["endpoint"], new.secret, server_key=info["public_key"].encode())
    assert good.task_name == "nokey"      # the secret was not spent by the failed attempts
    good.close()


def test_a_remote_task_ends_when_its_kernel_goes(remote_kernel):
    """The task library notices a lost kernel by the connection (no pid, no socket file to
    look at) and every later call fails too, so the task's runner ends it (status 3)."""
    s, info = remote_kernel
    new = s.spawn_remote("tests.kernel.tasks:echo_server", "orphan", handler=s.gate(1))
    proc = new.proc
    try:
        wait_for(lambda: s.root.cap_inspect(new.thread)["state"] == "receiving",
                 what="the remote server to wait")
        s.kernel.kill()
        s.kernel.wait()
        assert proc.wait(timeout=30) == 3
    finally:
        proc.kill()
        proc.wait()


async def test_asyncio_threads_work_over_tcp_and_notice_a_lost_kernel(remote_kernel):
    from kernel.user.aio import AsyncL4
    s, info = remote_kernel
    new = s.root.create_task("async-far", 16)
    a = await AsyncL4.connect(info["endpoint"], new.secret, server_key=info["public_key"].encode())
    assert a.task_name == "async-far" and (await a.factory_info())["limit"] > 0
    b = await a.spawn_thread()                # a second thread, over tcp too
    assert b.task_id == a.task_id and b.thread_id != a.thread_id
    s.kernel.kill()
    s.kernel.wait()
    with pytest.raises(KernelGone, match="connection was lost"):
        await a.wait()
    with pytest.raises(KernelGone):           # and it stays gone
        await a.factory_info()
    a.close()
    b.close()
