"""`l4run caps`: the live capability graph — which task holds which capability to which
kernel object, with which rights, derived from whom; which gates its threads serve, who pages
them and handles their exceptions, which IRQs they take, and whose memory they map.

    l4run caps [--json] [--dot] [--run-dir DIR]

The launcher (`Launcher.cmd_caps`) answers KERNEL_INFO's task rows (kernel/ABI.md): `caps`
(`[slot, type, id, rights, label, parent_task, parent_slot]` per slot), `links` (`[thread,
pager, handler, alien]` per thread), `served` (`[gate, label, thread]`), `irqs` (`[irq, label,
thread]`) and `maps` (`[vaddr, pages, rights, from_task]` runs of its page table). `graph`
turns them into {"tasks": [{id, name, caps: [{slot, type, object, rights, label, parent}],
threads: [{id, pager, handler, alien}], serves: [{gate, label, thread}], irqs: [{irq, label,
thread}], maps: [{vaddr, pages, rights, from}]}], "edges": [{from, to, kind, ...}]} with
edges of these kinds:

- `holds`: task → object, a capability it holds (`slot`, `rights`);
- `derived`: task → task, a capability derived (or mapped) from the first's (`slot`);
- `bound`: gate → task, the gate is bound to a thread of the task (`label`, `thread`);
- `pager`, `handler`: task → task, a thread (`thread`) of the first is paged / has its
  exceptions handled through a gate (`gate`) served by the second (→ the gate itself when it
  is bound to no thread);
- `irq`: irq → task, the IRQ is attached to a thread of the task (`label`, `thread`);
- `maps`: task → task, pages the second maps from the first's mappings (`pages`, `runs`).

`--dot` writes the same graph for Graphviz (`dot -Tsvg`).
"""
from __future__ import annotations

import json
from typing import Any

from kernel.abi import MemRights, Rights


def rights_text(r: int) -> str:
    names = [str(m.name).lower() for m in Rights if m.name not in ("NONE", "ALL") and r & m]
    return "+".join(names) if names else "none"


def mem_text(r: int) -> str:
    return "".join(c if r & m else "-" for c, m in (("r", MemRights.R), ("w", MemRights.W),
                                                       ("x", MemRights.X)))


def graph(rows: list[dict[str, Any]]) -> dict[str, Any]:
    tasks, edges = [], []
    for row in rows:
        caps = []
        for slot, kind, obj, rights, label, ptask, pslot in row.get("caps", []):
            parent = {"task": ptask, "slot": pslot} if ptask is not None else None
            caps.append({"slot": slot, "type": kind, "object": obj, "rights": rights,
                         "label": label, "parent": parent})
            edges.append({"from": f"task:{row['id']}", "to": f"{kind}:{obj}", "kind": "holds",
                          "slot": slot, "rights": rights_text(rights)})
            if parent is not None and ptask != row["id"]:
                edges.append({"from": f"task:{ptask}", "to": f"task:{row['id']}",
                              "kind": "derived", "slot": slot})
        tasks.append({"id": row["id"], "name": row["name"], "caps": caps,
                      "threads": [{"id": t, "pager": p, "handler": h, "alien": a}
                                  for t, p, h, a in row.get("links", [])],
                      "serves": [{"gate": g, "label": lb, "thread": t}
                                 for g, lb, t in row.get("served", [])],
                      "irqs": [{"irq": i, "label": lb, "thread": t}
                               for i, lb, t in row.get("irqs", [])],
                      "maps": [{"vaddr": v, "pages": n, "rights": mem_text(r), "from": f}
                               for v, n, r, f in row.get("maps", [])]})
    edges += _links(tasks)
    return {"tasks": tasks, "edges": edges}


