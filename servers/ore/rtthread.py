"""ORe's reserved thread: the frames of reserved sessions switched apart from best effort.

Mechanism. A session with an uplink reservation (shaper.py) has its kick IRQ attached to a
thread of its own, the reserved thread (host name RT_THREAD "rt/ore", one L4 thread), which
drains it (`OreServer._drain`: check, decide, shape, hand to the uplink) while the main
thread drains every other session, takes the uplink's signal and does the housekeeping.
From the first reservation on, the main thread is named BE_THREAD "be/ore": the CPU
reservation manager (servers/rt/server.py) boosts ORe's threads but the "be/" ones, so the
best-effort clients' frames are switched in the ordinary class, and a reserved client's
frame never waits in the main thread's queue behind them, nor for the host's ordinary class.
A reserved frame that found no tokens (held) is retried here every RETRY_S. The thread moves
to the kernel's real-time port (`L4.rt_try`) once its process holds a real-time policy.

Contract: `attach(s)` moves session `s`'s kicks to the reserved thread, `detach(s)` back to
the main thread (a reservation's end; a closed session's kick is deleted with it).

Ownership: every piece of forwarding state (sessions, the switch, the shaper, the uplink's
streams and counters) is touched only under `OreServer.lock`, by whichever thread forwards;
the main thread takes it for each message it handles. `sids` is changed by the main thread
under that lock and read here under it. Both threads share the interpreter and the lock: a
main thread preempted while it holds them delays a reserved drain until it runs again (the
manager runs best-effort threads of boosted processes at nice -20 for that reason), and a
busy main thread keeps the interpreter until the reserved thread has waited the switch
interval for it (hostsched.share_interpreter: 0.5 ms from the first reservation, not 5).
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from kernel.abi import SLOT_THREAD
from kernel.user.client import L4
from kernel.user.errors import L4Error
from kernel.user.rpc import Call
from servers.rt import hostsched as hs

from .protocol import KICK_LABEL_BASE, ORE
from .shaper import RETRY_S

if TYPE_CHECKING:
    from .server import OreServer

RT_THREAD = hs.RESERVED_PREFIX + "ore"
BE_THREAD = hs.BEST_EFFORT_PREFIX + "ore"
IDLE_MS = 500                    # the reserved thread's wait with nothing held


class ThreadL4:
    """The calling thread's own kernel connection: the reserved thread's on it (`use`),
    the main thread's elsewhere. A drain triggers IRQs (signals, the uplink's kick); an L4
    thread has one call in flight at a time, so each thread must make them on its own."""

    def __init__(self, main: L4) -> None:
        self._main = main
        self._local = threading.local()

    def use(self, l4: L4) -> None:
        self._local.l4 = l4

    def __getattr__(self, name: str) -> Any:
        return getattr(getattr(self._local, "l4", None) or self._main, name)


class ReservedThread:
    def __init__(self, server: "OreServer") -> None:
        self.server = server
        new = server.l4.create_thread()
        self.slot = int(new.slot)                     # our capability to its L4 thread
        self.l4 = L4(server.l4.kernel_sock, new.secret, server.l4.caps, server.l4.ctx,
                     server.l4.server_key)
        self.sids: set[int] = set()                   # sessions whose kicks come here; lock
        self.tid = 0                                  # its host thread
        hs.share_interpreter()                        # a kick is not kept 5 ms behind be/ore
        threading.Thread(target=self._run, name=RT_THREAD, daemon=True).start()
        hs.name_thread(BE_THREAD)                     # the caller: ORe's main thread

    def attach(self, s: Any) -> None:
        """Session `s`'s kicks to the reserved thread (main thread, under the lock)."""
        if s.sid not in self.sids:
            self.server.l4.irq_attach(s.kick, self.slot, KICK_LABEL_BASE + s.sid)
            self.sids.add(s.sid)

    def detach(self, s: Any, closing: bool = False) -> None:
        """Session `s`'s kicks back to the main thread (main thread, under the lock)."""
        if s.sid in self.sids:
            self.sids.discard(s.sid)
            if not closing:
                try:
                    self.server.l4.irq_attach(s.kick, SLOT_THREAD, KICK_LABEL_BASE + s.sid)
                except L4Error:
                    pass              # the session is going: its kick goes with it

    def on_irq(self, call: Call, body: dict[str, Any]) -> None:
        """A reserved session's kick: drain it."""
        with self.server.lock:
            s = self.server.live.get(call.label - KICK_LABEL_BASE)
            if s is not None and s.sid in self.sids:
                self.server._drain(s)

    def _held(self) -> bool:
        live = self.server.live
        return any(sid in live and live[sid].held for sid in list(self.sids))

    def _run(self) -> None:
        self.server.tl4.use(self.l4)
        hs.name_thread(RT_THREAD)
        self.tid = threading.get_native_id()
        while True:
            # On the kernel's real-time port as soon as the CPU manager boosts us.
            self.l4.rt_try()
            timeout = RETRY_S * 1e3 if self._held() else IDLE_MS
            ORE.serve(self.l4, self, until=lambda: self._held() or self.l4.rt_due(),
                      timeout=timeout)
            with self.server.lock:              # frames held for tokens: try them again
                for sid in list(self.sids):
                    s = self.server.live.get(sid)
                    if s is not None and s.held:
                        self.server._drain(s)
