"""The club member's payment cabinet (``/club``): activation with the barcode and the birth
date confirmed by an SMS code, a password, sign-in by card number or phone, password reset
by SMS code, balance and month turnover against the caps of the card's kind, points with
their lots, history, and blocking a lost card (here, or by an SMS "Блокировка" that the
SMS gateway posts to ``/club/sms/inbound``). Logic in :mod:`host.club_members`."""

from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime

from aiohttp import web

from host import club_members as cm
from host.errors import InvalidInput, NotFound
from host.passwords import check_new_password

from . import forms as F
from .common import (
    CFG,
    HASHER,
    address,
    call,
    form,
    render,
    see_other,
    session,
    sign_in_session,
    sign_out,
    signed_in,
)

__all__ = ["add_routes"]

REALM = cm.REALM
_NOBODY = "\x1fnobody"  # the pending person when the data matched nobody: every code fails
_PURPOSES = {"activate": "club_activate", "reset": "club_reset"}


def _when(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


async def _person(request: web.Request) -> str:
    person = await signed_in(request, REALM)
    if person is None:
        raise see_other("/club/login")
    if not await call(request, cm.has_active_card, person):  # every card blocked: the session is dead
        await sign_out(request)
        raise see_other("/club/login")
    return person


async def activate_page(request: web.Request) -> web.Response:
    return await render(request, "club/activate.html", {"error": None})


async def activate(request: web.Request) -> web.Response:
    f = await form(request)
    try:
        card = F.digits(f, "barcode", 13)
        birth = F.birth_date(f)
    except F.FieldError as exc:
        return await render(request, "club/activate.html", {"error": exc}, status=400)
    person = await call(request, cm.start_activation, card, birth, address=address(request))
    s = await session(request)
    s["club_pending"] = {"purpose": "activate", "person": person or _NOBODY}
    raise see_other("/club/code")


async def reset_page(request: web.Request) -> web.Response:
    return await render(request, "club/reset.html", {"error": None})


async def reset(request: web.Request) -> web.Response:
    f = await form(request)
    try:
        phone = F.phone(f)
        card = F.digits(f, "card", 13)
    except F.FieldError as exc:
        return await render(request, "club/reset.html", {"error": exc}, status=400)
    person = await call(request, cm.start_reset, phone, card, address=address(request))
    s = await session(request)
    s["club_pending"] = {"purpose": "reset", "person": person or _NOBODY}
    raise see_other("/club/code")


async def code_page(request: web.Request) -> web.Response:
    return await render(request, "club/code.html", {"error": None})


async def code(request: web.Request) -> web.Response:
    s = await session(request)
    pending = s.get("club_pending")
    if not isinstance(pending, dict) or pending.get("purpose") not in _PURPOSES:
        raise see_other("/club/activate")
    f = await form(request)
    try:
        value = F.digits(f, "code", 6)
    except F.FieldError as exc:
        return await render(request, "club/code.html", {"error": str(exc)}, status=400)
    person = pending["person"]
    ok = person != _NOBODY and await call(request, cm.finish_code, _PURPOSES[pending["purpose"]], person, value,
                                          address=address(request))
    if not ok:
        return await render(request, "club/code.html", {"error": "Код не подходит или устарел"}, status=400)
    await sign_in_session(request, REALM, person, pending="set_password")
    raise see_other("/club/password")


async def password_page(request: web.Request) -> web.Response:
    s = await session(request)
    if s.get("realm") != REALM or s.get("pending") != "set_password":
        raise see_other("/club/login")
    return await render(request, "club/password.html", {"error": None})


async def password(request: web.Request) -> web.Response:
    s = await session(request)
    if s.get("realm") != REALM or s.get("pending") != "set_password":
        raise see_other("/club/login")
    person = s["uid"]
    f = await form(request)
    try:
        pw = F.text(f, "password", hi=200)
        if pw != f.get("password2", ""):
            raise F.FieldError("password2", "пароли не совпадают")
        try:
            check_new_password(pw)
        except InvalidInput as exc:
            raise F.FieldError("password", str(exc).split(": ", 1)[-1]) from None
        await call(request, cm.set_password, request.app[HASHER], person, pw)
    except F.FieldError as exc:
        return await render(request, "club/password.html", {"error": exc}, status=400)
    await sign_in_session(request, REALM, person)
    raise see_other("/club")


async def login_page(request: web.Request) -> web.Response:
    return await render(request, "club/login.html", {"error": None})


async def login(request: web.Request) -> web.Response:
    f = await form(request)
    try:
        who = F.text(f, "login", hi=32).replace(" ", "").replace("-", "").lstrip("+")
        pw = F.text(f, "password", hi=200)
    except F.FieldError as exc:
        return await render(request, "club/login.html", {"error": str(exc)}, status=400)
    person, wait = await call(request, cm.sign_in, request.app[HASHER], who, pw, address=address(request),
                              device_token=None)
    if wait:
        return await render(request, "club/login.html", {
            "error": f"Слишком много попыток. Повторите через {max(1, wait // 60)} мин."}, status=429)
    if person is None:
        return await render(request, "club/login.html", {"error": "Неверный номер карты, телефон или пароль"},
                            status=400)
    await sign_in_session(request, REALM, person)
    raise see_other("/club")


async def home(request: web.Request) -> web.Response:
    person = await _person(request)
    v = await call(request, cm.view, person)
    return await render(request, "club/home.html", {"v": v, "when": _when, "blocked": request.query.get("blocked")})


async def block(request: web.Request) -> web.Response:
    person = await _person(request)
    card = request.match_info["card"]
    if len(card) != 13 or not card.isdigit():
        raise NotFound("no card")
    await call(request, cm.block_lost, person, card)
    await sign_out(request)  # the block ended every session of the person
    return await render(request, "club/blocked.html", {})


async def logout(request: web.Request) -> web.Response:
    await sign_out(request)
    raise see_other("/club/login")


async def sms_inbound(request: web.Request) -> web.Response:
    """The SMS gateway's inbound message: ``{"from": phone, "text": ...}`` with the gateway's
    token in ``X-Gateway-Token``."""
    want = request.app[CFG].sms_inbound_token
    got = request.headers.get("X-Gateway-Token", "")
    if not want or not hmac.compare_digest(want.encode(), got.encode()):
        return web.json_response({"error": {"message": "unknown gateway"}}, status=401)
    try:
        obj = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        return web.json_response({"error": {"field": "body", "message": "not JSON"}}, status=422)
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or len(obj["text"]) > 1000:
        return web.json_response({"error": {"field": "text", "message": "text of at most 1000 characters"}}, status=422)
    try:
        sender = obj.get("from")
        phone = F.phone({"phone": sender if isinstance(sender, str) else ""})
    except F.FieldError:
        return web.json_response({"error": {"field": "from", "message": "a phone number"}}, status=422)
    blocked = await call(request, cm.sms_block, phone, obj["text"])
    return web.json_response({"blocked": len(blocked)})


def add_routes(app: web.Application) -> None:
    """Mount the club cabinet's routes."""
    r = app.router
    r.add_get("/club/activate", activate_page)
    r.add_post("/club/activate", activate)
    r.add_get("/club/reset", reset_page)
    r.add_post("/club/reset", reset)
    r.add_get("/club/code", code_page)
    r.add_post("/club/code", code)
    r.add_get("/club/password", password_page)
    r.add_post("/club/password", password)
    r.add_get("/club/login", login_page)
    r.add_post("/club/login", login)
    r.add_post("/club/logout", logout)
    r.add_get("/club", home)
    r.add_post("/club/cards/{card}/block", block)
    r.add_post("/club/sms/inbound", sms_inbound)
