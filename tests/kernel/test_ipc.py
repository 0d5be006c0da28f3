"""Rendezvous IPC between real task processes: blocking, ordering, timeouts, labels, bad input.

One kernel per module (`shared_kit`); each test leaves the agents idle in their control loop
and restores any priority it changed. The root task (this test process) is a receiver too:
a gate bound to root's main thread plays the "receiver that is not ready yet".
"""
from __future__ import annotations

import time
from typing import Any

import pytest

from kernel.abi import MAX_PAYLOAD, NEVER, Proto, Rights, pack, unpack
from kernel.user.errors import InvalidArgument, MessageTooBig, NoCapability, NoRights, PeerDied, Timeout

LABEL_ROOT = 0x100        # gate bound to root's main thread
LABEL_SVC = 0x200         # gate bound to the echo server
LABEL_SVC_RO = 0x201      # second gate to the same server, handed out with INVOKE only


class World:
    def __init__(self, kit: Any) -> None:
        self.kit = kit
        self.root_gate = kit.root.create_gate(LABEL_ROOT)
        self.srv, self.svc = kit.server(LABEL_SVC)
        self.svc_ro = kit.root.create_gate(LABEL_SVC_RO, thread=self.srv.thread)
        self.agents = [kit.agent(f"ipc{i}", caps={"root": self.root_gate, "svc": self.svc,
                                                  "svc_ro": (self.svc_ro, Rights.INVOKE)})
                       for i in range(4)]
        kit.wait_state(self.srv.thread, "receiving")


@pytest.fixture(scope="module")
def world(shared_kit: Any) -> World:
    return World(shared_kit)


def echo(reply: dict[str, Any]) -> dict[str, Any]:
    return unpack(reply["data"])


# -- blocking rendezvous ------------------------------------------------------------

def test_send_blocks_until_receiver_waits(world: World) -> None:
    kit, a = world.kit, world.agents[0]
    fut = a.start("send", a.caps["root"], b"hello")
    kit.wait_state(a.thread, "sending")
    time.sleep(0.2)                       # nothing moves while root does not wait
    assert not fut.done() and kit.state(a.thread) == "sending"
    msg = kit.collect(LABEL_ROOT)
    assert msg.data == b"hello" and msg.reply == 0
    assert fut.result(10) is None
    assert kit.state(a.thread) == "receiving"     # back in its control loop


def test_blocked_senders_ordered_by_priority_then_arrival(world: World) -> None:
    kit = world.kit
    prios = [100, 50, 200, 200]           # arrival order a0, a1, a2, a3
    futs = []
    try:
        for a, p in zip(world.agents, prios):
            kit.root.thread_control(a.thread, priority=p)
            futs.append(a.start("send", a.caps["root"], a.name.encode()))
            kit.wait_state(a.thread, "sending")       # arrival order is the order we start them
        got = [kit.collect(LABEL_ROOT).data for _ in world.agents]
    finally:
        for a in world.agents:
            kit.root.thread_control(a.thread, priority=100)
    assert got == [b"ipc2", b"ipc3", b"ipc0", b"ipc1"]
    for f in futs:
        assert f.result(10) is None


def test_call_is_send_plus_receive_of_the_reply(world: World) -> None:
    a = world.agents[0]
    r = a.do("call", a.caps["svc"], b"ping")
    assert r["label"] == 0 and r["reply"] == 0    # a reply carries no label of its own
    assert echo(r)["data"] == b"ping" and echo(r)["server"] == "echo_server"


# -- timeouts ------------------------------------------------------------------------

def test_send_timeout_zero_polls(world: World) -> None:
    kit, a = world.kit, world.agents[0]
    with pytest.raises(Timeout):                 # root is not waiting
        a.do("send", a.caps["root"], b"poll", timeout=0)
    with pytest.raises(Timeout):                 # and the message did not stay behind
        kit.root.wait(timeout=0)
    kit.wait_state(world.srv.thread, "receiving")
    r = a.do("call", a.caps["svc"], b"poll-ok", snd_timeout=0)   # the server is waiting
    assert echo(r)["data"] == b"poll-ok"


def test_finite_send_timeout(world: World) -> None:
    kit, a = world.kit, world.agents[1]
    with pytest.raises(Timeout):
        a.do("send", a.caps["root"], b"late", timeout=150)
    with pytest.raises(Timeout):                 # the timed-out sender left the queue
        kit.root.wait(timeout=0)
    assert kit.state(a.thread) == "receiving"


def test_receive_timeout(world: World) -> None:
    a = world.agents[0]
    with pytest.raises(Timeout):
        a.do("wait", timeout=0)
    with pytest.raises(Timeout):
        a.do("wait", timeout=150)
    with pytest.raises(Timeout):
        world.kit.root.wait(timeout=100)


