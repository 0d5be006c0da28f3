"""The DHCP server's protocol on its main thread, declared once (clients: the launcher's
`l4run call dhcpd.leases`, tests). DHCP itself is UDP on the task's stack; this is the view
from inside the system.

    leases() -> [{"mac", "address", "state", "left_s"}, ...]    by MAC
    stats() -> {"server", "counts", "last_bad", "pool", "lease_s"}
Both answer NOT_READY until the server's stack has its session and address.
"""
from __future__ import annotations

from kernel.user.rpc import Protocol, op

DHCPD = Protocol("dhcpd", [
    op("leases", 1, [], "leases", errors=["NOT_READY"]),
    op("stats", 2, [], "stats", errors=["NOT_READY"]),
], tag=0x4448)
