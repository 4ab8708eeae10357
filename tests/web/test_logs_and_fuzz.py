"""No password, code, link token, API token or full card number reaches a log line (the
whole of the cabinets' flows run with every logger at DEBUG and captured); and the forms
fuzzed with hypothesis: any field values get a 4xx naming a field, never a 500, and change
nothing."""

from __future__ import annotations

import json
import logging
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from host import fleet_users as fu
from host.ledger import Ledger
from host.web.access_log import safe_path

from .client import Client
from .conftest import CARD, CLUB_CARD, CLUB_PHONE, CONTRACT, body_of
from .test_api import make_token
from .test_club import PASSWORD as CLUB_PASSWORD
from .test_club import activate, sms_code
from .test_fleet import PASSWORD, signed_in_client


def test_no_secret_in_any_log_line(client: Client, smtp, sms, club_ledger: Ledger, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    secrets: list[str] = [PASSWORD, CLUB_PASSWORD, CARD, CLUB_CARD]
    signed_in_client(client, smtp, club_ledger)
    link = re.search(r"/fleet/activate/(\S+)", body_of(smtp[0].wait(1)[0])).group(1)
    secrets += [link, link.split(".", 1)[1]]
    client.get(f"/fleet/cards/{CARD}")
    client.get(f"/fleet/contracts/{CONTRACT}/transactions?card={CARD}")
    token = make_token(client)
    secrets.append(token)
    Client(client.base).request("GET", f"/api/v1/cards/{CARD}", headers={"Authorization": f"Bearer {token}"})
    Client(client.base).submit("/fleet/login", "/fleet/login", {"login": "romashka", "password": PASSWORD + "x"})
    secrets.append(PASSWORD + "x")
    code = fu.issue_link_code(club_ledger, CONTRACT + 1)
    secrets.append(code)
    c = Client(client.base)
    activate(c, sms)
    secrets.append(sms_code(sms, 1))
    c.submit("/club/reset", "/club/reset", {"phone": CLUB_PHONE, "card": CLUB_CARD})
    secrets.append(sms_code(sms, 2))
    c.request("POST", "/club/sms/inbound", json_body=json.dumps({"from": CLUB_PHONE, "text": "Блокировка"}).encode(),
              headers={"X-Gateway-Token": "gw-secret"})
    sms.wait(3)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "aiohttp.access" in {r.name for r in caplog.records}  # the access log was captured
    assert "outbox: message" in text  # and the outbox's lines
    for s in secrets:
        assert s not in text, f"a secret of {len(s)} characters is in the log"


def test_safe_path_masks_card_numbers_and_tokens() -> None:
    assert safe_path(f"/fleet/cards/{CARD}/block?x={CARD}") == "/fleet/cards/70…01/block"
    assert "<token>" in safe_path("/fleet/activate/12.abcdefghijklmnopqrstuvwxyz0123456789")


_FORMS = {
    "/fleet/register": ("login", "email", "company", "password", "password2"),
    "/fleet/login": ("login", "password"),
    "/club/activate": ("barcode", "birth_date"),
    "/club/reset": ("phone", "card"),
    "/club/login": ("login", "password"),
}
_PAGE = {"/fleet/register": "/fleet/register", "/fleet/login": "/fleet/login", "/club/activate": "/club/activate",
         "/club/reset": "/club/reset", "/club/login": "/club/login"}
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(sorted(_FORMS)), values=st.lists(_text, min_size=5, max_size=5),
       drop=st.sets(st.integers(0, 4)))
def test_forms_fuzzed(client: Client, club_ledger: Ledger, path: str, values: list[str], drop: set[int]) -> None:
    before = club_ledger.db.scalar("SELECT count(*) FROM web_fleet_users")
    token = client.get(_PAGE[path]).csrf()
    fields = {f: v for i, (f, v) in enumerate(zip(_FORMS[path], values)) if i not in drop}
    r = client.post(path, {"csrf": token, **fields})
    assert r.status < 500, r.text
    if r.status == 400:
        assert 'role="alert"' in r.text
    # a registration that passed every check is pending (not active), nothing else is created
    after = club_ledger.db.scalar("SELECT count(*) FROM web_fleet_users")
    assert after - before <= 1
    assert club_ledger.db.scalar("SELECT count(*) FROM web_fleet_users WHERE status = 'active'") == 0
