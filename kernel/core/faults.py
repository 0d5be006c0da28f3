"""IPC fault injection inside the kernel: the fault table (chaos testing, docs/CHAOS.md).

The root task (it needs the kernel capability) arms *rules* with the FAULT system call. A
rule names a gate (by kernel object id, or by a slot of the caller's capability space) or
every gate, optionally a sending task, a fault kind, a probability, a count limit and a seed.
When a task sends a message through a gate with armed rules (`syscalls` consults `intercept`
once the message is routed to a live thread),
each matching rule that can act on this message rolls its own random generator; the first
that fires injects its fault:

    drop       the sender sees success, the receiver never gets the message. A dropped call
               leaves the caller waiting for a reply that never comes: its receive timeout
               (or NEVER) applies.
    delay      the kernel holds the message as a blocked sender for `delay_ms` (plus a random
               0..`jitter_ms`), then sends it normally. The hold counts against the send
               timeout: a sender whose send timeout ends first gets TIMEOUT, as with a slow
               receiver.
    duplicate  the message is delivered, then a copy of its data (never its items) follows
               through the same gate; a copied call's reply is discarded by the kernel.
    reorder    a message that has to queue behind another blocked sender swaps places with
               its neighbour in the receiver's queue.
    corrupt    `bytes` random payload bytes are XORed with random non-zero values, then the
               message is delivered (changed). The kernel reads payloads for nothing else.
    timeout    the sender gets TIMEOUT at once, as if its send timeout had run out.
    crash      (armed by the "crash" op, per task) the task's next system call that sends is
               answered PROTOCOL; the task library raises inside the task's own code.

A rule armed with `linux` set faults the Linux system calls the kernel forwards to a
personality (kernel/core/linux.py) instead of task messages: `gate` is the handler's
exception gate (or every handler), `sender` the Linux task, `nr` optionally the system-call
numbers it may fault. Its kinds:

    delay      the call reaches the handler `delay_ms` (+ 0..`jitter_ms`) later; the Linux
               thread waits in its trapped call meanwhile, as behind a slow personality.
    error      the kernel answers the trapped call itself with -`errno` (default EINTR: an
               interrupted call, the failure a Linux program is written to expect; EIO,
               EAGAIN... if the plan says so); the handler never sees the call. Calls Linux
               never fails (exit, the get*id family, ...) are not failed: `linux.py` says
               which (`UNFAILING`).

Neither faults the kernel's own announcements: a fork child's first call (it tells the
handler of the new task) and the loader's execveat of its image.

Contracts:
- Only messages sent by tasks are faulted; the kernel's own messages (exit notices, alien
  reports, page faults) are never touched, so supervision keeps working under chaos.
- Reproducible: a rule's decisions come from `random.Random(seed)` alone, so the same rule
  on the same sequence of messages injects the same faults.
- A rule is used up after `count` injections (0: unlimited) and then disarmed; when no rule
  is armed, `ARMED` is empty and the IPC hot path pays one truthiness test.
- Every injection is counted per kind (`summary()`, shown in KERNEL_INFO) and logged with a
  timestamp in a bounded log the root drains with the "log" op.

Ownership: the kernel's event-loop thread only (the kernel is one process; this module's
tables are that process's fault table).
"""
from __future__ import annotations

import random
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

from . import ipc, trace
from ..abi import NEVER, AbiError, Err, ObjType, Rights, encode_ok, unpack
from .objects import Gate, KObject, Task, Thread, TState

if TYPE_CHECKING:
    from .ipc import SendRecord
    from .state import State

KINDS = ("drop", "delay", "duplicate", "reorder", "corrupt", "timeout", "crash", "error")
RULE_KINDS = ("drop", "delay", "duplicate", "reorder", "corrupt", "timeout")
LINUX_KINDS = ("delay", "error")
EINTR = 4
LOG_MAX = 10_000
MAX_RULES = 256
_FAIL = -2            # a held message whose send timeout ends before its delay: TIMEOUT


