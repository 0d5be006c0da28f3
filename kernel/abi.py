"""The kernel ABI: everything that crosses the kernel/task boundary, declared once.

Both sides import this module and nothing else of the kernel's inside: each system call
has one argument record (`ARGS`; `LAYOUTS`, its field names and type tags, is derived from
them); the kernel decodes and checks every request into its record (`decode_request`), the
task library builds every request from one (`encode_args`). An IPC answer is a `Receipt`;
the kernel's own messages are records too (`KERNEL_MESSAGES`).

Wire format (ZeroMQ, one DEALER socket per L4 thread, the kernel's ROUTER socket):

    task -> kernel   [header]            or [header, payload]
    kernel -> task   [answer]            or [answer, payload]

    header  = msgpack array  [sysno, arg1, arg2, ...]   (the fields of ARGS[sysno])
    answer  = msgpack array  [Err.OK, value]             a plain result
                             [Err.OK, label, rights, reply, proto, items]   a Receipt
                             [err, reason]               an error, with the reason in words
    payload = the message data bytes; the kernel never decodes them, it forwards them.

Contract: a thread has at most one system call in flight; every call gets exactly one
answer. Timeouts are milliseconds: 0 polls, N > 0 waits N ms, NEVER (-1) waits forever.
"""
from __future__ import annotations

import struct
from enum import IntEnum, IntFlag
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import msgpack

# ---------------------------------------------------------------------------
# Limits. A message bigger than these is refused with Err.TOO_BIG.
MAX_PAYLOAD = 64 * 1024      # data bytes per message
MAX_HEADER = 4096            # bytes of the msgpack header frame
MAX_ITEMS = 16               # typed items per message
MAX_SLOTS = 4096             # capability slots per task
NEVER = -1                   # timeout: wait forever
MAX_TIMEOUT_MS = 24 * 3600 * 1000


class Sys(IntEnum):
    """System-call numbers. A number is never reused; retired calls keep their gap."""
    HELLO = 1            # bind this connection to a thread, proving it with a one-time secret
    SEND = 2             # send a message through a gate (blocking rendezvous)
    WAIT = 3             # open receive on every gate/IRQ bound to the calling thread
    CALL = 4             # send, then receive the reply, atomically
    REPLY = 5            # answer a call through its one-shot reply capability
    REPLY_WAIT = 6       # reply, then open receive (the server loop)
    CAP_DELETE = 10      # delete a slot and everything derived from it
    CAP_REVOKE = 11      # delete everything derived from a slot, keep the slot
    CAP_INSPECT = 12     # describe a slot
    CAP_DERIVE = 13      # copy a slot into another own slot with rights reduced
    OBJ_DESTROY = 14     # destroy the object itself (needs DELETE); all caps to it vanish
    GATE_CREATE = 20     # factory: new IPC gate bound to a thread, with a label
    IRQ_CREATE = 21      # factory: new IRQ object
    THREAD_CREATE = 22   # factory: new thread in a task; answers a one-time secret
    TASK_CREATE = 23     # factory: new task with its own factory (quota carved from ours)
    FACTORY_INFO = 24    # quota and usage of a factory
    GATE_BIND = 30       # (re)bind a gate to a thread; blocked senders get PEER_DIED
    IRQ_ATTACH = 31      # attach an IRQ to a thread with a label
    IRQ_TRIGGER = 32     # raise an IRQ
    IRQ_MASK = 33        # mask/unmask an IRQ; a masked IRQ stays pending
    THREAD_CONTROL = 40  # pager, exception handler, alien flag, priority
    TASK_MAP = 41        # map one of our capabilities into another task's slot
    TASK_WATCH = 42      # tell the kernel which OS process runs a task (death detection)
    KERNEL_INFO = 50     # statistics and the task table (needs the kernel capability)
    TRACE = 51           # (kernel capability) the IPC trace: on/off, status, drain the ring
    EXIT = 60            # the calling task ends itself
    # Memory (docs/MEMORY.md): flexpages, page faults, shootdown.
    MEM_ATTACH = 70      # join the RAM: answers our memory channel (frames come over it)
    MEM_FAULT = 71       # page fault: TLB refill from the page table, or IPC to the pager
    MEM_UNMAP = 72       # unmap a flexpage from everyone who got it from us (recursive)
    MEM_SIGMA0 = 73      # (kernel capability) a task becomes sigma0: all RAM mapped 1:1
    MEM_QUERY = 74       # the page-table entries of a flexpage in our (or a task's) space
    MEM_DMA = 75         # (kernel capability) a task becomes the machine's DMA: every frame
    MEM_DMA_CHECK = 76   # (the DMA engine) may a device bound to a task DMA these ranges?
    # Chaos (docs/CHAOS.md): IPC fault injection inside the kernel.
    FAULT = 80           # (kernel capability) arm/list/remove IPC fault rules, crash a task, drain the log
    # L⁴Linux (docs/L4LINUX.md): Linux processes whose system calls are trapped on the host.
    LINUX_ATTACH = 90    # a process we started becomes a task's; the kernel takes its trap
    LINUX_MEM_READ = 91  # read a Linux process's memory (it waits in a trapped call)
    LINUX_MEM_WRITE = 92  # write a Linux process's memory (the payload)
    LINUX_ADDFD = 93     # a descriptor of the caller's process into a waiting Linux process


