"""The balance rule under concurrency: lanes in the middle of an operation while the replica
reads the site's own spend (a host delta, a snapshot on the loop, a fuel-card or club table
built off the loop and swapped in).

A pump lane journals a completion first and applies it to the replica next; a till applies a
sale or a top-up first and journals it next; other lanes decide and complete while a table
is built. Whatever the replica reads in between (the journal's seq at that moment), every
operation must end up in the evaluators exactly once: after the lanes finish, balances and
counters equal the host's plus the site's unacknowledged spend, to the kopeck and millilitre,
on the reference and the native evaluator (the World of tests/test_balance_watermark.py: a
real host ledger, a real journal)."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from terminal.club_swap import begin as begin_club
from terminal.follower import FullSnapshot
from terminal.snapshot_swap import begin as begin_fuel
from terminal.snapshot_swap import can_swap
from tests.host.edge import CARD, CARD2, CONTRACT
from tests.test_balance_watermark import BALANCE_TABLES, STEPS, World
from wire import Table, WireRecord, row_key

CARDS = (CARD, CARD2)
HOWS = ("update", "fuel_swap", "club_swap", *BALANCE_TABLES)


class RaceWorld(World):
    """The World, with operations left half done while the replica reads its site's spend."""

    #: the records of till operations applied and not yet journaled, in the order applied.
    #: The daemon hands a till operation's journal write to the journal's writer in the same
    #: step as it applies it (terminal/till.py: no await in between), and the writer commits
    #: in that order, so any operation another lane journals afterwards is in the journal
    #: after them. Without that order the host could ingest a sale paid from a top-up before
    #: the top-up (a balance below zero, which the host publishes as 0).
    pending_till: list[list[WireRecord]]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.pending_till = []

    async def journal_pending_till(self) -> None:
        """The till operations' records the writer commits before anything enqueued later."""
        while self.pending_till:
            await self.append(self.pending_till.pop(0))

    async def lanes(self, ops: list[tuple]) -> None:
        """Whole operations of other lanes (a delivery, a top-up, a sale)."""
        for name, a, b in ops:
            await self.journal_pending_till()  # committed before this lane's records
            if name == "fuel":
                await self.fuel(a, b)
            else:
                await (self.topup if name == "topup" else self.pay)(self.club_cards[a], b)

    async def race(self, fuel_halves: list[tuple], till_halves: list[tuple], before: list[tuple], how: object,
                   during: list[tuple], finish_during: bool) -> None:
        """Deliveries journaled and not yet applied, till operations applied and not yet
        journaled; meanwhile batches ingested and spend at another site (``before``), then the
        replica reads its spend ``how``: a host fold (deltas), a snapshot of a table on the
        loop, or a fuel-card / club table built off the loop while other lanes go on
        (``during``); the half-done operations finish during that build (``finish_during``)
        or after it."""
        journaled = [await self.fuel_journaled(card, ml) for card, ml in fuel_halves]
        self.pending_till = [self.till_applied(name, self.club_cards[i], kop) for name, i, kop in till_halves]
        for step in before:
            if step[0] == "batch":
                await self.batch(step[1])
            else:
                await self.other_site(*step[1:])
        done = False

        async def finish() -> None:
            nonlocal done
            for body in journaled:
                self.fuel_applied(body)
            await self.journal_pending_till()
            done = True

        if how == "update":
            self.update()
            await finish()
            return
        self.update()  # the host's deltas of those first: the read below is the last word on its rows
        if how in BALANCE_TABLES:
            self.snapshot(how)  # type: ignore[arg-type]
        elif how == "fuel_swap":
            await self.fuel_swap(during, finish if finish_during else None)
        else:
            await self.club_swap(during, finish if finish_during else None)
        if not done:
            await finish()

    async def fuel_swap(self, during: list[tuple], finish) -> None:
        """A fuel-card snapshot built off the loop on the native replica (the reference one
        applies it on the loop after), the lanes going on meanwhile."""
        parts = self.pub.snapshot(Table.FUEL_CARDS)
        rows = tuple(r for p in parts for r in p.rows)
        version = parts[0].version
        native = self.replicas["native"]
        assert can_swap(native, Table.FUEL_CARDS)
        swap = begin_fuel(native, version)
        await self.lanes(during)
        if finish is not None:
            await finish()
        swap.build(rows)
        swap.swap()
        self.replicas["reference"].apply_update(FullSnapshot(Table.FUEL_CARDS, version, rows))
        self.stored[Table.FUEL_CARDS] = {row_key(Table.FUEL_CARDS, r): r for r in rows}
        self.versions[Table.FUEL_CARDS] = version

    async def club_swap(self, during: list[tuple], finish) -> None:
        """A club-accounts snapshot built off the loop on both replicas, the lanes going on."""
        parts = self.pub.snapshot(Table.CLUB_ACCOUNTS)
        rows = tuple(r for p in parts for r in p.rows)
        version = parts[0].version
        swaps = [begin_club(r, version) for r in self.replicas.values()]
        await self.lanes(during)
        if finish is not None:
            await finish()
        for s in swaps:
            s.build(rows)
        for s in swaps:
            s.swap()
        self.stored[Table.CLUB_ACCOUNTS] = {row_key(Table.CLUB_ACCOUNTS, r): r for r in rows}
        self.versions[Table.CLUB_ACCOUNTS] = version


