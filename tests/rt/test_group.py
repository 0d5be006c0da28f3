"""hostsched.ThreadGroup: a host thread into the manager's cpu cgroup and back (needs root
and cgroup v1's cpu controller, skipped otherwise), and bench rt's late-period stages."""
from __future__ import annotations

import os
import threading
import time

import pytest

from launcher.bench_rt import StealWatch, cascade_heads, late_stages
from servers.rt import hostsched as hs
from tests.rt.threads import parked_thread



@pytest.mark.skipif(not os.path.isdir(hs.CPU_CGROUP) or os.geteuid() != 0,
                    reason="no cgroup v1 cpu controller, or not root")
def test_a_thread_goes_into_the_group_and_back_and_the_group_goes() -> None:
    group = hs.ThreadGroup(f"{hs.GROUP_PREFIX}{os.getpid()}")
    assert group.why_not is None, group.why_not
    with open(os.path.join(group.path, "cpu.shares")) as f:
        assert int(f.read()) == hs.GROUP_SHARES
    with parked_thread() as tid:
        group.add(tid)
        assert hs.cpu_group_of(tid) == "/" + os.path.basename(group.path)
        assert hs.cpu_group_of(threading.get_native_id()) != hs.cpu_group_of(tid)   # one thread only
        with pytest.raises(hs.HostRefused):
            hs.set_fifo(tid, 10)          # the group has no real-time runtime: said, not hidden
        group.remove(tid)
        assert hs.cpu_group_of(tid) == "/"
        group.add(tid)
    group.close()                          # the thread ended in it: the group still goes
    assert not os.path.exists(group.path)
    assert group.status()["threads"] == 0


def test_late_stages_place_a_late_period_by_the_server_and_the_disk() -> None:
    t0 = 100.0
    rec = {"late_at": [[t0 - 0.001, t0, t0 + 0.008, t0 + 0.010, t0 + 0.0105],
                       [t0 + 0.5, t0 + 0.5, t0 + 0.504, t0 + 0.506, t0 + 0.507]]}
    # call in +1 ms, queued +0.1, dispatched after a best-effort request +2, doorbell +0.5,
    # completion +3.5, told +0.1, answer +0.3; the player has it 0.5 ms later
    t = [t0 + 0.001]
    for dt in (0.0001, 0.002, 0.0005, 0.0035, 0.0001, 0.0003):
        t.append(t[-1] + dt)
    # the best-effort request ahead: dispatched 3 ms before the arrival (1 ms past its
    # prediction), its interrupt raised 0.5 ms before the arrival (done, not yet taken)
    slow = [{"label": 5, "ahead": 1, "ahead_since": t[1] - 0.003, "due": t[1] - 0.001,
             "t": t}]
    door = t[3] + 0.0001
    be = t[1] - 0.0028
    jobs = [[be, be + 0.0001, be + 0.0002, be + 0.0018, t[1] - 0.0005, 1],
            [door, door + 0.0001, door + 0.0004, door + 0.0021, door + 0.003, 1]]
    out = late_stages(rec, slow, jobs)
    assert out["behind_age_ms"] == 3.0 and out["behind_arrival_vs_due_ms"] == 1.0
    assert out["behind_irq_raised_before"] == 1 and out["behind_with_hal"] == 1
    assert out["late"] == 2 and out["matched"] == 1 and out["behind_best_effort_periods"] == 1
    assert out["in"] == 1.0 and out["behind_best_effort"] == 2.0 and out["device"] == 3.5
    assert out["answer"] == 0.4 and out["hal_check"] == 0.3 and out["hal_irq"] == 0.9
    assert abs(out["back"] - (8 - 1 - 6.5)) < 0.02, out


def test_a_cascade_is_counted_once_by_its_first_late_period() -> None:
    # [s, ms late, start, disk, compute, send, cpu]: one cascade of three, one alone
    stalls = [[1.0, 3.0, 0.2, 9.0, 2.0, 0.5, 2.5], [1.01, 2.0, 3.0, 5.0, 2.0, 0.5, 2.4],
              [1.02, 0.5, 2.0, 4.5, 2.0, 0.5, 2.4], [7.0, 1.0, 0.1, 8.0, 2.1, 0.4, 2.6]]
    out = cascade_heads(stalls)
    assert out["count"] == 2 and out["of"] == 4
    assert out["disk"] == 8.5 and out["late"] == 2.0 and out["start"] == 0.15


def test_steal_is_placed_in_the_late_periods_it_overlaps() -> None:
    with StealWatch() as watch:            # the real sampler: it starts, reads, stops
        time.sleep(0.05)
    assert all(ms > 0 and a < b for a, b, ms in watch.stolen)
    watch.stolen = [(10.0, 10.01, 10.0), (10.01, 10.02, 20.0), (50.0, 50.01, 10.0)]
    assert watch.during(10.005, 10.5) == 30.0 and watch.during(11.0, 12.0) == 0
    assert watch.count([(9.99, 10.1), (10.5, 10.6), (49.0, 50.005)]) == 2
