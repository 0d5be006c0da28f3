"""Hostile memory tasks for tests/security/test_memory.py.

`keeper(l4, how)` is a memory agent (tests.memory.agents) that does not play fair with the
frames it is sent: every descriptor that arrives on its memory channel is duplicated and
mapped a second time outside its VM's view before the library sees it — `how` = "fd" keeps
the duplicate descriptor too, "map" only the extra mapping (it re-mmapped the fd it got).
Its library still acknowledges every shootdown, so only the kernel's own check of
/proc/PID/maps and /proc/PID/fd can tell. Extra ops: `kept` (what it still reads through
its private mappings), `write_ro` (every way it knows to write a page it was given
read-only), `reopen_unprivileged` (a child under another uid reopens its descriptors
read-write through /proc/self/fd).

`no_memory(l4, kernel_pid, out)` is a task that tries to get RAM without memory rights and
writes what happened to the file `out` as JSON.
"""
from __future__ import annotations

import ctypes
import fcntl
import json
import mmap
import os
import socket
from typing import Any

from kernel.abi import MEM_CHANNEL, MEM_TOKEN_BYTES, PAGE_SIZE, SLOT_TASK, Rights
from kernel.user import vm as vm_module
from kernel.user.errors import L4Error
from tests.memory import agents

_kept: list[tuple[int | None, mmap.mmap, bool]] = []    # (fd or None, mapping, writable fd)
_libc = ctypes.CDLL(None, use_errno=True)


