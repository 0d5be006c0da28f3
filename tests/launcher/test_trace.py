"""`l4run trace` on a booted minimal image: the file is Chrome trace-event JSON (every slice
has ts/dur/pid/tid/name, flows pair up, the image's tasks are named), `--summary` prints
its tables; an idle system records nothing while the trace is off."""
from __future__ import annotations

import json
import os

from kernel.user.testing import PROJECT_ROOT
from launcher import control

from .helpers import l4run, wait_for

MINIMAL = os.path.join(PROJECT_ROOT, "configs", "minimal.toml")


def check_format(trace: dict) -> None:
    evs = trace["traceEvents"]
    for e in evs:
        assert e["ph"] in ("X", "s", "f", "i", "M"), e
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int) and e["name"], e
        if e["ph"] == "X":
            assert isinstance(e["ts"], float) and e["dur"] >= 0, e
        if e["ph"] in ("s", "f", "i"):
            assert isinstance(e["ts"], float), e
    starts = sorted(e["id"] for e in evs if e["ph"] == "s")
    ends = sorted(e["id"] for e in evs if e["ph"] == "f")
    assert starts == ends and len(set(starts)) == len(starts), "every flow starts and ends once"
    tracks = {(e["pid"], e["tid"]) for e in evs if e["ph"] == "M" and e["name"] == "thread_name"}
    assert all((e["pid"], e["tid"]) in tracks for e in evs if e["ph"] != "M"), "named tracks"


def test_trace_minimal(tmp_path):
    rd = str(tmp_path / "run")
    l4run("boot", MINIMAL, "--detach", "--run-dir", rd)
    try:
        wait_for(lambda: "hello, world" in l4run("logs", "client", "--run-dir", rd).stdout,
                 timeout=30, what="the client's first answer")
        # Off: nothing is recorded, however long the system runs.
        assert control.request(rd, "trace", action="status")["held"] == 0
        out = str(tmp_path / "trace.json")
        l4run("trace", "--duration", "1", "-o", out, "--run-dir", rd)
        with open(out) as f:
            trace = json.load(f)
        check_format(trace)
        evs = trace["traceEvents"]
        procs = {e["args"]["name"] for e in evs if e["ph"] == "M" and e["name"] == "process_name"}
        assert any(p.startswith("hello ") for p in procs) and any(p.startswith("client ") for p in procs), procs
        calls = [e for e in evs if e["ph"] == "X" and e["name"].startswith("call hello")]
        assert calls, "the client's calls to hello are slices"
        assert any(e["ph"] == "s" for e in evs)
        after = control.request(rd, "trace", action="status")
        assert after["on"] is False and after["held"] == 0, after
        s = l4run("trace", "--duration", "0.5", "--summary", "--tasks", "hello,client", "--run-dir", rd)
        assert "top talkers" in s.stdout and "slowest calls" in s.stdout and "client" in s.stdout
    finally:
        l4run("down", "--run-dir", rd, check=False)
