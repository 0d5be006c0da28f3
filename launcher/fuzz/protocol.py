"""Protocol fuzzing: requests generated from a server's declaration, sent through the kernel.

Mechanism: a `ProtocolFuzzer` drives one live server process through the real kernel, as a
client holding a capability to one of its gates (`Target.gate`) and a gate of label
ADMIN_LABEL to the server's thread (`Target.admin`: admin ops, and the serve loop's
`STATS_OP` counters, kernel/user/rpc.py). Every request is built from the server's
`kernel.user.rpc.Protocol`: an op, arguments of the declared types (a value hinted by the
argument's name when it fits, e.g. "timer0" for `name`), the capability items it declares
(`caps_in`: capabilities the server handed out earlier when there are some) and a receive
window for those it answers (`caps_out`). Then, by `CASES`, a share of the requests is
turned into what a buggy or hostile client sends: a near-miss value (off by one, 0, -1,
huge ints, empty or huge strings), a wrong type, an argument missing or extra, an unknown
opcode, a foreign proto tag, data that is not a request, a payload at and past
MAX_PAYLOAD, bogus capability items (an empty slot, no rights, too many, none where the op
needs some), an admin op through the client gate, or any of these sent one-way.

Contract: `run(n)` first sends every declared op once, well-formed (`valid_round`: fails
naming the ops whose handler the loop's counters did not see run), then every argument of
every op at the edges of its type (`boundary_round`: 0, -1, 2**63-1, 2**64-1, "", 5,000
characters, ...), then `n` generated requests; it fails (`FuzzError`) if the server does
not answer a call within `CALL_MS` or its process dies, if an answer is not one of the two shapes of
kernel/user/rpc.py ([OK, value] or [status > 0, error, reason]), or if a well-formed request
(`Target.check`) stops working (tried every `CHECK_EVERY` requests and at the end). An
error answer is fine; so is the kernel refusing a request before it reaches the server
(an empty slot as item, a payload too big). The report counts, per op, the requests whose
implementation ran (the server's own counter), and the answers by status.

Ownership: one ProtocolFuzzer per calling thread; the capabilities it receives land in
root slots WINDOW_BASE.. and are deleted by `close()`.
"""
from __future__ import annotations

import random
import time
from typing import Any, Callable, NamedTuple

from kernel.abi import MAX_ITEMS, MAX_PAYLOAD, Item, Rights, pack, unpack
from kernel.user.errors import KernelGone, L4Error, NoCapability, PeerDied, Timeout
from kernel.user.rpc import ADMIN_LABEL, STATS_REQUEST, Op, Protocol, Status

from .model import FuzzError

CALL_MS = 10_000         # a server that does not answer within this has hung
CHECK_EVERY = 50         # requests between checks that a well-formed request still works
WINDOW_BASE = 3500       # root slots where capabilities the server answers land
WINDOW_SLOTS = 300
POOL = 12                # received capabilities kept to send back (caps_in)
EMPTY_SLOT = 4000        # a root slot that holds nothing
FUZZ_LABEL = 4242        # the label of the fuzz's own client gate (fuzz_adapter)

# Case -> weight: what one generated request is.
CASES: dict[str, int] = {
    "valid": 34, "near_miss": 18, "wrong_type": 8, "missing_arg": 4, "extra_arg": 4,
    "unknown_op": 5, "bad_tag": 5, "not_a_request": 5, "oversize": 3, "bogus_items": 6,
    "no_items": 2, "admin_via_client": 2, "one_way": 4,
}
_CASE_LIST = [c for c, w in CASES.items() for _ in range(w)]