class Rule:
    __slots__ = ("id", "kind", "gate", "sender", "prob", "count", "hits", "rng", "seed",
                 "delay_ms", "jitter_ms", "nbytes", "armed_at", "linux", "errno", "nrs")

    def __init__(self, rid: int, kind: str, gate: int | None, sender: int | None, prob: float,
                 count: int, seed: int, delay_ms: int, jitter_ms: int, nbytes: int) -> None:
        self.id, self.kind, self.gate, self.sender = rid, kind, gate, sender
        self.prob, self.count, self.hits, self.seed = prob, count, 0, seed
        self.rng = random.Random(seed)
        self.delay_ms, self.jitter_ms, self.nbytes = delay_ms, jitter_ms, nbytes
        self.armed_at = time.time()
        self.linux = False                  # faults forwarded Linux calls, not messages
        self.errno = EINTR                  # error: the answer is -errno
        self.nrs: frozenset[int] | None = None     # Linux calls it may fault (None: any)

    def describe(self) -> dict[str, Any]:
        return {"rule": self.id, "kind": self.kind, "gate": self.gate, "sender": self.sender,
                "probability": self.prob, "count": self.count, "hits": self.hits,
                "seed": self.seed, "delay_ms": self.delay_ms, "jitter_ms": self.jitter_ms,
                "bytes": self.nbytes, "linux": self.linux, "errno": self.errno,
                "nr": sorted(self.nrs) if self.nrs is not None else None}


# gate id (None: every gate) -> rules, in arming order. Empty: no fault is armed.
ARMED: dict[int | None, list[Rule]] = {}
# The same for rules on forwarded Linux calls (handler gate id, None: every handler).
LINUX_ARMED: dict[int | None, list[Rule]] = {}
# Senders held by a delay -> (their record, the send timeout left after the hold, or _FAIL).
HELD: dict[Thread, tuple["SendRecord", int]] = {}
STATS: dict[str, int] = {k: 0 for k in KINDS}
LOG: deque[dict[str, Any]] = deque(maxlen=LOG_MAX)
_next_rule = [1]
_seq = [0]


# ---------------------------------------------------------------------------
# The hot-path hook

def intercept(k: "State", rec: "SendRecord", timeout: int) -> bool:
    """Called by `syscalls` for a task's message when rules are armed, after the target was
    found alive. Answers True when the fault took the message over (send must stop). The
    table's own re-sends go straight to `ipc.send`, so no message is faulted twice."""
    if rec.sender is None:
        return False
    rule = _pick(rec, timeout)
    if rule is None:
        return False
    _consume(rule)
    return _ACTIONS[rule.kind](k, rec, timeout, rule)


def _eligible(rule: Rule, rec: "SendRecord", timeout: int) -> bool:
    if rule.sender is not None and rec.sender.task.id != rule.sender:  # type: ignore[union-attr]
        return False
    if rule.kind == "corrupt":
        return bool(rec.payload)
    if rule.kind == "reorder":
        target = rec.target
        return (timeout != 0 and target is not None and bool(target.queue)
                and (target.state != TState.RECEIVING or bool(target.irqs)))
    return True


def _pick(rec: "SendRecord", timeout: int) -> Rule | None:
    for key in (rec.gate.id, None):
        for rule in ARMED.get(key, ()):
            if _eligible(rule, rec, timeout) and rule.rng.random() < rule.prob:
                return rule
    return None


def _consume(rule: Rule) -> None:
    rule.hits += 1
    if rule.count and rule.hits >= rule.count:
        _disarm(rule)


def _disarm(rule: Rule) -> None:
    table = LINUX_ARMED if rule.linux else ARMED
    rules = table.get(rule.gate)
    if rules is not None and rule in rules:
        rules.remove(rule)
        if not rules:
            del table[rule.gate]


def intercept_linux(k: "State", gate: Gate | None, task: Task, nr: int, may_fail: bool,
                    deliver: Callable[[], None], answer: Callable[[int], None]) -> bool:
    """Called by `linux` for a trapped call of Linux task `task` on its way to handler
    `gate`, when Linux rules are armed. Answers True when a fault took the call over: it
    is `deliver`ed later (delay) or `answer`ed with -errno now (error, only if
    `may_fail`)."""
    rule = None
    for key in (gate.id if gate is not None else None, None):
        for r in LINUX_ARMED.get(key, ()):
            if ((r.sender is None or r.sender == task.id) and (r.nrs is None or nr in r.nrs)
                    and (r.kind != "error" or may_fail) and r.rng.random() < r.prob):
                rule = r
                break
        if rule is not None or key is None:
            break
    if rule is None:
        return False
    _consume(rule)
    receiver = gate.thread.task.name if gate is not None and gate.thread is not None else None
    where = {"gate": gate.id if gate is not None else None, "sender": task.name,
             "receiver": receiver, "nr": nr, "linux": True}
    if rule.kind == "delay":
        ms = rule.delay_ms + (rule.rng.randint(0, rule.jitter_ms) if rule.jitter_ms else 0)
        _record("delay", rule, None, task.id, **where, delay_ms=ms)
        k.timers.later(ms, deliver)
    else:
        _record("error", rule, None, task.id, **where, errno=rule.errno)
        answer(-rule.errno)
    return True


