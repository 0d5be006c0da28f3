"""The protocols of the Nizza trusted tasks, declared once (servers/nizza; docs/NIZZA.md).

SIGNER (tag 0x5347), served by signer.py:

    pubkey() -> key                  the Ed25519 public key, 32 raw bytes. Anyone the image
                                     routes the service to may ask.
    sign(doc) -> sig                 show SHA-256(doc) and ask the user for the PIN in the
                                     signer's own Nitpicker window; the Ed25519 signature of
                                     `doc` (64 bytes) only if the PIN typed there is right.
        errors: INVALID   doc empty or over MAX_DOC bytes
                WRONG_PIN the PIN was wrong (the window says how many tries are left)
                LOCKED    MAX_TRIES wrong PINs in a row: no more signatures until the
                          operator removes the signer's state (kept across restarts)
                CANCELLED the user cancelled;  TIMEOUT no PIN in time
                BUSY      a sign request is already waiting for the user

VAULT (tag 0x5654), served by vault.py:

    seal(name, data) -> blob         AES-256-GCM of `data` under the key of the caller's
                                     label, `name` (e.g. the file's path) as associated data;
                                     blob = VERSION byte + 12-byte nonce + ciphertext + tag
    unseal(name, blob) -> data       the inverse; CORRUPT if the blob was changed, belongs
                                     to another name, or to another client's label
        errors: INVALID (sizes, an empty name), CORRUPT

Sizes keep every message within the kernel's bound (a hybrid message is at most 64 KiB).
"""
from __future__ import annotations

import os

from kernel.user.rpc import Protocol, op

MAX_DOC = 60_000            # bytes of a document to sign / of data to seal
MAX_NAME = 255
MAX_TRIES = 3               # wrong PINs in a row before the signer locks
PIN_DIGITS = 8              # the most digits the window takes

SIGNER = Protocol("signer", [
    op("pubkey", 1, [], "key", doc="the Ed25519 public key (32 bytes)"),
    op("sign", 2, ["doc:bytes"], "sig",
       errors=["INVALID", "WRONG_PIN", "LOCKED", "CANCELLED", "TIMEOUT", "BUSY"],
       doc="the signature of doc, after the user typed the PIN in the signer's window"),
], tag=0x5347)

VAULT = Protocol("vault", [
    op("seal", 1, ["name:str", "data:bytes"], "blob", errors=["INVALID"],
       doc="AES-256-GCM of data under the caller's key, name bound as associated data"),
    op("unseal", 2, ["name:str", "blob:bytes"], "data", errors=["INVALID", "CORRUPT"],
       doc="the data sealed under this name by this caller, or CORRUPT"),
], tag=0x5654)


def private_dir(task: str) -> str:
    """The task's own scratch directory, RUN_DIR/scratch/TASK: under the sandbox the only
    place it may write, owned by its uid (no other task, L4Linux included, may read it),
    kept across its restarts and removed at shutdown."""
    run_dir = os.environ.get("L4_RUN_DIR")
    if not run_dir:
        raise RuntimeError(f"{task}: L4_RUN_DIR is not set: a trusted task keeps its key "
                           "only in the scratch directory the launcher gives it")
    path = os.path.join(run_dir, "scratch", task)
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def write_private(path: str, data: bytes) -> None:
    """`data` into `path` (mode 0600), whole or not at all: a new file renamed over it."""
    fd = os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(path + ".new", path)
