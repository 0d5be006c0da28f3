"""Bad flexpages get a clear error and nothing is partially mapped."""
from __future__ import annotations

from tests.memory.agents import WBASE


def _nothing_at(mem, name):
    assert mem.ok(name, "query", vaddr=WBASE, order=24) == []


def test_bad_alignment(mem):
    mem.agent("b")
    mem.agent("a", peers=("b",))
    va = mem.ok("a", "alloc", order=14)[0][1]
    ans = mem.do("a", "give", to="b", vaddr=va + 4096, order=13)
    assert ans["err"] == "INVALID" and "aligned" in ans["reason"]
    _nothing_at(mem, "b")


def test_outside_the_senders_mappings_maps_nothing(mem):
    mem.agent("b")
    mem.agent("a", peers=("b",))
    va = mem.ok("a", "alloc", order=15)[0][1]
    mem.ok("a", "unmap", vaddr=va + 7 * 4096, order=12, own=True)   # a loses its last page
    ans = mem.do("a", "give", to="b", vaddr=va, order=15)
    assert ans["err"] == "INVALID" and f"no mapping at 0x{va + 7 * 4096:x}" in ans["reason"]
    _nothing_at(mem, "b")


def test_rights_the_sender_does_not_have(mem):
    mem.agent("c")
    mem.agent("b", peers=("c",))
    mem.agent("a", peers=("b",))
    va = mem.ok("a", "alloc", order=12)[0][1]
    vb = mem.ok("a", "give", to="b", vaddr=va, order=12, rights=4)[0][1]
    ans = mem.do("b", "give", to="c", vaddr=vb, order=12, rights=6)
    assert ans["err"] == "NO_RIGHTS" and "rights" in ans["reason"]
    _nothing_at(mem, "c")


def test_outside_the_receive_window(mem):
    mem.agent("b", mode="smallwin")              # window of 2**13 bytes
    mem.agent("a", peers=("b",))
    va = mem.ok("a", "alloc", order=14)[0][1]
    ans = mem.do("a", "give", to="b", vaddr=va, order=14)
    assert ans["err"] == "INVALID" and "receive window" in ans["reason"]
    _nothing_at(mem, "b")


def test_one_bad_item_maps_none_of_the_message(mem):
    mem.agent("b")
    mem.agent("a", peers=("b",))
    va = mem.ok("a", "alloc", order=14)[0][1]
    bad = [3, va + 0x100000, 12, 6]            # a has nothing there
    ans = mem.do("a", "give", to="b", vaddr=va, order=13, extra=[bad])
    assert ans["err"] == "INVALID"
    _nothing_at(mem, "b")


def test_target_holding_another_mapping_is_refused(mem):
    mem.agent("b")
    mem.agent("c", peers=("b",))
    mem.agent("a", peers=("b", "c"))
    va = mem.ok("a", "alloc", order=12)[0][1]
    vc = mem.ok("a", "give", to="c", vaddr=va, order=12)[0][1]
    vb = mem.ok("a", "give", to="b", vaddr=va, order=12)[0][1]
    assert vb == vc
    assert mem.ok("a", "give", to="b", vaddr=va, order=12) == [[3, vb, 12, 6]]  # same again: fine
    before = mem.ok("b", "query", vaddr=WBASE, order=24)
    ans = mem.do("c", "give", to="b", vaddr=vc, order=12)     # another source, same place
    assert ans["err"] == "BUSY" and "unmap it first" in ans["reason"]
    assert mem.ok("b", "query", vaddr=WBASE, order=24) == before


def test_unknown_and_malformed_items(mem):
    from kernel.user.errors import InvalidArgument
    import pytest
    with pytest.raises(InvalidArgument):
        mem.root.call(mem.s0gate("x"), b"", items=[[3, 0, 12]])
    with pytest.raises(InvalidArgument):
        mem.root.call(mem.s0gate("y"), b"", items=[[9, 0, 12, 6]])
