"""ORe's fault knobs (servers/ore/switch.py `Faults`, ORE's admin op `faults`) and the chaos
kind "switch" that sets them (launcher/chaos: plan.py, sequence.py, inject.py).

Without a machine: the knobs' checks name the key; one seed gives one sequence of faults; a
corruption changes exactly one byte past the Ethernet header; the scope (labels, names,
"uplink") and `clear`; a plan's switch faults checked and scheduled with a seed of their own.

In a booted machine (ORe without an uplink, two native stack tasks of
servers/netstack/demo.py on it: `serve` and `fetch`, which downloads 256 KiB again and again
and checks each body's sha256): the control command refuses bad knobs by name and a client
task's call of the admin op is refused DENIED; then a chaos plan (attached, `run_plan`) drops,
corrupts and duplicates the fetch task's frames for a few seconds — every download during and
after it is intact, ORe's counts (`l4run net --json`) show the drops, corruptions and
duplicates, the receivers' stacks show the checksum drops, and the knobs are off again.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Iterator

import pytest

from launcher import control
from launcher.chaos import PlanError, parse_plan, run_plan, schedule
from launcher.netimage import net_image, task
from servers.ore.switch import UPLINK, Faults, KnobError, Port, check_knobs
from tests.launcher.helpers import assert_clean, l4run, system_pids, task_log, until

FRAME = bytes(range(6)) + bytes(range(6, 12)) + b"\x08\x00" + bytes(range(100))
SIZE = 256 << 10


# -- the knobs, without a machine ---------------------------------------------------------------
@pytest.mark.parametrize("knobs, needle", [
    ({"drop": 1.5}, "knob 'drop': a probability 0..1"),
    ({"corrupt": True}, "knob 'corrupt'"),
    ({"duplicate": float("nan")}, "knob 'duplicate'"),
    ({"colour": 1}, "knob 'colour': unknown"),
    ({"seed": -1}, "knob 'seed'"),
    ({"ports": [0]}, "knob 'ports': '0'"),
    ({"ports": "web"}, "knob 'ports': a list"),
    ({"clear": "yes"}, "knob 'clear'"),
    ([1, 2], "knobs must be a map"),
])
def test_bad_knobs_are_named(knobs: Any, needle: str) -> None:
    with pytest.raises(KnobError) as e:
        check_knobs(knobs)
    assert needle in str(e.value), str(e.value)
    f = Faults()
    with pytest.raises(KnobError):
        f.update({"drop": 0.5, **knobs} if isinstance(knobs, dict) else knobs, [])
    assert not f.active                       # nothing set when one knob is bad


def _run(f: Faults, src: Port, dst: Port, n: int) -> list[tuple[bytes, int]]:
    return [f.apply(src, (dst,), FRAME) for _ in range(n)]


def test_one_seed_one_sequence_and_what_each_knob_does() -> None:
    runs = []
    for _ in range(2):
        a, b = Port(1, "web"), Port(2, "db")
        f = Faults()
        f.update({"drop": 0.2, "corrupt": 0.2, "duplicate": 0.1, "seed": 42}, [])
        runs.append(_run(f, a, b, 500))
    assert runs[0] == runs[1]                  # same seed, same frames: same faults
    out = runs[0]
    dropped = sum(1 for _, n in out if n == 0)
    doubled = sum(1 for _, n in out if n == 2)
    changed = [fr for fr, n in out if n and fr != FRAME]
    assert 60 < dropped < 140 and 20 < doubled < 80 and 50 < len(changed) < 120
    for fr in changed:                         # one byte, past the Ethernet header
        diff = [i for i in range(len(FRAME)) if fr[i] != FRAME[i]]
        assert len(diff) == 1 and diff[0] >= 14
    assert a.drops["fault"] == dropped and a.faults["dropped"] == dropped
    assert f.state()["counts"] == {"dropped": dropped, "corrupted": len(changed),
                                   "duplicated": doubled}


def test_an_ipv4_frame_is_corrupted_inside_its_datagram_not_its_padding() -> None:
    ip = b"\x45\x00" + (20).to_bytes(2, "big") + bytes(16)          # 20 bytes, then padding
    frame = FRAME[:12] + b"\x08\x00" + ip + bytes(26)
    f = Faults()
    f.update({"corrupt": 1.0, "seed": 5}, [])
    for _ in range(200):
        fr, _ = f.apply(Port(1, "a"), (Port(2, "b"),), frame)
        diff = [i for i in range(len(frame)) if fr[i] != frame[i]]
        assert len(diff) == 1 and 14 <= diff[0] < 34


def test_scope_by_label_name_and_uplink_and_clear() -> None:
    web, db, up = Port(1, "web"), Port(2, "db"), Port(UPLINK, "uplink")
    f = Faults()
    f.update({"drop": 1.0, "ports": ["db"]}, [])
    assert f.apply(web, (up,), FRAME)[1] == 1                 # neither end in scope
    assert f.apply(web, (db,), FRAME)[1] == 0                 # to db
    assert f.apply(db, (up,), FRAME)[1] == 0                  # from db
    f.update({"ports": [1]}, [])
    assert f.apply(web, (up,), FRAME)[1] == 0 and f.apply(db, (up,), FRAME)[1] == 1
    f.update({"ports": ["uplink"]}, [])
    assert f.apply(up, (db,), FRAME)[1] == 0 and f.apply(web, (db,), FRAME)[1] == 1
    assert f.apply(web, (), FRAME) == (FRAME, 1)              # nowhere to go: not a fault
    assert f.counts["dropped"] == 4
    f.update({"drop": 0, "clear": True}, [web, db, up])
    assert not f.active and not f.counts and not web.faults and not up.faults


# -- the chaos kind, without a machine ------------------------------------------------------------
def _plan(fault: dict[str, Any]) -> Any:
    return parse_plan({"chaos": {"duration": 2, "seed": 3},
                       "schedule": [{"at": "0.1s", "kind": "switch", **fault}]}, "p.toml")


@pytest.mark.parametrize("fault, needle", [
    ({"service": "ore", "knobs": {"drop": 2}}, "schedule[0].knobs: knob 'drop'"),
    ({"service": "ore", "knobs": {"loss": 0.1}}, "knobs: knob 'loss': unknown"),
    ({"service": "ore", "knobs": {"seed": 1}}, "sets a rate > 0"),
    ({"knobs": {"drop": 0.1}}, "scoped by `service`"),
    ({"service": "ore", "device": "nic0", "knobs": {"drop": 0.1}}, "scoped by `service`"),
    ({"service": "ore", "knobs": {"drop": 0.1}, "reset": {"clear": True}}, "reset.clear"),
    ({"service": "ore", "knobs": {"drop": 0.1}, "colour": 1}, "schedule[0].colour: unknown key"),
])
def test_plan_switch_faults_checked(fault: dict[str, Any], needle: str) -> None:
    with pytest.raises(PlanError) as e:
        _plan(fault)
    assert needle in str(e.value), str(e.value)


def test_plan_switch_fault_scheduled_with_a_seed() -> None:
    plan = _plan({"service": "ore", "knobs": {"drop": 0.1, "ports": ["web"]}, "for": "3s"})
    one, two = (schedule(plan, ["ore", "web"], ["ore"]) for _ in range(2))
    assert [i.key() for i in one] == [i.key() for i in two]
    inj = one[0]
    assert (inj.kind, inj.target, inj.params["for"]) == ("switch", "service:ore", 3.0)
    assert inj.params["knobs"]["drop"] == 0.1 and type(inj.params["knobs"]["seed"]) is int


# -- in a booted machine --------------------------------------------------------------------------
IMAGE = net_image("ore-faults", ore={"clients": {}}, tasks=[
    task("serve", "servers.netstack.demo:serve", ["report=0.5"],
         net={"switch": "ore", "ip": "10.0.5.1/24"}),
    task("fetch", "servers.netstack.demo:fetch",
         [f"url=10.0.5.1:80/bytes/{SIZE}", f"size={SIZE}", "every=0.1"],
         net={"switch": "ore", "ip": "10.0.5.2/24"}),
    task("intruder", "tests.ore.test_switch_faults:intruder", [],
         caps={"net": {"service": "ore", "label": 7}})])


def intruder(l4: Any) -> int:
    """A client task calling ORe's admin op through its own capability: refused."""
    from kernel.user.rpc import RemoteError
    from servers.ore.protocol import ORE
    try:
        ORE.client(l4, l4.caps["net"], timeout=5000).faults({"drop": 1.0})
        print("INTRUDER " + json.dumps({"answered": True}), flush=True)
    except RemoteError as e:
        print("INTRUDER " + json.dumps({"error": e.error, "reason": e.reason}), flush=True)
    while True:
        time.sleep(3600)