@pytest.mark.parametrize("how", HOWS, ids=str)
def test_a_delivery_journaled_before_its_lane_applies_it_counts_once(tmp_path, how):
    """The pump lane's window: the completion is in the journal when the replica reads it,
    and the lane applies it after (here, after the host has even counted it)."""
    with RaceWorld(tmp_path) as w:
        w.play([("fuel", CARD, 1_000), ("race", [(CARD, 2_000)], [], [("batch", 12)], how, [], False),
                ("race", [(CARD2, 3_000)], [], [], how, [("fuel", CARD, 500)], True)], race=w.race)


@pytest.mark.parametrize("how", HOWS, ids=str)
def test_a_till_operation_applied_before_it_is_journaled_counts_once(tmp_path, how):
    """The till's window: the sale and the top-up are in the evaluator and not yet in the
    journal when the replica reads it."""
    with RaceWorld(tmp_path) as w:
        w.play([("topup", 0, 50_000), ("race", [], [("topup", 0, 1_000), ("pay", 0, 700)], [("batch", 12)], how, [],
                                       False),
                ("race", [], [("pay", 1, 300)], [], how, [("topup", 1, 900)], True)], race=w.race)


fuel_half = st.tuples(st.sampled_from(CARDS), st.integers(1, 40_000))
till_half = st.tuples(st.sampled_from(["topup", "pay"]), st.integers(0, 2), st.integers(1, 300_000))
lane_op = st.one_of(st.tuples(st.just("fuel"), st.sampled_from(CARDS), st.integers(1, 40_000)), till_half)
before = st.lists(st.one_of(st.tuples(st.just("batch"), st.integers(1, 12)),
                            st.tuples(st.just("other"), st.sampled_from(CARDS), st.integers(1, 40_000))), max_size=3)
race = st.tuples(st.just("race"), st.lists(fuel_half, max_size=2), st.lists(till_half, max_size=2), before,
                 st.sampled_from(HOWS), st.lists(lane_op, max_size=3), st.booleans())
steps = st.lists(st.one_of(*(STEPS[k] for k in ("fuel", "topup", "pay", "other", "batch", "restart")), race),
                 min_size=1, max_size=12)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
@example([("race", [(CARD, 2_000)], [("topup", 0, 1_000)], [("batch", 12), ("other", CARD2, 400)], "fuel_swap",
           [("fuel", CARD2, 800), ("pay", 0, 300)], True),
          ("race", [(CARD2, 1_000)], [("pay", 0, 200)], [("batch", 2)], "club_swap", [("topup", 1, 5_000)], False),
          ("batch", 12), ("restart",)])
# a sale paid from a top-up the till has not journaled yet: the top-up is journaled first
@example([("race", [], [("topup", 1, 1)], [], "fuel_swap", [("pay", 1, 1)], True), ("batch", 1)])
def test_lanes_in_the_middle_of_an_operation_never_leak_money(tmp_path_factory, plan):
    """Any interleaving of half-done operations, batches, host updates, snapshots and builds
    off the loop: the site is the host plus its unacknowledged spend after each step."""
    with RaceWorld(tmp_path_factory.mktemp("race")) as w:
        w.play(plan, race=w.race)
        assert w.unacked() == []


