"""One adapter per server under test: how to start it, reach it, and ask it something valid.

The conformance checks (test_conformance.py) are the same for every server; an adapter only
says, for its server:

- `up()` boots what the server needs (a `System`, sigma0 under moe, a HAL under io) and
  `start()` starts one incarnation of the server itself (a real task process);
- `gate`: root's capability to the server (a gate bound to its main thread, rebound to each
  new incarnation), `tag`: the proto tag its requests carry;
- `valid(l4, gate)`: a request that must work, asserting on the answer;
- `bad[case]`: the message data for each kind of bad input (None: the case does not apply,
  e.g. a server without opcodes has no "unknown opcode");
- `not_restartable`: set when `gate` is the server's own (a moe session, a HAL device):
  such a gate dies with its server, and the restart check is the one of the server's root gate;
- `is_error(data)`: whether a reply is an error answer. Every server speaks a
  `kernel.user.rpc` protocol now, so there is one error shape: [status > 0, error, reason].

Every adapter owns what it starts; `down()` tears it all down.
"""
from __future__ import annotations

import json
import os
from typing import Any

from kernel.abi import MAX_PAYLOAD, pack, unpack
from kernel.user.testing import System, TaskProc

CALL_MS = 20_000        # bound on one call: a hung server fails the test instead of hanging it

# A msgpack stream never starts with 0xc1 (the one unused type byte): not msgpack, whatever follows.
GARBAGE = b"\xc1" + bytes(range(256)) * 2


def _pad_to(make: Any, size: int = MAX_PAYLOAD) -> bytes:
    """`make(pad)` packed to the largest size <= `size` bytes (msgpack's string header grows
    by two bytes past 64 KiB, so exactly `size` may be out of reach by a byte or two)."""
    n = size - len(make(""))
    while len(make("x" * n)) > size:
        n -= 1
    return make("x" * n)


class Adapter:
    name = ""
    tag = 0
    label = 1
    # None: root can start a new incarnation and rebind `gate`; else why it can't (the gate
    # is one the server made itself, and it dies with the server).
    not_restartable: str | None = None

    def __init__(self) -> None:
        self.sys: System | None = None
        self.proc: TaskProc | None = None
        self.gate = 0
        self.bad: dict[str, bytes | None] = {}

    # -- life cycle ------------------------------------------------------------------
    def up(self) -> None:
        self.sys = System()
        self.proc = self.start()
        self.gate = self.sys.root.create_gate(self.label, thread=self.proc.thread)

    def start(self) -> TaskProc:
        raise NotImplementedError

    def down(self) -> None:
        if self.sys is not None:
            self.sys.close()

    @property
    def root(self) -> Any:
        assert self.sys is not None
        return self.sys.root

    # -- requests ----------------------------------------------------------------------
    def valid(self, l4: Any, gate: int) -> None:
        raise NotImplementedError

    def valid_data(self) -> bytes:
        """The data of a valid request (the dead-client test's clients send it)."""
        raise NotImplementedError

    def is_error(self, data: bytes) -> bool:
        """The one error shape of every server: [status > 0, error name, reason]."""
        rep = unpack(data)
        return (isinstance(rep, list) and len(rep) == 3 and type(rep[0]) is int and rep[0] > 0
                and isinstance(rep[1], str) and isinstance(rep[2], str))


# ---------------------------------------------------------------------------
# Every server is built on kernel.user.rpc: the bad inputs follow from its protocol.

class _RpcServer(Adapter):
    protocol: Any = None
    unknown_code = 0x7FFF_FFFF
    wrong_types: list[Any] = []
    request: list[Any] = [1]        # a valid request: [opcode, args...]

    def __init__(self) -> None:
        super().__init__()
        self.tag = self.protocol.tag
        self.bad = {"garbage": GARBAGE, "wrong_proto": pack(self.request), "empty": b"",
                    "oversized": _pad_to(lambda p: pack([self.unknown_code, p])),
                    "unknown_op": pack([self.unknown_code]),
                    "wrong_types": pack(self.wrong_types)}

    def valid_data(self) -> bytes:
        return pack(self.request)

    def valid(self, l4: Any, gate: int) -> None:
        self.check(self.protocol.client(l4, gate, timeout=CALL_MS))

    def check(self, stub: Any) -> None:
        raise NotImplementedError


class Hello(_RpcServer):
    name = "hello"
    request = [1, "world"]                  # hello("world")
    wrong_types = [1, 5]                    # hello(name:str) with an int

    def __init__(self) -> None:
        from servers.hello.protocol import HELLO
        self.protocol = HELLO
        super().__init__()

    def start(self) -> TaskProc:
        assert self.sys is not None
        return self.sys.spawn("servers.hello.server:serve", "hello")

    def check(self, stub: Any) -> None:
        answer = stub.hello("world")
        assert answer.startswith("hello, world (#") and answer.endswith(f", label {self.label})"), \
            answer