class Err(IntEnum):
    """The closed set of errors a system call can answer. Each comes with a reason."""
    OK = 0
    NO_CAP = 1           # slot empty, wrong object type, or reply capability already used
    NO_RIGHTS = 2        # the capability lacks a right the operation needs
    TIMEOUT = 3          # the send or receive timeout ran out
    PEER_DIED = 4        # the partner died, or its gate/thread went away while we waited
    INVALID = 5          # an argument is out of range or of the wrong type
    QUOTA = 6            # a factory's quota or a task's slot table is exhausted
    PROTOCOL = 7         # the frame is not a well-formed request
    NOT_AUTH = 8         # this connection has not proven which thread it is
    TOO_BIG = 9          # payload, header or item list over the limits above
    BUSY = 10            # the thread already has a call in flight, or a target slot is taken
    DENIED = 11          # an alien thread's call was denied by its exception handler
    NOSYS = 12           # unknown system-call number
    CANCELED = 13        # the object we were blocked on was destroyed


class Rights(IntFlag):
    """Rights of a capability. A derived copy never has more than its source."""
    NONE = 0
    INVOKE = 0x1   # send to a gate, trigger an IRQ, use a factory, read info
    WRITE = 0x2    # modify the object: bind a gate, control a thread, map into a task
    GRANT = 0x4    # pass this capability on in IPC (map or grant)
    DELETE = 0x8   # destroy the object itself
    ALL = 0xF


class Item(IntEnum):
    """Typed message items: [kind, a, b]."""
    MAP_CAP = 1     # [1, slot, rights_mask]: receiver gets a derived copy
    GRANT_CAP = 2   # [2, slot, 0]: the capability moves to the receiver
    MAP_MEM = 3     # [3, vaddr, order, rights]: flexpage mapped (derived) into the receiver
    GRANT_MEM = 4   # [4, vaddr, order, rights]: flexpage moves to the receiver


CAP_ITEMS = frozenset({Item.MAP_CAP, Item.GRANT_CAP})
MEM_ITEMS = frozenset({Item.MAP_MEM, Item.GRANT_MEM})


# MEM_DMA_CHECK's payload: DMA_RANGE records, little-endian u64 physical address, u64 length,
# u64 flags (DMA_WRITE: the device writes the memory; else it only reads it).
DMA_RANGE = struct.Struct("<QQQ")
DMA_WRITE = 1
MAX_DMA_RANGES = 1024


class MemRights(IntFlag):
    """Rights of a page mapping, and the access kinds of a page fault."""
    NONE = 0
    X = 0x1
    W = 0x2
    R = 0x4
    RW = 0x6
    RX = 0x5
    RWX = 0x7


# Memory geometry. A flexpage is 2**order bytes at a 2**order-aligned virtual address.
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
VA_BITS = 40                  # virtual address spaces are 1 TiB
SHOOTDOWN_MS = 500            # a task that does not acknowledge an unmap in time is faulted
SHOOTDOWN_SIGNAL = 12         # SIGUSR2: asks a task's vm library to drop its TLB at once

# The memory channel (docs/MEMORY.md "Frames and the channel"): a SOCK_SEQPACKET Unix socket
# per task, RUN_DIR/MEM_CHANNEL, over which the kernel passes frame memfds (SCM_RIGHTS).
# The task connects and sends the token MEM_ATTACH answered; the kernel checks the peer's
# SO_PEERCRED pid is the task's process. Kernel -> task messages: CHAN_HEAD, then
#   CONTROL  (count 0, 1 fd): the task's control page: CTL_EPOCH, CTL_ACK (u64 words)
#   GRANT    (count n, n fds): n u32 frames, then n u8 rights (R, or RW: fd opened O_RDWR)
#   REVOKE   (count n, no fd, epoch): n u32 frames the task must drop before it acks `epoch`
MEM_CHANNEL = "mem.sock"
MEM_TOKEN_BYTES = 16
CHAN_MAX_FDS = 253            # SCM_MAX_FD: descriptors per message
CHAN_HEAD = struct.Struct("<BxxxIQ")   # kind, count, epoch
CTL_EPOCH, CTL_ACK = 0, 8


