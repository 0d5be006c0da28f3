"""A ledger workload client: adds and reads on shared keys, every operation recorded.

`run(l4, keys, pace_ms, timeout_ms, verify)` calls the ledger (capability "ledger") for
ever: 70 % `add(key, delta 1..5, rid)`, 30 % `read(key)`, on keys k0..k{keys-1} (shared by
every client, so adds of different clients overlap). Each logical operation has a request id
`rid = "TASK:N"`; until it has an accepted answer it is retried with the same rid — which the
ledger promises to run once.

The history (docs/CHAOS.md "The history") is RUN_DIR/scratch/TASK/history.jsonl, one JSON
object a line, each written with one write(2) before the next step, so a killed client
leaves its history up to that moment:

    {"rid", "op", "key", "delta"?, "try", "t0"}           an attempt is about to be sent
    {"rid", "try", "t1", "out", "why"?, "ans"?}            its end: out is
        "ok"       an answer that passed the checks below (ans: the answer's fields)
        "fail"     the ledger refused it (CORRUPT, BAD_REQUEST): it did not run
        "unknown"  timeout, peer died, an internal error, or an answer that failed the
                   checks (its checksum, or not echoing this request): it may have run

Checks on an answer (unless `verify` is "0", a planted bug for the checker's tests): its
checksum (protocol.digest) matches, and it echoes the key, delta and rid sent. A restarted
client reads its history first: it goes on numbering after its last rid, and retries the
operation it had in flight (same rid) before starting a new one.

A crash fault (ProtocolViolation) is not caught: the task dies of it and is restarted.
"""
from __future__ import annotations

import json
import os
import random
import time
from typing import Any, cast

from kernel.user.client import L4
from kernel.user.errors import KernelGone, L4Error, ProtocolViolation
from kernel.user.rpc import BadRequest, RemoteFailure

from .protocol import HISTORY_NAME, LEDGER, digest
from .server import cut_torn_tail, scratch_dir

TAIL = 64 * 1024          # bytes of its history a restarted client reads back


class History:
    """The client's history file: appended one line per event; read back at start."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.count = 0                                 # logical operations so far
        self.in_flight: dict[str, Any] | None = None   # the op without an accepted answer
        self.tries = 0
        cut_torn_tail(path)
        self._resume()
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _resume(self) -> None:
        """Where the last incarnation stopped, from the file's tail (rids are numbered in
        order, so the last one started gives the count; a restart costs no full read)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - TAIL))
                lines = f.read().split(b"\n")[1 if f.tell() > TAIL else 0:]
        except FileNotFoundError:
            return
        last: dict[str, Any] | None = None
        for line in lines:
            ev = json.loads(line) if line.strip() else None
            if ev is None:
                continue
            if "t0" in ev:
                if last is None or ev["rid"] != last["rid"]:
                    last = {k: ev[k] for k in ("rid", "op", "key", "delta") if k in ev}
                self.tries = ev["try"]
                self.count = int(ev["rid"].rpartition(":")[2]) + 1
            elif ev.get("out") == "ok" and last is not None and ev["rid"] == last["rid"]:
                last = None
        self.in_flight = last

    def write(self, ev: dict[str, Any]) -> None:
        os.write(self.fd, json.dumps(ev, separators=(",", ":")).encode() + b"\n")


def _check(o: dict[str, Any], ans: Any) -> str | None:
    """None if the answer is the ledger's to this request, else what is wrong with it."""
    want: tuple[Any, ...]
    got: tuple[Any, ...]
    fields: tuple[Any, ...]
    if o["op"] == "add":
        want = (o["key"], o["delta"], o["rid"])
        got, fields = (ans.key, ans.delta, ans.rid), (ans.key, ans.delta, ans.rid, ans.value)
    else:
        want, got, fields = (o["key"], o["rid"]), (ans.key, ans.rid), (ans.key, ans.rid, ans.value)
    if ans.sum != digest(o["op"], *fields):
        return "answer checksum does not match"
    if got != want:
        return f"answer echoes {list(got)}, not the request {list(want)}"
    return None


def _attempt(stub: Any, o: dict[str, Any], verify: bool) -> dict[str, Any]:
    """One attempt of operation `o`: the end record's outcome fields."""
    try:
        if o["op"] == "add":
            ans = stub.add(o["key"], o["delta"], o["rid"], digest("add", o["key"], o["delta"],
                                                                  o["rid"]))
        else:
            ans = stub.read(o["key"], o["rid"], digest("read", o["key"], o["rid"]))
    except (ProtocolViolation, KernelGone):
        raise
    except (RemoteFailure, BadRequest) as e:
        return {"out": "fail", "why": e.error}
    except (L4Error, Exception) as e:          # timeout, peer died, a reply out of protocol
        return {"out": "unknown", "why": getattr(getattr(e, "err", None), "name", None)
                or type(e).__name__}
    bad = _check(o, ans) if verify else None
    if bad is not None:
        return {"out": "unknown", "why": bad, "ans": list(ans)}
    return {"out": "ok", "ans": list(ans)}


def run(l4: L4, keys: str = "8", pace_ms: str = "0", timeout_ms: str = "500",
        verify: str = "1") -> int:
    name = l4.task_name
    hist = History(os.path.join(scratch_dir(name), HISTORY_NAME))
    stub = cast(Any, LEDGER.client(l4, l4.caps["ledger"], timeout=int(timeout_ms)))
    rng = random.Random(f"{name}:{os.getpid()}:{time.time()}")
    nkeys, pace = int(keys), float(pace_ms) / 1000.0
    o, tries = hist.in_flight, hist.tries
    while True:
        if o is None:
            o = {"rid": f"{name}:{hist.count}", "op": "add" if rng.random() < 0.7 else "read",
                 "key": f"k{rng.randrange(nkeys)}"}
            if o["op"] == "add":
                o["delta"] = rng.randint(1, 5)
            hist.count, tries = hist.count + 1, 0
        tries += 1
        hist.write({**o, "try": tries, "t0": time.time()})
        end = _attempt(stub, o, verify != "0")
        hist.write({"rid": o["rid"], "try": tries, "t1": time.time(), **end})
        if end["out"] == "ok":
            o = None
            if pace:
                time.sleep(pace)
        elif end.get("why") not in ("TIMEOUT",):
            time.sleep(0.005)          # the ledger restarting, refusing: do not spin
