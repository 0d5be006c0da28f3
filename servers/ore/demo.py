"""Demo clients of ORe (configs/net.toml): raw Ethernet frames ping-ponged through the switch.

    ping(l4, peer_mac, size="1000", window="32")   numbered frames to `peer_mac`, each echo
                                                   checked; prints "ORE-PING {json}" every
                                                   REPORT_S (sent, got, intact, lost, reopened,
                                                   rate)
    pong(l4)                                       echoes every frame back to its sender;
                                                   prints "ORE-PONG {json}"

Both use `servers.nic.client.NicSession` on capability "net" — the same session as the nic
server's — and reopen it when ORe restarts (SessionLost). Frames lost while a peer or the
switch restarts are counted `lost` (a window that gets no echo for STALL_S is given up).
"""
from __future__ import annotations

import json
import time
from typing import Any

from servers.nic.client import NicSession, SessionLost

from .protocol import SESSION_CAP
from .switch import parse_mac

ETHERTYPE = b"\x88\xb5"           # IEEE 802 local experimental
REPORT_S = 0.5
STALL_S = 1.0


def frame(dst: bytes, src: bytes, seq: int, size: int) -> bytes:
    head = dst + src + ETHERTYPE + seq.to_bytes(4, "big")
    return head + bytes((seq * 7 + i) & 0xFF for i in range(size - len(head)))


def _report(tag: str, nic: NicSession, st: dict[str, Any], t0: float) -> None:
    """Our counts and the switch's for our port (a call to ORe: the chaos checks see us
    make IPC progress; frames alone travel through shared memory)."""
    dt = max(1e-6, time.monotonic() - t0)
    sw = nic.stats()
    port = {k: sw.get(k) for k in ("tx_frames", "rx_frames", "drops")}
    print(f"{tag} " + json.dumps({**st, "rate": round(st.get("got", 0) / dt), "port": port}),
          flush=True)


def ping(l4: Any, peer_mac: str, size: str = "1000", window: str = "32") -> int:
    peer, sz, win = parse_mac(peer_mac), int(size), int(window)
    nic = NicSession(l4, l4.caps[SESSION_CAP])
    st: dict[str, Any] = {"mac": nic.mac.hex(":"), "ip": nic.info.get("ip"), "sent": 0, "got": 0,
                          "intact": 0, "lost": 0, "reopened": 0}
    in_flight, seq, last_rx, last_report, t0 = 0, 0, time.monotonic(), 0.0, time.monotonic()
    while True:
        try:
            now = time.monotonic()
            if in_flight and now - last_rx > STALL_S:
                st["lost"] += in_flight
                in_flight, last_rx = 0, now
            if in_flight < win:
                batch = [frame(peer, nic.mac, seq + j, sz) for j in range(win - in_flight)]
                k = nic.send(batch)
                seq, in_flight, st["sent"] = seq + k, in_flight + k, st["sent"] + k
            for f in nic.poll():
                if len(f) != sz or f[12:14] != ETHERTYPE:
                    continue
                n = int.from_bytes(f[14:18], "big")
                st["got"] += 1
                st["intact"] += f == frame(nic.mac, peer, n, sz)
                in_flight = max(0, in_flight - 1)
                last_rx = now
            if now - last_report > REPORT_S:
                last_report = now
                _report("ORE-PING", nic, st, t0)
            if in_flight >= win:
                nic.wait(50)
        except SessionLost as e:
            print(f"ore-ping: session lost ({e}); reopening", flush=True)
            nic.reopen(60)
            st["reopened"] += 1
            st["lost"] += in_flight
            in_flight, last_rx = 0, time.monotonic()


def pong(l4: Any) -> int:
    nic = NicSession(l4, l4.caps[SESSION_CAP])
    st: dict[str, Any] = {"mac": nic.mac.hex(":"), "ip": nic.info.get("ip"), "got": 0,
                          "echoed": 0, "reopened": 0}
    last_report, t0 = 0.0, time.monotonic()
    backlog: list[bytes] = []
    while True:
        try:
            for f in nic.poll():
                st["got"] += 1
                if f[:6] == nic.mac:                      # unicast to us: back to its sender
                    backlog.append(bytes(f[6:12]) + nic.mac + bytes(f[12:]))
            if backlog:
                k = nic.send(backlog)
                st["echoed"] += k
                del backlog[:k]
            now = time.monotonic()
            if now - last_report > REPORT_S:
                last_report = now
                _report("ORE-PONG", nic, st, t0)
            nic.wait(20 if backlog else 200)
        except SessionLost as e:
            print(f"ore-pong: session lost ({e}); reopening", flush=True)
            nic.reopen(60)
            st["reopened"] += 1
            backlog.clear()
