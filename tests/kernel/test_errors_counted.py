"""Every error answer the kernel sends is counted once, by its code (kernel/core/state.py).

One real kernel; each step provokes errors through a real connection and checks that
KERNEL_INFO's `errors` counts moved by exactly what the step answered — no more, no less —
and that `stats.errors` and the root task's `stats.errors` moved with them. Together the
steps answer every code of `Err` but OK, including the paths whose errors were once
answered without being counted: a send to a gate without a live thread, timeouts (polled
and by timer), PEER_DIED to blocked senders, an alien call DENIED, CANCELED.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator

import pytest
import zmq

from kernel.abi import MAX_PAYLOAD, Err, Rights, Sys, encode_request
from kernel.user import errors
from kernel.user.client import L4, hello_frames, parse_answer

from tests.conftest import Kit

PROVOKED: set[str] = set()      # the codes the steps below answered
RAN: set[str] = set()           # the steps that ran


@pytest.fixture(autouse=True)
def _record_step(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    RAN.add(request.node.name)


class Counts:
    """The kernel's error counters, read through the root task."""

    def __init__(self, kit: Kit) -> None:
        self.kit = kit

    def read(self) -> tuple[dict[str, int], int, int]:
        info = self.kit.root.kernel_info()
        root = next(t for t in info["tasks"] if t["name"] == "root")
        return dict(info["errors"]), info["stats"]["errors"], root["stats"]["errors"]

    def expect(self, step: Callable[[], Any], want: dict[str, int], by_root: bool = True) -> None:
        """Run `step`; the counts must move by exactly `want` (the root task's too, unless
        the errors went to a connection that is no thread)."""
        before, total0, root0 = self.read()
        step()
        after, total1, root1 = self.read()
        moved = {code: after.get(code, 0) - before.get(code, 0) for code in after}
        moved = {code: n for code, n in moved.items() if n}
        assert moved == want, f"error counts moved by {moved}, expected {want}"
        assert total1 - total0 == sum(want.values())
        assert root1 - root0 == (sum(want.values()) if by_root else 0)
        PROVOKED.update(want)


@pytest.fixture(scope="module")
def counts() -> Iterator[Counts]:
    kit = Kit()
    try:
        yield Counts(kit)
    finally:
        kit.close()


def thread_of(kit: Kit) -> tuple[L4, int]:
    """A new, connected thread of the root task and root's slot for it."""
    new = kit.root.create_thread()
    return L4(kit.sys.sock, new.secret, ctx=kit.root.ctx), new.slot


def raw(t: L4, *frames: bytes) -> Any:
    """Send hand-made frames on `t`'s connection and answer the parsed answer."""
    t._post(list(frames))
    return parse_answer(t._answer(), False)


def test_capability_and_argument_errors(counts: Counts) -> None:
    root = counts.kit.root
    gate = root.create_gate(1, thread=None)
    no_invoke = root.cap_derive(gate, Rights.ALL & ~Rights.INVOKE)
    counts.expect(lambda: pytest.raises(errors.NoCapability, root.cap_inspect, 999), {"NO_CAP": 1})
    counts.expect(lambda: pytest.raises(errors.NoRights, root.send, no_invoke, timeout=0),
                  {"NO_RIGHTS": 1})
    counts.expect(lambda: pytest.raises(errors.InvalidArgument, root.create_task, "", 1),
                  {"INVALID": 1})
    counts.expect(lambda: pytest.raises(errors.QuotaExceeded, root.create_task, "big", 1_000_000),
                  {"QUOTA": 1})


def test_send_to_a_gate_without_a_thread_is_peer_died(counts: Counts) -> None:
    root = counts.kit.root
    gate = root.create_gate(2, thread=None)
    counts.expect(lambda: pytest.raises(errors.PeerDied, root.send, gate, timeout=0),
                  {"PEER_DIED": 1})


def test_timeouts_polled_and_by_timer(counts: Counts) -> None:
    t, _ = thread_of(counts.kit)
    try:
        counts.expect(lambda: pytest.raises(errors.Timeout, t.wait, timeout=0), {"TIMEOUT": 1})
        counts.expect(lambda: pytest.raises(errors.Timeout, t.wait, timeout=20), {"TIMEOUT": 1})
    finally:
        t.close()


