"""l4nic: the driver of the HAL's Ethernet NIC, written against the DDE/Linux glue.

The hardware is hal/DEVICES.md "Ethernet NIC": an RX and a TX ring of 16-byte descriptors
in DMA memory (`u64 addr, u16 len, u16 flags, u32 0`, flags DONE/ERROR written last by the
device), a doorbell per ring (RX_TAIL, TX_TAIL), an interrupt cause register ISR (RX, TX)
raised once per batch, and a LINK register (no link interrupt: a timer polls it, as drivers
of PHYs without an interrupt do).

Shape: a platform driver for devices of kind "nic"; probe maps the registers, reads the MAC
and registers an Ethernet net_device; ndo_open allocates the rings and their buffers from
coherent DMA memory, requests the interrupt, enables the rings and starts the link timer;
ndo_start_xmit copies the skb into the next TX buffer and rings the doorbell unless more
frames follow at once (skb->xmit_more); the interrupt handler reaps finished TX descriptors
(waking a stopped queue) and passes the received frames of one pass over the ring up at once
with netif_receive_skb_list (as a NAPI poll does; no NAPI itself: the handler runs in its own
thread, so it may loop over the whole ring and deliver in that thread).

Locking: `priv.tx_lock` (a spinlock) guards the TX ring indices, taken by the transmitting
thread and by the interrupt handler; the doorbell is written after it is released (the
core serialises ndo_start_xmit, so doorbells never overtake each other). RX state is the
interrupt handler's alone.
"""
from __future__ import annotations

import struct
from typing import Any, cast

from servers.dde_linux.device import (dev_err, dev_info, platform_device, platform_device_id,
                                      platform_driver, platform_driver_register,
                                      platform_driver_unregister, platform_get_drvdata,
                                      platform_get_irq, platform_set_drvdata)
from servers.dde_linux.dma import dma_alloc_coherent, dma_free_coherent, dma_mapping_error
from servers.dde_linux.io import IoMem, ioremap, iounmap, iowrite_batch, readq, writeq
from servers.dde_linux.irq import IRQ_HANDLED, IRQ_NONE, free_irq, request_irq
from servers.dde_linux.kernel import (EIO, ENODEV, ENOMEM, HZ, jiffies, module_exit,
                                      module_init)
from servers.dde_linux.net import (ETH_ALEN, ETH_HLEN, NETDEV_TX_BUSY, NETDEV_TX_OK,
                                   SET_NETDEV_DEV, alloc_etherdev, dev_kfree_skb_any,
                                   eth_type_trans, free_netdev, net_device, net_device_ops,
                                   net_device_stats, netdev_alloc_skb_ip_align, netdev_priv,
                                   netdev_xmit_more, netif_carrier_off, netif_carrier_ok,
                                   netif_carrier_on, netif_queue_stopped,
                                   netif_receive_skb_list,
                                   netif_start_queue, netif_stop_queue, netif_wake_queue,
                                   register_netdev, sk_buff, skb_put_data, unregister_netdev)
from servers.dde_linux.sync import spin_lock, spin_lock_init, spin_unlock, spinlock_t
from servers.dde_linux.timer import del_timer_sync, mod_timer, timer_list, timer_setup
from servers.ddekit import memory as _ddekit_memory

DRV_NAME = "l4nic"

# -- registers (hal/DEVICES.md, by index) --------------------------------------------------
L4NIC_ID, L4NIC_ERROR, L4NIC_IRQ_CTRL = 0, 2, 4
L4NIC_MAC, L4NIC_LINK, L4NIC_CTRL, L4NIC_ISR = 8, 9, 10, 11
L4NIC_RX_BASE, L4NIC_RX_SIZE, L4NIC_RX_HEAD, L4NIC_RX_TAIL = 12, 13, 14, 15
L4NIC_TX_BASE, L4NIC_TX_SIZE, L4NIC_TX_HEAD, L4NIC_TX_TAIL = 16, 17, 18, 19
L4NIC_RX_DROPPED, L4NIC_TX_ERRORS = 22, 23
L4NIC_DEVICE_ID = 0x4E494331

CTRL_RX_EN, CTRL_TX_EN = 0x1, 0x2
ISR_RX, ISR_TX = 0x1, 0x2
IRQ_CTRL_EOI = 3
DESC_DONE, DESC_ERROR = 0x1, 0x2

