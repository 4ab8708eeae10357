"""The cabinets' web application: the fleet manager's cabinet (``/fleet``), the fleet API
(``/api/v1``) and the club member's payment cabinet (``/club``), server-rendered with
Jinja2 and htmx (vendored in ``static/``), sessions in the host's database.

Middlewares, outermost first: security headers; errors to pages (or JSON under ``/api``);
the session (aiohttp-session on :class:`~host.web.sessions.DbStorage`); the CSRF check on
every state-changing method outside ``/api`` and the SMS gateway's inbound endpoint (which
authenticate with a header, not a cookie). A background task sends the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp_session import get_session, session_middleware

from host import outbox
from host.errors import HostError, NotFound
from host.ledger import Ledger
from host.ledger_thread import LedgerThread
from host.passwords import Hasher
from host.reports import litres, rub

from . import api, club, documents, fleet
from .common import CFG, HASHER, LT, render
from .config import WebConfig
from .forms import FieldError
from .sessions import DbStorage

__all__ = ["create_app"]

log = logging.getLogger("edgepos.host.web")

_OUTBOX_TASK = web.AppKey("outbox_task", asyncio.Task)
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
_NO_CSRF = ("/api/", "/club/sms/inbound")

_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")


@web.middleware
async def _headers(request: web.Request, handler):  # type: ignore[no-untyped-def]
    try:
        resp = await handler(request)
    except web.HTTPException as exc:
        resp = exc
    resp.headers.setdefault("Content-Security-Policy", _CSP)
    resp.headers.setdefault("X-Content-Type-Options", "nosniff")
    resp.headers.setdefault("X-Frame-Options", "DENY")
    resp.headers.setdefault("Referrer-Policy", "no-referrer")  # activation links carry a token
    if not request.path.startswith("/static/"):
        resp.headers.setdefault("Cache-Control", "no-store")
    if isinstance(resp, web.HTTPException):
        raise resp
    return resp


@web.middleware
async def _errors(request: web.Request, handler):  # type: ignore[no-untyped-def]
    is_api = request.path.startswith("/api/")
    try:
        return await handler(request)
    except FieldError as exc:
        if is_api:
            return web.json_response({"error": {"field": exc.field, "message": str(exc)}}, status=422)
        return await render(request, "error.html", {"message": str(exc)}, status=400)
    except NotFound:
        if is_api:
            return web.json_response({"error": {"message": "not found"}}, status=404)
        return await render(request, "error.html", {"message": "Не найдено"}, status=404)
    except HostError as exc:  # InvalidInput, Conflict from the master-data functions
        if is_api:
            return web.json_response({"error": {"message": str(exc)}}, status=409)
        return await render(request, "error.html", {"message": str(exc)}, status=409)


@web.middleware
async def _csrf(request: web.Request, handler):  # type: ignore[no-untyped-def]
    if request.method in _UNSAFE and not request.path.startswith(_NO_CSRF):
        s = await get_session(request)
        want = s.get("csrf")
        got: object = request.headers.get("X-CSRF-Token")
        if got is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            got = (await request.post()).get("csrf")
        if not want or not isinstance(got, str) or not hmac.compare_digest(want, got):
            return web.Response(status=403, text="CSRF: форма устарела, обновите страницу")
    return await handler(request)


async def _outbox_loop(app: web.Application) -> None:
    cfg, lt = app[CFG], app[LT]
    while True:
        try:
            msgs = await lt.call(lambda: outbox.due(lt.ledger()))
            if msgs:
                results = await asyncio.to_thread(outbox.send, msgs, cfg.mailer, cfg.sms)
                await lt.call(lambda r=results: outbox.mark(lt.ledger(), r))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the outbox retries; the cabinet stays up
            log.warning("outbox: %s", type(exc).__name__)
        await asyncio.sleep(cfg.outbox_interval_s)


async def _start(app: web.Application) -> None:
    await app[LT].call(lambda: app[LT].ledger())  # open and migrate now: a bad URL fails the start
    app[_OUTBOX_TASK] = asyncio.get_running_loop().create_task(_outbox_loop(app))


async def _stop(app: web.Application) -> None:
    task = app.get(_OUTBOX_TASK)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await app[LT].close()


async def _index(request: web.Request) -> web.Response:
    return aiohttp_jinja2.render_template("index.html", request, {})


def create_app(cfg: WebConfig) -> web.Application:
    """The cabinets and the fleet API as one aiohttp application."""
    lt = LedgerThread(cfg.db_url, name="cabinet-ledger", opener=lambda url: Ledger.open(url, clock=cfg.clock))
    app = web.Application(middlewares=[_headers, _errors, session_middleware(DbStorage(lt, secure=cfg.secure_cookies)),
                                       _csrf], client_max_size=256 * 1024)
    app[CFG], app[LT], app[HASHER] = cfg, lt, Hasher(cfg.argon2)
    env = aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("host.web", "templates"),
                               autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined)
    env.filters["rub"] = rub
    env.filters["litres"] = litres
    app.router.add_get("/", _index)
    app.router.add_static("/static/", __import__("importlib.resources").resources.files("host.web") / "static")
    fleet.add_routes(app)
    documents.add_routes(app)
    api.add_routes(app)
    club.add_routes(app)
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    return app
