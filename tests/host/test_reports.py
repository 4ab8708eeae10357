"""Reports (transaction detail, monthly statement) and reconciliation with edge journals."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import date

import pytest

from authz import sample
from host import master, reconcile
from host.admin import main
from host.ingest import ingest_batch
from host.ledger import Ledger
from host.reports import statement, to_csv, to_table, transactions
from terminal.journal import Journal, Record
from wire import Batch

from .edge import CARD, CONTRACT, T0, Site, contract, fuel_card

NOV_18 = T0  # 2026-11-18 07:06 UTC, 10:06 Moscow


@pytest.fixture
def world(ledger: Ledger) -> Ledger:
    master.put_products(ledger, sample.PRODUCTS)
    master.create_contract(ledger, contract(balance_kop=10_000_000), name="Trucks Ltd")
    master.issue_fuel_card(ledger, fuel_card())
    return ledger


def test_transactions_by_contract_and_period(world: Ledger):
    s = Site("S1")
    s.fuel_sale(delivered_ml=40_000, at=NOV_18)
    s.fuel_sale(delivered_ml=10_500, tc=12, at=NOV_18 + 86_400)
    s.fuel_sale(delivered_ml=1_000, tc=14, at=NOV_18 + 10 * 86_400)  # 28th: outside the period
    for b in s.batches(6):
        ingest_batch(world, b)
    lines = transactions(world, CONTRACT, date(2026, 11, 18), date(2026, 11, 19))
    assert [(t.volume_ml, t.amount_kop) for t in lines] == [(40_000, 240_000), (10_500, 63_000)]
    assert lines[0].at_local.startswith("2026-11-18 ") and lines[0].station_id == 1000
    rows = list(csv.reader(io.StringIO(to_csv(lines))))
    assert rows[0][:2] == ["time (local)", "site"] and rows[1][3] == CARD and rows[1][5:] == ["40.000", "60.00", "2400.00"]
    table = to_table(lines)
    assert "2 transactions" in table and CARD not in table and "70**********0001" in table


def test_the_monthly_statement_adds_up(world: Ledger, clock):
    clock.now = NOV_18 + 3_600
    master.top_up_contract(world, CONTRACT, 500_000, note="payment")
    s = Site("S1")
    s.fuel_sale(delivered_ml=40_000, at=NOV_18)
    s.fuel_sale(product="DT", price=7_000, delivered_ml=20_000, tc=12, at=NOV_18 + 86_400)
    s.fuel_sale(delivered_ml=1_000, tc=14, at=NOV_18 + 20 * 86_400)  # December
    for b in s.batches(4):
        ingest_batch(world, b)
    st = statement(world, CONTRACT, 2026, 11)
    assert st.topups_kop == 500_000
    assert [(p.product, p.count, p.volume_ml, p.amount_kop) for p in st.purchases] == \
        [("AI95", 1, 40_000, 240_000), ("DT", 1, 20_000, 140_000)]
    assert st.closing_kop == st.opening_kop + st.adjustments_kop + 500_000 - 380_000
    dec = statement(world, CONTRACT, 2026, 12)
    assert dec.opening_kop == st.closing_kop and dec.closing_kop == world.balance_kop(CONTRACT)
    text = to_table(st)
    assert "Statement of contract 1 Trucks Ltd, 2026-11 (Europe/Moscow)" in text and "closing balance" in text
    assert "purchases AI95" in to_csv(st)


def test_reports_from_the_command_line(world: Ledger, ledger_url: str, capsys, tmp_path):
    s = Site("S1")
    s.fuel_sale(at=NOV_18)
    for b in s.batches():
        ingest_batch(world, b)
    assert main(["--db", ledger_url, "report", "statement", "--contract", "1", "--month", "2026-11",
                 "--csv", str(tmp_path / "st.csv")]) == 0
    out = capsys.readouterr().out
    assert "closing balance" in out and (tmp_path / "st.csv").read_text().startswith("item,count,litres,amount RUB")
    assert main(["--db", ledger_url, "report", "transactions", "--contract", "1", "--from", "2026-11-01",
                 "--to", "2026-11-30", "--csv", "-"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split(",")[3] == CARD
    assert main(["--db", ledger_url, "report", "statement", "--contract", "1", "--month", "2026-13"]) == 1


# -- reconciliation --------------------------------------------------------------------------------

def journal_of(site: Site, path) -> None:
    async def write() -> None:
        async with Journal.open(path, site.site_id) as j:
            await j.append([Record(r.record_id, r.site_id, r.lane, r.txn_id, r.kind, r.at_utc_s, dict(r.body))
                            for r in site.records])
    asyncio.run(write())


def test_reconciliation_matches_after_a_full_sync(world: Ledger, tmp_path):
    sites = [Site("S1"), Site("S2")]
    for i, s in enumerate(sites):
        for k in range(3):
            s.fuel_sale(tc=100 * i + 2 * k, at=T0 + k * 600)
        s.other("fuel.nozzle_polished", {})
        journal_of(s, tmp_path / f"{s.site_id}.sqlite")
        for b in s.batches(4):
            ingest_batch(world, b)
        ingest_batch(world, s.batches(4)[0])  # a duplicate changes nothing
    r = reconcile(world, [tmp_path / "S1.sqlite", tmp_path / "S2.sqlite"])
    assert r.ok, r.summary()
    assert r.records == 32 and "match: OK" in r.summary()
    assert r.edge[("S1", "fuel.completed")].amount_kop == 3 * 240_000


def test_reconciliation_names_what_is_missing(world: Ledger, tmp_path):
    s = Site("S1")
    s.fuel_sale()
    s.fuel_sale(tc=12)
    journal_of(s, tmp_path / "S1.sqlite")
    ingest_batch(world, Batch("S1", 1, tuple(r for r in s.records if r != s.records[3]), T0))  # one completion lost
    r = reconcile(world, tmp_path / "S1.sqlite")
    assert not r.ok
    (m,) = r.mismatches
    assert (m.site_id, m.kind, m.edge.count, m.host.count) == ("S1", "fuel.completed", 2, 1)
    assert m.missing_on_host == (s.records[3].record_id,)
    assert "MISMATCH" in r.summary()


def test_reconciliation_of_a_missing_journal_file(world: Ledger, tmp_path):
    with pytest.raises(FileNotFoundError):
        reconcile(world, tmp_path / "nope.sqlite")