RX_RING_SIZE = 512               # descriptors (a power of two, 8..4096): a burst of the host's ACKs
                                 # while this task waits for a CPU must not find the ring empty
TX_RING_SIZE = 256
BUF_SIZE = 2048                  # one frame per buffer (the device's MAX_FRAME)
TX_WAKE_THRESHOLD = TX_RING_SIZE // 4
TX_BURST = 128                   # descriptors per doorbell at most, xmit_more or not: bounds the
                                 # device's batch (the IOMMU checks a batch in one kernel call);
                                 # each doorbell is an IPC to the HAL, so a batch from the
                                 # user (ORe's ~40 frames) goes in one
RX_REFILL = RX_RING_SIZE // 8    # RX buffers handed back with one RX_TAIL write: the device
                                 # always holds at least RX_RING_SIZE - 1 - RX_REFILL of them
LINK_POLL = HZ // 10             # the LINK register is polled: no link interrupt

l4nic_desc = struct.Struct("<QHHI")     # struct l4nic_desc { __le64 addr; __le16 len, flags; __le32 rsvd; }
DESC_SIZE = l4nic_desc.size
_flags_of = struct.Struct("<H").unpack_from      # the flags word, at offset 10


class l4nic_timer(timer_list):
    """The link timer and the device it polls (Linux: from_timer(priv, t, link_timer))."""
    ndev: net_device | None = None


class l4nic_priv:
    """struct l4nic_priv: the driver's state of one NIC (netdev_priv)."""

    def __init__(self) -> None:
        self.ndev: net_device | None = None
        self.pdev: platform_device | None = None
        self.regs: IoMem | None = None
        self.irq = -1
        self.tx_lock = spinlock_t()
        # coherent DMA: both rings in one block, the RX and TX buffers in another
        self.rings = self.rings_dma = 0
        self.bufs = self.bufs_dma = 0
        self.ring_mem: memoryview | None = None       # CPU view of the coherent rings
        self.buf_mem: memoryview | None = None        # CPU view of the coherent buffers
        self.rx_next = 0                              # next RX descriptor to look at
        self.rx_posted = 0                            # rx_next at the last RX_TAIL write
        self.tx_next = 0                              # next TX descriptor to fill (tx_lock)
        self.tx_clean = 0                             # next TX descriptor to reap (tx_lock)
        self.tx_rung = 0                              # tx_next at the last doorbell (tx_lock)
        self.tx_len = [0] * TX_RING_SIZE              # bytes in flight per descriptor
        self.link_timer = l4nic_timer()


RINGS_BYTES = (RX_RING_SIZE + TX_RING_SIZE) * DESC_SIZE
BUFS_BYTES = (RX_RING_SIZE + TX_RING_SIZE) * BUF_SIZE
TX_RING_OFF = RX_RING_SIZE * DESC_SIZE           # in the rings block
TX_BUF_OFF = RX_RING_SIZE * BUF_SIZE             # in the buffers block


def coherent_view(cpu_addr: int, size: int) -> memoryview:
    """The CPU's view of coherent DMA memory (Linux: the pointer dma_alloc_coherent answers).
    Valid until dma_free_coherent; the driver drops it first."""
    return _ddekit_memory.view(cpu_addr, size, writable=True)


# -- transmit ---------------------------------------------------------------------------------
def l4nic_tx_avail(priv: l4nic_priv) -> int:
    """Free TX descriptors (one is kept empty: head == tail means an empty ring)."""
    return TX_RING_SIZE - 1 - (priv.tx_next - priv.tx_clean)


