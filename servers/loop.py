"""The request loop of the memory servers (sigma0, moe): msgpack dict requests, one answer each.

Wire format (message data): a request is `{"op": NAME, ...}` with proto 0 (or a kernel
PAGE_FAULT message); the answer is `{"ok": value}` with proto 0, or `{"err": CODE, "reason":
TEXT}` with proto 1.

Contracts (checked by tests/conformance):
- A request with any other proto tag is refused with an error answer, never served.
- Any exception in the handler becomes an error answer; the loop never dies of a request.
- An error reason is at most MAX_REASON characters, so an answer always fits in a message
  (quoting a 64 KiB request back at its sender would not).
- An answer the kernel refuses (the caller gave up, or it is too big) is reported on stderr
  and the loop goes on.
"""
from __future__ import annotations

import sys
from enum import Enum
from typing import Any, Callable

from kernel.abi import Proto, pack, unpack
from kernel.user.client import Message
from kernel.user.errors import L4Error

MAX_REASON = 200
REQUEST_PROTO = 0
ERROR_PROTO = 1

Handler = Callable[[Message, Any], "tuple[Any, list, int]"]


def error_answer(code: Any, reason: str) -> bytes:
    if isinstance(code, Enum):
        code = code.name
    if len(reason) > MAX_REASON:
        reason = reason[:MAX_REASON - 1] + "…"
    return pack({"err": str(code), "reason": reason})


def _answer(handle: Handler, msg: Message) -> tuple[bytes, list, int]:
    if msg.proto not in (REQUEST_PROTO, Proto.PAGE_FAULT):
        return error_answer("INVALID", f"unknown protocol tag {msg.proto}"), [], ERROR_PROTO
    try:
        body = unpack(msg.data) if msg.data else {}
        if msg.proto == REQUEST_PROTO and not isinstance(body, dict):
            return error_answer("INVALID", "a request is a msgpack map with an 'op'"), [], ERROR_PROTO
        value, items, proto = handle(msg, body)
        return pack({"ok": value}), items, proto
    except L4Error as e:
        return error_answer(e.err, e.reason), [], ERROR_PROTO
    except Exception as e:        # the server's own error types carry .code/.err and .reason
        code = getattr(e, "code", None) or getattr(e, "err", None) or "INVALID"
        return error_answer(code, getattr(e, "reason", None) or repr(e)), [], ERROR_PROTO


def serve(l4: Any, handle: Handler, name: str, window: tuple[int, int] | None = None) -> None:
    """Serve forever: `handle(msg, body)` answers (value, items, proto) or raises."""
    items: list = []
    reply, data, proto = 0, b"", 0
    while True:
        try:
            msg = l4.reply_and_wait(reply, data, items=items, proto=proto, window=window)
        except L4Error as e:       # our answer could not be delivered: say why, go on
            print(f"[{name}] reply failed: {e}", file=sys.stderr, flush=True)
            reply, data, items, proto = 0, b"", [], 0
            continue
        reply = msg.reply
        data, items, proto = _answer(handle, msg)
