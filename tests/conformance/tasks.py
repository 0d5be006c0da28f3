"""Tasks the conformance suite starts: a client that calls a server until it is killed, and
the launcher's name service in a task of its own.

`caller(l4, data_hex, proto)` calls capability "svc" with the same message forever, ignoring
every error: the suite SIGKILLs it at an arbitrary moment (usually while its call is inside
the server) and checks that the server keeps serving the others.
"""
from __future__ import annotations

from kernel.user.client import L4
from kernel.user.errors import L4Error


def caller(l4: L4, data_hex: str, proto: str = "0") -> int:
    data, tag, svc = bytes.fromhex(data_hex), int(proto), l4.caps["svc"]
    while True:
        try:
            l4.call(svc, data, proto=tag)
        except L4Error:
            pass


def name_service(l4: L4) -> int:
    """The launcher's name service (launcher.names.Supervisor over NAMES) in a task of its
    own: "svc" is routed to every caller (a gate of ours), any other name to none."""
    from kernel.abi import Rights
    from launcher.names import NAMES, Supervisor
    gate = l4.create_gate(4242)
    sup = Supervisor(lambda label, name: (gate, int(Rights.INVOKE)) if name == "svc" else None,
                     lambda body: None)
    NAMES.serve(l4, sup)
    return 0