def l4nic_start_xmit(skb: sk_buff, ndev: net_device) -> int:
    priv: l4nic_priv = netdev_priv(ndev)
    assert priv.ring_mem is not None and priv.buf_mem is not None and priv.regs is not None
    if skb.len < ETH_HLEN or skb.len > BUF_SIZE:
        ndev.stats.tx_dropped += 1
        dev_kfree_skb_any(skb)
        return NETDEV_TX_OK
    spin_lock(priv.tx_lock)
    if l4nic_tx_avail(priv) == 0:
        netif_stop_queue(ndev)
        spin_unlock(priv.tx_lock)
        return NETDEV_TX_BUSY
    entry = priv.tx_next % TX_RING_SIZE
    buf = TX_BUF_OFF + entry * BUF_SIZE
    priv.buf_mem[buf:buf + skb.len] = skb.data
    priv.tx_len[entry] = skb.len
    l4nic_desc.pack_into(priv.ring_mem, TX_RING_OFF + entry * DESC_SIZE,
                         priv.bufs_dma + buf, skb.len, 0, 0)
    priv.tx_next += 1
    if l4nic_tx_avail(priv) == 0:
        netif_stop_queue(ndev)
    # the doorbell: once per burst (at most TX_BURST), and always when the queue stops
    # (nothing else would ring it). Rung after tx_lock is released: it is an IPC to the
    # device, and the interrupt handler (reaping TX, passing RX up) must not wait for it.
    # Doorbells stay in order: the core calls ndo_start_xmit one at a time (HARD_TX_LOCK).
    tail = -1
    if not netdev_xmit_more(skb) or netif_queue_stopped(ndev) or \
            priv.tx_next - priv.tx_rung >= TX_BURST:
        tail = priv.tx_next % TX_RING_SIZE
        priv.tx_rung = priv.tx_next
    spin_unlock(priv.tx_lock)
    if tail >= 0:
        writeq(priv.regs, L4NIC_TX_TAIL, tail)
    dev_kfree_skb_any(skb)                  # copied into the ring: the skb is done
    return NETDEV_TX_OK


def l4nic_tx_complete(ndev: net_device) -> tuple[int, bool]:
    """Reap the descriptors the device finished: (how many, whether to wake the queue)."""
    priv: l4nic_priv = netdev_priv(ndev)
    assert priv.ring_mem is not None
    spin_lock(priv.tx_lock)
    first = priv.tx_clean
    while priv.tx_clean != priv.tx_next:
        entry = priv.tx_clean % TX_RING_SIZE
        flags = _flags_of(priv.ring_mem, TX_RING_OFF + entry * DESC_SIZE + 10)[0]
        if not flags & DESC_DONE:
            break
        if flags & DESC_ERROR:
            ndev.stats.tx_errors += 1
        else:
            ndev.stats.tx_packets += 1
            ndev.stats.tx_bytes += priv.tx_len[entry]
        priv.tx_clean += 1
    wake = netif_queue_stopped(ndev) and l4nic_tx_avail(priv) >= TX_WAKE_THRESHOLD
    reaped = priv.tx_clean - first
    spin_unlock(priv.tx_lock)
    return reaped, wake


# -- receive ------------------------------------------------------------------------------------
def l4nic_rx(ndev: net_device) -> int:
    """Pass every filled RX buffer up and re-post it; answers the count (the caller moves
    RX_TAIL, once)."""
    priv: l4nic_priv = netdev_priv(ndev)
    assert priv.ring_mem is not None and priv.buf_mem is not None and priv.regs is not None
    ring, bufs, done = priv.ring_mem, priv.buf_mem, 0
    skbs: list[sk_buff] = []
    while done < RX_RING_SIZE:
        entry = priv.rx_next % RX_RING_SIZE
        off = entry * DESC_SIZE
        flags = _flags_of(ring, off + 10)[0]        # flags first: the device writes them last
        if not flags & DESC_DONE:
            break
        _, length, _, _ = l4nic_desc.unpack_from(ring, off)
        if flags & DESC_ERROR or length < ETH_HLEN:
            ndev.stats.rx_errors += 1
            ndev.stats.rx_length_errors += 1
        else:
            skb = netdev_alloc_skb_ip_align(ndev, length)
            skb_put_data(skb, bufs[entry * BUF_SIZE:entry * BUF_SIZE + length])
            skb.protocol = eth_type_trans(skb, ndev)
            ndev.stats.rx_packets += 1
            ndev.stats.rx_bytes += length
            skbs.append(skb)
        l4nic_desc.pack_into(ring, off, priv.bufs_dma + entry * BUF_SIZE, BUF_SIZE, 0, 0)
        priv.rx_next += 1
        done += 1
    if skbs:
        netif_receive_skb_list(skbs)
    return done


