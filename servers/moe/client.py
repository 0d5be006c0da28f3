"""Client stubs for moe, built from its protocols (servers/moe/protocol.py).

`MoeAdmin` (the launcher's, on the admin gate) and `MoeSession` (a client's, on its session
gate) wrap the generated stubs with what the declaration leaves to the caller: which of our
slots receives a capability moe answers with, and the capability item a request about a
dataspace carries. Errors come as `kernel.user.rpc.RemoteFailure` (`.error` names the
declared error: QUOTA, INVALID, ...), `BadRequest` or `ServerFault`.
"""
from __future__ import annotations

from typing import Any, NamedTuple, cast

from kernel.abi import MemRights
from kernel.user import errors
from kernel.user.client import map_cap
from kernel.user.rpc import Protocol

from .protocol import MOE_ADMIN, MOE_SESSION


class Dataspace(NamedTuple):
    slot: int        # our capability naming it
    id: int
    size: int


class _Client:
    protocol: Protocol

    def __init__(self, l4: Any, gate: int, recv_slot: int = 3000,
                 timeout: float | None = None) -> None:
        self.l4, self.gate = l4, gate
        self._next = recv_slot          # where capabilities from moe land in our space
        self.timeout = timeout          # ms for each call (None: wait for moe forever)
        # stub ops are attributes made from the declaration: the checker sees them as Any
        self.stub = cast(Any, self.protocol.client(l4, gate, timeout=timeout))

    def _window(self) -> tuple[int, int]:
        """A one-slot receive window at our next free slot."""
        while True:
            try:
                self.l4.cap_inspect(self._next)
                self._next += 1
            except errors.NoCapability:
                return (self._next, 1)

    def _received(self) -> int:
        return int(self.stub.last_items[0][1])


class MoeAdmin(_Client):
    """The launcher's side: create a session per client (its moe capability and pager)."""
    protocol = MOE_ADMIN

    def session(self, name: str, quota: int) -> int:
        """Answers our slot of the new session gate: map it to the client, make it its pager."""
        return self.open(name, quota)[0]

    def open(self, name: str, quota: int) -> tuple[int, int]:
        """A new session: (our slot of its gate, its number for `client_gone`)."""
        v = self.stub.session(name, quota, _window=self._window())
        return self._received(), v["session"]

    def client_gone(self, session: int) -> dict:
        """The client of session `session` died: moe frees its dataspaces and quota."""
        return dict(self.stub.client_gone(session))

    def info(self) -> dict:
        return dict(self.stub.info())


class MoeSession(_Client):
    """A client's session: allocate dataspaces, attach them, share them by capability."""
    protocol = MOE_SESSION

    def alloc(self, size: int) -> Dataspace:
        v = self.stub.alloc(size, _window=self._window())
        return Dataspace(self._received(), v["ds"], v["size"])

    def attach(self, ds_slot: int, rights: int = MemRights.RW, addr: int | None = None) -> int:
        return int(self.stub.attach(addr, int(rights), _items=[map_cap(ds_slot, 0x5)])["addr"])

    def detach(self, addr: int) -> None:
        self.stub.detach(addr)

    def copy(self, ds_slot: int) -> Dataspace:
        v = self.stub.copy(_items=[map_cap(ds_slot, 0x5)], _window=self._window())
        return Dataspace(self._received(), v["ds"], v["size"])

    def release(self, ds_slot: int) -> None:
        self.stub.release(_items=[map_cap(ds_slot, 0x5)])

    def info(self) -> dict:
        return dict(self.stub.info())
