"""`l4run mkrootfs --ext2 SIZE -o FILE`: the personality's skeleton and busybox as an ext2
image made by host mke2fs -d; judged by e2fsck -fn and debugfs, and read by the engine."""
from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys

import pytest

from servers.ext2 import Ext2, FsError, ImageDevice
from servers.l4linux import initramfs

from .tools import assert_clean, cat, debugfs, ls

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUSYBOX = shutil.which("busybox") or "/bin/busybox"
pytestmark = pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="no host busybox")


def _l4run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "launcher", "mkrootfs", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_mkrootfs_ext2_has_busybox_and_applet_links(tmp_path) -> None:
    img = str(tmp_path / "root.ext2")
    r = _l4run("--ext2", "16M", "-o", img, "--busybox", BUSYBOX)
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.path.getsize(img) == 16 << 20
    assert_clean(img)
    with open(BUSYBOX, "rb") as f:
        assert cat(img, "/bin/busybox") == f.read()
    bins = ls(img, "/bin")
    assert stat.S_IMODE(bins["busybox"][1]) == 0o755
    applets = set(initramfs.applets(BUSYBOX)) - {"busybox"}
    assert applets and applets <= set(bins)
    for name in ("sh", "ls", "mount"):
        if name in applets:
            assert stat.S_ISLNK(bins[name][1])
            assert 'Fast link dest: "busybox"' in debugfs(img, f"stat /bin/{name}").decode()
    assert stat.S_IMODE(ls(img, "/")["tmp"][1]) == 0o1777
    assert cat(img, "/etc/passwd").startswith(b"root:x:0:0:")
    before = open(img, "rb").read()
    fs = Ext2(ImageDevice(img, readonly=True), readonly=True)
    etc = fs.stat(fs.resolve("/etc/hostname"))
    assert (etc.uid, etc.gid) == (0, 0)
    assert fs.resolve("/bin/sh") == fs.resolve("/bin/busybox")
    with pytest.raises(FsError) as e:
        fs.create(fs.resolve("/tmp"), "x")
    assert e.value.errno == errno.EROFS
    fs.unmount()
    assert open(img, "rb").read() == before


def test_mkrootfs_ext2_too_small_or_bad_size_is_refused(tmp_path) -> None:
    img = str(tmp_path / "root.ext2")
    r = _l4run("--ext2", "1M", "-o", img, "--busybox", BUSYBOX)
    assert r.returncode != 0 and "mke2fs" in r.stderr and not os.path.exists(img)
    r = _l4run("--ext2", "lots", "-o", img, "--busybox", BUSYBOX)
    assert r.returncode != 0 and "--ext2" in r.stderr
