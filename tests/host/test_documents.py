"""Documents (host.documents): transaction detail, monthly statements, the closed month's
transaction report, invoice and reconciliation act, on SQLite and PostgreSQL; each rendered
as CSV (parsed back) and PDF (read back with pypdf: the Cyrillic text, totals, requisites)."""

from __future__ import annotations

import csv
import io
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pypdf import PdfReader

from authz.fuel_model import Product, ProductGroup, Station
from authz.money import amount_for_volume
from host import documents as D
from host import master
from host.errors import InvalidInput, NotFound
from host.ingest import ingest_batch
from host.ledger import Ledger

from .edge import CARD, CARD2, CONTRACT, STATION, T0, Site, contract, fuel_card

DEC_2 = 1_796_169_600  # 2026-12-02 00:00 UTC, 03:00 Moscow
NOV = D.Month(2026, 11)
_W10 = (2, 4, 10, 3, 5, 9, 4, 6, 8)
_W11 = (7, 2, 4, 10, 3, 5, 9, 4, 6, 8)
_W12 = (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)


def _digit(digits: str, weights: tuple[int, ...]) -> str:
    return str(sum(int(d) * w for d, w in zip(digits, weights)) % 11 % 10)


def inn10(first9: str) -> str:
    """A valid 10-digit INN beginning with ``first9`` (made up, not a real company's)."""
    return first9 + _digit(first9, _W10)


def inn12(first10: str) -> str:
    n11 = first10 + _digit(first10, _W11)
    return n11 + _digit(n11, _W12)


SELLER = D.Requisites("ООО «Топливная сеть»", inn10("770100001"), "770101001", "г. Москва, ул. Заправочная, д. 1")
BUYER = D.Requisites("ООО «Грузовики»", inn10("550200002"), "550201001", "г. Омск, ул. Ленина, д. 5")


@pytest.fixture
def world(ledger: Ledger, clock) -> Ledger:
    """A contract with two cards, a station with an address, a top-up and four November
    purchases (two products, two cards), one December purchase; the clock on 2 December."""
    clock.now = T0 - 86_400
    master.put_products(ledger, PRODUCTS)
    master.put_stations(ledger, [Station(STATION, 0, frozenset(ProductGroup), {"AI95": 6_000, "DT": 7_000})])
    master.set_station_address(ledger, STATION, name="АЗС №17", address="Омск, пр. Мира, 101")
    master.create_contract(ledger, contract(balance_kop=1_000_000), name="Грузовики")
    master.issue_fuel_card(ledger, fuel_card())
    master.issue_fuel_card(ledger, fuel_card(CARD2))
    clock.now = T0 + 3_600
    master.top_up_contract(ledger, CONTRACT, 500_000, note="п/п 42")
    s = Site("S1")
    s.fuel_sale(delivered_ml=40_000, at=T0)                                    # 2400,00 (list 61,50: -60,00)
    s.fuel_sale(product="DT", price=7_000, delivered_ml=20_000, tc=12, at=T0 + 86_400)   # 1400,00
    s.fuel_sale(card_no=CARD2, delivered_ml=10_001, tc=20, at=T0 + 2 * 86_400)  # 600,06
    s.fuel_sale(delivered_ml=5_000, tc=14, at=T0 + 3 * 86_400)                 # 300,00
    s.fuel_sale(delivered_ml=1_000, tc=16, at=T0 + 13 * 86_400)                # 1 December: 60,00
    for b in s.batches(5):
        ingest_batch(ledger, b)
    clock.now = DEC_2
    return ledger


NOV_TOTAL = 240_000 + 140_000 + amount_for_volume(10_001, 6_000) + 30_000  # 4700,06
PRODUCTS = (Product("AI95", "АИ-95", ProductGroup.FUEL), Product("DT", "Дизельное топливо", ProductGroup.FUEL),
            Product("AI98", "АИ-98", ProductGroup.FUEL), Product("WASH", "Мойка", ProductGroup.CAR_WASH))


