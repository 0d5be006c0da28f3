"""sigma0: allocation, freeing (recursive unmap), and paging 1:1."""
from __future__ import annotations

import pytest

from kernel.abi import pack, unpack
from kernel.user.rpc import RemoteFailure
from servers.sigma0 import SIGMA0


def _sigma0(mem, gate):
    """Root's SIGMA0 stub through `gate` (the gate's label is the client sigma0 sees)."""
    return SIGMA0.client(mem.root, gate, timeout=20_000)


def test_alloc_free_and_info(mem):
    mem.agent("b")
    mem.agent("a", peers=("b",))
    info = _sigma0(mem, mem.s0gate("root")).info()
    frames, free = info["frames"], info["free"]
    assert frames == free == (64 << 20) // 4096
    va = mem.ok("a", "alloc", order=16)[0][1]
    vb = mem.ok("a", "give", to="b", vaddr=va, order=16)[0][1]
    assert _sigma0(mem, mem.s0gates["root"]).info()["free"] == free - 16
    phys = va - 0x4000_0000
    # only the owner may free it; freeing unmaps it from a and from b
    with pytest.raises(RemoteFailure) as e:
        _sigma0(mem, mem.s0gates["root"]).free(phys, 16)
    assert e.value.error == "NO_RIGHTS"
    ans = unpack(mem.root.call(mem.gates["a"], pack({"op": "query", "vaddr": va, "order": 16})).data)
    assert len(ans["ok"]) == 16
    # a asks sigma0 through its own gate: use the agent's 'give' path? free goes via a raw call
    m = mem.sys.spawn("tests.memory.test_sigma0:free_block", "freer",
                      args=(str(phys), "16"), caps={"sigma0": mem.s0gates["a"]})
    assert m.wait(20) == 0
    assert mem.ok("a", "query", vaddr=va, order=16) == []
    assert mem.ok("b", "query", vaddr=vb, order=16) == []
    assert _sigma0(mem, mem.s0gates["root"]).info()["free"] == free


def free_block(l4, phys, order):
    """A task speaking through a's sigma0 gate (same label: sigma0 sees the owner)."""
    unmapped = SIGMA0.client(l4, l4.caps["sigma0"]).free(int(phys), int(order))
    return 0 if unmapped == 32 else 1        # 16 pages in a, 16 in b


def test_sigma0_pages_one_to_one(mem):
    mem.agent("c", pager_gate=mem.s0gate("c-pager"))
    addr = 0x123000
    mem.ok("c", "write", addr=addr + 5, data=b"phys")
    assert mem.ok("c", "query", vaddr=addr, order=12) == [[addr, addr >> 12, 7]]
    assert mem.ok("c", "read", addr=addr + 5, n=4) == b"phys"
    ans = mem.do("c", "read", addr=(64 << 20) + 4096, n=1)      # beyond RAM
    assert ans["code"] == "DENIED"
