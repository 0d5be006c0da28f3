"""The L⁴Linux personality: the exception handler of every Linux process it runs.

Mechanism (docs/L4LINUX.md). The personality is an ordinary sandboxed task. It starts a
Linux process by forking a loader (`kernel.user.linux.start`: sandbox, trap filter, exec of
a memfd holding the binary from *its* RAM file system), makes an L4 task for it
(TASK_CREATE, `linux:PID:comm`) and hands the process to the kernel (LINUX_ATTACH: the
task's main thread becomes alien, our gate its exception handler). From then on every
trapped system call of that process — and of everything it forks — arrives here as a
`Proto.LINUX` call on our gate; `syscalls.TABLE` serves it, reading and writing the
process's memory through the kernel (LINUX_MEM_READ/WRITE, with our capability to its task).

Why not `rpc.serve`: a Linux system call may have to wait (a read of an empty pipe, wait4,
nanosleep) while others are served; rpc answers every request before the next. Here a
call's reply capability is kept (`Blocked`) and the call retried after every change, so
one blocked process never blocks another. Requests of our own protocol (`protocol.LINUX`:
run, ps) come through a second gate, decoded and checked by the declared protocol.

Contracts:
- Nothing a Linux process passes can crash the personality: a bad pointer answers
  -EFAULT, an exception in a handler -EINVAL (counted, logged), an unknown number -ENOSYS
  (logged once per number).
- Every LINUX call is answered exactly once (RETURN or CONTINUE), possibly later.

Ownership: one thread, the task's main thread, runs everything here.
"""
from __future__ import annotations

import errno
import os
import signal
import sys
import time
import traceback
from typing import Any

import struct

from kernel.abi import LinuxVerdict, Proto, pack
from kernel.user import linux as loader
from kernel.user.client import L4, Message
from kernel.user.errors import Busy, InvalidArgument, L4Error, PeerDied, Timeout
from kernel.user.rpc import Status, error_answer
from kernel.user.vm import VM

from . import (consoles, files, fs, hybrid, inet, initramfs, process, procfs, rootdisk,
               syscalls, timers, unixsock)
from .console import Console
from .files import FdTable, Open
from .pipe import BLOCK
from .protocol import LINUX
from .signals import SIGKILL, Blocked, Fault, Signals
from .tty import Tty

EXC_LABEL = 0x4C58                 # our exception gate's label; clients' gates have others
DOOR_LABEL = 0x4C59                # the gate our host-side door calls (control.py)
NET_LABEL = 0x4C5A                 # our wake IRQ: the IP stack's pump saw a change (inet.py)
MAX_STR = 4096
IMAGES = 4                         # executables of a disk kept in memory (_image_of)
IDLE_MS = 200.0                    # with a disk: the wait's longest sleep (writeback, SIGTERM)
# Calls that may name a path (or list a directory): /proc is made fresh before them.
PATH_CALLS = frozenset({2, 4, 6, 21, 59, 80, 85, 89, 257, 262, 267, 269, 439, 280, 332})


