"""The closed month's documents of a contract: the transaction report, the invoice
(счёт-фактура) and the reconciliation act (акт сверки).

A month is closed once it is over in the contract's time zone; its documents can be
produced from the 1st of the next month (the network issues them by the 5th, after late
batches of sites that were offline have arrived: a document is built from the ledger as it
is when asked, so one produced later includes records that arrived later).

VAT: the prices the network charges include VAT at 20%. Each invoice line is one product's
month: its amount with VAT is the sum the contract was charged for it (exact kopecks); its
VAT is that amount x 20/120 rounded half up to the kopeck; the amount without VAT is the
difference; the price without VAT (per litre or piece) is the amount without VAT divided by
the quantity, rounded half up, and shown only. The totals are the sums of the lines.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from authz.fuel_model import ProductGroup
from authz.localtime import zone

from ..errors import InvalidInput
from ..ledger import Ledger
from ..reports import local_bounds
from .model import (
    VAT_RATE_PCT,
    ActLine,
    DetailLine,
    Invoice,
    InvoiceLine,
    Month,
    ProductTotal,
    ReconciliationAct,
    TransactionReport,
)
from .queries import contract_tz, month_state, purchases
from .requisites import client_requisites, operator_requisites

__all__ = ["UNITS", "invoice", "invoice_number", "reconciliation_act", "transaction_report", "vat_of"]

#: (unit, OKEI code) by product group: litres for fuel, pieces for the rest.
UNITS = {"fuel": ("л", "112")}
_PIECE = ("шт", "796")


def vat_of(amount_kop: int, rate_pct: int = VAT_RATE_PCT) -> int:
    """The VAT inside ``amount_kop`` (an amount with VAT): amount x rate/(100+rate), rounded
    half up to the kopeck (``vat_of(12000) == 2000``, ``vat_of(1) == 0``, ``vat_of(3) == 1``)."""
    num, den = amount_kop * rate_pct, 100 + rate_pct
    return (2 * num + den) // (2 * den) if amount_kop >= 0 else -((2 * -num + den) // (2 * den))


def _half_up_div(num: int, den: int) -> int:
    return (2 * num + den) // (2 * den)


def invoice_number(contract_id: int, month: Month) -> str:
    """The invoice's number: ``<contract>-<YYYYMM>`` (one invoice per contract and month)."""
    return f"{contract_id}-{month.year:04d}{month.month:02d}"


def _closed(ledger: Ledger, contract_id: int, month: Month) -> tuple[str, int, int]:
    if not isinstance(month, Month):
        raise InvalidInput(f"a month is a Month, got {type(month).__name__}")
    tz, _ = contract_tz(ledger.db, contract_id)
    if not month_state(month, tz, ledger.now()):
        raise InvalidInput(f"the month {month} is not closed yet in {tz}: its documents are issued from "
                           f"{month.next().first_day}")
    start, end = local_bounds(month.first_day, month.last_day, tz)
    return tz, start, end


def _totals(lines: list[DetailLine]) -> tuple[ProductTotal, ...]:
    acc: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    names: dict[str, str] = {}
    for ln in lines:
        a = acc[ln.product]
        a[0] += 1
        a[1] += ln.volume_ml
        a[2] += ln.discount_kop
        a[3] += ln.amount_kop
        names[ln.product] = ln.product_name
    return tuple(ProductTotal(p, names[p], *acc[p]) for p in sorted(acc))


def transaction_report(ledger: Ledger, contract_id: int, month: Month) -> TransactionReport:
    """Every purchase of the closed ``month`` with the totals per product. Raises NotFound
    for an unknown contract, InvalidInput for a month not closed. A month without purchases
    gives a report without lines (totals 0)."""
    db = ledger.db
    with db.transaction(write=False, snapshot=True):
        tz, start, end = _closed(ledger, contract_id, month)
        lines, _ = purchases(db, contract_id, start, end, tz)
        seller, buyer = operator_requisites(db), client_requisites(db, contract_id)
    totals = _totals(lines)
    return TransactionReport(contract_id, month, tz, seller, buyer, tuple(lines), totals,
                             sum(t.volume_ml for t in totals), sum(t.discount_kop for t in totals),
                             sum(t.amount_kop for t in totals))


