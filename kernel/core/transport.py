"""The kernel process's transport: sockets, HELLO, death detection, the event loop, `main`.

It listens on `RUN_DIR/kernel.sock` (a ZeroMQ ROUTER, `ipc://`; with `--tcp`, also on a
CurveZMQ `tcp://` port). Each L4 thread is one DEALER connection; a connection becomes a
thread only by presenting that thread's one-time secret in HELLO (the secret is consumed).
On `ipc://` the connecting process must also be the task's own (SO_PEERCRED of the socket the
HELLO came on, against the pid TASK_WATCH named, or the pid of the task's first thread):
a secret that leaked is no good to another process, and stays unspent for the real one.
kernel.sock is mode 0666 (tasks run under their own uids) in a run directory only we can
write (`secure_run_dir`), so nobody can put a socket of theirs in its place.
A task's OS process is watched through a pidfd, so `kill -9` of a task is noticed at once;
a connection that closes is noticed through the socket monitor (its fd).

The real-time port (`--rt-port`, images with `[system] kernel_rt_port = true`): a second
`ipc://` ROUTER, RUN_DIR/kernel-rt.sock, in a ZeroMQ context of its own (its own I/O
thread), for the threads of reserved jobs and of the servers working for them. A thread
bound on kernel.sock moves there by saying HELLO on it with its own secret once more (kept
for that one use, good only from the task's own process, like the first HELLO) — allowed
only while its process holds a real-time host policy on some thread (SCHED_DEADLINE, FIFO
or RR: what only the CPU reservation manager, servers/rt, gives), else NO_RIGHTS with the
reason; its old connection is then no thread's. Its messages are served first: a ready
real-time port is drained before the others, and while another port is drained and a
thread is connected to the real-time one, a message waiting there is served before that
port's next (`stats.rt_first` counts the switches). Which thread of the process holds the
policy is not checked (a socket's peer credentials name the process only); the order of
service is all the port changes — rights, capabilities and IPC semantics are the same.

A request is read, decoded and checked (`abi.decode_request`), then handed to the fast path
(`fastpath`), to an alien thread's handler (`alien`) or to the dispatch (`syscalls.run`).
When the compiled fast path is built, it reads a ready port itself (`fastpath.compiled.drain`)
and serves the common calls in C; every other message it hands to `_handle` unchanged. The
loop waits on one epoll set (`waitset.Waitset`: ports, monitors, pidfds, the memory channel,
Linux listeners, the signal pipe, each registered once), in C when the fast path is built.
The transport implements `state.Wire` — answering, unbinding, watching — and is the only
module that touches ZeroMQ; the mechanisms see it through that interface alone.

Contracts:
- The hot path decodes only the request header; payload frames are forwarded unread.
- Nothing a task sends can stop the loop: every request is checked first, every failure
  becomes an error answer (counted in `State.count_error`), and the loop catches what slips
  through, counts it as a kernel bug and answers the thread instead of crashing.

Ownership: everything here belongs to the single thread running `Transport.run`.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import stat
import struct
import sys
import traceback
from types import MethodType
from typing import Any, Callable

import zmq
import zmq.backend

from . import alien, faults, fastpath, ipc, lifecycle, linux, memory, syscalls
from . import hybrid  # noqa: F401  (its import sets linux.L4_START: hybrid calls are made)
from ..abi import (CARRIES_PAYLOAD, MAX_PAYLOAD, RT_SOCK, TCP_INFO, AbiError, Err, Sys, decode_request,
                   encode_error, encode_ok)
from ..osutil import peer_cred, realtime_thread
from .objects import Task, Thread, TState
from .state import ROOT_QUOTA, State
from .waitset import Waitset

_SNDMORE, _EVENTS, _POLLIN = int(zmq.SNDMORE), int(zmq.EVENTS), int(zmq.POLLIN)
_MONITOR_EVENT = struct.Struct("<HI")
HEARTBEAT_IVL_MS = 1000       # tcp ports: ZMTP heartbeats, so a vanished peer is noticed
HEARTBEAT_TIMEOUT_MS = 3000
RECHECK_MS = 50            # a disconnection whose fd still holds the thread's socket: again then


def _socket_inode(fd: int) -> int:
    """The inode of the socket open at `fd` in this process (0: none, or not a socket)."""
    try:
        st = os.fstat(fd)
    except OSError:
        return 0
    return st.st_ino if stat.S_ISSOCK(st.st_mode) else 0


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
        self.handle = r.underlying         # libzmq's socket, for the compiled fast path
        self.send = MethodType(zmq.backend.Socket.send, r)
        self.events = MethodType(zmq.backend.Socket.get, r)
        self.monitor = r.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self.mon_events = MethodType(zmq.backend.Socket.get, self.monitor)

    def close(self) -> None:
        self.router.disable_monitor()
        self.monitor.close(0)
        self.router.close(0)


class Transport:
    """The kernel process: its ports, its poller, and the `State` it serves."""

    def __init__(self, run_dir: str, root_secret: bytes, root_quota: int = ROOT_QUOTA,
                 verbose: bool = False, ram: int = memory.DEFAULT_RAM,
                 tcp: str | None = None, rt_port: bool = False) -> None:
        self.run_dir = run_dir
        self.state = k = State(run_dir, root_secret, self, lifecycle.on_last_cap, root_quota,
                               verbose)
        # "Physical" RAM: a memfd, never a name in /dev/shm (docs/MEMORY.md).
        k.memory = memory.install(k, ram)
        self.sock_path = os.path.join(run_dir, "kernel.sock")
        self.ctx = zmq.Context()
        secure_run_dir(run_dir)
        self.local = Port(self.ctx, "ipc://" + self.sock_path)
        # Anyone may connect (tasks run under uids of their own); a connection is nobody
        # until HELLO, and HELLO checks the secret and the peer's process (`_wrong_peer`).
        # Nobody but us can replace the socket: `secure_run_dir`.
        os.chmod(self.sock_path, 0o666)
        self.ports = [self.local]
        self.tcp: Port | None = None
        if tcp is not None:
            self.tcp = Port(self.ctx, "tcp://" + tcp, zmq.curve_keypair())
            self.ports.append(self.tcp)
        # The real-time port, in a context of its own: its messages do not queue in the
        # I/O thread that carries everyone else's.
        self.rt: Port | None = None
        self.rt_ctx: zmq.Context | None = None
        self.rt_path = os.path.join(run_dir, RT_SOCK)
        self.rt_secrets: dict[bytes, Thread] = {}    # bound on another port, may still move
        if rt_port:
            self.rt_ctx = zmq.Context()
            self.rt = Port(self.rt_ctx, "ipc://" + self.rt_path)
            os.chmod(self.rt_path, 0o666)
            self.ports.append(self.rt)
        self.poller = Waitset()            # one epoll set for every socket and fd
        for port in self.ports:
            self.poller.register(port.router, zmq.POLLIN)
            self.poller.register(port.monitor, zmq.POLLIN)
        # The memory channel (RUN_DIR/mem.sock, kernel/core/frames.py): frames go to tasks.
        k.memory.channel.start(self.poller, zmq.POLLIN)
        # Seccomp listeners of Linux processes (kernel/core/linux.py): registered as attached.
        linux.install(k, self.poller, zmq.POLLIN)
        self._by_socket = {**{pt.router: pt for pt in self.ports},
                           **{pt.monitor: pt for pt in self.ports}}
        self._port = self.local            # the port whose messages are being handled
        self.conns = self.local.conns      # ... and its routing ids (swapped with it)
        # Lost connections: libzmq reports a closed peer socket by its fd; HELLO remembers
        # which fd each thread's connection came in on (the message's SRCFD). fds are one
        # number space for every port (one process).
        self.conn_fds: dict[int, set[Thread]] = {}
        self._frame: Any = None            # the last frame read (its SRCFD, for HELLO)
        self.pidfds: dict[int, Task] = {}
        self.running = True
        self._wakeup = -1                  # read end of the signal wakeup pipe, if any
        self._compiled: Callable[[Transport, Port, int], bool] | None = None
        self.use_fastpath(True)

    def use_fastpath(self, on: bool) -> None:
        """Serve the common IPC inline (`fastpath`: compiled if built, else Python) or not."""
        k = self.state
        k.fastpath = on
        self._compiled = fastpath.compiled.drain if on and fastpath.compiled else None
        k.fast_path = fastpath.KIND if on else "off"

    # -- state.Wire ---------------------------------------------------------------
    def answer(self, thread: Thread, header: bytes, payload: bytes | None) -> None:
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

    def unbind(self, thread: Thread) -> None:
        if thread.conn is not None:
            self._off_port(thread)
            thread.conn = None
        for secrets_ in (self.state.secrets, self.rt_secrets):
            for s in [s for s, t in secrets_.items() if t is thread]:
                del secrets_[s]

    def _off_port(self, thread: Thread) -> None:
        """`thread`'s connection is no longer its: out of its port's routing ids and of the
        connections watched by fd."""
        thread.port.conns.pop(thread.conn, None)
        on_fd = self.conn_fds.get(thread.conn_fd)
        if on_fd is not None:
            on_fd.discard(thread)
            if not on_fd:
                del self.conn_fds[thread.conn_fd]

    def watch(self, task: Task, pid: int) -> None:
        if not 0 < pid < 2 ** 31:
            raise AbiError(Err.INVALID, f"pid {pid} is outside 1..2**31-1")
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            task.pid = pid
            lifecycle.kill_task(self.state, task, f"process {pid} is not running", None)
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

    # -- requests -------------------------------------------------------------------
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
        k = self.state
        k.stats["requests"] += 1
        n = len(frames)
        conn = frames[0]
        thread = self.conns.get(conn)
        if k.fastpath and (n == 3 or n == 2) and fastpath.try_fast(
                k, thread, frames[1], frames[2] if n == 3 else None):
            k.stats["fastpath"] += 1
            return
        if n not in (2, 3):
            k.stats["malformed"] += 1
            self._refuse(conn, thread, Err.PROTOCOL, f"a request has 1 or 2 frames, got {n - 1}")
            return
        try:
            sysno, args = decode_request(frames[1])
        except AbiError as e:
            if e.err in (Err.PROTOCOL, Err.TOO_BIG):
                k.stats["malformed"] += 1
            self._refuse(conn, thread, e.err, e.reason)
            return
        payload = frames[2] if n == 3 else None
        if thread is None:
            self._unbound(conn, sysno, args)
            return
        refusal = self._check_call(thread, sysno, payload)
        if refusal is not None:
            self._refuse(conn, thread, *refusal)
            return
        thread.busy = True
        thread.task.stats["calls"] += 1
        if thread.alien:
            alien.before(k, thread, sysno, args, payload)
            return
        syscalls.run(k, thread, sysno, args, payload)

    def _check_call(self, thread: Thread, sysno: Sys,
                    payload: bytes | None) -> tuple[Err, str] | None:
        """Why a bound thread's decoded request cannot start now, if it cannot."""
        if thread.busy:
            return Err.BUSY, f"thread {thread.id} already has a call in flight"
        if sysno == Sys.HELLO:
            return Err.BUSY, "this connection is already bound to a thread"
        if payload is not None:
            if sysno not in CARRIES_PAYLOAD:
                return Err.PROTOCOL, f"{sysno.name} carries no payload"
            if len(payload) > MAX_PAYLOAD:
                return Err.TOO_BIG, f"payload of {len(payload)} bytes, at most {MAX_PAYLOAD}"
        return None

    def _unbound(self, conn: bytes, sysno: Sys, args: Any) -> None:
        """A request of a connection that is no thread (yet): only HELLO is heard."""
        if sysno == Sys.HELLO:
            self._hello(conn, args.secret)
            return
        self.state.stats["unauthenticated"] += 1
        self._refuse(conn, None, Err.NOT_AUTH, "this connection has not said HELLO "
                                               "with a valid secret")

    def _refuse(self, conn: bytes, thread: Thread | None, err: Err, reason: str) -> None:
        """Answer a request the transport refused: an idle thread's call fails like any
        other; a connection with no thread, or a thread whose call in flight is another
        one, gets the answer on its socket alone (that call is not disturbed)."""
        if thread is not None and not thread.busy:
            thread.busy = True
            self.state.fail(thread, err, reason)
            return
        self.state.count_error(err, thread)
        self._raw_answer(conn, encode_error(err, reason))

    def _raw_answer(self, conn: bytes, header: bytes) -> None:
        """An answer to the connection whose message is being handled, bound or not."""
        send = self._port.send
        send(conn, _SNDMORE)
        send(header, 0)

    def _hello(self, conn: bytes, secret: bytes) -> None:
        k = self.state
        if self._port is self.rt:
            self._rt_move(conn, secret)
            return
        thread = k.secrets.get(secret)
        if thread is None or not thread.alive:
            k.stats["unauthenticated"] += 1
            self._refuse(conn, None, Err.NOT_AUTH, "unknown or already used secret")
            return
        # Linux gives a new connection the lowest free fd, often the one a connection that
        # just closed had: settle every disconnection reported so far before recording ours.
        self._disconnections()
        fd = int(self._frame.get(zmq.SRCFD)) if self._frame is not None else -1
        refusal = self._wrong_peer(thread.task, fd)
        if refusal is not None:
            # The secret stays unused: a process that learned it cannot spend it, and the
            # task's own process can still connect.
            k.stats["unauthenticated"] += 1
            k.stats["wrong_process"] += 1
            self._refuse(conn, None, Err.NOT_AUTH, refusal)
            return
        del k.secrets[secret]
        if self.rt is not None and self._port is self.local:
            self.rt_secrets[secret] = thread
        self._bind(thread, conn, fd)

    def _bind(self, thread: Thread, conn: bytes, fd: int) -> None:
        """`thread` is the connection `conn` (kernel-side fd `fd`) of the port being served."""
        thread.conn, thread.port = conn, self._port
        thread.conn_fd, thread.conn_ino = fd, _socket_inode(fd)
        self.conns[conn] = thread
        self.conn_fds.setdefault(thread.conn_fd, set()).add(thread)
        k = self.state
        self._raw_answer(conn, encode_ok([thread.task.id, thread.id, thread.task.name, k.pid]))

    def _rt_move(self, conn: bytes, secret: bytes) -> None:
        """HELLO on the real-time port: a thread bound on kernel.sock moves its connection
        here (the module's docstring says who may)."""
        k = self.state
        thread = self.rt_secrets.get(secret)
        if thread is None or not thread.alive or thread.conn is None:
            k.stats["unauthenticated"] += 1
            self._refuse(conn, None, Err.NOT_AUTH, "unknown secret: the real-time port takes "
                                                   "a thread bound on kernel.sock, by its own "
                                                   "secret, once")
            return
        fd = -1
        if thread.busy:
            refusal: tuple[Err, str] | None = (
                Err.BUSY, f"thread {thread.id} has a call in flight on its connection")
        else:
            self._disconnections()
            fd = int(self._frame.get(zmq.SRCFD)) if self._frame is not None else -1
            refusal = self._rt_refusal(thread.task, fd)
        if refusal is not None:
            self._refuse(conn, None, *refusal)
            return
        del self.rt_secrets[secret]
        self._off_port(thread)
        k.stats["rt_moves"] += 1
        self._bind(thread, conn, fd)

    def _rt_refusal(self, task: Task, fd: int) -> tuple[Err, str] | None:
        """Why `task`'s thread may not move to the real-time port over connection `fd`."""
        why = self._wrong_peer(task, fd)
        if why is not None:
            self.state.stats["wrong_process"] += 1
            self.state.stats["unauthenticated"] += 1
            return Err.NOT_AUTH, why
        peer = peer_cred(fd)
        if peer is None or realtime_thread(peer.pid) is None:
            return (Err.NO_RIGHTS, f"task '{task.name}': process "
                    f"{peer.pid if peer else '?'} holds no real-time host policy "
                    f"(SCHED_DEADLINE, SCHED_FIFO or SCHED_RR) on any thread; the real-time "
                    f"port is for reserved jobs and the servers working for them (the CPU "
                    f"reservation manager, servers/rt)")
        return None

    def _wrong_peer(self, task: Task, fd: int) -> str | None:
        """Why the process at the other end of connection `fd` may not be `task`'s thread.

        A local (`ipc://`) connection must come from the task's process: the one TASK_WATCH
        named, or before that the one its first thread connected from, which TASK_WATCH
        then checks (`syscalls.sys_task_watch`). Linux says who connected (SO_PEERCRED);
        nothing the peer sends can change it. A tcp:// peer has no such credentials: it
        proves itself by the secret alone, over CurveZMQ."""
        if self._port is self.tcp:
            return None
        peer = peer_cred(fd)
        if peer is None:
            return "the kernel cannot read this connection's peer credentials"
        expected = task.pid if task.pidfd is not None else task.peer_pid
        if expected is not None and peer.pid != expected:
            return (f"process {peer.pid} is not task '{task.name}''s process ({expected}); "
                    f"a secret is good only from its task's own process")
        task.peer_pid = peer.pid
        return None

    # -- death detection -------------------------------------------------------------
    def _process_died(self, fd: int) -> None:
        task = self.pidfds.get(fd)
        if task is None:
            return
        status = lifecycle.pid_status(task.pid) if task.pid else None
        self.state.stats["tasks_died"] += 1
        lifecycle.kill_task(self.state, task, f"process {task.pid} exited", status)

    def _disconnections(self) -> None:
        """Threads whose connection closed are gone: a main thread takes its task with it,
        another thread dies alone (its secret is spent; nothing can take its place)."""
        for port in self.ports:
            while port.mon_events(_EVENTS) & _POLLIN:   # unthrottled, unlike a NOBLOCK recv
                # [event:u16 value:u32, endpoint] (zmq.utils.monitor would import asyncio:
                # 80 ms of kernel start-up)
                event, fd = _MONITOR_EVENT.unpack_from(port.monitor.recv_multipart()[0])
                if event == zmq.EVENT_DISCONNECTED:
                    self._connection_lost(self._closed_on(fd))

    def _closed_on(self, fd: int) -> set[Thread]:
        """The threads whose connection a DISCONNECTED event for `fd` ended. The event may be
        read after Linux gave the fd number to a new connection that has said HELLO since
        (seen under load: a task killed at its start for its predecessor's close); or before
        libzmq closed the fd (it reports first). A thread whose own socket (by inode) is still
        open at `fd` is looked at again after RECHECK_MS: still open, it was not the one that
        closed; gone, it was."""
        threads = self.conn_fds.get(fd, set())      # a thread killed leaves it (`unbind`)
        ino = _socket_inode(fd)
        open_still = {t for t in threads if ino and t.conn_ino == ino}
        if open_still:
            self.state.timers.later(RECHECK_MS, lambda: self._recheck(fd, open_still))
        return threads - open_still

    def _recheck(self, fd: int, threads: set[Thread]) -> None:
        ino = _socket_inode(fd)
        bound = {t for t in threads if t.conn is not None and t.conn_fd == fd}
        gone = {t for t in bound if t.conn_ino != ino}
        self.state.stats["stale_disconnections"] += len(bound) - len(gone)
        self._connection_lost(gone)

    def _connection_lost(self, threads: set[Thread]) -> None:
        k = self.state
        for thread in sorted(threads, key=lambda t: t.id):
            if thread.conn is None or not thread.alive:
                continue
            k.stats["connections_lost"] += 1
            why = "connection to the kernel was lost"
            if thread is thread.task.threads[0]:
                print(f"[kernel] task '{thread.task.name}': its main thread's connection (fd "
                      f"{thread.conn_fd}) closed", file=sys.stderr, flush=True)
                lifecycle.kill_task(k, thread.task, f"its main thread's {why}", None)
            else:
                lifecycle.destroy(k, thread, f"its {why}")

    # -- timers ------------------------------------------------------------------------
    def _expire(self, thread: Thread) -> None:
        """`thread`'s timer ran out: a chaos delay ends (the held message goes on), or the
        wait it was set for ends (`ipc.expire`)."""
        if thread.state == TState.SENDING and faults.HELD and faults.release(self.state, thread):
            return
        ipc.expire(self.state, thread)

    # -- the loop -------------------------------------------------------------------------
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
        poller = self.poller.poll
        # The compiled fast path polls, and drains ready ports, without coming back here.
        cpoll = fastpath.compiled.poll if self._compiled is not None else None
        wakeup = self._wakeup
        ports = self._by_socket
        timers = self.state.timers
        mem_fds = self.state.memory.channel.fds
        k = self.state
        linux_fds = k.linux.listeners
        rt_first = self._rt_first if self.rt is not None else None
        while self.running:
            ready = cpoll(self, timers) if cpoll is not None else poller(timers.next_ms())
            if rt_first is not None and len(ready) > 1:
                ready.sort(key=rt_first)
            for sock, _ in ready:
                port = ports.get(sock)
                if port is not None:
                    if sock is port.router:
                        self._drain(port)
                    else:
                        self._guard(self._disconnections)
                elif sock == wakeup:
                    os.read(wakeup, 512)
                elif sock in mem_fds:
                    self._guard(self.state.memory.channel.ready, sock)
                elif sock in linux_fds:
                    self._guard(linux.ready, k, sock)
                else:
                    self._guard(self._process_died, sock)
            for thread in timers.due():
                self._guard(self._expire, thread)
            if timers.calls:
                for fn in timers.due_calls():
                    self._guard(fn)
            if linux_fds or k.linux.by_pid:
                self._guard(linux.reap, k)

    def _rt_first(self, item: tuple[Any, int]) -> int:
        """The sort key that puts the real-time port's ROUTER first among ready sockets."""
        return 0 if item[0] is self.rt.router else 1      # type: ignore[union-attr]

    def _drain(self, port: Port) -> None:
        """Serve what waits on `port`; the real-time port's messages go first (the module's
        docstring)."""
        rt = self.rt
        while self._drain_port(port, rt if rt is not None and port is not rt and rt.conns
                               else None):
            self.state.stats["rt_first"] += 1
            self._drain_port(rt, None)         # type: ignore[arg-type]

    def _drain_port(self, port: Port, urgent: Port | None) -> bool:
        """Serve `port` until nothing waits (False) or a message waits on `urgent` (True)."""
        self._port, self.conns = port, port.conns
        if self._compiled is not None:     # the compiled fast path; the rest to _handle
            return self._compiled(self, port, urgent.handle if urgent is not None else 0)
        # Asking for EVENTS is cheaper than a non-blocking recv that raises zmq.Again.
        events = port.events
        first = urgent.events if urgent is not None else None
        while True:
            if first is not None and first(_EVENTS) & _POLLIN:
                return True
            if not events(_EVENTS) & _POLLIN:
                return False
            self._guard(self._handle, self._read())

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            # A kernel bug must not take the system down; it is counted and reported.
            self.state.stats["kernel_bugs"] += 1
            print("[kernel] internal error (counted, loop continues):\n" + traceback.format_exc(),
                  file=sys.stderr, flush=True)
            if fn == self._handle and args:
                thread = self.conns.get(args[0][0])
                if thread is not None and thread.busy:
                    try:
                        self.state.fail(thread, Err.INVALID, "kernel internal error; call aborted")
                    except Exception:
                        pass

    def close(self) -> None:
        self.state.linux.close()
        self.state.memory.close()
        for fd in list(self.pidfds):
            os.close(fd)
        self.pidfds.clear()
        for port in self.ports:
            port.close()
        self.poller.close()
        self.ctx.term()
        if self.rt_ctx is not None:
            self.rt_ctx.term()
        paths = [self.sock_path, os.path.join(self.run_dir, TCP_INFO)]
        for path in paths + ([self.rt_path] if self.rt is not None else []):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def secure_run_dir(run_dir: str) -> None:
    """Make `run_dir` a place where only we (or root) can create, rename or remove names,
    so kernel.sock cannot be replaced by a socket of someone else's, while processes of
    any uid may still reach the socket inside: owned by us or root, not writable by group
    or others (those bits are removed), searchable by all (added). Raises SystemExit if
    someone else owns it."""
    st = os.stat(run_dir)
    if st.st_uid not in (os.geteuid(), 0):
        raise SystemExit(f"kernel: run directory {run_dir} belongs to uid {st.st_uid}: whoever "
                         f"owns it could replace kernel.sock")
    mode = stat.S_IMODE(st.st_mode)
    want = (mode & ~0o022) | 0o111
    if want != mode:
        os.chmod(run_dir, want)


