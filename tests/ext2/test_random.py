"""Random operation sequences against a model: the engine agrees with a dict of the tree
after every step, and after each sequence (with remounts in it) e2fsck -fn is clean and
the host's debugfs reads the same tree.

The model: a directory is a dict name -> node, a file a `File` (shared by its hard links),
a symlink a `Link`. Operations pick their targets among the existing paths by index, so
most are valid; the rest must fail with the errno the model predicts (EEXIST, ENOTEMPTY,
EINVAL for a directory moved below itself)."""
from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Union

from hypothesis import HealthCheck, given, settings, strategies as st

from servers.ext2 import Ext2, FsError, ImageDevice

from .tools import assert_clean, host_dump, mkfs, tree


@dataclass(eq=False)
class File:
    data: bytearray = field(default_factory=bytearray)


@dataclass(eq=False)
class Link:
    target: bytes


Node = Union[dict, File, Link]
NAMES = ["a", "b", "c", "d", "e" * 30, "f" * 70]
OPS = ["create", "mkdir", "write", "truncate", "unlink", "rmdir", "rename", "link",
       "symlink", "remount", "many"]

op = st.tuples(st.sampled_from(OPS), st.integers(0, 1000), st.integers(0, 1000),
               st.sampled_from(NAMES), st.integers(0, 300_000), st.integers(0, 20_000))


def _paths(d: dict, prefix: str = "") -> list[tuple[str, Node, dict]]:
    out: list[tuple[str, Node, dict]] = []
    for name, n in sorted(d.items()):
        out.append((f"{prefix}/{name}", n, d))
        if isinstance(n, dict):
            out += _paths(n, f"{prefix}/{name}")
    return out


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, n, _ in _paths(d, prefix):
        out[path] = ("dir" if isinstance(n, dict) else bytes(n.data) if isinstance(n, File)
                     else ("link", n.target))
    return out


def _engine_flat(fs: Ext2) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, (mode, data) in tree(fs).items():
        if path == "/lost+found":
            continue
        out[path] = "dir" if mode & 0o170000 == 0o040000 else (
            ("link", data) if mode & 0o170000 == 0o120000 else data)
    return out


def _run(fs: Ext2, img: str, model: dict, step: tuple) -> Ext2:
    kind, i, j, name, off, size = step
    paths = _paths(model)
    dirs = [("", model)] + [(p, n) for p, n, _ in paths if isinstance(n, dict)]
    files = [(p, n, par) for p, n, par in paths if isinstance(n, File)]
    dpath, dnode = dirs[i % len(dirs)]
    dino = fs.resolve(dpath or "/")
    payload = bytes([i % 251]) * size
    expect = 0
    if kind in ("create", "mkdir", "symlink", "link") and name in dnode:
        expect = errno.EEXIST
    if kind == "create":
        call = lambda: fs.create(dino, name)        # noqa: E731
        new: Node | None = File()
    elif kind == "mkdir":
        call, new = (lambda: fs.mkdir(dino, name)), {}
    elif kind == "symlink":
        target = (b"t" * (j % 120)) or b"x"
        call, new = (lambda: fs.symlink(dino, name, target)), Link(target)
    elif kind == "many":
        sub = f"many{j % 3}"
        if sub in dnode:
            return fs
        m = fs.mkdir(dino, sub)
        dnode[sub] = {}
        for k in range(210):
            fs.create(m, f"n{k}")
            dnode[sub][f"n{k}"] = File()
        return fs
    elif kind == "remount":
        fs.unmount()
        return Ext2(ImageDevice(img))
    elif not files and kind in ("write", "truncate", "unlink", "link"):
        return fs
    elif kind in ("write", "truncate"):
        fp, fnode, _ = files[j % len(files)]
        ino = fs.resolve(fp)
        if kind == "write":
            assert fs.write(ino, off, payload) == size
            fnode.data[len(fnode.data):] = bytes(max(0, off + size - len(fnode.data)))
            fnode.data[off:off + size] = payload
        else:
            fs.truncate(ino, off)
            del fnode.data[off:]
            fnode.data += bytes(off - len(fnode.data))
        return fs
    elif kind == "unlink":
        fp, _, par = files[j % len(files)]
        d, n = fs.resolve_parent(fp)
        fs.unlink(d, n)
        del par[n]
        return fs
    elif kind == "link":
        fp, fnode, _ = files[j % len(files)]
        call, new = (lambda: fs.link(fs.resolve(fp), dino, name)), fnode
    elif kind == "rmdir":
        if not dpath:
            return fs
        d, n = fs.resolve_parent(dpath)
        parent = dirs[[p for p, _ in dirs].index(dpath.rpartition("/")[0])][1]
        expect = errno.ENOTEMPTY if dnode else 0
        call, new, dnode, name = (lambda: fs.rmdir(d, n)), None, parent, n
    else:                                           # rename a path into dnode as `name`
        if not paths:
            return fs
        sp, snode, spar = paths[j % len(paths)]
        sname = sp.rpartition("/")[2]
        tgt = dnode.get(name)
        if tgt is snode:
            return fs
        if isinstance(snode, dict) and (dpath + "/").startswith(sp + "/"):
            expect = errno.EINVAL
        elif tgt is not None and (isinstance(tgt, dict) or isinstance(snode, dict)):
            return fs                                # dir/file replacement mixes: skip
        sd = fs.resolve(sp.rpartition("/")[0] or "/")
        try:
            fs.rename(sd, sname, dino, name)
        except FsError as e:
            assert e.errno == expect and expect, e
            return fs
        assert not expect
        del spar[sname]
        dnode[name] = snode
        return fs
    try:
        call()
    except FsError as e:
        assert e.errno == expect and expect, e
        return fs
    assert not expect, f"{kind} {name} should have failed with {expect}"
    if new is None:
        del dnode[name]
    else:
        dnode[name] = new
    return fs


@settings(max_examples=int(os.environ.get("EXT2_EXAMPLES", "20")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=5, max_size=40), st.sampled_from([(1024, 128), (4096, 256)]))
def test_random_operations_match_the_model(steps: list[tuple], geometry: tuple[int, int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        img = mkfs(os.path.join(tmp, "disk.img"), 12 << 20, *geometry)
        fs = Ext2(ImageDevice(img))
        model: dict = {}
        for step in steps:
            fs = _run(fs, img, model, step)
            assert _engine_flat(fs) == _flat(model), step
        fs.unmount()
        assert_clean(img)
        host = {p: v for p, v in host_dump(img, os.path.join(tmp, "dump")).items()
                if not p.startswith("/lost+found")}
        fs = Ext2(ImageDevice(img))
        assert {p: v for p, v in tree(fs).items() if not p.startswith("/lost+found")} == host
        assert _engine_flat(fs) == _flat(model)
        fs.unmount()
