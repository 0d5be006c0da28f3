"""A Chrome trace-event file drawn as an SVG timeline — a picture of what Perfetto's UI shows,
made without it (`l4run trace --svg FILE`; `python -m launcher.timeline TRACE.json OUT.svg`).

Input: the object form `launcher/trace.py` writes (`traceEvents`; `M` metadata names the
tracks). Output: one SVG document —

- one row per track (a task's thread, or one lane of it), labelled with the task's and the
  thread's names, tracks of one task together, tasks and a task's threads in the order
  they first appear;
- each complete slice (`X`) a box at its time and duration, nested slices one level lower
  within their row, named by the slice's name where it fits (and in its tooltip, `<title>`,
  with its duration); errors and deaths (`→ ERROR`, `(died)`) in red;
- each instant (`i`) a small tick at the top of its row;
- each flow (`s` → `f` with the same id) an arrow from the start's track to the finish's,
  at the height of the innermost slice there;
- a time axis in µs or ms from the first event.

Contract: reads the trace, never changes it; the same trace gives the same SVG (no clock, no
randomness). Text is XML-escaped. A trace with no timed events gives a picture saying so.
"""
from __future__ import annotations

import json
import sys
from typing import Any
from xml.sax.saxutils import escape

WIDTH = 1200            # px, the whole picture
LABEL_W = 230           # px, the track names
ROW_H = 18              # px, one nesting level of a row
GAP = 6                 # px between rows
TOP = 44                # px above the first row: the title and the time axis
CHAR_W = 6.1            # px per character at the 10 px monospace font
COLORS = {"call": "#7aa6d8", "serve": "#8cc58c", "page fault": "#e0b85c", "send": "#b59ad6"}
ERROR = "#e07a7a"


def _tracks(evs: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """The tracks with timed events: tasks in the order they first appear (a call chain
    reads top down), a task's threads by id."""
    first: dict[Any, float] = {}          # task id, or (task, thread) -> its first event
    for e in evs:
        if e["ph"] in ("X", "i", "s", "f"):
            for key in (e["pid"], (e["pid"], e["tid"])):
                first[key] = min(first.get(key, e["ts"]), e["ts"])
    tracks = [k for k in first if isinstance(k, tuple)]
    return sorted(tracks, key=lambda t: (first[t[0]], t[0], first[t], t[1]))


def _names(evs: list[dict[str, Any]]) -> tuple[dict[int, str], dict[tuple[int, int], str]]:
    procs = {e["pid"]: e["args"]["name"] for e in evs
             if e["ph"] == "M" and e["name"] == "process_name"}
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in evs
               if e["ph"] == "M" and e["name"] == "thread_name"}
    return procs, threads


def _depths(slices: list[dict[str, Any]]) -> list[tuple[dict[str, Any], int]]:
    """Each slice of one track with its nesting depth (0: outermost)."""
    out: list[tuple[dict[str, Any], int]] = []
    stack: list[float] = []              # end times of the open slices
    for s in sorted(slices, key=lambda s: (s["ts"], -s["dur"])):
        while stack and stack[-1] <= s["ts"]:
            stack.pop()
        out.append((s, len(stack)))
        stack.append(s["ts"] + s["dur"])
    return out


def _color(name: str) -> str:
    if "→ " in name and name.rsplit("→ ", 1)[1].isupper() or "(died)" in name:
        return ERROR
    for prefix, color in COLORS.items():
        if name.startswith(prefix):
            return color
    return "#c8c8c8"


def _ticks(span: float, width: float) -> tuple[float, float, str]:
    """(step in µs, divisor, unit) for about one tick per 100 px."""
    raw = span / max(1.0, width / 100)
    step = 1.0
    while step * 10 <= raw:
        step *= 10
    step *= next((m for m in (1, 2, 5) if step * m >= raw), 10)
    return (step, 1000.0, "ms") if step >= 1000 else (step, 1.0, "µs")


