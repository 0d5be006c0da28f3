"""Capabilities between real tasks: inspect, rights reduction, map/grant over IPC, revocation.

One kernel per module. Every test builds its own derivation chain from a fresh gate, so the
tests do not see each other's capabilities. Chains run root → A (task_map), A → B and B → C
(map items in IPC: A sends through a gate bound to B, B through a gate bound to C).
"""
from __future__ import annotations

from typing import Any

import pytest

from kernel.abi import Item, Rights, unpack
from kernel.user.client import grant_cap, map_cap
from kernel.user.errors import Busy, Canceled, InvalidArgument, NoCapability, NoRights, PeerDied, Timeout

LABEL_B = 0x4B
LABEL_C = 0x4C
IG = Rights.INVOKE | Rights.GRANT


class World:
    def __init__(self, kit: Any) -> None:
        self.kit = kit
        self.srv, _ = kit.server(0x1)
        self.a, self.b, self.c = (kit.agent(n) for n in ("capA", "capB", "capC"))
        self.a_to_b = kit.give(self.a, kit.gate_to(self.b, LABEL_B), Rights.INVOKE)
        self.b_to_c = kit.give(self.b, kit.gate_to(self.c, LABEL_C), Rights.INVOKE)
        self.label = 0x1000

    def fresh_gate(self) -> tuple[int, int]:
        """A new gate to the echo server (root holds it) and its label."""
        self.label += 1
        return self.kit.root.create_gate(self.label, thread=self.srv.thread), self.label


@pytest.fixture(scope="module")
def world(shared_kit: Any) -> World:
    return World(shared_kit)


def pass_cap(sender: Any, via: int, slot: int, receiver: Any, item: list[int]) -> list[int]:
    """`sender` sends `item` (for `slot`) through its gate slot `via`; the receiver, sitting in
    its control loop, takes it into its inbox window. Answers the item as the receiver got it."""
    sender.do("send", via, b"cap", items=[item], timeout=5000)
    inbox = receiver.do("inbox")
    assert len(inbox) == 1 and len(inbox[0]["items"]) == 1
    return inbox[0]["items"][0]


def chain(w: World, rights: int = Rights.ALL) -> tuple[int, int, int, int, int]:
    """root gate → A → B → C. Answers (root slot, label, A's slot, B's slot, C's slot)."""
    g, label = w.fresh_gate()
    sa = w.kit.give(w.a, g, rights)
    kind, sb, _ = pass_cap(w.a, w.a_to_b, sa, w.b, map_cap(sa, rights))
    assert kind == Item.MAP_CAP
    _, sc, _ = pass_cap(w.b, w.b_to_c, sb, w.c, map_cap(sb, rights))
    return g, label, sa, sb, sc


def calls_ok(agent: Any, slot: int, label: int) -> bool:
    return unpack(agent.do("call", slot, b"x")["data"])["label"] == label


# -- inspect ------------------------------------------------------------------------

def test_inspect_describes_the_capability(world: World) -> None:
    kit = world.kit
    g, label = world.fresh_gate()
    info = kit.root.cap_inspect(g)
    assert info["type"] == "gate" and info["label"] == label and info["slot"] == g
    assert info["rights"] == int(Rights.ALL) and info["is_root"] and info["derived"] == 0
    sa = kit.give(world.a, g, Rights.INVOKE)
    assert kit.root.cap_inspect(g)["derived"] == 1
    mine = world.a.do("cap_inspect", sa)
    assert mine["id"] == info["id"] and mine["rights"] == int(Rights.INVOKE) and not mine["is_root"]
    with pytest.raises(NoCapability):
        world.a.do("cap_inspect", 3000)


# -- rights reduction ------------------------------------------------------------------

def test_map_reduces_rights_and_invoke_only_cannot_be_passed_on(world: World) -> None:
    kit, a = world.kit, world.a
    g, label = world.fresh_gate()
    sa = kit.give(a, g, Rights.INVOKE)
    assert calls_ok(a, sa, label)
    with pytest.raises(NoRights):            # no GRANT: cannot map it on
        a.do("send", world.a_to_b, b"", items=[map_cap(sa, Rights.INVOKE)], timeout=0)
    with pytest.raises(NoRights):            # nor grant it
        a.do("send", world.a_to_b, b"", items=[grant_cap(sa)], timeout=0)
    with pytest.raises(NoRights):            # no WRITE: cannot rebind it
        a.do("bind_gate", sa, 2)
    with pytest.raises(NoRights):            # no DELETE: cannot destroy the gate
        a.do("destroy", sa)
    assert world.b.do("inbox") == []         # nothing reached B
    # a local copy with a wider mask still has only INVOKE
    copy = a.do("cap_derive", sa, int(Rights.ALL), dst=400)
    assert copy == 400 and a.do("cap_inspect", copy)["rights"] == int(Rights.INVOKE)
    a.do("cap_delete", copy)