class Chan(IntEnum):
    """Kinds of memory-channel messages (kernel -> task)."""
    CONTROL = 1
    GRANT = 2
    REVOKE = 3


class Proto(IntEnum):
    """Message protocol tags. Negative tags are reserved for messages the kernel sends."""
    IRQ = -1          # an IRQ fired; label = the IRQ's label, payload = msgpack {count}
    PAGE_FAULT = -2   # reserved for the memory subsystem
    EXCEPTION = -5    # a task died or faulted; payload = msgpack dict (see ABI.md)
    ALIEN = -6        # an alien thread's system call, before and after it runs
    LINUX = -7        # a Linux process's trapped system call (`LinuxSyscall`), to its handler
    LINUX_L4 = -8     # a hybrid Linux process's L4 call is complete (`LinuxL4Done`), to its handler


class AlienVerdict(IntEnum):
    """The proto an exception handler replies with to an Proto.ALIEN 'before' report."""
    ALLOW = 0
    DENY = 1


class LinuxVerdict(IntEnum):
    """The proto a handler replies with to a Proto.LINUX call."""
    RETURN = 0        # the call returns the msgpack integer in the payload (-errno: an error)
    CONTINUE = 1      # the host runs the call itself (SECCOMP_USER_NOTIF_FLAG_CONTINUE)
    L4 = 2            # a hybrid call (`LinuxL4`): the kernel makes it as the task's main thread


class LinuxL4(IntEnum):
    """The reserved x86-64 system-call numbers of hybrid Linux processes (docs/L4LINUX.md
    "Hybrid processes"; the C side: servers/l4linux/include/l4py.h). Trapped like every
    other call; CAP is the personality's alone, the others it may answer `LinuxVerdict.L4`."""
    CAP = 0x4C40         # (name) -> a capability handle, if the policy grants the name
    CALL = 0x4C41        # (handle, msg): send, then receive the reply
    WAIT = 0x4C42        # (handle, msg): bind the gate to the process's thread, receive
    REPLY_WAIT = 0x4C43  # (handle, msg): answer the last caller, then receive
    REPLY = 0x4C44       # (0, msg): answer the last caller


# A hybrid call's message descriptor in the process's memory (`struct l4_msg`, little-endian):
# snd, snd_len, rcv, rcv_max (in), proto (in: sent; out: received), timeout_ms (in: the
# receive timeout, NEVER or 0..MAX_TIMEOUT_MS), rcv_len, label, err (out: abi.Err).
LINUX_L4_MSG = struct.Struct("<QQQQqqQQq")


# Linux process memory (LINUX_MEM_READ/WRITE): user addresses of x86-64, bytes per call.
LINUX_USER_TOP = 1 << 47
LINUX_MEM_MAX = MAX_PAYLOAD


class ObjType(IntEnum):
    TASK = 1
    THREAD = 2
    GATE = 3
    IRQ = 4
    FACTORY = 5
    KERNEL = 6


# Slots every task has from birth.
SLOT_TASK = 1       # the task itself
SLOT_THREAD = 2     # its main thread
SLOT_FACTORY = 3    # its factory (quota)
SLOT_KERNEL = 4     # root task only: the kernel capability
FIRST_FREE_SLOT = 8

# ---------------------------------------------------------------------------
# Requests: one argument record per system call, its fields in wire order. The record is
# the one declaration: `LAYOUTS` (field name and type tag, what `decode_request` checks
# and ABI.md documents) is derived from it, the kernel's handlers read its fields by name,
# and the task library builds its requests from it (`encode_args`).
#
# Type tags, by the alias a field is declared with: Int "int", OptInt "int?" (int or None),
# Bytes "bytes", Str "str", OptBool "bool?", Items "items", Window "window", Timeout
# "timeout" (int: NEVER, or 0..MAX_TIMEOUT_MS).
Int = int
OptInt = Optional[int]
Bytes = bytes
Str = str
OptBool = Optional[bool]
Items = Sequence[Sequence[int]]      # checked: a list of int tuples (see _check_items)
Window = Optional[Sequence[int]]     # checked: None, (first, count) or (first, count, vaddr, order)
Timeout = int

_TAGS = {"Int": "int", "OptInt": "int?", "Bytes": "bytes", "Str": "str", "OptBool": "bool?",
         "Items": "items", "Window": "window", "Timeout": "timeout"}


class HelloArgs(NamedTuple):
    secret: Bytes


