"""The club member's payment cabinet over real HTTP: activation with barcode + birth date and
the SMS code from the gateway's outbox file, a password, sign-in by card or phone, balance,
turnover against the caps, lots, password reset, blocking a lost card in the cabinet and by
an inbound SMS "Блокировка", a replacement card carrying everything over, the limits on
guessing codes, and answers that do not reveal which cards exist."""

from __future__ import annotations

import json
import re

from authz.club_model import ClubStatus
from host import master
from host.ledger import Ledger

from .client import Client
from .conftest import CLUB_BIRTH, CLUB_CARD, CLUB_NEW_CARD, CLUB_PHONE, club_no

PASSWORD = "мой клубный пароль 2026"


def sms_code(sms, n: int) -> str:
    msg = sms.wait(n)[n - 1]
    assert msg["to"] == CLUB_PHONE
    return re.search(r"\b([0-9]{6})\b", msg["text"]).group(1)


def activate(client: Client, sms, n_sms: int = 1) -> None:
    r = client.submit("/club/activate", "/club/activate", {"barcode": CLUB_CARD, "birth_date": CLUB_BIRTH.isoformat()})
    assert r.status == 303 and r.location == "/club/code"
    code = sms_code(sms, n_sms)
    r = client.submit("/club/code", "/club/code", {"code": code})
    assert r.status == 303 and r.location == "/club/password"
    r = client.submit("/club/password", "/club/password", {"password": PASSWORD, "password2": PASSWORD})
    assert r.status == 303 and r.location == "/club"


def test_activation_sign_in_and_what_the_cabinet_shows(client: Client, sms, club_ledger: Ledger) -> None:
    assert club_ledger.club_account(1).activated is False
    activate(client, sms)
    assert club_ledger.club_account(1).activated is True  # payment functions on (a club_accounts delta)
    page = client.get("/club")
    assert page.status == 200
    assert "12345.00 ₽ из 100000.00 ₽" in page.text  # balance against the identified cap
    assert "2000.00 ₽ из 1000000.00 ₽" in page.text  # this month's turnover against its cap
    assert "190 (можно списать 150)" in page.text  # one lot not yet spendable
    for by in (CLUB_CARD, "+7 900 123-45-67"):
        c = Client(client.base)
        r = c.submit("/club/login", "/club/login", {"login": by, "password": PASSWORD})
        assert r.status == 303 and r.location == "/club", by
    bad = Client(client.base).submit("/club/login", "/club/login", {"login": CLUB_CARD, "password": "wrong wrong wrong"})
    assert bad.status == 400


def test_activation_does_not_reveal_cards_and_a_wrong_birth_date_sends_nothing(client: Client, sms,
                                                                              club_ledger: Ledger) -> None:
    for barcode, birth in ((CLUB_CARD, "1991-01-01"), (club_no("299999999999"), CLUB_BIRTH.isoformat())):
        r = Client(client.base).submit("/club/activate", "/club/activate", {"barcode": barcode, "birth_date": birth})
        assert r.status == 303 and r.location == "/club/code"
    assert sms.all() == []
    bad = client.submit("/club/activate", "/club/activate", {"barcode": "123", "birth_date": "1990-01-01"})
    assert bad.status == 400 and 'data-field="barcode"' in bad.text
    bad = client.submit("/club/activate", "/club/activate", {"barcode": CLUB_CARD, "birth_date": "31.02.1990"})
    assert bad.status == 400 and 'data-field="birth_date"' in bad.text


def test_sms_code_guessing_is_stopped(client: Client, sms, club_ledger: Ledger) -> None:
    r = client.submit("/club/activate", "/club/activate", {"barcode": CLUB_CARD, "birth_date": CLUB_BIRTH.isoformat()})
    assert r.status == 303
    right = sms_code(sms, 1)
    wrong = "000000" if right != "000000" else "111111"
    for _ in range(5):
        assert client.submit("/club/code", "/club/code", {"code": wrong}).status == 400
    # five wrong tries: the code is dead, and the limit holds even for the right one
    assert client.submit("/club/code", "/club/code", {"code": right}).status == 400
    assert club_ledger.club_account(1).activated is False