def test_inn_and_kpp_checks():
    assert D.check_inn(inn10("770100001")) and D.check_inn(inn12("5001007322")) == inn12("5001007322")
    good = inn10("770100001")
    for bad in (good[:-1] + str((int(good[-1]) + 1) % 10), "77010000", "77010000123", "７７０１００００１５",
                "770100001a", 7701000015, None):
        with pytest.raises(InvalidInput, match="INN"):
            D.check_inn(bad)
    assert D.check_kpp("770101001") == "770101001" and D.check_kpp("7701AB001") == "7701AB001"
    for bad in ("77010100", "7701ab001", "7701010011", "A70101001", 770101001):
        with pytest.raises(InvalidInput, match="KPP"):
            D.check_kpp(bad)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789", min_size=9, max_size=9), st.integers(1, 9))
def test_any_inn_with_its_check_digit_passes_and_a_changed_one_fails(first9, shift):
    good = inn10(first9)
    assert D.check_inn(good) == good
    with pytest.raises(InvalidInput):
        D.check_inn(good[:-1] + str((int(good[-1]) + shift) % 10))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30), st.text(max_size=12), st.text(max_size=30))
def test_requisites_check_refuses_garbage_with_invalid_input_only(name, inn, address):
    try:
        r = D.check_requisites(D.Requisites(name, inn, "", address))
    except InvalidInput:
        return
    assert len(r.inn) == 12 and r.name.strip() and r.address.strip()


def test_requisites_are_stored_checked_and_a_bad_one_changes_nothing(world: Ledger):
    assert D.operator_requisites(world.db).name == "" and D.client_requisites(world.db, CONTRACT).name == ""
    master.set_operator_requisites(world, SELLER)
    master.set_client_requisites(world, CONTRACT, BUYER)
    assert D.operator_requisites(world.db) == SELLER and D.client_requisites(world.db, CONTRACT) == BUYER
    for bad, why in ((D.Requisites("X", SELLER.inn, "", "addr"), "KPP"),
                     (D.Requisites("X", inn12("5001007322"), "770101001", "addr"), "no KPP"),
                     (D.Requisites("   ", SELLER.inn, SELLER.kpp, "addr"), "company name"),
                     (D.Requisites("X", SELLER.inn, SELLER.kpp, "a\nb"), "address"),
                     (D.Requisites("X", "1234567890", SELLER.kpp, "addr"), "check digit")):
        with pytest.raises(InvalidInput, match=why):
            master.set_client_requisites(world, CONTRACT, bad)
    with pytest.raises(NotFound):
        master.set_client_requisites(world, 999, BUYER)
    with pytest.raises(NotFound):
        master.set_station_address(world, 4242, name="x", address="y")
    assert D.client_requisites(world.db, CONTRACT) == BUYER


def test_transaction_detail_shows_station_product_prices_and_discount(world: Ledger):
    page = D.transaction_detail(world, CONTRACT, date(2026, 11, 1), date(2026, 11, 30))
    assert [ln.amount_kop for ln in page.lines] == [240_000, 140_000, amount_for_volume(10_001, 6_000), 30_000]
    first = page.lines[0]
    assert first.at_local == "2026-11-18 14:08:40"  # completed at T0 + 120 s: 11:08:40 UTC
    assert (first.station_id, first.station_name, first.station_address) == (STATION, "АЗС №17", "Омск, пр. Мира, 101")
    assert (first.product, first.volume_ml, first.price_kop_per_l, first.list_price_kop_per_l) == ("AI95", 40_000, 6_000, 6_150)
    assert first.discount_kop == amount_for_volume(40_000, 6_150) - 240_000 == 6_000
    assert (page.lines[1].product, page.lines[1].product_name, page.lines[1].card_no) == ("DT", "Дизельное топливо", CARD)
    assert page.next_cursor is None
    by_card = D.transaction_detail(world, CONTRACT, date(2026, 11, 1), date(2026, 12, 31), card_no=CARD2)
    assert [ln.card_no for ln in by_card.lines] == [CARD2]


