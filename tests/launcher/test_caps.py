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


def test_graph_of_a_known_system_has_exactly_its_links():
    """A pager p (paging from sigma0) and its client c with an exception handler at root, an
    IRQ attached to p: the thread, bound, pager, handler, irq and maps edges are exactly
    these."""
    from launcher.caps import graph, text
    from tests.memory.conftest import Mem
    m = Mem()
    try:
        handler = m.root.create_gate(55)                  # bound to root's main thread
        m.agent("p", mode="pager")
        m.agent("c", pager="p", handler=handler)
        m.ok("p", "alloc", order=13)                      # p maps 2 pages from sigma0
        assert len(m.ok("c", "read", addr=0x1000_0000, n=8)) == 8   # c maps 1 page from p
        irq = m.root.create_irq()
        m.root.irq_attach(irq, m.procs["p"].thread, 77)
        g = graph(m.root.kernel_info()["tasks"])
        listing = text(g)
    finally:
        m.close()
    ids = {t["name"]: t["id"] for t in g["tasks"]}
    tid = {t["name"]: t["threads"][0]["id"] for t in g["tasks"]}
    task = {n: f"task:{i}" for n, i in ids.items()}
    by_name = {t["name"]: t for t in g["tasks"]}
    gate = {n: {s["label"]: s["gate"] for s in by_name[n]["serves"]} for n in by_name}
    irq_id = by_name["p"]["irqs"][0]["irq"]
    links = sorted((e["kind"], e["from"], e["to"]) for e in g["edges"]
                   if e["kind"] not in ("holds", "derived"))
    want = sorted(
        [("bound", f"gate:{g_}", task[n]) for n in by_name for g_ in gate[n].values()]
        + [("thread", task[n], f"thread:{th['id']}") for n in by_name
           for th in by_name[n]["threads"]]
        + [("pager", task["c"], task["p"]), ("handler", task["c"], task["root"]),
           ("irq", f"irq:{irq_id}", task["p"]),
           ("maps", task["sigma0"], task["p"]), ("maps", task["p"], task["c"])])
    assert links == want, links
    assert gate["root"] == {55: next(s["gate"] for s in by_name["root"]["serves"])}
    assert by_name["c"]["threads"] == [{"id": tid["c"], "pager": gate["p"][max(gate["p"])],
                                        "handler": gate["root"][55], "alien": False}]
    assert by_name["p"]["irqs"] == [{"irq": irq_id, "label": 77, "thread": tid["p"]}]
    assert by_name["c"]["maps"] == [{"vaddr": 0x1000_0000, "pages": 1, "rights": "rw-",
                                     "from": ids["p"]}]
    assert [m_["pages"] for m_ in by_name["p"]["maps"]] == [2]
    maps = {(e["from"], e["to"]): e["pages"] for e in g["edges"] if e["kind"] == "maps"}
    assert maps == {(task["sigma0"], task["p"]): 2, (task["p"], task["c"]): 1}
    assert "thread %d: pager p" % tid["c"] in listing and "irq %d label 77" % irq_id in listing


def test_caps_of_the_memory_image_show_pagers_and_maps(tmp_path):
    """configs/memory.toml: moe pages reader and writer (their threads' pager edges lead to
    moe) and the writer's dataspace pages are mapped from moe; --dot draws those edges."""
    rd = str(tmp_path / "run")
    l4run("boot", os.path.join(PROJECT_ROOT, "configs", "memory.toml"), "--detach",
          "--run-dir", rd)
    try:
        from .helpers import wait_for

        def links() -> dict:
            g = json.loads(l4run("caps", "--json", "--run-dir", rd).stdout)
            ids = {t["id"]: t["name"] for t in g["tasks"]}
            return {(e["kind"], ids.get(int(e["from"].split(":")[1]), e["from"]),
                     ids.get(int(e["to"].split(":")[1]), e["to"]))
                    for e in g["edges"] if e["kind"] in ("pager", "maps")
                    and e["from"].startswith("task:") and e["to"].startswith("task:")}
        wait_for(lambda: {("pager", "reader", "moe"), ("pager", "writer", "moe"),
                          ("maps", "moe", "writer")} <= links(), 60,
                 "the writer to fill its dataspace through moe")
        d = l4run("caps", "--dot", "--run-dir", rd).stdout
        assert "pager of thread" in d and "color=darkgreen" in d
    finally:
        l4run("down", "--run-dir", rd, check=False)
