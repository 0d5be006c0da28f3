"""sigma0: allocation, freeing (recursive unmap), and paging 1:1."""
from __future__ import annotations

from kernel.abi import pack, unpack


def _sigma0(mem, gate, body):
    return unpack(mem.root.call(gate, pack(body)).data)


def test_alloc_free_and_info(mem):
    mem.agent("b")
    mem.agent("a", peers=("b",))
    info = _sigma0(mem, mem.s0gate("root"), {"op": "info"})["ok"]
    frames, free = info["frames"], info["free"]
    assert frames == free == (64 << 20) // 4096
    va = mem.ok("a", "alloc", order=16)[0][1]
    vb = mem.ok("a", "give", to="b", vaddr=va, order=16)[0][1]
    assert _sigma0(mem, mem.s0gates["root"], {"op": "info"})["ok"]["free"] == free - 16
    phys = va - 0x4000_0000
    # only the owner may free it; freeing unmaps it from a and from b
    assert _sigma0(mem, mem.s0gates["root"], {"op": "free", "phys": phys, "order": 16})["err"] == "NO_RIGHTS"
    ans = unpack(mem.root.call(mem.gates["a"], pack({"op": "query", "vaddr": va, "order": 16})).data)
    assert len(ans["ok"]) == 16
    # a asks sigma0 through its own gate: use the agent's 'give' path? free goes via a raw call
    m = mem.sys.spawn("tests.memory.test_sigma0:free_block", "freer",
                      args=(str(phys), "16"), caps={"sigma0": mem.s0gates["a"]})
    assert m.wait(20) == 0
    assert mem.ok("a", "query", vaddr=va, order=16) == []
    assert mem.ok("b", "query", vaddr=vb, order=16) == []
    assert _sigma0(mem, mem.s0gates["root"], {"op": "info"})["ok"]["free"] == free


def free_block(l4, phys, order):
    """A task speaking through a's sigma0 gate (same label: sigma0 sees the owner)."""
    ans = unpack(l4.call(l4.caps["sigma0"], pack({"op": "free", "phys": int(phys),
                                                   "order": int(order)})).data)
    return 0 if ans.get("ok") == 32 else 1        # 16 pages in a, 16 in b


def test_sigma0_pages_one_to_one(mem):
    mem.agent("c", pager_gate=mem.s0gate("c-pager"))
    addr = 0x123000
    mem.ok("c", "write", addr=addr + 5, data=b"phys")
    assert mem.ok("c", "query", vaddr=addr, order=12) == [[addr, addr >> 12, 7]]
    assert mem.ok("c", "read", addr=addr + 5, n=4) == b"phys"
    ans = mem.do("c", "read", addr=(64 << 20) + 4096, n=1)      # beyond RAM
    assert ans["code"] == "DENIED"
