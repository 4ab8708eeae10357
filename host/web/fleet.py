"""The fleet manager's cabinet (``/fleet``): registration, activation, sign-in with an
optional TOTP second factor, contracts and their cards, limits, blocks, transaction
detail and statements, API tokens. Every change goes through :mod:`host.master` (the
same change the admin CLI makes, published to the sites as a replica delta); every read
checks the contract or card belongs to the signed-in manager's company."""

from __future__ import annotations

import calendar
import re
import urllib.parse
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from aiohttp import web

from authz.fuel_model import (
    CardStatus,
    Limit,
    LimitUnit,
    OnBreach,
    Period,
    ProductGroup,
    Scope,
    mask_card_no,
)
from authz.localtime import local_date, zone
from host import alerts, documents, master, reports
from host import card_rules as CR
from host import fleet_users as fu
from host.documents.queries import MAX_DETAIL_DAYS
from host.errors import Conflict, InvalidInput, NotFound
from host.ledger import Ledger
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

__all__ = ["BREACH_NAMES", "GROUP_NAMES", "PERIOD_NAMES", "add_routes", "controls_from_form", "limit_from_form"]

REALM = fu.REALM
DEVICE_COOKIE = "__Host-edgepos-device"

GROUP_NAMES = {ProductGroup.FUEL: "Топливо", ProductGroup.CAR_WASH: "Мойка", ProductGroup.HOTEL: "Гостиница",
               ProductGroup.SERVICE: "Сервис", ProductGroup.SHOP: "Магазин"}
PERIOD_NAMES = {Period.TRANSACTION: "на операцию", Period.DAY: "в сутки", Period.WEEK: "в неделю",
                Period.MONTH: "в месяц", Period.QUARTER: "в квартал", Period.YEAR: "в год",
                Period.LIFETIME: "без обновления"}
BREACH_NAMES = {OnBreach.DECLINE: "отказать", OnBreach.ALERT: "разрешить и сообщить"}
_PERIODS = {p.name.lower(): p for p in Period}
_UNITS = {"rub": LimitUnit.KOPECKS, "litres": LimitUnit.MILLILITRES, "purchases": LimitUnit.PURCHASES}
_BREACH = {b.name.lower(): b for b in OnBreach}


def _device_cookie_name(request: web.Request) -> str:
    return DEVICE_COOKIE if request.app[CFG].secure_cookies else DEVICE_COOKIE.removeprefix("__Host-")


async def _uid(request: web.Request) -> int:
    key = await signed_in(request, REALM)
    if key is None:
        raise web.HTTPSeeOther("/fleet/login")
    try:
        u = await call(request, fu.user, int(key))
    except NotFound:
        u = None
    if u is None or u.status != "active":  # blocked since: the session is dead at once
        await sign_out(request)
        raise web.HTTPSeeOther("/fleet/login")
    return u.user_id


# -- registration, activation, sign-in ----------------------------------------------------------

async def register_page(request: web.Request) -> web.Response:
    return await render(request, "fleet/register.html", {"error": None, "done": False, "values": {}})


async def register(request: web.Request) -> web.Response:
    f = await form(request)
    try:
        login = F.login(f)
        email = F.email(f)
        company = F.text(f, "company", hi=200, required=False)
        password = F.text(f, "password", lo=1, hi=200)
        if password != f.get("password2", ""):
            raise F.FieldError("password2", "пароли не совпадают")
        try:
            check_new_password(password, login=login, email=email)
        except InvalidInput as exc:
            raise F.FieldError("password", str(exc).split(": ", 1)[-1]) from None
        await call(request, fu.register, request.app[HASHER], login=login, email=email, password=password,
                   company=company, base_url=request.app[CFG].base_url)
    except F.FieldError as exc:
        return await render(request, "fleet/register.html", {"error": exc, "done": False,
                                                             "values": {k: f.get(k, "") for k in ("login", "email", "company")}},
                            status=400)
    # the same answer whether or not the login or e-mail was taken
    return await render(request, "fleet/register.html", {"error": None, "done": True, "values": {}})


async def activate_page(request: web.Request) -> web.Response:
    # GET changes nothing: the page's button POSTs the link
    return await render(request, "fleet/activate.html", {"link": request.match_info["link"], "result": None})