def test_transaction_detail_pages_add_up_to_the_whole(world: Ledger):
    whole = D.transaction_detail(world, CONTRACT, date(2026, 11, 1), date(2026, 12, 31), limit=100).lines
    got, cursor = [], None
    while True:
        page = D.transaction_detail(world, CONTRACT, date(2026, 11, 1), date(2026, 12, 31), cursor=cursor, limit=2)
        assert len(page.lines) <= 2
        got += page.lines
        cursor = page.next_cursor
        if cursor is None:
            break
    assert got == list(whole) and len(got) == 5


def test_transaction_detail_refuses_bad_input(world: Ledger):
    nov1, nov30 = date(2026, 11, 1), date(2026, 11, 30)
    with pytest.raises(NotFound, match="no contract 999"):
        D.transaction_detail(world, 999, nov1, nov30)
    with pytest.raises(NotFound, match="no card"):
        D.transaction_detail(world, CONTRACT, nov1, nov30, card_no="7005839999999999")
    with pytest.raises(InvalidInput, match="before it begins"):
        D.transaction_detail(world, CONTRACT, nov30, nov1)
    with pytest.raises(InvalidInput, match="after today"):
        D.transaction_detail(world, CONTRACT, date(2027, 1, 1), date(2027, 1, 31))
    with pytest.raises(InvalidInput, match="at most 366"):
        D.transaction_detail(world, CONTRACT, date(2025, 1, 1), nov30)
    for cursor in ("x", "1.2.3", "-1.2", "１.２", "'; DROP TABLE records; --"):
        with pytest.raises(InvalidInput, match="cursor"):
            D.transaction_detail(world, CONTRACT, nov1, nov30, cursor=cursor)
    for limit in (0, 1001, "50", True):
        with pytest.raises(InvalidInput, match="page"):
            D.transaction_detail(world, CONTRACT, nov1, nov30, limit=limit)


def test_the_monthly_statement_balances_line_by_line(world: Ledger):
    s = D.statement(world, CONTRACT, NOV)
    assert s.complete and s.name == "Грузовики" and s.tz == "Europe/Moscow"
    assert s.opening_kop == 0  # the contract was opened in November: its opening entry is a credit
    assert s.credits_kop == 1_000_000 + 500_000
    kinds = [e.kind for e in s.entries]
    assert kinds.count("purchase") == 4 and "topup" in kinds and s.entry_count == len(s.entries)
    balance = s.opening_kop
    for e in s.entries:
        balance += e.amount_kop
        assert e.balance_after_kop == balance
    assert s.closing_kop == balance == s.opening_kop + s.credits_kop - s.debits_kop
    assert s.debits_kop == NOV_TOTAL
    assert s.closing_kop - 6_000 == world.balance_kop(CONTRACT)  # December's purchase came after
    purchase = next(e for e in s.entries if e.kind == "purchase")
    assert purchase.purchase is not None and purchase.purchase.station_name == "АЗС №17"


def test_statement_pages_carry_the_running_balance(world: Ledger):
    whole = D.statement(world, CONTRACT, NOV)
    got, cursor = [], None
    while True:
        page = D.statement_page(world, CONTRACT, NOV, cursor=cursor, limit=2)
        assert (page.opening_kop, page.closing_kop, page.entry_count) == \
            (whole.opening_kop, whole.closing_kop, whole.entry_count)
        got += page.entries
        cursor = page.next_cursor
        if cursor is None:
            break
    assert got == list(whole.entries)


