"""The personality's file tree with an ext2 file system mounted in it (servers/l4linux/
ext2fs.py): the same FileSystem operations and open descriptions as on the RAM tree, on an
image file; after umount host e2fsck -fn is clean and debugfs sees what was done."""
from __future__ import annotations

import errno
import stat

import pytest

from servers.ext2 import Ext2, ImageDevice
from servers.l4linux import files, fs
from servers.l4linux.ext2fs import Ext2Mount

from .tools import assert_clean, cat, debugfs, ls, mkfs


@pytest.fixture
def tree(tmp_path):
    img = mkfs(str(tmp_path / "disk.img"), 16 << 20, 1024, 128)
    t = fs.FileSystem()
    t.mkdir(b"/mnt", t.root, 0o755)
    t.mkdir(b"/tmp", t.root, 0o1777)
    m = Ext2Mount(Ext2(ImageDevice(img)))
    t.mount(b"/mnt", m)
    yield t, img, m
    if m.fs.mounted:
        m.unmount()


def test_calls_on_a_mounted_ext2(tree) -> None:
    t, img, m = tree
    root = t.root
    assert t.walk(b"/mnt", root) is m.root
    assert t.walk(b"/mnt/..", root) is root
    assert t.walk(b"/mnt/lost+found/../..", root) is root
    d = t.mkdir(b"/mnt/dir", root, 0o750)
    assert d.is_dir and stat.S_IMODE(d.mode) == 0o750 and d.nlink == 2
    f = files.open_node(t.create(b"/mnt/dir/file", root, 0o644, True), files.O_RDWR)
    f.refs = 1
    big = bytes(range(256)) * 6000                       # 1.5 MB, through doubly indirect
    for off in range(0, len(big), 65536):
        assert f.write(big[off:off + 65536]) == len(big[off:off + 65536])
    f.pos = 0
    assert f.read(100) == big[:100]
    assert fs.write_at(f.node, 5 << 20, b"tail") == 4    # a hole up to 5 MiB
    assert bytes(f.node.data[0:10]) == big[:10] and f.node.size() == (5 << 20) + 4
    t.symlink(b"dir/file", b"/mnt/fast", root)
    t.symlink(b"/mnt/" + b"d" * 80, b"/mnt/slow", root)
    assert t.walk(b"/mnt/fast", root) is f.node
    t.link(f.node, b"/mnt/hard", root)
    assert f.node.nlink == 2
    for i in range(210):
        t.create(b"/mnt/dir/n%d" % i, root, 0o600, True)
    names = [n for _, _, n in t.listing(t.walk(b"/mnt/dir", root))]
    assert names[:2] == [b".", b".."] and len(names) == 213
    t.mkdir(b"/mnt/other", root, 0o755)
    t.rename(b"/mnt/dir", b"/mnt/other/moved", root)
    assert t.walk(b"/mnt/other/moved/..", root) is t.walk(b"/mnt/other", root)
    assert t.path_of(t.walk(b"/mnt/other/moved", root)) == b"/mnt/other/moved"
    with pytest.raises(fs.FsError) as e:
        t.rename(b"/mnt/hard", b"/tmp/hard", root)
    assert e.value.errno == errno.EXDEV
    with pytest.raises(fs.FsError) as e:
        t.unlink(b"/mnt", root, True)
    assert e.value.errno == errno.EBUSY
    with pytest.raises(fs.FsError) as e:
        t.unlink(b"/mnt/other", root, True)
    assert e.value.errno == errno.ENOTEMPTY
    # unlink while open: readable until the last close, then the blocks are free
    t.unlink(b"/mnt/hard", root, False)
    t.unlink(b"/mnt/other/moved/file", root, False)
    free = m.statfs().bfree
    f.pos = 0
    assert f.read(10) == big[:10]
    f.release()
    assert m.statfs().bfree > free + 1400
    st = fs.stat_bytes(t.walk(b"/mnt/other", root))
    assert len(st) == 144
    t.umount(b"/mnt")
    assert t.walk(b"/mnt", root).mounted is None
    assert_clean(img)
    assert "moved" in ls(img, "/other") and "file" not in ls(img, "/other/moved")
    assert len(ls(img, "/other/moved")) == 210
    assert 'Fast link dest: "dir/file"' in debugfs(img, "stat /fast").decode()
    assert cat(img, "/slow") == b"/mnt/" + b"d" * 80


