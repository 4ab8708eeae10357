"""Reads of a contract's transactions and balance movements for documents, paged.

A contract's movements are its ``contract_entries`` rows (opening, topup, purchase,
adjustment); a purchase's detail is the ``fuel.completed`` record the entry was charged
for (station, product, litres, prices). Detail and statements read the same rows, so the
detail of a month sums to the statement's purchases. Days and months are the contract's
own (its time zone). Pages go by a cursor (the last line's time and entry number), so a
page costs the same wherever it is in the month; the month's totals are sums over the
covering index ``contract_entries_month`` (schema v3), which the database reads alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime

from authz.fuel_model import mask_card_no
from authz.localtime import zone
from authz.money import amount_for_volume

from ..db import Database
from ..errors import InvalidInput, NotFound
from ..ledger import Ledger
from ..reports import local_bounds
from .model import DetailLine, DetailPage, Month, StatementEntry, StatementPage

__all__ = [
    "DEFAULT_PAGE",
    "MAX_DETAIL_DAYS",
    "MAX_PAGE",
    "contract_tz",
    "month_state",
    "purchases",
    "statement",
    "statement_page",
    "transaction_detail",
]

DEFAULT_PAGE = 50
MAX_PAGE = 1_000
MAX_DETAIL_DAYS = 366
_CURSOR = re.compile(r"([0-9]{1,19})\.([0-9]{1,19})")
_ENTRY = "e.entry_id, e.at_utc_s, e.amount_kop, e.kind, e.note, e.record_id"
_RECORD = "r.site_id, r.card_no, r.product, r.volume_ml, r.body"


def _local(at_utc_s: int, tz: str) -> str:
    return datetime.fromtimestamp(at_utc_s, UTC).astimezone(zone(tz)).strftime("%Y-%m-%d %H:%M:%S")


def _limit(limit: object) -> int:
    if type(limit) is not int or not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"a page holds 1 to {MAX_PAGE} lines, got {limit!r}")
    return limit


def _cursor(cursor: object) -> tuple[int, int] | None:
    if cursor is None:
        return None
    m = _CURSOR.fullmatch(cursor) if isinstance(cursor, str) else None
    if m is None:
        raise InvalidInput(f"not a page cursor of this listing: {str(cursor)[:40]!r}")
    return int(m.group(1)), int(m.group(2))


def _contract_id(contract_id: object) -> int:
    if type(contract_id) is not int or not 1 <= contract_id < 2**63:
        raise InvalidInput(f"a contract number is a positive whole number, got {str(contract_id)[:40]!r}")
    return contract_id


def contract_tz(db: Database, contract_id: int) -> tuple[str, str]:
    """(time zone, name) of the contract; NotFound for an unknown one."""
    row = db.fetchone("SELECT tz, name FROM contracts WHERE contract_id = ?", (_contract_id(contract_id),))
    if row is None:
        raise NotFound(f"no contract {contract_id}")
    return row[0], row[1]


def month_state(month: Month, tz: str, now_utc_s: int) -> bool:
    """True when ``month`` is over in ``tz`` at ``now_utc_s`` (closed: its documents can be
    issued), False while it runs; InvalidInput for a month that has not begun."""
    start, end = local_bounds(month.first_day, month.last_day, tz)
    if now_utc_s < start:
        raise InvalidInput(f"the month {month} has not begun yet in {tz}")
    return now_utc_s >= end


class _Names:
    """Station names and addresses and product names, loaded once per listing for the
    stations and products it shows."""

    def __init__(self, db: Database, station_ids: Sequence[int], products: Sequence[str]) -> None:
        self.stations = {r[0]: (r[1], r[2]) for r in db.select_in(
            "SELECT station_id, name, address FROM station_addresses WHERE station_id IN ({in})", sorted(set(station_ids)))}
        self.products = dict(db.select_in("SELECT code, name FROM products WHERE code IN ({in})", sorted(set(products))))


def _details(db: Database, rows: Sequence[tuple], tz: str) -> list[DetailLine | None]:
    """DetailLines of rows (entry columns, then record columns: None for a non-purchase)."""
    bodies = [json.loads(r[10]) if r[10] is not None else None for r in rows]
    stations = [((b.get("request") or {}).get("station_id") if b else None) for b in bodies]
    names = _Names(db, [s for s in stations if isinstance(s, int)], [r[8] for r in rows if r[8] is not None])
    out: list[DetailLine | None] = []
    for r, b, st in zip(rows, bodies, stations):
        if b is None:
            out.append(None)
            continue
        dec = b.get("decision") or {}
        price, listp = dec.get("unit_price_kop_per_l"), dec.get("list_price_kop_per_l")
        amount, volume = -r[2], r[9] or 0
        discount = max(amount_for_volume(volume, listp) - amount, 0) if isinstance(listp, int) else 0
        sname, saddr = names.stations.get(st, ("", "")) if isinstance(st, int) else ("", "")
        product = r[8] or ""
        out.append(DetailLine(r[5], r[1], _local(r[1], tz), r[7] or "", r[6], st if isinstance(st, int) else None,
                              sname, saddr, product, names.products.get(product, product), volume,
                              listp if isinstance(listp, int) else None, price if isinstance(price, int) else None,
                              discount, amount))
    return out


def _after(cursor: tuple[int, int] | None, start: int) -> tuple[int, str, list[object]]:
    """The range's lower bound and the condition of the rows after ``cursor``: one lower
    bound on the time (the later of the two), so the index range starts at the cursor."""
    if cursor is None:
        return start, "", []
    return max(start, cursor[0]), " AND (e.at_utc_s > ? OR e.entry_id > ?)", [cursor[0], cursor[1]]


def purchases(db: Database, contract_id: int, start: int, end: int, tz: str, *, card_no: str | None = None,
              cursor: tuple[int, int] | None = None, limit: int | None = None) -> tuple[list[DetailLine], tuple[int, int] | None]:
    """The contract's purchases charged in UTC [start, end), after ``cursor``, at most
    ``limit`` (all if None); with the cursor of the last one when more follow."""
    lower, where, params = _after(cursor, start)
    if card_no is not None:
        where, params = where + " AND r.card_no = ?", params + [card_no]
    sql = (f"SELECT {_ENTRY}, {_RECORD} FROM contract_entries e JOIN records r ON r.record_id = e.record_id "
           f"WHERE e.contract_id = ? AND e.at_utc_s >= ? AND e.at_utc_s < ? AND e.kind = 'purchase'{where} "
           "ORDER BY e.at_utc_s, e.entry_id")
    if limit is not None:
        sql += f" LIMIT {limit + 1}"
    rows = db.fetchall(sql, [contract_id, lower, end, *params])
    more = limit is not None and len(rows) > limit
    rows = rows[:limit] if limit is not None else rows
    lines = [d for d in _details(db, rows, tz) if d is not None]
    return lines, ((rows[-1][1], rows[-1][0]) if more else None)


def transaction_detail(ledger: Ledger, contract_id: int, first: date, last: date, *, card_no: str | None = None,
                       cursor: str | None = None, limit: int = DEFAULT_PAGE) -> DetailPage:
    """A page of the purchases of ``contract_id`` (of one card if ``card_no``) on local days
    ``first``..``last`` inclusive, in time order: date and time in the contract's time zone,
    station and address, product, litres, list price, price, discount, amount.

    Raises NotFound for an unknown contract or a card not of the contract, InvalidInput for
    a period backwards, longer than :data:`MAX_DETAIL_DAYS`, or starting after today, a
    bad cursor or page size."""
    limit, after = _limit(limit), _cursor(cursor)
    if not isinstance(first, date) or not isinstance(last, date) or isinstance(first, datetime) \
            or isinstance(last, datetime):
        raise InvalidInput("a period is two dates (first and last day)")
    if last < first:
        raise InvalidInput(f"the period ends ({last}) before it begins ({first})")
    if (last - first).days >= MAX_DETAIL_DAYS:
        raise InvalidInput(f"a period is at most {MAX_DETAIL_DAYS} days, got {(last - first).days + 1}")
    db = ledger.db
    with db.transaction(write=False, snapshot=True):
        tz, _ = contract_tz(db, contract_id)
        start, end = local_bounds(first, last, tz)
        if start > ledger.now():
            raise InvalidInput(f"the period begins ({first}) after today in {tz}")
        if card_no is not None and db.scalar("SELECT contract_id FROM fuel_cards WHERE card_no = ?",
                                             (card_no,)) != contract_id:
            raise NotFound(f"no card {mask_card_no(card_no)} on contract {contract_id}")
        lines, nxt = purchases(db, contract_id, start, end, tz, card_no=card_no, cursor=after, limit=limit)
    return DetailPage(contract_id, tz, first, last, card_no, tuple(lines),
                      None if nxt is None else f"{nxt[0]}.{nxt[1]}")


def statement_page(ledger: Ledger, contract_id: int, month: Month, *, cursor: str | None = None,
                   limit: int | None = DEFAULT_PAGE) -> StatementPage:
    """The monthly statement of ``contract_id`` for ``month`` of its time zone: opening
    balance, the month's credits and debits, closing balance, and a page of its movements
    (each with the balance after it; purchases with their detail). ``limit=None`` gives
    every movement.

    opening = the balance now less every movement since the month began; each line's
    balance = opening + the movements up to it. A month still running has
    ``complete=False``. Raises NotFound for an unknown contract, InvalidInput for a month
    not begun, a bad cursor or page size."""
    if not isinstance(month, Month):
        raise InvalidInput(f"a month is a Month, got {type(month).__name__}")
    after = _cursor(cursor)
    if limit is not None:
        limit = _limit(limit)
    db = ledger.db
    with db.transaction(write=False, snapshot=True):
        tz, name = contract_tz(db, contract_id)
        complete = month_state(month, tz, ledger.now())
        start, end = local_bounds(month.first_day, month.last_day, tz)
        balance = db.scalar("SELECT balance_kop FROM contracts WHERE contract_id = ?", (contract_id,), 0)
        count, month_sum = db.fetchone(
            "SELECT count(*), coalesce(sum(amount_kop), 0) FROM contract_entries "
            "WHERE contract_id = ? AND at_utc_s >= ? AND at_utc_s < ?", (contract_id, start, end)) or (0, 0)
        later = db.scalar("SELECT sum(amount_kop) FROM contract_entries WHERE contract_id = ? AND at_utc_s >= ?",
                          (contract_id, end), 0)
        credits = db.scalar("SELECT sum(amount_kop) FROM contract_entries WHERE contract_id = ? AND at_utc_s >= ? "
                            "AND at_utc_s < ? AND amount_kop > 0", (contract_id, start, end), 0)
        since, debits = int(month_sum) + int(later), int(credits) - int(month_sum)
        opening = int(balance) - int(since)
        running = opening
        if after is not None:
            running += int(db.scalar(
                "SELECT sum(amount_kop) FROM contract_entries WHERE contract_id = ? AND at_utc_s >= ? "
                "AND at_utc_s <= ? AND NOT (at_utc_s = ? AND entry_id > ?)",
                (contract_id, start, after[0], after[0], after[1]), 0))
        lower, where, params = _after(after, start)
        sql = (f"SELECT {_ENTRY}, {_RECORD} FROM contract_entries e LEFT JOIN records r ON r.record_id = e.record_id "
               f"WHERE e.contract_id = ? AND e.at_utc_s >= ? AND e.at_utc_s < ?{where} ORDER BY e.at_utc_s, e.entry_id")
        if limit is not None:
            sql += f" LIMIT {limit + 1}"
        rows = db.fetchall(sql, [contract_id, lower, end, *params])
        more = limit is not None and len(rows) > limit
        rows = rows[:limit] if limit is not None else rows
        details = _details(db, rows, tz)
    entries = []
    for r, d in zip(rows, details):
        running += r[2]
        entries.append(StatementEntry(r[0], r[1], _local(r[1], tz), r[3], r[2], running, r[4] or "", d))
    nxt = f"{rows[-1][1]}.{rows[-1][0]}" if more else None
    return StatementPage(contract_id, name, month, tz, complete, opening, int(credits), int(debits),
                         opening + int(credits) - int(debits), int(count), tuple(entries), nxt)


def statement(ledger: Ledger, contract_id: int, month: Month) -> StatementPage:
    """The whole monthly statement (every movement): :func:`statement_page` without pages."""
    return statement_page(ledger, contract_id, month, limit=None)


