"""A terminal: the console of `l4run console`, with Linux's line discipline (n_tty).

Mechanism. A `Tty` sits between a host-side terminal (the door of `l4run console`: bytes
typed come in through `input`, bytes for the screen go out through `take_output`) and the
Linux processes that hold it as fds 0-2, /dev/tty or /dev/console (`read`, `write`,
`can_read`, `ioctl`). What the line discipline does, as Linux's n_tty does it:
- input: ICRNL (CR → NL); with ISIG, VINTR (^C), VQUIT (^\\) and VSUSP (^Z) send SIGINT,
  SIGQUIT, SIGTSTP to the foreground process group (and flush the pending input); with
  ICANON, lines are edited (VERASE backspace, VKILL, VWERASE) and handed out whole, VEOF
  (^D) ends a line without its NL (alone: a read of 0 bytes, EOF); without ICANON, bytes
  are handed out as they come (VMIN 0: a read answers at once, even empty);
- echo (ECHO; control characters as ^X with ECHOCTL; an erase as "\\b \\b" with ECHOE);
- output: OPOST|ONLCR (NL → CR NL).
The termios ioctls (TCGETS, TCSETS, TCSETSW, TCSETSF), TIOCGWINSZ/TIOCSWINSZ (a resize sends
SIGWINCH to the foreground group), TIOCGPGRP/TIOCSPGRP, TIOCGSID, TIOCSCTTY, TIOCNOTTY and
FIONREAD are `ioctl`'s. Job control (`background`): a process of the terminal's session
outside its foreground group that reads it gets SIGTTIN sent to its group (EIO if it
ignores or blocks SIGTTIN, or its group is orphaned), one that writes it gets SIGTTOU only
with TOSTOP set — as Linux's tty_check_change.

Contracts: `read` answers bytes or `pipe.BLOCK` (nothing to hand out yet: the call is
retried after the next input); `write` never blocks (what nobody takes is kept up to
`MAX_OUTPUT` bytes, the oldest dropped). ^Z's SIGTSTP stops the foreground group when it
does not handle it, and its shell is told (`Personality.kill`: docs/L4LINUX.md "Stops").

Ownership: the personality's single serving thread; `on_output` and `signal` are its
callbacks (answer a waiting `console_read`; signal a process group).
"""
from __future__ import annotations

import errno
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .pipe import BLOCK

if TYPE_CHECKING:
    from .process import Process
    from .server import Personality

# termios flags (asm-generic/termbits.h)
ICRNL, IXON = 0o400, 0o2000
OPOST, ONLCR = 0o1, 0o4
ISIG, ICANON, ECHO, ECHOE, ECHOK, ECHONL, ECHOCTL, ECHOKE, IEXTEN = (
    0o1, 0o2, 0o10, 0o20, 0o40, 0o100, 0o1000, 0o4000, 0o100000)
VINTR, VQUIT, VERASE, VKILL, VEOF, VTIME, VMIN = 0, 1, 2, 3, 4, 5, 6
VSUSP, VEOL, VWERASE, VEOL2 = 10, 11, 14, 16
NCCS = 19
TERMIOS = struct.Struct(f"<IIIIB{NCCS}s")          # the kernel's struct termios, 36 bytes
WINSIZE = struct.Struct("<HHHH")
DEFAULT_CC = bytes([3, 0x1C, 0x7F, 0x15, 4, 0, 1, 0, 0x11, 0x13, 0x1A, 0, 0x12, 0x0F, 0x17,
                    0x16, 0, 0, 0])
TCGETS, TCSETS, TCSETSW, TCSETSF = 0x5401, 0x5402, 0x5403, 0x5404
TIOCSCTTY, TIOCGPGRP, TIOCSPGRP, TIOCGWINSZ, TIOCSWINSZ = 0x540E, 0x540F, 0x5410, 0x5413, 0x5414
FIONREAD, TIOCNOTTY, TIOCGSID = 0x541B, 0x5422, 0x5429
SIGINT, SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU, SIGWINCH = 2, 3, 20, 21, 22, 28
TOSTOP = 0o400
ERESTARTSYS, ERESTARTNOINTR = 512, 513     # as signals.py: the host restarts the call
MAX_OUTPUT = 1 << 20
MAX_LINE = 4096                                     # N_TTY_BUF_SIZE


