"""DDEKit conformance, in a real driver task on a real booted machine (configs/ddekit.toml).

The test writes a disk image of random sectors, boots the image (kernel, sigma0, the HAL with
timer0, timer1, disk0, nic0, io, and the driver task `tests.ddekit.tasks:conformance`),
reads the task's result line from its log and checks every part of DDEKit against what the
machine really did: the sectors the disk DMA'd into DDEKit memory are the image file's, the
timer device's interrupts are counted (none while the line is disabled), the quota (kernel
objects, sigma0 frames) is back where it started. `l4run down` must leave nothing behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

import pytest

from kernel.user.testing import PROJECT_ROOT
from tests.launcher.helpers import assert_clean, l4run, ps, ram_holders, system_pids

IMAGE = os.path.join(PROJECT_ROOT, "configs", "ddekit.toml")
DISK_SIZE = 1 << 20
SECTORS = 8
DEVICE_IDS = {"timer": 0x54494D52, "disk": 0x4449534B, "nic": 0x4E494331}


def _log(rd: str) -> str:
    try:
        with open(os.path.join(rd, "logs", "ddekit.log"), errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def _wait_result(rd: str, timeout: float = 60) -> None:
    """Until the task logged its result, or ended without one."""
    deadline = time.monotonic() + timeout
    polls = 0
    while "DDEKIT-RESULT " not in _log(rd):
        polls += 1
        if time.monotonic() > deadline or (polls % 20 == 0 and
                                           ps(rd)["ddekit"]["state"] != "running"):
            return
        time.sleep(0.05)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Boot the image once, wait for the result, take the system down, check it left nothing."""
    rd = str(tmp_path_factory.mktemp("ddekit") / "run")
    os.makedirs(rd)
    disk = os.urandom(DISK_SIZE)
    with open(os.path.join(rd, "disk0.img"), "wb") as f:
        f.write(disk)
    shm_before = set(os.listdir("/dev/shm"))
    t0 = time.monotonic()
    l4run("boot", IMAGE, "--detach", "--run-dir", rd)
    pids = system_pids(rd)
    try:
        _wait_result(rd)
        log = _log(rd)
    finally:
        l4run("down", "--run-dir", rd)
    assert_clean(rd, pids, shm_before)
    assert not ram_holders() & pids
    line = next((ln for ln in log.splitlines() if ln.startswith("DDEKIT-RESULT ")), None)
    assert line is not None, f"no result line; the task's log:\n{log}"
    res = json.loads(line.partition(" ")[2])
    res["_log"], res["_disk"], res["_wall"] = log, disk, time.monotonic() - t0
    return res


def _ok(res: dict[str, Any], name: str) -> dict[str, Any]:
    part = res[name]
    assert "error" not in part, f"{name}: {part['error']}\n{res['_log']}"
    return part


def test_locks_semaphores_condvars(run: dict[str, Any]) -> None:
    s = _ok(run, "sync")
    assert s["joined"] and s["counter"] == s["expected"]        # mutual exclusion
    assert s["owner_ok"] and s["bad_unlock"] == "refused"
    assert s["down_timed_timeout"] and s["waited_ms"] >= 55      # timed down: 60 ms, then False
    assert s["consumed"] == 3 and s["consumer_done"] and s["down_try"]
    assert s["cv_timeout"] and s["signal_woke"] == 1             # signal wakes one waiter
    assert s["broadcast_woke"] == 3 and s["all_woken"]           # broadcast the rest


def test_threads_data_sleep_wakeup_exit(run: dict[str, Any]) -> None:
    t = _ok(run, "threads")
    assert t["joined"] and t["main"] == "main"
    assert t["datas"] == [{"i": 0}, {"i": 1}, {"i": 2}]
    for name in t["names"]:
        seen = t["seen"][name]
        assert seen["data"] == {"i": int(name[-1])} and seen["l4"]
        assert seen["slept_ms"] >= 21 and "after_exit" not in seen
    assert not [n for n in t["live_after"] if n.startswith("worker")]


def test_timers_fire_in_order(run: dict[str, Any]) -> None:
    t = _ok(run, "timers")
    assert t["hz"] in (100, 250, 1000) and t["done"]
    assert t["order"] == ["b", "d", "c", "a", "last"]          # expiry, then insertion order
    assert t["deleted"] and not t["deleted_again"] and not t["early"] and not t["pending_after"]


