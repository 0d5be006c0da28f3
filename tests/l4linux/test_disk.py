"""L⁴Linux on the emulated disk, judged by the host's own ext2 code (docs/L4LINUX.md "The
disk"): an image like configs/linux-disk.toml — the HAL disk's image file made by
`l4run mkrootfs --ext2`, the DDE block server, the personality with `rootdisk` — booted by
the launcher in a temporary run directory; busybox programs run through `l4run linux run`.

- A session of creates, writes (a file > 1 MiB), renames, deletes, a directory of 220
  entries, nested directories, hard links and symlinks; `l4run down`; host `e2fsck -fn`
  is quiet and debugfs shows the tree and the bytes the personality showed; the next boot
  sees the same; there, a disk filled up answers ENOSPC to dd and stays e2fsck-clean.
- The disk mounted by busybox `mount` on /mnt (and `umount`, `df`, /proc/mounts), then
  the personality killed with SIGKILL in the middle of writes: `e2fsck -fy` repairs the
  image (ext2 has no journal), and the next boot mounts and reads it.
- The block server killed under a personality that writes and fsyncs: restarted by its
  policy, the outstanding requests are made again on the new session, and every file
  whose fsync returned is on the disk.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
from typing import Any

import pytest

from kernel.user.testing import PROJECT_ROOT
from tests.ext2.tools import assert_clean, cat, debugfs, dir_tree, fsck, ls
from tests.launcher.helpers import assert_clean as assert_nothing_left
from tests.launcher.helpers import ps, system_pids, task_log, wait_for

pytestmark = pytest.mark.skipif(not os.path.exists("/bin/busybox") or sys.platform != "linux",
                                reason="needs /bin/busybox (busybox-static) on x86-64 Linux")

# Two boots a test: about 25 s each on an idle machine, several times that under load.
pytestmark = [pytestmark, pytest.mark.timeout(300)]
L4RUN = [sys.executable, "-m", "launcher"]
ENV = {**os.environ, "PYTHONPATH": PROJECT_ROOT}
SIZE = 16 << 20
IMAGE = """
[system]
name = "linux-disk-test"
ram = "64M"

[memory]
sigma0 = true
moe = true

[[device]]
kind = "pic"
name = "pic"

[[device]]
kind = "disk"
name = "disk0"
size = "16M"                     # RUN_DIR/disk0.img: the test puts the ext2 image there

[[task]]
name = "block"
run = "servers.block.server:main"
args = ['{"5": {"disk": "disk0", "write": true}}']
devices = ["disk0"]
provides = ["block"]
memory = "64K"
caps = { sigma0 = { service = "sigma0", label = 3 } }
restart = "on-failure"