class Tty:
    def __init__(self, name: str, rows: int = 24, cols: int = 80) -> None:
        self.name = name
        self.iflag, self.oflag, self.cflag = ICRNL | IXON, OPOST | ONLCR, 0o277   # B38400 CS8
        self.lflag = ISIG | ICANON | ECHO | ECHOE | ECHOK | ECHOCTL | ECHOKE | IEXTEN
        self.cc = bytearray(DEFAULT_CC)
        self.rows, self.cols = rows, cols
        self.pgrp = 0                  # the foreground process group
        self.sid = 0                   # the session it is the controlling terminal of
        self.line = bytearray()        # canonical: the line being edited
        self.ready: list[bytes] = []   # what reads hand out (canonical: whole lines; b"": EOF)
        self.out = bytearray()         # for the host terminal
        self.on_output: Callable[[], None] = lambda: None
        self.signal: Callable[[int, int], None] = lambda pgrp, sig: None

    # -- the host side --------------------------------------------------------------------
    def input(self, data: bytes) -> None:
        for c in data:
            self._char(c)
        self.on_output()

    def take_output(self) -> bytes:
        data, self.out = bytes(self.out), bytearray()
        return data

    def resize(self, rows: int, cols: int) -> None:
        if (rows, cols) != (self.rows, self.cols):
            self.rows, self.cols = rows, cols
            if self.pgrp:
                self.signal(self.pgrp, SIGWINCH)

    # -- the line discipline --------------------------------------------------------------
    def _char(self, c: int) -> None:
        cc, lflag = self.cc, self.lflag
        if c == 13 and self.iflag & ICRNL:
            c = 10
        if lflag & ISIG and c in (cc[VINTR], cc[VQUIT], cc[VSUSP]) and c:
            sig = SIGINT if c == cc[VINTR] else SIGQUIT if c == cc[VQUIT] else SIGTSTP
            self.line.clear()
            self.ready.clear()
            self._echo_ctl(c)
            if self.pgrp:
                self.signal(self.pgrp, sig)
            return
        if not lflag & ICANON:
            self._echo(c)
            self.ready.append(bytes([c]))
            return
        if c == cc[VERASE] or c == 8:
            if self.line:
                self.line.pop()
                if lflag & ECHO and lflag & ECHOE:
                    self._emit(b"\b \b")
            return
        if c == cc[VKILL] or c == cc[VWERASE]:
            keep = 0
            if c == cc[VWERASE]:
                text = bytes(self.line).rstrip(b" ")
                keep = text.rfind(b" ") + 1
            while len(self.line) > keep:
                self.line.pop()
                if lflag & ECHO:
                    self._emit(b"\b \b")
            return
        if c == cc[VEOF]:
            self.ready.append(bytes(self.line))        # alone: b"", a read of 0 (EOF)
            self.line.clear()
            return
        if len(self.line) < MAX_LINE - 1 or c == 10:
            self.line.append(c)
            self._echo(c)
        if c in (10, cc[VEOL], cc[VEOL2]) and c:
            self.ready.append(bytes(self.line))
            self.line.clear()

    def _echo(self, c: int) -> None:
        if self.lflag & ECHO:
            if c < 32 and c not in (9, 10) and self.lflag & ECHOCTL:
                self._echo_ctl(c)
            else:
                self._emit(bytes([c]))
        elif c == 10 and self.lflag & ECHONL:
            self._emit(b"\n")

    def _echo_ctl(self, c: int) -> None:
        if self.lflag & ECHO and self.lflag & ECHOCTL:
            self._emit(b"^" + bytes([(c + 64) & 0x7F]))

    def _emit(self, data: bytes) -> None:
        if self.oflag & OPOST and self.oflag & ONLCR:
            data = data.replace(b"\n", b"\r\n")
        self.out += data
        if len(self.out) > MAX_OUTPUT:
            del self.out[:len(self.out) - MAX_OUTPUT]

    # -- the Linux side (files.Open of kind "console") -------------------------------------
    def can_read(self) -> bool:
        return bool(self.ready) or (not self.lflag & ICANON and self.cc[VMIN] == 0)

    def read(self, n: int) -> Any:
        if not self.ready:
            return b"" if not self.lflag & ICANON and self.cc[VMIN] == 0 else BLOCK
        if self.lflag & ICANON:
            line = self.ready[0]
            if len(line) <= n:
                self.ready.pop(0)
                return line
            self.ready[0] = line[n:]
            return line[:n]
        data = b"".join(self.ready)
        self.ready = [data[n:]] if len(data) > n else []
        return data[:n]

    def write(self, data: bytes) -> int:
        self._emit(data)
        self.on_output()
        return len(data)

    def pending(self) -> int:
        return sum(len(x) for x in self.ready)

    # -- termios ----------------------------------------------------------------------------
    def termios(self) -> bytes:
        return TERMIOS.pack(self.iflag, self.oflag, self.cflag, self.lflag, 0, bytes(self.cc))

    def set_termios(self, raw: bytes, flush: bool) -> None:
        self.iflag, self.oflag, self.cflag, lflag, _, cc = TERMIOS.unpack(raw)
        self.cc = bytearray(cc)
        if flush:
            self.ready.clear()
            self.line.clear()
        if self.lflag & ICANON and not lflag & ICANON and self.line:
            self.ready.append(bytes(self.line))     # leaving canonical: the partial line
            self.line.clear()
        self.lflag = lflag


