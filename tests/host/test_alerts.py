"""host.alerts: a site's fuel.totals_mismatch records become totals alerts at ingest, once
each, listed by ``edgepos host alerts``. On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from authz import sample
from host import alerts, master
from host.admin import main
from host.ingest import ingest_batch
from host.ledger import Ledger
from wire import Batch
from wire.bodies import FuelTotalsMismatch, NozzleTotals

from .edge import T0, Site, contract, fuel_card


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
