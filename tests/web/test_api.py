"""The fleet API over real HTTP: tokens made and revoked in the cabinet, paging, limits set
and removed with Idempotency-Key replays, another company's cards invisible, fields named
in errors; and schemathesis against its own OpenAPI description."""

from __future__ import annotations

import json
import re

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from authz.fuel_model import CardStatus
from host import fleet_users as fu
from host.ledger import Ledger
from host.web.openapi import document

from .client import Client
from .conftest import CARD, CARD2, CONTRACT, OTHER_CARD, OTHER_CONTRACT
from .purchases import november_purchases
from .test_fleet import signed_in_client


def make_token(client: Client) -> str:
    page = client.get("/fleet/security")
    r = client.post("/fleet/tokens", {"csrf": page.csrf(), "name": "ERP"})
    assert r.status == 200
    return re.search(r'id="new-token">([^<]+)<', r.text).group(1)


def api(client: Client, method: str, path: str, token: str, body: dict | None = None, key: str | None = None):
    h = {"Authorization": f"Bearer {token}"}
    if key is not None:
        h["Idempotency-Key"] = key
    r = client.request(method, path, json_body=None if body is None else json.dumps(body).encode(), headers=h)
    return r.status, (json.loads(r.body) if r.body else None)


def test_token_reads_writes_idempotency_and_revocation(client: Client, smtp, ledger: Ledger) -> None:
    signed_in_client(client, smtp, ledger)
    token = make_token(client)
    bare = Client(client.base)  # the API uses no cookies
    assert api(bare, "GET", "/api/v1/contracts", "ept_wrong")[0] == 401
    st, body = api(bare, "GET", "/api/v1/contracts", token)
    assert st == 200 and body["total"] == 1 and body["items"][0]["available_kop"] == 600_000_00
    st, body = api(bare, "GET", f"/api/v1/contracts/{CONTRACT}/cards?limit=1", token)
    assert st == 200 and body["total"] == 2 and len(body["items"]) == 1 and body["next_offset"] == 1
    st, body2 = api(bare, "GET", f"/api/v1/contracts/{CONTRACT}/cards?limit=1&offset=1", token)
    assert body2["next_offset"] is None and body2["items"][0]["card_no"] != body["items"][0]["card_no"]
    assert api(bare, "GET", f"/api/v1/contracts/{CONTRACT}/cards?limit=0", token)[0] == 422
    assert api(bare, "GET", f"/api/v1/cards/{OTHER_CARD}", token)[0] == 404

    lim = {"unit": "litres", "amount": 40_000, "period": "day"}
    st, _ = api(bare, "PUT", f"/api/v1/cards/{CARD}/limits/1", token, lim)
    assert st == 422  # no Idempotency-Key
    st, out = api(bare, "PUT", f"/api/v1/cards/{CARD}/limits/1", token, lim, key="k-1")
    assert st == 200 and out["limits"][0]["amount"] == 40_000
    assert ledger.fuel_card(CARD).limits[0].amount == 40_000
    master_change = {"unit": "litres", "amount": 10_000, "period": "day"}
    st, again = api(bare, "PUT", f"/api/v1/cards/{CARD}/limits/1", token, lim, key="k-1")
    assert (st, again) == (200, out)
    st, err = api(bare, "PUT", f"/api/v1/cards/{CARD}/limits/1", token, master_change, key="k-1")
    assert st == 409 and err["error"]["field"] == "Idempotency-Key"
    st, err = api(bare, "PUT", f"/api/v1/cards/{CARD}/limits/2", token, {"unit": "rub", "amount": -1,
                                                                          "period": "day"}, key="k-2")
    assert st == 422 and err["error"]["field"] == "amount"
    st, err = api(bare, "PUT", f"/api/v1/cards/{CARD}/limits/2", token, {"unit": "rub", "amount": 5,
                                                                          "period": "day", "scope": "group",
                                                                          "group": "shop"}, key="k-3")
    assert st == 409 and "may not buy group shop" in err["error"]["message"]
    st, out = api(bare, "POST", f"/api/v1/cards/{CARD2}/block", token, key="k-4")
    assert st == 200 and out["status"] == "blocked" and ledger.fuel_card(CARD2).status is CardStatus.BLOCKED
    st, out = api(bare, "DELETE", f"/api/v1/cards/{CARD}/limits/1", token, key="k-5")
    assert st == 200 and out["limits"] == [] and ledger.fuel_card(CARD).limits == ()
    st, _ = api(bare, "POST", f"/api/v1/cards/{OTHER_CARD}/block", token, key="k-6")
    assert st == 404 and ledger.fuel_card(OTHER_CARD).status is CardStatus.ACTIVE

    tid = fu.api_tokens(ledger, fu.api_user(ledger, token).user_id)[0].token_id
    page = client.get("/fleet/security")
    assert client.post(f"/fleet/tokens/{tid}/revoke", {"csrf": page.csrf()}).status == 303
    assert api(bare, "GET", "/api/v1/contracts", token)[0] == 401


