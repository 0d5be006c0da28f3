"""A full disk: ENOSPC (FsError with errno.ENOSPC), and the file system stays consistent.

Blocks run out in the middle of a write (a short write, then ENOSPC), while adding a
directory entry that needs a new block, and while making a directory; inodes run out in
create. After each, e2fsck -fn is clean and freeing space makes room again."""
from __future__ import annotations

import errno

import pytest

from servers.ext2 import ROOT_INO, Ext2, FsError, ImageDevice

from .tools import assert_clean, mkfs


def _fill(fs: Ext2, ino: int) -> int:
    """Write until the disk is full; answers the bytes the file holds."""
    chunk, off = bytes(range(256)) * 256, 0
    while True:
        try:
            n = fs.write(ino, off, chunk)
        except FsError as e:
            assert e.errno == errno.ENOSPC, e
            return off
        off += n
        if n < len(chunk):
            continue                              # short write: the next one raises


def test_blocks_run_out(tmp_path) -> None:
    img = mkfs(str(tmp_path / "disk.img"), 2 << 20, 1024, 128)
    fs = Ext2(ImageDevice(img))
    d = fs.mkdir(ROOT_INO, "d")
    for i in range(20):
        fs.create(d, f"small-{i}")
    f = fs.create(ROOT_INO, "filler")
    size = _fill(fs, f)
    assert fs.statfs().bfree == 0
    assert fs.stat(f).size == size > 1 << 20
    assert fs.read(f, size - 256, 256) == bytes(range(256))
    with pytest.raises(FsError) as e:
        fs.mkdir(ROOT_INO, "nospace")
    assert e.value.errno == errno.ENOSPC
    with pytest.raises(FsError) as e:
        fs.symlink(ROOT_INO, "slow", "y" * 200)
    assert e.value.errno == errno.ENOSPC
    # a new name in a full directory block needs a block: refused, nothing left behind
    inodes = fs.statfs().ffree
    made = 0
    with pytest.raises(FsError) as e:
        for i in range(1000):
            fs.create(d, f"another-rather-long-name-{i:04d}")
            made += 1
    assert e.value.errno == errno.ENOSPC
    assert fs.statfs().ffree == inodes - made
    fs.sync()
    assert_clean(img)
    fs.truncate(f, size // 2)
    assert fs.statfs().bfree > 0
    fs.mkdir(ROOT_INO, "room-again")
    fs.unmount()
    assert_clean(img)


def test_inodes_run_out(tmp_path) -> None:
    img = mkfs(str(tmp_path / "disk.img"), 2 << 20, 1024, 128, "-N", "64")
    fs = Ext2(ImageDevice(img))
    made = []
    with pytest.raises(FsError) as e:
        for i in range(1000):
            made.append(fs.create(ROOT_INO, f"f{i}"))
    assert e.value.errno == errno.ENOSPC and fs.statfs().ffree == 0
    assert len(fs.listdir(ROOT_INO)) == len(made) + 1          # + lost+found
    fs.unlink(ROOT_INO, "f0")
    fs.create(ROOT_INO, "again")
    fs.unmount()
    assert_clean(img)
