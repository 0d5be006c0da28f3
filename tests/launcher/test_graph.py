"""`l4run graph` on a booted configs/minimal.toml: the graph has exactly the edges the image
makes (every holds, derived, thread, bound and handler edge, by name); the dot has the JSON's
edges one for one; the SVG is well-formed XML naming every task; the text shows the
derivation tree; without Graphviz's `dot` the SVG is refused naming the program; `l4run caps`
answers the same graph."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter

import pytest

from kernel.user.testing import PROJECT_ROOT

from .helpers import l4run

MINIMAL = os.path.join(PROJECT_ROOT, "configs", "minimal.toml")
EDGE_RE = re.compile(r'^\s*"([^"]+)"(?::\w+)*\s*->\s*"([^"]+)"(?::\w+)*\s*\[class="(\w+)"')


def expected_edges(g: dict) -> Counter:
    """The minimal image's edges from what it declares: root (the launcher's task) holds every
    task's task and thread capabilities, its exception-handler gate (label 1) and one name-lookup
    gate per task (label ≥ 1000), all served by its second thread; hello serves its service gate
    (held by root, derived to client with label 1); every task holds itself, its main thread
    and its factory; hello's and client's exceptions go to root."""
    by = {t["name"]: t for t in g["tasks"]}
    assert set(by) == {"root", "hello", "client"}, set(by)
    task = {n: f"task:{t['id']}" for n, t in by.items()}
    slot = {n: {c["slot"]: f"{c['type']}:{c['object']}" for c in t["caps"]} for n, t in by.items()}
    served = {n: {s["label"]: f"gate:{s['gate']}" for s in t["serves"]} for n, t in by.items()}
    threads = {n: [f"thread:{th['id']}" for th in t["threads"]] for n, t in by.items()}
    assert len(threads["root"]) == 2 and len(threads["hello"]) == len(threads["client"]) == 1
    handler, service = served["root"][1], served["hello"][1]
    lookup = {label: gate for label, gate in served["root"].items() if label >= 1000}
    assert set(served["root"]) == {1, *lookup} and len(lookup) == 2 and set(served["hello"]) == {1}
    want: Counter = Counter()
    for n in by:
        want[("holds", task[n], task[n])] += 1
        want[("holds", task[n], threads[n][0])] += 1
        want[("holds", task[n], slot[n][3])] += 1
        assert slot[n][3].startswith("factory:")
        want.update(("thread", task[n], th) for th in threads[n])
    want.update(("holds", task["root"], x) for x in
                [handler, service, threads["root"][1], *lookup.values(), slot["root"][4]]
                + [task["hello"], threads["hello"][0], task["client"], threads["client"][0]])
    assert slot["root"][4].startswith("kernel:")
    mine = {n: next(g_ for g_ in lookup.values() if g_ in slot[n].values())
            for n in ("hello", "client")}
    assert mine["hello"] != mine["client"]
    for n, gates in (("hello", [mine["hello"]]), ("client", [service, mine["client"]])):
        want.update(("holds", task[n], x) for x in gates)
        want.update(("derived", task["root"], task[n]) for _ in gates)
        want[("handler", task[n], task["root"])] += 1
    want.update(("bound", gate, task["root"]) for gate in served["root"].values())
    want[("bound", service, task["hello"])] += 1
    return want


def test_graph_of_the_minimal_image(tmp_path):
    rd = str(tmp_path / "run")
    l4run("boot", MINIMAL, "--detach", "--run-dir", rd)
    try:
        g = json.loads(l4run("graph", "--format", "json", "--run-dir", rd).stdout)
        edges = Counter((e["kind"], e["from"], e["to"]) for e in g["edges"])
        assert edges == expected_edges(g), edges
        by = {t["name"]: t for t in g["tasks"]}
        root_caps = {c["slot"]: c for c in by["root"]["caps"]}
        for n in ("hello", "client"):       # derived edges name both slots; rights narrowed
            for c in (c for c in by[n]["caps"] if c["parent"] is not None):
                assert c["parent"]["task"] == by["root"]["id"] and c["rights"] == 1   # invoke
                assert root_caps[c["parent"]["slot"]]["object"] == c["object"]
                assert {"kind": "derived", "from": f"task:{by['root']['id']}",
                        "to": f"task:{by[n]['id']}", "from_slot": c["parent"]["slot"],
                        "slot": c["slot"]} in g["edges"]

        d = l4run("graph", "--format", "dot", "-o", str(tmp_path / "g.dot"), "--run-dir", rd)
        assert d.stdout == ""
        dot_text = open(tmp_path / "g.dot").read()
        assert dot_text.startswith("digraph caps {")
        drawn = [m.groups() for m in map(EDGE_RE.match, dot_text.splitlines()) if m]
        assert [(k, f, t) for f, t, k in drawn] == [(e["kind"], e["from"], e["to"])
                                                   for e in g["edges"]]
        assert l4run("caps", "--dot", "--run-dir", rd).stdout == dot_text
        assert json.loads(l4run("caps", "--json", "--run-dir", rd).stdout) == g

        listing = l4run("graph", "--run-dir", rd).stdout
        assert "derivation tree" in listing and "└ client slot" in listing
        assert listing == l4run("caps", "--run-dir", rd).stdout

        missing = subprocess.run([sys.executable, "-m", "launcher", "graph", "--format", "svg",
                                  "--run-dir", rd], cwd=PROJECT_ROOT, capture_output=True,
                                 text=True, timeout=60, env={**os.environ, "PATH": "/nonexistent"})
        assert missing.returncode == 1 and "Graphviz's `dot` program" in missing.stderr
        assert "apt-get install graphviz" in missing.stderr and missing.stdout == ""
        if shutil.which("dot") is None:
            pytest.skip("Graphviz's dot is not installed (apt-get install graphviz)")
        svg = l4run("graph", "--format", "svg", "--run-dir", rd).stdout
        root = ET.fromstring(svg)
        assert root.tag.endswith("svg")
        words = " ".join(t for el in root.iter() if el.tag.endswith("text") for t in el.itertext())
        assert {"root", "hello", "client"} <= set(words.split()), words
        classes = Counter(el.get("class") for el in root.iter() if el.tag.endswith("g"))
        kinds = Counter(e["kind"] for e in g["edges"])
        assert {k: classes[f"edge {k}"] for k in kinds} == dict(kinds), classes

    finally:
        l4run("down", "--run-dir", rd, check=False)