class Counter(_RpcServer):
    name = "counter"
    request = [1, 2]                        # add(2)
    wrong_types = [1, "two"]

    def __init__(self) -> None:
        from servers.hello.protocol import COUNTER
        self.protocol = COUNTER
        super().__init__()

    def start(self) -> TaskProc:
        assert self.sys is not None
        return self.sys.spawn("servers.hello.counter:serve", "counter")

    def check(self, stub: Any) -> None:
        answer = stub.add(2)
        assert answer.startswith(f"label {self.label}: total "), answer


class Sigma0(_RpcServer):
    name = "sigma0"
    label = 7                               # a client gate (the admin gate is label 0)
    request = [3]                           # info()
    wrong_types = [1, "twelve"]             # alloc(order:int) with a str

    def __init__(self) -> None:
        from servers.sigma0 import SIGMA0
        self.protocol = SIGMA0
        super().__init__()

    def start(self) -> TaskProc:
        from servers.sigma0 import boot
        assert self.sys is not None
        return boot(self.sys)

    def check(self, stub: Any) -> None:
        info = stub.info()
        assert info["frames"] > 0 and 0 <= info["free"] <= info["frames"], info


class Moe(_RpcServer):
    name = "moe"
    label = 0                               # the admin gate
    request = [3]                           # info()
    wrong_types = [1, "x", "lots"]          # session(name, quota:int) with a str

    def __init__(self) -> None:
        from servers.moe import MOE_ADMIN
        self.protocol = MOE_ADMIN
        super().__init__()

    def up(self) -> None:
        from servers.sigma0 import boot
        self.sys = System()
        self.sigma0 = boot(self.sys)
        self.proc = self.start()
        self.gate = self.sys.root.create_gate(self.label, thread=self.proc.thread)

    def start(self) -> TaskProc:
        assert self.sys is not None
        s0 = self.root.create_gate(1, thread=self.sigma0.thread)
        return self.sys.spawn("servers.moe.server:main", "moe", caps={"sigma0": s0})

    def check(self, stub: Any) -> None:
        assert {"sessions", "dataspaces", "pool_pages"} <= set(stub.info())


class MoeSession(_RpcServer):
    """moe through a client's session gate (the gate moe made for that client)."""
    name = "moe.session"
    request = [6]                           # info()
    wrong_types = [1, "big"]                # alloc(size:int) with a str
    not_restartable = "a session gate is moe's own: it dies with moe (restart: see moe)"

    def __init__(self) -> None:
        from servers.moe import MOE_SESSION
        self.protocol = MOE_SESSION
        super().__init__()

    def up(self) -> None:
        from servers.moe import MoeAdmin
        from servers.sigma0 import boot
        self.sys = System()
        sigma0 = boot(self.sys)
        self.proc = self.sys.spawn("servers.moe.server:main", "moe", caps={
            "sigma0": self.root.create_gate(1, thread=sigma0.thread)})
        admin = MoeAdmin(self.root, self.root.create_gate(0, thread=self.proc.thread),
                         timeout=CALL_MS)
        self.gate = admin.session("conformance", 1 << 20)

    def check(self, stub: Any) -> None:
        assert stub.info()["quota"] == 1 << 20


class Io(_RpcServer):
    name = "io"
    label = 20
    wrong_types = [2, 12345]                # open(name:str) with an int

    def __init__(self) -> None:
        from servers.io.protocol import IO
        self.protocol = IO
        super().__init__()

    def up(self) -> None:
        from hal.testing import HalRig
        self.rig = HalRig({"hal": ["timer:timer0"]}, ram_size=1 << 20)
        self.sys = self.rig.sys
        self.proc = self.start()
        self.gate = self.root.create_gate(self.label, thread=self.proc.thread)

    def start(self) -> TaskProc:
        return self.rig.sys.spawn("servers.io.server:serve", "io",
                                  args=(json.dumps({"20": ["timer0"]}),),
                                  caps={"hal": self.rig.bus["hal"]})

    def down(self) -> None:
        self.rig.close()

    def check(self, stub: Any) -> None:
        assert stub.devices() == ["timer0"]


class HalBus(_RpcServer):
    name = "hal.bus"
    wrong_types = [2, ["timer0"]]           # open(name:str) with a list

    def __init__(self) -> None:
        from hal.protocol import BUS, BUS_LABEL
        self.protocol = BUS
        self.label = BUS_LABEL
        super().__init__()

    def up(self) -> None:
        from hal.testing import HalRig
        self.rig = HalRig({"hal": ["timer:timer0"]}, ram_size=1 << 20)
        self.sys = self.rig.sys
        self.proc = self.rig.procs["hal"]
        self.gate = self.rig.bus["hal"]

    def start(self) -> TaskProc:
        # A new HAL incarnation; the old one's control socket is left behind by SIGKILL.
        ctl = os.path.join(self.rig.run_dir, "hal.ctl")
        if os.path.exists(ctl):
            os.unlink(ctl)
        proc = self.rig.sys.spawn("hal.main:task", "hal", args=(
            "--ram", self.rig.ram_path("hal"), "--ram-size", str(self.rig.ram_size),
            "--name", "hal", "--run-dir", self.rig.run_dir, "--device", "timer:timer0"))
        self.rig.procs["hal"] = proc
        return proc

    def down(self) -> None:
        self.rig.close()

    def check(self, stub: Any) -> None:
        assert "timer0" in [d["name"] for d in stub.devices()]


