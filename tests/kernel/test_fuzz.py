"""Property test: no frame a connection can send crashes, hangs or wedges the kernel.

Hypothesis generates batches of frames — random bytes, well-formed headers with mutated
fields and wrong types, wrong frame counts, oversized headers/payloads/item lists, unknown
system-call numbers, garbage items and receive windows, HELLO with random secrets — and
sends them over raw ZeroMQ DEALER sockets to one LIVE kernel process:

- unauthenticated connections (every answer must be an error: NOT_AUTH, PROTOCOL, ...);
- authenticated threads: a fresh task per batch (created by root, connected with its
  secret), so a batch may even destroy or exit its own task without spoiling the next one.

Invariants checked after every batch: the kernel process lives; every frame got exactly one
answer, a well-formed [err, ...] array; an authenticated thread that is still alive is not
left wedged (a plain call afterwards is not answered BUSY). At the end a well-behaved
client/server pair of real task processes still completes a call, and KERNEL_INFO shows the
malformed/error counters moved and no kernel bug was counted.

Blocking calls would be answered only after their timeout, so generated *valid* timeouts
are 0 (poll); invalid ones (negative, too large, wrong type) are fair game.
"""
from __future__ import annotations

import os
from typing import Any, Iterator

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel import abi
from kernel.abi import LAYOUTS, MAX_HEADER, MAX_ITEMS, MAX_PAYLOAD, Err, Sys
from kernel.user.testing import System

ANSWER_BOUND_MS = 20_000     # a hang fails the test; it is a liveness bound, not a timing
SETTINGS = settings(max_examples=300, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def fuzz_system() -> Iterator[System]:
    s = System()
    try:
        yield s
    finally:
        s.close()


# ---------------------------------------------------------------------------
# Strategies

mp_int = st.integers(min_value=-(2 ** 63), max_value=2 ** 64 - 1)   # what msgpack can carry
junk = st.one_of(
    st.none(), st.booleans(), mp_int,
    st.floats(allow_nan=True), st.text(max_size=20), st.binary(max_size=20),
    st.lists(mp_int, max_size=4), st.dictionaries(st.text(max_size=3), mp_int, max_size=2),
)
small_int = st.integers(min_value=-3, max_value=40)
any_int = st.one_of(small_int, st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1),
                    st.sampled_from([2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 63 - 1, -(2 ** 63), 4096]))
item = st.one_of(
    st.lists(small_int, min_size=3, max_size=3),
    st.tuples(st.sampled_from([1, 2]), small_int, st.integers(0, 15)).map(list),
    st.lists(any_int, max_size=5), junk,
)
items = st.one_of(st.just([]), st.lists(item, max_size=4), st.lists(item, min_size=MAX_ITEMS + 1,
                                                                        max_size=MAX_ITEMS + 3), junk)
window = st.one_of(st.none(), st.lists(any_int, min_size=2, max_size=2),
                   st.tuples(st.integers(0, 40), st.integers(-1, 20)).map(list),
                   st.lists(any_int, min_size=4, max_size=4), junk)
# Valid timeouts only 0 (see the module docstring); the rest must be refused.
timeout = st.one_of(st.just(0), st.integers(min_value=-(2 ** 63), max_value=-2),
                    st.integers(min_value=abi.MAX_TIMEOUT_MS + 1, max_value=2 ** 64 - 1),
                    st.sampled_from([1.5, "0", None, True]))

FIELD = {
    "int": st.one_of(small_int, any_int, junk),
    "int?": st.one_of(st.none(), small_int, any_int, junk),
    "bytes": st.one_of(st.binary(max_size=32), st.binary(min_size=257, max_size=300), junk),
    "str": st.one_of(st.text(max_size=12), st.text(min_size=257, max_size=260), junk),
    "bool?": st.one_of(st.none(), st.booleans(), junk),
    "items": items,
    "window": window,
    "timeout": timeout,
}


@st.composite
def mutated_header(draw: Any) -> list[Any]:
    """[sysno, fields...] close to a real layout: right or wrong types, right or wrong count."""
    sysno = draw(st.sampled_from(list(Sys)))
    fields = [draw(FIELD[f.kind]) for f in LAYOUTS[sysno]]
    how = draw(st.integers(0, 9))
    if how == 0 and fields:
        fields.pop(draw(st.integers(0, len(fields) - 1)))           # one argument short
    elif how == 1:
        fields.append(draw(junk))                                   # one too many
    return [int(sysno), *fields]


