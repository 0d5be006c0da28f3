"""`l4run tcb TASK [--json]`: a task's trusted computing base, from the live capability graph,
measured in lines of code, beside the same function's TCB in a monolithic arrangement.

    l4run tcb signer [--json] [--run-dir DIR]

Mechanism.
1. Who is in (`members`): the live graph (launcher/caps.py, from KERNEL_INFO) and the task
   table (`ps`). Starting from TASK, a component X brings in, transitively:
   - the task serving every gate X holds a capability to ("holds gate G of S": S answers
     X's calls, so X relies on what S says and does), and so on through what S relies on
     (Nitpicker -> fb, input -> io -> the HAL's devices);
   - the pager of each thread of X (it decides what X's memory holds), its exception
     handler (it decides what happens to X on a fault), every task X maps pages from (it
     can change or take them back);
   - every task holding a capability to X's task or threads (it can map into, unmap from,
     stop or kill X: root, and the server that maps X its buffers);
   - always the kernel, and root (the launcher: loader, supervisor, every task's parent).
   Root's own capabilities are not followed (ROOT_NOTE): it holds a gate of every server
   to start and supervise it, and takes their answers as claims, so a server is not in a
   task's TCB just because root can reach it. A capability without rights gives no power
   and is not followed either.
   IRQ objects are not followed: a holder can only wake X, not read or change it.
   Each member carries the reasons it is in (the first edges that brought it; every HAL
   device gate, named by the HAL's status: `hal.protocol.DEVICE_LABEL_BASE` + its index).
2. How big each one is (`measure`): the modules its process loads. A Python process's
   modules cannot be read from outside (/proc/PID/maps lists shared libraries only; .py
   files are read and closed), so each component's entry point is imported in a fresh
   interpreter and its `sys.modules` read back: for a task `kernel.user.task` (the task
   runtime) plus the module of its `run` and the modules its `run` function imports in its
   body (lazy imports such as the HAL's); `kernel.core.transport` for the kernel. Root
   (the lean root task, launcher/root.py, not the `l4run` CLI) is read from inside: its
   running process answers the control command `modules` with the files of its
   `sys.modules` — what it really holds, lazy imports included; a root that does not
   answer is measured by a fresh import of `launcher.root`. Counted: every source file of
   those modules inside the project and in site-packages (third-party: zmq, msgpack,
   cryptography...), as non-blank lines that are neither comments nor docstrings
   (`count_loc`, our own counter over tokenize and ast). Not counted, for both sides alike:
   the CPython interpreter and its standard library, and the host Linux kernel; compiled
   extension modules are reported as bytes (`binary_bytes`), not lines. A Linux process of
   the personality (busybox) has no Python entry: 0 lines, its binary not counted.
3. Monolithic: the same function deployed as one L⁴Linux-style system — everything the
   running image holds in one protection domain, as when the signer is a Linux program and
   the GUI, the drivers and the file system live in the same kernel: the union of the
   files of every component of the system (kernel, root, HAL, every task, the personality
   and all it holds), each file counted once. `reduction` = monolithic_loc / tcb_loc.

Measured (configs/nizza.toml, `l4run tcb signer`, 2026-12-02): TCB 19,077 lines (kernel
6,647, signer 6,438, Nitpicker 6,202, root 8,120, moe 4,779, fb 7,441, input 7,464, sigma0
4,533, io 4,533, HAL 5,225; each file once in the total) against monolithic 34,793: 1.82; before the
lean root, the font table and the trimmed imports it was 49,401 against 64,500 (1.31).
docs/NIZZA.md has the breakdown.

Contract: reads the system (three control requests) and never changes it; a TASK that is not
a task of the image (or root) is an error naming the tasks there are. Files are counted
once in each total (the task runtime shared by many processes is one body of code).
"""
from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
import sysconfig
import tokenize
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from kernel.user.spawn import PROJECT_ROOT

from hal.protocol import DEVICE_LABEL_BASE

from . import caps

KERNEL, ROOT, HAL = "kernel", "root", "hal"
TASK_RUNTIME = "kernel.user.task"
ENTRIES = {KERNEL: ["kernel.core.transport"], ROOT: ["launcher.root"]}
SITE = os.path.realpath(sysconfig.get_paths()["purelib"])
PLATSITE = os.path.realpath(sysconfig.get_paths()["platlib"])
IMPORT_S = 120
ROOT_NOTE = "root's own capabilities are not followed: it supervises every server"

# Run in a fresh interpreter: import the modules named in argv, print the files loaded.
_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as e:
        print("probe: import %s failed: %s" % (name, e), file=sys.stderr)
