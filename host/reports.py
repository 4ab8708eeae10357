"""Reports per contract: transaction detail over a period, and the monthly statement.

Days and months are the contract's own (its time zone), as the limits' periods are. Money
is kopecks and volume millilitres in the values; :func:`to_csv` writes them as rubles and
litres with exact decimals (no floats), :func:`to_table` lays them out for a terminal.
A report is built from the ledger as it is: records that arrive late (a site offline for a
day) change a past period's report, which is why documents are issued on the 5th.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Sequence

from authz.fuel_model import mask_card_no
from authz.localtime import zone

from .ledger import Ledger

__all__ = ["TxnLine", "Statement", "StatementLine", "transactions", "statement", "to_csv", "to_table",
           "rub", "litres", "local_bounds"]


def rub(kop: int) -> str:
    """``1234567`` -> ``"12345.67"`` (exact)."""
    sign = "-" if kop < 0 else ""
    kop = abs(kop)
    return f"{sign}{kop // 100}.{kop % 100:02d}"


def litres(ml: int) -> str:
    """``40500`` -> ``"40.500"``."""
    sign = "-" if ml < 0 else ""
    ml = abs(ml)
    return f"{sign}{ml // 1000}.{ml % 1000:03d}"


def local_bounds(first: date, last: date, tz: str) -> tuple[int, int]:
    """UTC seconds [start, end) of local days ``first``..``last`` in ``tz``."""
    z = zone(tz)
    start = datetime.combine(first, time(0), z).astimezone(timezone.utc)
    end = datetime.combine(last + timedelta(days=1), time(0), z).astimezone(timezone.utc)
    return int(start.timestamp()), int(end.timestamp())


def _local(at_utc_s: int, tz: str) -> str:
    return datetime.fromtimestamp(at_utc_s, timezone.utc).astimezone(zone(tz)).strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True, slots=True)
class TxnLine:
    """One purchase of a contract's card."""

    at_local: str
    at_utc_s: int
    site_id: str
    station_id: int | None
    card_no: str
    product: str | None
    volume_ml: int
    unit_price_kop_per_l: int | None
    amount_kop: int
    record_id: str


def transactions(ledger: Ledger, contract_id: int, first: date, last: date) -> list[TxnLine]:
    """Every purchase (``fuel.completed``) of ``contract_id`` from local day ``first`` to
    ``last`` inclusive, in time order. Raises NotFound for an unknown contract."""
    c = ledger.contract(contract_id)
    start, end = local_bounds(first, last, c.tz)
    out = []
    for rid, site, at, card, product, amount, volume, body in ledger.db.fetchall(
            "SELECT record_id, site_id, at_utc_s, card_no, product, amount_kop, volume_ml, body FROM records "
            "WHERE contract_id = ? AND at_utc_s >= ? AND at_utc_s < ? AND kind = 'fuel.completed' "
            "ORDER BY at_utc_s, record_id", (contract_id, start, end)):
        b = json.loads(body)
        req, dec = b.get("request") or {}, b.get("decision") or {}
        out.append(TxnLine(_local(at, c.tz), at, site, req.get("station_id"), card, product, volume or 0,
                           dec.get("unit_price_kop_per_l"), amount or 0, rid))
    return out


@dataclass(frozen=True, slots=True)
class StatementLine:
    """Purchases of one product in the month."""

    product: str
    count: int
    volume_ml: int
    amount_kop: int


@dataclass(frozen=True, slots=True)
class Statement:
    """A contract's month: opening balance, credits, purchases by product, closing balance."""

    contract_id: int
    name: str
    month: str  #: "YYYY-MM"
    tz: str
    opening_kop: int
    topups_kop: int
    adjustments_kop: int
    purchases: tuple[StatementLine, ...]
    purchases_kop: int
    closing_kop: int


