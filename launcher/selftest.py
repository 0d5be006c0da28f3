"""`l4run selftest mutants`: planted bugs, each of which the test suite must catch.

A regression test of the tests. Each `Mutant` is one exact textual change to the kernel's
code — a missing rights check, a queue in the wrong order, a counter not updated, a reply
capability usable twice, a revocation that stops one level down, an IRQ delivered while
masked, a timeout ignored, a quota not charged, a page fault answered with the wrong rights —
and the narrow selection of tests that should notice it. The runner copies the source tree
into a temporary directory (the checkout itself is never touched), runs every selection once
on the unmutated copy (it must pass: else the baseline is broken and nothing is judged), then
for each mutant makes a fresh copy, applies the change and runs its selection there. The
mutant is *caught* when the selection fails (or does not finish within the time limit);
a mutant whose original text no longer occurs exactly once is *stale* — an error, never
"caught", so the table cannot rot silently as the code changes (`tests/test_mutants.py`
checks that cheaply in the default suite).

Contract: exit status 0 only if the baseline passed and every mutant was caught; the JSON
(`--json`) has `mutants_total`, `mutants_caught`, `survivors`, `stale`, `baseline_ok`,
`mutants` (name, file, kind, caught, tests, seconds, failed_test) and `seconds`.

Ownership: the CLI process; each selection runs in its own pytest subprocess (its own
session, killed as a group on timeout).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Iterable

import click

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What a copy needs to run the tests: the packages, the tests and the project file.
COPIED = ("kernel", "launcher", "servers", "hal", "configs", "tests", "pyproject.toml")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache",
                                 ".hypothesis", "run")
DEFAULT_LIMIT_S = 300.0      # per selection; a hang counts as caught (the tests did not pass)


@dataclass(frozen=True)
class Mutant:
    """One planted bug: replace `original` (which must occur exactly once in `file`) by
    `mutated`; `tests` (pytest node ids or paths) must then fail."""
    name: str
    file: str
    kind: str
    original: str
    mutated: str
    tests: tuple[str, ...]
    why: str


CAPS, IPC, FAST, SYS = ("kernel/core/caps.py", "kernel/core/ipc.py", "kernel/core/fastpath.py",
                        "kernel/core/syscalls.py")
MEM, IRQ, STATE, PF = ("kernel/core/memory.py", "kernel/core/irq.py", "kernel/core/state.py",
                       "kernel/core/pagefault.py")
T_CAPS, T_IPC, T_FAST, T_QI = ("tests/kernel/test_caps.py", "tests/kernel/test_ipc.py",
                               "tests/kernel/test_fastpath.py", "tests/kernel/test_quota_irq.py")
T_RIGHTS, T_REPLY = "tests/kernel/test_rights.py", "tests/kernel/test_reply_once.py"

MUTANTS: tuple[Mutant, ...] = (
    # -- the bugs of issue 22 ------------------------------------------------------------
    Mutant("derive_handler_raises", SYS, "handler raises",
           "    space.derive(node, slot, a.mask)\n    return slot\n",
           "    space.derive(node, slot, a.mask)\n    raise RuntimeError('planted bug')\n",
           (T_CAPS,), "an exception inside the CAP_DERIVE handler (a kernel bug, not an error)"),
    Mutant("fastpath_arrival_order", FAST, "queue order",
           "        insort(target.queue, rec)\n",
           "        target.queue.append(rec)\n",
           (T_FAST,), "the fast path queues blocked callers by arrival, not by priority"),
    Mutant("fastpath_no_task_ipc_count", FAST, "counter not updated",
           "    k.count_ipc(th, target)\n",
           "    k.stats['ipc'] += 1\n",
           (T_FAST,), "the fast path counts the global IPC but not the tasks' sent/received"),
    # -- rights checks --------------------------------------------------------------------
    Mutant("send_without_invoke", SYS, "missing rights check",
           "    node = th.task.space.lookup(slot, ObjType.GATE, Rights.INVOKE)\n",
           "    node = th.task.space.lookup(slot, ObjType.GATE)\n",
           (T_IPC, T_RIGHTS), "the generic send/call path no longer needs INVOKE on the gate"),
    Mutant("fastpath_without_invoke", FAST, "missing rights check",
           "    if node is None or proto < 0 or not node.rights & _INVOKE:\n",
           "    if node is None or proto < 0:\n",
           (T_FAST, T_RIGHTS), "the fast path calls through a gate capability without INVOKE"),
    Mutant("task_map_without_grant", SYS, "missing rights check",
           "    node = th.task.space.lookup(a.src, need=Rights.GRANT)\n",
           "    node = th.task.space.lookup(a.src)\n",
           (T_CAPS, T_RIGHTS), "TASK_MAP passes on a capability that lacks GRANT"),
    Mutant("item_without_grant", IPC, "missing rights check",
           "        node = src.lookup(slot, need=Rights.GRANT)\n",
           "        node = src.lookup(slot)\n",
           (T_CAPS, T_RIGHTS), "a capability item (in a reply) moves without the GRANT right"),
    Mutant("mem_attach_without_write", SYS, "missing rights check",
           "    task = th.task.space.lookup(a.task, ObjType.TASK, Rights.WRITE).obj\n",
           "    task = th.task.space.lookup(a.task, ObjType.TASK).obj\n",
           ("tests/security/test_memory.py::test_mem_attach_without_the_right_is_refused_and_counted",),
           "MEM_ATTACH on one's own task capability without WRITE"),
    Mutant("irq_attach_without_write", SYS, "missing rights check",
           "    obj = _irq(th, a.irq, Rights.WRITE)\n    target",
           "    obj = _irq(th, a.irq, Rights.INVOKE)\n    target",
           (T_QI,), "IRQ_ATTACH with an INVOKE-only IRQ capability"),
    Mutant("derive_keeps_all_rights", CAPS, "missing rights check",
           "        return self.insert(slot, src.obj, src.rights & mask, parent=src)\n",
           "        return self.insert(slot, src.obj, src.rights | mask, parent=src)\n",
           (T_CAPS,), "a derived capability gets more rights than its parent"),
    Mutant("destroy_without_delete", SYS, "missing rights check",
           "    node = th.task.space.lookup(a.slot, need=Rights.DELETE)\n",
           "    node = th.task.space.lookup(a.slot)\n",
           (T_CAPS, T_RIGHTS), "OBJ_DESTROY without the DELETE right"),
    Mutant("wrong_type_accepted", CAPS, "missing rights check",
           "        if kind is not None and node.obj.kind != kind:\n",
           "        if kind is not None and node.obj.kind > kind:\n",
           ("tests/kernel/test_slots.py",),
           "a slot holding an object of a lower-numbered type passes for the type asked"),
    Mutant("slot_range_off_by_one", CAPS, "bounds check",
           "        if not FIRST_FREE_SLOT <= slot < MAX_SLOTS:\n",
           "        if not FIRST_FREE_SLOT <= slot <= MAX_SLOTS:\n",
           ("tests/kernel/test_slots.py",), "a capability may go to slot MAX_SLOTS, past the end"),
    # -- queues, replies, revocation ------------------------------------------------------
    Mutant("generic_arrival_order", IPC, "queue order",
           "    bisect.insort(target.queue, rec)\n",
           "    target.queue.append(rec)\n",
           (T_IPC,), "the generic path queues blocked senders by arrival, not by priority"),
    Mutant("reply_usable_twice", IPC, "reply capability reused",
           "    del thread.replies[reply_id]\n    rec.live = False\n    if mplan:\n",
           "    if mplan:\n",
           (T_IPC, T_REPLY), "REPLY keeps the one-shot reply capability (and its caller) live"),
    Mutant("fastpath_reply_usable_twice", FAST, "reply capability reused",
           "    del th.replies[reply_id]\n    rec.live = False\n",
           "",
           (T_FAST, T_REPLY), "the fast path's reply_and_wait keeps the reply capability live"),
    Mutant("revoke_one_level", CAPS, "revoke misses a level",
           "    gone = [n for n in subtree(node) if n is not node]\n",
           "    gone = list(node.children)\n",
           (T_CAPS, "tests/kernel/test_revoke.py"),
           "revocation removes the direct children only, not their descendants"),
    Mutant("unmap_one_level", MEM, "revoke misses a level",
           "        affected.add(n.aspace)\n        stack.extend(n.children)\n",
           "        affected.add(n.aspace)\n",
           ("tests/memory/test_map_unmap.py",), "an unmap removes the direct mappings only"),
    Mutant("unmap_not_verified", MEM, "unmap not verified",
           "            if not self._verified(a):\n",
           "            if False:\n",
           ("tests/security/test_memory.py",),
           "a task that acknowledges a shootdown but keeps the frames is believed"),
    Mutant("grant_keeps_rights", IPC, "missing rights check",
           "            node.rights &= mask\n",
           "",
           (T_CAPS,), "a granted capability keeps its rights whatever the item's mask"),
    Mutant("unmap_without_shootdown", MEM, "unmap not verified",
           "        self.bump(affected)\n        # Spaces",
           "        # Spaces",
           ("tests/memory/test_shootdown.py", "tests/memory/test_faults.py"),
           "an unmap answers without telling the affected tasks their TLB is stale"),
    # -- counters ------------------------------------------------------------------------
    Mutant("task_errors_not_counted", STATE, "counter not updated",
           "            thread.task.stats[\"errors\"] += 1\n",
           "            pass\n",
           ("tests/kernel/test_errors_counted.py", T_RIGHTS),
           "an error answer is counted globally but not for the caller's task"),
    # -- IRQs, timeouts, quotas, page faults -----------------------------------------------
    Mutant("send_timeout_ignored", IPC, "timeout ignored",
           "        if timeout != NEVER:\n            k.timers.add(timeout, rec.sender, token)\n",
           "",
           (T_IPC,), "a blocked sender with a finite send timeout waits for ever"),
    Mutant("fastpath_send_timeout_ignored", FAST, "timeout ignored",
           "        if snd_timeout != NEVER:\n            k.timers.add(snd_timeout, th, token)\n",
           "",
           (T_FAST,), "the fast path's queued caller ignores its send timeout"),
    Mutant("irq_delivered_while_masked", IRQ, "irq while masked",
           "    if irq.masked or thread is None:\n        return\n",
           "    if thread is None:\n        return\n",
           (T_QI,), "a masked IRQ is delivered at once"),
    Mutant("receive_timeout_ignored", IPC, "timeout ignored",
           "    if timeout != NEVER:\n        k.timers.add(timeout, thread, thread.token)\n",
           "",
           (T_IPC,), "an open wait with a finite timeout waits for ever"),
    Mutant("quota_not_charged", SYS, "quota not charged",
           "    lifecycle.charge(factory)\n    gate = Gate(factory, a.label, bound)\n",
           "    gate = Gate(factory, a.label, bound)\n",
           (T_QI,), "GATE_CREATE does not charge the factory"),
    Mutant("pagefault_ignores_rights", PF, "page fault resolution",
           "    if n is not None and n.rights & access == access:\n        mem.stats[\"refills\"]",
           "    if n is not None:\n        mem.stats[\"refills\"]",
           ("tests/memory/test_faults.py", "tests/memory/test_moe.py"),
           "a write fault on a read-only mapping is answered from the page table"),
)


# -- running ---------------------------------------------------------------------------

class Stale(Exception):
    """The mutant's original text does not occur exactly once: the table needs updating."""


