"""`l4run view`: the emulated screen live in a web browser, and the browser's keyboard and mouse
as the HAL's input device.

    l4run view [--port N] [--host 127.0.0.1] [--device FB] [--run-dir DIR]
        prints  view: http://127.0.0.1:PORT/?token=TOKEN   and serves until ^C

Mechanism: one aiohttp server in this process. `/` is the page (a canvas and a little
JavaScript), `/ws` its WebSocket. A poller reads the framebuffer's raw pixels from the HAL's
control socket (op `pixels`, hal/control.py) every POLL_S, compares them with the frame it
sent last, band by band (BAND lines) and then TILE-pixel columns within a changed band,
and sends each changed run of tiles as a binary message: a 16-byte header (x, y, w, h as
little-endian u32) and w * h RGBA pixels, which the page puts on its canvas. A browser that
connects first gets the whole frame. The page sends input as JSON text messages — {"t":
"key", "code": LINUX_KEY, "v": 1|0}, {"t": "button", "b": 1|2|3, "v": 1|0}, {"t": "move",
"x", "y"} — which become the HAL's input events (op `input`: KEY, BUTTON, MOVE), exactly
what `l4run input` injects; Nitpicker (or whoever reads the input device) sees real device
events. The page maps the browser's KeyboardEvent.code to Linux key codes (KEYCODES).

Access: it binds 127.0.0.1 unless told otherwise, and every request must carry the random
token of this run (`?token=...`, 128 bits, compared in constant time): anything else is
answered 403, so another user of the machine cannot watch or type. The HAL's control socket
is the operator's alone (hal/control.py), so the viewer runs as the operator.

Ownership: everything runs on this process's asyncio loop; the blocking control-socket
calls run in its default executor, one at a time per kind (`_hal`).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import struct
from typing import Any, Callable

import click

POLL_S = 0.05
BAND = 16                  # lines compared at once
TILE = 64                  # pixels per column of a changed band
HEADER = struct.Struct("<IIII")
KEY, BUTTON, MOVE = 1, 2, 3

# KeyboardEvent.code -> Linux key code (the HAL's KEYS, hal/input.py, and a few more)
KEYCODES: dict[str, int] = {
    "Escape": 1, "Minus": 12, "Equal": 13, "Backspace": 14, "Tab": 15, "BracketLeft": 26,
    "BracketRight": 27, "Enter": 28, "ControlLeft": 29, "Semicolon": 39, "Quote": 40,
    "Backquote": 41, "ShiftLeft": 42, "Backslash": 43, "Comma": 51, "Period": 52,
    "Slash": 53, "ShiftRight": 54, "AltLeft": 56, "Space": 57, "ControlRight": 97,
    "Home": 102, "ArrowUp": 103, "PageUp": 104, "ArrowLeft": 105, "ArrowRight": 106,
    "End": 107, "ArrowDown": 108, "PageDown": 109, "Insert": 110, "Delete": 111,
    "F11": 87, "F12": 88, "ScrollLock": 70,
    **{f"Digit{d}": 2 + (int(d) - 1) % 10 for d in "1234567890"},
    **{f"F{n}": 58 + n for n in range(1, 11)},
    **{f"Key{c.upper()}": code for c, code in zip(
        "qwertyuiopasdfghjklzxcvbnm",
        [16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 30, 31, 32, 33, 34, 35, 36, 37, 38, 44, 45,
         46, 47, 48, 49, 50])},
}

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>L4Py screen</title>
<style>body{margin:0;background:#111;color:#ccc;font:12px monospace}
canvas{display:block;cursor:crosshair;outline:none}#st{padding:2px 6px}</style></head>
<body><div id="st">connecting...</div><canvas id="screen" width="1" height="1" tabindex="0"></canvas>
<script>
const KEYS = %KEYS%;
const cv = document.getElementById("screen"), ctx = cv.getContext("2d");
const st = document.getElementById("st");
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host
                         + "/ws" + location.search);
ws.binaryType = "arraybuffer";
window.l4frames = 0;
ws.onopen = () => { st.textContent = "live"; };
ws.onclose = () => { st.textContent = "disconnected"; };
ws.onmessage = (m) => {
  if (typeof m.data === "string") {
    const hello = JSON.parse(m.data);        // resizing clears the canvas: only if it changed
    if (cv.width !== hello.width || cv.height !== hello.height) {
      cv.width = hello.width; cv.height = hello.height;
    }
    st.textContent = "live " + hello.width + "x" + hello.height;
    return;
  }
  const h = new DataView(m.data, 0, 16);
  const x = h.getUint32(0, true), y = h.getUint32(4, true);
  const w = h.getUint32(8, true), hh = h.getUint32(12, true);
  ctx.putImageData(new ImageData(new Uint8ClampedArray(m.data, 16, w * hh * 4), w, hh), x, y);
  window.l4frames++;
};
function send(o) { if (ws.readyState === 1) ws.send(JSON.stringify(o)); }
function key(e, v) {
  const c = KEYS[e.code];
  if (c === undefined) return;
  e.preventDefault();
  if (v === 1 && e.repeat) return;
  send({t: "key", code: c, v: v});
}
document.addEventListener("keydown", (e) => key(e, 1));
document.addEventListener("keyup", (e) => key(e, 0));
function pos(e) {
  const r = cv.getBoundingClientRect();
  return [Math.max(0, Math.round(e.clientX - r.left)), Math.max(0, Math.round(e.clientY - r.top))];
}
let pending = null;
cv.addEventListener("mousemove", (e) => {
  if (pending === null) setTimeout(() => { send({t: "move", x: pending[0], y: pending[1]}); pending = null; }, 20);
  pending = pos(e);
});
const BTN = {0: 1, 1: 3, 2: 2};
cv.addEventListener("mousedown", (e) => { cv.focus(); const p = pos(e); send({t: "move", x: p[0], y: p[1]}); send({t: "button", b: BTN[e.button] || 1, v: 1}); e.preventDefault(); });
cv.addEventListener("mouseup", (e) => { send({t: "button", b: BTN[e.button] || 1, v: 0}); e.preventDefault(); });
cv.addEventListener("contextmenu", (e) => e.preventDefault());
</script></body></html>
"""


