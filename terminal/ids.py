"""Globally unique, time-ordered ids made without coordination.

Every journal record and every transaction gets an id that no other site, lane or restart
can ever produce, so the host's ingest can deduplicate on it (at-least-once delivery,
exactly-once effect). An id is the site id, a dash and a ULID::

    SIM-077-001-01HZX3M2Q5T7V8W9XAYBZC0D1E          new_id("SIM-077-001")
    SIM-077-001:pump-3-01HZX3M2Q5T7V8W9XAYBZC0D1F   new_txn_id("SIM-077-001", "pump-3")

The ULID is 26 Crockford base32 characters: a 48-bit Unix time in milliseconds and 80 random
bits from :mod:`secrets`. Ids made in one process are strictly increasing (as strings and
as ULIDs): within one millisecond, or when the wall clock steps back, the previous random
part is incremented instead of drawn again (the ULID spec's monotonic mode), so sorting
ids of one site sorts them by creation. Across processes and sites the 80 random bits make
a collision as likely as guessing a 10-byte key.

A site id has letters, digits, ``.``, ``_`` and ``-`` (as ``terminal.config`` allows); a
lane has the same characters. Neither may contain ``:``, which is how a parser tells the
site from the lane, and the ULID is always the last 26 characters after the last dash.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from dataclasses import dataclass

__all__ = ["IdError", "ParsedId", "check_name", "new_id", "new_txn_id", "parse_id", "ulid_time_ms"]

# Crockford's base32: no I, L, O, U (they read as 1, 1, 0 and an obscenity).
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE = {c: i for i, c in enumerate(_ALPHABET)}
_ULID_LEN = 26
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1
_TIME_MAX = (1 << 48) - 1

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_ULID = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")


class IdError(ValueError):
    """A site id, lane or id is malformed (says which value and why)."""


@dataclass(frozen=True, slots=True)
class ParsedId:
    """The parts of an id made by :func:`new_id` or :func:`new_txn_id`."""

    site_id: str
    lane: str | None  # None for a record id, the lane for a transaction id
    ulid: str
    time_ms: int  # Unix time in milliseconds when the id was made


class _UlidSource:
    """A monotonic ULID generator; one per process, shared by all threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = 0

    def next(self) -> tuple[int, int]:
        """The next (time_ms, random) pair, strictly greater than the previous one."""
        now_ms = time.time_ns() // 1_000_000
        with self._lock:
            if now_ms > self._last_ms:
                ms, rand = now_ms, secrets.randbits(_RANDOM_BITS)
            else:
                # Same millisecond, or the clock stepped back: keep the last time and count up,
                # so order within the process never breaks. On the (2^-80 unlikely) overflow
                # of the random part, borrow the next millisecond.
                ms, rand = self._last_ms, self._last_rand + 1
                if rand > _RANDOM_MAX:
                    ms, rand = ms + 1, secrets.randbits(_RANDOM_BITS)
            if ms > _TIME_MAX:
                raise IdError(f"clock reads {ms} ms, past the ULID range (year 10889)")
            self._last_ms, self._last_rand = ms, rand
        return ms, rand


_source = _UlidSource()


def _encode(ms: int, rand: int) -> str:
    value = (ms << _RANDOM_BITS) | rand
    out = []
    for _ in range(_ULID_LEN):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def check_name(what: str, value: object) -> str:
    """``value`` if it is a valid site id or lane name, else :class:`IdError` naming ``what``."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise IdError(f"{what}: letters, digits, '.', '_', '-' only, 1 to 64 characters, "
                      f"starting with a letter or digit; got {value!r}")
    return value


def new_id(site_id: str) -> str:
    """A new globally unique id of a record made at ``site_id``: ``"{site_id}-{ULID}"``.

    Raises :class:`IdError` if ``site_id`` is malformed.
    """
    check_name("site id", site_id)
    return f"{site_id}-{_encode(*_source.next())}"


def new_txn_id(site_id: str, lane: str) -> str:
    """A new globally unique transaction id on ``lane`` at ``site_id``:
    ``"{site_id}:{lane}-{ULID}"``.

    Raises :class:`IdError` if ``site_id`` or ``lane`` is malformed.
    """
    check_name("site id", site_id)
    check_name("lane", lane)
    return f"{site_id}:{lane}-{_encode(*_source.next())}"


def ulid_time_ms(ulid: str) -> int:
    """The Unix time in milliseconds encoded in a ULID. Raises :class:`IdError`."""
    if not isinstance(ulid, str) or not _ULID.match(ulid):
        raise IdError(f"not a ULID (26 Crockford base32 characters, first 0-7): {ulid!r}")
    value = 0
    for c in ulid:
        value = (value << 5) | _DECODE[c]
    return value >> _RANDOM_BITS


def parse_id(value: str) -> ParsedId:
    """Split an id made by :func:`new_id` or :func:`new_txn_id` into its parts.

    Raises :class:`IdError` naming what is wrong if ``value`` is not such an id.
    """
    if not isinstance(value, str):
        raise IdError(f"an id is a string, got {type(value).__name__}")
    prefix, dash, ulid = value.rpartition("-")
    if not dash or not prefix:
        raise IdError(f"an id is '<site>-<ULID>' or '<site>:<lane>-<ULID>', got {value!r}")
    try:
        time_ms = ulid_time_ms(ulid)
    except IdError as e:
        raise IdError(f"id {value!r}: {e}") from None
    site_id, colon, lane = prefix.partition(":")
    try:
        check_name("site id", site_id)
        if colon:
            check_name("lane", lane)
    except IdError as e:
        raise IdError(f"id {value!r}: {e}") from None
    return ParsedId(site_id, lane if colon else None, ulid, time_ms)
