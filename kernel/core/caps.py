"""Capability spaces and the mapping database.

A task names kernel objects only through the slots of its `CapSpace`: slot -> `CapNode`
(object, rights). Every node remembers the node it was derived from (`parent`) and the
nodes derived from it (`children`); that tree is the mapping database.

Contracts:
- A derived node never has more rights than its parent (`rights & mask`).
- `revoke(node)` removes every node derived from `node`, recursively, in every task, at once;
  `delete(node)` does that and removes `node` itself.
- `grant` moves a node to another space: its place in the tree (parent, children) stays.
- An object stays alive while any node refers to it; when its last node goes, the kernel's
  `on_last_cap` hook destroys it.

Ownership: all of this is touched only by the kernel's single event-loop thread.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

from ..abi import FIRST_FREE_SLOT, MAX_SLOTS, AbiError, Err, ObjType, Rights

if TYPE_CHECKING:
    from .objects import KObject


class CapNode:
    __slots__ = ("obj", "rights", "space", "slot", "parent", "children")

    def __init__(self, obj: "KObject", rights: int, space: "CapSpace", slot: int,
                 parent: "CapNode | None") -> None:
        self.obj = obj
        self.rights = rights
        self.space = space
        self.slot = slot
        self.parent = parent
        self.children: list[CapNode] = []


class CapSpace:
    """The slot table of one task."""

    def __init__(self, owner_name: str, on_last_cap: Callable[["KObject"], None]) -> None:
        self.owner_name = owner_name
        self.slots: dict[int, CapNode] = {}
        self._on_last_cap = on_last_cap

    # -- lookup: check first ------------------------------------------------
    def lookup(self, slot: int, kind: ObjType | None = None, need: int = 0) -> CapNode:
        node = self.slots.get(slot)
        if node is None:
            raise AbiError(Err.NO_CAP, f"task '{self.owner_name}' holds nothing in slot {slot}")
        if kind is not None and node.obj.kind != kind:
            raise AbiError(Err.NO_CAP, f"slot {slot} of task '{self.owner_name}' holds a "
                                       f"{node.obj.kind.name}, not a {kind.name}")
        need = int(need)       # an IntFlag operand would build an enum on every `&`
        if node.rights & need != need:
            missing = Rights(need & ~node.rights)
            raise AbiError(Err.NO_RIGHTS, f"slot {slot} of task '{self.owner_name}' lacks "
                                          f"right {missing!r}")
        if not node.obj.alive:
            raise AbiError(Err.PEER_DIED, f"slot {slot} of task '{self.owner_name}' names a "
                                          f"{node.obj.kind.name} that is gone")
        return node

    def check_free(self, slot: int) -> None:
        if not FIRST_FREE_SLOT <= slot < MAX_SLOTS:
            raise AbiError(Err.INVALID, f"slot {slot} is outside {FIRST_FREE_SLOT}..{MAX_SLOTS - 1}")
        if slot in self.slots:
            raise AbiError(Err.BUSY, f"slot {slot} of task '{self.owner_name}' is in use")

    def free_slot(self, exclude: int = 0) -> int:
        for slot in range(FIRST_FREE_SLOT, MAX_SLOTS):
            if slot not in self.slots and slot != exclude:
                return slot
        raise AbiError(Err.QUOTA, f"task '{self.owner_name}' has no free capability slot")

    def pick_slot(self, dst: int | None, exclude: int = 0) -> int:
        """The slot a new capability goes to: `dst` if given (must be free), else the first free."""
        if dst is None:
            return self.free_slot(exclude)
        self.check_free(dst)
        return dst

    # -- act: only on checked input ------------------------------------------
    def insert(self, slot: int, obj: "KObject", rights: int, parent: CapNode | None = None) -> CapNode:
        node = CapNode(obj, int(rights), self, slot, parent)   # plain int: IntFlag & is slow
        self.slots[slot] = node
        obj.nodes.add(node)
        if parent is not None:
            parent.children.append(node)
        return node

    def derive(self, src: CapNode, slot: int, mask: int) -> CapNode:
        return self.insert(slot, src.obj, src.rights & mask, parent=src)

    def move_in(self, node: CapNode, slot: int) -> None:
        """Grant: take `node` out of its space and put it here, keeping its tree position."""
        del node.space.slots[node.slot]
        node.space = self
        node.slot = slot
        self.slots[slot] = node

    def all_nodes(self) -> list[CapNode]:
        return list(self.slots.values())


def subtree(node: CapNode) -> Iterator[CapNode]:
    """Every node derived from `node`, deepest first (so removal never orphans)."""
    stack = [(node, False)]
    while stack:
        n, expanded = stack.pop()
        if expanded:
            yield n
        else:
            stack.append((n, True))
            stack.extend((c, False) for c in n.children)


def _unlink(node: CapNode, on_last: Callable[["KObject"], None]) -> None:
    space = node.space
    if space.slots.get(node.slot) is node:
        del space.slots[node.slot]
    node.children = []
    obj = node.obj
    obj.nodes.discard(node)
    if obj.alive and (not obj.nodes or obj.unreachable()):
        on_last(obj)


def revoke(node: CapNode) -> int:
    """Remove everything derived from `node`; keep `node`. Answers how many nodes went."""
    gone = [n for n in subtree(node) if n is not node]
    on_last = node.space._on_last_cap
    for n in gone:
        _unlink(n, on_last)
    node.children = []
    return len(gone)


def delete(node: CapNode) -> int:
    """Remove `node` and everything derived from it."""
    count = revoke(node)
    if node.parent is not None:
        try:
            node.parent.children.remove(node)
        except ValueError:
            pass
    _unlink(node, node.space._on_last_cap)
    return count + 1