def test_cap_derive_picks_a_free_slot(world: World) -> None:
    g, label = world.fresh_gate()
    try:
        sa = world.kit.give(world.a, g, Rights.INVOKE)
        copy = world.a.do("cap_derive", sa, int(Rights.ALL))
        assert world.a.do("cap_inspect", copy)["rights"] == int(Rights.INVOKE)
    finally:
        world.kit.root.cap_delete(g)


def test_rights_only_shrink_along_a_chain(world: World) -> None:
    g, label, sa, sb, sc = chain(world, IG)
    assert world.a.do("cap_inspect", sa)["rights"] == int(IG)
    assert world.b.do("cap_inspect", sb)["rights"] == int(IG)       # mask ALL asked, IG given
    _, sd, rights = pass_cap(world.b, world.b_to_c, sb, world.c, map_cap(sb, Rights.INVOKE))
    assert rights == int(Rights.INVOKE)
    with pytest.raises(NoRights):
        world.c.do("bind_gate", sc, 2)
    assert calls_ok(world.c, sd, label)
    world.kit.root.cap_delete(g)


# -- revocation -------------------------------------------------------------------------

def test_recursive_revocation_across_three_tasks(world: World) -> None:
    g, label, sa, sb, sc = chain(world)
    for agent, slot in ((world.a, sa), (world.b, sb), (world.c, sc)):
        assert calls_ok(agent, slot, label)
    assert world.a.do("cap_revoke", sa) == 2          # B's copy and C's copy
    for agent, slot in ((world.b, sb), (world.c, sc)):
        with pytest.raises(NoCapability):
            agent.do("cap_inspect", slot)
        with pytest.raises(NoCapability):
            agent.do("call", slot, b"x")
    assert calls_ok(world.a, sa, label)                # revoke keeps A's own slot
    world.kit.root.cap_revoke(g)
    with pytest.raises(NoCapability):
        world.a.do("call", sa, b"x")
    assert world.kit.root.cap_inspect(g)["derived"] == 0
    world.kit.root.cap_delete(g)


def test_revoke_in_the_middle_keeps_the_upper_part(world: World) -> None:
    g, label, sa, sb, sc = chain(world)
    assert world.b.do("cap_revoke", sb) == 1
    with pytest.raises(NoCapability):
        world.c.do("call", sc, b"x")
    assert calls_ok(world.a, sa, label) and calls_ok(world.b, sb, label)
    world.kit.root.cap_delete(g)


def test_delete_removes_the_slot_and_everything_derived(world: World) -> None:
    g, label, sa, sb, sc = chain(world)
    assert world.a.do("cap_delete", sa) == 3
    for agent, slot in ((world.a, sa), (world.b, sb), (world.c, sc)):
        with pytest.raises(NoCapability):
            agent.do("cap_inspect", slot)
    assert world.kit.root.cap_inspect(g)["derived"] == 0
    with pytest.raises(NoCapability):
        world.a.do("cap_delete", sa)                   # deleting twice: nothing there


def test_deleting_the_last_capability_destroys_the_object(world: World) -> None:
    kit, a = world.kit, world.a
    g = kit.root.create_gate(0x99)                     # bound to root, which does not wait
    sa = kit.give(a, g, Rights.INVOKE)
    blocked = a.start("send", sa, b"x")
    a.wait_in_op("sending")
    kit.root.cap_delete(g)                             # recursive: A's copy goes as well
    with pytest.raises(Canceled):                      # the gate died under the blocked sender
        blocked.result(10)
    with pytest.raises(NoCapability):
        a.do("call", sa, b"x")
    with pytest.raises(Timeout):                       # and nothing is left queued at root
        kit.root.wait(timeout=0)


def test_destroy_with_delete_right_removes_every_capability(world: World) -> None:
    kit = world.kit
    g, label = world.fresh_gate()
    sa = kit.give(world.a, g, Rights.ALL)
    sb = kit.give(world.b, g, Rights.INVOKE)
    world.a.do("destroy", sa)
    for agent, slot in ((world.a, sa), (world.b, sb)):
        with pytest.raises(NoCapability):
            agent.do("call", slot, b"x")
    with pytest.raises(NoCapability):
        kit.root.cap_inspect(g)


# -- grant ------------------------------------------------------------------------------

def test_grant_moves_the_capability(world: World) -> None:
    kit = world.kit
    g, label = world.fresh_gate()
    sa = kit.give(world.a, g, IG)
    kind, sb, rights = pass_cap(world.a, world.a_to_b, sa, world.b, grant_cap(sa))
    assert kind == Item.GRANT_CAP and rights == int(IG)
    with pytest.raises(NoCapability):                  # the sender lost it
        world.a.do("cap_inspect", sa)
    assert calls_ok(world.b, sb, label)
    assert kit.root.cap_inspect(g)["derived"] == 1     # same node, same place in the tree
    kit.root.cap_revoke(g)                             # so the root can still take it back
    with pytest.raises(NoCapability):
        world.b.do("call", sb, b"x")
    kit.root.cap_delete(g)


