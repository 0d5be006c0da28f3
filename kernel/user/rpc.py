"""Server protocols declared once: the client stub, the dispatch and the server loop follow it.

This is the one way to write a server. A `Protocol` lists a server's operations: name,
opcode, argument names (optionally typed, `"key:str"`), the reply (None, one name, or a tuple
of names), the errors the operation may answer, and whether it is an admin op or moves
capabilities. From that one declaration:

- `proto.client(l4, cap)` makes a stub whose methods (one per op, named after it) pack the
  request, `call` the server through capability `cap`, and unpack the reply or raise;
- `proto.serve(l4, impl)` runs the server loop, calling `impl.<op>(call, *args)` per request
  and `impl.on_page_fault(call, body)` & co. per kernel message (`KERNEL_HANDLERS`);
- `serve(l4, route)` is the same loop for a server with several protocols on one thread,
  chosen per message by the gate's label (moe, the HAL, the launcher's supervisor).

Wire format (message data, msgpack; the message's `proto` tag is the protocol's `tag`):

    request  = [opcode, arg1, arg2, ...]
    reply    = [Status.OK, result]             result: None, a value, or a list per `reply`
             | [status, error_name, reason]    status > 0 (never negative: negative proto
                                               tags and codes belong to the kernel)

`error_name` is one of the op's declared errors for `Status.FAILED`, else the status name
(or the exception's type for `Status.INTERNAL`). The stub maps the three error statuses to
`BadRequest` / `RemoteFailure` / `ServerFault`, each with `.error` and `.reason`.

Labels: `ADMIN_LABEL` (0) is the launcher's admin gate of every server that has one; client
gates have labels >= 1. An op declared `admin=True` is refused (FAILED, "DENIED") through any
other gate before the implementation runs.

Introspection: `HANDLED` counts, per "protocol.op", the requests whose implementation this
process ran (checked input only: refusals are not counted), over every loop and thread of
the process (an increment may be lost to a race between two serving threads: it is a
statistic). The request `[STATS_OP]` (the exact bytes `STATS_REQUEST`, any proto tag)
through the admin gate is answered by the serve loop itself with
[Status.OK, {"protocol.op": n, ...}] (no op can declare STATS_OP: opcodes are >= 0); through
any other gate it is an unknown opcode like any other. The fuzz (launcher/fuzz/protocol.py)
reads it to know which handlers its requests reached.

Kernel messages (negative proto tags) are not requests: `KERNEL_HANDLERS` names the method
of the kernel handler (by default the implementation) that takes each kind, called as
`handler(call, body)` with the decoded payload; it answers `Reply(value, items, proto)` or
None. A kind without a handler is answered with an UNKNOWN_OP error (a call) or dropped.

Contracts:
- The server never crashes on a request: bad msgpack, an unknown opcode, a foreign proto
  tag, a wrong argument count or type, missing capability items are answered with
  `Status.BAD_REQUEST` / `Status.UNKNOWN_OP`; an exception in the implementation with
  `Status.INTERNAL` (and a traceback on the server's stderr); an error the op declared
  (`raise RpcError("NOT_FOUND", "...")`) with `Status.FAILED`.
- Every reason is at most MAX_REASON characters, so an error answer always fits in a
  message (quoting a 64 KiB request back at its sender would not).
- An answer the kernel refuses (items that do not fit, too big) is reported on stderr and
  replaced by an INTERNAL error answer (REPLY_ITEMS / REPLY_REFUSED); a caller that gave up
  is forgotten. Either way the loop goes on. Only a lost kernel (`KernelGone`) ends it.
- Arguments are checked (count and declared types) on both sides: the stub refuses a bad
  call before sending it (`TypeError`), the server refuses one that slipped through.
- Capability items: an op gets at most the `caps_in` it declares (and owns them: it deletes
  or keeps them); any others, and those of a refused request, the framework deletes, so the
  receive window is free for the next request.
- One-way messages (`send`, reply capability 0) are dispatched but not answered.
- Client-side errors say whose fault it was: `BadRequest` (the caller's), `RemoteFailure`
  (a declared error of the op: `.error` names it), `ServerFault` (the server's bug or a
  reply that breaks the protocol).

Ownership: a `Protocol` is immutable after construction; a `Stub` belongs to the thread of
its `l4`; `serve` runs on the calling thread and owns `l4` while it runs.
"""
from __future__ import annotations