class Personality(Signals):
    def __init__(self, l4: L4, rootfs: bytes | None,
                 grants: dict[bytes, list[str]] | None = None,
                 disk_at: bytes | None = None) -> None:
        """`rootfs`: the newc archive of the RAM tree (None: only /dev and /proc, the disk
        being the root); `disk_at`: mount the disk (capability "block", rootdisk.py) there
        at once — b"/" for the root file system; without it mount(2) still may."""
        self.l4 = l4
        self.hybrid = hybrid.Policy(dict(l4.caps), grants or {})   # hybrid.py
        self.fs = fs.FileSystem()
        self.files = self.fs.load(rootfs) if rootfs is not None else 0
        self.vm: VM | None = None       # the task's one memory attachment (`memory`)
        self.drive = rootdisk.Drive(l4, memory=self.memory) if "block" in l4.caps else None
        self.stopping = False           # SIGTERM (l4run down): unmount, then end the loop
        self.images: dict[tuple[int, int], tuple[tuple[float, int], bytes]] = {}  # _image_of
        if disk_at is not None:
            if self.drive is None:
                raise ValueError("--disk needs a capability 'block' (the image's rootdisk)")
            if disk_at != b"/" and not self._exists(disk_at):
                self.fs.mkdir(disk_at, self.fs.root, 0o755)
            self.drive.mount(self.fs, disk_at)
        files.make_devices(self.fs, disk=self.drive is not None)
        self.procs = process.Table()
        self.blocked: list[Blocked] = []
        self.unknown: set[int] = set()
        self.nr = 0                     # the number being served (handlers shared by several)
        self.tid = 0                    # the host thread whose call is being served
        self.stats = {"syscalls": 0, "continued": 0, "blocked": 0, "faults": 0, "bugs": 0}
        self.by_nr: dict[int, int] = {}         # system calls received, by number
        self.exc_gate = l4.create_gate(EXC_LABEL)
        self.sleepers: dict[int, float] = {}               # thread -> when its sleep ends
        self.held: tuple[int, bytes, int] | None = None    # an answer for the next REPLY_WAIT
        self.consoles: dict[int, consoles.Session] = {}    # `l4run console` (consoles.py)
        # Our own host children (`spawn`: every loaded program) -> their host wait status
        # once reaped (None: not yet): the exact status of a Linux process that ends
        # without exit_group ("Crash statuses" in docs/L4LINUX.md).
        self.children: dict[int, int | None] = {}
        self.unix = unixsock.UnixSpace(self)               # AF_UNIX names (unixsock.py)
        self.inet = inet.InetSpace(self)                   # AF_INET ports (inet.py)
        self.net: inet.Interface | None = None             # eth0, once start_net ran
        self.alarms: dict[int, tuple[float, float]] = {}   # pid -> (due, interval): timers.py

    # -- memory of a process (through the kernel) -------------------------------------------
    def read(self, p: process.Process, addr: int, n: int) -> bytes:
        out = b""
        while len(out) < n:
            try:
                part = self.l4.linux_mem_read(p.slot, addr + len(out), min(n - len(out), 65536))
            except InvalidArgument as e:
                raise Fault(str(e)) from None
            if not part:
                raise Fault(f"0x{addr:x}")
            out += part
        return out

    def write(self, p: process.Process, addr: int, data: bytes) -> None:
        for i in range(0, len(data), 65536):
            try:
                self.l4.linux_mem_write(p.slot, addr + i, data[i:i + 65536])
            except InvalidArgument as e:
                raise Fault(str(e)) from None

    def cstr(self, p: process.Process, addr: int) -> bytes:
        if addr == 0:
            raise Fault("NULL string")
        out = b""
        while len(out) < MAX_STR:
            chunk = 256 - (addr + len(out)) % 256        # never cross into a page we need not
            try:
                part = self.l4.linux_mem_read(p.slot, addr + len(out), chunk)
            except InvalidArgument as e:
                raise Fault(str(e)) from None
            end = part.find(b"\0")
            if end >= 0:
                return out + part[:end]
            if not part:
                raise Fault(f"0x{addr:x}")
            out += part
        raise Fault("string too long")

    def strings(self, p: process.Process, addr: int) -> list[bytes]:
        out: list[bytes] = []
        while addr and len(out) < 4096:
            (ptr,) = struct.unpack("<Q", self.read(p, addr + 8 * len(out), 8))
            if not ptr:
                break
            out.append(self.cstr(p, ptr))
        return out

    # -- starting processes --------------------------------------------------------------
    def load(self, path: bytes, cwd: fs.Inode) -> tuple[bytes, list[bytes], bytes, fs.Inode]:
        """The image of `path`, what goes before argv ("#!" interpreters), the absolute
        path of the ELF file run (/proc/PID/exe) and its inode, or FsError."""
        node = self.fs.walk(path, cwd)
        if node.is_dir:
            raise fs.FsError(errno.EACCES, "a directory")
        if not node.mode & 0o111:
            raise fs.FsError(errno.EACCES, "not executable")
        data = self._image_of(node)
        if data.startswith(b"#!"):
            line = data[2:data.find(b"\n") if b"\n" in data else len(data)].strip()
            interp, _, arg = line.partition(b" ")
            inner, _, exe, elf = self.load(interp, cwd)
            return inner, [interp] + ([arg.strip()] if arg.strip() else []) + [path], exe, elf
        if not data.startswith(b"\x7fELF"):
            raise fs.FsError(errno.ENOEXEC, "not an ELF image")
        return data, [], self._real_path(path, cwd), node

    def _image_of(self, node: Any) -> bytes:
        """A file's bytes for exec. A disk file's are kept (IMAGES of them, by inode, while
        its ctime and size are unchanged): every busybox applet is the same 2 MB file,
        and reading it through the buffer cache at every exec would cost more than the
        exec itself."""
        if node.mount is None:
            return bytes(node.data)
        key, stamp = (id(node.mount), node.ino), (node.ctime, node.size())
        hit = self.images.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        data = bytes(node.data)
        self.images.pop(key, None)
        self.images[key] = (stamp, data)
        while len(self.images) > IMAGES:
            self.images.pop(next(iter(self.images)))
        return data

    def _real_path(self, path: bytes, cwd: fs.Inode) -> bytes:
        """The absolute path of the file `path` names, symlinks followed (/proc/PID/exe):
        its directory's path and its own name (a file's links do not name a parent)."""
        for _ in range(40):
            head, _, name = path.rstrip(b"/").rpartition(b"/")
            d = self.fs.walk(head or (b"/" if path.startswith(b"/") else b"."), cwd)
            node = self.fs.walk(name, d, follow=False) if name else d
            if not node.is_link:
                top = self.fs.path_of(d)
                return (top.rstrip(b"/") + b"/" + name) if name else top
            path, cwd = node.target, d
        raise fs.FsError(errno.ELOOP, path.decode(errors="replace"))

    def spawn(self, image: bytes, argv: list[bytes], envp: list[bytes],
              p: process.Process | None = None) -> int:
        """A new host process for `image`, not attached yet: its host pid. For an execve
        of `p`: its ignored signals and its mask carry over, as Linux keeps them."""
        name = os.path.basename(argv[0].decode(errors="replace")) if argv else "linux"
        ignored = [s for s, h in p.sigactions.items() if h == syscalls.SIG_IGN] if p else []
        pid = loader.start(image, argv, envp, name, ignored, p.sigmask if p else 0)
        self.children[pid] = None
        return pid

    def attach(self, slot: int, pid: int) -> None:
        deadline = time.monotonic() + 5.0
        while True:
            try:
                self.l4.linux_attach(slot, self.exc_gate, pid, loader.LISTENER)
                return
            except Busy:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.0005)

    def start(self, path: bytes, argv: list[bytes], envp: list[bytes], cwd: fs.Inode,
              console: Console | Tty) -> process.Process:
        image, pre, exe, elf = self.load(path, cwd)
        argv = pre + argv[1:] if pre else argv
        comm = os.path.basename(argv[0].decode(errors="replace"))[:15] if argv else "?"
        pid = self.spawn(image, argv, envp)
        try:
            new = self.l4.create_task(f"linux:{pid}:{comm}", 0)
            fds = FdTable()
            tty = Open("console", 2, console=console, node=self._dev(b"console"))
            tty.path = b"/dev/console"
            for fd in (0, 1, 2):
                fds.install(tty, at=fd)
            p = process.Process(pid, 0, new.task_id, new.slot, fds, cwd, console)
            p.comm, p.argv, p.exe, p.elf = comm, argv, exe, elf
            self.procs.add(p)
            self.attach(new.slot, pid)
        except BaseException:
            os.kill(pid, SIGKILL)
            self.children.pop(pid, None)
            raise
        finally:
            self._reap()
        return p

    def _dev(self, name: bytes) -> fs.Inode | None:
        try:
            return self.fs.walk(b"/dev/" + name, self.fs.root)
        except fs.FsError:
            return None

    def execve(self, p: process.Process, path: bytes, argv: list[bytes],
               envp: list[bytes]) -> Any:
        try:
            image, pre, exe, elf = self.load(path, p.cwd)
        except fs.FsError as e:
            return -e.errno
        argv = pre + argv[1:] if pre else argv
        mask, p.sigmask = p.sigmask, process.mask_of(p, self.tid)    # the caller's is kept
        pid = self.spawn(image, argv, envp, p)
        try:
            self.attach(p.slot, pid)        # the kernel kills the old host process
        except L4Error as e:
            p.sigmask = mask
            os.kill(pid, SIGKILL)
            self.children.pop(pid, None)
            self._reap()
            print(f"[l4linux] execve of {path!r} failed: {e}", file=sys.stderr, flush=True)
            return -errno.ENOMEM
        p.state = "loading"
        p.fds.exec()
        p.comm = os.path.basename(argv[0].decode(errors="replace"))[:15] if argv else p.comm
        p.argv, p.exe, p.elf = argv, exe, elf
        self.children.pop(p.host_pid, None)  # the old image's end is nobody's status
        p.host_pid, p.threads = pid, 1       # the other threads went with the old image
        p.tids, p.masks = set(), {}
        p.sigactions = {s: h for s, h in p.sigactions.items() if h == syscalls.SIG_IGN}
        p.sigflags = {}
        self._reap()
        return 0                            # nobody reads it: the old image is gone

    def sleep(self, p: process.Process, seconds: float) -> Any:
        """BLOCK until `seconds` after the first try of the calling thread's call, then 0."""
        now = time.monotonic()
        until = self.sleepers.get(self.tid)
        if until is None:
            self.sleepers[self.tid] = now + seconds
            return BLOCK
        if now < until:
            return BLOCK
        del self.sleepers[self.tid]
        return 0

    def memory(self) -> VM:
        """The task's one memory attachment, made at first use on the main thread (its
        faults over our own connection): the disk's block session and eth0's ORe session
        share it (the kernel refuses a task a second MEM_ATTACH)."""
        if self.vm is None:
            self.vm = VM(self.l4)
        return self.vm

    def start_net(self, opts: dict[str, str]) -> None:
        """eth0 on our ORe session (inet.start_interface): `px.net` from now on."""
        self.net = inet.start_interface(self, opts, NET_LABEL)

    def _exists(self, path: bytes) -> bool:
        try:
            self.fs.walk(path, self.fs.root)
            return True
        except fs.FsError:
            return False

    # -- the loop -----------------------------------------------------------------------
    def serve(self) -> None:
        """The loop. The answer to the call just served goes out with the next wait
        (REPLY_WAIT: one kernel round trip per Linux system call, not two). With a disk,
        the wait times out every IDLE_MS: an idle moment writes the disk back (the
        flusher), and a SIGTERM seen there ends the loop after a clean unmount."""
        l4 = self.l4
        while not self.stopping:
            timeout = self._timeout()
            if self.drive is not None:
                timeout = min(timeout, IDLE_MS) if timeout is not None else IDLE_MS
            held, self.held = self.held, None
            try:
                if held is not None:
                    msg = l4.reply_and_wait(held[0], held[1], proto=held[2], timeout=timeout)
                else:
                    msg = l4.wait(timeout=timeout)
            except Timeout:
                self._retry()
                self._writeback()
                continue
            except L4Error:
                continue                         # our reply was refused: its caller is gone
            try:
                self.message(msg)
            except Exception:
                self.stats["bugs"] += 1
                traceback.print_exc()
            self._retry()

    def _writeback(self) -> None:
        if self.drive is not None and not self.stopping:
            try:
                self.drive.writeback()
            except Exception:
                self.stats["bugs"] += 1
                traceback.print_exc()

    def shutdown(self) -> None:
        """The clean end (SIGTERM): the disk unmounted by force — written back, marked
        clean — and its session closed. The Linux processes die with us."""
        if self.net is not None:
            self.net.stack.stop()
        if self.drive is not None:
            at = self.drive.at
            self.drive.close()
            if at is not None:
                print(f"[l4linux] {rootdisk.DEVICE.decode()} on {at.decode()} unmounted clean",
                      file=sys.stderr, flush=True)

    def _timeout(self) -> float | None:
        deadlines = [b.p.fork_deadline for b in self.blocked if b.p.fork_snapshot is not None]
        deadlines += list(self.sleepers.values())
        deadlines += [due for due, _ in self.alarms.values()]
        if not deadlines:
            return None
        # at most an hour: a far deadline (alarm(2**31)) is beyond what a wait may ask
        return min(max(1.0, (min(deadlines) - time.monotonic()) * 1000), 3_600_000.0)

    def message(self, msg: Message) -> None:
        if msg.proto == Proto.LINUX:
            self.syscall(msg)
        elif msg.proto == Proto.IRQ and msg.label == NET_LABEL:
            if self.net is not None:
                self.net.pending = False     # before the retry (serve): a later change wakes us
        elif msg.proto == Proto.LINUX_L4:
            hybrid.done(self, msg)
        elif msg.proto == Proto.EXCEPTION:
            body = msg.body()
            p = self.procs.by_task.get(body.get("task_id"))
            if p is not None and p.state != "zombie":
                status = body.get("status")
                self.exit(p, self._death_status(p, status if type(status) is int else None))
            self._reap()
            if msg.reply:
                self.l4.reply(msg.reply)
        elif msg.proto == LINUX.tag and msg.label != EXC_LABEL and msg.reply:
            self.request(msg)
        elif msg.reply:
            self.l4.reply(msg.reply, error_answer(Status.BAD_REQUEST, "BAD_REQUEST",
                                                  "not a request of this gate"), proto=LINUX.tag)

    def syscall(self, msg: Message) -> None:
        body = msg.body()
        p = self.procs.by_task.get(body["task_id"])
        if p is None:
            p = self._forked(body)
        if p is None:
            self._answer(msg.reply, -errno.ENOSYS)
            return
        self.stats["syscalls"] += 1
        nr = int(body["nr"])
        self.by_nr[nr] = self.by_nr.get(nr, 0) + 1
        # A thread makes one call at a time: a new call of a thread whose earlier one waits
        # here means that one was interrupted (a host signal ran a handler, or killed the
        # thread's wait); its notification is gone, its wait with it.
        tid = int(body["tid"])
        if tid != p.host_pid and p.threads > 1:
            p.tids.add(tid)
        stale = [b for b in self.blocked if b.p is p and b.tid == tid]
        for b in stale:
            self.blocked.remove(b)
            self._answer(b.reply, -errno.EINTR)
        self.sleepers.pop(tid, None) if stale else None
        self._serve(p, tid, msg.reply, nr, [int(x) for x in body["args"]])

    def _forked(self, body: dict[str, Any]) -> process.Process | None:
        parent = next((q for q in self.procs.by_pid.values()
                       if q.task_id == body.get("parent")), None)
        if parent is None:
            return None
        fds, cwd = syscalls.start_state(parent)
        p = process.Process(int(body["pid"]), parent.pid, int(body["task_id"]),
                            int(body["slot"]), fds, cwd, parent.console)
        p.state, p.comm, p.argv = "running", parent.comm, list(parent.argv)
        p.exe, p.elf = parent.exe, parent.elf
        p.host_pid = p.pid
        p.pgid, p.sid, p.umask = parent.pgid, parent.sid, parent.umask
        p.sigactions, p.sigmask = dict(parent.sigactions), parent.sigmask
        p.sigflags = dict(parent.sigflags)
        p.limits = dict(parent.limits)
        self.procs.add(p)
        return p

    def _serve(self, p: process.Process, tid: int, reply: int, nr: int, args: list[int],
               retry: bool = False) -> bool:
        """Serve one call; False if it must wait (then it is kept in `blocked`)."""
        if p.fork_snapshot is not None:
            if time.monotonic() < p.fork_deadline:
                if not retry:
                    self.blocked.append(Blocked(p, tid, reply, nr, args))
                return False
            p.fork_snapshot[0].close_all()       # the child never showed up
            p.fork_snapshot = None
        fn = syscalls.TABLE.get(nr)
        if fn is None:
            if nr not in self.unknown:
                self.unknown.add(nr)
                print(f"[l4linux] system call {nr} is not served: ENOSYS (said once)",
                      file=sys.stderr, flush=True)
            self._answer(reply, -errno.ENOSYS)
            return True
        self.nr, self.tid = nr, tid
        try:
            if nr in PATH_CALLS:
                procfs.refresh(self, p)          # /proc as of now (procfs.py)
            result = fn(self, p, args)
        except Fault:
            self.stats["faults"] += 1
            result = -errno.EFAULT
        except PeerDied:
            return True                          # the process is gone: nobody to answer
        except Exception:
            self.stats["bugs"] += 1
            traceback.print_exc()
            result = -errno.EINVAL
        if result is BLOCK:
            if not retry:
                self.stats["blocked"] += 1
                self.blocked.append(Blocked(p, tid, reply, nr, args))
            return False
        self._answer(reply, result)
        return True

    def _answer(self, reply: int, result: Any) -> None:
        """Answer a LINUX call: held for the loop's next REPLY_WAIT if none is held yet."""
        if result is syscalls.CONTINUE:
            self.stats["continued"] += 1
            answer = (reply, b"", int(LinuxVerdict.CONTINUE))
        elif result is syscalls.L4:
            answer = (reply, b"", int(LinuxVerdict.L4))
        else:
            answer = (reply, pack(int(result)), int(LinuxVerdict.RETURN))
        if self.held is None:
            self.held = answer
            return
        try:
            self.l4.reply(answer[0], answer[1], proto=answer[2])
        except L4Error:
            pass                                 # the process (or its task) is gone

    def _retry(self) -> None:
        """Try every waiting call again until none makes progress (after the interval
        timers due: their SIGALRM interrupts a wait)."""
        if self.alarms:
            timers.fire(self)
        progress = True
        while progress and self.blocked:
            progress = False
            for b in list(self.blocked):
                if b.p.task_id not in self.procs.by_task or b.p.state == "zombie":
                    self.blocked.remove(b)
                    self._answer(b.reply, -errno.EINTR)
                    continue
                if self._serve(b.p, b.tid, b.reply, b.nr, b.args, retry=True):
                    self.blocked.remove(b)
                    progress = True

    # -- our protocol ------------------------------------------------------------------------
    def request(self, msg: Message) -> None:
        try:
            o, args = LINUX.decode_request(msg.data)
        except Exception as e:
            status, reason = getattr(e, "status", Status.BAD_REQUEST), str(e)
            self.l4.reply(msg.reply, error_answer(status, status.name, reason), proto=LINUX.tag)
            return
        if o.name.startswith("console_"):
            consoles.request(self, o, args, msg.reply)
            return
        if o.name in ("ps", "stats"):
            value: Any = self.procs.describe() if o.name == "ps" else {
                **self.stats, "unknown": sorted(self.unknown),
                "by_nr": {str(n): c for n, c in sorted(self.by_nr.items())}}
            self.l4.reply(msg.reply, LINUX.encode_result(o, value), proto=LINUX.tag)
            return
        argv = [a.encode() if isinstance(a, str) else bytes(a) for a in args[0]]
        envp = [e.encode() if isinstance(e, str) else bytes(e) for e in args[1]] or [
            b"PATH=/bin:/sbin:/usr/bin", b"HOME=/root", b"TERM=dumb"]
        path = argv[0] if argv and b"/" in argv[0] else b"/bin/" + (argv[0] if argv else b"")
        console = Console(f"linux:{argv[0].decode(errors='replace') if argv else '?'}")
        try:
            cwd = self.fs.walk(args[2].encode() or b"/", self.fs.root)
            p = self.start(path, argv, envp, cwd, console)
        except fs.FsError as e:
            err = "NOEXEC" if e.errno in (errno.ENOEXEC, errno.EACCES) else "NOT_FOUND"
            self.l4.reply(msg.reply, error_answer(Status.FAILED, err, str(e)), proto=LINUX.tag)
            return
        reply = msg.reply

        def done(q: process.Process) -> None:
            result = [process.status_code(q.status), bytes(console.out), q.pid]
            try:
                self.l4.reply(reply, LINUX.encode_result(o, result), proto=LINUX.tag)
            except L4Error:
                pass
        p.on_exit.append(done)



