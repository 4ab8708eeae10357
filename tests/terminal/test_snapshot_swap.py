"""A whole fuel-card table built off the event loop and swapped in on it
(terminal/snapshot_swap.py): the new cards decide after the swap, a decision made before it
keeps its numbers, the lanes' spend during the build is carried over, and rows that do not
hold together change nothing. The evaluators are the real native ones."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from authz.fuel_model import FuelRequest
from authz.sample import DAY_START_UTC
from native.compact import sample_fuel_columns
from terminal.replica import Replica, ReplicaUpdateError
from terminal.snapshot_swap import apply_snapshot, begin, can_swap
from wire.messages import FuelCardRow, Table

NEW_CARD = "7005839999999999"


def card_rows(ev) -> list[FuelCardRow]:
    """Every card of a native fuel evaluator as a host row, with its counters."""
    counters: dict[str, list] = {}
    for (no, lid), ctr in ev.counter_items():
        counters.setdefault(no, []).append((lid, ctr))
    return [FuelCardRow(c, tuple(counters.get(c.card_no, ()))) for c in (ev.card_at(i) for i in range(ev.card_count))]


def replica() -> Replica:
    r = Replica(sample_fuel_columns(n_cards=400, seed=5), None)
    r.table_versions = {t: 1 for t in Table}
    return r


def a_request(r: Replica, i: int) -> FuelRequest:
    ev = r.fuel
    st = ev.stations[0]
    return FuelRequest(ev.card_at(i).card_no, st.station_id, next(iter(st.prices_kop_per_l)), DAY_START_UTC + 3600)


def approved_index(r: Replica) -> int:
    for i in range(r.fuel.card_count):
        if r.fuel.authorize(a_request(r, i)).approved:
            return i
    raise AssertionError("no card of the sample is approved at station 0")


def test_the_new_table_decides_after_the_swap_and_spend_during_the_build_is_carried_over():
    r = replica()
    old = r.fuel
    assert can_swap(r, Table.FUEL_CARDS) and not can_swap(r, Table.STOP_LIST)
    i = approved_index(r)
    req = a_request(r, i)
    contract = old.card_at(i).contract_id
    balance0 = old.balance_kop(contract)
    rows = card_rows(old)
    donor = rows[i].card
    rows.append(FuelCardRow(replace(donor, card_no=NEW_CARD), ()))
    swap = begin(r, 2)
    decision = old.authorize(req)  # a purchase in flight: decided on the old table...
    assert decision.approved
    swap.build(rows)
    assert r.fuel is old and not r.has_fuel_card(NEW_CARD)  # nothing swapped yet
    done = old.complete(req, decision, decision.volume_ml // 2)  # ...completed while the new one is built
    assert done.amount_kop > 0
    assert swap.swap() == 1  # its contract's balance carried over
    new = r.fuel
    assert new is not old and r.table_versions[Table.FUEL_CARDS] == 2
    assert new.card_count == old.card_count + 1
    assert new.balance_kop(contract) == balance0 - done.amount_kop
    assert new.authorize(replace(req, card_no=NEW_CARD)).approved  # the next decision uses the new table
    assert r.fuel_model.card(NEW_CARD).contract_id == donor.contract_id


def test_a_card_of_an_unknown_contract_changes_nothing():
    r = replica()
    old, versions = r.fuel, dict(r.table_versions)
    rows = card_rows(old)
    rows[3] = FuelCardRow(replace(rows[3].card, contract_id=10**12), ())
    swap = begin(r, 2)
    with pytest.raises(ReplicaUpdateError, match="unknown contract"):
        swap.build(rows)
    with pytest.raises(RuntimeError, match="before build"):
        swap.swap()
    assert r.fuel is old and r.table_versions == versions


def test_apply_snapshot_keeps_the_loop_turning_while_the_cards_are_built():
    """The loop runs other tasks while the build runs in its thread (counted, not timed)."""
    r = replica()
    rows = card_rows(r.fuel)  # the same cards: a snapshot that changes nothing
    turns = 0

    def slow_rows():
        import time
        for k, row in enumerate(rows):
            if k % 50 == 0:
                time.sleep(0.002)  # a store read that takes a while
            yield row

    async def main():
        nonlocal turns
        stop = asyncio.Event()

        async def ticker():
            nonlocal turns
            while not stop.is_set():
                turns += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        await apply_snapshot(r, Table.FUEL_CARDS, 3, slow_rows, lambda u: pytest.fail(f"applied on the loop: {u}"))
        stop.set()
        await t

    old = r.fuel
    asyncio.run(main())
    assert r.fuel is not old and r.table_versions[Table.FUEL_CARDS] == 3 and r.fuel.card_count == old.card_count
    assert turns > 10, turns  # the loop kept turning during the build


def test_a_replica_that_follows_its_own_spend_builds_fuel_cards_off_the_loop_too():
    """A host replica (site_id set: it re-applies its own spend past each row's watermark)
    takes the swap too: its rows are translated in the build, nothing is handed to
    ``apply`` on the loop (the balance rule across the swap: tests/test_balance_fuel_swap.py)."""
    r = replica()
    r.site_id = "site-a"
    assert can_swap(r, Table.FUEL_CARDS)
    rows = card_rows(r.fuel)
    asyncio.run(apply_snapshot(r, Table.FUEL_CARDS, 2, lambda: iter(rows),
                               lambda u: pytest.fail(f"applied on the loop: {u}")))
    assert r.table_versions[Table.FUEL_CARDS] == 2 and r.fuel_recording is None


def test_a_generated_replica_carries_the_counters_of_completions_during_the_build_over():
    """A generated (simulation) replica swaps fuel cards too: a delivery a lane completes
    (``Replica.apply``, as the pump lane does) while the new table is built counts on the
    new card's limits and its contract's balance, as on a replica that never swapped."""
    from terminal.replica import FUEL_COMPLETED, fuel_decision_body, fuel_request_body
    r, control = replica(), replica()
    assert r.site_id is None
    ev = r.fuel
    i = next(i for i in range(ev.card_count) if r.fuel.authorize(a_request(r, i)).approved
             and ev.card_at(i).limits)
    req = a_request(r, i)
    card = ev.card_at(i)
    rows = card_rows(ev)
    swap = begin(r, 2)
    decision = ev.authorize(req)
    done = control.fuel.complete(req, control.fuel.authorize(req), decision.volume_ml // 2)
    body = {"request": fuel_request_body(req), "decision": fuel_decision_body(decision),
            "delivered_volume_ml": decision.volume_ml // 2, "amount_kop": done.amount_kop, "card_no": card.card_no,
            "contract_id": card.contract_id}
    assert r.apply(FUEL_COMPLETED, body)  # the lane completes on the old table while the new one is built
    swap.build(rows)
    swap.swap()
    assert r.fuel is not ev and r.fuel_recording is None
    counted = [(lim.limit_id, r.fuel.counter(card.card_no, lim.limit_id)) for lim in card.limits]
    assert counted == [(lim.limit_id, control.fuel.counter(card.card_no, lim.limit_id)) for lim in card.limits]
    assert any(c is not None and c.spent for _, c in counted)
    assert r.fuel.balance_kop(card.contract_id) == control.fuel.balance_kop(card.contract_id)
