"""The switch in-process (servers/ore/switch.py): policy parsing, the MAC table, decisions."""
from __future__ import annotations

from typing import Any

import pytest

from servers.nic.protocol import NIC
from servers.ore.protocol import ORE
from servers.ore.switch import (AGE_S, BROADCAST, UPLINK, PolicyError, Port, Switch,
                                derive_mac, parse_mac, parse_policy)

A, B, C = (parse_mac(f"02:00:00:00:00:0{i}") for i in (1, 2, 3))
REMOTE = parse_mac("52:54:00:12:34:56")
MCAST = parse_mac("01:00:5e:00:00:01")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _switch(uplink: bool = True, **carol: object) -> tuple[Switch, dict[str, Port], Clock]:
    pol = parse_policy({"clients": {
        "1": {"name": "a", "mac": A.hex(":"), "broadcast": True},
        "2": {"name": "b", "mac": B.hex(":")},
        "3": {"name": "c", "mac": C.hex(":"), **carol}}})
    clock = Clock()
    sw = Switch(clock)
    ports = {p.name: Port.client(p) for p in pol.clients.values()}
    for p in ports.values():
        sw.add(p)
    if uplink:
        ports["up"] = Port(UPLINK, "uplink")
        sw.add(ports["up"])
    return sw, ports, clock


def test_ore_speaks_the_nic_protocol_and_more() -> None:
    assert ORE.tag == NIC.tag
    for name, o in NIC.ops.items():
        assert ORE.ops[name] == o                      # same opcode, arguments, reply, errors
    assert {"broadcast", "counters"} <= set(ORE.ops) and ORE.ops["counters"].admin


def test_policy_defaults_derived_mac_and_mistakes() -> None:
    pol = parse_policy('{"clients": {"7": {"name": "web", "ip": "10.0.2.15/24"}}}')
    web = pol.clients[7]
    assert web.mac == derive_mac(7, "web") == derive_mac(7, "web")   # stable
    assert web.mac[0] & 0x03 == 0x02                  # locally administered, unicast
    assert derive_mac(8, "web") != web.mac and web.allowed == frozenset([web.mac])
    assert not web.broadcast and web.active and web.ip == "10.0.2.15/24"
    assert pol.for_label(9) is None
    dflt = parse_policy({"default": {"broadcast": True}}).for_label(9)
    assert dflt is not None and dflt.mac == derive_mac(9, "client9") and dflt.broadcast
    cases: list[tuple[dict[str, Any], str]] = [({"clients": {"0": {}}}, "admin gate"),
                        ({"clients": {"x": {}}}, "clients.x"),
                        ({"clients": {"1": {"colour": 1}}}, "colour"),
                        ({"clients": {"1": {"mac": "01:00:00:00:00:01"}}}, "group address"),
                        ({"clients": {"1": {"mac": "zz"}}}, "clients.1"),
                        ({"clients": {"1": {"mac": A.hex(":")}, "2": {"mac": A.hex(":")}}},
                         "client 1's already"),
                        ({"clients": {"1": {"broadcast": "yes"}}}, "broadcast"),
                        ({"default": {"mac": A.hex(":")}}, "default.mac"),
                        ({"speed": 1}, "speed")]
    for bad, needle in cases:
        with pytest.raises(PolicyError, match=needle):
            parse_policy(bad)


def test_unicast_to_the_pinned_port_never_flooded() -> None:
    sw, p, _ = _switch()
    assert sw.decide(p["a"], B, A) == (p["b"],)
    assert sw.decide(p["b"], A, B) == (p["a"],)
    assert sw.decide(p["a"], A, A) == ()               # back to its own port: filtered


def test_unknown_unicast_floods_uplink_and_promiscuous_only() -> None:
    sw, p, _ = _switch()
    assert sw.decide(p["a"], REMOTE, A) == (p["up"],)
    sw2, p2, _ = _switch(promiscuous=True)
    assert set(sw2.decide(p2["a"], REMOTE, A)) == {p2["c"], p2["up"]}
    sw3, p3, _ = _switch(uplink=False)
    assert sw3.decide(p3["a"], REMOTE, A) == "no_route"


def test_learning_from_the_uplink_and_aging() -> None:
    sw, p, clock = _switch(promiscuous=True)
    assert sw.decide(p["up"], A, REMOTE) == (p["a"],)  # learns REMOTE at the uplink
    assert sw.decide(p["b"], REMOTE, B) == (p["up"],)  # no flood to promiscuous c any more
    assert any(r["mac"] == REMOTE.hex(":") and r["port"] == "uplink" and not r["pinned"]
               for r in sw.table())
    clock.t += AGE_S + 1                               # aged out: flooded again
    assert set(sw.decide(p["b"], REMOTE, B)) == {p["c"], p["up"]}


def test_learning_from_a_bridging_client_and_moves() -> None:
    sw, p, _ = _switch(allowed="any")
    X = parse_mac("02:aa:00:00:00:01")
    assert sw.decide(p["c"], A, X) == (p["a"],)        # c bridges X: learned at c
    assert sw.decide(p["a"], X, A) == (p["c"],)
    assert sw.decide(p["up"], B, X) == (p["b"],)       # X moved to the uplink
    assert sw.decide(p["a"], X, A) == (p["up"],)
    assert sw.decide(p["c"], B, A) == "spoofed"        # "any" never covers a pinned MAC


def test_broadcast_and_multicast_only_to_ports_that_want_them() -> None:
    sw, p, _ = _switch()
    assert set(sw.decide(p["b"], BROADCAST, B)) == {p["a"], p["up"]}
    assert set(sw.decide(p["b"], MCAST, B)) == {p["a"], p["up"]}
    assert set(sw.decide(p["up"], BROADCAST, REMOTE)) == {p["a"]}
    p["c"].broadcast = True                            # the session op turned it on
    assert set(sw.decide(p["b"], BROADCAST, B)) == {p["a"], p["c"], p["up"]}
    sw2, p2, _ = _switch(uplink=False)
    p2["a"].broadcast = False
    assert sw2.decide(p2["b"], BROADCAST, B) == ()     # nobody wants it: not an error


def test_spoofing_inactive_and_loops_are_refused_before_learning() -> None:
    sw, p, _ = _switch(active=False)
    assert sw.decide(p["b"], A, C) == "spoofed"        # another client's MAC
    assert sw.decide(p["b"], A, REMOTE) == "spoofed"   # a MAC b may not use
    assert sw.decide(p["up"], B, A) == "loop"          # our own frame reflected by the wire
    assert sw.decide(p["c"], A, C) == "inactive"
    assert sw.decide(p["a"], C, A) == "no_route"       # to an inactive port
    assert not sw.learned                              # nothing was learned from any of them


def test_removing_a_port_forgets_its_macs() -> None:
    sw, p, _ = _switch(allowed="any")
    X = parse_mac("02:aa:00:00:00:01")
    sw.decide(p["c"], A, X)
    sw.remove(p["c"].key)
    assert C not in sw.pinned and X not in sw.learned
    assert sw.decide(p["a"], C, A) == (p["up"],)       # unknown now: to the uplink
