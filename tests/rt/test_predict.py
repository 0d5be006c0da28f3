"""The disk scheduler's prediction of a periodic reserved client (servers/block/rtsched.py
Reservation.arrived) and ORe's shaper retry time (servers/ore/shaper.py next_at): plain
objects, no system — the numbers the hold-back and the retry are made of."""
from __future__ import annotations

import random

from servers.block.rtsched import HOLD_GUARD_S, HOLD_LATE, Reservation
from servers.ore.shaper import RETRY_S, Shaper


def _res() -> Reservation:
    return Reservation(label=5, rate=100.0, sectors=16, deadline_s=0.01, service_s=0.002)


def test_due_follows_the_earliest_arrivals_of_a_jittery_periodic_client() -> None:
    r, rng, t = _res(), random.Random(7), 1000.0
    for k in range(500):
        r.arrived(t + k * 0.01 + rng.uniform(0.0, 0.002))      # release + 0..2 ms
    nxt = t + 500 * 0.01
    assert nxt - 0.0005 <= r.due <= nxt + 0.0015, (r.due - nxt)   # near the earliest
    assert 0.0015 <= r.late_s <= HOLD_LATE[1] * 0.01             # covers the jitter
    assert r.late_s >= max(r.lateness) + HOLD_GUARD_S - 1e-9


def test_skipped_periods_do_not_count_as_lateness() -> None:
    r, t = _res(), 50.0
    for k in range(10):
        r.arrived(t + k * 0.01)
    r.arrived(t + 14 * 0.01 + 0.0003)                  # four periods without a request
    assert abs(r.due - (t + 15 * 0.01)) < 0.0006
    assert max(r.lateness) < 0.001


def test_a_held_frame_is_retried_when_its_bucket_holds_it() -> None:
    sh = Shaper(400_000)
    assert sh.reserve(1, 100_000) is None
    while sh.take(2, 1400):                            # best effort empties its bucket
        pass
    wait = sh.next_at - sh.best.last
    need = (1400 - sh.best.tokens) / sh.best.rate      # 300 kB/s left for best effort
    assert sh.holding and abs(wait - max(RETRY_S, need)) < 1e-6, (wait, need)
    assert wait >= RETRY_S