import sys
import traceback
from enum import IntEnum
from typing import Any, Callable, Iterable, NamedTuple, Sequence

from ..abi import CAP_ITEMS, AlienVerdict, Proto, pack, unpack
from .client import Message
from .errors import KernelGone, L4Error, Timeout

ADMIN_LABEL = 0          # the launcher's admin gate, in every server that has one
MAX_REASON = 200         # characters of an error reason (an error answer always fits)
DENIED = "DENIED"        # the declared error of an admin op called through a client gate
STATS_OP = -1            # the loop's own introspection request (admin gate only), see above
STATS_REQUEST = pack([STATS_OP])
HANDLED: dict[str, int] = {}   # "protocol.op" -> implementation runs in this process (STATS_OP)

# Kernel message kind -> the handler method that takes it: handler(call, body) -> Reply | None.
KERNEL_HANDLERS: dict[int, str] = {
    Proto.PAGE_FAULT: "on_page_fault",   # a call: answer Reply(None, [map_mem(...)])
    Proto.IRQ: "on_irq",                 # one-way: {"irq", "count"}
    Proto.EXCEPTION: "on_exception",     # one-way: {"event": "exit" | "page_fault", ...}
    Proto.ALIEN: "on_alien",             # a call: answer Reply(None, proto=AlienVerdict.X)
}


class Status(IntEnum):
    """First field of every reply. Never negative."""
    OK = 0
    UNKNOWN_OP = 1     # no operation with that opcode (or a message of another protocol)
    BAD_REQUEST = 2    # not msgpack, not [opcode, ...], wrong argument count or type
    FAILED = 3         # the op answered one of its declared errors
    INTERNAL = 4       # the implementation raised something it did not declare


# ---------------------------------------------------------------------------
# Exceptions

class RpcError(Exception):
    """Raised by an implementation to answer a declared error: RpcError("NOT_FOUND", why)."""

    def __init__(self, error: str, reason: str = "") -> None:
        super().__init__(f"{error}: {reason}" if reason else error)
        self.error = error
        self.reason = reason


class RemoteError(Exception):
    """A server answered an error. `status`, `error` (a name) and `reason` say which."""

    def __init__(self, op: str, status: Status, error: str, reason: str) -> None:
        super().__init__(f"{op}: {status.name} {error}: {reason}")
        self.op = op
        self.status = status
        self.error = error
        self.reason = reason


class BadRequest(RemoteError):
    """The server could not understand the request (the caller's fault)."""


class RemoteFailure(RemoteError):
    """The op failed with one of its declared errors (`error`)."""


class ServerFault(RemoteError):
    """The server broke: an undeclared exception, or a reply outside the protocol."""


_BY_STATUS: dict[Status, type[RemoteError]] = {
    Status.UNKNOWN_OP: BadRequest, Status.BAD_REQUEST: BadRequest,
    Status.FAILED: RemoteFailure, Status.INTERNAL: ServerFault,
}


# ---------------------------------------------------------------------------
# The declaration

_TYPES: dict[str, Callable[[Any], bool]] = {
    "any": lambda v: True,
    "int": lambda v: type(v) is int,
    "float": lambda v: type(v) in (int, float),
    "bool": lambda v: type(v) is bool,
    "str": lambda v: isinstance(v, str),
    "bytes": lambda v: isinstance(v, bytes),
    "list": lambda v: isinstance(v, list),
    "dict": lambda v: isinstance(v, dict),
    "int?": lambda v: v is None or type(v) is int,
    "str?": lambda v: v is None or isinstance(v, str),
    "bytes?": lambda v: v is None or isinstance(v, bytes),
}


class Arg(NamedTuple):
    name: str
    kind: str


