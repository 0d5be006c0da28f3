"""moe's protocol, declared once: the server dispatches on it, the client stubs call it.

Every request is msgpack {"op": name, args...}; the answer {"ok": value} or
{"err": Err name, "reason": words}. Capabilities travel as items (`caps_in` / `caps_out`).
Labels tell moe who calls: the admin gate (label 0, held by the launcher only), one session
gate per client (SESSION | n: that client's moe capability *and* its pager gate), one gate
per dataspace (DATASPACE | n: the capability that names the dataspace). Session and
dataspace numbers are never reused within one moe incarnation.

`client_gone(session)` is how the launcher (the supervisor) tells moe that the task behind
session n died: moe frees the session's dataspaces (sharers lose them, as with `release`),
forgets its regions, destroys its session gate, and gives every 1 MiB block of its pool that
became wholly free back to sigma0.
"""
from __future__ import annotations

SESSION = 1 << 40
DATASPACE = 1 << 41

# gate kind -> op -> (arguments, capability items in, capability items out, reply)
OPS: dict[str, dict[str, tuple[tuple[str, ...], int, int, str]]] = {
    "admin": {
        "session": (("name", "quota"), 0, 1, "{session}; item: the session gate"),
        "client_gone": (("session",), 0, 0, "{dataspaces, bytes}: what was freed"),
        "info": ((), 0, 0, "{sessions, dataspaces, quota, used, pool_pages, free_pages, "
                           "resident_pages}"),
    },
    "session": {
        "alloc": (("size",), 0, 1, "{ds, size}; item: the dataspace capability"),
        "attach": (("addr", "rights"), 1, 0, "{addr, size}: region start in the client"),
        "detach": (("addr",), 0, 0, "None"),
        "copy": ((), 1, 1, "{ds, size}: a copy-on-write clone; item: its capability"),
        "release": ((), 1, 0, "None: frees the dataspace (owner only)"),
        "info": ((), 0, 0, "{quota, used, regions}"),
    },
    "dataspace": {
        "info": ((), 0, 0, "{ds, size, owner, resident}"),
    },
}
ERRORS = ("QUOTA", "INVALID", "NO_RIGHTS", "NO_CAP", "BUSY")
