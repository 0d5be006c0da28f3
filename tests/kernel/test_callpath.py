"""The task library's plain-call path (kernel/user/client.py) changes speed, never behaviour.

A plain call (data only) and a plain reply_and_wait skip the argument records: their headers
must be the bytes the general path packs, for every capability, proto tag and reply id the
record would take (ints of every msgpack width, negative ones, the edges of int64); a
receipt is read straight into a `Message`, and every other answer must come out of
`parse_answer` exactly as the general decoder (`abi.decode_answer`) makes it — the same
value, or the same exception with the same text. Live, against a real kernel and a real
server task, the plain path answers what the general path answers (`_Api.call`, which builds
the record), raises the same errors (no capability, a dead server: PeerDied), and with the
compiled part forced off (`L4PY_CALLPATH=python`) the library still works.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import msgpack
import pytest

from kernel.abi import (NEVER, CallArgs, ReplyWaitArgs, Rights, decode_answer, encode_args,
                        encode_error, encode_ok, encode_receipt, Err, AbiError, unpack)
from kernel.user import client, errors
from kernel.user.client import Message, _Api, parse_answer, plain_call_header
from kernel.user.testing import PROJECT_ROOT

INTS = [0, 1, 5, 127, 128, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
        2**63 - 1, 2**64 - 1, -1, -32, -33, -128, -129, -2**15, -2**31, -2**63]


def test_plain_headers_are_the_records_bytes() -> None:
    for cap in INTS:
        for proto in (0, 1, 300, -5, 2**40):
            assert plain_call_header(cap, proto) == encode_args(
                CallArgs(cap, proto, [], NEVER, NEVER, None)), (cap, proto)
    for reply in INTS:
        for proto in (0, 7, -1, 70000):
            for data in (b"", b"x" * 100):
                fast = client.reply_wait_frames(reply, data, proto, (), None, None)
                want = [encode_args(ReplyWaitArgs(reply, proto, [], None, NEVER))]
                assert fast == (want + [data] if data else want), (reply, proto, data)


def test_uncommon_reply_and_wait_keeps_the_general_encoding() -> None:
    # items, a window, a timeout, a bool: the record's own packing
    for args in (((5, b"d", 0, [[1, 2, 3]], None, None)), ((5, b"", 0, (), 10, None)),
                 ((5, b"", 0, (), None, (300, 4))), ((True, b"", 0, (), None, None))):
        reply, data, proto, items, timeout, window = args
        got = client.reply_wait_frames(*args)
        hdr = encode_args(ReplyWaitArgs(reply, proto, [list(i) for i in items],
                                        list(window) if window else None,
                                        NEVER if timeout is None else timeout))
        assert got[0] == hdr


def _general(frames: list[bytes], receiving: bool) -> Any:
    """parse_answer as it was before the plain path: decode_answer for everything."""
    try:
        err, value = decode_answer(frames[0], receiving)
    except AbiError as e:
        raise errors.ProtocolViolation(e.reason) from None
    if err:
        raise errors.from_code(err, value)
    if receiving:
        return Message(value.label, value.rights, value.reply, value.proto, value.items,
                       frames[1] if len(frames) > 1 else b"")
    return value


def _outcome(f: Any, *args: Any) -> Any:
    try:
        v = f(*args)
        return ("ok", type(v), v)
    except Exception as e:      # noqa: BLE001 - the comparison is the point
        return ("raise", type(e), str(e))


ANSWERS = [
    [encode_receipt(3, 7, 9, 0, [])],
    [encode_receipt(3, 7, 9, -4, []), b"payload"],
    [encode_receipt(2**63 - 1, int(Rights.ALL), 0, 5, [[1, 200, 7], [2, 4096, 3]]), b"x"],
    [encode_ok(None)], [encode_ok([1, 2])], [encode_ok({"a": 1})],
    [encode_error(Err.NO_CAP, "slot 5 is empty")],
    [encode_error(Err.PEER_DIED, "the server died")],
    [encode_error(Err.TIMEOUT, "timed out")],
    [msgpack.packb([0, 1, 2, 3, 4, [], "extra"])],       # longer than a receipt
    [msgpack.packb([0, 1, 2])],                            # shorter
    [msgpack.packb([False, 1, 2, 3, 4, []])],              # 0 spelled False
    [msgpack.packb({1: 2})], [msgpack.packb([])], [msgpack.packb("str")], [b"\xc1"], [b""],
    [msgpack.packb([0, "label", b"r", None, 1.5, {}])],
]


@pytest.mark.parametrize("receiving", [True, False])
def test_parse_answer_is_the_general_decoder(receiving: bool) -> None:
    for frames in ANSWERS:
        fast = _outcome(parse_answer, frames, receiving)
        assert fast == _outcome(_general, frames, receiving), frames


# -- live ---------------------------------------------------------------------------------

def test_plain_call_answers_as_the_general_call(kit: Any) -> None:
    srv, gate = kit.server(0x51)
    root = kit.root
    for data in (b"", b"hello", b"z" * 5000):
        for proto in (0, 3):
            fast = root.call(gate, data, proto=proto)
            slow = _Api.call(root, gate, data, proto=proto)
            assert type(fast) is Message and fast._replace(data=b"") == slow._replace(data=b"")
            assert unpack(fast.data) == unpack(slow.data) == {
                "label": 0x51, "rights": int(Rights.ALL), "proto": proto, "data": data,
                "server": "echo_server"}
    assert root._plain and all(type(h) is bytes for h in root._plain.values())
    # errors: the same exception, the same text, from both
    empty = 4000
    outcomes = [_outcome(f, gate + empty) for f in (root.call, lambda c: _Api.call(root, c))]
    assert outcomes[0] == outcomes[1] and outcomes[0][1] is errors.NoCapability
    general = (lambda *a, **kw: _Api.call(root, *a, **kw))
    neg = [_outcome(lambda: f(gate, b"x", proto=-1)) for f in (root.call, general)]
    assert neg[0] == neg[1] and neg[0][0] == "raise", neg
    srv.kill(signal.SIGKILL)
    kit.wait_gone(srv)
    with pytest.raises(errors.PeerDied) as fast_err:
        root.call(gate, b"after")
    with pytest.raises(errors.PeerDied) as slow_err:
        _Api.call(root, gate, b"after")
    assert str(fast_err.value) == str(slow_err.value)


def test_the_header_cache_stays_bounded(kit: Any) -> None:
    t = kit.root_thread()
    for cap in range(3000, 3000 + 3 * client._PLAIN_CACHE):
        with pytest.raises(errors.NoCapability):
            t.call(cap)
        assert len(t._plain) <= client._PLAIN_CACHE


def test_a_wait_past_the_receive_timeout_goes_on_until_the_answer(kit: Any) -> None:
    """The compiled receive hands a socket timeout (POLL_MS) back to `_answer`, which checks
    the kernel and waits on: a call held longer than that still ends as it should."""
    srv, gate = kit.server(0x52)
    t = kit.root_thread()
    got: list[Any] = []
    th = threading.Thread(target=lambda: got.append(_outcome(t.call, gate, b"noreply")))
    th.start()
    time.sleep(t.POLL_MS / 1000 * 1.5)
    assert not got                                   # still waiting, past one timeout
    srv.kill(signal.SIGKILL)
    th.join(20)
    assert got and got[0][:2] == ("raise", errors.PeerDied), got


def test_which_call_path_runs() -> None:
    try:
        from kernel.user import _callpath  # noqa: F401
    except ImportError:
        assert client.CALLPATH == "python" and "not built" in client.WHY_PYTHON
    else:
        assert (client.CALLPATH == "compiled") == (os.environ.get("L4PY_CALLPATH") != "python")


FORCED = """
from kernel.user import client
from kernel.user.testing import System
assert client.CALLPATH == "python" and client.WHY_PYTHON == "L4PY_CALLPATH=python"
with System() as s:
    srv = s.spawn("tests.kernel.tasks:echo_server")
    gate = s.root.create_gate(9, thread=srv.thread)
    m = s.root.call(gate, b"hi")
    assert m.label == 0 and client.unpack(m.data)["data"] == b"hi", m
    try:
        s.root.call(gate + 999)
    except client.errors.NoCapability:
        print("ok")
"""


def test_the_python_path_when_the_compiled_one_is_off() -> None:
    """L4PY_CALLPATH=python (as when the module is not built): the same library on pyzmq,
    in the test's process and in the spawned server alike."""
    r = subprocess.run([sys.executable, "-c", FORCED], cwd=PROJECT_ROOT, capture_output=True,
                       text=True, timeout=120, env={**os.environ, "L4PY_CALLPATH": "python"})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
