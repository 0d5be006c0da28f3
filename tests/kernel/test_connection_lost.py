"""A thread whose connection to the kernel is lost is gone (issue 2: "when a task's process
dies or its connection is lost"): the kernel learns of a closed connection from libzmq's
monitor (by socket fd; HELLO remembers each thread's fd). A main thread takes its task with
it, another thread dies alone; partners blocked on it get PEER_DIED, never a hang.

The connections here belong to the test process itself (no task process, no pid to watch),
so nothing but the connection tells the kernel.
"""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from kernel.user.client import L4
from kernel.user.errors import NoCapability, PeerDied
from kernel.user.testing import System, caller_blocked_on, wait_for


def _lost(s: System) -> int:
    return int(s.root.kernel_info()["stats"]["connections_lost"])


def test_a_thread_whose_connection_closes_is_gone_and_its_callers_are_released() -> None:
    with System() as s:
        target, caller = s.root.create_thread(), s.root.create_thread()
        t2, c = L4(s.sock, target.secret), L4(s.sock, caller.secret)
        gate = s.root.create_gate(7, thread=target.slot)
        th, result = caller_blocked_on(s.root, c, caller.slot, gate)   # t2 never waits
        t2.close()
        th.join(20)
        assert isinstance(result.get("err"), PeerDied)
        assert _lost(s) == 1
        with pytest.raises(NoCapability):
            s.root.cap_inspect(target.slot)       # the thread is destroyed
        assert s.root.cap_inspect(caller.slot)["state"] == "idle"   # root's other threads live
        c.close()


def test_a_main_thread_whose_connection_closes_takes_its_task() -> None:
    with System() as s:
        handler = s.gate(label=9)
        new = s.root.create_task("remote", 64)
        s.root.thread_control(new.thread, handler=handler)
        l4 = L4(s.sock, new.secret)
        assert l4.task_name == "remote"
        l4.close()
        msg = s.root.wait(timeout=10_000)
        body = msg.body()
        assert msg.label == 9 and body["event"] == "exit" and body["task"] == "remote"
        assert "connection to the kernel was lost" in body["reason"]
        assert "remote" not in [t["name"] for t in s.root.kernel_info()["tasks"]]


def test_a_new_connection_on_a_reused_fd_is_not_taken_for_the_old_one() -> None:
    """Linux hands a new connection the lowest free fd — often the one that just closed —
    and the monitor reports the old one's end later: the new thread must not pay for it."""
    with System() as s:
        secrets = {f"{p}{i}": s.root.create_task(f"{p}{i}", 8).secret
                   for i in range(30) for p in "ck"}
        cur = L4(s.sock, secrets["c0"])
        keep = []
        for i in range(1, 30):
            cur.close()
            cur = L4(s.sock, secrets[f"c{i}"])     # no other request in between
            keep.append(L4(s.sock, secrets[f"k{i}"]))
        wait_for(lambda: _lost(s) == 29, what="29 lost connections")
        alive = {t["name"] for t in s.root.kernel_info()["tasks"]}
        assert alive >= {"c29", *(f"k{i}" for i in range(1, 30))}
        assert not alive & {f"c{i}" for i in range(29)}
        for l4 in [*keep, cur]:
            assert l4.factory_info()["limit"] > 0          # still connected, still served
            l4.close()
        wait_for(lambda: _lost(s) == 59, what="the rest to be counted")
        assert s.root.kernel_info()["stats"]["kernel_bugs"] == 0


def test_a_disconnection_reported_after_a_new_hello_on_the_same_fd() -> None:
    """The kernel is held (SIGSTOP) while an old connection closes and a new one connects, so
    on SIGCONT its I/O thread closes the old fd, accepts the new connection (mostly on the
    same fd number) and reports both at about the same time. Whichever the kernel's loop sees
    first, the new thread must live: HELLO settles every disconnection already reported
    before it records its own fd (the ordering that makes this necessary — the loop busy
    while both queue up — is not forced here)."""
    with System() as s:
        kpid = s.kernel.pid
        names = [f"r{i}" for i in range(12)]
        secrets = {n: s.root.create_task(n, 8).secret for n in names}
        cur = L4(s.sock, secrets[names[0]])
        for n in names[1:]:
            got: dict[str, L4] = {}
            os.kill(kpid, signal.SIGSTOP)
            try:
                cur.close()
                th = threading.Thread(target=lambda n=n: got.update(new=L4(s.sock, secrets[n])))
                th.start()
                time.sleep(0.05)              # the new connection waits in the listen queue
            finally:
                os.kill(kpid, signal.SIGCONT)
            th.join(20)
            cur = got["new"]
            assert cur.factory_info()["limit"] > 0, f"{n} was taken for its predecessor"
        wait_for(lambda: _lost(s) == len(names) - 1, what="every closed connection counted")
        assert names[-1] in {t["name"] for t in s.root.kernel_info()["tasks"]}
        cur.close()
