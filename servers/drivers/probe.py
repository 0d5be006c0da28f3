"""A probe: asks io for each device named on its command line and logs the answer.

    run(l4, "disk0", "fb0", ...)

Log lines: `probe: NAME: granted (KIND, line N)` or `probe: NAME: refused: DENIED: ...`, then
`probe: done`. It shows what the image's policy lets this task reach; io refuses the rest.
"""
from __future__ import annotations

from kernel.user.client import L4
from kernel.user.rpc import RemoteFailure

from .common import idle, io_client, log, open_device


def run(l4: L4, *names: str) -> int:
    log(f"probe: io lists {io_client(l4).devices()} for this task")
    for name in names:
        try:
            d = open_device(l4, name)
            log(f"probe: {name}: granted ({d.kind}, line {d.info['line']})")
        except RemoteFailure as e:
            log(f"probe: {name}: refused: {e}")
    log("probe: done")
    return idle(l4)
