"""`l4run graph`: the live capability graph of a running system, drawn (`launcher/caps.py`
builds it from KERNEL_INFO's task rows; this module only renders it).

    l4run graph [--format text|dot|svg|json] [-o FILE] [--run-dir DIR]
    l4run caps [--json] [--dot] [--run-dir DIR]          (the same graph; text by default)

Formats:
- `text`: per task its slots (type, object, label, rights, parent), threads, served gates,
  pagers and handlers, IRQs and mapped pages, then the mapping database's derivation tree;
- `json`: the graph itself (`caps.graph`: tasks and edges);
- `dot`: the same for Graphviz: each task a cluster holding a table of its slots (one row per
  capability, its rights in the row) and its threads; every edge of the JSON is one edge of the
  dot (`class` names its kind, so the SVG's `<g class="edge KIND">` does too); holds and derived
  edges start at the slot's row, derived ones end at the derived capability's row;
- `svg`: the dot laid out by Graphviz's `dot` program; without it, `GraphvizMissing` says so.

Contract: rendering never changes the graph; the dot's edges are exactly the JSON's edges,
one for one, in the same order (tests/launcher/test_graph.py checks it).
"""
from __future__ import annotations

import html
import json
import shutil
import subprocess
from typing import Any

from . import caps

FORMATS = ("text", "dot", "svg", "json")

STYLE = {   # edge kind -> Graphviz attributes
    "holds": "", "derived": "style=dashed, color=gray50, constraint=false",
    "thread": "color=gray60, arrowhead=none", "bound": "style=dotted, color=purple",
    "pager": "color=blue", "handler": "color=red, style=dashed",
    "irq": "color=darkorange", "maps": "color=darkgreen, penwidth=2",
}
SHAPES = {"gate": "ellipse", "irq": "diamond", "factory": "house", "kernel": "octagon",
          "thread": "oval", "task": "box"}


class GraphvizMissing(RuntimeError):
    """The operator's machine lacks Graphviz's `dot` program (their setup, not the graph)."""


def _edge_label(e: dict[str, Any]) -> str:
    k = e["kind"]
    if k in ("pager", "handler"):
        return f"{k} of thread {e['thread']}"
    if k in ("bound", "irq"):
        return f"{k}, label {caps.label_text(e['label'])} → thread {e['thread']}"
    if k == "maps":
        return f"maps {e['pages']} pages"
    return ""      # holds and derived: the slot rows say it; thread: the cluster says it


def _slot_row(c: dict[str, Any]) -> str:
    label = f" label {caps.label_text(c['label'])}" if c["label"] is not None else ""
    text = f"{c['slot']}: {c['type']} {c['object']}{label}  {caps.rights_text(c['rights'])}"
    return f'<TR><TD PORT="s{c["slot"]}" ALIGN="LEFT">{html.escape(text)}</TD></TR>'


def _task_cluster(t: dict[str, Any]) -> list[str]:
    key = f"task:{t['id']}"
    head = f"<B>{html.escape(t['name'])}</B> (task {t['id']})"
    rows = "".join(_slot_row(c) for c in t["caps"])
    table = (f'<<TABLE BORDER="0" CELLBORDER="1" CELLSPACING="0" CELLPADDING="3">'
             f'<TR><TD PORT="h" BGCOLOR="lightblue">{head}</TD></TR>{rows}</TABLE>>')
    lines = [f'  subgraph "cluster_{key}" {{', "    style=rounded; color=gray70; label=\"\";",
             f'    "{key}" [shape=plaintext, label={table}];']
    lines += [f'    "thread:{th["id"]}" [shape=oval, label="thread {th["id"]}'
              + (' (alien)' if th["alien"] else "") + '"];' for th in t["threads"]]
    return lines + ["  }"]


def _object_labels(g: dict[str, Any]) -> dict[str, str]:
    """Node -> its gate label, from the capabilities that name it and the gates served."""
    labels = {f"{c['type']}:{c['object']}": c["label"] for t in g["tasks"] for c in t["caps"]
              if c["label"] is not None}
    labels.update({f"gate:{s['gate']}": s["label"] for t in g["tasks"] for s in t["serves"]})
    return {k: caps.label_text(v) for k, v in labels.items()}


