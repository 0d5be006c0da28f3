"""l4fb: the fbdev driver of the HAL framebuffer (hal/DEVICES.md "Framebuffer"), Linux style.

Like a simple Linux platform fbdev driver (simplefb, vfb): probe maps the registers, takes
coherent DMA memory for the largest mode (so a mode change never reallocates), fills in
`fb_info` (var: the mode; fix: smem_start = the bus address the device scans out from,
line_length = the stride), programs WIDTH/HEIGHT/BASE with scan-out off, enables it and
registers the framebuffer. `fb_check_var` refuses what the hardware cannot show (not
32 bpp, larger than MAX_WIDTH/MAX_HEIGHT); `fb_set_par` reprograms the mode; `fb_blank`
switches the scan-out off and on. The device raises no interrupt.

Module parameter: `mode_option` ("WxH", empty = the largest mode), set before loading.
"""
from __future__ import annotations

from servers.dde_linux.device import (dev_get_drvdata, dev_info, dev_set_drvdata, platform_device,
                                      platform_device_id, platform_driver,
                                      platform_driver_register, platform_driver_unregister)
from servers.dde_linux.dma import dma_alloc_coherent, dma_free_coherent, dma_mapping_error
from servers.dde_linux.fb import (FB_BLANK_UNBLANK, fb_info, fb_ops, fb_var_screeninfo,
                                  framebuffer_alloc, framebuffer_release, register_framebuffer,
                                  unregister_framebuffer)
from servers.dde_linux.io import IoMem, iounmap, ioremap, iowrite_batch, readq, writeq
from servers.dde_linux.kernel import EINVAL, EIO, ENOMEM, module_exit, module_init

# registers (hal/DEVICES.md, by index)
FB_STATUS, FB_ERROR = 1, 2
FB_WIDTH, FB_HEIGHT, FB_STRIDE, FB_BPP, FB_BASE, FB_CTRL, FB_MAX_WIDTH, FB_MAX_HEIGHT = \
    8, 9, 10, 11, 12, 13, 14, 15
STATUS_ERROR = 0x4
CTRL_ENABLE = 0x1
PAGE_SIZE = 4096

mode_option = ""                       # module_param(mode_option, charp): "WxH"


class l4fb_par:                        # noqa: N801 - the driver's private state, Linux style
    regs: IoMem
    max_xres: int
    max_yres: int
    cpu: int
    dma: int
    size: int


def _status_ok(par: l4fb_par) -> int:
    """0, or -EIO after clearing the device's error (a refused register write)."""
    if readq(par.regs, FB_STATUS) & STATUS_ERROR:
        err = readq(par.regs, FB_ERROR)
        writeq(par.regs, FB_ERROR, 0)
        return -EIO if err else 0
    return 0


def l4fb_program(info: fb_info) -> int:
    """Scan-out off, mode and base set, then on again unless blanked."""
    par: l4fb_par = info.par
    iowrite_batch(par.regs, [(FB_CTRL, 0), (FB_WIDTH, info.var.xres),
                             (FB_HEIGHT, info.var.yres), (FB_BASE, info.fix.smem_start)])
    if info.blank == FB_BLANK_UNBLANK:
        writeq(par.regs, FB_CTRL, CTRL_ENABLE)
    return _status_ok(par)


def l4fb_check_var(var: fb_var_screeninfo, info: fb_info) -> int:
    par: l4fb_par = info.par
    if var.bits_per_pixel != 32:
        return -EINVAL
    if not (1 <= var.xres <= par.max_xres and 1 <= var.yres <= par.max_yres):
        return -EINVAL
    var.xres_virtual, var.yres_virtual, var.xoffset, var.yoffset = var.xres, var.yres, 0, 0
    return 0


def l4fb_set_par(info: fb_info) -> int:
    info.fix.line_length = info.var.xres * 4
    return l4fb_program(info)


def l4fb_blank(blank: int, info: fb_info) -> int:
    par: l4fb_par = info.par
    writeq(par.regs, FB_CTRL, CTRL_ENABLE if blank == FB_BLANK_UNBLANK else 0)
    return _status_ok(par)


l4fb_ops = fb_ops(fb_check_var=l4fb_check_var, fb_set_par=l4fb_set_par, fb_blank=l4fb_blank)


def _mode(max_x: int, max_y: int) -> tuple[int, int]:
    if not mode_option:
        return max_x, max_y
    w, _, h = mode_option.partition("x")
    return int(w), int(h)


def l4fb_probe(pdev: platform_device) -> int:
    regs = ioremap(pdev)
    max_x, max_y = readq(regs, FB_MAX_WIDTH), readq(regs, FB_MAX_HEIGHT)
    size = -(-max_x * max_y * 4 // PAGE_SIZE) * PAGE_SIZE
    cpu, dma = dma_alloc_coherent(pdev, size)
    if not cpu or dma_mapping_error(pdev, dma):
        iounmap(regs)
        return -ENOMEM
    info = framebuffer_alloc(1, pdev)
    assert info is not None
    par: l4fb_par = info.par
    par.regs, par.max_xres, par.max_yres = regs, max_x, max_y
    par.cpu, par.dma, par.size = cpu, dma, size
    info.fix.id = "l4fb"
    info.fix.smem_start, info.fix.smem_len = dma, size
    info.screen_base, info.screen_size = cpu, size
    info.fbops = l4fb_ops
    var = fb_var_screeninfo()
    var.xres, var.yres = _mode(max_x, max_y)
    ret = l4fb_check_var(var, info)
    if ret == 0:
        info.var = var
        ret = l4fb_set_par(info)
    if ret == 0:
        ret = register_framebuffer(info)
    if ret:
        writeq(regs, FB_CTRL, 0)
        dma_free_coherent(pdev, size, cpu, dma)
        framebuffer_release(info)
        iounmap(regs)
        return ret
    dev_set_drvdata(pdev, info)
    dev_info(pdev, "fb%d: %dx%d XRGB8888, %d KiB at bus address %#x", info.node, var.xres,
             var.yres, size >> 10, dma)
    return 0


def l4fb_remove(pdev: platform_device) -> None:
    info: fb_info = dev_get_drvdata(pdev)
    par: l4fb_par = info.par
    unregister_framebuffer(info)
    writeq(par.regs, FB_CTRL, 0)       # the device stops reading the memory before it goes
    dma_free_coherent(pdev, par.size, par.cpu, par.dma)
    iounmap(par.regs)
    framebuffer_release(info)


l4fb_driver = platform_driver(name="l4fb", probe=l4fb_probe, remove=l4fb_remove,
                              id_table=[platform_device_id("fb")])


@module_init
def l4fb_init() -> int:
    return platform_driver_register(l4fb_driver)


@module_exit
def l4fb_exit() -> None:
    platform_driver_unregister(l4fb_driver)