def test_sms_code_expires_after_ten_minutes(client: Client, sms, club_ledger: Ledger, clock) -> None:
    client.submit("/club/activate", "/club/activate", {"barcode": CLUB_CARD, "birth_date": CLUB_BIRTH.isoformat()})
    code = sms_code(sms, 1)
    clock.now += 601
    assert client.submit("/club/code", "/club/code", {"code": code}).status == 400


def test_password_reset_by_sms_code_ends_old_sessions(client: Client, sms, club_ledger: Ledger) -> None:
    activate(client, sms)
    assert client.get("/club").status == 200
    other = Client(client.base)
    r = other.submit("/club/reset", "/club/reset", {"phone": "+7 (900) 123-45-67", "card": CLUB_CARD})
    assert r.status == 303 and r.location == "/club/code"
    code = sms_code(sms, 2)
    assert other.submit("/club/code", "/club/code", {"code": code}).status == 303
    new = "совсем другой пароль 77"
    r = other.submit("/club/password", "/club/password", {"password": new, "password2": new})
    assert r.status == 303
    assert client.get("/club").status == 303  # the old session ended with the password change
    assert Client(client.base).submit("/club/login", "/club/login", {"login": CLUB_CARD, "password": new}).status == 303
    assert Client(client.base).submit("/club/login", "/club/login",
                                      {"login": CLUB_CARD, "password": PASSWORD}).status == 400


def test_block_a_lost_card_in_the_cabinet_then_a_replacement_carries_over(client: Client, sms,
                                                                         club_ledger: Ledger) -> None:
    activate(client, sms)
    other = Client(client.base)
    assert other.submit("/club/login", "/club/login", {"login": CLUB_CARD, "password": PASSWORD}).status == 303
    page = client.get("/club")
    r = client.post(f"/club/cards/{CLUB_CARD}/block", {"csrf": page.csrf()})
    assert r.status == 200 and 'id="card-blocked"' in r.text
    assert club_ledger.club_card(CLUB_CARD).status is ClubStatus.BLOCKED and CLUB_CARD in club_ledger.stop_list()
    assert other.get("/club").status == 303  # the other session died at once
    assert Client(client.base).submit("/club/login", "/club/login",
                                      {"login": CLUB_CARD, "password": PASSWORD}).status == 400
    # the till issues a new plastic on the same account
    master.replace_club_card(club_ledger, CLUB_CARD, CLUB_NEW_CARD)
    c = Client(client.base)
    assert c.submit("/club/login", "/club/login", {"login": CLUB_NEW_CARD, "password": PASSWORD}).status == 303
    page = c.get("/club")
    assert "12345.00 ₽" in page.text and "190 (можно списать 150)" in page.text
    assert CLUB_NEW_CARD[-4:] in page.text


def test_block_by_inbound_sms(client: Client, sms, club_ledger: Ledger) -> None:
    activate(client, sms)

    def inbound(body: dict, token: str = "gw-secret"):
        r = Client(client.base).request("POST", "/club/sms/inbound", json_body=json.dumps(body).encode(),
                                        headers={"X-Gateway-Token": token})
        return r.status, json.loads(r.body)
    assert inbound({"from": CLUB_PHONE, "text": "Блокировка"}, token="forged")[0] == 401
    assert inbound({"from": "79990000000", "text": "Блокировка"}) == (200, {"blocked": 0})
    assert inbound({"from": CLUB_PHONE, "text": "привет"}) == (200, {"blocked": 0})
    assert inbound({"from": 5, "text": "Блокировка"})[0] == 422
    assert club_ledger.club_card(CLUB_CARD).status is ClubStatus.ACTIVE
    assert inbound({"from": "+" + CLUB_PHONE, "text": "БЛОКИРОВКА карты"}) == (200, {"blocked": 1})
    assert club_ledger.club_card(CLUB_CARD).status is ClubStatus.BLOCKED and CLUB_CARD in club_ledger.stop_list()
    assert client.get("/club").status == 303
    reply = sms.wait(2)[1]
    assert reply["to"] == CLUB_PHONE and "заблокированы" in reply["text"] and CLUB_CARD not in reply["text"]
