"""The balance rule holds when a whole club-accounts table is built off the event loop and
swapped in (terminal/club_swap.py): tills keep committing and topping up between the start
of the build and the swap, and afterwards the site's view of every account is still the
host's plus the site's own spend the host has not ingested, on both evaluators (the World
of tests/test_balance_watermark.py: a real host ledger, a real journal)."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from terminal.club_swap import RecordingClub, begin
from tests.test_balance_watermark import STEPS, World
from wire import Table, row_key


class SwapWorld(World):
    """The World, with club-accounts snapshots applied through the off-loop build."""

    async def swap_snapshot(self, during: list[tuple]) -> None:
        parts = self.pub.snapshot(Table.CLUB_ACCOUNTS)
        rows = tuple(r for p in parts for r in p.rows)
        version = parts[0].version
        if version < self.versions[Table.CLUB_ACCOUNTS]:
            return
        swaps = {impl: begin(r, version) for impl, r in self.replicas.items()}
        assert all(isinstance(r.club_evaluator, RecordingClub) for r in self.replicas.values())
        for name, card, kop in during:  # the tills go on while the new table is built
            await (self.topup if name == "topup" else self.pay)(self.club_cards[card], kop)
        for s in swaps.values():
            s.build(rows)
        for s in swaps.values():
            s.swap()
        self.stored[Table.CLUB_ACCOUNTS] = {row_key(Table.CLUB_ACCOUNTS, r): r for r in rows}
        self.versions[Table.CLUB_ACCOUNTS] = version
        assert not any(isinstance(r.club_evaluator, RecordingClub) for r in self.replicas.values())


till_op = st.tuples(st.sampled_from(["topup", "pay"]), st.integers(0, 2), st.integers(1, 300_000))
steps = st.lists(st.one_of(*(STEPS[k] for k in ("topup", "pay", "batch", "update", "restart")),
                           st.tuples(st.just("swap"), st.lists(till_op, max_size=3))), min_size=1, max_size=20)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
@example([("topup", 0, 1_000), ("batch", 12), ("topup", 0, 2_000),
          ("swap", [("pay", 0, 500), ("topup", 1, 700)]), ("batch", 1), ("swap", [("pay", 0, 100_000)]),
          ("restart",)])
def test_a_club_table_built_off_the_loop_keeps_the_host_plus_the_sites_own_spend(tmp_path_factory, plan):
    with SwapWorld(tmp_path_factory.mktemp("club-swap")) as w:
        w.play(plan, swap=w.swap_snapshot)


def test_points_redeemed_during_the_build_still_count_against_the_offline_allowance(tmp_path):
    """The per-card offline redemption count after the swap is the host's (none here) plus
    what the tills redeemed while the table was built; once the host counts it, nothing."""
    w = SwapWorld(tmp_path)

    async def go() -> None:
        card = w.redeemable_card()
        parts = w.pub.snapshot(Table.CLUB_ACCOUNTS)
        rows = tuple(r for p in parts for r in p.rows)
        swaps = {impl: begin(r, parts[0].version) for impl, r in w.replicas.items()}
        await w.redeem(card, 2, 9_800)  # a till redeems 2 points while the new table is built
        for s in swaps.values():
            s.build(rows)
            assert s.swap() == 1
        w.assert_redeemed(card, 2)
        w.check()
        await w.batch(10)
        w.update()
        w.assert_redeemed(card, 0)
        w.check()
    with w:
        asyncio.run(go())