# Values by argument name, used when they fit the declared type (else one by type).
HINTS: dict[str, list[Any]] = {
    "name": ["timer0", "svc", "world", "conformance", "k"], "key": ["k", "a", ""],
    "value": [0, 1, 100, b"v", b""], "order": [12, 13, 16], "size": [4096, 8192, 1 << 16],
    "quota": [1 << 16, 1 << 20], "reg": [0, 1, 2, 4], "regs": [[0, 1], []],
    "pairs": [[[0, 1]], []], "label": [FUZZ_LABEL, FUZZ_LABEL + 1, 1], "phys": [0, 4096, 1 << 20],
    "addr": [None, 0x1000_0000, 0x2000_0000], "rights": [1, 3, 7], "session": [1, 2],
    "names": [["timer0"], []], "pattern": ["ab", "x"], "n": [1, 2, -1],
}
BY_TYPE: dict[str, list[Any]] = {
    "int": [0, 1, 7, 4096], "float": [0.5, 2], "bool": [True, False], "str": ["x", "timer0"],
    "bytes": [b"", b"abc"], "list": [[], [0]], "dict": [{}, {"a": 1}], "any": [0, "x", None],
    "int?": [None, 1], "str?": [None, "x"], "bytes?": [None, b"x"],
}
WRONG: list[Any] = [1, -1, 1.5, "1", b"1", [1], {"a": 1}, True, None]
HUGE_INTS = [2 ** 31, 2 ** 31 - 1, 2 ** 63 - 1, -(2 ** 63), 2 ** 64 - 1]
# The edge values of each type, tried once per argument (`boundary_round`).
EDGES: dict[str, list[Any]] = {
    "int": [0, -1, 1, *HUGE_INTS], "str": ["", "x" * 5000, "\x00"], "bytes": [b"", b"\xff" * 5000],
    "list": [[], list(range(200)), [None], [[]]], "dict": [{}, {"": None}],
}


class Target(NamedTuple):
    """One live server, as a client sees it."""
    name: str
    protocol: Protocol
    l4: Any                         # the client's connection (root's)
    gate: int                       # a client gate of the server (the protocol's)
    admin: int                      # a gate of label ADMIN_LABEL to the server's thread
    check: Callable[[], None]       # a well-formed request that must work (raises if not)
    alive: Callable[[], bool]       # the server's process is alive
    caps: tuple[int, ...] = ()      # client slots that may be sent as capability items


class ProtocolReport(NamedTuple):
    server: str
    requests: int
    cases: dict[str, int]           # requests generated per case
    handled: dict[str, int]         # per op: requests whose implementation ran
    answers: dict[str, int]         # answers by status (KERNEL: refused before the server)
    seconds: float

    def as_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "ops": len(self.handled),
                "ops_reached": sum(1 for n in self.handled.values() if n > 0),
                "handled": self.handled, "cases": self.cases, "answers": self.answers,
                "seconds": round(self.seconds, 2)}