def l4nic_interrupt(irq: int, dev_id: Any) -> int:
    """Reap TX, receive, and every RX_REFILL frames one register burst: ack ISR and hand
    the RX buffers back.

    Each register access is an IPC to the HAL (whose one thread also takes the doorbells),
    so the handler makes as few as it can. The rings' DONE bits say what happened, so ISR
    is not read first: a batch that lands after the rings were looked at raises the line
    again, and the controller delivers it after our EOI. Nor is ISR acknowledged at every
    interrupt: this device raises its line per batch whatever ISR holds (an edge, not a
    level), so ISR is only a record; it is cleared with the next RX_TAIL write. The RX
    buffers go back in bursts: the device keeps plenty posted meanwhile."""
    ndev: net_device = dev_id
    priv: l4nic_priv = netdev_priv(ndev)
    assert priv.regs is not None
    reaped, wake = l4nic_tx_complete(ndev)
    received = l4nic_rx(ndev)
    if priv.rx_next - priv.rx_posted >= RX_REFILL:
        iowrite_batch(priv.regs, [(L4NIC_ISR, ISR_RX | ISR_TX),
                                  (L4NIC_RX_TAIL, (priv.rx_next - 1) % RX_RING_SIZE)])
        priv.rx_posted = priv.rx_next
    if wake:                    # after the RX buffers went back: what the sender sends now fits
        netif_wake_queue(ndev)
    return IRQ_HANDLED if reaped or received else IRQ_NONE


# -- link -----------------------------------------------------------------------------------------
def l4nic_check_link(ndev: net_device) -> None:
    priv: l4nic_priv = netdev_priv(ndev)
    assert priv.regs is not None
    up = bool(readq(priv.regs, L4NIC_LINK) & 1)
    if up and not netif_carrier_ok(ndev):
        netif_carrier_on(ndev)
        dev_info(ndev.dev, "%s: link up", ndev.name)
    elif not up and netif_carrier_ok(ndev):
        netif_carrier_off(ndev)
        dev_info(ndev.dev, "%s: link down", ndev.name)


def l4nic_link_timer(t: timer_list) -> None:
    ndev = cast(l4nic_timer, t).ndev
    assert ndev is not None
    l4nic_check_link(ndev)
    mod_timer(t, jiffies() + LINK_POLL)


# -- open / stop ----------------------------------------------------------------------------------
def l4nic_alloc_rings(priv: l4nic_priv) -> int:
    pdev = priv.pdev
    priv.rings, priv.rings_dma = dma_alloc_coherent(pdev, RINGS_BYTES)
    if dma_mapping_error(pdev, priv.rings_dma):
        return -ENOMEM
    priv.bufs, priv.bufs_dma = dma_alloc_coherent(pdev, BUFS_BYTES)
    if dma_mapping_error(pdev, priv.bufs_dma):
        dma_free_coherent(pdev, RINGS_BYTES, priv.rings, priv.rings_dma)
        return -ENOMEM
    priv.ring_mem = coherent_view(priv.rings, RINGS_BYTES)
    priv.buf_mem = coherent_view(priv.bufs, BUFS_BYTES)
    for i in range(RX_RING_SIZE):           # every RX buffer posted, empty
        l4nic_desc.pack_into(priv.ring_mem, i * DESC_SIZE, priv.bufs_dma + i * BUF_SIZE,
                             BUF_SIZE, 0, 0)
    priv.rx_next = priv.rx_posted = priv.tx_next = priv.tx_clean = priv.tx_rung = 0
    return 0


def l4nic_free_rings(priv: l4nic_priv) -> None:
    for view in (priv.ring_mem, priv.buf_mem):
        if view is not None:
            view.release()
    priv.ring_mem = priv.buf_mem = None
    if priv.bufs:
        dma_free_coherent(priv.pdev, BUFS_BYTES, priv.bufs, priv.bufs_dma)
    if priv.rings:
        dma_free_coherent(priv.pdev, RINGS_BYTES, priv.rings, priv.rings_dma)
    priv.rings = priv.bufs = 0


