"""The live capability graph of a running system — which task holds which capability to which
kernel object, with which rights, derived from whom; which threads each task has, which gates
they serve, who pages them and handles their exceptions, which IRQs they take, and whose
memory they map. `launcher/graph.py` draws it (`l4run graph`, `l4run caps`).

The launcher (`Launcher.cmd_caps`) answers KERNEL_INFO's task rows (kernel/ABI.md): `caps`
(`[slot, type, id, rights, label, parent_task, parent_slot]` per slot), `links` (`[thread,
pager, handler, alien]` per thread), `served` (`[gate, label, thread]`), `irqs` (`[irq, label,
thread]`) and `maps` (`[vaddr, pages, rights, from_task]` runs of its page table). `graph`
turns them into {"tasks": [{id, name, caps: [{slot, type, object, rights, label, parent}],
threads: [{id, pager, handler, alien}], serves: [{gate, label, thread}], irqs: [{irq, label,
thread}], maps: [{vaddr, pages, rights, from}]}], "edges": [{from, to, kind, ...}]} with
edges of these kinds (`KINDS`):

- `holds`: task → object, a capability it holds (`slot`, `rights`);
- `derived`: task → task, the capability in slot `slot` of the second was derived (or mapped)
  from the one in `from_slot` of the first — the mapping database's tree: revoking a
  capability removes every capability below it (`revokes`); the first may be the second;
- `thread`: task → thread, a live thread of the task (`alien`);
- `bound`: gate → task, the gate is bound to a thread of the task (`label`, `thread`);
- `pager`, `handler`: task → task, a thread (`thread`) of the first is paged / has its
  exceptions handled through a gate (`gate`) served by the second (→ the gate itself when it
  is bound to no thread);
- `irq`: irq → task, the IRQ is attached to a thread of the task (`label`, `thread`);
- `maps`: task → task, pages the second maps from the first's mappings (`pages`, `runs`).

Nodes are named `type:id`: `task:`, `thread:`, `gate:`, `irq:`, `factory:`, `kernel:`.
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


KINDS = ("holds", "derived", "thread", "bound", "pager", "handler", "irq", "maps")


def label_text(label: int) -> str:
    """A gate's label as shown: decimal while small (an image's labels), hex when it packs
    fields (moe's session labels are 1 << 40 and up)."""
    return str(label) if label < 0x10000 else hex(label)


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
            if parent is not None:
                edges.append({"from": f"task:{ptask}", "to": f"task:{row['id']}",
                              "kind": "derived", "from_slot": pslot, "slot": slot})
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


def children(g: dict[str, Any]) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """(task, slot) -> the (task, slot)s whose capabilities were derived from it directly."""
    out: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for t in g["tasks"]:
        for c in t["caps"]:
            if c["parent"] is not None:
                key = (c["parent"]["task"], c["parent"]["slot"])
                out.setdefault(key, []).append((t["id"], c["slot"]))
    return out


def revokes(g: dict[str, Any], task: int, slot: int) -> list[tuple[int, int]]:
    """What revoking the capability in `slot` of `task` removes: its descendants, depth first."""
    below = children(g)
    out: list[tuple[int, int]] = []

    def walk(key: tuple[int, int]) -> None:
        for child in below.get(key, []):
            out.append(child)
            walk(child)
    walk((task, slot))
    return out


def _links(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The bound, pager, handler, irq and maps edges of the graph's tasks."""
    server = {s["gate"]: t["id"] for t in tasks for s in t["serves"]}
    edges: list[dict[str, Any]] = []
    for t in tasks:
        me = f"task:{t['id']}"
        edges += [{"from": me, "to": f"thread:{th['id']}", "kind": "thread",
                   "alien": th["alien"]} for th in t["threads"]]
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


def text(g: dict[str, Any]) -> str:
    names = {t["id"]: t["name"] for t in g["tasks"]}
    out = []
    for t in g["tasks"]:
        out.append(f"{t['name']} (task {t['id']})")
        for c in t["caps"]:
            label = f" label {label_text(c['label'])}" if c["label"] is not None else ""
            p = c["parent"]
            src = (f"  ← {names.get(p['task'], p['task'])} slot {p['slot']}" if p else "")
            out.append(f"  {c['slot']:>5}  {c['type']} {c['object']}{label}  "
                       f"{rights_text(c['rights'])}{src}")
        out += _text_links(t, g["edges"], names)
    return "\n".join(out + _text_tree(g, names))


def _text_tree(g: dict[str, Any], names: dict[int, str]) -> list[str]:
    """The mapping database's tree below every original capability that has descendants."""
    below = children(g)
    cap = {(t["id"], c["slot"]): c for t in g["tasks"] for c in t["caps"]}

    def line(key: tuple[int, int], depth: int) -> list[str]:
        c = cap.get(key)
        what = (f"  {c['type']} {c['object']}"
                + (f" label {label_text(c['label'])}" if c["label"] is not None else "")
                + f"  {rights_text(c['rights'])}") if c else ""
        mark = "└ " if depth else ""
        lines = [f"  {'  ' * depth}{mark}{names.get(key[0], key[0])} slot {key[1]}{what}"]
        for child in below.get(key, []):
            lines += line(child, depth + 1)
        return lines
    roots = [k for k in below if cap.get(k) is None or cap[k]["parent"] is None]
    if not roots:
        return []
    out = ["derivation tree (revoking a capability removes everything below it):"]
    for key in sorted(roots):
        out += line(key, 0)
    return out


def _text_links(t: dict[str, Any], edges: list[dict[str, Any]], names: dict[int, str]) -> list[str]:
    def who(node: str) -> str:
        kind, _, ident = node.partition(":")
        return names.get(int(ident), node) if kind == "task" else node
    me = f"task:{t['id']}"
    out = [f"  thread {th['id']}" + (" (alien)" if th["alien"] else "") for th in t["threads"]]
    out += [f"  serves gate {s['gate']} label {label_text(s['label'])} on thread {s['thread']}"
           for s in t["serves"]]
    out += [f"  thread {e['thread']}: {e['kind']} {who(e['to'])} (gate {e['gate']})"
            for e in edges if e["from"] == me and e["kind"] in ("pager", "handler")]
    out += [f"  irq {i['irq']} label {label_text(i['label'])} → thread {i['thread']}" for i in t["irqs"]]
    out += [f"  maps 0x{m['vaddr']:x} +{m['pages']} pages {m['rights']}"
            + (f" from {names.get(m['from'], m['from'])}" if m["from"] is not None else "")
            for m in t["maps"]]
    return out
