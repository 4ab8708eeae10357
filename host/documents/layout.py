"""Each document laid out once as titled key-value lines and tables of text cells, which
:mod:`host.documents.csvout` and :mod:`host.documents.pdfout` both draw (so the CSV and the
PDF of a document say the same). Numbers are written the Russian way: a decimal comma
(``1234,56``), litres with three decimals, no thousands separator (Excel reads them as
numbers). The interface of the documents is Russian, as their readers read them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInput
from .model import (
    DetailLine,
    DetailPage,
    Document,
    Invoice,
    Month,
    ReconciliationAct,
    Requisites,
    StatementPage,
    TransactionReport,
)

__all__ = ["MONTHS", "Cell", "Layout", "Table", "layout", "money", "qty"]

MONTHS = ("январь", "февраль", "март", "апрель", "май", "июнь", "июль", "август", "сентябрь", "октябрь",
          "ноябрь", "декабрь")


@dataclass(frozen=True, slots=True)
class Cell:
    """One cell: its text, and whether it is a number we wrote (right-aligned, never
    escaped) or text from the ledger (escaped against formula injection in CSV)."""

    text: str
    number: bool = False


@dataclass(frozen=True, slots=True)
class Table:
    """A table: its header, rows and relative column widths (PDF)."""

    head: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    widths: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Layout:
    """A document as a title, key-value lines before and after its table, and the table."""

    title: str
    filename: str  #: a file name without the extension
    head: tuple[tuple[str, Cell], ...]
    table: Table
    tail: tuple[tuple[str, Cell], ...]
    landscape: bool


def money(kop: int) -> Cell:
    """``-123456`` -> ``-1234,56`` (exact)."""
    sign = "-" if kop < 0 else ""
    return Cell(f"{sign}{abs(kop) // 100},{abs(kop) % 100:02d}", True)


def qty(ml: int) -> Cell:
    """``40500`` (millilitres, or thousandths of a piece) -> ``40,500``."""
    sign = "-" if ml < 0 else ""
    return Cell(f"{sign}{abs(ml) // 1000},{abs(ml) % 1000:03d}", True)


def _t(text: object) -> Cell:
    return Cell("" if text is None else str(text))


def _n(value: int | None) -> Cell:
    return Cell("" if value is None else str(value), True)


def _price(kop: int | None) -> Cell:
    return Cell("", True) if kop is None else money(kop)


def _month(m: Month) -> str:
    return f"{MONTHS[m.month - 1]} {m.year}"


def _party(role: str, r: Requisites) -> tuple[tuple[str, Cell], ...]:
    if not r.name:
        return ((role, _t("реквизиты не заданы")),)
    return ((role, _t(r.name)), (f"{role}: ИНН/КПП", _t(f"{r.inn}/{r.kpp}" if r.kpp else r.inn)),
            (f"{role}: адрес", _t(r.address)))


_DETAIL_HEAD = ("Дата и время", "Карта", "АЗС", "Адрес", "Товар", "Литры", "Цена по прайсу", "Цена",
                "Скидка, руб.", "Сумма, руб.")
_DETAIL_W = (17, 17, 14, 40, 14, 11, 11, 11, 11, 13)


def _detail_row(d: DetailLine) -> tuple[Cell, ...]:
    station = d.station_name or ("" if d.station_id is None else str(d.station_id))
    return (_t(d.at_local), _t(d.card_no), _t(station), _t(d.station_address), _t(d.product_name or d.product),
            qty(d.volume_ml), _price(d.list_price_kop_per_l), _price(d.price_kop_per_l), money(d.discount_kop),
            money(d.amount_kop))


def _detail(p: DetailPage) -> Layout:
    head = [("Договор", _n(p.contract_id)), ("Период", _t(f"{p.first:%d.%m.%Y} – {p.last:%d.%m.%Y}")),
            ("Часовой пояс", _t(p.tz))]
    if p.card_no is not None:
        head.append(("Карта", _t(p.card_no)))
    tail = [("Итого литров", qty(sum(d.volume_ml for d in p.lines))),
            ("Итого сумма, руб.", money(sum(d.amount_kop for d in p.lines)))]
    if p.next_cursor is not None:
        tail.append(("Продолжение", _t("есть следующая страница")))
    return Layout("Детализация операций", f"detail-{p.contract_id}-{p.first:%Y%m%d}-{p.last:%Y%m%d}", tuple(head),
                  Table(_DETAIL_HEAD, tuple(_detail_row(d) for d in p.lines), _DETAIL_W), tuple(tail), True)


_KIND = {"opening": "Открытие договора", "topup": "Оплата", "purchase": "Покупка", "adjustment": "Корректировка"}


def _statement(s: StatementPage) -> Layout:
    head = (("Договор", _n(s.contract_id)), ("Клиент", _t(s.name)), ("Месяц", _t(_month(s.month))),
            ("Часовой пояс", _t(s.tz)), ("Входящий остаток, руб.", money(s.opening_kop)))
    rows = []
    for e in s.entries:
        d = e.purchase
        what = _KIND.get(e.kind, e.kind) if d is None else f"{d.product_name or d.product}, {qty(d.volume_ml).text} л"
        where = "" if d is None else " ".join(x for x in (d.station_name, d.station_address) if x)
        rows.append((_t(e.at_local), _t(what), _t("" if d is None else d.card_no), _t(where or e.note),
                     money(e.amount_kop), money(e.balance_after_kop)))
    tail = [("Поступления, руб.", money(s.credits_kop)), ("Списания, руб.", money(s.debits_kop)),
            ("Исходящий остаток, руб.", money(s.closing_kop)), ("Операций за месяц", _n(s.entry_count))]
    if not s.complete:
        tail.append(("Примечание", _t("месяц не закрыт: остаток на текущий момент")))
    if s.next_cursor is not None:
        tail.append(("Продолжение", _t("есть следующая страница")))
    return Layout("Выписка по договору", f"statement-{s.contract_id}-{s.month}", head,
                  Table(("Дата и время", "Операция", "Карта", "АЗС / примечание", "Сумма, руб.", "Остаток, руб."),
                        tuple(rows), (17, 30, 17, 55, 14, 14)), tuple(tail), True)


def _report(r: TransactionReport) -> Layout:
    head = (("Договор", _n(r.contract_id)), ("Месяц", _t(_month(r.month))), ("Часовой пояс", _t(r.tz)),
            *_party("Продавец", r.seller), *_party("Покупатель", r.buyer))
    tail: list[tuple[str, Cell]] = []
    for t in r.totals:
        name = t.product_name or t.product
        tail += [(f"{name}: операций", _n(t.count)), (f"{name}: литров", qty(t.volume_ml)),
                 (f"{name}: скидка, руб.", money(t.discount_kop)), (f"{name}: сумма, руб.", money(t.amount_kop))]
    tail += [("Всего литров", qty(r.volume_ml)), ("Всего скидка, руб.", money(r.discount_kop)),
             ("Всего сумма, руб.", money(r.amount_kop))]
    return Layout("Отчёт по операциям за месяц", f"report-{r.contract_id}-{r.month}", head,
                  Table(_DETAIL_HEAD, tuple(_detail_row(d) for d in r.lines), _DETAIL_W), tuple(tail), True)


def _invoice(v: Invoice) -> Layout:
    head = (("Счёт-фактура №", _t(v.number)), ("Дата", _t(f"{v.date:%d.%m.%Y}")), ("Договор", _n(v.contract_id)),
            ("Период", _t(_month(v.month))), *_party("Продавец", v.seller), *_party("Покупатель", v.buyer),
            ("Валюта", _t("российский рубль, 643")))
    rows = tuple((_t(x.name or x.product), _t(x.unit_code), _t(x.unit), qty(x.quantity_ml),
                  money(x.price_without_vat_kop), money(x.amount_without_vat_kop), _t(f"{x.vat_rate_pct}%"),
                  money(x.vat_kop), money(x.amount_kop)) for x in v.lines)
    tail = (("Всего без НДС, руб.", money(v.amount_without_vat_kop)), ("Всего НДС, руб.", money(v.vat_kop)),
            ("Всего с НДС, руб.", money(v.amount_kop)))
    return Layout(f"Счёт-фактура № {v.number} от {v.date:%d.%m.%Y}", f"invoice-{v.contract_id}-{v.month}", head,
                  Table(("Товар", "Код ед.", "Ед.", "Количество", "Цена без НДС", "Стоимость без НДС",
                         "Ставка НДС", "Сумма НДС", "Стоимость с НДС"), rows, (40, 10, 8, 16, 16, 20, 12, 16, 20)),
                  tail, True)


def _act(a: ReconciliationAct) -> Layout:
    head = (("Договор", _n(a.contract_id)), ("Период", _t(f"{a.month.first_day:%d.%m.%Y} – {a.month.last_day:%d.%m.%Y}")),
            *_party("Продавец", a.seller), *_party("Покупатель", a.buyer),
            ("Сальдо начальное, руб.", money(a.opening_kop)))
    rows = tuple((_t(f"{x.date:%d.%m.%Y}"), _t(x.document), money(x.debit_kop), money(x.credit_kop)) for x in a.lines)
    tail = (("Обороты: дебет, руб.", money(a.debits_kop)), ("Обороты: кредит, руб.", money(a.credits_kop)),
            ("Сальдо конечное, руб.", money(a.closing_kop)),
            ("Примечание", _t("сальдо положительное: аванс покупателя; отрицательное: долг покупателя")))
    return Layout(f"Акт сверки взаимных расчётов за {_month(a.month)}", f"act-{a.contract_id}-{a.month}", head,
                  Table(("Дата", "Документ", "Дебет, руб.", "Кредит, руб."), rows, (16, 80, 20, 20)), tail, False)


def layout(doc: Document) -> Layout:
    """The layout of any document."""
    if isinstance(doc, DetailPage):
        return _detail(doc)
    if isinstance(doc, StatementPage):
        return _statement(doc)
    if isinstance(doc, TransactionReport):
        return _report(doc)
    if isinstance(doc, Invoice):
        return _invoice(doc)
    if isinstance(doc, ReconciliationAct):
        return _act(doc)
    raise InvalidInput(f"not a document: {type(doc).__name__}")
