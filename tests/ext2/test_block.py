"""The engine over the DDE block server, in a booted system: a task mounts an ext2 disk
(made by host mke2fs in the run directory) through BlockClientDevice, writes a tree and
unmounts, then mounts it again as the root of the personality's file tree (rootdisk.py)
and works through those layers; after `l4run down` host e2fsck -fn is clean and debugfs reads the tree; the next
boot's task sees everything. And the block server killed under a writer that fsyncs:
restarted by its policy, the engine's calls are made again on the new session, and every
round whose fsync returned is on the disk, e2fsck-clean."""
from __future__ import annotations

import json
import os
from typing import Any

from tests.launcher.helpers import assert_clean as assert_nothing_left
from tests.launcher.helpers import l4run, system_pids, task_log, wait_for

from .tools import assert_clean, cat, ls, mkfs

IMAGE = """
[system]
name = "ext2-block"
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
args = ['{"5": {"disk": "disk0", "write": true}}']
devices = ["disk0"]
provides = ["block"]
memory = "64K"
caps = { sigma0 = { service = "sigma0", label = 3 } }
restart = "on-failure"

[[task]]
name = "fs"
run = "tests.ext2.tasks:TASK"
args = ARGS
memory = "2M"
caps = { block = { service = "block", label = 5 } }
restart = "never"
"""


def _lines(rd: str) -> list[str]:
    return [ln for ln in task_log(rd, "fs").splitlines() if ln.startswith("EXT2 ")]


def _image(tmp_path: Any, task: str, args: list[str]) -> str:
    path = str(tmp_path / f"{task}-{'-'.join(args)}.toml")
    with open(path, "w") as f:
        f.write(IMAGE.replace("TASK", task).replace("ARGS", json.dumps(args)))
    return path


def _boot_once(tmp_path: Any, rd: str, phase: str) -> dict[str, Any]:
    seen = len(_lines(rd)) if os.path.exists(rd) else 0        # the log outlives a boot
    path = _image(tmp_path, "session", [phase])
    shm_before = set(os.listdir("/dev/shm"))
    l4run("boot", path, "--detach", "--run-dir", rd)
    pids = system_pids(rd)
    try:
        wait_for(lambda: len(_lines(rd)) > seen or "Traceback" in task_log(rd, "fs"),
                 90, f"the {phase} session")
    finally:
        l4run("down", "--run-dir", rd)
    assert_nothing_left(rd, pids, shm_before)
    lines = _lines(rd)
    assert len(lines) > seen, task_log(rd, "fs")
    res: dict[str, Any] = json.loads(lines[-1][5:])
    assert "error" not in res, res.get("trace", res)
    return res


def test_ext2_over_the_block_server_survives_down_and_reboot(tmp_path) -> None:
    rd = str(tmp_path / "run")
    os.makedirs(rd)
    disk = mkfs(os.path.join(rd, "disk0.img"), 16 << 20, 4096, 256)
    wrote = _boot_once(tmp_path, rd, "write")
    assert_clean(disk)
    assert len(cat(disk, "/data/big")) == 1536 * 1024 + 5
    assert len(ls(disk, "/many")) == 219 and cat(disk, "/data/moved") == b"0"
    assert "open-unlinked" not in ls(disk, "/")
    assert {"vfs", "data", "dev", "proc", "many"} <= set(wrote["vfs_root"])
    assert cat(disk, "/data/hello") == b"hello from the personality's layers\n"
    assert "dev" not in ls(disk, "/")                 # /dev stayed in RAM
    read = _boot_once(tmp_path, rd, "read")
    assert read["was_clean"] and read["big_ok"] and read["link_same"]
    assert (read["nlink"], read["many"], read["moved"]) == (2, 219, "0")
    assert read["sparse_tail"] == "end" and read["slow"] == "/" + "s" * 100
    assert read["hello"] == "hello from the personality's layers\n"
    assert_clean(disk)


def test_block_server_killed_under_fsync_loses_nothing_acknowledged(tmp_path) -> None:
    rd = str(tmp_path / "run")
    os.makedirs(rd)
    disk = mkfs(os.path.join(rd, "disk0.img"), 16 << 20, 1024, 128)
    path = _image(tmp_path, "rounds", ["60", "10"])
    shm_before = set(os.listdir("/dev/shm"))
    l4run("boot", path, "--detach", "--run-dir", rd)
    pids = system_pids(rd)

    def acked() -> list[int]:
        return [int(ln.split()[1]) for ln in task_log(rd, "fs").splitlines()
                if ln.startswith("ACK ")]
    try:
        wait_for(lambda: len(acked()) >= 3 or "Traceback" in task_log(rd, "fs"), 60, "3 rounds")
        l4run("kill", "block", "--run-dir", rd)
        wait_for(lambda: bool(_lines(rd)) or "Traceback" in task_log(rd, "fs"), 120,
                 "the writer's end")
    finally:
        l4run("down", "--run-dir", rd)
    assert_nothing_left(rd, pids, shm_before)
    res = json.loads(_lines(rd)[-1][5:])
    assert "error" not in res, res.get("trace", res)
    assert res["reopens"] >= 1, res                  # it did meet the restarted server
    done = acked()
    assert done == list(range(60))
    assert_clean(disk)
    from .tasks import _round_data
    for i in done:
        assert cat(disk, f"/round-{i}") == _round_data(i), i
