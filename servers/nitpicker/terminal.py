"""A terminal window: a VT100 screen (pyte) in a Nitpicker session, fed by any task over TERM.

    [[task]]
    name = "terminal"
    run = "servers.nitpicker.terminal:run"
    args = ["80", "24", "40", "40"]           # columns, rows, where the window goes
    provides = ["term"]
    memory = "4M"
    caps = { gui = { service = "nitpicker", label = 3 } }

    [[task]]                                  # a task that writes to it (any task can)
    name = "feeder"
    run = "servers.nitpicker.terminal:feed"
    caps = { term = { service = "term", label = 1 } }

Protocol TERM (tag 0x5445), declared here once, served on the terminal's main thread:

    write(data) -> None        bytes for the screen: text and VT100 control sequences
                               (pyte's ByteStream: UTF-8, cursor motion, erase, colours...).
                               Errors: INVALID (more than MAX_WRITE bytes)
    read() -> bytes            what was typed into the window since the last read (keys of
                               the focused window only: Nitpicker sends them just to us)
    size() -> {cols, rows}

The L⁴Linux console: with a capability "linux" (the personality's service: `[linux]
provides = ["linux"]`, routed to us by the image), the window is a Linux console instead —
a pump thread of ours (its own L4 thread) opens a console session (`console_open`: busybox
sh on a terminal of the personality's, our size), waits in `console_read` and writes what
comes to our own TERM gate, so the screen is drawn on the main thread as any feeder's
writes; typed keys go to `console_write`. The program's end or a personality restart
(PeerDied): a new session, after a line saying so.

Drawing: after each write the lines pyte marks dirty are drawn (one text line each,
foreground on background, the cursor's cell inverted) into the window's canvas and shown.
Nitpicker's events arrive as its IRQ in this same loop (`on_irq`); key events become
characters (keys.py) queued for `read`. A Nitpicker restart: the client library reopens,
the toolkit writes the canvas again (a `size` or `write` call, or the idle tick, finds it).
"""
from __future__ import annotations

import threading
import time
from typing import Any

import pyte

from kernel.user.client import L4
from kernel.user.errors import PeerDied, Timeout
from kernel.user.rpc import Call, Protocol, RpcError, op

from .client import IRQ_LABEL
from .font import CELL_H, CELL_W
from .keys import Keymap
from .protocol import KEY
from .toolkit import DARK, Window

MAX_WRITE = 16384
FG, BG = (200, 220, 200), DARK
TICK_S = 1.0

TERM = Protocol("term", [
    op("write", 1, ["data:bytes"], None, errors=["INVALID"]),
    op("read", 2, [], "typed"),
    op("size", 3, [], "size"),
], tag=0x5445)


class Terminal:
    """TERM's implementation and the window. Main thread only."""

    def __init__(self, l4: L4, cols: int, rows: int, x: int, y: int, title: str) -> None:
        self.cols, self.rows = cols, rows
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self.win = Window(l4, title, cols * CELL_W + 4, rows * CELL_H + 4 + 16, x, y,
                          background=BG)
        self.left, self.top = 2, self.win.top
        self.keymap = Keymap()
        self.typed = bytearray()
        self.cursor = (0, 0)
        self.console: "LinuxConsole | None" = None
        self.draw(set(range(rows)))

    def draw(self, lines: set[int]) -> None:
        cx, cy = self.screen.cursor.x, self.screen.cursor.y
        lines |= {self.cursor[1], cy}
        for y in sorted(lines):
            if not 0 <= y < self.rows:
                continue
            row = self.screen.buffer[y]
            text = "".join(row[x].data for x in range(self.cols))
            py = self.top + y * CELL_H
            self.win.canvas.text(self.left, py, text, FG, BG, width=self.cols * CELL_W)
            if y == cy and 0 <= cx < self.cols:
                self.win.canvas.text(self.left + cx * CELL_W, py, row[cx].data or " ", BG, FG)
        self.cursor = (cx, cy)
        self.screen.dirty.clear()
        self.win.show()

    # -- TERM ------------------------------------------------------------------------------
    def write(self, call: Call, data: bytes) -> None:
        if len(data) > MAX_WRITE:
            raise RpcError("INVALID", f"write of {len(data)} bytes: at most {MAX_WRITE}")
        self.stream.feed(data)
        self.draw(set(self.screen.dirty))

    def read(self, call: Call) -> bytes:
        out, self.typed = bytes(self.typed), bytearray()
        return out

    def size(self, call: Call) -> dict[str, int]:
        return {"cols": self.cols, "rows": self.rows}

    # -- Nitpicker's events ------------------------------------------------------------------
    def on_irq(self, call: Call, body: dict[str, Any]) -> None:
        if call.label == IRQ_LABEL:
            self.take_events()

    def take_events(self) -> None:
        for ev in self.win.gui.events():
            if ev.kind == KEY:
                self.typed += self.keymap.press(ev.code, ev.value).encode()
        if len(self.typed) > MAX_WRITE:
            del self.typed[:-MAX_WRITE]
        if self.console is not None and self.typed:
            self.typed = self.console.type(bytes(self.typed))

    def tick(self) -> None:
        try:
            self.win.gui.stats()                 # a restarted Nitpicker: reopened, redrawn
        except (PeerDied, Timeout, TimeoutError):
            pass