class Op(NamedTuple):
    """One operation of a protocol."""
    name: str
    code: int
    args: tuple[Arg, ...]
    reply: tuple[str, ...] | str | None
    errors: tuple[str, ...]
    doc: str
    admin: bool = False      # only through the admin gate (label ADMIN_LABEL)
    caps_in: int = 0         # capability items the request carries (at least)
    caps_out: int = 0        # capability items the reply carries (the caller needs a window)

    def check_args(self, values: Sequence[Any]) -> str | None:
        """None if `values` fit the declaration, else the reason they don't."""
        if len(values) != len(self.args):
            return f"{self.name} takes {len(self.args)} arguments, got {len(values)}"
        for arg, v in zip(self.args, values):
            if not _TYPES[arg.kind](v):
                return f"{self.name} argument '{arg.name}' must be {arg.kind}, got {type(v).__name__}"
        return None


def op(name: str, code: int, args: Iterable[str] = (), reply: tuple[str, ...] | str | None = None,
       errors: Iterable[str] = (), doc: str = "", *, admin: bool = False, caps_in: int = 0,
       caps_out: int = 0) -> Op:
    """Declare an operation. `args` are names, optionally typed: "key:str", "n:int".
    An `admin` op declares DENIED (answered through any gate but the admin gate)."""
    parsed = []
    for spec in args:
        aname, _, kind = spec.partition(":")
        kind = kind or "any"
        if kind not in _TYPES:
            raise ValueError(f"op {name}: argument '{aname}' has unknown type {kind!r} "
                             f"(known: {', '.join(_TYPES)})")
        parsed.append(Arg(aname, kind))
    if not (type(code) is int and 0 <= code < 2 ** 31):
        raise ValueError(f"op {name}: opcode {code!r} must be an int in 0..2^31-1")
    errs = tuple(errors) + ((DENIED,) if admin and DENIED not in errors else ())
    return Op(name, code, tuple(parsed), reply, errs, doc, admin, caps_in, caps_out)


class Reply(NamedTuple):
    """An implementation may return this to send capabilities along with its result.
    `proto` is for kernel-message handlers whose answer the kernel reads (an ALIEN verdict);
    op replies always carry the protocol's tag."""
    value: Any
    items: Sequence[Sequence[int]] = ()
    proto: int | None = None


class Call(NamedTuple):
    """What an implementation learns about a request besides its arguments."""
    label: int          # the gate's label (the kernel's word, not the client's)
    rights: int         # rights of the capability the client used
    items: list         # capabilities that arrived with the request
    one_way: bool       # sent, not called: no reply will go back
    msg: Message

    @property
    def admin(self) -> bool:
        """Whether the request came through the admin gate (label ADMIN_LABEL)."""
        return self.label == ADMIN_LABEL


def _call_of(msg: Message, items: list | None = None) -> Call:
    return Call(msg.label, msg.rights, msg.items if items is None else items, msg.reply == 0, msg)


