"""Servers with several threads: `System.spawn(threads=N)`, `L4.threads_from_env()` and
`MultiWait` (one OS thread serving every thread of a task). Real processes throughout.

- Calls through gates bound to different threads of one server are in flight at the same
  time: one caller is held while others are served.
- A caller that dies while its call is held costs the server nothing: the late reply is
  dropped by the kernel (PEER_DIED is no reason to stop waiting) and that thread serves on.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from kernel.abi import unpack
from kernel.user.testing import System, wait_for


def _state(s: System, thread_slot: int) -> str:
    return str(s.root.cap_inspect(thread_slot)["state"])


def _pool(s: System) -> tuple[Any, list[int], list[int]]:
    srv = s.spawn("tests.kernel.tasks:pool_echo", "pool", threads=2)
    threads = [srv.thread, *(t.slot for t in srv.threads)]
    gates = [s.root.create_gate(10 + i, thread=t) for i, t in enumerate(threads)]
    for t in threads:
        wait_for(lambda: _state(s, t) == "receiving", what="server threads waiting")
    return srv, threads, gates


def test_calls_on_several_threads_are_in_flight_at_once() -> None:
    with System() as s:
        srv, threads, gates = _pool(s)
        ids = [s.root.cap_inspect(t)["id"] for t in threads]
        held_caller = s.root.spawn_thread()
        result: dict[str, Any] = {}
        th = threading.Thread(target=lambda: result.update(
            held=unpack(held_caller.call(gates[0], b"hold", rcv_timeout=20_000).data)))
        th.start()
        try:
            wait_for(lambda: _state(s, threads[0]) != "receiving", what="thread 0 takes the call")
            time.sleep(0.1)
            assert th.is_alive()                      # held: no answer yet
            other = unpack(s.root.call(gates[2], b"ping", rcv_timeout=20_000).data)
            assert other == {"thread": ids[2], "data": b"ping"}
            assert th.is_alive()                      # still held while thread 2 served
            rel = unpack(s.root.call(gates[1], b"release", rcv_timeout=20_000).data)
            assert rel == {"thread": ids[1], "data": b"release"}
        finally:
            th.join(20)
        assert result["held"] == {"thread": ids[0], "data": b"release"}
        held_caller.close()
        assert srv.proc.poll() is None


def test_a_dead_caller_costs_the_server_nothing() -> None:
    with System() as s:
        srv, threads, gates = _pool(s)
        ids = [s.root.cap_inspect(t)["id"] for t in threads]
        victim = s.spawn("tests.kernel.tasks:hold_then_die", "victim", caps={"svc": gates[1]})
        wait_for(lambda: _state(s, threads[1]) != "receiving", what="victim's call delivered")
        victim.kill()
        victim.wait()
        rel = unpack(s.root.call(gates[0], b"release", rcv_timeout=20_000).data)
        assert rel == {"thread": ids[0], "data": b"release"}
        wait_for(lambda: _state(s, threads[1]) == "receiving", what="thread 1 waits again")
        again = unpack(s.root.call(gates[1], b"after", rcv_timeout=20_000).data)
        assert again == {"thread": ids[1], "data": b"after"}
        assert srv.proc.poll() is None
        assert s.root.kernel_info()["stats"]["kernel_bugs"] == 0
