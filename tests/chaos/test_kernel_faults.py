"""Each IPC fault kind really happens inside a real kernel, between real processes.

The recorder task keeps what arrives through its DATA gate (faults are armed on it) and
answers "dump" through its CTRL gate (never faulted), so the test sees exactly which
messages the receiver got. No timing is asserted: order and content only.
"""
from __future__ import annotations

import threading
from typing import Iterator

import pytest

from kernel.user import errors
from kernel.abi import SLOT_TASK, Rights, unpack
from kernel.user.client import L4
from kernel.user.testing import wait_for

from tests.chaos.tasks import CTRL, DATA
from tests.conftest import Kit


class Rig:
    def __init__(self, kit: Kit) -> None:
        self.kit = kit
        self.root = kit.root
        self.holder, holder_slot = kit._root_thread()   # receives the recorder's "hold" calls
        self.hold_gate = self.root.create_gate(9, thread=holder_slot)
        self.proc = kit.sys.spawn("tests.chaos.tasks:recorder", "recorder",
                                  caps={"hold": (self.hold_gate, Rights.INVOKE)})
        self.data = self.root.create_gate(DATA, thread=self.proc.thread)
        self.ctrl = self.root.create_gate(CTRL, thread=self.proc.thread)
        self.gate_id = self.root.cap_inspect(self.data)["id"]
        assert self.dump() == []        # it runs and waits: the tests start from here

    def dump(self) -> list[bytes]:
        return unpack(self.root.call(self.ctrl, b"dump", rcv_timeout=10_000).data)

    def arm(self, kind: str, **spec: object) -> dict:
        return self.root.fault("add", {"kind": kind, "gate": self.gate_id, **spec})

    def injected(self, kind: str) -> int:
        return self.root.kernel_info()["faults"]["injected"][kind]


@pytest.fixture
def rig(kit: Kit) -> Iterator[Rig]:
    yield Rig(kit)


def test_drop_send_is_not_received_but_sender_sees_success(rig: Rig) -> None:
    rig.arm("drop")
    assert rig.root.send(rig.data, b"lost", timeout=5000) is None
    rig.root.send(rig.data, b"kept", timeout=5000)
    assert rig.dump() == [b"kept"]
    assert rig.injected("drop") == 1


def test_dropped_call_times_out_then_calls_work_again(rig: Rig) -> None:
    rig.arm("drop")
    with pytest.raises(errors.Timeout):
        rig.root.call(rig.data, b"lost", rcv_timeout=200)
    assert rig.root.call(rig.data, b"next", rcv_timeout=10_000).data == b"next"
    assert rig.dump() == [b"next"]


def test_corrupted_message_is_delivered_changed(rig: Rig) -> None:
    rig.arm("corrupt", bytes=3, seed=5)
    sent = b"the quick brown fox"
    got = rig.root.call(rig.data, sent, rcv_timeout=10_000).data
    assert got != sent and len(got) == len(sent)
    assert rig.dump() == [got]
    log = rig.root.fault("log")
    assert [e["kind"] for e in log] == ["corrupt"] and len(log[0]["positions"]) == 3


def test_duplicated_call_is_received_twice_and_answered_once(rig: Rig) -> None:
    rig.arm("duplicate")
    assert rig.root.call(rig.data, b"call", rcv_timeout=10_000).data == b"call"
    # The copy follows the original; a further call proves both were served.
    assert rig.root.call(rig.data, b"after", rcv_timeout=10_000).data == b"after"
    assert rig.dump() == [b"call", b"call", b"after"]
    assert rig.injected("duplicate") == 1


def test_duplicated_send_arrives_twice(rig: Rig) -> None:
    rig.arm("duplicate")
    rig.root.send(rig.data, b"twice", timeout=5000)
    rig.root.call(rig.data, b"after", rcv_timeout=10_000)
    assert rig.dump() == [b"twice", b"twice", b"after"]


def test_delayed_message_is_held_while_a_later_one_arrives(rig: Rig) -> None:
    rig.arm("delay", delay_ms=60_000)
    slow = rig.kit.root_thread()
    outcome: list[BaseException | None] = []

    def send_slow() -> None:
        try:
            outcome.append(slow.send(rig.data, b"slow", timeout=2000))
        except errors.L4Error as e:
            outcome.append(e)

    t = threading.Thread(target=send_slow)
    t.start()
    wait_for(lambda: rig.root.kernel_info()["faults"]["held"] == 1, what="the held sender")
    rig.root.send(rig.data, b"fast", timeout=5000)
    assert rig.dump() == [b"fast"]              # the held message has not arrived
    t.join(30)
    assert isinstance(outcome[0], errors.Timeout)   # held past its send timeout
    assert rig.dump() == []


