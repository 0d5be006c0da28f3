"""The task sandbox: what the host enforces around every task process the launcher starts.

Mechanism. The launcher decides, per task, a *plan* (`plan()`: a JSON-able dict the spawn
request carries); the zygote's child, still root, carries it out with `enter()` just before
the task's code runs (fork mode) or before `execve` (exec mode). In order:

1. reach: a mount namespace in which every directory the task must pass through but cannot
   (a 0700 ancestor such as /root or pytest's /tmp/pytest-of-root) is covered by a 0711
   tmpfs holding only the needed entries, bound back. Only when such a directory exists;
   made once by the zygote (`before_fork`) and joined by each child (setns).
2. scratch: RUN_DIR/scratch/TASK made (by the zygote, before the fork), owned by the
   task's uid, mode 0700.
3. capabilities: every capability dropped from the bounding set (PR_CAPBSET_DROP, while we
   still hold CAP_SETPCAP); setgroups([]), setresgid, setresuid to the task's own uid/gid,
   which empties the permitted, effective and ambient sets.
4. PR_SET_NO_NEW_PRIVS: nothing the task executes can gain privileges.
5. Landlock: the file system is read-only (read + execute) below the interpreter, the
   library directories, the project and the task's module directories, /etc, /dev/null and
   the task's own /proc/PID; read-write only in its scratch directory; nothing may be made,
   removed, renamed or linked anywhere else (the run directory included). TCP bind/connect
   denied unless `network`. Signals and abstract Unix sockets scoped to the task itself.
6. seccomp: a small BPF filter (hand-written, `_filter`) for what Landlock does not cover:
   socket() of anything but AF_UNIX and TCP unless `network`; ptrace, process_vm_readv and
   writev, kexec, mount and the new mount API, bpf, perf_event_open, modules, namespaces
   (unshare, setns, clone with CLONE_NEW*; clone3 answers ENOSYS so libc falls back to clone),
   keyrings, userfaultfd, io_uring -> EPERM (mount and umount2 pass for the L⁴Linux
   personality, `MOUNT_PASSERS`: its Linux processes' calls must reach its trap; so do
   their UDP, ICMP and netlink sockets — and since a filter cannot tell the personality from
   the processes it forks, the personality without `network` runs in a network namespace
   of its own (step 1b: only a loopback, down), where such a socket of its own reaches
   nothing: its network is its ORe session, through the kernel).

Contract: `enter()` either applies every step the plan asks for or raises (the child then
exits before any task code runs): a task never runs half-sandboxed by accident. Which
protections the host offers is decided once at boot by `probe()` and reported (l4run boot,
ps, status, launcher.json) under stable keys (`KEYS`); a missing one is off with its reason,
and the system still boots.

Ownership: the launcher (privileged) builds plans and the report in its main thread; the
zygote child runs `enter()` alone, after fork. This module must not import kernel.core.
"""
from __future__ import annotations

import ctypes
import fcntl
import functools
import json
import os
import platform
import stat
import struct
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from kernel.abi import RT_SOCK

# RAM reaches a task as per-frame memfds over its memory channel (RUN_DIR/mem.sock, kernel/
# core/frames.py), only for the frames its page table maps: a task that attaches RAM needs
# no privilege and is sandboxed like every task. True would run such tasks as root again
# (the way it was while RAM was one memfd opened through /proc/<kernel pid>/fd).
RAM_NEEDS_ROOT = False
RAM_REASON = "not isolated: attaches RAM through the kernel's memfd"
# Privileged: the HAL (the hardware) and the CPU reservation manager (servers/rt: it sets
# its clients' host threads' scheduling policy, which needs CAP_SYS_NICE on the host).
PRIVILEGED_RUNS = {"launcher.devices:hal_task": "privileged: the HAL (the hardware)",
                   "servers.rt.server:main": "privileged: the CPU reservation manager "
                                             "(sets host scheduling policies)"}
