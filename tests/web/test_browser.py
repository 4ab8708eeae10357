"""The cabinets in a real browser: Debian's chromium driven by Playwright (never a browser
download). One browser for the module, a fresh context (cookies) per test. The flows:
fleet registration and activation with the link from the SMTP server, linking a contract,
changing a limit, blocking a card, downloading the statement CSV and then every document
of a closed month (statement, transaction report, invoice, act; CSV and PDF, read back with
csv and pypdf) and the transaction detail; club activation with the
SMS code from the outbox, password reset, blocking a lost card by SMS. Also checks that
chromium keeps the ``__Host-`` Secure cookie on http://127.0.0.1 (a secure context)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from pypdf import PdfReader

from authz.club_model import ClubStatus
from authz.fuel_model import CardStatus
from host import fleet_users as fu
from host import master
from host.ledger import Ledger

from ..host.test_documents import BUYER, SELLER
from .client import Client
from .conftest import CARD, CLUB_BIRTH, CLUB_CARD, CLUB_PHONE, CONTRACT, body_of
from .purchases import STATION_ADDRESS, STATION_NAME, november_purchases
from .test_documents import DEC_3

PASSWORD = "browser passphrase 2026"


# module scope, not session: Playwright's sync API keeps an event loop running in the main
# thread while it is open, and later tests' asyncio.run() would refuse to start under it
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, server) -> Iterator[Page]:
    ctx = browser.new_context(base_url=server.url, accept_downloads=True)
    pg = ctx.new_page()
    pg.set_default_timeout(15_000)
    yield pg
    ctx.close()


def _downloaded(page: Page, selector: str) -> tuple[str, bytes]:
    """Click ``selector`` and return the file the browser saved (its suggested name, bytes)."""
    with page.expect_download() as dl:
        page.click(selector)
    with open(dl.value.path(), "rb") as f:
        return dl.value.suggested_filename, f.read()


def _csv_rows(data: bytes) -> list[list[str]]:
    assert data.startswith("\ufeff".encode())  # the BOM Excel needs for UTF-8
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""), delimiter=";"))


def _pdf_text(data: bytes) -> str:
    assert data[:5] == b"%PDF-"
    return "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(data)).pages)


#: each monthly document's title (its first CSV line and in its PDF)
_TITLES = {"statement": "Выписка по договору", "report": "Отчёт по операциям за месяц",
           "invoice": "Счёт-фактура №", "act": "Акт сверки взаимных расчётов"}


def test_fleet_register_activate_link_limit_block_download(page: Page, smtp, ledger: Ledger, clock) -> None:
    page.goto("/fleet/register")
    page.fill("input[name=login]", "browserco")
    page.fill("input[name=email]", "boss@browserco.test")
    page.fill("input[name=company]", "ООО «Браузер»")
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("button:has-text('Зарегистрироваться')")
    page.wait_for_selector("#done")
    link = re.search(r"(http://\S+/fleet/activate/\S+)", body_of(smtp[0].wait(1)[0])).group(1)
    page.goto(link)
    page.click("button:has-text('Активировать')")
    page.wait_for_selector("#activated")
    cookies = {c["name"]: c for c in page.context.cookies()}
    sid = cookies["__Host-edgepos-sid"]
    assert sid["secure"] and sid["httpOnly"] and sid["sameSite"] == "Lax"  # kept on http://127.0.0.1

    page.goto("/fleet/login")
    page.fill("input[name=login]", "browserco")
    page.fill("input[name=password]", PASSWORD)
    page.click("button:has-text('Войти')")
    page.wait_for_url("**/fleet")
    page.fill("input[name=contract]", str(CONTRACT))
    page.fill("input[name=code]", fu.issue_link_code(ledger, CONTRACT))
    page.click("button:has-text('Привязать')")
    page.wait_for_selector("#linked")
    page.click(f"#contracts a:has-text('{CONTRACT}')")
    assert page.inner_text("#available") == "600000.00 ₽"
    page.click(f"#cards a:has-text('{CARD[-4:]}')")

    page.fill("#limit-form input[name=limit_id]", "1")
    page.fill("#limit-form input[name=amount]", "35")
    page.select_option("#limit-form select[name=unit]", "litres")
    page.select_option("#limit-form select[name=period]", "day")
    page.click("#limit-form button")
    page.wait_for_selector("tr[data-limit='1']:has-text('35.000 л в сутки')")
    assert ledger.fuel_card(CARD).limits[0].amount == 35_000

    page.click("#block-toggle")
    page.wait_for_selector("#status:has-text('заблокирована')")
    assert ledger.fuel_card(CARD).status is CardStatus.BLOCKED and CARD in ledger.stop_list()

    page.goto(f"/fleet/contracts/{CONTRACT}/statement?month=2026-11")
    with page.expect_download() as dl:
        page.click("#csv")
    with open(dl.value.path(), encoding="utf-8-sig") as f:
        text = f.read()
    assert "closing balance,,,500000.00" in text and "opening balance,,,0.00" in text

    # every document of the closed November, through the browser's downloads
    november_purchases(ledger)
    master.set_operator_requisites(ledger, SELLER)
    master.set_client_requisites(ledger, CONTRACT, BUYER)
    clock.now = DEC_3  # November closed; the session has expired meanwhile: sign in again
    page.goto("/fleet/login")
    page.fill("input[name=login]", "browserco")
    page.fill("input[name=password]", PASSWORD)
    page.click("button:has-text('Войти')")
    page.wait_for_url("**/fleet")
    page.goto(f"/fleet/contracts/{CONTRACT}/documents")
    for kind, title in _TITLES.items():
        name, data = _downloaded(page, f"tr[data-month='2026-11'] a[data-doc='{kind}-csv']")
        assert name == f"{kind}-{CONTRACT}-2026-11.csv"
        rows = _csv_rows(data)
        assert rows[0][0].startswith(title) and [str(CONTRACT)] in [r[1:2] for r in rows], kind
        cells = [c for r in rows for c in r]
        if kind in ("statement", "report"):
            assert "-600,00" in cells or "600,00" in cells, kind  # the first purchase
        if kind in ("invoice", "act"):
            assert BUYER.inn in " ".join(cells) and SELLER.inn in " ".join(cells), kind
        name, data = _downloaded(page, f"tr[data-month='2026-11'] a[data-doc='{kind}-pdf']")
        assert name == f"{kind}-{CONTRACT}-2026-11.pdf"
        text = _pdf_text(data)
        assert title in text and str(CONTRACT) in text, kind
        if kind in ("invoice", "act"):
            assert BUYER.inn in text and SELLER.inn in text, kind
    page.goto(f"/fleet/contracts/{CONTRACT}/transactions?from=2026-11-01&to=2026-11-30")
    page.wait_for_selector("#txns td.address")
    assert page.inner_text("#txns tr[data-record] td.address") == STATION_ADDRESS
    name, data = _downloaded(page, "#csv")
    rows = _csv_rows(data)
    assert name == f"detail-{CONTRACT}-20261101-20261130.csv" and rows[0][0] == "Детализация операций"
    assert sum(1 for r in rows if STATION_ADDRESS in r) == 3
    name, data = _downloaded(page, "#pdf")
    text = _pdf_text(data)
    assert name.endswith(".pdf") and "Детализация операций" in text and STATION_NAME in text


def _club_sign_in(page: Page, login: str, password: str) -> None:
    page.goto("/club/login")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", password)
    page.click("button:has-text('Войти')")


def test_club_activation_reset_and_block_by_sms(page: Page, sms, club_ledger: Ledger, server) -> None:
    page.goto("/club/activate")
    page.fill("input[name=barcode]", CLUB_CARD)
    page.fill("input[name=birth_date]", CLUB_BIRTH.isoformat())
    page.click("button:has-text('Получить код по SMS')")
    page.wait_for_selector("#sent")
    code = re.search(r"\b([0-9]{6})\b", sms.wait(1)[0]["text"]).group(1)
    page.fill("input[name=code]", code)
    page.click("button:has-text('Подтвердить')")
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("button:has-text('Сохранить')")
    page.wait_for_url("**/club")
    assert "12345.00 ₽ из 100000.00 ₽" in page.inner_text(".balance")

    page.click("button:has-text('Выйти')")
    page.goto("/club/reset")
    page.fill("input[name=phone]", "+" + CLUB_PHONE)
    page.fill("input[name=card]", CLUB_CARD)
    page.click("button:has-text('Получить код по SMS')")
    page.wait_for_selector("#sent")
    code = re.search(r"\b([0-9]{6})\b", sms.wait(2)[1]["text"]).group(1)
    page.fill("input[name=code]", code)
    page.click("button:has-text('Подтвердить')")
    new = "новый пароль из браузера"
    page.fill("input[name=password]", new)
    page.fill("input[name=password2]", new)
    page.click("button:has-text('Сохранить')")
    page.wait_for_url("**/club")
    _club_sign_in(page, CLUB_CARD, new)
    page.wait_for_url("**/club")

    # the member texts "Блокировка" from the registered phone: the gateway posts it
    r = Client(server.url).request("POST", "/club/sms/inbound",
                                   json_body=json.dumps({"from": CLUB_PHONE, "text": "Блокировка"}).encode(),
                                   headers={"X-Gateway-Token": "gw-secret"})
    assert r.status == 200
    assert club_ledger.club_card(CLUB_CARD).status is ClubStatus.BLOCKED
    page.reload()
    page.wait_for_url("**/club/login")  # the browser's session died with the block
