"""Chaos runs against real systems booted from configs/minimal.toml.

- the soak: configs/chaos/minimal-soak.toml (15 s of kills, crashes, a hung server and every
  IPC fault kind under load) ends with no invariant violation and nothing left behind;
- a run with explicit faults restarts the killed task, cleans up its hogs, and two runs with
  the same seed inject the same sequence;
- a violated invariant fails the run: `l4run chaos --json` exits 1 and names it.
"""
from __future__ import annotations

import pytest

import json
import os

from kernel.user.testing import PROJECT_ROOT
from launcher.chaos import load_plan, parse_plan, run_plan

from tests.launcher.helpers import l4run, write

MINIMAL = os.path.join(PROJECT_ROOT, "configs", "minimal.toml")
SOAK = os.path.join(PROJECT_ROOT, "configs", "chaos", "minimal-soak.toml")


def _records(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow      # timing-bound (seconds of waiting): L4PY_SLOW=1 runs it
def test_soak_on_the_minimal_image_has_no_violation(tmp_path) -> None:
    report = run_plan(load_plan(SOAK), image_path=MINIMAL, run_dir=str(tmp_path / "run"))
    assert report["violations"] == [], report["violations"]
    assert report["verdict"] == "pass" and report["kernel_crashes"] == 0
    faults = report["faults"]
    assert faults.get("kill", 0) + faults.get("crash", 0) >= 2, faults
    assert len(set(faults) & {"drop", "delay", "duplicate", "corrupt", "timeout", "reorder"}) >= 4
    assert sum(report["restarts"].values()) >= 2 and report["recoveries"] >= 2
    recs = _records(report["injections_file"])
    assert any(r.get("source") == "kernel" for r in recs)
    assert sum("seq" in r and "source" not in r for r in recs) == report["scheduled"]


PLAN = {
    "chaos": {"name": "explicit", "seed": 11, "duration": "3s", "rate": 3.0, "settle": "1s"},
    "fault": [{"kind": "corrupt", "services": ["hello"], "count": 3},
              {"kind": "duplicate", "services": ["hello"], "count": 3}],
    "schedule": [{"at": "0.2s", "kind": "kill", "task": "hello"},
                 {"at": "0.5s", "kind": "mem_hog", "task": "hello", "mib": 16, "for": "1s"},
                 {"at": "0.6s", "kind": "cpu_hog", "task": "client", "for": "1s"},
                 {"at": "1.2s", "kind": "stop", "task": "hello", "for": "300ms"},
                 {"at": "2s", "kind": "crash", "task": "client"}],
}


def test_killed_task_is_restarted_and_same_seed_gives_same_sequence(tmp_path) -> None:
    seqs = []
    for i in range(2):
        r = run_plan(parse_plan(PLAN, "explicit.toml"), image_path=MINIMAL,
                     run_dir=str(tmp_path / f"run{i}"))
        assert r["violations"] == [], r["violations"]
        assert r["restarts"]["hello"] >= 1 and r["restarts"]["client"] >= 1
        assert r["faults"]["kill"] == 1 and r["faults"]["mem_hog"] == 1
        recs = _records(r["injections_file"])
        seqs.append([(x["seq"], x["at"], x["kind"], x["target"], json.dumps(x["params"]))
                     for x in recs if "seq" in x and "source" not in x])
    assert seqs[0] == seqs[1] and len(seqs[0]) >= 5


def test_a_violation_fails_the_run_with_exit_status_1(tmp_path) -> None:
    plan = write(str(tmp_path / "bad.toml"), '''
[chaos]
name = "bad"
duration = "1.5s"
settle = "0.5s"

[[schedule]]
at = "0.2s"
kind = "kill"
task = "client"

[[check]]
command = "false"
every = "0.3s"
''')
    p = l4run("chaos", plan, "--image", MINIMAL, "--run-dir", str(tmp_path / "run"), "--json",
              check=False)
    assert p.returncode == 1, p.stderr
    report = json.loads(p.stdout)
    assert report["verdict"] == "fail"
    assert any(v["invariant"] == "check" and "false" in v["message"] for v in report["violations"])
    assert report["restarts"]["client"] == 1


def test_device_fault_reaches_the_hal_knobs(tmp_path) -> None:
    plan = parse_plan({"chaos": {"name": "dev", "duration": "1.5s", "settle": "0.5s"},
                       "schedule": [{"at": "0.2s", "kind": "device", "device": "disk0",
                                     "knobs": {"error_rate": 0.5}, "for": "0.5s"}]}, "dev.toml")
    r = run_plan(plan, image_path=os.path.join(PROJECT_ROOT, "configs", "devices.toml"),
                 run_dir=str(tmp_path / "run"))
    assert r["violations"] == [] and r["skipped"] == [], r
    assert r["faults"] == {"device": 1}
    rec = [x for x in _records(r["injections_file"]) if x.get("kind") == "device"]
    assert rec[0]["result"]["error_rate"] == 0.5