def _fetches(rd: str) -> list[dict[str, Any]]:
    return [json.loads(ln[6:]) for ln in task_log(rd, "fetch").splitlines()
            if ln.startswith("FETCH ")]


def _net(rd: str) -> dict[str, Any]:
    return dict(json.loads(l4run("net", "--json", "--run-dir", rd).stdout)["ore"])


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("ore-faults")
    rd = str(base / "run")
    os.makedirs(rd)
    image = str(base / "ore-faults.toml")
    with open(image, "w") as f:
        f.write(IMAGE)
    shm_before = set(os.listdir("/dev/shm"))
    l4run("boot", image, "--detach", "--run-dir", rd)
    pids = system_pids(rd)
    try:
        until("the first download", lambda: _fetches(rd), 30)
        yield rd
    finally:
        l4run("down", "--run-dir", rd)
        assert_clean(rd, pids, shm_before)


def test_the_admin_op_refuses_bad_knobs_and_clients(machine: str) -> None:
    a = control.request(machine, "switch_faults", service="ore", knobs={"drop": 7})
    assert not a["ok"] and "ore.faults: INVALID" in a["error"] and "knob 'drop'" in a["error"]
    a = control.request(machine, "switch_faults", service="nope", knobs={})
    assert not a["ok"] and "no service 'nope'" in a["error"]
    a = control.request(machine, "switch_faults", service="ore", knobs={})
    assert a["ok"] and a["result"]["active"] is False
    got = until("the intruder's answer", lambda: "INTRUDER " in task_log(machine, "intruder")
                and task_log(machine, "intruder"))
    assert '"error": "DENIED"' in got, got
    assert not _net(machine)["faults"]["active"]


