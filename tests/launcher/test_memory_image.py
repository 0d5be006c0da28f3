"""Images with memory servers: sigma0 and moe started by the launcher, moe sessions for
tasks, a dataspace shared by capability, and moe told when a client dies.

Real processes throughout: `l4run boot configs/memory.toml` in a temporary run directory,
kill -9 of clients and of moe, an attached task that hogs memory, `down` leaving nothing.
The first test drives moe's `client_gone` directly (kernel.user.testing, no launcher).
"""
from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from kernel.user.testing import PROJECT_ROOT
from launcher import control
from launcher.image import ImageError, parse_image

from .helpers import assert_clean, l4run, ps, ram_holders, system_pids, wait_for, write
from .helpers import task_log as log_of

MEMORY = os.path.join(PROJECT_ROOT, "configs", "memory.toml")
KB = 1024
READ_OK = "pattern ok"


def reads(rd: str) -> int:
    return log_of(rd, "reader").count(READ_OK)


def memory(rd: str) -> dict[str, Any]:
    ans = control.request(rd, "memory")
    assert ans["ok"], ans
    return ans


def totals(m: dict[str, Any]) -> tuple:
    """What a client's death must give back: moe's use, its pool, sigma0's free frames."""
    moe = m["moe"]
    return (moe["sessions"], moe["dataspaces"], moe["used"], moe["quota"], moe["pool_pages"],
            moe["resident_pages"], m["sigma0"]["free"])


# -- moe on its own: client_gone ------------------------------------------------------------

def test_client_gone_returns_memory_and_quota():
    from tests.memory.conftest import Mem
    m = Mem()
    try:
        admin = m.moe()
        s0 = m.s0gate("probe")

        def sigma0_free() -> int:
            from servers.sigma0 import SIGMA0
            return SIGMA0.client(m.root, s0, timeout=20_000).info()["free"]
        frames = sigma0_free()
        before = admin.info()
        gate, number = admin.open("a", 2 << 20)
        m.agent("a", caps={"moe": gate}, pager_gate=gate)
        slot = m.ok("a", "moe_alloc", size=1536 * KB)[0]      # spans two 1 MiB chunks
        addr = m.ok("a", "moe_attach", slot=slot)
        for off in range(0, 1536 * KB, 32 * KB):          # touch every page (IPC payload < 64 KiB)
            m.ok("a", "write", addr=addr + off, data=b"x" * (32 * KB))
        busy = admin.info()
        assert busy["used"] == 1536 * KB and busy["resident_pages"] == 384
        assert busy["pool_pages"] == 512 and sigma0_free() == frames - 512
        m.procs["a"].kill()
        m.procs["a"].wait()
        assert admin.client_gone(number) == {"dataspaces": 1, "bytes": 1536 * KB}
        after = admin.info()
        assert after == before == {"sessions": 0, "dataspaces": 0, "quota": 0, "used": 0,
                                   "pool_pages": 0, "free_pages": 0, "resident_pages": 0}
        assert sigma0_free() == frames                  # the chunks went back to sigma0
        with pytest.raises(Exception, match="no session"):
            admin.client_gone(number)                   # once only; numbers are not reused
        assert admin.open("b", 4096)[1] == number + 1
    finally:
        m.close()


def test_release_unmaps_a_copy_shared_page_from_the_sharer():
    """Releasing a dataspace whose page a copy still holds: no task keeps it through the
    released one (moe unmaps it; the copy's owner re-faults and finds it again)."""
    from tests.memory.conftest import Mem
    m = Mem()
    try:
        admin = m.moe()
        m.moe_client(admin, "b")
        m.moe_client(admin, "a", peers=("b",))
        slot = m.ok("a", "moe_alloc", size=4 * KB)[0]
        addr = m.ok("a", "moe_attach", slot=slot)
        m.ok("a", "write", addr=addr, data=b"shared")
        bslot = m.ok("a", "send_cap", to="b", slot=slot)[0][1]
        baddr = m.ok("b", "moe_attach", slot=bslot, rights=4)
        assert m.ok("b", "read", addr=baddr, n=6) == b"shared"
        copy = m.ok("a", "moe_copy", slot=slot)[0]
        caddr = m.ok("a", "moe_attach", slot=copy)
        m.ok("a", "moe_release", slot=slot)
        assert m.ok("b", "query", vaddr=baddr, order=12) == []
        assert m.do("b", "read", addr=baddr, n=1)["err"] == "PAGE_FAULT"
        assert m.ok("a", "read", addr=caddr, n=6) == b"shared"
    finally:
        m.close()


# -- the demo image ---------------------------------------------------------------------------

