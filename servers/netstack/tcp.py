"""TCP (RFC 793/9293, trimmed to what a task needs): one `Tcb` per connection, `Listener`s.

What it does: the three-way handshake both ways (MSS option read and sent), sequence and
acknowledgement numbers modulo 2**32, a send buffer with the peer's window and a congestion
window (slow start, halved on loss), retransmission on timeout (RFC 6298 estimator, go-back-N
from the first unacknowledged byte, backed off, abort after MAX_RETRIES), fast retransmit on
three duplicate ACKs, in-order receive into a bounded buffer whose free space is the
advertised window, out-of-order segments kept (inside the window) until the gap fills, FIN
both ways with the closing states (FIN_WAIT_1/2, CLOSING, TIME_WAIT, CLOSE_WAIT, LAST_ACK),
RST sent for segments to no connection and honoured when in the window, window scaling
(RFC 7323, when both SYNs offer it). Not done: SACK, timestamps, urgent data, Nagle (a send
goes out as soon as the window allows).

Ownership and locking: every field of a Tcb is guarded by the stack's one lock
(`Stack.lock`); `input`, `output` and `timer` run on the pump thread with the lock held; the
socket calls (servers/netstack/socket.py) take the lock, change buffers, wait on `cond` (a
condition on that lock) and mark the Tcb dirty so that the pump transmits (`queue` wakes the
pump only when it could send at once: each wake is an IPC). Frames leave only through
`stack.ip_output`, which queues them for the pump.
"""
from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING, Any

from . import wire
from .wire import ACK, FIN, PSH, RST, SYN

if TYPE_CHECKING:
    from .stack import Stack

MASK = 0xFFFFFFFF
MSS = 1460                      # ours: an Ethernet MTU of 1500 less 40 bytes of headers
RCVBUF = 256 * 1024             # the receive buffer; the window we advertise is its free part
SNDBUF = 512 * 1024             # a sender blocks when this much is unacknowledged
SND_LOWAT = SNDBUF // 4         # a blocked sender is woken when this much room is free (or
                                # all is acknowledged): one wake-up per 128 KiB, not per ACK
MAX_FIELD = 0xFFFF              # a window field
WSCALE = 3                      # our window scale (RFC 7323): RCVBUF >> 3 fits the field
CWND_MAX = 1 << 20
RTO_MIN, RTO_MAX, RTO_INIT = 0.2, 10.0, 1.0       # Linux's minimum: on a loaded host a task
                                                  # is descheduled for tens of ms, and a spurious
                                                  # timeout collapses the window
MAX_RETRIES = 10
TIME_WAIT_S = 1.0

CLOSED, LISTEN, SYN_SENT, SYN_RCVD, ESTABLISHED = "CLOSED", "LISTEN", "SYN_SENT", "SYN_RCVD", "ESTABLISHED"
FIN_WAIT_1, FIN_WAIT_2, CLOSING, TIME_WAIT = "FIN_WAIT_1", "FIN_WAIT_2", "CLOSING", "TIME_WAIT"
CLOSE_WAIT, LAST_ACK = "CLOSE_WAIT", "LAST_ACK"
SENDING = {ESTABLISHED, CLOSE_WAIT}                   # states in which send() is allowed


def after(a: int, b: int) -> bool:
    """a > b in sequence space."""
    return 0 < ((a - b) & MASK) < 0x80000000


Key = tuple[int, bytes, int]                          # local port, remote address, remote port


class Listener:
    def __init__(self, stack: "Stack", port: int, backlog: int) -> None:
        self.stack, self.port, self.backlog = stack, port, backlog
        self.ready: list[Tcb] = []                    # established, not yet accepted
        self.embryos = 0                              # in SYN_RCVD
        self.cond = stack.condition()
        self.closed = False


