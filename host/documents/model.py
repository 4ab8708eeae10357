"""The documents' values: what :mod:`host.documents` returns and its renderers take.

Every value is a frozen dataclass of integers and text: money in kopecks (signed where a
movement can go either way), volume in millilitres, prices in kopecks per litre, times in
UTC seconds with the local wall time of the contract's time zone beside them. Nothing here
reads the ledger; :mod:`host.documents.queries` and :mod:`host.documents.monthly` build
these values, :mod:`host.documents.csvout` and :mod:`host.documents.pdfout` render them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

from ..errors import InvalidInput

__all__ = [
    "VAT_RATE_PCT",
    "ActLine",
    "DetailLine",
    "DetailPage",
    "Document",
    "Invoice",
    "InvoiceLine",
    "Month",
    "ProductTotal",
    "ReconciliationAct",
    "Requisites",
    "StatementEntry",
    "StatementPage",
    "TransactionReport",
]

#: The VAT rate of every invoice line (fuel, goods and services of the network alike).
VAT_RATE_PCT = 20

_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")


@dataclass(frozen=True, slots=True, order=True)
class Month:
    """A calendar month (of a contract's time zone when a document uses it)."""

    year: int
    month: int

    def __post_init__(self) -> None:
        if not (isinstance(self.year, int) and isinstance(self.month, int)) or isinstance(self.year, bool) \
                or isinstance(self.month, bool):
            raise InvalidInput(f"a month is two integers, got {self.year!r}-{self.month!r}")
        if not (2000 <= self.year <= 9998 and 1 <= self.month <= 12):
            raise InvalidInput(f"no such month {self.year}-{self.month:02d} (years 2000..9998, months 01..12)")

    @classmethod
    def parse(cls, text: object) -> Month:
        """``"2026-11"`` -> ``Month(2026, 11)``; InvalidInput for anything else."""
        m = _MONTH.fullmatch(text) if isinstance(text, str) else None
        if m is None:
            raise InvalidInput(f"a month is YYYY-MM, got {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    @classmethod
    def of(cls, day: date) -> Month:
        """The month ``day`` falls in."""
        return cls(day.year, day.month)

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def last_day(self) -> date:
        return self.next().first_day - timedelta(days=1)

    def next(self) -> Month:
        """The month after this one."""
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


@dataclass(frozen=True, slots=True)
class Requisites:
    """A party's details on an invoice or act: the company's name, INN (10 digits for an
    organisation, 12 for an individual entrepreneur), KPP (9 characters; empty for an
    entrepreneur, who has none) and legal address. Checked by
    :func:`host.documents.requisites.check_requisites` before they are stored."""

    name: str
    inn: str
    kpp: str
    address: str


@dataclass(frozen=True, slots=True)
class DetailLine:
    """One purchase by a card of the contract, as the transaction detail shows it.

    ``price_kop_per_l`` is what the client paid per litre (the list price less the
    tariff's discount); ``discount_kop`` = the volume at the list price, rounded half up,
    less ``amount_kop`` (what the contract was charged)."""

    record_id: str
    at_utc_s: int
    at_local: str  #: "YYYY-MM-DD HH:MM:SS" in the contract's time zone
    card_no: str
    site_id: str
    station_id: int | None
    station_name: str  #: "" when the host has no name for the station
    station_address: str  #: "" when the host has no address for the station
    product: str  #: the product code
    product_name: str
    volume_ml: int
    list_price_kop_per_l: int | None
    price_kop_per_l: int | None
    discount_kop: int
    amount_kop: int


@dataclass(frozen=True, slots=True)
class DetailPage:
    """A page of a contract's transaction detail over local days ``first``..``last``,
    optionally of one card. ``next_cursor`` continues the listing (None: this page is the
    last); pass it back as ``cursor``."""

    contract_id: int
    tz: str
    first: date
    last: date
    card_no: str | None
    lines: tuple[DetailLine, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class StatementEntry:
    """One balance movement of the month, with the balance after it.

    ``amount_kop`` is signed: + a credit (a payment, a positive adjustment), - a debit (a
    purchase, a negative adjustment). A purchase carries its detail in ``purchase``."""

    entry_id: int
    at_utc_s: int
    at_local: str
    kind: str  #: opening | topup | purchase | adjustment
    amount_kop: int
    balance_after_kop: int
    note: str
    purchase: DetailLine | None


@dataclass(frozen=True, slots=True)
class StatementPage:
    """A contract's monthly statement, or one page of it.

    The totals are the whole month's whatever the page: ``closing_kop`` = ``opening_kop`` +
    ``credits_kop`` - ``debits_kop``. ``complete`` is False for the month still running (the
    closing balance is the balance so far). ``entry_count`` counts the month's movements."""

    contract_id: int
    name: str
    month: Month
    tz: str
    complete: bool
    opening_kop: int
    credits_kop: int
    debits_kop: int
    closing_kop: int
    entry_count: int
    entries: tuple[StatementEntry, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ProductTotal:
    """The month's purchases of one product."""

    product: str
    product_name: str
    count: int
    volume_ml: int
    discount_kop: int
    amount_kop: int


@dataclass(frozen=True, slots=True)
class TransactionReport:
    """The closed month's transaction report: every purchase and the totals per product."""

    contract_id: int
    month: Month
    tz: str
    seller: Requisites
    buyer: Requisites
    lines: tuple[DetailLine, ...]
    totals: tuple[ProductTotal, ...]
    volume_ml: int
    discount_kop: int
    amount_kop: int


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """One line of an invoice (счёт-фактура): a product's month.

    ``amount_kop`` (with VAT) is the sum the client was charged; ``vat_kop`` =
    ``amount_kop`` x 20/120 rounded half up to the kopeck; ``amount_without_vat_kop`` =
    the difference; ``price_without_vat_kop`` = that per unit, rounded half up (shown, not
    multiplied back: the line's amounts are the exact ones)."""

    product: str
    name: str
    unit: str  #: "л" (litres) for fuel, "шт" (pieces) for goods and services
    unit_code: str  #: the OKEI code: 112 litre, 796 piece
    quantity_ml: int  #: thousandths of the unit (millilitres for fuel)
    price_without_vat_kop: int
    amount_without_vat_kop: int
    vat_rate_pct: int
    vat_kop: int
    amount_kop: int


@dataclass(frozen=True, slots=True)
class Invoice:
    """A month's invoice with the fields a счёт-фактура carries (number and date, seller
    and buyer with INN/KPP and address, lines and totals)."""

    number: str
    date: date  #: the last day of the month
    contract_id: int
    month: Month
    seller: Requisites
    buyer: Requisites
    lines: tuple[InvoiceLine, ...]
    amount_without_vat_kop: int
    vat_kop: int
    amount_kop: int


@dataclass(frozen=True, slots=True)
class ActLine:
    """One line of a reconciliation act: a document and what it moved. ``debit_kop`` is
    what the client owes by it (the month's sales, a negative adjustment), ``credit_kop``
    what it paid (a payment, a positive adjustment)."""

    date: date
    document: str
    debit_kop: int
    credit_kop: int


@dataclass(frozen=True, slots=True)
class ReconciliationAct:
    """A month's reconciliation act (акт сверки). Balances are the client's: + money the
    client has paid in advance (the operator owes it), - the client's debt.
    ``closing_kop`` = ``opening_kop`` - ``debits_kop`` + ``credits_kop``."""

    contract_id: int
    month: Month
    seller: Requisites
    buyer: Requisites
    opening_kop: int
    lines: tuple[ActLine, ...]
    debits_kop: int
    credits_kop: int
    closing_kop: int


#: Every document a renderer takes.
Document = DetailPage | StatementPage | TransactionReport | Invoice | ReconciliationAct
