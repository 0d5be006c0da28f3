"""DDE/Linux socket buffers: sk_buff and its head/data/tail operations, as Linux has them.

    skb = alloc_skb(size) / netdev_alloc_skb(dev, len) / netdev_alloc_skb_ip_align(dev, len)
    skb_reserve(skb, n); skb_put(skb, n) -> area; skb_put_data(skb, bytes)
    skb_push(skb, n) -> data; skb_pull(skb, n) -> data | None; skb_trim(skb, len)
    skb.data (memoryview of the frame), skb.len, skb_headroom / skb_tailroom
    kfree_skb / dev_kfree_skb / dev_kfree_skb_any / consume_skb; skb_stats()

One linear buffer per skb (`head`, a bytearray); the frame is head[data_off : data_off+len],
Linux's skb->data .. skb->tail as offsets instead of pointers. Going past either end raises
`SkbError` (Linux's skb_over_panic / skb_under_panic); a double free too. No fragments, no
clones: a driver here copies a frame once into an skb and once out of it.

Ownership: an skb has one owner at a time (see servers/dde_linux/net.py).
"""
from __future__ import annotations

import threading
from typing import Any

ETH_HLEN = 14
NET_IP_ALIGN = 2
NET_SKB_PAD = 32
GFP_KERNEL, GFP_ATOMIC = 0x1, 0x2
PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST = 0, 1, 2, 3
CHECKSUM_NONE = 0


# -- sk_buff ------------------------------------------------------------------------------
class SkbError(ValueError):
    """skb_put past the end, skb_push before the head...: the caller's bug (Linux: skb_over_panic)."""


_skbs = {"allocated": 0, "freed": 0}
_skbs_lock = threading.Lock()


class sk_buff:
    """A socket buffer: one linear buffer `head`; the frame is head[data : data + len].

    `skb.data` is a memoryview of the frame (Linux's skb->data with skb->len bytes);
    `headroom` is before it, `tailroom` after it. Offsets, not pointers: `skb.data_off`."""

    __slots__ = ("head", "data_off", "len", "dev", "protocol", "pkt_type", "ip_summed",
                 "mac_header", "network_header", "xmit_more", "cb", "truesize", "_freed")

    def __init__(self, size: int) -> None:
        self.head = bytearray(size)
        self.data_off = 0
        self.len = 0
        self.dev: Any = None          # the net_device
        self.protocol = 0
        self.pkt_type = PACKET_HOST
        self.ip_summed = CHECKSUM_NONE
        self.mac_header = -1
        self.network_header = -1
        self.xmit_more = False
        self.cb: dict[str, Any] = {}       # control block: whoever owns the skb now
        self.truesize = size
        self._freed = False

    @property
    def data(self) -> memoryview:
        return memoryview(self.head)[self.data_off:self.data_off + self.len]

    @property
    def end(self) -> int:
        return len(self.head)

    def __repr__(self) -> str:
        return f"<sk_buff len {self.len} headroom {self.data_off} tailroom {skb_tailroom(self)}>"


def alloc_skb(size: int, gfp: int = GFP_KERNEL) -> sk_buff:
    if size < 0:
        raise SkbError(f"alloc_skb of {size} bytes")
    with _skbs_lock:
        _skbs["allocated"] += 1
    return sk_buff(size)


def __netdev_alloc_skb(dev: Any, length: int, gfp: int = GFP_ATOMIC) -> sk_buff:
    skb = alloc_skb(length + NET_SKB_PAD, gfp)
    skb_reserve(skb, NET_SKB_PAD)
    skb.dev = dev
    return skb


def netdev_alloc_skb(dev: Any, length: int) -> sk_buff:
    """An skb for receiving `length` bytes on `dev`, with NET_SKB_PAD of headroom."""
    return __netdev_alloc_skb(dev, length)


def netdev_alloc_skb_ip_align(dev: Any, length: int) -> sk_buff:
    skb = netdev_alloc_skb(dev, length + NET_IP_ALIGN)
    skb_reserve(skb, NET_IP_ALIGN)
    return skb


def dev_alloc_skb(length: int) -> sk_buff:
    return netdev_alloc_skb(None, length)


def skb_headroom(skb: sk_buff) -> int:
    return skb.data_off


def skb_tailroom(skb: sk_buff) -> int:
    return len(skb.head) - skb.data_off - skb.len


def skb_reserve(skb: sk_buff, n: int) -> None:
    """Make `n` bytes of headroom in an empty skb."""
    if skb.len or n < 0 or n > skb_tailroom(skb):
        raise SkbError(f"skb_reserve({n}) on {skb!r}")
    skb.data_off += n


def skb_put(skb: sk_buff, n: int) -> memoryview:
    """Extend the data at the tail by `n` bytes; answers the new area (to fill)."""
    if n < 0 or n > skb_tailroom(skb):
        raise SkbError(f"skb_put({n}) over the end of {skb!r}")
    start = skb.data_off + skb.len
    skb.len += n
    return memoryview(skb.head)[start:start + n]


def skb_put_data(skb: sk_buff, data: bytes | bytearray | memoryview) -> memoryview:
    area = skb_put(skb, len(data))
    area[:] = data
    return area


def skb_push(skb: sk_buff, n: int) -> memoryview:
    """Extend the data at the head by `n` bytes (into the headroom); answers the new data."""
    if n < 0 or n > skb.data_off:
        raise SkbError(f"skb_push({n}) under the head of {skb!r}")
    skb.data_off -= n
    skb.len += n
    return skb.data


def skb_pull(skb: sk_buff, n: int) -> memoryview | None:
    """Remove `n` bytes from the head of the data; None (nothing changed) if it is shorter."""
    if n < 0 or n > skb.len:
        return None
    skb.data_off += n
    skb.len -= n
    return skb.data


def skb_trim(skb: sk_buff, length: int) -> None:
    if 0 <= length < skb.len:
        skb.len = length


def skb_copy_bits(skb: sk_buff, offset: int, length: int) -> bytes:
    if offset < 0 or length < 0 or offset + length > skb.len:
        raise SkbError(f"skb_copy_bits({offset}, {length}) outside {skb!r}")
    start = skb.data_off + offset
    return bytes(skb.head[start:start + length])


def skb_reset_mac_header(skb: sk_buff) -> None:
    skb.mac_header = skb.data_off


def skb_mac_header(skb: sk_buff) -> memoryview:
    """The Ethernet header, as eth_type_trans recorded it (14 bytes)."""
    if skb.mac_header < 0:
        raise SkbError("skb has no MAC header set")
    return memoryview(skb.head)[skb.mac_header:skb.mac_header + ETH_HLEN]


def kfree_skb(skb: sk_buff) -> None:
    if skb._freed:
        raise SkbError(f"double free of {skb!r}")
    skb._freed = True
    with _skbs_lock:
        _skbs["freed"] += 1


dev_kfree_skb = dev_kfree_skb_any = dev_kfree_skb_irq = consume_skb = kfree_skb


def skb_stats() -> dict[str, int]:
    """How many skbs were allocated and freed (a driver that leaks them shows here)."""
    with _skbs_lock:
        return {**_skbs, "live": _skbs["allocated"] - _skbs["freed"]}