class HalDevice(_RpcServer):
    """A HAL device (timer0) through its I/O gate (the gate the HAL made for it)."""
    name = "hal.dev"
    request = [5]                           # info()
    wrong_types = [1, "STATUS"]             # read(reg:int) with a str
    not_restartable = "a device gate is the HAL's own: it dies with the HAL (restart: see hal.bus)"

    def __init__(self) -> None:
        from hal.protocol import DEV
        self.protocol = DEV
        super().__init__()

    def up(self) -> None:
        from hal.testing import HalRig
        self.rig = HalRig({"hal": ["timer:timer0"]}, ram_size=1 << 20)
        self.sys = self.rig.sys
        self.proc = self.rig.procs["hal"]
        self.gate = self.rig.open("hal")["timer0"].gate

    def down(self) -> None:
        self.rig.close()

    def check(self, stub: Any) -> None:
        assert stub.info()["name"] == "timer0"


class Names(_RpcServer):
    """The launcher's name service (launcher.names: NAMES served by `Supervisor`), in a task
    of its own (tasks.name_service) that routes one name, "svc", to every caller."""
    name = "launcher.names"
    label = 1000
    request = [1, "svc"]                    # lookup("svc")
    wrong_types = [1, 42]                   # lookup(name:str) with an int
    SLOT = 3900                             # where root receives the looked-up capability

    def __init__(self) -> None:
        from launcher.names import NAMES
        self.protocol = NAMES
        super().__init__()

    def start(self) -> TaskProc:
        assert self.sys is not None
        return self.sys.spawn("tests.conformance.tasks:name_service", "names")

    def check(self, stub: Any) -> None:
        from kernel.user.rpc import RemoteFailure
        assert stub.lookup("svc", _window=(self.SLOT, 1)) is None
        assert [it[1] for it in stub.last_items] == [self.SLOT]
        self.root.cap_delete(self.SLOT)
        try:
            stub.lookup("nothing", _window=(self.SLOT, 1))
            raise AssertionError("lookup of an unrouted name answered")
        except RemoteFailure as e:
            assert e.error == "NOT_ROUTED", e


class Example(_RpcServer):
    """servers/example, the model server (a client gate: its own namespace)."""
    name = "example"
    label = 3
    request = [3]                           # keys()
    wrong_types = [1, "k", "not bytes"]     # put(key, value:bytes) with a str

    def __init__(self) -> None:
        from servers.example.protocol import KV
        self.protocol = KV
        super().__init__()

    def start(self) -> TaskProc:
        assert self.sys is not None
        return self.sys.spawn("servers.example.server:main", "example")

    def check(self, stub: Any) -> None:
        stub.put("k", b"v")
        assert stub.get("k") == b"v" and stub.keys() == ["k"]


class Ledger(_RpcServer):
    """servers/ledger: its log in the system's run directory, kept across restarts."""
    name = "ledger"
    request = [2, "k", "r", "0" * 16]       # read(key, rid, sum): answered CORRUPT (bad sum)
    wrong_types = [1, "k", "two", "r", ""]  # add(key, delta:int, ...) with a str

    def __init__(self) -> None:
        from servers.ledger.protocol import LEDGER
        self.protocol = LEDGER
        self.n = 0
        super().__init__()

    def start(self) -> TaskProc:
        assert self.sys is not None
        where = os.path.join(self.sys.run_dir, "ledger")
        os.makedirs(where, exist_ok=True)
        return self.sys.spawn("servers.ledger.server:main", "ledger", args=("", where))

    def check(self, stub: Any) -> None:
        from servers.ledger.protocol import digest
        self.n += 1
        rid = f"conformance:{os.getpid()}:{self.n}"
        a = stub.add("k", 2, rid, digest("add", "k", 2, rid))
        assert (a.key, a.delta, a.rid) == ("k", 2, rid) and a.value >= 2 and \
            a.sum == digest("add", "k", 2, rid, a.value), a
        again = stub.add("k", 2, rid, digest("add", "k", 2, rid))   # the same rid: run once
        assert again.value == a.value, (a, again)


# The device servers' adapters live in files of their own and build on the classes above.
from .adapter_gui import Fb, Input  # noqa: E402
from .adapter_nic import Nic  # noqa: E402
from .adapter_block import BlockServer  # noqa: E402
from .adapter_ore import Ore  # noqa: E402
from .adapter_dhcpd import Dhcpd  # noqa: E402
from .adapter_nitpicker import Nitpicker  # noqa: E402
from .adapter_rt import Rt  # noqa: E402

ADAPTERS: list[type[Adapter]] = [Hello, Counter, Sigma0, Moe, MoeSession, Io, HalBus, HalDevice,
                                 Names, Example, Ledger, Fb, Input, Nic,
                                 BlockServer, Ore, Dhcpd, Nitpicker, Rt]
