"""Memory a task holds is exactly what its page table maps (issue 11, item 3).

Real kernels, real task processes. Each test names the protection it proves; each fails
when that protection is switched off (docs/MEMORY.md, "What the tests prove"):
- no task is ever handed a descriptor or mapping of the whole RAM — it holds one frame
  per page it touched, and the kernel keeps no descriptor of RAM a task could reopen;
- MEM_ATTACH needs WRITE on the caller's own task capability; refusals are counted;
- the memory channel accepts only the task's own process, with its own token;
- after unmap, a task that kept a frame (a duplicate descriptor, or a second mapping of
  it) is faulted — killed, and gone before the unmapper is answered — so the frame cannot
  be reused while it could still reach it; one that never acknowledges likewise;
- a frame mapped read-only reaches the task as an O_RDONLY descriptor: neither mprotect
  nor a writable mmap of it works, and (mode 0600) a process under another uid cannot
  reopen it read-write;
- a process under another uid cannot reach the kernel's frames through /proc at all.
"""
from __future__ import annotations

import json
import os
import threading

import pytest

from kernel.abi import PAGE_SIZE, MemRights
from kernel.user.errors import L4Error
from kernel.user.testing import wait_for
from tests.memory.conftest import Mem
from tests.security.memory_hostile import as_nobody, ram_fds

KPAGE = 12


@pytest.fixture
def mem():
    m = Mem()
    try:
        yield m
    finally:
        m.close()


def ram_maps(pid: int) -> list[tuple[int, str]]:
    """(size, perms) of every mapping of a RAM frame file in process `pid`."""
    out = []
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                if "l4py-ram-" in line:
                    rng, perms = line.split()[:2]
                    lo, hi = (int(x, 16) for x in rng.split("-"))
                    out.append((hi - lo, perms))
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def stats(mem: Mem) -> dict:
    return mem.root.kernel_info()["stats"]


def test_a_task_holds_one_frame_per_page_it_touched_and_nothing_else(mem):
    mem.agent("a")
    va = mem.ok("a", "alloc", order=16)[0][1]          # 16 pages mapped ...
    mem.ok("a", "write", addr=va, data=b"x")           # ... one touched
    mem.ok("a", "write", addr=va + 5 * PAGE_SIZE, data=b"y")
    pid = mem.procs["a"].pid
    maps = ram_maps(pid)
    assert [size for size, _ in maps] == [PAGE_SIZE, PAGE_SIZE]    # two frames, not RAM
    assert ram_fds(pid) == []                          # no descriptor kept either
    kpid = mem.sys.kernel.pid
    assert ram_fds(kpid) == []                         # nothing to reopen at the kernel's


def test_mem_attach_without_the_right_is_refused_and_counted(mem, tmp_path):
    other = mem.agent("victim")
    out = str(tmp_path / "nomem.json")
    before = mem.root.kernel_info()
    tp = mem.sys.spawn("tests.security.memory_hostile:no_memory", "nomem",
                       args=(str(mem.sys.kernel.pid), out), caps={"other": other.slot})
    tp.proc.wait(30)
    res = json.load(open(out))
    assert res["kernel_ram_fds"] == []
    assert res["invoke_only"] == "NO_RIGHTS"            # our own task, without WRITE
    assert res["empty_slot"] == "NO_CAP"
    assert res["other_task"] == "INVALID"               # another task's, even with WRITE
    assert res["guessed_token"] == "closed"
    assert res["thief"] == "closed"                     # our token from another process
    assert res["owner"] == "accepted"                   # ... and from ours
    after = mem.root.kernel_info()
    assert after["errors"].get("NO_RIGHTS", 0) > before["errors"].get("NO_RIGHTS", 0)
    assert after["stats"]["mem_refused_channels"] == before["stats"]["mem_refused_channels"] + 2
    # the honest task next to it still works
    va = mem.ok("victim", "alloc", order=12)[0][1]
    mem.ok("victim", "write", addr=va, data=b"fine")
    assert mem.ok("victim", "read", addr=va, n=4) == b"fine"


