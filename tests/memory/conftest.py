"""Fixtures: a real kernel with sigma0 and helpers to start agents and talk to them."""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from kernel.abi import pack, unpack
from kernel.user.testing import System
from servers.sigma0 import boot as boot_sigma0


class Mem:
    def __init__(self) -> None:
        self.sys = System()
        self.root = self.sys.root
        self.sigma0 = boot_sigma0(self.sys)
        self.s0gates: dict[str, int] = {}
        self.gates: dict[str, int] = {}
        self.procs: dict[str, Any] = {}

    def s0gate(self, name: str) -> int:
        g = self.root.create_gate(len(self.s0gates) + 1, thread=self.sigma0.thread)
        self.s0gates[name] = g
        return g

    def agent(self, name: str, peers: tuple[str, ...] = (), mode: str = "",
              pager: str | None = None, caps: dict | None = None,
              handler: int | None = None, pager_gate: int | None = None) -> Any:
        c = {"sigma0": self.s0gate(name)}
        c.update({p: self.gates[p] for p in peers})
        c.update(caps or {})
        tp = self.sys.spawn("tests.memory.agents:agent", name, args=(mode,) if mode else (),
                            caps=c, handler=handler)
        self.gates[name] = self.root.create_gate(100 + len(self.gates), thread=tp.thread)
        if pager is not None or pager_gate is not None:
            self.root.thread_control(tp.thread, pager=pager_gate or self.gates[pager])
        self.procs[name] = tp
        return tp

    def do(self, name: str, op: str, l4: Any = None, **args: Any) -> Any:
        m = (l4 or self.root).call(self.gates[name], pack({"op": op, **args}), rcv_timeout=20000)
        return unpack(m.data)

    def ok(self, name: str, op: str, **args: Any) -> Any:
        ans = self.do(name, op, **args)
        assert "ok" in ans, ans
        return ans["ok"]

    def moe(self) -> Any:
        """Start moe (a client of sigma0); answers the admin stub."""
        from servers.moe import MoeAdmin
        tp = self.sys.spawn("servers.moe.server:main", "moe", caps={"sigma0": self.s0gate("moe")})
        self.procs["moe"] = tp
        return MoeAdmin(self.root, self.root.create_gate(0, thread=tp.thread))

    def moe_client(self, admin: Any, name: str, quota: int = 1 << 20, **kw: Any) -> Any:
        sess = admin.session(name, quota)
        return self.agent(name, caps={"moe": sess}, pager_gate=sess, **kw)

    def close(self) -> None:
        self.sys.close()


@pytest.fixture
def mem() -> Iterator[Mem]:
    m = Mem()
    try:
        yield m
    finally:
        m.close()
