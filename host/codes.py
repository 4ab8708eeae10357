"""One-time codes (SMS codes) and single-use links (e-mail activation, contract linking).

A code is random (:mod:`secrets`), only its SHA-256 is stored, it is good for one use, for
at most :data:`MAX_TTL_S` seconds and :data:`TRIES` wrong guesses; issuing a new code for
the same purpose and subject ends the older ones. The functions take a
:class:`~host.db.Database` inside the caller's transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from .db import Database
from .errors import InvalidInput

__all__ = ["MAX_TTL_S", "TRIES", "check_code", "check_link", "issue_code", "issue_link", "split_link"]

#: ASVS 5.0: an out-of-band code lives at most 10 minutes.
MAX_TTL_S = 600
#: Wrong guesses a code survives; then it is dead and a new one must be asked for.
TRIES = 5


def _hash(purpose: str, subject: str, code: str) -> str:
    return hashlib.sha256(f"{purpose}\x00{subject}\x00{code}".encode()).hexdigest()


def _insert(db: Database, purpose: str, subject: str, code: str, now: int, ttl_s: int, tries: int) -> int:
    if not 1 <= ttl_s <= MAX_TTL_S and purpose != "link_contract":
        raise InvalidInput(f"a one-time code lives 1..{MAX_TTL_S} s, got {ttl_s}")
    db.execute("UPDATE web_codes SET used_at_utc_s = ? WHERE purpose = ? AND subject = ? AND used_at_utc_s IS NULL",
               (now, purpose, subject))
    return db.execute("INSERT INTO web_codes (purpose, subject, code_hash, expires_at_utc_s, tries_left, "
                      "created_at_utc_s) VALUES (?, ?, ?, ?, ?, ?) RETURNING code_id",
                      (purpose, subject, _hash(purpose, subject, code), now + ttl_s, tries, now)).fetchone()[0]


def issue_code(db: Database, purpose: str, subject: str, *, now: int, ttl_s: int = MAX_TTL_S,
               digits: int = 6, tries: int = TRIES) -> str:
    """A new numeric code of ``digits`` digits for ``subject``; the caller sends it."""
    code = "".join(secrets.choice("0123456789") for _ in range(digits))
    _insert(db, purpose, subject, code, now, ttl_s, tries)
    return code


def issue_link(db: Database, purpose: str, subject: str, *, now: int, ttl_s: int = MAX_TTL_S,
               tries: int = TRIES) -> str:
    """A single-use link token ``<id>.<random>`` (256 random bits) for ``subject``."""
    token = secrets.token_urlsafe(32)
    code_id = _insert(db, purpose, subject, token, now, ttl_s, tries)
    return f"{code_id}.{token}"


def _spend(db: Database, row: tuple | None, purpose: str, code: str, now: int) -> str | None:
    if row is None:
        return None
    code_id, subject, code_hash, expires, tries_left = row
    if expires <= now or tries_left <= 0:
        return None
    if hmac.compare_digest(code_hash, _hash(purpose, subject, code)):
        db.execute("UPDATE web_codes SET used_at_utc_s = ? WHERE code_id = ?", (now, code_id))
        return subject
    db.execute("UPDATE web_codes SET tries_left = tries_left - 1 WHERE code_id = ?", (code_id,))
    return None


def check_code(db: Database, purpose: str, subject: str, code: str, *, now: int) -> bool:
    """True (and the code is spent) if ``code`` is the live code of ``subject``; a wrong code
    uses up one try."""
    if not isinstance(code, str) or not code.isascii() or not 1 <= len(code) <= 64:
        return False
    row = db.fetchone(f"SELECT code_id, subject, code_hash, expires_at_utc_s, tries_left FROM web_codes "
                      f"WHERE purpose = ? AND subject = ? AND used_at_utc_s IS NULL ORDER BY code_id DESC "
                      f"LIMIT 1{db.for_update}", (purpose, subject))
    return _spend(db, row, purpose, code, now) is not None


def split_link(link: str) -> tuple[int, str] | None:
    """``(code id, token)`` of a link token, or None if it is not shaped like one."""
    head, _, token = link.partition(".")
    if not head.isascii() or not head.isdigit() or len(head) > 18 or not 20 <= len(token) <= 64:
        return None
    return int(head), token


def check_link(db: Database, purpose: str, link: str, *, now: int) -> str | None:
    """The subject of a live link token (the link is spent), or None."""
    parts = split_link(link) if isinstance(link, str) else None
    if parts is None:
        return None
    row = db.fetchone(f"SELECT code_id, subject, code_hash, expires_at_utc_s, tries_left FROM web_codes "
                      f"WHERE code_id = ? AND purpose = ? AND used_at_utc_s IS NULL{db.for_update}",
                      (parts[0], purpose))
    return _spend(db, row, purpose, parts[1], now)