def l4nic_open(ndev: net_device) -> int:
    priv: l4nic_priv = netdev_priv(ndev)
    assert priv.regs is not None
    ret = l4nic_alloc_rings(priv)
    if ret:
        return ret
    # reset: a driver that died (we may be its restart) left the rings running and its last
    # interrupt in service, which would keep the line silent for us
    iowrite_batch(priv.regs, [(L4NIC_CTRL, 0), (L4NIC_ISR, ISR_RX | ISR_TX),
                              (L4NIC_IRQ_CTRL, IRQ_CTRL_EOI)])
    ret = request_irq(priv.irq, l4nic_interrupt, 0, ndev.name, ndev)
    if ret:
        l4nic_free_rings(priv)
        return ret
    iowrite_batch(priv.regs, [(L4NIC_ERROR, 0),
                              (L4NIC_RX_BASE, priv.rings_dma), (L4NIC_RX_SIZE, RX_RING_SIZE),
                              (L4NIC_TX_BASE, priv.rings_dma + TX_RING_OFF),
                              (L4NIC_TX_SIZE, TX_RING_SIZE), (L4NIC_ISR, ISR_RX | ISR_TX),
                              (L4NIC_CTRL, CTRL_RX_EN | CTRL_TX_EN),
                              (L4NIC_RX_TAIL, RX_RING_SIZE - 1)])
    err = readq(priv.regs, L4NIC_ERROR)
    if err:
        dev_err(ndev.dev, "%s: the device refused its rings (error %d)", ndev.name, err)
        writeq(priv.regs, L4NIC_CTRL, 0)
        free_irq(priv.irq, ndev)
        l4nic_free_rings(priv)
        return -EIO
    l4nic_check_link(ndev)
    timer_setup(priv.link_timer, l4nic_link_timer, 0)
    priv.link_timer.ndev = ndev
    mod_timer(priv.link_timer, jiffies() + LINK_POLL)
    netif_start_queue(ndev)
    return 0


def l4nic_stop(ndev: net_device) -> int:
    priv: l4nic_priv = netdev_priv(ndev)
    assert priv.regs is not None
    netif_stop_queue(ndev)
    del_timer_sync(priv.link_timer)
    writeq(priv.regs, L4NIC_CTRL, 0)        # the device stops using the rings
    free_irq(priv.irq, ndev)
    netif_carrier_off(ndev)
    l4nic_free_rings(priv)
    return 0


def l4nic_get_stats(ndev: net_device) -> net_device_stats:
    priv: l4nic_priv = netdev_priv(ndev)
    assert priv.regs is not None
    ndev.stats.rx_missed_errors = readq(priv.regs, L4NIC_RX_DROPPED)
    return ndev.stats


l4nic_netdev_ops = net_device_ops(ndo_open=l4nic_open, ndo_stop=l4nic_stop,
                                  ndo_start_xmit=l4nic_start_xmit,
                                  ndo_get_stats=l4nic_get_stats)


# -- probe / remove -------------------------------------------------------------------------------
def l4nic_probe(pdev: platform_device) -> int:
    ndev = alloc_etherdev(l4nic_priv)
    priv: l4nic_priv = netdev_priv(ndev)
    priv.ndev, priv.pdev = ndev, pdev
    spin_lock_init(priv.tx_lock)
    priv.regs = ioremap(pdev)
    if readq(priv.regs, L4NIC_ID) != L4NIC_DEVICE_ID:
        dev_err(pdev, "not an l4nic (ID %#x)", readq(priv.regs, L4NIC_ID))
        iounmap(priv.regs)
        free_netdev(ndev)
        return -ENODEV
    priv.irq = platform_get_irq(pdev, 0)
    if priv.irq < 0:
        iounmap(priv.regs)
        free_netdev(ndev)
        return priv.irq
    ndev.dev_addr[:] = readq(priv.regs, L4NIC_MAC).to_bytes(ETH_ALEN, "big")
    ndev.irq = priv.irq
    ndev.netdev_ops = l4nic_netdev_ops
    SET_NETDEV_DEV(ndev, pdev)
    ret = register_netdev(ndev)
    if ret:
        iounmap(priv.regs)
        free_netdev(ndev)
        return ret
    platform_set_drvdata(pdev, ndev)
    dev_info(pdev, "%s: l4nic at irq %d, MAC %s", ndev.name, priv.irq,
             ":".join(f"{b:02x}" for b in ndev.dev_addr))
    return 0


def l4nic_remove(pdev: platform_device) -> None:
    ndev: net_device = platform_get_drvdata(pdev)
    priv: l4nic_priv = netdev_priv(ndev)
    unregister_netdev(ndev)                 # closes it first if it is up
    assert priv.regs is not None
    iounmap(priv.regs)
    free_netdev(ndev)


l4nic_driver = platform_driver(name=DRV_NAME, probe=l4nic_probe, remove=l4nic_remove,
                               id_table=[platform_device_id("nic")])


@module_init
def l4nic_init() -> int:
    return platform_driver_register(l4nic_driver)


@module_exit
def l4nic_exit() -> None:
    platform_driver_unregister(l4nic_driver)
