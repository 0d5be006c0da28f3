"""`l4run caps`: the live capability graph — which task holds which capability to which
kernel object, with which rights, derived from whom.

    l4run caps [--json] [--dot] [--run-dir DIR]

The launcher (`Launcher.cmd_caps`) answers KERNEL_INFO's task rows with their `caps`
(kernel/ABI.md: `[slot, type, id, rights, label, parent_task, parent_slot]` per slot);
`graph` turns them into {"tasks": [{id, name, caps: [{slot, type, object, rights, label,
parent}]}], "edges": [{from, to, kind}]}: a `holds` edge from a task to each object it has a
capability to, a `derived` edge from the task a capability was derived (or mapped) from to
the task holding it. `--dot` writes the same graph for Graphviz (`dot -Tsvg`).
"""
from __future__ import annotations

import json
from typing import Any

from kernel.abi import Rights


def rights_text(r: int) -> str:
    names = [str(m.name).lower() for m in Rights if m.name not in ("NONE", "ALL") and r & m]
    return "+".join(names) if names else "none"


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
        tasks.append({"id": row["id"], "name": row["name"], "caps": caps})
    return {"tasks": tasks, "edges": edges}


def dot(g: dict[str, Any]) -> str:
    names = {f"task:{t['id']}": t["name"] for t in g["tasks"]}
    objects = {e["to"] for e in g["edges"] if e["kind"] == "holds" and e["to"] not in names}
    labels = {f"{c['type']}:{c['object']}": c["label"] for t in g["tasks"] for c in t["caps"]}
    lines = ["digraph caps {", "  rankdir=LR;", "  node [fontname=monospace];"]
    for key, name in sorted(names.items()):
        lines.append(f'  "{key}" [shape=box, label="{name}\\n{key}"];')
    for key in sorted(objects):
        extra = f"\\nlabel {labels[key]}" if labels.get(key) is not None else ""
        lines.append(f'  "{key}" [shape=ellipse, label="{key}{extra}"];')
    for e in g["edges"]:
        if e["kind"] == "holds":
            lines.append(f'  "{e["from"]}" -> "{e["to"]}" [label="{e["slot"]}: {e["rights"]}"];')
        else:
            lines.append(f'  "{e["from"]}" -> "{e["to"]}" [style=dashed, color=gray, '
                         f'label="derived (slot {e["slot"]})"];')
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
    return "\n".join(out)


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
