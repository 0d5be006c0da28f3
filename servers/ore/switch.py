"""The switch: ports, policy, the MAC table and the forwarding decision. No IPC, no memory.

A *port* is one client session (keyed by the client's label) or the uplink (key UPLINK). The
server (servers/ore/server.py) moves the bytes; this module only decides, per frame, where
it goes or why it is dropped, and counts:

    decide(port, dst, src) -> tuple of destination ports  |  a drop reason (str)

The decision, in order (check first: the sender's claims before anything is learned):
1. the sender's port is inactive (policy active = false)            -> "inactive"
2. a client's source MAC it may not use (not in its `allowed` list, or a MAC pinned to
   another port)                                                    -> "spoofed"
   the uplink's source MAC pinned to a local client (our own frame
   reflected by the wire: a loopback NIC does that)                 -> "loop"
3. learn: the source MAC now lives at this port (pinned MACs never move)
4. broadcast or multicast destination (I/G bit): every other active port that wants them —
   clients with broadcast on, and the uplink always (the real network decides there); none
   is not an error (an empty tuple)
5. unicast: the port the MAC is pinned to or learned at (a frame back to its own port is
   filtered: an empty tuple); unknown: flood to the uplink and to clients with
   promiscuous = true; nowhere                                      -> "no_route"

Pinned MACs: a session's own MAC and its `allowed` MACs belong to its port for as long as it
is open: unicast to a client never depends on learning, and no frame can steal its MAC.
Learned entries age out after AGE_S; the table holds at most TABLE_MAX (the oldest go).

Frame checks before `decide` (length: malformed, oversized) are the server's, which knows
the descriptor; the reasons are counted here all the same (`Port.drops`).

Fault knobs (`Faults`, set through ORE's admin op `faults`; chaos kind "switch",
docs/CHAOS.md): after `decide` let a frame through, each knob rolls once per frame in
scope, from one seeded generator (the same seed and the same frames in the same order give
the same faults):

    drop       probability: the frame is lost (counted on its sender as drop reason "fault";
               its descriptor is acknowledged OK: the wire lost it, the sender cannot know)
    corrupt    probability: one byte past the Ethernet header (an IPv4 frame: inside its
               datagram, not in the padding) is XORed with a non-zero value, so the IP or
               TCP/UDP checksum of any receiver catches it
    duplicate  probability: the frame is delivered twice
    seed       a new generator from this seed
    ports      scope: frames from or to these ports (client labels, client names, "uplink");
               [] or absent: every frame
    clear      true: the counts (totals and every port's) go back to zero

`Faults.update(knobs)` checks every key and value first (`KnobError` naming the key) and
changes nothing unless all are good; a knob not given keeps its value.

Ownership: one Switch (and one Faults) per ORe task, used by its main thread only.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

UPLINK = -1                      # the uplink's port key (client keys are labels >= 1)
BROADCAST = b"\xff" * 6
AGE_S = 300.0
TABLE_MAX = 1024
ANY = "any"                      # allowed = "any": the client may send with any MAC not pinned
                                 # to another port (a bridge inside it: L4Linux)


class PolicyError(ValueError):
    """ORe's policy argument is wrong (the image's fault): the reason says which key."""


def parse_mac(text: str) -> bytes:
    raw = bytes.fromhex(str(text).replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"{text!r} is not a MAC address (6 bytes)")
    return raw


def mac_text(mac: bytes) -> str:
    return mac.hex(":")


def derive_mac(label: int, name: str) -> bytes:
    """A locally administered unicast MAC from the client's label and name: the same after
    every restart of client and switch. 02:4f:52 ("OR") + three bytes of a hash."""
    digest = hashlib.sha256(f"ore:{label}:{name}".encode()).digest()
    return b"\x02\x4f\x52" + digest[:3]


def is_group(mac: bytes) -> bool:
    """Broadcast or multicast: the I/G bit of the first octet."""
    return bool(mac[0] & 1)


@dataclass
class ClientPolicy:
    label: int
    name: str
    mac: bytes
    ip: str | None = None
    broadcast: bool = False
    broadcast_locked: bool = False
    allowed: frozenset[bytes] | None = None     # None: ANY
    active: bool = True
    promiscuous: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "name": self.name, "mac": mac_text(self.mac), "ip": self.ip,
                "broadcast": self.broadcast, "active": self.active,
                "promiscuous": self.promiscuous,
                "allowed": ANY if self.allowed is None else sorted(map(mac_text, self.allowed))}


CLIENT_KEYS = {"name", "mac", "ip", "broadcast", "broadcast_locked", "allowed", "active",
               "promiscuous"}
POLICY_KEYS = {"clients", "default", "uplink", "name", "uplink_rate"}


@dataclass
class SwitchPolicy:
    clients: dict[int, ClientPolicy]
    default: dict[str, Any] | None = None       # the raw entry for labels not listed
    uplink: str | None = None                   # the capability name of the uplink session
    name: str = "ore"
    uplink_rate: float | None = None            # B/s: shape the uplink, allow reservations

    def for_label(self, label: int) -> ClientPolicy | None:
        """The policy of a client; a label not listed gets the default entry (if any)."""
        found = self.clients.get(label)
        if found is None and self.default is not None and label > 0:
            found = _client(label, self.default, f"default (label {label})")
        return found


def _client(label: int, raw: Any, where: str) -> ClientPolicy:
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: must be an object of {', '.join(sorted(CLIENT_KEYS))}")
    unknown = set(raw) - CLIENT_KEYS
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    name = str(raw.get("name", f"client{label}"))
    try:
        mac = parse_mac(raw["mac"]) if "mac" in raw else derive_mac(label, name)
        allowed_raw = raw.get("allowed")
        if allowed_raw == ANY:
            allowed: frozenset[bytes] | None = None
        else:
            allowed = frozenset([mac, *(parse_mac(m) for m in (allowed_raw or []))])
    except (ValueError, TypeError) as e:
        raise PolicyError(f"{where}: {e}") from None
    if is_group(mac):
        raise PolicyError(f"{where}.mac: {mac_text(mac)} is a group address")
    for k in ("broadcast", "broadcast_locked", "active", "promiscuous"):
        if k in raw and not isinstance(raw[k], bool):
            raise PolicyError(f"{where}.{k}: must be true or false")
    ip = raw.get("ip")
    if ip is not None:
        try:
            if not isinstance(ip, str):
                raise ValueError(ip)
            ipaddress.ip_interface(ip)
        except ValueError:
            raise PolicyError(f"{where}.ip: {ip!r} is not an address like "
                              f"\"10.0.2.15/24\"") from None
    return ClientPolicy(label, name, mac, ip, bool(raw.get("broadcast", False)),
                        bool(raw.get("broadcast_locked", False)), allowed,
                        bool(raw.get("active", True)), bool(raw.get("promiscuous", False)))


def parse_policy(text: str | dict[str, Any]) -> SwitchPolicy:
    """ORe's task argument (JSON; see servers/ore/protocol.py). Raises PolicyError naming
    the key; MACs must be unique among the clients listed."""
    try:
        raw = json.loads(text) if isinstance(text, str) else text
    except json.JSONDecodeError as e:
        raise PolicyError(f"the policy is not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise PolicyError("the policy must be a JSON object")
    unknown = set(raw) - POLICY_KEYS
    if unknown:
        raise PolicyError(f"unknown key(s) {', '.join(sorted(unknown))} "
                          f"(known: {', '.join(sorted(POLICY_KEYS))})")
    clients: dict[int, ClientPolicy] = {}
    owner: dict[bytes, int] = {}
    for key, entry in dict(raw.get("clients", {})).items():
        try:
            label = int(key)
        except ValueError:
            raise PolicyError(f"clients.{key}: a client is its label, a number >= 1") from None
        if label < 1:
            raise PolicyError(f"clients.{key}: label 0 is the admin gate")
        c = _client(label, entry, f"clients.{key}")
        for m in ({c.mac} | set(c.allowed or ())):
            if owner.get(m, label) != label:
                raise PolicyError(f"clients.{key}: MAC {mac_text(m)} is client "
                                  f"{owner[m]}'s already")
            owner[m] = label
        clients[label] = c
    default = raw.get("default")
    if default is not None:
        _client(1, default, "default")           # checked once now
        if "mac" in default:
            raise PolicyError("default.mac: one MAC cannot serve every label (leave it out)")
    uplink = raw.get("uplink")
    if uplink is not None and not isinstance(uplink, str):
        raise PolicyError("uplink: the name of the capability of the uplink's nic session")
    rate = raw.get("uplink_rate")
    if rate is not None and (type(rate) not in (int, float) or not rate > 0):
        raise PolicyError(f"uplink_rate: the uplink's capacity in bytes/s (> 0), got {rate!r}")
    return SwitchPolicy(clients, default, uplink, str(raw.get("name", "ore")),
                        None if rate is None else float(rate))


@dataclass(eq=False)
class Port:
    """One port's policy and counters (compared and hashed by identity). tx = frames the port sent into the switch; rx =
    frames the switch delivered to it."""
    key: int
    name: str
    mac: bytes | None = None
    allowed: frozenset[bytes] | None = None
    broadcast: bool = True                      # the uplink takes group frames
    active: bool = True
    promiscuous: bool = True                    # the uplink takes unknown unicast
    c: Counter[str] = field(default_factory=Counter)
    drops: Counter[str] = field(default_factory=Counter)
    malformed: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)   # what the fault knobs did (Faults)

    @classmethod
    def client(cls, pol: ClientPolicy) -> "Port":
        return cls(pol.label, pol.name, pol.mac, pol.allowed, pol.broadcast, pol.active,
                   pol.promiscuous)

    @property
    def uplink(self) -> bool:
        return self.key == UPLINK

    def drop(self, reason: str, n: int = 1) -> None:
        self.drops[reason] += n

    def counters(self) -> dict[str, Any]:
        return {"port": "uplink" if self.uplink else self.key, "name": self.name,
                "mac": mac_text(self.mac) if self.mac else None, "broadcast": self.broadcast,
                "active": self.active,
                **{k: self.c[k] for k in ("tx_frames", "tx_bytes", "rx_frames", "rx_bytes")},
                "drops": dict(self.drops), "malformed": dict(self.malformed),
                "faults": dict(self.faults)}


class Switch:
    """Ports, pinned and learned MACs, and `decide`. `clock` is injectable for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.ports: dict[int, Port] = {}
        self.pinned: dict[bytes, int] = {}           # MAC -> port key (sessions' own)
        self.learned: dict[bytes, tuple[int, float]] = {}   # MAC -> (port key, last seen)
        self.totals: Counter[str] = Counter()

    # -- ports ---------------------------------------------------------------------------
    def add(self, port: Port) -> None:
        """Connect a port; a client's own and allowed MACs are pinned to it."""
        self.ports[port.key] = port
        for m in ({port.mac} if port.mac else set()) | set(port.allowed or ()):
            self.pinned[m] = port.key
            self.learned.pop(m, None)

    def remove(self, key: int) -> Port | None:
        port = self.ports.pop(key, None)
        self.pinned = {m: k for m, k in self.pinned.items() if k != key}
        self.learned = {m: e for m, e in self.learned.items() if e[0] != key}
        return port

    # -- the decision ----------------------------------------------------------------------
    def decide(self, port: Port, dst: bytes, src: bytes) -> tuple[Port, ...] | str:
        """Where a frame from `port` with these addresses goes, or why it is dropped."""
        if not port.active:
            return "inactive"
        owner = self.pinned.get(src)
        if port.uplink:
            if owner is not None:
                return "loop"
        elif owner is not None and owner != port.key:
            return "spoofed"
        elif port.allowed is not None and src not in port.allowed:
            return "spoofed"
        if owner is None and not is_group(src):
            self._learn(src, port.key)
        if is_group(dst):
            return tuple(p for p in self.ports.values()
                         if p is not port and p.active and p.broadcast)
        key = self.pinned.get(dst)
        if key is None:
            entry = self.learned.get(dst)
            if entry is not None and self.clock() - entry[1] <= AGE_S:
                key = entry[0]
        if key is not None:
            target = self.ports.get(key)
            if target is port:
                return ()
            if target is not None and target.active:
                return (target,)
            return "no_route"
        flood = tuple(p for p in self.ports.values()
                      if p is not port and p.active and p.promiscuous)
        return flood if flood else "no_route"

    def _learn(self, mac: bytes, key: int) -> None:
        now = self.clock()
        old = self.learned.get(mac)
        if old is None or old[0] != key:
            self.totals["learned"] += 1
            if old is None and len(self.learned) >= TABLE_MAX:
                oldest = min(self.learned, key=lambda m: self.learned[m][1])
                del self.learned[oldest]
        self.learned[mac] = (key, now)

    def table(self) -> list[dict[str, Any]]:
        """The MAC table: pinned entries, then learned ones (with their age)."""
        now = self.clock()
        rows = [{"mac": mac_text(m), "port": self._port_name(k), "pinned": True}
                for m, k in sorted(self.pinned.items())]
        rows += [{"mac": mac_text(m), "port": self._port_name(k), "pinned": False,
                  "age_s": round(now - t, 1)}
                 for m, (k, t) in sorted(self.learned.items()) if now - t <= AGE_S]
        return rows

    def _port_name(self, key: int) -> str:
        p = self.ports.get(key)
        return "uplink" if key == UPLINK else (p.name if p else str(key))


