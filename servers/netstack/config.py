"""A task's interface from its arguments: which session, which address.

Task arguments are `key=value` words (the image's `args`):

    ip=10.0.2.15/24    the address and prefix; without it, the session's own `ip` (ORe's
                       `open` answer carries the one the image configured)
    dhcp  (or ip=dhcp) the address, prefix and gateway from a DHCP server (dhcp.py): the
                       stack starts at 0.0.0.0 and is configured when the ACK arrives; the
                       task waits for it (`dhcp_wait=S` seconds, default: for ever), the
                       lease is renewed in the background and released when the stack stops.
                       The image's `net = { switch = "ore", dhcp = true }` adds this word.
    gw=10.0.2.2        the gateway (optional)
    mac=02:..:01       the source MAC (optional; default the session's: ORe gives each
                       client its own, the nic server its device's, shared by its sessions)
    cap=net            the capability of the session (default: "net", else "nic")

Anything else is left for the task (`rest`). A missing address is the image's mistake:
`ConfigError` says which task argument to add; so is `dhcp` beside an address.
"""
from __future__ import annotations

from typing import Any

from . import dhcp
from .link import NicLink
from .stack import Stack


class ConfigError(ValueError):
    """The task's arguments or capabilities do not describe an interface."""


def parse(args: tuple[str, ...] | list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for a in args:
        key, eq, value = a.partition("=")
        if a.strip() in FLAGS:
            out[a.strip()] = "1"
            continue
        if not eq:
            raise ConfigError(f"task argument {a!r}: expected key=value (like ip=10.0.2.15/24)")
        out[key.strip()] = value.strip()
    if out.get("ip") == "dhcp":
        del out["ip"]
        out["dhcp"] = "1"
    elif "dhcp" in out and "ip" in out:
        raise ConfigError(f"task arguments ip={out['ip']} and dhcp: give one of them")
    return out


FLAGS = {"dhcp"}                   # words without a value


def open_stack(l4: Any, opts: dict[str, str], name: str = "netstack",
               on_message: Any = None) -> Stack:
    """The task's stack over its session, started. `on_message`: the task serves a protocol
    on its main thread (link.py NicLink.on_message), set before the pump first waits."""
    cap = opts.get("cap") or next((c for c in ("net", "nic") if c in l4.caps), "")
    if cap not in l4.caps:
        raise ConfigError(f"no session capability {cap or 'net'!r} among {sorted(l4.caps)}")
    link = NicLink(l4, l4.caps[cap])
    link.on_message = on_message
    if "mac" in opts:
        link.mac = bytes.fromhex(opts["mac"].replace(":", ""))
    if "dhcp" in opts:
        return _dhcp_stack(link, opts, name)
    address = opts.get("ip") or str(link.info.get("ip") or "")
    if not address:
        raise ConfigError("no address: give the task ip=A.B.C.D/N (or its ORe session one)")
    stack = Stack(link, address, gateway=opts.get("gw") or link.info.get("gateway") or None,
                  name=name)
    stack.start()
    print(f"{name}: {address} on session {link.nic.sid} (MAC {stack.mac.hex(':')}), "
          f"gateway {opts.get('gw') or '-'}", flush=True)
    return stack


def _dhcp_stack(link: NicLink, opts: dict[str, str], name: str) -> Stack:
    """A stack at 0.0.0.0 until the DHCP server's ACK configures it; then renewed."""
    try:
        wait = float(opts["dhcp_wait"]) if opts.get("dhcp_wait") else None
    except ValueError:
        raise ConfigError(f"task argument dhcp_wait={opts['dhcp_wait']}: expected seconds")
    stack = Stack(link, "0.0.0.0/0", name=name).start()
    client = dhcp.DhcpClient(stack, hostname=name, log=lambda m: print(f"{name}: {m}", flush=True))
    print(f"{name}: asking for an address by DHCP on session {link.nic.sid} "
          f"(MAC {stack.mac.hex(':')})", flush=True)
    lease = client.acquire(wait)
    stack.dhcp = client                       # type: ignore[attr-defined]  # for stats
    d = lease.describe()
    print(f"{name}: {d['address']} from DHCP server {d['server']} (lease {d['lease_s']} s), "
          f"gateway {d['router'] or '-'}", flush=True)
    client.start()
    return stack
