"""The planted bugs of `l4run selftest mutants` (launcher/selftest.py) stay plantable.

Cheap, in the default suite: every mutant's original text occurs exactly once in the current
source (so a change to the kernel that moves it shows up here, not as a "stale" mutant in a
run nobody made), the mutated file still compiles (a mutant must be a bug, not a syntax
error that any test would trip over), and each names tests that exist.

Slow, not in the default suite: one full run of the selftest — every mutant caught on an
unmutated baseline that passes (about five minutes). It runs only when L4PY_SLOW=1 is set:
the project has no `slow` marker configured, and an unregistered one would warn.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from launcher.selftest import MUTANTS, ROOT, Mutant, occurrences

KINDS = {"handler raises", "queue order", "counter not updated", "missing rights check",
         "reply capability reused", "revoke misses a level", "unmap not verified",
         "irq while masked", "timeout ignored", "quota not charged", "page fault resolution",
         "bounds check"}


@pytest.mark.parametrize("m", MUTANTS, ids=[m.name for m in MUTANTS])
def test_each_mutant_applies_to_the_current_source(m: Mutant) -> None:
    assert occurrences(m) == 1, f"{m.name}: its original text occurs {occurrences(m)} times in {m.file}"
    with open(os.path.join(ROOT, m.file)) as f:
        text = f.read()
    mutated = text.replace(m.original, m.mutated)
    assert mutated != text
    compile(mutated, m.file, "exec")
    for t in m.tests:
        assert os.path.exists(os.path.join(ROOT, t.split("::")[0])), f"{m.name}: no test {t}"


def test_the_table_covers_every_kind_once_named() -> None:
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names)) >= 10
    assert {m.kind for m in MUTANTS} == KINDS


@pytest.mark.skipif(os.environ.get("L4PY_SLOW") != "1", reason="slow: set L4PY_SLOW=1")
@pytest.mark.timeout(1800)
def test_every_planted_bug_is_caught() -> None:
    r = subprocess.run([sys.executable, "-m", "launcher", "selftest", "mutants", "--json"],
                       cwd=ROOT, capture_output=True, text=True, timeout=1800)
    report = json.loads(r.stdout)
    assert report["baseline_ok"], report["baseline_failed_test"]
    assert report["stale"] == [] and report["survivors"] == [], report
    assert report["mutants_caught"] == report["mutants_total"] == len(MUTANTS)
    assert r.returncode == 0
