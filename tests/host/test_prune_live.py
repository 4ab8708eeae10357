"""Pruning the spenders of live rows (host.watermarks.prune_spenders), step by step, on SQLite
and PostgreSQL: a settled site's rows quiet for a pass are republished (cover) and its
spender rows go once it reports holding that version; new spend between the steps stops the
drop and a row the site keeps spending on is never republished; a site with a
gap in its batches is never covered; ``live=False`` leaves live rows alone. The balance
rule across all of it, end to end: tests/test_balance_prune.py."""

from __future__ import annotations

import json

from host.ingest import ingest_batch
from host.ledger import Ledger
from host.versions import current_version
from host.watermarks import prune_spenders
from wire import Table

from .edge import CARD, CARD2, CONTRACT, Site
from .test_allowances import one_sale_batch, rows_now, world


def spenders(ledger: Ledger) -> dict[tuple[str, str, str], int | None]:
    """Every spender row and its cover version."""
    return {(t, k, s): v for t, k, s, v in ledger.db.fetchall(
        "SELECT tbl, key, site_id, cover_version FROM replica_spenders")}


def version(ledger: Ledger, table: Table) -> int:
    return ledger.db.run(lambda db: current_version(db, table), write=False)


def report(ledger: Ledger, site: str, versions: dict[Table, int]) -> None:
    """The site's presence: the table versions it holds."""
    text = json.dumps({t.value: v for t, v in versions.items()})
    ledger.db.run(lambda db: db.execute("UPDATE sites SET replica_versions = ? WHERE site_id = ?", (text, site)))


def prune_all(ledger: Ledger, **kw) -> tuple[int, int]:
    after, pruned, covered = None, 0, 0
    while True:
        res = prune_spenders(ledger, after, scan=2, **kw)
        pruned, covered, after = pruned + res.pruned, covered + res.covered, res.after
        if after is None:
            return pruned, covered


def test_a_settled_sites_rows_are_republished_then_dropped_once_it_holds_them(ledger: Ledger):
    pub = world(ledger)
    ingest_batch(ledger, one_sale_batch(Site("S1"), 1))
    rows_now(pub)  # the host's fold: the rows published
    live = spenders(ledger)
    assert set(live) == {("contracts", str(CONTRACT), "S1"), ("fuel_cards", CARD, "S1")}
    v0 = {t: version(ledger, t) for t in (Table.CONTRACTS, Table.FUEL_CARDS)}
    assert prune_all(ledger) == (0, 0)  # candidates: the watermark noted, nothing republished
    assert all(v is None for v in spenders(ledger).values())
    assert {t: version(ledger, t) for t in v0} == v0
    assert prune_all(ledger) == (0, 2)  # quiet since: covered, nothing dropped
    covered = spenders(ledger)
    assert set(covered) == set(live) and all(covered[k] is not None for k in covered)
    for t in v0:  # each row republished in a delta of its table, naming the site
        assert version(ledger, t) > v0[t]
    again = rows_now(pub)
    assert again[(Table.CONTRACTS, CONTRACT)].watermarks[0].site_id == "S1"
    assert again[(Table.FUEL_CARDS, CARD)].watermarks[0].site_id == "S1"
    cover = {t: covered[(t.value, str(CONTRACT) if t is Table.CONTRACTS else CARD, "S1")] for t in v0}
    report(ledger, "S1", {t: cover[t] - 1 for t in cover})  # not there yet
    assert prune_all(ledger) == (0, 0) and spenders(ledger) == covered
    report(ledger, "S2", cover)  # another site holding them says nothing of S1
    assert prune_all(ledger) == (0, 0)
    report(ledger, "S1", cover)
    assert prune_all(ledger) == (2, 0) and spenders(ledger) == {}
    ingest_batch(ledger, one_sale_batch(Site("S1"), 2))  # new spend names the site again
    assert set(spenders(ledger)) == set(live)
    assert rows_now(pub)[(Table.FUEL_CARDS, CARD)].watermarks[0].batch_seq == 2


def test_new_spend_between_the_two_steps_stops_the_drop(ledger: Ledger):
    world(ledger)
    s1 = Site("S1")
    ingest_batch(ledger, one_sale_batch(s1, 1))
    prune_all(ledger)
    prune_all(ledger)
    covered = spenders(ledger)
    assert all(v is not None for v in covered.values())
    ingest_batch(ledger, one_sale_batch(s1, 2))  # on the same card and contract
    assert all(v is None for v in spenders(ledger).values())  # the cover is off
    report(ledger, "S1", {Table.CONTRACTS: 10**6, Table.FUEL_CARDS: 10**6})
    assert prune_all(ledger) == (0, 0)  # a candidate again
    ingest_batch(ledger, one_sale_batch(s1, 3))  # and a row the site keeps spending on is never republished
    assert prune_all(ledger) == (0, 0)
    pruned, again = prune_all(ledger)
    assert pruned == 0 and again == 2  # quiet for a pass: covered anew, past the new spend
    assert all(spenders(ledger)[k] > covered[k] for k in covered)


def test_a_site_with_a_gap_in_its_batches_is_not_covered(ledger: Ledger):
    world(ledger)
    ingest_batch(ledger, one_sale_batch(Site("S2"), 2, CARD2))  # batch 1 not yet here: watermark 0, max 2
    assert prune_all(ledger) == (0, 0)
    assert all(v is None for v in spenders(ledger).values()) and len(spenders(ledger)) == 2
    ingest_batch(ledger, one_sale_batch(Site("S2"), 1, CARD))  # the gap filled: settled
    assert prune_all(ledger) == (0, 0)
    assert prune_all(ledger)[1] == 3


def test_live_false_leaves_live_rows_alone(ledger: Ledger):
    world(ledger)
    ingest_batch(ledger, one_sale_batch(Site("S1"), 1))
    assert prune_all(ledger, live=False) == (0, 0)
    assert all(v is None for v in spenders(ledger).values())
