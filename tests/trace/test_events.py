"""The trace of known workloads, recorded by a real kernel (TRACE) and converted by
`launcher.trace.to_chrome`, checked event by event:

- a call chain A → B → C: each call is a slice on A's track holding B's serve slice, which
  holds B's call to C, which holds C's serve slice; flow arrows A→B, B→C, C→B, B→A in that
  order, once per call;
- a page fault: the faulting thread's slice lasts until the pager's reply resolves it
  (`→ mapped`), holds the pager's `serve kernel (page fault)` slice, with arrows there and
  back; a fault the pager refuses ends in `→ exception` and the call's DENIED;
- a server killed while a caller waits on it: its death, its serve slice ended `(died)`, the
  caller's slice ended with PEER_DIED;
- L⁴Linux: the system calls of a Linux process appear (their numbers, its task) and the
  personality's serve slices of the kernel's reports;
- an alien thread: its reports before and after each call, the handler's serve slices, the
  denied call's error;
- the ring is bounded: an overflowing trace keeps the newest events and counts the dropped.
Every converted trace is also checked as a file (tests/trace/chrome.py)."""
from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from kernel.user.testing import System, wait_for
from launcher.trace import to_chrome

from .chrome import flows, inside, tracks, validate

TIMEOUT_MS = 20_000