def test_grant_with_a_mask_reduces_rights(world: World) -> None:
    kit = world.kit
    g, label = world.fresh_gate()
    sa = kit.give(world.a, g, Rights.ALL)
    _, sb, rights = pass_cap(world.a, world.a_to_b, sa, world.b, grant_cap(sa, Rights.INVOKE))
    assert rights == int(Rights.INVOKE)
    assert world.b.do("cap_inspect", sb)["rights"] == int(Rights.INVOKE)
    kit.root.cap_delete(g)


# -- receive windows: checked first, nothing moves on failure ----------------------------------

def test_busy_window_slot_moves_nothing(world: World) -> None:
    kit, a, b = world.kit, world.a, world.b
    g, label = world.fresh_gate()
    sa = kit.give(a, g, IG)
    taken = kit.give(b, g, Rights.INVOKE)              # B's slot `taken` is in use
    got = b.start("wait", window=(taken, 1))
    b.wait_in_op("receiving")
    with pytest.raises(Busy):
        a.do("send", world.a_to_b, b"cap", items=[map_cap(sa)], timeout=0)
    assert a.do("cap_inspect", sa)["derived"] == 0     # nothing was derived
    a.do("send", world.a_to_b, b"plain", timeout=0)    # B still waits, and gets this one
    assert got.result(10)["data"] == b"plain"
    kit.root.cap_delete(g)


def test_items_need_a_receive_window(world: World) -> None:
    kit, a, b = world.kit, world.a, world.b
    g, label = world.fresh_gate()
    sa = kit.give(a, g, IG)
    got = b.start("wait")                              # no window: takes no capabilities
    b.wait_in_op("receiving")
    with pytest.raises(InvalidArgument):
        a.do("send", world.a_to_b, b"cap", items=[map_cap(sa)], timeout=0)
    with pytest.raises(InvalidArgument):               # the same slot twice in one message
        a.do("send", world.a_to_b, b"cap", items=[map_cap(sa), map_cap(sa)], timeout=0)
    a.do("send", world.a_to_b, b"done", timeout=0)
    assert got.result(10)["data"] == b"done"
    kit.root.cap_delete(g)


def test_reply_carries_capabilities_into_the_callers_window(world: World) -> None:
    kit, a, b = world.kit, world.a, world.b
    g, label = world.fresh_gate()
    sb = kit.give(b, g, IG)
    got = b.start("wait")
    b.wait_in_op("receiving")
    call = a.start("call", world.a_to_b, b"give me one", window=(500, 1))
    msg = got.result(10)
    b.do("reply", msg["reply"], b"here", items=[map_cap(sb, Rights.INVOKE)])
    r = call.result(10)
    assert r["data"] == b"here" and r["items"] == [[int(Item.MAP_CAP), 500, int(Rights.INVOKE)]]
    assert calls_ok(a, 500, label)
    kit.root.cap_delete(g)
    with pytest.raises(NoCapability):
        a.do("cap_inspect", 500)


def test_task_map_needs_the_task_capability(world: World) -> None:
    kit, a = world.kit, world.a
    g, label = world.fresh_gate()
    sa = kit.give(a, g, IG)
    with pytest.raises(NoCapability):                  # A holds no capability to B's task
        a.do("task_map", world.a_to_b, sa, 300, int(Rights.INVOKE))
    sub = a.do("create_task", "child", 2)              # but it may map into its own child
    assert a.do("task_map", sub[0], sa, 300, int(Rights.INVOKE)) == 300
    assert a.do("cap_inspect", sa)["derived"] == 1
    a.do("destroy", sub[0])                            # the child holds itself: destroy it
    assert a.do("cap_inspect", sa)["derived"] == 0     # the child's copy died with it
    a.do("cap_delete", sub[0])
    a.do("cap_delete", sub[1])
    kit.root.cap_delete(g)


def test_dead_object_slot_reports_peer_died(world: World) -> None:
    kit, a = world.kit, world.a
    sub = a.do("create_task", "shortlived", 1)
    g = a.do("create_gate", 0x77, thread=sub[1])
    a.do("destroy", sub[0])                            # the task and its thread die
    with pytest.raises(PeerDied):
        a.do("call", g, b"x", snd_timeout=0)
    assert a.do("cap_inspect", sub[1])["alive"] is False
    for slot in (g, sub[0], sub[1]):
        a.do("cap_delete", slot)


def test_thread_control_needs_write_and_checks_its_arguments(world: World) -> None:
    kit, a = world.kit, world.a
    t_ro = kit.give(a, world.b.thread, Rights.INVOKE)
    t_rw = kit.give(a, world.b.thread, Rights.INVOKE | Rights.WRITE)
    with pytest.raises(NoRights):
        a.do("thread_control", t_ro, priority=10)
    with pytest.raises(NoRights):                       # nor may it aim a new gate at it
        a.do("create_gate", 0x55, thread=t_ro)
    with pytest.raises(InvalidArgument):
        a.do("thread_control", t_rw, priority=256)
    assert kit.root.cap_inspect(world.b.thread)["priority"] == 100
    assert a.do("thread_control", t_rw, priority=120)["priority"] == 120
    kit.root.thread_control(world.b.thread, priority=100)
    a.do("cap_delete", t_ro)
    a.do("cap_delete", t_rw)
