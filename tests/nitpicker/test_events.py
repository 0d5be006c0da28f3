"""Nitpicker's event ring (servers/nitpicker/ring.py) and its routing of events into it or
into the session's queue (routing.py `post`), on a page of plain memory: the client's and
Nitpicker's sides of the contract, without a machine (the booted tests in test_nitpicker.py
and test_browser.py take every key through the ring)."""
from __future__ import annotations

from servers.nitpicker import ring
from servers.nitpicker.protocol import KEY
from servers.nitpicker.routing import Routing
from servers.nitpicker.views import Buffer, Session

RING = 0x5000


class PageRings:
    """Rings over one page of plain memory at RING (ring.Rings' event half)."""

    def __init__(self) -> None:
        self.page = memoryview(bytearray(ring.SIZE))
        self.written = 0

    def post_event(self, vaddr: int, ev: list[int]) -> bool:
        assert vaddr == RING
        if not ring.write_event(self.page, self.written, ev):
            return False
        self.written += 1
        return True

    def over(self, vaddr: int, flag: bool) -> None:
        ring.set_word(self.page, ring.EV_OVER, int(flag))


class Router(Routing):
    def __init__(self) -> None:
        self.rings = PageRings()


def _session() -> Session:
    s = Session(5, "client", 1 << 20, 0, 0)
    s.buffer = Buffer(0, 0x1000, 4, 4, RING)
    return s


def _key(n: int) -> list[int]:
    return [KEY, 1, 30, n, 0, 0, 1_000_000 + n]


def _events_call(r: Router, s: Session) -> list[list[int]]:
    """What server.py's `events` does for the session."""
    out = list(s.events)
    s.events.clear()
    r.rings.over(RING, False)
    return out


def test_events_go_through_the_ring_without_a_call() -> None:
    r, s = Router(), _session()
    for n in range(10):
        r.post(s, _key(n))
    assert not s.events                                  # nothing for the call
    got, read, over = ring.read_events(r.rings.page, 0)
    assert got == [_key(n) for n in range(10)] and read == 10 and not over
    assert ring.word(r.rings.page, ring.EV_READ) == 10   # the client says what it took


def test_a_full_ring_spills_into_the_queue_and_order_is_kept() -> None:
    r, s = Router(), _session()
    total = ring.EV_SLOTS + 30
    for n in range(total):
        r.post(s, _key(n))
    assert len(s.events) == 30 and ring.word(r.rings.page, ring.EV_OVER) == 1
    got, read, over = ring.read_events(r.rings.page, 0)
    assert len(got) == ring.EV_SLOTS and over            # the client calls for the rest
    r.post(s, _key(total))                               # room again, but the queue is first
    assert len(s.events) == 31
    got += _events_call(r, s)
    r.post(s, _key(total + 1))                           # the queue is empty: the ring again
    more, read, over = ring.read_events(r.rings.page, read)
    assert not over and more == [_key(total + 1)]
    assert [e[3] for e in got + more] == list(range(total + 2))


def test_a_clients_nonsense_read_count_costs_it_the_ring_not_its_events() -> None:
    r, s = Router(), _session()
    r.post(s, _key(0))
    ring.set_word(r.rings.page, ring.EV_READ, 10 ** 9)   # the client's word: any value
    r.post(s, _key(1))
    assert list(s.events) == [_key(1)] and ring.word(r.rings.page, ring.EV_OVER) == 1
    ring.set_word(r.rings.page, ring.EV_READ, 1)         # sane again: after the call, the ring
    assert _events_call(r, s) == [_key(1)]
    r.post(s, _key(2))
    assert not s.events
    assert ring.read_events(r.rings.page, 1)[0] == [_key(2)]


def test_a_session_without_a_buffer_queues() -> None:
    r, s = Router(), Session(5, "client", 1 << 20, 0, 0)
    r.post(s, _key(0))
    assert list(s.events) == [_key(0)] and r.rings.written == 0


def test_a_new_ring_is_read_from_its_start() -> None:
    page = memoryview(bytearray(ring.SIZE))
    for n in range(3):
        assert ring.write_event(page, n, _key(n))
    got, read, _ = ring.read_events(page, 500)           # the client's count of an old ring
    assert [e[3] for e in got] == [0, 1, 2] and read == 3

