"""The demo client of configs/dde-net.toml: frames out through the nic server and back.

`run(l4, count, size)` opens a session on `l4.caps["nic"]`, sends `count` numbered frames of
`size` bytes (the NIC's loopback back end returns each one), receives them, checks every
byte, logs "nic-demo: sent N received N intact N ..." and the server's counters, and exits.
"""
from __future__ import annotations

import time
from typing import Any

from .client import NicSession

ETHERTYPE = b"\x88\xb5"          # IEEE 802 local experimental
WINDOW = 128                     # frames in flight: fewer than the RX stream holds


def frame(mac: bytes, seq: int, size: int) -> bytes:
    head = b"\xff" * 6 + mac + ETHERTYPE + seq.to_bytes(4, "big")
    return head + bytes((seq + i) & 0xFF for i in range(size - len(head)))


def run(l4: Any, count: str = "1000", size: str = "1500") -> int:
    n, sz = int(count), int(size)
    nic = NicSession(l4, l4.caps["nic"])
    print(f"nic-demo: session {nic.sid}, MAC {nic.mac.hex(':')}, link {'up' if nic.link else 'down'}",
          flush=True)
    sent = got = intact = others = 0
    t0 = time.monotonic()
    deadline = t0 + 30
    while got < sent or (sent < n and time.monotonic() < deadline):
        if time.monotonic() > deadline:
            break
        if sent < n and sent - got < WINDOW:      # at most WINDOW frames in flight
            top = min(n, sent + 64, got + WINDOW)
            sent += nic.send([frame(nic.mac, s, sz) for s in range(sent, top)])
        for f in nic.recv():
            if f[6:14] != nic.mac + ETHERTYPE:
                others += 1                       # another session's (ORe's broadcasts)
                continue
            seq = int.from_bytes(f[14:18], "big")
            got += 1
            intact += f == frame(nic.mac, seq, sz)
        if got < sent:
            nic.wait(200)
    dt = time.monotonic() - t0
    print(f"nic-demo: sent {sent} received {got} intact {intact} in {dt:.2f} s "
          f"({got / dt:.0f} frames/s); {others} frames of other senders", flush=True)
    print(f"nic-demo: server counters {nic.stats()}", flush=True)
    nic.release()
    return 0 if intact == n else 1
