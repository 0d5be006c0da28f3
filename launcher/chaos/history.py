"""The history checker: what the ledger's clients saw, checked against the ledger's promises.

The workload (servers/ledger/client.py) records every attempt of every operation — its
start `t0`, its end `t1`, the outcome (ok / fail / unknown) and the answer — in one history
file per client task (RUN_DIR/scratch/TASK/history.jsonl). Attempts with one request id are
one *logical operation*: it starts at its first attempt's `t0` and ends at the `t1` of the
attempt whose answer was accepted (ok), or never (pending: the run ended first). Whatever
the ledger did for that rid, it did inside that interval.

The ledger promises (servers/ledger/protocol.py): an add runs once per rid, is durable
across the ledger's restarts once answered, and every answer is its own (checksummed, the
request echoed). Deltas are positive, so a counter only grows. For every accepted answer
(a read's value, or the value an add answered) with interval [s, e] on key K:

    lo = the deltas of the adds on K that were answered ok before s  (+ its own, for an add)
    hi = the deltas of the adds on K that had started by e (ok or pending; its own included)

Any order of the adds consistent with real time puts the first set before the answer and
nothing outside the second set; so a correct ledger answers within [lo, hi]. The rules:

    lost_write   a value below lo: an acknowledged add is missing (not durable, or lost)
    phantom      a value above hi: more than every requested add once can make — an add
                 run twice, or a value the ledger never produced
    answer       an accepted answer whose checksum does not match or that does not echo its
                 request (the client took a corrupted or misdirected answer)
    duplicate    one rid answered ok twice with different values

With the ledger's own log (`log`, read before the histories while the clients are frozen, so
every rid in it has its start recorded) also, white-box:

    log_duplicate_execution   a rid appears twice in the log (an add ran twice)
    log_lost_write            an acknowledged add that is not in the log
    log_phantom               an acknowledged value the log does not hold for its rid, a
                              log entry for a rid no client sent, or a log whose running
                              sums break

`check(histories, log)` answers a `Verdict`: `checked_operations` (the logical operations
with an accepted answer, each checked by every rule above), counts by outcome, and the
violations (every one counted; the first few per rule kept with their messages).
Pure: no system, no files — `load` reads those.
"""
from __future__ import annotations

import bisect
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

from servers.ledger.protocol import HISTORY_NAME, LOG_NAME, digest

RULES = ("lost_write", "phantom", "answer", "duplicate",                 # from the histories
         "log_duplicate_execution", "log_lost_write", "log_phantom")      # against the log
KEEP = 10            # messages kept per rule (all are counted)


@dataclass
class Op:
    """One logical operation: every attempt with one rid."""
    rid: str
    client: str
    op: str
    key: str
    delta: int
    s: float                         # the first attempt's start
    e: float = math.inf              # the accepted attempt's end (inf: pending)
    ans: list[Any] | None = None     # the accepted answer's fields
    attempts: int = 0

    @property
    def value(self) -> int:
        assert self.ans is not None
        return int(self.ans[3] if self.op == "add" else self.ans[2])


@dataclass
class Verdict:
    checked_operations: int = 0
    operations: dict[str, int] = field(default_factory=dict)   # ok / pending / attempts ...
    counts: dict[str, int] = field(default_factory=dict)       # rule -> violations
    violations: list[dict[str, Any]] = field(default_factory=list)   # the first KEEP per rule

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def flag(self, rule: str, op: Op | None, message: str) -> None:
        self.counts[rule] = self.counts.get(rule, 0) + 1
        if self.counts[rule] <= KEEP:
            self.violations.append({"rule": rule, "rid": op.rid if op else None,
                                    "key": op.key if op else None, "message": message})

    def as_dict(self) -> dict[str, Any]:
        return {"checked_operations": self.checked_operations, "operations": self.operations,
                "history_violations": self.total, "by_rule": dict(self.counts),
                "history_violation_list": self.violations}


# ---------------------------------------------------------------------------
# Reading

def read_jsonl(path: str) -> list[dict[str, Any]]:
    """The complete lines of a JSON-lines file (a torn last line, cut by a kill, is left out)."""
    out = []
    try:
        with open(path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                try:
                    out.append(json.loads(line))
                except ValueError:
                    break
    except FileNotFoundError:
        pass
    return out


def load(run_dir: str, clients: Iterable[str], server: str | None
         ) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]] | None]:
    """The server's log first, then the clients' histories (see the module's contract on
    the order). Both live in the tasks' scratch directories."""
    scratch = os.path.join(run_dir, "scratch")
    log = read_jsonl(os.path.join(scratch, server, LOG_NAME)) if server else None
    hist = {c: read_jsonl(os.path.join(scratch, c, HISTORY_NAME)) for c in clients}
    return hist, log


# ---------------------------------------------------------------------------
# Checking