# Where `l4run mkrootfs` writes by default (inside the project: a sandboxed task may read it).
DEFAULT_ROOTFS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "build", "linux", "rootfs.cpio")


def rootfs_from_args(args: list[str]) -> bytes:
    """`--rootfs FILE` (a newc archive), else `l4run mkrootfs`'s default file if there is
    one, else an archive built now from the host's busybox."""
    path = args[args.index("--rootfs") + 1] if "--rootfs" in args else DEFAULT_ROOTFS
    if "--rootfs" in args or os.path.exists(path):
        with open(path, "rb") as f:
            return f.read()
    with open("/bin/busybox", "rb") as f:
        busybox = f.read()
    return initramfs.build(busybox, initramfs.applets("/bin/busybox"))


def boot_init(px: Personality, argv: list[str]) -> None:
    """Start the init command (`--init CMD ARGS...`): its output goes to the task log."""
    console = Console("init")
    raw = [a.encode() for a in argv]
    path = raw[0] if b"/" in raw[0] else b"/bin/" + raw[0]
    p = px.start(path, raw, [b"PATH=/bin:/sbin:/usr/bin", b"HOME=/root"], px.fs.root, console)
    p.on_exit.append(lambda q: print(f"[l4linux] init (pid {q.pid}) exited with status "
                                      f"{process.status_code(q.status)}", file=sys.stderr,
                                      flush=True))