async def activate(request: web.Request) -> web.Response:
    ok = await call(request, fu.activate, request.match_info["link"], address=address(request))
    return await render(request, "fleet/activate.html", {"link": "", "result": ok}, status=200 if ok else 400)


async def login_page(request: web.Request) -> web.Response:
    return await render(request, "fleet/login.html", {"error": None})


async def login(request: web.Request) -> web.Response:
    f = await form(request)
    try:
        name = F.text(f, "login", hi=64).lower()
        password = F.text(f, "password", hi=200)
    except F.FieldError as exc:
        return await render(request, "fleet/login.html", {"error": str(exc)}, status=400)
    res = await call(request, fu.sign_in, request.app[HASHER], name, password, address=address(request),
                     device_token=request.cookies.get(_device_cookie_name(request)))
    if res.retry_after_s:
        return await render(request, "fleet/login.html", {
            "error": f"Слишком много попыток. Повторите через {max(1, res.retry_after_s // 60)} мин."}, status=429)
    if res.user is None:
        return await render(request, "fleet/login.html", {"error": "Неверный логин или пароль"}, status=400)
    await sign_in_session(request, REALM, str(res.user.user_id), pending="totp" if res.needs_totp else None)
    resp = see_other("/fleet/totp" if res.needs_totp else "/fleet")
    if not res.needs_totp:
        await _trust_device(request, resp, res.user.user_id)
    raise resp


async def _trust_device(request: web.Request, resp: web.StreamResponse, user_id: int) -> None:
    from host import ratelimit
    now_token = await call(request, lambda led: led.db.run(
        lambda db: ratelimit.trust_device(db, REALM, str(user_id), now=led.now())))
    resp.set_cookie(_device_cookie_name(request), now_token, max_age=180 * 86400, path="/",
                    secure=request.app[CFG].secure_cookies, httponly=True, samesite="Strict")


async def totp_page(request: web.Request) -> web.Response:
    return await render(request, "fleet/totp.html", {"error": None})


async def totp(request: web.Request) -> web.Response:
    s = await session(request)
    if s.get("realm") != REALM or s.get("pending") != "totp":
        raise see_other("/fleet/login")
    f = await form(request)
    code = f.get("totp", "").strip()
    ok = await call(request, fu.check_totp, int(s["uid"]), code, address=address(request))
    if ok is True:
        uid = int(s["uid"])
        await sign_in_session(request, REALM, str(uid))
        resp = see_other("/fleet")
        await _trust_device(request, resp, uid)
        raise resp
    msg = "Слишком много попыток, подождите" if ok is not False else "Код не подходит"
    return await render(request, "fleet/totp.html", {"error": msg}, status=429 if ok is not False else 400)


async def logout(request: web.Request) -> web.Response:
    await sign_out(request)
    raise see_other("/fleet/login")


# -- contracts and cards -------------------------------------------------------------------------

def _overview(led: Ledger, uid: int) -> list[dict]:
    out = []
    for cid in fu.contracts_of(led, uid):
        c = led.contract(cid)
        out.append({"id": cid, "name": led.contract_name(cid), "balance": c.balance_kop, "credit": c.credit_line_kop,
                    "available": c.balance_kop + c.credit_line_kop, "cards": len(led.contract_cards(cid))})
    return out


async def home(request: web.Request) -> web.Response:
    uid = await _uid(request)
    user = await call(request, fu.user, uid)
    contracts = await call(request, _overview, uid)
    return await render(request, "fleet/home.html", {"user": user, "contracts": contracts, "error": None,
                                                    "linked": request.query.get("linked")})


async def link(request: web.Request) -> web.Response:
    uid = await _uid(request)
    f = await form(request)
    try:
        cid = F.integer(f, "contract", lo=1)
        code = F.text(f, "code", hi=32)
    except F.FieldError as exc:
        return await _home_error(request, uid, str(exc))
    ok = await call(request, fu.link_contract, uid, cid, code, address=address(request))
    if not ok:
        return await _home_error(request, uid, "Договор не привязан: проверьте номер и код (или попробуйте позже)")
    raise see_other(f"/fleet?linked={cid}")