# -- fault knobs (chaos) ----------------------------------------------------------------------
RATE_KNOBS = ("drop", "corrupt", "duplicate")
FAULT_KNOBS = frozenset(RATE_KNOBS) | {"seed", "ports", "clear"}
PORTS_MAX = 64                   # entries of a `ports` scope
ETH_HLEN = 14


class KnobError(ValueError):
    """A fault knob is wrong (the caller's fault): the reason names the key."""


def check_knobs(knobs: Any) -> dict[str, Any]:
    """The knobs, checked: rates as floats in 0..1, seed an int >= 0, ports a list of labels
    (ints >= 1), client names or "uplink", clear a bool. Raises KnobError naming the first
    bad key. Also what a chaos plan's `knobs` are checked with (launcher/chaos/plan.py)."""
    if not isinstance(knobs, dict):
        raise KnobError(f"knobs must be a map of {', '.join(sorted(FAULT_KNOBS))}, "
                        f"got {type(knobs).__name__}")
    out: dict[str, Any] = {}
    for key in sorted(knobs, key=str):
        v = knobs[key]
        if key not in FAULT_KNOBS:
            raise KnobError(f"knob {str(key)[:40]!r}: unknown "
                            f"(known: {', '.join(sorted(FAULT_KNOBS))})")
        if key in RATE_KNOBS:
            if type(v) not in (int, float) or not (0.0 <= v <= 1.0) or math.isnan(v):
                raise KnobError(f"knob {key!r}: a probability 0..1, got {str(v)[:40]!r}")
            out[key] = float(v)
        elif key == "seed":
            if type(v) is not int or not 0 <= v < 2 ** 64:
                raise KnobError(f"knob 'seed': an integer 0..2^64-1, got {str(v)[:40]!r}")
            out[key] = v
        elif key == "clear":
            if type(v) is not bool:
                raise KnobError(f"knob 'clear': true or false, got {str(v)[:40]!r}")
            out[key] = v
        else:
            out[key] = _scope(v)
    return out