def _steal(real: Any) -> Any:
    def recv_fds(sock: Any, bufsize: int, maxfds: int, flags: int = 0) -> Any:
        data, fds, fl, addr = real(sock, bufsize, maxfds, flags)
        for fd in fds:
            if "l4py-ram-" not in os.readlink(f"/proc/self/fd/{fd}"):
                continue                     # our control page: nothing to steal
            dup = os.dup(fd)
            rw = fcntl.fcntl(dup, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR
            try:
                m = mmap.mmap(dup, PAGE_SIZE, mmap.MAP_SHARED,
                              mmap.PROT_READ | (mmap.PROT_WRITE if rw else 0))
            except OSError:
                os.close(dup)
                continue
            keep_fd = _HOW[0] == "fd"
            if not keep_fd:
                os.close(dup)
            _kept.append((dup if keep_fd else None, m, rw))
        return data, fds, fl, addr
    return recv_fds


_HOW = ["fd"]


def _kept_op(l4: Any, vm: Any, b: dict) -> Any:
    return [bytes(m[:b.get("n", 16)]) for _, m, _ in _kept]


def _write_ro(l4: Any, vm: Any, b: dict) -> Any:
    """Try to write the read-only page at b["addr"]; answers how each attempt ended."""
    out: dict[str, str] = {}
    off = vm.translate(b["addr"])                        # faults it in, read-only
    page = vm.att.base + (off & ~(PAGE_SIZE - 1))
    r = _libc.mprotect(ctypes.c_void_p(page), PAGE_SIZE, mmap.PROT_READ | mmap.PROT_WRITE)
    out["mprotect"] = "ok" if r == 0 else os.strerror(ctypes.get_errno())
    for i, (fd, _m, rw) in enumerate(_kept):
        if fd is None or rw:
            continue
        try:
            m = mmap.mmap(fd, PAGE_SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            m[:4] = b"EVIL"
            out[f"mmap_rw_{i}"] = "ok"
        except OSError as e:
            out[f"mmap_rw_{i}"] = e.strerror or str(e)
    return out


def _reopen_unprivileged(l4: Any, vm: Any, b: dict) -> Any:
    """A child under uid 65534 reopens each kept read-only descriptor O_RDWR."""
    fds = [fd for fd, _m, rw in _kept if fd is not None and not rw]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        res = []
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            for fd in fds:
                try:
                    os.close(os.open(f"/proc/self/fd/{fd}", os.O_RDWR))
                    res.append("ok")
                except OSError as e:
                    res.append(e.strerror or str(e))
        finally:
            os.write(w, json.dumps(res).encode())
            os._exit(0)
    os.close(w)
    data = os.read(r, 65536)
    os.waitpid(pid, 0)
    os.close(r)
    return json.loads(data or b"[]")


def keeper(l4: Any, how: str = "fd") -> int:
    _HOW[0] = how
    vm_module.socket.recv_fds = _steal(socket.recv_fds)   # type: ignore[attr-defined]
    agents.EXTRA.update(kept=_kept_op, write_ro=_write_ro, reopen_unprivileged=_reopen_unprivileged)
    return agents.agent(l4)


def ram_fds(pid: int) -> list[str]:
    """The descriptors of process `pid` that name RAM (the frames' memfds, or any whole-RAM
    file): what a task, or the kernel, could hand on or reopen."""
    out = []
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                if "l4py-ram" in os.readlink(f"/proc/{pid}/fd/{name}"):
                    out.append(name)
            except OSError:
                pass
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def no_memory(l4: Any, kernel_pid: str, out: str) -> int:
    """Try every way to RAM a task with no memory rights has; write the results to `out`."""
    res: dict[str, Any] = {}
    # The kernel's descriptors: is any of them RAM?
    res["kernel_ram_fds"] = ram_fds(int(kernel_pid))
    # MEM_ATTACH with our own task capability reduced to INVOKE, and with none at all.
    slot = l4.cap_derive(SLOT_TASK, int(Rights.INVOKE))
    for what, task in (("invoke_only", slot), ("empty_slot", 200)):
        try:
            l4.mem_attach(task=task)
            res[what] = "attached"
        except L4Error as e:
            res[what] = e.err.name
    if "other" in l4.caps:               # another task's capability, with every right
        try:
            l4.mem_attach(task=l4.caps["other"])
            res["other_task"] = "attached"
        except L4Error as e:
            res["other_task"] = e.err.name
    # A made-up token on the memory channel.
    path = os.path.join(os.path.dirname(l4.kernel_sock), MEM_CHANNEL)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(5)
    s.connect(path)
    s.send(os.urandom(MEM_TOKEN_BYTES))
    try:
        res["guessed_token"] = "answered" if s.recv(64) else "closed"
    except OSError as e:
        res["guessed_token"] = e.strerror or "closed"
    s.close()
    # Our own token (we may attach: SLOT_TASK has WRITE), presented by another process
    # first: refused; then by us: accepted (the control page comes).
    info = l4.mem_attach()
    res["thief"] = _present(info["channel"], info["token"], in_child=True)
    res["owner"] = _present(info["channel"], info["token"], in_child=False)
    with open(out, "w") as f:
        json.dump(res, f)
    return 0


def _present(path: str, token: bytes, in_child: bool) -> str:
    """Connect to the memory channel and send `token`: "accepted" (a message with a
    descriptor came) or how it ended. `in_child`: from a forked child process."""
    def attempt() -> str:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.settimeout(5)
        s.connect(path)
        s.send(token)
        try:
            data, fds, _, _ = socket.recv_fds(s, 64, 4)
        except OSError as e:
            return e.strerror or "error"
        finally:
            s.close()
        for fd in fds:
            os.close(fd)
        return "accepted" if fds else "closed"
    if not in_child:
        return attempt()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, attempt().encode())
        finally:
            os._exit(0)
    os.close(w)
    got = os.read(r, 64).decode()
    os.waitpid(pid, 0)
    os.close(r)
    return got


def as_nobody(fn: Any) -> Any:
    """`fn()`'s JSON-able result, computed in a forked child running as uid/gid 65534 (an
    unprivileged stranger). Skips the test when we are not root."""
    import pytest
    if os.geteuid() != 0:
        pytest.skip("running a process under another uid needs root")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # the child: never back into pytest
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            out = {"ok": fn()}
        except BaseException as e:                 # noqa: BLE001 - reported to the parent
            out = {"error": f"{type(e).__name__}: {e}"}
        os.write(w, json.dumps(out, default=str).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        got = json.loads(f.read() or b"{}")
    os.waitpid(pid, 0)
    assert "ok" in got, got
    return got["ok"]
