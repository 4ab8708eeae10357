"""A whole club-accounts table built off the event loop and swapped in on it
(terminal/club_swap.py), on a generated replica with both evaluators: a sale in flight
finishes on the old table and its spend is carried over, the next one uses the new table,
the loop keeps turning while the table is built, and rows that do not hold together change
nothing (the balance rule with a host replica: tests/test_balance_club_swap.py)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from authz.club_model import ClubPayment, ClubSale, ClubStatus, ClubTopUp, SaleLine
from authz.reasons import Reason
from authz.sample import DAY_START_UTC
from native.compact import sample_club_columns
from terminal.club_swap import RecordingClub, apply_club_snapshot, begin, can_swap
from terminal.replica import Replica, ReplicaUpdateError
from wire.messages import ClubAccountRow, Table

IMPLS = ["native", "reference"]


def replica(impl: str) -> Replica:
    r = Replica(None, sample_club_columns(n_accounts=60, seed=4), impl=impl)
    r.table_versions = {t: 1 for t in Table}
    return r


def rows_of(r: Replica) -> list[ClubAccountRow]:
    """Every account of the replica as the host sends it (its cards with it)."""
    cm = r.club_model
    cards: dict[int, list] = {}
    for i in range(len(cm.cards)):
        c = cm.cards[i]
        cards.setdefault(c.account_id, []).append(c)
    return [ClubAccountRow(cm.accounts[i], tuple(cards.get(cm.accounts[i].account_id, ())))
            for i in range(len(cm.accounts))]


def active_card(r: Replica, rows: list[ClubAccountRow]) -> tuple[int, str]:
    for k, row in enumerate(rows):
        for c in row.cards:
            if r.club.top_up(ClubTopUp(c.card_no, 1, DAY_START_UTC)).reason.approved:
                return k, c.card_no
    raise AssertionError("no active card in the sample")


@pytest.mark.parametrize("impl", IMPLS)
def test_spend_during_the_build_is_carried_over_and_the_next_sale_uses_the_new_table(impl):
    r = replica(impl)
    rows = rows_of(r)
    k, card = active_card(r, rows)
    aid = rows[k].account.account_id
    balance = r.club.account(aid).balance_kop
    # the host's new table: this account's balance topped up, another account blocked
    rows[k] = replace(rows[k], account=replace(rows[k].account, balance_kop=balance + 50_000))
    j, other = next((j, row.cards[0].card_no) for j, row in enumerate(rows) if j != k and row.cards)
    rows[j] = replace(rows[j], account=replace(rows[j].account, status=ClubStatus.BLOCKED))
    old = r.club
    swap = begin(r, 2)
    assert isinstance(r.club, RecordingClub) and not can_swap(r)
    sale = ClubSale(card, (SaleLine("sku", "shoes", 10_000),), DAY_START_UTC + 60, "store", "cash")
    paid = r.club.commit(sale, ClubPayment(card_balance_kop=min(balance, 10_000), money_kop=10_000 - min(balance, 10_000)),
                         7)  # a sale in flight: decided on the old table
    assert paid.approved
    swap.build(rows)
    assert r.club.inner is old  # nothing swapped yet
    assert swap.swap() == 1
    assert r.club is not old and not isinstance(r.club, RecordingClub) and r.table_versions[Table.CLUB_ACCOUNTS] == 2
    assert r.club.account(aid).balance_kop == balance + 50_000 - min(balance, 10_000)  # the host's, less the sale
    blocked = r.club.top_up(ClubTopUp(other, 100, DAY_START_UTC + 61))  # the next decision: the new table
    assert blocked.reason is Reason.CARD_BLOCKED


@pytest.mark.parametrize("impl", IMPLS)
def test_rows_that_do_not_hold_together_change_nothing(impl):
    r = replica(impl)
    rows = rows_of(r)
    rows.append(rows[0])  # the same account twice
    old, versions = r.club, dict(r.table_versions)

    async def go():
        await apply_club_snapshot(r, 2, lambda: rows)
    with pytest.raises(ReplicaUpdateError, match="club_accounts snapshot version 2 refused"):
        asyncio.run(go())
    assert r.club is old and r.table_versions == versions and can_swap(r)


def test_the_loop_keeps_turning_while_the_table_is_built():
    """The build runs in its thread while the loop decides (counted, not timed)."""
    r = replica("native")
    rows = rows_of(r)
    decided = []

    def slow_rows():
        import time
        for n, row in enumerate(rows):
            if n % 10 == 0:
                time.sleep(0.002)  # a store read that takes a while
            yield row

    async def go():
        stop = asyncio.Event()

        async def till():
            while not stop.is_set():
                decided.append(r.club.account(rows[0].account.account_id) is not None)
                await asyncio.sleep(0)
        t = asyncio.create_task(till())
        await apply_club_snapshot(r, 3, slow_rows)
        stop.set()
        await t
    asyncio.run(go())
    assert len(decided) > 5 and all(decided) and r.table_versions[Table.CLUB_ACCOUNTS] == 3
    assert not isinstance(r.club, RecordingClub)
