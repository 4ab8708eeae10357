"""The fleet cabinet's document downloads: for a contract, the transaction detail of a
period, the monthly statement, and for a closed month the transaction report, the invoice
(счёт-фактура) and the reconciliation act, each as CSV or PDF, built by
:mod:`host.documents` (the same functions ``edgepos host document`` calls)."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from authz.localtime import local_date
from host import documents as D
from host import fleet_users as fu
from host.errors import InvalidInput, NotFound
from host.ledger import Ledger

from . import forms as F

__all__ = ["KINDS", "NAMES", "add_routes", "build"]

KINDS = ("detail", "statement", "report", "invoice", "act")
NAMES = {"detail": "Детализация операций", "statement": "Выписка за месяц", "report": "Отчёт по операциям",
         "invoice": "Счёт-фактура", "act": "Акт сверки"}


def build(led: Ledger, uid: int, cid: int, kind: str, q: dict[str, str]) -> D.Document:
    """The document ``kind`` of the user's contract ``cid`` for the query's month or period
    (the detail: ``from``, ``to`` and optionally one ``card``)."""
    fu.owns_contract(led, uid, cid)
    today = local_date(led.now(), led.contract(cid).tz)
    if kind == "detail":
        first = F.birth_date(q, "from") if q.get("from") else today.replace(day=1)
        last = F.birth_date(q, "to") if q.get("to") else today
        lines: list = []
        cursor = None
        while True:
            page = D.transaction_detail(led, cid, first, last, card_no=q.get("card") or None, cursor=cursor,
                                        limit=D.MAX_PAGE)
            lines += page.lines
            cursor = page.next_cursor
            if cursor is None:
                return dataclasses.replace(page, lines=tuple(lines))
    try:
        month = D.Month.parse(q.get("month") or f"{today.year:04d}-{today.month:02d}")
    except InvalidInput:
        raise F.FieldError("month", "месяц в виде ГГГГ-ММ") from None
    if kind == "statement":
        return D.statement(led, cid, month)
    if kind == "report":
        return D.transaction_report(led, cid, month)
    if kind == "invoice":
        return D.invoice(led, cid, month)
    return D.reconciliation_act(led, cid, month)


def _file(led: Ledger, uid: int, cid: int, kind: str, fmt: str, q: dict[str, str]) -> tuple[bytes, str]:
    doc = build(led, uid, cid, kind, q)
    return D.render(doc, fmt), D.filename(doc, fmt)


async def download(request: web.Request) -> web.Response:
    from .common import call
    from .fleet import _contract_id, _uid
    uid = await _uid(request)
    kind, fmt = request.match_info["kind"], request.match_info["fmt"]
    if kind not in KINDS or fmt not in D.FORMATS:
        raise NotFound("no such document")
    data, name = await call(request, _file, uid, _contract_id(request), kind, fmt, dict(request.query))
    return web.Response(body=data, headers={"Content-Type": D.MEDIA_TYPES[fmt],
                                            "Content-Disposition": f'attachment; filename="{name}"'})


async def page(request: web.Request) -> web.Response:
    from .common import call, render
    from .fleet import _contract_id, _uid
    uid = await _uid(request)
    cid = _contract_id(request)

    def months(led: Ledger) -> list[str]:
        fu.owns_contract(led, uid, cid)
        today = local_date(led.now(), led.contract(cid).tz)
        out, y, m = [], today.year, today.month
        for _ in range(12):
            m -= 1
            if m == 0:
                y, m = y - 1, 12
            out.append(f"{y:04d}-{m:02d}")
        return out
    return await render(request, "fleet/documents.html", {"cid": cid, "months": await call(request, months),
                                                         "names": NAMES})


def add_routes(app: web.Application) -> None:
    """Mount the document routes."""
    app.router.add_get("/fleet/contracts/{cid}/documents", page)
    app.router.add_get("/fleet/contracts/{cid}/documents/{kind}.{fmt}", download)
