"""Keys and HMAC-SHA256 signatures of wire messages.

Every site has its own 32-byte key; the host knows all of them and has one more, the host
key, shared with every site. A site signs what it publishes with its key; the host signs
an :class:`~wire.messages.Ack` with the key of the site it is addressed to (so no other site
could forge it) and replica snapshots and deltas, which every site reads, with the host
key. :class:`SiteKeys` is the lookup both sides hand to :mod:`wire.codec`.

Keys never appear in a repr, an error message or a log line: :func:`key_id` is a short
fingerprint to compare keys by in logs and admin tools.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path

from .errors import WireKeyError, WireSignatureError

__all__ = ["KEY_BYTES", "MAC_BYTES", "SiteKeys", "new_key", "key_id", "load_key", "write_key",
           "mac", "mac_ok"]

KEY_BYTES = 32
MAC_BYTES = 32
_MAX_KEY_FILE = 4096


def _check_key(key: object, what: str) -> bytes:
    if not isinstance(key, (bytes, bytearray)):
        raise WireKeyError(f"{what}: a key is {KEY_BYTES} bytes, got a {type(key).__name__}")
    if len(key) != KEY_BYTES:
        raise WireKeyError(f"{what}: a key is {KEY_BYTES} bytes, got {len(key)}")
    return bytes(key)


class SiteKeys:
    """The keys one side knows: site id -> key, and the host key.

    A site holds its own key and the host key; the host holds every site's key and its own.
    Lookups of an unknown site raise :class:`WireSignatureError` (a message from a site the
    host has no key for cannot be verified). ``repr`` lists site ids, never keys.
    """

    __slots__ = ("_sites", "_host")

    def __init__(self, sites: Mapping[str, bytes] | None = None, *, host: bytes | None = None) -> None:
        self._sites: dict[str, bytes] = {}
        self._host = None if host is None else _check_key(host, "host key")
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
    def host(self) -> bytes:
        """The host key. Raises :class:`WireSignatureError` if this side has none."""
        if self._host is None:
            raise WireSignatureError("no host key: cannot verify or sign replica messages")
        return self._host

    @property
    def has_host(self) -> bool:
        """Whether the host key is known."""
        return self._host is not None

    def __contains__(self, site_id: object) -> bool:
        return site_id in self._sites

    def __iter__(self) -> Iterator[str]:
        return iter(self._sites)

    def __len__(self) -> int:
        return len(self._sites)

    def __repr__(self) -> str:
        shown = sorted(self._sites)[:5]
        more = f", ... ({len(self._sites)} sites)" if len(self._sites) > 5 else ""
        return f"SiteKeys(sites={shown}{more}, host={'yes' if self._host else 'no'})"


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
    try:
        with p.open("rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise WireKeyError(f"key file {str(p)!r} does not exist") from None
    except IsADirectoryError:
        raise WireKeyError(f"key file {str(p)!r} is a directory") from None
    except OSError as e:
        raise WireKeyError(f"key file {str(p)!r} cannot be read: {e.strerror or e}") from None
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
