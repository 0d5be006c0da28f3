"""DDE/Linux networking: net_device, sk_buff and the netif_* calls, shaped as Linux has them.

A network driver here reads like one in drivers/net/ethernet/:

    dev = alloc_etherdev(my_priv)              # priv = netdev_priv(dev)
    dev.netdev_ops = net_device_ops(ndo_open=..., ndo_stop=..., ndo_start_xmit=...)
    dev.dev_addr[:] = mac; register_netdev(dev)
    # RX, in the interrupt handler:
    skb = netdev_alloc_skb(dev, n); skb_put_data(skb, frame)
    skb.protocol = eth_type_trans(skb, dev); netif_rx(skb)
    # TX: ndo_start_xmit(skb, dev) -> NETDEV_TX_OK (skb consumed) | NETDEV_TX_BUSY (not)
    netif_stop_queue(dev) / netif_wake_queue(dev); netif_carrier_on(dev) / off

The *user* of a netdev (in Linux: the stack, a bridge) is here the device server that
multiplexes it (servers/nic). It uses what a Linux bridge port uses:
`netdev_rx_handler_register(dev, handler, data)` to get every received skb,
`register_netdevice_notifier(fn)` for NETDEV_UP/DOWN/CHANGE (carrier) events,
`dev_open`/`dev_close`, and `dev_queue_xmit(skb)` to send.

Where this differs from Linux, and why (the L4 extensions, all on the user's side):
- `netif_rx` queues the skb on a backlog that the "NET_RX softirq" drains: a DDEKit thread
  `net-rx` here (Linux runs the softirq on irq exit). After each drained batch the handler's
  `flush(data)` (the fourth argument of `netdev_rx_handler_register`) runs, so a user can
  notify its clients once per batch instead of once per frame. Without DDEKit started (unit
  tests), `netif_rx` delivers at once. `netif_receive_skb_list(skbs)` delivers a batch at
  once in the caller's thread (and flushes after it): for a driver whose interrupt handler
  is a thread already, one thread switch less per batch.
- `netif_wake_queue` calls `dev.tx_wake(dev)` if the user set it: Linux's
  `__netif_schedule` (the qdisc runs again); here the user owns the queueing.
- `skb.xmit_more` (Linux 3.18-5.1's `skb->xmit_more`): the sender says more frames follow
  at once, so the driver may delay its doorbell; `netdev_xmit_more()` reads it.

Ownership: a `net_device` is the driver's; its `state` bits are set by the driver's threads
(the interrupt handler, the transmitting thread) under `dev.lock` (a host lock: a bit flip
is all it guards). An `sk_buff` belongs to one owner at a time: passed to `netif_rx` or to a
successful `ndo_start_xmit`, it is no longer the caller's.
"""
from __future__ import annotations

import errno
import itertools
import threading
import types
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

# -- constants (include/uapi/linux/if_ether.h, netdevice.h, if.h) ---------------------------
ETH_ALEN = 6
ETH_HLEN = 14
ETH_ZLEN = 60
ETH_DATA_LEN = 1500
ETH_FRAME_LEN = 1514
ETH_P_IP, ETH_P_ARP, ETH_P_IPV6, ETH_P_802_3 = 0x0800, 0x0806, 0x86DD, 0x0001

NETDEV_TX_OK, NETDEV_TX_BUSY = 0x00, 0x10
NET_RX_SUCCESS, NET_RX_DROP = 0, 1
RX_HANDLER_CONSUMED, RX_HANDLER_PASS = 1, 3

IFF_UP, IFF_BROADCAST, IFF_RUNNING, IFF_PROMISC, IFF_MULTICAST = 0x1, 0x2, 0x40, 0x100, 0x1000
IFNAMSIZ = 16


# netdevice notifier events (include/linux/netdevice.h)
NETDEV_UP, NETDEV_DOWN, NETDEV_CHANGE, NETDEV_REGISTER, NETDEV_UNREGISTER = 1, 2, 4, 5, 6

# dev->state bits
__LINK_STATE_XOFF, __LINK_STATE_NOCARRIER, __LINK_STATE_START = 0, 1, 2
_NOCARRIER = __LINK_STATE_NOCARRIER      # (a dunder name is mangled inside a class body)