def test_memory_and_page_table(run: dict[str, Any]) -> None:
    m = _ok(run, "memory")
    assert m["slab_distinct"] and m["slab_rw"] and m["slab_back"]
    assert m["slab_cleared"] == [None, None] and m["double_free"] == "refused"
    assert m["large"] == {"phys_ok": True, "back": True, "kind": "large", "rw": True,
                          "cleared": [None, None], "read_freed": "refused"}
    assert m["contig"] == {"aligned": True, "in_boundary": True, "contiguous": True,
                           "block": [True] * 5, "cleared": None, "block_cleared": True,
                           "limit": "refused", "within_limit": True, "bad_boundary": "refused"}
    assert m["malloc"] == {"rw": True, "phys": True, "cleared": [None, None]}
    assert m["pgtab"] == {"own": [0x6234, 0x1000_1000, "mine"], "overlap": "refused",
                          "cleared": [None, None]}
    assert m["usage_after"] == {"blocks": 0, "bytes": 0}
    # while it held the large block (and slab pages, freed), sigma0 had fewer frames free
    assert m["frames_free_holding"] <= run["quota_started"]["frames_free"] - 5


def test_dma_into_contiguous_memory_is_the_disk(run: dict[str, Any]) -> None:
    d = _ok(run, "dma")
    want = run["_disk"][:SECTORS * 512]
    assert d["completed"] and d["dev_error"] == 0 and not d["status"] & 0x4 and d["by_index"]
    assert d["head"] == want[:16].hex() and d["sha256"] == hashlib.sha256(want).hexdigest()
    if d["iommu"] and d["iommu"].get("enforcing"):      # the HAL's IOMMU (hal/iommu.py)
        assert d["freed_dma_error"] == 10                   # DMA_DENIED: not our frames now


def test_bus_scan_and_refused_device(run: dict[str, Any]) -> None:
    b = _ok(run, "bus")
    scan = {d["name"]: d for d in b["scan"]}
    assert list(scan) == ["timer0", "disk0", "nic0"]            # the policy's, not timer1
    for d in scan.values():
        assert d["vendor"] == 0x4C34 and d["device"] == DEVICE_IDS[d["kind"]]
        assert d["irq"] is not None and d["regs"] >= 8
    assert scan["disk0"]["dma"] and scan["nic0"]["dma"] and not scan["timer0"]["dma"]
    assert scan["disk0"]["class"] == 0x0180 and scan["nic0"]["class"] == 0x0200
    assert "timer1" in b["refused"] and "DENIED" in b["refused"]
    assert "nosuch9" in b["missing"]


def test_irq_attach_disable_enable_detach(run: dict[str, Any]) -> None:
    i = _ok(run, "irq")
    assert i["both_called"] and i["busy"] == "refused"          # two handlers, shared line
    assert i["no_line"] == "refused"
    assert len(i["thread_init"]) == 1 and i["thread_init"][0].startswith("irq-")
    assert i["disabled_delta"] == 0 and i["ticks_while_disabled"] >= 10   # the device ticked
    assert i["resumed"] and i["b_after_detach"] == 0 and i["handled"] >= 10
    assert not [n for n in i["threads_after_detach"] if n.startswith("irq-")]


def test_init_calls_print_panic(run: dict[str, Any]) -> None:
    m = _ok(run, "misc")
    assert m["order"] == ["core", "device1", "device2", "late"] == m["ran"] and m["again"] == []
    assert m["panic"] == "assertion failed: one is two"
    assert "ddekit-test: printf 42 ok" in run["_log"]


def test_quota_returned(run: dict[str, Any]) -> None:
    """Every thread, gate and block DDEKit made is gone again: before the checks and after
    them, and after stop as before start."""
    q = {k: run[k] for k in ("quota_before_start", "quota_started", "quota_checked",
                             "quota_after_stop", "live_threads")}
    assert run["quota_checked"] == run["quota_started"], q
    assert run["live_threads"] == [], q
    assert run["quota_after_stop"] == run["quota_before_start"], q
    assert run["_wall"] < 40
