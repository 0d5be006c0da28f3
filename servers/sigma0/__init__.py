"""sigma0: the root pager. It owns every frame of RAM (mapped 1:1 into it by the kernel,
MEM_SIGMA0) and maps frames on request. `protocol` declares what it speaks (SIGMA0; clients
use `SIGMA0.client(l4, gate)`), `server` serves it, `boot` starts it in a test system. The
server is imported only when `boot` or `main` is asked for: a client loads no server code."""
from typing import Any

from .protocol import SIGMA0

__all__ = ["SIGMA0", "boot", "main"]


def __getattr__(name: str) -> Any:
    if name in ("boot", "main"):
        from . import server
        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
