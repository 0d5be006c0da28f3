"""The task-side library: what an L4 thread uses to talk to the kernel.

`L4` is one L4 thread: one DEALER connection to the kernel, bound to a kernel thread object
by the thread's one-time secret (HELLO). Its methods are the system calls, synchronous.
`kernel.user.aio.AsyncL4` offers the same methods as coroutines (asyncio/uvloop); both share the
request building and answer parsing below (`_Api`), only the transport differs.

Contract: one call at a time per `L4` object (an L4 thread is sequential); use one `L4`
per OS thread or coroutine that must block independently (`spawn_thread`).
Errors are raised as `kernel.user.errors` exceptions, named by whose fault they were.
Timeouts are milliseconds; None waits forever, 0 polls.

The plain call (data only: no items, no window, default timeouts) and the plain
reply_and_wait are the library's hot path (issue 21: under load the task library's Python
cost a client more CPU per call than ZeroMQ did). They skip the argument records: `L4.call`
packs a capability's CALL header once per thread and reuses it, `reply_wait_frames` packs
its header in one step, and `parse_answer` reads a receipt straight into a `Message`. Each
produces byte for byte what the general path produces (tests/kernel/test_callpath.py
compares them), so the kernel sees the same request and every answer and error (Timeout,
PeerDied, ...) comes back the same way; anything else takes the general path. The frames of
every request and answer of an `L4` go through `_callpath` (kernel/user/_callpath.pyx,
libzmq's C API, built by the install when it can be) with pyzmq's semantics, else through
pyzmq (`CALLPATH` says which; `L4PY_CALLPATH=python` forces pyzmq).
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import msgpack
import zmq

from . import errors
from ..abi import (RT_SOCK, DMA_RANGE, DMA_WRITE, SLOT_FACTORY, SLOT_KERNEL, SLOT_TASK, SLOT_THREAD, AbiError, CallArgs,
                   CapDeleteArgs, CapDeriveArgs, CapInspectArgs, CapRevokeArgs, ExitArgs,
                   FactoryInfoArgs, FaultArgs, GateBindArgs, GateCreateArgs, HelloArgs,
                   IrqAttachArgs, IrqCreateArgs, IrqMaskArgs, IrqTriggerArgs, Item,
                   KernelInfoArgs, TraceArgs, LinuxAttachArgs, LinuxMemReadArgs, LinuxMemWriteArgs, LinuxAddfdArgs,
                   MemAttachArgs, MemDmaArgs, MemDmaCheckArgs, MemFaultArgs, MemQueryArgs, MemSigma0Args,
                   MemUnmapArgs, ObjDestroyArgs, Receipt, ReplyArgs, ReplyWaitArgs, Rights,
                   SendArgs, TaskCreateArgs, TaskMapArgs, TaskWatchArgs, ThreadControlArgs,
                   Sys, ThreadCreateArgs, WaitArgs, decode_answer, encode_args, pack,
                   timeout_arg, unpack)
from ..osutil import load_compiled, pid_alive, realtime_policy

ENV_KERNEL = "L4_KERNEL"     # path of kernel.sock
ENV_SECRET = "L4_SECRET"     # hex one-time secret of the main thread
ENV_CAPS = "L4_CAPS"         # JSON {name: slot} of the capabilities the launcher mapped
ENV_THREADS = "L4_THREADS"   # comma-separated hex secrets of extra threads made for us
ENV_KERNEL_KEY = "L4_KERNEL_KEY"   # the kernel's CurveZMQ public key (z85), for tcp://
ENV_SECRET_FD = "L4_SECRET_FD"     # an inherited pipe holding {"secret": hex, "threads": [hex]}
_SNDMORE = int(zmq.SNDMORE)
_CALL, _REPLY_WAIT = int(Sys.CALL), int(Sys.REPLY_WAIT)
_NEVER = timeout_arg(None)
_packb, _unpackb = msgpack.packb, msgpack.unpackb
_RT_CTX: zmq.Context | None = None   # this process's context for real-time connections
_PLAIN_CACHE = 64             # CALL headers an L4 keeps (capability, proto) before starting over
# The compiled frames (`_callpath.pyx`): built by the install when it can be; without them,
# or with L4PY_CALLPATH=python, pyzmq's calls. CALLPATH says which runs.
_cp, WHY_PYTHON = load_compiled("kernel.user._callpath", "L4PY_CALLPATH",
                                 "the compiled call path")
CALLPATH = "compiled" if _cp is not None else "python"
_REMOTE_TROUBLE = (zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                   | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class Message(NamedTuple):
    """A received message: the kernel's receipt (`abi.Receipt`) and the data.
    `label`/`rights` come from the kernel, never from the sender."""
    label: int
    rights: int
    reply: int          # one-shot reply capability (0: the sender does not wait for a reply)
    proto: int
    items: list         # [[kind, slot, rights], ...] capabilities that arrived, in our slots
    data: bytes

    def body(self) -> Any:
        """The data decoded as msgpack (kernel messages and `rpc` protocols use it)."""
        return unpack(self.data)


class NewTask(NamedTuple):
    slot: int           # our capability to the task
    thread: int         # our capability to its main thread (set its pager/handler with it)
    secret: bytes
    task_id: int
    thread_id: int


class NewThread(NamedTuple):
    slot: int
    secret: bytes
    thread_id: int


def map_cap(slot: int, rights: int = Rights.ALL) -> list[int]:
    """Item: the receiver gets a copy of `slot` with rights reduced to `rights`."""
    return [int(Item.MAP_CAP), slot, int(rights)]


def grant_cap(slot: int, rights: int = Rights.ALL) -> list[int]:
    """Item: `slot` moves to the receiver (we lose it)."""
    return [int(Item.GRANT_CAP), slot, int(rights)]


def _window(window: tuple[int, ...] | None) -> list[int] | None:
    # (first_slot, count) or (first_slot, count, mem_vaddr, mem_order): see kernel.user.vm.window
    return list(window) if window is not None else None


def _items(items: Iterable[list[int]]) -> list[list[int]]:
    return [list(i) for i in items]


def hello_frames(secret: bytes) -> list[bytes]:
    """The HELLO request: bind this connection to the thread the secret was made for."""
    return [encode_args(HelloArgs(secret))]


def wait_frames(timeout: float | None, window: tuple[int, ...] | None) -> list[bytes]:
    """The WAIT request (`_Api.wait` sends it and waits; `MultiWait` only sends it)."""
    return [encode_args(WaitArgs(_window(window), timeout_arg(timeout)))]


def plain_call_header(cap: int, proto: int) -> bytes:
    """The CALL header of a plain call: `encode_args(CallArgs(cap, proto, [], NEVER, NEVER,
    None))`, packed in one step (`L4.call` keeps it per thread)."""
    return _packb([_CALL, cap, proto, [], _NEVER, _NEVER, None])


def reply_wait_frames(reply: int, data: bytes, proto: int, items: Iterable[list[int]],
                      timeout: float | None, window: tuple[int, ...] | None) -> list[bytes]:
    """The REPLY_WAIT request (`_Api.reply_and_wait` sends it and waits; `MultiWait` only
    sends it). The plain one (no items, no window, no timeout) is packed in one step: the
    bytes `encode_args(ReplyWaitArgs(...))` gives."""
    if (not items and window is None and timeout is None and type(reply) is int
            and type(proto) is int):
        hdr = _packb([_REPLY_WAIT, reply, proto, [], None, _NEVER])
        return [hdr, data] if data else [hdr]
    hdr = encode_args(ReplyWaitArgs(reply, proto, _items(items), _window(window),
                                    timeout_arg(timeout)))
    return [hdr, data] if data else [hdr]


_new_message = tuple.__new__       # Message(...) without its Python-level __new__


def parse_answer(frames: list[bytes], receiving: bool) -> Any:
    """The value of an answer (a `Message` for a receiving call); raises the error.
    A receipt as the kernel packs it ([0, label, rights, reply, proto, items]) is read
    straight into the Message; anything else is decoded and checked by `decode_answer`."""
    if receiving:
        try:
            ans = _unpackb(frames[0])
        except Exception:
            ans = None
        if type(ans) is list and len(ans) == 6 and ans[0] == 0:
            return _new_message(Message, (ans[1], ans[2], ans[3], ans[4], ans[5],
                                          frames[1] if len(frames) > 1 else b""))
    try:
        err, value = decode_answer(frames[0], receiving)
    except AbiError as e:
        raise errors.ProtocolViolation(e.reason) from None
    if err:
        raise errors.from_code(err, value)
    if receiving:
        r: Receipt = value
        return Message(r.label, r.rights, r.reply, r.proto, r.items,
                       frames[1] if len(frames) > 1 else b"")
    return value


class _Api:
    """Every system call, as request building plus answer shaping; transport in subclasses."""

    kernel_pid: int = 0
    caps: dict[str, int]

    def _do(self, frames: list[bytes], receiving: bool = False,
            shape: Callable[[Any], Any] | None = None) -> Any:
        raise NotImplementedError

    def _req(self, args: tuple[Any, ...], data: bytes | None = None, receiving: bool = False,
             shape: Callable[[Any], Any] | None = None) -> Any:
        """Send the request built from argument record `args` and wait for its answer."""
        hdr = encode_args(args)
        return self._do([hdr, data] if data else [hdr], receiving, shape)

    # -- IPC -----------------------------------------------------------------
    def send(self, cap: int, data: bytes = b"", *, proto: int = 0, items: Iterable[list[int]] = (),
             timeout: float | None = None) -> Any:
        return self._req(SendArgs(cap, proto, _items(items), timeout_arg(timeout)), data=data)

    def call(self, cap: int, data: bytes = b"", *, proto: int = 0, items: Iterable[list[int]] = (),
             snd_timeout: float | None = None, rcv_timeout: float | None = None,
             window: tuple[int, int] | None = None) -> Any:
        return self._req(CallArgs(cap, proto, _items(items), timeout_arg(snd_timeout),
                                  timeout_arg(rcv_timeout), _window(window)),
                         data=data, receiving=True)

    def wait(self, *, timeout: float | None = None, window: tuple[int, int] | None = None) -> Any:
        return self._do(wait_frames(timeout, window), True)

    def reply(self, reply: int, data: bytes = b"", *, proto: int = 0,
              items: Iterable[list[int]] = ()) -> Any:
        return self._req(ReplyArgs(reply, proto, _items(items)), data=data)

    def reply_and_wait(self, reply: int, data: bytes = b"", *, proto: int = 0,
                       items: Iterable[list[int]] = (), timeout: float | None = None,
                       window: tuple[int, int] | None = None) -> Any:
        return self._do(reply_wait_frames(reply, data, proto, items, timeout, window), True)

    # -- capabilities ----------------------------------------------------------
    def cap_delete(self, slot: int) -> Any:
        return self._req(CapDeleteArgs(slot))

    def cap_revoke(self, slot: int) -> Any:
        return self._req(CapRevokeArgs(slot))

    def cap_inspect(self, slot: int) -> Any:
        return self._req(CapInspectArgs(slot))

    def cap_derive(self, src: int, mask: int, dst: int | None = None) -> Any:
        return self._req(CapDeriveArgs(src, dst, int(mask)))

    def destroy(self, slot: int) -> Any:
        return self._req(ObjDestroyArgs(slot))

    # -- factories -----------------------------------------------------------------
    def create_gate(self, label: int = 0, thread: int | None = SLOT_THREAD, *,
                    factory: int = SLOT_FACTORY, dst: int | None = None) -> Any:
        return self._req(GateCreateArgs(factory, thread, label, dst))

    def create_irq(self, *, factory: int = SLOT_FACTORY, dst: int | None = None) -> Any:
        return self._req(IrqCreateArgs(factory, dst))

    def create_thread(self, task: int = SLOT_TASK, *, factory: int = SLOT_FACTORY,
                      dst: int | None = None) -> Any:
        return self._req(ThreadCreateArgs(factory, task, dst), shape=lambda r: NewThread(*r))

    def create_task(self, name: str, quota: int = 256, *, factory: int = SLOT_FACTORY,
                    dst: int | None = None) -> Any:
        return self._req(TaskCreateArgs(factory, name, quota, dst), shape=lambda r: NewTask(*r))

    def factory_info(self, factory: int = SLOT_FACTORY) -> Any:
        return self._req(FactoryInfoArgs(factory))

    # -- binding and control ------------------------------------------------------------
    def bind_gate(self, gate: int, thread: int = SLOT_THREAD) -> Any:
        return self._req(GateBindArgs(gate, thread))

    def irq_attach(self, irq: int, thread: int | None = SLOT_THREAD, label: int = 0) -> Any:
        return self._req(IrqAttachArgs(irq, thread, label))

    def irq_trigger(self, irq: int) -> Any:
        return self._req(IrqTriggerArgs(irq))

    def irq_mask(self, irq: int, masked: bool | None) -> Any:
        return self._req(IrqMaskArgs(irq, masked))

    def thread_control(self, thread: int = SLOT_THREAD, *, pager: int | None = None,
                       handler: int | None = None, alien: bool | None = None,
                       priority: int | None = None) -> Any:
        """Set pager/handler gates (0 clears), the alien flag, the priority (0..255)."""
        return self._req(ThreadControlArgs(thread, pager, handler, alien, priority))

    def task_map(self, task: int, src: int, dst: int, rights: int = Rights.ALL) -> Any:
        return self._req(TaskMapArgs(task, src, dst, int(rights)))

    def task_watch(self, task: int, pid: int) -> Any:
        return self._req(TaskWatchArgs(task, pid))

    def kernel_info(self, kernel: int = SLOT_KERNEL) -> Any:
        return self._req(KernelInfoArgs(kernel))

    def fault(self, op: str, spec: dict[str, Any] | None = None, *,
              kernel: int = SLOT_KERNEL) -> Any:
        """Fault injection (kernel capability): op add/remove/list/log/crash (docs/CHAOS.md)."""
        return self._req(FaultArgs(kernel, op, pack(spec) if spec else b""))

    def trace(self, action: str, limit: int = 0, *, kernel: int = SLOT_KERNEL) -> Any:
        """The kernel's IPC trace (kernel capability): on [capacity], off, status, drain
        [at most limit events] (kernel/ABI.md, TRACE)."""
        return self._req(TraceArgs(kernel, action, limit))

    def exit(self, status: int = 0) -> Any:
        return self._req(ExitArgs(status))

    # -- L⁴Linux (docs/L4LINUX.md; kernel.user.linux starts the processes) ----------------------
    def linux_attach(self, task: int, handler: int, pid: int, fd: int) -> Any:
        """Process `pid` (our child, trap filter installed, its listener at `fd`) becomes
        task `task`'s, its main thread alien with exception handler gate `handler`; the
        kernel takes the listener. BUSY: not installed yet, try again."""
        return self._req(LinuxAttachArgs(task, handler, pid, fd))

    def linux_mem_read(self, task: int, addr: int, length: int) -> Any:
        return self._req(LinuxMemReadArgs(task, addr, length))

    def linux_mem_write(self, task: int, addr: int, data: bytes) -> Any:
        return self._req(LinuxMemWriteArgs(task, addr), data=data if data else None)

    def linux_addfd(self, task: int, fd: int, target: int) -> Any:
        """Our descriptor `fd` becomes descriptor `target` of Linux task `task`'s process
        (waiting in a trapped call)."""
        return self._req(LinuxAddfdArgs(task, fd, target))

    # -- memory (kernel.user.vm is the address-space view built on these) ---------------------
    def mem_attach(self, signal: bool = False, task: int = SLOT_TASK) -> Any:
        """Join the RAM (our own task capability, WRITE): {channel, token, kernel_pid, size,
        frames, epoch, dma}; `kernel.user.vm` connects the channel and maps what comes."""
        return self._req(MemAttachArgs(task, signal))

    def mem_dma(self, task: int, kernel: int = SLOT_KERNEL) -> Any:
        """(kernel capability) `task` becomes the machine's DMA engine: sent every frame."""
        return self._req(MemDmaArgs(kernel, task))

    def mem_dma_check(self, task: int, ranges: Sequence[tuple[int, int, bool]]) -> Any:
        """(the DMA engine) may a device whose DMA domain is task capability `task` access
        these (physical address, length, device writes) ranges? NoRights names a page not."""
        raw = b"".join(DMA_RANGE.pack(a, n, DMA_WRITE if w else 0) for a, n, w in ranges)
        return self._req(MemDmaCheckArgs(task), data=raw)

    def mem_fault(self, vaddr: int, access: int, ip: int = 0) -> Any:
        """Page fault: answers [frame, rights] once the page is mapped for `access`."""
        return self._req(MemFaultArgs(vaddr, int(access), ip))

    def mem_unmap(self, vaddr: int, order: int, self_too: bool = False) -> Any:
        """Unmap everything derived from our flexpage, in every task; returns once all
        affected tasks acknowledged (the shootdown). Answers the number of mappings removed."""
        return self._req(MemUnmapArgs(vaddr, order, self_too))

    def mem_sigma0(self, task: int, kernel: int = SLOT_KERNEL) -> Any:
        return self._req(MemSigma0Args(kernel, task))

    def mem_query(self, vaddr: int, order: int, task: int | None = None) -> Any:
        """The kernel's page table for a flexpage: [[vaddr, frame, rights], ...]."""
        return self._req(MemQueryArgs(task, vaddr, order))


