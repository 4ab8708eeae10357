"""The fleet controls (issue 11) in the fleet cabinet and the fleet API, over real HTTP: a
manager sets a card's products, time windows, stations and on-breach, and purchase-count,
quarter and year limits that alert; the host's own check refuses bad rules (shown on the
page, 409/422 in the API) and nothing changes; CSRF as every form."""

from __future__ import annotations

import html

from authz.fuel_model import LimitUnit, OnBreach, Period, StationScope, TimeWindow
from host.ledger import Ledger

from .client import Client
from .conftest import CARD, CARD2, OTHER_CARD
from .test_api import api, make_token
from .test_fleet import signed_in_client

CONTROLS = {"products": "DT", "windows": "mon-fri,07:00-19:00\nsat,22:00-06:00", "stations": "home-region",
            "on_breach": "alert"}


def test_a_manager_sets_controls_and_alerting_limits_in_the_cabinet(client: Client, smtp, ledger: Ledger) -> None:
    signed_in_client(client, smtp, ledger)
    page = client.get(f"/fleet/cards/{CARD}")
    assert page.status == 200 and 'id="controls-form"' in page.text and 'value="all"' in page.text
    r = client.post(f"/fleet/cards/{CARD}/controls", {"csrf": page.csrf(), **CONTROLS})
    assert r.status == 303, r.text
    card = ledger.fuel_card(CARD)
    assert card.products == frozenset({"DT"}) and card.on_breach is OnBreach.ALERT
    assert card.windows == (TimeWindow(frozenset(range(5)), 420, 1140), TimeWindow(frozenset({5}), 1320, 360))
    assert card.station_scope is StationScope.HOME_REGION
    shown = html.unescape(client.get(f"/fleet/cards/{CARD}").text)
    assert 'value="DT"' in shown and "mon-fri,07:00-19:00\nsat,22:00-06:00</textarea>" in shown
    assert '<option value="alert" selected>' in shown
    r = client.post(f"/fleet/cards/{CARD}/limits", {"csrf": page.csrf(), "limit_id": "2", "amount": "30",
                                                    "unit": "purchases", "period": "quarter", "on_breach": "alert"})
    assert r.status == 303, r.text
    r = client.post(f"/fleet/cards/{CARD}/limits", {"csrf": page.csrf(), "limit_id": "3", "amount": "90000",
                                                    "unit": "rub", "period": "year"})
    assert r.status == 303, r.text
    lims = {x.limit_id: x for x in ledger.fuel_card(CARD).limits}
    assert (lims[2].unit, lims[2].period, lims[2].amount, lims[2].on_breach) == (
        LimitUnit.PURCHASES, Period.QUARTER, 30, OnBreach.ALERT)
    assert (lims[3].period, lims[3].on_breach) == (Period.YEAR, OnBreach.DECLINE)
    shown = client.get(f"/fleet/cards/{CARD}").text
    assert "30 покуп. в квартал (все товары), разрешить и сообщить" in shown and "90000.00 ₽ в год" in shown
    # back to no controls: the whole form, every field
    r = client.post(f"/fleet/cards/{CARD}/controls", {"csrf": page.csrf(), "products": "all", "windows": "",
                                                      "stations": "network", "on_breach": "decline"})
    assert r.status == 303
    card = ledger.fuel_card(CARD)
    assert (card.products, card.windows, card.station_scope, card.on_breach) == (None, (), StationScope.NETWORK,
                                                                                 OnBreach.DECLINE)


def test_bad_controls_are_shown_and_change_nothing(client: Client, smtp, ledger: Ledger) -> None:
    signed_in_client(client, smtp, ledger)
    page = client.get(f"/fleet/cards/{CARD2}")
    before = ledger.fuel_card(CARD2)
    for change, says in (({"products": "KEROSENE"}, "allows product 'KEROSENE' the network does not sell"),
                         ({"products": "COFFEE,DT"}, None),  # CARD2 buys fuel and shop: fine, undone below
                         ({"windows": "mon,10:00-10:00"}, "a time window of zero length at minute 600"),
                         ({"windows": "someday,10:00-11:00"}, "unknown day"),
                         ({"stations": "501,9999"}, "lists unknown station 9999"),
                         ({"stations": "anywhere"}, "stations are network, home-region or station ids"),
                         ({"on_breach": "ignore"}, "on_breach")):
        r = client.post(f"/fleet/cards/{CARD2}/controls", {"csrf": page.csrf(), **CONTROLS, "products": "all",
                                                           **change})
        if says is None:
            assert r.status == 303
            client.post(f"/fleet/cards/{CARD2}/controls", {"csrf": page.csrf(), "products": "all", "windows": "",
                                                           "stations": "network", "on_breach": "decline"})
            continue
        assert r.status == 400 and says in html.unescape(r.text), (change, r.text[-600:])
        assert ledger.fuel_card(CARD2) == before
    bad = client.post(f"/fleet/cards/{CARD2}/limits", {"csrf": page.csrf(), "limit_id": "4", "amount": "3",
                                                       "unit": "purchases", "period": "transaction"})
    assert bad.status == 400 and "counts purchases per transaction" in bad.text
    bad = client.post(f"/fleet/cards/{CARD2}/limits", {"csrf": page.csrf(), "limit_id": "4", "amount": "-3",
                                                       "unit": "purchases", "period": "day"})
    assert bad.status == 400 and ledger.fuel_card(CARD2) == before
    # CSRF as every form; another company's card looks like none
    assert client.post(f"/fleet/cards/{CARD2}/controls", {**CONTROLS}).status == 403
    assert client.post(f"/fleet/cards/{OTHER_CARD}/controls", {"csrf": page.csrf(), **CONTROLS}).status == 404
    assert ledger.fuel_card(CARD2) == before


