"""Task functions for tests/kernel/test_rpc.py and test_aio.py, run as real task processes
with `python -m kernel.user.task tests.kernel.rpc_tasks:FUNC`.

KV is a tiny key-value protocol declared once with `kernel.user.rpc`; `kv_server` serves it.
"""
from __future__ import annotations

import asyncio
import sys

from kernel.user.client import L4
from kernel.user.rpc import Call, Protocol, Reply, RpcError, op

KV = Protocol("kv", [
    op("put", 1, ["key:str", "value:bytes"], None, doc="store value under key"),
    op("get", 2, ["key:str"], "value", errors=["NOT_FOUND"], doc="the value under key"),
    op("delete", 3, ["key:str"], "existed"),
    op("stats", 4, [], ("keys", "bytes", "caller_label")),
    op("crash", 5, [], None, doc="the implementation raises an undeclared exception"),
    op("lie", 6, [], None, errors=["NOT_FOUND"], doc="raises an error it did not declare"),
    op("share_gate", 7, [], "slot", doc="replies with a capability (a gate of the server's)"),
    op("stop", 9, [], None),
])


class KvImpl:
    """The implementation: plain methods, each taking the Call and the op's arguments."""

    def __init__(self, l4: L4 | None = None) -> None:
        self.store: dict[str, bytes] = {}
        self.l4 = l4
        self.stopping = False

    def put(self, call: Call, key: str, value: bytes) -> None:
        self.store[key] = value

    def get(self, call: Call, key: str) -> bytes:
        if key not in self.store:
            raise RpcError("NOT_FOUND", f"no key {key!r}")
        return self.store[key]

    def delete(self, call: Call, key: str) -> bool:
        return self.store.pop(key, None) is not None

    def stats(self, call: Call) -> dict:
        return {"keys": len(self.store), "bytes": sum(map(len, self.store.values())),
                "caller_label": call.label}

    def crash(self, call: Call) -> None:
        raise ZeroDivisionError("on purpose")

    def lie(self, call: Call) -> None:
        raise RpcError("SOMETHING_ELSE", "not in the declaration")

    def share_gate(self, call: Call) -> Reply:
        assert self.l4 is not None
        gate = self.l4.create_gate(label=4242)
        return Reply(gate, [[1, gate, 1]])      # map the gate, INVOKE only

    def stop(self, call: Call) -> None:
        self.stopping = True


def kv_server(l4: L4) -> int:
    """Serve KV on every gate bound to our main thread until a `stop` request."""
    impl = KvImpl(l4)
    n = KV.serve(l4, impl, until=lambda: impl.stopping)
    print(f"kv_server handled {n} requests", file=sys.stderr, flush=True)
    return 0


def kv_client(l4: L4, key: str, value: str) -> int:
    """Put, get back and compare through the 'kv' capability; exit 0 on success."""
    kv = KV.client(l4, l4.caps["kv"])
    kv.put(key, value.encode())
    return 0 if kv.get(key) == value.encode() else 1


def async_kv_client(l4: L4, key: str, value: str) -> int:
    """The same through AsyncL4 on uvloop: a second thread of this task, connected async."""
    import uvloop

    from kernel.user.aio import AsyncL4

    new = l4.create_thread()

    async def main() -> int:
        a = await AsyncL4.connect(l4.kernel_sock, new.secret, l4.caps)
        try:
            kv = KV.client(a, a.caps["kv"])
            await kv.put(key, value.encode())
            return 0 if await kv.get(key) == value.encode() else 1
        finally:
            a.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def echo_server(l4: L4) -> int:
    """Raw echo (no rpc): replies with the data and proto it got; b'stop' ends it."""
    msg = l4.wait()
    while True:
        if msg.data == b"stop":
            l4.reply(msg.reply, b"bye")
            return 0
        msg = l4.reply_and_wait(msg.reply, msg.data, proto=msg.proto)