def write_tcp_info(run_dir: str, port: Port) -> None:
    """RUN_DIR/kernel.tcp: {"endpoint", "public_key"} — what a remote task needs besides its
    one-time secret (the key is public: it lets the task check it talks to this kernel)."""
    path = os.path.join(run_dir, TCP_INFO)
    with open(path + ".tmp", "w") as f:
        json.dump({"endpoint": port.endpoint, "public_key": port.public_key.decode()}, f)
    os.replace(path + ".tmp", path)


def _root_secret(run_dir: str) -> bytes:
    """The root task's one-time secret: from L4_ROOT_SECRET (hex), or a new one written to
    RUN_DIR/root.secret (mode 0600) for whoever starts the root task."""
    hexsecret = os.environ.pop("L4_ROOT_SECRET", "")
    if hexsecret:
        return bytes.fromhex(hexsecret)
    secret = secrets.token_bytes(16)
    fd = os.open(os.path.join(run_dir, "root.secret"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                 0o600)
    os.write(fd, secret.hex().encode())
    os.close(fd)
    return secret


def _arguments(argv: list[str] | None) -> Any:
    import argparse
    p = argparse.ArgumentParser(prog="python -m kernel", description="The L4Py kernel process.")
    p.add_argument("--run-dir", required=True, help="directory for kernel.sock")
    p.add_argument("--root-quota", type=int, default=ROOT_QUOTA)
    p.add_argument("--die-with-parent", action="store_true",
                   help="exit when the process that started us exits")
    p.add_argument("--nice", type=int, default=-10,
                   help="scheduling niceness of the kernel (default -10; needs privilege, else ignored)")
    p.add_argument("--ram", type=int, default=memory.DEFAULT_RAM >> 20,
                   help="size of physical RAM in MiB (default 64)")
    p.add_argument("--ram-bytes", type=int, metavar="N",
                   help="size of physical RAM in bytes, a multiple of 4096 (overrides --ram)")
    p.add_argument("--tcp", metavar="HOST:PORT",
                   help="also listen on tcp://HOST:PORT (CurveZMQ) for tasks on other machines; "
                        "port 0 picks one. The endpoint and the kernel's public key are written "
                        "to RUN_DIR/kernel.tcp")
    p.add_argument("--rt-port", action="store_true",
                   help=f"also listen on RUN_DIR/{RT_SOCK}, the real-time port: threads of "
                        f"processes holding a real-time host policy move there, and their "
                        f"messages are served first")
    p.add_argument("--no-fastpath", action="store_true",
                   help="serve every call through the generic path (to compare; same semantics)")
    p.add_argument("--profile", metavar="FILE",
                   help="run the loop under cProfile and write its statistics to FILE at exit")
    p.add_argument("--cpu", default=os.environ.get("L4PY_KERNEL_CPU", "auto"),
                   metavar="N|auto|none",
                   help="keep the kernel's threads (its loop and ZeroMQ's I/O thread) on one "
                        "CPU: auto (the last one the process may use, with 2 or more), a "
                        "CPU number, or none (let the host move them); default "
                        "$L4PY_KERNEL_CPU or auto")
    p.add_argument("-v", "--verbose", action="store_true")
    ns = p.parse_args(argv)
    if ns.cpu not in ("auto", "none") and not (ns.cpu.isdigit()
                                              and int(ns.cpu) in os.sched_getaffinity(0)):
        p.error(f"--cpu {ns.cpu}: not auto, none or a CPU this process may use "
                f"({sorted(os.sched_getaffinity(0))})")
    if ns.ram_bytes is not None:
        if ns.ram_bytes <= 0 or ns.ram_bytes % 4096:
            p.error(f"--ram-bytes {ns.ram_bytes}: must be a positive multiple of 4096")
        ns.ram = ns.ram_bytes
    else:
        ns.ram = ns.ram << 20
    return ns


def pin_cpu(choice: str) -> int | None:
    """Keep this process's threads on one CPU (`--cpu`); done before ZeroMQ starts its I/O
    thread, which inherits it. The loop and the I/O thread hand every message to each other
    (an eventfd and a wake-up each way): on one CPU a wake-up is local, across two each is
    an inter-processor interrupt. Measured (bench ipc's 16-client, 4-server-thread load,
    2 vCPUs under KVM): kernel CPU per call 53 → 32 µs, calls/s 14,900 → 19,100; two
    thirds of the I/O thread's samples were the host's context switch. The CPU manager
    lets the threads run on every CPU while it boosts them (servers/rt/server.py
    `_spread`; the host admits deadline threads only on every CPU of their domain).
    Returns the CPU, or None."""
    allowed = sorted(os.sched_getaffinity(0))
    if choice == "none" or (choice == "auto" and len(allowed) < 2):
        return None
    cpu = allowed[-1] if choice == "auto" else int(choice)
    os.sched_setaffinity(0, {cpu})
    return cpu


def main(argv: list[str] | None = None) -> int:
    from ..osutil import die_with_parent, freeze_heap

    ns = _arguments(argv)
    if ns.die_with_parent:
        die_with_parent(signal.SIGTERM)   # SIGTERM: we still remove our socket
    if ns.nice:
        # The kernel is on every IPC's path: let it run before the tasks it serves. Done
        # before ZeroMQ starts its I/O thread, which inherits the niceness.
        try:
            os.setpriority(os.PRIO_PROCESS, 0, ns.nice)
        except OSError:
            pass
    cpu = pin_cpu(ns.cpu)
    os.makedirs(ns.run_dir, exist_ok=True)
    t = Transport(ns.run_dir, _root_secret(ns.run_dir), ns.root_quota, ns.verbose,
                  ram=ns.ram, tcp=ns.tcp, rt_port=ns.rt_port)
    t.use_fastpath(not ns.no_fastpath)
    why = f" ({fastpath.WHY_PYTHON})" if t.state.fast_path == "python" else ""
    print(f"[kernel] fast path: {t.state.fast_path}{why}; "
          f"{'on CPU ' + str(cpu) if cpu is not None else 'on any CPU'}", file=sys.stderr,
          flush=True)
    if t.tcp is not None:
        write_tcp_info(ns.run_dir, t.tcp)
    t.stop_on_signals(signal.SIGTERM, signal.SIGINT)
    freeze_heap()
    try:
        if ns.profile:
            import cProfile
            cProfile.runctx("t.run()", globals(), locals(), ns.profile)
        else:
            t.run()
    except KeyboardInterrupt:
        pass
    finally:
        t.close()
    return 0
