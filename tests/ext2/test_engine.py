"""The engine against host e2fsprogs: what it writes, e2fsck finds clean and debugfs reads.

One session per geometry (1 KiB blocks with 128-byte inodes, 4 KiB with 256-byte ones)
does everything the personality's file calls need: a file past the doubly indirect
boundary (> 1 MiB), sparse files (one reaching the triply indirect blocks), a directory of
more than 200 entries, hard links, a fast and a slow symlink, rename across directories
(directory and file, onto an existing name too), unlink of a file still open, truncate,
chmod/chown/utimes. After unmount: `e2fsck -fn` is clean, debugfs shows the same tree and
bytes, the free counts agree, and a second mount sees everything.
"""
from __future__ import annotations

import errno
import os
import random
import stat

import pytest

from servers.ext2 import ROOT_INO, Ext2, FormatError, FsError, ImageDevice

from .tools import assert_clean, cat, debugfs, fsck, host_tree, ls, ls_l, mkfs, tree

GEOMETRIES = [(1024, 128), (4096, 256)]


def _data(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _session(fs: Ext2, bs: int) -> dict[str, object]:
    """Build the tree; answers what the checks need."""
    docs = fs.mkdir(ROOT_INO, "docs", 0o750, uid=1000, gid=100)
    big = fs.create(docs, "big.bin", 0o644)
    blob = _data(1536 * 1024 + 777, 1)
    assert fs.write(big, 0, blob) == len(blob)
    sparse = fs.create(ROOT_INO, "sparse")
    for off in (0, 100_000, 10 << 20):
        fs.write(sparse, off, b"<%d>" % off)
    tind = (12 + bs // 4 + (bs // 4) ** 2) * bs          # first triply indirect byte
    deep = fs.create(ROOT_INO, "deep")
    fs.write(deep, tind + 5, b"far away")
    many = fs.mkdir(ROOT_INO, "many")
    for i in range(230):
        f = fs.create(many, f"entry-{i:04d}-{'x' * (i % 40)}")
        fs.write(f, 0, b"%d\n" % i)
    for i in range(0, 230, 3):
        fs.unlink(many, f"entry-{i:04d}-{'x' * (i % 40)}")
    fs.link(big, ROOT_INO, "big-link")
    fs.link(big, many, "big-link-2")
    fs.symlink(ROOT_INO, "fast", "docs/big.bin")
    slow_target = "/" + "/".join(["long-directory-name"] * 6)
    fs.symlink(docs, "slow", slow_target)
    # rename across directories: a directory (its '..' and both parents' links change),
    # a file, and a file onto an existing name
    sub = fs.mkdir(docs, "sub")
    fs.write(fs.create(sub, "inner"), 0, b"inner text")
    fs.rename(docs, "sub", many, "sub-moved")
    fs.write(fs.create(ROOT_INO, "note"), 0, b"a note")
    fs.rename(ROOT_INO, "note", docs, "note")
    fs.write(fs.create(ROOT_INO, "replacement"), 0, b"new contents")
    fs.write(fs.create(docs, "old"), 0, b"old contents")
    fs.rename(ROOT_INO, "replacement", docs, "old")
    # unlink while open: still readable, freed at close
    tmp = fs.create(ROOT_INO, "scratch")
    fs.write(tmp, 0, _data(50_000, 2))
    fs.open(tmp)
    free_before = fs.statfs().bfree
    fs.unlink(ROOT_INO, "scratch")
    assert fs.read(tmp, 0, 10) == _data(50_000, 2)[:10]
    assert fs.statfs().bfree == free_before
    fs.close(tmp)
    assert fs.statfs().bfree > free_before
    with pytest.raises(FsError):
        fs.stat(tmp)
    # truncate down and up, attributes
    t = fs.create(ROOT_INO, "trunc")
    fs.write(t, 0, _data(300_000, 3))
    fs.truncate(t, 1000)
    fs.truncate(t, 5000)
    fs.setattr(t, mode=0o600, uid=7, gid=8, atime=1_000_000, mtime=2_000_000)
    return {"blob": blob, "tind": tind, "slow": slow_target, "deep": deep}


@pytest.mark.parametrize("bs,isz", GEOMETRIES)
def test_session_is_clean_and_readable_by_host_tools(tmp_path, bs: int, isz: int) -> None:
    img = mkfs(str(tmp_path / "disk.img"), 24 << 20, bs, isz)
    fs = Ext2(ImageDevice(img))
    info = _session(fs, bs)
    mine = tree(fs)
    counts = fs.statfs()
    deep_blocks = {lb: fs.fm.lookup(fs.inode(int(info["deep"])), lb) for lb in
                   (int(info["tind"]) // bs,)}                   # type: ignore[call-overload]
    fs.unmount()

    assert_clean(img)
    assert host_tree(img) == mine
    blob = info["blob"]
    assert cat(img, "/docs/big.bin") == blob
    assert cat(img, "/big-link") == blob
    assert ls(img, "/docs")["big.bin"][0] == ls(img, "/")["big-link"][0]
    assert "Links: 3" in debugfs(img, "stat /docs/big.bin").decode()
    assert cat(img, "/docs/old") == b"new contents"
    assert cat(img, "/many/sub-moved/inner") == b"inner text"
    assert "sub" not in ls(img, "/docs")
    names = ls_l(img, "/many")
    assert len([n for n in names if n.startswith("entry-")]) == 230 - len(range(0, 230, 3))
    assert cat(img, "/sparse")[10 << 20:] == b"<%d>" % (10 << 20)
    assert "Blockcount: " in debugfs(img, "stat /sparse").decode()
    for lb, blk in deep_blocks.items():
        assert debugfs(img, f"bmap /deep {lb}").decode().strip() == str(blk)
    t = debugfs(img, "stat /trunc").decode()
    assert "Size: 5000" in t and "Mode:  0600" in t and "User:     7" in t
    stats = debugfs(img, "stats").decode()
    assert f"Free blocks:              {counts.bfree}" in stats
    assert f"Free inodes:              {counts.ffree}" in stats
    assert "Filesystem state:         clean" in stats

    fs = Ext2(ImageDevice(img))
    assert fs.vol.was_clean
    assert tree(fs) == mine
    assert fs.readlink(fs.resolve("/docs/slow", follow=False)).decode() == info["slow"]
    assert fs.read(fs.resolve("/fast"), 0, 100) == blob[:100]       # type: ignore[index]
    assert fs.stat(fs.resolve("/many")).nlink == 3                  # '.', parent, sub-moved
    assert fs.stat(fs.resolve("/docs")).nlink == 2
    d = fs.resolve("/deep")
    assert fs.read(d, int(info["tind"]) + 5, 8) == b"far away"      # type: ignore[call-overload]
    assert fs.read(d, 0, 4096) == bytes(4096)
    fs.unmount()
    assert_clean(img)


def test_removing_everything_gives_back_every_block_and_inode(tmp_path) -> None:
    img = mkfs(str(tmp_path / "disk.img"), 24 << 20, 1024, 128)
    fs = Ext2(ImageDevice(img))
    empty = fs.statfs()
    _session(fs, 1024)
    for path in ("/docs/big.bin", "/big-link", "/many/big-link-2", "/sparse", "/deep",
                 "/fast", "/docs/slow", "/docs/note", "/docs/old", "/trunc",
                 "/many/sub-moved/inner"):
        d, name = fs.resolve_parent(path)
        fs.unlink(d, name)
    fs.rmdir(fs.resolve("/many"), "sub-moved")
    many = fs.resolve("/many")
    for name, _ in fs.listdir(many):
        fs.unlink(many, name)
    fs.rmdir(ROOT_INO, "many")
    fs.rmdir(ROOT_INO, "docs")
    now = fs.statfs()
    # directories keep their blocks only while they exist: all back
    assert (now.bfree, now.ffree) == (empty.bfree, empty.ffree)
    fs.unmount()
    assert_clean(img)


def test_refused_calls_change_nothing(tmp_path) -> None:
    img = mkfs(str(tmp_path / "disk.img"), 4 << 20)
    fs = Ext2(ImageDevice(img))
    a = fs.mkdir(ROOT_INO, "a")
    b = fs.mkdir(a, "b")
    fs.create(b, "f")
    c = fs.mkdir(ROOT_INO, "c")
    fs.create(c, "keep")
    cases = [
        (lambda: fs.rmdir(ROOT_INO, "a"), errno.ENOTEMPTY),
        (lambda: fs.rename(ROOT_INO, "a", b, "loop"), errno.EINVAL),
        (lambda: fs.mkdir(ROOT_INO, "a"), errno.EEXIST),
        (lambda: fs.unlink(ROOT_INO, "a"), errno.EISDIR),
        (lambda: fs.link(a, ROOT_INO, "dirlink"), errno.EPERM),
        (lambda: fs.lookup(ROOT_INO, "missing"), errno.ENOENT),
        (lambda: fs.create(ROOT_INO, "x" * 256), errno.ENAMETOOLONG),
        (lambda: fs.create(ROOT_INO, "a/b"), errno.EINVAL),
        (lambda: fs.rename(a, "b", ROOT_INO, "c"), errno.ENOTEMPTY),
        (lambda: fs.rename(ROOT_INO, "c", a, "b"), errno.ENOTEMPTY),
        (lambda: fs.resolve("/a/b/f/x"), errno.ENOTDIR),
    ]
    before = tree(fs), fs.statfs()
    for call, err in cases:
        with pytest.raises(FsError) as e:
            call()
        assert e.value.errno == err, e.value
    assert (tree(fs), fs.statfs()) == before
    fs.symlink(ROOT_INO, "self", "self")
    with pytest.raises(FsError) as e:
        fs.resolve("/self")
    assert e.value.errno == errno.ELOOP
    fs.unmount()
    assert_clean(img)


@pytest.mark.parametrize("feature,flag", [("extent", "extent"), ("metadata_csum",
                                                                  "metadata_csum"),
                                          ("huge_file", "huge_file")])
def test_unsupported_features_are_refused_by_name(tmp_path, feature: str, flag: str) -> None:
    img = mkfs(str(tmp_path / "disk.img"), 8 << 20, 4096, 256, "-O", feature)
    before = open(img, "rb").read()
    with pytest.raises(FormatError, match=flag):
        Ext2(ImageDevice(img))
    assert open(img, "rb").read() == before          # refused before anything is written


def test_not_ext2_is_refused(tmp_path) -> None:
    img = tmp_path / "zero.img"
    img.write_bytes(bytes(1 << 20))
    with pytest.raises(FormatError, match="magic"):
        Ext2(ImageDevice(str(img)))


def test_htree_directory_is_written_as_a_linear_one(tmp_path) -> None:
    """mke2fs -d makes plain directories; e2fsck -D indexes them (dir_index): then the
    engine still finds every name and its changes leave a valid (unindexed) directory."""
    src = tmp_path / "src"
    (src / "big").mkdir(parents=True)
    for i in range(400):
        (src / "big" / f"name-{i:04d}-{'y' * 30}").write_text(str(i))
    img = mkfs(str(tmp_path / "disk.img"), 16 << 20, 1024, 128, "-d", str(src))
    from .tools import fsck
    fsck(img, repair=False)
    import subprocess
    subprocess.run(["e2fsck", "-fyD", img], capture_output=True, timeout=60,
                   env={**os.environ, "PATH": os.environ["PATH"] + ":/sbin"})
    assert "Flags: 0x1000" in debugfs(img, "stat /big").decode()   # indexed now
    fs = Ext2(ImageDevice(img))
    big = fs.resolve("/big")
    assert fs.read(fs.lookup(big, f"name-0123-{'y' * 30}"), 0, 10) == b"123"
    fs.unlink(big, f"name-0123-{'y' * 30}")
    fs.create(big, "added")
    fs.unmount()
    assert_clean(img)
    names = ls(img, "/big")
    assert "added" in names and len(names) == 400
    assert stat.S_ISDIR(ls(img, "/")["big"][1])


def test_unmount_frees_files_still_open_and_unlinked(tmp_path) -> None:
    img = mkfs(str(tmp_path / "disk.img"), 4 << 20)
    fs = Ext2(ImageDevice(img))
    empty = fs.statfs()
    f = fs.create(ROOT_INO, "open")
    fs.write(f, 0, bytes(300_000))
    fs.open(f)
    fs.open(f)
    fs.unlink(ROOT_INO, "open")
    fs.close(f)
    assert fs.read(f, 0, 3) == bytes(3)               # one reference left: still there
    fs.sync()
    rc, out = fsck(img)
    assert rc != 0                                     # on disk now: an orphan (no journal)
    fs.unmount()                                       # frees it
    assert_clean(img)
    fs = Ext2(ImageDevice(img))
    assert (fs.statfs().bfree, fs.statfs().ffree) == (empty.bfree, empty.ffree)
    fs.unmount()
