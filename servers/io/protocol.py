"""The io server's protocol, declared once (kernel.user.rpc).

A client (a driver) reaches io through a gate whose label the launcher chose for it; the
label is what the policy names (the kernel vouches for it, the client can't claim another).

    devices() -> [names]          the devices this client may open
    open(name) -> info            with the device's I/O gate (INVOKE) and, if it has a line,
                                  its IRQ object (INVOKE|WRITE: attach, mask) mapped into the
                                  caller's window; errors DENIED (not in the policy), NOT_FOUND
    ram() -> {path, size}         physical RAM of the machine (until the kernel owns it)

Admin (only through a gate with label ADMIN_LABEL, held by the launcher):

    set_policy(label, names)      replace what `label` may open; devices it loses are
                                  revoked from it at once (its capabilities vanish)
    policy() -> {label: [names]}
"""
from __future__ import annotations

from kernel.user.rpc import Protocol, op

ADMIN_LABEL = 1

IO = Protocol("io", [
    op("devices", 1, [], "names"),
    op("open", 2, ["name:str"], "info", errors=["DENIED", "NOT_FOUND"]),
    op("ram", 3, [], "ram"),
    op("set_policy", 10, ["label:int", "names:list"], None, errors=["DENIED", "NOT_FOUND"]),
    op("policy", 11, [], "policy", errors=["DENIED"]),
], tag=0x494F)
