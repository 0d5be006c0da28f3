"""The trusted vault (Nizza's encrypting file store, paper §4.3): L⁴Linux keeps only
ciphertext on its ext2 disk; the key that opens it stays in this task.

    [[task]]
    name = "vault"
    run = "servers.nizza.vault:main"
    provides = ["vault"]

Mechanism: protocol VAULT (protocol.py). A master key (32 random bytes) is generated at
first start into the task's scratch directory (mode 0600, the task's own uid under the
sandbox) and read from there after a restart. Each client gets a key of its own,
HKDF-SHA256(master, info = its gate label): the label is the kernel's word, so one client
cannot unseal what another sealed. `seal(name, data)` is AES-256-GCM with a random 96-bit
nonce and `name` (the file's path, chosen by the untrusted side) as associated data, so a
ciphertext moved to another name, or changed by one bit, fails to unseal (CORRUPT).

Blob layout: VERSION (1 byte) | nonce (12) | ciphertext | tag (16).
Ownership: the vault's single thread; the keys never leave this process.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kernel.user.client import L4
from kernel.user.rpc import Call, RpcError

from .protocol import MAX_DOC, MAX_NAME, VAULT, private_dir, write_private

KEY_FILE = "master.key"
VERSION = 1
NONCE = 12
OVERHEAD = 1 + NONCE + 16


def load_master(where: str) -> bytes:
    """The master key in `where`, generated there (mode 0600) if there is none."""
    path = os.path.join(where, KEY_FILE)
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        pass
    key = os.urandom(32)
    write_private(path, key)
    return key


def hkdf_sha256(ikm: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 HKDF with SHA-256 and no salt (a zero key for the extract step), on the
    standard library's HMAC: the same keys as `cryptography`'s HKDF (tests/nizza checks
    both and the RFC's vector), without loading its hash-object layer into the vault."""
    if not 0 < length <= 255 * 32:
        raise ValueError(f"HKDF-SHA256 length {length}: must be 1..{255 * 32}")
    prk = hmac.new(bytes(32), ikm, hashlib.sha256).digest()
    okm, block = b"", b""
    for i in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([i]), hashlib.sha256).digest()
        okm += block
    return okm[:length]


class Vault:
    def __init__(self, master: bytes) -> None:
        self.master = master
        self.keys: dict[int, AESGCM] = {}          # label -> that client's cipher

    def _cipher(self, label: int) -> AESGCM:
        if label not in self.keys:
            self.keys[label] = AESGCM(hkdf_sha256(self.master, b"l4py-nizza-vault:%d" % label))
        return self.keys[label]

    @staticmethod
    def _check_name(name: str) -> bytes:
        raw = name.encode()
        if not 0 < len(raw) <= MAX_NAME:
            raise RpcError("INVALID", f"name of {len(raw)} bytes: must be 1..{MAX_NAME}")
        return raw

    def seal(self, call: Call, name: str, data: bytes) -> bytes:
        aad = self._check_name(name)
        if len(data) > MAX_DOC:
            raise RpcError("INVALID", f"{len(data)} bytes to seal: at most {MAX_DOC}")
        nonce = os.urandom(NONCE)
        return bytes([VERSION]) + nonce + self._cipher(call.label).encrypt(nonce, data, aad)

    def unseal(self, call: Call, name: str, blob: bytes) -> bytes:
        aad = self._check_name(name)
        if not OVERHEAD <= len(blob) <= MAX_DOC + OVERHEAD or blob[0] != VERSION:
            raise RpcError("INVALID", f"a blob of {len(blob)} bytes (version "
                                      f"{blob[:1].hex() or 'none'}) is not one of ours")
        try:
            return self._cipher(call.label).decrypt(blob[1:1 + NONCE], blob[1 + NONCE:], aad)
        except InvalidTag:
            raise RpcError("CORRUPT", f"{name}: changed, sealed under another name, or by "
                                      "another client") from None


def main(l4: L4) -> int:
    where = private_dir(l4.task_name)
    vault = Vault(load_master(where))
    print(f"vault: master key in {where} (never answered)", file=sys.stderr, flush=True)
    VAULT.serve(l4, vault)
    return 0
