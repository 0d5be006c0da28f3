"""The ORe session: a virtual NIC on the software switch, the same session as the `nic` server's.

ORe (servers/ore/server.py) gives every client one session: a virtual NIC with a MAC of its
own, frames in and out through the same shared packet streams as a `nic` session
(servers/nic/stream.py: a 1 MiB block, TX stream at 0, RX stream at STREAM_SIZE, kick and
signal IRQ objects). The protocol is the `nic` protocol (servers/nic/protocol.py) extended:
every NIC op keeps its opcode, arguments and proto tag, so `servers.nic.client.NicSession`
(and anything built on it, the IP stack of servers/netstack) works unchanged over ORe or over
the nic server directly. ORe adds ops the nic server does not have; a client that wants to
know whether it talks to a switch calls `info()` and looks for "switch".

Who a client is: the label of its capability (the kernel's word). ORe's policy (its task
argument, JSON, see `parse_policy` in servers/ore/switch.py) says, per label:

    {"clients": {"1": {"name": "web", "mac": "02:00:00:00:00:01", "ip": "10.0.2.15/24",
                       "broadcast": true, "allowed": ["02:00:00:00:00:01"],
                       "active": true, "promiscuous": false}},
     "default": {...}                  optional: the entry of every label not listed
     "uplink": "uplink",               optional: the capability (a `nic` session) of the uplink
     "uplink_rate": 1250000}           optional: the uplink's capacity in bytes/s; ORe then
                                       shapes the uplink to it and admits bandwidth
                                       reservations (servers/ore/shaper.py)

A label without an entry (and no "default") is refused DENIED. "mac" defaults to one derived
from the label and name (02:4f:52 + 3 bytes of a hash: stable across restarts of client and
switch); "allowed" (the source MACs the client may send with) defaults to its own MAC;
"broadcast" (deliver broadcast and multicast frames to it) defaults to false; "ip" is not
ORe's business — it is handed to the client's IP stack, which reads it from the `open` (or
`info`) reply: the agreed way for a task to learn its address from the image —
`NicSession(l4, l4.caps["net"]).info["ip"]` (None: the image gave it none), and `.mac`.

ORE (proto tag 0x4E49, the NIC tag)
    open() -> {session, mac, mtu, link, size, order, stream, ring, slot,   as NIC's open, plus
               ip, name, broadcast, switch}                            ip: "A.B.C.D/N" or None
                        one memory item (the shared block) and two capabilities (kick, signal),
                        exactly as NIC's. Errors: DENIED (no policy for this label), BUSY (it
                        holds its session already), NO_MEMORY
    release(session) -> None          closes it (block and IRQs go back). Errors: INVALID
    info() -> {mac, mtu, link, link_changes, device, sessions, ip, name, broadcast, switch}
                        the caller's virtual NIC (its configured MAC and ip even before open;
                        a label without policy: mac, ip and name None, link false)
    stats(session) -> {session, label, name, mac, tx_frames, tx_bytes, rx_frames, rx_bytes,
                       drops {reason: n}, malformed {reason: n}}       Errors: INVALID
                        tx = frames the client sent into the switch; rx = frames delivered
    device_stats() -> {switch totals, table size, uplink state}
    broadcast(session, on) -> bool    receive broadcast/multicast frames (or stop); answers the
                        new setting. Errors: INVALID, DENIED (the policy locks it:
                        "broadcast_locked": true)
    sessions() -> [{...}]             admin: every session's counters
    counters() -> {clients: {name: {...}}, uplink: {...}, table: [...], totals: {...}}
                        admin: what `l4run net` shows
    reserve(session, rate) -> {rate, capacity, reserved}
                        reserve `rate` bytes/s of the uplink for the caller's frames; best
                        effort gets the rest and cannot take this share. Errors: INVALID
                        (not the caller's session, rate <= 0), REFUSED (no uplink_rate in the
                        policy, or past the uplink's capacity: the sums)
    unreserve(session) -> None        the reservation ends (also when the session closes)
    rt_status() -> {capacity, reserved, best_effort_rate, reservations: [...], refused,
                    threads, switch_ms}
                        admin: what `l4run rt` shows ({} without an uplink_rate)
    faults(knobs) -> {drop, corrupt, duplicate, seed, ports, active, counts {dropped,
                      corrupted, duplicated}}
                        admin: the chaos knobs (servers/ore/switch.py `Faults`; chaos kind
                        "switch", docs/CHAOS.md): per frame the switch forwards, in scope
                        (`ports`: client labels, names or "uplink"; [] every frame), with
                        one seeded generator — drop (lost; acked OK), corrupt (one byte past
                        the Ethernet header XORed non-zero), duplicate (delivered twice).
                        Sets the knobs given, keeps the others; {} reads; clear = true
                        zeroes the counts. A rate of 0 turns that fault off. Counted per
                        port too (counters: "faults" of the sender; a drop also as drop
                        reason "fault"). Errors: INVALID (the knob named: unknown key,
                        a rate outside 0..1, a bad seed or scope; nothing is set then)

Drop reasons (each on the client whose frame it was, except no_buffer: the receiver's): spoofed
(a source MAC the client may not use), malformed (a descriptor outside the buffer, a frame
shorter than an Ethernet header, a bad index word), oversized (longer than MAX_FRAME), inactive
(the client's policy says active = false), no_route (unicast to an unknown MAC and nowhere to
flood it), fault (the drop knob of `faults`), no_buffer (the receiver's RX stream is full: it
does not drain; nobody else waits for it), loop (uplink only: a frame from the uplink with a
local client's MAC as source: our own frame reflected by the wire).
"""
from __future__ import annotations

from kernel.user.rpc import Protocol, op
from servers.nic.protocol import MAX_FRAME, NIC

KICK_LABEL_BASE = 0x4F_0000       # the kick IRQ of ORe's session n: base + n
UPLINK_LABEL = 0x4F_FFFE          # the uplink session's signal
TICK_S = 0.25                     # housekeeping: dead clients, unsignalled acks, the uplink
ATTACH_GRACE_S = 5.0              # a session whose signal is never attached is closed
SESSION_CAP = "net"               # the usual local name of a client's ORe capability

_EXTRA = [
    op("broadcast", 6, ["session:int", "on:bool"], "on", errors=["INVALID", "DENIED"],
       doc="receive broadcast and multicast frames, or stop"),
    op("counters", 11, [], "counters", admin=True, doc="every port's counters, the MAC table"),
    op("reserve", 12, ["session:int", "rate:float"], ("rate", "capacity", "reserved"),
       errors=["INVALID", "REFUSED"], doc="reserve bytes/s of the uplink"),
    op("unreserve", 13, ["session:int"], None, errors=["INVALID"]),
    op("rt_status", 14, [], "status", admin=True, doc="the uplink's reservations"),
    op("faults", 15, ["knobs:dict"], "faults", errors=["INVALID"], admin=True,
       doc="the fault knobs (chaos): set those given, read ({}), clear the counts"),
]

# Every NIC op at its opcode, then ORe's own: one declaration drives stub and dispatch.
ORE = Protocol("ore", [*NIC.ops.values(), *_EXTRA], tag=NIC.tag)

__all__ = ["ORE", "MAX_FRAME", "KICK_LABEL_BASE", "UPLINK_LABEL", "TICK_S", "ATTACH_GRACE_S",
           "SESSION_CAP"]
