"""The record of a run: RUN_DIR/chaos/injections.jsonl, and the invariant violations.

Contract: every line is one JSON object with `t` (seconds since `begin`) and `ts` (wall
clock); the first line is the one `begin` writes. A violation of an invariant the plan turned
off is neither recorded nor counted; user checks (`check`) are always counted. Every line is
flushed at once, so a run that dies leaves a record up to that moment.

Threads: the runner's thread only.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from .plan import INVARIANTS


@dataclass
class Violation:
    t: float            # seconds since the start of the run
    ts: float
    invariant: str
    message: str


class Record:
    def __init__(self, run_dir: str, invariants: dict[str, bool]) -> None:
        self.invariants = invariants
        self.dir = os.path.join(run_dir, "chaos")
        os.makedirs(self.dir, exist_ok=True)
        self.path = os.path.join(self.dir, "injections.jsonl")
        self._file = open(self.path, "w")
        self.t_start = 0.0
        self.violations: list[Violation] = []

    def begin(self, obj: dict[str, Any]) -> None:
        """The run starts now; `obj` is the first line."""
        self.t_start = time.time()
        self.write(obj)

    def now(self) -> float:
        return time.time() - self.t_start

    def write(self, obj: dict[str, Any]) -> None:
        self._file.write(json.dumps({"t": round(self.now(), 4), "ts": time.time(), **obj},
                                    default=str) + "\n")
        self._file.flush()

    def violate(self, invariant: str, message: str) -> None:
        if invariant in INVARIANTS and not self.invariants.get(invariant, True):
            return
        self.violations.append(Violation(round(self.now(), 3), time.time(), invariant, message))
        self.write({"violation": invariant, "message": message})

    def close(self) -> None:
        self._file.close()
