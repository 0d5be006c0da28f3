"""`l4run call`: call any declared operation of a running server from the command line.

    l4run call TASK.OP [ARG ...] [--json] [--run-dir DIR]
    l4run call TASK --list

TASK is a task of the image (or a service it provides). Which protocol the task speaks is
read from `PROTOCOLS`: the module of the task's `run` → its server package's protocol
declaration (`kernel.user.rpc.Protocol`). The launcher (`Launcher.cmd_call`) parses the
arguments by the op's declared types, calls through a gate of root's with the operator's
label (`OPERATOR_LABEL`, a client gate: admin ops are refused here, before any call), one
bounded call (`CALL_MS`), and answers the result, or the declared error's name and reason.

Argument syntax by declared type: int, float as numbers; bool as true/false; str as given;
bytes as UTF-8 text, or hex after `0x`; list, dict, any as JSON (any falls back to text);
`int?`/`str?`/`bytes?` take `null` for None.

A protocol spoken only on its server's admin gate (`ADMIN_GATE_ONLY`: the HAL's bus) is
listed with every op marked admin, and not called.

Contract: runs in the launcher's main thread; every refusal (unknown task, protocol or op,
an admin op, wrong number or types of arguments) is a ValueError with one line saying why,
naming SERVICE.OP (and the argument: "counter.add: argument 'n' must be int, got 'five'
(not an integer)"); nothing is sent unless every argument parsed. A declared error is an
answer, not a refusal: {error, reason, status} (`l4run call` then exits with status 1).
"""
from __future__ import annotations

import importlib
import json
from typing import TYPE_CHECKING, Any

from kernel.user import errors
from kernel.user.rpc import Op, Protocol, RemoteError

if TYPE_CHECKING:
    from .system import Launcher

CALL_MS = 2_000
OPERATOR_LABEL = 0xFFFF     # the operator's client label (image labels are small numbers)

# The module a task runs (its `run` before the colon) -> "module:PROTOCOL" it serves.
PROTOCOLS: dict[str, str] = {
    "servers.hello.server": "servers.hello.protocol:HELLO",
    "servers.hello.counter": "servers.hello.protocol:COUNTER",
    "servers.ledger.server": "servers.ledger.protocol:LEDGER",
    "servers.example.server": "servers.example.protocol:KV",
    "servers.block.server": "servers.block.protocol:BLOCK",
    "servers.fb.server": "servers.fb.protocol:FB",
    "servers.input.server": "servers.input.protocol:INPUT",
    "servers.io.server": "servers.io.protocol:IO",
    "servers.nic.server": "servers.nic.protocol:NIC",
    "servers.ore.server": "servers.ore.protocol:ORE",
    "servers.l4linux.server": "servers.l4linux.protocol:LINUX",
    "servers.sigma0.server": "servers.sigma0.protocol:SIGMA0",
    "servers.dhcpd.server": "servers.dhcpd.protocol:DHCPD",
    "servers.nitpicker.server": "servers.nitpicker.protocol:NITPICKER",
    "servers.nitpicker.terminal": "servers.nitpicker.terminal:TERM",
    "servers.nitpicker.pin": "servers.nitpicker.pin:PIN",
    "launcher.devices": "hal.protocol:BUS",
}
# Protocols spoken only on their server's admin gate, which the operator's gate is not (the
# HAL's bus: its one client is the io server): listed, never called from here.
ADMIN_GATE_ONLY = {"hal.bus": "the HAL's bus gate is its admin gate; only the io server holds it"}


def protocol_of(run: str) -> Protocol:
    where = PROTOCOLS.get(run.partition(":")[0])
    if where is None:
        raise ValueError(f"no protocol is known for tasks running {run!r} (launcher/call.py)")
    module, _, name = where.partition(":")
    return getattr(importlib.import_module(module), name)


def parse_arg(kind: str, text: str) -> Any:
    """`text` as a value of declared type `kind`; ValueError saying why not."""
    if kind.endswith("?"):
        if text == "null":
            return None
        kind = kind[:-1]
    if kind == "int":
        try:
            return int(text, 0)
        except ValueError:
            raise ValueError("not an integer") from None
    if kind == "float":
        try:
            return float(text)
        except ValueError:
            raise ValueError("not a number") from None
    if kind == "bool":
        if text.lower() not in ("true", "false"):
            raise ValueError("expected true or false")
        return text.lower() == "true"
    if kind == "str":
        return text
    if kind == "bytes":
        try:
            return bytes.fromhex(text[2:]) if text.startswith("0x") else text.encode()
        except ValueError:
            raise ValueError("not hex after 0x") from None
    try:
        value = json.loads(text)
    except ValueError:
        if kind in ("list", "dict"):
            raise ValueError(f"not a JSON {kind}") from None
        return text                       # any: plain text
    if kind in ("list", "dict") and type(value).__name__ != kind:
        raise ValueError(f"a JSON {type(value).__name__}, not a {kind}")
    return value