class Protocol:
    """A server protocol: `Protocol("kv", [op("get", 1, ["key:str"], "value"), ...])`."""

    def __init__(self, name: str, ops: Iterable[Op], tag: int = 0) -> None:
        if tag < 0:
            raise ValueError(f"protocol {name}: negative proto tags are the kernel's, got {tag}")
        self.name = name
        self.tag = tag
        self.ops: dict[str, Op] = {}
        self.by_code: dict[int, Op] = {}
        for o in ops:
            if o.name in self.ops or o.code in self.by_code:
                raise ValueError(f"protocol {name}: op {o.name!r} (code {o.code}) declared twice")
            if o.name.startswith("_") or o.name in ("close", "last_items") or not o.name.isidentifier():
                raise ValueError(f"protocol {name}: op name {o.name!r} is reserved")
            self.ops[o.name] = o
            self.by_code[o.code] = o

    def __repr__(self) -> str:
        return f"Protocol({self.name!r}, ops={list(self.ops)}, tag={self.tag})"

    # -- encoding (shared by both sides) ---------------------------------------
    def encode_request(self, o: Op, args: Sequence[Any]) -> bytes:
        return pack([o.code, *args])

    def decode_request(self, data: bytes) -> tuple[Op, list[Any]]:
        """The op and checked arguments, or raise _Refusal with the status and reason."""
        try:
            req = unpack(data)
        except Exception as e:
            raise _Refusal(Status.BAD_REQUEST, f"request is not msgpack ({type(e).__name__})") from None
        if not isinstance(req, list) or not req or type(req[0]) is not int:
            raise _Refusal(Status.BAD_REQUEST, "request must be [opcode, args...]")
        o = self.by_code.get(req[0])
        if o is None:
            raise _Refusal(Status.UNKNOWN_OP, f"protocol {self.name} has no opcode {req[0]}")
        why = o.check_args(req[1:])
        if why is not None:
            raise _Refusal(Status.BAD_REQUEST, why)
        return o, req[1:]

    def encode_result(self, o: Op, value: Any) -> bytes:
        if isinstance(o.reply, tuple):
            if isinstance(value, dict):
                value = [value[n] for n in o.reply]
            value = list(value)
            if len(value) != len(o.reply):
                raise ValueError(f"{o.name} must return {len(o.reply)} values {o.reply}, "
                                 f"returned {len(value)}")
        elif o.reply is None and value is not None:
            raise ValueError(f"{o.name} declares no reply but returned {type(value).__name__}")
        return pack([int(Status.OK), value])

    def decode_reply(self, o: Op, data: bytes) -> Any:
        """The result, or a RemoteError (returned, not raised) for an error answer."""
        try:
            rep = unpack(data)
        except Exception:
            raise ServerFault(o.name, Status.INTERNAL, "PROTOCOL", "reply is not msgpack") from None
        if not isinstance(rep, list) or not rep or type(rep[0]) is not int:
            raise ServerFault(o.name, Status.INTERNAL, "PROTOCOL", "reply must be [status, ...]")
        if rep[0] == Status.OK and len(rep) == 2:
            value = rep[1]
            if isinstance(o.reply, tuple):
                if not isinstance(value, list) or len(value) != len(o.reply):
                    raise ServerFault(o.name, Status.INTERNAL, "PROTOCOL",
                                      f"reply must be {len(o.reply)} values {o.reply}")
                return _reply_type(self.name, o)(*value)
            return value
        try:
            status = Status(rep[0])
        except ValueError:
            status = Status.INTERNAL
        if status == Status.OK or len(rep) != 3:
            raise ServerFault(o.name, Status.INTERNAL, "PROTOCOL", f"malformed reply {rep!r:.80}")
        return _BY_STATUS[status](o.name, status, str(rep[1]), str(rep[2]))

    # -- the two sides -----------------------------------------------------------
    def client(self, l4: Any, cap: int, *, timeout: float | None = None) -> "Stub":
        """A stub calling the server through `cap`. With an `AsyncL4`, methods are coroutines."""
        return Stub(self, l4, cap, timeout, _is_async(l4))

    def dispatch(self, impl: Any, msg: Message, l4: Any = None) -> tuple[bytes, list[list[int]]]:
        """Run one request against `impl`; answers (reply data, reply items). Never raises
        for anything the request contains. Checks first (tag, decoding, arguments, admin,
        items), then calls the implementation on checked input only. Capabilities that came
        with a refused request are the framework's: deleted (with `l4`), so they do not
        stay in the receive window and block the next request's. Counted in `HANDLED`
        once the implementation is called."""
        try:
            o, args = self._check(impl, msg)
        except _Refusal as r:
            if l4 is not None:
                _drop_caps(l4, msg.items)
            return error_answer(r.status, r.error or r.status.name, r.reason), []
        call = _call_of(msg, self._taken(o, msg, l4))
        key = f"{self.name}.{o.name}"
        HANDLED[key] = HANDLED.get(key, 0) + 1
        try:
            value = getattr(impl, o.name)(call, *args)
            items: list[list[int]] = []
            if isinstance(value, Reply):
                value, items = value.value, [list(i) for i in value.items]
            return self.encode_result(o, value), items
        except RpcError as e:
            if e.error not in o.errors:
                print(f"[{self.name}] {o.name} raised undeclared error {e.error}", file=sys.stderr)
                return error_answer(Status.INTERNAL, e.error, f"undeclared error: {e.reason}"), []
            return error_answer(Status.FAILED, e.error, e.reason), []
        except Exception as e:
            traceback.print_exc()
            return error_answer(Status.INTERNAL, type(e).__name__, str(e)), []

    @staticmethod
    def _taken(o: Op, msg: Message, l4: Any) -> list:
        """The items the implementation gets: memory items and the first `caps_in`
        capabilities; capabilities beyond what the op declares are deleted (with `l4`)."""
        caps = [it for it in msg.items if it and it[0] in CAP_ITEMS]
        if len(caps) <= o.caps_in:
            return msg.items
        if l4 is not None:
            _drop_caps(l4, caps[o.caps_in:])
        keep = caps[:o.caps_in]
        return [it for it in msg.items if it[0] not in CAP_ITEMS or it in keep]

    def _check(self, impl: Any, msg: Message) -> tuple[Op, list[Any]]:
        if msg.proto != self.tag:          # a claim in another protocol is not even read
            raise _Refusal(Status.UNKNOWN_OP, f"message proto {msg.proto} is not protocol "
                                              f"{self.name} (tag {self.tag})")
        o, args = self.decode_request(msg.data)
        if getattr(impl, o.name, None) is None:
            raise _Refusal(Status.UNKNOWN_OP, f"this {self.name} server does not implement {o.name}")
        if o.admin and msg.label != ADMIN_LABEL:
            raise _Refusal(Status.FAILED, f"{o.name} is for the launcher's admin gate only",
                           DENIED)
        if len(msg.items) < o.caps_in:
            raise _Refusal(Status.BAD_REQUEST, f"{o.name} needs {o.caps_in} capability "
                                               f"item(s) with the request, got {len(msg.items)}")
        return o, args

    def serve(self, l4: Any, impl: Any, *, kernel: Any = None,
              window: tuple[int, ...] | None = None, until: Callable[[], bool] = lambda: False,
              timeout: float | None = None) -> int:
        """The server loop for this one protocol: see `serve`. Kernel messages go to
        `kernel` (default: `impl`) by `KERNEL_HANDLERS`."""
        route: Route = (self, impl)
        return serve(l4, lambda msg: route, kernel=impl if kernel is None else kernel,
                     name=self.name, window=window, until=until, timeout=timeout)