def _record(kind: str, rule: Rule | None, rec: "SendRecord | None", sender_id: int = 0,
            **detail: Any) -> None:
    STATS[kind] += 1
    _seq[0] += 1
    entry: dict[str, Any] = {"seq": _seq[0], "ts": time.time(), "kind": kind,
                             "rule": rule.id if rule is not None else None}
    if rec is not None:
        entry.update(gate=rec.gate.id, label=rec.label, call=rec.call,
                     sender=rec.sender.task.name if rec.sender is not None else None,
                     receiver=rec.target.task.name if rec.target is not None else None)
    entry.update(detail)
    LOG.append(entry)
    if trace.ON:
        trace.chaos(kind, {**entry, "sender": rec.sender.task.id if rec is not None
                           and rec.sender is not None else sender_id})


def _resend(k: "State", rec: "SendRecord", timeout: int) -> None:
    ipc.send(k, rec, timeout)


# ---------------------------------------------------------------------------
# The fault kinds

def _drop(k: "State", rec: "SendRecord", timeout: int, rule: Rule) -> bool:
    _record("drop", rule, rec)
    sender = rec.sender
    assert sender is not None
    if not rec.call:
        k.finish(sender, encode_ok())
        return True
    rec.target = None          # nobody holds its reply capability: only the timeout ends it
    sender.sending = rec
    token = sender.set_state(TState.AWAIT_REPLY)
    if rec.rcv_timeout != NEVER:
        k.timers.add(rec.rcv_timeout, sender, token)
    return True


def _delay(k: "State", rec: "SendRecord", timeout: int, rule: Rule) -> bool:
    sender = rec.sender
    assert sender is not None
    ms = rule.delay_ms + (rule.rng.randint(0, rule.jitter_ms) if rule.jitter_ms else 0)
    _record("delay", rule, rec, delay_ms=ms)
    if timeout != NEVER and ms >= timeout:
        hold, left = timeout, _FAIL
    else:
        hold, left = ms, (NEVER if timeout == NEVER else timeout - ms)
    for dead in [t for t in HELD if not t.alive]:
        del HELD[dead]
    rec.target = None          # not in any queue while held
    sender.sending = rec
    token = sender.set_state(TState.SENDING)
    HELD[sender] = (rec, left)
    k.timers.add(hold, sender, token)
    return True


def release(k: "State", thread: Thread) -> bool:
    """A sending thread's timer ran out (`transport`): if a delay held it, the delay ended
    and the message goes on. Answers True if it was one."""
    entry = HELD.pop(thread, None)
    if entry is None:
        return False
    rec, left = entry
    if not rec.live or thread.sending is not rec:
        return True
    if left == _FAIL:
        k.fail(thread, Err.TIMEOUT, "send timeout: the message was held by an injected "
                                    "delay longer than the send timeout")
        return True
    _resend(k, rec, left)
    return True


def _duplicate(k: "State", rec: "SendRecord", timeout: int, rule: Rule) -> bool:
    _record("duplicate", rule, rec)
    sender = rec.sender
    assert sender is not None
    _resend(k, rec, timeout)
    copy = ipc.SendRecord(None, rec.gate, rec.rights, rec.proto, [], rec.payload, rec.call,
                          None, NEVER, sender.priority, _discard_reply, _discard_error)
    copy.label = rec.label
    _resend(k, copy, NEVER)
    return True


def _discard_reply(proto: int, payload: bytes | None) -> None:
    pass


def _discard_error(err: Err, reason: str) -> None:
    pass


def _reorder(k: "State", rec: "SendRecord", timeout: int, rule: Rule) -> bool:
    target = rec.target
    assert target is not None
    _resend(k, rec, timeout)
    q = target.queue
    if rec not in q or len(q) < 2:
        _record("reorder", rule, rec, swapped=False)
        return True
    i = q.index(rec)
    j = i - 1 if i > 0 else i + 1
    q[i].key, q[j].key = q[j].key, q[i].key
    q[i], q[j] = q[j], q[i]
    _record("reorder", rule, rec, swapped=True)
    return True