async def _home_error(request: web.Request, uid: int, msg: str) -> web.Response:
    user = await call(request, fu.user, uid)
    contracts = await call(request, _overview, uid)
    return await render(request, "fleet/home.html", {"user": user, "contracts": contracts, "error": msg,
                                                    "linked": None}, status=400)


def _contract_view(led: Ledger, uid: int, cid: int) -> dict:
    fu.owns_contract(led, uid, cid)
    c = led.contract(cid)
    stop = led.stop_list()
    cards = [{"no": k.card_no, "masked": mask_card_no(k.card_no), "status": k.status, "stopped": k.card_no in stop,
              "expires": k.expires_on.isoformat(), "groups": [GROUP_NAMES[g] for g in sorted(k.groups)],
              "limits": len(k.limits)} for k in led.contract_cards(cid)]
    exceptions = [{"masked": a.card, "rule": _RULE_NAMES.get(a.reason, a.reason), "limit_id": a.limit_id,
                   "at": local_datetime_text(a.at_utc_s, c.tz), "station": a.station_id, "product": a.product,
                   "volume_ml": a.volume_ml, "amount_kop": a.amount_kop}
                  for a in alerts.rule_alerts(led.db, None, contract_id=cid)[-RULE_ALERTS_SHOWN:]]
    return {"contract": c, "name": led.contract_name(cid), "available": c.balance_kop + c.credit_line_kop,
            "cards": cards, "today": local_date(led.now(), c.tz), "exceptions": exceptions}


#: The latest approve-and-alert exceptions a contract's page lists (host.alerts keeps them all).
RULE_ALERTS_SHOWN = 50
_RULE_NAMES = {"PRODUCT_NOT_ALLOWED": "продукт вне списка", "STATION_NOT_ALLOWED": "станция вне списка",
               "OUTSIDE_TIME_WINDOW": "вне разрешённого времени", "LIMIT": "лимит превышен",
               "LIMIT_EXHAUSTED": "лимит исчерпан"}


def local_datetime_text(at_utc_s: int, tz: str) -> str:
    """``YYYY-MM-DD HH:MM`` of a UTC time in the zone ``tz``."""
    return datetime.fromtimestamp(at_utc_s, UTC).astimezone(zone(tz)).strftime("%Y-%m-%d %H:%M")


def _contract_id(request: web.Request) -> int:
    raw = request.match_info["cid"]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise NotFound("no contract")
    return int(raw)


async def contract(request: web.Request) -> web.Response:
    uid = await _uid(request)
    v = await call(request, _contract_view, uid, _contract_id(request))
    return await render(request, "fleet/contract.html", v)


def _card_view(led: Ledger, uid: int, card_no: str) -> dict:
    card = fu.card_of(led, uid, card_no)
    counters = led.counters(card_no)
    limits = []
    for lim in card.limits:
        c = counters.get(lim.limit_id)
        limits.append({"lim": lim, "spent": None if c is None else c.spent, "text": limit_text(lim)})
    return {"card": card, "masked": mask_card_no(card_no), "limits": limits, "blocked": card.status is CardStatus.BLOCKED,
            "groups": [(g.name.lower(), GROUP_NAMES[g]) for g in sorted(card.groups)], "all_groups": GROUP_NAMES,
            "periods": PERIOD_NAMES, "products": sorted(led.products()), "breaches": BREACH_NAMES,
            "controls": {"products": CR.products_text(card.products),
                         "windows": "\n".join(CR.window_text(w) for w in card.windows),
                         "stations": CR.stations_text(card), "on_breach": card.on_breach.name.lower()}}


def limit_text(lim: Limit) -> str:
    """A limit as the cabinet shows it: ``200.000 л в сутки (Топливо)``, ``30 покуп. в квартал
    (все товары), разрешить и сообщить``."""
    if lim.unit is LimitUnit.MILLILITRES:
        amount = f"{reports.litres(lim.amount)} л"
    elif lim.unit is LimitUnit.PURCHASES:
        amount = f"{lim.amount} покуп."
    else:
        amount = f"{reports.rub(lim.amount)} ₽"
    scope = {Scope.ALL: "все товары", Scope.GROUP: GROUP_NAMES.get(lim.group, "?") if lim.group is not None else "?",
             Scope.PRODUCT: f"продукт {lim.product}"}[lim.scope]
    alert = f", {BREACH_NAMES[OnBreach.ALERT]}" if lim.on_breach is OnBreach.ALERT else ""
    return f"{amount} {PERIOD_NAMES[lim.period]} ({scope}){alert}"


