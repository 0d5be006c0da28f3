"""The kernel process's modules are layered as kernel/__init__.py lists them.

Each module of `kernel/core/` imports (at run time; `if TYPE_CHECKING:` blocks excepted) only
modules listed before it in the package docstring, so there is no import cycle and the IPC
path reads top to bottom; every module is listed, nothing listed is missing.
"""
from __future__ import annotations

import ast
import os
import re

import kernel

CORE = os.path.join(os.path.dirname(kernel.__file__), "core")


def listed() -> list[str]:
    """The kernel.core modules in the order kernel/__init__.py lists them."""
    doc = kernel.__doc__ or ""
    block = doc[doc.index("- `kernel.core`"):doc.index("- `kernel.user`")]
    return re.findall(r"^  - `(\w+)`", block, re.M)


def runtime_imports(module: str) -> set[str]:
    with open(os.path.join(CORE, module + ".py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    out: set[str] = set()
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            out.update([node.module] if node.module else (a.name for a in node.names))
        stack.extend(ast.iter_child_nodes(node))
    return out


def test_every_module_is_listed_once() -> None:
    files = {f[:-3] for f in os.listdir(CORE) if f.endswith(".py") and f != "__init__.py"}
    order = listed()
    assert len(order) == len(set(order))
    assert set(order) == files, (sorted(files - set(order)), sorted(set(order) - files))


def test_each_module_imports_only_modules_listed_before_it() -> None:
    order = listed()
    for i, module in enumerate(order):
        later = runtime_imports(module) - set(order[:i])
        assert not later, f"kernel/core/{module}.py imports {sorted(later)}, listed after it"