class Tcb:
    def __init__(self, stack: "Stack", lport: int, rip: bytes, rport: int) -> None:
        self.stack, self.lport, self.rip, self.rport = stack, lport, rip, rport
        self.key: Key = (lport, rip, rport)
        self.state = CLOSED
        self.cond = stack.condition()
        self.error: BaseException | None = None       # why it ended, raised to the socket's user
        self.listener: Listener | None = None
        # send side: sndbuf holds the bytes from snd_una on (sent and unacknowledged, then unsent)
        self.iss = random.getrandbits(32)
        self.snd_una = self.snd_nxt = self.snd_max = self.iss   # snd_max: the most ever sent
        self.snd_wnd = MSS
        self.sndbuf = bytearray()
        self.fin_queued = self.fin_acked = False          # our FIN follows the last byte
        self.mss = 536
        self.cwnd, self.ssthresh = 10 * MSS, CWND_MAX
        self.offer_ws = True                          # our SYN carries WSCALE (passive: if theirs did)
        self.snd_shift = self.rcv_shift = 0           # theirs applies to their windows, ours to ours
        self.dupacks = 0
        self.recover: int | None = None               # fast recovery until this is acked (NewReno)
        # timers
        self.srtt = 0.0
        self.rttvar = 0.0
        self.rto = RTO_INIT
        self.deadline = 0.0                           # retransmission (0: none armed)
        self.retries = 0
        self.sample: tuple[int, float] | None = None  # (seq whose ack times a round trip, sent at)
        self.linger = 0.0                             # TIME_WAIT's end
        # receive side
        self.rcv_nxt = 0
        self.rcvbuf = bytearray()
        self.ooo: dict[int, tuple[bytes, bool]] = {}  # seq -> (data, fin) beyond rcv_nxt
        self.peer_fin = False
        self.need_ack = False
        self.advertised = 0

    # -- what the socket layer starts ----------------------------------------------------------
    def open_active(self) -> None:
        self.state = SYN_SENT
        self._emit(self.iss, SYN, b"", mss=MSS)
        self.snd_nxt = self.snd_max = (self.iss + 1) & MASK
        self._arm(time.monotonic())

    def close(self) -> None:
        """The user is done sending: queue our FIN (sent after the data)."""
        if self.state in (ESTABLISHED, SYN_RCVD):
            self.state = FIN_WAIT_1
        elif self.state == CLOSE_WAIT:
            self.state = LAST_ACK
        elif self.state in (SYN_SENT, LISTEN):
            self._end(None)
            return
        else:
            return
        self.fin_queued = True
        self.stack.mark(self)

    def abort(self) -> None:
        if self.state not in (CLOSED, LISTEN, SYN_SENT, TIME_WAIT):
            self._emit(self.snd_nxt, RST | ACK, b"")
        self._end(ConnectionResetError("connection aborted"))

    def queue(self, data: bytes | memoryview) -> None:
        """Append to the send buffer (the socket layer, lock held), and see that the pump
        sends it. The pump is woken (an IPC) only if it may send now: with data in flight and
        the window full or unsent data already waiting, the next ACK (or the retransmission
        timer, armed) runs `output` anyway, so the Tcb is only marked dirty."""
        flight = (self.snd_nxt - self.snd_una) & MASK
        blocked = len(self.sndbuf) > flight or flight >= min(self.snd_wnd, self.cwnd)
        self.sndbuf += data
        if flight and blocked and self.deadline:
            self.stack.dirty.add(self)
        else:
            self.stack.mark(self)

    # -- input (pump thread) ---------------------------------------------------------------------
    def input(self, seg: wire.Segment, now: float) -> None:
        if self.state == SYN_SENT:
            self._input_syn_sent(seg, now)
            return
        if seg.flags & RST:
            if self._in_window(seg.seq) or seg.seq == self.rcv_nxt:
                self._end(ConnectionResetError("connection reset by peer")
                          if self.state != SYN_RCVD else None)
            return
        if seg.flags & SYN:
            if self.state == SYN_RCVD and seg.seq == (self.rcv_nxt - 1) & MASK:
                self._emit(self.iss, SYN | ACK, b"", mss=MSS)        # our SYN-ACK was lost
            else:
                self.need_ack = True                  # a retransmitted SYN-ACK: our ACK was lost
                self.stack.mark(self)
            return
        if not seg.flags & ACK:
            return
        self._ack(seg, now)
        if self.state == CLOSED:
            return
        if seg.data or seg.flags & FIN:
            self._data(seg.seq, seg.data, bool(seg.flags & FIN))
        self.stack.mark(self)

    def _input_syn_sent(self, seg: wire.Segment, now: float) -> None:
        ack_ok = bool(seg.flags & ACK) and seg.ack == (self.iss + 1) & MASK
        if seg.flags & ACK and not ack_ok:
            if not seg.flags & RST:
                self.stack.send_rst(self.lport, self.rip, self.rport, seg.ack, 0, RST)
            return
        if seg.flags & RST:
            if ack_ok:
                self._end(ConnectionRefusedError(
                    f"connection refused by {wire.ip_str(self.rip)}:{self.rport}"))
            return
        if not seg.flags & SYN or not ack_ok:
            return                                    # simultaneous open: not supported
        self.rcv_nxt = (seg.seq + 1) & MASK
        self.mss = min(seg.mss or 536, MSS)
        self.snd_una = self.snd_nxt = self.snd_max = (self.iss + 1) & MASK
        self.scaling(seg.wscale)
        self.snd_wnd = seg.win                        # a SYN's window is never scaled
        self._rtt(now)
        self.state = ESTABLISHED
        self.deadline, self.retries = 0.0, 0
        self.need_ack = True
        self.stack.mark(self)
        self.cond.notify_all()

    def _ack(self, seg: wire.Segment, now: float) -> None:
        acked = (seg.ack - self.snd_una) & MASK
        in_flight = (self.snd_max - self.snd_una) & MASK
        if acked > in_flight:                         # acknowledges what we never sent
            self.need_ack = True
            return
        if acked == 0:
            wnd = seg.win << self.snd_shift
            # a duplicate ACK (RFC 5681): no data, the same window; a window update (the
            # peer's reader made room) repeats the ACK number too, and is no sign of loss
            if in_flight and not seg.data and not seg.flags & FIN and wnd == self.snd_wnd:
                self.dupacks += 1
                if self.dupacks == 3:
                    self._fast_retransmit()
                elif self.dupacks != 3:               # limited transmit, recovery's inflation:
                    self.cwnd += self.mss             # each dup ack says a segment left the net
                    self.stack.mark(self)
            self.snd_wnd = wnd
            return
        if self.state == SYN_RCVD:
            acked -= 1                                # our SYN
            self.snd_una = (self.snd_una + 1) & MASK
            self.mss = self.mss or 536
            self.state = ESTABLISHED
            self._accepted()
        data = min(acked, len(self.sndbuf))
        del self.sndbuf[:data]
        self.snd_una = (self.snd_una + data) & MASK
        if acked > data and self.fin_queued:
            self.fin_acked = True
            self.snd_una = (self.snd_una + 1) & MASK
        if after(self.snd_una, self.snd_nxt):         # acks what we sent before going back
            self.snd_nxt = self.snd_una
        self.snd_wnd = seg.win << self.snd_shift
        if self.dupacks:
            self.cwnd = max(self.ssthresh if self.recover is not None else self.cwnd
                            - self.dupacks * self.mss, 2 * self.mss)    # deflate
        self.dupacks = 0
        if self.recover is not None:
            if after(self.recover, self.snd_una):     # a partial ack: the next hole, at once
                self._resend_first()
            else:
                self.recover = None
        self._rtt(now)
        self._grow(acked)
        self.retries = 0
        self.deadline = 0.0
        if self.snd_max != self.snd_una:
            self._arm(now)
        if not self.sndbuf or SNDBUF - len(self.sndbuf) >= SND_LOWAT:
            self.cond.notify_all()                    # writers waiting for room, drain()
        if self.fin_acked:
            if self.state == FIN_WAIT_1:
                self.state = FIN_WAIT_2
            elif self.state == CLOSING:
                self._time_wait(now)
            elif self.state == LAST_ACK:
                self._end(None)

    def _data(self, seq: int, data: bytes, fin: bool) -> None:
        self.need_ack = True
        if self.peer_fin:
            return
        off = (seq - self.rcv_nxt) & MASK
        if 0 < off < 0x80000000:                       # a gap before it: keep it for later
            if off < RCVBUF and len(self.ooo) < 256:
                self.ooo.setdefault(seq, (data, fin))
            self._emit(self.snd_nxt, ACK, b"")        # a duplicate ack now: fast retransmit
            return
        skip = (self.rcv_nxt - seq) & MASK            # already received up to here
        if skip > len(data) or (skip == len(data) and not fin):
            return
        self._take(data[skip:], fin)
        while self.ooo:                               # what the gap held back
            for s in list(self.ooo):
                d, f = self.ooo[s]
                if (s - self.rcv_nxt) & MASK == 0 or after(self.rcv_nxt, s):
                    del self.ooo[s]
                    skip = (self.rcv_nxt - s) & MASK
                    if skip < len(d) or (skip == len(d) and f):
                        self._take(d[skip:], f)
                    break
            else:
                break

    def _take(self, data: bytes, fin: bool) -> None:
        room = RCVBUF - len(self.rcvbuf)
        if len(data) > room:                          # beyond our window: the peer resends
            data, fin = data[:room], False
        self.rcvbuf += data
        self.rcv_nxt = (self.rcv_nxt + len(data)) & MASK
        if fin and not self.peer_fin:
            self.peer_fin = True
            self.rcv_nxt = (self.rcv_nxt + 1) & MASK
            self.ooo.clear()
            if self.state == ESTABLISHED:
                self.state = CLOSE_WAIT
            elif self.state == FIN_WAIT_1:
                self.state = CLOSING
            elif self.state == FIN_WAIT_2:
                self._time_wait(time.monotonic())
        self.cond.notify_all()

    def _accepted(self) -> None:
        lst = self.listener
        if lst is None or lst.closed:
            return
        lst.embryos -= 1
        lst.ready.append(self)
        lst.cond.notify_all()

    # -- output (pump thread) --------------------------------------------------------------------
    def output(self) -> None:
        if self.state in (CLOSED, LISTEN, SYN_SENT, SYN_RCVD, TIME_WAIT):
            if self.need_ack and self.state == TIME_WAIT:
                self._emit(self.snd_nxt, ACK, b"")
            self.need_ack = False
            return
        sent = False
        wnd = min(self.snd_wnd, self.cwnd)
        pos = (self.snd_nxt - self.snd_una) & MASK
        off = min(pos, len(self.sndbuf))
        fin_out = pos > len(self.sndbuf)              # the FIN is already out
        while off < len(self.sndbuf) and off < wnd and not fin_out:
            n = min(self.mss, len(self.sndbuf) - off, wnd - off)
            end = off + n
            self._emit((self.snd_una + off) & MASK,
                       ACK | (PSH if end == len(self.sndbuf) else 0), bytes(self.sndbuf[off:end]))
            if self.sample is None:
                self.sample = ((self.snd_una + end) & MASK, time.monotonic())
            off = end
            sent = True
        if self.fin_queued and not fin_out and not self.fin_acked and off == len(self.sndbuf):
            self._emit((self.snd_una + off) & MASK, FIN | ACK, b"")
            fin_out = sent = True
        self.snd_nxt = (self.snd_una + off + fin_out) & MASK
        if after(self.snd_nxt, self.snd_max):
            self.snd_max = self.snd_nxt
        if self.need_ack and not sent:
            self._emit(self.snd_nxt, ACK, b"")
        self.need_ack = False
        if self.snd_max != self.snd_una and not self.deadline:
            self._arm(time.monotonic())
        elif self.sndbuf and self.snd_wnd == 0 and not self.deadline:
            self._arm(time.monotonic())               # a zero window: probe when it fires

    def scaling(self, theirs: int) -> None:
        """Window scaling is on only if both SYNs carried the option."""
        if theirs >= 0 and self.offer_ws:
            self.snd_shift, self.rcv_shift = theirs, WSCALE
        else:
            self.offer_ws = False

    def _emit(self, seq: int, flags: int, data: bytes, mss: int = 0) -> None:
        free = RCVBUF - len(self.rcvbuf)
        shift = 0 if flags & SYN else self.rcv_shift
        win = min(free >> shift, MAX_FIELD)
        self.advertised = win << shift
        ack = self.rcv_nxt if flags & ACK else 0
        seg = wire.tcp(self.stack.addr, self.rip, self.lport, self.rport, seq, ack, flags,
                       win, data, mss, WSCALE if mss and self.offer_ws else -1)
        self.stack.ip_output(self.rip, wire.PROTO_TCP, seg)

    def window_opened(self) -> None:
        """The user read from rcvbuf: tell the peer if the window grew much (socket layer)."""
        free = min(RCVBUF - len(self.rcvbuf), MAX_FIELD << self.rcv_shift)
        if free - self.advertised >= 4 * MSS or (self.advertised < MSS <= free):
            self.need_ack = True
            self.stack.mark(self)

    # -- timers (pump thread) ----------------------------------------------------------------------
    def timer(self, now: float) -> None:
        if self.state == TIME_WAIT:
            if now >= self.linger:
                self._end(None)
            return
        if not self.deadline or now < self.deadline:
            return
        self.retries += 1
        if self.retries > MAX_RETRIES:
            self._emit(self.snd_nxt, RST | ACK, b"")
            self._end(TimeoutError(f"no answer from {wire.ip_str(self.rip)}:{self.rport} "
                                   f"after {MAX_RETRIES} retransmissions"))
            return
        self.stack.counts["tcp_timeouts"] += 1
        if self.retries >= 2:
            self.stack.unconfirm(self.rip)            # a stale or wrong ARP entry? ask again
        self.rto = min(self.rto * 2, RTO_MAX)
        self.sample = None                            # Karn: no samples from retransmissions
        self.deadline = 0.0
        if self.state == SYN_SENT:
            self._emit(self.iss, SYN, b"", mss=MSS)
        elif self.state == SYN_RCVD:
            self._emit(self.iss, SYN | ACK, b"", mss=MSS)
        else:
            flight = (self.snd_max - self.snd_una) & MASK
            self.ssthresh = max(flight // 2, 2 * self.mss)
            self.cwnd = 2 * self.mss
            self.snd_nxt = self.snd_una               # go back N
            self.recover = None
            if self.snd_wnd == 0:
                self.snd_wnd = 1                      # the probe
            self.output()
        self._arm(now)

    def _fast_retransmit(self) -> None:
        flight = (self.snd_nxt - self.snd_una) & MASK
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.ssthresh
        self.recover = self.snd_max
        self.stack.counts["tcp_fast_retransmits"] += 1
        self._resend_first()

    def _resend_first(self) -> None:
        n = min(self.mss, len(self.sndbuf))
        if n:
            self._emit(self.snd_una, ACK, bytes(self.sndbuf[:n]))
        elif self.fin_queued:
            self._emit(self.snd_una, FIN | ACK, b"")
        self.sample = None

    def _arm(self, now: float) -> None:
        self.deadline = now + self.rto

    def _rtt(self, now: float) -> None:
        if self.sample is None:
            if self.state == ESTABLISHED and self.srtt == 0.0:
                self.rto = RTO_INIT
            return
        seq, t0 = self.sample
        if after(self.snd_una, seq) or self.snd_una == seq:
            r = now - t0
            if self.srtt == 0.0:
                self.srtt, self.rttvar = r, r / 2
            else:
                self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - r)
                self.srtt = 0.875 * self.srtt + 0.125 * r
            self.rto = min(max(self.srtt + 4 * self.rttvar, RTO_MIN), RTO_MAX)
            self.sample = None

    def _grow(self, acked: int) -> None:
        if self.cwnd < self.ssthresh:
            self.cwnd += acked
        else:
            self.cwnd += max(1, self.mss * self.mss // self.cwnd)
        self.cwnd = min(self.cwnd, CWND_MAX)

    def _time_wait(self, now: float) -> None:
        self.state = TIME_WAIT
        self.deadline = 0.0
        self.linger = now + TIME_WAIT_S

    def _in_window(self, seq: int) -> bool:
        return ((seq - self.rcv_nxt) & MASK) < max(RCVBUF - len(self.rcvbuf), 1)

    def _end(self, error: BaseException | None) -> None:
        if self.state == SYN_RCVD and self.listener is not None:
            self.listener.embryos -= 1
        self.state = CLOSED
        if error is not None and self.error is None:
            self.error = error
        self.deadline = 0.0
        self.stack.forget(self)
        self.cond.notify_all()

    def describe(self) -> dict[str, Any]:
        return {"local": self.lport, "remote": f"{wire.ip_str(self.rip)}:{self.rport}",
                "state": self.state, "unacked": len(self.sndbuf), "unread": len(self.rcvbuf),
                "rto": round(self.rto, 3), "cwnd": self.cwnd}
