"""What every cabinet route uses: the ledger call, the session, sign-in state, rendering."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp_jinja2
from aiohttp import web
from aiohttp_session import Session, get_session, new_session

from host.ledger import Ledger
from host.ledger_thread import LedgerThread
from host.passwords import Hasher

from .config import WebConfig
from .sessions import csrf_token, drop

__all__ = [
    "CFG",
    "HASHER",
    "LT",
    "address",
    "call",
    "form",
    "render",
    "see_other",
    "session",
    "sign_in_session",
    "sign_out",
    "signed_in",
]

CFG = web.AppKey("cfg", WebConfig)
LT = web.AppKey("lt", LedgerThread)
HASHER = web.AppKey("hasher", Hasher)

T = TypeVar("T")


async def call(request: web.Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(ledger, *args, **kwargs)`` on the app's ledger thread."""
    lt = request.app[LT]
    return await lt.call(lambda: fn(lt.ledger(), *args, **kwargs))


async def session(request: web.Request) -> Session:
    """The request's session (with a CSRF token in it)."""
    s = await get_session(request)
    csrf_token(s)
    return s


async def render(request: web.Request, template: str, ctx: dict[str, Any] | None = None, *,
                 status: int = 200) -> web.Response:
    """Render ``template`` with the CSRF token and ``ctx``."""
    s = await session(request)
    c = {"csrf": csrf_token(s), "realm": s.get("realm"), **(ctx or {})}
    return aiohttp_jinja2.render_template(template, request, c, status=status)


async def signed_in(request: web.Request, realm: str) -> str | None:
    """The user key of the session if it is signed in to ``realm`` (fully: second factor
    done), else None."""
    s = await get_session(request)
    if s.get("realm") != realm or s.get("pending"):
        return None
    return s.get("uid")


async def sign_in_session(request: web.Request, realm: str, uid: str, *, pending: str | None = None) -> Session:
    """Replace the request's session with a new one (a new id: no fixation) signed in as
    ``uid`` of ``realm``; ``pending`` names a step still due (the TOTP code)."""
    old = await get_session(request)
    await drop(request.app[LT], old)
    old.invalidate()
    s = await new_session(request)
    s["realm"], s["uid"] = realm, uid
    if pending:
        s["pending"] = pending
    csrf_token(s)
    return s


async def sign_out(request: web.Request) -> None:
    """End the request's session (its row is deleted)."""
    s = await get_session(request)
    await drop(request.app[LT], s)
    s.invalidate()


def address(request: web.Request) -> str:
    """The client's address, for rate limits."""
    return request.remote or "?"


async def form(request: web.Request) -> dict[str, str]:
    """The request's form fields (text ones; a repeated field keeps its first value)."""
    data = await request.post()
    out: dict[str, str] = {}
    for k, v in data.items():
        if isinstance(v, str) and k not in out:
            out[k] = v
    return out


def see_other(location: str) -> web.HTTPSeeOther:
    """The redirect after a successful POST."""
    return web.HTTPSeeOther(location)


def ledger_of(request: web.Request) -> Ledger:
    """Only for code already on the ledger thread."""
    return request.app[LT].ledger()
