"""Nitpicker's policy: which client labels get a session, the name drawn on their views, their
buffer quota, and the labels whose task kill mode may end (server.py's docstring: the syntax)."""
from __future__ import annotations

DEFAULT_QUOTA = 4 << 20
SIZE_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20}


class Policy(dict[int, tuple[str, int]]):
    """label -> (name, quota); `killable`: the labels kill mode may end."""

    def __init__(self) -> None:
        super().__init__()
        self.killable: set[int] = set()


def parse_policy(entries: tuple[str, ...] | list[str]) -> Policy:
    """The policy from the task's arguments; ValueError names the bad entry and why."""
    out = Policy()
    for e in entries:
        key, eq, rest = e.partition("=")
        if key == "kill":
            try:
                out.killable |= {int(p) for p in rest.split(",") if p}
            except ValueError:
                raise ValueError(f"policy entry {e!r}: expected kill=N,M (labels)") from None
            continue
        if not eq or not key.isdigit() or int(key) < 1 or not rest:
            raise ValueError(f"policy entry {e!r}: expected N=NAME or N=NAME:QUOTA (label >= 1)")
        name, _, quota = rest.partition(":")
        size = DEFAULT_QUOTA
        if quota:
            num, suffix = quota.rstrip("KkMm"), quota[len(quota.rstrip("KkMm")):].upper()
            if not num.isdigit() or suffix not in SIZE_SUFFIX:
                raise ValueError(f"policy entry {e!r}: quota {quota!r} is not a size (4M, 512K)")
            size = int(num) * SIZE_SUFFIX[suffix]
        out[int(key)] = (name, size)
    return out