RAM_RUNS = {"servers.sigma0.server:main", "servers.moe.server:main"}
UID_LOCKS = "/run/l4py/uids"      # one flock per uid in use, held by the launcher that owns it
OFF_ENV = "L4PY_SANDBOX_OFF"      # comma-separated KEYS to switch off (the attack suite's controls)

# The protections, by stable key (launcher.json, `l4run status --json`, `ps`).
KEYS = ("uid", "capabilities", "no_new_privs", "landlock_fs", "landlock_net", "landlock_scope",
        "seccomp", "environment", "secret_fd", "ram_tasks", "iommu")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

PR_CAPBSET_DROP = 24
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
CLONE_NEWNS = 0x20000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 4096, 0x4000, 1 << 18

# Landlock (include/uapi/linux/landlock.h); the three system calls have one number everywhere.
SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446
LL_EXECUTE, LL_WRITE_FILE, LL_READ_FILE, LL_READ_DIR = 1, 2, 4, 8
LL_TRUNCATE = 1 << 14
LL_NET_BIND_TCP, LL_NET_CONNECT_TCP = 1, 2
LL_SCOPE_ABSTRACT_UNIX, LL_SCOPE_SIGNAL = 1, 2
LL_READ = LL_EXECUTE | LL_READ_FILE | LL_READ_DIR
LL_FILE_RIGHTS = LL_EXECUTE | LL_WRITE_FILE | LL_READ_FILE | LL_TRUNCATE | (1 << 15)


def _errno_msg(what: str) -> OSError:
    e = ctypes.get_errno()
    return OSError(e, f"{what}: {os.strerror(e)}")


def landlock_abi() -> int:
    """The Landlock ABI version the kernel offers (0: none, or disabled)."""
    v = _libc.syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(0, int(v))


def _fs_rights(abi: int) -> int:
    """Every file-system right this ABI knows: all are handled, so all are denied unless a
    rule grants them (1: 13 rights, 2: +REFER, 3: +TRUNCATE, 5: +IOCTL_DEV)."""
    bits = (1 << 13) - 1
    bits |= (1 << 13) if abi >= 2 else 0
    bits |= (1 << 14) if abi >= 3 else 0
    bits |= (1 << 15) if abi >= 5 else 0
    return bits


# -- the report, once at boot --------------------------------------------------------------

def _entry(on: bool, why: str) -> dict[str, Any]:
    return {"on": on, "why": why}


def switched_off(key: str) -> bool:
    """Is protection `key` switched off by `OFF_ENV` (the attack suite's controls)?"""
    return key in {k.strip() for k in os.environ.get(OFF_ENV, "").split(",")}


def probe(uids: tuple[int, int]) -> dict[str, dict[str, Any]]:
    """Which protections this host gives tasks, each {"on": bool, "why": str}; `OFF_ENV`
    switches named ones off (for the attack suite's negative controls)."""
    off = {k.strip() for k in os.environ.get(OFF_ENV, "").split(",") if k.strip()}
    root = os.geteuid() == 0
    abi = landlock_abi()
    arch = platform.machine()
    rep = {
        "uid": _entry(root, f"each task runs as its own uid/gid from {uids[0]}..{uids[1]}"
                      if root else "the launcher is not root: tasks keep the operator's uid"),
        "capabilities": _entry(root, "bounding, permitted, effective and ambient sets empty"
                               if root else "the launcher is not root: nothing to drop"),
        "no_new_privs": _entry(True, "PR_SET_NO_NEW_PRIVS: no setuid or file capabilities"),
        "landlock_fs": _entry(abi >= 1, "read-only file system, writable scratch directory only"
                              if abi >= 1 else "this kernel has no Landlock (or it is disabled)"),
        "landlock_net": _entry(abi >= 4, "TCP bind/connect only with network = true"
                               if abi >= 4 else f"Landlock ABI {abi} < 4: TCP is not restricted"),
        "landlock_scope": _entry(abi >= 6, "signals and abstract Unix sockets scoped to the task "
                                 "(any Landlock domain also refuses ptrace of processes outside)"
                                 if abi >= 6 else f"Landlock ABI {abi} < 6: signals not scoped"),
        "seccomp": _entry(arch in _SYSCALLS, "BPF filter: UDP/raw/netlink sockets, ptrace, "
                          "process_vm_*, mount, bpf, namespaces... -> EPERM"
                          if arch in _SYSCALLS else f"no system-call table for {arch}"),
        "environment": _entry(True, "only the image's env, the L4 variables, PATH, PYTHONPATH"),
        "secret_fd": _entry(True, "the one-time secret arrives through an inherited pipe"),
        "iommu": _entry(True, "a device DMAs only into frames its driver's task maps "
                        "(dma_bind, MEM_DMA_CHECK per command)"),
        "ram_tasks": _entry(not RAM_NEEDS_ROOT, "tasks that attach RAM through the kernel's "
                            "memfd (memory, devices, sigma0, moe) run as root, unsandboxed"
                            if RAM_NEEDS_ROOT
                            else "tasks that attach RAM are sandboxed like every task"),
    }
    if not root:         # without root there is no uid switch, so no one-uid-per-task either
        rep["ram_tasks"] = _entry(False, "the launcher is not root")
    for k in off & set(rep):
        rep[k] = _entry(False, f"switched off by {OFF_ENV} (tests only)")
    return rep


