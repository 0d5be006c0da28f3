"""Protocol fuzz: every server's declared protocol, generated requests, the real kernel.

For each server the conformance suite boots (`servers.ADAPTERS`: hello, counter, sigma0,
moe's admin and session protocols, io, the HAL's bus and device protocols, the launcher's
name service, the example store), `launcher.fuzz.protocol.ProtocolFuzzer` (its docstring
says how) first sends every declared op once, well-formed, and fails naming any op whose
handler the server's own counter (kernel/user/rpc.py, STATS_OP) did not see run; then
`REQUESTS` generated requests — well-formed ones and near misses: values off by one,
negative and huge, wrong types, arguments missing or extra, unknown opcodes, foreign proto
tags, data that is not a request, payloads at and past MAX_PAYLOAD, bogus capability
items, admin ops through a client gate, some sent one-way. The server must answer every
call in the one error shape or with a result (never hang, never die), never with an
undeclared exception (INTERNAL, but for an answer root had no window for), a well-formed
request must still work every 50 requests and at the end, and the report prints per op
how many requests reached its handler.

`l4run bench fuzz --protocols --requests N` runs the same at length.
"""
from __future__ import annotations

import pytest

from launcher.fuzz.protocol import fuzz_adapter

from .servers import ADAPTERS, Adapter

REQUESTS = 400
SEED = 20261201
# INTERNAL answers that are not the server's bug: an answer whose items root gave no window
# for (sigma0's memory) is replaced by this error (kernel/user/rpc.py, REPLY_ITEMS).
EXPECTED_INTERNAL = {"INTERNAL:REPLY_ITEMS", "INTERNAL:REPLY_REFUSED"}


@pytest.mark.parametrize("cls", ADAPTERS, ids=[a.name for a in ADAPTERS])
def test_protocol_fuzz(cls: type[Adapter]) -> None:
    a = cls()
    a.up()
    try:
        assert a.proc is not None
        proc = a.proc
        rep = fuzz_adapter(a, REQUESTS, SEED)
        print(f"\n{a.name}: {rep.requests} requests in {rep.seconds:.1f} s; handled per op "
              f"{rep.handled}; answers {rep.answers}")
        never = [op for op, n in rep.handled.items() if n <= 0]
        assert not never, f"{a.name}: ops whose handler was never reached: {never}"
        bugs = {k: n for k, n in rep.answers.items()
                if k.startswith("INTERNAL:") and k not in EXPECTED_INTERNAL}
        assert not bugs, f"{a.name}: undeclared exceptions (the server's bugs): {bugs}"
        assert proc.proc.poll() is None, f"{a.name} died"
        assert a.root.kernel_info()["stats"]["kernel_bugs"] == 0
    finally:
        a.down()
