"""Tasks for tests/dde_linux/test_net.py, each run in a real booted machine.

    driver_check(l4)   the l4nic driver on the glue, this task its netdev's only user: frames
                       of many sizes out and back on the HAL's loopback (content, order,
                       counts), the TX queue stopped when the ring fills and woken by TX
                       completion, skbs all freed; prints "NET-DRIVER {json}"
    good(l4)           a nic client that keeps frames going round and checks them; every
                       REPORT_S prints "GOOD {json}" (counts, link, reopened sessions, the
                       server's device_stats); reopens its session when the server restarts
    bad(l4)            a nic client that sends malformed descriptors and index words, then
                       one good frame; prints "BAD {json}" (its session's counters) and idles
                       without ever draining its RX stream
    victim(l4)         opens a session, prints "VICTIM {json}" and idles (the test kills it)
"""
from __future__ import annotations

import json
import threading
import time
import traceback
from typing import Any

from kernel.user.errors import Timeout

REPORT_S = 0.2
ETHERTYPE = b"\x88\xb5"


def frame(src: bytes, seq: int, size: int) -> bytes:
    head = b"\xff" * 6 + src + ETHERTYPE + seq.to_bytes(4, "big")
    return head + bytes((seq * 7 + i) & 0xFF for i in range(size - len(head)))


def _idle(l4: Any) -> int:
    while True:
        try:
            l4.wait(timeout=60_000)
        except Timeout:
            pass


# -- the driver alone ---------------------------------------------------------------------------
def driver_check(l4: Any) -> int:
    from servers.dde_linux import kernel as lk
    from servers.dde_linux import net
    out: dict[str, Any] = {}
    lk.boot(l4)
    try:
        out.update(_driver(lk, net))
    except BaseException as e:                  # noqa: BLE001 - reported to the test
        traceback.print_exc()
        out["error"] = f"{type(e).__name__}: {e}"
    lk.shutdown()
    out["skbs_after"] = net.skb_stats()
    print("NET-DRIVER " + json.dumps(out), flush=True)
    return 0


def _driver(lk: Any, net: Any) -> dict[str, Any]:
    ret = lk.load("servers.dde_linux.drivers.l4nic")
    devs = net.netdevs()
    dev = devs[0]
    got: list[bytes] = []
    arrived = threading.Condition()
    events: list[int] = []
    woken = threading.Event()

    def rx(skb: Any) -> int:
        net.skb_push(skb, net.ETH_HLEN)
        with arrived:
            got.append(bytes(skb.data))
            arrived.notify_all()
        net.consume_skb(skb)
        return net.RX_HANDLER_CONSUMED

    net.netdev_rx_handler_register(dev, rx)
    net.register_netdevice_notifier(lambda ev, d: events.append(ev))
    dev.tx_wake = lambda d: woken.set()
    opened = net.dev_open(dev)
    carrier = net.netif_carrier_ok(dev)
    mac = bytes(dev.dev_addr)
    sizes = [60, 64, 100, 512, 1000, 1499, 1500, 1514]
    sent: list[bytes] = []
    busy = 0
    # a burst far beyond the TX ring, every frame but the last with xmit_more, the interrupt
    # disabled at first: the driver stops the queue at a full ring; once the interrupt is
    # enabled again, TX completion wakes it
    from servers.dde_linux.irq import disable_irq, enable_irq
    total = 700
    i = 0
    disable_irq(dev.irq)
    while i < total:
        f = frame(mac, i, sizes[i % len(sizes)])
        skb = net.netdev_alloc_skb(dev, len(f))
        net.skb_put_data(skb, f)
        skb.xmit_more = i + 1 < total
        woken.clear()
        if net.dev_queue_xmit(skb, dev) == net.NETDEV_TX_BUSY:
            net.kfree_skb(skb)
            busy += 1
            if busy == 1:
                enable_irq(dev.irq)
            woken.wait(5.0)
            continue
        sent.append(f)
        i += 1
    with arrived:
        arrived.wait_for(lambda: len(got) >= total, 20.0)
    time.sleep(0.2)
    stats = dev.stats.as_dict()
    net.dev_close(dev)
    lk.unload()
    return {"load": ret, "names": [d.name for d in devs], "opened": opened, "carrier": carrier,
            "mac": mac.hex(), "sent": len(sent), "received": len(got),
            "in_order": got == sent, "sizes": sorted({len(g) for g in got}), "busy": busy,
            "stats": stats, "events": events, "netdevs_after": [d.name for d in net.netdevs()]}


