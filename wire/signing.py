"""Keys and signatures of wire messages: HMAC-SHA256 per site, Ed25519 for the replica.

Every site has its own 32-byte HMAC key, and the host knows all of them. A site signs what
it publishes with its key; the host signs an :class:`~wire.messages.Ack` with the key of the
site it is addressed to (so no other site could forge it). Replica snapshots and deltas,
which every site reads, are signed by the host with its Ed25519 **replica signing key**,
which only the host holds; sites hold the matching public key (the **replica verify key**)
and can check a replica message but never make one. A site whose key or broker credentials
leak can therefore not forge master data for the fleet. :class:`SiteKeys` is the lookup
both sides hand to :mod:`wire.codec`.

Key files: a site key is 32 raw bytes or 64 hex digits (:func:`load_key`,
:func:`write_key`); the replica keys are PEM, as ``openssl genpkey -algorithm ed25519``
writes them: PKCS#8 ``PRIVATE KEY`` for the signing key (``replica-signing.key``, host
only, mode 0600) and SubjectPublicKeyInfo ``PUBLIC KEY`` for the verify key
(``replica-signing.pub``, every site) (:func:`load_replica_signing_key`,
:func:`load_replica_verify_key`, :func:`write_replica_keys`).

Keys never appear in a repr, an error message or a log line: :func:`key_id` and
:func:`replica_key_id` are short fingerprints to compare keys by in logs and admin tools.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .errors import WireKeyError, WireSignatureError

__all__ = [
    "KEY_BYTES",
    "MAC_BYTES",
    "REPLICA_SIGNING_KEY_FILE",
    "REPLICA_VERIFY_KEY_FILE",
    "SIGNATURE_BYTES",
    "SiteKeys",
    "key_id",
    "load_key",
    "load_replica_signing_key",
    "load_replica_verify_key",
    "mac",
    "mac_ok",
    "new_key",
    "new_replica_signing_key",
    "replica_key_id",
    "replica_sign",
    "replica_signature_ok",
    "write_key",
    "write_replica_keys",
    "write_replica_verify_key",
]

KEY_BYTES = 32
MAC_BYTES = 32
SIGNATURE_BYTES = 64  #: an Ed25519 signature
#: The host's replica signing key in a keys directory (PEM PKCS#8, host only).
REPLICA_SIGNING_KEY_FILE = "replica-signing.key"
#: The matching public key, the one replica key a site holds (PEM SubjectPublicKeyInfo).
REPLICA_VERIFY_KEY_FILE = "replica-signing.pub"
_MAX_KEY_FILE = 4096


def _check_key(key: object, what: str) -> bytes:
    if not isinstance(key, (bytes, bytearray)):
        raise WireKeyError(f"{what}: a key is {KEY_BYTES} bytes, got a {type(key).__name__}")
    if len(key) != KEY_BYTES:
        raise WireKeyError(f"{what}: a key is {KEY_BYTES} bytes, got {len(key)}")
    return bytes(key)


class SiteKeys:
    """The keys one side knows: site id -> HMAC key, and the replica key of its side.

    The host holds every site's key and the replica signing key
    (``SiteKeys(sites, replica_signing=private_key)``); it can sign and verify replica
    messages. A site holds its own key and the replica verify key, the host's public key
    (``SiteKeys({site: key}, replica_verify=public_key)``); it can verify replica messages
    but not sign them. Lookups of an unknown site raise :class:`WireSignatureError` (a
    message from a site the host has no key for cannot be verified). ``repr`` lists site
    ids and the replica key's fingerprint, never a key.

    Raises :class:`WireKeyError` for a key of the wrong type or length, or a verify key
    that is not the signing key's public half.
    """

    __slots__ = ("_signing", "_sites", "_verify")

    def __init__(self, sites: Mapping[str, bytes] | None = None, *,
                 replica_signing: Ed25519PrivateKey | None = None,
                 replica_verify: Ed25519PublicKey | None = None) -> None:
        self._sites: dict[str, bytes] = {}
        if replica_signing is not None and not isinstance(replica_signing, Ed25519PrivateKey):
            raise WireKeyError(f"replica_signing: an Ed25519PrivateKey, got a {type(replica_signing).__name__}")
        if replica_verify is not None and not isinstance(replica_verify, Ed25519PublicKey):
            raise WireKeyError(f"replica_verify: an Ed25519PublicKey, got a {type(replica_verify).__name__}")
        if replica_signing is not None:
            own = replica_signing.public_key()
            if replica_verify is not None and _raw_public(replica_verify) != _raw_public(own):
                raise WireKeyError(f"replica_verify (key id {replica_key_id(replica_verify)}) is not the public "
                                   f"key of replica_signing (key id {replica_key_id(own)})")
            replica_verify = own
        self._signing = replica_signing
        self._verify = replica_verify
        for site_id, key in (sites or {}).items():
            self.set_site(site_id, key)

    def set_site(self, site_id: str, key: bytes) -> None:
        """Add or replace ``site_id``'s key (a new site, or a key rotated)."""
        if not isinstance(site_id, str) or not site_id:
            raise WireKeyError(f"a site id is a non-empty str, got {site_id!r}")
        self._sites[site_id] = _check_key(key, f"key of site {site_id!r}")

    def remove_site(self, site_id: str) -> None:
        """Forget ``site_id``'s key (a site decommissioned); unknown ids are ignored."""
        self._sites.pop(site_id, None)

    def site(self, site_id: str) -> bytes:
        """``site_id``'s key. Raises :class:`WireSignatureError` if it is not known."""
        try:
            return self._sites[site_id]
        except (KeyError, TypeError):
            raise WireSignatureError(f"no key for site {site_id!r}: cannot verify or sign its "
                                     "messages") from None

    @property
    def replica_signing(self) -> Ed25519PrivateKey:
        """The replica signing key (the host's). Raises :class:`WireSignatureError` if this
        side has none, as every site: only the host signs snapshots and deltas."""
        if self._signing is None:
            raise WireSignatureError("no replica signing key: only the host signs snapshots and deltas "
                                     f"(with its {REPLICA_SIGNING_KEY_FILE})")
        return self._signing

    @property
    def replica_verify(self) -> Ed25519PublicKey:
        """The replica verify key (the host's public key). Raises :class:`WireSignatureError`
        if this side has none: replica messages cannot be verified, and are refused."""
        if self._verify is None:
            raise WireSignatureError("no replica verify key (the host's public key, "
                                     f"{REPLICA_VERIFY_KEY_FILE}): cannot verify snapshots and deltas")
        return self._verify

    @property
    def can_sign_replica(self) -> bool:
        """Whether this side holds the replica signing key (the host does, a site never)."""
        return self._signing is not None

    @property
    def can_verify_replica(self) -> bool:
        """Whether this side can verify replica messages (it holds the verify key)."""
        return self._verify is not None

    @property
    def host(self) -> Ed25519PrivateKey:
        """Deprecated alias of :attr:`replica_signing`, for callers written when the host had
        one HMAC key (``host.worker.Worker`` checks it); use :attr:`can_sign_replica`."""
        return self.replica_signing

    def __contains__(self, site_id: object) -> bool:
        return site_id in self._sites

    def __iter__(self) -> Iterator[str]:
        return iter(self._sites)

    def __len__(self) -> int:
        return len(self._sites)

    def __repr__(self) -> str:
        shown = sorted(self._sites)[:5]
        more = f", ... ({len(self._sites)} sites)" if len(self._sites) > 5 else ""
        replica = ("signs" if self._signing is not None else "verifies") if self._verify is not None else "no"
        rid = f" {replica_key_id(self._verify)}" if self._verify is not None else ""
        return f"SiteKeys(sites={shown}{more}, replica={replica}{rid})"


