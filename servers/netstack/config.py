"""A task's interface from its arguments: which session, which address.

Task arguments are `key=value` words (the image's `args`):

    ip=10.0.2.15/24    the address and prefix; without it, the session's own `ip` (ORe's
                       `open` answer carries the one the image configured)
    gw=10.0.2.2        the gateway (optional)
    mac=02:..:01       the source MAC (optional; default the session's: ORe gives each
                       client its own, the nic server its device's, shared by its sessions)
    cap=net            the capability of the session (default: "net", else "nic")

Anything else is left for the task (`rest`). A missing address is the image's mistake:
`ConfigError` says which task argument to add.
"""
from __future__ import annotations

from typing import Any

from .link import NicLink
from .stack import Stack


class ConfigError(ValueError):
    """The task's arguments or capabilities do not describe an interface."""


def parse(args: tuple[str, ...] | list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for a in args:
        key, eq, value = a.partition("=")
        if not eq:
            raise ConfigError(f"task argument {a!r}: expected key=value (like ip=10.0.2.15/24)")
        out[key.strip()] = value.strip()
    return out


def open_stack(l4: Any, opts: dict[str, str], name: str = "netstack") -> Stack:
    """The task's stack over its session, started."""
    cap = opts.get("cap") or next((c for c in ("net", "nic") if c in l4.caps), "")
    if cap not in l4.caps:
        raise ConfigError(f"no session capability {cap or 'net'!r} among {sorted(l4.caps)}")
    link = NicLink(l4, l4.caps[cap])
    address = opts.get("ip") or str(link.info.get("ip") or "")
    if not address:
        raise ConfigError("no address: give the task ip=A.B.C.D/N (or its ORe session one)")
    if "mac" in opts:
        link.mac = bytes.fromhex(opts["mac"].replace(":", ""))
    stack = Stack(link, address, gateway=opts.get("gw") or link.info.get("gateway") or None,
                  name=name)
    stack.start()
    print(f"{name}: {address} on session {link.nic.sid} (MAC {stack.mac.hex(':')}), "
          f"gateway {opts.get('gw') or '-'}", flush=True)
    return stack