# ---------------------------------------------------------------------------
# The server loop

Route = tuple[Protocol, Any]                       # (protocol, its implementation)
Router = Callable[[Message], "Route | None"]       # by the message (its gate's label)


def serve(l4: Any, route: Router, *, kernel: Any = None, name: str = "server",
          window: tuple[int, ...] | None = None, until: Callable[[], bool] = lambda: False,
          timeout: float | None = None) -> int:
    """Serve requests: `route(msg)` picks the protocol and implementation of each one (None:
    no protocol behind that gate, answered UNKNOWN_OP); kernel messages go to `kernel`'s
    handlers (`KERNEL_HANDLERS`). `window` is the receive window of every wait (where
    capabilities and memory sent with requests land).

    Returns the number of requests handled once `until()` is true (checked after each
    message) or when a wait times out (`timeout` ms). Nothing a message contains ends the
    loop; an error of the wait itself (`KernelGone`: the kernel is lost) is raised."""
    handled = 0
    msg = _next(l4, window, timeout)
    while msg is not None:
        if msg.proto < 0:
            data, items, tag = kernel_answer(kernel, msg)
        elif msg.label == ADMIN_LABEL and msg.data == STATS_REQUEST:
            data, items, tag = pack([int(Status.OK), dict(HANDLED)]), [], msg.proto
        else:
            data, items, tag = _request_answer(l4, route, msg)
            handled += 1
        if until():
            if msg.reply:
                _reply(l4, name, msg.reply, data, tag, items)
            return handled
        msg = _reply_and_wait(l4, name, msg.reply, data, tag, items, window, timeout)
    return handled


