"""Two L4Py machines joined by the HAL's UDP cable: tasks on one talk to tasks on the other
through both machines' ORe switches.

Each machine is booted from its own image in a run directory of its own: a HAL NIC on the
`udp` back end (hal/cable.py UdpCable, bound to 127.0.0.1, its peer the other machine's
port), the nic server (the l4nic driver), ORe (its uplink a session of the nic server) and
netstack tasks on ORe sessions (addresses from the image's `net` table, inside 10.0.3.0/24).
Machine A serves (servers/netstack/demo.py serve at 10.0.3.1); on machine B, `reach`
(10.0.3.2) pings it and `fetch` (10.0.3.3) downloads 1 MiB over TCP and checks it byte for
byte. A frame's path: task -> ORe B -> nic B -> l4nic -> HAL NIC B -> UDP -> HAL NIC A ->
l4nic -> nic A -> ORe A -> task, and back. Both machines are taken down at the end and
leave nothing behind (processes, sockets, /dev/shm).
"""
from __future__ import annotations

import os
import socket
from typing import Iterator

import pytest

from launcher.netimage import net_image, nic, task
from tests.launcher.helpers import assert_clean, l4run, system_pids, wait_for
from tests.launcher.helpers import task_log as _log, record as _report

SERVER, REACH, FETCH = "10.0.3.1", "10.0.3.2", "10.0.3.3"
SIZE = 1 << 20


def machine(side: str, n: int, port: int, peer: int) -> str:
    """Machine `side`'s image: its UDP cable end, nic, ORe and its tasks."""
    return net_image(f"cable-{side}", nics=[nic("nic0", "udp", port=port, peer=f"127.0.0.1:{peer}",
                                              mac=f"02:00:00:03:0{n}:00")],
                     nic_clients={"1": "ore"}, nic_restart="never",
                     ore={"name": f"ore-{side}", "uplink": "uplink", "clients": {}}, ore_uplink=1,
                     ore_restart="never", tasks=TASKS[side])


TASKS = {
    "a": [task("web", "servers.netstack.demo:serve",
               net={"switch": "ore", "ip": f"{SERVER}/24", "mac": "02:00:00:03:01:01"})],
    "b": [task("reach", "servers.netstack.demo:reach", [f"ping={SERVER}", "wait=60"],
               net={"switch": "ore", "ip": f"{REACH}/24", "mac": "02:00:00:03:02:02"}),
          task("fetch", "servers.netstack.demo:fetch", [f"url={SERVER}:80/bytes/{SIZE}", f"size={SIZE}"],
               net={"switch": "ore", "ip": f"{FETCH}/24", "mac": "02:00:00:03:02:03"})],
}


def _free_udp_ports(n: int) -> list[int]:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="module")
def machines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    base = tmp_path_factory.mktemp("cable")
    pa, pb = _free_udp_ports(2)
    shm_before = set(os.listdir("/dev/shm"))
    rds: dict[str, str] = {}
    pids: dict[str, set[int]] = {}
    try:
        for side, n, port, peer in (("a", 1, pa, pb), ("b", 2, pb, pa)):
            rd = str(base / f"run-{side}")
            os.makedirs(rd)
            image = str(base / f"cable-{side}.toml")
            with open(image, "w") as f:
                f.write(machine(side, n, port, peer))
            l4run("boot", image, "--detach", "--run-dir", rd, timeout=120)
            rds[side] = rd
            pids[side] = system_pids(rd)
        wait_for(lambda: "HTTP on 80" in _log(rds["a"], "web"), 60, "the server's stack")
        yield rds
    finally:
        for side, rd in rds.items():
            l4run("down", "--run-dir", rd, check=False, timeout=120)
        for side, rd in rds.items():
            assert_clean(rd, pids[side], shm_before)


def test_a_task_pings_a_task_on_the_other_machine(machines: dict[str, str]) -> None:
    rd = machines["b"]
    wait_for(lambda: _report(rd, "reach", "REACH"), 90, "the reach task's report")
    r = _report(rd, "reach", "REACH")
    assert r is not None and isinstance(r.get("ping"), list) and min(r["ping"]) > 0, r


def test_a_task_fetches_over_tcp_from_the_other_machine(machines: dict[str, str]) -> None:
    rd = machines["b"]
    wait_for(lambda: _report(rd, "fetch", "FETCH"), 120, "the fetch task's report")
    r = _report(rd, "fetch", "FETCH")
    assert r is not None and r.get("intact") is True and r.get("bytes") == SIZE, r
    assert r["status"].startswith("HTTP/1.1 200"), r
