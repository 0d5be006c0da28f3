"""Demo tasks for `configs/memory.toml`: a dataspace written by one task, read by another.

`writer(l4, size, pattern)`: allocates a dataspace from its moe session (`l4.caps["moe"]`),
attaches it, fills it with `pattern` through `kernel.user.vm.VM` (every page faults once; moe,
its pager, maps a zeroed page), then passes the dataspace capability to the reader
(`l4.caps["reader"]`) and stays alive, holding the memory, until it is killed.

`reader(l4)`: serves READER on its gate; each `read(size, pattern)` carries a dataspace
capability. It attaches the dataspace read-only through its own moe session, reads it through
its VM (moe maps the very pages the writer wrote), checks that the pattern fills it, logs what
it read, detaches it and answers {bytes, pattern_ok} (error INVALID: it could not read it).

`hog(l4, size)`: allocates and touches `size` bytes, logs "hog: touched", and waits (the
tests kill it to watch moe take the memory back).
"""
from __future__ import annotations

from typing import Any, cast

from kernel.abi import MemRights
from kernel.user.client import map_cap
from kernel.user.errors import L4Error, Timeout
from kernel.user.rpc import Call, Protocol, RemoteError, RpcError, op
from kernel.user.vm import VM

from .client import MoeSession

DS_SLOT = 500          # where the reader receives dataspace capabilities

READER = Protocol("moe.demo.reader", [
    op("read", 1, ["size:int", "pattern:str"], "result", errors=["INVALID"], caps_in=1,
       doc="read the dataspace sent along; answers {bytes, pattern_ok}"),
], tag=0x4D52)


def _log(text: str) -> None:
    print(text, flush=True)


def _size(v: str) -> int:
    """"64K", "1M" or a byte count."""
    v = v.strip().upper().rstrip("B").rstrip("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(v[-1:], 1)
    return int(v[:-1] if mult > 1 else v) * mult


def _fill(vm: VM, addr: int, size: int, pattern: bytes) -> None:
    data = (pattern * (size // len(pattern) + 1))[:size]
    vm.write(addr, data)


def _idle(l4: Any) -> int:
    """Block in the kernel until killed (a blocked task notices a dead kernel)."""
    while True:
        try:
            l4.wait(timeout=60_000)
        except Timeout:
            pass


def writer(l4: Any, size: str = "64K", pattern: str = "L4Py shared memory ") -> int:
    moe = MoeSession(l4, l4.caps["moe"])
    vm = VM(l4)
    n, pat = _size(size), pattern.encode()
    ds = moe.alloc(n)
    addr = moe.attach(ds.slot)
    _fill(vm, addr, ds.size, pat)
    _log(f"writer: dataspace {ds.id}: wrote {ds.size} bytes of {pattern!r} at 0x{addr:x} "
         f"({vm.faults} page faults served by moe)")
    reader_stub = cast(Any, READER.client(l4, l4.caps["reader"], timeout=30_000))
    try:
        ans = reader_stub.read(ds.size, pattern, _items=[map_cap(ds.slot, 0x5)])
        _log(f"writer: the reader answered {ans}")
    except RemoteError as e:
        _log(f"writer: the reader failed: {e}")
    return _idle(l4)


class Reader:
    """READER's implementation: reads the dataspace through our own moe session."""

    def __init__(self, l4: Any) -> None:
        self.l4, self.moe, self.vm = l4, MoeSession(l4, l4.caps["moe"]), VM(l4)

    def read(self, call: Call, size: int, pattern: str) -> dict:
        slot = call.items[0][1]
        try:
            return _read_shared(self.moe, self.vm, slot, size, pattern)
        except (L4Error, RemoteError, ValueError) as e:
            _log(f"reader: cannot read the dataspace: {e}")
            raise RpcError("INVALID", str(e)) from None
        finally:
            self.l4.cap_delete(slot)


def reader(l4: Any) -> int:
    READER.serve(l4, Reader(l4), window=(DS_SLOT, 1))
    return 0


def _read_shared(moe: MoeSession, vm: VM, slot: int, size: int, pattern: str) -> dict:
    addr = moe.attach(slot, MemRights.R)
    try:
        got = vm.read(addr, size)
    finally:
        moe.detach(addr)
    pat = pattern.encode()
    whole = (pat * (len(got) // len(pat) + 1))[:len(got)]
    ok = got == whole
    _log(f"reader: read {len(got)} bytes from the writer's dataspace: "
         f"{got[:len(pat)].decode(errors='replace')!r}... pattern {'ok' if ok else 'WRONG'}")
    return {"bytes": len(got), "pattern_ok": ok}


def hog(l4: Any, size: str = "1M") -> int:
    moe = MoeSession(l4, l4.caps["moe"])
    vm = VM(l4)
    ds = moe.alloc(_size(size))
    addr = moe.attach(ds.slot)
    vm.fill(addr, ds.size, 0xA5)
    _log(f"hog: touched {ds.size} bytes")
    return _idle(l4)


__all__ = ["writer", "reader", "hog"]
