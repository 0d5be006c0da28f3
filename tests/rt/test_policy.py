"""The CPU manager's `serve` entries (servers/rt/server.py): which threads of a server it
boosts, the host thread names servers give their threads, and a deadline for a thread kept
on fewer CPUs (servers/rt/hostsched.py)."""
from __future__ import annotations

import os
import threading

import pytest

from servers.rt import hostsched as hs
from servers.rt.server import BOOST_PRIO, _serve_entry
from tests.rt.threads import parked_thread


def test_a_serve_entry_is_a_name_or_a_table_of_prefixes_and_prio() -> None:
    assert _serve_entry("block") == ("block", (), BOOST_PRIO, 0)
    assert _serve_entry({"task": "hal", "best_effort": ["nic-"]}) == ("hal", ("nic-",), BOOST_PRIO, 0)
    assert _serve_entry({"task": "ore", "prio": 5}) == ("ore", (), 5, 0)
    assert _serve_entry({"task": "hal", "best_effort": ["nic-"], "best_effort_prio": 1}) \
        == ("hal", ("nic-",), BOOST_PRIO, 1)
    for bad in ({"task": "hal", "best_effort": [""]}, {"task": "hal", "prio": 0},
                {"task": "hal", "prio": 95}, {"name": "hal"}, {"task": "hal", "other": 1}, 3,
                {"task": "hal", "best_effort_prio": BOOST_PRIO},       # not below the path
                {"task": "hal", "prio": 5, "best_effort_prio": 7}, {"task": "hal", "best_effort_prio": -1}):
        with pytest.raises(ValueError, match="serve entry"):
            _serve_entry(bad)


def test_a_thread_names_itself_for_the_manager() -> None:
    seen: list[str] = []

    def run() -> None:
        hs.name_thread(hs.BEST_EFFORT_PREFIX + "a-long-name-cut")
        with open(f"/proc/self/task/{threading.get_native_id()}/comm") as f:
            seen.extend([hs.thread_name(), f.read().strip()])
    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == ["be/a-long-name-", "be/a-long-name-"]       # 15 bytes, the host's word


@pytest.mark.skipif(hs.deadline_available() is not None or len(os.sched_getaffinity(0)) < 2,
                    reason="needs SCHED_DEADLINE and two CPUs")
def test_a_pinned_thread_is_refused_a_deadline_naming_why_or_widened() -> None:
    """The host admits deadline threads that may run on every CPU of their domain only: a
    thread kept on one (as the kernel keeps its own, `--cpu`) is refused with the CPUs
    named; allow_every_cpu (the path's deadline boost) first lets it run on all of them."""
    with parked_thread() as tid:
        one = sorted(os.sched_getaffinity(0))[-1]
        os.sched_setaffinity(tid, {one})
        with pytest.raises(hs.HostRefused, match=rf"may run on CPUs \[{one}\] only"):
            hs.set_deadline(tid, 1_000_000, 10_000_000, 10_000_000)
        assert hs.allow_every_cpu(tid) == {one}
        hs.set_deadline(tid, 1_000_000, 10_000_000, 10_000_000)
        assert hs.policy_of(tid) == "deadline"
        assert os.sched_getaffinity(tid) == os.sched_getaffinity(0)
        hs.set_other(tid)