def privilege(spec: Any) -> str | None:
    """Why task `spec` (a launcher.image.TaskSpec) is not sandboxed, or None if it is."""
    if spec.run in PRIVILEGED_RUNS:
        return PRIVILEGED_RUNS[spec.run]
    if RAM_NEEDS_ROOT and (spec.memory is not None or spec.devices or spec.run in RAM_RUNS
                           or "sigma0" in spec.services_used()):
        return RAM_REASON
    return None


# -- uids ----------------------------------------------------------------------------------

class UidPool:
    """Uids for tasks, one per task name for the launcher's lifetime (a restarted task keeps
    its uid and its scratch directory). A uid is taken with an flock on UID_LOCKS/UID, so
    systems running side by side never share one; Linux drops the locks with the launcher.
    Main thread only."""

    def __init__(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi
        self.by_name: dict[str, int] = {}
        self.locks: list[int] = []
        self.next = lo

    def uid(self, name: str) -> int:
        if name in self.by_name:
            return self.by_name[name]
        os.makedirs(UID_LOCKS, mode=0o700, exist_ok=True)
        while self.next <= self.hi:
            uid, self.next = self.next, self.next + 1
            fd = os.open(os.path.join(UID_LOCKS, str(uid)), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.locks.append(fd)
            self.by_name[name] = uid
            return uid
        raise OSError(f"no free task uid left in {self.lo}..{self.hi} ([system] uids)")

    def close(self) -> None:
        for fd in self.locks:
            os.close(fd)
        self.locks.clear()


# -- plans ---------------------------------------------------------------------------------

def read_roots(extra: Iterable[str]) -> list[str]:
    """What every sandboxed task may read (and execute): the interpreter, its libraries,
    sys.path (site-packages, the project), the system's libraries and /etc, plus `extra`.
    Computed once per `extra` for the launcher's life (a restart costs no file-system walk)."""
    return list(_read_roots(tuple(extra)))


@functools.lru_cache(maxsize=64)
def _read_roots(extra: tuple[str, ...]) -> tuple[str, ...]:
    cands = [sys.prefix, sys.base_prefix, sys.exec_prefix,
             os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))),
             "/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", *sys.path, *extra]
    out: list[str] = []
    for p in cands:
        if p and os.path.isdir(p):
            p = os.path.realpath(p)
            if not any(p == o or p.startswith(o.rstrip("/") + "/") for o in out):
                out = [o for o in out if not o.startswith(p.rstrip("/") + "/")] + [p]
    return tuple(sorted(out))