class SendArgs(NamedTuple):
    cap: Int
    proto: Int
    items: Items
    timeout: Timeout


class WaitArgs(NamedTuple):
    window: Window
    timeout: Timeout


class CallArgs(NamedTuple):
    cap: Int
    proto: Int
    items: Items
    snd_timeout: Timeout
    rcv_timeout: Timeout
    window: Window


class ReplyArgs(NamedTuple):
    reply: Int
    proto: Int
    items: Items


class ReplyWaitArgs(NamedTuple):
    reply: Int
    proto: Int
    items: Items
    window: Window
    timeout: Timeout


class CapDeleteArgs(NamedTuple):
    slot: Int


class CapRevokeArgs(NamedTuple):
    slot: Int


class CapInspectArgs(NamedTuple):
    slot: Int


class CapDeriveArgs(NamedTuple):
    src: Int
    dst: OptInt
    mask: Int


class ObjDestroyArgs(NamedTuple):
    slot: Int


class GateCreateArgs(NamedTuple):
    factory: Int
    thread: OptInt
    label: Int
    dst: OptInt


class IrqCreateArgs(NamedTuple):
    factory: Int
    dst: OptInt


class ThreadCreateArgs(NamedTuple):
    factory: Int
    task: Int
    dst: OptInt


class TaskCreateArgs(NamedTuple):
    factory: Int
    name: Str
    quota: Int
    dst: OptInt


class FactoryInfoArgs(NamedTuple):
    factory: Int


class GateBindArgs(NamedTuple):
    gate: Int
    thread: Int


class IrqAttachArgs(NamedTuple):
    irq: Int
    thread: OptInt
    label: Int


class IrqTriggerArgs(NamedTuple):
    irq: Int


class IrqMaskArgs(NamedTuple):
    irq: Int
    masked: OptBool


class ThreadControlArgs(NamedTuple):
    thread: Int
    pager: OptInt
    handler: OptInt
    alien: OptBool
    priority: OptInt


class TaskMapArgs(NamedTuple):
    task: Int
    src: Int
    dst: Int
    mask: Int


class TaskWatchArgs(NamedTuple):
    task: Int
    pid: Int


class KernelInfoArgs(NamedTuple):
    kernel: Int


class TraceArgs(NamedTuple):
    kernel: Int             # the kernel capability (INVOKE)
    action: Str             # on, off, status, drain
    limit: Int              # on: ring capacity (0 = default); drain: at most this many (0 = max)


class ExitArgs(NamedTuple):
    status: Int


class MemAttachArgs(NamedTuple):
    task: Int               # our own task capability; needs WRITE
    signal: OptBool


class MemFaultArgs(NamedTuple):
    vaddr: Int
    access: Int
    ip: Int


class MemUnmapArgs(NamedTuple):
    vaddr: Int
    order: Int
    self: OptBool           # also our own mapping (not only what was derived from it)


class MemSigma0Args(NamedTuple):
    kernel: Int
    task: Int


class MemDmaArgs(NamedTuple):
    kernel: Int
    task: Int


class MemDmaCheckArgs(NamedTuple):
    task: Int               # the device's DMA domain: a task capability (INVOKE)
    # the payload: DMA_RANGE records, what the device is about to access


class MemQueryArgs(NamedTuple):
    task: OptInt
    vaddr: Int
    order: Int


class FaultArgs(NamedTuple):
    kernel: Int
    op: Str
    spec: Bytes


class LinuxAttachArgs(NamedTuple):
    task: Int               # the task the process becomes (WRITE); its main thread turns alien
    handler: Int            # a gate (INVOKE): the main thread's exception handler from now on
    pid: Int                # the host process: a child of the caller's process
    fd: Int                 # the descriptor number of its trap's listener in that process


class LinuxMemReadArgs(NamedTuple):
    task: Int               # a Linux task (INVOKE)
    addr: Int
    length: Int


class LinuxMemWriteArgs(NamedTuple):
    task: Int               # a Linux task (WRITE); the bytes are the payload
    addr: Int


class LinuxAddfdArgs(NamedTuple):
    task: Int               # a Linux task (WRITE), waiting in a trapped call
    fd: Int                 # a descriptor of the caller's own host process
    target: Int             # the descriptor number it gets in the Linux process


