"""Rate limits on failed sign-ins and code checks that slow an attacker without locking
the real user out.

Failures are counted per account, per client address and per (account, address) pair in
a sliding window (:data:`LIMITS`). A pair or an address over its limit is refused for the
rest of the window: that stops one attacker's guessing. An account over its limit (many
addresses guessing one account) is refused too, *except* from a browser that signed in to
that account before (a device cookie, :func:`trust_device`, which skips the account's and
the pair's limits, not the address's): the attacker cannot lock the owner out, the owner's
own browser still signs in (OWASP's device-cookie scheme).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from .db import Database

__all__ = ["LIMITS", "Window", "fail", "is_trusted_device", "retry_after", "succeed", "trust_device"]


@dataclass(frozen=True, slots=True)
class Window:
    """At most ``failures`` failures in ``window_s`` seconds."""

    failures: int
    window_s: int


#: scope -> its window. Tuned so a user who mistypes a few times is never stopped.
LIMITS: dict[str, Window] = {
    "pair": Window(5, 15 * 60),
    "address": Window(50, 15 * 60),
    "account": Window(20, 60 * 60),
}


def _keys(account: str, address: str) -> dict[str, str]:
    return {"pair": f"{account}\x1f{address}", "address": address, "account": account}


def retry_after(db: Database, account: str, address: str, *, now: int, trusted: bool = False,
                by_address_only: bool = False) -> int:
    """Seconds until the next try is allowed (0: allowed now). ``by_address_only`` for a
    secret that names no account (a link token): only the address's limits apply."""
    wait = 0
    for scope, key in _keys(account, address).items():
        if scope in ("account", "pair") and trusted or scope == "account" and by_address_only:
            continue
        w = LIMITS[scope]
        rows = db.fetchall("SELECT at_utc_s FROM web_attempts WHERE scope = ? AND key = ? AND at_utc_s > ? "
                           "ORDER BY at_utc_s DESC LIMIT ?", (scope, key, now - w.window_s, w.failures))
        if len(rows) >= w.failures:
            wait = max(wait, rows[-1][0] + w.window_s - now)
    return max(wait, 0)


def fail(db: Database, account: str, address: str, *, now: int) -> None:
    """Count one failure (and forget failures older than every window)."""
    db.executemany("INSERT INTO web_attempts (scope, key, at_utc_s) VALUES (?, ?, ?)",
                   [(s, k, now) for s, k in _keys(account, address).items()])
    db.execute("DELETE FROM web_attempts WHERE at_utc_s < ?", (now - max(w.window_s for w in LIMITS.values()),))


def succeed(db: Database, account: str, address: str) -> None:
    """A success forgets the pair's failures (the account's stay: they are someone else's)."""
    db.execute("DELETE FROM web_attempts WHERE scope = 'pair' AND key = ?", (_keys(account, address)["pair"],))


def _h(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def trust_device(db: Database, realm: str, user_key: str, *, now: int) -> str:
    """A new device token for a browser that just signed in (kept in a cookie)."""
    token = secrets.token_urlsafe(32)
    db.execute("INSERT INTO web_devices (token_hash, realm, user_key, created_at_utc_s) VALUES (?, ?, ?, ?)",
               (_h(token), realm, user_key, now))
    return token


def is_trusted_device(db: Database, realm: str, user_key: str, token: str | None) -> bool:
    """True if ``token`` is a device token of this user."""
    if not token or len(token) > 100:
        return False
    return db.fetchone("SELECT 1 FROM web_devices WHERE token_hash = ? AND realm = ? AND user_key = ?",
                       (_h(token), realm, user_key)) is not None
