"""Hybrid processes, the personality's part: who may make L4 calls, and state D meanwhile.

Mechanism (paper §4.1; docs/L4LINUX.md "Hybrid processes"; the kernel's part is
kernel/core/hybrid.py). A Linux program makes L4 calls through the reserved system-call
numbers `abi.LinuxL4` (servers/l4linux/include/l4py.h); they trap like every call and
arrive here as LINUX calls:
- `CAP(name)`: the handle of capability `name`, if the policy grants it to the program
  (-EPERM if not). A handle is a slot of the process's own L4 task: `HANDLE_BASE` + the
  name's index among the capabilities the personality holds for Linux processes.
- `CALL`, `WAIT`, `REPLY_WAIT` (a handle and a message descriptor), `REPLY`: checked here
  (the handle is a granted one, else -EPERM), the capability mapped into the process's task
  (TASK_MAP, INVOKE and WRITE at most: WRITE lets the kernel bind a gate the program
  serves), the process marked UNINTERRUPTIBLE (`Process.l4call`: state D in /proc, so
  `ps` shows it), and the LINUX call answered `LinuxVerdict.L4`: the kernel makes the L4
  call as the process's own thread. We never wait for it: other processes are served
  meanwhile. The completion (`Proto.LINUX_L4`, `done`) makes the process runnable again and
  answers its trapped call with the kernel's result.

The policy (`--hybrid PROGRAM=NAME,NAME...`, from the image's `[linux]` `hybrid` table)
grants capability names to programs by the path of the ELF file they run (the file that
path names now is the very inode the process runs, `Process.elf`): a fork child keeps its
parent's grants, execve takes the new program's; a copy or a link elsewhere of a granted
program is not granted, a hard link is the same file.
A name must be one of the personality's own capabilities (`l4.caps`, the image's `[linux]`
`l4caps`); one that is not is reported at start and never granted.

Ownership: the personality's single serving thread.
"""
from __future__ import annotations

import errno
import sys
from typing import TYPE_CHECKING, Any

from kernel.abi import LinuxL4, Rights
from kernel.user.client import Message
from kernel.user.errors import Busy, L4Error

from .syscalls import L4, sys as syscall

from .fs import FsError

if TYPE_CHECKING:
    from .fs import FileSystem
    from .process import Process
    from .server import Personality

HANDLE_BASE = 64                   # first slot of granted capabilities in a Linux task
MAX_NAME = 64
MAPPED_RIGHTS = Rights.INVOKE | Rights.WRITE


class Policy:
    """Which program may use which of the personality's capabilities."""

    def __init__(self, held: dict[str, int], grants: dict[bytes, list[str]]) -> None:
        self.held = held                              # name -> our slot
        self.names = sorted(held)                     # handle = HANDLE_BASE + index
        self.grants: dict[bytes, frozenset[str]] = {}
        for program, names in grants.items():
            missing = [n for n in names if n not in held]
            if missing:
                print(f"[l4linux] hybrid: {program.decode(errors='replace')}: no capability "
                      f"{', '.join(missing)} to grant (not in [linux] l4caps)",
                      file=sys.stderr, flush=True)
            self.grants[program] = frozenset(n for n in names if n in held)

    def granted(self, fs: "FileSystem", p: "Process") -> frozenset[str]:
        """The names granted to the program `p` runs: the policy's paths are looked up
        now, and the one that is the very file `p` runs (its inode) counts."""
        for program, names in self.grants.items():
            try:
                if p.elf is not None and fs.walk(program, fs.root) is p.elf:
                    return names
            except FsError:
                continue
        return frozenset()

    def handle_of(self, name: str) -> int | None:
        return HANDLE_BASE + self.names.index(name) if name in self.held else None

    def name_of(self, handle: int) -> str | None:
        i = handle - HANDLE_BASE
        return self.names[i] if 0 <= i < len(self.names) else None


def parse_args(args: list[str]) -> dict[bytes, list[str]]:
    """`--hybrid PROGRAM=NAME,NAME` (repeatable) -> {PROGRAM: [NAME, ...]}."""
    out: dict[bytes, list[str]] = {}
    for i, a in enumerate(args[:-1]):
        if a == "--hybrid":
            program, _, names = args[i + 1].partition("=")
            out.setdefault(program.encode(), []).extend(n for n in names.split(",") if n)
    return out


def _mapped(px: "Personality", p: "Process", name: str) -> bool:
    """Capability `name` is in `p`'s task at its handle (mapped now if it was not)."""
    if name in p.l4mapped:
        return True
    handle = px.hybrid.handle_of(name)
    assert handle is not None
    try:
        px.l4.task_map(p.slot, px.hybrid.held[name], handle, MAPPED_RIGHTS)
    except Busy:
        pass                             # there already (mapped before an execve)
    except L4Error as e:
        print(f"[l4linux] hybrid: mapping '{name}' into {p.pid} failed: {e}", file=sys.stderr,
              flush=True)
        return False
    p.l4mapped.add(name)
    return True


@syscall(LinuxL4.CAP)
def sys_l4_cap(px: "Personality", p: "Process", a: list[int]) -> Any:
    name = px.cstr(p, a[0])[:MAX_NAME].decode(errors="replace")
    if name not in px.hybrid.granted(px.fs, p):
        return -errno.EPERM
    handle = px.hybrid.handle_of(name)
    return handle if handle is not None and _mapped(px, p, name) else -errno.EPERM


@syscall(LinuxL4.CALL, LinuxL4.WAIT, LinuxL4.REPLY_WAIT, LinuxL4.REPLY)
def sys_l4_call(px: "Personality", p: "Process", a: list[int]) -> Any:
    granted = px.hybrid.granted(px.fs, p)
    if px.nr != LinuxL4.REPLY:
        name = px.hybrid.name_of(a[0])
        if name is None or name not in granted:
            return -errno.EPERM
        if not _mapped(px, p, name):
            return -errno.EPERM
    elif not granted:
        return -errno.EPERM
    p.l4call = px.nr                     # UNINTERRUPTIBLE until the completion
    return L4


def done(px: "Personality", msg: Message) -> None:
    """A hybrid call is complete: the process runs again; its trapped call returns."""
    body = msg.body()
    p = px.procs.by_task.get(body.get("task_id"))
    if p is not None:
        p.l4call = 0
    value = body.get("value")
    px._answer(msg.reply, value if type(value) is int else -errno.EIO)
