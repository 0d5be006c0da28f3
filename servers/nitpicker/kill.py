"""Kill mode's last step: ask the launcher to end a client's task.

    end_task(l4, label) -> None (asked and done) | the reason it was not

Nitpicker never signals a process itself (it cannot: tasks are sandboxed). It asks the
launcher on its `launcher` capability (launcher/names.py) with `end_client(service, label)`:
the launcher ends the task routed to Nitpicker's service under that label, and only if the
caller provides that service (a server may end its own clients, nothing else); the task's
restart policy decides what follows, as after `l4run kill`. A launcher without that
operation answers UNKNOWN_OP, reported as the reason.
"""
from __future__ import annotations

from typing import Any, cast

from kernel.user.client import L4
from kernel.user.errors import L4Error
from kernel.user.rpc import Protocol, RemoteError, op

SERVICE = "nitpicker"

# The launcher's NAMES protocol, the one op Nitpicker uses (declared in launcher/names.py;
# servers do not import the launcher, so the op is declared again here by its number).
NAMES_END = Protocol("launcher.names", [
    op("end_client", 2, ["service:str", "label:int"], None, errors=["DENIED", "NOT_ROUTED"]),
], tag=0x4C4E)


def end_task(l4: L4, label: int) -> str | None:
    """Ask the launcher to end the task routed to Nitpicker's service under `label`."""
    if "launcher" not in l4.caps:
        return "this task holds no 'launcher' capability (not started by l4run)"
    stub = cast(Any, NAMES_END.client(l4, l4.caps["launcher"], timeout=5000))
    try:
        stub.end_client(SERVICE, label)
    except RemoteError as e:
        return f"the launcher refused: {e.error} {e.reason}"
    except L4Error as e:
        return f"the launcher did not answer: {e}"
    return None
