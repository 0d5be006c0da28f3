"""moe: dataspaces, region management and paging for its clients. See `server`."""
from .client import Dataspace, MoeAdmin, MoeSession
from .server import PROTOCOL, main

__all__ = ["PROTOCOL", "Dataspace", "MoeAdmin", "MoeSession", "main"]