class ProtocolFuzzer:
    def __init__(self, target: Target, seed: int = 1) -> None:
        self.t = target
        self.p = target.protocol
        self.rng = random.Random(seed)
        self.cases: dict[str, int] = {}
        self.answers: dict[str, int] = {}
        self.requests = 0
        self.pool: list[int] = []            # capabilities the server gave us (slots)
        self.next_window = 0
        self.windows_used: set[int] = set()
        self.base = self.stats()

    # -- the server's own counters -------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Per op of our protocol, the requests whose implementation the server ran."""
        m = self.t.l4.call(self.t.admin, STATS_REQUEST, proto=self.p.tag, rcv_timeout=CALL_MS)
        rep = unpack(m.data)
        if not (isinstance(rep, list) and len(rep) == 2 and rep[0] == Status.OK
                and isinstance(rep[1], dict)):
            raise FuzzError(f"{self.t.name}: the stats request answered {rep!r:.120}")
        return {name: int(rep[1].get(f"{self.p.name}.{name}", 0)) for name in self.p.ops}

    def handled(self) -> dict[str, int]:
        now = self.stats()
        return {name: now[name] - self.base.get(name, 0) for name in self.p.ops}

    # -- well-formed requests --------------------------------------------------------------
    def args(self, o: Op) -> list[Any]:
        """Arguments of the declared types, hinted by name where a hint fits."""
        r = self.rng
        out = []
        for a in o.args:
            fits = [v for v in HINTS.get(a.name, []) if _fits(o, a.name, v)]
            out.append(r.choice(fits or BY_TYPE[a.kind]))
        return out

    def window(self, count: int) -> tuple[int, int]:
        """`count` free root slots for the capabilities of an answer."""
        if self.next_window + count > WINDOW_SLOTS:
            self.next_window = 0
        base = WINDOW_BASE + self.next_window
        self.next_window += count
        for s in range(base, base + count):
            if s in self.windows_used:
                self._delete(s)
        return base, count

    def items(self, o: Op) -> list[list[int]]:
        caps = self.pool or list(self.t.caps) or [self.t.gate]
        return [[int(Item.MAP_CAP), self.rng.choice(caps), int(Rights.ALL)]
                for _ in range(o.caps_in)]

    def well_formed(self, o: Op) -> dict[str, Any]:
        """One request of op `o` as its declaration says: data, items, window, gate."""
        return {"data": pack([o.code, *self.args(o)]), "items": self.items(o),
                "window": self.window(o.caps_out) if o.caps_out else None,
                "gate": self.t.admin if o.admin else self.t.gate, "proto": self.p.tag}

    # -- the cases -------------------------------------------------------------------------
    def generate(self, case: str) -> dict[str, Any]:
        r = self.rng
        o = r.choice(list(self.p.ops.values()))
        req = self.well_formed(o)
        args = unpack(req["data"])[1:]
        if case == "near_miss" and args:
            i = r.randrange(len(args))
            args[i] = self.near_miss(args[i])
        elif case == "wrong_type" and args:
            i = r.randrange(len(args))
            args[i] = r.choice([w for w in WRONG if type(w) is not type(args[i])])
        elif case == "missing_arg" and args:
            args.pop(r.randrange(len(args)))
        elif case == "extra_arg":
            args.append(r.choice(WRONG))
        elif case == "unknown_op":
            codes = set(self.p.by_code)
            return {**req, "data": pack([r.choice([c for c in (max(codes) + 1, 0, 2 ** 31 - 1,
                                                               -2, 2 ** 63 - 1) if c not in codes]),
                                         *args])}
        elif case == "bad_tag":
            return {**req, "proto": r.choice([self.p.tag + 1, 0, 0x7FFF, 0x4B56, 0x5330])}
        elif case == "not_a_request":
            return {**req, "data": r.choice([b"", b"\xc1\x00", pack({}), pack("x"), pack([]),
                                             pack([str(o.code)]), pack([1.5]), b"\x92\x01"])}
        elif case == "oversize":
            return {**req, "data": _padded(o.code, r.choice([MAX_PAYLOAD - 64, MAX_PAYLOAD,
                                                             MAX_PAYLOAD + 1]))}
        elif case == "bogus_items":
            return {**req, "items": self.bogus_items(o)}
        elif case == "no_items":
            return {**req, "items": []}
        elif case == "admin_via_client":
            return {**req, "gate": self.t.gate}
        return {**req, "data": pack([o.code, *args])}

    def near_miss(self, value: Any) -> Any:
        r = self.rng
        if type(value) is int:
            return r.choice([value + 1, value - 1, 0, -1, -value, *HUGE_INTS])
        if isinstance(value, str):
            return r.choice(["", value + "x", value[:-1], "\x00", "x" * 5000, "ü" * 100])
        if isinstance(value, bytes):
            return r.choice([b"", value + b"\x00", b"\xff" * 5000])
        if isinstance(value, list):
            return r.choice([[], [value], [-1] * 3, list(range(200)), [None], [[1, 2, 3]]])
        if isinstance(value, dict):
            return r.choice([{}, {"x": None}, {1: 2}])
        return r.choice([0, -1, "", None])

    def bogus_items(self, o: Op) -> list[list[int]]:
        r = self.rng
        good = self.items(o) or [[int(Item.MAP_CAP), self.t.gate, int(Rights.ALL)]]
        return r.choice([
            [[int(Item.MAP_CAP), EMPTY_SLOT, int(Rights.ALL)]],          # nothing there
            [[int(Item.MAP_CAP), good[0][1], 0]],                        # no rights
            [[int(Item.MAP_CAP), self.t.gate, int(Rights.ALL)]] * 3,     # more than declared
            [[int(Item.MAP_CAP), self.t.gate, int(Rights.ALL)]] * (MAX_ITEMS + 1),
            [[int(Item.MAP_MEM), 0, 12, 1]],                             # memory we don't have
            [[9, 1, 1]],                                                 # no such item kind
        ])

    # -- sending -----------------------------------------------------------------------------
    def send(self, req: dict[str, Any], one_way: bool = False) -> None:
        l4 = self.t.l4
        try:
            if one_way:
                l4.send(req["gate"], req["data"], proto=req["proto"], items=req["items"],
                        timeout=CALL_MS)
                self._count("ONE_WAY")
                return
            m = l4.call(req["gate"], req["data"], proto=req["proto"], items=req["items"],
                        window=req["window"], snd_timeout=CALL_MS, rcv_timeout=CALL_MS)
        except (Timeout, PeerDied, KernelGone) as e:
            raise FuzzError(f"{self.t.name}: no answer ({type(e).__name__}: {e}) to "
                            f"{req['data'][:60]!r} proto {req['proto']}") from None
        except L4Error as e:
            self._count("KERNEL:" + type(e).__name__)     # refused before the server
            if isinstance(e, NoCapability):                # a capability of ours is gone
                self.pool = [s for s in self.pool if all(it[1] != s for it in req["items"])]
            return
        self._received(m.items)
        self._count(_status(self.t.name, m.data))

    def _count(self, what: str) -> None:
        self.answers[what] = self.answers.get(what, 0) + 1

    def _received(self, items: list) -> None:
        for it in items:
            if it and it[0] in (Item.MAP_CAP, Item.GRANT_CAP):
                self.windows_used.add(it[1])
                self.pool.append(it[1])
        while len(self.pool) > POOL:
            self._delete(self.pool[0])

    def _delete(self, slot: int) -> None:
        try:
            self.t.l4.cap_delete(slot)
        except L4Error:
            pass
        self.windows_used.discard(slot)
        if slot in self.pool:
            self.pool.remove(slot)

    def still_works(self) -> None:
        if not self.t.alive():
            raise FuzzError(f"{self.t.name} died")
        try:
            self.t.check()
        except Exception as e:
            raise FuzzError(f"{self.t.name}: a well-formed request failed after "
                            f"{self.requests} fuzz requests: {e!r}") from None

    # -- the run ----------------------------------------------------------------------------
    def valid_round(self) -> list[str]:
        """Every op once, well-formed; answers the ops whose handler did not run."""
        before = self.stats()
        for o in self.p.ops.values():
            self.send(self.well_formed(o))
            self.requests += 1
        after = self.stats()
        return [name for name in self.p.ops if after[name] <= before[name]]

    def boundary_round(self) -> None:
        """Every argument of every op at its edges (`EDGES` by type), the others valid."""
        for o in self.p.ops.values():
            for i, a in enumerate(o.args):
                for v in EDGES.get(a.kind.rstrip("?"), []):
                    req = self.well_formed(o)
                    args = unpack(req["data"])[1:]
                    args[i] = v
                    self.send({**req, "data": pack([o.code, *args])})
                    self.requests += 1
        self.still_works()

    def run(self, n: int) -> ProtocolReport:
        start = time.monotonic()
        missed = self.valid_round()
        if missed:
            raise FuzzError(f"{self.t.name}: well-formed requests never reached the handler "
                            f"of {missed}")
        self.still_works()
        self.boundary_round()
        for i in range(n):
            case = self.rng.choice(_CASE_LIST)
            self.cases[case] = self.cases.get(case, 0) + 1
            if case == "one_way":
                self.send(self.generate(self.rng.choice(_CASE_LIST[:-CASES["one_way"]])), True)
            else:
                self.send(self.generate(case))
            self.requests += 1
            if (i + 1) % CHECK_EVERY == 0:
                self.still_works()
        self.still_works()
        return ProtocolReport(self.t.name, self.requests, dict(self.cases), self.handled(),
                              dict(self.answers), time.monotonic() - start)

    def close(self) -> None:
        for s in list(self.windows_used):
            self._delete(s)