def test_reply_timeout_and_late_reply(world: World) -> None:
    kit, client, server = world.kit, world.agents[0], world.agents[1]
    gate = kit.gate_to(server, 0x300)
    slot = kit.give(client, gate, Rights.INVOKE)
    got = server.start("wait")
    server.wait_in_op("receiving")
    with pytest.raises(Timeout):
        client.do("call", slot, b"slow", rcv_timeout=200)
    msg = got.result(10)
    assert msg["label"] == 0x300 and msg["data"] == b"slow" and msg["reply"]
    with pytest.raises(PeerDied):                # the caller gave up: the reply goes nowhere
        server.do("reply", msg["reply"], b"too late")
    # the echo server's own loop survives a caller that stopped waiting
    with pytest.raises(Timeout):
        client.do("call", client.caps["svc"], b"noreply", rcv_timeout=100)
    assert echo(client.do("call", client.caps["svc"], b"after"))["data"] == b"after"


def test_never_waits_until_the_partner_comes(world: World) -> None:
    kit, a = world.kit, world.agents[2]
    fut = a.start("send", a.caps["root"], b"patient", timeout=None)
    kit.wait_state(a.thread, "sending")
    time.sleep(0.5)
    assert not fut.done()
    assert kit.collect(LABEL_ROOT).data == b"patient"
    assert fut.result(10) is None
    # the raw NEVER value is accepted on the wire as well
    assert NEVER == -1


# -- labels and rights the receiver sees ------------------------------------------------

def test_receiver_sees_gate_label_not_sender_claims(world: World) -> None:
    a = world.agents[3]
    forged = pack({"label": LABEL_SVC_RO, "rights": int(Rights.ALL)})
    r = echo(a.do("call", a.caps["svc"], forged, proto=LABEL_SVC_RO))
    assert r["label"] == LABEL_SVC and r["rights"] == int(Rights.ALL)
    assert r["proto"] == LABEL_SVC_RO and r["data"] == forged    # proto/data are the sender's
    r = echo(a.do("call", a.caps["svc_ro"], forged, proto=LABEL_SVC))
    assert r["label"] == LABEL_SVC_RO and r["rights"] == int(Rights.INVOKE)


def test_negative_proto_is_refused(world: World) -> None:
    a = world.agents[3]
    for proto in (int(Proto.IRQ), int(Proto.EXCEPTION), int(Proto.ALIEN), -1000):
        with pytest.raises(InvalidArgument):
            a.do("call", a.caps["svc"], b"fake kernel message", proto=proto)
    with pytest.raises(InvalidArgument):
        a.do("send", a.caps["root"], b"fake", proto=-1, timeout=0)


def test_sender_cannot_aim_a_gate_at_another_thread(world: World) -> None:
    a = world.agents[3]
    with pytest.raises(NoCapability):            # the slot holds a gate, not a thread
        a.do("create_gate", LABEL_SVC, thread=a.caps["svc"])
    with pytest.raises(NoRights):                # INVOKE only: cannot rebind the gate
        a.do("bind_gate", a.caps["svc_ro"], 2)


# -- bad input from a real task ---------------------------------------------------------

def test_bad_input_answers_errors_and_kernel_keeps_serving(world: World) -> None:
    kit, client, server = world.kit, world.agents[0], world.agents[1]
    before = kit.root.kernel_info()["stats"]["errors"]
    with pytest.raises(NoCapability):
        client.do("call", 3999, b"x")
    with pytest.raises(NoCapability):
        client.do("cap_inspect", 77)
    with pytest.raises(MessageTooBig):
        client.do("send", client.caps["svc"], {"zeros": MAX_PAYLOAD + 1}, timeout=0)
    with pytest.raises(InvalidArgument):         # a receive window over the reserved slots
        client.do("wait", timeout=0, window=(1, 2))
    # a reply capability is one-shot
    gate = kit.gate_to(server, 0x301)
    slot = kit.give(client, gate, Rights.INVOKE)
    got = server.start("wait")
    server.wait_in_op("receiving")
    call = client.start("call", slot, b"once")
    msg = got.result(10)
    server.do("reply", msg["reply"], b"first")
    assert call.result(10)["data"] == b"first"
    with pytest.raises(NoCapability):
        server.do("reply", msg["reply"], b"second")
    with pytest.raises(NoCapability):
        server.do("reply", 123456, b"never issued")
    # the biggest allowed payload still goes through, and everyone else is served
    r = client.do("call", client.caps["svc"], {"zeros": MAX_PAYLOAD - 1024})
    assert len(echo(r)["data"]) == MAX_PAYLOAD - 1024
    for a in world.agents:
        assert echo(a.do("call", a.caps["svc"], a.name.encode()))["data"] == a.name.encode()
    info = kit.root.kernel_info()
    assert info["stats"]["errors"] >= before + 6
    assert info["stats"]["kernel_bugs"] == 0
