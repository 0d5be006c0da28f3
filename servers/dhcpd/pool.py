"""The leases: which address each client (by MAC) holds, offers, renewals, release and expiry.

Contract: one lease per client MAC. A client's address is stable: the one it holds or held
(kept after expiry or release until the pool needs it for someone else), else its
*preferred* address — a hash of its MAC into the pool, probing upwards past taken ones — so a
client gets the same address across its own restarts and across the server's (which keeps
its table in memory only: a restarted server computes the same preference). Reservations
(`fixed`) pin a MAC to an address outside the rotation.

    offer(mac, requested) -> address | None        a DISCOVER: held, then requested, preferred
    request(mac, addr, now) -> Lease | str         a REQUEST: the lease, or why it is NAKed
    release(mac, addr); decline(mac, addr, now)    the client gave it back / found it in use

An offer is held for OFFER_HOLD_S (another client is not offered the same address meanwhile).
Declined addresses are kept out of the pool for DECLINE_HOLD_S. All times are monotonic
seconds passed in by the caller (tests use their own clock).

Ownership: one Pool per server, used by the server's thread only.
"""
from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Any

OFFER_HOLD_S = 30.0
DECLINE_HOLD_S = 300.0


class PoolError(ValueError):
    """The pool's description is wrong (the image's fault): the reason says which argument."""


@dataclass
class Lease:
    mac: bytes
    addr: int
    expiry: float            # monotonic; 0: an offer only, never acknowledged
    bound: bool = False

    def describe(self, now: float) -> dict[str, Any]:
        return {"mac": self.mac.hex(":"), "address": str(ipaddress.IPv4Address(self.addr)),
                "state": ("bound" if self.expiry > now else "expired") if self.bound else
                         "offered" if self.expiry > now else "free",
                "left_s": round(max(0.0, self.expiry - now), 1)}


class Pool:
    def __init__(self, first: str, last: str, plen: int, lease_s: int,
                 fixed: dict[bytes, str] | None = None, exclude: tuple[str, ...] = ()) -> None:
        try:
            lo, hi = int(ipaddress.IPv4Address(first)), int(ipaddress.IPv4Address(last))
        except ValueError as e:
            raise PoolError(f"pool: {e}") from None
        if not 0 < plen < 31:
            raise PoolError(f"pool: prefix length {plen} (expected 1..30)")
        net = ipaddress.IPv4Network(f"{first}/{plen}", strict=False)
        if hi < lo or ipaddress.IPv4Address(last) not in net:
            raise PoolError(f"pool: {first}-{last} is not a range inside {net}")
        if lo == int(net.network_address) or hi == int(net.broadcast_address):
            raise PoolError(f"pool: {first}-{last} includes {net}'s network or broadcast address")
        if lease_s < 4:
            raise PoolError(f"lease={lease_s}: at least 4 seconds")
        self.lo, self.hi, self.plen, self.lease_s, self.net = lo, hi, plen, lease_s, net
        self.excluded = {int(ipaddress.IPv4Address(a)) for a in exclude}
        self.fixed = {m: int(ipaddress.IPv4Address(a)) for m, a in (fixed or {}).items()}
        for m, a in self.fixed.items():
            if ipaddress.IPv4Address(a) not in net:
                raise PoolError(f"host={m.hex(':')},{ipaddress.IPv4Address(a)}: outside {net}")
        self.by_mac: dict[bytes, Lease] = {}
        self.by_addr: dict[int, Lease] = {}
        self.declined: dict[int, float] = {}           # addr -> until

    # -- queries ---------------------------------------------------------------------------
    def _free(self, addr: int, mac: bytes, now: float) -> bool:
        """Nobody else may use `addr` now (an expired lease of another client is free)."""
        if addr in self.excluded or self.declined.get(addr, 0) > now:
            return False
        if addr in self.fixed.values() and self.fixed.get(mac) != addr:
            return False
        held = self.by_addr.get(addr)
        return held is None or held.mac == mac or held.expiry <= now

    def _in_pool(self, addr: int) -> bool:
        return self.lo <= addr <= self.hi

    def preferred(self, mac: bytes) -> int:
        n = self.hi - self.lo + 1
        return self.lo + int.from_bytes(hashlib.sha256(mac).digest()[:4], "big") % n

    def _choose(self, mac: bytes, requested: int | None, now: float) -> int | None:
        if mac in self.fixed:
            return self.fixed[mac]
        held = self.by_mac.get(mac)
        if held is not None and self._free(held.addr, mac, now):
            return held.addr
        if requested is not None and self._in_pool(requested) and self._free(requested, mac, now):
            return requested
        start, n = self.preferred(mac) - self.lo, self.hi - self.lo + 1
        for i in range(n):
            a = self.lo + (start + i) % n
            if self._free(a, mac, now):
                return a
        return None

    def _set(self, mac: bytes, addr: int, expiry: float, bound: bool) -> Lease:
        old = self.by_mac.get(mac)
        if old is not None and self.by_addr.get(old.addr) is old:
            del self.by_addr[old.addr]
        other = self.by_addr.get(addr)
        if other is not None and other.mac != mac:
            del self.by_mac[other.mac]                     # an expired lease, taken over
        lease = self.by_mac[mac] = self.by_addr[addr] = Lease(mac, addr, expiry, bound)
        return lease

    # -- the client's messages ---------------------------------------------------------------
    def offer(self, mac: bytes, requested: int | None, now: float) -> int | None:
        addr = self._choose(mac, requested, now)
        if addr is None:
            return None
        held = self.by_mac.get(mac)
        if held is None or held.addr != addr or held.expiry <= now:
            self._set(mac, addr, now + OFFER_HOLD_S, bound=False)
        return addr

    def request(self, mac: bytes, addr: int, now: float) -> Lease | str:
        """The lease for `addr`, or the reason for a NAK."""
        if mac in self.fixed and self.fixed[mac] != addr:
            return f"{ipaddress.IPv4Address(addr)} is not this client's reserved address"
        if mac not in self.fixed and not self._in_pool(addr):
            return f"{ipaddress.IPv4Address(addr)} is not in the pool"
        if not self._free(addr, mac, now):
            return f"{ipaddress.IPv4Address(addr)} is leased to another client"
        return self._set(mac, addr, now + self.lease_s, bound=True)

    def release(self, mac: bytes, addr: int, now: float) -> bool:
        lease = self.by_mac.get(mac)
        if lease is None or lease.addr != addr:
            return False
        lease.expiry, lease.bound = now, False             # kept: the same address next time
        return True

    def decline(self, mac: bytes, addr: int, now: float) -> None:
        lease = self.by_mac.get(mac)
        if lease is not None and lease.addr == addr:
            del self.by_mac[mac]
            self.by_addr.pop(addr, None)
        self.declined[addr] = now + DECLINE_HOLD_S

    def leases(self, now: float) -> list[dict[str, Any]]:
        return [self.by_mac[m].describe(now) for m in sorted(self.by_mac)]