# -- clients of the nic server --------------------------------------------------------------------
def good(l4: Any, window: str = "64") -> int:
    from servers.nic.client import NicSession, SessionLost
    win = int(window)
    nic = NicSession(l4, l4.caps["nic"])
    st: dict[str, Any] = {"sent": 0, "got": 0, "intact": 0, "reopened": 0, "lost": 0,
                          "sid": nic.sid}
    pool = [frame(nic.mac, s, 1000) for s in range(256)]
    in_flight, last_rx, last_report, dev = 0, time.monotonic(), 0.0, {}
    while True:
        try:
            now = time.monotonic()
            if in_flight and now - last_rx > 0.5:      # lost on the wire (link down): forget
                st["lost"] += in_flight
                in_flight = 0
            if in_flight < win:
                k = nic.send([pool[(st["sent"] + j) % 256] for j in range(min(16, win - in_flight))])
                st["sent"] += k
                in_flight += k
            for f in nic.poll():
                if len(f) != 1000:          # another session's frame (every session gets all)
                    st["foreign"] = st.get("foreign", 0) + 1
                    continue
                seq = int.from_bytes(f[14:18], "big")
                st["got"] += 1
                st["intact"] += f == pool[seq % 256]
                in_flight = max(0, in_flight - 1)
                last_rx = now
            dropped = nic.counts["tx_dropped"]
            if dropped:
                in_flight = max(0, in_flight - dropped)
                st["dropped"] = st.get("dropped", 0) + dropped
                nic.counts["tx_dropped"] = 0
            if now - last_report > REPORT_S:
                last_report = now
                dev = nic.device_stats()
                print("GOOD " + json.dumps({**st, "link": nic.link, "link_changes": nic.link_changes,
                                            "sessions": dev["sessions"], "memory": dev["memory"],
                                            "sid": nic.sid}), flush=True)
            if in_flight >= win:
                nic.wait(50)
        except SessionLost as e:
            print(f"good: session lost ({e}); reopening", flush=True)
            nic.reopen(30)
            st["reopened"] += 1
            st["sid"] = nic.sid
            in_flight = 0


def bad(l4: Any) -> int:
    from servers.nic import stream as ps
    from servers.nic.client import NicSession
    nic = NicSession(l4, l4.caps["nic"])
    out: dict[str, Any] = {"sid": nic.sid}
    nic.submit_raw(ps.BUF_SIZE, 100)                   # starts past the buffer
    nic.submit_raw(ps.BUF_SIZE - 10, 100)              # runs over its end
    nic.submit_raw(0, 0)                               # empty
    nic.submit_raw(0, 4000)                            # inside, but no frame is that long
    nic.submit_raw(0, 5)                               # shorter than a header
    time.sleep(0.3)
    out["after_descriptors"] = nic.stats()
    real = nic.tx.submit_tail
    nic.mem.write(ps.TX_STREAM + ps.SUBMIT_TAIL, ps.U32.pack((real + 5000) & ps.MASK32))
    nic.l4.irq_trigger(nic.kick)
    time.sleep(0.5)                                    # a tick retries it too
    out["after_index"] = nic.stats()
    nic.mem.write(ps.TX_STREAM + ps.SUBMIT_TAIL, ps.U32.pack(real))
    # an RX acknowledgement naming a packet the server never gave
    nic.rx.ack([(12345, 60, 0)])
    nic.send([frame(nic.mac, 0, 100)])                 # and a good frame still goes out
    time.sleep(0.5)
    out["stats"] = nic.stats()
    out["acks"] = dict(nic.counts)
    nic._reclaim()
    out["acks_after"] = dict(nic.counts)
    print("BAD " + json.dumps(out), flush=True)
    return _idle(l4)


def victim(l4: Any) -> int:
    from servers.nic.client import NicSession
    nic = NicSession(l4, l4.caps["nic"])
    print("VICTIM " + json.dumps({"sid": nic.sid}), flush=True)
    return _idle(l4)