def occurrences(m: Mutant, root: str = ROOT) -> int:
    with open(os.path.join(root, m.file)) as f:
        return f.read().count(m.original)


def copy_tree(dst: str, src: str = ROOT) -> None:
    for name in COPIED:
        path = os.path.join(src, name)
        if os.path.isdir(path):
            shutil.copytree(path, os.path.join(dst, name), ignore=IGNORED)
        elif os.path.exists(path):
            shutil.copy2(path, os.path.join(dst, name))


def apply(m: Mutant, root: str) -> None:
    path = os.path.join(root, m.file)
    with open(path) as f:
        text = f.read()
    n = text.count(m.original)
    if n != 1:
        raise Stale(f"{m.file}: the original text of {m.name} occurs {n} times, not once")
    with open(path, "w") as f:
        f.write(text.replace(m.original, m.mutated))


def run_selection(root: str, tests: Iterable[str], limit_s: float) -> tuple[bool, str | None, float]:
    """Run pytest on `tests` in the copy at `root`. Answers (passed, first failed test or
    "timeout", seconds)."""
    env = {**os.environ, "PYTHONPATH": root, "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return False, "timeout", time.monotonic() - t0
    seconds = time.monotonic() - t0
    if proc.returncode == 0:
        return True, None, seconds
    failed = next((line.split(" ", 1)[1].split(" - ")[0] for line in out.splitlines()
                   if line.startswith(("FAILED ", "ERROR "))), None)
    return False, failed or f"pytest exit status {proc.returncode}", seconds


def run_mutant(m: Mutant, limit_s: float) -> dict[str, Any]:
    row: dict[str, Any] = {"name": m.name, "file": m.file, "kind": m.kind, "caught": False,
                           "stale": False, "tests": list(m.tests), "seconds": 0.0,
                           "failed_test": None}
    with tempfile.TemporaryDirectory(prefix="l4py-mutant-") as tmp:
        copy_tree(tmp)
        try:
            apply(m, tmp)
        except Stale as e:
            row.update(stale=True, failed_test=str(e))
            return row
        passed, failed, seconds = run_selection(tmp, m.tests, limit_s)
    row.update(caught=not passed, failed_test=failed, seconds=round(seconds, 2))
    return row


def select(only: tuple[str, ...]) -> list[Mutant]:
    names = {m.name for m in MUTANTS}
    unknown = [n for n in only if n not in names]
    if unknown:
        raise click.BadParameter(f"no mutant named {', '.join(unknown)} (see --list)",
                                 param_hint="--only")
    return [m for m in MUTANTS if not only or m.name in only]


def run_all(mutants: list[Mutant], limit_s: float = DEFAULT_LIMIT_S,
            progress: Any = None) -> dict[str, Any]:
    """The baseline, then every mutant, one at a time. Answers the report."""
    say = progress or (lambda text: None)
    t0 = time.monotonic()
    selection = sorted({t for m in mutants for t in m.tests})
    with tempfile.TemporaryDirectory(prefix="l4py-baseline-") as tmp:
        copy_tree(tmp)
        baseline_ok, failed, seconds = run_selection(tmp, selection, limit_s * 2)
    say(f"baseline ({len(selection)} selections): {'passed' if baseline_ok else 'FAILED ' + str(failed)}"
        f" in {seconds:.1f} s")
    rows: list[dict[str, Any]] = []
    if baseline_ok:
        for m in mutants:
            row = run_mutant(m, limit_s)
            rows.append(row)
            verdict = "STALE" if row["stale"] else "caught" if row["caught"] else "SURVIVED"
            say(f"{m.name:32} {verdict:8} {row['seconds']:6.1f} s  {row['failed_test'] or ''}")
    return {
        "mutants_total": len(mutants),
        "mutants_caught": sum(r["caught"] for r in rows),
        "survivors": [r["name"] for r in rows if not r["caught"] and not r["stale"]],
        "stale": [r["name"] for r in rows if r["stale"]],
        "baseline_ok": baseline_ok,
        "baseline_failed_test": failed,
        "mutants": rows,
        "seconds": round(time.monotonic() - t0, 1),
    }


def ok(report: dict[str, Any]) -> bool:
    return bool(report["baseline_ok"] and report["mutants_caught"] == report["mutants_total"])


# -- the command line ----------------------------------------------------------------------

def register(cli: click.Group) -> None:
    """`l4run selftest` (a group) with `mutants` on `cli`."""

    @cli.group("selftest")
    def selftest() -> None:
        """Checks of the test suite itself."""

    @selftest.command("mutants")
    @click.option("--json", "as_json", is_flag=True, help="the report as JSON on stdout")
    @click.option("--only", multiple=True, metavar="NAME", help="run only this mutant (repeatable)")
    @click.option("--list", "list_only", is_flag=True, help="list the mutants, run nothing")
    @click.option("--limit", "limit_s", default=DEFAULT_LIMIT_S, show_default=True,
                  metavar="SECONDS", help="time limit of one mutant's tests")
    def mutants(as_json: bool, only: tuple[str, ...], list_only: bool, limit_s: float) -> None:
        """Plant each bug in a copy of the tree, one at a time; the tests must catch each."""
        chosen = select(only)
        if list_only:
            for m in chosen:
                click.echo(f"{m.name:32} {m.kind:24} {m.file:26} {' '.join(m.tests)}")
                click.echo(f"{'':32} {m.why}")
            return
        report = run_all(chosen, limit_s, progress=lambda text: click.echo(text, err=True))
        if as_json:
            click.echo(json.dumps(report, indent=2))
        else:
            click.echo(f"{report['mutants_caught']} of {report['mutants_total']} mutants caught "
                       f"in {report['seconds']} s; survivors: {report['survivors'] or 'none'}; "
                       f"stale: {report['stale'] or 'none'}"
                       + ("" if report["baseline_ok"] else "; the unmutated tree FAILED its tests"))
        if not ok(report):
            sys.exit(1)
