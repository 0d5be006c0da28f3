"""Network bandwidth reservations on ORe's uplink: token buckets, admission, the shares.

Mechanism (Löser & Härtig's idea in small). The uplink is given a capacity in the switch's
policy (`"uplink_rate": BYTES_PER_S`): the rate the wire behind it is taken to carry. The
switch then shapes everything it sends to the uplink to that rate: a client with a
reservation (`reserve(session, rate)`) sends from a bucket of its own, filled at its
reserved rate; everyone else (and a reserved client beyond its rate) sends from one shared
best-effort bucket filled at what the reservations leave (capacity − Σ reserved). So best
effort can never take a reserved client's share, however much it offers, and a reserved
client can always use its share. A frame that finds no tokens is not dropped: it stays in
the client's TX stream (held, as for a full uplink) and the switch looks again when a
bucket it may use will hold its bytes (`next_at`, at least RETRY_S on): retrying sooner
only costs the switch's thread — boosted while reservations exist — a drain for nothing.

Admission: Σ reserved ≤ RESERVABLE × capacity (best effort always keeps a little, so its
clients' ARP and DHCP still get through); a reservation past it is refused with the sums.
Buckets hold BURST_S of their rate, at least two full frames.

Contract: `take(label, n)` answers whether a frame of n bytes from client `label` may go to
the uplink now (and charges it); nothing here moves frames. Owned by ORe's main thread.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

RESERVABLE = 0.9
BURST_S = 0.02
MIN_BURST = 2 * 1514
RETRY_S = 0.002
ENDED_KEPT = 16


@dataclass
class Bucket:
    rate: float                                   # bytes per second
    tokens: float = 0.0
    last: float = field(default_factory=time.monotonic)
    sent: int = 0                                 # bytes sent from this bucket
    held: int = 0                                 # times a frame had to wait for it

    def __post_init__(self) -> None:
        self.tokens = self.depth

    @property
    def depth(self) -> float:
        return max(MIN_BURST, self.rate * BURST_S)

    def take(self, n: int, now: float) -> bool:
        self.tokens = min(self.depth, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= n:
            self.tokens -= n
            self.sent += n
            return True
        return False


class Shaper:
    def __init__(self, capacity: float) -> None:
        self.capacity = float(capacity)
        self.reserved: dict[int, Bucket] = {}      # label -> its reservation's bucket
        self.since: dict[int, float] = {}          # label -> when it was reserved
        self.span: dict[int, tuple[float, float, int]] = {}  # label -> first, last frame, its size
        self.best = Bucket(self.capacity)
        self.best_by: dict[int, int] = {}          # label -> bytes sent as best effort
        self.refused: list[dict[str, Any]] = []
        self.holding = False                       # a frame waits for tokens: retry soon
        self.next_at = 0.0                         # ... not before then (its bucket fills)
        self.ended: list[dict[str, Any]] = []      # rows of ended reservations

    def total(self, without: int = -1) -> float:
        return sum(b.rate for k, b in self.reserved.items() if k != without)

    def reserve(self, label: int, rate: float) -> str | None:
        """Reserve `rate` bytes/s for client `label` (replacing its reservation); None if
        admitted, else why not."""
        have = self.total(without=label)
        if have + rate > RESERVABLE * self.capacity:
            why = (f"{rate:.0f} B/s + {have:.0f} B/s reserved would exceed {RESERVABLE} of "
                   f"the uplink's {self.capacity:.0f} B/s")
            self.refused.append({"label": label, "rate": rate, "reason": why})
            del self.refused[:-16]
            return why
        self.reserved[label] = Bucket(rate)
        self.since[label] = time.monotonic()
        self.span.pop(label, None)
        self._rebalance()
        return None

    def release(self, label: int, name: str = "") -> None:
        """End client `label`'s reservation; its row stays in `status` (ENDED_KEPT)."""
        b = self.reserved.get(label)
        if b is not None:
            self.ended.append(self._row(label, b, name, ended=True))
            del self.ended[:-ENDED_KEPT]
            del self.reserved[label]
            self.since.pop(label, None)
            self.span.pop(label, None)
            self._rebalance()

    def _sending(self, label: int, now: float, n: int) -> None:
        """A reserved client's frame went: the span it has been sending over."""
        first, _, _ = self.span.get(label, (now, now, n))
        self.span[label] = (first, now, n)

    def _rebalance(self) -> None:
        self.best.rate = max(0.0, self.capacity - self.total())

    def take(self, label: int, n: int) -> bool:
        now = time.monotonic()
        own = self.reserved.get(label)
        if own is not None and own.take(n, now):
            self._sending(label, now, n)
            return True
        if own is not None:
            self.best_by.setdefault(label, 0)
        if self.best.take(n, now):
            if own is not None:
                self.best_by[label] += n      # a reserved client beyond its rate
                self._sending(label, now, n)
            return True
        if own is not None:
            own.held += 1
        else:
            self.best.held += 1
        # when a bucket will hold this frame's bytes: no retry before (each retry is a
        # drain of the client's stream in the switch's boosted thread, for nothing)
        waits = [(n - b.tokens) / b.rate for b in (own, self.best) if b is not None and b.rate > 0]
        at = now + max(RETRY_S, min(waits, default=RETRY_S))
        self.next_at = at if not self.holding else min(self.next_at, at)
        self.holding = True
        return False

    def _row(self, label: int, b: Bucket, name: str, ended: bool = False) -> dict[str, Any]:
        """achieved: what the client sent (own bucket and best effort) over its reserved rate,
        while it was sending: from its first frame to its last, plus the time its rate takes
        to earn the last one (a client that offers less than its rate achieves less; the
        time before its first frame and after its last is not its share's)."""
        secs = max(1e-6, time.monotonic() - self.since[label])
        total = b.sent + self.best_by.get(label, 0)
        first, last, n = self.span.get(label, (0.0, 0.0, 0))
        sending = max(1e-6, last - first + n / b.rate) if total else secs
        return {"label": label, "name": name or str(label), "rate": b.rate, "sent": total,
                "reserved_bytes": b.sent, "seconds": round(secs, 3),
                "sending_s": round(sending, 3),
                "achieved": round(total / sending / b.rate, 4), "held": b.held, "ended": ended}

    def status(self, names: dict[int, str]) -> dict[str, Any]:
        rows = [*self.ended, *(self._row(label, b, names.get(label, ""))
                               for label, b in self.reserved.items())]
        return {"capacity": self.capacity, "unit": "B/s", "reserved": self.total(),
                "best_effort_rate": self.best.rate, "best_effort_sent": self.best.sent,
                "best_effort_held": self.best.held, "reservations": rows,
                "refused": list(self.refused)}
