"""Revocation and deletion over a derivation tree of several levels and branches, and the
exact counts CAP_REVOKE and CAP_DELETE answer (kernel/core/caps.py: revoke removes
everything derived, at any depth, and answers how many went; delete also removes the node).

The tree lives in root's own capability space (CAP_DERIVE), so each test sees only its own
nodes: g → a → a1 → a11, g → a → a2, g → b.
"""
from __future__ import annotations

from typing import Any

import pytest

from kernel.abi import Rights
from kernel.user.errors import NoCapability


def _tree(root: Any) -> dict[str, int]:
    g = root.create_gate(0x7E)
    s = {"g": g}
    s["a"] = root.cap_derive(g, Rights.ALL)
    s["b"] = root.cap_derive(g, Rights.INVOKE)
    s["a1"] = root.cap_derive(s["a"], Rights.ALL)
    s["a2"] = root.cap_derive(s["a"], Rights.INVOKE | Rights.GRANT)
    s["a11"] = root.cap_derive(s["a1"], Rights.INVOKE)
    return s


def _present(root: Any, slots: dict[str, int]) -> set[str]:
    out = set()
    for name, slot in slots.items():
        try:
            root.cap_inspect(slot)
            out.add(name)
        except NoCapability:
            pass
    return out


def test_the_tree_is_what_was_derived(shared_kit: Any) -> None:
    root = shared_kit.root
    s = _tree(root)
    derived = {n: root.cap_inspect(slot)["derived"] for n, slot in s.items()}
    assert derived == {"g": 2, "a": 2, "b": 0, "a1": 1, "a2": 0, "a11": 0}
    assert root.cap_inspect(s["a11"])["rights"] == int(Rights.INVOKE)
    root.cap_delete(s["g"])


def test_revoke_at_the_root_removes_every_level_and_counts_them(shared_kit: Any) -> None:
    root = shared_kit.root
    s = _tree(root)
    assert root.cap_revoke(s["g"]) == 5
    assert _present(root, s) == {"g"}
    assert root.cap_inspect(s["g"])["derived"] == 0
    assert root.cap_revoke(s["g"]) == 0                  # nothing left to revoke
    root.cap_delete(s["g"])


def test_revoke_in_the_middle_removes_the_grandchildren_too(shared_kit: Any) -> None:
    root = shared_kit.root
    s = _tree(root)
    assert root.cap_revoke(s["a"]) == 3                  # a1, a11, a2
    assert _present(root, s) == {"g", "a", "b"}
    assert root.cap_inspect(s["g"])["derived"] == 2
    root.cap_delete(s["g"])


@pytest.mark.parametrize("node, gone, count", [
    ("a11", {"a11"}, 1),
    ("a1", {"a1", "a11"}, 2),
    ("a", {"a", "a1", "a11", "a2"}, 4),
    ("g", {"g", "a", "b", "a1", "a2", "a11"}, 6),
])
def test_delete_counts_the_node_and_everything_below_it(shared_kit: Any, node: str,
                                                        gone: set[str], count: int) -> None:
    root = shared_kit.root
    s = _tree(root)
    assert root.cap_delete(s[node]) == count
    assert _present(root, s) == set(s) - gone
    if "g" not in gone:
        root.cap_delete(s["g"])
