"""The `block` protocol (kernel.user.rpc): sessions on a disk or a range of it.

A client owns a moe dataspace (its I/O buffer) and opens a session by sending its
capability; requests name sectors of the client's range and byte offsets into that buffer,
so data never travels in messages: the disk DMAs straight into (and out of) the client's
pages, which the server has attached in its own address space. Requests are tagged; many
are in flight at once; `collect` answers the ones that completed.

BLOCK (client gates; the label, the kernel's word, picks the client's policy)
    open() -> {sectors, sector_size, writable, buffer, max_sectors, depth}
                                 with the buffer dataspace's capability as an item. A second
                                 open replaces the session (after a server restart the
                                 client opens again). Errors: DENIED (no policy for this
                                 label), NO_CAP (not a live moe dataspace), INVALID (buffer
                                 larger than MAX_BUFFER)
    submit(reqs) -> accepted     reqs: [[tag, op, sector, count, offset], ...], op 1 READ
                                 2 WRITE 3 FLUSH (sector/count/offset 0); sector relative to
                                 the client's range; count 1..max_sectors; offset a multiple
                                 of 512 with the data inside the buffer. All are checked
                                 before any is submitted. Errors (each counted per client):
                                 INVALID (malformed: shape, op, tag in flight or outside
                                 0..2**31-1, alignment, buffer bounds, more than depth in
                                 flight), RANGE (sectors outside the range), READ_ONLY (a
                                 write through a read-only policy), NO_SESSION
    collect(min, wait_ms) -> [[tag, status], ...]
                                 completed requests (status 0 ok, 10 I/O error), waiting up
                                 to wait_ms (<= MAX_WAIT_MS) until at least `min` of them
                                 (or all in flight) are done; with other sessions open the
                                 wait is cut short (20 ms: ask again). Errors: NO_SESSION,
                                 INVALID
    exchange(reqs, min, wait_ms) -> {accepted, done}
                                 submit (reqs may be empty), then collect, in one call, as
                                 io_uring_enter(to_submit, min_complete) does. Errors: those
                                 of submit (nothing submitted then) and collect
    info() -> {policy, counters, inflight}   counters: submitted, completed, errors,
                                 malformed, out_of_range, denied_writes, refused
    release() -> None            the session ends (waits for its requests in flight)

    reserve(rate, sectors, deadline_ms) -> {rate, sectors, deadline_ms, service_ms, reserved}
                                 real-time disk scheduling (servers/block/rtsched.py): up to
                                 `rate` requests/s of at most `sectors` sectors served by
                                 deadline (each within deadline_ms) ahead of best effort;
                                 beyond the rate, best effort. The disk's time per such
                                 request is measured at the first reservation of a size
                                 (reads into the first bytes of the caller's buffer).
                                 With the answer comes the session's reserved gate (an item):
                                 the same ops through it are served by a thread of the
                                 server's own that serves only reserved sessions (the CPU
                                 manager boosts it; the main thread, serving best effort,
                                 stays in the ordinary class); `open` through it is DENIED.
                                 Errors: NO_SESSION, INVALID (a field: which, why), REFUSED
                                 (beyond the measured capacity: the numbers)
    unreserve() -> None          the reservation ends (also when the session ends), and
                                 its reserved gate with it

BLOCK admin (label 0, the launcher's)
    stats() -> {label: info, "_server": {...}}
    rt_status() -> {disk: {active, capacity, reserved, reservations, best_effort_p99_ms}}

NO_SESSION: no open session (never opened, closed, or the server restarted since: open
again; servers/block/client.py does it by itself).
"""
from __future__ import annotations

from kernel.user.rpc import Protocol, op

READ, WRITE, FLUSH = 1, 2, 3
SECTOR = 512
MAX_BUFFER = 64 << 20           # bytes of one client's buffer dataspace
MAX_WAIT_MS = 5000
STATUS_OK, STATUS_IOERR = 0, 10

BLOCK = Protocol("block", [
    op("open", 1, [], "session", errors=["DENIED", "NO_CAP", "INVALID"], caps_in=1),
    op("submit", 2, ["reqs:list"], "accepted",
       errors=["NO_SESSION", "INVALID", "RANGE", "READ_ONLY"]),
    op("collect", 3, ["min:int", "wait_ms:int"], "done", errors=["NO_SESSION", "INVALID"]),
    op("info", 4, [], "info", errors=["NO_SESSION"]),
    op("exchange", 6, ["reqs:list", "min:int", "wait_ms:int"], ("accepted", "done"),
       errors=["NO_SESSION", "INVALID", "RANGE", "READ_ONLY"]),
    op("release", 5, [], None, errors=["NO_SESSION"]),
    op("stats", 10, [], "stats", admin=True),
    op("reserve", 7, ["rate:float", "sectors:int", "deadline_ms:int"], "reservation",
       errors=["NO_SESSION", "INVALID", "REFUSED"], caps_out=1),
    op("unreserve", 8, [], None, errors=["NO_SESSION"]),
    op("rt_status", 11, [], "status", admin=True),
], tag=0x424C)
