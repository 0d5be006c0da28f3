"""kill -9 of a process writing through the engine: ext2 has no journal, so the image may
be inconsistent; host `e2fsck -fy` repairs it and the engine mounts it again.

The writer is a real subprocess with a small buffer cache (so dirty blocks also reach the
disk by eviction, in no particular order, between its syncs); it is killed while it
creates, writes, renames and deletes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from servers.ext2 import ROOT_INO, Ext2, ImageDevice

from .tools import assert_clean, fsck, mkfs, tree

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WRITER = r"""
import os, sys
from servers.ext2 import ROOT_INO, Ext2, ImageDevice
fs = Ext2(ImageDevice(sys.argv[1]), cache_blocks=48)
d = fs.mkdir(ROOT_INO, "work")
i = 0
while True:
    f = fs.create(d, f"file-{i}")
    fs.write(f, 0, os.urandom(20_000 + i * 37 % 9000))
    if i % 3 == 0 and i:
        fs.rename(d, f"file-{i - 1}", ROOT_INO, f"moved-{i}")
    if i % 5 == 0 and i > 5 and (i - 5) % 3 != 2:     # (those were moved)
        fs.unlink(d, f"file-{i - 5}")
    if i % 4 == 0:
        fs.sync()
    if i == 30:
        print("busy", flush=True)
    i += 1
"""


def test_kill_9_mid_write_then_e2fsck_repairs_and_engine_mounts(tmp_path) -> None:
    img = mkfs(str(tmp_path / "disk.img"), 16 << 20, 1024, 128)
    p = subprocess.Popen([sys.executable, "-c", WRITER, img], cwd=ROOT, stdout=subprocess.PIPE,
                         env={**os.environ, "PYTHONPATH": ROOT})
    try:
        assert p.stdout is not None
        assert p.stdout.readline() == b"busy\n"
        p.send_signal(signal.SIGKILL)
    finally:
        p.kill()
        p.wait(10)
        if p.stdout:
            p.stdout.close()
    assert p.returncode == -signal.SIGKILL
    rc, out = fsck(img, repair=True)
    assert rc in (0, 1), f"e2fsck -fy exit {rc}:\n{out}"      # 1: errors corrected
    assert_clean(img)
    fs = Ext2(ImageDevice(img))
    files = tree(fs)
    assert "/work" in files
    w = fs.create(ROOT_INO, "after-crash")
    fs.write(w, 0, b"life goes on")
    fs.unmount()
    assert_clean(img)
    fs = Ext2(ImageDevice(img))
    assert fs.read(fs.resolve("/after-crash"), 0, 100) == b"life goes on"
    assert fs.vol.was_clean
    fs.unmount()


def test_unclean_image_is_marked_so(tmp_path) -> None:
    """A mount not ended by unmount leaves the superblock 'not clean' (e2fsck's cue)."""
    img = mkfs(str(tmp_path / "disk.img"), 4 << 20)
    fs = Ext2(ImageDevice(img))
    fs.create(ROOT_INO, "x")
    fs.sync()
    fs.vol.dev.close()                      # as if the process died here
    fs2 = Ext2(ImageDevice(img))
    assert not fs2.vol.was_clean
    assert fs2.lookup(ROOT_INO, "x")
    fs2.unmount()
    assert_clean(img)