def test_the_running_month_has_a_statement_but_no_documents(world: Ledger, clock):
    dec = D.Month(2026, 12)
    s = D.statement(world, CONTRACT, dec)
    assert not s.complete and s.debits_kop == 6_000 and s.closing_kop == world.balance_kop(CONTRACT)
    for build in (D.transaction_report, D.invoice, D.reconciliation_act):
        with pytest.raises(InvalidInput, match="not closed"):
            build(world, CONTRACT, dec)
    for build in (D.statement, D.transaction_report, D.invoice, D.reconciliation_act):
        with pytest.raises(InvalidInput, match="has not begun"):
            build(world, CONTRACT, D.Month(2027, 1))
        with pytest.raises(NotFound):
            build(world, 999, NOV)
    clock.now = 1_796_072_400 - 1  # 2026-11-30 23:59:59 Moscow: November still runs
    with pytest.raises(InvalidInput, match="not closed"):
        D.invoice(world, CONTRACT, NOV)
    clock.now += 1
    assert D.invoice(world, CONTRACT, NOV).amount_kop == NOV_TOTAL


def test_months_parse_strictly():
    assert D.Month.parse("2026-11") == NOV and str(NOV) == "2026-11" and NOV.last_day == date(2026, 11, 30)
    assert D.Month(2026, 12).next() == D.Month(2027, 1) and D.Month(2024, 2).last_day == date(2024, 2, 29)
    for bad in ("2026-13", "2026-1", "26-11", "2026-11-01", "２０２６-１１", "", None, 202611):
        with pytest.raises(InvalidInput, match="month"):
            D.Month.parse(bad)


def test_the_transaction_report_totals_per_product(world: Ledger):
    master.set_operator_requisites(world, SELLER)
    master.set_client_requisites(world, CONTRACT, BUYER)
    r = D.transaction_report(world, CONTRACT, NOV)
    assert len(r.lines) == 4 and (r.seller, r.buyer) == (SELLER, BUYER)
    ai95 = next(t for t in r.totals if t.product == "AI95")
    assert (ai95.count, ai95.volume_ml) == (3, 55_001) and r.amount_kop == NOV_TOTAL
    assert r.discount_kop == sum(ln.discount_kop for ln in r.lines) > 0


def test_the_invoice_extracts_vat_per_line(world: Ledger):
    master.set_operator_requisites(world, SELLER)
    master.set_client_requisites(world, CONTRACT, BUYER)
    v = D.invoice(world, CONTRACT, NOV)
    assert v.number == f"{CONTRACT}-202611" and v.date == date(2026, 11, 30) and (v.seller, v.buyer) == (SELLER, BUYER)
    by = {x.product: x for x in v.lines}
    ai95, dt = by["AI95"], by["DT"]
    assert (ai95.unit, ai95.unit_code, ai95.quantity_ml, ai95.vat_rate_pct) == ("л", "112", 55_001, 20)
    assert ai95.amount_kop == 240_000 + amount_for_volume(10_001, 6_000) + 30_000 == 330_006
    assert ai95.vat_kop == 55_001 == (330_006 * 20 + 60) // 120  # 55001.0 exactly
    assert dt.vat_kop == 23_333 and dt.amount_without_vat_kop == 116_667  # 140000/6 = 23333.33
    assert dt.price_without_vat_kop == 5_833  # 1166.67 RUB / 20 L = 58.3335 -> 58.33
    assert v.amount_kop == NOV_TOTAL == v.amount_without_vat_kop + v.vat_kop
    assert v.vat_kop == sum(x.vat_kop for x in v.lines)


@pytest.mark.parametrize("amount,vat", [(0, 0), (1, 0), (3, 1), (6, 1), (9, 2), (12_000, 2_000), (-3, -1),
                                        (140_000, 23_333), (140_003, 23_334)])
def test_vat_rounds_half_up(amount, vat):
    assert D.vat_of(amount) == vat


