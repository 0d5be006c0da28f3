"""Client stubs for moe, driven by `protocol.OPS` (names, arguments, items in and out)."""
from __future__ import annotations

from typing import Any, NamedTuple

from kernel.user import errors
from kernel.abi import Err, MemRights, pack, unpack
from kernel.user.client import map_cap

from .protocol import OPS


class Dataspace(NamedTuple):
    slot: int        # our capability naming it
    id: int
    size: int


class _Stub:
    kind = ""

    def __init__(self, l4: Any, gate: int, recv_slot: int = 3000,
                 timeout: float | None = None) -> None:
        self.l4, self.gate = l4, gate
        self._next = recv_slot          # where capabilities from moe land in our space
        self.timeout = timeout          # ms for each call (None: wait for moe forever)

    def _rpc(self, op: str, cap: int | None = None, **args: Any) -> tuple[Any, list]:
        names, caps_in, caps_out, _ = OPS[self.kind][op]
        unknown = set(args) - set(names)
        if unknown:
            raise errors.InvalidArgument(f"moe {op}: unknown arguments {sorted(unknown)}")
        if caps_in and cap is None:
            raise errors.InvalidArgument(f"moe {op} needs a dataspace capability")
        items = [map_cap(cap, 0x5)] if caps_in and cap is not None else []
        win = None
        if caps_out:
            while True:                 # the next free slot of ours
                try:
                    self.l4.cap_inspect(self._next)
                    self._next += 1
                except errors.NoCapability:
                    break
            win = (self._next, 1)
        msg = self.l4.call(self.gate, pack({"op": op, **args}), items=items, window=win,
                           snd_timeout=self.timeout, rcv_timeout=self.timeout)
        ans = unpack(msg.data)
        if "err" in ans:
            code = Err[ans["err"]] if ans["err"] in Err.__members__ else Err.INVALID
            raise errors.from_code(int(code), f"moe {op}: {ans['reason']}")
        return ans["ok"], msg.items


class MoeAdmin(_Stub):
    """The launcher's side: create a session per client (its moe capability and pager)."""
    kind = "admin"

    def session(self, name: str, quota: int) -> int:
        """Answers our slot of the new session gate: map it to the client, make it its pager."""
        return self.open(name, quota)[0]

    def open(self, name: str, quota: int) -> tuple[int, int]:
        """A new session: (our slot of its gate, its number for `client_gone`)."""
        v, items = self._rpc("session", name=name, quota=quota)
        return items[0][1], v["session"]

    def client_gone(self, session: int) -> dict:
        """The client of session `session` died: moe frees its dataspaces and quota."""
        return self._rpc("client_gone", session=session)[0]

    def info(self) -> dict:
        return self._rpc("info")[0]


class MoeSession(_Stub):
    """A client's session: allocate dataspaces, attach them, share them by capability."""
    kind = "session"

    def alloc(self, size: int) -> Dataspace:
        v, items = self._rpc("alloc", size=size)
        return Dataspace(items[0][1], v["ds"], v["size"])

    def attach(self, ds_slot: int, rights: int = MemRights.RW, addr: int | None = None) -> int:
        return self._rpc("attach", ds_slot, addr=addr, rights=int(rights))[0]["addr"]

    def detach(self, addr: int) -> None:
        self._rpc("detach", addr=addr)

    def copy(self, ds_slot: int) -> Dataspace:
        v, items = self._rpc("copy", ds_slot)
        return Dataspace(items[0][1], v["ds"], v["size"])

    def release(self, ds_slot: int) -> None:
        self._rpc("release", ds_slot)

    def info(self) -> dict:
        return self._rpc("info")[0]
