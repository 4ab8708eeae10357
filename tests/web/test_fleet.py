"""The fleet manager's cabinet over real HTTP: registration and activation through the
e-mail a real SMTP server received, sign-in, contract linking with a host-issued code,
limits, blocks, reports, and the security rules (CSRF, no state change on GET, cookies,
answers that do not reveal accounts, sessions ended on password change and block)."""

from __future__ import annotations

import re

from authz.fuel_model import CardStatus, LimitUnit, Period
from host import fleet_users as fu
from host import ratelimit
from host.ledger import Ledger

from .client import Client
from .conftest import CARD, CARD2, CONTRACT, OTHER_CARD, OTHER_CONTRACT, body_of

PASSWORD = "correct horse battery staple"


def register_and_activate(client: Client, mailbox, n_mail: int = 1, login: str = "romashka",
                          email: str = "fleet@romashka.test") -> None:
    r = client.submit("/fleet/register", "/fleet/register", {
        "login": login, "email": email, "company": "ООО «Ромашка»", "password": PASSWORD, "password2": PASSWORD})
    assert r.status == 200 and 'id="done"' in r.text, r.text
    mail = mailbox.wait(n_mail)[n_mail - 1]
    assert mail["To"] == email
    link = re.search(r"(http://\S+/fleet/activate/\S+)", body_of(mail)).group(1)
    path = link.split("/", 3)[3]
    page = client.get("/" + path)
    assert page.status == 200 and "Активировать" in page.text
    done = client.post("/" + path, {"csrf": page.csrf()})
    assert done.status == 200 and 'id="activated"' in done.text


def sign_in(client: Client, login: str = "romashka", password: str = PASSWORD):
    return client.submit("/fleet/login", "/fleet/login", {"login": login, "password": password})


def signed_in_client(client: Client, smtp, ledger: Ledger) -> Client:
    register_and_activate(client, smtp[0])
    r = sign_in(client)
    assert r.status == 303 and r.location == "/fleet"
    code = fu.issue_link_code(ledger, CONTRACT)
    r = client.submit("/fleet", "/fleet/link", {"contract": str(CONTRACT), "code": code})
    assert r.status == 303, r.text
    return client


def test_register_activate_sign_in_link_and_see_the_contract(client: Client, smtp, ledger: Ledger) -> None:
    mailbox = smtp[0]
    r = sign_in(client)  # not registered yet: the same answer as a wrong password
    assert r.status == 400 and "Неверный логин или пароль" in r.text
    register_and_activate(client, mailbox)
    r = sign_in(client, password="wrong password here")
    assert r.status == 400 and "Неверный логин или пароль" in r.text
    r = sign_in(client)
    assert r.status == 303 and r.location == "/fleet"
    home = client.get("/fleet")
    assert home.status == 200 and str(CONTRACT) not in home.text
    code = fu.issue_link_code(ledger, CONTRACT)
    bad = client.submit("/fleet", "/fleet/link", {"contract": str(CONTRACT), "code": "AAAAAA-BBBBBB-CCCCCC"})
    assert bad.status == 400 and "Договор не привязан" in bad.text
    r = client.submit("/fleet", "/fleet/link", {"contract": str(CONTRACT), "code": code})
    assert r.status == 303
    page = client.get(f"/fleet/contracts/{CONTRACT}")
    assert page.status == 200
    assert 'id="balance">500000.00 ₽' in page.text and 'id="credit">100000.00 ₽' in page.text
    assert 'id="available">600000.00 ₽' in page.text
    assert CARD[-4:] in page.text and CARD2[-4:] in page.text and OTHER_CARD[-4:] not in page.text
    # the code is single use: a second company cannot link it again
    assert fu.link_contract(ledger, 999, CONTRACT, code, address="10.0.0.9") is False


def test_another_companys_contract_and_card_look_like_none(client: Client, smtp, ledger: Ledger) -> None:
    signed_in_client(client, smtp, ledger)
    assert client.get(f"/fleet/contracts/{OTHER_CONTRACT}").status == 404
    assert client.get(f"/fleet/cards/{OTHER_CARD}").status == 404
    page = client.get(f"/fleet/cards/{CARD}")
    r = client.post(f"/fleet/cards/{OTHER_CARD}/block", {"csrf": page.csrf()})
    assert r.status == 404
    assert ledger.fuel_card(OTHER_CARD).status is CardStatus.ACTIVE