def _orphaned(px: "Personality", pgrp: int, sid: int) -> bool:
    """POSIX's orphaned process group: no member has a parent in another group of the
    same session (nobody there could continue it after a stop)."""
    for q in px.procs.by_pid.values():
        if q.pgid == pgrp and q.state != "zombie":
            parent = px.procs.by_pid.get(q.ppid)
            if parent is not None and parent.pgid != pgrp and parent.sid == sid:
                return False
    return True


def background(px: "Personality", p: "Process", tty: Tty, sig: int) -> int:
    """Linux's `tty_check_change` for a read (`sig` SIGTTIN) or a TOSTOP write (SIGTTOU) of
    `tty` by `p`: 0 when `p` may go on — the terminal is not its session's, there is no
    foreground group, or `p` is in it; else the call's answer. A background SIGTTIN that
    `p` ignores or blocks, or any such signal to an orphaned group, answers -EIO (SIGTTOU
    ignored or blocked: the write goes on, 0); otherwise the signal goes to `p`'s whole
    process group and the call is made again once it may run (after the stop, or after a
    handler: EINTR unless SA_RESTART, as the host does for ERESTARTSYS)."""
    if not tty.sid or p.sid != tty.sid or not tty.pgrp or p.pgid == tty.pgrp:
        return 0
    from .process import mask_of
    from .syscalls import SA_RESTART, SIG_IGN
    action = p.sigactions.get(sig, 0)
    if action == SIG_IGN or mask_of(p, px.tid) >> (sig - 1) & 1:
        return -errno.EIO if sig == SIGTTIN else 0
    if _orphaned(px, p.pgid, p.sid):
        return -errno.EIO
    for q in [q for q in px.procs.by_pid.values() if q.pgid == p.pgid and q.state != "zombie"]:
        px.kill(q, sig)
    if action > SIG_IGN:
        return -ERESTARTSYS if p.sigflags.get(sig, 0) & SA_RESTART else -errno.EINTR
    return -ERESTARTNOINTR              # stopped: made again by the host once continued


def ioctl(px: "Personality", p: "Process", tty: Tty, cmd: int, arg: int) -> Any:
    """The terminal ioctls (the others: ENOTTY, as Linux's tty answers them)."""
    if cmd == TCGETS:
        px.write(p, arg, tty.termios())
        return 0
    if cmd in (TCSETS, TCSETSW, TCSETSF):
        tty.set_termios(px.read(p, arg, TERMIOS.size), flush=cmd == TCSETSF)
        return 0
    if cmd == TIOCGWINSZ:
        px.write(p, arg, WINSIZE.pack(tty.rows, tty.cols, 0, 0))
        return 0
    if cmd == TIOCSWINSZ:
        rows, cols, _, _ = WINSIZE.unpack(px.read(p, arg, WINSIZE.size))
        tty.resize(rows, cols)
        return 0
    if cmd == TIOCGPGRP:
        px.write(p, arg, struct.pack("<i", tty.pgrp))
        return 0
    if cmd == TIOCSPGRP:
        (pgrp,) = struct.unpack("<i", px.read(p, arg, 4))
        if pgrp <= 0:
            return -errno.EINVAL
        if tty.sid and p.sid != tty.sid:
            return -errno.ENOTTY
        if not any(q.pgid == pgrp and q.sid == p.sid for q in px.procs.by_pid.values()):
            return -errno.EPERM
        tty.pgrp = pgrp
        return 0
    if cmd == TIOCGSID:
        if not tty.sid:
            return -errno.ENOTTY
        px.write(p, arg, struct.pack("<i", tty.sid))
        return 0
    if cmd == TIOCSCTTY:
        tty.sid, tty.pgrp = p.sid, p.pgid
        return 0
    if cmd == TIOCNOTTY:
        return 0
    if cmd == FIONREAD:
        px.write(p, arg, struct.pack("<i", tty.pending()))
        return 0
    return -errno.ENOTTY
