"""sigma0: the root pager. It owns every frame of RAM (mapped 1:1 into it by the kernel,
MEM_SIGMA0) and maps frames on request. See `server` for the protocol, `boot` to start it."""
from .server import PROTOCOL, Sigma0Client, boot, main

__all__ = ["PROTOCOL", "Sigma0Client", "boot", "main"]
