"""DDE/Linux networking: sk_buff and net_device in-process; the l4nic driver and the nic server
in a real booted machine (tasks in tests/dde_linux/net_tasks.py).

The machine: a HAL with two loopback NICs. nic1 is driven by `driver_check` alone (the
driver on the glue, the task its netdev's user): frames checked for content, order and
counts against the HAL's own counters. nic0 is the nic server's; its clients are `good`
(frames round-trip through the session and are checked), `bad` (malformed descriptors and
index words: refused and counted on its own session), `victim` (killed: its session and
block come back) and label 9, which the policy does not know (refused). Then the link goes
down and up (the HAL's link_down knob) and the server is killed: `good` sees each, reopens
and goes on. `l4run down` must leave nothing behind.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import pytest

from launcher.netimage import net_image, nic, session, task
from servers.dde_linux import net
from tests.launcher.helpers import assert_clean, l4run, ps, system_pids
from tests.launcher.helpers import task_log as _log, record as _last, until as _until

CLIENTS = {"1": "good", "2": "bad", "3": "victim"}
IMAGE = net_image("dde-net-test", nics=[nic("nic0"), nic("nic1")], nic_clients=CLIENTS, tasks=[
    task("driver", "tests.dde_linux.net_tasks:driver_check", devices=["nic1"],
         caps=session("sigma0", 3, "sigma0")),
    *(task(name, f"tests.dde_linux.net_tasks:{name}", caps=session("nic", int(label), "nic"))
      for label, name in CLIENTS.items()),
    task("stranger", "servers.nic.demo:run", ["10"], caps=session("nic", 9, "nic"))])


# -- in-process: sk_buff and net_device ---------------------------------------------------------
def test_skb_operations() -> None:
    before = net.skb_stats()
    skb = net.netdev_alloc_skb(None, 100)
    assert net.skb_headroom(skb) == net.NET_SKB_PAD and skb.len == 0
    net.skb_reserve(skb, 2)
    net.skb_put(skb, 4)[:] = b"body"
    net.skb_put_data(skb, b"tail")
    assert bytes(skb.data) == b"bodytail" and skb.len == 8
    net.skb_push(skb, 3)[:3] = b"hdr"
    assert bytes(skb.data) == b"hdrbodytail" and net.skb_headroom(skb) == net.NET_SKB_PAD - 1
    assert bytes(net.skb_pull(skb, 3) or b"") == b"bodytail"
    assert net.skb_pull(skb, 100) is None and skb.len == 8           # too short: unchanged
    net.skb_trim(skb, 4)
    assert bytes(skb.data) == b"body" and net.skb_tailroom(skb) == 100 + 32 - 32 - 2 - 4 + 0
    with pytest.raises(net.SkbError):
        net.skb_put(skb, 1000)                                        # skb_over_panic
    with pytest.raises(net.SkbError):
        net.skb_push(skb, 1000)                                       # skb_under_panic
    net.dev_kfree_skb_any(skb)
    with pytest.raises(net.SkbError):
        net.kfree_skb(skb)                                            # double free
    assert net.skb_stats()["live"] == before["live"]


def test_eth_type_trans_and_netdev_without_ddekit() -> None:
    """The glue's netdev life cycle, queue and carrier bits, netif_rx to the rx_handler
    (no DDEKit in this process: netif_rx delivers at once), with a fake driver."""
    xmitted: list[bytes] = []

    def xmit(skb: net.sk_buff, dev: net.net_device) -> int:
        xmitted.append(bytes(skb.data))
        net.dev_kfree_skb(skb)
        return net.NETDEV_TX_OK

    dev = net.alloc_etherdev(0)
    dev.netdev_ops = net.net_device_ops(ndo_start_xmit=xmit)
    net.eth_hw_addr_set(dev, bytes.fromhex("020000000001"))
    assert net.register_netdev(dev) == 0 and dev.name.startswith("eth")
    events: list[int] = []
    listener: Callable[[int, net.net_device], None] = lambda ev, d: events.append(ev)
    net.register_netdevice_notifier(listener)
    try:
        got: list[tuple[int, int, bytes]] = []
        flushed: list[Any] = []

        def rx(skb: net.sk_buff) -> int:
            got.append((skb.protocol, skb.pkt_type, bytes(net.skb_mac_header(skb)[:6])))
            net.kfree_skb(skb)
            return net.RX_HANDLER_CONSUMED
        assert net.netdev_rx_handler_register(dev, rx, "me", flush=flushed.append) == 0
        assert net.netdev_rx_handler_register(dev, rx) == -16              # EBUSY
        skb = net.netdev_alloc_skb(dev, 64)
        net.skb_put_data(skb, b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"x" * 46)
        assert net.netif_rx(skb) == net.NET_RX_DROP                        # not up yet
        assert net.dev_open(dev) == 0 and net.netif_running(dev)
        for dst in (b"\xff" * 6, bytes.fromhex("020000000001"), bytes.fromhex("020000000099")):
            skb = net.netdev_alloc_skb(dev, 64)
            net.skb_put_data(skb, dst + b"\x02" * 6 + b"\x08\x06" + b"x" * 46)
            skb.protocol = net.eth_type_trans(skb, dev)
            assert skb.len == 46
            assert net.netif_rx(skb) == net.NET_RX_SUCCESS
        assert [(p, t) for p, t, _ in got] == [(net.ETH_P_ARP, net.PACKET_BROADCAST),
                                               (net.ETH_P_ARP, net.PACKET_HOST),
                                               (net.ETH_P_ARP, net.PACKET_OTHERHOST)]
        assert flushed == ["me"] * 3 and dev.stats.rx_dropped == 1
        assert not net.netif_carrier_ok(dev)
        net.netif_carrier_on(dev)
        net.netif_carrier_on(dev)                                          # no change, no event
        assert net.netif_carrier_ok(dev)
        woken: list[str] = []
        dev.tx_wake = lambda d: woken.append(d.name)
        net.netif_stop_queue(dev)
        skb = net.netdev_alloc_skb(dev, 60)
        net.skb_put_data(skb, b"\x00" * 60)
        assert net.dev_queue_xmit(skb, dev) == net.NETDEV_TX_BUSY and not xmitted
        net.netif_wake_queue(dev)
        assert woken == [dev.name] and net.dev_queue_xmit(skb, dev) == net.NETDEV_TX_OK
        assert xmitted == [b"\x00" * 60]
        net.unregister_netdev(dev)
        assert not net.netif_running(dev) and net.dev_get_by_name(dev.name) is None
        assert events == [net.NETDEV_REGISTER, net.NETDEV_UP, net.NETDEV_CHANGE, net.NETDEV_DOWN,
                          net.NETDEV_UNREGISTER]
        net.free_netdev(dev)
    finally:
        net.unregister_netdevice_notifier(listener)
        if dev.registered:
            net.unregister_netdev(dev)


# -- the real machine ---------------------------------------------------------------------------
def _hal_nic(rd: str, name: str) -> dict[str, Any]:
    from hal.tools import control
    return dict(control(rd, {"op": "status"}, "hal")["devices"][name])


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("dde-net")
    rd = str(base / "run")
    os.makedirs(rd)
    image = str(base / "dde-net-test.toml")
    with open(image, "w") as f:
        f.write(IMAGE)
    shm_before = set(os.listdir("/dev/shm"))
    l4run("boot", image, "--detach", "--run-dir", rd)
    pids = system_pids(rd)
    state: dict[str, Any] = {"rd": rd}
    try:
        yield state
    finally:
        l4run("down", "--run-dir", rd)
        assert_clean(rd, pids, shm_before)


def test_driver_on_the_real_nic(machine: dict[str, Any]) -> None:
    rd = machine["rd"]
    res = _until("the driver task's result", lambda: _last(rd, "driver", "NET-DRIVER"), 40)
    assert "error" not in res, res["error"] + _log(rd, "driver")
    assert res["load"] == 0 and res["names"] == ["eth0"] and res["opened"] == 0 and res["carrier"]
    assert res["sent"] == res["received"] == 700 and res["in_order"]
    assert res["sizes"] == [60, 64, 100, 512, 1000, 1499, 1500, 1514]
    assert res["busy"] >= 1                                   # the ring filled: queue stopped
    st = res["stats"]
    assert st["tx_packets"] == st["rx_packets"] == 700 and st["tx_errors"] == st["rx_errors"] == 0
    assert st["tx_bytes"] == st["rx_bytes"] == sum(
        [60, 64, 100, 512, 1000, 1499, 1500, 1514][i % 8] for i in range(700))
    assert res["events"][:3] == [net.NETDEV_REGISTER, net.NETDEV_CHANGE, net.NETDEV_UP]  # carrier in open
    assert res["netdevs_after"] == [] and res["skbs_after"]["live"] == 0
    hal = _hal_nic(rd, "nic1")                                # what the device itself counted
    assert hal["tx_frames"] == hal["rx_frames"] == 700 and hal["rx_dropped"] == 0
    assert hal["tx_errors"] == 0 and hal["mac"] == res["mac"]


def test_session_round_trip_malformed_and_policy(machine: dict[str, Any]) -> None:
    rd = machine["rd"]
    g = _until("good's traffic", lambda: (s := _last(rd, "good", "GOOD")) and s["got"] > 300 and s)
    assert g["intact"] == g["got"] and g["link"]
    b = _until("bad's report", lambda: _last(rd, "bad", "BAD"), 30)
    m = b["after_descriptors"]["malformed"]
    assert m.get("descriptor") == 3 and m.get("oversized") == 1 and m.get("runt") == 1, b
    assert b["after_descriptors"].get("tx_frames", 0) == 0
    assert b["after_index"]["malformed"].get("bad_index", 0) >= 1
    assert b["stats"]["malformed"].get("bad_ack", 0) == 1 and b["stats"]["tx_frames"] == 1
    assert b["acks_after"]["tx_malformed"] == 5 and b["acks_after"]["tx_ok"] == 1
    g2 = _until("good goes on", lambda: (s := _last(rd, "good", "GOOD")) and
                s["got"] > g["got"] + 200 and s)
    assert g2["intact"] == g2["got"] and g2["reopened"] == 0
    # bad never drains its RX stream: its frames are dropped and counted, good's keep coming
    assert "label 9" in _until("the stranger refused", lambda: "DENIED" in _log(rd, "stranger")
                               and _log(rd, "stranger"))


def test_dead_client_buffers_returned(machine: dict[str, Any]) -> None:
    rd = machine["rd"]
    _until("victim's session", lambda: _last(rd, "victim", "VICTIM"))
    before = _until("three sessions", lambda: (s := _last(rd, "good", "GOOD")) and
                    s["sessions"] == 3 and s)
    l4run("kill", "victim", "--run-dir", rd)
    after = _until("the victim's session reaped", lambda: (s := _last(rd, "good", "GOOD")) and
                   s["sessions"] == 2 and s)
    assert before["memory"]["bytes"] - after["memory"]["bytes"] == 1 << 20   # its block
    assert "client gone" in _log(rd, "nic")


def test_link_down_and_up_notified(machine: dict[str, Any]) -> None:
    rd = machine["rd"]
    g = _until("good's traffic", lambda: _last(rd, "good", "GOOD"))
    l4run("faults", "nic0", "link_down=true", "--run-dir", rd)
    down = _until("link down seen by the client", lambda: (s := _last(rd, "good", "GOOD")) and
                  not s["link"] and s)
    assert down["link_changes"] == g["link_changes"] + 1
    l4run("faults", "nic0", "link_down=false", "--run-dir", rd)
    up = _until("link up again", lambda: (s := _last(rd, "good", "GOOD")) and s["link"] and s)
    assert up["link_changes"] == g["link_changes"] + 2
    _until("traffic after the link came back", lambda: (s := _last(rd, "good", "GOOD")) and
           s["got"] > up["got"] + 100)
    assert "link down" in _log(rd, "nic") and "link up" in _log(rd, "nic")


def test_server_killed_client_reconnects(machine: dict[str, Any]) -> None:
    rd = machine["rd"]
    g = _until("good's traffic", lambda: _last(rd, "good", "GOOD"))
    l4run("kill", "nic", "--run-dir", rd)
    back = _until("good reopened its session", lambda: (s := _last(rd, "good", "GOOD")) and
                  s["reopened"] >= 1 and s, 40)
    _until("traffic through the new server", lambda: (s := _last(rd, "good", "GOOD")) and
           s["got"] > back["got"] + 200, 30)
    last = _last(rd, "good", "GOOD")
    assert last is not None and last["intact"] == last["got"] and last["got"] > g["got"]
    assert ps(rd)["nic"]["restarts"] >= 1
