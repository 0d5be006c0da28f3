"""DDE/Linux and the block device server in real booted images.

Two boots. The glue image runs tests/dde_linux/tasks.py `glue` in a driver task: the glue's
core mechanisms (wait queues, completions, work queues, tasklets, timers, kmalloc with its
quota back) and the l4disk driver against the HAL disk through the block layer, its data
checked against the disk image the test reads itself.

The served image (configs/dde.toml's tasks, plus a victim client) runs the `block` server
with three clients: the demo writer (read-write, whole disk), the demo reader (read-only
range) and the victim. The test kills the victim (its session is reaped, its buffer goes
back to moe) and then the server mid-transfer (restarted by its policy; the writer gets
PeerDied, opens again and goes on); after `down` it reads the disk image and checks that
every round the writer saw acknowledged is there. Nothing may be left behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from typing import Any

import pytest

from tests.launcher.helpers import assert_clean, l4run, ps, ram_holders, system_pids, wait_for
from tests.launcher.helpers import task_log as _log

DISK_SECTORS = 32768                  # 16 MiB
GLUE_IMAGE = """
[system]
name = "dde-glue"
ram = "32M"

[memory]
moe = false

[[device]]
kind = "pic"
name = "pic"

[[device]]
kind = "disk"
name = "disk0"
size = "2M"

[[task]]
name = "glue"
run = "tests.dde_linux.tasks:glue"
args = ["4096"]
devices = ["disk0"]
caps = { sigma0 = { service = "sigma0", label = 2 } }
restart = "never"
"""

POLICY = {"5": {"disk": "disk0", "write": True},
          "6": {"disk": "disk0", "first": 16384, "count": 2048, "write": False},
          "7": {"disk": "l4disk0", "first": 0, "count": 4096, "write": False}}
SERVED_IMAGE = f"""
[system]
name = "dde-block"
ram = "64M"

[memory]
moe = true

[[device]]
kind = "pic"
name = "pic"

[[device]]
kind = "disk"
name = "disk0"
size = "16M"

[[task]]
name = "block"
run = "servers.block.server:main"
args = ['{json.dumps(POLICY)}']
devices = ["disk0"]
provides = ["block"]
memory = "64K"
caps = {{ sigma0 = {{ service = "sigma0", label = 3 }} }}
restart = "on-failure"

[[task]]
name = "writer"
run = "servers.block.demo:writer"
args = ["120", "40"]
memory = "2M"
caps = {{ block = {{ service = "block", label = 5 }} }}
restart = "never"

[[task]]
name = "reader"
run = "servers.block.demo:reader"
memory = "1M"
caps = {{ block = {{ service = "block", label = 6 }} }}
restart = "never"