def changed(old: bytes | None, new: bytes, w: int, h: int) -> list[tuple[int, int, int, int]]:
    """Rectangles (x, y, w, h) of `new` that differ from `old`: runs of changed TILE-wide
    columns within each changed BAND of lines. `old` None: the whole frame."""
    if old is None or len(old) != len(new):
        return [(0, 0, w, h)]
    stride, out = w * 4, []
    for y in range(0, h, BAND):
        bh = min(BAND, h - y)
        a, b = y * stride, (y + bh) * stride
        if old[a:b] == new[a:b]:
            continue
        run: int | None = None
        for x in range(0, w + TILE, TILE):
            diff = False
            if x < w:
                tw = min(TILE, w - x) * 4
                diff = any(old[o:o + tw] != new[o:o + tw]
                           for o in range(a + x * 4, b, stride))
            if diff and run is None:
                run = x
            elif not diff and run is not None:
                out.append((run, y, min(x, w) - run, bh))
                run = None
    return out


def rgba(frame: bytes, w: int, h: int, r: tuple[int, int, int, int]) -> bytes:
    """The header and RGBA pixels of rectangle r of an XRGB8888 frame."""
    from PIL import Image
    x, y, rw, rh = r
    img = Image.frombuffer("RGB", (w, h), frame, "raw", "BGRX", w * 4, 1)
    return HEADER.pack(x, y, rw, rh) + img.crop((x, y, x + rw, y + rh)).convert("RGBA").tobytes()


