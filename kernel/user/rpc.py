"""Server protocols declared once: the client stub and the server dispatch both follow it.

A `Protocol` lists a server's operations: name, opcode, argument names (optionally typed,
`"key:str"`), the reply (None, one name, or a tuple of names) and the errors the operation
may answer. From that one declaration:

- `proto.client(l4, cap)` makes a stub whose methods (one per op, named after it) pack the
  request, `call` the server through capability `cap`, and unpack the reply or raise;
- `proto.serve(l4, impl)` runs the server loop (`wait`, then `reply_and_wait`), calling
  `impl.<op>(call, *args)` for each request.

Wire format (message data, msgpack; the message's `proto` tag is the protocol's `tag`):

    request  = [opcode, arg1, arg2, ...]
    reply    = [Status.OK, result]             result: None, a value, or a list per `reply`
             | [status, error_name, reason]    status > 0 (never negative: negative proto
                                               tags and codes belong to the kernel)

Contracts:
- The server never crashes on a request: bad msgpack, an unknown opcode, a wrong argument
  count or type is answered with `Status.BAD_REQUEST` / `Status.UNKNOWN_OP`; an exception in
  the implementation with `Status.INTERNAL` (and a traceback on the server's stderr); an
  error the op declared (`raise RpcError("NOT_FOUND", "...")`) with `Status.FAILED`.
- Arguments are checked (count and declared types) on both sides: the stub refuses a bad
  call before sending it (`TypeError`), the server refuses one that slipped through.
- One-way messages (`send`, reply capability 0) are dispatched but not answered.
- Client-side errors say whose fault it was: `BadRequest` (the caller's), `RemoteFailure`
  (a declared error of the op: `.error` names it), `ServerFault` (the server's bug or a
  reply that breaks the protocol).
"""
from __future__ import annotations

import sys
import traceback
from enum import IntEnum
from typing import Any, Callable, Iterable, NamedTuple, Sequence

from ..abi import Proto, pack, unpack
from .client import Message
from .errors import CallerError, L4Error


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

    def check_args(self, values: Sequence[Any]) -> str | None:
        """None if `values` fit the declaration, else the reason they don't."""
        if len(values) != len(self.args):
            return f"{self.name} takes {len(self.args)} arguments, got {len(values)}"
        for arg, v in zip(self.args, values):
            if not _TYPES[arg.kind](v):
                return f"{self.name} argument '{arg.name}' must be {arg.kind}, got {type(v).__name__}"
        return None


def op(name: str, code: int, args: Iterable[str] = (), reply: tuple[str, ...] | str | None = None,
       errors: Iterable[str] = (), doc: str = "") -> Op:
    """Declare an operation. `args` are names, optionally typed: "key:str", "n:int"."""
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
    return Op(name, code, tuple(parsed), reply, tuple(errors), doc)


class Reply(NamedTuple):
    """An implementation may return this to send capabilities along with its result."""
    value: Any
    items: list[list[int]]