def invoice(ledger: Ledger, contract_id: int, month: Month) -> Invoice:
    """The closed ``month``'s invoice: one line per product bought (see the module's VAT
    rule). Raises NotFound for an unknown contract, InvalidInput for a month not closed."""
    db = ledger.db
    with db.transaction(write=False, snapshot=True):
        _, start, end = _closed(ledger, contract_id, month)
        rows = db.fetchall(
            "SELECT r.product, coalesce(p.name, r.product), p.grp, sum(r.volume_ml), -sum(e.amount_kop) "
            "FROM contract_entries e JOIN records r ON r.record_id = e.record_id "
            "LEFT JOIN products p ON p.code = r.product "
            "WHERE e.contract_id = ? AND e.at_utc_s >= ? AND e.at_utc_s < ? AND e.kind = 'purchase' "
            "GROUP BY r.product, p.name, p.grp ORDER BY r.product", (contract_id, start, end))
        seller, buyer = operator_requisites(db), client_requisites(db, contract_id)
    lines = []
    for code, name, grp, volume, amount in rows:
        volume, amount = int(volume or 0), int(amount or 0)
        fuel = grp is not None and int(grp) == int(ProductGroup.FUEL)
        unit, okei = UNITS["fuel"] if fuel else _PIECE
        vat = vat_of(amount)
        net = amount - vat
        price = _half_up_div(net * 1000, volume) if volume > 0 else 0
        lines.append(InvoiceLine(code or "", name or "", unit, okei, volume, price, net, VAT_RATE_PCT, vat, amount))
    return Invoice(invoice_number(contract_id, month), month.last_day, contract_id, month, seller, buyer,
                   tuple(lines), sum(x.amount_without_vat_kop for x in lines), sum(x.vat_kop for x in lines),
                   sum(x.amount_kop for x in lines))


_DOC = {"topup": "Оплата", "adjustment": "Корректировка", "opening": "Начальный остаток по договору"}


def reconciliation_act(ledger: Ledger, contract_id: int, month: Month) -> ReconciliationAct:
    """The closed ``month``'s reconciliation act: the opening balance, each payment and
    adjustment, the month's sales as one line (its invoice), the closing balance. Raises
    NotFound for an unknown contract, InvalidInput for a month not closed."""
    db = ledger.db
    with db.transaction(write=False, snapshot=True):
        tz, start, end = _closed(ledger, contract_id, month)
        balance = int(db.scalar("SELECT balance_kop FROM contracts WHERE contract_id = ?", (contract_id,), 0))
        since = int(db.scalar("SELECT sum(amount_kop) FROM contract_entries WHERE contract_id = ? AND at_utc_s >= ?",
                              (contract_id, start), 0))
        sales = -int(db.scalar("SELECT sum(amount_kop) FROM contract_entries WHERE contract_id = ? "
                               "AND at_utc_s >= ? AND at_utc_s < ? AND kind = 'purchase'", (contract_id, start, end), 0))
        others = db.fetchall("SELECT at_utc_s, kind, amount_kop, note FROM contract_entries WHERE contract_id = ? "
                             "AND at_utc_s >= ? AND at_utc_s < ? AND kind <> 'purchase' ORDER BY at_utc_s, entry_id",
                             (contract_id, start, end))
        seller, buyer = operator_requisites(db), client_requisites(db, contract_id)
    lines = []
    for at, kind, amount, note in others:
        day = datetime.fromtimestamp(at, UTC).astimezone(zone(tz)).date()
        text = _DOC.get(kind, kind) + (f" ({note})" if note else "")
        lines.append(ActLine(day, text, -amount if amount < 0 else 0, max(0, amount)))
    if sales:
        lines.append(ActLine(month.last_day, f"Реализация, счёт-фактура № {invoice_number(contract_id, month)} "
                             f"от {month.last_day:%d.%m.%Y}", max(0, sales), -sales if sales < 0 else 0))
        lines.sort(key=lambda x: x.date)
    opening = balance - since
    debits, credits = sum(x.debit_kop for x in lines), sum(x.credit_kop for x in lines)
    return ReconciliationAct(contract_id, month, seller, buyer, opening, tuple(lines), debits, credits,
                             opening - debits + credits)
