"""The fb session protocol (proto tag 0x4642), declared once: stub and dispatch follow it.

A client is known by its gate's label (the image's `caps.fb = { service = "fb", label = N }`);
the server's policy (its task arguments, server.py) says which labels may have a session and
which rectangle of the screen each one's *viewport* is. Coordinates below are viewport
coordinates: (0, 0) is the viewport's top left corner.

    mode() -> {width, height, format, stride, size, order, x, y, screen_order}
        the caller's viewport: its size in pixels, the pixel format ("XRGB8888": bytes
        B, G, R, X), bytes per line, the pixel buffer's size and its order (the buffer is
        one naturally aligned flexpage of 2**order bytes), and where the viewport lies on the
        screen; screen_order: the order of the scan-out memory if this label may map it
        (`screen`), else 0. Errors: DENIED (no policy for this label)
    open() -> same as mode()
        with a capability item: the client's own task capability (rights NONE will do: the
        server only asks the kernel whether it is alive — a dead client's session is dropped
        and its buffer given back). The reply maps the session's pixel buffer (RW) into the
        caller's receive window `window(vaddr, order)`: the client draws into that shared
        memory; pixels never travel in messages. A second open replaces the session (its
        old buffer is unmapped). Errors: DENIED, NO_MEMORY
    refresh(x, y, w, h) -> None
        copy that rectangle of the session's buffer to the screen. The rectangle must lie in
        the viewport with w, h >= 1; anything else is refused and counted (the session's
        `refused`), the screen untouched. Errors: INVALID, NO_SESSION
    screen() -> {width, height, format, stride, size, order}
        the direct mapping, for the one privileged client the policy names (`direct=N`:
        Nitpicker in an image, which composes the screen itself): the reply maps the
        scan-out memory itself (RW, one flexpage of 2**order bytes: the screen's
        stride * height bytes at its start) into the caller's window `window(vaddr,
        order)`. What the client writes there is on the screen, with no refresh; other
        sessions' refreshes still copy into their viewports. The mapping is taken back
        when the session ends (end, a second open, the client's death). Errors: DENIED
        (the policy gives this label no direct mapping), NO_SESSION (open first)
    planes() -> {order, count, page_bus, screen_bus}
        the plane page, for a direct client (after `screen`), with a capability item: the
        caller's own task capability with INVOKE and GRANT (passed on to the device). The reply maps the framebuffer's plane
        page (hal/fb.py "Planes": plane registers in RAM that the device reads at every
        scan-out) RW into the caller's window `window(vaddr, order)`; page_bus and
        screen_bus are the physical addresses of the page and of the scan-out memory. From
        then on the device's DMA domain is the caller's address space (hal/iommu.py): a
        plane may show only memory the caller maps, such as its clients' buffers. When the
        session ends the page is taken back and zeroed (planes off) and the domain is the
        fb server's own again. Errors: DENIED (no direct mapping for this label, or the
        capability is not the caller's own task), NO_SESSION
    end() -> None           end the session: its buffer is unmapped and freed
    stats() -> {refreshes, refused, pixels, session}    the caller's own counters; NO_SESSION
                            (NO_SESSION: none open)
    usage() -> {sessions, refused, screen}              admin: every label's counters

A restarted fb server has no sessions: a client's next call answers PEER_DIED (its gate moved
to the new incarnation), then NO_SESSION; it opens again (client.py does that for you).
"""
from __future__ import annotations

from kernel.user.rpc import Protocol, op

FORMAT = "XRGB8888"
PLANE_ORDER = 12                 # the plane page: one page (hal/fb.py)
PLANES_N = 2
BYTES_PER_PIXEL = 4

FB = Protocol("fb", [
    op("mode", 1, [], "mode", errors=["DENIED"]),
    op("open", 2, [], "mode", errors=["DENIED", "INVALID", "NO_MEMORY"], caps_in=1),
    op("refresh", 3, ["x:int", "y:int", "w:int", "h:int"], None,
       errors=["INVALID", "NO_SESSION"]),
    op("end", 4, [], None),
    op("screen", 6, [], "screen", errors=["DENIED", "NO_SESSION"]),
    op("planes", 7, [], "planes", errors=["DENIED", "NO_SESSION"], caps_in=1),
    op("stats", 5, [], "stats", errors=["NO_SESSION"]),
    op("usage", 10, [], "usage", admin=True),
], tag=0x4642)