def _fits(o: Op, name: str, value: Any) -> bool:
    """Whether `value` has the declared type of `o`'s argument `name`."""
    args = [BY_TYPE[a.kind][0] if a.name != name else value for a in o.args]
    return o.check_args(args) is None


def _padded(code: int, size: int) -> bytes:
    """A request [code, "xxx..."] of `size` bytes (or the largest below it)."""
    n = size - len(pack([code, ""]))
    while n > 0 and len(pack([code, "x" * n])) > size:
        n -= 1
    return pack([code, "x" * max(n, 0)])


def _status(server: str, data: bytes) -> str:
    """The status name of an answer, or FuzzError if it is neither shape of the protocol."""
    try:
        rep = unpack(data)
    except Exception:
        raise FuzzError(f"{server}: an answer that is not msgpack: {data[:80]!r}") from None
    if isinstance(rep, list) and len(rep) == 2 and rep[0] == Status.OK:
        return "OK"
    if (isinstance(rep, list) and len(rep) == 3 and type(rep[0]) is int and rep[0] > 0
            and rep[0] in set(Status) and isinstance(rep[1], str) and isinstance(rep[2], str)):
        status = Status(rep[0])
        return f"INTERNAL:{rep[1]}" if status == Status.INTERNAL else status.name
    raise FuzzError(f"{server}: an answer outside the protocol: {rep!r:.120}")


