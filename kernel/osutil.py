"""Small Linux helpers shared by the kernel, the task library and the launcher."""
from __future__ import annotations

import ctypes
import gc
import importlib
import os
import signal
import socket
import struct
from typing import Any, NamedTuple

_PR_SET_PDEATHSIG = 1


def load_compiled(module: str, env: str, what: str) -> tuple[Any, str]:
    """An optional compiled module (`setup.py` builds it when it can): (the module, "") when
    it imports and its `ERROR` is None, else (None, why not): `env`=python forced the Python
    path, it is not built, or it said what it misses. The kernel's fast path
    (kernel/core/fastpath.py) and the task library's call path (kernel/user/client.py) load
    theirs through here; `what` names it in the reason."""
    if os.environ.get(env, "") == "python":
        return None, f"{env}=python"
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        return None, f"{what} is not built ({e})"
    if mod.ERROR is not None:
        return None, str(mod.ERROR)
    return mod, ""


def freeze_heap(collect: bool = True) -> None:
    """Move every object alive now into the collector's permanent generation, once a
    long-lived process has started (after `collect`ing what is garbage already): its full
    collections then scan only what it made since, not its start-up heap — modules,
    functions, tables. Measured before: 12-19 ms per full pass in the kernel, the root task
    and every task forked from the spawner (which inherits the spawner's heap), each pass
    stalling all the IPC that process serves. Garbage made later is collected as before."""
    if collect:
        gc.collect()
    gc.freeze()


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send `sig` to this process when its parent exits (prctl PDEATHSIG).

    If the parent is already gone (we were re-parented before the call), exit now."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != parent or parent == 1:
        os._exit(1)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Peer(NamedTuple):
    """Who is at the other end of a Unix socket, as Linux recorded it at connect()."""
    pid: int
    uid: int
    gid: int


_UCRED = struct.Struct("3i")          # struct ucred {pid_t pid; uid_t uid; gid_t gid;}


def peer_cred(fd: int) -> Peer | None:
    """SO_PEERCRED of the connected Unix socket `fd`: set by the kernel when the peer
    connected, so no process can claim another's. None if `fd` is not one (a tcp socket,
    a closed fd). `fd` stays open and untouched: we read through a duplicate."""
    if fd < 0:
        return None
    try:
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    try:
        if s.family != socket.AF_UNIX:
            return None
        raw = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return None
    finally:
        s.close()
    peer = Peer(*_UCRED.unpack(raw))
    return peer if peer.pid > 0 else None


SCHED_DEADLINE = 6       # Linux's policy number (os has no name for it)
REALTIME_POLICIES = {os.SCHED_FIFO: "SCHED_FIFO", os.SCHED_RR: "SCHED_RR",
                     SCHED_DEADLINE: "SCHED_DEADLINE"}
_RESET_ON_FORK = 0x40000000     # or'ed into the policy sched_getscheduler answers


def realtime_policy(tid: int = 0) -> str | None:
    """The real-time host policy of thread `tid` (0: the calling one), None if it has none
    or is gone."""
    try:
        policy = os.sched_getscheduler(tid) & ~_RESET_ON_FORK
    except OSError:
        return None
    return REALTIME_POLICIES.get(policy)


def realtime_thread(pid: int) -> tuple[int, str] | None:
    """A thread of process `pid` under a real-time host policy, as (tid, policy name);
    None if it has none (or is gone). Only a privileged process (the CPU reservation
    manager, servers/rt) can give a thread such a policy."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for name in tids:
        policy = realtime_policy(int(name)) if name.isdigit() else None
        if policy is not None:
            return int(name), policy
    return None


def frame_peer(frame: Any) -> Peer | None:
    """The peer of the `ipc://` connection a ZeroMQ frame (`recv(copy=False)`) came on,
    through the frame's source fd (ZMQ_SRCFD); None when libzmq does not say."""
    import zmq

    try:
        return peer_cred(int(frame.get(zmq.SRCFD)))
    except (zmq.ZMQError, ValueError, TypeError):
        return None


# mmap at a chosen address: Python's mmap module cannot, and both RAM views (the kernel's,
# kernel/core/frames.py, and a task's, kernel/user/vm.py) place frame n at base + n * 4 KiB.
MAP_SHARED, MAP_PRIVATE, MAP_FIXED, MAP_ANON, MAP_NORESERVE = 0x01, 0x02, 0x10, 0x20, 0x4000
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_MAP_FAILED = ctypes.c_void_p(-1).value


def mmap_at(addr: int | None, size: int, prot: int, flags: int, fd: int) -> int:
    """mmap(2) of `size` bytes of `fd` (-1: anonymous) at `addr` (None: anywhere); the
    address. Raises OSError."""
    r = _libc.mmap(addr, size, prot, flags, fd, 0)
    if r is None or r == _MAP_FAILED:
        e = ctypes.get_errno()
        raise OSError(e, f"mmap: {os.strerror(e)}")
    return int(r)


def munmap(addr: int, size: int) -> None:
    _libc.munmap(addr, size)


BUSY_MS = 30_000     # how long a control socket that accepts (someone is there) is waited for
RECHECK_MS = 500     # ... checking this often that it still does


def listening(path: str) -> bool:
    """Whether a process listens on the Unix socket `path`: a stale socket file refuses the
    connection at once; a live process's accepts it even while its loop is busy (ZeroMQ's
    I/O thread accepts), so "busy" and "gone" can be told apart before waiting."""
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
            return True
        except OSError:
            return False


def request_once(path: str, data: bytes, timeout_ms: int | None = None) -> bytes | None:
    """One request/answer over a ZeroMQ REQ socket to `ipc://path` (a control socket).

    Answers None when nobody answers within `timeout_ms`. Without `timeout_ms`: None at
    once if nobody listens on `path` (a stale socket), else waits up to BUSY_MS for a busy
    listener, and None as soon as it stops listening (checked every RECHECK_MS: a process
    that died while we waited). The socket never lingers."""
    import zmq

    busy = timeout_ms is None
    if busy and not listening(path):
        return None
    left = BUSY_MS if timeout_ms is None else timeout_ms
    step = RECHECK_MS if busy else left
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    s = ctx.socket(zmq.REQ)
    s.linger = 0
    try:
        s.connect("ipc://" + path)
        s.send(data)
        while not s.poll(min(left, step)):
            left -= step
            if left <= 0 or not listening(path):
                return None
        return s.recv()
    finally:
        s.close(0)