async def card_page(request: web.Request, *, error: str | None = None, status: int = 200) -> web.Response:
    uid = await _uid(request)
    v = await call(request, _card_view, uid, request.match_info["card"])
    return await render(request, "fleet/card.html", {**v, "error": error}, status=status)


def limit_from_form(f: dict[str, str]) -> Limit:
    """The limit a limit form describes (FieldError naming the bad field)."""
    limit_id = F.integer(f, "limit_id", lo=0, hi=2**31 - 1)
    unit = F.choice(f, "unit", _UNITS)
    if unit is LimitUnit.MILLILITRES:
        amount = F.litres(f, "amount")
    elif unit is LimitUnit.PURCHASES:
        amount = F.integer(f, "amount", lo=0, hi=10**9)
    else:
        amount = F.rub(f, "amount")
    period = F.choice(f, "period", _PERIODS)
    breach = F.choice(f, "on_breach", _BREACH) if f.get("on_breach") else OnBreach.DECLINE
    scope_text = F.text(f, "scope", hi=40, required=False) or "all"
    head = (limit_id, unit, period, amount)
    if scope_text == "all":
        return Limit(*head, on_breach=breach)  # type: ignore[arg-type]
    kind, _, what = scope_text.partition(":")
    if kind == "group":
        groups = {g.name.lower(): g for g in ProductGroup}
        if what not in groups:
            raise F.FieldError("scope", "группа: " + ", ".join(groups))
        return Limit(*head, Scope.GROUP, groups[what], on_breach=breach)  # type: ignore[arg-type]
    if kind == "product" and what:
        return Limit(*head, Scope.PRODUCT, None, what, on_breach=breach)  # type: ignore[arg-type]
    raise F.FieldError("scope", "all, group:<группа> или product:<код>")


def controls_from_form(f: dict[str, str]) -> dict:
    """The controls a controls form sets (every one: the form shows them all), as
    ``master.change_card_controls`` keywords; InvalidInput naming the bad text."""
    raw = f.get("windows") or ""
    lines = [F.text({"windows": line}, "windows", hi=200) for line in re.split(r"[\r\n;]+", raw) if line.strip()]
    if len(lines) > 64:
        raise F.FieldError("windows", "не более 64 окон")
    out: dict = {"products": CR.parse_products(F.text(f, "products", hi=2_000, required=False) or "all"),
                 "windows": tuple(CR.parse_window(line) for line in lines),
                 "on_breach": F.choice(f, "on_breach", _BREACH)}
    out["station_scope"], out["station_ids"] = CR.parse_stations(
        F.text(f, "stations", hi=2_000, required=False) or "network")
    return out


async def _change_card(request: web.Request, parse: Callable[[dict[str, str]], Any],
                       change: Callable[[Ledger, str, Any], object]) -> web.Response:
    """A card form's POST: ``parse(form)`` then ``change(ledger, card_no, parsed)`` on a card
    of the manager's company; a refusal is the card page with the host's message (400)."""
    uid = await _uid(request)
    card_no = request.match_info["card"]
    f = await form(request)
    try:
        value = parse(f)
        await call(request, lambda led: (fu.card_of(led, uid, card_no), change(led, card_no, value)))
    except (InvalidInput, Conflict) as exc:
        return await card_page(request, error=str(exc), status=400)
    raise see_other(f"/fleet/cards/{card_no}")


async def set_controls(request: web.Request) -> web.Response:
    return await _change_card(request, controls_from_form,
                              lambda led, no, changes: master.change_card_controls(led, no, **changes))


async def set_limit(request: web.Request) -> web.Response:
    return await _change_card(request, limit_from_form, master.set_limit)


async def remove_limit(request: web.Request) -> web.Response:
    uid = await _uid(request)
    card_no = request.match_info["card"]
    raw = request.match_info["lid"]
    if not raw.isdigit() or len(raw) > 10:
        raise NotFound("no limit")
    await call(request, lambda led: (fu.card_of(led, uid, card_no), master.remove_limit(led, card_no, int(raw))))
    raise see_other(f"/fleet/cards/{card_no}")


