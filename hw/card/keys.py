"""The key store: the one place that holds the issuer master key and computes card MACs.

The terminal never handles a card key directly: it asks a :class:`KeyStore` for the MAC of
a message under the key of card ``card_no``. The software implementation here derives the
per-card key from the issuer master key; a SAM (secure access module) later implements the
same two calls inside tamper-resistant hardware.

Per-card key diversification is NIST SP 800-108 counter-mode KDF with AES-CMAC as the PRF::

    K_card = CMAC(MK, 0x01 || "EDGEPOS-CARD" || 0x00 || card_no (ASCII) || 0x0080)

(a 128-bit AES key: one PRF block). MACs are full 16-byte AES-CMAC (NIST SP 800-38B).
Keys never appear in ``repr``, logs or error messages.
"""

from __future__ import annotations

import hmac
import os
from collections import OrderedDict
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from authz.fuel_model import mask_card_no
from hw.errors import KeyStoreError

__all__ = ["KeyStore", "SoftwareKeyStore", "cmac", "diversify", "MAC_LEN", "KDF_LABEL",
           "generate_master_key", "load_master_key", "save_master_key"]

MAC_LEN = 16
KDF_LABEL = b"EDGEPOS-CARD"
_MASTER_LENGTHS = (16, 24, 32)


def cmac(key: bytes, message: bytes) -> bytes:
    """AES-CMAC of ``message`` under ``key`` (16, 24 or 32 bytes): 16 bytes."""
    c = CMAC(algorithms.AES(key))
    c.update(message)
    return c.finalize()


def diversify(master_key: bytes, card_no: str) -> bytes:
    """The 16-byte AES key of card ``card_no`` under ``master_key`` (SP 800-108, CMAC)."""
    if len(master_key) not in _MASTER_LENGTHS:
        raise KeyStoreError(f"master key must be 16, 24 or 32 bytes, got {len(master_key)}")
    try:
        context = card_no.encode("ascii")
    except (AttributeError, UnicodeEncodeError):
        raise KeyStoreError(f"card number must be ASCII text: {mask_card_no(card_no)}") from None
    return cmac(master_key, b"\x01" + KDF_LABEL + b"\x00" + context + b"\x00\x80")


@runtime_checkable
class KeyStore(Protocol):
    """What the terminal needs from its keys: MACs under per-card keys, and a key version.

    Implementations never reveal a key; a SAM-backed store implements the same calls.
    """

    key_version: int

    def mac(self, card_no: str, message: bytes) -> bytes:
        """The 16-byte MAC of ``message`` under card ``card_no``'s key."""
        ...

    def verify(self, card_no: str, message: bytes, mac: bytes) -> bool:
        """True when ``mac`` is the MAC of ``message`` under card ``card_no``'s key
        (compared in constant time)."""
        ...


class SoftwareKeyStore:
    """A :class:`KeyStore` holding the issuer master key in process memory.

    Card keys are derived on demand and a few recent ones are cached (a lane serves one
    card at a time; the cache only saves a CMAC per APDU).
    """

    __slots__ = ("_master", "key_version", "_cache", "_cache_size")

    def __init__(self, master_key: bytes, key_version: int = 1, cache_size: int = 64) -> None:
        if not isinstance(master_key, (bytes, bytearray)) or len(master_key) not in _MASTER_LENGTHS:
            raise KeyStoreError("master key must be 16, 24 or 32 bytes")
        if not 0 <= key_version <= 0xFF:
            raise KeyStoreError(f"key version must be 0..255, got {key_version}")
        self._master = bytes(master_key)
        self.key_version = key_version
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_size = cache_size

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], key_version: int = 1) -> "SoftwareKeyStore":
        """A key store with the master key read from ``path`` (see :func:`load_master_key`)."""
        return cls(load_master_key(path), key_version)

    def card_key(self, card_no: str) -> bytes:
        """The diversified key of ``card_no``. Only personalisation (loading the key into a
        card) needs it; the terminal uses :meth:`mac` and :meth:`verify`."""
        key = self._cache.get(card_no)
        if key is None:
            key = diversify(self._master, card_no)
            self._cache[card_no] = key
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(card_no)
        return key

    def mac(self, card_no: str, message: bytes) -> bytes:
        return cmac(self.card_key(card_no), message)

    def verify(self, card_no: str, message: bytes, mac: bytes) -> bool:
        return hmac.compare_digest(self.mac(card_no, message), bytes(mac))

    def __repr__(self) -> str:
        return f"SoftwareKeyStore(key_version={self.key_version}, master=<hidden>)"


def generate_master_key(length: int = 16) -> bytes:
    """A fresh random master key of ``length`` bytes (16, 24 or 32)."""
    if length not in _MASTER_LENGTHS:
        raise KeyStoreError(f"master key length must be 16, 24 or 32, got {length}")
    return os.urandom(length)


def load_master_key(path: str | os.PathLike[str]) -> bytes:
    """Read a master key file: hex digits (whitespace ignored), 16, 24 or 32 bytes."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyStoreError(f"cannot read master key file {path}: {type(exc).__name__}") from None
    try:
        key = bytes.fromhex("".join(text.split()))
    except ValueError:
        raise KeyStoreError(f"master key file {path} is not hex") from None
    if len(key) not in _MASTER_LENGTHS:
        raise KeyStoreError(f"master key in {path} is {len(key)} bytes, not 16, 24 or 32")
    return key


def save_master_key(path: str | os.PathLike[str], key: bytes) -> None:
    """Write ``key`` as hex to a new file readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(key.hex() + "\n")
