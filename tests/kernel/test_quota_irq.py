"""Factory quotas (creation bounded, nested quotas carved from the parent, refunds) and IRQ
objects (delivery with the attach label, priority over blocked senders, masking).

One kernel per module; each test uses agents and IRQs of its own. IRQ tests attach to the
root's main thread (the test process) and read with `root.wait` directly, so the order of
delivery is what they see.
"""
from __future__ import annotations

from typing import Any

import pytest

from kernel.abi import Proto, Rights, unpack
from kernel.user.client import L4
from kernel.user.errors import NoRights, QuotaExceeded, Timeout
from kernel.user.testing import wait_for


@pytest.fixture
def k(shared_kit: Any) -> Any:
    yield shared_kit
    with pytest.raises(Timeout):          # each test leaves nothing queued at root
        shared_kit.root.wait(timeout=0)


# -- quotas --------------------------------------------------------------------------

def test_factory_quota_is_enforced_and_refunded(k: Any) -> None:
    a = k.agent("q3", quota=3)
    made = [a.do("create_gate", 1), a.do("create_irq"), a.do("create_gate", 2)]
    assert a.do("factory_info")["used"] == 3
    with pytest.raises(QuotaExceeded):
        a.do("create_gate", 3)
    with pytest.raises(QuotaExceeded):
        a.do("create_thread")
    assert a.do("factory_info") == {**a.do("factory_info"), "limit": 3, "used": 3}
    a.do("cap_delete", made[1])           # last capability: the IRQ dies, its unit comes back
    assert a.do("factory_info")["used"] == 2
    a.do("create_gate", 4)
    with pytest.raises(QuotaExceeded):
        a.do("create_gate", 5)


def test_nested_task_quota_is_carved_from_the_parent(k: Any) -> None:
    a = k.agent("q10", quota=10)
    with pytest.raises(QuotaExceeded):                # more than the parent has
        a.do("create_task", "greedy", 100)
    kid = a.do("create_task", "kid", 5)               # 5 + the task + its main thread
    assert a.do("factory_info")["used"] == 7
    with pytest.raises(QuotaExceeded):                # 2 + 2 > 3 left
        a.do("create_task", "kid2", 2)
    kid3 = a.do("create_task", "kid3", 1)
    assert a.do("factory_info")["used"] == 10
    info = {t["name"]: t["quota"] for t in k.root.kernel_info()["tasks"]}
    assert info["kid"] == {"limit": 5, "used": 0}

    # The kid's own factory enforces its own limit (we act as its main thread).
    slot, thread_slot, secret, task_id, thread_id = kid
    with L4(k.sys.sock, secret) as as_kid:
        for i in range(5):
            as_kid.create_gate(i)
        with pytest.raises(QuotaExceeded):
            as_kid.create_gate(99)
        assert as_kid.factory_info()["used"] == 5
        assert a.do("factory_info")["used"] == 10     # the kid's objects are charged to the kid

        # Destroying the kid frees its objects and gives the whole carve-out back. (While
        # we are still connected as it: closing its only connection would end it too.)
        a.do("destroy", slot)
        assert a.do("factory_info")["used"] == 3
    a.do("destroy", kid3[0])
    assert a.do("factory_info")["used"] == 0
    assert not {"kid", "kid3"} & {t["name"] for t in k.root.kernel_info()["tasks"]}


def test_a_dead_process_gives_its_quota_back(k: Any) -> None:
    before = k.root.factory_info()["used"]
    proc = k.spawn("sleeper", "q-sleeper", quota=20)
    assert k.root.factory_info()["used"] == before + 22
    proc.kill()
    k.wait_gone(proc)
    assert k.root.factory_info()["used"] == before


def test_a_sub_task_dies_with_the_only_task_that_could_reach_it(k: Any) -> None:
    """A task creates a sub-task (it holds the only capability to it; the sub-task never got
    a process) and dies: nothing can reach the sub-task any more, so it goes too and the
    whole carve-out returns to root (it leaked for good before: found by the fuzz)."""
    a = k.agent("parent", quota=20)
    before = k.root.factory_info()["used"] - 22      # the agent: its quota, itself, its thread
    a.do("create_task", "orphan", 5)
    assert "orphan" in {t["name"] for t in k.root.kernel_info()["tasks"]}
    a.kill()
    k.wait_gone(a.proc)
    wait_for(lambda: k.root.factory_info()["used"] == before, 10, "root's quota to come back")
    assert "orphan" not in {t["name"] for t in k.root.kernel_info()["tasks"]}