def test_set_change_remove_a_limit_and_block_a_card(client: Client, smtp, ledger: Ledger) -> None:
    signed_in_client(client, smtp, ledger)
    page = client.get(f"/fleet/cards/{CARD}")
    assert page.status == 200 and "200.000 л в сутки" in page.text
    r = client.post(f"/fleet/cards/{CARD}/limits", {"csrf": page.csrf(), "limit_id": "1", "amount": "55.5",
                                                    "unit": "litres", "period": "day", "scope": "all"})
    assert r.status == 303
    assert ledger.fuel_card(CARD).limits[0].amount == 55_500
    r = client.post(f"/fleet/cards/{CARD}/limits", {"csrf": page.csrf(), "limit_id": "2", "amount": "30000,50",
                                                    "unit": "rub", "period": "month", "scope": "group:fuel"})
    assert r.status == 303
    lim2 = ledger.fuel_card(CARD).limits[1]
    assert (lim2.unit, lim2.period, lim2.amount) == (LimitUnit.KOPECKS, Period.MONTH, 3_000_050)
    bad = client.post(f"/fleet/cards/{CARD}/limits", {"csrf": page.csrf(), "limit_id": "3", "amount": "-5",
                                                      "unit": "rub", "period": "day"})
    assert bad.status == 400 and "Сумма лимита" in bad.text
    bad = client.post(f"/fleet/cards/{CARD}/limits", {"csrf": page.csrf(), "limit_id": "3", "amount": "5",
                                                      "unit": "rub", "period": "fortnight"})
    assert bad.status == 400 and "Период" in bad.text
    bad = client.post(f"/fleet/cards/{CARD}/limits", {"csrf": page.csrf(), "limit_id": "3", "amount": "5",
                                                      "unit": "rub", "period": "day", "scope": "group:shop"})
    assert bad.status == 400 and "may not buy group shop" in bad.text  # the host's own check
    assert len(ledger.fuel_card(CARD).limits) == 2
    r = client.post(f"/fleet/cards/{CARD}/limits/2/remove", {"csrf": page.csrf()})
    assert r.status == 303 and len(ledger.fuel_card(CARD).limits) == 1
    r = client.post(f"/fleet/cards/{CARD}/block", {"csrf": page.csrf()})
    assert r.status == 303
    assert ledger.fuel_card(CARD).status is CardStatus.BLOCKED and CARD in ledger.stop_list()
    assert "заблокирована" in client.get(f"/fleet/cards/{CARD}").text
    r = client.post(f"/fleet/cards/{CARD}/unblock", {"csrf": page.csrf()})
    assert r.status == 303 and CARD not in ledger.stop_list()


def test_csrf_and_no_state_change_on_get(client: Client, smtp, ledger: Ledger) -> None:
    signed_in_client(client, smtp, ledger)
    r = client.post(f"/fleet/cards/{CARD}/block", {})
    assert r.status == 403
    r = client.post(f"/fleet/cards/{CARD}/block", {"csrf": "x" * 43})
    assert r.status == 403
    assert client.get(f"/fleet/cards/{CARD}/block").status == 405
    assert ledger.fuel_card(CARD).status is CardStatus.ACTIVE


def test_cookies_are_host_prefixed_secure_httponly_samesite(client: Client) -> None:
    r = client.get("/fleet/login")
    cookies = r.set_cookies()
    assert len(cookies) == 1
    c = cookies[0]
    assert c.startswith("__Host-edgepos-sid=") and "Secure" in c and "HttpOnly" in c and "SameSite=Lax" in c
    assert "Path=/" in c and "Domain" not in c
    assert r.header("Content-Security-Policy") and r.header("X-Frame-Options") == "DENY"


def test_session_renewed_at_sign_in_and_ended_on_sign_out(client: Client, smtp, ledger: Ledger) -> None:
    register_and_activate(client, smtp[0])
    client.get("/fleet/login")
    before = client.cookies["__Host-edgepos-sid"]
    sign_in(client)
    after = client.cookies["__Host-edgepos-sid"]
    assert after != before
    stolen = Client(client.base, cookies={"__Host-edgepos-sid": after})
    assert stolen.get("/fleet").status == 200
    page = client.get("/fleet")
    r = client.post("/fleet/logout", {"csrf": page.csrf()})
    assert r.status == 303
    assert stolen.get("/fleet").status == 303  # the old cookie's session is gone at the server


def test_password_change_ends_every_session(client: Client, smtp, ledger: Ledger) -> None:
    signed_in_client(client, smtp, ledger)
    other = Client(client.base)
    assert sign_in(other).status == 303 and other.get("/fleet").status == 200
    page = client.get("/fleet/security")
    new = "another long passphrase 42"
    r = client.post("/fleet/password", {"csrf": page.csrf(), "old_password": PASSWORD, "password": new,
                                        "password2": new})
    assert r.status == 303
    assert other.get("/fleet").status == 303 and client.get("/fleet").status == 303
    assert sign_in(Client(client.base)).status == 400
    assert sign_in(Client(client.base), password=new).status == 303


