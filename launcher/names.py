"""The launcher's name service, task side: obtain a capability by name at run time.

Every task started by the launcher holds a capability `launcher` (invoke only) to a gate the
launcher made for it alone; its label tells the launcher which task calls, so no task can
ask in another's name. `lookup(l4, "svc")` asks for the capability the image (or a later
`l4run attach`) routed to this task under the local name "svc"; the answer maps it into the
caller's capability space and `l4.caps["svc"]` is updated.

Use it for services attached after the task started. Capabilities from the image stay valid
across a server's restart (the launcher rebinds the gate), so lookup is never needed for them.

Protocol: call with msgpack {"op": "lookup", "name": NAME} and a receive window of one slot;
the reply is {"ok": true} with one MAP_CAP item, or {"ok": false, "error": "..."}.
"""
from __future__ import annotations

from kernel.abi import pack, unpack
from kernel.user.client import L4
from kernel.user.errors import InvalidArgument

LOOKUP_BASE = 3000         # where lookups land in the caller's capability space
CAP_NAME = "launcher"


class LookupError_(InvalidArgument):
    """The launcher has no route of that name for this task."""


def lookup(l4: L4, name: str, timeout_ms: float | None = 5000) -> int:
    """The slot of capability `name`, mapped into this task by the launcher."""
    if CAP_NAME not in l4.caps:
        raise LookupError_(f"this task holds no '{CAP_NAME}' capability (not started by l4run)")
    slot = l4.caps.get(name, 0)
    if slot < LOOKUP_BASE:
        used = {s for s in l4.caps.values() if s >= LOOKUP_BASE}
        slot = next(s for s in range(LOOKUP_BASE, LOOKUP_BASE + 1000) if s not in used)
    else:
        try:
            l4.cap_delete(slot)
        except Exception:
            pass
    m = l4.call(l4.caps[CAP_NAME], pack({"op": "lookup", "name": name}),
                rcv_timeout=timeout_ms, window=(slot, 1))
    body = unpack(m.data)
    if not body.get("ok") or not m.items:
        raise LookupError_(f"lookup of '{name}': {body.get('error', 'no capability in the answer')}")
    l4.caps[name] = m.items[0][1]
    return l4.caps[name]