async def block(request: web.Request) -> web.Response:
    uid = await _uid(request)
    card_no = request.match_info["card"]
    await call(request, lambda led: (fu.card_of(led, uid, card_no),
                                     master.block_card(led, card_no, reason="fleet cabinet")))
    raise see_other(f"/fleet/cards/{card_no}")


async def unblock(request: web.Request) -> web.Response:
    uid = await _uid(request)
    card_no = request.match_info["card"]
    await call(request, lambda led: (fu.card_of(led, uid, card_no), master.unblock_card(led, card_no)))
    raise see_other(f"/fleet/cards/{card_no}")


# -- transactions and statements -----------------------------------------------------------------

def _period(q: dict[str, str], today: date) -> tuple[date, date]:
    first = F.birth_date(q, "from") if q.get("from") else today.replace(day=1)
    last = F.birth_date(q, "to") if q.get("to") else today
    if last < first:
        raise F.FieldError("to", "раньше даты «С даты»")
    if (last - first).days >= MAX_DETAIL_DAYS:
        raise F.FieldError("to", "период не длиннее года")
    return first, last


#: lines on one page of the cabinet's transaction detail
DETAIL_PAGE = 50


def _txns(led: Ledger, uid: int, cid: int, q: dict[str, str]) -> dict:
    """A page of the contract's transaction detail (host.documents.transaction_detail) for
    the query's period, card and cursor, with what the page's form and links need."""
    fu.owns_contract(led, uid, cid)
    c = led.contract(cid)
    first, last = _period(q, local_date(led.now(), c.tz))
    card = q.get("card") or ""
    cursor = q.get("cursor") or None
    try:
        page = documents.transaction_detail(led, cid, first, last, card_no=card or None, cursor=cursor,
                                            limit=DETAIL_PAGE)
    except InvalidInput as exc:
        if str(exc).startswith("not a page cursor"):
            raise F.FieldError("cursor", "ссылка на страницу устарела, откройте детализацию заново") from None
        raise
    return {"cid": cid, "first": first, "last": last, "page": page, "lines": page.lines, "card": card,
            "paged": cursor is not None, "cards": [(k.card_no, mask_card_no(k.card_no)) for k in led.contract_cards(cid)]}


async def transactions(request: web.Request) -> web.StreamResponse:
    uid = await _uid(request)
    q = dict(request.query)
    if q.get("format") == "csv":  # the whole period as the documents' CSV (docs/documents.md)
        raise see_other(f"/fleet/contracts/{_contract_id(request)}/documents/detail.csv?"
                        + urllib.parse.urlencode({k: q[k] for k in ("from", "to", "card") if q.get(k)}))
    v = await call(request, _txns, uid, _contract_id(request), q)
    return await render(request, "fleet/transactions.html", v)


def _month(q: dict[str, str], today: date) -> tuple[int, int]:
    raw = q.get("month") or f"{today.year:04d}-{today.month:02d}"
    parts = raw.split("-")
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts) or not 1 <= int(parts[1]) <= 12 \
            or not 2000 <= int(parts[0]) <= 2100:
        raise F.FieldError("month", "месяц в виде ГГГГ-ММ")
    return int(parts[0]), int(parts[1])


def _statement(led: Ledger, uid: int, cid: int, q: dict[str, str]) -> dict:
    fu.owns_contract(led, uid, cid)
    c = led.contract(cid)
    y, m = _month(q, local_date(led.now(), c.tz))
    return {"cid": cid, "year": y, "month": m, "st": reports.statement(led, cid, y, m),
            "days": calendar.monthrange(y, m)[1]}


async def statement(request: web.Request) -> web.StreamResponse:
    uid = await _uid(request)
    q = dict(request.query)
    v = await call(request, _statement, uid, _contract_id(request), q)
    if q.get("format") == "csv":
        return _csv(reports.to_csv(v["st"]), f"statement-{v['cid']}-{v['year']:04d}-{v['month']:02d}.csv")
    return await render(request, "fleet/statement.html", v)