files = sorted({getattr(m, "__file__", None) or "" for m in list(sys.modules.values())} - {""})
print(json.dumps(files))
"""


class Member(NamedTuple):
    name: str
    why: list[str]


class TcbError(ValueError):
    """The operator named a task the system does not have."""


# ---------------------------------------------------------------------------
# 1. who is in

def _index(g: dict[str, Any]) -> tuple[dict[int, str], dict[int, int], dict[int, int]]:
    """task id -> name; gate -> serving task id; thread -> its task id."""
    names = {t["id"]: t["name"] for t in g["tasks"]}
    server = {s["gate"]: t["id"] for t in g["tasks"] for s in t["serves"]}
    owner = {th["id"]: t["id"] for t in g["tasks"] for th in t["threads"]}
    return names, server, owner


def _device(names: dict[int, str], s: int, label: int | None, devices: list[str]) -> str:
    """The HAL device behind a HAL gate label (DEVICE_LABEL_BASE + its index), or ''."""
    i = (label or 0) - DEVICE_LABEL_BASE
    return devices[i] if names[s] == HAL and 0 <= i < len(devices) else ""


def _relies_on(g: dict[str, Any], tid: int, devices: list[str]) -> list[tuple[int, str]]:
    """(task id, why) for every task task `tid` relies on directly."""
    names, server, _ = _index(g)
    me = next(t for t in g["tasks"] if t["id"] == tid)
    out: list[tuple[int, str]] = []
    for c in me["caps"]:
        if c["type"] == "gate" and c["object"] in server and server[c["object"]] != tid:
            s = server[c["object"]]
            label = f" label {caps.label_text(c['label'])}" if c["label"] is not None else ""
            dev = _device(names, s, c["label"], devices)
            out.append((s, f"{me['name']} holds gate {c['object']}{label}"
                           + (f" (device {dev})" if dev else "") + f", served by {names[s]}"))
    for e in g["edges"]:
        if e["from"] == f"task:{tid}" and e["kind"] in ("pager", "handler") \
                and str(e["to"]).startswith("task:"):
            s = int(e["to"].split(":")[1])
            what = "pager" if e["kind"] == "pager" else "exception handler"
            out.append((s, f"{names[s]} is the {what} of {me['name']}'s thread {e['thread']}"))
        if e["to"] == f"task:{tid}" and e["kind"] == "maps":
            s = int(e["from"].split(":")[1])
            out.append((s, f"{me['name']} maps {e['pages']} pages from {names[s]}"))
    mine = {tid} | {th["id"] for th in me["threads"]}
    for t in g["tasks"]:
        if t["id"] == tid:
            continue
        for c in t["caps"]:
            if c["type"] in ("task", "thread") and c["object"] in mine and c["rights"]:
                out.append((t["id"], f"{t['name']} holds a capability to {me['name']}'s "
                                     f"{c['type']} ({caps.rights_text(c['rights'])})"))
                break
    return out


def members(g: dict[str, Any], task: str, devices: list[str] | None = None) -> list[Member]:
    """TASK's TCB: the kernel, then every task it relies on, transitively, with reasons.
    `devices`: the HAL's device names in its order (a HAL gate's label names one)."""
    names, _, _ = _index(g)
    ids = {n: i for i, n in names.items()}
    if task not in ids:
        raise TcbError(f"no task {task!r} in the running system (tasks: "
                       f"{', '.join(sorted(ids))})")
    why: dict[int, list[str]] = {ids[task]: ["the task itself"]}
    order, todo = [ids[task]], [ids[task]]
    while todo:
        cur = todo.pop(0)
        if names[cur] == ROOT and cur != ids[task]:
            continue                     # root's own holdings: see ROOT_NOTE
        for s, reason in _relies_on(g, cur, devices or []):
            if s == ids[task]:
                continue                 # who relies on TASK is not in TASK's TCB
            if s not in why:
                why[s] = []
                order.append(s)
                todo.append(s)
            if reason not in why[s] and (len(why[s]) < 4 or "(device " in reason):
                why[s].append(reason)
    return [Member(KERNEL, ["every task's IPC, capabilities and address spaces"])] + [
        Member(names[i], why[i]) for i in order]


# ---------------------------------------------------------------------------
# 2. how big

def count_loc(path: str) -> int:
    """Non-blank lines of `path` that are neither comments nor docstrings (a bare string
    statement); a file that does not tokenize counts its non-blank non-# lines."""
    try:
        with open(path, "rb") as f:
            src = f.read()
    except OSError:
        return 0
    try:
        lines: set[int] = set()
        for tok in tokenize.tokenize(io.BytesIO(src).readline):
            if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT,
                            tokenize.DEDENT, tokenize.ENCODING, tokenize.ENDMARKER):
                continue
            lines.update(range(tok.start[0], tok.end[0] + 1))
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
                    and isinstance(node.value.value, str):
                lines.difference_update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        return len(lines)
    except (SyntaxError, tokenize.TokenError, ValueError):
        return sum(1 for ln in src.decode(errors="replace").splitlines()
                   if ln.strip() and not ln.lstrip().startswith("#"))