schema = schemathesis.openapi.from_dict(document())


@pytest.fixture
def api_token(client: Client, smtp, ledger: Ledger) -> tuple[str, str]:
    signed_in_client(client, smtp, ledger)
    return client.base, make_token(client)


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_description(case, api_token) -> None:
    base, token = api_token
    case.call_and_validate(base_url=base, headers={"Authorization": f"Bearer {token}"})


def test_transaction_detail_pages_and_documents_as_csv_and_pdf(client: Client, smtp, ledger: Ledger,
                                                               clock) -> None:
    import csv
    import io

    from pypdf import PdfReader

    from host import master

    from ..host.test_documents import BUYER, SELLER
    from .test_documents import DEC_3
    november_purchases(ledger)
    master.set_operator_requisites(ledger, SELLER)
    master.set_client_requisites(ledger, CONTRACT, BUYER)
    signed_in_client(client, smtp, ledger)
    token = make_token(client)
    bare = Client(client.base)
    h = {"Authorization": f"Bearer {token}"}
    base = f"/api/v1/contracts/{CONTRACT}"
    assert bare.request("GET", f"{base}/documents/invoice?month=2026-11", headers=h).status == 409  # open month
    clock.now = DEC_3

    st, p1 = api(bare, "GET", f"{base}/transaction-detail?from=2026-11-01&to=2026-11-30&limit=2", token)
    assert st == 200 and len(p1["items"]) == 2 and p1["next_cursor"] and p1["tz"] == "Europe/Moscow"
    first = p1["items"][0]
    assert first["station_name"] == "АЗС №17" and first["station_address"] == "Омск, пр. Мира, 101"
    assert first["volume_ml"] == 10_000 and first["amount_kop"] == 60_000 and first["product"] == "AI95"
    assert first["at_local"].startswith("2026-11-") and first["card_no"] == CARD
    assert first["discount_kop"] == first["volume_ml"] * (first["list_price_kop_per_l"] - 6_000) // 1000
    st, p2 = api(bare, "GET", f"{base}/transaction-detail?from=2026-11-01&to=2026-11-30&limit=2"
                              f"&cursor={p1['next_cursor']}", token)
    assert st == 200 and p2["next_cursor"] is None and [t["volume_ml"] for t in p2["items"]] == [30_000]
    st, err = api(bare, "GET", f"{base}/transaction-detail?cursor=zzz", token)
    assert st == 422 and err["error"]["field"] == "cursor"
    st, only2 = api(bare, "GET", f"{base}/transaction-detail?from=2026-11-01&to=2026-11-30&card_no={CARD2}", token)
    assert st == 200 and only2["items"] == []
    assert api(bare, "GET", f"/api/v1/contracts/{OTHER_CONTRACT}/transaction-detail", token)[0] == 404

    for kind, q in (("detail", "from=2026-11-01&to=2026-11-30"), ("statement", "month=2026-11"),
                    ("report", "month=2026-11"), ("invoice", "month=2026-11"), ("act", "month=2026-11")):
        r = bare.request("GET", f"{base}/documents/{kind}?{q}&format=csv", headers=h)
        assert r.status == 200 and r.header("Content-Type").startswith("text/csv"), (kind, r.body[:200])
        rows = list(csv.reader(io.StringIO(r.body.decode("utf-8-sig"), newline=""), delimiter=";"))
        flat = "\n".join(";".join(row) for row in rows)
        assert str(CONTRACT) in flat, kind
        if kind in ("detail", "report", "statement"):
            assert any(cell.endswith("600,00") for row in rows for cell in row), kind  # the first purchase
        r = bare.request("GET", f"{base}/documents/{kind}?{q}&format=pdf", headers=h)
        assert r.status == 200 and r.header("Content-Type") == "application/pdf" and r.body[:5] == b"%PDF-", kind
        text = "\n".join(pg.extract_text() for pg in PdfReader(io.BytesIO(r.body)).pages)
        assert str(CONTRACT) in text, kind
        if kind in ("invoice", "act"):
            assert BUYER.inn in text and SELLER.inn in text, kind
        if kind == "detail":
            assert "АЗС №17" in text and "Омск, пр. Мира, 101" in text
    assert bare.request("GET", f"{base}/documents/act?month=2026-11&format=doc", headers=h).status == 422
    assert bare.request("GET", f"{base}/documents/act?from=2026-11-01", headers=h).status == 422
    assert bare.request("GET", f"{base}/documents/detail?month=2026-11", headers=h).status == 422
    assert bare.request("GET", f"{base}/documents/act?month=2026-13", headers=h).status == 422
    assert bare.request("GET", f"{base}/documents/deed?month=2026-11", headers=h).status == 404
    assert bare.request("GET", f"/api/v1/contracts/{OTHER_CONTRACT}/documents/act?month=2026-11",
                        headers=h).status == 404
    assert bare.request("GET", f"{base}/documents/act?month=2026-11").status == 401
