"""A whole stop list compared off the event loop and applied on it at once
(terminal/stop_list_swap.py), on both evaluators: the result is exactly the new list, as the
on-loop replace gave it, after any deltas; a purchase in flight finishes on its version while
the next one sees the new list; bad or stale input changes nothing; and one bus event per
version (terminal/events.py)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.fuel_model import FuelRequest
from authz.reasons import Reason
from authz.sample import DAY_START_UTC
from native.compact import sample_fuel_columns
from terminal import stop_list_swap
from terminal.events import STOP_LIST_EVENT_CARDS, stop_list_event
from terminal.follower import FullSnapshot
from terminal.replica import Replica, ReplicaUpdateError
from terminal.stop_list_swap import apply_plan, apply_stop_list_snapshot, plan
from wire.messages import ReplicaDelta, StopListEntry, Table

IMPLS = ["native", "reference"]
FOREIGN = [f"99{i:014d}" for i in range(6)] + ["ABC-1"]  # numbers of no card of this replica


def replica(impl: str, n_cards: int = 60) -> Replica:
    r = Replica(sample_fuel_columns(n_cards=n_cards, seed=3), None, impl=impl)
    r.table_versions = {t: 1 for t in Table}
    return r


def numbers(r: Replica) -> list[str]:
    return [r.fuel_model.cards[i].card_no for i in range(min(r.fuel_card_count, 12))] + FOREIGN


def listed_now(r: Replica, universe: list[str]) -> set[str]:
    return {no for no in universe if r.fuel.on_stop_list(no)}


def snapshot(version: int, nos) -> FullSnapshot:
    return FullSnapshot(Table.STOP_LIST, version, tuple(StopListEntry(no, 1) for no in sorted(nos)))


@settings(max_examples=60, deadline=None)
@given(impl=st.sampled_from(IMPLS), data=st.data(), diff_max=st.sampled_from([0, 3, 100_000]))
def test_a_whole_list_applied_as_a_difference_is_exactly_the_new_list(impl, data, diff_max):
    r, twin = replica(impl), replica(impl)
    universe = numbers(r)
    subsets = st.sets(st.sampled_from(universe))
    first = data.draw(subsets, "first")
    r.apply_update(snapshot(2, first))
    twin.apply_update(snapshot(2, first))
    v = 2
    for _ in range(data.draw(st.integers(0, 3), "deltas")):  # deltas since the last whole list
        on, off = data.draw(subsets, "on"), data.draw(subsets, "off")
        d = ReplicaDelta(Table.STOP_LIST, v, v + 1, tuple(StopListEntry(no, 1) for no in sorted(on - off)),
                         tuple(sorted(off - on)))
        r.apply_update(d)
        twin.apply_update(d)
        v += 1
    new = data.draw(subsets, "new")
    stop_list_swap.DIFF_MAX, saved = diff_max, stop_list_swap.DIFF_MAX
    try:
        change = apply_plan(r, plan(r, v + 1, sorted(new)))
    finally:
        stop_list_swap.DIFF_MAX = saved
    twin.apply_update(snapshot(v + 1, new))  # the on-loop replace: the spec
    assert listed_now(r, universe) == new == listed_now(twin, universe)
    assert r.table_versions[Table.STOP_LIST] == v + 1
    assert change.size == len(new) and (change.replaced or set(change.listed).isdisjoint(change.unlisted))
    # and the list goes on following deltas from there
    d = ReplicaDelta(Table.STOP_LIST, v + 1, v + 2, (StopListEntry(universe[0], 1),), (universe[1],))
    r.apply_update(d)
    twin.apply_update(d)
    assert listed_now(r, universe) == listed_now(twin, universe)


def _request(r: Replica, i: int) -> FuelRequest:
    st0 = r.fuel.stations[0] if hasattr(r.fuel, "stations") else r.fuel_model.stations[0]
    return FuelRequest(r.fuel_model.cards[i].card_no, st0.station_id, next(iter(st0.prices_kop_per_l)),
                       DAY_START_UTC + 3600)


def _approved(r: Replica, skip: int = -1) -> int:
    for i in range(r.fuel_card_count):
        if i != skip and r.fuel.authorize(_request(r, i)).approved:
            return i
    raise AssertionError("no card of the sample is approved at station 0")


@pytest.mark.parametrize("impl", IMPLS)
def test_a_purchase_in_flight_finishes_on_its_version_and_the_next_sees_the_new_list(impl):
    """The comparison runs in a thread while the loop decides (the rows wait until the loop
    has made a decision: counted, not timed); the in-flight purchase completes and is
    charged; the next one on the listed card is declined."""
    r = replica(impl, 200)
    i = _approved(r)
    other = _approved(r, skip=i)
    req = _request(r, i)
    in_flight = r.fuel.authorize(req)
    assert in_flight.approved
    listed = r.fuel_model.cards[i].card_no
    loop_decided = threading.Event()
    decided_meanwhile = []

    def rows():
        yield from FOREIGN
        assert loop_decided.wait(10), "the event loop did not decide while the list was compared"
        yield listed

    async def main():
        async def lane():
            decided_meanwhile.append(r.fuel.authorize(_request(r, other)).approved)
            loop_decided.set()
        task = asyncio.create_task(lane())
        change = await apply_stop_list_snapshot(r, 5, rows)
        await task
        return change

    change = asyncio.run(main())
    assert decided_meanwhile == [True]
    assert change.version == 5 and listed in change.listed and r.table_versions[Table.STOP_LIST] == 5
    done = r.fuel.complete(req, in_flight, in_flight.volume_ml // 2)  # on the version it started with
    assert done.amount_kop > 0
    nxt = r.fuel.authorize(req)
    assert not nxt.approved and nxt.reason is Reason.STOP_LIST


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_or_stale_whole_lists_change_nothing(impl):
    r = replica(impl)
    universe = numbers(r)
    r.apply_update(snapshot(2, universe[:3]))
    before, versions = listed_now(r, universe), dict(r.table_versions)
    for bad in ([universe[5], 7], [""], [None]):
        with pytest.raises(ReplicaUpdateError, match="stop-list number must be text"):
            plan(r, 3, bad)
    p = plan(r, 3, universe[4:6])
    r.apply_update(ReplicaDelta(Table.STOP_LIST, 2, 3, (StopListEntry(universe[7], 1),), ()))  # lands in between
    before, versions = listed_now(r, universe), dict(r.table_versions)
    with pytest.raises(ReplicaUpdateError, match="changed while it was compared"):
        apply_plan(r, p)
    assert listed_now(r, universe) == before and r.table_versions == versions
    assert apply_plan(r, replace(p, generation=r.stop_generation, version=4)).version == 4


def test_a_till_only_site_holds_the_version_only():
    r = Replica(None, None)
    change = apply_plan(r, plan(r, 9, ["7005830000000001"]))
    assert r.table_versions[Table.STOP_LIST] == 9 and change.size == 1


def test_one_event_per_version_names_a_few_cards_masked_and_counts_the_rest():
    many = [f"70058300{i:08d}" for i in range(1_000)]
    data = stop_list_event(7, many, ["7005830000009999"], size=1_000)
    assert data["version"] == 7 and data["listed_count"] == 1_000 and data["unlisted_count"] == 1
    assert data["size"] == 1_000 and len(data["cards"]) == STOP_LIST_EVENT_CARDS
    assert all("*" in c["card"] and c["listed"] for c in data["cards"])
    assert not any(no in str(data) for no in many)  # never a full card number
    one = stop_list_event(8, [], ["7005830000000017"])
    assert one["card"] == one["cards"][0]["card"] and one["listed"] is False and "0017" in one["card"]
    assert stop_list_event(9, [], [])["cards"] == []