def _kind(path: str) -> str | None:
    """'project', 'third-party', or None (the standard library, the interpreter)."""
    real = os.path.realpath(path)
    if real.startswith(SITE + os.sep) or real.startswith(PLATSITE + os.sep):
        return "third-party"
    if real.startswith(os.path.realpath(PROJECT_ROOT) + os.sep):
        return "project"
    return None


def _source(path: str) -> str:
    return path[:-1] if path.endswith(".pyc") else path


def entry_modules(run: str) -> list[str]:
    """What a task whose `run` is MODULE:FUNC imports: the task runtime, MODULE, and the
    modules FUNC's body imports (lazy imports)."""
    mod, _, func = run.partition(":")
    out = [TASK_RUNTIME, mod]
    path = os.path.join(PROJECT_ROOT, *mod.split(".")) + ".py"
    if not os.path.exists(path):
        path = os.path.join(PROJECT_ROOT, *mod.split("."), "__init__.py")
    try:
        with open(path) as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError):
        return out
    pkg = mod.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == (func or "main"):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import):
                    out += [a.name for a in sub.names]
                elif isinstance(sub, ast.ImportFrom) and sub.module:
                    base = sub.module if not sub.level else ".".join(
                        ([pkg] if pkg else []) + [sub.module]) if sub.level == 1 else sub.module
                    out.append(base)
    return out


def loaded_files(modules: list[str]) -> list[str]:
    """The files of `sys.modules` after a fresh interpreter imported `modules`."""
    env = {**os.environ, "PYTHONPATH": PROJECT_ROOT}
    r = subprocess.run([sys.executable, "-c", _PROBE, *modules], capture_output=True,
                       text=True, cwd=PROJECT_ROOT, env=env, timeout=IMPORT_S)
    if r.returncode:
        raise RuntimeError(f"importing {' '.join(modules)} failed: {r.stderr.strip()[-300:]}")
    return [str(p) for p in json.loads(r.stdout.strip().splitlines()[-1])]


class Size(NamedTuple):
    files: dict[str, int]         # source file -> lines of code
    binary: dict[str, int]        # extension module -> bytes


def size_of(paths: list[str], cache: dict[str, int]) -> Size:
    """The Size of the loaded files `paths` (the standard library and the interpreter left
    out); `cache`: source file -> lines, shared between components."""
    files, binary = {}, {}
    for p in paths:
        if _kind(p) is None:
            continue
        if p.endswith((".so", ".pyd")):
            binary[p] = os.path.getsize(p) if os.path.exists(p) else 0
            continue
        src = _source(p)
        if src not in cache:
            cache[src] = count_loc(src)
        files[src] = cache[src]
    return Size(files, binary)


def measure(entries: dict[str, list[str]],
            live: dict[str, list[str]] | None = None) -> dict[str, Size]:
    """component -> its Size, one fresh interpreter per component (two at a time); a
    component in `live` is measured from the files its running process has loaded."""
    live = live or {}
    todo = {n: e for n, e in entries.items() if n not in live}
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = dict(zip(todo, pool.map(loaded_files, todo.values())))
    found.update(live)
    cache: dict[str, int] = {}
    return {name: size_of(paths, cache) for name, paths in found.items()}


# ---------------------------------------------------------------------------
# 3. the report

