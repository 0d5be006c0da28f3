"""What the trace tests check of a Chrome trace-event file (the format Perfetto's UI and
chrome://tracing load; their UI is not needed to check it):

- it is JSON (it survives a dump and a load) in the object form, `traceEvents` a list;
- every event has `ph`, `pid`, `tid`, `name`, and `ts` (µs) unless it is metadata (`M`); a
  complete slice (`X`) has `dur` ≥ 0; an instant (`i`) a scope `s`; flows (`s` → `f`) pair
  by `id`, each id starting once and finishing once, never before it starts;
- every track an event is on is named by `process_name` / `thread_name` metadata;
- the slices of one track nest: two either are disjoint or one holds the other (Perfetto
  draws a track's slices as a stack and breaks on partial overlaps).
"""
from __future__ import annotations

import json
from typing import Any

PHASES = {"X", "s", "f", "i", "M"}
EPS = 1e-3          # µs: timestamps are ns / 1000, compared as floats


def validate(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """Check `trace` (see the module docstring); answers its events."""
    trace = json.loads(json.dumps(trace))
    evs = trace["traceEvents"]
    assert isinstance(evs, list)
    for e in evs:
        assert {"ph", "pid", "tid", "name"} <= set(e), e
        assert e["ph"] in PHASES, e
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int) and e["name"], e
        if e["ph"] != "M":
            assert isinstance(e["ts"], (int, float)), e
        if e["ph"] == "X":
            assert e["dur"] >= 0, e
        if e["ph"] == "i":
            assert e["s"] in ("t", "p", "g"), e
    starts = {e["id"]: e for e in evs if e["ph"] == "s"}
    ends = {e["id"]: e for e in evs if e["ph"] == "f"}
    assert len(starts) == sum(e["ph"] == "s" for e in evs), "a flow id starts twice"
    assert len(ends) == sum(e["ph"] == "f" for e in evs), "a flow id finishes twice"
    assert set(starts) == set(ends), "every flow starts and finishes"
    assert all(ends[i]["ts"] >= starts[i]["ts"] - EPS for i in starts), "a flow runs backwards"
    names = {(e["pid"], e["tid"]) for e in evs if e["ph"] == "M" and e["name"] == "thread_name"}
    procs = {e["pid"] for e in evs if e["ph"] == "M" and e["name"] == "process_name"}
    for e in evs:
        if e["ph"] != "M":
            assert (e["pid"], e["tid"]) in names and e["pid"] in procs, f"unnamed track: {e}"
    for track, slices in tracks(evs).items():
        stack: list[float] = []                  # end times of the open slices
        for s in slices:
            while stack and stack[-1] <= s["ts"] + EPS:
                stack.pop()
            end = s["ts"] + s["dur"]
            assert not stack or end <= stack[-1] + EPS, f"slices overlap on {track}: {s}"
            stack.append(end)
    return evs


def tracks(evs: list[dict[str, Any]]) -> dict[tuple[int, int], list[dict[str, Any]]]:
    """The complete slices of each (pid, tid) track, by start (an outer slice first)."""
    out: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for e in evs:
        if e["ph"] == "X":
            out.setdefault((e["pid"], e["tid"]), []).append(e)
    for v in out.values():
        v.sort(key=lambda s: (s["ts"], -s["dur"]))
    return out


def inside(inner: dict[str, Any], outer: dict[str, Any]) -> bool:
    """Slice `inner` lies within slice `outer` in time."""
    return (outer["ts"] - EPS <= inner["ts"]
            and inner["ts"] + inner["dur"] <= outer["ts"] + outer["dur"] + EPS)


def flows(evs: list[dict[str, Any]]) -> list[tuple[tuple[int, int], float, tuple[int, int], float]]:
    """Each flow as (from track, at, to track, at), in the order they start."""
    ends = {e["id"]: e for e in evs if e["ph"] == "f"}
    out = [((s["pid"], s["tid"]), s["ts"], (ends[s["id"]]["pid"], ends[s["id"]]["tid"]),
            ends[s["id"]]["ts"]) for s in evs if s["ph"] == "s"]
    return sorted(out, key=lambda f: f[1])
