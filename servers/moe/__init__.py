"""moe: dataspaces, region maps and paging for tasks. `protocol` declares what it speaks,
`server` serves it, `client` has the stubs (MoeAdmin for the launcher, MoeSession for tasks).
The server is imported only when `main` is asked for: a client of moe loads no server code."""
from typing import Any

from .client import Dataspace, MoeAdmin, MoeSession
from .protocol import MOE_ADMIN, MOE_DATASPACE, MOE_SESSION

__all__ = ["MOE_ADMIN", "MOE_SESSION", "MOE_DATASPACE", "Dataspace", "MoeAdmin", "MoeSession",
           "main"]


def __getattr__(name: str) -> Any:
    if name == "main":
        from .server import main
        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
