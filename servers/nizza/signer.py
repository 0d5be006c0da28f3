"""The trusted signer (Nizza, paper §4.3): an Ed25519 key that only this task holds, and a
signature only after the user typed the right PIN into the signer's own Nitpicker window.

    [[task]]
    name = "signer"
    run = "servers.nizza.signer:main"
    args = ["pin=<hex>", "x=420", "y=200"]    # pin: pin_hash(PIN) (python3 -m
    provides = ["signer"]                     # servers.nizza.signer hash PIN prints it)
    memory = "2M"
    caps = { gui = { service = "nitpicker", label = 6 } }

Mechanism: protocol SIGNER (protocol.py). `sign(doc)` computes SHA-256(doc), shows it in
the window (prompt.py) and waits for the user's PIN there (Nitpicker's input path: only the
focused window gets keys, a click on the keypad focuses ours); the PIN is compared with the
image's hash in constant time; right: the Ed25519 signature of `doc` (the `cryptography`
package); wrong: WRONG_PIN, and after MAX_TRIES wrong PINs in a row LOCKED for good.

Ownership and contracts:
- The private key is generated at first start into the task's scratch directory
  (RUN_DIR/scratch/signer/ed25519.key, mode 0600: the task's own uid under the sandbox,
  which no other task, L⁴Linux included, can read) and read from there after a restart.
  It never leaves this process: no op answers it, the log prints only the public key.
- The count of wrong PINs (scratch/.../tries) is kept across restarts, so killing the
  signer does not buy an attacker more guesses.
- The PIN never leaves this process either; the caller learns only the outcome.
- One request at a time; one arriving while the user types is answered BUSY.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import sys
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kernel.user.client import L4
from kernel.user.errors import Timeout
from kernel.user.rpc import Call, RpcError

from .prompt import SignPrompt
from .protocol import (MAX_DOC, MAX_TRIES, PIN_DIGITS, SIGNER, private_dir,
                       write_private)

KEY_FILE = "ed25519.key"
TRIES_FILE = "tries"
PIN_SALT = b"l4py-nizza-pin:"


def pin_hash(pin: str) -> str:
    """What the image's `pin=` argument holds: a salted SHA-256 of the PIN, in hex."""
    return hashlib.sha256(PIN_SALT + pin.encode()).hexdigest()


def load_key(where: str) -> Ed25519PrivateKey:
    """The key in `where`, generated there (mode 0600, written once) if there is none."""
    path = os.path.join(where, KEY_FILE)
    try:
        with open(path, "rb") as f:
            return Ed25519PrivateKey.from_private_bytes(f.read())
    except FileNotFoundError:
        pass
    key = Ed25519PrivateKey.generate()
    write_private(path, key.private_bytes_raw())
    return key


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


class Signer:
    def __init__(self, l4: L4, where: str, pin: str, x: int, y: int) -> None:
        self.where = where
        self.key = load_key(where)
        self.pin = pin
        self.tries = self._read_tries()
        self.prompt = SignPrompt(l4, x, y)

    def pubkey(self, call: Call) -> bytes:
        return raw_public(self.key)

    def sign(self, call: Call, doc: bytes) -> bytes:
        if not 0 < len(doc) <= MAX_DOC:
            raise RpcError("INVALID", f"document of {len(doc)} bytes: must be 1..{MAX_DOC}")
        if self.tries >= MAX_TRIES:
            raise RpcError("LOCKED", f"{self.tries} wrong PINs in a row: the signer is locked")
        digest = hashlib.sha256(doc).hexdigest()
        print(f"signer: asking the user to sign sha256 {digest} (label {call.label})",
              flush=True)
        self.prompt.digest = digest
        try:
            typed = self.prompt.ask(call, "Sign? SHA-256 of the document:", PIN_DIGITS)
        except RpcError as e:
            self._outcome(f"not signed: {e.error.lower()}")
            raise
        if not typed:                            # OK on an empty field: not a guess
            self._outcome("not signed: no PIN entered")
            raise RpcError("CANCELLED", "OK with no PIN entered")
        if not hmac.compare_digest(pin_hash(typed), self.pin):
            self._write_tries(self.tries + 1)
            left = MAX_TRIES - self.tries
            self._outcome(f"wrong PIN: {left} tries left" if left else "wrong PIN: LOCKED")
            raise RpcError("WRONG_PIN", f"the PIN typed was wrong ({left} tries left)")
        self._write_tries(0)
        self._outcome(f"signed {digest[:16]}...")
        return self.key.sign(doc)

    def on_irq(self, call: Call, body: dict[str, Any]) -> None:
        self.prompt.on_irq(call, body)           # idle: events are not for anyone

    def _outcome(self, note: str) -> None:
        print(f"signer: {note}", flush=True)
        self.prompt.note = note
        self.prompt.idle()

    def _read_tries(self) -> int:
        try:
            with open(os.path.join(self.where, TRIES_FILE)) as f:
                return int(f.read().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _write_tries(self, n: int) -> None:
        path = os.path.join(self.where, TRIES_FILE)
        with open(path + ".new", "w") as f:
            f.write(f"{n}\n")
        os.replace(path + ".new", path)
        self.tries = n


def parse_args(args: tuple[str, ...]) -> dict[str, str]:
    """`KEY=VALUE` task arguments; pin is required, x and y default to 420, 200."""
    out = {"x": "420", "y": "200"}
    for a in args:
        k, sep, v = a.partition("=")
        if not sep or k not in ("pin", "x", "y"):
            raise ValueError(f"signer argument {a!r}: expected pin=HASH, x=N or y=N")
        out[k] = v
    if len(out.get("pin", "")) != 64:
        raise ValueError("signer: argument pin=HASH (64 hex digits, servers.nizza.signer "
                         "hash PIN) is required")
    return out


def main(l4: L4, *args: str) -> int:
    a = parse_args(args)
    signer = Signer(l4, private_dir(l4.task_name), a["pin"].lower(), int(a["x"]), int(a["y"]))
    print(f"signer: public key {raw_public(signer.key).hex()}"
          + (f" (locked: {signer.tries} wrong PINs)" if signer.tries >= MAX_TRIES else ""),
          flush=True)
    while True:
        SIGNER.serve(l4, signer, timeout=1000)
        try:
            signer.prompt.win.gui.stats()        # a restarted Nitpicker: reopened, redrawn
        except (Timeout, TimeoutError):
            pass


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "hash":
        print(pin_hash(sys.argv[2]))
    else:
        sys.exit("usage: python3 -m servers.nizza.signer hash PIN")
