"""Nitpicker's input routing: the secure keys, focus by click, who gets which event.

    class Nitpicker(Routing, ...)       # server.py: on_irq is its kernel handler of Proto.IRQ

Contract (Feske & Helmuth): two secure keys never reach a client: XRAY_KEY toggles X-ray
mode, KILL_KEY arms kill mode (the next click ends the clicked session's task, if the
policy lists its label; that click reaches no client, nor its release). A click focuses
the session of the view under the pointer; keys go to the focused session only; pointer
events to the view under the pointer, or to the view a held button was pressed on. Each
session with new events has its IRQ object triggered once per batch; the events are in its
ring page's event ring (ring.py) or, when that is full or the session has no buffer yet,
in its queue for the `events` call.

Ownership: Nitpicker's main thread (the serve loop), like the state it routes by, which
server.py's Nitpicker owns; the names declared below are its attributes.
"""
from __future__ import annotations

from typing import Any

from kernel.user.client import L4
from kernel.user.errors import L4Error
from kernel.user.rpc import Call
from servers.input.client import IRQ_LABEL, InputSession

from .compose import LABEL_H
from .kill import end_task
from .protocol import BTN_LEFT, BTN_MIDDLE, BTN_RIGHT, BUTTON, FOCUS, KEY, MOTION
from .views import Rect, Session, Stack, View

XRAY_KEY = 88                    # F12: the secure attention key (X-ray on / off)
KILL_KEY = 87                    # F11: kill mode (the next click ends the clicked task)
EV_SYN, EV_KEY, EV_ABS = 0, 1, 3
BUTTONS = (BTN_LEFT, BTN_RIGHT, BTN_MIDDLE)


class Routing:
    l4: L4
    policy: Any                  # policy.Policy: its `killable` labels
    rings: Any                   # ring.Rings: the sessions' ring pages (their event rings)
    input: InputSession | None
    stack: Stack
    focused: Session | None
    xray: bool
    kill_mode: bool
    pointer: tuple[int, int]
    moved: bool
    grab: View | None
    buttons: set[int]
    swallow: set[int]
    kills: int
    refused_kills: int

    def repaint(self, rects: list[Rect]) -> bool:
        raise NotImplementedError

    def repaint_all(self) -> None:
        raise NotImplementedError

    def post(self, s: Session, ev: list[int]) -> None:
        """An event for session `s`: into its event ring (ring.py) while nothing waits in
        its queue and the ring has room, so the client takes it without a call; else into
        the queue (the `events` call), EV_OVER telling the client so."""
        ring = s.buffer.ring if s.buffer is not None else 0
        if ring and not s.events and self.rings.post_event(ring, ev):
            return
        s.queue(ev)
        if ring:
            self.rings.over(ring, True)

    def on_irq(self, call: Call, body: dict[str, Any]) -> None:
        if self.input is None or call.label != IRQ_LABEL:
            return
        woken: set[Session] = set()
        for ev in self.input.drain():
            self._event(ev.type, ev.code, ev.value, ev.time_us, woken)
        for s in woken:
            try:
                self.l4.irq_trigger(s.irq)
            except L4Error:
                pass

    def _event(self, t: int, code: int, value: int, us: int, woken: set[Session]) -> None:
        if t == EV_ABS and code in (0, 1):
            x, y = self.pointer
            self.pointer = (value, y) if code == 0 else (x, value)
            self.moved = True
        elif t == EV_SYN and self.moved:
            self.moved = False
            target = self.grab if self.buttons and self.grab else self.stack.at(*self.pointer)
            if target is not None:
                self._deliver(target, MOTION, 0, 0, us, woken)
        elif t == EV_KEY and code in BUTTONS:
            self._button(code, value, us, woken)
        elif t == EV_KEY:
            self._key(code, value, us, woken)

    def _deliver(self, v: View, kind: int, code: int, value: int, us: int,
                 woken: set[Session]) -> None:
        px, py = self.pointer
        self.post(v.session, [kind, v.id, code, value, px - v.rect.x, py - v.rect.y, us])
        woken.add(v.session)

    def _key(self, code: int, value: int, us: int, woken: set[Session]) -> None:
        if code in (XRAY_KEY, KILL_KEY):             # secure keys: no client sees them
            if value == 1 and code == XRAY_KEY:
                self.xray = not self.xray
                print(f"nitpicker: X-ray mode {'on' if self.xray else 'off'}", flush=True)
                self.repaint_all()
            elif value == 1:
                self.kill_mode = not self.kill_mode
                print(f"nitpicker: kill mode {'armed' if self.kill_mode else 'off'}",
                      flush=True)
            return
        s = self.focused
        if s is None:
            return
        focus_view = min(s.views) if s.views else 0
        self.post(s, [KEY, focus_view, code, value, 0, 0, us])
        woken.add(s)

    def _button(self, code: int, value: int, us: int, woken: set[Session]) -> None:
        if value == 0:
            self.buttons.discard(code)
            if code in self.swallow:
                self.swallow.discard(code)
                return
            target = self.grab or self.stack.at(*self.pointer)
            if target is not None:
                self._deliver(target, BUTTON, code, 0, us, woken)
            if not self.buttons:
                self.grab = None
            return
        self.buttons.add(code)
        v = self.stack.at(*self.pointer)
        if self.kill_mode:
            self.kill_mode = False
            self.swallow.add(code)
            if v is not None:
                self.kill(v.session)
            return
        if v is None:
            return
        if self.focused is not v.session:
            self._focus(v.session, us, woken)
        if self.grab is None:
            self.grab = v
        self._deliver(v, BUTTON, code, 1, us, woken)

    def _focus(self, s: Session, us: int, woken: set[Session]) -> None:
        old, self.focused = self.focused, s
        for sess, gained in ((old, 0), (s, 1)):
            if sess is not None:
                self.post(sess, [FOCUS, 0, 0, gained, 0, 0, us])
                woken.add(sess)
        dirty = [Rect(v.rect.x, v.rect.y, v.rect.w, min(v.rect.h, LABEL_H))
                 for sess in (old, s) if sess is not None for v in sess.views.values()]
        if self.xray:
            dirty = [v.rect for sess in (old, s) if sess is not None
                     for v in sess.views.values()]
        self.repaint(dirty)

    def kill(self, s: Session) -> None:
        """Kill mode's click: ask the launcher to end the session's task, if the policy lets."""
        if s.label not in self.policy.killable:
            self.refused_kills += 1
            print(f"nitpicker: kill mode: the policy does not let session {s.name!r} "
                  f"(label {s.label}) be ended", flush=True)
            return
        why = end_task(self.l4, s.label)
        self.kills += why is None
        print(f"nitpicker: kill mode: session {s.name!r} (label {s.label}) "
              + ("ended" if why is None else f"not ended: {why}"), flush=True)