def test_the_reconciliation_act_balances(world: Ledger):
    a = D.reconciliation_act(world, CONTRACT, NOV)
    assert a.opening_kop == 0  # the contract was opened in November
    assert [x.credit_kop for x in a.lines if x.credit_kop] == [1_000_000, 500_000]
    assert "п/п 42" in a.lines[1].document
    sales = a.lines[-1]
    assert sales.debit_kop == NOV_TOTAL and "1-202611" in sales.document
    assert a.closing_kop == a.opening_kop - a.debits_kop + a.credits_kop == D.statement(world, CONTRACT, NOV).closing_kop


def test_a_month_without_transactions_is_an_empty_valid_document(world: Ledger):
    oct_ = D.Month(2026, 10)
    for doc in (D.transaction_report(world, CONTRACT, oct_), D.invoice(world, CONTRACT, oct_),
                D.reconciliation_act(world, CONTRACT, oct_), D.statement(world, CONTRACT, oct_)):
        rows = _csv(D.render(doc, "csv"))
        assert rows[0][0] and len(D.render(doc, "pdf")) > 1000
    v = D.invoice(world, CONTRACT, oct_)
    assert v.lines == () and v.amount_kop == 0
    a = D.reconciliation_act(world, CONTRACT, oct_)
    assert (a.opening_kop, a.closing_kop, a.lines) == (0, 0, ())
    assert "нет операций за период" in _pdf_text(D.render(D.transaction_report(world, CONTRACT, oct_), "pdf"))


def _csv(data: bytes) -> list[list[str]]:
    assert data.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(data[3:].decode("utf-8")), delimiter=";"))


def _pdf_text(data: bytes) -> str:
    assert data.startswith(b"%PDF-")
    return "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(data)).pages)


def _kv(rows: list[list[str]]) -> dict[str, str]:
    return {r[0]: r[1] for r in rows if len(r) == 2}


def test_invoice_csv_and_pdf_say_the_same(world: Ledger):
    master.set_operator_requisites(world, SELLER)
    master.set_client_requisites(world, CONTRACT, BUYER)
    v = D.invoice(world, CONTRACT, NOV)
    rows = _csv(D.render(v, "csv"))
    kv = _kv(rows)
    assert rows[0] == ["Счёт-фактура № 1-202611 от 30.11.2026"]
    assert kv["Продавец"] == SELLER.name and kv["Продавец: ИНН/КПП"] == f"{SELLER.inn}/{SELLER.kpp}"
    assert kv["Покупатель: ИНН/КПП"] == f"{BUYER.inn}/{BUYER.kpp}" and kv["Покупатель: адрес"] == BUYER.address
    assert kv["Всего с НДС, руб."] == "4700,06" and kv["Всего НДС, руб."] == "783,34"
    head = rows.index(["Товар", "Код ед.", "Ед.", "Количество", "Цена без НДС", "Стоимость без НДС", "Ставка НДС",
                       "Сумма НДС", "Стоимость с НДС"])
    dt = next(r for r in rows[head + 1:] if r and r[0] == "Дизельное топливо")
    assert dt[1:] == ["112", "л", "20,000", "58,33", "1166,67", "20%", "233,33", "1400,00"]
    text = _pdf_text(D.render(v, "pdf"))
    for s in ("Счёт-фактура № 1-202611 от 30.11.2026", SELLER.name, f"{SELLER.inn}/{SELLER.kpp}", BUYER.name,
              f"{BUYER.inn}/{BUYER.kpp}", "Всего с НДС, руб.", "4700,06", "783,34", "1166,67", "Стоимость с НДС"):
        assert s in text, s


