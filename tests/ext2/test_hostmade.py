"""The reverse direction: a tree the host put in an image (`mke2fs -d DIR`) reads back
through the engine exactly as it is in DIR: names, types, modes, owners, contents, symlink
targets (fast and slow), hard links, sparse files' holes; and the engine can go on writing
in it with e2fsck still clean."""
from __future__ import annotations

import os
import stat

import pytest

from servers.ext2 import ROOT_INO, Ext2, ImageDevice

from .tools import assert_clean, cat, dir_tree, mkfs, tree


@pytest.mark.parametrize("bs,isz", [(1024, 128), (4096, 256)])
def test_mke2fs_d_tree_reads_back_identically(tmp_path, bs: int, isz: int) -> None:
    src = tmp_path / "src"
    (src / "etc" / "deep" / "er").mkdir(parents=True)
    (src / "etc" / "hostname").write_bytes(b"l4py\n")
    (src / "etc" / "deep" / "er" / "big").write_bytes(os.urandom(1300 * 1024))
    (src / "bin").mkdir()
    (src / "bin" / "tool").write_bytes(b"\x7fELF" + os.urandom(5000))
    os.chmod(src / "bin" / "tool", 0o755)
    os.link(src / "bin" / "tool", src / "bin" / "tool-link")
    os.symlink("tool", src / "bin" / "fast")
    os.symlink("/" + "x" * 120, src / "bin" / "slow")
    with open(src / "holes", "wb") as f:
        f.seek(3 << 20)
        f.write(b"tail")
    (src / "many").mkdir()
    for i in range(220):
        (src / "many" / f"f{i}").write_bytes(b"%d" % i)
    os.chmod(src / "many" / "f7", 0o600)
    img = mkfs(str(tmp_path / "disk.img"), 16 << 20, bs, isz, "-d", str(src), "-E",
               "root_owner=0:0")
    fs = Ext2(ImageDevice(img))
    assert tree(fs) == {**dir_tree(str(src)),
                        "/lost+found": (stat.S_IFDIR | 0o700, b"")}
    tool, link = fs.resolve("/bin/tool"), fs.resolve("/bin/tool-link")
    assert tool == link and fs.stat(tool).nlink == 2
    assert fs.resolve("/bin/fast") == tool
    holes = fs.stat(fs.resolve("/holes"))
    assert holes.blocks < 64                      # the hole owns no blocks
    s = os.stat(src / "etc" / "hostname")
    h = fs.stat(fs.resolve("/etc/hostname"))
    assert (h.uid, h.gid, h.mtime) == (s.st_uid, s.st_gid, int(s.st_mtime))
    # and the engine writes on in a host-made image
    many = fs.resolve("/many")
    for i in range(0, 220, 2):
        fs.unlink(many, f"f{i}")
    fs.rename(many, "f1", ROOT_INO, "one")
    fs.write(fs.create(fs.resolve("/etc/deep"), "new"), 0, b"written later")
    fs.unmount()
    assert_clean(img)
    assert cat(img, "/one") == b"1"
    assert cat(img, "/etc/deep/new") == b"written later"
