"""The Nitpicker session protocol (proto tag 0x4E50), declared once: stub and dispatch follow it.

A client is known by its gate's label (the image's `caps.gui = { service = "nitpicker",
label = N }`); Nitpicker's policy (its task arguments, server.py) names each label — the
name Nitpicker draws on every view of that session — and bounds its buffer (the session's
quota). The client never says who it is: the kernel vouches for the label.

    open() -> {label, name, quota, width, height}
        with a capability item: the client's own task capability (rights NONE will do: a
        death watch). The reply carries one item into the caller's one-slot receive window:
        the session's IRQ object (INVOKE | WRITE), which Nitpicker triggers when events are
        queued for the session; the client attaches it to a thread of its own and calls
        `events` when it fires. width, height: the screen. A second open replaces the
        session (its views and buffer go). Errors: DENIED (no policy for this label),
        INVALID (not a live task capability), NO_MEMORY
    buffer(w, h) -> {width, height, stride, size, ring}
        the session's pixel buffer, XRGB8888 (bytes B, G, R, X), a moe dataspace that
        Nitpicker allocates and pays for out of the session's quota; one item: the
        dataspace's capability, which the client attaches with its own moe session (its
        image entry needs `memory`). A second call replaces the buffer (the old one is
        freed). The dataspace holds one page more at offset `ring`: the session's flip
        ring (ring.py), where the client posts flips without a call (not counted in the
        quota). Errors: INVALID (w, h outside 1..MAX_SIDE), QUOTA (w*h*4 beyond the
        session's quota), NO_MEMORY, NO_SESSION
    view_create(title) -> view id          a view of the session: hidden (0x0) until its
                                           geometry is set, in front of every other view.
                                           Errors: QUOTA (MAX_VIEWS), INVALID (title longer
                                           than MAX_TITLE), NO_SESSION
    view_destroy(view) -> None             Errors: NO_VIEW, NO_SESSION
    view_geometry(view, x, y, w, h, buf_x, buf_y) -> None
        where the view lies on the screen and which buffer pixel shows at its top left
        corner. x, y in -MAX_SIDE..MAX_SIDE, w, h in 0..MAX_SIDE, buf_x, buf_y in
        -MAX_SIDE..MAX_SIDE (what lies outside the buffer is drawn grey).
        Errors: INVALID, NO_VIEW, NO_SESSION
    view_stack(view, where, neighbour) -> None
        where "front" | "back" (of all views), "above" | "below" (directly in front of /
        behind `neighbour`, another view of the same session). Errors: INVALID, NO_VIEW,
        NO_SESSION
    view_title(view, title) -> None        Errors: INVALID, NO_VIEW, NO_SESSION
    refresh(x, y, w, h) -> None            buffer pixels changed: Nitpicker redraws what its
                                           views show of that rectangle (clipped to the
                                           buffer). Errors: INVALID (w, h < 1), NO_SESSION
                                           (or no buffer)
    submit(x, y, w, h) -> None             refresh and continue: as refresh, but answered at
                                           once; Nitpicker paints right after the answer,
                                           before it takes its next request (so the
                                           client's next call waits for this frame: the
                                           back-pressure). Errors: as refresh
    flip(view, buf_x, buf_y) -> None       the view shows its buffer from (buf_x, buf_y) now
                                           and is redrawn, answered at once like submit: a
                                           page flip for a client whose buffer holds two
                                           frames (it draws the hidden one meanwhile).
                                           Errors: INVALID (offsets outside -MAX_SIDE..
                                           MAX_SIDE, no buffer), NO_VIEW, NO_SESSION
    kick() -> None                         the session's flip ring has flips posted while
                                           Nitpicker waited (its IDLE word): answered at
                                           once, the ring drained right after. Every other
                                           request of a session is handled only after the
                                           flips its ring holds are painted.
                                           Errors: NO_SESSION
    events() -> [[kind, view, code, value, x, y, time_us], ...]
        the events queued for the session, oldest first (at most QUEUE; more are dropped
        and counted). kind KEY (code: Linux key code, value 1 press / 0 release), BUTTON
        (code BTN_LEFT..., value 1/0), MOTION (value 0), FOCUS (value 1 gained / 0 lost);
        x, y: the pointer relative to the view's top left corner; time_us: when the input
        server stamped the event (its monotonic clock). Errors: NO_SESSION
    info() -> {views, buffer, focused, xray, dropped, refreshes, shown, scanned, scanout,
               refused}
        refreshes: refresh, submit and flip requests accepted (flips posted in the ring
        too); shown: those whose pixels reached the screen (each is painted, none merged
        away); scanned: of those, the ones shown by direct scan-out (planes.py: the display
        read them from the buffer, nothing was copied); scanout: whether the display scans
        one of the session's views out of its buffer directly now; refused: invalid ones
        (a ring entry naming no view of the session...)
    end() -> None                          the session ends: its views vanish, buffer freed
    usage() -> {sessions, focused, xray, kill_mode, redraws, ...}   admin: everything

A restarted Nitpicker has no sessions: a client's next call answers PEER_DIED (its gate
moved to the new incarnation), then NO_SESSION; client.py opens again, asks for its buffer
again and recreates its views, then asks its owner to redraw.
"""
from __future__ import annotations