def _corrupt(k: "State", rec: "SendRecord", timeout: int, rule: Rule) -> bool:
    data = bytearray(rec.payload or b"")
    positions = []
    for _ in range(rule.nbytes):
        pos = rule.rng.randrange(len(data))
        data[pos] ^= rule.rng.randint(1, 255)
        positions.append(pos)
    rec.payload = bytes(data)
    _record("corrupt", rule, rec, positions=positions)
    return False               # deliver the changed message normally


def _timeout(k: "State", rec: "SendRecord", timeout: int, rule: Rule) -> bool:
    _record("timeout", rule, rec)
    ipc.fail_record(k, rec, Err.TIMEOUT, f"send timeout (injected fault, rule {rule.id})")
    return True


def _crash_send(k: "State", rec: "SendRecord", timeout: int, rule: Rule) -> bool:
    assert rec.sender is not None
    _record("crash", rule, rec, task=rec.sender.task.name)
    _crash(k, rec.sender, rule)
    return True


_ACTIONS = {"drop": _drop, "delay": _delay, "duplicate": _duplicate, "reorder": _reorder,
            "corrupt": _corrupt, "timeout": _timeout, "crash": _crash_send}


def _crash(k: "State", th: Thread, rule: Rule | None) -> None:
    k.fail(th, Err.PROTOCOL, "injected crash (fault injection"
           + (f", rule {rule.id})" if rule is not None else ")"))


def crash(k: "State", task: Task, next_send: bool) -> dict[str, Any]:
    """Answer every blocked system call of `task` with PROTOCOL now; if none was blocked
    and `next_send`, arm a one-shot rule that crashes its next send."""
    crashed = 0
    for th in task.threads:
        if not (th.alive and th.busy and th.conn is not None):
            continue
        if th.state == TState.SENDING and th.sending is not None:
            ipc.cancel_sender(th.sending)
            HELD.pop(th, None)
        elif th.state == TState.AWAIT_REPLY and th.sending is not None:
            th.sending.live = False
        elif th.state != TState.RECEIVING:
            continue
        crashed += 1
        _record("crash", None, None, task=task.name, thread=th.id)
        _crash(k, th, None)
    armed = None
    if not crashed and next_send:
        armed = _arm(Rule(_new_id(), "crash", None, task.id, 1.0, 1, 0, 0, 0, 0)).id
    return {"crashed": crashed, "rule": armed}


# ---------------------------------------------------------------------------
# The FAULT system call's operations (checked first, then done)

def _new_id() -> int:
    rid = _next_rule[0]
    _next_rule[0] += 1
    return rid


def _armed() -> list[Rule]:
    return [r for table in (ARMED, LINUX_ARMED) for rules in table.values() for r in rules]


def _arm(rule: Rule) -> Rule:
    if len(_armed()) >= MAX_RULES:
        raise AbiError(Err.QUOTA, f"{MAX_RULES} fault rules are armed already; remove some")
    (LINUX_ARMED if rule.linux else ARMED).setdefault(rule.gate, []).append(rule)
    return rule


def _num(spec: dict[str, Any], key: str, default: Any, lo: float, hi: float,
         kind: type = int) -> Any:
    v = spec.get(key, default)
    if kind is float and type(v) is int:
        v = float(v)
    if type(v) is not kind or not lo <= v <= hi:  # type: ignore[operator]  # kind checked first
        raise AbiError(Err.INVALID, f"fault spec '{key}' must be {kind.__name__} in {lo}..{hi}, "
                                    f"got {v!r}")
    return v


def _gate_id(th: Thread, spec: dict[str, Any]) -> int | None:
    if "slot" in spec:
        node = th.task.space.lookup(_num(spec, "slot", 0, 0, 1 << 31), ObjType.GATE)
        return node.obj.id
    if spec.get("gate") is None:
        return None
    return _num(spec, "gate", 0, 1, 1 << 62)


