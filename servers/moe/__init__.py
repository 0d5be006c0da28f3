"""moe: dataspaces, region maps and paging for tasks. `protocol` declares what it speaks,
`server` serves it, `client` has the stubs (MoeAdmin for the launcher, MoeSession for tasks)."""
from .client import Dataspace, MoeAdmin, MoeSession
from .protocol import MOE_ADMIN, MOE_DATASPACE, MOE_SESSION
from .server import main

__all__ = ["MOE_ADMIN", "MOE_SESSION", "MOE_DATASPACE", "Dataspace", "MoeAdmin", "MoeSession",
           "main"]
