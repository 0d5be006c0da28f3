"""The kernel's real-time port (`python -m kernel --rt-port`, RUN_DIR/kernel-rt.sock): a
thread bound on kernel.sock moves there with its own secret, once, while its process holds a
real-time host policy; nothing but the order of service changes, and a lost real-time
connection is a lost connection like any other.

The test process is the threads' process: it gives one of its own threads SCHED_FIFO (we
are root) to hold the policy the CPU reservation manager would give, and takes it back.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Iterator

import pytest
import zmq

from kernel.abi import RT_SOCK
from kernel.user.client import L4, hello_frames, parse_answer
from kernel.user.errors import InvalidArgument, NoRights, NotAuthenticated, PeerDied
from kernel.user.testing import System, caller_blocked_on

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="SCHED_FIFO needs root")


@pytest.fixture
def sysrt() -> Iterator[System]:
    with System(kernel_args=("--rt-port",)) as s:
        yield s


@pytest.fixture
def fifo() -> Iterator[None]:
    """A thread of this process under SCHED_FIFO for the test's length (then it ends)."""
    ready, done = threading.Event(), threading.Event()

    def hold() -> None:
        # As the CPU manager gives it (reset on fork: the policy number carries a flag).
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(1))
        ready.set()
        done.wait(60)
    t = threading.Thread(target=hold, name="rt-holder")
    t.start()
    assert ready.wait(10)
    yield
    done.set()
    t.join(10)


def _stats(s: System) -> dict[str, Any]:
    return dict(s.root.kernel_info()["stats"])


def test_without_a_real_time_policy_the_move_is_refused_with_the_reason(sysrt: System) -> None:
    assert os.path.exists(os.path.join(sysrt.run_dir, RT_SOCK))
    t = L4(sysrt.sock, sysrt.root.create_thread().secret)
    with pytest.raises(NoRights, match="holds no real-time host policy"):
        t.use_rt_port()
    assert not t.realtime
    assert t.kernel_info()["stats"]["rt_moves"] == 0     # the old connection still serves
    t.close()


def test_a_moved_thread_keeps_its_identity_and_ipc_and_its_old_connection_is_nobody(
        sysrt: System, fifo: None) -> None:
    s = sysrt
    srv_new, cli_new = s.root.create_thread(), s.root.create_thread()
    srv, cli = L4(s.sock, srv_new.secret), L4(s.sock, cli_new.secret)
    ids = (cli.task_id, cli.thread_id)
    old = cli.sock
    gate = s.root.create_gate(5, thread=srv_new.slot)
    got: dict[str, Any] = {}

    def serve() -> None:
        m = srv.wait()
        got["label"] = m.label
        srv.reply(m.reply, m.data.upper())
    cli.use_rt_port()
    assert cli.realtime and (cli.task_id, cli.thread_id) == ids
    th = threading.Thread(target=serve)
    th.start()
    assert cli.call(gate, b"frame").data == b"FRAME"
    th.join(10)
    assert got["label"] == 5
    st = _stats(s)
    assert st["rt_moves"] == 1 and st["connections_lost"] == 0   # the old one's close: no death
    with pytest.raises(InvalidArgument, match="again"):
        cli.use_rt_port()
    # A second HELLO with the same secret is refused on either port: it was spent.
    for sock in (RT_SOCK, "kernel.sock"):
        d = zmq.Context.instance().socket(zmq.DEALER)
        d.linger = 0
        d.rcvtimeo = 5000
        d.connect("ipc://" + os.path.join(s.run_dir, sock))
        d.send_multipart(hello_frames(cli_new.secret))
        with pytest.raises(NotAuthenticated):
            parse_answer(d.recv_multipart(), False)
        d.close()
    assert old.closed
    srv.close()
    cli.close()


def test_a_real_time_connection_that_closes_is_a_lost_connection(sysrt: System,
                                                                  fifo: None) -> None:
    s = sysrt
    target, caller = s.root.create_thread(), s.root.create_thread()
    t2, c = L4(s.sock, target.secret), L4(s.sock, caller.secret)
    t2.use_rt_port()
    gate = s.root.create_gate(7, thread=target.slot)
    th, result = caller_blocked_on(s.root, c, caller.slot, gate)   # t2 never waits
    t2.close()
    th.join(20)
    assert isinstance(result.get("err"), PeerDied)
    assert _stats(s)["connections_lost"] == 1
    c.close()


def test_real_time_messages_are_served_between_a_busy_port_s(sysrt: System, fifo: None) -> None:
    """Many best-effort callers keep kernel.sock busy; a real-time caller's calls all come
    back right, and the kernel switched to its port in the middle of the others' (rt_first)."""
    s = sysrt
    srv_new = s.root.create_thread()
    srv = L4(s.sock, srv_new.secret)
    gate = s.root.create_gate(1, thread=srv_new.slot)
    stop = threading.Event()

    def serve() -> None:
        m = srv.wait()
        while not stop.is_set() or m.data != b"end":
            m = srv.reply_and_wait(m.reply, m.data)
        srv.reply(m.reply, b"")
    server = threading.Thread(target=serve)
    server.start()
    noisy = [L4(s.sock, s.root.create_thread().secret) for _ in range(6)]

    def noise(l4: L4) -> None:
        while not stop.is_set():
            l4.kernel_info()                 # the kernel's own work, no partner needed
    hogs = [threading.Thread(target=noise, args=(n,)) for n in noisy]
    for h in hogs:
        h.start()
    rt = L4(s.sock, s.root.create_thread().secret)
    rt.use_rt_port()
    for i in range(300):
        assert rt.call(gate, b"%d" % i).data == b"%d" % i
    stop.set()
    for h in hogs:
        h.join(10)
    rt.call(gate, b"end")
    server.join(10)
    assert _stats(s)["rt_first"] > 0
    for l4 in [rt, srv, *noisy]:
        l4.close()


def test_a_kernel_without_the_port_says_so() -> None:
    with System() as s:
        t = L4(s.sock, s.root.create_thread().secret)
        with pytest.raises(InvalidArgument, match="no real-time port"):
            t.use_rt_port()
        t.close()


def test_rt_try_moves_only_a_host_thread_under_a_real_time_policy(sysrt: System,
                                                                 fifo: None) -> None:
    """The kernel checks the process; `rt_try` checks the calling host thread: a best-effort
    thread of a boosted server stays on kernel.sock (its reason kept), one under SCHED_FIFO
    moves."""
    s = sysrt
    plain = L4(s.sock, s.root.create_thread().secret)
    assert plain.rt_try() is False and "holds no real-time policy" in plain.rt_refusal
    assert not plain.rt_due()                       # not asked again before retry_s
    moved: dict[str, Any] = {}
    rt = L4(s.sock, s.root.create_thread().secret)

    def as_fifo() -> None:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(1))
        moved["ok"] = rt.rt_try()
        moved["again"] = rt.rt_due()
    t = threading.Thread(target=as_fifo)
    t.start()
    t.join(10)
    assert moved == {"ok": True, "again": False} and rt.realtime
    assert _stats(s)["rt_moves"] == 1
    plain.close()
    rt.close()
