"""ORe in a real booted machine (tasks in tests/ore/ore_tasks.py).

The machine: a HAL with a loopback NIC driven by the `nic` server, ORe with the nic session
as its uplink, and clients by label: alice (1, pings bob, broadcasts), bob (2, echoes), carol
(3, broadcast off until she turns it on), mallory (4, spoofs alice's MAC, sends malformed and
oversized descriptors, never drains) and victim (5, no MAC in the policy: a derived one;
killed); label 9 has no policy (refused). Counters are read as an operator reads them: `l4run net --json` and `ps --json`.
Then the uplink's driver and ORe itself are killed; everyone recovers. `l4run down` must
leave nothing behind.
"""
from __future__ import annotations

import json
import os
from typing import Any

import pytest

from launcher.netimage import net_image, nic, session, task
from servers.ore.switch import derive_mac
from tests.launcher.helpers import assert_clean, l4run, ps, system_pids
from tests.launcher.helpers import task_log as _log, record as _last, until as _until

ALICE, BOB = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
POLICY = json.dumps({"uplink": "uplink", "clients": {
    "1": {"name": "alice", "mac": ALICE, "ip": "10.0.2.15/24", "broadcast": True},
    "2": {"name": "bob", "mac": BOB, "broadcast": True},
    "3": {"name": "carol", "mac": "02:00:00:00:00:0c"},
    "4": {"name": "mallory", "mac": "02:00:00:00:00:0d", "broadcast": True},
    "5": {"name": "victim"}}})
TASKS = {"alice": ("peer", ["ping", BOB], 1), "bob": ("peer", ["echo"], 2),
         "carol": ("peer", ["listen"], 3), "mallory": ("mallory", [ALICE, BOB], 4),
         "victim": ("victim", [], 5), "stranger": ("victim", [], 9)}


def _image() -> str:
    return net_image("ore-test", nics=[nic("nic0")], nic_clients={"1": "ore"},
                     ore=json.loads(POLICY), ore_uplink=1, tasks=[
                         task(name, f"tests.ore.ore_tasks:{fn}", args, caps=session("ore", label))
                         for name, (fn, args, label) in TASKS.items()])


def _net(rd: str) -> dict[str, Any]:
    return dict(json.loads(l4run("net", "--json", "--run-dir", rd).stdout)["ore"])


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("ore")
    rd = str(base / "run")
    os.makedirs(rd)
    image = str(base / "ore-test.toml")
    with open(image, "w") as f:
        f.write(_image())
    shm_before = set(os.listdir("/dev/shm"))
    l4run("boot", image, "--detach", "--run-dir", rd)
    pids = system_pids(rd)
    try:
        yield {"rd": rd}
    finally:
        l4run("down", "--run-dir", rd)
        assert_clean(rd, pids, shm_before)


def test_unicast_between_clients_and_counters(machine: dict[str, Any]) -> None:
    rd = machine["rd"]
    a = _until("alice's echoes", lambda: (s := _last(rd, "alice", "PEER")) and
               s["echoes"] > 300 and s)
    assert a["intact"] == a["echoes"] and a["mac"] == ALICE and a["ip"] == "10.0.2.15/24"
    net = _net(rd)
    alice, bob = net["clients"]["alice"], net["clients"]["bob"]
    assert alice["tx_frames"] > 300 and bob["rx_frames"] > 300 and bob["tx_frames"] > 300
    assert alice["tx_bytes"] >= 600 * 300
    carol = _last(rd, "carol", "PEER")
    assert carol is not None and carol["unicast"] == 0        # alice's unicast went to bob only
    pinned = {r["mac"]: r["port"] for r in net["table"] if r["pinned"]}
    assert pinned[ALICE] == "alice" and pinned[BOB] == "bob"
    row = ps(rd)["ore"]
    assert row["net"]["clients"]["alice"]["tx_frames"] > 0    # the same counters in ps --json
    refused = _until("the stranger refused", lambda: "DENIED" in _log(rd, "stranger") and
                     _log(rd, "stranger"))
    assert "label 9" in refused                               # no policy for label 9