class MultiWait:
    """Several L4 threads of one task served from one OS thread (an L4 server's thread pool
    without OS threads): every thread waits in reply_and_wait at the same time, so up to
    `len(threads)` calls can be delivered to the task at once, and `next()` hands out the
    first that arrived on any thread.

        pool = MultiWait([l4, *l4.threads_from_env()])
        while True:
            t, msg = pool.next()
            pool.reply_and_wait(t, msg.reply, answer(msg))

    Each thread stays sequential: after `next()` gave you its message, answer it with
    `reply_and_wait` (which returns at once; that thread's next message comes from `next()`).
    Kernel errors of a thread's call are raised from `next()`; that thread is then idle and
    is waited on again."""

    def __init__(self, threads: list[L4], window: tuple[int, ...] | None = None) -> None:
        self.threads = threads
        self.window = window
        # The wait on every thread's socket: compiled (`_callpath.Waiter`, its item array
        # built once), else pyzmq's Poller; either answers the threads with a message.
        if _cp is not None:
            self._waiter = _cp.Waiter([t.sock for t in threads])
            self._poll = self._compiled_poll
        else:
            self._poller = zmq.Poller()
            for t in threads:
                self._poller.register(t.sock, zmq.POLLIN)
            self._poll = self._pyzmq_poll
        self._by_sock = {t.sock: t for t in threads}
        for t in threads:
            t._secret = b""           # its socket is polled here: it never moves (rt port)
            self._wait(t)
        self._ready: list[Any] = []

    def _compiled_poll(self, timeout_ms: int) -> list[L4]:
        threads = self.threads
        return [threads[i] for i in self._waiter.wait(timeout_ms)]

    def _pyzmq_poll(self, timeout_ms: int) -> list[L4]:
        return [self._by_sock[s] for s, _ in self._poller.poll(timeout_ms)]

    def _wait(self, t: L4) -> None:
        t._post(wait_frames(None, self.window))

    def reply_and_wait(self, t: L4, reply: int, data: bytes = b"", *, proto: int = 0,
                       items: Iterable[list[int]] = ()) -> None:
        t._post(reply_wait_frames(reply, data, proto, items, None, self.window))

    def next(self, timeout: float | None = None) -> tuple[L4, Message] | None:
        """The next message on any thread, or None after `timeout` ms without one."""
        while not self._ready:
            self._ready = self._poll(-1 if timeout is None else int(timeout))
            if not self._ready:
                return None
        t = self._ready.pop(0)
        try:
            return t, parse_answer(t._answer(), True)
        except errors.L4Error:
            self._wait(t)
            raise


