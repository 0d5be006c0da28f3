"""DHCP: the client (servers/netstack/dhcp.py), the server task (servers/dhcpd), and the host's.

In-process (two stacks on a MemLink wire, the server's `DhcpServer` in a thread): the four
messages and the stack configured only by the ACK; DISCOVER retransmitted with backoff; renewal
at T1 by unicast; rebinding at T2 by broadcast when the server does not answer unicast; the
lease expiring when nobody answers (the stack back at 0.0.0.0); DHCPRELEASE on stop; the pool's
rules with a fake clock (per-MAC stable addresses, NAK for a wrong address, expiry,
reservations, exhaustion) and its arguments' mistakes named; the image's `net = { dhcp = true
}` and its mistakes. Booted (nic -> ORe -> dhcpd and clients, all with DHCP addresses): two
clients get distinct addresses and one fetches from the other through ORe; a restarted client
gets the same address; a restarted server keeps serving (the same address again); a client
sending malformed and mutated DHCP messages does not crash the server (its counts: each one
dropped as bad, none raised), which still offers afterwards. In a network namespace of its own:
a task gets its address from `busybox udhcpd` on the host side of a TAP device, and the host
pings it.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from typing import Any, Iterator

import pytest

from launcher.netimage import net_image, nic, session, task
from servers.dhcpd.pool import Pool
from servers.dhcpd.server import ArgError, DhcpServer, parse_args
from servers.netstack import MemLink, Stack, dhcp
from servers.netstack.config import ConfigError, parse
from tests.launcher.helpers import assert_clean, l4run, ps, system_pids
from tests.launcher.helpers import record, task_log, until
from tests.netstack.dhcp_tasks import bad_messages, mutations
from tests.netns import netns, netns_skip

SRV = "10.0.0.1"


# -- in-process ---------------------------------------------------------------------------------
class Wire:
    """A server stack with a DhcpServer thread and a client stack at 0.0.0.0 on one wire."""

    def __init__(self, lease: int = 600, args: tuple[str, ...] = ()) -> None:
        la, lb = MemLink.pair(seed=3)
        self.srv_stack = Stack(la, f"{SRV}/24", name="srv").start()
        self.cli_stack = Stack(lb, "0.0.0.0/0", name="cli").start()
        pool, opts, _ = parse_args(["pool=10.0.0.100-10.0.0.109/24", f"router={SRV}",
                                    f"lease={lease}", "dns=10.0.0.53", *args])
        self.log: list[str] = []
        self.server = DhcpServer(self.srv_stack, pool, opts["router"], opts["dns"],
                                 log=self.log.append)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.server.serve, args=(self.stop.is_set,),
                                       daemon=True)
        self.thread.start()
        self.client = dhcp.DhcpClient(self.cli_stack, log=self.log.append)

    def close(self) -> None:
        self.cli_stack.stop()
        self.stop.set()
        self.thread.join(5)
        self.srv_stack.stop()


@pytest.fixture
def wire() -> Iterator[Wire]:
    w = Wire(lease=4)
    try:
        yield w
    finally:
        w.close()


def test_discover_offer_request_ack_configures_the_stack(wire: Wire) -> None:
    assert not wire.cli_stack.configured and wire.cli_stack.stats()["address"] == "0.0.0.0/0"
    lease = wire.client.acquire(timeout=10)
    d = lease.describe()
    assert d["address"] == wire.cli_stack.stats()["address"]
    assert re.fullmatch(r"10\.0\.0\.10\d/24", d["address"]), d
    assert d["server"] == SRV and d["router"] == SRV and d["dns"] == ["10.0.0.53"], d
    assert wire.client.counts.sent == {"DISCOVER": 1, "REQUEST": 1}, wire.client.counts
    assert wire.client.counts.got == {"OFFER": 1, "ACK": 1}
    assert wire.cli_stack.ping(SRV, timeout=2) is not None          # the address works
    assert wire.server.describe()["leases"][0]["state"] == "bound"


@pytest.mark.slow      # timing-bound (seconds of waiting): L4PY_SLOW=1 runs it
def test_renewal_at_t1_is_unicast_and_rebinding_at_t2_broadcast(wire: Wire) -> None:
    lease = wire.client.acquire(timeout=10)
    wire.client.start()
    until("a renewal", lambda: wire.client.lease and wire.client.lease.renewals >= 1, 10)
    assert wire.client.lease is not None and wire.client.lease.addr == lease.addr
    assert wire.server.counts["rx_REQUEST"] >= 2 and wire.server.counts["tx_ACK"] >= 2
    # the server's unicast answers now go nowhere: the client's idea of its server is wrong
    # (as if the server moved), so RENEWING gets no answer and REBINDING (broadcast) does
    renewals = wire.client.lease.renewals
    wire.client.lease.server = b"\x0a\x00\x00\x63"                   # 10.0.0.99: nobody
    until("rebinding", lambda: wire.client.lease and wire.client.lease.renewals > renewals, 15)
    entered = wire.client.counts.entered
    assert entered.get("REBINDING", 0) >= 1 and entered["RENEWING"] >= 2, entered
    assert wire.client.lease.server == b"\x0a\x00\x00\x01"            # the one that answered
    assert wire.cli_stack.configured


@pytest.mark.slow      # timing-bound (seconds of waiting): L4PY_SLOW=1 runs it
def test_the_lease_expires_when_nobody_answers(wire: Wire) -> None:
    wire.client.acquire(timeout=10)
    wire.stop.set()                                                 # the server stops answering
    wire.thread.join(5)
    wire.client.start()
    until("the lease to expire", lambda: not wire.cli_stack.configured, 15)
    assert wire.client.lease is None and wire.client.state in ("INIT", "REQUESTING")
    assert any("expired" in line for line in wire.log), wire.log


@pytest.mark.slow      # timing-bound (seconds of waiting): L4PY_SLOW=1 runs it
def test_discover_is_retransmitted_with_backoff_until_the_timeout() -> None:
    la, lb = MemLink.pair(seed=5)                                     # nobody on the other end
    stack = Stack(lb, "0.0.0.0/0", name="alone").start()
    try:
        client = dhcp.DhcpClient(stack)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="no DHCP offer within 3.5 s"):
            client.acquire(timeout=3.5)
        assert 3.4 < time.monotonic() - t0 < 5
        assert client.counts.sent == {"DISCOVER": 3}                 # at 0, ~1 and ~3 s
        assert not stack.configured
    finally:
        stack.stop()


def test_stop_releases_the_lease(wire: Wire) -> None:
    lease = wire.client.acquire(timeout=10)
    wire.cli_stack.stop()
    until("the RELEASE", lambda: wire.server.counts["rx_RELEASE"] == 1, 5)
    assert wire.server.describe()["leases"][0]["state"] in ("free", "offered")
    assert any(f"released {dhcp.wire.ip_str(lease.addr)}" in line for line in wire.log)


def test_a_garbled_message_does_not_stop_the_server() -> None:
    w = Wire()
    try:
        for data in bad_messages() + mutations(300):
            assert isinstance(w.server.handle(data), list)
        assert w.server.counts["errors"] == 0 and w.server.counts["bad"] >= 15, w.server.counts
        assert w.client.acquire(timeout=10).addr                     # and it serves afterwards
    finally:
        w.close()


# -- the pool, with a fake clock ------------------------------------------------------------------
A, B, C = (bytes([2, 0, 0, 0, 0, n]) for n in (1, 2, 3))


def test_pool_addresses_are_per_mac_stable_and_naked_when_wrong() -> None:
    p = Pool("10.0.2.100", "10.0.2.102", 24, 60)
    a = p.offer(A, None, 0)
    assert a is not None and p.request(A, a, 0) and p.offer(A, None, 1) == a   # held
    b = p.offer(B, a, 1)                                             # asks for A's: not given
    assert b is not None and b != a
    assert isinstance(p.request(B, a, 1), str)                        # NAK: A holds it
    assert "not in the pool" in str(p.request(B, 0x0A000263 + 50, 1))
    assert Pool("10.0.2.100", "10.0.2.102", 24, 60).preferred(A) == p.preferred(A)  # restart
    assert p.release(A, a, 2) and p.offer(A, None, 3) == a            # released: still A's
    p.request(B, b, 1)
    c = p.offer(C, None, 1)
    assert c is not None and p.request(C, c, 1) and p.offer(bytes(6)[:5] + b"\x09", None, 2) is None
    assert p.offer(bytes(6)[:5] + b"\x09", None, 1 + 61) is not None  # an expired lease is free


def test_pool_reservations_and_argument_mistakes() -> None:
    pool, _, _ = parse_args(["pool=10.0.2.100-10.0.2.199/24", "host=02:00:00:00:00:50,10.0.2.80"])
    assert pool.offer(bytes.fromhex("020000000050"), None, 0) == 0x0A000250
    assert isinstance(pool.request(bytes.fromhex("020000000050"), 0x0A000264, 0), str)
    for args, needle in [([], "no pool"),
                         (["pool=10.0.2.9-10.0.2.1/24"], "pool=10.0.2.9-10.0.2.1/24"),
                         (["pool=10.0.2.0-10.0.2.9/24"], "network or broadcast"),
                         (["pool=10.0.2.1-10.0.2.9/24", "lease=1"], "lease=1"),
                         (["pool=10.0.2.1-10.0.2.9/24", "router=ten"], "router=ten"),
                         (["pool=10.0.2.1-10.0.2.9/24", "host=zz,10.0.2.5"], "host=zz"),
                         (["pool=10.0.2.1-10.0.2.9/24", "colour=red"], "'colour=red'")]:
        with pytest.raises(ArgError) as e:
            parse_args(args)
        assert needle in str(e.value), (args, str(e.value))


def test_task_arguments_dhcp() -> None:
    assert parse(["dhcp", "gw=10.0.2.2"]) == {"dhcp": "1", "gw": "10.0.2.2"}
    assert parse(["ip=dhcp"]) == {"dhcp": "1"}
    with pytest.raises(ConfigError, match="ip=10.0.2.15/24 and dhcp"):
        parse(["ip=10.0.2.15/24", "dhcp"])


# -- the image's net table: dhcp = true --------------------------------------------------------
NET_IMAGE = """
[system]
name = "t"