@pytest.mark.parametrize("how", ["fd", "map"])
def test_a_task_that_keeps_a_frame_after_unmap_is_faulted_before_reuse(mem, how):
    handler = mem.sys.gate(label=5)
    keeper = mem.sys.spawn("tests.security.memory_hostile:keeper", "keeper", args=(how,),
                           caps={"sigma0": mem.s0gate("keeper")}, handler=handler)
    mem.gates["keeper"] = mem.root.create_gate(150, thread=keeper.thread)
    mem.procs["keeper"] = keeper
    mem.agent("a", peers=("keeper",))
    va = mem.ok("a", "alloc", order=KPAGE)[0][1]
    mem.ok("a", "write", addr=va, data=b"before")
    kv = mem.ok("a", "give", to="keeper", vaddr=va, order=KPAGE)[0][1]
    assert mem.ok("keeper", "read", addr=kv, n=6) == b"before"
    assert mem.ok("keeper", "kept", n=6) == [b"before"]   # its private copy of the frame
    kept_before = stats(mem)["mem_kept_frames"]
    assert mem.ok("a", "unmap", vaddr=va, order=KPAGE) == 1
    # When unmap returns, the keeper's process is gone: it maps and holds nothing of RAM.
    assert keeper.proc.poll() is not None or not ram_maps(keeper.pid)
    assert ram_maps(keeper.pid) == [] and ram_fds(keeper.pid) == []
    assert stats(mem)["mem_kept_frames"] == kept_before + 1
    msg = mem.root.wait(timeout=5000)
    assert msg.label == 5 and "kept the frames" in msg.body()["reason"]
    wait_for(lambda: keeper.proc.poll() is not None, what="the keeper's process to end")
    # a writes on; nobody else sees it, a still works
    mem.ok("a", "write", addr=va, data=b"secret")
    assert mem.ok("a", "read", addr=va, n=6) == b"secret"


def test_a_task_that_never_acknowledges_is_gone_before_unmap_returns(mem):
    handler = mem.sys.gate(label=5)
    mem.agent("v", mode="deaf", handler=handler)       # ignores SHOOTDOWN_SIGNAL
    mem.agent("a", peers=("v",))
    va = mem.ok("a", "alloc", order=KPAGE)[0][1]
    mem.ok("a", "write", addr=va, data=b"shared")
    vv = mem.ok("a", "give", to="v", vaddr=va, order=KPAGE)[0][1]
    assert mem.ok("v", "read", addr=vv, n=6) == b"shared"
    v = mem.procs["v"]
    # v never reads its channel nor acknowledges: it computes outside the kernel
    l4b = mem.root.spawn_thread()
    out: dict = {}

    def spin() -> None:
        try:
            out.update(mem.do("v", "spin", l4=l4b, s=30.0))
        except L4Error as e:
            out["err"] = e.err.name
    t = threading.Thread(target=spin)
    t.start()
    wait_for(lambda: _spinning(mem), what="v to spin")
    assert mem.ok("a", "unmap", vaddr=va, order=KPAGE) == 1
    assert ram_maps(v.pid) == []                       # killed, and gone, first
    t.join(20)
    assert out == {"err": "PEER_DIED"}                 # its caller was released
    l4b.close()


def _spinning(mem: Mem) -> bool:
    for task in mem.root.kernel_info()["tasks"]:
        if task["name"] == "v":
            tid = task["threads"][0]
            for tp in mem.procs.values():
                insp = mem.root.cap_inspect(tp.thread)
                if insp["id"] == tid:
                    return insp["state"] != "receiving"
    return False


