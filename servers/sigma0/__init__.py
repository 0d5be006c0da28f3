"""sigma0: the root pager. It owns every frame of RAM (mapped 1:1 into it by the kernel,
MEM_SIGMA0) and maps frames on request. `protocol` declares what it speaks (SIGMA0; clients
use `SIGMA0.client(l4, gate)`), `server` serves it, `boot` starts it in a test system."""
from .protocol import SIGMA0
from .server import boot, main

__all__ = ["SIGMA0", "boot", "main"]