def statement(ledger: Ledger, contract_id: int, year: int, month: int) -> Statement:
    """The statement of ``contract_id`` for one calendar month of its time zone.

    opening = the balance now less every movement since the month began; closing = opening +
    the month's movements (``contract_entries``: opening, top-ups, purchases, adjustments)."""
    c = ledger.contract(contract_id)
    first = date(year, month, 1)
    last = (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    start, end = local_bounds(first, last, c.tz)
    db = ledger.db
    with db.transaction(write=False, snapshot=True):
        balance = db.scalar("SELECT balance_kop FROM contracts WHERE contract_id = ?", (contract_id,), 0)
        name = db.scalar("SELECT name FROM contracts WHERE contract_id = ?", (contract_id,), "")
        since = db.scalar("SELECT sum(amount_kop) FROM contract_entries WHERE contract_id = ? AND at_utc_s >= ?",
                          (contract_id, start), 0)
        by_kind = dict(db.fetchall("SELECT kind, sum(amount_kop) FROM contract_entries WHERE contract_id = ? "
                                   "AND at_utc_s >= ? AND at_utc_s < ? GROUP BY kind", (contract_id, start, end)))
        lines = db.fetchall("SELECT product, count(*), sum(volume_ml), sum(amount_kop) FROM records "
                            "WHERE contract_id = ? AND at_utc_s >= ? AND at_utc_s < ? AND kind = 'fuel.completed' "
                            "GROUP BY product ORDER BY product", (contract_id, start, end))
    opening = int(balance) - int(since)
    month_total = sum(int(v) for v in by_kind.values())
    purchases = tuple(StatementLine(p or "?", int(n), int(v or 0), int(a or 0)) for p, n, v, a in lines)
    return Statement(contract_id, name, f"{year:04d}-{month:02d}", c.tz, opening,
                     int(by_kind.get("topup", 0)), int(by_kind.get("adjustment", 0) + by_kind.get("opening", 0)),
                     purchases, -int(by_kind.get("purchase", 0)), opening + month_total)


def _txn_rows(lines: Sequence[TxnLine], mask: bool) -> tuple[list[str], list[list[str]]]:
    head = ["time (local)", "site", "station", "card", "product", "litres", "price RUB/L", "amount RUB"]
    rows = [[t.at_local, t.site_id, "" if t.station_id is None else str(t.station_id),
             mask_card_no(t.card_no) if mask else t.card_no, t.product or "", litres(t.volume_ml),
             "" if t.unit_price_kop_per_l is None else rub(t.unit_price_kop_per_l), rub(t.amount_kop)] for t in lines]
    return head, rows


def _statement_rows(s: Statement) -> tuple[list[str], list[list[str]]]:
    head = ["item", "count", "litres", "amount RUB"]
    rows = [["opening balance", "", "", rub(s.opening_kop)], ["top-ups", "", "", rub(s.topups_kop)]]
    if s.adjustments_kop:
        rows.append(["adjustments", "", "", rub(s.adjustments_kop)])
    rows += [[f"purchases {p.product}", str(p.count), litres(p.volume_ml), rub(-p.amount_kop)] for p in s.purchases]
    rows += [["purchases total", str(sum(p.count for p in s.purchases)),
              litres(sum(p.volume_ml for p in s.purchases)), rub(-s.purchases_kop)],
             ["closing balance", "", "", rub(s.closing_kop)]]
    return head, rows


def to_csv(report: Statement | Sequence[TxnLine]) -> str:
    """The report as CSV (full card numbers: the contract's own document)."""
    head, rows = _statement_rows(report) if isinstance(report, Statement) else _txn_rows(report, mask=False)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    w.writerows(rows)
    return buf.getvalue()


def to_table(report: Statement | Sequence[TxnLine]) -> str:
    """The report as an aligned text table for a terminal (card numbers masked)."""
    if isinstance(report, Statement):
        head, rows = _statement_rows(report)
        title = f"Statement of contract {report.contract_id} {report.name}".rstrip() + f", {report.month} ({report.tz})"
    else:
        head, rows = _txn_rows(report, mask=True)
        title = f"{len(rows)} transactions"
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
    numeric = [all(_is_num(r[i]) for r in rows if r[i]) and bool(rows) for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric)).rstrip()
    out = [title, line(head), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows]
    return "\n".join(out) + "\n"


def _is_num(s: str) -> bool:
    return s.replace("-", "", 1).replace(".", "", 1).isdigit()