def connect_remote(sock: zmq.Socket, endpoint: str, key: bytes | None) -> tuple[bytes, Any]:
    """Connect a DEALER to a `tcp://` kernel: CurveZMQ with the kernel's public key (given,
    or L4_KERNEL_KEY) and a fresh key pair of ours, ZMTP heartbeats. Answers the key and a
    monitor socket that reports a lost connection or a failed handshake (`trouble_text`)."""
    key = key or os.environ.get(ENV_KERNEL_KEY, "").encode()
    if len(key) != 40:
        sock.close(0)
        raise errors.NotAuthenticated(f"{endpoint} is a remote kernel: its CurveZMQ public "
                                      f"key (40 z85 characters, {ENV_KERNEL_KEY}) is needed")
    sock.curve_serverkey = key
    sock.curve_publickey, sock.curve_secretkey = zmq.curve_keypair()
    sock.heartbeat_ivl = 1000                    # notice a kernel that vanished
    sock.heartbeat_timeout = 3000
    monitor = sock.get_monitor_socket(_REMOTE_TROUBLE)
    sock.connect(endpoint)
    return key, monitor


def close_connection(sock: zmq.Socket, monitor: Any) -> None:
    """Close a thread's DEALER (and its remote-connection monitor): the kernel then ends the
    thread (a main thread: its task)."""
    if monitor is not None:
        sock.disable_monitor()
        monitor.close(0)
    sock.close(0)