def test_the_api_sets_controls_and_alerting_limits(client: Client, smtp, ledger: Ledger) -> None:
    signed_in_client(client, smtp, ledger)
    token = make_token(client)
    bare = Client(client.base)
    st, out = api(bare, "GET", f"/api/v1/cards/{CARD}", token)
    assert st == 200 and out["controls"] == {"products": None, "windows": [], "stations": "network",
                                             "on_breach": "decline"}
    assert out["limits"][0]["on_breach"] == "decline"
    body = {"products": ["DT", "AI95"], "windows": ["sat-sun,00:00-24:00"], "stations": [501]}
    st, out = api(bare, "PUT", f"/api/v1/cards/{CARD}/controls", token, body, key="c-1")
    assert st == 200, out
    assert out["controls"] == {"products": ["AI95", "DT"], "windows": ["sat-sun,00:00-24:00"], "stations": [501],
                               "on_breach": "decline"}
    assert api(bare, "PUT", f"/api/v1/cards/{CARD}/controls", token, body, key="c-1") == (200, out)  # a replay
    card = ledger.fuel_card(CARD)
    assert (card.station_scope, card.station_ids) == (StationScope.LISTED, frozenset({501}))
    st, out = api(bare, "PUT", f"/api/v1/cards/{CARD}/controls", token, {"on_breach": "alert"}, key="c-2")
    assert st == 200 and out["controls"]["products"] == ["AI95", "DT"] and out["controls"]["on_breach"] == "alert"
    st, out = api(bare, "PUT", f"/api/v1/cards/{CARD}/limits/5", token,
                  {"unit": "purchases", "amount": 2, "period": "year", "on_breach": "alert"}, key="c-3")
    assert st == 200 and out["limits"][-1] == {"limit_id": 5, "unit": "purchases", "amount": 2, "period": "year",
                                               "scope": "all", "group": None, "product": None, "on_breach": "alert"}
    before = ledger.fuel_card(CARD)
    for n, (change, status, says) in enumerate((
            ({"products": []}, 409, "empty product list"),
            ({"products": ["KEROSENE"]}, 409, "does not sell"),
            ({"windows": ["mon,10:00-10:00"]}, 409, "zero length"),
            ({"windows": ["mon"]}, 422, "windows"),
            ({"stations": [9999]}, 409, "unknown station 9999"),
            ({"stations": "mars"}, 422, "stations"),
            ({"stations": []}, 422, "stations"),
            ({"on_breach": "maybe"}, 422, "on_breach"),
            ({"colour": "red"}, 422, "colour"))):
        st, err = api(bare, "PUT", f"/api/v1/cards/{CARD}/controls", token, change, key=f"bad-{n}")
        assert st == status and says in (err["error"].get("field", "") + err["error"]["message"]), (change, err)
    st, err = api(bare, "PUT", f"/api/v1/cards/{CARD}/limits/6", token,
                  {"unit": "purchases", "amount": 2, "period": "transaction"}, key="bad-limit")
    assert st == 409 and "counts purchases per transaction" in err["error"]["message"]
    st, err = api(bare, "PUT", f"/api/v1/cards/{CARD}/limits/6", token,
                  {"unit": "purchases", "amount": -2, "period": "day"}, key="bad-limit-2")
    assert st == 422 and err["error"]["field"] == "amount"
    assert ledger.fuel_card(CARD) == before
    assert api(bare, "PUT", f"/api/v1/cards/{OTHER_CARD}/controls", token, {"on_breach": "alert"}, key="o")[0] == 404


def test_the_contract_page_lists_purchases_approved_past_a_rule(client: Client, smtp, ledger: Ledger) -> None:
    from authz.fuel_model import RuleException
    from authz.reasons import Reason
    from host.ingest import ingest_batch

    from ..host.edge import T0, Site
    from .conftest import CONTRACT, OTHER_CONTRACT
    signed_in_client(client, smtp, ledger)
    assert 'id="no-exceptions"' in client.get(f"/fleet/contracts/{CONTRACT}").text
    s = Site("S1")
    s.fuel_sale(card_no=CARD, contract_id=CONTRACT, delivered_ml=20_000, at=T0,
                exceptions=(RuleException(Reason.OUTSIDE_TIME_WINDOW), RuleException(Reason.LIMIT, 1)))
    s.fuel_sale(card_no=OTHER_CARD, contract_id=OTHER_CONTRACT, delivered_ml=5_000, tc=30, at=T0,
                exceptions=(RuleException(Reason.STATION_NOT_ALLOWED),))
    for b in s.batches(50):
        ingest_batch(ledger, b)
    page = client.get(f"/fleet/contracts/{CONTRACT}")
    assert page.status == 200 and 'id="exceptions"' in page.text
    table = page.text.split('id="exceptions"')[1].split("</table>")[0]
    assert table.count("<tr><td>") == 2 and "вне разрешённого времени" in table and "лимит превышен (лимит 1)" in table
    assert "70**********0001" in table and CARD not in table and "20.000 л" in table
    assert "2026-11-18 14:08" in table  # the completion's local time in the contract's zone (11:08 UTC, Moscow)
    assert "станция вне списка" not in page.text  # another company's exception is not shown
