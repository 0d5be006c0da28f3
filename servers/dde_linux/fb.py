"""DDE/Linux framebuffer: Linux's fbdev core (`fb_info`, `fb_ops`, register/unregister).

    info = framebuffer_alloc(sizeof_par, dev)        # info.par: the driver's private state
    info.var.xres, info.var.yres, info.var.bits_per_pixel = 640, 480, 32
    info.fix.smem_start = dma_handle                 # physical (bus) address of the pixels
    info.fix.smem_len, info.fix.line_length = size, 640 * 4
    info.screen_base = cpu_addr                      # CPU-side (DDEKit) address of the pixels
    info.fbops = fb_ops(fb_check_var=..., fb_set_par=..., fb_blank=...)
    register_framebuffer(info) -> 0 | -errno         # info.node: its minor, like /dev/fbN
    fb_set_var(info, var) / fb_blank(info, FB_BLANK_*) # what an ioctl would do
    unregister_framebuffer(info); framebuffer_release(info)

and, for the fbdev *user* (the fb device server, in the place of /dev/fbN and its ioctls):
`registered_fb(node)`, `num_registered_fb()`, `fb_register_client(fn)` (Linux's fb notifier:
`fn(event, info)` with FB_EVENT_FB_REGISTERED / FB_EVENT_FB_UNREGISTERED), `fb_screen(info)`
(a writable view of the pixels, zero copy).

Mapping: `screen_base` and `smem_start` are the two addresses of one `dma_alloc_coherent`
block (servers/dde_linux/dma.py): the CPU's (a DDEKit virtual address, reached with
mem_read/mem_write or `fb_screen`) and the device's (the physical address the driver writes
into the scan-out register). Pixel format as the HAL has it: 32 bpp XRGB8888, little endian
(red at bit 16, green 8, blue 0; `fb_var_screeninfo.red/green/blue` say so).

Contracts (as in Linux):
- `register_framebuffer` checks the info first (a mode, `screen_base`, enough `smem_len` for
  `line_length * yres`, ops present) and refuses with -EINVAL before anything is recorded;
  then it gives the info the lowest free node and tells the registered clients.
- `fb_set_var` runs `fb_check_var` (which may round the var, or refuse with -EINVAL), then
  `fb_set_par`; only a mode both accept becomes `info.var`.
- `unregister_framebuffer` tells the clients first (they stop using the pixels), then frees
  the node; the driver frees its memory afterwards.
Locking: one module lock around the node table and the client list; a client callback runs
outside it (it may call back into this module).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from servers.ddekit import memory as _mem

from .kernel import EBUSY, EINVAL, ENODEV, printk, KERN_INFO

FB_MAX = 32                                   # nodes, like Linux's /dev/fb0../dev/fb31
FB_TYPE_PACKED_PIXELS = 0
FB_VISUAL_TRUECOLOR = 2
FB_ACTIVATE_NOW = 0
FB_BLANK_UNBLANK, FB_BLANK_NORMAL, FB_BLANK_VSYNC_SUSPEND, FB_BLANK_HSYNC_SUSPEND, \
    FB_BLANK_POWERDOWN = 0, 1, 2, 3, 4
FB_EVENT_FB_REGISTERED, FB_EVENT_FB_UNREGISTERED, FB_EVENT_BLANK, FB_EVENT_MODE_CHANGE = \
    0x05, 0x06, 0x09, 0x01
FBINFO_DEFAULT = 0


@dataclass
class fb_bitfield:                            # noqa: N801 - Linux's names
    offset: int = 0
    length: int = 0
    msb_right: int = 0


def _xrgb(field_name: str) -> fb_bitfield:
    return fb_bitfield({"red": 16, "green": 8, "blue": 0, "transp": 24}[field_name],
                       0 if field_name == "transp" else 8)


@dataclass
class fb_var_screeninfo:                      # noqa: N801
    xres: int = 0
    yres: int = 0
    xres_virtual: int = 0
    yres_virtual: int = 0
    xoffset: int = 0
    yoffset: int = 0
    bits_per_pixel: int = 32
    grayscale: int = 0
    red: fb_bitfield = field(default_factory=lambda: _xrgb("red"))
    green: fb_bitfield = field(default_factory=lambda: _xrgb("green"))
    blue: fb_bitfield = field(default_factory=lambda: _xrgb("blue"))
    transp: fb_bitfield = field(default_factory=lambda: _xrgb("transp"))
    activate: int = FB_ACTIVATE_NOW
    height: int = -1                          # picture size in mm: unknown
    width: int = -1


@dataclass
class fb_fix_screeninfo:                      # noqa: N801
    id: str = ""
    smem_start: int = 0                       # physical address of the frame buffer
    smem_len: int = 0
    type: int = FB_TYPE_PACKED_PIXELS
    visual: int = FB_VISUAL_TRUECOLOR
    line_length: int = 0                      # bytes per line
    mmio_start: int = 0
    mmio_len: int = 0


@dataclass
class fb_ops:                                 # noqa: N801
    """The driver's operations; each takes the fb_info last, as in Linux, and answers 0 or
    -errno. Any may be None (the core then accepts what it is asked)."""
    fb_check_var: Callable[[fb_var_screeninfo, "fb_info"], int] | None = None
    fb_set_par: Callable[["fb_info"], int] | None = None
    fb_blank: Callable[[int, "fb_info"], int] | None = None
    fb_open: Callable[["fb_info", int], int] | None = None
    fb_release: Callable[["fb_info", int], int] | None = None


@dataclass
class fb_info:                                # noqa: N801
    var: fb_var_screeninfo = field(default_factory=fb_var_screeninfo)
    fix: fb_fix_screeninfo = field(default_factory=fb_fix_screeninfo)
    fbops: fb_ops | None = None
    screen_base: int = 0                      # CPU address of the pixels (a DDEKit address)
    screen_size: int = 0
    par: Any = None                           # the driver's private state
    device: Any = None                        # the parent device (a platform_device)
    node: int = -1                            # minor number once registered
    flags: int = FBINFO_DEFAULT
    blank: int = FB_BLANK_UNBLANK
    pseudo_palette: list[int] = field(default_factory=lambda: [0] * 16)


class _Par:
    """What framebuffer_alloc gives a driver as `par` (Linux: `size` bytes after the info)."""


_lock = threading.Lock()
_nodes: list[fb_info | None] = [None] * FB_MAX     # guarded by _lock
_clients: list[Callable[[int, fb_info], Any]] = []  # guarded by _lock


# -- the driver's side --------------------------------------------------------------------------
def framebuffer_alloc(size: int, dev: Any = None) -> fb_info | None:
    info = fb_info(device=dev)
    info.par = _Par() if size else None
    return info


def framebuffer_release(info: fb_info | None) -> None:
    if info is not None:
        info.par = None
        info.fbops = None


def _check_info(info: fb_info) -> str | None:
    v, f = info.var, info.fix
    if v.xres <= 0 or v.yres <= 0 or v.bits_per_pixel not in (8, 16, 24, 32):
        return f"mode {v.xres}x{v.yres}@{v.bits_per_pixel}"
    if f.line_length < v.xres * v.bits_per_pixel // 8:
        return f"line_length {f.line_length} < {v.xres} pixels"
    if not info.screen_base or f.smem_len < f.line_length * v.yres:
        return f"screen memory {f.smem_len} bytes at {info.screen_base:#x} for {v.yres} lines"
    if info.fbops is None:
        return "no fb_ops"
    return None


def register_framebuffer(info: fb_info) -> int:
    why = _check_info(info)
    if why is not None:
        printk(KERN_INFO + "fbdev: refusing framebuffer: %s", why)
        return -EINVAL
    with _lock:
        if info in _nodes:
            return -EBUSY
        free = next((i for i, n in enumerate(_nodes) if n is None), None)
        if free is None:
            return -ENODEV
        _nodes[free] = info
        info.node = free
        info.screen_size = info.screen_size or info.fix.smem_len
        info.var.xres_virtual = info.var.xres_virtual or info.var.xres
        info.var.yres_virtual = info.var.yres_virtual or info.var.yres
    printk(KERN_INFO + "fb%d: %s frame buffer device, %dx%d", info.node, info.fix.id,
           info.var.xres, info.var.yres)
    _notify(FB_EVENT_FB_REGISTERED, info)
    return 0


def unregister_framebuffer(info: fb_info) -> None:
    with _lock:
        if info.node < 0 or _nodes[info.node] is not info:
            return
    _notify(FB_EVENT_FB_UNREGISTERED, info)
    with _lock:
        _nodes[info.node] = None
        info.node = -1


# -- what /dev/fbN's ioctls do ------------------------------------------------------------------
def fb_set_var(info: fb_info, var: fb_var_screeninfo) -> int:
    """FBIOPUT_VSCREENINFO: check (the driver may adjust a copy), then set the mode."""
    ops = info.fbops or fb_ops()
    new = replace(var)
    if ops.fb_check_var is not None:
        ret = ops.fb_check_var(new, info)
        if ret:
            return ret
    old, info.var = info.var, new
    if ops.fb_set_par is not None:
        ret = ops.fb_set_par(info)
        if ret:
            info.var = old
            return ret
    _notify(FB_EVENT_MODE_CHANGE, info)
    return 0


def fb_blank(info: fb_info, blank: int) -> int:
    """FBIOBLANK: FB_BLANK_UNBLANK shows the frame, FB_BLANK_POWERDOWN switches it off."""
    if not FB_BLANK_UNBLANK <= blank <= FB_BLANK_POWERDOWN:
        return -EINVAL
    ops = info.fbops or fb_ops()
    ret = ops.fb_blank(blank, info) if ops.fb_blank is not None else 0
    if ret == 0:
        info.blank = blank
        _notify(FB_EVENT_BLANK, info)
    return ret


# -- the fbdev user's side (the fb server) -----------------------------------------------------
def registered_fb(node: int) -> fb_info | None:
    with _lock:
        return _nodes[node] if 0 <= node < FB_MAX else None


def num_registered_fb() -> int:
    with _lock:
        return sum(n is not None for n in _nodes)


def fb_register_client(fn: Callable[[int, fb_info], Any]) -> None:
    with _lock:
        if fn not in _clients:
            _clients.append(fn)


def fb_unregister_client(fn: Callable[[int, fb_info], Any]) -> None:
    with _lock:
        if fn in _clients:
            _clients.remove(fn)


def _notify(event: int, info: fb_info) -> None:
    with _lock:
        clients = list(_clients)
    for fn in clients:
        fn(event, info)


def fb_screen(info: fb_info) -> memoryview:
    """The frame buffer's bytes, writable, zero copy (valid while the driver's block lives)."""
    return _mem.view(info.screen_base, info.fix.line_length * info.var.yres, writable=True)