def _scope(v: Any) -> frozenset[int | str]:
    if not isinstance(v, (list, tuple)) or len(v) > PORTS_MAX:
        raise KnobError(f"knob 'ports': a list of at most {PORTS_MAX} client labels, client "
                        f"names or \"uplink\", got {str(v)[:40]!r}")
    for p in v:
        ok = (type(p) is int and 1 <= p < 2 ** 31) or (isinstance(p, str) and 0 < len(p) <= 64)
        if not ok:
            raise KnobError(f"knob 'ports': {str(p)[:40]!r} is not a client label (>= 1), "
                            f"a client name or \"uplink\"")
    return frozenset(v)


def _covered(frame: bytes) -> int:
    """Where the bytes a checksum covers end: an IPv4 frame's datagram (its total length;
    the padding after it is no one's), else the whole frame."""
    if frame[12:14] == b"\x08\x00" and len(frame) >= ETH_HLEN + 20:
        total = int.from_bytes(frame[16:18], "big")
        if 20 <= total <= len(frame) - ETH_HLEN:
            return ETH_HLEN + total
    return len(frame)


class Faults:
    """The switch's fault knobs and what they did (see the module docstring)."""

    def __init__(self) -> None:
        self.rates = dict.fromkeys(RATE_KNOBS, 0.0)
        self.seed = 0
        self.rng = random.Random(0)
        self.ports: frozenset[int | str] = frozenset()
        self.counts: Counter[str] = Counter()

    @property
    def active(self) -> bool:
        return any(self.rates.values())

    def update(self, knobs: Any, ports: list[Port]) -> None:
        """Check every knob, then set them (`ports`: the switch's, for `clear`)."""
        good = check_knobs(knobs)
        for key in RATE_KNOBS:
            if key in good:
                self.rates[key] = good[key]
        if "seed" in good:
            self.seed, self.rng = good["seed"], random.Random(good["seed"])
        if "ports" in good:
            self.ports = good["ports"]
        if good.get("clear"):
            self.counts.clear()
            for p in ports:
                p.faults.clear()

    def _in_scope(self, src: Port, dests: tuple[Port, ...]) -> bool:
        if not self.ports:
            return True
        return any(("uplink" if p.uplink else p.key) in self.ports or p.name in self.ports
                   for p in (src, *dests))

    def apply(self, src: Port, dests: tuple[Port, ...], frame: bytes) -> tuple[bytes, int]:
        """The frame as it goes on (changed or not) and how many copies of it: 0 (dropped),
        1, or 2 (duplicated). Counted on `src` and in the totals."""
        if not dests or not self._in_scope(src, dests):
            return frame, 1
        rng, rates = self.rng, self.rates
        if rates["drop"] and rng.random() < rates["drop"]:
            self._count(src, "dropped")
            src.drop("fault")
            return frame, 0
        end = _covered(frame)
        if rates["corrupt"] and end > ETH_HLEN and rng.random() < rates["corrupt"]:
            changed = bytearray(frame)
            changed[rng.randrange(ETH_HLEN, end)] ^= rng.randrange(1, 256)
            frame = bytes(changed)
            self._count(src, "corrupted")
        if rates["duplicate"] and rng.random() < rates["duplicate"]:
            self._count(src, "duplicated")
            return frame, 2
        return frame, 1

    def _count(self, src: Port, what: str) -> None:
        self.counts[what] += 1
        src.faults[what] += 1

    def state(self) -> dict[str, Any]:
        """The knobs and the counts (ORE's `faults` answer, `counters`' "faults")."""
        return {**self.rates, "seed": self.seed, "active": self.active,
                "ports": sorted(self.ports, key=str),
                "counts": {k: self.counts[k] for k in ("dropped", "corrupted", "duplicated")}}