ARGS: dict[Sys, type[tuple[Any, ...]]] = {
    Sys.HELLO: HelloArgs,
    Sys.SEND: SendArgs,
    Sys.WAIT: WaitArgs,
    Sys.CALL: CallArgs,
    Sys.REPLY: ReplyArgs,
    Sys.REPLY_WAIT: ReplyWaitArgs,
    Sys.CAP_DELETE: CapDeleteArgs,
    Sys.CAP_REVOKE: CapRevokeArgs,
    Sys.CAP_INSPECT: CapInspectArgs,
    Sys.CAP_DERIVE: CapDeriveArgs,
    Sys.OBJ_DESTROY: ObjDestroyArgs,
    Sys.GATE_CREATE: GateCreateArgs,
    Sys.IRQ_CREATE: IrqCreateArgs,
    Sys.THREAD_CREATE: ThreadCreateArgs,
    Sys.TASK_CREATE: TaskCreateArgs,
    Sys.FACTORY_INFO: FactoryInfoArgs,
    Sys.GATE_BIND: GateBindArgs,
    Sys.IRQ_ATTACH: IrqAttachArgs,
    Sys.IRQ_TRIGGER: IrqTriggerArgs,
    Sys.IRQ_MASK: IrqMaskArgs,
    Sys.THREAD_CONTROL: ThreadControlArgs,
    Sys.TASK_MAP: TaskMapArgs,
    Sys.TASK_WATCH: TaskWatchArgs,
    Sys.KERNEL_INFO: KernelInfoArgs,
    Sys.TRACE: TraceArgs,
    Sys.EXIT: ExitArgs,
    Sys.MEM_ATTACH: MemAttachArgs,
    Sys.MEM_FAULT: MemFaultArgs,
    Sys.MEM_UNMAP: MemUnmapArgs,
    Sys.MEM_SIGMA0: MemSigma0Args,
    Sys.MEM_QUERY: MemQueryArgs,
    Sys.MEM_DMA: MemDmaArgs,
    Sys.MEM_DMA_CHECK: MemDmaCheckArgs,
    Sys.FAULT: FaultArgs,
    Sys.LINUX_ATTACH: LinuxAttachArgs,
    Sys.LINUX_MEM_READ: LinuxMemReadArgs,
    Sys.LINUX_MEM_WRITE: LinuxMemWriteArgs,
    Sys.LINUX_ADDFD: LinuxAddfdArgs,
}


class Field(NamedTuple):
    name: str
    kind: str


def _layout(record: type[tuple[Any, ...]]) -> tuple[Field, ...]:
    # Annotations are postponed (NamedTuple keeps them as ForwardRefs): an alias's name is
    # its tag, so no type is evaluated at import.
    return tuple(Field(name, _TAGS[str(getattr(ann, "__forward_arg__", ann))])
                 for name, ann in record.__annotations__.items())


LAYOUTS: dict[Sys, tuple[Field, ...]] = {sysno: _layout(rec) for sysno, rec in ARGS.items()}
assert set(LAYOUTS) == set(Sys), "every system call has an argument record"
_SYS_OF: dict[type, int] = {rec: int(sysno) for sysno, rec in ARGS.items()}
assert len(_SYS_OF) == len(ARGS), "one record per system call: a record names its call"

# Calls whose answer is an IPC receipt rather than a plain value.
RECEIVING = frozenset({Sys.WAIT, Sys.CALL, Sys.REPLY_WAIT})
# Calls that may carry a payload frame.
CARRIES_PAYLOAD = frozenset({Sys.SEND, Sys.CALL, Sys.REPLY, Sys.REPLY_WAIT, Sys.LINUX_MEM_WRITE,
                             Sys.MEM_DMA_CHECK})

_INT_MIN, _INT_MAX = -(2 ** 63), 2 ** 63 - 1


class AbiError(Exception):
    """A request failed decoding or checking; carries the error code and the reason."""

    def __init__(self, err: Err, reason: str) -> None:
        super().__init__(reason)
        self.err = err
        self.reason = reason


def _is_int(v: Any) -> bool:
    return type(v) is int and _INT_MIN <= v <= _INT_MAX


def _check_items(v: Any) -> list[tuple[int, ...]]:
    if not isinstance(v, list):
        raise AbiError(Err.INVALID, "items must be a list")
    if len(v) > MAX_ITEMS:
        raise AbiError(Err.TOO_BIG, f"{len(v)} items, at most {MAX_ITEMS}")
    out: list[tuple[int, ...]] = []
    for i, it in enumerate(v):
        if not (isinstance(it, list) and it and all(_is_int(x) for x in it)):
            raise AbiError(Err.INVALID, f"item {i} must be a list of integers")
        if it[0] in MEM_ITEMS:
            if len(it) != 4:
                raise AbiError(Err.INVALID, f"memory item {i} must be [kind, vaddr, order, rights]")
            out.append((it[0], it[1], it[2], it[3]))
            continue
        if len(it) != 3:
            raise AbiError(Err.INVALID, f"item {i} must be [kind, slot, mask] integers")
        if it[0] not in CAP_ITEMS:
            raise AbiError(Err.INVALID, f"item {i} has unknown kind {it[0]}")
        out.append((it[0], it[1], it[2]))
    return out