def _csv(text: str, name: str) -> web.Response:
    return web.Response(body=("\ufeff" + text).encode("utf-8"), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


# -- security and API tokens ---------------------------------------------------------------------

async def security_page(request: web.Request, *, error: str | None = None, token: str | None = None,
                        status: int = 200) -> web.Response:
    uid = await _uid(request)
    user = await call(request, fu.user, uid)
    tokens = await call(request, fu.api_tokens, uid)
    s = await session(request)
    secret = uri = None
    if not user.has_totp:
        secret, uri = s.get("totp_secret"), s.get("totp_uri")
        if not secret:
            secret, uri = fu.start_totp(user.login)
            s["totp_secret"], s["totp_uri"] = secret, uri
    return await render(request, "fleet/security.html", {"user": user, "tokens": tokens, "error": error,
                                                        "new_token": token, "totp_secret": secret, "totp_uri": uri,
                                                        "created": lambda t: datetime.fromtimestamp(t, UTC)
                                                        .strftime("%Y-%m-%d %H:%M UTC")}, status=status)


async def security(request: web.Request) -> web.Response:
    return await security_page(request)


async def change_password(request: web.Request) -> web.Response:
    uid = await _uid(request)
    f = await form(request)
    try:
        new = F.text(f, "password", hi=200)
        if new != f.get("password2", ""):
            raise F.FieldError("password2", "пароли не совпадают")
        await call(request, fu.change_password, request.app[HASHER], uid, f.get("old_password", ""), new)
    except InvalidInput as exc:
        return await security_page(request, error=str(exc), status=400)
    await sign_out(request)  # every session ended; sign in again with the new password
    raise see_other("/fleet/login")


async def enable_totp(request: web.Request) -> web.Response:
    uid = await _uid(request)
    s = await session(request)
    f = await form(request)
    secret = s.get("totp_secret")
    try:
        if not secret:
            raise F.FieldError("totp", "обновите страницу")
        await call(request, fu.enable_totp, uid, secret, F.digits(f, "totp", 6))
    except InvalidInput as exc:
        return await security_page(request, error=str(exc), status=400)
    s.pop("totp_secret", None)
    s.pop("totp_uri", None)
    raise see_other("/fleet/security")


async def create_token(request: web.Request) -> web.Response:
    uid = await _uid(request)
    f = await form(request)
    try:
        name = F.text(f, "name", hi=64)
    except F.FieldError as exc:
        return await security_page(request, error=str(exc), status=400)
    token = await call(request, fu.create_api_token, uid, name)
    return await security_page(request, token=token)


async def revoke_token(request: web.Request) -> web.Response:
    uid = await _uid(request)
    raw = request.match_info["tid"]
    if not raw.isdigit() or len(raw) > 18:
        raise NotFound("no token")
    await call(request, fu.revoke_api_token, uid, int(raw))
    raise see_other("/fleet/security")


def add_routes(app: web.Application) -> None:
    """Mount the fleet cabinet's routes."""
    r = app.router
    r.add_get("/fleet/register", register_page)
    r.add_post("/fleet/register", register)
    r.add_get("/fleet/activate/{link}", activate_page)
    r.add_post("/fleet/activate/{link}", activate)
    r.add_get("/fleet/login", login_page)
    r.add_post("/fleet/login", login)
    r.add_get("/fleet/totp", totp_page)
    r.add_post("/fleet/totp", totp)
    r.add_post("/fleet/logout", logout)
    r.add_get("/fleet", home)
    r.add_post("/fleet/link", link)
    r.add_get("/fleet/contracts/{cid}", contract)
    r.add_get("/fleet/contracts/{cid}/transactions", transactions)
    r.add_get("/fleet/contracts/{cid}/statement", statement)
    r.add_get("/fleet/cards/{card}", card_page)
    r.add_post("/fleet/cards/{card}/limits", set_limit)
    r.add_post("/fleet/cards/{card}/controls", set_controls)
    r.add_post("/fleet/cards/{card}/limits/{lid}/remove", remove_limit)
    r.add_post("/fleet/cards/{card}/block", block)
    r.add_post("/fleet/cards/{card}/unblock", unblock)
    r.add_get("/fleet/security", security)
    r.add_post("/fleet/password", change_password)
    r.add_post("/fleet/totp/enable", enable_totp)
    r.add_post("/fleet/tokens", create_token)
    r.add_post("/fleet/tokens/{tid}/revoke", revoke_token)
