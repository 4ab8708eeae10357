"""The balance rule still holds when the host's housekeeping prunes ``replica_spenders``
(host.watermarks.prune_spenders) between any two steps, live rows included: after any
sequence of local spend, batches ingested, spend at another site, host updates, snapshots,
restarts and prunes (with rows no watermark needs added before each, and sometimes a batch
ingested just before that the site has not seen the host's rows of yet), the site's view of
every balance and counter is the host's plus its own unacknowledged spend, on both
evaluators (the World of tests/test_balance_watermark.py, on SQLite; the same pruning on
PostgreSQL: tests/host/test_allowances.py). A row whose spender was pruned names the site no
more, and the site uses the watermark it kept for it (authz.balance.kept_watermark), across
restarts too (written beside the journal). The rules of the two steps one by one:
tests/host/test_prune_live.py."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from host.watermarks import prune_spenders
from tests.host.edge import CARD, CARD2
from tests.test_balance_watermark import BALANCE_TABLES, STEPS, World

CARDS = (CARD, CARD2)
ORPHANS = [("contracts", "424242", "S1"), ("fuel_cards", "7005830000000999", "S1"), ("club_accounts", "777", "S2"),
           ("contracts", "1", "NOT-A-SITE"), ("stop_list", CARD, "S1")]


def spenders(w: World) -> set[tuple[str, str, str]]:
    return set(w.ledger.db.fetchall("SELECT tbl, key, site_id FROM replica_spenders"))


def prune(w: World, scan: int) -> tuple[int, int]:
    """Rows no watermark needs added, then pruned a slice at a time until the table is gone
    through; returns (rows dropped, live rows covered)."""
    w.ledger.db.run(lambda db: db.executemany("INSERT INTO replica_spenders (tbl, key, site_id) VALUES (?, ?, ?) "
                                              "ON CONFLICT (tbl, key, site_id) DO NOTHING", ORPHANS))
    after, pruned, covered = None, 0, 0
    while True:
        res = prune_spenders(w.ledger, after, scan=scan)
        pruned += res.pruned
        covered += res.covered
        after = res.after
        if after is None:
            assert not spenders(w) & set(ORPHANS)
            return pruned, covered


steps = st.lists(st.one_of(*(STEPS[k] for k in STEPS if k != "update")), min_size=1, max_size=25)


class PruneWorld(World):
    """The World, with rows no watermark needs added before each prune."""

    dropped_live = 0

    async def prune_step(self, scan: int, ingest_first: int = 0, passes: int = 1) -> None:
        """``ingest_first`` records batched and ingested first, the site not told yet (the
        host's rows of them not yet delivered), then every spender row gone through
        ``passes`` times in a row (the site told nothing in between)."""
        if ingest_first:
            await self.batch(ingest_first)
        for _ in range(passes):
            before = spenders(self)
            pruned, _ = prune(self, scan)
            live = (before - set(ORPHANS)) - spenders(self)
            self.dropped_live += len(live)
            assert pruned == len(live) + len(ORPHANS)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
@example([("fuel", CARD, 1_000), ("batch", 12), ("prune", 1, 0, 1), ("fuel", CARD, 2_000), ("other", CARD2, 500),
          ("topup", 0, 1_000), ("batch", 3), ("prune", 2, 0, 2), ("snapshot", BALANCE_TABLES[0]), ("restart",),
          ("pay", 0, 500), ("batch", 1), ("prune", 3, 0, 1), ("restart",)])
# covered, then new spend on the covered rows ingested just before the next prune, the
# site not told yet: the cover is off, nothing is dropped
@example([("fuel", CARD, 1_000), ("topup", 1, 3_000), ("batch", 12), ("prune", 5, 0, 2), ("fuel", CARD, 700),
          ("pay", 1, 300), ("prune", 5, 12, 1), ("other", CARD, 400), ("prune", 5, 0, 1), ("other", CARD, 300),
          ("snapshot", BALANCE_TABLES[2]), ("restart",)])
# spend ingested, then covered and gone through again before the site saw any of it: nothing
# is dropped until the site holds the republished rows
@example([("fuel", CARD, 1_000), ("batch", 12), ("fuel", CARD, 500), ("pay", 0, 300), ("prune", 5, 12, 3),
          ("other", CARD, 200), ("snapshot", BALANCE_TABLES[2]), ("restart",)])
def test_the_balance_rule_holds_with_the_spenders_pruned(tmp_path_factory, plan):
    with PruneWorld(tmp_path_factory.mktemp("prune")) as w:
        w.play([*plan, ("prune", 4, 0, 2), ("prune", 4, 0, 1), ("other", CARD, 100), ("other", CARD2, 100),
                *(("snapshot", t) for t in BALANCE_TABLES), ("restart",)], prune=w.prune_step)
        assert w.unacked() == []  # every step checked, the last ones on fresh snapshots after a prune and a restart


def test_live_spenders_are_pruned_and_the_site_keeps_their_marks(tmp_path):
    """The site's spend on every row it spent on, all ingested, then three passes (a
    candidate, the cover, the drop once the site holds the rows): every live
    spender row is gone, the rows (republished by another site's spend, snapshots and a
    restart) name the site no more, and its view is still exactly the host's."""
    with PruneWorld(tmp_path) as w:
        w.play([("fuel", CARD, 1_000), ("fuel", CARD2, 2_000), ("topup", 0, 5_000), ("pay", 1, 400), ("batch", 12),
                ("prune", 3, 0, 2), ("prune", 3, 0, 1), ("other", CARD, 100), ("other", CARD2, 200),
                *(("snapshot", t) for t in BALANCE_TABLES), ("restart",), ("fuel", CARD, 300)], prune=w.prune_step)
        assert w.dropped_live >= 4  # the contract, both cards and the club accounts
        kept = w.replicas["native"].own_watermarks
        assert all(m > 0 for m in kept.values()) and len(kept) >= 4