def _check_window(v: Any) -> tuple[int, ...] | None:
    if v is None:
        return None
    if isinstance(v, list) and len(v) == 4 and all(_is_int(x) for x in v):
        _check_mem_window(v[2], v[3])
        _check_window(v[:2])
        return (v[0], v[1], v[2], v[3])
    if not (isinstance(v, list) and len(v) == 2 and _is_int(v[0]) and _is_int(v[1])):
        raise AbiError(Err.INVALID, "receive window must be [first_slot, count], "
                                    "[first_slot, count, mem_vaddr, mem_order] or nil")
    base, count = v
    if not (FIRST_FREE_SLOT <= base and 0 <= count <= MAX_ITEMS and base + count <= MAX_SLOTS):
        raise AbiError(Err.INVALID, f"receive window [{base}, {count}] outside the free slots "
                                    f"{FIRST_FREE_SLOT}..{MAX_SLOTS - 1} or over {MAX_ITEMS} slots")
    return (base, count)


def _check_mem_window(vaddr: int, order: int) -> None:
    """A memory receive window is a flexpage of the receiver's address space."""
    if not PAGE_SHIFT <= order <= VA_BITS:
        raise AbiError(Err.INVALID, f"memory window order {order} outside {PAGE_SHIFT}..{VA_BITS}")
    if vaddr < 0 or vaddr & ((1 << order) - 1) or vaddr + (1 << order) > 1 << VA_BITS:
        raise AbiError(Err.INVALID, f"memory window 0x{vaddr:x} is not aligned to 2**{order} "
                                    f"inside the {VA_BITS}-bit address space")


def _check_timeout(v: Any) -> int:
    if not _is_int(v) or not (v == NEVER or 0 <= v <= MAX_TIMEOUT_MS):
        raise AbiError(Err.INVALID, f"timeout must be NEVER (-1) or 0..{MAX_TIMEOUT_MS} ms, got {v!r}")
    return v


def _checker(kind: str) -> Callable[[Any], Any]:
    def simple(pred: Callable[[Any], bool], what: str) -> Callable[[Any], Any]:
        def check(v: Any) -> Any:
            if not pred(v):
                raise AbiError(Err.INVALID, f"expected {what}, got {type(v).__name__}")
            return v
        return check
    table: dict[str, Callable[[Any], Any]] = {
        "int": simple(_is_int, "an integer"),
        "int?": simple(lambda v: v is None or _is_int(v), "an integer or nil"),
        "bytes": simple(lambda v: isinstance(v, bytes) and len(v) <= 256, "bytes (≤256)"),
        "str": simple(lambda v: isinstance(v, str) and len(v) <= 256, "a string (≤256)"),
        "bool?": simple(lambda v: v is None or isinstance(v, bool), "a bool or nil"),
        "items": _check_items,
        "window": _check_window,
        "timeout": _check_timeout,
    }
    return table[kind]


_CHECKERS: dict[Sys, tuple[tuple[str, Callable[[Any], Any]], ...]] = {
    sysno: tuple((f.name, _checker(f.kind)) for f in fields) for sysno, fields in LAYOUTS.items()
}

_SYS_BY_NUMBER: dict[int, Sys] = {int(s): s for s in Sys}
_unpackb = msgpack.unpackb
_packb = msgpack.packb