class _Picture:
    def __init__(self, evs: list[dict[str, Any]]) -> None:
        timed = [e for e in evs if e["ph"] in ("X", "i", "s", "f")]
        self.t0 = min((e["ts"] for e in timed), default=0.0)
        t1 = max((e["ts"] + e.get("dur", 0) for e in timed), default=0.0)
        self.span = max(t1 - self.t0, 1e-3)
        self.scale = (WIDTH - LABEL_W - 20) / self.span
        self.procs, self.threads = _names(evs)
        self.rows: dict[tuple[int, int], tuple[float, int]] = {}    # track -> (y, levels)
        self.levels: dict[tuple[int, int], list[tuple[dict[str, Any], int]]] = {}
        y = float(TOP)
        for track in _tracks(evs):
            placed = _depths([e for e in evs if e["ph"] == "X" and (e["pid"], e["tid"]) == track])
            self.levels[track] = placed
            n = 1 + max((d for _, d in placed), default=0)
            self.rows[track] = (y, n)
            y += n * ROW_H + GAP
        self.height = int(y + 10)
        self.out: list[str] = []

    def x(self, ts: float) -> float:
        return LABEL_W + (ts - self.t0) * self.scale

    def at(self, track: tuple[int, int], ts: float) -> float:
        """The y of the innermost slice of `track` open at `ts` (its row's top level if none)."""
        y, _ = self.rows[track]
        depth = max((d for s, d in self.levels[track] if s["ts"] - 1e-3 <= ts
                     <= s["ts"] + s["dur"] + 1e-3), default=0)
        return y + depth * ROW_H + ROW_H / 2

    def axis(self, title: str) -> None:
        step, div, unit = _ticks(self.span, WIDTH - LABEL_W - 20)
        self.out.append(f'<text x="8" y="16" class="title">{escape(title)}</text>')
        t, bottom = 0.0, self.height - 10
        while t <= self.span + 1e-9:
            x = self.x(self.t0 + t)
            self.out.append(f'<line x1="{x:.1f}" y1="30" x2="{x:.1f}" y2="{bottom}" '
                            f'class="grid"/><text x="{x + 2:.1f}" y="38">'
                            f'{t / div:g} {unit}</text>')
            t += step

    def row(self, track: tuple[int, int]) -> None:
        y, n = self.rows[track]
        pid, tid = track
        proc = self.procs.get(pid, f"task {pid}")
        label = f"{proc} · {self.threads.get(track, f'thread {tid}')}"
        self.out.append(f'<rect x="0" y="{y - 2:.1f}" width="{WIDTH}" height="{n * ROW_H + 4}" '
                        f'class="band"/><text x="6" y="{y + 12:.1f}">{escape(label)}</text>')
        for s, depth in self.levels[track]:
            x, w = self.x(s["ts"]), max(s["dur"] * self.scale, 1.0)
            top = y + depth * ROW_H
            name = s["name"]
            fits = int((w - 4) / CHAR_W)
            shown = name if len(name) <= fits else (name[:fits - 1] + "…" if fits > 3 else "")
            self.out.append(
                f'<g><title>{escape(name)} ({s["dur"]:.1f} µs)</title>'
                f'<rect x="{x:.1f}" y="{top + 1:.1f}" width="{w:.1f}" height="{ROW_H - 2}" '
                f'fill="{_color(name)}" class="slice"/>'
                + (f'<text x="{x + 2:.1f}" y="{top + 13:.1f}">{escape(shown)}</text>'
                   if shown else "") + "</g>")

    def instants(self, evs: list[dict[str, Any]]) -> None:
        for e in evs:
            if e["ph"] == "i":
                x, (y, _) = self.x(e["ts"]), self.rows[(e["pid"], e["tid"])]
                self.out.append(f'<g><title>{escape(e["name"])}</title><path d="M{x - 3:.1f},'
                                f'{y - 1:.1f} h6 l-3,5 z" class="instant"/></g>')

    def flows(self, evs: list[dict[str, Any]]) -> None:
        starts = {e["id"]: e for e in evs if e["ph"] == "s"}
        for f in (e for e in evs if e["ph"] == "f" and e["id"] in starts):
            s = starts[f["id"]]
            x1, y1 = self.x(s["ts"]), self.at((s["pid"], s["tid"]), s["ts"])
            x2, y2 = self.x(f["ts"]), self.at((f["pid"], f["tid"]), f["ts"])
            self.out.append(f'<path d="M{x1:.1f},{y1:.1f} C{x1 + 12:.1f},{y1:.1f} '
                            f'{x2 - 12:.1f},{y2:.1f} {x2:.1f},{y2:.1f}" class="flow" '
                            f'marker-end="url(#arrow)"/>')


STYLE = ("text{font:10px monospace;fill:#222}.title{font:bold 12px monospace}"
         ".grid{stroke:#ddd;stroke-width:1}.band{fill:#f6f6f6}"
         ".slice{stroke:#555;stroke-width:.5}.instant{fill:#555}"
         ".flow{fill:none;stroke:#d04040;stroke-width:1.2;opacity:.8}")


def svg(trace: dict[str, Any], title: str = "l4run trace") -> str:
    """The trace as one SVG document (see the module docstring)."""
    evs = trace["traceEvents"]
    pic = _Picture(evs)
    if not pic.rows:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="40">'
                f'<text x="8" y="20">{escape(title)}: no events</text></svg>\n')
    calls = sum(1 for e in evs if e["ph"] == "X" and e["name"].startswith("call "))
    pic.axis(f"{title}: {len(pic.rows)} tracks, {calls} calls, {pic.span / 1000:.3f} ms")
    for track in pic.rows:
        pic.row(track)
    pic.instants(evs)
    pic.flows(evs)
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{pic.height}" '
            f'viewBox="0 0 {WIDTH} {pic.height}"><style>{STYLE}</style><defs>'
            '<marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#d04040"/>'
            f'</marker></defs><rect width="{WIDTH}" height="{pic.height}" fill="white"/>')
    return head + "\n".join(pic.out) + "\n</svg>\n"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m launcher.timeline TRACE.json OUT.svg", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        trace = json.load(f)
    with open(argv[1], "w", encoding="utf-8") as f:
        f.write(svg(trace))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
