"""The example key-value store: one method per op of KV (protocol.py).

Each method takes the `Call` (who asks: `call.label`) and the op's arguments, already checked
against the declaration; `RpcError` answers one of the op's declared errors. The framework
does the rest: the server loop, decoding, refusing bad requests and admin ops through client
gates, the one error shape. Run it: `python -m kernel.user.task servers.example.server:main`.
"""
from __future__ import annotations

from kernel.user.client import L4
from kernel.user.rpc import Call, RpcError

from .protocol import KV


class Store:
    def __init__(self) -> None:
        self.spaces: dict[int, dict[str, bytes]] = {}     # client label -> its keys

    def put(self, call: Call, key: str, value: bytes) -> None:
        self.spaces.setdefault(call.label, {})[key] = value

    def get(self, call: Call, key: str) -> bytes:
        value = self.spaces.get(call.label, {}).get(key)
        if value is None:
            raise RpcError("NOT_FOUND", f"no key {key!r}")
        return value

    def keys(self, call: Call) -> list[str]:
        return sorted(self.spaces.get(call.label, {}))

    def usage(self, call: Call) -> dict[str, int]:
        return {str(label): sum(map(len, mine.values())) for label, mine in self.spaces.items()}

    def forget(self, call: Call, label: int) -> int:
        return len(self.spaces.pop(label, {}))


def main(l4: L4) -> int:
    KV.serve(l4, Store())
    return 0
