"""Death of real task processes: partners released, capabilities revoked, handlers told,
gates rebound to a successor, and a system that shuts down without leaving anything behind.

Every test gets its own kernel (`kit`): processes are killed with SIGKILL on purpose.
"Promptly" is checked as "the blocked call returns at all, within a generous bound": the
suite makes no timing assertions.
"""
from __future__ import annotations

import os
import signal
from typing import Any

import psutil
import pytest

from kernel.abi import Proto, Rights, unpack
from kernel.user.client import map_cap
from kernel.user.errors import NoCapability, PeerDied
from kernel.user.testing import System, wait_for

RELEASE = 10.0       # a blocked partner must be released well within this


def echo(reply: dict[str, Any]) -> dict[str, Any]:
    return unpack(reply["data"])


def test_server_killed_mid_call_releases_the_caller(kit: Any) -> None:
    srv, svc = kit.server(0x10)
    client = kit.agent(caps={"svc": (svc, Rights.INVOKE)})
    call = client.start("call", client.caps["svc"], b"noreply")   # the server keeps it waiting
    client.wait_in_op("await_reply")
    srv.kill(signal.SIGKILL)
    with pytest.raises(PeerDied):
        call.result(RELEASE)
    kit.wait_gone(srv)
    with pytest.raises(PeerDied):                      # the gate has no live thread behind it
        client.do("call", client.caps["svc"], b"again", snd_timeout=0)
    assert kit.root.kernel_info()["stats"]["kernel_bugs"] == 0


def test_blocked_senders_on_a_dead_receiver_are_released(kit: Any) -> None:
    srv, gate = kit.server(0x11, "sleeper")            # never waits: senders queue up
    a = kit.agent("a", caps={"svc": gate})
    b = kit.agent("b", caps={"svc": gate})
    sending = a.start("send", a.caps["svc"], b"1")
    a.wait_in_op("sending")
    calling = b.start("call", b.caps["svc"], b"2")
    b.wait_in_op("sending")
    srv.kill(signal.SIGKILL)
    for fut in (sending, calling):
        with pytest.raises(PeerDied):
            fut.result(RELEASE)
    assert a.do("cap_inspect", a.caps["svc"])["alive"]          # root's gate lives on, unbound


def test_caller_killed_mid_call_the_late_reply_fails_and_the_server_goes_on(kit: Any) -> None:
    server = kit.agent("server")
    gate = kit.gate_to(server, 0x12)
    doomed = kit.agent("doomed", caps={"svc": gate})
    other = kit.agent("other", caps={"svc": gate})
    got = server.start("wait")
    server.wait_in_op("receiving")
    doomed.start("call", doomed.caps["svc"], b"hello")
    msg = got.result(RELEASE)
    doomed.kill()
    kit.wait_gone(doomed.proc)
    with pytest.raises(PeerDied):
        server.do("reply", msg["reply"], b"too late")
    got = server.start("wait")
    server.wait_in_op("receiving")
    call = other.start("call", other.caps["svc"], b"next")
    msg = got.result(RELEASE)
    assert msg["data"] == b"next"
    server.do("reply", msg["reply"], b"served")
    assert call.result(RELEASE)["data"] == b"served"


def test_death_notice_reaches_the_exception_handler(kit: Any) -> None:
    handler = kit.root.create_gate(0xE0)
    victim = kit.agent("victim", handler=handler)
    pid = victim.proc.pid
    victim.kill()
    msg = kit.collect(0xE0)
    body = msg.body()
    assert msg.proto == Proto.EXCEPTION and msg.reply == 0
    assert body["event"] == "exit" and body["task"] == "victim" and body["pid"] == pid
    assert body["task_id"] == victim.proc.task_id
    assert not kit.task_alive(victim.proc.task_id)


def test_normal_exit_reports_its_status(kit: Any) -> None:
    handler = kit.root.create_gate(0xE1)
    proc = kit.spawn("exit_with", "quitter", args=("7",), handler=handler)
    body = kit.collect(0xE1).body()
    assert body["event"] == "exit" and body["task"] == "quitter" and body["status"] == 7
    assert proc.wait() == 7


def test_a_dead_task_loses_its_capabilities_and_what_was_derived_from_them(kit: Any) -> None:
    a, b = kit.agent("a"), kit.agent("b")
    to_b = kit.give(a, kit.gate_to(b, 0x13), Rights.INVOKE)
    root_gate = kit.root.create_gate(0x14)
    sa = kit.give(a, root_gate, Rights.INVOKE | Rights.GRANT)
    own = a.do("create_gate", 0x15)                   # A's own gate, bound to A
    a.do("send", to_b, b"caps", items=[map_cap(sa), map_cap(own, Rights.INVOKE)])
    items = b.do("inbox")[0]["items"]
    from_root, from_a = items[0][1], items[1][1]
    assert kit.root.cap_inspect(root_gate)["derived"] == 1
    a.kill()
    kit.wait_gone(a.proc)
    for slot in (from_root, from_a):
        with pytest.raises(NoCapability):
            b.do("cap_inspect", slot)
    assert kit.root.cap_inspect(root_gate)["derived"] == 0
    with pytest.raises(NoCapability):                 # A's own gate went with A
        b.do("call", from_a, b"x", snd_timeout=0)


