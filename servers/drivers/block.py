"""A block driver: one sector written by DMA, read back by DMA, compared, flushed, logged.

    run(l4, device="disk0", lba="0", text="...", dma="0")

The buffer lives at offset `dma` of the DMA memory sigma0 gives us (`PhysRam`: two
sectors, the write buffer, then the read buffer; the device is told its physical address). Each request is a register command (LBA, COUNT, DMA_ADDR, CMD) completed by the
disk's interrupt, which arrives as IRQ IPC with our label. Log lines (l4run logs TASK):

    block: disk0 has N sectors
    block: wrote sector LBA by DMA: 'text'
    block: read back sector LBA: ok | MISMATCH
    block: flushed

Exit status 0 after a successful round trip (then the task stays up, idle), 1 if the device
reported an error or the data came back different.
"""
from __future__ import annotations

from hal.device import Status
from hal.driver import DeviceHandle
from kernel.abi import Proto
from kernel.user.client import L4

from .common import PhysRam, idle, log, number, open_device

SECTOR = 512
IRQ_LABEL = 0xB10C
READ, WRITE, FLUSH = 1, 2, 3


def command(l4: L4, disk: DeviceHandle, **regs: int) -> int:
    """Start a register command and wait for its completion interrupt; answers ERROR (0 = ok)."""
    disk.writes(**regs)
    while True:
        msg = l4.wait(timeout=30_000)
        if msg.proto == Proto.IRQ and msg.label == IRQ_LABEL:
            break
    status, error = disk.reads("STATUS", "ERROR")
    disk.eoi()
    return error if status & Status.ERROR else 0


def run(l4: L4, device: str = "disk0", lba: str = "0", text: str = "hello from the block driver",
        dma: str = "0", stay: str = "1") -> int:
    sector = number(lba)
    disk = open_device(l4, device)
    ram = PhysRam(l4, number(dma) + 2 * SECTOR)
    addr = ram.phys + number(dma)         # `dma`: an offset in our DMA buffer
    log(f"block: {device} has {disk.read('SECTORS')} sectors")
    disk.attach_irq(label=IRQ_LABEL)
    data = text.encode()[:SECTOR].ljust(SECTOR, b"\0")
    ram.write(addr, data)
    err = command(l4, disk, LBA=sector, COUNT=1, DMA_ADDR=addr, CMD=WRITE)
    if err:
        log(f"block: write of sector {sector} failed: error {err}")
        return 1
    log(f"block: wrote sector {sector} by DMA: {text!r}")
    ram.write(addr + SECTOR, b"\xff" * SECTOR)
    err = command(l4, disk, LBA=sector, COUNT=1, DMA_ADDR=addr + SECTOR, CMD=READ)
    back = ram.read(addr + SECTOR, SECTOR)
    if err or back != data:
        log(f"block: read back sector {sector}: MISMATCH (error {err})")
        return 1
    log(f"block: read back sector {sector}: ok")
    err = command(l4, disk, CMD=FLUSH)
    log("block: flushed" if not err else f"block: flush failed: error {err}")
    ram.close()
    if err:
        return 1
    return idle(l4) if stay == "1" else 0
