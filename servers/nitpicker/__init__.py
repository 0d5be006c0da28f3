"""Nitpicker, the secure GUI multiplexer (paper §4.3), and its clients.

The server (a task, `servers.nitpicker.server:main`):
- protocol.py   NITPICKER: sessions, buffers, views, refresh, events (declared once)
- server.py     the task: policy, sessions, buffers, views, painting, the serve loop
- routing.py    input routing: secure keys (X-ray, kill mode), focus by click, events
- views.py      the model: sessions, views, the stacking order, geometry checks
- compose.py    the painter: a screen rectangle from the views, labels, X-ray
- output.py     where the screen goes: the scan-out memory itself (the fb server's direct
                mapping), or a copy sent to an fb session
- pinned.py     buffers and screen as zero-copy views held across a paint (bulk copies)
- ring.py       the flip ring: flips posted in shared memory, painted without a call
- font.py       text as pixels (a built-in bitmap font)
- kill.py       kill mode's request to the launcher (NAMES end_client)

For clients:
- client.py     GuiSession: a session, its shared buffer, views; recreated after a restart
- toolkit.py    Canvas (text, boxes, buttons, images) and Window
- keys.py       Linux key codes to characters
- terminal.py   a VT100 terminal window (pyte) served over TERM, and a task that feeds it
- clock.py      a clock window
- pin.py        the trusted PIN-entry window (PIN.ask)
"""
