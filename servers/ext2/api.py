"""What the Ext2 API answers and takes: the Stat and StatFs records, names (str on the
API, bytes on disk: UTF-8 with surrogateescape both ways, so any byte string survives),
and the guard that makes a read-only mount refuse every change before it starts.

Pure: no state."""
from __future__ import annotations

import errno
import functools
from typing import Any, Callable, NamedTuple, TypeVar

from .layout import FsError

F = TypeVar("F", bound=Callable[..., Any])


def _mutates(method: F) -> F:
    """An operation that changes the volume: EROFS, before anything, on a read-only mount."""
    @functools.wraps(method)
    def check(self: Any, *args: Any, **kw: Any) -> Any:
        if self.readonly:
            raise FsError(errno.EROFS, f"{method.__name__}: mounted read-only")
        return method(self, *args, **kw)
    return check  # type: ignore[return-value]


class Stat(NamedTuple):
    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    atime: int
    mtime: int
    ctime: int
    blocks: int         # 512-byte units, as st_blocks
    rdev: int


class StatFs(NamedTuple):
    bsize: int
    blocks: int
    bfree: int
    bavail: int
    files: int
    ffree: int
    namelen: int


def _b(name: str | bytes) -> bytes:
    return name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")


def _s(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")