class Viewer:
    """The web server, the poller and the input path. Runs on one asyncio loop."""

    def __init__(self, run_dir: str, device: str | None, token: str) -> None:
        self.run_dir, self.device, self.token = run_dir, device, token
        self.clients: set[Any] = set()
        self.frame: bytes | None = None
        self.size = (0, 0)
        self.sent = 0                         # rectangles sent, all clients
        self.injected = 0

    def _hal(self, req: dict[str, Any]) -> Any:
        from hal.tools import control
        if self.device:
            req = {**req, "device": self.device}
        return control(self.run_dir, req)

    async def hal(self, req: dict[str, Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, self._hal, req)

    def allowed(self, request: Any) -> bool:
        got = request.query.get("token", "")
        return hmac.compare_digest(got.encode(), self.token.encode())

    async def page(self, request: Any) -> Any:
        from aiohttp import web
        if not self.allowed(request):
            raise web.HTTPForbidden(text="403: this viewer needs the token of its URL\n")
        return web.Response(text=PAGE.replace("%KEYS%", json.dumps(KEYCODES)),
                            content_type="text/html")

    async def ws(self, request: Any) -> Any:
        from aiohttp import WSMsgType, web
        if not self.allowed(request):
            raise web.HTTPForbidden(text="403: this viewer needs the token of its URL\n")
        sock = web.WebSocketResponse(max_msg_size=1 << 16)
        await sock.prepare(request)
        if self.frame is None:
            await self.poll_once()
        w, h = self.size
        await sock.send_str(json.dumps({"width": w, "height": h}))
        if self.frame is not None:
            await sock.send_bytes(rgba(self.frame, w, h, (0, 0, w, h)))
        self.clients.add(sock)
        try:
            async for msg in sock:
                if msg.type == WSMsgType.TEXT:
                    await self.on_input(msg.data)
        finally:
            self.clients.discard(sock)
        return sock

    async def on_input(self, text: str) -> None:
        """One input message of the page, checked, as HAL input events."""
        try:
            m = json.loads(text)
            t = m["t"]
            if t == "key":
                ev = [KEY, int(m["code"]), 1 if m["v"] else 0]
            elif t == "button":
                ev = [BUTTON, int(m["b"]), 1 if m["v"] else 0]
            elif t == "move":
                x, y = int(m["x"]), int(m["y"])
                ev = [MOVE, 0, max(0, min(x, 0xFFFF)) << 16 | max(0, min(y, 0xFFFF))]
            else:
                return
        except (ValueError, KeyError, TypeError):
            return                             # not ours: ignored
        if ev[0] == BUTTON and ev[1] not in (1, 2, 3) or ev[0] == KEY and not 0 < ev[1] < 0x300:
            return
        try:
            await self.hal({"op": "input", "events": [ev]})
            self.injected += 1
        except Exception as e:                 # noqa: BLE001 - the HAL went away: say so
            click.echo(f"view: input not delivered: {e}", err=True)

    async def poll_once(self) -> None:
        got = await self.hal({"op": "pixels"})
        w, h, data = int(got["width"]), int(got["height"]), bytes(got["data"])
        old = self.frame if (w, h) == self.size else None
        self.size = (w, h)
        rects = changed(old, data, w, h)
        self.frame = data
        if not rects or not self.clients:
            return
        if old is None:
            for c in list(self.clients):
                await c.send_str(json.dumps({"width": w, "height": h}))
        msgs = [rgba(data, w, h, r) for r in rects]
        for c in list(self.clients):
            for m in msgs:
                try:
                    await c.send_bytes(m)
                    self.sent += 1
                except ConnectionError:
                    self.clients.discard(c)
                    break

    async def poller(self) -> None:
        while True:
            if not self.clients:               # nobody watches: no reads, a fresh frame later
                self.frame = None
                await asyncio.sleep(POLL_S)
                continue
            try:
                await self.poll_once()
            except Exception as e:             # noqa: BLE001 - the HAL restarts: keep trying
                click.echo(f"view: {e}", err=True)
                await asyncio.sleep(1)
            await asyncio.sleep(POLL_S)

    def app(self) -> Any:
        from aiohttp import web
        app = web.Application()
        app.router.add_get("/", self.page)
        app.router.add_get("/ws", self.ws)
        return app


async def serve(run_dir: str, host: str, port: int, device: str | None,
                ready: Callable[[str], None]) -> None:
    from aiohttp import web
    viewer = Viewer(run_dir, device, secrets.token_urlsafe(16))
    runner = web.AppRunner(viewer.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = int(runner.addresses[0][1])          # the port --port 0 got
    shown = f"[{host}]" if ":" in host else host
    ready(f"http://{shown}:{bound}/?token={viewer.token}")
    task = asyncio.create_task(viewer.poller())
    try:
        await asyncio.Event().wait()
    finally:
        task.cancel()
        await runner.cleanup()


def register(cli: click.Group, find_run_dir: Callable[[str | None], str],
             run_dir_option: Any) -> None:
    @cli.command("view")
    @click.option("--port", default=8073, show_default=True, help="TCP port (0: any free one)")
    @click.option("--host", default="127.0.0.1", show_default=True,
                  help="address to bind (anything but loopback lets others on the network in, "
                       "with the token)")
    @click.option("--device", default=None, help="framebuffer name (default: the first)")
    @run_dir_option
    def view(port: int, host: str, device: str | None, run_dir: str | None) -> None:
        """Show the screen live in a web browser; its keyboard and mouse become the input device."""
        from hal.tools import HalControlError, control
        rd = find_run_dir(run_dir)
        try:
            control(rd, {"op": "pixels", **({"device": device} if device else {})})
        except (HalControlError, ValueError, OSError) as e:
            raise click.ClickException(f"{e}") from None

        def ready(url: str) -> None:
            click.echo(f"view: {url}", nl=True)
            click.echo("view: open it in a browser (^C ends)", err=True)
        try:
            asyncio.run(serve(rd, host, port, device, ready))
        except KeyboardInterrupt:
            pass
        except OSError as e:
            raise click.ClickException(f"cannot serve on {host}:{port}: {e}") from None
