"""The real network: host tools reach L4 tasks' stacks through the HAL NIC's TAP back end.

The test makes a network namespace of its own (a unique name, deleted at the end whatever
happens) and runs the whole system inside it: the HAL creates its TAP device there, the test
gives it the host-side address 10.0.2.2/24 and brings it up. Then, inside the namespace:
host `ping` is answered by the `web` task's stack at 10.0.2.15 (TAP -> HAL NIC -> the l4nic
driver in the nic task -> its session -> the task), host `curl` gets the page and a 4 MiB
generated body (checked byte for byte) from its HTTP server, UDP and TCP echo answer, and
the `reach` task (10.0.2.16) pings the host and talks to a UDP and a TCP server the test runs
on the host side. A second HTTP task, `web-ore` (10.0.2.17), sits behind the ORe switch
(servers/ore, its uplink a session of the nic server; its address from its ORe session, the
image's `net` table): ping and curl reach it through TAP -> NIC -> driver -> ORe -> task. Addresses exist only inside the namespace. Skipped without root,
/dev/net/tun, network namespaces or the host tools.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from typing import Any, Iterator

import pytest

from launcher.netimage import net_image, nic, ore_server, session, task
from servers.netstack.demo import body
from tests.launcher.helpers import task_log as _log, record as _last, until as _until
from tests.netns import in_ns, netns as namespace, netns_skip

TAP = "l4tap0"
HOST, WEB, REACH, WEB_ORE = "10.0.2.2", "10.0.2.15", "10.0.2.16", "10.0.2.17"
IMAGE = net_image(
    "netstack-tap-test", nics=[nic("nic0", "tap", tap=TAP)],
    nic_clients={"1": "web", "2": "reach", "3": "ore"}, tasks=[
        task("web", "servers.netstack.demo:serve", [f"ip={WEB}/24", f"gw={HOST}", "mac=02:00:00:0a:00:0f"],
             caps=session("nic", 1)),
        task("reach", "servers.netstack.demo:reach",
             [f"ip={REACH}/24", "mac=02:00:00:0a:00:10", f"ping={HOST}", f"udp={HOST}:9001",
              f"tcp={HOST}:9000", "wait=40"], caps=session("nic", 2)),
        ore_server({"uplink": "uplink", "clients": {}}, uplink=3, sigma0=3),
        task("web-ore", "servers.netstack.demo:serve", [f"gw={HOST}"],
             net={"switch": "ore", "ip": f"{WEB_ORE}/24"})])

# the host side's servers, run inside the namespace: TCP 9000 answers a line, UDP 9001 a datagram
HOST_SERVERS = r"""
import socket, threading
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("0.0.0.0", 9000)); t.listen(4)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 9001))
def udp():
    while True:
        d, a = u.recvfrom(2048); u.sendto(b"host got: " + d, a)
threading.Thread(target=udp, daemon=True).start()
print("READY", flush=True)
while True:
    c, a = t.accept()
    c.settimeout(10)
    line = c.recv(4096)
    c.sendall(b"host got: " + line); c.close()
"""


SKIP = netns_skip("ip", "ping", "curl")
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


@pytest.fixture(scope="module")
def netns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("netstack-tap")
    rd = str(base / "run")
    os.makedirs(rd)
    image = str(base / "netstack-tap.toml")
    with open(image, "w") as f:
        f.write(IMAGE)
    with namespace("l4ns") as ns:
        host = ns.start(sys.executable, "-c", HOST_SERVERS)
        assert host.stdout is not None and host.stdout.readline().strip() == "READY"
        ns.boot(image, rd)
        ns.tap_up(TAP, f"{HOST}/24", timeout=20)
        for name in ("web", "web-ore"):
            _until(f"the {name} task's stack", lambda: "HTTP on 80" in _log(rd, name))
        yield {"ns": ns.name, "rd": rd}


@pytest.mark.parametrize("addr", [WEB, WEB_ORE], ids=["nic", "ore"])
def test_host_ping_answered_by_the_task(netns: dict[str, Any], addr: str) -> None:
    p = in_ns(netns["ns"], "ping", "-c", "3", "-W", "2", addr, check=False)
    assert " 3 received" in p.stdout, p.stdout + p.stderr + _log(netns["rd"], "web")


@pytest.mark.parametrize("addr", [WEB, WEB_ORE], ids=["nic", "ore"])
def test_host_curl_gets_the_page_and_a_body(netns: dict[str, Any], addr: str) -> None:
    ns = netns["ns"]
    page = in_ns(ns, "curl", "-sS", "-m", "20", f"http://{addr}/").stdout
    assert "Hello from an L4 task" in page
    n = 4 << 20 if addr == WEB else 1 << 20
    p = subprocess.run(["ip", "netns", "exec", ns, "curl", "-sS", "-m", "60", f"http://{addr}/bytes/{n}"],
                       capture_output=True, timeout=90)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout) == n and hashlib.sha256(p.stdout).digest() == hashlib.sha256(body(n)).digest()
    missing = in_ns(ns, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "20",
                    f"http://{addr}/nothing").stdout
    assert missing == "404"


ECHO = r"""
import socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(2)
for _ in range(5):
    u.sendto(b"udp ping", (sys.argv[1], 7))
    try:
        print(u.recvfrom(2048)[0].decode()); break
    except socket.timeout:
        pass
t = socket.create_connection((sys.argv[1], 7), timeout=10)
t.sendall(b"tcp ping" * 1000); got = b""
while len(got) < 8000:
    got += t.recv(65536)
t.close(); print(got == b"tcp ping" * 1000)
"""


def test_echo_servers_answer_the_host(netns: dict[str, Any]) -> None:
    p = in_ns(netns["ns"], sys.executable, "-c", ECHO, WEB)
    assert p.stdout.split() == ["udp", "ping", "True"], p.stdout + p.stderr


def test_a_task_reaches_the_host_side(netns: dict[str, Any]) -> None:
    rd = netns["rd"]
    r = _until("the reach task's report", lambda: _last(rd, "reach", "REACH"), 60)
    assert isinstance(r.get("ping"), list) and min(r["ping"]) > 0, r
    assert r["udp"]["reply"] == "host got: datagram from an L4 task" and r["udp"]["from"][0] == HOST, r
    assert r["tcp"]["reply"] == "host got: line from an L4 task\n", r
