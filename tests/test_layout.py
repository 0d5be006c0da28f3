"""The package boundaries hold: who may import what (kernel/__init__.py, STYLE habit 3).

The contracts are declared once, in pyproject.toml under [tool.importlinter], and checked by
import-linter (`lint-imports`), which follows indirect imports too:
- servers/, hal/ and launcher/ import only kernel.abi, kernel.osutil and kernel.user.* (the
  launcher starts the kernel process by its module name, `python -m kernel`: a string);
- kernel/user/ never imports kernel/core/, and kernel/core/ never imports kernel/user/.
A second test keeps the forbidden list complete when a module is added to kernel/.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = {"abi", "osutil", "user"}        # what of kernel/ the rest of the system may import

pytest.importorskip("importlinter")

LINT = ("import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")


def _contracts() -> dict[str, dict]:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        config = tomllib.load(f)["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def test_imports_keep_the_package_boundaries() -> None:
    r = subprocess.run([sys.executable, "-c", LINT], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_private_kernel_module_is_forbidden_outside_the_kernel() -> None:
    """A new module in kernel/ is private to the kernel until it is named in SHARED."""
    found = {name.removesuffix(".py") for name in os.listdir(os.path.join(ROOT, "kernel"))
             if name.endswith(".py") or os.path.isfile(os.path.join(ROOT, "kernel", name,
                                                                     "__init__.py"))}
    private = {f"kernel.{m}" for m in found - SHARED - {"__init__"}}
    contracts = _contracts()
    assert set(contracts["outside-kernel"]["forbidden_modules"]) == private
    assert set(contracts["outside-kernel"]["source_modules"]) == {"servers", "hal", "launcher"}
    assert set(contracts["kernel-sides"]["modules"]) == {"kernel.core", "kernel.user"}
