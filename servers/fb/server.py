"""The fb device server: the l4fb driver in this task, its screen shared by sessions (protocol.py).

    run = "servers.fb.server:main"
    args = ["fb0", "1", "2=320,0,320,240", "mode=640x480", "direct=1"]

Arguments: the framebuffer device to serve (its io policy: `devices = ["fb0"]`), then the
policy, one entry per client label: "N" (the whole screen) or "N=X,Y,W,H" (a viewport, which
must lie on the screen); optionally "mode=WxH" (the driver's mode_option) and "direct=N,M"
(the labels that may map the scan-out memory itself, op `screen`: the image's one
privileged client, Nitpicker). A label without an entry is refused (DENIED, counted). The task needs `devices` and a sigma0 capability
(DDEKit's memory: the scan-out memory and every session's buffer).

Design (why refresh copies):
- The driver (servers/dde_linux/drivers/l4fb.py) is loaded through the DDE/Linux glue and
  registers an `fb_info`; the server is its fbdev user. The device scans out from the
  driver's coherent DMA memory (`fix.smem_start`); nothing else of RAM reaches the device.
- Each session gets its own pixel buffer, the size of its viewport: DDEKit memory mapped
  into the client (`open` answers a flexpage). The client draws there; `refresh(x, y, w, h)`
  copies that rectangle, line by line, from the session buffer to the viewport's place in
  the scan-out memory. So a client never touches the screen itself: it cannot draw outside
  its viewport, several clients (and later Nitpicker) share one screen, and a client that
  is killed mid-drawing leaves only what it had refreshed. The price is one copy of the
  refreshed pixels; with one client and a full-screen viewport that copy is what a
  direct-draw design would save: the direct mapping below.
- The direct mapping (`screen`, for labels of `direct=`): the scan-out memory itself, the
  driver's coherent block (one naturally aligned sigma0 block), mapped RW into the client.
  It is for a client that is itself the screen's multiplexer (Nitpicker): it composes
  straight into the scanned-out pixels, with no copy and no call per frame. The policy
  names it, as Genode's gives Nitpicker its framebuffer session; any other client keeps
  the copying path. The mapping is revoked (`mem_unmap` of the block's derived mappings:
  only direct clients got any) when the session ends, so an ended client cannot reach the
  screen; a client that holds it and dies loses it with its address space.
- A rectangle that is empty or leaves the viewport is refused (INVALID) and counted for the
  session; nothing is copied (checked first, then copied).
- A dead client's session is dropped by the death watch (servers/fb/sessions.py): its buffer
  is freed, which unmaps it from the client too (sigma0 frees recursively).
- Restart: the launcher restarts this task; the new incarnation re-probes the device and
  starts with a black screen and no sessions. Clients get PEER_DIED, then NO_SESSION, and
  open again (servers/fb/client.py does it and redraws).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from kernel.abi import PAGE_SIZE, SLOT_TASK, MemRights
from kernel.user.client import L4
from kernel.user.errors import L4Error
from kernel.user.rpc import Call, Reply, RpcError
from kernel.user.vm import map_mem
from servers.dde_linux import fb as fbdev
from servers.dde_linux import kernel
from servers.dde_linux.io import readq, writeq
from servers.ddekit import env as _env
from servers.ddekit import memory as _mem

from .protocol import BYTES_PER_PIXEL, FB, FORMAT, PLANE_ORDER, PLANES_N
from .sessions import Sessions

DRIVER = "servers.dde_linux.drivers.l4fb"
FB_STATUS, FB_ERROR, FB_PLANES, FB_PLANE_STATUS = 1, 2, 16, 17    # hal/DEVICES.md
STATUS_ERROR = 0x4


@dataclass(frozen=True)
class Viewport:
    x: int
    y: int
    w: int
    h: int


@dataclass
class Session:
    label: int
    view: Viewport
    va: int                      # the buffer, a DDEKit block (mapped into the client)
    order: int
    pixels: memoryview           # the buffer's bytes (zero copy)
    refreshes: int = 0
    refused: int = 0
    copied: int = 0              # pixels copied to the screen
    direct: bool = False         # the scan-out memory is mapped into the client (`screen`)
    planes: int | None = None    # our slot of its task capability: it holds the plane page


def parse_direct(entries: list[str]) -> set[int]:
    """The labels of the "direct=N,M" entries (they may map the scan-out memory)."""
    out: set[int] = set()
    for e in entries:
        if e.startswith("direct="):
            parts = e.partition("=")[2].split(",")
            if not all(p.isdigit() and int(p) >= 1 for p in parts):
                raise ValueError(f"policy entry {e!r}: expected direct=N,M (labels >= 1)")
            out |= {int(p) for p in parts}
    return out


def parse_policy(entries: list[str], width: int, height: int) -> dict[int, Viewport]:
    """{label: viewport} from "N" / "N=X,Y,W,H"; ValueError names a bad entry."""
    out: dict[int, Viewport] = {}
    for e in entries:
        if e.startswith("direct="):
            continue
        label, _, rect = e.partition("=")
        if not label.isdigit() or int(label) < 1:
            raise ValueError(f"policy entry {e!r}: expected a client label >= 1 "
                             f"(\"N\" or \"N=X,Y,W,H\")")
        vp = Viewport(0, 0, width, height)
        if rect:
            parts = rect.split(",")
            if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
                raise ValueError(f"policy entry {e!r}: expected N=X,Y,W,H")
            vp = Viewport(*(int(p) for p in parts))
        if vp.w < 1 or vp.h < 1 or vp.x + vp.w > width or vp.y + vp.h > height:
            raise ValueError(f"policy entry {e!r}: viewport not on the {width}x{height} screen")
        out[int(label)] = vp
    return out


def _order(n: int) -> int:
    return max(12, (n - 1).bit_length())


class FbServer:
    """FB's implementation. Owned by the task's main thread (the serve loop)."""

    def __init__(self, l4: L4, info: fbdev.fb_info, policy: dict[int, Viewport],
                 direct: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.l4 = l4
        self.info = info
        self.scanout = fbdev.fb_screen(info)      # the pixels the device shows
        self.stride = info.fix.line_length
        self.sessions: Sessions[Session] = Sessions(l4, policy, self._free, "fb")
        self.direct = set(direct) & set(policy)
        block = _mem.block(info.screen_base)
        # the scan-out block as one flexpage (the driver's dma_alloc_coherent: a sigma0 block)
        self.screen_order = _order(block.size) if block is not None and \
            block.virt == info.screen_base and block.size & (block.size - 1) == 0 else 0
        self.refused = 0
        self.plane_page = PlanePage(info)
        self.planes_owner: int | None = None      # the label holding the plane page

    def _mode(self, vp: Viewport, label: int = 0) -> dict[str, Any]:
        size = vp.w * vp.h * BYTES_PER_PIXEL
        return {"width": vp.w, "height": vp.h, "format": FORMAT, "stride": vp.w * BYTES_PER_PIXEL,
                "size": size, "order": _order(size), "x": vp.x, "y": vp.y,
                "screen_order": self.screen_order if label in self.direct else 0}

    def _make(self, call: Call, vp: Viewport) -> Session:
        mode = self._mode(vp)
        try:
            va = _mem.large_malloc(1 << mode["order"])
        except _mem.OutOfMemory as e:
            raise RpcError("NO_MEMORY", str(e)) from None
        _mem.fill(va, 1 << mode["order"], 0)
        return Session(call.label, vp, va, mode["order"], _mem.view(va, mode["size"]))

    def _free(self, s: Session) -> None:
        if s.planes is not None:
            self.plane_page.take_back(self.l4)
            self.planes_owner = None
            _env.get().cap_delete(s.planes)
            s.planes = None
        if s.direct:
            self._unmap_screen()
        s.pixels.release()
        _mem.large_free(s.va)

    def _unmap_screen(self) -> None:
        """Take the scan-out memory back from every client it was mapped to (we keep it)."""
        try:
            self.l4.mem_unmap(self.info.screen_base, self.screen_order)
        except L4Error as e:
            print(f"fb: unmapping the screen: {e}", file=sys.stderr, flush=True)

    # -- FB ops ---------------------------------------------------------------------------
    def mode(self, call: Call) -> dict[str, Any]:
        return self._mode(self.sessions.allowed(call), call.label)

    def open(self, call: Call) -> Reply:
        s = self.sessions.open(call, lambda vp: self._make(call, vp))
        return Reply(self._mode(s.view, call.label), [map_mem(s.va, s.order, MemRights.RW)])

    def screen(self, call: Call) -> Reply:
        s = self.sessions.get(call)
        if call.label not in self.direct or not self.screen_order:
            raise RpcError("DENIED", f"the policy gives label {call.label} no direct mapping "
                                     f"of the screen (direct labels: {sorted(self.direct)})")
        s.direct = True
        v = self.info.var
        return Reply({"width": v.xres, "height": v.yres, "format": FORMAT,
                      "stride": self.stride, "size": self.stride * v.yres,
                      "order": self.screen_order},
                     [map_mem(self.info.screen_base, self.screen_order, MemRights.RW)])

    def planes(self, call: Call) -> Reply:
        """The plane page to a direct client, the device's DMA domain its address space."""
        slot = self.sessions.keep(call)
        try:
            s = self.sessions.get(call)
            if call.label not in self.direct or not s.direct or not self.plane_page.va:
                raise RpcError("DENIED", f"the policy gives label {call.label} no planes (direct "
                                         f"labels: {sorted(self.direct)}; `screen` first)")
            if not self.sessions.same_task(call.label, slot):
                raise RpcError("DENIED", "planes needs the caller's own task capability (INVOKE)")
            if self.planes_owner is not None and self.planes_owner != call.label:
                raise RpcError("DENIED", f"label {self.planes_owner} holds the planes")
            try:
                self.plane_page.bind(slot)
            except L4Error as e:
                raise RpcError("DENIED", f"the device refused the DMA domain: {e}") from None
        except BaseException:
            _env.get().cap_delete(slot)
            raise
        if s.planes is not None:
            _env.get().cap_delete(s.planes)
        s.planes, self.planes_owner = slot, call.label
        return Reply({"order": PLANE_ORDER, "count": PLANES_N, "page_bus": self.plane_page.pa,
                      "screen_bus": self.info.fix.smem_start},
                     [map_mem(self.plane_page.va, PLANE_ORDER, MemRights.RW)])

    def refresh(self, call: Call, x: int, y: int, w: int, h: int) -> None:
        s = self.sessions.get(call)
        vp = s.view
        if w < 1 or h < 1 or x < 0 or y < 0 or x + w > vp.w or y + h > vp.h:
            s.refused += 1
            self.refused += 1
            raise RpcError("INVALID", f"rectangle {x},{y} {w}x{h} is not inside the "
                                      f"{vp.w}x{vp.h} viewport")
        src, dst, n = s.pixels, self.scanout, w * BYTES_PER_PIXEL
        sstride = vp.w * BYTES_PER_PIXEL
        so = y * sstride + x * BYTES_PER_PIXEL
        do = (vp.y + y) * self.stride + (vp.x + x) * BYTES_PER_PIXEL
        if w == vp.w and sstride == self.stride:            # whole lines: one copy
            dst[do:do + h * n] = src[so:so + h * n]
        else:
            for _ in range(h):
                dst[do:do + n] = src[so:so + n]
                so += sstride
                do += self.stride
        s.refreshes += 1
        s.copied += w * h

    def end(self, call: Call) -> None:
        self.sessions.remove(call.label)

    def stats(self, call: Call) -> dict[str, Any]:
        s = self.sessions.get(call)
        return {"refreshes": s.refreshes, "refused": s.refused, "pixels": s.copied,
                "session": True}

    def usage(self, call: Call) -> dict[str, Any]:
        self.sessions.sweep()
        with self.sessions.lock:
            per = {str(lb): {"refreshes": s.refreshes, "refused": s.refused, "pixels": s.copied,
                             "direct": s.direct}
                   for lb, s in self.sessions.sessions.items()}
        v = self.info.var
        return {"sessions": per, "refused": self.refused, **self.sessions.counters(),
                "planes": {"owner": self.planes_owner, **self.plane_page.status()},
                "screen": {"width": v.xres, "height": v.yres, "format": FORMAT,
                           "bus_address": self.info.fix.smem_start}}


