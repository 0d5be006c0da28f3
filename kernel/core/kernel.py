"""The kernel process: one event loop that owns all kernel state.

It listens on `RUN_DIR/kernel.sock` (a ZeroMQ ROUTER, `ipc://`). Each L4 thread is one
DEALER connection; a connection becomes a thread only by presenting that thread's one-time
secret in HELLO (the secret is consumed). A task's OS process is watched through a pidfd,
so `kill -9` of a task is noticed at once.

The hot path decodes only the request header; payload frames are forwarded unread.
Nothing a task sends can stop the loop: every request is decoded and checked first, every
failure becomes an error answer (and is counted), and the loop catches what slips through,
counts it as a kernel bug, and answers the thread instead of crashing.

Ownership: everything here belongs to the single thread running `Kernel.run`.
"""
from __future__ import annotations

import heapq
import itertools
import os
import secrets
import signal
import struct
import sys
import time
import traceback
from types import MethodType
from typing import Any

import zmq
import zmq.backend

from . import fastpath, ipc, lifecycle, memory, syscalls
from ..abi import (MAX_PAYLOAD, SLOT_KERNEL, AbiError, AlienVerdict, Err, Proto, Rights, Sys,
                  decode_request, encode_error, encode_ok, unpack)
from .objects import Factory, Gate, KernelCtl, Task, Thread, TState

ROOT_QUOTA = 100_000
_SNDMORE, _EVENTS, _POLLIN = int(zmq.SNDMORE), int(zmq.EVENTS), int(zmq.POLLIN)
_MONITOR_EVENT = struct.Struct("<HI")