def test_the_lanes_apply_is_skipped_once_and_only_once(tmp_path):
    """A completion the journal read applied for its lane is not applied again by the lane
    (and the site is the host once all is ingested)."""
    with RaceWorld(tmp_path) as w:
        async def go() -> None:
            body = await w.fuel_journaled(CARD, 1_500)
            w.update()
            for r in w.replicas.values():
                r._read_spend()
            before = {impl: r.fuel.balance_kop(CONTRACT) for impl, r in w.replicas.items()}
            w.fuel_applied(body)  # the lane's own apply: skipped
            assert {impl: r.fuel.balance_kop(CONTRACT) for impl, r in w.replicas.items()} == before
            await w.settle()
        asyncio.run(go())


def test_lanes_running_while_both_tables_are_built_in_threads(tmp_path):
    """Real concurrency: pump and till lanes go on as tasks (their journal commits in the
    journal's writer thread, a loop turn between their two halves) while a fuel-card table of
    a thousand cards is built in a worker thread and swapped in (``apply_snapshot``), then a
    club table (``apply_club_snapshot``, both evaluators); the reference replica takes the
    fuel cards on the loop meanwhile. After the lanes stop, the site is the host plus its
    unacknowledged spend, to the kopeck and millilitre, on both evaluators."""
    from dataclasses import replace as dc_replace

    from terminal.club_swap import apply_club_snapshot
    from terminal.snapshot_swap import apply_snapshot
    from wire.messages import FuelCardRow

    with RaceWorld(tmp_path) as w:
        done_ops = 0

        async def lane(stop: asyncio.Event, k: int) -> None:
            nonlocal done_ops
            i = 0
            while not stop.is_set() or i < 3:
                body = await w.fuel_journaled(CARDS[(i + k) % 2], 100 + i)
                await asyncio.sleep(0)  # the lane's next step, after whatever else the loop runs
                w.fuel_applied(body)
                recs = w.till_applied("topup" if i % 2 else "pay", w.club_cards[(i + k) % 3], 50 + i)
                await asyncio.sleep(0)
                await w.append(recs)
                i += 1
                done_ops += 2
                if i % 4 == 0:
                    await w.batch(5)  # the sync client's part now and then (the host's rows wait)

        async def round_() -> None:
            parts = w.pub.snapshot(Table.FUEL_CARDS)
            host_rows = [r for p in parts for r in p.rows]
            donor = host_rows[0].card
            extra = [FuelCardRow(dc_replace(donor, card_no=f"70058312{n:08d}"), ()) for n in range(1_000)]
            rows = tuple(host_rows + extra)
            version = parts[0].version
            stop = asyncio.Event()
            lanes = [asyncio.create_task(lane(stop, k)) for k in range(2)]
            native, reference = w.replicas["native"], w.replicas["reference"]

            def fail(update):
                raise AssertionError(f"applied on the loop: {update}")
            build = asyncio.create_task(apply_snapshot(native, Table.FUEL_CARDS, version, lambda: iter(rows), fail))
            await asyncio.sleep(0)
            reference.apply_update(FullSnapshot(Table.FUEL_CARDS, version, rows))
            await build
            w.stored[Table.FUEL_CARDS] = {row_key(Table.FUEL_CARDS, r): r for r in rows}
            w.versions[Table.FUEL_CARDS] = version
            cparts = w.pub.snapshot(Table.CLUB_ACCOUNTS)
            crows = tuple(r for p in cparts for r in p.rows)
            for r in w.replicas.values():
                await apply_club_snapshot(r, cparts[0].version, lambda: iter(crows))
            w.stored[Table.CLUB_ACCOUNTS] = {row_key(Table.CLUB_ACCOUNTS, r): r for r in crows}
            w.versions[Table.CLUB_ACCOUNTS] = cparts[0].version
            stop.set()
            await asyncio.gather(*lanes)
            assert native.fuel_card_count == reference.fuel_card_count == len(rows)
            w.update()
            await w.acknowledge()
            w.check()

        async def go() -> None:
            for _ in range(3):
                await round_()
            await w.settle()
        asyncio.run(go())
        assert done_ops >= 36