def trouble_text(event_frame: bytes) -> str:
    event = zmq.Event(int.from_bytes(event_frame[:2], "little"))
    return "the connection was lost" if event == zmq.EVENT_DISCONNECTED else \
        f"the CurveZMQ handshake failed ({event.name}): wrong kernel key?"


_delivered: tuple[bytes, list[bytes]] | None = None    # what L4_SECRET_FD held, read once


def secrets_from_env() -> tuple[bytes, list[bytes]]:
    """This task's one-time secrets: the main thread's and its extra threads'.

    A local task started by the launcher gets them through the inherited pipe L4_SECRET_FD
    names (JSON {"secret": hex, "threads": [hex, ...]}; never in the environment, argv or
    memory another task shares): it is read once, closed, and L4_SECRET_FD dropped. A remote
    task (its operator runs `l4run remote`) and `kernel.user.testing.System` still use
    L4_SECRET and L4_THREADS. Raises NotAuthenticated when neither is there."""
    global _delivered
    if _delivered is not None:
        return _delivered
    fd = os.environ.pop(ENV_SECRET_FD, "")
    if fd:
        with os.fdopen(int(fd), "rb") as f:     # the writer closed its end: read to EOF
            got = json.loads(f.read())
        _delivered = (bytes.fromhex(got["secret"]), [bytes.fromhex(h) for h in got["threads"]])
        return _delivered
    if ENV_SECRET not in os.environ:
        raise errors.NotAuthenticated(f"neither {ENV_SECRET_FD} nor {ENV_SECRET} is set: "
                                      f"this process was not started as an L4 task")
    threads = [bytes.fromhex(h) for h in os.environ.get(ENV_THREADS, "").split(",") if h]
    return bytes.fromhex(os.environ[ENV_SECRET]), threads


