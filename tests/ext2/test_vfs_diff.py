"""Differential test of the mount adapter: the same random path operations on the
personality's RAM tree and on an ext2 file system mounted in a second tree must give the
same answers (results or errno) and the same trees; e2fsck -fn is clean at the end."""
from __future__ import annotations

import os
import stat
import tempfile
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st

from servers.ext2 import Ext2, ImageDevice
from servers.l4linux import fs
from servers.l4linux.ext2fs import Ext2Mount

from .tools import assert_clean, mkfs

NAMES = [b"a", b"b", b"c", b"long-" + b"n" * 40]
OPS = ["create", "excl", "mkdir", "symlink", "link", "unlink", "rmdir", "rename", "write",
       "truncate"]
step = st.tuples(st.sampled_from(OPS), st.lists(st.sampled_from(NAMES), min_size=1,
                                                  max_size=3),
                 st.lists(st.sampled_from(NAMES), min_size=1, max_size=3),
                 st.integers(0, 70_000), st.integers(0, 5000))


def _do(t: fs.FileSystem, s: tuple) -> Any:
    kind, p1, p2, off, n = s
    a = b"/mnt/" + b"/".join(p1)
    b = b"/mnt/" + b"/".join(p2)
    root = t.root
    try:
        if kind in ("create", "excl"):
            t.create(a, root, 0o640, kind == "excl")
        elif kind == "mkdir":
            t.mkdir(a, root, 0o750)
        elif kind == "symlink":
            t.symlink(b"target/" + p2[-1], a, root)
        elif kind == "link":
            t.link(t.walk(a, root, follow=False), b, root)
        elif kind in ("unlink", "rmdir"):
            t.unlink(a, root, kind == "rmdir")
        elif kind == "rename":
            t.rename(a, b, root)
        else:
            node = t.walk(a, root)
            if node.is_dir:
                return "dir"
            if kind == "write":
                return fs.write_at(node, off, bytes([n % 256]) * n)
            fs.truncate(node, off)
        return "ok"
    except fs.FsError as e:
        return e.errno


def _snapshot(t: fs.FileSystem, d: bytes = b"/mnt") -> dict[bytes, Any]:
    out: dict[bytes, Any] = {}
    node = t.walk(d, t.root)
    for _, typ, name in t.listing(node):
        if name in (b".", b"..") or name == b"lost+found":
            continue
        path = d + b"/" + name
        child = t.walk(path, t.root, follow=False)
        if child.is_dir:
            out[path] = ("dir", child.nlink, stat.S_IMODE(child.mode))
            out.update(_snapshot(t, path))
        elif child.is_link:
            out[path] = ("link", child.target)
        else:
            out[path] = ("file", child.nlink, bytes(child.data), typ)
    return out


@settings(max_examples=int(os.environ.get("EXT2_EXAMPLES", "20")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=3, max_size=40))
def test_ram_tree_and_mounted_ext2_agree(steps: list[tuple]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        img = mkfs(os.path.join(tmp, "disk.img"), 8 << 20, 1024, 128)
        ram, disk = fs.FileSystem(), fs.FileSystem()
        for t in (ram, disk):
            t.mkdir(b"/mnt", t.root, 0o755)
        m = Ext2Mount(Ext2(ImageDevice(img)))
        disk.mount(b"/mnt", m)
        try:
            for s in steps:
                assert _do(ram, s) == _do(disk, s), s
                assert _snapshot(ram) == _snapshot(disk), s
        finally:
            disk.umount(b"/mnt")
        assert_clean(img)
