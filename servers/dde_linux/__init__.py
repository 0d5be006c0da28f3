"""DDE/Linux: the Linux in-kernel driver API on DDEKit (paper §4.4), so a driver written the
Linux way reads here line by line: module_init, kmalloc, ioremap/readq, request_irq,
dma_alloc_coherent, spinlocks, wait queues, work queues, timers, platform drivers, blk-mq.

    kernel     modules (module_init/exit, load/unload), boot/shutdown, printk, kmalloc/kfree,
               memory access helpers, jiffies/HZ/msleep/udelay, BUG_ON/WARN_ON, errno
    io         ioremap -> __iomem handle, readl/writel/readq/writeq (registers by index), iounmap
    dma        dma_alloc_coherent/dma_free_coherent, dma_map_single/unmap, directions, masks
    irq        request_irq/free_irq (handler(irq, dev_id) -> IRQ_HANDLED), enable/disable_irq
    sync       spinlock_t, struct mutex, wait_queue_head_t + wait_event*, completion
    workqueue  work_struct, schedule_work, create/queue/flush/destroy_workqueue, tasklets
    timer      timer_list, timer_setup, mod_timer, del_timer(_sync)
    device     platform devices from DDEKit's bus scan, platform_driver probe/remove, resources
    block      gendisk, blk-mq tag set and queue_rq, requests with segments, end_request;
               blk_submit for what sits on a disk (the block device server)
    net, fb, input   networking, framebuffer and input glue (their own modules)
    drivers/   the HAL's devices as Linux drivers: l4disk (and l4nic, l4fb, l4input)

The DDE model: a driver, this glue and the device server that multiplexes the device run
in one task. The server's main function calls `kernel.boot(l4)` (DDEKit starts), then
`kernel.load("servers.dde_linux.drivers.l4disk")` (module_init registers a platform driver,
whose probe binds the devices the task's io policy gives it), then serves its clients;
`kernel.shutdown()` unloads the modules and gives everything back.

Mapping rules (where Linux and this machine differ):
- Pointers are DDEKit virtual addresses (ints); bytes at them are read and written with
  kernel.mem_read/mem_write/memset (there is no raw pointer dereference in Python).
- Process context is any DDEKit thread; interrupt context is the line's DDEKit handler
  thread; timers and tasklets run in DDEKit threads of their own. Spinlocks are locks that
  these threads take (spin_lock_irqsave is spin_lock: the interrupt is a thread, the lock
  excludes it). Wait conditions are callables.
- Registers are 64-bit words by index (io.py); bus addresses are physical (dma.py); the
  HAL's IOMMU lets a device reach only memory this task maps.
- Errors are Linux's: negative errno answers, BLK_STS_* statuses, NULL as 0.
"""
from __future__ import annotations

from . import block, device, dma, io, irq, kernel, sync, timer, workqueue
from .block import (BLK_STS_IOERR, BLK_STS_OK, REQ_OP_FLUSH, REQ_OP_READ, REQ_OP_WRITE,
                    bio_vec, blk_mq_end_request, blk_submit, blk_submit_batch, gendisk,
                    get_disk)
from .device import platform_driver, platform_driver_register, platform_driver_unregister
from .dma import dma_alloc_coherent, dma_free_coherent, dma_map_single, dma_unmap_single
from .io import ioremap, iounmap, readl, readq, writel, writeq
from .irq import IRQ_HANDLED, IRQ_NONE, IRQF_SHARED, free_irq, request_irq
from .kernel import (EBUSY, EINVAL, EIO, ENODEV, ENOMEM, ETIMEDOUT, GFP_ATOMIC, GFP_DMA,
                     GFP_KERNEL, HZ, KERN_DEBUG, KERN_ERR, KERN_INFO, KERN_WARNING, BUG_ON,
                     WARN_ON, boot, jiffies, kfree, kmalloc, kzalloc, load, mem_read,
                     mem_write, memset, module_exit, module_init, msecs_to_jiffies, msleep,
                     printk, shutdown, time_after, udelay, unload)

__all__ = ["block", "device", "dma", "io", "irq", "kernel", "sync", "timer", "workqueue",
           "BLK_STS_IOERR", "BLK_STS_OK", "REQ_OP_FLUSH", "REQ_OP_READ", "REQ_OP_WRITE",
           "bio_vec", "blk_mq_end_request", "blk_submit", "blk_submit_batch", "gendisk",
           "get_disk", "platform_driver", "platform_driver_register",
           "platform_driver_unregister", "dma_alloc_coherent", "dma_free_coherent",
           "dma_map_single", "dma_unmap_single", "ioremap", "iounmap", "readl", "readq",
           "writel", "writeq", "IRQ_HANDLED", "IRQ_NONE", "IRQF_SHARED", "free_irq",
           "request_irq", "EBUSY", "EINVAL", "EIO", "ENODEV", "ENOMEM", "ETIMEDOUT",
           "GFP_ATOMIC", "GFP_DMA", "GFP_KERNEL", "HZ", "KERN_DEBUG", "KERN_ERR", "KERN_INFO",
           "KERN_WARNING", "BUG_ON", "WARN_ON", "boot", "jiffies", "kfree", "kmalloc",
           "kzalloc", "load", "mem_read", "mem_write", "memset", "module_exit", "module_init",
           "msecs_to_jiffies", "msleep", "printk", "shutdown", "time_after", "udelay", "unload"]
