"""The balance rule still holds when the host's housekeeping prunes ``replica_spenders``
(host.watermarks.prune_spenders) between any two steps: after any sequence of local spend,
batches ingested, spend at another site, host updates, snapshots, restarts and prunes (with
rows no watermark needs added before each), the site's view of every balance and counter is
the host's plus its own unacknowledged spend, on both evaluators (the World of
tests/test_balance_watermark.py, on SQLite; the same pruning on PostgreSQL:
tests/host/test_allowances.py)."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from host.watermarks import prune_spenders
from tests.host.edge import CARD, CARD2
from tests.test_balance_watermark import BALANCE_TABLES, STEPS, World

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


steps = st.lists(st.one_of(*(STEPS[k] for k in STEPS if k != "update"), st.tuples(st.just("prune"), st.integers(1, 7))),
                 min_size=1, max_size=25)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
@example([("fuel", CARD, 1_000), ("batch", 12), ("prune", 1), ("fuel", CARD, 2_000), ("other", CARD2, 500),
          ("topup", 0, 1_000), ("batch", 3), ("prune", 2), ("snapshot", BALANCE_TABLES[0]), ("restart",),
          ("pay", 0, 500), ("batch", 1), ("prune", 3), ("restart",)])
def test_the_balance_rule_holds_with_the_spenders_pruned(tmp_path_factory, plan):
    with World(tmp_path_factory.mktemp("prune")) as w:
        async def pruned(scan: int) -> None:
            assert prune(w, scan) == len(ORPHANS)
        w.play([*plan, ("prune", 4), *(("snapshot", t) for t in BALANCE_TABLES), ("restart",)], prune=pruned)
        assert w.unacked() == []  # every step checked, the last ones on fresh snapshots after a prune and a restart