def test_gate_rebound_to_a_restarted_server(kit: Any) -> None:
    first, svc = kit.server(0x16, name="first")
    client = kit.agent(caps={"svc": (svc, Rights.INVOKE)})
    assert echo(client.do("call", client.caps["svc"], b"1"))["server"] == "first"
    first.kill()
    kit.wait_gone(first)
    with pytest.raises(PeerDied):
        client.do("call", client.caps["svc"], b"2", snd_timeout=0)
    second = kit.spawn("echo_server", "second")
    assert kit.root.bind_gate(svc, second.thread) == 1          # generation 1
    r = echo(client.do("call", client.caps["svc"], b"3"))       # same slot, new server
    assert r["server"] == "second" and r["label"] == 0x16
    assert kit.root.cap_inspect(svc)["generation"] == 1


def test_rebinding_releases_senders_blocked_on_the_old_thread(kit: Any) -> None:
    stuck, svc = kit.server(0x17, "sleeper", name="stuck")
    client = kit.agent(caps={"svc": (svc, Rights.INVOKE)})
    call = client.start("call", client.caps["svc"], b"waiting")
    client.wait_in_op("sending")
    fresh = kit.spawn("echo_server", "fresh")
    kit.root.bind_gate(svc, fresh.thread)
    with pytest.raises(PeerDied):
        call.result(RELEASE)
    assert echo(client.do("call", client.caps["svc"], b"retry"))["server"] == "fresh"


def test_agent_death_during_a_root_command_releases_root(kit: Any) -> None:
    a = kit.agent("sleepy")
    cmd = a.start("sleep", 60)
    wait_for(lambda: kit.state(a.caller_slot) == "await_reply", what="command delivered")
    a.proc.kill(signal.SIGKILL)
    with pytest.raises(PeerDied):
        cmd.result(RELEASE)
    assert kit.root.cap_inspect(a.ctrl)["thread"] is None     # root's gate stays, unbound


def test_close_leaves_no_process_and_no_socket() -> None:
    s = System()
    try:
        root_gate = s.root.create_gate(0x18)
        tasks = [s.spawn("tests.kernel.tasks:sleeper", f"s{i}", caps={"g": root_gate})
                 for i in range(2)]
        tasks.append(s.spawn("tests.kernel.tasks:echo_server", "e"))
        pids = [t.pid for t in tasks] + [s.kernel.pid]
        sock, run_dir = s.sock, s.run_dir
        assert os.path.exists(sock)
    finally:
        s.close()
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    mine = {p.pid for p in psutil.Process().children(recursive=True)}
    assert not mine & set(pids)
    assert not os.path.exists(sock) and not os.path.exists(run_dir)


def test_an_idle_kernel_ends_at_once_on_sigterm() -> None:
    """SIGTERM may land on one of ZeroMQ's threads while the loop sleeps in poll with no timer
    pending; the kernel's wakeup pipe must still end the poll (no one pokes it). Five boots,
    each ended by SIGTERM alone: gone within 2 s, kernel.sock and mem.sock removed."""
    import time
    for _ in range(5):
        s = System()
        try:
            time.sleep(0.2)                   # the loop is asleep in poll, nothing pending
            t0 = time.monotonic()
            s.kernel.terminate()
            s.kernel.wait(5)
            assert time.monotonic() - t0 < 2.0
            assert not [f for f in os.listdir(s.run_dir) if f.endswith(".sock")]
        finally:
            s.close()


def test_close_names_what_was_left_behind(tmp_path: Any) -> None:
    """The leak check is real: a process naming the run directory, a socket file and a memfd
    left by the test are each reported by close()."""
    import socket
    import subprocess
    import sys
    from kernel.user.testing import LeakError
    rd = str(tmp_path / "rd")
    os.makedirs(rd)
    s = System(run_dir=rd)
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", rd])
    fd = os.memfd_create(f"l4py-ram-{s.kernel.pid}", 0)     # as if a frame of its kernel
    sk = socket.socket(socket.AF_UNIX)
    sk.bind(os.path.join(rd, "stray.sock"))
    try:
        with pytest.raises(LeakError) as e:
            s.close()
        text = str(e.value)
        assert f"process {stray.pid}" in text and "stray.sock" in text and f"memfd:l4py-ram-{s.kernel.pid}" in text
    finally:
        stray.kill()
        stray.wait()
        os.close(fd)
        sk.close()
        os.unlink(os.path.join(rd, "stray.sock"))


def test_the_per_test_leak_check_sees_a_stray_process(tmp_path: Any) -> None:
    """tests/leaks.py, which runs after every test: a process started during the test is
    reported until it ends; one of a system that was up before is not."""
    import subprocess
    import sys
    from tests.leaks import Snapshot
    base = str(tmp_path)
    old = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)",
                            "--run-dir", f"{base}/old"])
    try:
        snap = Snapshot.take(base)
        new = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", base])
        sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)",
                                    "--run-dir", f"{base}/old"])
        try:
            left = snap.left(base, None, wait_s=0.2)
            assert left == [f"process {new.pid} ({' '.join(new.args)[:100]})"]
        finally:
            for p in (new, sibling):
                p.kill()
                p.wait()
        assert snap.left(base, None, wait_s=0.2) == []
    finally:
        old.kill()
        old.wait()
