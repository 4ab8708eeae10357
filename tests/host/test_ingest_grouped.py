"""Several batches of one site in one ingest transaction (a backlog flushing): the same
exactly-once effect, watermark and refusals as the batches one by one, on SQLite and
PostgreSQL; and the worker's grouping of what the broker already delivered (one ack per site
after the commit, each batch alone if the group fails, forged frames still refused)."""

from __future__ import annotations

import asyncio
import random

import pytest

from host import ingest as ingest_mod
from host import master
from host import worker as worker_mod
from host.ingest import IngestStats, ingest_batch, ingest_site_batches
from host.ledger import Ledger
from host.ledger_thread import LedgerThread
from host.worker import Worker
from wire import (
    Ack,
    Batch,
    Rejection,
    SiteKeys,
    acks_topic,
    batches_topic,
    decode,
    encode,
)

from . import test_ingest as one_by_one
from .edge import CARD, CONTRACT, T0, Site

KEY = bytes(range(32, 64))
world = one_by_one.world  # the fixture: the sample products, a contract and its card
sales, charged = one_by_one.sales, one_by_one.charged


def delivered(site: Site) -> int:
    return sum(r.body["delivered_volume_ml"] for r in site.records if r.kind == "fuel.completed")


def settled(led: Ledger, site: str) -> list[tuple]:
    return led.db.fetchall("SELECT batch_seq, status, records, new_records FROM batches WHERE site_id = ? "
                           "ORDER BY batch_seq", (site,))


def test_a_group_is_one_set_of_effects_each_record_once(world: Ledger):
    s = Site("S1")
    sales(s, 6)
    recs = s.records
    # overlapping cuts (a resend after a restart), one batch twice, given out of order
    b1, b2, b3 = (Batch("S1", 1, tuple(recs[:12]), T0), Batch("S1", 2, tuple(recs[7:20]), T0),
                  Batch("S1", 3, tuple(recs[20:]), T0))
    stats = [IngestStats() for _ in range(4)]
    ack = ingest_site_batches(world, [b3, b1, b2, b1], stats=stats)
    assert ack == Ack("S1", 3, ())
    assert [(st.records, st.new_records, st.status) for st in stats] == [
        (10, 10, "applied"), (12, 12, "applied"), (13, 8, "applied"), (12, 0, "applied")]
    assert world.record_count() == 30
    assert world.balance_kop(CONTRACT) == 10_000_000 - charged(s)
    assert world.counters(CARD)[1].spent == delivered(s)
    site = world.site("S1")
    assert (site.up_to_seq, site.max_seq, site.records, site.batches) == (3, 3, 30, 4)
    assert settled(world, "S1") == [(1, "applied", 12, 12), (2, "applied", 13, 8), (3, "applied", 10, 10)]
    # the whole group again: nothing new
    assert ingest_site_batches(world, [b1, b2, b3]) == ack
    assert world.record_count() == 30 and world.balance_kop(CONTRACT) == 10_000_000 - charged(s)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_groups_in_any_order_give_what_batches_one_by_one_give(world: Ledger, seed: int):
    rnd = random.Random(seed)
    s = Site("S1")
    sales(s, 12)
    batches = s.batches(4)  # 15 batches
    order = batches + rnd.sample(batches, 5)  # some delivered twice
    rnd.shuffle(order)
    acks = []
    i = 0
    while i < len(order):
        n = rnd.randint(1, 5)
        acks.append(ingest_site_batches(world, order[i:i + n]) if n > 1 else ingest_batch(world, order[i]))
        i += n
    assert acks[-1].up_to_seq == len(batches) == world.site("S1").up_to_seq
    assert [a.up_to_seq for a in acks] == sorted(a.up_to_seq for a in acks)  # never backwards
    assert world.record_count() == len(s.records) == world.site("S1").records
    assert world.balance_kop(CONTRACT) == 10_000_000 - charged(s)
    assert world.counters(CARD)[1].spent == delivered(s)
    assert sum(r[3] for r in settled(world, "S1")) == len(s.records)


def test_a_group_beyond_a_gap_holds_the_watermark(world: Ledger):
    s = Site("S1")
    sales(s, 4)
    b = s.batches(5)
    assert ingest_site_batches(world, [b[2], b[3]]).up_to_seq == 0
    assert world.site("S1").gap
    assert ingest_site_batches(world, [b[1], b[0]]).up_to_seq == 4
    assert world.record_count() == 20


def test_a_disabled_site_gets_the_whole_group_refused(world: Ledger):
    s = Site("S1")
    sales(s, 3)
    b = s.batches(5)
    ingest_batch(world, b[0])
    master.set_site_status(world, "S1", "disabled")
    ack = ingest_site_batches(world, [b[1], b[2]])
    assert ack.up_to_seq == 3
    assert ack.rejected == tuple(Rejection(n, "site S1 is disabled on the host: batch refused") for n in (2, 3))
    assert world.record_count() == 5
    assert world.balance_kop(CONTRACT) == 10_000_000 - sum(r.body["amount_kop"] for r in b[0].records
                                                           if r.kind == "fuel.completed")


