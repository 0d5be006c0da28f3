"""The type checker runs over the packages whose code has settled (STYLE habit 10).

Packages join `CHECKED` once `mypy` is clean on them; a type error there fails the suite."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKED = ["kernel", "hal", "launcher", "servers"]

pytest.importorskip("mypy")


def test_mypy_is_clean_on_settled_packages() -> None:
    r = subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports",
                        "--cache-dir", os.path.join(ROOT, ".mypy_cache"), *CHECKED],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