def report(g: dict[str, Any], ps_rows: list[dict[str, Any]], task: str,
           devices: list[str] | None = None,
           root_files: list[str] | None = None) -> dict[str, Any]:
    """The JSON of `l4run tcb`. `devices`: the HAL's device names, in its order;
    `root_files`: the files the running root task has loaded (its control command
    `modules`), measured instead of a fresh import of its entry when given."""
    runs = {r["name"]: r["run"] for r in ps_rows if r.get("run")}
    inside = members(g, task, devices)
    everyone = [KERNEL] + [t["name"] for t in g["tasks"]]
    entries = {n: ENTRIES.get(n) or (entry_modules(runs[n]) if n in runs else [])
               for n in everyone}
    live = {ROOT: root_files} if root_files else {}
    sizes = measure({n: e for n, e in entries.items() if e}, live)
    empty = Size({}, {})

    def union(names: list[str]) -> tuple[dict[str, int], dict[str, int]]:
        files: dict[str, int] = {}
        binary: dict[str, int] = {}
        for n in names:
            files.update(sizes.get(n, empty).files)
            binary.update(sizes.get(n, empty).binary)
        return files, binary

    def total(names: list[str]) -> tuple[int, int, int]:
        files, binary = union(names)
        return sum(files.values()), len(files), sum(binary.values())

    def ours(names: list[str]) -> int:
        return sum(n for f, n in union(names)[0].items() if _kind(f) == "project")

    comps = []
    for m in inside:
        loc, nfiles, nbin = total([m.name])
        comps.append({"name": m.name, "run": ENTRIES.get(m.name) or runs.get(m.name),
                      "why": m.why, "loc": loc, "files": nfiles, "binary_bytes": nbin,
                      "measured": "live process" if m.name in live else "fresh import"})
    tcb_loc, tcb_files, tcb_bin = total([m.name for m in inside])
    mono_loc, mono_files, mono_bin = total(everyone)
    left_out = sorted(set(everyone) - {m.name for m in inside})
    tcb_ours, mono_ours = ours([m.name for m in inside]), ours(everyone)
    reached = sorted({w.split("(device ")[1].split(")")[0] for m in inside for w in m.why
                      if "(device " in w})
    return {"task": task, "components": comps, "devices": reached,
            "tcb_loc": tcb_loc, "tcb_files": tcb_files, "tcb_binary_bytes": tcb_bin,
            "monolithic_loc": mono_loc, "monolithic_files": mono_files,
            "monolithic_binary_bytes": mono_bin,
            "monolithic_components": everyone, "outside_tcb": left_out,
            "reduction": round(mono_loc / tcb_loc, 2) if tcb_loc else None,
            "tcb_project_loc": tcb_ours, "monolithic_project_loc": mono_ours,
            "reduction_project": round(mono_ours / tcb_ours, 2) if tcb_ours else None,
            "measure": "non-blank, non-comment, non-docstring lines of the project and "
                       "third-party Python files in sys.modules of a fresh import of each "
                       "component's entry (root: of the running root process, when it "
                       "answers `modules`); CPython, its standard library and the host "
                       "kernel not counted (common to both); extension modules as bytes"}


def text(r: dict[str, Any]) -> str:
    out = [f"trusted computing base of {r['task']}:"]
    for c in r["components"]:
        out.append(f"  {c['name']:<12} {c['loc']:>7} lines  {c['files']:>4} files"
                   + (f"  (+{c['binary_bytes'] // 1024} KiB compiled)" if c["binary_bytes"]
                      else ""))
        out += [f"      {w}" for w in c["why"]]
    if r["devices"]:
        out.append(f"  devices on those paths: {', '.join(r['devices'])}")
    out.append(f"  TCB total:   {r['tcb_loc']:>7} lines in {r['tcb_files']} files "
               "(each file once)")
    out.append(f"  monolithic:  {r['monolithic_loc']:>7} lines in {r['monolithic_files']} "
               f"files (all {len(r['monolithic_components'])} components in one domain)")
    out.append(f"  project code only (no third-party libraries): TCB {r['tcb_project_loc']}, "
               f"monolithic {r['monolithic_project_loc']} lines, {r['reduction_project']}x")
    out.append(f"  reduction:   {r['reduction']}x   not in the TCB: "
               f"{', '.join(r['outside_tcb']) or 'nothing'}")
    out.append(f"  measured: {r['measure']}")
    return "\n".join(out)


def register(cli: Any, ask: Any, find_run_dir: Any, run_dir_option: Any) -> None:
    import click

    @cli.command("tcb")
    @click.argument("task")
    @click.option("--json", "as_json", is_flag=True, help="one JSON object")
    @run_dir_option
    def tcb_cmd(task: str, as_json: bool, run_dir: str | None) -> None:
        """TASK's trusted computing base from the live capability graph, in lines of code,
        against the same function in one monolithic system."""
        from .cli import Fail
        rd = find_run_dir(run_dir)
        g = caps.graph(ask(rd, "caps")["tasks"])
        rows = ask(rd, "ps")["tasks"]
        try:
            r = report(g, rows, task, _hal_devices(rd), _root_files(rd))
        except (TcbError, RuntimeError) as e:
            raise Fail(str(e)) from None
        click.echo(json.dumps(r, indent=1) if as_json else text(r))


def _root_files(rd: str) -> list[str] | None:
    """The files the running root task has loaded (launcher/root.py's `modules`), or None
    from a root that does not answer it (then its entry is imported afresh)."""
    from . import control
    try:
        answer = control.request(rd, "modules")
    except (control.NotRunning, OSError):
        return None
    files = answer.get("files") if answer.get("ok") else None
    return [str(f) for f in files] if isinstance(files, list) else None


def _hal_devices(rd: str) -> list[str]:
    """The HAL's device names in its order (its status), or [] for an image without any."""
    from hal.tools import HalControlError, control
    if not os.path.exists(os.path.join(rd, "hal.ctl")):
        return []
    try:
        return list(control(rd, {"op": "status"})["devices"])
    except (HalControlError, OSError, KeyError, TypeError):
        return []
