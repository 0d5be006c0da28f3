"""Structure-aware fuzzing: requests generated from the declarations, sent to the real thing.

Modules:
- `model`: what the kernel fuzzer knows (fuzz threads, tasks and their slots) and its report;
- `fields`: one value per field of `kernel.abi.LAYOUTS`, drawn from what a task holds, with
  near misses and wrong types;
- `kernel`: the kernel fuzzer's loop (`Fuzzer`) and the workload check after it;
- `protocol`: the same for a server, from its `kernel.user.rpc.Protocol` declaration
  (`ProtocolFuzzer`).

`l4run bench fuzz` (launcher/bench_fuzz.py) runs them at length; the tests
(tests/kernel/test_fuzz_structured.py, tests/conformance/test_protocol_fuzz.py) briefly.
"""
from __future__ import annotations

from .kernel import Fuzzer, workload_ok
from .model import FuzzError, Report

__all__ = ["Fuzzer", "FuzzError", "Report", "workload_ok"]