def test_memory_image(tmp_path):
    rd, shm_before = str(tmp_path / "run"), set(os.listdir("/dev/shm"))
    out = l4run("boot", MEMORY, "--detach", "--run-dir", rd).stdout
    assert "4/4 tasks running" in out
    pids = system_pids(rd)
    kernel_pid = control.request(rd, "status")["kernel_pid"]
    try:
        rows = ps(rd)
        assert list(rows)[:2] == ["sigma0", "moe"] and rows["moe"]["uses"] == ["sigma0"]
        # the writer filled a dataspace through its VM (moe paged it), the reader read it
        wait_for(lambda: reads(rd) == 1, 30, "the reader to read the writer's dataspace")
        assert "reader: read 65536 bytes from the writer's dataspace: 'L4Py shared memory '" \
            in log_of(rd, "reader")
        assert "16 page faults served by moe" in log_of(rd, "writer")
        m1 = memory(rd)
        assert m1["moe"]["used"] == 64 * KB and m1["moe"]["sessions"] == 2
        assert m1["sigma0"]["free"] == m1["sigma0"]["frames"] - 256      # one 1 MiB chunk

        # kill -9 of the writer: moe frees its dataspace; the new incarnation gets a fresh
        # session and shares a new dataspace; nothing of the dead one stays allocated
        old_session = m1["sessions"]["writer"]
        os.kill(rows["writer"]["pid"], signal.SIGKILL)
        wait_for(lambda: reads(rd) == 2, 30, "the restarted writer to share again")
        assert ps(rd)["writer"]["restarts"] == 1
        m2 = memory(rd)
        assert m2["sessions"]["writer"] > old_session
        assert totals(m2) == totals(m1)
        assert "moe freed writer's memory: 1 dataspace(s), 65536 bytes" in _events(rd)

        # an attached task touches 2 MiB and is killed: everything comes back exactly
        snippet = write(str(tmp_path / "hog.toml"), '[[task]]\nname = "hog"\n'
                        'run = "servers.moe.demo:hog"\nargs = ["2M"]\nmemory = "4M"\n'
                        'restart = "never"\n')
        l4run("attach", snippet, "--run-dir", rd)
        wait_for(lambda: "hog: touched" in log_of(rd, "hog"), 30, "the hog to touch its memory")
        m3 = memory(rd)
        assert m3["moe"]["used"] == m2["moe"]["used"] + (2 << 20)
        assert m3["sigma0"]["free"] <= m2["sigma0"]["free"] - 512
        os.kill(ps(rd)["hog"]["pid"], signal.SIGKILL)
        wait_for(lambda: ps(rd)["hog"]["state"] in ("exited", "failed"), 20, "the hog's death")
        assert totals(memory(rd)) == totals(m2)

        # kill -9 of moe: every session died with it; its clients start again with new ones
        os.kill(ps(rd)["moe"]["pid"], signal.SIGKILL)
        wait_for(lambda: reads(rd) == 3, 30, "reader and writer to run again on the new moe")
        wait_for(lambda: all(r["state"] == "running" for r in ps(rd).values()
                             if r["name"] != "hog"), 20, "every task to run")
        m4 = memory(rd)
        assert totals(m4) == totals(m1)
        assert ps(rd)["moe"]["restarts"] == 1
        pids |= system_pids(rd)
    finally:
        l4run("down", "--run-dir", rd, check=False)
    assert_clean(rd, pids, shm_before)
    assert not ram_holders() & pids
    assert not ram_holders(f"l4py-ram-{kernel_pid}")


def _events(rd: str) -> str:
    return "\n".join(control.request(rd, "status").get("events", []))


def test_memory_command_without_memory_servers(tmp_path):
    rd = str(tmp_path / "run")
    img = write(str(tmp_path / "plain.toml"), '[system]\nname = "plain"\n\n[[task]]\n'
                'name = "hello"\nrun = "servers.hello.server:serve"\nprovides = ["hello"]\n')
    l4run("boot", img, "--detach", "--run-dir", rd)
    try:
        ans = control.request(rd, "memory")
        assert not ans["ok"] and "no [memory]" in ans["error"]
        # a task asking for memory in a system without moe is refused with the reason
        snippet = write(str(tmp_path / "s.toml"), '[[task]]\nname = "hog"\n'
                        'run = "servers.moe.demo:hog"\nmemory = "1M"\nrestart = "never"\n')
        p = l4run("attach", snippet, "--run-dir", rd, check=False)
        assert p.returncode == 1
        assert p.stderr.strip() == ("l4run: task 'hog' is failed: task hog asks for memory, "
                                    "but moe is not running")
        assert ps(rd)["hog"]["state"] == "failed"
    finally:
        l4run("down", "--run-dir", rd, check=False)