def test_statement_and_act_and_report_render(world: Ledger):
    s = D.statement(world, CONTRACT, NOV)
    kv = _kv(_csv(D.render(s, "csv")))
    assert kv["Входящий остаток, руб."] == "0,00" and kv["Списания, руб."] == "4700,06"
    assert kv["Исходящий остаток, руб."] == "10299,94"
    text = _pdf_text(D.render(s, "pdf"))
    assert "Выписка по договору" in text and "Исходящий остаток, руб." in text and "10299,94" in text
    a = D.reconciliation_act(world, CONTRACT, NOV)
    rows = _csv(D.render(a, "csv"))
    assert _kv(rows)["Сальдо конечное, руб."] == "10299,94"
    assert ["30.11.2026", "Реализация, счёт-фактура № 1-202611 от 30.11.2026", "4700,06", "0,00"] in rows
    assert "Акт сверки взаимных расчётов за ноябрь 2026" in _pdf_text(D.render(a, "pdf"))
    r = D.transaction_report(world, CONTRACT, NOV)
    rows = _csv(D.render(r, "csv"))
    head = rows.index(["Дата и время", "Карта", "АЗС", "Адрес", "Товар", "Литры", "Цена по прайсу", "Цена",
                       "Скидка, руб.", "Сумма, руб."])
    assert rows[head + 1] == ["2026-11-18 14:08:40", CARD, "АЗС №17", "Омск, пр. Мира, 101", "АИ-95", "40,000",
                              "61,50", "60,00", "60,00", "2400,00"]
    assert _kv(rows)["Всего сумма, руб."] == "4700,06"
    assert "Отчёт по операциям за месяц" in _pdf_text(D.render(r, "pdf"))
    page = D.transaction_detail(world, CONTRACT, date(2026, 11, 1), date(2026, 11, 30), limit=2)
    kv = _kv(_csv(D.render(page, "csv")))
    assert kv["Итого сумма, руб."] == "3800,00" and kv["Продолжение"] == "есть следующая страница"
    with pytest.raises(InvalidInput, match="csv or pdf"):
        D.render(page, "xlsx")


HOSTILE = ["=HYPERLINK(\"http://evil\",\"x\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)",
           "Скобки (\\) и <b>теги</b> %PDF ;\"кавычки\""]


def _hostile_invoice(name: str) -> D.Invoice:
    buyer = D.Requisites(name, BUYER.inn, BUYER.kpp, name)
    line = D.InvoiceLine("AI95", name, "л", "112", 40_000, 5_000, 200_000, 20, 40_000, 240_000)
    return D.Invoice("1-202611", date(2026, 11, 30), 1, NOV, SELLER, buyer, (line,), 200_000, 40_000, 240_000)


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_inert_in_csv_and_shown_as_is_in_pdf(name: str):
    v = _hostile_invoice(name)
    rows = _csv(D.render(v, "csv"))
    kv = _kv(rows)
    expected = ("'" + name) if name[0] in "=+-@" else name
    assert kv["Покупатель"] == expected and kv["Покупатель: адрес"] == expected
    assert [expected, "112", "л", "40,000", "50,00", "2000,00", "20%", "400,00", "2400,00"] in rows
    assert kv["Всего с НДС, руб."] == "2400,00" and kv["Всего НДС, руб."] == "400,00"  # our numbers: never escaped
    text = _pdf_text(D.render(v, "pdf"))
    assert name in text.replace("\n", "")


def test_a_pdf_shows_unprintable_characters_as_question_marks():
    text = _pdf_text(D.render(_hostile_invoice("ООО\x00«Ноль»\x1b[31m"), "pdf"))
    assert "ООО?«Ноль»?[31m" in text and "\x00" not in text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=12))
def test_months_and_cursors_refuse_garbage_with_invalid_input_only(text):
    from host.documents.queries import _cursor
    try:
        m = D.Month.parse(text)
        assert str(m) == text
    except InvalidInput:
        pass
    try:
        c = _cursor(text)
    except InvalidInput:
        return
    first, _, second = text.partition(".")
    assert first.isdigit() and second.isdigit() and c == (int(first), int(second))


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_csv_never_lets_a_text_cell_start_a_formula(text):
    from host.documents.csvout import escape_text
    out = escape_text(text)
    assert out[0] not in "=+-@\t\r" and out in (text, "'" + text)
