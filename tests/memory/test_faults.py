"""Page faults: the kernel turns them into IPC to the thread's pager; errors and deaths."""
from __future__ import annotations

import threading

from kernel.abi import Proto

ADDR = 0x1000_0000


def test_fault_is_served_by_the_pager_and_unmap_makes_it_fault_again(mem):
    mem.agent("p", mode="pager")
    mem.agent("c", pager="p")
    base = mem.ok("p", "alloc", order=13)[0][1]
    mem.ok("p", "write", addr=base, data=b"paged in")
    assert mem.ok("c", "read", addr=ADDR, n=8) == b"paged in"
    faults = mem.ok("p", "faults")
    assert [(f["addr"], f["access"], f["task"]) for f in faults] == [(ADDR, 4, "c")]
    mem.ok("c", "write", addr=ADDR + 4096 + 3, data=b"xyz")     # second page, write fault
    assert mem.ok("p", "read", addr=base + 4096 + 3, n=3) == b"xyz"
    assert len(mem.ok("p", "faults")) == 2
    assert mem.ok("c", "read", addr=ADDR, n=8) == b"paged in"    # TLB hit: no new fault
    assert len(mem.ok("p", "faults")) == 2
    # the pager unmaps; once that returns, c's next access faults again
    assert mem.ok("p", "unmap", vaddr=base, order=13) == 2
    assert mem.ok("c", "query", vaddr=ADDR, order=13) == []
    assert mem.ok("c", "read", addr=ADDR, n=8) == b"paged in"
    assert len(mem.ok("p", "faults")) == 3


def test_pager_error_becomes_an_exception_ipc(mem):
    handler = mem.sys.gate(label=77)
    mem.agent("p")                                 # answers every fault with an error
    mem.agent("c", pager="p", handler=handler)
    ans = mem.do("c", "read", addr=ADDR, n=1)
    assert ans["err"] == "PAGE_FAULT" and ans["code"] == "DENIED"
    msg = mem.root.wait(timeout=5000)
    assert msg.label == 77 and msg.proto == Proto.EXCEPTION
    body = msg.body()
    assert body["event"] == "page_fault" and body["addr"] == ADDR and body["task"] == "c"


def test_thread_without_pager_faults_with_an_error(mem):
    mem.agent("c")
    ans = mem.do("c", "read", addr=ADDR, n=1)
    assert ans["err"] == "PAGE_FAULT" and ans["code"] == "NO_CAP"


def test_pager_dying_mid_fault_releases_the_thread(mem):
    p = mem.agent("p", mode="hold")              # takes the fault, never answers
    mem.agent("c", pager="p")
    l4b = mem.root.spawn_thread()
    result: dict = {}

    def touch() -> None:
        result.update(mem.do("c", "read", l4=l4b, addr=ADDR, n=1))
    t = threading.Thread(target=touch)
    t.start()
    from kernel.user.testing import wait_for
    wait_for(lambda: len(mem.ok("p", "faults")) == 1, what="the fault to reach the pager")
    p.kill()
    t.join(20)
    assert not t.is_alive()
    assert result["err"] == "PAGE_FAULT" and result["code"] == "PEER_DIED"
    l4b.close()
