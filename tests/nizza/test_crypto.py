"""The vault's key derivation on the standard library (servers/nizza/vault.py `hkdf_sha256`)
gives the keys `cryptography`'s HKDF gave, so a master key of an older run still opens its
blobs; and RFC 5869's own vector (test case 3: no salt, no info)."""
from __future__ import annotations

import os

import pytest

from servers.nizza.vault import hkdf_sha256


def test_rfc5869_case_3() -> None:
    okm = hkdf_sha256(bytes([0x0b] * 22), b"", 42)
    assert okm.hex() == ("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f"
                         "3c738d2d9d201395faa4b61a96c8")


def test_same_keys_as_cryptography_hkdf() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    for n in (1, 32, 33, 64, 100):
        master, info = os.urandom(32), b"l4py-nizza-vault:%d" % n
        want = HKDF(algorithm=hashes.SHA256(), length=n, salt=None, info=info).derive(master)
        assert hkdf_sha256(master, info, n) == want


def test_lengths_out_of_range_are_refused() -> None:
    for n in (0, 255 * 32 + 1):
        with pytest.raises(ValueError, match="HKDF-SHA256 length"):
            hkdf_sha256(b"k", b"", n)
