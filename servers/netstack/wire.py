"""The wire formats the stack speaks: Ethernet II, ARP, IPv4, ICMP echo, UDP, TCP.

Every layout is declared once here as a `struct.Struct`; the stack's modules pack and parse
through these and nothing else. Parsing is *checking*: a frame from the link is a claim (a
peer, a corrupted wire), so each `parse_*` answers None for anything short, inconsistent or
failing its checksum, and the caller drops it (counted by reason in `Stack.counts`).

The Internet checksum is computed with one big-integer remainder: a buffer read as one
big-endian integer N = sum(w_i * 2**(16 i)) is congruent to sum(w_i) modulo 0xFFFF (since
2**16 = 1 mod 0xFFFF), which is the one's-complement sum up to the representation of zero.
That keeps a 1,500-byte checksum in C instead of a Python loop over 750 words.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

ETH = struct.Struct("!6s6sH")                 # dst, src, ethertype
ARP = struct.Struct("!HHBBH6s4s6s4s")         # htype, ptype, hlen, plen, op, sha, spa, tha, tpa
IP4 = struct.Struct("!BBHHHBBH4s4s")          # ver/ihl, tos, len, id, flags/frag, ttl, proto, csum, src, dst
ICMP = struct.Struct("!BBHHH")                # type, code, csum, ident, seq
UDP = struct.Struct("!HHHH")                  # sport, dport, len, csum
TCP = struct.Struct("!HHIIBBHHH")             # sport, dport, seq, ack, off<<4, flags, win, csum, urg
PSEUDO = struct.Struct("!4s4sBBH")            # src, dst, 0, proto, length

ETH_IP4, ETH_ARP = 0x0800, 0x0806
PROTO_ICMP, PROTO_TCP, PROTO_UDP = 1, 6, 17
ARP_REQUEST, ARP_REPLY = 1, 2
ICMP_ECHO_REPLY, ICMP_ECHO = 0, 8
BROADCAST = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
IP_DF = 0x4000

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
OPT_MSS, OPT_WSCALE = 2, 3


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) & 1:
        data += b"\x00"
    s = int.from_bytes(data, "big") % 0xFFFF
    return 0xFFFF - s if s else 0xFFFF if not any(data) else 0


def sums_to_zero(data: bytes) -> bool:
    """True if `data`, its checksum field included, verifies (one's-complement sum 0xFFFF)."""
    if len(data) & 1:
        data += b"\x00"
    return int.from_bytes(data, "big") % 0xFFFF == 0


def ip_str(a: bytes) -> str:
    return ".".join(str(b) for b in a)


def ip_bytes(text: str) -> bytes:
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        raise ValueError(f"bad IPv4 address {text!r} (like 10.0.2.15)")
    return bytes(int(p) for p in parts)


# -- Ethernet and ARP -----------------------------------------------------------------------------
def eth(dst: bytes, src: bytes, etype: int, payload: bytes) -> bytes:
    frame = ETH.pack(dst, src, etype) + payload
    return frame if len(frame) >= 60 else frame + bytes(60 - len(frame))


def arp(op: int, sha: bytes, spa: bytes, tha: bytes, tpa: bytes) -> bytes:
    return ARP.pack(1, ETH_IP4, 6, 4, op, sha, spa, tha, tpa)


class Arp(NamedTuple):
    op: int
    sha: bytes
    spa: bytes
    tpa: bytes


def parse_arp(body: bytes) -> Arp | None:
    if len(body) < ARP.size:
        return None
    ht, pt, hl, pl, op, sha, spa, _, tpa = ARP.unpack_from(body)
    if (ht, pt, hl, pl) != (1, ETH_IP4, 6, 4) or op not in (ARP_REQUEST, ARP_REPLY):
        return None
    return Arp(op, sha, spa, tpa)


# -- IPv4 -----------------------------------------------------------------------------------------
class Ip4(NamedTuple):
    src: bytes
    dst: bytes
    proto: int
    ttl: int
    payload: bytes


def ip4(src: bytes, dst: bytes, proto: int, payload: bytes, ident: int, ttl: int = 64) -> bytes:
    head = IP4.pack(0x45, 0, 20 + len(payload), ident & 0xFFFF, IP_DF, ttl, proto, 0, src, dst)
    return head[:10] + checksum(head).to_bytes(2, "big") + head[12:] + payload


def parse_ip4(body: bytes) -> Ip4 | None:
    """Fragments, options we do not read, bad lengths and bad checksums: None."""
    if len(body) < 20:
        return None
    vihl, _, total, _, frag, ttl, proto, _, src, dst = IP4.unpack_from(body)
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < 20 or total < ihl or total > len(body):
        return None
    if frag & 0x3FFF:                          # MF set or an offset: we do not reassemble
        return None
    if not sums_to_zero(body[:ihl]):
        return None
    return Ip4(src, dst, proto, ttl, body[ihl:total])


def l4_checksum(src: bytes, dst: bytes, proto: int, segment: bytes) -> int:
    return checksum(PSEUDO.pack(src, dst, 0, proto, len(segment)) + segment)


def l4_ok(src: bytes, dst: bytes, proto: int, segment: bytes) -> bool:
    return sums_to_zero(PSEUDO.pack(src, dst, 0, proto, len(segment)) + segment)


# -- ICMP, UDP, TCP -------------------------------------------------------------------------------
def icmp_echo(kind: int, ident: int, seq: int, data: bytes) -> bytes:
    head = ICMP.pack(kind, 0, 0, ident, seq)
    c = checksum(head + data)
    return head[:2] + c.to_bytes(2, "big") + head[4:] + data


def udp(src: bytes, dst: bytes, sport: int, dport: int, data: bytes) -> bytes:
    seg = UDP.pack(sport, dport, 8 + len(data), 0) + data
    c = l4_checksum(src, dst, PROTO_UDP, seg) or 0xFFFF      # 0 would mean "no checksum"
    return seg[:6] + c.to_bytes(2, "big") + seg[8:]


class Segment(NamedTuple):
    sport: int
    dport: int
    seq: int
    ack: int
    flags: int
    win: int
    mss: int                 # from the MSS option (SYN only), else 0
    wscale: int              # from the window scale option (SYN only), else -1 (none)
    data: bytes


def tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
        win: int, data: bytes = b"", mss: int = 0, wscale: int = -1) -> bytes:
    opts = struct.pack("!BBH", OPT_MSS, 4, mss) if mss else b""
    if wscale >= 0:
        opts += struct.pack("!BBBB", 1, OPT_WSCALE, 3, wscale)      # NOP, then the option
    head = TCP.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                    (5 + len(opts) // 4) << 4, flags, win, 0, 0) + opts
    c = l4_checksum(src, dst, PROTO_TCP, head + data)
    return head[:16] + c.to_bytes(2, "big") + head[18:] + data


def parse_tcp(seg: bytes) -> Segment | None:
    if len(seg) < 20:
        return None
    sport, dport, seq, ack, off, flags, win, _, _ = TCP.unpack_from(seg)
    hl = (off >> 4) * 4
    if hl < 20 or hl > len(seg):
        return None
    mss, wscale, i = 0, -1, 20
    while i < hl:                               # options: only MSS is read
        kind = seg[i]
        if kind == 0:
            break
        if kind == 1:
            i += 1
            continue
        if i + 1 >= hl or seg[i + 1] < 2:
            return None
        if kind == OPT_MSS and seg[i + 1] == 4 and i + 4 <= hl:
            mss = int.from_bytes(seg[i + 2:i + 4], "big")
        elif kind == OPT_WSCALE and seg[i + 1] == 3 and i + 3 <= hl:
            wscale = min(seg[i + 2], 14)
        i += seg[i + 1]
    return Segment(sport, dport, seq, ack, flags, win, mss, wscale, seg[hl:])
