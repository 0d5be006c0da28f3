"""Demo tasks for `configs/memory.toml`: a dataspace written by one task, read by another.

`writer(l4, size, pattern)`: allocates a dataspace from its moe session (`l4.caps["moe"]`),
attaches it, fills it with `pattern` through `kernel.user.vm.VM` (every page faults once; moe,
its pager, maps a zeroed page), then passes the dataspace capability to the reader
(`l4.caps["reader"]`) and stays alive, holding the memory, until it is killed.

`reader(l4)`: serves its gate; each request carries a dataspace capability. It attaches the
dataspace read-only through its own moe session, reads it through its VM (moe maps the very
pages the writer wrote), checks that the pattern fills it, logs what it read, detaches it
and answers.

`hog(l4, size)`: allocates and touches `size` bytes, logs "hog: touched", and waits (the
tests kill it to watch moe take the memory back).
"""
from __future__ import annotations

import sys
from typing import Any

from kernel.abi import MemRights, pack, unpack
from kernel.user.client import map_cap
from kernel.user.errors import L4Error, Timeout
from kernel.user.vm import VM

from .client import MoeSession

DS_SLOT = 500          # where the reader receives dataspace capabilities


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
    ans = unpack(l4.call(l4.caps["reader"], pack({"size": ds.size, "pattern": pattern}),
                         items=[map_cap(ds.slot, 0x5)], rcv_timeout=30_000).data)
    _log(f"writer: the reader answered {ans}")
    return _idle(l4)


def reader(l4: Any) -> int:
    moe = MoeSession(l4, l4.caps["moe"])
    vm = VM(l4)
    reply, data = 0, b""
    while True:
        try:
            msg = l4.reply_and_wait(reply, data, window=(DS_SLOT, 1))
        except L4Error as e:       # the writer died before our answer: go on
            print(f"reader: reply failed: {e}", file=sys.stderr, flush=True)
            reply, data = 0, b""
            continue
        reply = msg.reply
        try:
            data = pack({"ok": _read_shared(l4, moe, vm, msg)})
        except (L4Error, KeyError, ValueError) as e:
            _log(f"reader: cannot read the dataspace: {e}")
            data = pack({"err": str(e)})


def _read_shared(l4: Any, moe: MoeSession, vm: VM, msg: Any) -> dict:
    body = unpack(msg.data)
    if not msg.items:
        raise ValueError("no dataspace capability came with the request")
    slot = msg.items[0][1]
    try:
        addr = moe.attach(slot, MemRights.R)
        try:
            got = vm.read(addr, int(body["size"]))
        finally:
            moe.detach(addr)
    finally:
        l4.cap_delete(slot)
    pat = str(body["pattern"]).encode()
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