[linux]
rootdisk = { service = "block", label = 5, at = "AT" }
restart = "RESTART"
"""


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: Any) -> str:
    """One ext2 image of the skeleton and busybox (`l4run mkrootfs --ext2`), copied per test."""
    path = str(tmp_path_factory.mktemp("disk") / "rootfs.ext2")
    subprocess.run([*L4RUN, "mkrootfs", "--ext2", str(SIZE), "-o", path], check=True,
                   cwd=PROJECT_ROOT, env=ENV, capture_output=True, timeout=120)
    return path


def _setup(tmp_path: Any, pristine: str, at: str = "/", restart: str = "on-failure",
           name: str = "img") -> tuple[str, str, str]:
    rd = str(tmp_path / "run")
    os.makedirs(rd, exist_ok=True)
    disk = os.path.join(rd, "disk0.img")
    if not os.path.exists(disk):
        shutil.copyfile(pristine, disk)
    image = str(tmp_path / f"{name}.toml")
    with open(image, "w") as f:
        f.write(IMAGE.replace("AT", at).replace("RESTART", restart))
    return rd, disk, image


class Booted:
    """One boot of `image` in `rd`: `run` a command line in the personality; down at exit,
    and nothing of the system left behind."""

    def __init__(self, rd: str, image: str) -> None:
        self.rd, self.image = rd, image

    def __enter__(self) -> "Booted":
        self.shm = set(os.listdir("/dev/shm"))
        subprocess.run([*L4RUN, "boot", self.image, "--detach", "--timeout", "90", "--run-dir",
                        self.rd], check=True, env=ENV, cwd=PROJECT_ROOT, capture_output=True,
                       timeout=120)
        self.pids = system_pids(self.rd)
        door = os.path.join(self.rd, "scratch", "linux", "linux.sock")
        wait_for(lambda: os.path.exists(door), 30, "the personality's door")
        return self

    def run(self, script: str, timeout: float = 60) -> tuple[int, str]:
        r = subprocess.run([*L4RUN, "linux", "run", "--run-dir", self.rd, "--timeout",
                            str(timeout), "--", "sh", "-c", script], env=ENV, cwd=PROJECT_ROOT,
                           capture_output=True, timeout=timeout + 30)
        return r.returncode, r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")

    def ok(self, script: str, timeout: float = 60) -> str:
        rc, out = self.run(script, timeout)
        assert rc == 0, f"{script!r} exited {rc}:\n{out}"
        return out

    def popen(self, script: str) -> "subprocess.Popen[bytes]":
        return subprocess.Popen([*L4RUN, "linux", "run", "--run-dir", self.rd, "--timeout",
                                 "120", "--", "sh", "-c", script], env=ENV, cwd=PROJECT_ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def __exit__(self, *exc: object) -> None:
        subprocess.run([*L4RUN, "down", "--timeout", "50", "--run-dir", self.rd], env=ENV,
                       cwd=PROJECT_ROOT, capture_output=True, timeout=60)
        assert_nothing_left(self.rd, self.pids, self.shm)


SLOW = "/w/" + "t" * 70                     # a symlink target past the 60 inline bytes
SESSION = f"""set -e
mkdir -p /w/a/b/c /w/many /w/gone/deeper
head -c 1500000 /bin/busybox > /w/a/big
i=0; while [ $i -lt 220 ]; do i=$((i+1)); echo "entry $i" > /w/many/e$i; done
echo nested > /w/a/b/c/deep
ln /w/a/big /w/hard
ln -s a/b/c/deep /w/fast
ln -s {SLOW} /w/slow
echo doomed > /w/gone/deeper/f
rm -r /w/gone
echo renamed > /w/a/tmp
mv /w/a/tmp /w/a/b/renamed
mv /w/many/e1 /w/a/moved
rm /w/many/e2
"""
# What the personality sees: every path; each file's link count, size and digest; the links.
LOOK = ("find /w | sort; find /w -type f | sort | xargs stat -c '%n %h %s'; "
        "find /w -type f | sort | xargs md5sum; readlink /w/fast; readlink /w/slow")


def _host_view(disk: str, dest: str) -> str:
    """LOOK's output as the host's debugfs reads the image (`rdump` of /w, `ls` per directory
    for the inode numbers)."""
    os.makedirs(dest)
    debugfs(disk, f"rdump /w {dest}")
    tree = {"/w" + p: v for p, v in dir_tree(os.path.join(dest, "w")).items()}
    ino = {}
    for d in ["/w", *(p for p in tree if stat.S_ISDIR(tree[p][0]))]:
        ino.update({f"{d}/{n}": e[0] for n, e in ls(disk, d).items()})
    files = sorted(p for p in tree if stat.S_ISREG(tree[p][0]))
    lines = sorted(["/w", *tree])
    lines += [f"{p} {sum(1 for q in tree if ino[q] == ino[p])} {len(tree[p][1])}" for p in files]
    lines += [f"{hashlib.md5(tree[p][1]).hexdigest()}  {p}" for p in files]
    lines += [tree["/w/fast"][1].decode(), tree["/w/slow"][1].decode()]
    return "\n".join(lines) + "\n"


def test_a_session_on_the_disk_is_what_the_host_reads_and_the_next_boot_sees(
        tmp_path: Any, pristine: str) -> None:
    rd, disk, image = _setup(tmp_path, pristine)
    with Booted(rd, image) as b:
        b.ok(SESSION)
        seen = b.ok(LOOK)
        df = b.ok("df /; cat /proc/mounts; sync")
    assert "/dev/l4disk / ext2 rw" in df and "/dev/l4disk" in df.splitlines()[1], df
    assert_clean(disk)
    assert seen == _host_view(disk, str(tmp_path / "dump"))
    assert len(ls(disk, "/w/many")) == 218 and "gone" not in ls(disk, "/w")
    with open("/bin/busybox", "rb") as f:
        assert cat(disk, "/w/a/big") == f.read(1500000)
    assert cat(disk, "/w/a/b/renamed") == b"renamed\n"
    assert "dev" not in ls(disk, "/") or ls(disk, "/dev") == {}      # /dev stays in RAM
    with Booted(rd, image) as b:
        assert b.ok(LOOK) == seen
        rc, out = b.run("dd if=/dev/zero of=/fill bs=65536; echo dd=$?; df /")
        assert "No space left on device" in out and "dd=1" in out, out
        assert " 100% /" in out, out
        b.ok("rm /fill; echo after > /w/after")
    assert_clean(disk)
    assert cat(disk, "/w/after") == b"after\n" and "fill" not in ls(disk, "/")


def _personality_pid(rd: str) -> int:
    return int(ps(rd)["linux"]["pid"])


def test_busybox_mount_umount_and_a_kill_9_mid_write_that_e2fsck_repairs(
        tmp_path: Any, pristine: str) -> None:
    rd, disk, image = _setup(tmp_path, pristine, at="none", restart="never")
    with Booted(rd, image) as b:
        out = b.ok("mkdir /mnt; mount -t ext2 /dev/l4disk /mnt; cat /proc/mounts; df /mnt; "
                   "ls /mnt/bin/busybox; umount /mnt; ls /mnt | wc -l; "
                   "mount -t ext2 /dev/l4disk /mnt; mount -t ext2 /dev/l4disk /mnt || echo busy")
        assert "/dev/l4disk /mnt ext2 rw" in out and "/mnt/bin/busybox" in out, out
        assert "\n0\n" in out and "busy" in out, out
        writer = b.popen("i=0; while :; do i=$((i+1)); "
                         "dd if=/bin/busybox of=/mnt/f$i bs=65536 count=4 2>/dev/null; done")
        try:
            wait_for(lambda: "/mnt/f3" in b.run("ls /mnt/f3")[1], 30, "the writes to start")
            os.kill(_personality_pid(rd), signal.SIGKILL)
            writer.wait(60)
        finally:
            writer.kill()
            writer.wait()
        wait_for(lambda: ps(rd)["linux"]["state"] != "running", 20, "the personality's end")
    rc, out = fsck(disk, repair=True)
    assert rc in (0, 1), out                 # 1: errors corrected (the dirty cache was lost)
    assert_clean(disk)
    rd2 = str(tmp_path / "run")
    with Booted(rd2, image) as b:
        out = b.ok("mkdir /mnt; mount -t ext2 /dev/l4disk /mnt; ls /mnt/f1 /mnt/bin/sh; "
                   "echo again > /mnt/again; umount /mnt")
        assert "/mnt/f1" in out, out
    assert_clean(disk)
    assert cat(disk, "/again") == b"again\n"


# `rounds` files /r1.. of 64 KiB from busybox, each fsynced and then acknowledged ("ACK i")
_ROUNDS = ("i=0; while [ $i -lt {rounds} ]; do i=$((i+1)); "
           "dd if=/bin/busybox of=/r$i bs=16384 count=4 skip=$i conv=fsync "
           "2>/dev/null && echo ACK $i; sleep 0.1; done")


def _rounds_on_disk(out: str, rounds: int, disk: str) -> None:
    """Every round was acknowledged, the image is e2fsck-clean and holds each one's bytes."""
    acked = [int(ln.split()[1]) for ln in out.splitlines() if ln.startswith("ACK ")]
    assert acked == list(range(1, rounds + 1)), out
    assert_clean(disk)
    with open("/bin/busybox", "rb") as f:
        busybox = f.read()
    for i in acked:
        assert cat(disk, f"/r{i}") == busybox[i * 16384:i * 16384 + 65536], i


