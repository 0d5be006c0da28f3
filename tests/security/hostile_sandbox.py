"""A hostile task for the sandbox tests: it tries every host-level attack and reports.

`attack(l4, PLAN)` is an ordinary L4 task (attached to a booted system by
tests/security/test_sandbox.py). PLAN is JSON: {"victims": {name: pid}, "tcp": port,
"udp": port, "run_dir": dir, "victim_file": path}. Each attack is tried once and its
outcome recorded as "ok" or "refused: ERRNO"; the task prints one line
`REPORT {json}` to its log (stdout) and then waits to be ended. It undoes what it can when an attack
succeeds (a stopped process is continued, a renamed file put back), so that the negative
controls — the same attacks with a protection switched off — leave the system running.

Nothing here is clever: each attack is the plain system call a malicious task would make.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import socket
import sys
import time
from typing import Any, Callable

_libc = ctypes.CDLL(None, use_errno=True)
PTRACE_SEIZE = 0x4206


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def _try(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except OSError as e:
        return f"refused: {errno.errorcode.get(e.errno or 0, e.errno)}"
    return "ok"


def _check(rc: int) -> None:
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _vm_read(pid: int) -> None:
    """process_vm_readv of an address our forked siblings share with us (fork mode): the
    bytes of a str every task inherited from the zygote. EFAULT would mean the access check
    passed (exec mode: other layout), so it counts as a success too."""
    probe = "kernel.user.client"
    buf = ctypes.create_string_buffer(64)
    local = _Iovec(ctypes.cast(buf, ctypes.c_void_p), 64)
    remote = _Iovec(id(probe), 64)
    n = _libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if n < 0 and ctypes.get_errno() != errno.EFAULT:
        _check(n)


def _signal(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)
    os.kill(pid, signal.SIGCONT)       # it worked: undo at once


def _ptrace(pid: int) -> None:
    """PTRACE_SEIZE from a child that exits at once: the victim is detached again before
    anything could stop it (a tracer that lingers would catch its SIGSTOP and hold it)."""
    child = os.fork()
    if child == 0:
        rc = _libc.ptrace(PTRACE_SEIZE, pid, None, None)
        os._exit(0 if rc == 0 else ctypes.get_errno() or 255)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise OSError(code, os.strerror(code))


def _mem(pid: int) -> None:
    """Read /proc/PID/mem where a str every forked task inherited lies (see _vm_read); EIO
    would mean the open passed the access check (exec mode: other layout): a success too."""
    probe = "kernel.user.client"
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    try:
        os.pread(fd, 16, id(probe))
    except OSError as e:
        if e.errno != errno.EIO:
            raise
    finally:
        os.close(fd)


def _read(path: str) -> None:
    with open(path, "rb") as f:
        f.read(16)


def _write(path: str) -> None:
    with open(path, "w") as f:
        f.write("hostile\n")


def _rename(path: str) -> None:
    os.rename(path, path + ".moved")
    os.rename(path + ".moved", path)   # put it back


def _replace(path: str) -> None:
    mine = os.path.join(os.environ.get("TMPDIR", "/tmp"), "evil")
    _write(mine)
    os.replace(mine, path)


def _tcp_connect(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        s.connect(("127.0.0.1", port))


def _tcp_bind() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()


def _udp(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"hostile", ("127.0.0.1", port))


def _netlink() -> None:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()


def _status() -> dict[str, str]:
    with open("/proc/self/status") as f:
        rows = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    return {k: rows.get(k, "?").strip() for k in
            ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")}


def _proc_environ() -> list[str]:
    with open("/proc/self/environ", "rb") as f:
        return sorted(e.split(b"=", 1)[0].decode() for e in f.read().split(b"\0") if e)


def attack(l4: Any, plan_json: str) -> int:
    plan = json.loads(plan_json)
    run_dir, victims = plan["run_dir"], plan["victims"]
    out: dict[str, Any] = {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(),
                           "groups": os.getgroups(), "status": _status(),
                           "environ": sorted(os.environ), "proc_environ": _proc_environ(),
                           "argv": sys.argv, "attacks": {}}
    a = out["attacks"]
    for name, pid in victims.items():
        a[f"mem:{name}"] = _try(lambda: _mem(pid))
        a[f"environ:{name}"] = _try(lambda: _read(f"/proc/{pid}/environ"))
        a[f"fds:{name}"] = _try(lambda: os.listdir(f"/proc/{pid}/fd"))
        a[f"vm_readv:{name}"] = _try(lambda: _vm_read(pid))
        a[f"ptrace:{name}"] = _try(lambda: _ptrace(pid))
        a[f"signal:{name}"] = _try(lambda: _signal(pid))
    a["write:run_dir"] = _try(lambda: _write(os.path.join(run_dir, "hostile.txt")))
    a["write:tmp"] = _try(lambda: _write(f"/tmp/l4py-hostile-{os.getpid()}"))
    a["write:other_scratch"] = _try(lambda: _write(os.path.join(run_dir, "scratch", "hello", "x")))
    a["write:own_scratch"] = _try(lambda: _write(os.path.join(os.environ["TMPDIR"], "mine")))
    a["read:other_log"] = _try(lambda: _read(os.path.join(run_dir, "logs", "hello.log")))
    a["rename:run_dir"] = _try(lambda: _rename(plan["victim_file"]))
    a["replace:run_dir"] = _try(lambda: _replace(plan["victim_file"]))
    a["tcp_connect"] = _try(lambda: _tcp_connect(plan["tcp"]))
    a["tcp_bind"] = _try(_tcp_bind)
    a["udp"] = _try(lambda: _udp(plan["udp"]))
    a["netlink"] = _try(_netlink)
    a["hello_call"] = "ok" if l4.caps.get("launcher") else "no launcher cap"   # still an L4 task
    print("REPORT " + json.dumps(out), flush=True)
    while True:                # stay (in `ps`) until the system goes down
        time.sleep(1)