def drain(l4: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while True:
        got = l4.trace("drain")["events"]
        if not got:
            return events
        events += got


def slices(evs: list[dict[str, Any]], pid: int, prefix: str) -> list[dict[str, Any]]:
    return sorted((e for e in evs if e["ph"] == "X" and e["pid"] == pid
                   and e["name"].startswith(prefix)), key=lambda e: e["ts"])


def test_a_call_chain_nests_and_its_flows_go_there_and_back() -> None:
    with System() as s:
        c = s.spawn("tests.kernel.tasks:echo_server", "C")
        b = s.spawn("tests.trace.tasks:forwarder", "B",
                    caps={"next": s.root.create_gate(30, thread=c.thread)})
        gb = s.root.create_gate(20, thread=b.thread)
        assert s.root.call(gb, b"warm", rcv_timeout=TIMEOUT_MS).data   # B and C are serving
        s.root.trace("on")
        a = s.spawn("tests.trace.tasks:caller", "A", caps={"next": gb}, args=("3",))
        assert a.wait(30) == 0
        s.root.trace("off")
        events = drain(s.root)
    evs = validate(to_chrome(events))
    ids = {"A": a.task_id, "B": b.task_id, "C": c.task_id}
    procs = {e["pid"]: e["args"]["name"] for e in evs if e["name"] == "process_name"}
    assert all(procs[i] == f"{n} (task {i})" for n, i in ids.items()), procs
    a_calls = slices(evs, ids["A"], "call B label 20")
    b_serves = slices(evs, ids["B"], "serve A")
    b_calls = slices(evs, ids["B"], "call C label 30")
    c_serves = slices(evs, ids["C"], "serve B")
    assert len(a_calls) == len(b_serves) == len(b_calls) == len(c_serves) == 3, evs
    for ac, bs, bc, cs in zip(a_calls, b_serves, b_calls, c_serves):
        assert inside(bs, ac) and inside(bc, bs) and inside(cs, bc)
        assert bs["tid"] == bc["tid"], "B serves and calls on its one thread's track"
        assert ac["args"]["server"] == "B" and bc["args"]["server"] == "C"
        assert ac["args"]["size"] == bc["args"]["size"] == 4       # b"ping", forwarded
    # one track per thread: A's, B's and C's slices are on their own (pid, tid) tracks
    assert {(x["pid"], x["tid"]) for x in a_calls} == {(ids["A"], a_calls[0]["tid"])}
    track = {n: (i, slices(evs, i, "")[0]["tid"]) for n, i in ids.items()}
    chain = [(f[0], f[2]) for f in flows(evs)
             if f[0] in track.values() and f[2] in track.values()]
    a_, b_, c_ = track["A"], track["B"], track["C"]
    assert chain == [(a_, b_), (b_, c_), (c_, b_), (b_, a_)] * 3, chain
    for (src, s_ts, dst, f_ts) in flows(evs):
        # each arrow leaves from inside a slice of its source track and lands in one of its target's
        for trk, at in ((src, s_ts), (dst, f_ts)):
            if trk in track.values():
                assert any(x["ts"] - 1e-3 <= at <= x["ts"] + x["dur"] + 1e-3
                           for x in tracks(evs)[trk]), (trk, at)


ADDR = 0x1000_0000


def test_a_page_fault_appears_with_its_resolution() -> None:
    from tests.memory.conftest import Mem
    m = Mem()
    try:
        m.agent("p", mode="pager")
        m.agent("c", pager="p")
        m.ok("p", "alloc", order=13)
        m.agent("q", mode="pager")                 # a pager with nothing to page from
        m.agent("d", pager="q")
        m.root.trace("on")
        assert len(m.ok("c", "read", addr=ADDR, n=8)) == 8
        assert m.do("d", "read", addr=ADDR, n=8)["code"] == "DENIED"
        m.root.trace("off")
        events = drain(m.root)
        ids = {n: m.procs[n].task_id for n in ("p", "c", "q", "d")}
    finally:
        m.close()
    pf = [(e["name"], e["how"]) for e in events if e["ev"] == "pf"]
    assert pf == [("c", "pager"), ("c", "mapped"), ("d", "pager"), ("d", "exception")], pf
    sent = next(e for e in events if e["ev"] == "pf" and e["how"] == "pager")
    assert sent["to_name"] == "p" and sent["vaddr"] == ADDR and sent["access"] == 4
    evs = validate(to_chrome(events))
    fault = slices(evs, ids["c"], "page fault 0x10000000 → mapped")
    assert len(fault) == 1 and fault[0]["args"]["pager"] == "p", evs
    served = slices(evs, ids["p"], "serve kernel (page fault)")
    assert len(served) == 1 and inside(served[0], fault[0])
    assert inside(fault[0], slices(evs, ids["c"], "serve root")[0]), "during c's read"
    c_track, p_track = (ids["c"], fault[0]["tid"]), (ids["p"], served[0]["tid"])
    assert [(f[0], f[2]) for f in flows(evs) if {f[0], f[2]} == {c_track, p_track}] == \
        [(c_track, p_track), (p_track, c_track)]
    refused = slices(evs, ids["d"], "page fault 0x10000000 → exception")
    assert len(refused) == 1 and refused[0]["args"]["pager"] == "q"
    assert slices(evs, ids["q"], "serve kernel (page fault)")
    assert any(e["ph"] == "i" and e["pid"] == ids["d"] and e["name"] == "DENIED" for e in evs)


def test_a_server_killed_mid_call_shows_its_death_and_the_callers_error() -> None:
    with System() as s:
        b = s.spawn("tests.kernel.tasks:echo_server", "B")
        gb = s.root.create_gate(40, thread=b.thread)
        assert s.root.call(gb, b"warm", rcv_timeout=TIMEOUT_MS).data
        s.root.trace("on")
        a = s.spawn("tests.trace.tasks:caller", "A", caps={"next": gb}, args=("1", "noreply"))
        wait_for(lambda: s.root.cap_inspect(a.thread)["state"] == "await_reply", 20,
                 "A to wait for B's reply")
        b.kill()
        assert a.wait(30) == 2, "A's call ended in PEER_DIED"
        b.wait()
        s.root.trace("off")
        events = drain(s.root)
    death = next(e for e in events if e["ev"] == "death" and e["name"] == "B")
    err = next(e for e in events if e["ev"] == "error" and e["name"] == "A")
    assert err["err"] == "PEER_DIED" and death["seq"] < err["seq"]
    evs = validate(to_chrome(events))
    call = slices(evs, a.task_id, "call B label 40 → PEER_DIED")
    assert len(call) == 1 and call[0]["args"]["err"] == "PEER_DIED", evs
    served = slices(evs, b.task_id, "serve A (died)")
    assert len(served) == 1 and inside(served[0], call[0])
    died = [e for e in evs if e["ph"] == "i" and e["name"] == "death of B"]
    assert len(died) == 1 and died[0]["pid"] == b.task_id
    assert served[0]["ts"] + served[0]["dur"] == pytest.approx(died[0]["ts"], abs=1e-3)
    assert call[0]["ts"] <= died[0]["ts"] <= call[0]["ts"] + call[0]["dur"] + 1e-3


def test_an_overflowing_ring_keeps_the_newest_and_counts_the_dropped() -> None:
    with System() as s:
        srv = s.spawn("tests.kernel.tasks:echo_server", "echo")
        gate = s.root.create_gate(7, thread=srv.thread)
        assert s.root.call(gate, b"warm", rcv_timeout=TIMEOUT_MS).data
        s.root.trace("on", 16)
        for _ in range(20):
            s.root.call(gate, b"x", rcv_timeout=TIMEOUT_MS)
        st = s.root.trace("off")
        assert st["capacity"] == 16 and st["held"] == 16
        assert st["recorded"] >= 60 and st["dropped"] == st["recorded"] - 16, st
        events = drain(s.root)
        assert s.root.trace("status")["dropped"] == st["dropped"], "draining drops nothing"
    seqs = [e["seq"] for e in events]
    assert len(events) == 16 and seqs == list(range(seqs[0], seqs[0] + 16))
    validate(to_chrome(events))          # a trace cut at any event still converts


@pytest.mark.skipif(not os.path.exists("/bin/busybox") or sys.platform != "linux",
                    reason="needs /bin/busybox (busybox-static) on x86-64 Linux")
def test_linux_system_calls_appear(tmp_path: Any) -> None:
    from tests.l4linux.test_personality import Linux, _rootfs
    with System() as s:
        linux = Linux(s, _rootfs(str(tmp_path)))
        assert linux.run("true") == (0, b"")     # the personality is up
        s.root.trace("on")
        assert linux.run("echo", "traced") == (0, b"traced\n")
        s.root.trace("off")
        events = drain(s.root)
        personality = linux.task.task_id
        linux.task.kill()
        linux.task.wait()
    calls = [e for e in events if e["ev"] == "linux"]
    assert calls and all(e["name"].startswith("linux:") for e in calls), calls
    assert 1 in {e["nr"] for e in calls}, "echo's write(2)"
    assert {e["nr"] for e in calls} & {60, 231}, "exit or exit_group"
    evs = validate(to_chrome(events))
    pids = {e["task"] for e in calls}
    assert any(e["ph"] == "i" and e["pid"] in pids and e["name"] == "linux syscall 1" for e in evs)
    assert slices(evs, personality, "serve kernel (linux)"), "the personality serves the reports"


def test_alien_reports_appear_with_the_handlers_answers(kit: Any) -> None:
    """An alien thread's system calls: each is reported before (and, allowed, after) it runs;
    the handler's answers are its `serve kernel (alien)` slices."""
    from kernel.abi import AlienVerdict, Proto
    handler = kit.root.create_gate(0xA11E)
    path = os.path.join(kit.sys.run_dir, "go-traced")
    proc = kit.sys.spawn("tests.kernel.tasks:alien_worker", "alien", handler=handler,
                         env={"L4_TEST_GO": path})
    kit.root.thread_control(proc.thread, alien=True)
    kit.root.trace("on")
    open(path, "w").close()
    verdicts = [AlienVerdict.ALLOW, None, AlienVerdict.DENY]     # before, after, before
    while True:
        msg = kit.collect(0xA11E)
        if msg.proto == Proto.EXCEPTION:
            break                                                # its exit notice
        v = verdicts.pop(0) if verdicts else AlienVerdict.ALLOW
        if msg.reply:
            kit.root.reply(msg.reply, proto=v if v is not None else 0)
    assert proc.wait(20) == 0, "the first call allowed, the second denied"
    kit.root.trace("off")
    events = drain(kit.root)
    reports = [(e["phase"], e["call"]) for e in events if e["ev"] == "alien"]
    assert reports[:3] == [("before", "FACTORY_INFO"), ("after", "FACTORY_INFO"),
                           ("before", "FACTORY_INFO")], reports
    assert ("before", "EXIT") in reports
    evs = validate(to_chrome(events))
    marks = [e["name"] for e in evs if e["ph"] == "i" and e["pid"] == proc.task_id
             and e["name"].startswith("alien ")]
    assert marks[:3] == ["alien FACTORY_INFO before", "alien FACTORY_INFO after",
                         "alien FACTORY_INFO before"], marks
    root = next(e["pid"] for e in evs if e["name"] == "process_name"
                and e["args"]["name"].startswith("root "))
    served = [e for e in evs if e["ph"] == "X" and e["name"] == "serve kernel (alien)"]
    assert len(served) >= 3 and {e["pid"] for e in served} == {root}, "root handles them"
    assert any(e["ph"] == "i" and e["pid"] == proc.task_id and e["name"] == "DENIED"
               for e in evs), "the denied call's error"