def test_block_server_restart_under_the_personality_loses_no_fsynced_file(
        tmp_path: Any, pristine: str) -> None:
    rd, disk, image = _setup(tmp_path, pristine)
    rounds = 30
    with Booted(rd, image) as b:
        writer = b.popen(_ROUNDS.format(rounds=rounds))
        try:
            wait_for(lambda: b.run("test -e /r3")[0] == 0, 30, "three rounds")
            subprocess.run([*L4RUN, "kill", "block", "--run-dir", rd], check=True, env=ENV,
                           cwd=PROJECT_ROOT, capture_output=True, timeout=30)
            out = writer.communicate(timeout=120)[0].decode()
        finally:
            writer.kill()
            writer.wait()
        tasks = ps(rd)
        assert tasks["block"]["restarts"] >= 1 and tasks["linux"]["restarts"] == 0, tasks
        assert "Traceback" not in task_log(rd, "linux").split("serving", 1)[-1]
    _rounds_on_disk(out, rounds, disk)


NET_IMAGE = IMAGE.replace('[linux]', '''[[device]]
kind = "nic"
name = "nic0"
backend = "loopback"

[[task]]
name = "nic"
run = "servers.nic.server:main"
args = ['{"clients": {"1": {"name": "ore"}}}']
devices = ["nic0"]
provides = ["nic"]
caps = { sigma0 = { service = "sigma0", label = 2 } }
restart = "on-failure"

[[task]]
name = "ore"
run = "servers.ore.server:main"
args = ['{"uplink": "uplink", "clients": {}}']
provides = ["ore"]
caps = { sigma0 = { service = "sigma0", label = 4 }, uplink = { service = "nic", label = 1 } }
restart = "on-failure"

[[task]]
name = "peer"
run = "servers.netstack.demo:serve"
args = ["echo=7"]
net = { switch = "ore", ip = "10.0.2.15/24", broadcast = true }
restart = "on-failure"

[linux]
net = { switch = "ore", ip = "10.0.2.20/24", broadcast = true }''')