# -- IRQs -------------------------------------------------------------------------------

def irq_msg(msg: Any, label: int) -> int:
    assert msg.proto == Proto.IRQ and msg.label == label and msg.reply == 0
    return int(unpack(msg.data)["count"])


def test_trigger_delivers_an_irq_message_with_the_attach_label(k: Any) -> None:
    irq = k.root.create_irq()
    a = k.agent("irq-receiver")
    k.root.irq_attach(irq, thread=a.thread, label=0x1AB)
    got = a.start("wait")
    a.wait_in_op("receiving")
    k.root.irq_trigger(irq)
    msg = got.result(10)
    assert msg["proto"] == Proto.IRQ and msg["label"] == 0x1AB and msg["reply"] == 0
    assert unpack(msg["data"])["count"] == 1
    k.root.cap_delete(irq)


def test_irq_from_a_task_with_invoke_only(k: Any) -> None:
    irq = k.root.create_irq()
    k.root.irq_attach(irq, label=0x1AD)               # to root's main thread
    a = k.agent("irq-source", caps={"irq": (irq, Rights.INVOKE)})
    a.do("irq_trigger", a.caps["irq"])
    a.do("irq_trigger", a.caps["irq"])
    assert irq_msg(k.root.wait(timeout=5000), 0x1AD) == 2    # coalesced while root was busy
    with pytest.raises(NoRights):
        a.do("irq_attach", a.caps["irq"], None, 0x666)
    with pytest.raises(NoRights):
        a.do("irq_mask", a.caps["irq"], True)
    k.root.cap_delete(irq)


def test_irq_wins_over_queued_senders_in_an_open_wait(k: Any) -> None:
    gate = k.root.create_gate(0x1AE)
    irq = k.root.create_irq()
    k.root.irq_attach(irq, label=0x1AF)
    sender = k.agent("queued", caps={"root": (gate, Rights.INVOKE)})
    source = k.agent("trigger", caps={"irq": (irq, Rights.INVOKE)})
    sent = sender.start("send", sender.caps["root"], b"first in line")
    sender.wait_in_op("sending")
    source.do("irq_trigger", source.caps["irq"])      # comes later than the sender
    assert irq_msg(k.root.wait(timeout=5000), 0x1AF) == 1
    msg = k.root.wait(timeout=5000)
    assert msg.label == 0x1AE and msg.data == b"first in line"
    assert sent.result(10) is None
    k.root.cap_delete(irq)
    k.root.cap_delete(gate)


def test_masked_irq_stays_pending_until_unmasked(k: Any) -> None:
    irq = k.root.create_irq()
    k.root.irq_attach(irq, label=0x1B0)
    assert k.root.irq_mask(irq, True) == {"masked": True, "pending": 0}
    k.root.irq_trigger(irq)
    k.root.irq_trigger(irq)
    with pytest.raises(Timeout):
        k.root.wait(timeout=50)
    assert k.root.cap_inspect(irq)["pending"] == 2
    assert k.root.irq_mask(irq, False)["masked"] is False
    assert irq_msg(k.root.wait(timeout=5000), 0x1B0) == 2
    with pytest.raises(Timeout):                      # delivered once, not twice
        k.root.wait(timeout=0)
    k.root.cap_delete(irq)


def test_irq_of_a_dead_thread_is_harmless(k: Any) -> None:
    irq = k.root.create_irq()
    a = k.agent("irq-dies")
    k.root.irq_attach(irq, thread=a.thread, label=0x1B1)
    a.kill()
    k.wait_gone(a.proc)
    k.root.irq_trigger(irq)                           # nobody to deliver to: stays pending
    assert k.root.cap_inspect(irq)["thread"] is None
    k.root.irq_attach(irq, label=0x1B2)               # re-attached: the pending one arrives
    assert irq_msg(k.root.wait(timeout=5000), 0x1B2) == 1
    assert k.root.kernel_info()["stats"]["kernel_bugs"] == 0
    k.root.cap_delete(irq)