def _links(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The bound, pager, handler, irq and maps edges of the graph's tasks."""
    server = {s["gate"]: t["id"] for t in tasks for s in t["serves"]}
    edges: list[dict[str, Any]] = []
    for t in tasks:
        me = f"task:{t['id']}"
        edges += [{"from": f"gate:{s['gate']}", "to": me, "kind": "bound", "label": s["label"],
                   "thread": s["thread"]} for s in t["serves"]]
        for th in t["threads"]:
            for kind in ("pager", "handler"):
                g = th[kind]
                if g is not None:
                    to = f"task:{server[g]}" if g in server else f"gate:{g}"
                    edges.append({"from": me, "to": to, "kind": kind, "thread": th["id"],
                                  "gate": g})
        edges += [{"from": f"irq:{i['irq']}", "to": me, "kind": "irq", "label": i["label"],
                   "thread": i["thread"]} for i in t["irqs"]]
        sources: dict[int, list[int]] = {}
        for m in t["maps"]:
            if m["from"] is not None and m["from"] != t["id"]:
                sources.setdefault(m["from"], []).append(m["pages"])
        edges += [{"from": f"task:{src}", "to": me, "kind": "maps", "pages": sum(runs),
                   "runs": len(runs)} for src, runs in sorted(sources.items())]
    return edges


STYLE = {   # edge kind -> Graphviz attributes (holds and derived are drawn as before)
    "bound": "style=dotted", "pager": "color=blue", "handler": "color=red, style=dashed",
    "irq": "color=darkorange", "maps": "color=darkgreen, penwidth=2",
}


def _edge_label(e: dict[str, Any]) -> str:
    k = e["kind"]
    if k == "holds":
        return f"{e['slot']}: {e['rights']}"
    if k == "derived":
        return f"derived (slot {e['slot']})"
    if k in ("pager", "handler"):
        return f"{k} of thread {e['thread']}"
    if k in ("bound", "irq"):
        return f"{'bound' if k == 'bound' else 'irq'}, label {e['label']} → thread {e['thread']}"
    return f"maps {e['pages']} pages"


def dot(g: dict[str, Any]) -> str:
    names = {f"task:{t['id']}": t["name"] for t in g["tasks"]}
    objects = {x for e in g["edges"] for x in (e["from"], e["to"]) if x not in names}
    labels = {f"{c['type']}:{c['object']}": c["label"] for t in g["tasks"] for c in t["caps"]}
    lines = ["digraph caps {", "  rankdir=LR;", "  node [fontname=monospace];"]
    for key, name in sorted(names.items()):
        lines.append(f'  "{key}" [shape=box, label="{name}\\n{key}"];')
    for key in sorted(objects):
        extra = f"\\nlabel {labels[key]}" if labels.get(key) is not None else ""
        shape = "diamond" if key.startswith("irq:") else "ellipse"
        lines.append(f'  "{key}" [shape={shape}, label="{key}{extra}"];')
    for e in g["edges"]:
        attrs = {"holds": "", "derived": "style=dashed, color=gray, "}.get(e["kind"])
        attrs = attrs if attrs is not None else STYLE[e["kind"]] + ", "
        lines.append(f'  "{e["from"]}" -> "{e["to"]}" [{attrs}label="{_edge_label(e)}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def text(g: dict[str, Any]) -> str:
    names = {t["id"]: t["name"] for t in g["tasks"]}
    out = []
    for t in g["tasks"]:
        out.append(f"{t['name']} (task {t['id']})")
        for c in t["caps"]:
            label = f" label {c['label']}" if c["label"] is not None else ""
            p = c["parent"]
            src = (f"  ← {names.get(p['task'], p['task'])} slot {p['slot']}" if p else "")
            out.append(f"  {c['slot']:>5}  {c['type']} {c['object']}{label}  "
                       f"{rights_text(c['rights'])}{src}")
        out += _text_links(t, g["edges"], names)
    return "\n".join(out)


def _text_links(t: dict[str, Any], edges: list[dict[str, Any]], names: dict[int, str]) -> list[str]:
    def who(node: str) -> str:
        kind, _, ident = node.partition(":")
        return names.get(int(ident), node) if kind == "task" else node
    me = f"task:{t['id']}"
    out = [f"  serves gate {s['gate']} label {s['label']} on thread {s['thread']}"
           for s in t["serves"]]
    out += [f"  thread {e['thread']}: {e['kind']} {who(e['to'])} (gate {e['gate']})"
            for e in edges if e["from"] == me and e["kind"] in ("pager", "handler")]
    out += [f"  irq {i['irq']} label {i['label']} → thread {i['thread']}" for i in t["irqs"]]
    out += [f"  maps 0x{m['vaddr']:x} +{m['pages']} pages {m['rights']}"
            + (f" from {names.get(m['from'], m['from'])}" if m["from"] is not None else "")
            for m in t["maps"]]
    return out


def register(cli: Any, ask: Any, find_run_dir: Any, run_dir_option: Any) -> None:
    import click

    @cli.command("caps")
    @click.option("--json", "as_json", is_flag=True, help="the graph as one JSON object")
    @click.option("--dot", "as_dot", is_flag=True, help="the graph for Graphviz")
    @run_dir_option
    def caps(as_json: bool, as_dot: bool, run_dir: str | None) -> None:
        """The capability graph: who holds what, with which rights, derived from whom."""
        g = graph(ask(find_run_dir(run_dir), "caps")["tasks"])
        click.echo(json.dumps(g, indent=1) if as_json else dot(g) if as_dot else text(g))