def new_key() -> bytes:
    """A fresh random key (:data:`KEY_BYTES` bytes from :mod:`secrets`)."""
    return secrets.token_bytes(KEY_BYTES)


def key_id(key: bytes) -> str:
    """A short fingerprint of ``key`` (8 hex digits), safe to log and show; not the key."""
    return hashlib.sha256(b"edgepos key id\x00" + _check_key(key, "key")).hexdigest()[:8]


def load_key(path: str | os.PathLike[str]) -> bytes:
    """The key in the file ``path``: 32 raw bytes, or 64 hex digits (surrounding whitespace,
    such as a final newline, is ignored).

    Raises :class:`WireKeyError` saying what is wrong with the file (never its content).
    """
    p = Path(path)
    data = _read_at_most(p)
    if len(data) == KEY_BYTES:
        return data
    text = data.strip()
    if len(text) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise WireKeyError(f"key file {str(p)!r}: 64 characters but not hex digits") from None
    size = f"more than {_MAX_KEY_FILE}" if len(data) > _MAX_KEY_FILE else str(len(data))
    raise WireKeyError(f"key file {str(p)!r} holds {size} bytes: a key file holds {KEY_BYTES} "
                       f"raw bytes or {2 * KEY_BYTES} hex digits")


def write_key(path: str | os.PathLike[str], key: bytes) -> None:
    """Write ``key`` to a new file ``path`` as 64 hex digits and a newline, readable by its
    owner only (mode 0600). Raises :class:`WireKeyError` if the file exists or cannot be
    written: a key is never overwritten by accident."""
    key = _check_key(key, "key")
    p = Path(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise WireKeyError(f"key file {str(p)!r} already exists; remove it first to replace the key") from None
    except OSError as e:
        raise WireKeyError(f"key file {str(p)!r} cannot be created: {e.strerror or e}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(key.hex().encode("ascii") + b"\n")
        f.flush()
        os.fsync(f.fileno())


def mac(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 of ``data`` under ``key``."""
    return hmac.digest(key, data, "sha256")


def mac_ok(key: bytes, data: bytes, tag: bytes) -> bool:
    """Whether ``tag`` is the HMAC-SHA256 of ``data`` under ``key`` (constant-time compare)."""
    return hmac.compare_digest(hmac.digest(key, data, "sha256"), tag)


# --- the replica keys (Ed25519) --------------------------------------------------------------

def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def new_replica_signing_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 replica signing key (the host's; its public half goes to the sites)."""
    return Ed25519PrivateKey.generate()


def replica_key_id(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """A short fingerprint (8 hex digits) of a replica key pair, the same for its private and
    public half: safe to log and show, and what an operator compares between host and site."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise WireKeyError(f"a replica key is an Ed25519 key, got a {type(key).__name__}")
    return hashlib.sha256(b"edgepos replica key id\x00" + _raw_public(key)).hexdigest()[:8]


def replica_sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    """The Ed25519 signature (:data:`SIGNATURE_BYTES` bytes) of ``data`` under ``key``."""
    return key.sign(data)


def replica_signature_ok(key: Ed25519PublicKey, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is ``key``'s Ed25519 signature of ``data``."""
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def _read_at_most(p: Path) -> bytes:
    """The first ``_MAX_KEY_FILE + 1`` bytes of key file ``p`` (one more than a key file may
    hold, so the caller can tell it is too long); :class:`WireKeyError` if it cannot be read."""
    try:
        with p.open("rb") as f:
            return f.read(_MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise WireKeyError(f"key file {str(p)!r} does not exist") from None
    except IsADirectoryError:
        raise WireKeyError(f"key file {str(p)!r} is a directory") from None
    except OSError as e:
        raise WireKeyError(f"key file {str(p)!r} cannot be read: {e.strerror or e}") from None


def _read_key_file(p: Path) -> bytes:
    data = _read_at_most(p)
    if len(data) > _MAX_KEY_FILE:
        raise WireKeyError(f"key file {str(p)!r} holds more than {_MAX_KEY_FILE} bytes: not a key file")
    return data


_PEM_FORM = ("a PEM file as `openssl genpkey -algorithm ed25519` writes it, or as "
             "`python -m host.keys` makes it")


def load_replica_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The host's replica signing key in the file ``path``: an unencrypted PEM PKCS#8
    ``PRIVATE KEY`` of type Ed25519.

    Raises :class:`WireKeyError` saying what is wrong with the file (missing, unreadable, a
    public key, encrypted, another key type, not PEM), never its content.
    """
    p = Path(path)
    data = _read_key_file(p)
    if b"-----BEGIN PUBLIC KEY-----" in data:
        raise WireKeyError(f"key file {str(p)!r} holds a public key; the host signs with the private key "
                           f"({REPLICA_SIGNING_KEY_FILE})")
    if b"-----BEGIN" not in data:
        raise WireKeyError(f"key file {str(p)!r} ({len(data)} bytes) is not PEM: the replica signing key is "
                           + _PEM_FORM)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise WireKeyError(f"key file {str(p)!r} is encrypted: the host needs it unencrypted "
                           "(protect it with the file's permissions, mode 0600)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise WireKeyError(f"key file {str(p)!r} is not a readable PEM private key: the replica signing "
                           "key is " + _PEM_FORM) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise WireKeyError(f"key file {str(p)!r} holds a {type(key).__name__.lstrip('_')}, not an Ed25519 key")
    return key


def load_replica_verify_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """The replica verify key (the host's public key) in the file ``path``: a PEM
    SubjectPublicKeyInfo ``PUBLIC KEY`` of type Ed25519.

    A file holding a private key is refused: a site must never hold the signing key.
    Raises :class:`WireKeyError` saying what is wrong with the file, never its content.
    """
    p = Path(path)
    data = _read_key_file(p)
    if b"PRIVATE KEY-----" in data:
        raise WireKeyError(f"key file {str(p)!r} holds a PRIVATE key: a site gets only the host's public key "
                           f"({REPLICA_VERIFY_KEY_FILE}); remove this file from the site and consider "
                           "the signing key exposed")
    if b"-----BEGIN PUBLIC KEY-----" not in data:
        raise WireKeyError(f"key file {str(p)!r} ({len(data)} bytes) is not a PEM public key: the replica "
                           f"verify key is the host's {REPLICA_VERIFY_KEY_FILE}, " + _PEM_FORM)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise WireKeyError(f"key file {str(p)!r} is not a readable PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise WireKeyError(f"key file {str(p)!r} holds a {type(key).__name__.lstrip('_')}, not an Ed25519 key")
    return key


def _create(p: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise WireKeyError(f"key file {str(p)!r} already exists; remove it first to replace the key") from None
    except OSError as e:
        raise WireKeyError(f"key file {str(p)!r} cannot be created: {e.strerror or e}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_replica_verify_key(path: str | os.PathLike[str], key: Ed25519PublicKey) -> None:
    """Write the replica verify key ``key`` to a new file ``path`` (PEM, mode 0644): the file
    the sites get. Raises :class:`WireKeyError` if it exists or cannot be written."""
    if not isinstance(key, Ed25519PublicKey):
        raise WireKeyError(f"a replica verify key is an Ed25519PublicKey, got a {type(key).__name__}")
    _create(Path(path), key.public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)


def write_replica_keys(keys_dir: str | os.PathLike[str], key: Ed25519PrivateKey) -> tuple[Path, Path]:
    """Write ``key`` to ``keys_dir/replica-signing.key`` (PEM PKCS#8, mode 0600) and its
    public key to ``keys_dir/replica-signing.pub`` (PEM, mode 0644, for the sites); returns
    both paths. Raises :class:`WireKeyError` if either file exists or cannot be written: a
    key is never overwritten by accident."""
    if not isinstance(key, Ed25519PrivateKey):
        raise WireKeyError(f"a replica signing key is an Ed25519PrivateKey, got a {type(key).__name__}")
    d = Path(keys_dir)
    private, public = d / REPLICA_SIGNING_KEY_FILE, d / REPLICA_VERIFY_KEY_FILE
    for f in (private, public):
        if f.exists():
            raise WireKeyError(f"key file {str(f)!r} already exists; remove it first to replace the key")
    _create(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()), 0o600)
    write_replica_verify_key(public, key.public_key())
    return private, public
