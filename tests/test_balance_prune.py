"""The balance rule still holds when the host's housekeeping prunes ``replica_spenders``
(host.watermarks.prune_spenders) between any two steps: after any sequence of local spend,
batches ingested, spend at another site, host updates, snapshots, restarts and prunes (with
rows no watermark needs added before each), the site's view of every balance and counter is
the host's plus its own unacknowledged spend, on both evaluators (the World of
tests/test_balance_watermark.py, on SQLite; the same pruning on PostgreSQL:
tests/host/test_allowances.py)."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from host.watermarks import prune_spenders
from tests.host.edge import CARD, CARD2
from tests.test_balance_watermark import BALANCE_TABLES, World

CARDS = (CARD, CARD2)
ORPHANS = [("contracts", "424242", "S1"), ("fuel_cards", "7005830000000999", "S1"), ("club_accounts", "777", "S2"),
           ("contracts", "1", "NOT-A-SITE"), ("stop_list", CARD, "S1")]


def prune(w: World, scan: int) -> int:
    """Rows no watermark needs added, then pruned a slice at a time until the table is gone through."""
    w.ledger.db.run(lambda db: db.executemany("INSERT INTO replica_spenders (tbl, key, site_id) VALUES (?, ?, ?) "
                                              "ON CONFLICT (tbl, key, site_id) DO NOTHING", ORPHANS))
    after, pruned = None, 0
    while True:
        res = prune_spenders(w.ledger, after, scan=scan)
        pruned += res.pruned
        after = res.after
        if after is None:
            return pruned


steps = st.lists(st.one_of(
    st.tuples(st.just("fuel"), st.sampled_from(CARDS), st.integers(1, 40_000)),
    st.tuples(st.just("topup"), st.integers(0, 2), st.integers(1, 300_000)),
    st.tuples(st.just("pay"), st.integers(0, 2), st.integers(1, 300_000)),
    st.tuples(st.just("other"), st.sampled_from(CARDS), st.integers(1, 40_000)),
    st.tuples(st.just("batch"), st.integers(1, 12)),
    st.tuples(st.just("snapshot"), st.sampled_from(BALANCE_TABLES)),
    st.tuples(st.just("restart")),
    st.tuples(st.just("prune"), st.integers(1, 7)),
), min_size=1, max_size=25)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
@example([("fuel", CARD, 1_000), ("batch", 12), ("prune", 1), ("fuel", CARD, 2_000), ("other", CARD2, 500),
          ("topup", 0, 1_000), ("batch", 3), ("prune", 2), ("snapshot", BALANCE_TABLES[0]), ("restart",),
          ("pay", 0, 500), ("batch", 1), ("prune", 3), ("restart",)])
def test_the_balance_rule_holds_with_the_spenders_pruned(tmp_path_factory, plan):
    w = World(tmp_path_factory.mktemp("prune"))

    async def run() -> None:
        for step in plan:
            if step[0] == "prune":
                assert prune(w, step[1]) == len(ORPHANS)
                await w.step("update")
            else:
                await w.step(*step)
        await w.settle()
        assert prune(w, 4) == len(ORPHANS)
        for t in BALANCE_TABLES:  # fresh snapshots after the prune, and a restart on them
            w.snapshot(t)
        w.restart()
        w.check()
        assert w.unacked() == []
    try:
        asyncio.run(run())
    finally:
        w.close()