def test_blocked_user_sessions_dead_at_once(client: Client, smtp, ledger: Ledger) -> None:
    signed_in_client(client, smtp, ledger)
    assert client.get("/fleet").status == 200
    uid = ledger.db.scalar("SELECT user_id FROM web_fleet_users WHERE login = 'romashka'")
    fu.block_user(ledger, uid)
    assert client.get("/fleet").status == 303
    assert sign_in(Client(client.base)).status == 400


def test_registration_does_not_reveal_a_taken_login_or_email(client: Client, smtp) -> None:
    mailbox = smtp[0]
    register_and_activate(client, mailbox)
    r = client.submit("/fleet/register", "/fleet/register", {
        "login": "romashka", "email": "someone@else.test", "company": "", "password": PASSWORD, "password2": PASSWORD})
    assert r.status == 200 and 'id="done"' in r.text
    mail = mailbox.wait(2)[1]
    assert mail["To"] == "fleet@romashka.test" and "попытка регистрации" in mail["Subject"]


def test_registration_fields_are_checked_by_name(client: Client) -> None:
    base = {"login": "okname", "email": "a@b.test", "company": "", "password": PASSWORD, "password2": PASSWORD}
    for field, value, label in (("login", "x", "Логин"), ("email", "not-an-email", "Электронная почта"),
                                ("password", "short", "Пароль"), ("password", "password123456", "Пароль"),
                                ("password2", "different thing 123", "Повтор пароля")):
        f = dict(base, **{field: value})
        if field == "password":
            f["password2"] = value
        r = client.submit("/fleet/register", "/fleet/register", f)
        assert r.status == 400 and f'data-field="{field}"' in r.text and label in r.text, (field, r.text)


def test_activation_link_is_single_use_and_guessing_is_stopped(client: Client, smtp, ledger: Ledger) -> None:
    register_and_activate(client, smtp[0])
    mail = smtp[0].wait(1)[0]
    path = "/" + re.search(r"http://\S+?/(fleet/activate/\S+)", body_of(mail)).group(1)
    page = client.get(path)
    again = client.post(path, {"csrf": page.csrf()})
    assert again.status == 400
    # guessing links from one address: after the limit even a right one would be refused
    for i in range(6):
        client.post(f"/fleet/activate/{i + 1}.{'A' * 43}", {"csrf": page.csrf()})
    n = ledger.db.scalar("SELECT count(*) FROM web_attempts WHERE scope = 'pair'")
    assert n == 5  # five were counted, the sixth was refused before a check


def test_password_brute_force_is_stopped_but_owner_device_still_signs_in(client: Client, smtp, ledger: Ledger,
                                                                       clock) -> None:
    register_and_activate(client, smtp[0])
    assert sign_in(client).status == 303  # the owner's browser gets a device cookie
    attacker = Client(client.base)
    for _ in range(5):
        assert sign_in(attacker, password="guess guess guess").status == 400
    r = sign_in(attacker)  # even the right password is refused now from that address
    assert r.status == 429
    # many addresses: the account's own limit stops them, the owner's device is still let in
    for i in range(20):  # twenty other addresses (the test's sockets all come from 127.0.0.1)
        ledger.db.run(ratelimit.fail, "fleet:romashka", f"10.0.1.{i}", now=int(clock.now))
    fresh = Client(client.base)
    assert sign_in(fresh).status == 429
    assert sign_in(client).status == 303
    clock.now += 3601
    assert sign_in(Client(client.base)).status == 303


def test_totp_second_factor(client: Client, smtp, ledger: Ledger, clock) -> None:
    import pyotp
    signed_in_client(client, smtp, ledger)
    page = client.get("/fleet/security")
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text).group(1)
    bad = client.post("/fleet/totp/enable", {"csrf": page.csrf(), "totp": "000000"
                                             if pyotp.TOTP(secret).at(clock.now) != "000000" else "111111"})
    assert bad.status == 400
    r = client.post("/fleet/totp/enable", {"csrf": page.csrf(), "totp": pyotp.TOTP(secret).at(clock.now)})
    assert r.status == 303
    other = Client(client.base)
    r = sign_in(other)
    assert r.status == 303 and r.location == "/fleet/totp"
    assert other.get("/fleet").status == 303  # not signed in until the second factor
    # the code that turned the factor on is spent: it does not sign in
    r = other.submit("/fleet/totp", "/fleet/totp", {"totp": pyotp.TOTP(secret).at(clock.now)})
    assert r.status == 400 and other.get("/fleet").status == 303
    clock.now += 30
    r = other.submit("/fleet/totp", "/fleet/totp", {"totp": pyotp.TOTP(secret).at(clock.now)})
    assert r.status == 303 and r.location == "/fleet"
    assert other.get("/fleet").status == 200
    # the same code again, still inside its window, from a third browser: refused
    third = Client(client.base)
    assert sign_in(third).location == "/fleet/totp"
    r = third.submit("/fleet/totp", "/fleet/totp", {"totp": pyotp.TOTP(secret).at(clock.now)})
    assert r.status == 400 and third.get("/fleet").status == 303
    # and an earlier step's code (inside the one-step window) is refused too
    r = third.submit("/fleet/totp", "/fleet/totp", {"totp": pyotp.TOTP(secret).at(clock.now - 30)})
    assert r.status == 400 and third.get("/fleet").status == 303
    clock.now += 30
    r = third.submit("/fleet/totp", "/fleet/totp", {"totp": pyotp.TOTP(secret).at(clock.now)})
    assert r.status == 303 and r.location == "/fleet"


