"""`l4run caps` on a booted minimal image: the JSON graph names every task with its slots
(type, object, rights, label, derivation parent); the client's capability to hello is to
hello's gate with label 1, derived from root's; `--dot` is a Graphviz digraph."""
from __future__ import annotations

import json
import os

from kernel.user.testing import PROJECT_ROOT

from .helpers import l4run

MINIMAL = os.path.join(PROJECT_ROOT, "configs", "minimal.toml")


def test_caps_minimal(tmp_path):
    rd = str(tmp_path / "run")
    l4run("boot", MINIMAL, "--detach", "--run-dir", rd)
    try:
        g = json.loads(l4run("caps", "--json", "--run-dir", rd).stdout)
        by_name = {t["name"]: t for t in g["tasks"]}
        assert {"root", "hello", "client"} <= set(by_name)
        for t in g["tasks"]:
            for c in t["caps"]:
                assert set(c) == {"slot", "type", "object", "rights", "label", "parent"}
                assert c["parent"] is None or set(c["parent"]) == {"task", "slot"}
        gates = [c for c in by_name["client"]["caps"] if c["type"] == "gate" and c["label"] == 1]
        assert gates, by_name["client"]["caps"]
        root_id = by_name["root"]["id"]
        assert any(c["parent"] and c["parent"]["task"] == root_id for c in gates)
        assert any(e["kind"] == "derived" and e["to"] == f"task:{by_name['client']['id']}"
                   for e in g["edges"])
        assert any(e["kind"] == "holds" and e["from"] == f"task:{by_name['client']['id']}"
                   for e in g["edges"])
        d = l4run("caps", "--dot", "--run-dir", rd).stdout
        assert d.startswith("digraph caps {") and '"task:' in d and d.rstrip().endswith("}")
        assert "client" in l4run("caps", "--run-dir", rd).stdout
    finally:
        l4run("down", "--run-dir", rd, check=False)
