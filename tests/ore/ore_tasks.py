"""Tasks for tests/ore/test_ore.py, each a client of ORe in a real booted machine.

    peer(l4, role, peer_mac)   role "ping": numbered unicast frames to peer_mac (a window in
                               flight, echoes checked) and a broadcast frame every BCAST_S;
                               role "echo": every unicast frame back to its sender;
                               role "listen": drains only; broadcast off for LISTEN_S, then
                               it turns broadcast on with ORE's `broadcast` op.
                               Every REPORT_S: "PEER {json}" (counts, reopened, sid). Reopens
                               its session on SessionLost.
    mallory(l4, victim_mac, target_mac)   a spoofed frame (victim's MAC as source), a
                               descriptor outside the buffer, a runt, an oversized frame, then
                               one good frame; prints "MALLORY {json}" and idles without ever
                               draining its RX stream (broadcast on: it fills up)
    victim(l4)                 opens a session, prints "VICTIM {json}", idles (killed)
"""
from __future__ import annotations

import json
import time
from typing import Any

from kernel.user.errors import Timeout

REPORT_S = 0.2
BCAST_S = 0.01
LISTEN_S = 1.5
ETHERTYPE = b"\x88\xb5"
SPOOF = b"\x88\xb6"               # the ethertype of mallory's spoofed frames
WINDOW = 32
SIZE = 600


def frame(dst: bytes, src: bytes, seq: int, kind: bytes = ETHERTYPE, size: int = SIZE) -> bytes:
    head = dst + src + kind + seq.to_bytes(4, "big")
    return head + bytes((seq * 7 + i) & 0xFF for i in range(size - len(head)))


def _idle(l4: Any) -> int:
    while True:
        try:
            l4.wait(timeout=60_000)
        except Timeout:
            pass


def peer(l4: Any, role: str, peer_mac: str = "") -> int:
    from servers.nic.client import NicSession, SessionLost
    from servers.ore.protocol import ORE
    from servers.ore.switch import BROADCAST, parse_mac
    nic = NicSession(l4, l4.caps["net"])
    other = parse_mac(peer_mac) if peer_mac else b""
    st: dict[str, Any] = {"role": role, "mac": nic.mac.hex(":"), "ip": nic.info.get("ip"),
                          "sid": nic.sid, "sent": 0, "echoes": 0, "intact": 0, "unicast": 0,
                          "broadcast": 0, "spoofed_seen": 0, "bcast_sent": 0, "reopened": 0,
                          "lost": 0, "bcast_off": None, "enabled": False}
    in_flight, seq, t0 = 0, 0, time.monotonic()
    last_rx = last_report = last_bcast = 0.0
    backlog: list[bytes] = []
    while True:
        try:
            now = time.monotonic()
            if role == "ping":
                if in_flight and now - last_rx > 1.0:
                    st["lost"] += in_flight
                    in_flight, last_rx = 0, now
                if in_flight < WINDOW:
                    k = nic.send([frame(other, nic.mac, seq + j) for j in range(WINDOW - in_flight)])
                    seq, in_flight, st["sent"] = seq + k, in_flight + k, st["sent"] + k
                if now - last_bcast > BCAST_S:
                    last_bcast = now
                    st["bcast_sent"] += nic.send([frame(BROADCAST, nic.mac, 0)])
            if role == "listen" and not st["enabled"] and now - t0 > LISTEN_S:
                st["bcast_off"] = st["broadcast"]
                stub: Any = ORE.client(l4, l4.caps["net"], timeout=5000)
                stub.broadcast(nic.sid, True)
                st["enabled"] = True
            for f in nic.poll():
                if f[12:14] == SPOOF:
                    st["spoofed_seen"] += 1
                if f[:6] == BROADCAST:
                    st["broadcast"] += 1
                    continue
                st["unicast"] += 1
                if role == "echo" and f[:6] == nic.mac:
                    backlog.append(bytes(f[6:12]) + nic.mac + bytes(f[12:]))
                elif role == "ping" and f[:6] == nic.mac:
                    n = int.from_bytes(f[14:18], "big")
                    st["echoes"] += 1
                    st["intact"] += f == frame(nic.mac, other, n)
                    in_flight = max(0, in_flight - 1)
                    last_rx = now
            if backlog:
                del backlog[:nic.send(backlog)]
            if now - last_report > REPORT_S:
                last_report = now
                print("PEER " + json.dumps(st), flush=True)
            if role != "ping" or in_flight >= WINDOW:
                nic.wait(20)
        except SessionLost as e:
            print(f"peer: session lost ({e}); reopening", flush=True)
            nic.reopen(30)
            st["reopened"] += 1
            st["sid"] = nic.sid
            in_flight = 0
            backlog.clear()


def mallory(l4: Any, victim_mac: str, target_mac: str) -> int:
    from servers.nic import stream as ps
    from servers.nic.client import NicSession
    from servers.ore.switch import parse_mac
    nic = NicSession(l4, l4.caps["net"])
    victim, target = parse_mac(victim_mac), parse_mac(target_mac)
    out: dict[str, Any] = {"sid": nic.sid, "mac": nic.mac.hex(":")}
    out["spoof_queued"] = nic.send([frame(target, victim, 1, SPOOF)])
    nic.submit_raw(ps.BUF_SIZE, 100)                   # outside the buffer
    nic.submit_raw(0, 5)                               # shorter than a header
    nic.submit_raw(0, 1600)                            # longer than any frame
    time.sleep(0.3)
    out["good_queued"] = nic.send([frame(target, nic.mac, 2)])
    time.sleep(0.3)
    nic._reclaim()
    out["acks"] = dict(nic.counts)
    out["stats"] = nic.stats()
    print("MALLORY " + json.dumps(out), flush=True)
    return _idle(l4)


def victim(l4: Any) -> int:
    from servers.nic.client import NicSession
    nic = NicSession(l4, l4.caps["net"])
    print("VICTIM " + json.dumps({"sid": nic.sid, "mac": nic.mac.hex(":")}), flush=True)
    return _idle(l4)