class PlanePage:
    """The framebuffer's plane page (hal/fb.py): one DMA page of ours, its address in the
    device's PLANES register, handed to the direct client that asks (`planes`). Main thread."""

    def __init__(self, info: fbdev.fb_info) -> None:
        self.regs = info.par.regs
        self.va = self.pa = 0
        try:
            va = _mem.contig_alloc(PAGE_SIZE)
        except _mem.OutOfMemory as e:
            print(f"fb: no plane page ({e}): planes off", file=sys.stderr, flush=True)
            return
        _mem.fill(va, PAGE_SIZE, 0)
        pa = _mem.virt_to_phys(va)
        assert pa is not None
        writeq(self.regs, FB_PLANES, pa)
        if readq(self.regs, FB_STATUS) & STATUS_ERROR:       # a HAL without planes
            writeq(self.regs, FB_ERROR, 0)
            _mem.contig_free(va)
            print("fb: the device refused the plane page: planes off", flush=True)
            return
        self.va, self.pa = va, pa

    def bind(self, slot: int) -> None:
        """The device's DMA domain is now the task in `slot` (the plane page's holder)."""
        self.regs.hw.handle().dma_bind(slot)

    def take_back(self, l4: L4) -> None:
        """Unmap the page from its holder, zero it (planes off: the base frame shows again),
        and make our own task the device's DMA domain again."""
        if not self.va:
            return
        try:
            l4.mem_unmap(self.va, PLANE_ORDER)
        except L4Error as e:
            print(f"fb: unmapping the plane page: {e}", file=sys.stderr, flush=True)
        _mem.fill(self.va, PAGE_SIZE, 0)
        try:
            self.regs.hw.handle().dma_bind(SLOT_TASK)
        except L4Error as e:
            print(f"fb: taking the DMA domain back: {e}", file=sys.stderr, flush=True)

    def status(self) -> dict[str, Any]:
        return {"page_bus": self.pa, "plane_status": readq(self.regs, FB_PLANE_STATUS)
                if self.va else None}