def test_a_chaos_plan_drops_and_corrupts_and_downloads_stay_intact(machine: str) -> None:
    rd = machine
    plan = parse_plan({
        "chaos": {"name": "switch-faults", "seed": 11, "duration": "5s", "settle": "0.5s"},
        "schedule": [{"at": "0.2s", "kind": "switch", "service": "ore", "for": "4s",
                      "knobs": {"drop": 0.05, "corrupt": 0.05, "duplicate": 0.02,
                                "ports": ["fetch"]}}]}, "switch-faults.toml")
    before = len(_fetches(rd))
    report = run_plan(plan, run_dir=rd)
    assert report["verdict"] == "pass", report["violations"]
    assert report["faults"].get("switch") == 1 and not report["skipped"], report
    until("a download after the plan", lambda: len(_fetches(rd)) > before + 3, 30)
    rounds = _fetches(rd)[before:]
    assert rounds and all(r.get("intact") and r.get("bytes") == SIZE for r in rounds), \
        [r for r in rounds if not r.get("intact")][:3]
    sw = _net(rd)
    counts, fetch = sw["faults"]["counts"], sw["clients"]["fetch"]
    assert not sw["faults"]["active"]                             # reset after `for`
    assert counts["dropped"] > 5 and counts["corrupted"] > 5 and counts["duplicated"] > 0, counts
    assert fetch["drops"].get("fault", 0) > 0                     # from fetch: on its port
    assert sum(c["faults"].get("corrupted", 0) for c in sw["clients"].values()) == \
        counts["corrupted"]
    serve = json.loads([ln for ln in task_log(rd, "serve").splitlines()
                        if ln.startswith("NETSTACK ")][-1][9:])
    bad = sum(v for k, v in serve.items() if k.startswith("drop_bad"))
    assert bad > 0, serve                                         # checksums caught them
    with open(os.path.join(rd, "chaos", "injections.jsonl")) as f:
        lines = [json.loads(ln) for ln in f]
    reset = [ln for ln in lines if ln.get("kind") == "switch" and ln.get("reset")]
    assert reset and reset[0]["counts"]["dropped"] > 0
    out = l4run("net", "--run-dir", rd).stdout
    assert "faults: off" in out and "dropped" in out, out