def parse_args(where: str, o: Op, args: list[str]) -> list[Any]:
    """`args` parsed by `o`'s declared types; ValueError naming `where` (SERVICE.OP), the
    argument and why."""
    sig = ", ".join(f"{a.name}:{a.kind}" for a in o.args)
    if len(args) != len(o.args):
        raise ValueError(f"{where} takes {len(o.args)} argument{'s' * (len(o.args) != 1)} "
                         f"({sig or 'none'}), got {len(args)}")
    values = []
    for a, text in zip(o.args, args):
        try:
            values.append(parse_arg(a.kind, text))
        except ValueError as e:
            raise ValueError(f"{where}: argument '{a.name}' must be {a.kind}, got {text!r} "
                             f"({e})") from None
    return values


def plain(value: Any) -> Any:
    """`value` in JSON's terms (named tuples as maps, bytes as text or hex)."""
    if hasattr(value, "_asdict"):
        return {k: plain(v) for k, v in value._asdict().items()}
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return "0x" + value.hex()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def describe(proto: Protocol, o: Op) -> dict[str, Any]:
    return {"op": o.name, "args": [f"{a.name}:{a.kind}" for a in o.args], "reply": o.reply,
            "errors": list(o.errors), "admin": o.admin or proto.name in ADMIN_GATE_ONLY,
            "doc": o.doc}


def _target(launcher: "Launcher", name: str) -> tuple[str, Protocol]:
    """(service, protocol) of task or service `name`."""
    if name in launcher.services:
        task = launcher.tasks[launcher.services[name].provider]
        service = name
    elif name in launcher.tasks:
        task = launcher.tasks[name]
        if not task.spec.provides:
            raise ValueError(f"task {name!r} provides no service")
        service = task.spec.provides[0]
    else:
        raise ValueError(f"no task or service named {name!r} (tasks: {', '.join(launcher.tasks)})")
    return service, protocol_of(task.spec.run)


def list_ops(launcher: "Launcher", name: str) -> dict[str, Any]:
    service, proto = _target(launcher, name)
    return {"service": service, "protocol": proto.name,
            "ops": [describe(proto, o) for o in proto.ops.values()]}


def call_op(launcher: "Launcher", name: str, op: str, args: list[str]) -> dict[str, Any]:
    """Check everything, then one call; the answer {result} or {error, reason, status}."""
    service, proto = _target(launcher, name)
    where = f"{service}.{op}"
    o = proto.ops.get(op)
    if o is None:
        raise ValueError(f"{proto.name} has no op {op!r} (ops: {', '.join(proto.ops)})")
    if proto.name in ADMIN_GATE_ONLY:
        raise ValueError(f"{where}: {ADMIN_GATE_ONLY[proto.name]} (no operator calls)")
    if o.admin:
        raise ValueError(f"{where} is an admin op (the launcher's admin gate only)")
    if o.caps_in or o.caps_out:
        raise ValueError(f"{where} moves capabilities; it cannot be called from here")
    values = parse_args(where, o, args)
    assert launcher.root is not None, "control commands are served only while the kernel is up"
    gate = launcher.service_gate(service, OPERATOR_LABEL)
    stub: Any = proto.client(launcher.root, gate, timeout=CALL_MS)
    try:
        result = getattr(stub, op)(*values)
    except RemoteError as e:
        return {"service": service, "op": op, "error": e.error or e.status.name,
                "reason": e.reason, "status": e.status.name}
    except errors.L4Error as e:
        raise ValueError(f"calling {where}: {e} (the call did not complete)") from None
    return {"service": service, "op": op, "result": plain(result)}


def register(cli: Any, ask: Any, find_run_dir: Any, run_dir_option: Any) -> None:
    import click

    @cli.command("call", context_settings={"ignore_unknown_options": True})
    @click.argument("target")
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    @click.option("--json", "as_json", is_flag=True, help="the answer as one JSON object")
    @click.option("--list", "list_", is_flag=True, help="the ops TASK declares")
    @run_dir_option
    def call(target: str, args: tuple[str, ...], as_json: bool, list_: bool,
             run_dir: str | None) -> None:
        """Call TASK.OP of a running server with ARGS (parsed by the op's declared types)."""
        rd = find_run_dir(run_dir)
        if list_:
            answer = ask(rd, "call", task=target.partition(".")[0], op="", args=[], list=True)
            if as_json:
                click.echo(json.dumps(answer["ops"], indent=2))
                return
            for o in answer["ops"]:
                flags = " (admin)" if o["admin"] else ""
                errs = f"  errors: {', '.join(o['errors'])}" if o["errors"] else ""
                click.echo(f"{o['op']}({', '.join(o['args'])}) -> {o['reply']}{flags}{errs}")
            return
        task, dot, op = target.partition(".")
        if not dot or not op:
            raise click.UsageError("name the op as TASK.OP (or give --list)")
        answer = ask(rd, "call", task=task, op=op, args=list(args))
        out = {k: answer[k] for k in ("service", "op", "result", "error", "reason", "status")
               if k in answer}
        if as_json:
            click.echo(json.dumps(out))
        elif "error" in out:
            click.echo(f"{task}.{op}: {out['error']}: {out['reason']}", err=True)
        else:
            click.echo(json.dumps(out["result"]))
        if "error" in out:
            raise SystemExit(1)