def test_a_read_only_mapping_cannot_be_made_writable(mem):
    keeper = mem.sys.spawn("tests.security.memory_hostile:keeper", "keeper", args=("fd",),
                           caps={"sigma0": mem.s0gate("keeper")})
    mem.gates["keeper"] = mem.root.create_gate(150, thread=keeper.thread)
    mem.procs["keeper"] = keeper
    mem.agent("a", peers=("keeper",))
    va = mem.ok("a", "alloc", order=KPAGE)[0][1]
    mem.ok("a", "write", addr=va, data=b"constant")
    kv = mem.ok("a", "give", to="keeper", vaddr=va, order=KPAGE, rights=int(MemRights.R))[0][1]
    assert mem.ok("keeper", "read", addr=kv, n=8) == b"constant"
    res = mem.ok("keeper", "write_ro", addr=kv)
    assert res["mprotect"] != "ok"                     # EACCES: the file is O_RDONLY
    assert res and all(v != "ok" for k, v in res.items()), res
    assert any(k.startswith("mmap_rw") for k in res)   # it did try its own descriptor
    if os.geteuid() == 0:
        # Under another uid the frame's file (mode 0600, the kernel's) cannot be reopened
        # read-write through /proc/self/fd; as root it could: the uid switch closes that.
        assert mem.ok("keeper", "reopen_unprivileged") == ["Permission denied"]
    assert mem.ok("a", "read", addr=va, n=8) == b"constant"
    ans = mem.do("keeper", "write", addr=kv, data=b"x")
    assert ans["err"] == "PAGE_FAULT"                  # and the kernel says no, too


def test_a_process_under_another_uid_cannot_reach_the_kernels_frames(mem):
    mem.agent("a")
    va = mem.ok("a", "alloc", order=KPAGE)[0][1]
    mem.ok("a", "write", addr=va, data=b"private")
    kpid = mem.sys.kernel.pid

    def attack() -> dict:
        out: dict[str, object] = {}
        for what in ("mem", "map_files", "fd"):
            path = f"/proc/{kpid}/{what}"
            try:
                if what == "mem":
                    os.close(os.open(path, os.O_RDONLY))
                    out[what] = "opened"
                else:
                    names = os.listdir(path)
                    opened = 0
                    for n in names:
                        try:
                            os.close(os.open(f"{path}/{n}", os.O_RDONLY))
                            opened += 1
                        except OSError:
                            pass
                    out[what] = opened
            except OSError as e:
                out[what] = e.strerror
        return out
    got = as_nobody(attack)
    assert got["mem"] != "opened"
    assert got["map_files"] in (0, "Permission denied")
    assert got["fd"] in (0, "Permission denied")


def test_a_task_under_its_own_uid_gets_exactly_its_memory_through_the_channel(mem):
    """What the per-task uids need: a task that is not root (so it cannot open anything of
    the kernel's through /proc) still gets the frames its page table maps, and loses them."""
    if os.geteuid() != 0:
        pytest.skip("switching a task to another uid needs root")
    os.chmod(mem.sys.run_dir, 0o711)                  # nobody may reach RUN_DIR/mem.sock
    mem.agent("n", mode="nobody")
    mem.agent("a", peers=("n",))
    va = mem.ok("a", "alloc", order=KPAGE + 1)[0][1]
    mem.ok("a", "write", addr=va, data=b"for nobody")
    nv = mem.ok("a", "give", to="n", vaddr=va, order=KPAGE + 1)[0][1]
    assert mem.ok("n", "read", addr=nv, n=10) == b"for nobody"
    mem.ok("n", "write", addr=nv + PAGE_SIZE, data=b"back")
    assert mem.ok("a", "read", addr=va + PAGE_SIZE, n=4) == b"back"
    pid = mem.procs["n"].pid
    assert os.stat(f"/proc/{pid}").st_uid == 65534
    assert [size for size, _ in ram_maps(pid)] == [PAGE_SIZE, PAGE_SIZE]
    assert mem.ok("a", "unmap", vaddr=va, order=KPAGE + 1) == 2
    assert ram_maps(pid) == []                         # it dropped both, and said so
    assert mem.procs["n"].proc.poll() is None          # cooperative: alive
    assert mem.do("n", "read", addr=nv, n=1)["err"] == "PAGE_FAULT"