def operations(histories: dict[str, list[dict[str, Any]]], v: Verdict) -> dict[str, Op]:
    """The logical operations of every client's history, by rid."""
    ops: dict[str, Op] = {}
    attempts = {"ok": 0, "fail": 0, "unknown": 0, "open": 0}
    for client, events in histories.items():
        for ev in events:
            rid = str(ev.get("rid"))
            if "t0" in ev:
                o = ops.get(rid)
                if o is None:
                    o = ops[rid] = Op(rid, client, ev["op"], ev["key"], int(ev.get("delta", 0)),
                                      float(ev["t0"]))
                o.attempts += 1
                attempts["open"] += 1
            elif "t1" in ev and rid in ops:
                o = ops[rid]
                out = ev.get("out", "unknown")
                attempts[out] = attempts.get(out, 0) + 1
                attempts["open"] -= 1
                if out != "ok":
                    continue
                if o.ans is not None and o.ans != ev.get("ans"):
                    v.flag("duplicate", o, f"{rid} answered twice: {o.ans} and {ev.get('ans')}")
                    continue
                o.ans, o.e = ev.get("ans"), min(o.e, float(ev["t1"]))
    v.operations = {"ok": sum(o.ans is not None for o in ops.values()),
                    "pending": sum(o.ans is None for o in ops.values()),
                    "adds": sum(o.op == "add" for o in ops.values()),
                    "reads": sum(o.op == "read" for o in ops.values()),
                    **{f"attempts_{k}": n for k, n in attempts.items()}}
    return ops


def _answer_ok(o: Op) -> str | None:
    """None if the accepted answer is well-formed, checksummed and echoes its request."""
    a = o.ans
    n = 5 if o.op == "add" else 4
    if not isinstance(a, list) or len(a) != n:
        return f"answer {a!r:.80} is not {n} fields"
    fields, want = (a[:4], [o.key, o.delta, o.rid]) if o.op == "add" else (a[:3], [o.key, o.rid])
    if a[-1] != digest(o.op, *fields):
        return f"accepted answer {a} has a bad checksum"
    if list(fields[:len(want)]) != want:
        return f"accepted answer {a} does not echo the request {want}"
    if type(fields[-1]) is not int:
        return f"accepted answer {a} has no integer value"
    return None


def _bounds(ops: list[Op]) -> tuple[list[float], list[int], list[float], list[int]]:
    """Per key: the ends of ok adds with prefix sums, the starts of all adds with prefix sums."""
    ok = sorted((o.e, o.delta) for o in ops if o.op == "add" and o.ans is not None)
    started = sorted((o.s, o.delta) for o in ops if o.op == "add")
    def prefix(pairs: list[tuple[float, int]]) -> list[int]:
        out, acc = [0], 0
        for _, d in pairs:
            acc += d
            out.append(acc)
        return out
    return [t for t, _ in ok], prefix(ok), [t for t, _ in started], prefix(started)


def check(histories: dict[str, list[dict[str, Any]]],
          log: list[dict[str, Any]] | None = None) -> Verdict:
    """Every rule of the module's docstring over the histories (and the ledger's log)."""
    v = Verdict()
    ops = operations(histories, v)
    by_key: dict[str, list[Op]] = {}
    for o in ops.values():
        by_key.setdefault(o.key, []).append(o)
    for key, kops in by_key.items():
        ends, lo_sum, starts, hi_sum = _bounds(kops)
        for o in kops:
            if o.ans is None:
                continue
            v.checked_operations += 1
            bad = _answer_ok(o)
            if bad is not None:
                v.flag("answer", o, bad)
                continue
            lo = lo_sum[bisect.bisect_left(ends, o.s)] + (o.delta if o.op == "add" else 0)
            hi = hi_sum[bisect.bisect_right(starts, o.e)]
            if o.value < lo:
                v.flag("lost_write", o, f"{o.op} {o.rid} on {key} answered {o.value}, below "
                                        f"{lo}: acknowledged adds are missing")
            elif o.value > hi:
                v.flag("phantom", o, f"{o.op} {o.rid} on {key} answered {o.value}, above {hi}, "
                                     f"all adds started by then: an add ran twice or the "
                                     f"value was never produced")
    if log is not None:
        _check_log(ops, log, v)
    return v


def _check_log(ops: dict[str, Op], log: list[dict[str, Any]], v: Verdict) -> None:
    """The white-box rules: the ledger's log against the acknowledged adds."""
    seen: dict[str, dict[str, Any]] = {}
    running: dict[str, int] = {}
    for rec in log:
        rid, key = str(rec.get("rid")), str(rec.get("key"))
        o = ops.get(rid)
        if rid in seen:
            v.flag("log_duplicate_execution", o, f"{rid} ran twice (the ledger's log holds "
                                                 f"it with values {seen[rid]['value']} and "
                                                 f"{rec.get('value')})")
        seen.setdefault(rid, rec)
        if o is None:
            v.flag("log_phantom", None, f"the ledger's log runs {rid} on {key}, which no "
                                        f"client sent")
        if rec.get("value") != running.get(key, 0) + int(rec.get("delta", 0)):
            v.flag("log_phantom", o, f"the ledger's log breaks its running sum on {key} at {rid}")
        running[key] = int(rec.get("value", 0))
    for o in ops.values():
        if o.op != "add" or o.ans is None or _answer_ok(o) is not None:
            continue
        found = seen.get(o.rid)
        if found is None:
            v.flag("log_lost_write", o, f"add {o.rid} was acknowledged ({o.value}) but is "
                                        f"not in the ledger's log")
        elif found.get("value") != o.value or found.get("key") != o.key:
            v.flag("log_phantom", o, f"add {o.rid} answered {o.value} on {o.key}; the ledger's "
                                     f"log says {found.get('value')} on {found.get('key')}")
