"""The ledger server: counters in memory, every add in an append-only log before its answer.

One method per op of LEDGER (protocol.py). State: `values` (key -> counter) and `done` (rid
-> the value its add answered), both rebuilt from the log at start. An add checks first (the
request's checksum), then looks its rid up in `done` (run once: a repeated rid answers the
remembered value and changes nothing), then appends `{"rid", "key", "delta", "value"}` to the
log with one write(2) on an O_APPEND descriptor, and only then changes memory and answers.
A kill between the write and the answer leaves the add done and unanswered: the client's
retry with the same rid gets the remembered value. A torn last line (a write cut short) is
ignored at start, and the add it held was never answered.

Planted bugs, for the chaos checker's own tests (the `bug` argument; "" in every image):
    lazy     answers before the add is in the log (a buffer written every 50 adds): a kill
             loses acknowledged adds
    forget   does not rebuild `done` from the log: a retry after a restart runs again
    nodedup  never looks `done` up: a duplicated or retried request runs twice
    trust    does not check request checksums: a corrupted request runs as another one
"""
from __future__ import annotations

import json
import os
import sys
import tempfile

from kernel.user.client import L4
from kernel.user.rpc import Call, RpcError

from .protocol import LEDGER, LOG_NAME, digest

BUGS = ("", "lazy", "forget", "nodedup", "trust")
LAZY_EVERY = 50


def scratch_dir(task: str) -> str:
    """The task's scratch directory (RUN_DIR/scratch/TASK: the only place a sandboxed task
    may write, kept across its restarts), or a temporary directory outside a launcher."""
    run_dir = os.environ.get("L4_RUN_DIR")
    if not run_dir:
        return tempfile.mkdtemp(prefix=f"l4-{task}-")
    path = os.path.join(run_dir, "scratch", task)
    os.makedirs(path, exist_ok=True)
    return path


def read_log(path: str) -> list[dict]:
    """The log's records in order; a torn or unreadable line ends it (the last write)."""
    out: list[dict] = []
    try:
        with open(path, "rb") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    break
                if not line.endswith(b"\n") or not isinstance(rec, dict):
                    break
                out.append(rec)
    except FileNotFoundError:
        pass
    return out


def cut_torn_tail(path: str) -> None:
    """Cut a last line a kill left without its newline, so the next append starts a line of
    its own instead of gluing onto the torn one (whose add was never answered)."""
    try:
        with open(path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)
    except FileNotFoundError:
        pass


class Ledger:
    def __init__(self, path: str, bug: str = "") -> None:
        if bug not in BUGS:
            raise ValueError(f"unknown planted bug {bug!r} (known: {', '.join(BUGS[1:])})")
        self.bug = bug
        self.values: dict[str, int] = {}      # key -> counter
        self.done: dict[str, int] = {}        # rid -> the value its add answered
        cut_torn_tail(path)
        for rec in read_log(path):
            self.values[rec["key"]] = rec["value"]
            if bug != "forget":
                self.done[rec["rid"]] = rec["value"]
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.buffer: list[bytes] = []         # the lazy bug's unwritten adds

    def add(self, call: Call, key: str, delta: int, rid: str, sum: str) -> tuple:
        if self.bug != "trust" and sum != digest("add", key, delta, rid):
            raise RpcError("CORRUPT", "request checksum does not match")
        value = self.done.get(rid) if self.bug != "nodedup" else None
        if value is None:
            value = self.values.get(key, 0) + delta
            self._log(json.dumps({"rid": rid, "key": key, "delta": delta, "value": value},
                                 separators=(",", ":")).encode() + b"\n")
            self.values[key] = value
            self.done[rid] = value
        return key, delta, rid, value, digest("add", key, delta, rid, value)

    def read(self, call: Call, key: str, rid: str, sum: str) -> tuple:
        if self.bug != "trust" and sum != digest("read", key, rid):
            raise RpcError("CORRUPT", "request checksum does not match")
        value = self.values.get(key, 0)
        return key, rid, value, digest("read", key, rid, value)

    def close(self) -> None:
        os.close(self.fd)

    def _log(self, line: bytes) -> None:
        if self.bug == "lazy":
            self.buffer.append(line)
            if len(self.buffer) < LAZY_EVERY:
                return
            line, self.buffer = b"".join(self.buffer), []
        os.write(self.fd, line)


def main(l4: L4, bug: str = "", where: str = "") -> int:
    path = os.path.join(where or scratch_dir(l4.task_name), LOG_NAME)
    ledger = Ledger(path, bug)
    print(f"[{l4.task_name}] {len(ledger.done)} adds, {len(ledger.values)} keys from {path}"
          + (f" (planted bug: {bug})" if bug else ""), file=sys.stderr, flush=True)
    LEDGER.serve(l4, ledger)
    return 0
