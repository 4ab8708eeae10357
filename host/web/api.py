"""The fleet API (``/api/v1``): the fleet cabinet's functions as JSON over HTTP for
fleet-management software, after RN-Card's and Opti24's public APIs.

Authentication: ``Authorization: Bearer <token>`` with a company's token (created and
revoked in the cabinet, :mod:`host.fleet_users`); no cookies, so no CSRF. Lists take
``limit`` (1..500, default 100) and ``offset`` and answer ``{"items", "total", "next_offset"}``.
Every write takes an ``Idempotency-Key`` header (1..64 printable ASCII characters): a write
repeated with the same key and request gets the first answer again (status and body), the
same key with another request is 409. Writes are the master-data functions of
:mod:`host.master`, the same the cabinet and the admin CLI call. Bad input is 422 with
``{"error": {"field", "message"}}``; the description is :func:`host.web.openapi.document`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from aiohttp import web

from authz.fuel_model import (
    CardStatus,
    FuelCard,
    Limit,
    LimitUnit,
    OnBreach,
    Period,
    ProductGroup,
    Scope,
    StationScope,
)
from authz.localtime import local_date
from authz.money import MAX_AMOUNT_KOP, MAX_VOLUME_ML
from host import documents as D
from host import fleet_users as fu
from host import card_rules as CR
from host import master, reports
from host.db import Database
from host.errors import Conflict, InvalidInput, NotFound
from host.ledger import Ledger

from . import documents as web_documents
from . import openapi
from .common import call
from .forms import FieldError
from .forms import birth_date as parse_day

__all__ = ["add_routes"]

_PERIODS = {p.name.lower(): p for p in Period}
_GROUPS = {g.name.lower(): g for g in ProductGroup}
_UNITS = {"rub": LimitUnit.KOPECKS, "litres": LimitUnit.MILLILITRES, "purchases": LimitUnit.PURCHASES}
_BREACH = {b.name.lower(): b for b in OnBreach}
_UNIT_NAMES = {v: k for k, v in _UNITS.items()}
MAX_PAGE = 500
_PAGE_Q = frozenset({"limit", "offset"})
#: the query parameters each handler takes (any other is refused, 422)
_QUERY = {"contracts": _PAGE_Q, "contract_cards": _PAGE_Q,
          "transactions": _PAGE_Q | {"from", "to", "card_no"},
          "transaction_detail": {"from", "to", "card_no", "cursor", "limit"},
          "document": {"month", "format"}, "detail_document": {"from", "to", "format"}}
#: the monthly documents the API gives out (host.web.documents.build); the transaction
#: detail of a period is ``documents/detail``
MONTHLY_DOCUMENTS = ("statement", "report", "invoice", "act")

Handler = Callable[[web.Request, fu.FleetUser], Awaitable[web.StreamResponse]]


def _err(status: int, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"message": message}
    if field:
        body["field"] = field
    return web.json_response({"error": body}, status=status)


def _authed(fn: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    allowed = _QUERY.get(fn.__name__, frozenset())

    async def handler(request: web.Request) -> web.StreamResponse:
        for name in request.query:
            if name not in allowed:
                raise FieldError(name or "query", "unknown query parameter")
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        user = await call(request, fu.api_user, token) if token else None
        if user is None:
            return web.json_response({"error": {"message": "a valid API token is needed (Authorization: Bearer)"}},
                                     status=401, headers={"WWW-Authenticate": "Bearer"})
        return await fn(request, user)
    return handler


def _page(request: web.Request) -> tuple[int, int]:
    q = request.query
    out = []
    for name, default, lo, hi in (("limit", 100, 1, MAX_PAGE), ("offset", 0, 0, 10**9)):
        raw = q.get(name)
        if raw is None:
            out.append(default)
            continue
        if not raw.isascii() or not raw.isdigit() or not lo <= int(raw) <= hi:
            raise FieldError(name, f"a whole number {lo}..{hi}")
        out.append(int(raw))
    return out[0], out[1]


def _listing(items: list, limit: int, offset: int) -> dict:
    part = items[offset:offset + limit]
    nxt = offset + limit if offset + limit < len(items) else None
    return {"items": part, "total": len(items), "next_offset": nxt}


def _int_path(request: web.Request, name: str, hi: int = 2**63 - 1) -> int:
    raw = request.match_info[name]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not 0 <= int(raw) <= hi:
        raise NotFound(f"no {name}")
    return int(raw)


def _contract_json(led: Ledger, cid: int) -> dict:
    c = led.contract(cid)
    return {"contract_id": cid, "name": led.contract_name(cid), "tz": c.tz, "balance_kop": c.balance_kop,
            "credit_line_kop": c.credit_line_kop, "available_kop": c.balance_kop + c.credit_line_kop}


def _limit_json(lim: Limit) -> dict:
    return {"limit_id": lim.limit_id, "unit": _UNIT_NAMES[lim.unit], "amount": lim.amount,
            "period": lim.period.name.lower(), "scope": lim.scope.name.lower(),
            "group": None if lim.group is None else lim.group.name.lower(), "product": lim.product,
            "on_breach": lim.on_breach.name.lower()}


def _controls_json(card: FuelCard) -> dict:
    """A card's fleet controls: ``products`` (null: every product of its groups), ``windows``
    (``"mon-fri,07:00-19:00"``; empty: any time), ``stations`` (``"network"``,
    ``"home-region"`` or station ids), ``on_breach`` (``"decline"`` or ``"alert"``)."""
    stations: object = CR.stations_text(card)
    if card.station_scope is StationScope.LISTED:
        stations = sorted(card.station_ids)
    return {"products": None if card.products is None else sorted(card.products),
            "windows": [CR.window_text(w) for w in card.windows], "stations": stations,
            "on_breach": card.on_breach.name.lower()}


def _card_json(card: FuelCard, stop: dict[str, int] | None = None) -> dict:
    return {"card_no": card.card_no, "contract_id": card.contract_id, "status": card.status.name.lower(),
            "expires_on": card.expires_on.isoformat(), "groups": sorted(g.name.lower() for g in card.groups),
            "limits": [_limit_json(lim) for lim in card.limits], "controls": _controls_json(card)}


# -- reads ---------------------------------------------------------------------------------------

@_authed
async def contracts(request: web.Request, user: fu.FleetUser) -> web.Response:
    limit, offset = _page(request)
    items = await call(request, lambda led: [_contract_json(led, c) for c in fu.contracts_of(led, user.user_id)])
    return web.json_response(_listing(items, limit, offset))


@_authed
async def contract(request: web.Request, user: fu.FleetUser) -> web.Response:
    cid = _int_path(request, "contract_id")
    def read(led: Ledger) -> dict:
        fu.owns_contract(led, user.user_id, cid)
        return _contract_json(led, cid)
    return web.json_response(await call(request, read))


@_authed
async def contract_cards(request: web.Request, user: fu.FleetUser) -> web.Response:
    cid = _int_path(request, "contract_id")
    limit, offset = _page(request)
    def read(led: Ledger) -> list[dict]:
        fu.owns_contract(led, user.user_id, cid)
        return [_card_json(c) for c in led.contract_cards(cid)]
    items = await call(request, read)
    return web.json_response(_listing(items, limit, offset))


def _card_no(request: web.Request) -> str:
    raw = request.match_info["card_no"]
    if len(raw) != 16 or not raw.isascii() or not raw.isdigit():
        raise NotFound("no card")
    return raw


@_authed
async def card(request: web.Request, user: fu.FleetUser) -> web.Response:
    no = _card_no(request)
    return web.json_response(await call(request, lambda led: _card_json(fu.card_of(led, user.user_id, no))))


@_authed
async def transactions(request: web.Request, user: fu.FleetUser) -> web.Response:
    cid = _int_path(request, "contract_id")
    limit, offset = _page(request)
    q = request.query

    def read(led: Ledger) -> list[dict]:
        fu.owns_contract(led, user.user_id, cid)
        today = local_date(led.now(), led.contract(cid).tz)
        first = parse_day(q, "from") if "from" in q else today.replace(day=1)
        last = parse_day(q, "to") if "to" in q else today
        if last < first:
            raise FieldError("to", "is before from")
        if (last - first).days > 366:
            raise FieldError("to", "a period is at most a year")
        card_no = q.get("card_no")
        return [{"at_local": t.at_local, "at_utc_s": t.at_utc_s, "site_id": t.site_id, "station_id": t.station_id,
                 "card_no": t.card_no, "product": t.product, "volume_ml": t.volume_ml,
                 "unit_price_kop_per_l": t.unit_price_kop_per_l, "amount_kop": t.amount_kop, "record_id": t.record_id}
                for t in reports.transactions(led, cid, first, last) if not card_no or t.card_no == card_no]
    return web.json_response(_listing(await call(request, read), limit, offset))


def _detail_line_json(t: D.DetailLine) -> dict:
    return {"record_id": t.record_id, "at_utc_s": t.at_utc_s, "at_local": t.at_local, "card_no": t.card_no,
            "site_id": t.site_id, "station_id": t.station_id, "station_name": t.station_name,
            "station_address": t.station_address, "product": t.product, "product_name": t.product_name,
            "volume_ml": t.volume_ml, "list_price_kop_per_l": t.list_price_kop_per_l,
            "price_kop_per_l": t.price_kop_per_l, "discount_kop": t.discount_kop, "amount_kop": t.amount_kop}


def _good_cursor(raw: str) -> bool:
    parts = raw.split(".")
    return len(parts) == 2 and all(p.isascii() and p.isdigit() and 0 < len(p) <= 19 and int(p) < 2**63
                                   for p in parts)


@_authed
async def transaction_detail(request: web.Request, user: fu.FleetUser) -> web.Response:
    """A page of the contract's transaction detail (host.documents.transaction_detail): date
    and time in the contract's zone, station and address, product, prices, discount, amount;
    ``next_cursor`` (null: the last page) is passed back as ``cursor``."""
    cid = _int_path(request, "contract_id")
    q = request.query
    raw_limit = q.get("limit", str(D.DEFAULT_PAGE))
    if not raw_limit.isascii() or not raw_limit.isdigit() or not 1 <= int(raw_limit) <= D.MAX_PAGE:
        raise FieldError("limit", f"a whole number 1..{D.MAX_PAGE}")
    cursor = q.get("cursor")
    if cursor is not None and not _good_cursor(cursor):
        raise FieldError("cursor", "not a cursor of this listing (use next_cursor)")
    card_no = q.get("card_no")
    if card_no is not None and (len(card_no) != 16 or not card_no.isascii() or not card_no.isdigit()):
        raise FieldError("card_no", "16 digits")

    def read(led: Ledger) -> dict:
        fu.owns_contract(led, user.user_id, cid)
        today = local_date(led.now(), led.contract(cid).tz)
        first = parse_day(q, "from") if "from" in q else today.replace(day=1)
        last = parse_day(q, "to") if "to" in q else today
        try:
            page = D.transaction_detail(led, cid, first, last, card_no=card_no, cursor=cursor,
                                        limit=int(raw_limit))
        except InvalidInput as exc:
            if str(exc).startswith("not a page cursor"):
                raise FieldError("cursor", "not a cursor of this listing (use next_cursor)") from None
            raise
        return {"contract_id": cid, "tz": page.tz, "first": page.first.isoformat(), "last": page.last.isoformat(),
                "items": [_detail_line_json(t) for t in page.lines], "next_cursor": page.next_cursor}
    return web.json_response(await call(request, read))


def _document_format(request: web.Request) -> str:
    fmt = request.query.get("format", "pdf")
    if fmt not in D.FORMATS:
        raise FieldError("format", " or ".join(D.FORMATS))
    return fmt


async def _document_file(request: web.Request, user: fu.FleetUser, kind: str) -> web.Response:
    cid = _int_path(request, "contract_id")
    fmt = _document_format(request)
    q = dict(request.query)

    def build(led: Ledger) -> tuple[bytes, str]:
        doc = web_documents.build(led, user.user_id, cid, kind, q)
        return D.render(doc, fmt), D.filename(doc, fmt)
    data, name = await call(request, build)
    return web.Response(body=data, headers={"Content-Type": D.MEDIA_TYPES[fmt],
                                            "Content-Disposition": f'attachment; filename="{name}"'})


@_authed
async def detail_document(request: web.Request, user: fu.FleetUser) -> web.Response:
    """The contract's transaction detail of local days ``from``..``to`` as CSV or PDF
    (``format``, default pdf)."""
    return await _document_file(request, user, "detail")


@_authed
async def document(request: web.Request, user: fu.FleetUser) -> web.Response:
    """A monthly document of the contract as CSV or PDF (``format``, default pdf): the
    statement, the transaction report, the invoice or the reconciliation act (the last three
    only for a closed month: 409 otherwise)."""
    kind = request.match_info["kind"]
    if kind not in MONTHLY_DOCUMENTS:
        raise NotFound("no such document")
    return await _document_file(request, user, kind)


# -- writes --------------------------------------------------------------------------------------

def _idem_key(request: web.Request) -> str:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        raise FieldError("Idempotency-Key", "the header is required on every write")
    if not 1 <= len(key) <= 64 or not key.isascii() or not key.isprintable():
        raise FieldError("Idempotency-Key", "1..64 printable ASCII characters")
    return key


async def _idempotent(request: web.Request, user: fu.FleetUser, body: bytes,
                      write: Callable[[Ledger], tuple[int, dict]]) -> web.Response:
    key = _idem_key(request)
    req_hash = hashlib.sha256(request.method.encode() + b" " + request.path.encode() + b"\n" + body).hexdigest()

    def run(led: Ledger) -> tuple[int, dict]:
        row = led.db.fetchone("SELECT request_hash, status, body FROM web_idempotency WHERE user_id = ? AND key = ?",
                              (user.user_id, key))
        if row is not None:
            if row[0] != req_hash:
                return 409, {"error": {"field": "Idempotency-Key", "message": "this key was used for another request"}}
            return int(row[1]), json.loads(row[2])
        # each write here sets a state (a limit to a value, a card blocked): doing it twice
        # changes nothing more, so two concurrent first tries are harmless; the key's row
        # keeps the first answer for replays
        try:
            status, out = write(led)
        except FieldError as exc:
            status, out = 422, {"error": {"field": exc.field, "message": str(exc)}}
        except NotFound:
            status, out = 404, {"error": {"message": "not found"}}
        except (InvalidInput, Conflict) as exc:
            status, out = 409, {"error": {"message": str(exc)}}

        def store(db: Database) -> None:
            db.execute("INSERT INTO web_idempotency (user_id, key, request_hash, status, body, created_at_utc_s) "
                       "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, key) DO NOTHING",
                       (user.user_id, key, req_hash, status, json.dumps(out), led.now()))
        led.db.run(store)
        return status, out
    status, out = await call(request, run)
    return web.json_response(out, status=status)


def _json_object(body: bytes) -> dict:
    try:
        # numbers with a fraction or exponent parse exactly (Decimal), never as floats
        obj = json.loads(body, parse_float=Decimal) if body else None
    except (ValueError, UnicodeDecodeError):
        raise FieldError("body", "is not JSON") from None
    if not isinstance(obj, dict):
        raise FieldError("body", "a JSON object is expected")
    return obj


def _s(v: object) -> str:
    """A JSON value as a key to look up (a non-string is no key: "")."""
    return v if isinstance(v, str) else ""


def limit_from_json(limit_id: int, obj: dict) -> Limit:
    """The limit a PUT body describes; FieldError names the bad field."""
    unit = _s(obj.get("unit"))
    if unit not in _UNITS:
        raise FieldError("unit", "rub, litres or purchases")
    amount = obj.get("amount")
    if isinstance(amount, Decimal) and amount.is_finite() and amount == amount.to_integral_value():
        amount = int(amount)  # 922.0 is the whole number 922 (JSON has one number type)
    hi = MAX_VOLUME_ML if unit == "litres" else MAX_AMOUNT_KOP
    if type(amount) is not int or not 0 <= amount <= hi:
        what = {"litres": "millilitres", "purchases": "a count of purchases"}.get(unit, "kopecks")
        raise FieldError("amount", f"a whole number 0..{hi} ({what})")
    period = _s(obj.get("period"))
    if period not in _PERIODS:
        raise FieldError("period", "one of " + ", ".join(_PERIODS))
    breach = _s(obj.get("on_breach", "decline"))
    if breach not in _BREACH:
        raise FieldError("on_breach", "decline or alert")
    head = (limit_id, _UNITS[unit], _PERIODS[period], amount)
    scope = _s(obj.get("scope", "all"))
    if scope == "all":
        return Limit(*head, on_breach=_BREACH[breach])
    if scope == "group":
        g = _s(obj.get("group"))
        if g not in _GROUPS:
            raise FieldError("group", "one of " + ", ".join(_GROUPS))
        return Limit(*head, Scope.GROUP, _GROUPS[g], on_breach=_BREACH[breach])
    if scope == "product":
        p = obj.get("product")
        if not isinstance(p, str) or not 1 <= len(p) <= 32:
            raise FieldError("product", "a product code")
        return Limit(*head, Scope.PRODUCT, None, p, on_breach=_BREACH[breach])
    raise FieldError("scope", "all, group or product")


_CONTROL_FIELDS = frozenset({"products", "windows", "stations", "on_breach"})


def controls_from_json(obj: dict) -> dict:
    """The change a PUT .../controls body describes, as ``master.change_card_controls``
    keywords (a field not given: kept); FieldError names the bad field."""
    extra = sorted(set(obj) - _CONTROL_FIELDS)
    if extra:
        raise FieldError(extra[0][:40], "not a control: products, windows, stations, on_breach")
    out: dict = {}
    if "products" in obj:
        p = obj["products"]
        if p is not None and (not isinstance(p, list) or len(p) > 1_000
                              or not all(isinstance(c, str) and 1 <= len(c) <= 32 for c in p)):
            raise FieldError("products", "null (every product of the card's groups) or a list of product codes")
        out["products"] = None if p is None else frozenset(p)
    if "windows" in obj:
        w = obj["windows"]
        if not isinstance(w, list) or len(w) > 64 or not all(isinstance(x, str) and len(x) <= 200 for x in w):
            raise FieldError("windows", "a list of DAYS,HH:MM-HH:MM (mon-fri,07:00-19:00); empty: any time")
        try:
            out["windows"] = tuple(CR.parse_window(x) for x in w)
        except InvalidInput as exc:
            raise FieldError("windows", str(exc)) from None
    if "stations" in obj:
        st = obj["stations"]
        if isinstance(st, list):  # 1542.0 is the whole number 1542 (JSON has one number type)
            st = [int(x) if isinstance(x, Decimal) and x.is_finite() and x == x.to_integral_value() else x
                  for x in st]
        if st in ("network", "home-region"):
            out["station_scope"], out["station_ids"] = CR.parse_stations(st)
        elif isinstance(st, list) and 0 < len(st) <= 1_000 and all(type(x) is int and 0 <= x < 2**63 for x in st):
            out["station_scope"], out["station_ids"] = StationScope.LISTED, frozenset(st)
        else:
            raise FieldError("stations", '"network", "home-region" or a list of station ids')
    if "on_breach" in obj:
        b = _s(obj["on_breach"])
        if b not in _BREACH:
            raise FieldError("on_breach", "decline or alert")
        out["on_breach"] = _BREACH[b]
    return out


@_authed
async def put_controls(request: web.Request, user: fu.FleetUser) -> web.Response:
    no = _card_no(request)
    body = await request.read()
    _idem_key(request)
    changes = controls_from_json(_json_object(body))

    def write(led: Ledger) -> tuple[int, dict]:
        fu.card_of(led, user.user_id, no)
        return 200, _card_json(master.change_card_controls(led, no, **changes))
    return await _idempotent(request, user, body, write)


@_authed
async def put_limit(request: web.Request, user: fu.FleetUser) -> web.Response:
    no = _card_no(request)
    lid = _int_path(request, "limit_id", 2**31 - 1)
    body = await request.read()
    _idem_key(request)
    lim = limit_from_json(lid, _json_object(body))

    def write(led: Ledger) -> tuple[int, dict]:
        fu.card_of(led, user.user_id, no)
        return 200, _card_json(master.set_limit(led, no, lim))
    return await _idempotent(request, user, body, write)


@_authed
async def delete_limit(request: web.Request, user: fu.FleetUser) -> web.Response:
    no = _card_no(request)
    lid = _int_path(request, "limit_id", 2**31 - 1)

    def write(led: Ledger) -> tuple[int, dict]:
        fu.card_of(led, user.user_id, no)
        return 200, _card_json(master.remove_limit(led, no, lid))
    return await _idempotent(request, user, b"", write)


def _block(blocked: bool):  # type: ignore[no-untyped-def]
    @_authed
    async def handler(request: web.Request, user: fu.FleetUser) -> web.Response:
        no = _card_no(request)

        def write(led: Ledger) -> tuple[int, dict]:
            fu.card_of(led, user.user_id, no)
            if blocked:
                master.block_card(led, no, reason="fleet API")
            else:
                master.unblock_card(led, no)
            card = led.fuel_card(no)
            assert card.status is (CardStatus.BLOCKED if blocked else CardStatus.ACTIVE)
            return 200, _card_json(card)
        return await _idempotent(request, user, b"", write)
    return handler


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(openapi.document())


def add_routes(app: web.Application) -> None:
    """Mount the fleet API's routes."""
    r = app.router
    r.add_get("/api/v1/openapi.json", openapi_json)
    r.add_get("/api/v1/contracts", contracts)
    r.add_get("/api/v1/contracts/{contract_id}", contract)
    r.add_get("/api/v1/contracts/{contract_id}/cards", contract_cards)
    r.add_get("/api/v1/contracts/{contract_id}/transactions", transactions)
    r.add_get("/api/v1/contracts/{contract_id}/transaction-detail", transaction_detail)
    r.add_get("/api/v1/contracts/{contract_id}/documents/detail", detail_document)
    r.add_get("/api/v1/contracts/{contract_id}/documents/{kind}", document)
    r.add_get("/api/v1/cards/{card_no}", card)
    r.add_put("/api/v1/cards/{card_no}/limits/{limit_id}", put_limit)
    r.add_put("/api/v1/cards/{card_no}/controls", put_controls)
    r.add_delete("/api/v1/cards/{card_no}/limits/{limit_id}", delete_limit)
    r.add_post("/api/v1/cards/{card_no}/block", _block(True))
    r.add_post("/api/v1/cards/{card_no}/unblock", _block(False))