def test_ram_size_is_honoured_to_the_page(tmp_path):
    """`ram = "1536K"` boots 384 frames, not the whole MiB below it (sigma0 counts them)."""
    rd = str(tmp_path / "run")
    img = write(str(tmp_path / "k.toml"), '[system]\nname = "k"\nram = "1540K"\n\n'
                '[memory]\nmoe = false\n\n[[task]]\nname = "hello"\n'
                'run = "servers.hello.server:serve"\nprovides = ["hello"]\n')
    shm_before = set(os.listdir("/dev/shm"))
    l4run("boot", img, "--detach", "--run-dir", rd)
    try:
        pids = system_pids(rd)
        s0 = memory(rd)["sigma0"]
        assert s0["frames"] == 1540 * KB // 4096 == 385
    finally:
        l4run("down", "--run-dir", rd, check=False)
    assert_clean(rd, pids, shm_before)


# -- validation ---------------------------------------------------------------------------------

def _problems(text: str) -> list[str]:
    import tomllib
    with pytest.raises(ImageError) as e:
        parse_image(tomllib.loads(text), "img.toml")
    return e.value.problems


def test_image_with_memory_parses():
    import tomllib
    with open(MEMORY, "rb") as f:
        img = parse_image(tomllib.load(f), MEMORY)
    names = [t.name for t in img.tasks]
    assert names == ["sigma0", "moe", "reader", "writer"]
    assert img.task("writer").memory == 1 << 20 and "moe" in img.task("writer").depends_on
    assert img.task("moe").caps[0].label == 1 and img.memory.moe
    plain = parse_image(tomllib.loads('[system]\nname = "x"\n[memory]\nreserve = "4M"\n'
                                      '[[task]]\nname = "a"\nrun = "servers.moe.demo:hog"\n'
                                      'memory = "8M"\n'), "x.toml")
    assert plain.memory.reserve == 4 << 20 and plain.task("sigma0").args == [str(4 << 20)]


def test_memory_validation_names_file_key_and_reason():
    base = '[system]\nname = "x"\nram = "16M"\n'
    task = '[[task]]\nname = "{n}"\nrun = "servers.moe.demo:hog"\n'
    p = _problems(base + task.format(n="a") + 'memory = "8M"\n')
    assert p == ["img.toml: task[0] (a).memory: a moe session needs the memory servers: "
                 "add [memory] with moe = true"]
    p = _problems(base + '[memory]\nsigma0 = false\nmoe = true\nswap = 1\nreserve = "16M"\n'
                  + task.format(n="a"))
    assert "img.toml: memory.moe: moe gets its memory from sigma0: it needs sigma0 = true" in p
    assert any(x.startswith("img.toml: memory.swap: unknown key") for x in p)
    assert any(x.startswith("img.toml: memory.reserve: reserving '16M' leaves nothing") for x in p)
    p = _problems(base + '[memory]\n' + task.format(n="a") + 'memory = { quota = "3K" }\n'
                  + task.format(n="b") + 'memory = { size = "1M" }\n'
                  + task.format(n="c") + 'memory = "1G"\n'
                  + task.format(n="moe") + '\n'
                  + task.format(n="d") + 'memory = "1M"\ncaps = { moe = "x" }\n'
                  + task.format(n="e") + 'provides = ["sigma0"]\n'
                  + task.format(n="f") + 'caps = { s0 = { service = "sigma0", label = 1 } }\n'
                  + task.format(n="g") + 'caps = { s0 = { service = "sigma0", label = 5 } }\n'
                  + task.format(n="h") + 'caps = { s0 = { service = "sigma0", label = 5 } }\n')
    text = "\n".join(p)
    assert "task[0] (a).memory.quota: bad size" in text
    assert "task[1] (b).memory.size: unknown key (known: quota)" in text
    assert "task[1] (b).memory.quota: missing" in text
    assert "task[2] (c).memory: quota 1073741824 bytes is more than the RAM" in text
    assert "task[3] (moe).name: task name 'moe' is reserved" in text
    assert "task[4] (d).caps.moe: the local name 'moe' is taken by the task's moe session" in text
    assert "task[5] (e).provides: service 'sigma0' is reserved" in text
    assert "task[6] (f).caps.s0.label: sigma0 label 1 is reserved" in text
    assert "task[8] (h).caps.s0.label: sigma0 label 5 is already task 'g''s" in text
    assert all(x.startswith("img.toml: ") for x in p)
    assert _problems(base + '[memory]\nmoe = "yes"\n' + task.format(n="a")) == [
        "img.toml: memory.moe: expected bool, got str 'yes'"]