def _end(node: str, slot: Any, ports: set[tuple[str, Any]], side: str) -> str:
    """An edge's end: the slot's row of a task's table where there is one, the table's head
    for the task itself, else the node."""
    if slot is not None and (node, slot) in ports:
        return f'"{node}":s{slot}:{side}'
    return f'"{node}":h' if (node, None) in ports else f'"{node}"'


def dot(g: dict[str, Any]) -> str:
    tasks = {f"task:{t['id']}" for t in g["tasks"]}
    inside = tasks | {f"thread:{th['id']}" for t in g["tasks"] for th in t["threads"]}
    objects = {x for e in g["edges"] for x in (e["from"], e["to"]) if x not in inside}
    labels = _object_labels(g)
    ports = {(f"task:{t['id']}", c["slot"]) for t in g["tasks"] for c in t["caps"]}
    ports |= {(f"task:{t['id']}", None) for t in g["tasks"]}
    lines = ["digraph caps {", "  rankdir=LR; compound=true; newrank=true;",
             "  node [fontname=monospace, fontsize=10];",
             "  edge [fontname=monospace, fontsize=9];"]
    for t in g["tasks"]:
        lines += _task_cluster(t)
    for key in sorted(objects):
        kind, _, ident = key.partition(":")
        extra = f"\\nlabel {labels[key]}" if key in labels else ""
        lines.append(f'  "{key}" [shape={SHAPES.get(kind, "ellipse")}, '
                     f'label="{kind} {ident}{extra}"];')
    for e in g["edges"]:
        src = _end(e["from"], e.get("from_slot") if e["kind"] == "derived" else
                   e["slot"] if e["kind"] == "holds" else None, ports, "e")
        dst = _end(e["to"], e["slot"] if e["kind"] == "derived" else None, ports, "w")
        attrs = f'class="{e["kind"]}"' + (f", {STYLE[e['kind']]}" if STYLE[e["kind"]] else "")
        label = _edge_label(e)
        attrs += f', label="{label}"' if label else ""
        lines.append(f"  {src} -> {dst} [{attrs}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def svg(dot_text: str) -> str:
    """`dot_text` laid out by Graphviz as SVG."""
    program = shutil.which("dot")
    if program is None:
        raise GraphvizMissing("--format svg needs Graphviz's `dot` program, which is not "
                              "installed (Debian: apt-get install graphviz); --format dot "
                              "writes the graph for it")
    p = subprocess.run([program, "-Tsvg"], input=dot_text, capture_output=True, text=True,
                       timeout=120)
    if p.returncode != 0:
        raise GraphvizMissing(f"dot -Tsvg failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def render(g: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(g, indent=1) + "\n"
    if fmt == "dot":
        return dot(g)
    if fmt == "svg":
        return svg(dot(g))
    return caps.text(g) + "\n"


def register(cli: Any, ask: Any, find_run_dir: Any, run_dir_option: Any) -> None:
    import click

    def emit(run_dir: str | None, fmt: str, out: str | None) -> None:
        from .cli import Fail
        g = caps.graph(ask(find_run_dir(run_dir), "caps")["tasks"])
        try:
            text = render(g, fmt)
        except GraphvizMissing as e:
            raise Fail(str(e)) from None
        if out is None:
            click.echo(text, nl=False)
            return
        with open(out, "w") as f:
            f.write(text)

    @cli.command("graph")
    @click.option("--format", "fmt", type=click.Choice(FORMATS), default="text",
                  show_default=True, help="how to draw it")
    @click.option("-o", "--output", "out", default=None, metavar="FILE",
                  help="write to FILE instead of stdout")
    @run_dir_option
    def graph_cmd(fmt: str, out: str | None, run_dir: str | None) -> None:
        """The live capability graph: tasks, threads, gates, IRQs, factories; who holds what
        with which rights, derived from whom; pagers, handlers and mapped memory."""
        emit(run_dir, fmt, out)

    @cli.command("caps")
    @click.option("--json", "as_json", is_flag=True, help="the graph as one JSON object")
    @click.option("--dot", "as_dot", is_flag=True, help="the graph for Graphviz")
    @run_dir_option
    def caps_cmd(as_json: bool, as_dot: bool, run_dir: str | None) -> None:
        """The capability graph (as `l4run graph`): who holds what, derived from whom."""
        emit(run_dir, "json" if as_json else "dot" if as_dot else "text", None)