class Timers:
    """Timeouts: a heap of (deadline, seq, thread, token); stale entries are skipped."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, Thread, int]] = []
        self.seq = itertools.count()

    def add(self, timeout_ms: int, thread: Thread, token: int) -> None:
        heapq.heappush(self.heap, (time.monotonic() + timeout_ms / 1000.0, next(self.seq),
                                   thread, token))

    def next_ms(self) -> int:
        if not self.heap:
            return -1
        return max(0, int((self.heap[0][0] - time.monotonic()) * 1000) + 1)

    def due(self) -> list[Thread]:
        now = time.monotonic()
        out = []
        while self.heap and self.heap[0][0] <= now:
            _, _, thread, token = heapq.heappop(self.heap)
            if thread.token == token and thread.alive:
                out.append(thread)
        return out


HEARTBEAT_IVL_MS = 1000       # tcp ports: ZMTP heartbeats, so a vanished peer is noticed
HEARTBEAT_TIMEOUT_MS = 3000


class Port:
    """One listening ROUTER and what the loop needs of it: `ipc://` in the run directory for
    local tasks; `tcp://` with CurveZMQ (encrypted, the kernel authenticated by its public
    key) and ZMTP heartbeats for tasks on other machines. Each port has its own routing-id
    table (`conns`), so an id chosen on one port can never name a thread of another, and a
    monitor that reports closed connections by fd."""

    def __init__(self, ctx: zmq.Context, endpoint: str,
                 curve: tuple[bytes, bytes] | None = None) -> None:
        r = ctx.socket(zmq.ROUTER)
        r.linger = 0
        r.sndhwm = 0
        r.rcvhwm = 0
        self.public_key = b""
        if curve is not None:
            r.curve_server = True
            self.public_key, r.curve_secretkey = curve
            r.curve_publickey = self.public_key
            r.heartbeat_ivl = HEARTBEAT_IVL_MS
            r.heartbeat_timeout = HEARTBEAT_TIMEOUT_MS
        r.bind(endpoint)
        self.router = r
        self.endpoint = r.get(zmq.LAST_ENDPOINT).decode()
        self.conns: dict[bytes, Thread] = {}
        # The hot path calls libzmq through pyzmq's backend methods directly: the friendly
        # wrappers cost more than the work (≈ 1 µs per frame sent; EVENTS as an enum).
        self.send = MethodType(zmq.backend.Socket.send, r)
        self.events = MethodType(zmq.backend.Socket.get, r)
        self.monitor = r.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.mon_events = MethodType(zmq.backend.Socket.get, self.monitor)

    def close(self) -> None:
        self.router.disable_monitor()
        self.monitor.close(0)
        self.router.close(0)


class Kernel:
    def __init__(self, run_dir: str, root_secret: bytes, root_quota: int = ROOT_QUOTA,
                 verbose: bool = False, ram: int = memory.DEFAULT_RAM,
                 tcp: str | None = None) -> None:
        self.run_dir = run_dir
        self.pid = os.getpid()
        # "Physical" RAM: a memfd, never a name in /dev/shm (docs/MEMORY.md).
        self.memory = memory.install(self, ram)
        self.sock_path = os.path.join(run_dir, "kernel.sock")
        self.verbose = verbose
        self.ctx = zmq.Context()
        self.ipc = Port(self.ctx, "ipc://" + self.sock_path)
        os.chmod(self.sock_path, 0o600)
        self.ports = [self.ipc]
        self.tcp: Port | None = None
        if tcp is not None:
            self.tcp = Port(self.ctx, "tcp://" + tcp, zmq.curve_keypair())
            self.ports.append(self.tcp)
        self.poller = zmq.Poller()
        for port in self.ports:
            self.poller.register(port.router, zmq.POLLIN)
            self.poller.register(port.monitor, zmq.POLLIN)
        self._by_socket = {**{pt.router: pt for pt in self.ports},
                           **{pt.monitor: pt for pt in self.ports}}
        self._port = self.ipc              # the port whose messages are being handled
        self.conns = self.ipc.conns        # ... and its routing ids (swapped with it)
        # Lost connections: libzmq reports a closed peer socket by its fd; HELLO remembers
        # which fd each thread's connection came in on (the message's SRCFD). fds are one
        # number space for every port (one process).
        self.conn_fds: dict[int, set[Thread]] = {}
        self._frame: Any = None            # the last frame read (its SRCFD, for HELLO)
        self.timers = Timers()
        self.secrets: dict[bytes, Thread] = {}
        self.tasks: dict[int, Task] = {}
        self.gates: set[Gate] = set()
        self.pidfds: dict[int, Task] = {}
        self.stats: dict[str, int] = {"requests": 0, "ipc": 0, "errors": 0, "malformed": 0,
                                      "unauthenticated": 0, "kernel_bugs": 0, "tasks_created": 0,
                                      "tasks_died": 0, "fastpath": 0, "connections_lost": 0}
        self.fastpath = True               # kernel.core.fastpath serves the common IPC inline
        self.err_counts: dict[str, int] = {}
        self.started = time.time()
        self.running = True
        self._wakeup = -1                  # read end of the signal wakeup pipe, if any
        self.root_factory = Factory(None, root_quota)
        root, main = self.make_task("root", None, 0, own_factory=self.root_factory)
        root.space.insert(SLOT_KERNEL, KernelCtl(None), Rights.ALL)
        self.secrets[root_secret] = main

    # -- bookkeeping used by the mechanisms ------------------------------------
    def make_task(self, name: str, factory: Factory | None, quota: int,
                  own_factory: Factory | None = None) -> tuple[Task, Thread]:
        space = syscalls.new_space(self, name)
        own = own_factory or Factory(factory, quota)
        task = Task(factory, name, space, own)
        main = Thread(factory, task)
        task.threads.append(main)
        syscalls.initial_caps(space, task, main, own)
        self.tasks[task.id] = task
        self.stats["tasks_created"] += 1
        return task, main

    def new_secret(self, thread: Thread) -> bytes:
        secret = secrets.token_bytes(16)
        self.secrets[secret] = thread
        return secret

    def gates_bound_to(self, thread: Thread) -> list[Gate]:
        return [g for g in self.gates if g.thread is thread]

    def unbind(self, thread: Thread) -> None:
        if thread.conn is not None:
            thread.port.conns.pop(thread.conn, None)
            on_fd = self.conn_fds.get(thread.conn_fd)
            if on_fd is not None:
                on_fd.discard(thread)
                if not on_fd:
                    del self.conn_fds[thread.conn_fd]
            thread.conn = None
        for s in [s for s, t in self.secrets.items() if t is thread]:
            del self.secrets[s]

    def count_ipc(self, sender: Thread | None, receiver: Thread) -> None:
        self.stats["ipc"] += 1
        if sender is not None:
            sender.task.stats["sent"] += 1
        receiver.task.stats["received"] += 1

    def log(self, text: str) -> None:
        if self.verbose:
            print(f"[kernel] {text}", file=sys.stderr, flush=True)

    # -- death detection ------------------------------------------------------
    def watch(self, task: Task, pid: int) -> None:
        if not 0 < pid < 2 ** 31:
            raise AbiError(Err.INVALID, f"pid {pid} is outside 1..2**31-1")
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            task.pid = pid
            lifecycle.kill_task(self, task, f"process {pid} is not running", None)
            return
        except OSError as e:
            raise AbiError(Err.INVALID, f"cannot watch pid {pid}: {e.strerror}") from None
        self.unwatch(task)
        task.pid, task.pidfd = pid, fd
        self.pidfds[fd] = task
        self.poller.register(fd, zmq.POLLIN)

    def unwatch(self, task: Task) -> None:
        fd = task.pidfd
        if fd is None:
            return
        task.pidfd = None
        self.pidfds.pop(fd, None)
        self.poller.unregister(fd)
        os.close(fd)

    def _process_died(self, fd: int) -> None:
        task = self.pidfds.get(fd)
        if task is None:
            return
        status = lifecycle.pid_status(task.pid) if task.pid else None
        self.stats["tasks_died"] += 1
        lifecycle.kill_task(self, task, f"process {task.pid} exited", status)

    # -- answers --------------------------------------------------------------
    def answer(self, thread: Thread, header: bytes, payload: bytes | None,
               force: bool = False) -> None:
        """Send the answer to `thread`'s call (alien threads: after the handler saw it)."""
        if thread.alien_after is not None and not force:
            self._alien_after(thread, header, payload)
            return
        thread.busy = False
        conn = thread.conn
        if conn is None:
            return
        send = thread.port.send
        send(conn, _SNDMORE)
        if payload is None:
            send(header, 0)
        else:
            send(header, _SNDMORE)
            send(payload, 0)

    def _raw_answer(self, conn: bytes, header: bytes) -> None:
        """An answer to the connection whose message is being handled, bound or not."""
        send = self._port.send
        send(conn, _SNDMORE)
        send(header, 0)

    def _error(self, conn: bytes, thread: Thread | None, err: Err, reason: str) -> None:
        self.stats["errors"] += 1
        self.err_counts[err.name] = self.err_counts.get(err.name, 0) + 1
        if thread is not None:
            thread.task.stats["errors"] += 1
            if thread.busy:      # the call in flight is not this one: answer the socket only
                self._raw_answer(conn, encode_error(err, reason))
                return
            thread.busy = True
            ipc.fail(self, thread, err, reason)
            return
        self._raw_answer(conn, encode_error(err, reason))

    # -- requests -------------------------------------------------------------
    def _read(self) -> list[bytes]:
        """One whole multipart message; the caller knows one is waiting."""
        recv = self._port.router.recv
        f = recv(copy=False)
        frames = [f.bytes]
        while f.more:
            f = recv(copy=False)
            if len(frames) < 4:
                frames.append(f.bytes)
            else:
                frames.append(b"")    # over-long messages are refused below; keep reading
        self._frame = f
        return frames

    def _handle(self, frames: list[bytes]) -> None:
        self.stats["requests"] += 1
        n = len(frames)
        if self.fastpath and (n == 3 or n == 2) and fastpath.try_fast(
                self, frames[0], frames[1], frames[2] if n == 3 else None):
            self.stats["fastpath"] += 1
            return
        conn = frames[0]
        thread = self.conns.get(conn)
        if len(frames) not in (2, 3):
            self.stats["malformed"] += 1
            self._error(conn, thread, Err.PROTOCOL, f"a request has 1 or 2 frames, got {len(frames) - 1}")
            return
        try:
            sysno, args = decode_request(frames[1])
        except AbiError as e:
            if e.err in (Err.PROTOCOL, Err.TOO_BIG):
                self.stats["malformed"] += 1
            self._error(conn, thread, e.err, e.reason)
            return
        payload = frames[2] if len(frames) == 3 else None
        if thread is None:
            if sysno == Sys.HELLO:
                self._hello(conn, args[0])
            else:
                self.stats["unauthenticated"] += 1
                self._error(conn, None, Err.NOT_AUTH, "this connection has not said HELLO "
                                                      "with a valid secret")
            return
        if thread.busy:
            self._error(conn, thread, Err.BUSY, f"thread {thread.id} already has a call in flight")
            return
        if sysno == Sys.HELLO:
            self._error(conn, thread, Err.BUSY, "this connection is already bound to a thread")
            return
        if payload is not None:
            if sysno not in (Sys.SEND, Sys.CALL, Sys.REPLY, Sys.REPLY_WAIT):
                self._error(conn, thread, Err.PROTOCOL, f"{sysno.name} carries no payload")
                return
            if len(payload) > MAX_PAYLOAD:
                self._error(conn, thread, Err.TOO_BIG,
                            f"payload of {len(payload)} bytes, at most {MAX_PAYLOAD}")
                return
        thread.busy = True
        thread.task.stats["calls"] += 1
        if thread.alien and sysno != Sys.HELLO:
            self._alien_before(thread, sysno, args, payload)
            return
        self._run(thread, sysno, args, payload)

    def _run(self, thread: Thread, sysno: Sys, args: list[Any], payload: bytes | None) -> None:
        try:
            result = syscalls.TABLE[sysno](self, thread, args, payload)
        except AbiError as e:
            self.stats["errors"] += 1
            self.err_counts[e.err.name] = self.err_counts.get(e.err.name, 0) + 1
            thread.task.stats["errors"] += 1
            ipc.fail(self, thread, e.err, e.reason)
            return
        if result is not syscalls.LATER:
            ipc.finish(self, thread, encode_ok(result))

    def _hello(self, conn: bytes, secret: bytes) -> None:
        thread = self.secrets.pop(secret, None)
        if thread is None or not thread.alive:
            self.stats["unauthenticated"] += 1
            self._error(conn, None, Err.NOT_AUTH, "unknown or already used secret")
            return
        # Linux gives a new connection the lowest free fd, often the one a connection that
        # just closed had: settle every disconnection reported so far before recording ours.
        self._disconnections()
        thread.conn, thread.port = conn, self._port
        thread.conn_fd = int(self._frame.get(zmq.SRCFD)) if self._frame is not None else -1
        self.conns[conn] = thread
        self.conn_fds.setdefault(thread.conn_fd, set()).add(thread)
        self._raw_answer(conn, encode_ok([thread.task.id, thread.id, thread.task.name, os.getpid()]))

    def _disconnections(self) -> None:
        """Threads whose connection closed are gone: a main thread takes its task with it,
        another thread dies alone (its secret is spent; nothing can take its place)."""
        for port in self.ports:
            while port.mon_events(_EVENTS) & _POLLIN:   # unthrottled, unlike a NOBLOCK recv
                # [event:u16 value:u32, endpoint] (zmq.utils.monitor would import asyncio:
                # 80 ms of kernel start-up)
                event, fd = _MONITOR_EVENT.unpack_from(port.monitor.recv_multipart()[0])
                if event == zmq.EVENT_DISCONNECTED:
                    self._connection_lost(self.conn_fds.pop(fd, set()))

    def _connection_lost(self, threads: set[Thread]) -> None:
        for thread in sorted(threads, key=lambda t: t.id):
            if thread.conn is None or not thread.alive:
                continue
            self.stats["connections_lost"] += 1
            why = "connection to the kernel was lost"
            if thread is thread.task.threads[0]:
                lifecycle.kill_task(self, thread.task, f"its main thread's {why}", None)
            else:
                lifecycle.destroy(self, thread, f"its {why}")

    # -- alien threads (paper §4.1) ---------------------------------------------
    def _alien_before(self, th: Thread, sysno: Sys, args: list[Any], payload: bytes | None) -> None:
        th.set_state(TState.ALIEN_HOLD)
        report = {"phase": "before", "task": th.task.name, "thread": th.id, "sysno": int(sysno),
                  "call": sysno.name, "args": args,
                  "payload_len": len(payload) if payload is not None else 0}

        def verdict(proto: int, _payload: bytes | None) -> None:
            if not th.alive or th.state != TState.ALIEN_HOLD:
                return
            th.set_state(TState.IDLE)
            if proto == AlienVerdict.ALLOW:
                th.alien_after = (int(sysno), sysno.name)
                self._run(th, sysno, args, payload)
            else:
                ipc.fail(self, th, Err.DENIED, f"the exception handler denied {sysno.name}")

        def handler_gone(err: Err, reason: str) -> None:
            if th.alive and th.state == TState.ALIEN_HOLD:
                ipc.fail(self, th, Err.DENIED, f"no exception handler answered ({reason})")

        ipc.kernel_send(self, th.handler, Proto.ALIEN, report, th.priority, verdict, handler_gone)

    def _alien_after(self, th: Thread, header: bytes, payload: bytes | None) -> None:
        sysno, name = th.alien_after or (0, "")
        th.alien_after = None
        try:
            err = unpack(header)[0]
        except Exception:
            err = int(Err.PROTOCOL)
        report = {"phase": "after", "task": th.task.name, "thread": th.id, "sysno": sysno,
                  "call": name, "err": err}

        def release(*_: Any) -> None:
            if th.alive:
                self.answer(th, header, payload, force=True)

        ipc.kernel_send(self, th.handler, Proto.ALIEN, report, th.priority, release, release)

    # -- introspection ----------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.time() - self.started, 3),
            "pid": os.getpid(),
            "cpu_s": round(time.process_time(), 3),
            "stats": dict(self.stats),
            "errors": dict(self.err_counts),
            "tasks": [{**t.describe(), "stats": dict(t.stats),
                       "quota": {"limit": t.own_factory.limit, "used": t.own_factory.used}}
                      for t in self.tasks.values()],
        }

    # -- the loop ---------------------------------------------------------------
    def stop_on_signals(self, *signums: int) -> None:
        """Stop the loop on these signals, reliably: the handler only clears `running`, and
        Python's wakeup fd (a pipe the poller watches) makes a blocked poll return at once.
        (Raising from the handler inside zmq_poll was seen to be lost now and then.)"""
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._wakeup = r
        signal.set_wakeup_fd(w)
        self.poller.register(r, zmq.POLLIN)
        for signum in signums:
            signal.signal(signum, lambda *_: setattr(self, "running", False))

    def run(self) -> None:
        poll = self.poller.poll
        wakeup = self._wakeup
        ports = self._by_socket
        while self.running:
            for sock, _ in poll(self.timers.next_ms()):
                port = ports.get(sock)
                if port is not None:
                    if sock is port.router:
                        self._drain(port)
                    else:
                        self._guard(self._disconnections)
                elif sock == wakeup:
                    os.read(wakeup, 512)
                else:
                    self._guard(self._process_died, sock)
            for thread in self.timers.due():
                self._guard(ipc.expire, self, thread)

    def _drain(self, port: Port) -> None:
        self._port, self.conns = port, port.conns
        # Asking for EVENTS is cheaper than a non-blocking recv that raises zmq.Again.
        events = port.events
        while True:
            self._guard(self._handle, self._read())
            if not events(_EVENTS) & _POLLIN:
                return

    def _guard(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            # A kernel bug must not take the system down; it is counted and reported.
            self.stats["kernel_bugs"] += 1
            print("[kernel] internal error (counted, loop continues):\n" + traceback.format_exc(),
                  file=sys.stderr, flush=True)
            if fn == self._handle and args:
                frames = args[0]
                thread = self.conns.get(frames[0])
                if thread is not None and thread.busy:
                    try:
                        ipc.fail(self, thread, Err.INVALID, "kernel internal error; call aborted")
                    except Exception:
                        pass

    def close(self) -> None:
        self.memory.close()
        for fd in list(self.pidfds):
            os.close(fd)
        self.pidfds.clear()
        for port in self.ports:
            port.close()
        self.ctx.term()
        for path in (self.sock_path, os.path.join(self.run_dir, TCP_INFO)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


TCP_INFO = "kernel.tcp"


def write_tcp_info(run_dir: str, port: Port) -> None:
    """RUN_DIR/kernel.tcp: {"endpoint", "public_key"} — what a remote task needs besides its
    one-time secret (the key is public: it lets the task check it talks to this kernel)."""
    import json
    public = port.public_key
    path = os.path.join(run_dir, TCP_INFO)
    with open(path + ".tmp", "w") as f:
        json.dump({"endpoint": port.endpoint, "public_key": public.decode()}, f)
    os.replace(path + ".tmp", path)


def main(argv: list[str] | None = None) -> int:
    import argparse
    from ..osutil import die_with_parent

    p = argparse.ArgumentParser(prog="python -m kernel", description="The L4Py kernel process.")
    p.add_argument("--run-dir", required=True, help="directory for kernel.sock")
    p.add_argument("--root-quota", type=int, default=ROOT_QUOTA)
    p.add_argument("--die-with-parent", action="store_true",
                   help="exit when the process that started us exits")
    p.add_argument("--nice", type=int, default=-10,
                   help="scheduling niceness of the kernel (default -10; needs privilege, else ignored)")
    p.add_argument("--ram", type=int, default=memory.DEFAULT_RAM >> 20,
                   help="size of physical RAM in MiB (default 64)")
    p.add_argument("--tcp", metavar="HOST:PORT",
                   help="also listen on tcp://HOST:PORT (CurveZMQ) for tasks on other machines; "
                        "port 0 picks one. The endpoint and the kernel's public key are written "
                        "to RUN_DIR/kernel.tcp")
    p.add_argument("--no-fastpath", action="store_true",
                   help="serve every call through the generic path (to compare; same semantics)")
    p.add_argument("--profile", metavar="FILE",
                   help="run the loop under cProfile and write its statistics to FILE at exit")
    p.add_argument("-v", "--verbose", action="store_true")
    ns = p.parse_args(argv)
    if ns.die_with_parent:
        die_with_parent(signal.SIGTERM)   # SIGTERM: we still remove our socket
    if ns.nice:
        # The kernel is on every IPC's path: let it run before the tasks it serves. Done
        # before ZeroMQ starts its I/O thread, which inherits the niceness.
        try:
            os.setpriority(os.PRIO_PROCESS, 0, ns.nice)
        except OSError:
            pass
    os.makedirs(ns.run_dir, exist_ok=True)
    hexsecret = os.environ.pop("L4_ROOT_SECRET", "")
    if hexsecret:
        root_secret = bytes.fromhex(hexsecret)
    else:
        root_secret = secrets.token_bytes(16)
        path = os.path.join(ns.run_dir, "root.secret")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, root_secret.hex().encode())
        os.close(fd)
    k = Kernel(ns.run_dir, root_secret, ns.root_quota, ns.verbose, ram=ns.ram << 20,
               tcp=ns.tcp)
    k.fastpath = not ns.no_fastpath
    if k.tcp is not None:
        write_tcp_info(ns.run_dir, k.tcp)

    k.stop_on_signals(signal.SIGTERM, signal.SIGINT)
    try:
        if ns.profile:
            import cProfile
            cProfile.runctx("k.run()", globals(), locals(), ns.profile)
        else:
            k.run()
    except KeyboardInterrupt:
        pass
    finally:
        k.close()
    return 0
