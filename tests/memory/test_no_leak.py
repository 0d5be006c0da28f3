"""RAM never leaks: it is a memfd (no name in /dev/shm) that dies with its last user.

Checked from outside: no process maps or holds the kernel's RAM after the system stops,
after `kill -9` of the kernel, and a task killed with -9 loses its mappings everywhere."""
from __future__ import annotations

import os
import signal

from kernel.user.testing import wait_for

from tests.memory.conftest import Mem


def _holders(kernel_pid: int) -> list[int]:
    """Processes that map or hold an fd of this kernel's RAM memfd."""
    tag = f"memfd:l4py-ram-{kernel_pid}"
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/maps") as f:
                if tag in f.read():
                    out.append(int(p))
                    continue
            for fd in os.listdir(f"/proc/{p}/fd"):
                if tag in os.readlink(f"/proc/{p}/fd/{fd}"):
                    out.append(int(p))
                    break
        except OSError:
            continue
    return out


def _shm(kernel_pid: int) -> set[str]:
    return {n for n in os.listdir("/dev/shm") if str(kernel_pid) in n}


def _system_with_users() -> tuple[Mem, int]:
    m = Mem()
    m.agent("b")
    m.agent("a", peers=("b",))
    va = m.ok("a", "alloc", order=14)[0][1]
    m.ok("a", "write", addr=va, data=b"in use")   # a task holds the frames it touched
    m.ok("a", "give", to="b", vaddr=va, order=14)
    kpid = m.sys.kernel.pid
    holders = _holders(kpid)
    assert kpid in holders and m.procs["a"].pid in holders
    assert _shm(kpid) == set()          # the RAM has no name anywhere
    return m, kpid


def test_nothing_left_after_a_normal_stop():
    m, kpid = _system_with_users()
    m.close()
    assert _holders(kpid) == []


def test_nothing_left_after_kill_9_of_the_kernel():
    m, kpid = _system_with_users()
    try:
        os.kill(kpid, signal.SIGKILL)
        m.sys.kernel.wait(10)
        # every task notices the kernel is gone (KernelGone) and exits; Linux frees the memfd
        wait_for(lambda: all(tp.proc.poll() is not None for tp in m.procs.values()),
                 timeout=15, what="the tasks to notice the kernel's death")
        wait_for(lambda: _holders(kpid) == [], timeout=5, what="the RAM to be released")
    finally:
        m.close()


def test_kill_9_of_a_task_unmaps_what_it_gave():
    m = Mem()
    try:
        m.agent("b")
        m.agent("a", peers=("b",))
        va = m.ok("a", "alloc", order=13)[0][1]
        m.ok("a", "write", addr=va, data=b"doomed")
        vb = m.ok("a", "give", to="b", vaddr=va, order=13)[0][1]
        assert m.ok("b", "read", addr=vb, n=6) == b"doomed"
        m.procs["a"].kill()
        m.procs["a"].wait()
        wait_for(lambda: "a" not in [t["name"] for t in m.root.kernel_info()["tasks"]],
                 what="the kernel to notice a's death")
        assert m.ok("b", "query", vaddr=vb, order=13) == []
        assert m.do("b", "read", addr=vb, n=1)["err"] == "PAGE_FAULT"
        assert m.procs["a"].pid not in _holders(m.sys.kernel.pid)
    finally:
        m.close()
