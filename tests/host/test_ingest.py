"""Ingest: one transaction per batch, each record applied at most once, the per-site watermark
right whatever the order or concurrency of delivery. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import threading

import pytest

from authz import sample
from host import master
from host.ingest import IngestStats, ingest_batch, record_presence
from host.ledger import Ledger
from wire import Ack, Batch, Presence, Rejection, Table

from .edge import CARD, CONTRACT, T0, Site, contract, fuel_card


@pytest.fixture
def world(ledger: Ledger) -> Ledger:
    master.put_products(ledger, sample.PRODUCTS)
    master.create_contract(ledger, contract(balance_kop=10_000_000))
    master.issue_fuel_card(ledger, fuel_card())
    return ledger


def sales(site: Site, n: int, start_tc: int = 10) -> None:
    for i in range(n):
        site.fuel_sale(tc=start_tc + 2 * i, at=T0 + 600 * i, delivered_ml=10_000 + i)


def charged(site: Site) -> int:
    return sum(r.body["amount_kop"] for r in site.records if r.kind == "fuel.completed")


def test_a_batch_is_applied_and_acked(world: Ledger):
    s = Site("S1")
    sales(s, 2)
    stats = IngestStats()
    ack = ingest_batch(world, Batch("S1", 1, tuple(s.records), T0), stats=stats)
    assert ack == Ack("S1", 1, ())
    assert (stats.records, stats.new_records, stats.status) == (10, 10, "applied")
    assert world.record_count("S1") == 10
    assert world.balance_kop(CONTRACT) == 10_000_000 - charged(s)
    site = world.site("S1")
    assert (site.up_to_seq, site.max_seq, site.records, site.batches) == (1, 1, 10, 1)


def test_the_same_batch_twice_is_applied_once(world: Ledger):
    s = Site("S1")
    sales(s, 3)
    b = Batch("S1", 1, tuple(s.records), T0)
    first, second = ingest_batch(world, b), ingest_batch(world, b)
    assert first == second == Ack("S1", 1, ())
    assert world.record_count() == 15
    assert world.balance_kop(CONTRACT) == 10_000_000 - charged(s)
    assert world.counters(CARD)[1].spent == sum(r.body["delivered_volume_ml"] for r in s.records
                                                if r.kind == "fuel.completed")
    assert world.site("S1").records == 15


def test_overlapping_batches_apply_each_record_once(world: Ledger):
    s = Site("S1")
    sales(s, 4)
    recs = s.records
    # A resend after a restart re-cut the records: batch 2 repeats the tail of batch 1.
    batches = [Batch("S1", 1, tuple(recs[:12]), T0), Batch("S1", 2, tuple(recs[7:20]), T0)]
    for b in batches:
        ingest_batch(world, b)
    assert world.record_count() == 20
    assert world.balance_kop(CONTRACT) == 10_000_000 - charged(s)
    assert world.site("S1").up_to_seq == 2


def test_out_of_order_batches_hold_the_watermark_at_the_gap(world: Ledger):
    s = Site("S1")
    sales(s, 6)
    b = s.batches(5)  # 6 batches
    assert ingest_batch(world, b[2]).up_to_seq == 0
    assert ingest_batch(world, b[1]).up_to_seq == 0
    assert world.site("S1").gap
    assert ingest_batch(world, b[0]).up_to_seq == 3  # the gap closed: 1, 2, 3
    assert ingest_batch(world, b[4]).up_to_seq == 3
    assert ingest_batch(world, b[5]).up_to_seq == 3
    assert ingest_batch(world, b[3]).up_to_seq == 6
    assert ingest_batch(world, b[0]).up_to_seq == 6  # a stale resend: nothing new, same ack
    assert world.record_count() == 30
    assert world.balance_kop(CONTRACT) == 10_000_000 - charged(s)


@pytest.mark.parametrize("workers", [2, 4])
def test_concurrent_ingest_of_one_site_keeps_the_watermark(world: Ledger, open_ledger, workers: int):
    s = Site("S1")
    sales(s, 40)
    batches = s.batches(4)  # 50 batches
    order = batches + batches[::3]  # some delivered twice
    random.Random(7).shuffle(order)
    shares = [order[i::workers] for i in range(workers)]
    ledgers = [open_ledger() for _ in range(workers)]
    acks: list[Ack] = []
    errors: list[BaseException] = []

    def work(led: Ledger, mine: list[Batch]) -> None:
        try:
            for b in mine:
                acks.append(ingest_batch(led, b))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(led, mine)) for led, mine in zip(ledgers, shares)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert world.site("S1").up_to_seq == len(batches)
    assert max(a.up_to_seq for a in acks) == len(batches)
    assert world.record_count() == len(s.records)
    assert world.site("S1").records == len(s.records)
    assert world.balance_kop(CONTRACT) == 10_000_000 - charged(s)


def test_concurrent_sites_charging_one_contract(world: Ledger, open_ledger):
    sites = [Site(f"S{i}") for i in range(3)]
    for i, s in enumerate(sites):
        for k in range(10):
            s.fuel_sale(tc=1000 * i + 2 * k, at=T0 + 600 * k)
    ledgers = [open_ledger() for _ in sites]
    threads = [threading.Thread(target=lambda led=led, s=s: [ingest_batch(led, b) for b in s.batches(3)])
               for led, s in zip(ledgers, sites)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert world.balance_kop(CONTRACT) == 10_000_000 - sum(charged(s) for s in sites)
    assert [x.up_to_seq for x in world.sites()] == [17, 17, 17]


def test_unknown_kinds_are_stored_and_flagged(world: Ledger):
    s = Site("S1")
    r = s.other("fuel.nozzle_polished", {"how": "gently"})
    ack = ingest_batch(world, Batch("S1", 1, (r,), T0))
    assert ack.up_to_seq == 1 and not ack.rejected
    stored = world.record(r.record_id)
    assert stored["body"] == {"how": "gently"} and stored["flag"] == "unknown_kind"
    assert [i.kind for i in world.issues()] == ["unknown_kind"]


def test_a_body_the_ledger_cannot_read_is_stored_and_flagged(world: Ledger):
    s = Site("S1")
    good = s.fuel_sale()
    bad = s.other("fuel.completed", {"amount_kop": "lots", "card_no": CARD})
    ingest_batch(world, Batch("S1", 1, (*good, bad), T0))
    assert world.record(bad.record_id)["flag"] == "bad_body"
    assert world.balance_kop(CONTRACT) == 10_000_000 - charged(Site(records=good))
    assert "body.contract_id is missing" in world.issues()[0].detail or "amount_kop" in world.issues()[0].detail


def test_records_of_unknown_contracts_and_cards_are_flagged(world: Ledger):
    s = Site("S1")
    s.fuel_sale(card_no="7005839999999999")  # unknown card of a known contract: charged, no limits
    s.fuel_sale(card_no="7005839999999998", contract_id=77, tc=30)  # unknown contract: not charged
    ingest_batch(world, Batch("S1", 1, tuple(s.records), T0))
    assert sorted(f for _, _, f in world.flagged()) == ["unknown_card", "unknown_contract"]
    assert world.balance_kop(CONTRACT) == 10_000_000 - 240_000


def test_a_disabled_site_gets_its_batches_refused_for_good(world: Ledger):
    s = Site("S1")
    sales(s, 3)
    b = s.batches(5)
    ingest_batch(world, b[0])
    master.set_site_status(world, "S1", "disabled")
    ack = ingest_batch(world, b[1])
    assert ack.up_to_seq == 2
    assert ack.rejected == (Rejection(2, "site S1 is disabled on the host: batch refused"),)
    assert world.record_count() == 5
    master.set_site_status(world, "S1", "active")
    ack = ingest_batch(world, b[2])
    assert ack.up_to_seq == 3 and [r.batch_seq for r in ack.rejected] == [2]
    # batch 1 resent after the site was disabled stays applied
    assert world.batch_status("S1", 1) == ("applied", None)


def test_an_empty_batch_settles_its_number(world: Ledger):
    assert ingest_batch(world, Batch("S1", 1, (), T0)) == Ack("S1", 1, ())


def test_presence_keeps_the_newest(world: Ledger):
    on = Presence("S1", True, T0 + 100, "0.1.0", {Table.STOP_LIST: 4})
    stale_will = Presence("S1", False, T0, "0.1.0", {})
    assert record_presence(world, on)
    assert not record_presence(world, stale_will)
    site = world.site("S1")
    assert site.online is True and site.replica_versions == {"stop_list": 4}
    assert record_presence(world, Presence("S1", False, T0 + 100, "0.1.0", {}))  # a tie: the later wins
    assert world.site("S1").online is False


def test_nothing_is_applied_when_the_transaction_fails(world: Ledger, monkeypatch):
    s = Site("S1")
    sales(s, 2)
    import host.effects as fx

    def boom(self):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(fx.BatchEffects, "_apply_counters", boom)
    with pytest.raises(RuntimeError):
        ingest_batch(world, Batch("S1", 1, tuple(s.records), T0))
    assert world.record_count() == 0 and world.site("S1") is None
    assert world.balance_kop(CONTRACT) == 10_000_000
    monkeypatch.undo()
    assert ingest_batch(world, Batch("S1", 1, tuple(s.records), T0)).up_to_seq == 1
    assert world.record_count() == 10
