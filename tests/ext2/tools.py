"""Host e2fsprogs as the judges of the ext2 engine: make images, check them, read them.

`mkfs` runs `mke2fs -t ext2` on a new sparse image file; `fsck` runs `e2fsck -f` (-n by
default: report, change nothing) and answers (exit status, output); `ls` and `cat` run
`debugfs -R` and answer the tree and the bytes as the host's own ext2 code sees them.
`tree` reads a whole image through the engine as {path: description}, and `host_tree` the
same from debugfs, so a test compares the two (files past BIG by size).
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest

from servers.ext2 import ROOT_INO, Ext2

for _tool in ("mke2fs", "e2fsck", "debugfs"):
    if not any(os.path.exists(f"{d}/{_tool}") for d in ("/sbin", "/usr/sbin")) and \
            shutil.which(_tool) is None:
        pytest.skip(f"host {_tool} (e2fsprogs) is not installed", allow_module_level=True)

ENV = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/sbin:/usr/sbin"}


BIG = 16 << 20        # `tree`: larger files (sparse giants) are compared by size only


def mkfs(path: str, size: int, block: int = 1024, inode: int = 128, *extra: str) -> str:
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-b", str(block), "-I", str(inode),
                    *extra, path], check=True, capture_output=True, env=ENV, timeout=60)
    return path


def fsck(path: str, repair: bool = False) -> tuple[int, str]:
    r = subprocess.run(["e2fsck", "-f", "-y" if repair else "-n", path], capture_output=True,
                       text=True, env=ENV, timeout=120)
    return r.returncode, r.stdout + r.stderr


def assert_clean(path: str) -> None:
    rc, out = fsck(path)
    assert rc == 0, f"e2fsck -fn {path} exit {rc}:\n{out}"


def debugfs(path: str, request: str) -> bytes:
    r = subprocess.run(["debugfs", "-R", request, path], capture_output=True, env=ENV,
                       timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def cat(path: str, file: str) -> bytes:
    return debugfs(path, f"cat {file}")


def ls(path: str, dir_: str) -> dict[str, tuple[int, int, int]]:
    """debugfs `ls -p`: name -> (inode, mode, size), without '.' and '..'."""
    out: dict[str, tuple[int, int, int]] = {}
    for line in debugfs(path, f"ls -p {dir_}").decode().splitlines():
        f = line.split("/")
        if len(f) >= 7 and f[5] not in (".", "..", "") and f[1] != "0":
            out[f[5]] = (int(f[1]), int(f[2], 8), int(f[6] or 0))
    return out


def ls_l(path: str, dir_: str) -> list[str]:
    """The names in debugfs `ls -l` output (the last field of each line)."""
    return [line.split()[-1] for line in debugfs(path, f"ls -l {dir_}").decode().splitlines()
            if line.strip()]


def tree(fs: Ext2, ino: int = ROOT_INO, prefix: str = "") -> dict[str, tuple[int, bytes]]:
    """Every path below `ino` -> (mode, contents or symlink target; b'' for directories)."""
    out: dict[str, tuple[int, bytes]] = {}
    for name, child in fs.listdir(ino):
        path = f"{prefix}/{name}"
        s = fs.stat(child)
        if stat.S_ISDIR(s.mode):
            out[path] = (s.mode, b"")
            out.update(tree(fs, child, path))
        elif stat.S_ISLNK(s.mode):
            out[path] = (s.mode, fs.readlink(child))
        else:
            out[path] = (s.mode, fs.read(child, 0, s.size) if s.size <= BIG else b"%d" % s.size)
    return out


def host_tree(img: str, dir_: str = "/", prefix: str = "") -> dict[str, tuple[int, bytes]]:
    """The same as `tree`, read with debugfs (symlink targets from `stat`)."""
    out: dict[str, tuple[int, bytes]] = {}
    for name, (_ino, mode, size) in ls(img, dir_).items():
        path = f"{prefix}/{name}"
        if stat.S_ISDIR(mode):
            out[path] = (mode, b"")
            out.update(host_tree(img, path, path))
        elif stat.S_ISLNK(mode):
            text = debugfs(img, f"stat {path}").decode()
            target = text.split("Fast link dest: ", 1)[1].split("\n")[0] if \
                "Fast link dest: " in text else cat(img, path).decode()
            out[path] = (mode, target.strip('"').encode())
        else:
            out[path] = (mode, cat(img, path) if size <= BIG else b"%d" % size)
    return out


def dir_tree(top: str) -> dict[str, tuple[int, bytes]]:
    """A host directory as `tree` answers it (symlinks not followed)."""
    out: dict[str, tuple[int, bytes]] = {}
    for d, dirs, files in os.walk(top):
        for name in dirs + files:
            p = os.path.join(d, name)
            s = os.lstat(p)
            data = (os.readlink(p).encode() if stat.S_ISLNK(s.st_mode) else b""
                    if stat.S_ISDIR(s.st_mode) else open(p, "rb").read())
            out["/" + os.path.relpath(p, top)] = (s.st_mode, data)
    return out


def host_dump(img: str, dest: str) -> dict[str, tuple[int, bytes]]:
    """The whole image as debugfs `rdump` writes it out, read back as `tree` answers."""
    os.makedirs(dest)
    debugfs(img, f"rdump / {dest}")
    return dir_tree(dest)
