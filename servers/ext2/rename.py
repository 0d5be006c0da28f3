"""rename(2) on ext2: move an entry between directories, replacing a compatible target.

Contract (POSIX): renaming a name onto another name of the same inode does nothing; a
directory may replace only an empty directory, a non-directory only a non-directory; a
directory may not move into itself or below itself (EINVAL). All of that is checked before
anything changes. Then the new entry is made first (retargeting an existing one needs no
space; a new entry may fail with ENOSPC, and then nothing has changed), the old one
removed, and for a directory moved to another parent its '..' is pointed at the new parent
and both parents' link counts follow. A replaced target loses that name (and is freed if
it was the last, unless open).

Ownership: the Ext2 instance's thread.
"""
from __future__ import annotations

import errno
import stat as st
import time
from typing import TYPE_CHECKING

from .dirs import check_name
from .layout import FT_DIR, ROOT_INO, FsError, ftype_of

if TYPE_CHECKING:
    from .fs import Ext2


def _check_not_below(fs: "Ext2", moving: int, ndir: int) -> None:
    """EINVAL when `ndir` is `moving` or inside it (walks '..' up to the root)."""
    p = ndir
    for _ in range(fs.vol.ngroups * fs.vol.ipg):
        if p == moving:
            raise FsError(errno.EINVAL, "cannot move a directory into itself")
        if p == ROOT_INO:
            return
        p = fs.dirs.lookup(fs.inode(p), b"..")
    raise FsError(errno.EIO, "directory '..' chain does not reach the root")


def rename_entry(fs: "Ext2", odir: int, oname: bytes, ndir: int, nname: bytes) -> None:
    od = fs._dir(odir)
    nd = od if ndir == odir else fs._dir(ndir)
    if oname in (b".", b".."):
        raise FsError(errno.EINVAL, f"cannot rename {oname!r}")
    check_name(nname)
    ino = fs.dirs.lookup(od, oname)
    if not ino:
        raise FsError(errno.ENOENT, f"{oname!r} not found")
    src = fs.inode(ino)
    is_dir = st.S_ISDIR(src.mode)
    if is_dir and ndir != odir:
        _check_not_below(fs, ino, ndir)      # first, as Linux: EINVAL before type errors
    target = fs.dirs.lookup(nd, nname)
    if target == ino:
        return
    if target:
        t = fs.inode(target)
        if is_dir and not st.S_ISDIR(t.mode):
            raise FsError(errno.ENOTDIR, f"{nname!r} is not a directory")
        if not is_dir and st.S_ISDIR(t.mode):
            raise FsError(errno.EISDIR, f"{nname!r} is a directory")
        if st.S_ISDIR(t.mode) and not fs.dirs.is_empty(t):
            raise FsError(errno.ENOTEMPTY, f"directory {nname!r} is not empty")
    # -- checked: act --
    ft = ftype_of(src.mode)
    if target:
        fs.dirs.retarget(nd, nname, ino, ft)
    else:
        fs.dirs.add(nd, nname, ino, ft)
    fs.dirs.remove(od, oname)
    now = int(time.time())
    if is_dir and ndir != odir:
        fs.dirs.retarget(src, b"..", ndir, FT_DIR)
        od.links -= 1
        nd.links += 1
    if target and st.S_ISDIR(fs.vol.read_inode(target).mode):
        nd.links -= 1                        # the replaced directory's '..'
    src.ctime = od.mtime = od.ctime = nd.mtime = nd.ctime = now
    fs._save(src)
    fs._save(od)
    if nd is not od:
        fs._save(nd)
    if target:
        t = fs.vol.read_inode(target)
        if st.S_ISDIR(t.mode):
            t.links = 0
            fs._release(t)
        else:
            fs._drop_link(target)
