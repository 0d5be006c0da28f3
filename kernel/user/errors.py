"""Exceptions the task library raises, named by whose fault the failure was.

- `CallerError`: you misused the kernel (a slot you don't hold, a right you lack, a bad
  argument, a quota you exhausted). Retrying the same call fails the same way.
- `PartnerError`: the other side let you down (it timed out, died, denied the call, or the
  object you waited on was destroyed). The call was well-formed.
- `KernelGone`: the kernel process is not reachable any more.

Every `L4Error` carries the `Err` code and the kernel's reason in words.
"""
from __future__ import annotations

from ..abi import Err


class L4Error(Exception):
    err: Err = Err.INVALID

    def __init__(self, reason: str, err: Err | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if err is not None:
            self.err = err

    def __str__(self) -> str:
        return f"{self.err.name}: {self.reason}"


class CallerError(L4Error):
    """The call was wrong: fix the caller."""


class PartnerError(L4Error):
    """The partner or the object went away or refused."""


class NoCapability(CallerError):
    err = Err.NO_CAP


class NoRights(CallerError):
    err = Err.NO_RIGHTS


class InvalidArgument(CallerError):
    err = Err.INVALID


class QuotaExceeded(CallerError):
    err = Err.QUOTA


class ProtocolViolation(CallerError):
    err = Err.PROTOCOL


class NotAuthenticated(CallerError):
    err = Err.NOT_AUTH


class MessageTooBig(CallerError):
    err = Err.TOO_BIG


class Busy(CallerError):
    err = Err.BUSY


class NoSuchCall(CallerError):
    err = Err.NOSYS


class Timeout(PartnerError):
    err = Err.TIMEOUT


class PeerDied(PartnerError):
    err = Err.PEER_DIED


class Denied(PartnerError):
    err = Err.DENIED


class Canceled(PartnerError):
    err = Err.CANCELED


class KernelGone(L4Error):
    err = Err.PEER_DIED


BY_CODE: dict[int, type[L4Error]] = {
    cls.err: cls for cls in (NoCapability, NoRights, InvalidArgument, QuotaExceeded,
                             ProtocolViolation, NotAuthenticated, MessageTooBig, Busy,
                             NoSuchCall, Timeout, PeerDied, Denied, Canceled)
}


def from_code(code: int, reason: str) -> L4Error:
    try:
        err = Err(code)
    except ValueError:
        return ProtocolViolation(f"kernel answered unknown error {code}: {reason}")
    return BY_CODE.get(err, L4Error)(reason, err)