class Call(NamedTuple):
    """What an implementation learns about a request besides its arguments."""
    label: int          # the gate's label (the kernel's word, not the client's)
    rights: int         # rights of the capability the client used
    items: list         # capabilities that arrived with the request
    one_way: bool       # sent, not called: no reply will go back
    msg: Message


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

    def dispatch(self, impl: Any, msg: Message) -> tuple[bytes, list[list[int]]]:
        """Run one request against `impl`; answers (reply data, reply items). Never raises
        for anything the request contains."""
        try:
            o, args = self.decode_request(msg.data)
            if msg.proto != self.tag:
                raise _Refusal(Status.UNKNOWN_OP, f"message proto {msg.proto} is not protocol "
                                                  f"{self.name} (tag {self.tag})")
            fn = getattr(impl, o.name, None)
            if fn is None:
                raise _Refusal(Status.UNKNOWN_OP, f"this {self.name} server does not implement {o.name}")
        except _Refusal as r:
            return _error(r.status, r.status.name, r.reason), []
        call = Call(msg.label, msg.rights, msg.items, msg.reply == 0, msg)
        try:
            value = fn(call, *args)
            items: list[list[int]] = []
            if isinstance(value, Reply):
                value, items = value.value, [list(i) for i in value.items]
            return self.encode_result(o, value), items
        except RpcError as e:
            if e.error not in o.errors:
                print(f"[{self.name}] {o.name} raised undeclared error {e.error}", file=sys.stderr)
                return _error(Status.INTERNAL, e.error, f"undeclared error: {e.reason}"), []
            return _error(Status.FAILED, e.error, e.reason), []
        except Exception as e:
            traceback.print_exc()
            return _error(Status.INTERNAL, type(e).__name__, str(e)), []

    def serve(self, l4: Any, impl: Any, *, window: tuple[int, int] | None = None,
              until: Callable[[], bool] = lambda: False,
              on_other: Callable[[Message], bytes | None] | None = None,
              timeout: float | None = None) -> int:
        """The server loop. Returns the number of requests handled once `until()` is true
        (checked after each request) or when a wait times out (`timeout` ms).

        Messages with a kernel proto tag (IRQ, EXCEPTION, ...) go to `on_other(msg)`; for a
        call, its return value (bytes) is the reply. Without `on_other` they are answered
        UNKNOWN_OP if they can be, and otherwise dropped."""
        from .errors import Timeout
        handled = 0
        try:
            msg = l4.wait(window=window, timeout=timeout)
        except Timeout:
            return handled
        while True:
            items: list[list[int]] = []
            if msg.proto < 0 and msg.proto != self.tag:
                data = on_other(msg) if on_other else None
                if data is None and msg.reply:
                    data = _error(Status.UNKNOWN_OP, "UNKNOWN_OP",
                                  f"kernel message proto {_proto_name(msg.proto)} not handled")
            else:
                data, items = self.dispatch(impl, msg)
                handled += 1
            stop = until()
            try:
                if not msg.reply:
                    if stop:
                        return handled
                    msg = l4.wait(window=window, timeout=timeout)
                elif stop:
                    _reply_checked(l4, msg.reply, data or b"", self.tag, items)
                    return handled
                else:
                    msg = _reply_wait_checked(l4, msg.reply, data or b"", self.tag, items,
                                              window, timeout)
            except Timeout:
                return handled


class Stub:
    """Client side of a protocol: one method per op. Built by `Protocol.client`."""

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
        call_kw = {"proto": self._proto.tag, "items": extra.get("_items", ()),
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
    def __init__(self, status: Status, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _error(status: Status, name: str, reason: str) -> bytes:
    return pack([int(status), name, reason])


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


def _reply_checked(l4: Any, reply: int, data: bytes, tag: int, items: list) -> None:
    """Reply; if the kernel refuses our items, reply the error instead (the caller still waits)."""
    try:
        l4.reply(reply, data, proto=tag, items=items)
    except CallerError as e:
        if not items:
            raise
        l4.reply(reply, _error(Status.INTERNAL, "REPLY_ITEMS", str(e)), proto=tag)
    except L4Error:
        pass      # the caller gave up or died: nothing to answer


def _reply_wait_checked(l4: Any, reply: int, data: bytes, tag: int, items: list,
                        window: tuple[int, int] | None, timeout: float | None) -> Message:
    try:
        return l4.reply_and_wait(reply, data, proto=tag, items=items, window=window,
                                 timeout=timeout)
    except CallerError as e:
        if not items:
            raise
        # The kernel refused the reply before it moved anything: the caller still waits.
        l4.reply(reply, _error(Status.INTERNAL, "REPLY_ITEMS", str(e)), proto=tag)
        return l4.wait(window=window, timeout=timeout)


__all__ = ["Protocol", "Op", "op", "Status", "Call", "Reply", "Stub", "RpcError", "RemoteError",
           "BadRequest", "RemoteFailure", "ServerFault"]
