"""The compiled fast path's own request reader (kernel/core/_fastpath.pyx) against Python's.

The compiled path reads the msgpack header itself, for the one shape it serves. Whatever it
makes of an unusual encoding of that shape — integers in wider formats than needed, an
integer past int64, a bool where an int belongs, a long array header, bytes after the array,
headers and payloads over the limits, timeouts just out of range — the kernel must answer as
the Python path does. Two live kernels (compiled, and `L4PY_FASTPATH=python`) get the same
raw requests, a server thread waiting for each call and answering it with reply_and_wait;
every answer of both threads must be the same.
"""
from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
import zmq

from kernel.abi import MAX_HEADER, MAX_PAYLOAD, MAX_TIMEOUT_MS, NEVER, Rights, Sys
from kernel.core import fastpath
from kernel.user.testing import System

from tests.kernel.test_fastpath import Conn

CALL, RW = int(Sys.CALL), int(Sys.REPLY_WAIT)


def _i64(v: int) -> bytes:
    return b"\xd3" + struct.pack(">q", v)


def _call(cap: bytes = b"\x14", proto: bytes = b"\x00", items: bytes = b"\x90",
          snd: bytes = b"\xff", rcv: bytes = b"\xff", tail: bytes = b"") -> bytes:
    return b"\x97" + bytes([CALL]) + cap + proto + items + snd + rcv + b"\xc0" + tail


def _rw(reply: bytes, proto: bytes = b"\x00", timeout: bytes = b"\xff") -> bytes:
    return b"\x96" + bytes([RW]) + reply + proto + b"\x90" + b"\xc0" + timeout


# (request header, payload): each a call from the client; the server's answer follows
CALLS: list[tuple[bytes, bytes | None]] = [
    (_call(), b"plain"),
    (_call(cap=_i64(20), proto=b"\xcc\x07"), b"wide ints"),
    (_call(cap=b"\xcf" + struct.pack(">Q", 20)), None),            # uint64 20
    (_call(proto=b"\xcf" + struct.pack(">Q", 2 ** 63)), None),      # past int64: INVALID
    (_call(proto=b"\xff"), None),                                   # proto -1
    (_call(cap=b"\xc3"), None),                                     # True as the slot
    (_call(tail=b"\x00"), None),                                    # a byte after the array
    (b"\xdc\x00\x07" + _call()[1:], b"array16"),                    # a long array header
    (_call(items=b"\xdc\x00\x00"), b"items as array16"),
    (_call(snd=b"\xce" + struct.pack(">I", MAX_TIMEOUT_MS + 1)), None),
    (_call(snd=b"\xce" + struct.pack(">I", MAX_TIMEOUT_MS)), b"longest timeout"),
    (_call(rcv=b"\xcd\xea\x60"), b"a receive timeout"),          # 60 s: a timer
    (_call(cap=b"\x15"), None),                                     # no INVOKE right
    (_call(cap=b"\x63"), None),                                     # an empty slot
    (_call(), b"x" * (MAX_PAYLOAD + 1)),
    (_call(tail=b"\xc0" * (MAX_HEADER - len(_call()) + 1)), None),  # header too long
    (_call(), b""),
    (_call(), b"y" * MAX_PAYLOAD),
]


def _run() -> tuple[list[Any], dict[str, Any]]:
    ctx = zmq.Context()
    log: list[Any] = []
    with System() as s:
        root = s.root
        srv, cli = root.create_task("srv", 64), root.create_task("cli", 64)
        gate = root.create_gate(7, thread=srv.thread)
        root.task_map(cli.slot, gate, 20, Rights.ALL)
        root.task_map(cli.slot, gate, 21, Rights.ALL & ~Rights.INVOKE)
        conns = {"srv": Conn(ctx, s.sock, srv.secret), "cli": Conn(ctx, s.sock, cli.secret)}
        try:
            conns["srv"].send(msgpack.packb([int(Sys.WAIT), None, NEVER]), None)
            reply = 0
            poller = zmq.Poller()
            for c in conns.values():
                poller.register(c.sock, zmq.POLLIN)
            for i, (hdr, payload) in enumerate(CALLS):
                conns["cli"].send(hdr, payload)
                # either the server receives the call, or the client gets an error
                assert poller.poll(20_000), f"request {i}: nothing came"
                got = conns["srv"].answers()
                log.append(("srv", i, got))
                for h, _ in got:
                    if len(h) == 6 and h[3]:
                        reply = h[3]
                if got:      # the server got the call: answer it, with a wide reply id once
                    rid = _i64(reply) if i % 2 else msgpack.packb(reply)
                    conns["srv"].send(_rw(rid, proto=b"\x03"), b"answer %d" % i)
                log.append(("cli", i, conns["cli"].answers(wait_ms=20_000)))
            info = root.kernel_info()
        finally:
            for c in conns.values():
                c.sock.close(0)
            ctx.term()
    return log, info


@pytest.mark.skipif(fastpath.KIND != "compiled", reason="the compiled fast path is not built")
def test_unusual_encodings_answer_as_the_python_path_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    comp_log, comp = _run()
    monkeypatch.setenv("L4PY_FASTPATH", "python")
    py_log, py = _run()
    assert comp["fast_path"] == "compiled" and py["fast_path"] == "python"
    for a, b in zip(comp_log, py_log):
        assert a == b, f"compiled {a} vs python {b}"
    assert len(comp_log) == len(py_log)
    assert comp["stats"]["fastpath_compiled"] >= 8, comp["stats"]
    for key in ("ipc", "errors", "malformed", "fastpath", "kernel_bugs"):
        assert comp["stats"][key] == py["stats"][key], key
    assert comp["errors"] == py["errors"]
    assert comp["stats"]["kernel_bugs"] == 0