def test_the_disk_and_the_network_at_once_through_block_and_ore_restarts(
        tmp_path: Any, pristine: str) -> None:
    """One personality with both sessions — ext2 root through block, eth0 through ORe — in
    the task's one memory attachment: fsynced writes and pings at once, the block server
    and then ORe killed in the middle (their sessions' memory unmapped and mapped anew
    while the other session's is in use); every acknowledged file is on the disk, the
    network answers after ORe's restart, e2fsck is clean."""
    rd, disk, _ = _setup(tmp_path, pristine)
    image = str(tmp_path / "net.toml")
    with open(image, "w") as f:
        f.write(NET_IMAGE.replace("AT", "/").replace("RESTART", "on-failure"))
    rounds = 30

    def kill(task: str) -> None:
        subprocess.run([*L4RUN, "kill", task, "--run-dir", rd], check=True, env=ENV,
                       cwd=PROJECT_ROOT, capture_output=True, timeout=30)
    with Booted(rd, image) as b:
        assert "3 packets received" in b.ok("ping -c 3 10.0.2.15")
        writer = b.popen("ping -q -c 400 -i 0.02 10.0.2.15 >/dev/null & "
                         + _ROUNDS.format(rounds=rounds) + "; wait")
        try:
            wait_for(lambda: b.run("test -e /r3")[0] == 0, 30, "three rounds")
            kill("block")
            wait_for(lambda: b.run("test -e /r12")[0] == 0, 60, "rounds after block's restart")
            kill("ore")
            out = writer.communicate(timeout=120)[0].decode()
        finally:
            writer.kill()
            writer.wait()
        wait_for(lambda: b.run("ping -c 1 -W 2 10.0.2.15")[0] == 0, 60,
                 "a ping answered after ORe's restart")
        tasks = ps(rd)
        assert tasks["block"]["restarts"] >= 1 and tasks["ore"]["restarts"] >= 1, tasks
        assert tasks["linux"]["restarts"] == 0, tasks
        assert "Traceback" not in task_log(rd, "linux").split("serving", 1)[-1]
    _rounds_on_disk(out, rounds, disk)