def test_o_trunc_truncate_and_times(tree) -> None:
    t, img, m = tree
    node = t.create(b"/mnt/f", t.root, 0o644, True)
    fs.write_at(node, 0, b"x" * 5000)
    o = files.open_node(node, files.O_WRONLY | files.O_TRUNC)
    assert node.size() == 0
    o.refs = 1
    o.write(b"abc")
    o.release()
    fs.truncate(node, 10)
    assert bytes(node.data) == b"abc" + bytes(7)
    node.mode = 0o600
    node.mtime = 1234567
    assert stat.S_IMODE(node.mode) == 0o600 and node.mtime == 1234567.0
    t.umount(b"/mnt")
    assert_clean(img)
    assert cat(img, "/f") == b"abc" + bytes(7)


def test_full_disk_through_the_descriptor_layer(tmp_path) -> None:
    img = mkfs(str(tmp_path / "small.img"), 2 << 20, 1024, 128)
    t = fs.FileSystem()
    t.mkdir(b"/mnt", t.root, 0o755)
    m = Ext2Mount(Ext2(ImageDevice(img)))
    t.mount(b"/mnt", m)
    o = files.open_node(t.create(b"/mnt/fill", t.root, 0o644, True), files.O_WRONLY)
    o.refs = 1
    chunk, results = b"z" * 65536, []
    while not results or results[-1] > 0:
        results.append(o.write(chunk))
    assert results[-1] == -errno.ENOSPC
    assert sum(results[:-1]) == o.node.size() == o.pos
    o.release()
    t.umount(b"/mnt")
    assert_clean(img)


def test_statfs_and_sync_numbers(tree) -> None:
    import struct
    t, img, m = tree
    node = t.create(b"/mnt/x", t.root, 0o644, True)
    fs.write_at(node, 0, b"y" * 100_000)
    t.sync()
    got = struct.unpack("<qqQQQQQiiqqq32x", fs.statfs_bytes(t.walk(b"/mnt", t.root)))
    s = m.statfs()
    assert got[:7] == (fs.EXT2_SUPER_MAGIC, 1024, s.blocks, s.bfree, s.bavail, s.files, s.ffree)
    assert struct.unpack_from("<q", fs.statfs_bytes(t.root))[0] == fs.TMPFS_MAGIC
    stats = debugfs(img, "stats").decode()         # sync put the counts on the disk
    assert f"Free blocks:              {s.bfree}" in stats
    assert cat(img, "/x") == b"y" * 100_000


def test_ext2_as_the_root_file_system(tmp_path) -> None:
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "proc").mkdir()                           # as the skeleton has: covered by RAM
    (src / "bin" / "tool").write_bytes(b"#!tool\n")
    img = mkfs(str(tmp_path / "root.img"), 8 << 20, 1024, 128, "-d", str(src))
    t = fs.FileSystem()
    m = Ext2Mount(Ext2(ImageDevice(img)))
    t.mount_root(m)
    files.make_devices(t)                            # /dev in RAM, as the personality does
    root = t.root
    assert t.walk(b"/", root) is root and t.walk(b"/bin/..", root) is root
    tool = t.walk(b"/bin/tool", root)
    assert tool.mount is m and bytes(tool.data) == b"#!tool\n"
    assert t.path_of(t.walk(b"/bin", root)) == b"/bin"
    assert t.walk(b"/dev/null", root).mount is None          # RAM: not on the disk
    assert t.walk(b"/proc", root).mount is None
    t.create(b"/newfile", root, 0o644, True)
    t.mkdir(b"/home", root, 0o755)
    t.rename(b"/newfile", b"/home/file", root)
    assert t.walk(b"../home/file", t.walk(b"/bin", root)).mount is m
    names = {n for _, _, n in t.listing(root)}
    assert {b"bin", b"home", b"dev", b"proc", b"lost+found"} <= names
    assert len([n for _, _, n in t.listing(root) if n == b"proc"]) == 1
    m.unmount()
    assert_clean(img)
    assert "file" in ls(img, "/home") and "dev" not in ls(img, "/")


def test_umount_is_refused_while_a_file_is_open(tree) -> None:
    t, img, m = tree
    o = files.open_node(t.create(b"/mnt/busy", t.root, 0o644, True), files.O_RDWR)
    o.refs = 1
    with pytest.raises(fs.FsError) as e:
        t.umount(b"/mnt")
    assert e.value.errno == errno.EBUSY
    o.release()
    t.umount(b"/mnt")
    assert_clean(img)
