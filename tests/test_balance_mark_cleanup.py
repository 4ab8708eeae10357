"""Kept marks (``balance.mark:<table>:<key>`` in the journal's meta, the balance rule's
watermarks of rows that name the site no more) do not outlive their use (issue 8, item 4):
one is deleted when its row is deleted from the replica (a delta's delete, or a row absent
from a snapshot) and when its row names the site again (the stored row's watermark wins),
after the update is stored; one a stopped site left behind is deleted at the next start. A
site restarted after deletes holds no stale marks and counts nothing twice (the World of
tests/test_balance_watermark.py: a real host ledger and publisher, a real journal, both
evaluators)."""

from __future__ import annotations

import asyncio

from terminal.follower import FullSnapshot
from terminal.own_spend import MARK_PREFIX, JournalSpend
from tests.host.edge import CARD, CARD2, CONTRACT
from tests.test_balance_watermark import SITE, World
from wire import ReplicaDelta, Table, row_key


def marks(w: World) -> dict:
    return JournalSpend(SITE, w.journal).load_marks()


async def _marked(w: World) -> set:
    """Spend on both fuel cards and two club accounts, acknowledged, and the host's pruning
    run until it names the site on none of those rows: the site keeps their marks."""
    await w.step("fuel", CARD, 1_000)
    await w.step("fuel", CARD2, 2_000)
    await w.step("topup", 0, 3_000)
    await w.step("topup", 1, 4_000)
    await w.step("batch", 12)
    for _ in range(4):  # cover, then drop once the site reports holding the covering rows
        await w.step("prune", 50, 0, 1)
    assert w.dropped >= 5
    for t in (Table.CONTRACTS, Table.FUEL_CARDS, Table.CLUB_ACCOUNTS):  # rows that name the site no more
        await w.step("snapshot", t)
    kept = set(marks(w))
    assert {(Table.FUEL_CARDS, CARD), (Table.FUEL_CARDS, CARD2), (Table.CONTRACTS, CONTRACT)} <= kept, kept
    return kept


def _deliver(w: World, update) -> None:
    """A host update the site applies and stores (the World's store), as the daemon does."""
    t = update.table
    if isinstance(update, FullSnapshot):
        w.stored[t] = {row_key(t, r): r for r in update.rows}
        w.versions[t] = update.version
    else:
        for k in update.deletes:
            w.stored[t].pop(k, None)
        w.versions[t] = update.to_version
    for r in w.replicas.values():
        r.apply_update(update)


def test_marks_of_deleted_rows_go_and_a_restart_counts_nothing_twice(tmp_path):
    with World(tmp_path) as w:
        async def go() -> None:
            kept = await _marked(w)
            aid = w.account_of[w.club_cards[0]]
            assert (Table.CLUB_ACCOUNTS, aid) in kept
            # the host drops CARD2 from its fuel cards (a snapshot without it) and deletes an account
            t = Table.FUEL_CARDS
            _deliver(w, FullSnapshot(t, w.versions[t] + 1, tuple(r for k, r in w.stored[t].items() if k != CARD2)))
            c = Table.CLUB_ACCOUNTS
            _deliver(w, ReplicaDelta(c, w.versions[c], w.versions[c] + 1, (), (aid,)))
            before = marks(w)
            assert (Table.FUEL_CARDS, CARD2) in before  # not before the update is stored ...
            await w.acknowledge()
            after = marks(w)  # ... and gone once it is
            assert (Table.FUEL_CARDS, CARD2) not in after and (Table.CLUB_ACCOUNTS, aid) not in after
            assert after == {k: v for k, v in before.items() if k not in {(t, CARD2), (c, aid)}}
            w.restart()
            for r in w.replicas.values():
                assert r.marks_to_drop == set()  # nothing stale found at the start
                assert (t, CARD2) not in r.own_watermarks and (c, aid) not in r.own_watermarks
            # nothing counted twice: the contract and the card still held are the host's
            # plus the unacknowledged spend (none), and so is every account still held
            for impl, r in w.replicas.items():
                assert r.fuel.balance_kop(CONTRACT) == w.ledger.balance_kop(CONTRACT), impl
                assert r.fuel.counter(CARD, 1).spent == 1_000, impl
                assert not r.has_fuel_card(CARD2)
                for no in w.club_cards[1:]:
                    a = w.account_of[no]
                    host = w.ledger.db.scalar("SELECT balance_kop FROM club_accounts WHERE account_id = ?", (a,))
                    assert r.club.account(a).balance_kop == host, (impl, a)
            await w.fuel(CARD, 500)  # and spend goes on counted once, before and after the host has it
            for _ in range(2):
                pending = sum(r.body["amount_kop"] for r in w.unacked() if r.kind == "fuel.completed")
                for impl, r in w.replicas.items():
                    assert r.fuel.balance_kop(CONTRACT) == w.ledger.balance_kop(CONTRACT) - pending, impl
                    assert r.fuel.counter(CARD, 1).spent == 1_500, impl
                await w.batch(12)
                w.update()
        asyncio.run(go())


def test_a_mark_goes_when_its_row_names_the_site_again(tmp_path):
    with World(tmp_path) as w:
        async def go() -> None:
            await _marked(w)
            await w.step("fuel", CARD, 700)  # new spend, ingested: the host names the site on the rows again
            await w.step("batch", 12)
            now = marks(w)
            assert (Table.FUEL_CARDS, CARD) not in now and (Table.CONTRACTS, CONTRACT) not in now, now
            assert (Table.FUEL_CARDS, CARD2) in now  # still unnamed: still needed
            w.restart()
            w.check()
            await w.settle()
        asyncio.run(go())


def test_a_mark_left_behind_by_a_stopped_site_goes_at_the_next_start(tmp_path):
    with World(tmp_path) as w:
        async def go() -> None:
            await _marked(w)
            # a run stopped after the store dropped a row and before the mark was deleted, and
            # one whose row the store names the site on again: both left behind
            await w.journal.set_meta(f"{MARK_PREFIX}fuel_cards:7005830000000999", "3")
            t = Table.FUEL_CARDS
            w.stored[t][CARD2] = _named(w.stored[t][CARD2], w.replicas["native"].own_watermarks[(t, CARD2)])
            w.restart()
            for r in w.replicas.values():
                assert r.marks_to_drop == {(t, "7005830000000999"), (t, CARD2)}
                assert (t, "7005830000000999") not in r.own_watermarks
            await w.acknowledge()
            left = marks(w)
            assert (t, "7005830000000999") not in left and (t, CARD2) not in left
            assert (t, CARD) in left
            w.check()
        asyncio.run(go())


def _named(row, batch_seq: int):
    """``row`` naming site S1 again at ``batch_seq`` (what the store would hold of a row cut
    before the host's pruning)."""
    from dataclasses import replace

    from authz.balance import Watermark
    return replace(row, watermarks=(*row.watermarks, Watermark(SITE, batch_seq)))