def test_frame_errors(counts: Counts) -> None:
    t, _ = thread_of(counts.kit)
    try:
        counts.expect(lambda: pytest.raises(errors.ProtocolViolation, raw, t,
                                            encode_request(Sys.CAP_INSPECT, 1), b"data"),
                      {"PROTOCOL": 1})
        counts.expect(lambda: pytest.raises(errors.MessageTooBig, raw, t,
                                            encode_request(Sys.SEND, 1, 0, [], 0),
                                            bytes(MAX_PAYLOAD + 1)), {"TOO_BIG": 1})
        counts.expect(lambda: pytest.raises(errors.NoSuchCall, raw, t, b"\x91\x63"),
                      {"NOSYS": 1})
        counts.expect(lambda: pytest.raises(errors.Busy, raw, t, *hello_frames(b"again")),
                      {"BUSY": 1})
    finally:
        t.close()


def test_busy_while_a_call_is_in_flight(counts: Counts) -> None:
    """The second request is refused on the socket alone; the call in flight then ends by
    its own timer: both answers are counted."""
    t, _ = thread_of(counts.kit)

    def step() -> None:
        t._post([encode_request(Sys.WAIT, None, 300)])
        t._post([encode_request(Sys.CAP_INSPECT, 1)])
        codes = []
        for _ in range(2):
            try:
                parse_answer(t._answer(), True)
            except errors.L4Error as e:
                codes.append(e.err)
        assert codes == [Err.BUSY, Err.TIMEOUT], codes
    try:
        counts.expect(step, {"BUSY": 1, "TIMEOUT": 1})
    finally:
        t.close()


def test_not_authenticated(counts: Counts) -> None:
    sock = counts.kit.root.ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect("ipc://" + counts.kit.sys.sock)

    def step() -> None:
        sock.send(encode_request(Sys.CAP_INSPECT, 1))
        assert sock.poll(10_000), "the kernel did not answer"
        with pytest.raises(errors.NotAuthenticated):
            parse_answer(sock.recv_multipart(), False)
    try:
        counts.expect(step, {"NOT_AUTH": 1}, by_root=False)
    finally:
        sock.close(0)


def test_alien_call_without_a_handler_thread_is_denied(counts: Counts) -> None:
    kit = counts.kit
    t, slot = thread_of(kit)
    handler = kit.root.create_gate(3, thread=None)    # a gate no thread serves
    kit.root.thread_control(slot, handler=handler, alien=True)
    try:
        counts.expect(lambda: pytest.raises(errors.Denied, t.factory_info), {"DENIED": 1})
    finally:
        t.close()


def blocked_sender(kit: Kit, gate: int, pool: ThreadPoolExecutor) -> tuple[L4, int, "Future[Any]"]:
    """A root thread blocked sending to `gate` (whose thread never waits)."""
    t, slot = thread_of(kit)
    fut = pool.submit(t.send, gate)
    kit.wait_state(slot, "sending")
    return t, slot, fut


def test_blocked_senders_get_canceled_or_peer_died(counts: Counts) -> None:
    kit = counts.kit
    sink = kit.root.create_thread()                      # alive, never connected, never waits
    with ThreadPoolExecutor(max_workers=1) as pool:
        gate = kit.root.create_gate(4, thread=sink.slot)
        t, _, fut = blocked_sender(kit, gate, pool)

        def destroy_gate() -> None:
            kit.root.destroy(gate)
            with pytest.raises(errors.Canceled):
                fut.result(10)
        counts.expect(destroy_gate, {"CANCELED": 1})
        t.close()

        gate = kit.root.create_gate(5, thread=sink.slot)
        t, _, fut = blocked_sender(kit, gate, pool)

        def destroy_receiver() -> None:
            kit.root.destroy(sink.slot)
            with pytest.raises(errors.PeerDied):
                fut.result(10)
        counts.expect(destroy_receiver, {"PEER_DIED": 1})
        t.close()


def test_every_error_code_was_provoked() -> None:
    """Runs last (pytest keeps file order): the steps above covered the whole enum. Skipped
    when only some of them ran (a -k selection)."""
    steps = {name for name in globals() if name.startswith("test_")} - {
        "test_every_error_code_was_provoked"}
    if RAN != steps:
        pytest.skip(f"only {len(RAN)} of the {len(steps)} steps ran")
    assert PROVOKED == {e.name for e in Err if e != Err.OK}, sorted(
        {e.name for e in Err if e != Err.OK} - PROVOKED)
