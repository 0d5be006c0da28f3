"""moe's protocols, declared once (kernel.user.rpc): the server dispatches on them, the
client stubs (servers/moe/client.py) are built from them.

moe speaks one protocol per kind of gate; the gate's label (the kernel's word) picks it:

- the admin gate, label ADMIN_LABEL (0), held by the launcher only: MOE_ADMIN;
- one session gate per client, label SESSION | n: MOE_SESSION. The same gate is the
  client's pager (page faults arrive on it, Proto.PAGE_FAULT);
- one gate per dataspace, label DATASPACE | n: MOE_DATASPACE. That capability *names* the
  dataspace: sent with a session request (a capability item), it says which one.

Session and dataspace numbers are never reused within one moe incarnation.

MOE_ADMIN
    session(name, quota) -> {session}      a new session of at most `quota` bytes; one item:
                                           the session gate. Errors: INVALID (quota
                                           outside 0..2**40), QUOTA (moe's kernel objects
                                           are spent: too many sessions)
    client_gone(session) -> {dataspaces, bytes}
                                           the task behind session n died: moe frees its
                                           dataspaces (sharers lose them, as with release),
                                           forgets its regions, destroys its session gate and
                                           gives every wholly free 1 MiB block back to sigma0.
                                           Errors: INVALID (no such session)
    info() -> {sessions, dataspaces, quota, used, pool_pages, free_pages, resident_pages}

MOE_SESSION
    alloc(size) -> {ds, size}              a dataspace of `size` bytes (rounded up to pages);
                                           one item: its capability. Errors: INVALID (size
                                           outside 1..16 GiB), QUOTA
    attach(addr, rights) -> {addr, size}   with the dataspace capability as an item: a region
                                           of the session's address space (addr None: moe
                                           picks one). Errors: INVALID, BUSY (overlap), NO_CAP
    detach(addr) -> None                   Errors: INVALID (no region starts there)
    copy() -> {ds, size}                   with a dataspace capability: a copy-on-write clone;
                                           one item: its capability. Errors: QUOTA, NO_CAP
    release() -> None                      with a dataspace capability: frees it (owner only).
                                           Errors: NO_RIGHTS, NO_CAP
    info() -> {quota, used, regions}       regions: [[start, size, ds, rights], ...]
    Proto.PAGE_FAULT                       maps the page of the region at the fault address
                                           (demand-zero, copy-on-write). Errors: INVALID (no
                                           region), NO_RIGHTS (access beyond the region's)

MOE_DATASPACE
    info() -> {ds, size, owner, resident}

NO_CAP: the capability sent is not a live moe dataspace. A request that should carry one
and carries none is refused BAD_REQUEST before moe looks at it.
"""
from __future__ import annotations

from kernel.user.rpc import Protocol, op

SESSION = 1 << 40
DATASPACE = 1 << 41

MOE_ADMIN = Protocol("moe.admin", [
    op("session", 1, ["name:str", "quota:int"], "session", errors=["INVALID", "QUOTA"],
       caps_out=1),
    op("client_gone", 2, ["session:int"], "freed", errors=["INVALID"]),
    op("info", 3, [], "info"),
], tag=0x4D41)

MOE_SESSION = Protocol("moe.session", [
    op("alloc", 1, ["size:int"], "dataspace", errors=["INVALID", "QUOTA"], caps_out=1),
    op("attach", 2, ["addr:int?", "rights:int"], "region", errors=["INVALID", "BUSY", "NO_CAP"],
       caps_in=1),
    op("detach", 3, ["addr:int"], None, errors=["INVALID"]),
    op("copy", 4, [], "dataspace", errors=["INVALID", "QUOTA", "NO_CAP"], caps_in=1, caps_out=1),
    op("release", 5, [], None, errors=["NO_RIGHTS", "NO_CAP"], caps_in=1),
    op("info", 6, [], "info"),
], tag=0x4D53)

MOE_DATASPACE = Protocol("moe.dataspace", [
    op("info", 1, [], "info"),
], tag=0x4D44)
