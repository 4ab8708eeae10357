"""host.alerts: a site's fuel.totals_mismatch records become totals alerts at ingest, once
each, listed by ``edgepos host alerts``. On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from authz import sample
from authz.fuel_model import RuleException
from authz.reasons import Reason
from host import alerts, master
from host.admin import main
from host.ingest import ingest_batch
from host.ledger import Ledger
from wire import Batch, SiteKeys, decode, encode, topic_of
from wire.bodies import FuelTotalsMismatch, NozzleTotals

from .edge import CARD, T0, Site, contract, fuel_card


@pytest.fixture
def world(ledger: Ledger) -> Ledger:
    master.put_products(ledger, sample.PRODUCTS)
    master.create_contract(ledger, contract(balance_kop=10_000_000))
    master.issue_fuel_card(ledger, fuel_card())
    return ledger


def mismatch(sale_txn_id: str, extra_ml: int) -> FuelTotalsMismatch:
    return FuelTotalsMismatch(sale_txn_id, 7, "AI95", NozzleTotals(2, 1_000_000, 60_000_000), 40_000, 240_000,
                              NozzleTotals(2, 1_040_000 + extra_ml, 60_240_000 + extra_ml * 6))


def test_a_totals_mismatch_is_listed_once_as_an_alert(world: Ledger, ledger_url: str, capsys):
    s = Site("S1")
    sale = s.fuel_sale(delivered_ml=40_000)
    rec = s.other("fuel.totals_mismatch", mismatch(sale[0].txn_id, 3_000).to_json(), at=T0 + 5)
    batch = Batch("S1", 1, tuple(s.records), T0)
    ingest_batch(world, batch)
    ingest_batch(world, batch)  # delivered twice: one alert
    (a,) = alerts.alerts(world.db)
    assert (a.record_id, a.site_id, a.lane, a.sale_txn_id, a.product) == (rec.record_id, "S1", "pump-1",
                                                                          sale[0].txn_id, "AI95")
    assert (a.before_volume_ml, a.delivered_volume_ml, a.after_volume_ml) == (1_000_000, 40_000, 1_043_000)
    assert (a.unexplained_ml, a.unexplained_kop, a.status) == (3_000, 18_000, "open")
    assert not [i for i in world.issues() if i.record_id == rec.record_id]  # a known kind, not flagged
    assert alerts.alerts(world.db, "closed") == []
    main(["--db", ledger_url, "alerts"])
    out = capsys.readouterr().out
    assert "pump-1" in out and "3000" in out and sale[0].txn_id in out


def test_no_mismatch_no_alert_and_a_bad_body_is_not_listed(world: Ledger, ledger_url: str, capsys):
    s = Site("S1")
    s.fuel_sale()
    s.other("fuel.totals_mismatch", {"sale_txn_id": "x"})
    ingest_batch(world, Batch("S1", 1, tuple(s.records), T0))
    assert alerts.alerts(world.db) == []
    assert world.record_count("S1") == len(s.records)  # stored as every record is
    main(["--db", ledger_url, "alerts", "--all"])
    assert "no totals alerts" in capsys.readouterr().out


# -- approve-and-alert rule exceptions (issue 11) -------------------------------------------------

def test_a_completed_purchase_with_exceptions_is_listed_once_per_rule(world: Ledger, ledger_url: str, capsys):
    s = Site("S1")
    broke = (RuleException(Reason.OUTSIDE_TIME_WINDOW), RuleException(Reason.LIMIT, 2))
    sale = s.fuel_sale(delivered_ml=30_000, exceptions=broke)
    plain = s.fuel_sale(card_no=CARD, tc=20)  # no exceptions: no alert
    # through the wire as a site sends it: signed, encoded, decoded at the host
    keys = SiteKeys({"S1": bytes(range(32))})
    sent = Batch("S1", 1, tuple(s.records), T0)
    batch = decode(encode(sent, keys), keys, topic=topic_of(sent))
    assert batch == sent
    assert sale[0].body["decision"]["exceptions"] == [["OUTSIDE_TIME_WINDOW", None], ["LIMIT", 2]]
    assert "exceptions" not in plain[3].body["decision"]
    ingest_batch(world, batch)
    ingest_batch(world, batch)  # delivered twice: listed once
    done = sale[3]
    assert done.kind == "fuel.completed"
    got = alerts.rule_alerts(world.db)
    assert [(a.record_id, a.n, a.reason, a.limit_id) for a in got] == [
        (done.record_id, 0, "OUTSIDE_TIME_WINDOW", None), (done.record_id, 1, "LIMIT", 2)]
    a = got[1]
    assert (a.site_id, a.lane, a.card_no, a.contract_id, a.station_id, a.product) == ("S1", "pump-1", CARD, 1, 1000,
                                                                                       "AI95")
    assert (a.volume_ml, a.amount_kop, a.at_utc_s, a.status) == (30_000, 180_000, done.at_utc_s, "open")
    assert a.rule == "limit 2 (LIMIT)" and a.card == "70**********0001"
    # the purchase is charged as any other: an alert changes nothing in the ledger's figures
    assert world.balance_kop(1) == 10_000_000 - 180_000 - 240_000
    assert alerts.rule_alerts(world.db, contract_id=2) == []
    main(["--db", ledger_url, "alerts"])
    out = capsys.readouterr().out
    assert "fuel.rule_exception\tS1\tpump-1\t70**********0001\t1\tOUTSIDE_TIME_WINDOW\t1000\tAI95\t30000" in out
    assert "limit 2 (LIMIT)" in out and CARD not in out  # the card masked


@pytest.mark.parametrize("exceptions", [
    "LIMIT", [], [["LIMIT"]], [["NO_SUCH", None]], [["OK", None]], [["LIMIT", None]], [["OUTSIDE_TIME_WINDOW", 3]],
    [["LIMIT", -1]], [["LIMIT", "2"]], [[1, None]]])
def test_malformed_exceptions_are_not_listed_and_the_purchase_is_still_charged(world: Ledger, exceptions):
    s = Site("S1")
    sale = s.fuel_sale(delivered_ml=10_000)
    sale[3].body["decision"]["exceptions"] = exceptions
    ingest_batch(world, Batch("S1", 1, tuple(s.records), T0))
    assert alerts.rule_alerts(world.db, None) == []
    assert world.balance_kop(1) == 10_000_000 - 60_000
    assert world.record_count("S1") == len(s.records)


def test_no_rule_alerts_says_so(world: Ledger, ledger_url: str, capsys):
    main(["--db", ledger_url, "alerts", "--all"])
    out = capsys.readouterr().out
    assert "no totals alerts" in out and "no fuel.rule_exception alerts" in out