def test_transactions_and_statement_pages_and_csv(client: Client, smtp, ledger: Ledger) -> None:
    signed_in_client(client, smtp, ledger)
    page = client.get(f"/fleet/contracts/{CONTRACT}/statement?month=2026-11")
    assert page.status == 200 and 'id="opening">0.00 ₽' in page.text and 'id="closing">500000.00 ₽' in page.text
    csv = client.get(f"/fleet/contracts/{CONTRACT}/statement?month=2026-11&format=csv")
    assert csv.status == 200 and csv.header("Content-Type").startswith("text/csv")
    assert "attachment" in csv.header("Content-Disposition")
    assert client.get(f"/fleet/contracts/{CONTRACT}/statement?month=2026-13").status == 400
    t = client.get(f"/fleet/contracts/{CONTRACT}/transactions?from=2026-11-01&to=2026-11-30")
    assert t.status == 200 and 'id="txns"' in t.text
    bad = client.get(f"/fleet/contracts/{CONTRACT}/transactions?from=2026-11-30&to=2026-11-01")
    assert bad.status == 400 and "По дату" in bad.text


def test_transaction_detail_page_shows_local_time_station_discount_and_pages(client: Client, smtp, ledger: Ledger,
                                                                             monkeypatch) -> None:
    from host.web import fleet

    from .purchases import (
        PURCHASE_ML,
        STATION_ADDRESS,
        STATION_NAME,
        november_purchases,
    )
    november_purchases(ledger)
    signed_in_client(client, smtp, ledger)
    monkeypatch.setattr(fleet, "DETAIL_PAGE", 2)  # the server reads it per request: two lines a page
    url = f"/fleet/contracts/{CONTRACT}/transactions?from=2026-11-01&to=2026-11-30"
    p1 = client.get(url)
    assert p1.status == 200
    rows = re.findall(r'<tr data-record="[^"]+">(.*?)</tr>', p1.text, re.DOTALL)
    assert len(rows) == 2
    cells = [re.findall(r'<td class="(\w+)">(.*?)</td>', r, re.DOTALL) for r in rows]
    first = dict(cells[0])
    assert first["at"] == "2026-11-15 14:08:40"  # completed 120 s after the sale began, Moscow time
    assert first["station"] == STATION_NAME and first["address"] == STATION_ADDRESS
    assert first["product"] == "АИ-95" and first["litres"] == "10.000" and first["price"] == "60.00"
    assert first["discount"] == "15.00" and first["amount"] == "600.00"  # list 61.50 ₽/l
    assert dict(cells[1])["litres"] == "20.000"
    nxt = re.search(r'id="next-page" href="([^"]+)"', p1.text).group(1).replace("&amp;", "&")
    p2 = client.get(f"/fleet/contracts/{CONTRACT}/transactions{nxt}")
    rows2 = re.findall(r'<td class="litres">([^<]+)</td>', p2.text)
    assert p2.status == 200 and rows2 == [f"{PURCHASE_ML[2] // 1000}.000"] and 'id="next-page"' not in p2.text
    only2 = client.get(f"{url}&card={CARD2}")
    assert only2.status == 200 and "Операций за период нет" in only2.text
    assert client.get(f"{url}&cursor=garbage").status == 400
    assert client.get(f"{url}&card=7005830000000009").status == 404  # another company's card
    csv = client.get(f"{url}&format=csv")
    assert csv.status == 303 and csv.location.startswith(f"/fleet/contracts/{CONTRACT}/documents/detail.csv?")
    body = client.get(csv.location).body.decode("utf-8-sig")
    assert STATION_ADDRESS in body and ";600,00" in body  # the documents write a decimal comma