[[task]]
name = "victim"
run = "tests.dde_linux.tasks:victim"
memory = "2M"
caps = {{ block = {{ service = "block", label = 7 }} }}
restart = "never"
"""


def _line(rd: str, task: str, tag: str) -> dict[str, Any] | None:
    for ln in _log(rd, task).splitlines():
        if ln.startswith(tag + " "):
            return dict(json.loads(ln.partition(" ")[2]))
    return None


def _boot(tmp: Any, name: str, image: str, disk: bytes | None) -> tuple[str, set[int], set[str]]:
    rd = str(tmp.mktemp(name) / "run")
    os.makedirs(rd)
    path = os.path.join(os.path.dirname(rd), "image.toml")
    with open(path, "w") as f:
        f.write(image)
    if disk is not None:
        with open(os.path.join(rd, "disk0.img"), "wb") as f:
            f.write(disk)
    shm_before = set(os.listdir("/dev/shm"))
    l4run("boot", path, "--detach", "--run-dir", rd)
    return rd, system_pids(rd), shm_before


def _down(rd: str, pids: set[int], shm_before: set[str]) -> None:
    l4run("down", "--run-dir", rd)
    assert_clean(rd, pids, shm_before)
    assert not ram_holders() & pids


@pytest.fixture(scope="module")
def glue(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    rd, pids, shm = _boot(tmp_path_factory, "glue", GLUE_IMAGE, os.urandom(2 << 20))
    try:
        wait_for(lambda: "DDE-GLUE " in _log(rd, "glue") or "Traceback" in _log(rd, "glue"),
                 40, "the glue task's result")
    finally:
        _down(rd, pids, shm)
    res = _line(rd, "glue", "DDE-GLUE")
    assert res is not None, _log(rd, "glue")
    with open(os.path.join(rd, "disk0.img"), "rb") as f:
        res["_image"] = f.read()
    res["_log"] = _log(rd, "glue")
    return res


def _ok(res: dict[str, Any], name: str) -> dict[str, Any]:
    part = res[name]
    assert "error" not in part, f"{name}: {part['error']}\n{res['_log']}"
    return dict(part)


def test_wait_queues_and_completions(glue: dict[str, Any]) -> None:
    w = _ok(glue, "waitqueue")
    assert w["early"] == [] and w["woke"]                  # slept until the condition held
    assert w["timeout_answer"] == 0 and w["waited_ms"] >= 35 and w["true_answer"] >= 1
    c = _ok(glue, "completion")
    assert c["order"] == ["complete", "waited"] and c["timeout"] == 0
    assert c["counted"] == [True, True, False] and c["all"] == [True] * 3


def test_work_queues_and_tasklets(glue: dict[str, Any]) -> None:
    w = _ok(glue, "workqueue")
    assert w["first"] and w["again_running"] and not w["twice"]
    assert [n for n, _ in w["ran"]] == ["a", "slow", "slow", "b"]
    assert dict(w["ran"])["a"] == "ddekit:kworker/events"
    assert all(t == "ddekit:kworker/test" for n, t in w["ran"] if n != "a")
    assert w["tasklet"] == [[7, "ddekit:kworker/ksoftirqd"]]       # once: killed after


def test_timers_mod_timer_del_timer(glue: dict[str, Any]) -> None:
    t = _ok(glue, "timers")
    assert t["done"] and t["order"][0] == "rearm" and t["order"].count("rearm") == 2
    # in expiry order ("moved" after "b"; "gone" deleted); the re-armed one lands where its
    # second expiry falls, which depends on how late the first ran
    assert [n for n in t["order"] if n != "rearm"] == ["a", "b", "moved", "c", "last"]
    assert t["was_pending"] == 1 and t["deleted"] == 1 and t["deleted_again"] == 0
    assert t["pending_after"] == [] and t["time_after"] == [True, False]


def test_kmalloc_kfree_quota_back(glue: dict[str, Any]) -> None:
    m = _ok(glue, "kmalloc")
    assert m["distinct"] and m["zero"] and m["rw"] and m["double_free"] == "BadAddress"
    assert m["usage"]["pointers"] == 6 and m["held_frames"] >= 5
    assert m["back"] and m["usage_after"] == {"pointers": 0, "bytes": 0, "ddekit_blocks": 0,
                                              "ddekit_bytes": 0}
    assert glue["quota_after"] == glue["quota_before"], (glue["quota_before"], glue["quota_after"])


def test_l4disk_driver_against_the_hal(glue: dict[str, Any]) -> None:
    d = _ok(glue, "disk")
    assert d["statuses"] == [0] and d["count"] == 34 and d["same"] and d["small_ok"]
    assert d["stats"]["max_inflight"] >= 8 and d["stats"]["errors"] == 0
    assert d["beyond"].startswith("refused") and d["disk_gone"]
    first = d["first_sector"] * 512
    on_disk = glue["_image"][first:first + 16 * 65536]
    assert hashlib.sha256(on_disk).hexdigest() == d["sha256"]       # the image file itself


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    t0 = time.monotonic()
    rd, pids, shm = _boot(tmp_path_factory, "block", SERVED_IMAGE, None)
    out: dict[str, Any] = {"rd": rd}
    try:
        wait_for(lambda: _line(rd, "reader", "BLOCK-READER") is not None
                 and _line(rd, "victim", "VICTIM-READY") is not None, 40, "reader and victim")
        out["reader"] = _line(rd, "reader", "BLOCK-READER")
        out["victim"] = _line(rd, "victim", "VICTIM-READY")
        out["moe_before"] = json.loads(l4run("memory", "--json", "--run-dir", rd).stdout)["moe"]
        l4run("kill", "victim", "--run-dir", rd)
        wait_for(lambda: "client 7 is gone" in _log(rd, "block"), 20, "the victim's session reaped")
        wait_for(lambda: json.loads(l4run("memory", "--json", "--run-dir", rd).stdout)["moe"]
                 ["dataspaces"] < out["moe_before"]["dataspaces"], 10, "moe to free the buffer")
        out["moe_after"] = json.loads(l4run("memory", "--json", "--run-dir", rd).stdout)["moe"]
        wait_for(lambda: _log(rd, "writer").count("block-demo: ACK") >= 3, 30, "three rounds")
        l4run("kill", "block", "--run-dir", rd)                 # mid-transfer
        wait_for(lambda: _line(rd, "writer", "BLOCK-DEMO") is not None, 60, "the writer's end")
        out["writer"] = _line(rd, "writer", "BLOCK-DEMO")
        out["ps"] = ps(rd)
    finally:
        out["logs"] = {t: _log(rd, t) for t in ("block", "writer", "reader", "victim")}
        _down(rd, pids, shm)
    with open(os.path.join(rd, "disk0.img"), "rb") as f:
        out["image"] = f.read()
    out["wall"] = time.monotonic() - t0
    return out


def test_policies_read_only_and_range_refused_and_counted(served: dict[str, Any]) -> None:
    r = served["reader"]
    assert r["session"]["sectors"] == 2048 and not r["session"]["writable"] and r["read"] == 4096
    assert r["write"] == "READ_ONLY" and r["beyond"] == "RANGE"
    assert r["bad_op"] == r["outside_buffer"] == r["not_a_descriptor"] == "INVALID"
    c = r["counters"]
    assert c["denied_writes"] == 1 and c["out_of_range"] == 1 and c["malformed"] == 3
    assert c["refused"] == 5
    assert c["submitted"] == 1 and c["completed"] == 1          # its good read went through
    v = served["victim"]
    assert v["policy"] == {"disk": "l4disk0", "first": 0, "count": 4096, "write": False}
    assert v["counters"]["refused"] == 0                         # other clients unaffected


def test_dying_client_returns_its_buffer(served: dict[str, Any]) -> None:
    before, after = served["moe_before"], served["moe_after"]
    assert after["dataspaces"] == before["dataspaces"] - 1
    assert after["used"] <= before["used"] - (1 << 20)
    assert "block: client 7 is gone: its session is reaped" in served["logs"]["block"]


def test_server_killed_mid_transfer_restarts_and_clients_go_on(served: dict[str, Any]) -> None:
    w = served["writer"]
    assert served["ps"]["block"]["restarts"] >= 1 and served["ps"]["block"]["state"] == "running"
    assert w["rounds"] == 120, served["logs"]["writer"][-2000:]  # every round verified in the end
    assert w["retried"] + w["reopens"] >= 1                       # PeerDied, then a new session
    assert w["info"]["open"] and w["info"]["server"]["sessions"] >= 1


def test_acknowledged_writes_are_on_the_image(served: dict[str, Any]) -> None:
    acks: dict[int, tuple[int, str]] = {}
    for m in re.finditer(r"^block-demo: ACK (\d+) (\d+) ([0-9a-f]{64})$", served["logs"]["writer"], re.M):
        acks[int(m[1])] = (int(m[2]), m[3])                        # the last ACK per place wins
    assert len(acks) >= 10
    img = served["image"]
    for first, (count, sha) in acks.items():
        assert hashlib.sha256(img[first * 512:(first + count) * 512]).hexdigest() == sha, first
    assert served["wall"] < 60
