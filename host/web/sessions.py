"""Server-side sessions for aiohttp-session, kept in the host's database (``web_sessions``):
the ``__Host-`` cookie carries only a random id (256 bits), the row is found by its SHA-256.
A session lives :data:`MAX_AGE_S` at most and :data:`IDLE_S` without use; ending a user's
sessions (sign-out, password change, a block) deletes their rows, so the next request with
such a cookie is anonymous at once. Each session holds a CSRF token (:func:`csrf_token`).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any

from aiohttp import web
from aiohttp_session import AbstractStorage, Session

from host.db import Database
from host.ledger import Ledger
from host.ledger_thread import LedgerThread

__all__ = ["COOKIE", "IDLE_S", "MAX_AGE_S", "DbStorage", "csrf_token", "sid_hash"]

COOKIE = "__Host-edgepos-sid"
MAX_AGE_S = 12 * 3600
IDLE_S = 30 * 60


def sid_hash(sid: str) -> str:
    """The key a session id is stored under."""
    return hashlib.sha256(sid.encode()).hexdigest()


def csrf_token(session: Session) -> str:
    """The session's CSRF token (made on first use)."""
    tok = session.get("csrf")
    if not tok:
        tok = secrets.token_urlsafe(32)
        session["csrf"] = tok
    return tok


class DbStorage(AbstractStorage):
    """aiohttp-session storage on the ledger's database (SQLite or PostgreSQL), reached
    through the app's :class:`LedgerThread`."""

    def __init__(self, lt: LedgerThread, *, secure: bool = True) -> None:
        super().__init__(cookie_name=COOKIE if secure else COOKIE.removeprefix("__Host-"), max_age=None,
                         path="/", secure=secure, httponly=True, samesite="Lax")
        self.lt = lt

    async def load_session(self, request: web.Request) -> Session:
        """The session of the request's cookie, or a new empty one."""
        sid = self.load_cookie(request)
        if not isinstance(sid, str) or not 20 <= len(sid) <= 100:
            return Session(None, data=None, new=True, max_age=None)

        def load(led: Ledger) -> Any:
            now = led.now()
            row = led.db.fetchone("SELECT data, created_at_utc_s, expires_at_utc_s FROM web_sessions WHERE sid_hash = ?",
                                  (sid_hash(sid),))
            if row is None:
                return None
            data, created, expires = row
            if expires <= now:
                led.db.execute("DELETE FROM web_sessions WHERE sid_hash = ?", (sid_hash(sid),))
                return None
            new_exp = min(created + MAX_AGE_S, now + IDLE_S)
            if new_exp - expires > 60:  # slide the idle window, not on every request
                led.db.execute("UPDATE web_sessions SET expires_at_utc_s = ? WHERE sid_hash = ?",
                               (new_exp, sid_hash(sid)))
            return json.loads(data), created
        got = await self.lt.call(lambda: load(self.lt.ledger()))
        if got is None:
            return Session(None, data=None, new=True, max_age=None)
        data, created = got
        return Session(sid, data={"session": data, "created": created}, new=False, max_age=None)

    async def save_session(self, request: web.Request, response: web.StreamResponse, session: Session) -> None:
        """Write the session (a new id for a new session), or delete it when emptied."""
        sid = session.identity
        if session.empty:
            if isinstance(sid, str):
                key = sid_hash(sid)
                await self.lt.call(lambda: self.lt.ledger().db.execute(
                    "DELETE FROM web_sessions WHERE sid_hash = ?", (key,)))
            self.save_cookie(response, "", max_age=None)
            return
        if sid is None:
            sid = secrets.token_urlsafe(32)
        data = dict(session)
        realm, user_key = data.get("realm"), data.get("uid")

        def save(led: Ledger) -> None:
            now = led.now()

            def step(db: Database) -> None:
                db.execute("INSERT INTO web_sessions (sid_hash, realm, user_key, data, created_at_utc_s, "
                           "expires_at_utc_s) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (sid_hash) DO UPDATE SET "
                           "realm = excluded.realm, user_key = excluded.user_key, data = excluded.data",
                           (sid_hash(sid), realm, None if user_key is None else str(user_key), json.dumps(data),
                            now, now + IDLE_S))
            led.db.run(step)
        await self.lt.call(lambda: save(self.lt.ledger()))
        self.save_cookie(response, sid, max_age=None)


async def drop(lt: LedgerThread, session: Session) -> None:
    """Delete a session's row now (before a new session replaces it at sign-in)."""
    sid = session.identity
    if sid is not None:
        await lt.call(lambda: lt.ledger().db.execute("DELETE FROM web_sessions WHERE sid_hash = ?", (sid_hash(sid),)))
