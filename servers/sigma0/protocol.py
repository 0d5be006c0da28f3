"""sigma0's protocol, declared once (kernel.user.rpc): the server dispatches on it, clients
call it through `SIGMA0.client(l4, gate)`.

sigma0 tells clients apart by the label of the gate they call (the launcher gives each client
its own gate, labels >= 1); label ADMIN_LABEL (0) is the launcher's admin gate.

    alloc(order) -> {phys, order}     a block of 2**order bytes, naturally aligned, with one
                                      map item (rw) placed in the caller's memory receive
                                      window (`_window=kernel.user.vm.window(...)`).
                                      Errors: QUOTA (no free block of that order), INVALID
                                      (order outside PAGE_SHIFT..PAGE_SHIFT+20)
    free(phys, order) -> unmapped     the caller's block goes back: unmapped from every task
                                      (recursive), frames free again; answers the number of
                                      mappings removed. Errors: INVALID (not a block of RAM),
                                      NO_RIGHTS (not all the caller's)
    info() -> {frames, free, reserved, clients}

Admin (only through the admin gate, else DENIED):

    client_gone(label) -> freed       the client behind gate label `label` died: its frames
                                      are unmapped everywhere and free again; answers how
                                      many. Errors: INVALID (label 0 or negative)

Kernel messages:

    Proto.PAGE_FAULT                  as a pager: maps the faulting page 1:1 (phys = fault
                                      address) if the frame is free or already the faulting
                                      client's. Errors: INVALID (beyond RAM), NO_RIGHTS
"""
from __future__ import annotations

from kernel.user.rpc import Protocol, op

SIGMA0 = Protocol("sigma0", [
    op("alloc", 1, ["order:int"], "block", errors=["QUOTA", "INVALID"], caps_out=1),
    op("free", 2, ["phys:int", "order:int"], "unmapped", errors=["INVALID", "NO_RIGHTS"]),
    op("info", 3, [], "info"),
    op("client_gone", 4, ["label:int"], "freed", errors=["INVALID"], admin=True),
], tag=0x5330)