[[task]]
name = "ore"
run = "servers.ore.server:main"
args = ['{"clients": {}}']
provides = ["ore"]

[[task]]
name = "web"
run = "servers.netstack.demo:serve"
"""


def test_the_image_net_table_asks_for_dhcp() -> None:
    import json
    import tomllib

    from launcher.image import parse_image
    img = parse_image(tomllib.loads(NET_IMAGE + 'args = ["gw=10.0.2.2"]\n'
                                    'net = { switch = "ore", dhcp = true }\n'), "t.toml")
    tasks = {t.name: t for t in img.tasks}
    assert tasks["web"].args == ["gw=10.0.2.2", "dhcp"]
    assert json.loads(tasks["ore"].args[0])["clients"]["1"] == {"name": "web"}   # no ip


@pytest.mark.parametrize("extra, needle", [
    ('net = { dhcp = true, ip = "10.0.2.15/24" }', "net.dhcp: an address by DHCP and ip"),
    ('args = ["ip=10.0.2.15/24"]\nnet = { dhcp = true }', "the task argument ip=10.0.2.15/24"),
    ('net = { dhcp = "yes" }', "net.dhcp: true or false"),
])
def test_dhcp_and_an_address_together_are_named(extra: str, needle: str) -> None:
    import tomllib

    from launcher.image import ImageError, parse_image
    with pytest.raises(ImageError) as e:
        parse_image(tomllib.loads(NET_IMAGE + extra + "\n"), "t.toml")
    assert needle in str(e.value) and "task[1] (web).net" in str(e.value), str(e.value)


# -- booted: nic -> ORe -> dhcpd and its clients ------------------------------------------------
WEB_MAC, WEB_IP = "02:00:00:00:00:50", "10.0.2.80"
IMAGE = net_image(
    "dhcp-test", nics=[nic("nic0")], nic_clients={"1": "ore"},
    ore={"uplink": "uplink", "clients": {}}, ore_uplink=1, tasks=[
        task("dhcpd", "servers.dhcpd.server:main",
             ["pool=10.0.2.100-10.0.2.199/24", "router=10.0.2.2", "lease=30",
              f"host={WEB_MAC},{WEB_IP}", "report=1"], restart="on-failure",
             net={"switch": "ore", "ip": "10.0.2.3/24"}),
        task("web", "servers.netstack.demo:serve", restart="on-failure",
             net={"switch": "ore", "dhcp": True, "mac": WEB_MAC}),
        task("cli", "servers.netstack.demo:fetch",
             [f"url={WEB_IP}:80/bytes/100000", "size=100000", "every=1"], restart="on-failure",
             net={"switch": "ore", "dhcp": True}),
        task("mallory", "tests.netstack.dhcp_tasks:mallory",
             ["ip=10.0.2.9/24", "server=10.0.2.3", "rounds=200"], net={"switch": "ore"})])
GOT = re.compile(r": (\d+\.\d+\.\d+\.\d+)/24 from DHCP server 10\.0\.2\.3")


def addresses(rd: str, task: str) -> list[str]:
    return GOT.findall(task_log(rd, task))


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("dhcp")
    rd = str(base / "run")
    os.makedirs(rd)
    image = str(base / "dhcp.toml")
    with open(image, "w") as f:
        f.write(IMAGE)
    shm_before = set(os.listdir("/dev/shm"))
    l4run("boot", image, "--detach", "--run-dir", rd, timeout=120)
    pids = system_pids(rd)
    try:
        yield rd
    finally:
        l4run("down", "--run-dir", rd, check=False)
    assert_clean(rd, pids, shm_before)


def test_clients_get_distinct_addresses_and_talk_through_ore(booted: str) -> None:
    rd = booted
    web = until("web's address", lambda: addresses(rd, "web"), 60)
    cli = until("cli's address", lambda: addresses(rd, "cli"), 60)
    assert web == [WEB_IP] and cli[0] != WEB_IP and cli[0].startswith("10.0.2.1"), (web, cli)
    got = until("a fetch", lambda: (r := record(rd, "cli", "FETCH")) and "error" not in r and r, 60)
    assert got["intact"] and got["bytes"] == 100000, got
    # ORe is not told DHCP addresses: `l4run net` shows what each client's ARP announced
    out = json.loads(l4run("net", "--json", "--run-dir", rd).stdout)
    ports = {p.get("name"): p for p in out["ore"]["clients"].values()}
    assert ports["web"]["ip"] == WEB_IP and ports["cli"]["ip"] == cli[0], ports


def test_bad_dhcp_messages_do_not_crash_the_server(booted: str) -> None:
    rd = booted
    r = until("mallory's report", lambda: record(rd, "mallory", "MALLORY"), 90)
    assert r["sent"] >= 400 and r["offer"] and r["offer"].startswith("10.0.2."), r
    assert ps(rd)["dhcpd"]["state"] == "running"
    assert "Traceback" not in task_log(rd, "dhcpd")
    counts = until("dhcpd's counts after mallory", lambda: (d := record(rd, "dhcpd", "DHCPD"))
                   and d["counts"].get("bad", 0) >= 40 and d["counts"], 30)
    assert "errors" not in counts, counts                     # every one was checked, none raised


def test_a_restarted_client_gets_the_same_address(booted: str) -> None:
    rd = booted
    first = until("cli's address", lambda: addresses(rd, "cli"), 60)[0]
    l4run("kill", "cli", "--run-dir", rd)
    again = until("cli's address after its restart", lambda: addresses(rd, "cli")[1:], 60)
    assert again == [first]


def test_a_restarted_server_keeps_serving(booted: str) -> None:
    rd = booted
    before = addresses(rd, "cli")
    until("dhcpd up", lambda: "dhcpd: serving" in task_log(rd, "dhcpd"), 30)
    l4run("kill", "dhcpd", "--run-dir", rd)
    until("dhcpd restarted", lambda: task_log(rd, "dhcpd").count("dhcpd: serving") >= 2, 60)
    l4run("kill", "cli", "--run-dir", rd)
    after = until("cli's address from the new server",
                  lambda: addresses(rd, "cli")[len(before):], 60)
    assert after == before[-1:]


# -- the host's DHCP server: busybox udhcpd on the host side of a TAP device -------------------
TAP = "l4dhcp0"
TAP_IMAGE = net_image(
    "dhcp-tap-test", nics=[nic("nic0", "tap", tap=TAP)], nic_clients={"1": "web"}, tasks=[
        task("web", "servers.netstack.demo:serve", ["dhcp", "mac=02:00:00:0a:00:20"],
             caps=session("nic", 1))])
UDHCPD_CONF = """start 10.0.2.120
end 10.0.2.130
interface {tap}
max_leases 10
lease_file {dir}/udhcpd.leases
pidfile {dir}/udhcpd.pid
option subnet 255.255.255.0
option router 10.0.2.2
option lease 60
"""


TAP_SKIP = netns_skip("ip", "ping", "busybox")


@pytest.mark.skipif(TAP_SKIP is not None, reason=str(TAP_SKIP))
def test_a_task_gets_its_address_from_the_hosts_udhcpd(tmp_path: Any) -> None:
    rd = str(tmp_path / "run")
    os.makedirs(rd)
    image = str(tmp_path / "tap.toml")
    with open(image, "w") as f:
        f.write(TAP_IMAGE)
    with open(tmp_path / "udhcpd.conf", "w") as f:
        f.write(UDHCPD_CONF.format(tap=TAP, dir=tmp_path))
    (tmp_path / "udhcpd.leases").touch()
    with netns("l4dh") as ns:
        ns.boot(image, rd)
        ns.tap_up(TAP, "10.0.2.2/24", timeout=30)
        ns.start("busybox", "udhcpd", "-f", str(tmp_path / "udhcpd.conf"),
                 stderr=subprocess.STDOUT)
        got = until("web's address from udhcpd",
                    lambda: re.findall(r": (\d+\.\d+\.\d+\.\d+)/24 from DHCP server 10\.0\.2\.2",
                                       task_log(rd, "web")), 60)
        addr = got[0]
        assert addr.startswith("10.0.2.12") or addr == "10.0.2.130", addr
        p = ns.run("ping", "-c", "4", "-W", "5", addr, timeout=120, check=False)   # a loaded
        got_back = re.search(r" (\d+) received", p.stdout)          # machine: one may come late
        assert got_back and int(got_back.group(1)) >= 2, p.stdout + task_log(rd, "web")
        assert "gateway 10.0.2.2" in task_log(rd, "web")