CONSOLE_LABEL = 0x4C43                   # our own TERM gate, called by the console pump
RETRY_S = 0.5


class LinuxConsole:
    """The personality's console in the window: the pump thread and what typing needs.
    `type` runs on the main thread; `_pump` on its own thread with its own L4 thread."""

    def __init__(self, l4: L4, term: Terminal) -> None:
        from servers.l4linux.protocol import LINUX
        self.linux = LINUX
        self.rows, self.cols = term.rows, term.cols
        self.stub: Any = LINUX.client(l4, l4.caps["linux"], timeout=2000)
        self.id = 0                              # the session being shown (0: none yet)
        self.sessions = 0
        gate = l4.create_gate(CONSOLE_LABEL)     # bound to the main thread: TERM's server
        pump = l4.spawn_thread()
        self.thread = threading.Thread(target=self._pump, args=(pump, gate),
                                       name="console-pump", daemon=True)
        self.thread.start()

    def type(self, data: bytes) -> bytearray:
        """Typed bytes to the console (main thread); what could not go yet, kept."""
        if not self.id:
            return bytearray(data)
        try:
            self.stub.console_write(self.id, data)
        except (PeerDied, Timeout):
            return bytearray(data)
        except RpcError:
            pass                                 # the session just ended: the pump reopens
        return bytearray()

    def _pump(self, l4: L4, gate: int) -> None:
        term: Any = TERM.client(l4, gate, timeout=10_000)
        linux: Any = self.linux.client(l4, l4.caps["linux"], timeout=None)
        while True:
            try:
                self.id, pid = linux.console_open(["sh"], [], self.rows, self.cols)
                self.sessions += 1
                print(f"terminal: L4Linux console {self.id}, sh pid {pid}", flush=True)
                status = -1
                while status == -1:
                    data, status = linux.console_read(self.id)
                    for i in range(0, len(data), MAX_WRITE):
                        term.write(data[i:i + MAX_WRITE])
                self.id = 0
                term.write(f"\r\n[sh ended: status {status}; a new one]\r\n".encode())
            except (PeerDied, Timeout, RpcError) as e:
                self.id = 0
                try:
                    term.write(f"\r\n[the L4Linux console is gone ({type(e).__name__}); "
                               f"opening it again]\r\n".encode())
                except (PeerDied, Timeout, RpcError):
                    pass
                time.sleep(RETRY_S)


def run(l4: L4, cols: str = "80", rows: str = "24", x: str = "40", y: str = "40",
        title: str = "console") -> int:
    term = Terminal(l4, int(cols), int(rows), int(x), int(y), title)
    if "linux" in l4.caps:
        term.console = LinuxConsole(l4, term)
    print(f"terminal: {cols}x{rows} at {x},{y}"
          f"{' (the L4Linux console)' if term.console else ''}", flush=True)
    while True:
        due = time.monotonic() + TICK_S
        TERM.serve(l4, term, timeout=TICK_S * 1000, until=lambda: time.monotonic() >= due)
        term.tick()


def feed(l4: L4, period: str = "1.0") -> int:
    """A task writing to a terminal: a banner, a line each `period` seconds, and a line
    editor over what is typed into the window (echo, backspace, enter answers)."""
    stub: Any = TERM.client(l4, l4.caps["term"], timeout=10_000)

    def write(text: str) -> None:
        while True:
            try:
                stub.write(text.encode())
                return
            except (PeerDied, Timeout):
                time.sleep(0.5)                  # the terminal restarts
    write("\x1b[1mL4Py\x1b[0m: a console written by the task 'feeder' (TERM)\r\n"
          "type into this window (click it first); enter ends a line\r\n\r\n")
    line, n, next_tick = "", 0, time.monotonic()
    while True:
        if time.monotonic() >= next_tick:
            n += 1
            write(f"\x1b7\x1b[1;60H\x1b[7m tick {n:5d} \x1b[0m\x1b8")
            next_tick += float(period)
        try:
            typed = stub.read().decode(errors="replace")
        except (PeerDied, Timeout):
            typed = ""
        for ch in typed:
            if ch == "\r":
                write(f"\r\nyou typed: {line!r}\r\n$ ")
                print(f"feeder: line {line!r}", flush=True)
                line = ""
            elif ch == "\x7f":
                if line:
                    line = line[:-1]
                    write("\b \b")
            elif ch.isprintable():
                line += ch
                write(ch)
        time.sleep(0.05)