def test_delay_shorter_than_the_timeout_delivers_later(rig: Rig) -> None:
    rig.arm("delay", delay_ms=300)
    slow = rig.kit.root_thread()
    t = threading.Thread(target=lambda: slow.send(rig.data, b"slow", timeout=60_000))
    t.start()
    wait_for(lambda: rig.root.kernel_info()["faults"]["held"] == 1, what="the held sender")
    rig.root.send(rig.data, b"fast", timeout=5000)
    t.join(30)
    rig.root.call(rig.data, b"sync", rcv_timeout=10_000)
    assert rig.dump() == [b"fast", b"slow", b"sync"]
    slow.close()


def test_delay_longer_than_the_send_timeout_times_out(rig: Rig) -> None:
    rig.arm("delay", delay_ms=60_000)
    with pytest.raises(errors.Timeout):
        rig.root.send(rig.data, b"late", timeout=100)
    assert rig.dump() == []


def test_forced_send_timeout(rig: Rig) -> None:
    rig.arm("timeout")
    with pytest.raises(errors.Timeout, match="injected"):
        rig.root.call(rig.data, b"never", rcv_timeout=10_000)
    assert rig.root.call(rig.data, b"ok", rcv_timeout=10_000).data == b"ok"
    assert rig.dump() == [b"ok"]


def test_reorder_swaps_two_queued_senders(rig: Rig) -> None:
    # Block the recorder (it calls the holder), queue "1" and "2", let it go.
    blocker = rig.kit.root_thread()
    t_block = threading.Thread(target=lambda: blocker.call(rig.ctrl, b"block", rcv_timeout=60_000))
    t_block.start()
    hold = rig.holder.wait(timeout=10_000)
    senders = [rig.kit.root_thread(), rig.kit.root_thread()]
    threads = []
    for i, s in enumerate(senders):
        if i == 1:
            rig.arm("reorder")
        th = threading.Thread(target=lambda s=s, i=i: s.send(rig.data, str(i + 1).encode(),
                                                             timeout=60_000))
        th.start()
        threads.append(th)
        wait_for(lambda i=i: _sending(rig) == i + 1, what=f"sender {i + 1} queued")
    rig.holder.reply(hold.reply, b"go")
    for th in threads + [t_block]:
        th.join(30)
    assert rig.dump() == [b"2", b"1"]
    assert rig.injected("reorder") == 1
    for s in senders + [blocker]:
        s.close()


def _sending(rig: Rig) -> int:
    n = 0
    for slot in range(8, 200):
        try:
            d = rig.root.cap_inspect(slot)
        except errors.L4Error:
            continue
        if d.get("type") == "thread" and d.get("state") == "sending":
            n += 1
    return n


def test_crash_makes_the_task_raise_in_its_own_code(rig: Rig) -> None:
    rig.root.call(rig.data, b"warm", rcv_timeout=10_000)     # it is in its receive loop
    res = rig.root.fault("crash", {"slot": rig.proc.slot})
    assert res["crashed"] == 1
    assert rig.proc.wait(20) == 1              # kernel.user.task: an exception is status 1
    assert rig.injected("crash") == 1


def test_probability_and_seed_give_the_same_decisions(rig: Rig) -> None:
    def run() -> list[bytes]:
        rule = rig.arm("drop", probability=0.5, count=0, seed=1234)
        for i in range(30):
            rig.root.send(rig.data, b"%d" % i, timeout=5000)
        rig.root.fault("remove", {"rule": rule["rule"]})
        return rig.dump()

    first, second = run(), run()
    assert first == second and 0 < len(first) < 30


def test_count_limit_disarms_the_rule(rig: Rig) -> None:
    rig.arm("drop", count=2)
    for i in range(4):
        rig.root.send(rig.data, b"%d" % i, timeout=5000)
    assert rig.dump() == [b"2", b"3"]
    assert rig.root.fault("list")["armed"] == 0


def test_bad_requests_are_refused(rig: Rig) -> None:
    with pytest.raises(errors.InvalidArgument):
        rig.root.fault("add", {"kind": "explode"})
    with pytest.raises(errors.InvalidArgument):
        rig.root.fault("frobnicate")
    with pytest.raises(errors.InvalidArgument):
        rig.arm("drop", probability=2.0)
    with pytest.raises(errors.NoCapability):
        rig.root.fault("list", kernel=SLOT_TASK)