from .skbuff import (CHECKSUM_NONE, GFP_ATOMIC, GFP_KERNEL, NET_IP_ALIGN, NET_SKB_PAD,
                     PACKET_BROADCAST, PACKET_HOST, PACKET_MULTICAST, PACKET_OTHERHOST, SkbError,
                     alloc_skb, consume_skb, dev_alloc_skb, dev_kfree_skb, dev_kfree_skb_any,
                     dev_kfree_skb_irq, kfree_skb, netdev_alloc_skb, netdev_alloc_skb_ip_align,
                     sk_buff, skb_copy_bits, skb_headroom, skb_mac_header, skb_pull, skb_push,
                     skb_put, skb_put_data, skb_reserve, skb_reset_mac_header, skb_stats,
                     skb_tailroom, skb_trim)

# -- Ethernet helpers ---------------------------------------------------------------------
def is_multicast_ether_addr(addr: bytes | bytearray | memoryview) -> bool:
    return bool(addr[0] & 1)


def is_broadcast_ether_addr(addr: bytes | bytearray | memoryview) -> bool:
    return bytes(addr[:ETH_ALEN]) == b"\xff" * ETH_ALEN


def is_valid_ether_addr(addr: bytes | bytearray | memoryview) -> bool:
    return not is_multicast_ether_addr(addr) and any(addr[:ETH_ALEN])


def ether_addr_equal(a: bytes | bytearray | memoryview, b: bytes | bytearray | memoryview) -> bool:
    return bytes(a[:ETH_ALEN]) == bytes(b[:ETH_ALEN])


def eth_type_trans(skb: sk_buff, dev: "net_device") -> int:
    """Set skb.dev, pkt_type and the MAC header, pull the Ethernet header; answers the
    protocol (network byte order value, as Linux's __be16)."""
    skb.dev = dev
    skb_reset_mac_header(skb)
    eth = skb_mac_header(skb)
    if skb_pull(skb, ETH_HLEN) is None:
        raise SkbError(f"frame of {skb.len} bytes is shorter than an Ethernet header")
    dst = eth[:ETH_ALEN]
    if is_multicast_ether_addr(dst):
        skb.pkt_type = PACKET_BROADCAST if is_broadcast_ether_addr(dst) else PACKET_MULTICAST
    elif not ether_addr_equal(dst, dev.dev_addr):
        skb.pkt_type = PACKET_OTHERHOST
    proto = int.from_bytes(eth[12:14], "big")
    return proto if proto >= 0x0600 else ETH_P_802_3


def eth_hw_addr_set(dev: "net_device", addr: bytes | bytearray) -> None:
    dev.dev_addr[:] = bytes(addr[:ETH_ALEN])


def eth_random_addr() -> bytes:
    import os
    b = bytearray(os.urandom(ETH_ALEN))
    b[0] = (b[0] & 0xFE) | 0x02            # unicast, locally administered
    return bytes(b)


# -- net_device -----------------------------------------------------------------------------
@dataclass
class net_device_stats:
    rx_packets: int = 0
    tx_packets: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_errors: int = 0
    tx_errors: int = 0
    rx_dropped: int = 0
    tx_dropped: int = 0
    rx_length_errors: int = 0
    rx_over_errors: int = 0
    rx_missed_errors: int = 0
    tx_fifo_errors: int = 0
    collisions: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class net_device_ops:
    ndo_open: Callable[["net_device"], int] | None = None
    ndo_stop: Callable[["net_device"], int] | None = None
    ndo_start_xmit: Callable[[sk_buff, "net_device"], int] | None = None
    ndo_get_stats: Callable[["net_device"], net_device_stats] | None = None
    ndo_set_mac_address: Callable[["net_device", bytes], int] | None = None
    ndo_tx_timeout: Callable[["net_device", int], None] | None = None


RxHandler = Callable[[sk_buff], int]