def caps_from_env() -> dict[str, int]:
    raw = os.environ.get(ENV_CAPS, "")
    return {str(k): int(v) for k, v in json.loads(raw).items()} if raw else {}


class L4(_Api):
    """One L4 thread, synchronous. `L4.from_env()` inside a task started by the launcher."""

    POLL_MS = 1000   # how often a blocked call checks that the kernel still lives

    def __init__(self, kernel_sock: str, secret: bytes, caps: dict[str, int] | None = None,
                 ctx: zmq.Context | None = None, server_key: bytes | None = None) -> None:
        """`kernel_sock`: the path of kernel.sock, or `tcp://HOST:PORT` of a kernel started
        with `--tcp` (then `server_key`, or L4_KERNEL_KEY, is its public key: the connection
        is CurveZMQ-encrypted and reaches only the kernel holding the matching secret key)."""
        self.ctx = ctx or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.routing_id = os.urandom(16)     # unguessable: nobody can take our place
        self.sock.linger = 0
        self.sock.rcvtimeo = self.POLL_MS
        self.server_key = server_key
        self._trouble: zmq.Socket | None = None     # a remote kernel's connection events
        self._gone: str | None = None
        if kernel_sock.startswith("tcp://"):
            self._connect_remote(kernel_sock)
        else:
            self.sock.connect("ipc://" + kernel_sock)
        self.kernel_sock = kernel_sock
        self._plain: dict[tuple[int, int], bytes] = {}   # plain CALL headers (`call`)
        self.caps = dict(caps or {})
        self.kernel_pid = 0
        self.realtime = False                     # connected to the real-time port
        try:
            self.task_id, self.thread_id, self.task_name, self.kernel_pid = self._do(
                hello_frames(secret), False, None)
        except BaseException:
            self.close()
            raise
        # Kept for one move to the kernel's real-time port (`use_rt_port`), which takes it
        # only from this process; a remote kernel has no such port.
        self._secret = b"" if kernel_sock.startswith("tcp://") else secret
        self._rt_next = 0.0                       # `rt_try`: not before (monotonic s)
        self.rt_refusal = ""                      # ... and why the last one failed

    def rt_due(self) -> bool:
        """Whether `rt_try` would try now: not moved, the thread may, the retry time came."""
        return not self.realtime and bool(self._secret) and time.monotonic() >= self._rt_next

    def rt_try(self, retry_s: float = 1.0) -> bool:
        """`use_rt_port` when due (`rt_due`), for a thread that should be on the real-time
        port whenever its process may: a refusal (no real-time policy yet) is kept in
        `rt_refusal` and tried again after `retry_s`; a kernel without the port is not asked
        again. Only a host thread under a real-time policy itself (SCHED_DEADLINE, FIFO, RR)
        tries. True if this thread is on the real-time port now."""
        if not self.rt_due():
            return self.realtime
        if realtime_policy() is None:
            # The kernel checks the process; the thread itself is ours to check: a best-effort
            # thread of a boosted server stays where best effort is served.
            self.rt_refusal = "this host thread holds no real-time policy"
            self._rt_next = time.monotonic() + retry_s
            return False
        try:
            self.use_rt_port()
        except errors.NoRights as e:
            self.rt_refusal, self._rt_next = str(e), time.monotonic() + retry_s
        except errors.InvalidArgument as e:
            self.rt_refusal, self._secret = str(e), b""
        return self.realtime

    def use_rt_port(self) -> None:
        """Move this thread's connection to the kernel's real-time port (RUN_DIR/kernel-rt.sock,
        a kernel started with `--rt-port`), whose messages the kernel serves before the
        others', through a ZeroMQ context of this process's own for such connections (its
        I/O thread carries no other traffic). The kernel allows it while this process holds
        a real-time host policy on some thread — a reservation of the CPU manager
        (servers/rt), or a server it boosts for reserved jobs — else NoRights with the reason;
        once per thread. Nothing else changes: the same thread, capabilities and calls.
        Raises InvalidArgument when the kernel has no real-time port, this thread moved, or
        it is a remote kernel's or waited on in a MultiWait (whose poll holds its socket)."""
        if self.realtime or not self._secret:
            raise errors.InvalidArgument("this thread cannot move to the real-time port "
                                         + ("again" if self.realtime else
                                            "(a remote kernel's, or one in a MultiWait)"))
        path = os.path.join(os.path.dirname(self.kernel_sock), RT_SOCK)
        if not os.path.exists(path):
            raise errors.InvalidArgument(f"the kernel has no real-time port ({path}): "
                                         f"started without --rt-port")
        global _RT_CTX
        if _RT_CTX is None:
            _RT_CTX = zmq.Context()
        new = _RT_CTX.socket(zmq.DEALER)
        new.routing_id = os.urandom(16)
        new.linger = 0
        new.rcvtimeo = self.POLL_MS
        new.connect("ipc://" + path)
        old, self.sock = self.sock, new
        try:
            self._do(hello_frames(self._secret), False, None)
        except BaseException:
            self.sock = old
            new.close(0)
            raise
        old.close(0)
        self._secret = b""
        self.realtime = True

    def _connect_remote(self, endpoint: str) -> None:
        self.server_key, self._trouble = connect_remote(self.sock, endpoint, self.server_key)

    def _remote_trouble(self) -> str | None:
        """What went wrong with a remote kernel's connection, if anything did. Sticky: the
        kernel forgot this thread when the connection went (its secret is spent), so every
        later call fails the same way."""
        mon = self._trouble
        if self._gone is None and mon is not None and mon.poll(0):
            self._gone = trouble_text(mon.recv_multipart()[0])
        return self._gone

    @classmethod
    def from_env(cls) -> "L4":
        if ENV_KERNEL not in os.environ:
            raise errors.NotAuthenticated(f"environment variable {ENV_KERNEL} is not set: "
                                          f"this process was not started as an L4 task")
        return cls(os.environ[ENV_KERNEL], secrets_from_env()[0], caps_from_env())

    def threads_from_env(self) -> list["L4"]:
        """The extra threads our creator made in this task before starting us (their secrets
        came with ours: `secrets_from_env`), each connected: use them from other OS threads,
        or wait on several from one."""
        return [L4(self.kernel_sock, h, self.caps, self.ctx, self.server_key)
                for h in secrets_from_env()[1]]

    def spawn_thread(self) -> "L4":
        """A new L4 thread in this task, with its own connection (for another OS thread)."""
        new = self.create_thread()
        return L4(self.kernel_sock, new.secret, self.caps, self.ctx, self.server_key)

    def call(self, cap: int, data: bytes = b"", *, proto: int = 0,
             items: Iterable[list[int]] = (), snd_timeout: float | None = None,
             rcv_timeout: float | None = None, window: tuple[int, int] | None = None) -> Any:
        """`_Api.call`; a plain call (data only) sends this thread's cached CALL header for
        (`cap`, `proto`) — the bytes `CallArgs` would pack — without building the record."""
        if (items or window is not None or snd_timeout is not None or rcv_timeout is not None
                or type(cap) is not int or type(proto) is not int):
            return _Api.call(self, cap, data, proto=proto, items=items, snd_timeout=snd_timeout,
                             rcv_timeout=rcv_timeout, window=window)
        key = (cap, proto)
        hdr = self._plain.get(key)
        if hdr is None:
            if len(self._plain) >= _PLAIN_CACHE:
                self._plain.clear()
            hdr = self._plain[key] = plain_call_header(cap, proto)
        if _cp is not None and self._gone is None and type(data) is bytes:
            frames = _cp.call(self.sock, hdr, data)
            return parse_answer(frames if frames is not None else self._answer(), True)
        self._post([hdr, data] if data else [hdr])
        return parse_answer(self._answer(), True)

    def _do(self, frames: list[bytes], receiving: bool = False,
            shape: Callable[[Any], Any] | None = None) -> Any:
        self._post(frames)
        result = parse_answer(self._answer(), receiving)
        return shape(result) if shape is not None else result

    def _post(self, frames: list[bytes]) -> None:
        """Send a request ([header] or [header, payload]: `_req` sends no empty payload)."""
        sock = self.sock
        one = len(frames) == 1
        if _cp is not None and type(frames[0]) is bytes and (
                one or (type(frames[1]) is bytes and frames[1])):
            _cp.send(sock, frames[0], b"" if one else frames[1])
        elif one:
            sock.send(frames[0])
        else:
            sock.send(frames[0], _SNDMORE)
            sock.send(frames[1])

    def _answer(self) -> list[bytes]:
        """The kernel's answer (every frame); waits in steps of POLL_MS, checking in between
        that the kernel still lives (KernelGone)."""
        sock = self.sock
        if self._gone is not None:
            raise errors.KernelGone(f"kernel at {self.kernel_sock}: {self._gone}")
        while True:
            if _cp is not None:
                got = _cp.recv(sock)
                if got is not None:
                    return got
            else:
                try:
                    f = sock.recv(copy=False)
                except zmq.Again:
                    pass
                else:
                    got = [f.bytes]
                    while f.more:
                        f = sock.recv(copy=False)
                        got.append(f.bytes)
                    return got
            self._check_kernel()

    def _check_kernel(self) -> None:
        """After a receive timeout: raise KernelGone if the kernel is gone."""
        if self._trouble is not None:
            trouble = self._remote_trouble()
            if trouble is not None:
                raise errors.KernelGone(f"kernel at {self.kernel_sock}: {trouble}")
            return            # a remote kernel's pid and socket file are not ours to see
        if self.kernel_pid and not pid_alive(self.kernel_pid):
            raise errors.KernelGone(f"the kernel (pid {self.kernel_pid}) is gone")
        if not os.path.exists(self.kernel_sock):
            raise errors.KernelGone("the kernel's socket is gone")

    def close(self) -> None:
        close_connection(self.sock, self._trouble)
        self._trouble = None

    def __enter__(self) -> "L4":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["L4", "MultiWait", "Message", "NewTask", "NewThread", "map_cap", "grant_cap", "Rights",
           "SLOT_TASK", "SLOT_THREAD", "SLOT_FACTORY", "SLOT_KERNEL", "pid_alive"]
