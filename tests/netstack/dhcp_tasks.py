"""A task for tests/netstack/test_dhcp.py: a client that sends the DHCP server what it cannot read.

    mallory(l4, ip=..., server=A, [rounds=N])
        over its own stack (static address): to A:67 and broadcast, each malformed datagram
        of BAD (short, no cookie, an option past the end, no message type, an unknown type, a
        BOOTREPLY, a server's message, a zero and a group MAC, a REQUEST naming no address)
        and N mutations of a valid DISCOVER (bytes flipped, cut short, options garbled, from
        a seeded generator); then a valid DISCOVER, and waits for its OFFER. Prints
        "MALLORY {json}" (sent, offer: the address offered or null) and idles.
"""
from __future__ import annotations

import json
import random
import time
from typing import Any

from servers.netstack import config, dhcp

MAC = b"\x02\x00\x00\x00\x0b\xad"


def _msg(kind: int, mac: bytes = MAC, op: int = dhcp.BOOTREQUEST, **extra: bytes) -> bytes:
    opts = {dhcp.OPT_TYPE: bytes([kind]), **{int(k[1:]): v for k, v in extra.items()}}
    return dhcp.encode(dhcp.Message(op, 0x4C34, dhcp.FLAG_BROADCAST, dhcp.ZERO, dhcp.ZERO,
                                    dhcp.ZERO, dhcp.ZERO, mac, opts))


def bad_messages() -> list[bytes]:
    good = _msg(dhcp.DISCOVER)
    cookie = dhcp.HEADER.size
    return [b"", b"\x01", good[:100], good[:cookie + 4],                 # short
            good[:cookie] + b"\x00\x00\x00\x00" + good[cookie + 4:],     # no cookie
            good[:cookie + 4] + b"\x35\x40\x01",                         # option past the end
            good[:cookie + 4] + b"\x01\x04\xff\xff\xff\x00\xff",         # no message type
            _msg(99), _msg(dhcp.OFFER), _msg(dhcp.ACK),                   # unknown, server's
            _msg(dhcp.DISCOVER, op=dhcp.BOOTREPLY),                       # a reply
            _msg(dhcp.DISCOVER, mac=b"\x00" * 6), _msg(dhcp.DISCOVER, mac=b"\x01" * 6),
            _msg(dhcp.REQUEST),                                           # no address named
            _msg(dhcp.REQUEST, o50=b"\x0a"),                              # a short option 50
            _msg(dhcp.DISCOVER, o50=b"\xff\xff\xff\xff"),                 # outside the pool
            _msg(dhcp.RELEASE), _msg(dhcp.DECLINE), _msg(dhcp.INFORM),
            good[:2] + b"\x07\x20" + good[4:]]                           # not Ethernet


def mutations(n: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    good = _msg(dhcp.REQUEST, o50=b"\x0a\x00\x02\x64", o54=b"\x0a\x00\x02\x03",
                o55=dhcp.PARAMS, o12=b"mallory")
    out = []
    for _ in range(n):
        b = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(dhcp.HEADER.size, len(b)) if rng.random() < 0.7 else \
                rng.randrange(len(b))
            b[i] = rng.randrange(256)
        if rng.random() < 0.3:
            b = b[:rng.randrange(len(b))]
        out.append(bytes(b))
    return out


def mallory(l4: Any, *args: str) -> int:
    opts = config.parse([a for a in args if not a.startswith(("server=", "rounds="))])
    extra = dict(a.split("=", 1) for a in args if a.startswith(("server=", "rounds=")))
    stack = config.open_stack(l4, opts, "mallory")
    sock = stack.udp(dhcp.CLIENT_PORT)
    sent = 0
    for data in bad_messages() + mutations(int(extra.get("rounds", "200"))):
        for dst in (extra["server"], "255.255.255.255"):
            sock.sendto(data, (dst, dhcp.SERVER_PORT))
            sent += 1
        time.sleep(0.002)                       # no flood: the server's socket queue is bounded
    offer = None
    for _ in range(10):
        sock.sendto(_msg(dhcp.DISCOVER), (extra["server"], dhcp.SERVER_PORT))
        deadline = time.monotonic() + 1.0
        while offer is None and time.monotonic() < deadline:
            try:
                data, _ = sock.recvfrom(timeout=max(0.01, deadline - time.monotonic()))
                m = dhcp.decode(data)
            except (TimeoutError, dhcp.BadMessage):
                continue
            if m.kind == dhcp.OFFER and m.chaddr == MAC:
                offer = ".".join(map(str, m.yiaddr))
        if offer:
            break
    print("MALLORY " + json.dumps({"sent": sent, "offer": offer}), flush=True)
    while True:
        time.sleep(3600)