@dataclass(eq=False)
class net_device:
    name: str = "eth%d"
    dev_addr: bytearray = field(default_factory=lambda: bytearray(ETH_ALEN))
    broadcast: bytes = b"\xff" * ETH_ALEN
    mtu: int = ETH_DATA_LEN
    min_mtu: int = 68
    max_mtu: int = ETH_DATA_LEN
    addr_len: int = ETH_ALEN
    hard_header_len: int = ETH_HLEN
    flags: int = IFF_BROADCAST | IFF_MULTICAST
    irq: int = 0
    stats: net_device_stats = field(default_factory=net_device_stats)
    netdev_ops: net_device_ops = field(default_factory=net_device_ops)
    priv: Any = None
    dev: Any = None                          # the parent device (SET_NETDEV_DEV)
    state: int = 1 << _NOCARRIER             # a device starts without carrier
    registered: bool = False
    rx_handler: RxHandler | None = None      # netdev_rx_handler_register
    rx_handler_data: Any = None
    rx_flush: Callable[[Any], None] | None = None
    tx_wake: Callable[["net_device"], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    xmit_lock: threading.Lock = field(default_factory=threading.Lock)   # HARD_TX_LOCK

    def __repr__(self) -> str:
        return f"<net_device {self.name} mtu {self.mtu}>"


def alloc_etherdev(sizeof_priv: int | type | Any = 0) -> net_device:
    """A net_device set up for Ethernet. `sizeof_priv` is the private area: a class (its
    instance is made, as C sizes `struct my_priv`), or a size (a plain namespace)."""
    dev = net_device()
    if isinstance(sizeof_priv, type):
        dev.priv = sizeof_priv()
    else:
        dev.priv = types.SimpleNamespace()
    return dev


def netdev_priv(dev: net_device) -> Any:
    return dev.priv


def SET_NETDEV_DEV(dev: net_device, parent: Any) -> None:
    dev.dev = parent


def free_netdev(dev: net_device) -> None:
    if dev.registered:
        raise RuntimeError(f"free_netdev of {dev.name}, still registered")
    dev.priv = None


_devs_lock = threading.Lock()
_devs: dict[str, net_device] = {}               # guarded by _devs_lock
_notifiers: list[Callable[[int, net_device], None]] = []


def _notify(event: int, dev: net_device) -> None:
    for fn in list(_notifiers):
        try:
            fn(event, dev)
        except Exception as e:                  # noqa: BLE001 - one listener must not stop others
            print(f"net: notifier {fn!r} failed on {event} for {dev.name}: {e!r}", flush=True)


def register_netdevice_notifier(fn: Callable[[int, net_device], None]) -> int:
    _notifiers.append(fn)
    with _devs_lock:
        devs = list(_devs.values())
    for d in devs:                              # as Linux replays REGISTER (and UP) events
        fn(NETDEV_REGISTER, d)
        if d.flags & IFF_UP:
            fn(NETDEV_UP, d)
    return 0


def unregister_netdevice_notifier(fn: Callable[[int, net_device], None]) -> int:
    if fn in _notifiers:
        _notifiers.remove(fn)
    return 0


def register_netdev(dev: net_device) -> int:
    """Make `dev` known under its name ("eth%d": the first free ethN). 0 or -errno."""
    if dev.registered:
        return -errno.EEXIST
    if dev.netdev_ops.ndo_start_xmit is None:
        return -errno.EINVAL
    with _devs_lock:
        if "%d" in dev.name:
            n = next(i for i in itertools.count() if dev.name % i not in _devs)
            dev.name = dev.name % n
        if dev.name in _devs or len(dev.name) >= IFNAMSIZ:
            return -errno.EEXIST
        _devs[dev.name] = dev
        dev.registered = True
    _notify(NETDEV_REGISTER, dev)
    return 0


def unregister_netdev(dev: net_device) -> None:
    if not dev.registered:
        return
    dev_close(dev)
    _notify(NETDEV_UNREGISTER, dev)
    with _devs_lock:
        _devs.pop(dev.name, None)
        dev.registered = False
        last = not _devs
    if last:
        _softirq.stop()


def dev_get_by_name(name: str) -> net_device | None:
    with _devs_lock:
        return _devs.get(name)


def netdevs() -> list[net_device]:
    with _devs_lock:
        return list(_devs.values())


# -- the user's side: open, close, transmit, receive hook ------------------------------------
def dev_open(dev: net_device) -> int:
    """ifconfig up: the driver's ndo_open, then IFF_UP and NETDEV_UP. 0 or -errno."""
    if not dev.registered:
        return -errno.ENODEV
    if dev.flags & IFF_UP:
        return 0
    op = dev.netdev_ops.ndo_open
    ret = op(dev) if op else 0
    if ret:
        return ret
    dev.flags |= IFF_UP | IFF_RUNNING
    _notify(NETDEV_UP, dev)
    return 0


def dev_close(dev: net_device) -> int:
    if not dev.flags & IFF_UP:
        return 0
    _notify(NETDEV_DOWN, dev)
    op = dev.netdev_ops.ndo_stop
    if op:
        op(dev)
    dev.flags &= ~(IFF_UP | IFF_RUNNING)
    return 0


def netif_running(dev: net_device) -> bool:
    return bool(dev.flags & IFF_UP)


def dev_queue_xmit(skb: sk_buff, dev: net_device | None = None) -> int:
    """Hand `skb` to its device's driver. NETDEV_TX_OK: the driver owns it now;
    NETDEV_TX_BUSY: the queue is stopped or the driver refused it; the caller keeps it
    (Linux's qdisc would requeue it; here the user does)."""
    dev = dev or skb.dev
    if dev is None or not netif_running(dev):
        raise ValueError("dev_queue_xmit to a device that is not up")
    if netif_queue_stopped(dev):
        return NETDEV_TX_BUSY
    skb.dev = dev
    xmit = dev.netdev_ops.ndo_start_xmit
    assert xmit is not None
    with dev.xmit_lock:                 # as Linux's HARD_TX_LOCK: one ndo_start_xmit at a time
        return xmit(skb, dev)


def netdev_xmit_more(skb: sk_buff | None = None) -> bool:
    return bool(skb is not None and skb.xmit_more)


def netdev_rx_handler_register(dev: net_device, handler: RxHandler, data: Any = None,
                               flush: Callable[[Any], None] | None = None) -> int:
    """Get every skb `dev` receives: `handler(skb)` (it owns the skb), then `flush(data)`
    after each batch (the L4 extension, see the module's docstring). -EBUSY if taken."""
    if dev.rx_handler is not None:
        return -errno.EBUSY
    dev.rx_handler_data, dev.rx_flush = data, flush
    dev.rx_handler = handler
    return 0


def netdev_rx_handler_unregister(dev: net_device) -> None:
    dev.rx_handler = None
    dev.rx_handler_data = dev.rx_flush = None


# -- queue and carrier state ----------------------------------------------------------------
def _set_bit(dev: net_device, bit: int, on: bool) -> bool:
    """Set or clear a state bit; answers whether it changed."""
    with dev.lock:
        was = bool(dev.state >> bit & 1)
        dev.state = dev.state | 1 << bit if on else dev.state & ~(1 << bit)
    return was != on


def netif_start_queue(dev: net_device) -> None:
    _set_bit(dev, __LINK_STATE_XOFF, False)


def netif_stop_queue(dev: net_device) -> None:
    _set_bit(dev, __LINK_STATE_XOFF, True)


def netif_wake_queue(dev: net_device) -> None:
    """Restart a stopped queue and tell its user (Linux: __netif_schedule)."""
    if _set_bit(dev, __LINK_STATE_XOFF, False) and dev.tx_wake is not None:
        dev.tx_wake(dev)


def netif_queue_stopped(dev: net_device) -> bool:
    return bool(dev.state >> __LINK_STATE_XOFF & 1)


def netif_carrier_on(dev: net_device) -> None:
    if _set_bit(dev, __LINK_STATE_NOCARRIER, False):
        _notify(NETDEV_CHANGE, dev)


def netif_carrier_off(dev: net_device) -> None:
    if _set_bit(dev, __LINK_STATE_NOCARRIER, True):
        _notify(NETDEV_CHANGE, dev)


def netif_carrier_ok(dev: net_device) -> bool:
    return not dev.state >> __LINK_STATE_NOCARRIER & 1


# -- receive: the backlog and the NET_RX "softirq" --------------------------------------------
def netif_rx(skb: sk_buff) -> int:
    """Queue a received frame for the device's user. NET_RX_SUCCESS, or NET_RX_DROP
    (skb freed, counted in rx_dropped) when the device is down or has no user."""
    dev = skb.dev
    if dev is None or not netif_running(dev) or dev.rx_handler is None:
        if dev is not None:
            dev.stats.rx_dropped += 1
        kfree_skb(skb)
        return NET_RX_DROP
    return _softirq.raise_rx(skb)


def netif_receive_skb_list(skbs: list[sk_buff]) -> None:
    """Deliver received frames now, in the caller's thread, then the user's flush (Linux:
    what a NAPI poll hands up, one list per poll). A driver whose interrupt handler runs in
    a thread of its own (l4nic) uses it instead of `netif_rx`: no hand-over to the net-rx
    thread, so a frame reaches the device's user one thread switch sooner. Frames of a
    device that is down or has no user are freed and counted in rx_dropped."""
    take = []
    for skb in skbs:
        dev = skb.dev
        if dev is None or not netif_running(dev) or dev.rx_handler is None:
            if dev is not None:
                dev.stats.rx_dropped += 1
            kfree_skb(skb)
        else:
            take.append(skb)
    if take:
        _softirq.deliver(take)


class _NetRx:
    """The backlog of received skbs and the thread that drains it (Linux's net_rx_action).
    `backlog` is guarded by `cond`; the thread is started by the first netif_rx."""

    MAX_BACKLOG = 1000            # netdev_max_backlog: more waiting frames are dropped

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.backlog: deque[sk_buff] = deque()
        self.thread: Any = None
        self.stopping = False

    def raise_rx(self, skb: sk_buff) -> int:
        try:
            from servers.ddekit import env as _env
            _env.get()
        except Exception:                      # noqa: BLE001 - no DDEKit: deliver at once
            self.deliver([skb])
            return NET_RX_SUCCESS
        with self.cond:
            if len(self.backlog) >= self.MAX_BACKLOG:
                assert skb.dev is not None
                skb.dev.stats.rx_dropped += 1
                kfree_skb(skb)
                return NET_RX_DROP
            self.backlog.append(skb)
            start = self.thread is None
            if start:
                self.thread, self.stopping = "starting", False
            self.cond.notify()
        if start:
            from servers.ddekit import env as _env
            from servers.ddekit import thread as _thread
            t = _thread.create("net-rx", self._run)
            with self.cond:
                self.thread = t
            _env.get().on_stop.append(self.stop)
        return NET_RX_SUCCESS

    def _run(self, _: Any) -> None:
        while True:
            with self.cond:
                while not self.backlog and not self.stopping:
                    self.cond.wait()
                if self.stopping and not self.backlog:
                    return
                batch = list(self.backlog)
                self.backlog.clear()
            self.deliver(batch)

    def deliver(self, batch: list[sk_buff]) -> None:
        flush: dict[int, net_device] = {}
        for skb in batch:
            dev = skb.dev
            assert dev is not None
            handler = dev.rx_handler
            if handler is None:
                dev.stats.rx_dropped += 1
                kfree_skb(skb)
                continue
            try:
                handler(skb)
            except Exception as e:             # noqa: BLE001 - the user's bug, not the driver's
                print(f"net: rx handler of {dev.name} failed: {e!r}", flush=True)
            flush[id(dev)] = dev
        for dev in flush.values():
            if dev.rx_flush is not None:
                try:
                    dev.rx_flush(dev.rx_handler_data)
                except Exception as e:         # noqa: BLE001
                    print(f"net: rx flush of {dev.name} failed: {e!r}", flush=True)

    def stop(self) -> None:
        with self.cond:
            t, self.stopping = self.thread, True
            self.cond.notify_all()
        if t is not None and not isinstance(t, str):
            t.join(5.0)
        with self.cond:
            if self.thread is t:
                self.thread = None
            for skb in self.backlog:
                kfree_skb(skb)
            self.backlog.clear()


_softirq = _NetRx()
