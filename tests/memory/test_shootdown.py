"""Unmap returns only after every affected task acknowledged; a task that doesn't is faulted."""
from __future__ import annotations

import threading

from kernel.user.errors import L4Error
from kernel.user.testing import wait_for


def _spin_in_background(mem, name, seconds):
    l4b = mem.root.spawn_thread()
    out: dict = {}

    def run() -> None:
        try:
            out.update(mem.do(name, "spin", l4=l4b, s=seconds))
        except L4Error as e:
            out["err"] = e.err.name
    t = threading.Thread(target=run)
    t.start()
    return t, out, l4b


def _share(mem, victim):
    va = mem.ok("a", "alloc", order=12)[0][1]
    mem.ok("a", "write", addr=va, data=b"shared")
    vv = mem.ok("a", "give", to=victim, vaddr=va, order=12)[0][1]
    assert mem.ok(victim, "read", addr=vv, n=6) == b"shared"
    return va, vv


def _deaf_victim_spinning(mem):
    """v (never acknowledges by itself; handler gate label 5) holds a page a gave it and
    computes outside the kernel."""
    handler = mem.sys.gate(label=5)
    mem.agent("v", mode="deaf", handler=handler)
    mem.agent("a", peers=("v",))
    va, _vv = _share(mem, "v")
    t, out, l4b = _spin_in_background(mem, "v", 30.0)
    wait_for(lambda: _state(mem, "v") != "receiving", what="v to start spinning")
    return va, t, out, l4b


def test_a_busy_but_cooperative_task_acknowledges(mem):
    mem.agent("v")
    mem.agent("a", peers=("v",))
    va, vv = _share(mem, "v")
    t, out, l4b = _spin_in_background(mem, "v", 2.0)   # computing, outside the kernel
    wait_for(lambda: _state(mem, "v") != "receiving",
             what="v to start spinning")
    assert mem.ok("a", "unmap", vaddr=va, order=12) == 1  # its signal handler acknowledged
    t.join(20)
    assert out == {"ok": None}
    assert mem.procs["v"].proc.poll() is None
    assert mem.do("v", "read", addr=vv, n=1)["err"] == "PAGE_FAULT"
    l4b.close()


def test_a_task_that_never_acknowledges_is_faulted(mem):
    va, t, out, l4b = _deaf_victim_spinning(mem)
    assert mem.ok("a", "unmap", vaddr=va, order=12) == 1
    msg = mem.root.wait(timeout=5000)
    assert msg.label == 5 and "shootdown" in msg.body()["reason"]
    t.join(20)
    assert out == {"err": "PEER_DIED"}      # its caller was released with an error
    assert "v" not in [x["name"] for x in mem.root.kernel_info()["tasks"]]
    l4b.close()


def _state(mem, name):
    info = mem.root.kernel_info()
    for task in info["tasks"]:
        if task["name"] == name:
            tid = task["threads"][0]
            return _thread_state(mem, tid)
    return "gone"


def _thread_state(mem, tid):
    # the task table names thread ids only; inspect our capability to the thread
    for name, tp in mem.procs.items():
        insp = mem.root.cap_inspect(tp.thread)
        if insp["id"] == tid:
            return insp["state"]
    return "?"


def test_memory_taken_from_a_dead_task_is_reused_only_after_acknowledgement(mem):
    """a gives v a page and dies; the kernel removes v's mapping without waiting. When the
    page's owner (sigma0, told by whoever supervises a) unmaps it to hand it out again, that
    unmap waits for v too: v never acknowledges, so it is faulted, and only then can the
    frame go to anyone else."""
    va, t, out, l4b = _deaf_victim_spinning(mem)
    label = list(mem.s0gates).index("a") + 1     # a's gate label at sigma0 (Mem.s0gate)
    mem.procs["a"].kill()
    mem.procs["a"].wait()
    wait_for(lambda: "a" not in [x["name"] for x in mem.root.kernel_info()["tasks"]],
             what="the kernel to notice a's death")
    from kernel.user.rpc import ADMIN_LABEL
    from servers.sigma0 import SIGMA0
    admin = SIGMA0.client(mem.root, mem.root.create_gate(ADMIN_LABEL, thread=mem.sigma0.thread),
                          timeout=20_000)
    assert admin.client_gone(label) >= 1      # returns once v is dealt with
    msg = mem.root.wait(timeout=5000)
    assert msg.label == 5 and "shootdown" in msg.body()["reason"]
    t.join(20)
    assert out == {"err": "PEER_DIED"}
    assert "v" not in [x["name"] for x in mem.root.kernel_info()["tasks"]]
    l4b.close()


def test_two_threads_sharing_the_vm_acknowledge_shootdowns_and_keep_their_memory(mem):
    """One VM, two OS threads reading through it without pause (one the pages being
    unmapped): every unmap returns (acknowledged, though some thread nearly always holds a
    translation), the task is neither faulted nor crashed, its own page reads right."""
    mem.agent("v")
    mem.agent("a", peers=("v",))
    pv = mem.ok("v", "alloc", order=12)[0][1]
    mem.ok("v", "write", addr=pv, data=b"mine!!")
    pages = [_share(mem, "v") for _ in range(6)]
    l4b = mem.root.spawn_thread()
    out: dict = {}

    def hammer() -> None:
        out.update(mem.do("v", "hammer", l4=l4b, addr=pv, others=[vv for _, vv in pages], s=3.0))
    t = threading.Thread(target=hammer)
    t.start()
    wait_for(lambda: _state(mem, "v") != "receiving", what="v to start reading")
    for va, _ in pages:
        assert mem.ok("a", "unmap", vaddr=va, order=12) == 1
    t.join(30)
    counts = out["ok"]
    assert counts["main"] > 0 and counts["bad"] == 0 and counts["gone"] > 0, counts
    assert mem.procs["v"].proc.poll() is None
    assert mem.ok("v", "read", addr=pv, n=6) == b"mine!!"
    assert mem.do("v", "read", addr=pages[0][1], n=1)["err"] == "PAGE_FAULT"
    l4b.close()