def closed_dirs(paths: Iterable[str]) -> list[list[Any]]:
    """Directories on the way to `paths` that others may not search (mode without o+x),
    top-down, each with the entries below it the task needs: [[dir, [name, ...]], ...].
    Cached like read_roots: the launcher's own directories do not change mode under it."""
    return [[d, list(names)] for d, names in _closed_dirs(tuple(paths))]


@functools.lru_cache(maxsize=64)
def _closed_dirs(paths: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    need: dict[str, set[str]] = {}
    for p in paths:
        p = os.path.realpath(p)
        parts = p.strip("/").split("/")
        for i in range(len(parts)):         # each ancestor, with the entry below it
            d = "/" + "/".join(parts[:i])
            try:
                mode = os.stat(d).st_mode
            except OSError:
                break
            if not mode & stat.S_IXOTH:
                need.setdefault(d, set()).add(parts[i])
    return tuple((d, tuple(sorted(need[d]))) for d in sorted(need, key=lambda d: (d.count("/"), d)))


def plan(spec: Any, uid: int | None, run_dir: str, reads: Sequence[str],
         report: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The sandbox of task `spec` under `uid` (None: keep ours), as the zygote child applies
    it. `reads`: the read roots (read_roots)."""
    on = {k: bool(v["on"]) for k, v in report.items()}
    scratch = os.path.join(run_dir, "scratch", spec.name)
    reach = [*reads, scratch, os.path.join(run_dir, "kernel.sock"),
             os.path.join(run_dir, RT_SOCK)]
    return {"uid": uid if on["uid"] else None, "scratch": scratch,
            "caps": on["capabilities"], "nnp": on["no_new_privs"], "read": list(reads),
            "landlock": on["landlock_fs"], "landlock_net": on["landlock_net"] and not spec.network,
            "scope": on["landlock_scope"], "seccomp": on["seccomp"], "network": spec.network,
            "mounts": spec.run in MOUNT_PASSERS,
            "reach": closed_dirs(reach) if on["uid"] else []}


# -- entering the sandbox (the zygote child, root, single-threaded) ----------------------------

_CAP_LAST: list[int] = []         # /proc/sys/kernel/cap_last_cap, read by prepare()


def prepare() -> None:
    """Do in the zygote, once, what every child would redo: build both seccomp filters, read
    the last capability number, resolve the libc functions (ctypes looks each up on first
    use). Forked children inherit it all; a spawn then costs only the system calls."""
    for network in (False, True):
        for mounts in (False, True):
            if platform.machine() in _SYSCALLS:
                _FILTERS[network, mounts] = _filter(network, platform.machine(), mounts)
    with open("/proc/sys/kernel/cap_last_cap") as f:
        _CAP_LAST[:] = [int(f.read())]
    for fn in ("prctl", "syscall", "mount", "unshare", "setns"):
        getattr(_libc, fn)


_SHARED: dict[str, int] = {}      # the zygote's mount namespaces, by reach list: an fd each


def before_fork(p: dict[str, Any]) -> None:
    """The zygote's part of plan `p`, before it forks: the scratch directory, and the mount
    namespace of step 1, made once per distinct reach list and kept (as an fd) for every
    later child, which joins it with setns: a private namespace per task would cost a copy
    of the mount table at spawn and its teardown at death, which delays the death notice."""
    _scratch(p["scratch"], p["uid"])
    if p["reach"]:
        key = json.dumps(p["reach"])
        if key not in _SHARED:
            _SHARED[key] = _make_namespace(p["reach"])
        p["reach_fd"] = _SHARED[key]


def _make_namespace(reach: list[list[Any]]) -> int:
    """A mount namespace with `reach` applied, made by a helper child; its fd."""
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r1)
            os.close(w2)
            _reach(reach)
            os.write(w1, b"k")
            os.read(r2, 1)             # hold the namespace until the parent has its fd
            code = 0
        finally:
            os._exit(code)
    os.close(w1)
    os.close(r2)
    try:
        if os.read(r1, 1) != b"k":
            raise OSError(f"could not prepare a mount namespace for {reach}")
        return os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(r1)
        os.close(w2)
        os.waitpid(pid, 0)


def enter(p: dict[str, Any]) -> None:
    """Apply plan `p` to this process (steps 1-6 of the module docstring; the zygote did
    `before_fork` first); raises on failure."""
    uid = p["uid"]
    if p.get("reach_fd") is not None:
        if _libc.setns(p["reach_fd"], CLONE_NEWNS) != 0:
            raise _errno_msg("setns(mount namespace)")
    elif p["reach"]:
        _reach(p["reach"])
    for fd in _SHARED.values():        # the task keeps no handle on any namespace
        os.close(fd)
    _SHARED.clear()
    if p.get("mounts") and not p["network"] and p["seccomp"]:
        # step 1b: the personality's host sockets (its filter passes UDP, ICMP and netlink
        # for its Linux processes' traps) reach only an empty network namespace
        if _libc.unshare(CLONE_NEWNET) != 0:
            raise _errno_msg("unshare(CLONE_NEWNET)")
    if uid is not None:
        _drop_privileges(uid, p["caps"])
    if p["nnp"] or p["landlock"] or p["seccomp"]:
        if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise _errno_msg("PR_SET_NO_NEW_PRIVS")
    if p["landlock"] or p["landlock_net"] or p["scope"]:
        _landlock(p["read"], p["scratch"], p["landlock"], p["landlock_net"], p["scope"])
    if p["seccomp"]:
        _seccomp(p["network"], bool(p.get("mounts")))


def _mount(src: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    if _libc.mount(enc(src), target.encode(), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        raise _errno_msg(f"mount {target}")


def _reach(closed: list[list[Any]]) -> None:
    """Make the closed directories passable in a mount namespace of our own: a 0711 tmpfs
    over each, holding only the needed entries, bind-mounted back from descriptors taken
    before the tmpfs hid them."""
    if _libc.unshare(CLONE_NEWNS) != 0:
        raise _errno_msg("unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)      # nothing we do here reaches the host
    for d, names in closed:
        fds = [(n, os.open(os.path.join(d, n), os.O_PATH)) for n in names
               if os.path.lexists(os.path.join(d, n))]
        _mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0711,size=64k")
        for n, fd in fds:
            target = os.path.join(d, n)
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                os.mkdir(target)
            else:
                os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o600))
            _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
            os.close(fd)


def _scratch(path: str, uid: int | None) -> None:
    parent = os.path.dirname(path)
    os.makedirs(parent, mode=0o711, exist_ok=True)
    os.makedirs(path, mode=0o700, exist_ok=True)
    if uid is not None:
        os.chown(path, uid, uid)
    os.chmod(path, 0o700)


def _drop_privileges(uid: int, caps: bool) -> None:
    if caps:
        if not _CAP_LAST:
            prepare()
        for cap in range(_CAP_LAST[0] + 1):
            if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise _errno_msg(f"PR_CAPBSET_DROP {cap}")
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)      # from root to non-root: permitted/effective/ambient emptied
    # The change of uid made us non-dumpable, which hands our /proc/PID files to root: the
    # task could not read its own /proc/self. Its uid is its own alone (and ptrace is
    # filtered), so being dumpable lets nobody else in.
    if _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0:
        raise _errno_msg("PR_SET_DUMPABLE")


def _landlock(reads: Sequence[str], scratch: str, files: bool, deny_tcp: bool,
              scope: bool) -> None:
    """One Landlock domain for the task. Besides the rights it handles, any domain also
    refuses ptrace-style access (ptrace, /proc/PID/mem, process_vm_readv) to processes
    outside it."""
    abi = landlock_abi()
    fs = _fs_rights(abi) if files else 0
    net = (LL_NET_BIND_TCP | LL_NET_CONNECT_TCP) if deny_tcp and abi >= 4 else 0
    scoped = (LL_SCOPE_ABSTRACT_UNIX | LL_SCOPE_SIGNAL) if scope and abi >= 6 else 0
    attr = struct.pack("QQQ", fs, net, scoped)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    rs = _libc.syscall(SYS_CREATE_RULESET, attr, ctypes.c_size_t(size), ctypes.c_uint32(0))
    if rs < 0:
        raise _errno_msg("landlock_create_ruleset")
    try:
        rules = [(r, LL_READ) for r in reads] if fs else []
        rules += [] if not fs else [(f"/proc/{os.getpid()}", LL_READ_FILE | LL_READ_DIR), (scratch, fs),
                  ("/dev/null", LL_READ_FILE | LL_WRITE_FILE | LL_TRUNCATE),
                  ("/dev/urandom", LL_READ_FILE), ("/dev/zero", LL_READ_FILE)]
        for path, rights in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                rights &= LL_FILE_RIGHTS
            rule = struct.pack("=Qi", rights & fs, fd)     # landlock_path_beneath_attr, packed
            r = _libc.syscall(SYS_ADD_RULE, rs, 1, rule, 0)
            os.close(fd)
            if r != 0:
                raise _errno_msg(f"landlock_add_rule {path}")
        if _libc.syscall(SYS_RESTRICT_SELF, rs, 0) != 0:
            raise _errno_msg("landlock_restrict_self")
    finally:
        os.close(rs)


# -- seccomp ------------------------------------------------------------------------------------

# System calls refused with EPERM, by architecture; (AUDIT_ARCH, numbers, clone, clone3, socket).
_DENY = ("ptrace process_vm_readv process_vm_writev kexec_load kexec_file_load mount umount2 "
         "bpf perf_event_open init_module finit_module delete_module pivot_root chroot setns "
         "unshare swapon swapoff reboot acct keyctl add_key request_key userfaultfd io_uring_setup "
         "io_uring_enter io_uring_register open_by_handle_at name_to_handle_at fsopen fsconfig "
         "fsmount move_mount open_tree fspick mount_setattr pidfd_getfd kcmp process_madvise "
         "settimeofday clock_settime adjtimex iopl ioperm quotactl").split()
_X86_64 = {"ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kexec_load": 246,
           "kexec_file_load": 320, "mount": 165, "umount2": 166, "bpf": 321,
           "perf_event_open": 298, "init_module": 175, "finit_module": 313, "delete_module": 176,
           "pivot_root": 155, "chroot": 161, "setns": 308, "unshare": 272, "swapon": 167,
           "swapoff": 168, "reboot": 169, "acct": 163, "keyctl": 250, "add_key": 248,
           "request_key": 249, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
           "io_uring_register": 427, "open_by_handle_at": 304, "name_to_handle_at": 303,
           "fsopen": 430, "fsconfig": 431, "fsmount": 432, "move_mount": 429, "open_tree": 428,
           "fspick": 433, "mount_setattr": 442, "pidfd_getfd": 438, "kcmp": 312,
           "process_madvise": 440, "settimeofday": 164, "clock_settime": 227, "adjtimex": 159,
           "iopl": 172, "ioperm": 173, "quotactl": 179, "clone": 56, "clone3": 435, "socket": 41}
_SYSCALLS = {"x86_64": (0xC000003E, _X86_64)}
# Tasks whose filter lets mount and umount2 pass: the L⁴Linux personality. Its Linux
# processes inherit its filter under their own trap filter, and of stacked filters the
# strictest answer wins — an EPERM here would beat the trap's USER_NOTIF, and their mount(2)
# would never reach the personality that serves it (servers/l4linux/mountcalls.py). The
# personality itself still cannot mount: it has no capability (CAP_SYS_ADMIN), and Landlock
# refuses any change of the mount topology to a thread it restricts.
MOUNT_PASSERS = frozenset({"servers.l4linux.server:main"})
CLONE_NEW_ANY = 0x7E020000        # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
AF_UNIX, AF_INET, AF_INET6, SOCK_STREAM, IPPROTO_TCP = 1, 2, 10, 1, 6

# Classic BPF
_LD_W_ABS, _JEQ, _JSET, _AND, _RET = 0x20, 0x15, 0x45, 0x54, 0x06
_ALLOW, _KILL, _ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_EPERM, _ENOSYS = 1, 38
_NR, _ARCH, _ARG0, _ARG1, _ARG2 = 0, 4, 16, 24, 32     # offsets in struct seccomp_data


def _filter(network: bool, arch: str = "x86_64", mounts: bool = False) -> bytes:
    """The BPF program: a list of (code, jt, jf, k), jumps given as labels and resolved.
    `mounts`: mount and umount2 pass (MOUNT_PASSERS)."""
    audit, nr = _SYSCALLS[arch]
    deny = ("ret", _ERRNO | _EPERM)
    prog: list[tuple[Any, ...]] = [
        ("ld", _ARCH), ("jeq", audit, None, "kill"),
        ("ld", _NR), ("jge", 0x40000000, "deny", None)]      # x32 system calls: none
    for name in _DENY:
        if not (mounts and name in ("mount", "umount2")):
            prog += [("jeq", nr[name], "deny", None)]
    prog += [("jeq", nr["clone3"], "nosys", None),
             ("jeq", nr["clone"], None, "after_clone"), ("ld", _ARG0),
             ("jset", CLONE_NEW_ANY, "deny", "allow"), ("label", "after_clone")]
    if not network:
        # The personality (`mounts`): its Linux processes' UDP, ICMP and netlink sockets
        # must reach its trap too (servers/l4linux/netcalls.py); natively, raw sockets
        # still need a capability it lacks. Its own host UDP and netlink sockets are in a
        # network namespace of its own (`enter`, step 1b): they reach nothing.
        inet, netlink = ("allow", "allow") if mounts else ("tcp", "deny")
        prog += [("jeq", nr["socket"], None, "allow"), ("ld", _ARG0),
                 ("jeq", AF_UNIX, "allow", None), ("jeq", 16, netlink, None),
                 ("jeq", AF_INET, inet, None),
                 ("jeq", AF_INET6, "tcp", "deny"), ("label", "tcp"),
                 ("ld", _ARG1), ("and", 0xF), ("jeq", SOCK_STREAM, None, "deny"),
                 ("ld", _ARG2), ("jeq", 0, "allow", None), ("jeq", IPPROTO_TCP, "allow", "deny")]
    prog += [("label", "allow"), ("ret", _ALLOW), ("label", "deny"), deny,
             ("label", "nosys"), ("ret", _ERRNO | _ENOSYS), ("label", "kill"), ("ret", _KILL)]
    labels: dict[str, int] = {}
    n = 0
    for ins in prog:
        if ins[0] == "label":
            labels[ins[1]] = n
        else:
            n += 1
    out = b""
    pc = 0
    for ins in prog:
        op = ins[0]
        if op == "label":
            continue
        def off(target: str | None) -> int:
            return 0 if target is None else labels[target] - pc - 1
        if op == "ld":
            out += struct.pack("=HBBI", _LD_W_ABS, 0, 0, ins[1])
        elif op == "ret":
            out += struct.pack("=HBBI", _RET, 0, 0, ins[1])
        elif op == "and":
            out += struct.pack("=HBBI", _AND | 0x00, 0, 0, ins[1])
        else:
            code = {"jeq": _JEQ, "jset": _JSET, "jge": 0x35}[op]
            out += struct.pack("=HBBI", code, off(ins[2]), off(ins[3]), ins[1])
        pc += 1
    return out


_FILTERS: dict[tuple[bool, bool], bytes] = {}


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def _seccomp(network: bool, mounts: bool = False) -> None:
    prog = _FILTERS.get((network, mounts))
    if prog is None:
        prog = _FILTERS[network, mounts] = _filter(network, platform.machine(), mounts)
    fprog = _SockFprog(len(prog) // 8, prog)
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise _errno_msg("seccomp filter")