def decode_request(header: bytes) -> tuple[Sys, Any]:
    """Decode and check one request header: the call and its argument record (`ARGS`).
    Raises AbiError with the reason."""
    if len(header) > MAX_HEADER:
        raise AbiError(Err.TOO_BIG, f"header of {len(header)} bytes, at most {MAX_HEADER}")
    try:
        req = _unpackb(header, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types
        raise AbiError(Err.PROTOCOL, f"header is not msgpack: {type(e).__name__}") from None
    if not isinstance(req, list) or not req or not _is_int(req[0]):
        raise AbiError(Err.PROTOCOL, "header must be an array starting with a system-call number")
    sysno = _SYS_BY_NUMBER.get(req[0])     # a dict: calling the enum costs ~1.5 µs a request
    if sysno is None:
        raise AbiError(Err.NOSYS, f"no system call number {req[0]}")
    record = ARGS[sysno]
    fast = FAST_SHAPES.get(sysno)
    if fast is not None and fast(req):
        return sysno, record._make(req[1:])  # type: ignore[attr-defined]
    checks = _CHECKERS[sysno]
    if len(req) != len(checks) + 1:
        raise AbiError(Err.PROTOCOL, f"{sysno.name} takes {len(checks)} arguments, got {len(req) - 1}")
    args = []
    for (name, check), value in zip(checks, req[1:]):
        try:
            args.append(check(value))
        except AbiError as e:
            raise AbiError(e.err, f"{sysno.name} argument '{name}': {e.reason}") from None
    return sysno, record._make(args)  # type: ignore[attr-defined]


def _timeout_ok(v: Any) -> bool:
    return type(v) is int and (v == NEVER or 0 <= v <= MAX_TIMEOUT_MS)


# Fast paths for the IPC hot path: the common shape (no items, no window) is accepted
# after the same checks, written inline; anything else goes through the generic checkers.
# (kernel/core/fastpath.py accepts exactly these shapes too.)
FAST_SHAPES: dict[Sys, Callable[[list[Any]], bool]] = {
    Sys.CALL: lambda r: (len(r) == 7 and type(r[1]) is int and type(r[2]) is int and r[3] == []
                         and _timeout_ok(r[4]) and _timeout_ok(r[5]) and r[6] is None
                         and _INT_MIN <= r[1] <= _INT_MAX and _INT_MIN <= r[2] <= _INT_MAX),
    Sys.REPLY_WAIT: lambda r: (len(r) == 6 and type(r[1]) is int and type(r[2]) is int
                               and r[3] == [] and r[4] is None and _timeout_ok(r[5])
                               and _INT_MIN <= r[1] <= _INT_MAX and _INT_MIN <= r[2] <= _INT_MAX),
    Sys.SEND: lambda r: (len(r) == 5 and type(r[1]) is int and type(r[2]) is int and r[3] == []
                         and _timeout_ok(r[4])
                         and _INT_MIN <= r[1] <= _INT_MAX and _INT_MIN <= r[2] <= _INT_MAX),
}


def encode_request(sysno: Sys, *args: Any) -> bytes:
    """A raw request header (tests use it to send what the library never would)."""
    return _packb([int(sysno), *args])


def offset(record: type[tuple[Any, ...]], name: str) -> int:
    """Where field `name` of an argument record sits in the request array (after sysno)."""
    return record._fields.index(name) + 1  # type: ignore[attr-defined]


def encode_args(args: tuple[Any, ...]) -> bytes:
    """The request header for an argument record (`ARGS`): the record names its call."""
    return _packb([_SYS_OF[type(args)], *args])


def encode_ok(value: Any = None) -> bytes:
    return _packb([0, value])


def encode_error(err: Err, reason: str) -> bytes:
    return _packb([int(err), reason])


class Receipt(NamedTuple):
    """The answer to a receiving call (WAIT, CALL, REPLY_WAIT): what the kernel says about
    the message that arrived. `label` and `rights` come from the kernel, never the sender."""
    label: int
    rights: int
    reply: int          # one-shot reply capability (0: the sender waits for no reply)
    proto: int
    items: list[list[int]]   # [[kind, slot or vaddr, rights ...], ...] what landed with us


def encode_receipt(label: int, rights: int, reply: int, proto: int, items: list[Any]) -> bytes:
    return _packb([0, label, rights, reply, proto, items])


def decode_answer(header: bytes, receiving: bool) -> tuple[int, Any]:
    """Task side: (Err.OK, the value or, for a receiving call, a Receipt) or (err, reason).
    Raises AbiError(PROTOCOL) if the answer is not one the kernel sends."""
    try:
        ans = _unpackb(header, raw=False, strict_map_key=False)
    except Exception:
        raise AbiError(Err.PROTOCOL, "the kernel's answer is not msgpack") from None
    if type(ans) is not list or not ans:
        raise AbiError(Err.PROTOCOL, "the kernel's answer is not an array")
    if ans[0] != 0:
        return ans[0], ans[1]
    if receiving:
        return 0, Receipt(ans[1], ans[2], ans[3], ans[4], ans[5])
    return 0, ans[1]


def timeout_arg(ms: int | float | None) -> int:
    """Library-side: None means never; a float is rounded up to whole milliseconds."""
    if ms is None:
        return NEVER
    if ms <= 0:
        return 0
    return int(-(-ms // 1))


def pack(obj: Any) -> bytes:
    """msgpack for payloads of kernel-generated messages and server protocols."""
    return _packb(obj)


def unpack(data: bytes) -> Any:
    return _unpackb(data, raw=False, strict_map_key=False)


# ---------------------------------------------------------------------------
# Kernel messages: what the kernel itself sends, as the payload (a msgpack map) of a message
# with a negative `Proto` tag. Declared once here; the kernel builds them from these records
# (`encode_kernel_message`), receivers read the map (`Message.body()`). A map, not an array,
# so that a field added later breaks no receiver.

class IrqMessage(NamedTuple):
    """Proto.IRQ, a message to the attached thread (label: the IRQ's label)."""
    irq: int
    count: int  # type: ignore[assignment]   # triggers covered (the wire's name; shadows tuple.count)


class PageFaultMessage(NamedTuple):
    """Proto.PAGE_FAULT, a call to the faulting thread's pager (reply with MAP_MEM items)."""
    addr: int
    access: int         # MemRights
    ip: int
    task: str
    thread: int


class ExitNotice(NamedTuple):
    """Proto.EXCEPTION {"event": "exit"}: a task is gone; to its main thread's handler."""
    task: str
    task_id: int
    pid: Optional[int]
    reason: str
    status: Optional[int]   # known for EXIT and for children of the kernel


class FaultNotice(NamedTuple):
    """Proto.EXCEPTION {"event": "page_fault"}: a page fault nobody could serve."""
    task: str
    task_id: int
    thread: int
    addr: int
    access: int
    ip: int
    reason: str


class AlienBefore(NamedTuple):
    """Proto.ALIEN {"phase": "before"}: a call to an alien thread's handler, which replies
    AlienVerdict.ALLOW or DENY."""
    task: str
    thread: int
    sysno: int
    call: str
    args: tuple[Any, ...]   # the call's argument record, as an array
    payload_len: int


class AlienAfter(NamedTuple):
    """Proto.ALIEN {"phase": "after"}: an allowed call completed; the thread gets its answer
    when the handler replies (with anything)."""
    task: str
    thread: int
    sysno: int
    call: str
    err: int


class LinuxSyscall(NamedTuple):
    """Proto.LINUX: a call to a Linux process's handler — the register frame of a system
    call the host trapped. Reply LinuxVerdict.RETURN (payload: the result) or CONTINUE;
    the reply capability may be kept and used later (a blocking call)."""
    task: str
    task_id: int
    slot: int               # the handler task's capability to the Linux task
    parent: int             # task id of the process it was forked from (0: none known)
    pid: int                # host process (thread group) that trapped
    tid: int                # host thread that trapped
    nr: int                 # x86-64 system-call number
    args: tuple[int, ...]   # the six argument registers
    ip: int                 # instruction pointer after the syscall instruction


class LinuxL4Done(NamedTuple):
    """Proto.LINUX_L4: a call to a Linux process's handler — the hybrid call it allowed
    (`LinuxVerdict.L4`) is complete. Reply LinuxVerdict.RETURN: the trapped call returns
    the payload's integer (`value` is what the kernel proposes: 0, or -errno)."""
    task: str
    task_id: int
    slot: int               # the handler task's capability to the Linux task
    pid: int
    tid: int
    nr: int                 # the `LinuxL4` number
    err: int                # the L4 call's outcome (abi.Err)
    value: int              # 0, or the -errno the error maps to (docs/L4LINUX.md)


KernelMessage = Union[IrqMessage, PageFaultMessage, ExitNotice, FaultNotice, AlienBefore,
                      AlienAfter, LinuxSyscall, LinuxL4Done]

# record -> (its proto, the (key, value) its map starts with, if any)
KERNEL_MESSAGES: dict[type, tuple[Proto, tuple[str, str] | None]] = {
    IrqMessage: (Proto.IRQ, None),
    PageFaultMessage: (Proto.PAGE_FAULT, None),
    ExitNotice: (Proto.EXCEPTION, ("event", "exit")),
    FaultNotice: (Proto.EXCEPTION, ("event", "page_fault")),
    AlienBefore: (Proto.ALIEN, ("phase", "before")),
    AlienAfter: (Proto.ALIEN, ("phase", "after")),
    LinuxSyscall: (Proto.LINUX, None),
    LinuxL4Done: (Proto.LINUX_L4, None),
}


def encode_kernel_message(msg: KernelMessage) -> tuple[int, bytes]:
    """(proto, payload) of a kernel message."""
    proto, tag = KERNEL_MESSAGES[type(msg)]
    body = msg._asdict()
    return int(proto), _packb({tag[0]: tag[1], **body} if tag is not None else body)


# The run directory's file that tells remote tasks how to reach a kernel started with
# --tcp: {"endpoint", "public_key"} (JSON). The launcher reads it; the kernel writes it.
TCP_INFO = "kernel.tcp"
RT_SOCK = "kernel-rt.sock"    # the kernel's real-time port (`python -m kernel --rt-port`)