def fuzz_server(name: str, protocol: Protocol, l4: Any, gate: int, thread: int,
                check: Callable[[], None], alive: Callable[[], bool], n: int,
                seed: int = 1) -> ProtocolReport:
    """Fuzz one live server with `n` generated requests (after the valid round): `gate` is
    a client gate of `protocol`, `thread` the client's capability to the server's thread
    (for the admin gate this makes, deleted at the end)."""
    admin = l4.create_gate(ADMIN_LABEL, thread=thread)
    fz = ProtocolFuzzer(Target(name, protocol, l4, gate, admin, check, alive), seed)
    try:
        return fz.run(n)
    finally:
        fz.close()
        l4.cap_delete(admin)


def fuzz_adapter(a: Any, n: int, seed: int = 1) -> ProtocolReport:
    """Fuzz the server of a booted conformance adapter (tests/conformance/servers.py: its
    `protocol`, `root`, `gate`, `label`, `proc`, `valid`). The fuzz goes through a gate of
    its own label (FUZZ_LABEL) where root can make one, so the state it leaves (keys,
    totals, policies) is not the state `valid` checks through the adapter's gate; through
    the adapter's gate itself where the gate is the server's own or routes by the admin
    label."""
    proc = a.proc
    own = a.not_restartable is None and a.label != ADMIN_LABEL
    gate = a.root.create_gate(FUZZ_LABEL, thread=proc.thread) if own else a.gate
    try:
        return fuzz_server(a.name, a.protocol, a.root, gate, proc.thread,
                           check=lambda: a.valid(a.root, a.gate),
                           alive=lambda: proc.proc.poll() is None, n=n, seed=seed)
    finally:
        if own:
            a.root.cap_delete(gate)
