"""The consoles of `l4run console`: a terminal, the program started on it, its reader.

Mechanism. `console_open` makes a `tty.Tty`, starts the program (default `sh`: busybox
ash, interactive because its stdin is a terminal) with the terminal as fds 0-2, as a
session leader and the terminal's foreground process group, and keeps the session. The
host side (the door, control.py) then reads and writes through the protocol:
`console_read` is answered at once if the terminal has output, else its reply capability
is kept (`Session.reader`) and answered by the terminal's `on_output`; only one reader at a
time (a new one, or `console_detach`, answers the old one with status -2). Each attach has
its own id: a re-attach makes a new one, and a late call of the attachment it replaced (its
door's thread still reading, or detaching) answers DETACHED or nothing, never taking the
terminal from the new one. When the program ends, the reader is answered with what is left
and its exit status, and the session goes.

The terminal's `signal` sends a signal to every process of a process group (`^C`: SIGINT to
the foreground group), through `Personality.kill` (a handler: the waiting call answers
EINTR; else the host's default action; ^Z's SIGTSTP stops the job, reported to its shell).

Ownership: the personality's single serving thread.
"""
from __future__ import annotations

import errno
import itertools
from typing import TYPE_CHECKING, Any

from kernel.user.errors import L4Error
from kernel.user.rpc import Status, error_answer

from . import fs, process
from .protocol import LINUX
from .tty import Tty

if TYPE_CHECKING:
    from kernel.user.rpc import Op

    from .server import Personality

RUNNING, DETACHED = -1, -2
DEFAULT_ENV = [b"PATH=/bin:/sbin:/usr/bin", b"HOME=/root", b"TERM=vt100", b"PS1=\\w # "]
_ids = itertools.count(1)


class Session:
    def __init__(self, px: "Personality", tty: Tty) -> None:
        self.px, self.tty = px, tty
        self.id = next(_ids)                  # the current attachment (console_open's id)
        self.pid = 0
        self.reader: int | None = None        # a kept console_read reply capability
        self.status = RUNNING

    def answer(self, status: int) -> None:
        """Answer the waiting reader, if any, with what the terminal has (and `status`)."""
        if self.reader is None:
            return
        reply, self.reader = self.reader, None
        op = LINUX.ops["console_read"]
        try:
            self.px.l4.reply(reply, LINUX.encode_result(op, [self.tty.take_output(), status]),
                             proto=LINUX.tag)
        except L4Error:
            pass                              # the door's thread is gone

    def output(self) -> None:
        if self.reader is not None and self.tty.out:
            self.answer(self.status)

    def ended(self, q: process.Process) -> None:
        self.status = process.status_code(q.status)
        self.answer(self.status)
        for key in [k for k, v in self.px.consoles.items() if v is self]:
            del self.px.consoles[key]

    def reattach(self) -> int:
        """A new attachment: the old one's reader is answered DETACHED, and whatever its
        door still sends (a late read, write or detach) no longer reaches the terminal."""
        self.answer(DETACHED)
        self.id = next(_ids)
        self.px.consoles[self.id] = self
        return self.id


def signal_group(px: "Personality", pgrp: int, sig: int) -> None:
    for q in [q for q in px.procs.by_pid.values() if q.pgid == pgrp and q.state != "zombie"]:
        px.kill(q, sig)                       # ^Z: a stop, reported to the job's shell


def request(px: "Personality", o: "Op", args: list[Any], reply: int) -> None:
    """Serve one console op; `reply` is answered now or (console_read) kept."""
    def fail(err: str, why: str) -> None:
        px.l4.reply(reply, error_answer(Status.FAILED, err, why), proto=LINUX.tag)

    def ok(value: Any) -> None:
        px.l4.reply(reply, LINUX.encode_result(o, value), proto=LINUX.tag)

    if o.name == "console_open":
        argv = [a.encode() if isinstance(a, str) else bytes(a) for a in args[0]]
        if not argv:
            live = [s for s in px.consoles.values() if s.status == RUNNING]
            if live:
                s = live[-1]
                s.tty.resize(max(1, args[2]), max(1, args[3]))
                ok([s.reattach(), s.pid])
                return
            argv = [b"sh"]
        env = [e.encode() if isinstance(e, str) else bytes(e) for e in args[1]] or DEFAULT_ENV
        tty = Tty("console", max(1, args[2]) or 24, max(1, args[3]) or 80)
        s = Session(px, tty)
        tty.on_output = s.output
        tty.signal = lambda pgrp, sig: signal_group(px, pgrp, sig)
        path = argv[0] if b"/" in argv[0] else b"/bin/" + argv[0]
        try:
            p = px.start(path, argv, env, px.fs.root, tty)
        except fs.FsError as e:
            fail("NOEXEC" if e.errno in (errno.ENOEXEC, errno.EACCES) else "NOT_FOUND", str(e))
            return
        p.pgid = p.sid = p.pid
        tty.pgrp = tty.sid = p.pid
        s.pid = p.pid
        px.consoles[s.id] = s
        p.on_exit.append(s.ended)
        ok([s.id, s.pid])
        return
    found = px.consoles.get(args[0])
    if found is None:
        fail("NOT_FOUND", f"no console {args[0]} (its program ended)")
        return
    s = found
    if args[0] != s.id:                       # an attachment that another one replaced
        if o.name == "console_read":
            px.l4.reply(reply, LINUX.encode_result(o, [b"", DETACHED]), proto=LINUX.tag)
        else:
            ok(None)
        return
    if o.name == "console_read":
        s.answer(DETACHED)                    # one reader at a time
        s.reader = reply
        s.output()
    elif o.name == "console_write":
        s.tty.input(bytes(args[1]))
        ok(None)
    elif o.name == "console_size":
        s.tty.resize(max(1, args[1]), max(1, args[2]))
        ok(None)
    elif o.name == "console_detach":
        s.answer(DETACHED)
        ok(None)