def test_bad_groups_are_refused_and_change_nothing(world: Ledger):
    a, b = Site("S1"), Site("S2")
    sales(a, 1)
    b.fuel_sale(tc=40)
    with pytest.raises(ValueError, match="one site: S1, S2"):
        ingest_site_batches(world, [a.batches(5)[0], b.batches(5)[0]])
    with pytest.raises(ValueError, match="at least one batch"):
        ingest_site_batches(world, [])
    with pytest.raises(TypeError, match="wire.Batch"):
        ingest_site_batches(world, [a.batches(5)[0], "batch 2"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="2 IngestStats for 1 batches"):
        ingest_site_batches(world, a.batches(5), stats=[IngestStats(), IngestStats()])
    assert world.record_count() == 0 and world.site("S1") is None and world.site("S2") is None


def test_a_failing_group_applies_nothing(world: Ledger, monkeypatch):
    s = Site("S1")
    sales(s, 4)
    b = s.batches(5)
    import host.effects as fx
    calls = []

    def boom(self):
        calls.append(1)
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(fx.BatchEffects, "_apply_counters", boom)
    with pytest.raises(RuntimeError):
        ingest_site_batches(world, b)
    assert calls and world.record_count() == 0 and world.site("S1") is None
    assert world.balance_kop(CONTRACT) == 10_000_000


# -- the worker's grouping (no broker: handle_many in the ingest thread, as _consume calls it) --

def _run_worker(url: str, items: list[tuple[str, bytes]]) -> tuple[Worker, list]:
    keys = SiteKeys({"S1": KEY, "S2": KEY})
    w = Worker(url, keys, publish_replica=False)

    async def go() -> list:
        w._ingest = LedgerThread(url, name="test-grouped")
        try:
            return await w._ingest.call(w.handle_many, items)
        finally:
            await w._ingest.close(5)
    return w, asyncio.run(go())


def _frames(site: Site, batches: list[Batch]) -> list[tuple[str, bytes]]:
    keys = SiteKeys({site.site_id: KEY})
    return [(batches_topic(site.site_id), encode(b, keys)) for b in batches]


def _acks(pubs: list) -> list[Ack]:
    host = SiteKeys({"S1": KEY, "S2": KEY})
    return [decode(p.payload, host, topic=p.topic) for p in pubs]


def test_the_worker_acks_a_group_once_after_its_commit_and_refuses_a_forged_frame(world: Ledger, ledger_url):
    a, b = Site("S1"), Site("S2")
    sales(a, 4)
    b.fuel_sale(tc=40)
    fa, fb = _frames(a, a.batches(5)), _frames(b, b.batches(5))
    forged = (fa[1][0], fa[1][1][:-1] + bytes([fa[1][1][-1] ^ 1]))
    w, pubs = _run_worker(ledger_url, [fa[2], fb[0], forged, fa[0], fa[3], fa[1]])
    assert [p.topic for p in pubs] == [acks_topic("S1"), acks_topic("S2")]
    assert _acks(pubs) == [Ack("S1", 4, ()), Ack("S2", 1, ())]
    assert (w.stats.refused, w.stats.batches, w.stats.grouped, w.stats.errors) == (1, 5, 4, 0)
    assert world.record_count("S1") == 20 and world.record_count("S2") == 5
    assert world.balance_kop(CONTRACT) == 10_000_000 - charged(a) - charged(b)


def test_the_worker_tries_each_batch_alone_when_the_group_fails(world: Ledger, ledger_url, monkeypatch):
    s = Site("S1")
    sales(s, 3)
    frames = _frames(s, s.batches(5))

    def fail(*args, **kwargs):
        raise RuntimeError("the group's transaction failed")
    monkeypatch.setattr(worker_mod, "ingest_site_batches", fail)
    w, pubs = _run_worker(ledger_url, frames)
    assert _acks(pubs) == [Ack("S1", 1, ()), Ack("S1", 2, ()), Ack("S1", 3, ())]
    assert (w.stats.batches, w.stats.grouped, w.stats.errors) == (3, 0, 0)
    assert world.record_count() == 15 and world.balance_kop(CONTRACT) == 10_000_000 - charged(s)
    assert ingest_mod.ingest_site_batches is not fail  # only the worker's name was replaced


def test_worker_bounds_are_checked():
    with pytest.raises(ValueError, match="at least 1"):
        Worker("sqlite:///x.sqlite", SiteKeys({}), publish_replica=False, max_batches_per_txn=0)