def main(l4: L4, *args: str) -> int:
    """Task arguments: `--rootfs FILE` (a newc archive; default: built from /bin/busybox),
    `--disk AT` (mount the disk of capability "block" at AT; "/" makes it the root file
    system and the RAM tree holds only /dev and /proc),
    `--net ip=A.B.C.D/N,gw=A.B.C.D` (eth0 on the ORe session of capability "net": the
    image's [linux] net table; `dhcp` instead of ip; `cap=NAME`),
    `--hybrid PROGRAM=NAME,...` (repeatable: the program may make L4 calls with our
    capabilities NAME, hybrid.py), `--door` (open SCRATCH/linux.sock for `l4run linux run`; the cwd is the scratch
    directory under the launcher), `--init CMD ARGS...` (last: a command started at boot,
    and again whenever the personality is restarted)."""
    init: list[str] = []
    if "--init" in args:
        i = args.index("--init")
        args, init = args[:i], list(args[i + 1:])
    disk_at = args[args.index("--disk") + 1].encode() if "--disk" in args else None
    net = args[args.index("--net") + 1] if "--net" in args else None
    rootfs = None if disk_at == b"/" and "--rootfs" not in args else \
        rootfs_from_args(list(args))
    px = Personality(l4, rootfs, hybrid.parse_args(list(args)), disk_at)
    if px.drive is not None:
        # A flag, not an exception: the loop sees it within IDLE_MS, between two calls,
        # and unmounts the disk cleanly (the launcher stops clients before their servers).
        signal.signal(signal.SIGTERM, lambda *_: setattr(px, "stopping", True))
    if net is not None:
        from servers.netstack import config as netconfig
        px.start_net(netconfig.parse([w for w in net.split(",") if w]))
    if init:
        boot_init(px, init)
    if "--door" in args:
        from . import control
        path = os.path.join(os.getcwd(), control.SOCK_NAME)
        control.serve_door(l4, l4.create_gate(DOOR_LABEL), path)
        print(f"[l4linux] door: {path}", file=sys.stderr, flush=True)
    root = (f"ext2 on {rootdisk.DEVICE.decode()}" if disk_at == b"/" else
            f"{px.files} entries" + (f", ext2 on {disk_at.decode()}" if disk_at else ""))
    print(f"[l4linux] root file system: {root}; serving", file=sys.stderr, flush=True)
    try:
        px.serve()
    finally:
        px.shutdown()
    return 0
