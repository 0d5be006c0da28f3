"""`l4run trace --svg` on a booted call chain A → B → C (docs/img/chain.toml, A started again
while tracing): the timeline is well-formed SVG with one row per track, A's above B's above
C's; a box per slice, titled with its name and duration; an arrow per flow, each leaving from
inside a box of its source row and landing inside one of its target row; the same trace
always gives the same picture."""
from __future__ import annotations

import pytest

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

from kernel.user.testing import PROJECT_ROOT
from launcher.timeline import svg
from tests.trace.chrome import validate

from .helpers import l4run, ps, wait_for

CHAIN = os.path.join(PROJECT_ROOT, "docs", "img", "chain.toml")
NS = "{http://www.w3.org/2000/svg}"
PATH_RE = re.compile(r"M([\d.]+),([\d.]+) C[\d.,\s]+ ([\d.]+),([\d.]+)$")


def record_chain(rd: str, out: str, pic: str) -> dict:
    p = subprocess.Popen([sys.executable, "-m", "launcher", "trace", "--duration", "4",
                          "--tasks", "A,B,C", "-o", out, "--svg", pic, "--run-dir", rd],
                         cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        from launcher import control
        wait_for(lambda: control.request(rd, "trace", action="status")["on"], 20, "tracing")
        l4run("start", "A", "--no-wait", "--run-dir", rd)   # its three calls, then it exits
        stdout, stderr = p.communicate(timeout=60)          # the 4 s recording ends
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0 and f"{pic}: the timeline" in stdout, (stdout, stderr)
    with open(out) as f:
        return json.load(f)


def boxes(root: ET.Element) -> list[tuple[float, float, float, float, str]]:
    """(x, y, width, height, title) of every slice box."""
    out = []
    for g in root.iter(f"{NS}g"):
        rect, title = g.find(f"{NS}rect"), g.find(f"{NS}title")
        if rect is not None and rect.get("class") == "slice":
            out.append((*(float(rect.get(k)) for k in ("x", "y", "width", "height")),
                        title.text))
    return out


@pytest.mark.slow      # timing-bound (seconds of waiting): L4PY_SLOW=1 runs it
def test_trace_svg_of_a_call_chain(tmp_path):
    rd = str(tmp_path / "run")
    l4run("boot", CHAIN, "--detach", "--run-dir", rd)
    try:
        wait_for(lambda: ps(rd)["A"]["state"] == "exited", 30, "A's first three calls")
        trace = record_chain(rd, str(tmp_path / "t.json"), str(tmp_path / "t.svg"))
    finally:
        l4run("down", "--run-dir", rd, check=False)
    evs = validate(trace)
    text = open(tmp_path / "t.svg").read()
    assert text == svg(trace) == svg(json.loads(json.dumps(trace)))
    root = ET.fromstring(text)
    assert root.tag == f"{NS}svg"
    labels = [(float(t.get("y")), t.text) for t in root.iter(f"{NS}text")
              if t.text and " (task " in t.text]
    first = {n: min(y for y, t in labels if t.startswith(f"{n} (task ")) for n in "ABC"}
    assert first["A"] < first["B"] < first["C"], labels
    slices = [e for e in evs if e["ph"] == "X"]
    names = sorted(e["name"] for e in slices)
    assert names.count("call B label 20") == names.count("call C label 30") == 3, names
    got = boxes(root)
    assert sorted(b[4] for b in got) == sorted(f"{e['name']} ({e['dur']:.1f} µs)"
                                                for e in slices)
    flows = [p.get("d") for p in root.iter(f"{NS}path") if p.get("class") == "flow"]
    assert len(flows) == sum(e["ph"] == "f" for e in evs) == 12, flows
    for d in flows:
        x1, y1, x2, y2 = map(float, PATH_RE.match(d).groups())
        for x, y in ((x1, y1), (x2, y2)):
            assert any(bx - 0.2 <= x <= bx + bw + 0.2 and by <= y <= by + bh
                       for bx, by, bw, bh, _ in got), (d, x, y)


def test_an_empty_trace_is_a_picture_saying_so():
    root = ET.fromstring(svg({"traceEvents": []}))
    assert "no events" in "".join(root.itertext())
