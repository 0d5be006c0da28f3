"""The io server's protocol, declared once (kernel.user.rpc): servers/io/server.py serves
it, drivers call it through `IO.client(l4, l4.caps["io"])` (DDEKit's bus, servers/ddekit/bus.py).

A client (a driver) reaches io through a gate whose label the launcher chose for it (>= 1;
the launcher uses DRIVER_LABEL_BASE and up); the label is what the policy names (the kernel
vouches for it, the client can't claim another).

    devices() -> [names]          the devices this client may open
    open(name) -> info            with the device's I/O gate (INVOKE) and, if it has a line,
                                  its IRQ object (INVOKE|WRITE: attach, mask) mapped into the
                                  caller's window; errors DENIED (not in the policy), NOT_FOUND
    ram() -> {path, size}         physical RAM of the machine (until the kernel owns it)

Admin (only through the gate with label ADMIN_LABEL (0), held by the launcher; through any
other gate the dispatch answers DENIED):

    set_policy(label, names)      replace what `label` may open; devices it loses are
                                  revoked from it at once (its capabilities vanish);
                                  errors NOT_FOUND (no such device), DENIED (label 0)
    policy() -> {label: [names]}
"""
from __future__ import annotations

from kernel.user.rpc import ADMIN_LABEL, Protocol, op

__all__ = ["ADMIN_LABEL", "IO"]

IO = Protocol("io", [
    op("devices", 1, [], "names"),
    op("open", 2, ["name:str"], "info", errors=["DENIED", "NOT_FOUND"], caps_out=2),
    op("ram", 3, [], "ram"),
    op("set_policy", 10, ["label:int", "names:list"], None, errors=["NOT_FOUND"], admin=True),
    op("policy", 11, [], "policy", admin=True),
], tag=0x494F)
