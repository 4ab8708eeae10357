"""The balance rule holds when a whole fuel-card table is built off the event loop and
swapped in on a host replica (terminal/snapshot_swap.py): pumps keep completing deliveries
between the start of the build and the swap, and afterwards the site's counters and
balances are still the host's plus the site's own spend the host has not ingested (the World
of tests/test_balance_watermark.py: a real host ledger, a real journal; the native replica
swaps, the reference one applies the snapshot on the loop, and both must agree)."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from terminal.follower import FullSnapshot
from terminal.snapshot_swap import begin, can_swap
from tests.host.edge import CARD, CARD2
from tests.test_balance_watermark import STEPS, World
from wire import Table, row_key

CARDS = (CARD, CARD2)


class SwapWorld(World):
    """The World, with fuel-card snapshots built off the loop on the native replica."""

    async def swap_snapshot(self, during: list[tuple]) -> None:
        parts = self.pub.snapshot(Table.FUEL_CARDS)
        rows = tuple(r for p in parts for r in p.rows)
        version = parts[0].version
        if version < self.versions[Table.FUEL_CARDS]:
            return
        native = self.replicas["native"]
        assert can_swap(native, Table.FUEL_CARDS)
        swap = begin(native, version)
        for card_no, ml in during:  # the pumps go on while the new table is built
            await self.fuel(card_no, ml)
        swap.build(rows)
        swap.swap()
        assert native.fuel_recording is None
        self.replicas["reference"].apply_update(FullSnapshot(Table.FUEL_CARDS, version, rows))
        self.stored[Table.FUEL_CARDS] = {row_key(Table.FUEL_CARDS, r): r for r in rows}
        self.versions[Table.FUEL_CARDS] = version


delivery = st.tuples(st.sampled_from(CARDS), st.integers(1, 40_000))
steps = st.lists(st.one_of(*(STEPS[k] for k in ("fuel", "other", "batch", "restart")),
                           st.tuples(st.just("swap"), st.lists(delivery, max_size=3))), min_size=1, max_size=20)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
@example([("fuel", CARD, 1_000), ("batch", 12), ("fuel", CARD, 2_000), ("other", CARD2, 500),
          ("swap", [(CARD, 3_000), (CARD2, 700)]), ("batch", 1), ("swap", [(CARD, 30_000)]), ("restart",),
          ("swap", [])])
def test_a_fuel_card_table_built_off_the_loop_keeps_the_host_plus_the_sites_own_spend(tmp_path_factory, plan):
    with SwapWorld(tmp_path_factory.mktemp("fuel-swap")) as w:
        w.play(plan, swap=w.swap_snapshot)
