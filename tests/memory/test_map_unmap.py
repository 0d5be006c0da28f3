"""Flexpage map / grant / recursive unmap across three tasks, with real processes."""
from __future__ import annotations

from tests.memory.agents import WBASE


def test_map_grant_recursive_unmap(mem):
    mem.agent("c")
    mem.agent("b", peers=("c",))
    mem.agent("a", peers=("b",))
    got = mem.ok("a", "alloc", order=14)                 # 4 pages from sigma0
    kind, va, order, rights = got[0]
    assert order == 14 and va >= WBASE
    mem.ok("a", "write", addr=va, data=b"hello from a" * 1000)
    # a maps to b (rw), b maps to c (read only)
    to_b = mem.ok("a", "give", to="b", vaddr=va, order=14, rights=6)
    vb = to_b[0][1]
    to_c = mem.ok("b", "give", to="c", vaddr=vb, order=14, rights=4)
    vc = to_c[0][1]
    assert mem.ok("c", "read", addr=vc, n=12) == b"hello from a"
    assert mem.ok("b", "read", addr=vb + 4096 * 2, n=12) == (b"hello from a" * 1000)[8192:8204]
    # c may not write: read-only, and c has no pager
    ans = mem.do("c", "write", addr=vc, data=b"x")
    assert ans["err"] == "PAGE_FAULT"
    mem.ok("b", "write", addr=vb, data=b"HELLO")
    assert mem.ok("c", "read", addr=vc, n=5) == b"HELLO"
    # a unmaps: b and c lose the pages (recursively), a keeps them
    assert mem.ok("a", "unmap", vaddr=va, order=14) == 8
    assert mem.ok("b", "query", vaddr=vb, order=14) == []
    assert mem.ok("c", "query", vaddr=vc, order=14) == []
    assert len(mem.ok("a", "query", vaddr=va, order=14)) == 4
    assert mem.do("c", "read", addr=vc, n=1)["err"] == "PAGE_FAULT"
    assert mem.do("b", "read", addr=vb, n=1)["err"] == "PAGE_FAULT"
    assert mem.ok("a", "read", addr=va, n=5) == b"HELLO"


def test_grant_moves_the_mapping(mem):
    mem.agent("c")
    mem.agent("b", peers=("c",))
    mem.agent("a", peers=("b",))
    va = mem.ok("a", "alloc", order=12)[0][1]
    mem.ok("a", "write", addr=va, data=b"granted")
    vb = mem.ok("a", "give", to="b", vaddr=va, order=12)[0][1]
    vc = mem.ok("b", "give", to="c", vaddr=vb, order=12, grant=True)[0][1]
    assert mem.ok("b", "query", vaddr=vb, order=12) == []
    assert mem.do("b", "read", addr=vb, n=1)["err"] == "PAGE_FAULT"
    assert mem.ok("c", "read", addr=vc, n=7) == b"granted"
    # the granted node kept its place in the tree: a's unmap still reaches c
    assert mem.ok("a", "unmap", vaddr=va, order=12) == 1
    assert mem.do("c", "read", addr=vc, n=1)["err"] == "PAGE_FAULT"
