"""The example key-value store's protocol, declared once: the stub and the dispatch follow it.

Each client has a namespace of its own, picked by the label of the gate it calls (the
kernel's word, so no client can read or overwrite another's keys). Through the admin gate
(label ADMIN_LABEL = 0, the launcher's) a supervisor sees every client's usage and can drop
a client's keys; the framework refuses those ops through any other gate (error DENIED).

    put(key, value) -> None
    get(key) -> value             errors NOT_FOUND
    keys() -> [key, ...]          the caller's keys, sorted
    usage() -> {label: bytes}     admin only
    forget(label) -> dropped      admin only: how many keys client `label` lost
"""
from __future__ import annotations

from kernel.user.rpc import Protocol, op

KV = Protocol("example.kv", [
    op("put", 1, ["key:str", "value:bytes"], None),
    op("get", 2, ["key:str"], "value", errors=["NOT_FOUND"]),
    op("keys", 3, [], "keys"),
    op("usage", 10, [], "usage", admin=True),          # only through the admin gate (label 0)
    op("forget", 11, ["label:int"], "dropped", admin=True),
], tag=0x4B56)
