"""The `nic` session: one network device, shared by packet streams (servers/nic/stream.py).

The nic server (servers/nic/server.py) is a driver task: the l4nic driver, the DDE/Linux glue
and this server in one process. Each client — the ORe switch's uplink, a test, the demo —
opens sessions on it; the server's policy (its task args) says which clients (by the label of
their capability, which the kernel vouches for) may, and how many sessions each may hold.

Data never travels in messages. `open` answers, besides the values below, a memory item
mapping the session's shared block (SESSION_SIZE bytes: the TX and the RX stream) into the
client's receive window, and two capabilities:
  1. `kick`  (INVOKE): an IRQ object of the server's; the client triggers it after submitting
     TX packets (or after draining a full RX stream). Triggering never blocks.
  2. `signal` (INVOKE|WRITE): an IRQ object the client attaches to one of its threads
     (IRQ_ATTACH, with a label of its choosing); the server triggers it when it submitted RX
     packets (once per received batch), when the link changed, and for TX acknowledgements
     when the client may run short of packets (a quarter of the queue acknowledged unsignalled,
     or the ack queue full) or else within a housekeeping tick (0.25 s). Triggers are counted,
     not queued: one message may stand for many events, so the client looks at both streams
     and the link word each time.
The client must attach `signal`: a session whose signal is attached to no thread (the client
task died, or never attached it within ATTACH_GRACE_S) is closed by the server, and its block
given back. So a dead client's buffers come back without anyone telling the server.

NIC (proto tag 0x4E49)
    open() -> {session, mac, mtu, link, size, order, stream, ring, slot}
                        one memory item (the shared block, order `order`) and the two
                        capabilities above. Errors: DENIED (the policy has no entry for this
                        client), BUSY (it holds its allowed number of sessions), NO_MEMORY
    release(session) -> None         closes it: gives the block and both IRQs back.
                                     Errors: INVALID (no session of this client)
    info() -> {mac, mtu, link, link_changes, device, sessions}
    stats(session) -> {...}          the session's counters: tx_frames, tx_bytes, rx_frames,
                                     rx_bytes, drops {reason: n}, malformed {reason: n}.
                                     Errors: INVALID
    device_stats() -> {...}          the net_device's stats, the server's totals, the skbs
                                     and DDEKit memory in use
    sessions() -> [{...}]            admin: every session and its counters

Ack statuses in the TX stream: OK (sent), MALFORMED (offset/length outside the buffer, or a
frame shorter than a header or longer than MAX_FRAME: nothing was sent), DROPPED (the link is
down). Drop reasons on RX: no_buffer (the client does not drain its RX stream; others still
get theirs), link_down. Malformed, counted per session: descriptor (TX outside the buffer),
oversized, bad_index (an index word claiming too much: the stream is left as it is until
the client writes a sane one), bad_ack (an RX ack naming no packet the server gave).
"""
from __future__ import annotations

from kernel.user.rpc import Protocol, op

KICK_LABEL_BASE = 0x4E_0000       # the server's kick IRQ of session n: base + n
WAKE_LABEL = 0x4D_FFFE            # the driver's TX queue woke up
TICK_LABEL = 0x4D_FFFF            # housekeeping: dead sessions, blocked streams
ATTACH_GRACE_S = 5.0
MAX_FRAME = 1518                  # ETH_FRAME_LEN + a VLAN tag

NIC = Protocol("nic", [
    op("open", 1, [], "session", errors=["DENIED", "BUSY", "NO_MEMORY"], caps_out=2,
       doc="a session: the shared block (memory item), kick and signal IRQs"),
    op("release", 2, ["session:int"], None, errors=["INVALID"]),
    op("info", 3, [], "info"),
    op("stats", 4, ["session:int"], "stats", errors=["INVALID"]),
    op("device_stats", 5, [], "stats"),
    op("sessions", 10, [], "sessions", admin=True),
], tag=0x4E49)