def packed(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


@st.composite
def request(draw: Any) -> list[bytes]:
    """One multipart request (1..5 frames)."""
    kind = draw(st.integers(0, 8))
    if kind == 0:                                        # random bytes, random frame count
        return draw(st.lists(st.binary(max_size=64), min_size=1, max_size=5))
    if kind == 1:                                        # unknown system-call numbers
        no = draw(st.integers(-(2 ** 63), 2 ** 63 - 1).filter(lambda n: n not in set(Sys)))
        return [packed([no, *draw(st.lists(small_int, max_size=4))])]
    if kind == 2:                                        # HELLO with random secrets
        return [packed([int(Sys.HELLO), draw(st.binary(max_size=40))])]
    if kind == 3:                                        # oversized header / payload
        big = draw(st.sampled_from(["header", "payload", "both"]))
        hdr = packed([int(Sys.SEND), 9, 0, [], 0])
        if big in ("header", "both"):
            hdr = packed([int(Sys.SEND), 9, 0, [], 0, "x" * MAX_HEADER])
        payload = b"\0" * (MAX_PAYLOAD + draw(st.integers(1, 100))) if big != "header" else b"p"
        return [hdr, payload]
    if kind == 4:                                        # non-array / odd msgpack headers
        return [packed(draw(st.one_of(junk, st.lists(junk, max_size=4), st.just([]))))]
    hdr = packed(draw(mutated_header()))
    frames = draw(st.integers(0, 3))                     # usually one payload frame at most
    frames = 0 if kind in (5, 6) else frames
    return [hdr, *draw(st.lists(st.binary(max_size=64), min_size=frames, max_size=frames))]


batch = st.lists(request(), min_size=1, max_size=16)


# ---------------------------------------------------------------------------
# Raw connections

class Raw:
    """A bare DEALER socket on kernel.sock: what any local process could open."""

    def __init__(self, sock_path: str) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.routing_id = os.urandom(16)
        self.sock.connect("ipc://" + sock_path)

    sent = 0    # requests sent by every Raw in this module (reported by the last test)

    def exchange(self, reqs: list[list[bytes]]) -> list[list[Any]]:
        """Send every request (pipelined), then read exactly one answer per request."""
        Raw.sent += len(reqs)
        for frames in reqs:
            self.sock.send_multipart(frames)
        answers = []
        for i in range(len(reqs)):
            if not self.sock.poll(ANSWER_BOUND_MS, zmq.POLLIN):
                raise AssertionError(f"no answer to request {i} of {len(reqs)}: {reqs[i]!r:.300}")
            got = self.sock.recv_multipart()
            hdr = msgpack.unpackb(got[0], raw=False)
            assert isinstance(hdr, list) and hdr and hdr[0] in set(Err), f"odd answer {hdr!r}"
            if hdr[0] != Err.OK:
                assert len(hdr) == 2 and isinstance(hdr[1], str) and hdr[1], f"no reason: {hdr!r}"
            answers.append(hdr)
        return answers

    def close(self) -> None:
        self.sock.close(0)


def kernel_alive(s: System) -> None:
    assert s.kernel.poll() is None, f"the kernel died (exit {s.kernel.returncode})"


def check_batch(s: System, reqs: list[list[bytes]], answers: list[list[Any]]) -> None:
    kernel_alive(s)
    assert len(answers) == len(reqs)


# ---------------------------------------------------------------------------
# The properties

@SETTINGS
@given(reqs=batch)
def test_unauthenticated_garbage(fuzz_system: System, reqs: list[list[bytes]]) -> None:
    raw = Raw(fuzz_system.sock)
    try:
        answers = raw.exchange(reqs)
        check_batch(fuzz_system, reqs, answers)
        # Without a valid secret nothing succeeds (a random secret is never a real one).
        assert all(a[0] != Err.OK for a in answers), answers
    finally:
        raw.close()


@SETTINGS
@given(reqs=batch)
def test_authenticated_garbage(fuzz_system: System, reqs: list[list[bytes]]) -> None:
    root = fuzz_system.root
    new = root.create_task("fuzzed", 24)
    raw = Raw(fuzz_system.sock)
    try:
        hello = raw.exchange([[abi.encode_request(Sys.HELLO, new.secret)]])
        assert hello[0][0] == Err.OK, hello
        answers = raw.exchange(reqs)
        check_batch(fuzz_system, reqs, answers)
        # Not wedged: a poll-wait is answered TIMEOUT (or OK: an IRQ it attached), or
        # NOT_AUTH/CANCELED if the batch ended its own task — never BUSY.
        after = raw.exchange([[abi.encode_request(Sys.WAIT, None, 0)]])[0]
        assert after[0] in (Err.TIMEOUT, Err.OK, Err.NOT_AUTH, Err.CANCELED), (
            f"thread wedged after batch {reqs!r:.500}: {after!r}")
    finally:
        raw.close()
        try:
            root.destroy(new.slot)
        except Exception:
            pass                        # the batch may have ended the task itself


def test_hello_twice_does_not_wedge_the_thread() -> None:
    """A second HELLO on a bound connection is refused — and the thread keeps working."""
    with System() as s:
        new = s.root.create_task("hello2", 8)
        raw = Raw(s.sock)
        try:
            assert raw.exchange([[abi.encode_request(Sys.HELLO, new.secret)]])[0][0] == Err.OK
            assert raw.exchange([[abi.encode_request(Sys.HELLO, b"again")]])[0][0] != Err.OK
            after = raw.exchange([[abi.encode_request(Sys.CAP_INSPECT, 1)]])[0]
            assert after[0] == Err.OK, after
        finally:
            raw.close()


def test_task_watch_huge_pid() -> None:
    with System() as s:            # its own kernel: the bug is counted in kernel_bugs
        new = s.root.create_task("watch", 8)
        raw = Raw(s.sock)
        try:
            assert raw.exchange([[abi.encode_request(Sys.HELLO, new.secret)]])[0][0] == Err.OK
            ans = raw.exchange([[abi.encode_request(Sys.TASK_WATCH, 1, 2 ** 40)]])[0]
            assert s.root.kernel_info()["stats"]["kernel_bugs"] == 0
            assert ans[0] == Err.INVALID
        finally:
            raw.close()


def test_well_behaved_tasks_still_work_and_counters_moved(fuzz_system: System) -> None:
    """Runs after the properties above (file order): the system is still healthy."""
    s = fuzz_system
    srv = s.spawn("tests.kernel.rpc_tasks:echo_server", "echo-after-fuzz")
    gate = s.root.create_gate(11, thread=srv.thread)
    # A fixed sample of bad input, so the counters below move even if this test runs alone.
    raw = Raw(s.sock)
    try:
        raw.exchange([[b"\xc1"], [b"a", b"b", b"c", b"d"], [packed([999])],
                      [packed([int(Sys.CAP_INSPECT), "x"])], [packed([int(Sys.SEND), 1, 0, [], 0]),
                                                               b"\0" * (MAX_PAYLOAD + 1)],
                      [packed([int(Sys.HELLO), b"nope"])]])
    finally:
        raw.close()
    for size in (0, 100, MAX_PAYLOAD):
        msg = s.root.call(gate, b"z" * size, proto=5, rcv_timeout=20_000)
        assert msg.data == b"z" * size and msg.proto == 5
    assert s.root.call(gate, b"stop", rcv_timeout=20_000).data == b"bye"
    assert srv.wait(20) == 0
    info = s.root.kernel_info()
    stats = info["stats"]
    kernel_alive(s)
    assert stats["malformed"] > 0 and stats["errors"] > 0 and stats["unauthenticated"] > 0
    for name in ("PROTOCOL", "NOSYS", "INVALID", "TOO_BIG", "NOT_AUTH"):
        assert info["errors"].get(name, 0) > 0, (name, info["errors"])
    assert stats["kernel_bugs"] == 0, f"the kernel counted {stats['kernel_bugs']} internal errors"
    print(f"\nfuzz: {Raw.sent} requests sent; kernel stats {stats}; errors {info['errors']}")