def _request_answer(l4: Any, route: Router, msg: Message) -> tuple[bytes, list[list[int]], int]:
    try:
        found = route(msg)
    except Exception as e:          # a router's bug must not end the loop either
        traceback.print_exc()
        found = None
        why = error_answer(Status.INTERNAL, type(e).__name__, str(e))
    else:
        why = error_answer(Status.UNKNOWN_OP, "UNKNOWN_OP",
                           f"no protocol behind gate label {msg.label}")
    if found is None:
        _drop_caps(l4, msg.items)
        return why, [], msg.proto
    proto, impl = found
    data, items = proto.dispatch(impl, msg, l4)
    return data, items, proto.tag


def kernel_answer(handler: Any, msg: Message) -> tuple[bytes, list[list[int]], int]:
    """Run the handler of a kernel message: (reply data, items, proto). An error answer
    carries proto AlienVerdict.DENY, so it never reads as "allow" to the kernel."""
    method = KERNEL_HANDLERS.get(msg.proto)
    fn = getattr(handler, method, None) if method and handler is not None else None
    deny = int(AlienVerdict.DENY)
    if fn is None:
        return error_answer(Status.UNKNOWN_OP, "UNKNOWN_OP", f"kernel message "
                            f"{_proto_name(msg.proto)} is not handled here"), [], deny
    try:
        body = unpack(msg.data) if msg.data else {}
        out = fn(_call_of(msg), body if isinstance(body, dict) else {})
    except RpcError as e:
        return error_answer(Status.FAILED, e.error, e.reason), [], deny
    except Exception as e:
        traceback.print_exc()
        return error_answer(Status.INTERNAL, type(e).__name__, str(e)), [], deny
    if out is None:
        return pack([int(Status.OK), None]), [], 0
    return pack([int(Status.OK), out.value]), [list(i) for i in out.items], out.proto or 0


def error_answer(status: Status, error: str, reason: str) -> bytes:
    """The one error shape: [status, error, reason], reason bounded by MAX_REASON."""
    if len(reason) > MAX_REASON:
        reason = reason[:MAX_REASON - 1] + "…"
    return pack([int(status), str(error)[:MAX_REASON], reason])


def _drop_caps(l4: Any, items: list) -> None:
    """Delete the capabilities that arrived with a message nobody will handle."""
    for it in items:
        if it and it[0] in CAP_ITEMS:
            try:
                l4.cap_delete(it[1])
            except L4Error:
                pass            # gone already


def _next(l4: Any, window: tuple[int, ...] | None, timeout: float | None) -> Message | None:
    try:
        return l4.wait(window=window, timeout=timeout)
    except Timeout:
        return None


def _reply_and_wait(l4: Any, name: str, reply: int, data: bytes, tag: int, items: list,
                    window: tuple[int, ...] | None, timeout: float | None) -> Message | None:
    if not reply:
        return _next(l4, window, timeout)
    try:
        return l4.reply_and_wait(reply, data, proto=tag, items=items, window=window,
                                 timeout=timeout)
    except Timeout:
        return None
    except KernelGone:
        raise
    except L4Error as e:
        # The kernel refused the reply before it waited (ABI.md, REPLY_WAIT): the caller
        # still waits, unless the reply capability itself is gone.
        _refused(l4, name, reply, tag, items, e)
        return _next(l4, window, timeout)


def _reply(l4: Any, name: str, reply: int, data: bytes, tag: int, items: list) -> None:
    try:
        l4.reply(reply, data, proto=tag, items=items)
    except KernelGone:
        raise
    except L4Error as e:
        _refused(l4, name, reply, tag, items, e)


def _refused(l4: Any, name: str, reply: int, tag: int, items: list, e: L4Error) -> None:
    """Say on stderr why our answer could not go, and answer the error instead."""
    print(f"[{name}] reply refused: {e}", file=sys.stderr, flush=True)
    try:
        l4.reply(reply, error_answer(Status.INTERNAL, "REPLY_ITEMS" if items else "REPLY_REFUSED",
                                     str(e)), proto=tag)
    except KernelGone:
        raise
    except L4Error:
        pass        # the caller gave up or died: nothing to answer


