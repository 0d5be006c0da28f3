"""moe: dataspaces paged on demand, shared by capability, copy-on-write, quotas."""
from __future__ import annotations

KB = 1024


def test_demand_paging_through_moe(mem):
    admin = mem.moe()
    mem.moe_client(admin, "a")
    slot, ident, size = mem.ok("a", "moe_alloc", size=64 * KB)
    assert size == 64 * KB
    addr = mem.ok("a", "moe_attach", slot=slot)
    assert mem.ok("a", "read", addr=addr + 5 * 4096, n=4) == b"\0\0\0\0"   # zero page
    mem.ok("a", "write", addr=addr + 4090, data=b"across a page boundary")
    assert mem.ok("a", "read", addr=addr + 4090, n=22) == b"across a page boundary"
    info = mem.ok("a", "moe_info")
    assert info["used"] == 64 * KB and info["regions"][0][:3] == [addr, 64 * KB, ident]
    # only the touched pages are resident
    assert len(mem.ok("a", "query", vaddr=addr, order=16)) == 3
    assert mem.do("a", "read", addr=addr + 64 * KB, n=1)["code"] == "DENIED"   # no region


def test_dataspace_shared_by_capability(mem):
    admin = mem.moe()
    mem.moe_client(admin, "b")
    mem.moe_client(admin, "a", peers=("b",))
    slot = mem.ok("a", "moe_alloc", size=16 * KB)[0]
    addr = mem.ok("a", "moe_attach", slot=slot)
    mem.ok("a", "write", addr=addr + 8192, data=b"from a")
    got = mem.ok("a", "send_cap", to="b", slot=slot)
    bslot = got[0][1]
    baddr = mem.ok("b", "moe_attach", slot=bslot, rights=4)      # read-only for b
    assert mem.ok("b", "read", addr=baddr + 8192, n=6) == b"from a"
    assert mem.do("b", "write", addr=baddr, data=b"x")["code"] == "DENIED"
    mem.ok("a", "write", addr=addr + 8192, data=b"again!")
    assert mem.ok("b", "read", addr=baddr + 8192, n=6) == b"again!"


def test_copy_on_write(mem):
    admin = mem.moe()
    mem.moe_client(admin, "a")
    slot = mem.ok("a", "moe_alloc", size=8 * KB)[0]
    addr = mem.ok("a", "moe_attach", slot=slot)
    mem.ok("a", "write", addr=addr, data=b"original")
    copy = mem.ok("a", "moe_copy", slot=slot)[0]
    caddr = mem.ok("a", "moe_attach", slot=copy)
    assert mem.ok("a", "read", addr=caddr, n=8) == b"original"
    mem.ok("a", "write", addr=caddr, data=b"copy....")
    assert mem.ok("a", "read", addr=addr, n=8) == b"original"
    mem.ok("a", "write", addr=addr, data=b"changed!")
    assert mem.ok("a", "read", addr=caddr, n=8) == b"copy...."
    assert mem.ok("a", "read", addr=addr, n=8) == b"changed!"
    assert mem.ok("a", "read", addr=caddr + 4096, n=2) == b"\0\0"


def test_quota(mem):
    admin = mem.moe()
    mem.moe_client(admin, "a", quota=128 * KB)
    s1 = mem.ok("a", "moe_alloc", size=64 * KB)[0]
    mem.ok("a", "moe_alloc", size=64 * KB)
    ans = mem.do("a", "moe_alloc", size=4 * KB)
    assert ans["err"] == "QUOTA" and "128" not in ans.get("code", "")
    ans2 = mem.do("a", "moe_copy", slot=s1)
    assert ans2["err"] == "QUOTA"
    mem.ok("a", "moe_release", slot=s1)
    mem.ok("a", "moe_alloc", size=64 * KB)
    assert mem.ok("a", "moe_info")["used"] == 128 * KB