def _find(device: str) -> fbdev.fb_info | None:
    for node in range(fbdev.FB_MAX):
        info = fbdev.registered_fb(node)
        if info is not None and getattr(info.device, "name", None) == device:
            return info
    return None


def main(l4: L4, device: str = "fb0", *policy: str) -> int:
    from servers.dde_linux.drivers import l4fb
    modes = [p for p in policy if p.startswith("mode=")]
    if modes:
        l4fb.mode_option = modes[-1].partition("=")[2]
    kernel.boot(l4)
    ret = kernel.load(DRIVER)
    info = _find(device) if ret == 0 else None
    if info is None:
        print(f"fb: no framebuffer {device} (driver load: {ret}; is it in this task's devices?)",
              file=sys.stderr, flush=True)
        kernel.shutdown()
        return 2
    try:
        rules = parse_policy([p for p in policy if not p.startswith("mode=")],
                             info.var.xres, info.var.yres)
        direct = parse_direct(list(policy))
    except ValueError as e:
        print(f"fb: {e}", file=sys.stderr, flush=True)
        kernel.shutdown()
        return 2
    srv = FbServer(l4, info, rules, direct)
    print(f"fb: serving {device} {info.var.xres}x{info.var.yres} {FORMAT} to labels "
          f"{sorted(rules)}", flush=True)
    srv.sessions.serve(FB, srv)
    return 0