class Stub:
    """Client side of a protocol: one method per op. Built by `Protocol.client`.

    Besides an op's arguments a method takes `_items` (capabilities to send), `_window`
    (where capabilities or memory of the reply land) and `_timeout` (ms)."""

    def __init__(self, proto: Protocol, l4: Any, cap: int, timeout: float | None,
                 is_async: bool) -> None:
        self._proto = proto
        self._l4 = l4
        self._cap = cap
        self._timeout = timeout
        self.last_items: list = []   # capabilities that came with the last reply
        for o in proto.ops.values():
            setattr(self, o.name, self._method(o, is_async))

    def _request(self, o: Op, args: tuple, kwargs: dict) -> tuple[bytes, dict]:
        extra = {k: kwargs.pop(k) for k in ("_items", "_window", "_timeout") if k in kwargs}
        values = list(args)
        for a in o.args[len(args):]:
            if a.name not in kwargs:
                raise TypeError(f"{self._proto.name}.{o.name}() missing argument '{a.name}'")
            values.append(kwargs.pop(a.name))
        if kwargs:
            raise TypeError(f"{self._proto.name}.{o.name}() got unexpected arguments {sorted(kwargs)}")
        why = o.check_args(values)
        if why is not None:
            raise TypeError(f"{self._proto.name}.{why}")
        items = list(extra.get("_items", ()))
        if len(items) < o.caps_in:
            raise TypeError(f"{self._proto.name}.{o.name}() sends {o.caps_in} capability "
                            f"item(s): pass _items=[...]")
        if o.caps_out and extra.get("_window") is None:
            raise TypeError(f"{self._proto.name}.{o.name}() answers {o.caps_out} capability "
                            f"item(s): pass _window=(slot, count)")
        call_kw = {"proto": self._proto.tag, "items": items,
                   "window": extra.get("_window"),
                   "rcv_timeout": extra.get("_timeout", self._timeout),
                   "snd_timeout": extra.get("_timeout", self._timeout)}
        return self._proto.encode_request(o, values), call_kw

    def _result(self, o: Op, msg: Message) -> Any:
        self.last_items = msg.items
        out = self._proto.decode_reply(o, msg.data)
        if isinstance(out, RemoteError):
            raise out
        return out

    def _method(self, o: Op, is_async: bool) -> Callable[..., Any]:
        l4, cap = self._l4, self._cap
        if is_async:
            async def amethod(*args: Any, **kwargs: Any) -> Any:
                data, kw = self._request(o, args, kwargs)
                return self._result(o, await l4.call(cap, data, **kw))
            method: Callable[..., Any] = amethod
        else:
            def method(*args: Any, **kwargs: Any) -> Any:
                data, kw = self._request(o, args, kwargs)
                return self._result(o, l4.call(cap, data, **kw))
        method.__name__ = o.name
        sig = ", ".join(f"{a.name}: {a.kind}" for a in o.args)
        method.__doc__ = f"{self._proto.name}.{o.name}({sig}) -> {o.reply}. {o.doc}".strip()
        return method

    def __repr__(self) -> str:
        return f"<{self._proto.name} client via slot {self._cap}>"


# ---------------------------------------------------------------------------
# Helpers

class _Refusal(Exception):
    def __init__(self, status: Status, reason: str, error: str = "") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.error = error


_reply_types: dict[tuple[str, str], type] = {}


def _reply_type(proto_name: str, o: Op) -> type:
    """A NamedTuple class for an op whose reply has several named fields."""
    key = (proto_name, o.name)
    found = _reply_types.get(key)
    if found is None:
        import collections
        make: Any = collections.namedtuple    # field names are only known at run time
        found = _reply_types[key] = make(f"{o.name}_reply", o.reply)
    return found


def _proto_name(tag: int) -> str:
    try:
        return Proto(tag).name
    except ValueError:
        return str(tag)


def _is_async(l4: Any) -> bool:
    from .aio import AsyncL4
    return isinstance(l4, AsyncL4)


__all__ = ["Protocol", "Op", "op", "Status", "Call", "Reply", "Stub", "RpcError", "RemoteError",
           "BadRequest", "RemoteFailure", "ServerFault", "ADMIN_LABEL", "MAX_REASON", "STATS_OP",
           "STATS_REQUEST", "HANDLED",
           "KERNEL_HANDLERS", "Route", "Router", "serve", "error_answer"]
