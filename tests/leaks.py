"""What a test leaves behind: processes, socket files, memfds, shared-memory segments.

`tests/conftest.py` runs `Snapshot.take()` before every test and `snapshot.left(...)` after
it; the test fails (at tear-down) if anything it started is still there. "Started by the
test" means: a process that did not exist before it and is our descendant or names a run
directory in its command line (a detached `l4run boot` and its zygote-forked tasks do),
unless it belongs to a system that was already up before the test (a module-scoped fixture's
system: its run directory is named by a process that existed before) or one a module
declared `shared` (started lazily by its first test, kept for the next ones). Socket files are
checked under the test's own `tmp_path`; descriptors of kernel frames (`memfd:l4py-ram-…`)
in this process (a module fixture's HAL RAM, mapped by Python's mmap, keeps a descriptor
until the fixture ends, and System.close checks it then); `/dev/shm`
entries with "l4" in their name anywhere.
"""
from __future__ import annotations

import os
import re
import tempfile
import time
from typing import NamedTuple

import psutil

from kernel.user.testing import _memfds, _shm

RUN_DIR_RE = re.compile(r"(?:--run-dir[= ]|--cleanup |L4_KERNEL=(?:ipc://)?)(\S+?)(?:/kernel\.sock)?(?:\s|$)")
FRAME_FD = "/memfd:l4py-ram-"   # a kernel frame (a module's HAL rig RAM is its fixture's)
TMP_SYSTEM_RE = re.compile(r"/tmp/l4py-[A-Za-z0-9_]+")


def _text(p: psutil.Process, environ: bool) -> str:
    try:
        text = " ".join(p.cmdline())
        if environ:
            text += " " + " ".join(f"{k}={v}" for k, v in p.environ().items())
        return text
    except (psutil.Error, OSError):
        return ""


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _run_dirs(text: str) -> set[str]:
    dirs = {os.path.dirname(m) if m.endswith(".sock") else m for m in RUN_DIR_RE.findall(text)}
    return {d.rstrip("/") for d in dirs} | set(TMP_SYSTEM_RE.findall(text))


SHARED: set[str] = set()    # run directories of systems a test module shares across its tests


def shared(run_dir: str) -> None:
    """Declare the system in `run_dir` one that outlives the test that started it (a module
    keeps it for its later tests and checks its clean-up itself, then calls `unshared`)."""
    SHARED.add(run_dir.rstrip("/"))


def unshared(run_dir: str) -> None:
    SHARED.discard(run_dir.rstrip("/"))


class Snapshot(NamedTuple):
    pids: set[int]
    run_dirs: set[str]          # directories of systems that were up before the test
    memfds: set[str]
    shm: set[str]
    tmp_mode: int               # /tmp's mode bits (1777): no test may change them

    @classmethod
    def take(cls, basetemp: str) -> "Snapshot":
        pids, dirs = set(), set()
        for p in _candidates(basetemp):
            pids.add(p.pid)
            dirs |= _run_dirs(_text(p, environ=True))
        return cls(pids, dirs, _memfds(), _shm(),
                   os.stat(tempfile.gettempdir()).st_mode & 0o7777)

    def left(self, basetemp: str, tmp_path: str | None, wait_s: float = 10.0) -> list[str]:
        deadline = time.monotonic() + wait_s
        while True:
            procs = self._new_processes(basetemp)
            if not procs or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        out = [f"process {p.pid} ({_text(p, environ=False)[:100]})" for p in procs]
        if tmp_path and os.path.isdir(tmp_path):
            for root, _dirs, files in os.walk(tmp_path):
                out += [f"socket {os.path.join(root, f)}" for f in files if f.endswith(".sock")]
        out += sorted(f for f in _memfds() - self.memfds if FRAME_FD in f)
        tmp_mode = os.stat(tempfile.gettempdir()).st_mode & 0o7777
        if tmp_mode != self.tmp_mode:         # a test that changed /tmp breaks the others
            os.chmod(tempfile.gettempdir(), self.tmp_mode)
            out.append(f"the mode of {tempfile.gettempdir()}: {self.tmp_mode:o} -> "
                       f"{tmp_mode:o} (put back)")
        out += [f"/dev/shm/{f}" for f in sorted(_shm() - self.shm)]
        return out

    def _new_processes(self, basetemp: str) -> list[psutil.Process]:
        out = []
        for p in _candidates(basetemp):
            if p.pid in self.pids or not _alive(p):
                continue
            if _run_dirs(_text(p, environ=True)) & (self.run_dirs | SHARED):
                continue                      # a task of a system that was up before, or shared
            out.append(p)
        return out


def _candidates(basetemp: str) -> list[psutil.Process]:
    """Our live descendants, and processes naming this session's temporary directory in
    their command line (not /tmp/l4py-*: other test sessions may run beside us)."""
    me = psutil.Process()
    found = {p.pid: p for p in me.children(recursive=True) if _alive(p)}
    for p in psutil.process_iter(["cmdline"]):
        text = " ".join(p.info["cmdline"] or [])
        if p.pid not in found and p.pid != me.pid and basetemp in text and _alive(p):
            found[p.pid] = p
    return list(found.values())