def test_broadcast_only_to_clients_that_enabled_it(machine: dict[str, Any]) -> None:
    rd = machine["rd"]
    bob = _until("bob's broadcasts", lambda: (s := _last(rd, "bob", "PEER")) and
                 s["broadcast"] > 5 and s)
    assert bob["broadcast"] > 5
    carol = _until("carol turned broadcast on", lambda: (s := _last(rd, "carol", "PEER")) and
                   s["enabled"] and s["broadcast"] > s["bcast_off"] + 3 and s)
    assert carol["bcast_off"] == 0                            # nothing while it was off
    alice = _last(rd, "alice", "PEER")
    assert alice is not None and alice["broadcast"] == 0      # its own broadcasts not back


def test_spoofed_malformed_oversized_dropped_and_counted(machine: dict[str, Any]) -> None:
    rd = machine["rd"]
    m = _until("mallory's report", lambda: _last(rd, "mallory", "MALLORY"), 20)
    drops = m["stats"]["drops"]
    assert drops.get("spoofed") == 1 and drops.get("oversized") == 1, m
    assert drops.get("malformed") == 2 and m["stats"]["malformed"].get("descriptor") == 1
    assert m["stats"]["tx_frames"] == 1                        # only the good frame went
    assert m["acks"]["tx_malformed"] == 3 and m["acks"]["tx_dropped"] == 1
    bob = _last(rd, "bob", "PEER")
    assert bob is not None and bob["spoofed_seen"] == 0


def test_a_client_that_never_drains_stalls_nobody(machine: dict[str, Any]) -> None:
    rd = machine["rd"]
    before = _until("alice's echoes", lambda: _last(rd, "alice", "PEER"))
    _until("mallory's RX stream full", lambda: _net(rd)["clients"]["mallory"]["drops"]
           .get("no_buffer", 0) > 5)
    after = _until("alice goes on", lambda: (s := _last(rd, "alice", "PEER")) and
                   s["echoes"] > before["echoes"] + 300 and s)
    assert after["intact"] == after["echoes"]


def test_a_killed_client_returns_its_session(machine: dict[str, Any]) -> None:
    rd = machine["rd"]
    v = _until("victim's session", lambda: _last(rd, "victim", "VICTIM"))
    assert v["mac"] == derive_mac(5, "victim").hex(":")       # no MAC in the policy: derived
    net = _until("five sessions", lambda: (n := _net(rd)) and len(n["clients"]) == 5 and n)
    assert net["clients"]["victim"]["mac"] == v["mac"]
    l4run("kill", "victim", "--run-dir", rd)
    _until("victim's session closed", lambda: "victim" not in _net(rd)["clients"])
    assert "victim (label 5) client gone" in _log(rd, "ore")


def test_the_uplink_driver_restarted_ore_reattaches(machine: dict[str, Any]) -> None:
    rd = machine["rd"]
    up = _net(rd)["uplink"]
    assert up["attached"] and up["attaches"] == 1
    l4run("kill", "nic", "--run-dir", rd)
    again = _until("the uplink reattached", lambda: (u := _net(rd)["uplink"]) and
                   u["attaches"] >= 2 and u["attached"] and u, 30)
    assert again["lost"] >= 1
    # alice's broadcasts go out through the uplink again (and come back from the loopback
    # NIC, dropped as `loop`: their source is a local client's MAC)
    _until("frames through the new uplink", lambda: (u := _net(rd)["uplink"]) and
           u["rx_frames"] > again["rx_frames"] + 5 and u["drops"].get("loop", 0) > 0, 20)


def test_ore_killed_clients_reopen_and_traffic_resumes(machine: dict[str, Any]) -> None:
    rd = machine["rd"]
    a = _until("alice's echoes", lambda: _last(rd, "alice", "PEER"))
    l4run("kill", "ore", "--run-dir", rd)
    back = _until("alice reopened", lambda: (s := _last(rd, "alice", "PEER")) and
                  s["reopened"] >= 1 and s, 30)
    _until("traffic through the new ORe", lambda: (s := _last(rd, "alice", "PEER")) and
           s["echoes"] > back["echoes"] + 200, 30)
    last = _last(rd, "alice", "PEER")
    assert last is not None and last["intact"] == last["echoes"] and last["echoes"] > a["echoes"]
    assert ps(rd)["ore"]["restarts"] >= 1
    assert _net(rd)["uplink"]["attached"]
