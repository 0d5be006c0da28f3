"""The CPU manager's `serve` entries (servers/rt/server.py): which threads of a server it
boosts, and the host thread names servers give their threads (servers/rt/hostsched.py)."""
from __future__ import annotations

import threading

import pytest

from servers.rt import hostsched as hs
from servers.rt.server import BOOST_PRIO, _serve_entry


def test_a_serve_entry_is_a_name_or_a_table_of_prefixes_and_prio() -> None:
    assert _serve_entry("block") == ("block", (), BOOST_PRIO)
    assert _serve_entry({"task": "hal", "best_effort": ["nic-"]}) == ("hal", ("nic-",), BOOST_PRIO)
    assert _serve_entry({"task": "ore", "prio": 5}) == ("ore", (), 5)
    for bad in ({"task": "hal", "best_effort": [""]}, {"task": "hal", "prio": 0},
                {"task": "hal", "prio": 95}, {"name": "hal"}, {"task": "hal", "other": 1}, 3):
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