from kernel.user.rpc import Protocol, op

FORMAT = "XRGB8888"
BYTES_PER_PIXEL = 4
MAX_SIDE = 8192                  # no geometry beyond this, either way
MAX_VIEWS = 32                   # per session
MAX_TITLE = 64
QUEUE = 256                      # events held per session

# event kinds
KEY, BUTTON, MOTION, FOCUS = 1, 2, 3, 4
BTN_LEFT, BTN_RIGHT, BTN_MIDDLE = 0x110, 0x111, 0x112

STACK = ("front", "back", "above", "below")

NITPICKER = Protocol("nitpicker", [
    op("open", 1, [], "session", errors=["DENIED", "INVALID", "NO_MEMORY"], caps_in=1,
       caps_out=1),
    op("buffer", 2, ["w:int", "h:int"], "buffer",
       errors=["INVALID", "QUOTA", "NO_MEMORY", "NO_SESSION"], caps_out=1),
    op("view_create", 3, ["title:str"], "view", errors=["QUOTA", "INVALID", "NO_SESSION"]),
    op("view_destroy", 4, ["view:int"], None, errors=["NO_VIEW", "NO_SESSION"]),
    op("view_geometry", 5, ["view:int", "x:int", "y:int", "w:int", "h:int", "buf_x:int",
                            "buf_y:int"], None, errors=["INVALID", "NO_VIEW", "NO_SESSION"]),
    op("view_stack", 6, ["view:int", "where:str", "neighbour:int?"], None,
       errors=["INVALID", "NO_VIEW", "NO_SESSION"]),
    op("view_title", 7, ["view:int", "title:str"], None,
       errors=["INVALID", "NO_VIEW", "NO_SESSION"]),
    op("refresh", 8, ["x:int", "y:int", "w:int", "h:int"], None,
       errors=["INVALID", "NO_SESSION"]),
    op("events", 9, [], "events", errors=["NO_SESSION"]),
    op("info", 10, [], "info", errors=["NO_SESSION"]),
    op("end", 11, [], None),
    op("submit", 12, ["x:int", "y:int", "w:int", "h:int"], None,
       errors=["INVALID", "NO_SESSION"]),
    op("flip", 13, ["view:int", "buf_x:int", "buf_y:int"], None,
       errors=["INVALID", "NO_VIEW", "NO_SESSION"]),
    op("kick", 14, [], None, errors=["NO_SESSION"]),
    op("usage", 20, [], "usage", admin=True),
], tag=0x4E50)