def _nrs(spec: dict[str, Any]) -> frozenset[int] | None:
    nrs = spec.get("nr")
    if nrs is None:
        return None
    nrs = [nrs] if type(nrs) is int else nrs
    if not isinstance(nrs, list) or not nrs or not all(type(n) is int and 0 <= n < 1024
                                                        for n in nrs):
        raise AbiError(Err.INVALID, f"fault spec 'nr' must be a system-call number 0..1023 "
                                    f"or a non-empty list of them, got {spec.get('nr')!r}")
    return frozenset(nrs)


def _add(k: "State", th: Thread, spec: dict[str, Any]) -> Any:
    kind = spec.get("kind")
    linux = spec.get("linux", False)
    if type(linux) is not bool:
        raise AbiError(Err.INVALID, f"fault spec 'linux' must be a bool, got {linux!r}")
    kinds = LINUX_KINDS if linux else RULE_KINDS
    if kind not in kinds:
        raise AbiError(Err.INVALID, f"fault kind {kind!r} is not one of {', '.join(kinds)}"
                                    + (" (for Linux calls)" if linux else ""))
    if not linux and ("nr" in spec or "errno" in spec):
        raise AbiError(Err.INVALID, "fault spec 'nr' and 'errno' are for Linux rules "
                                    "('linux': true)")
    nrs, err = _nrs(spec), _num(spec, "errno", EINTR, 1, 4095)
    gate = _gate_id(th, spec)
    sender = spec.get("sender")
    if sender is not None:
        sender = _num(spec, "sender", 0, 1, 1 << 62)
    rule = Rule(_new_id(), str(kind), gate, sender,
                _num(spec, "probability", 1.0, 0.0, 1.0, float),
                _num(spec, "count", 1, 0, 1 << 31), _num(spec, "seed", 0, 0, 1 << 62),
                _num(spec, "delay_ms", 10, 0, 60_000), _num(spec, "jitter_ms", 0, 0, 60_000),
                _num(spec, "bytes", 1, 1, 4096))
    rule.linux, rule.errno, rule.nrs = linux, err, nrs
    return _arm(rule).describe()


def _crash_op(k: "State", th: Thread, spec: dict[str, Any]) -> Any:
    task: KObject | None
    if "slot" in spec:
        task = th.task.space.lookup(_num(spec, "slot", 0, 0, 1 << 31), ObjType.TASK,
                                    Rights.WRITE).obj
    else:
        task = k.tasks.get(_num(spec, "task_id", 0, 1, 1 << 62))
        if task is None:
            raise AbiError(Err.INVALID, f"no live task with id {spec.get('task_id')}")
    return crash(k, task, bool(spec.get("next_send", True)))  # type: ignore[arg-type]


def _remove(k: "State", th: Thread, spec: dict[str, Any]) -> Any:
    rid = spec.get("rule")
    gone = [r for r in _armed() if rid is None or r.id == rid]
    for r in gone:
        _disarm(r)
    return len(gone)


def _list(k: "State", th: Thread, spec: dict[str, Any]) -> Any:
    return {"rules": [r.describe() for r in _armed()], **summary()}


def _log(k: "State", th: Thread, spec: dict[str, Any]) -> Any:
    n = _num(spec, "max", 1000, 1, LOG_MAX)
    out: list[dict[str, Any]] = []
    while LOG and len(out) < n:
        out.append(LOG.popleft())
    return out


OPS = {"add": _add, "remove": _remove, "list": _list, "log": _log, "crash": _crash_op}


def control(k: "State", th: Thread, op: str, raw: bytes) -> Any:
    """The FAULT system call after its kernel capability was checked."""
    fn = OPS.get(op)
    if fn is None:
        raise AbiError(Err.INVALID, f"fault op {op!r} is not one of {', '.join(OPS)}")
    try:
        spec = unpack(raw) if raw else {}
    except Exception:
        raise AbiError(Err.INVALID, "fault spec is not msgpack") from None
    if not isinstance(spec, dict):
        raise AbiError(Err.INVALID, "fault spec must be a msgpack map")
    return fn(k, th, spec)


def summary() -> dict[str, Any]:
    """Counts for KERNEL_INFO: injections per kind, rules armed, senders held."""
    return {"injected": dict(STATS), "total": sum(STATS.values()),
            "armed": len(_armed()), "held": len(HELD)}


__all__ = ["KINDS", "RULE_KINDS", "LINUX_KINDS", "ARMED", "LINUX_ARMED", "HELD", "intercept",
           "intercept_linux", "release", "control", "summary", "crash"]
