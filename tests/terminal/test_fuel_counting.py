"""The fuel lane's counting for the fleet controls (issue 11), without devices: purchase-count
limits (one per sale that delivered anything), quarter and year periods, the journaled
``counting`` entries (old records still replay), and a decision's rule exceptions in the
``fuel.preauth`` / ``fuel.completed`` bodies and in the replica's decision body."""

from __future__ import annotations

import json
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz import fuel as rules
from authz.fuel_model import (
    FuelCard,
    FuelDecision,
    FuelRequest,
    Limit,
    LimitCounter,
    LimitUnit,
    Period,
    Product,
    ProductGroup,
    RuleException,
    Scope,
)
from authz.localtime import day_number
from authz.reasons import Reason
from terminal.fuel_core import FuelTxn, base_counters, counting_for, plus, write_id_of
from terminal.replica import fuel_decision_body, fuel_decision_from_body
from wire.bodies import (
    BodyError,
    CardCommit,
    Counting,
    FuelCompleted,
    FuelPreauth,
    body_of,
    decision_from_json,
)

CARD = "7005830000000017"
AI95 = Product("AI95", "AI-95", ProductGroup.FUEL)
WASH = Product("WASH", "Car wash", ProductGroup.CAR_WASH)
DAY = date(2026, 8, 19)  # a Wednesday of the third quarter


def card(*limits: Limit) -> FuelCard:
    return FuelCard(CARD, 42, date(2030, 12, 31), frozenset({ProductGroup.FUEL, ProductGroup.CAR_WASH}), limits)


FLEET = card(Limit(1, LimitUnit.PURCHASES, Period.DAY, 3),
             Limit(2, LimitUnit.KOPECKS, Period.QUARTER, 9_000_000),
             Limit(3, LimitUnit.MILLILITRES, Period.YEAR, 2_000_000),
             Limit(4, LimitUnit.PURCHASES, Period.MONTH, 20, Scope.GROUP, ProductGroup.CAR_WASH),
             Limit(5, LimitUnit.KOPECKS, Period.TRANSACTION, 300_000))


def test_counting_for_purchases_quarters_and_years():
    c = counting_for(FLEET, AI95, DAY)
    assert [(x.limit_id, x.counts, x.unit) for x in c] == [
        (1, True, LimitUnit.PURCHASES), (2, True, LimitUnit.KOPECKS), (3, True, LimitUnit.MILLILITRES),
        (4, False, LimitUnit.PURCHASES), (5, False, LimitUnit.KOPECKS)]
    assert [x.period_start for x in c] == [day_number(DAY), day_number(date(2026, 7, 1)),
                                          day_number(date(2026, 1, 1)), 0, 0]
    assert [x.period_start for x in c] == [rules.period_start(lim.period, DAY) if x.counts else 0
                                          for lim, x in zip(FLEET.limits, c)]


def test_plus_counts_one_purchase_per_sale_that_delivered_anything():
    c = counting_for(FLEET, AI95, DAY)
    base = base_counters(tuple((lim.limit_id, LimitCounter(0, 0)) for lim in FLEET.limits), c, {})
    after = plus(base, c, 40_000, 240_000)
    assert [s.spent for _, s in after] == [1, 240_000, 40_000, 0, 0]
    assert plus(after, c, 10, 1) == tuple((i, LimitCounter(s.spent + d, s.period_start))
                                          for (i, s), d in zip(after, (1, 1, 10, 0, 0)))
    assert plus(base, c, 0, 0) == base  # nothing delivered: not a purchase


def test_the_lane_counts_as_the_reference_rules_do():
    """counting_for/plus against authz.fuel.count_delivery on the same sales."""
    c = counting_for(FLEET, AI95, DAY)
    counters: dict[int, LimitCounter] = {}
    base = base_counters(tuple((lim.limit_id, LimitCounter(0, 0)) for lim in FLEET.limits), c, {})
    for volume, amount in ((40_000, 240_000), (0, 0), (1, 1), (55_000, 330_000)):
        for lid, after in rules.count_delivery(FLEET, AI95, DAY, counters.get, volume, amount):
            counters[lid] = after
        base = plus(base, c, volume, amount)
    assert {i: s for i, s in base if i in counters} == counters
    assert counters[1].spent == 3


def test_a_purchase_count_restarts_with_its_period():
    c = counting_for(card(Limit(1, LimitUnit.PURCHASES, Period.QUARTER, 5)), AI95, DAY)
    old = ((1, LimitCounter(5, day_number(date(2026, 4, 1)))),)
    assert base_counters(old, c, {}) == ((1, LimitCounter(0, day_number(date(2026, 7, 1)))),)
    # The site knows a newer count of the same quarter than the card: it wins.
    site = {1: LimitCounter(2, day_number(date(2026, 7, 1)))}
    assert base_counters(old, c, site) == ((1, LimitCounter(2, day_number(date(2026, 7, 1)))),)


def test_counting_json_is_compatible_with_records_already_journaled():
    assert Counting.from_json([1, 1, 1, 19_000]) == Counting(1, True, True, 19_000)
    assert Counting.from_json([1, 1, 0, 19_000]) == Counting(1, True, False, 19_000)
    assert Counting(1, True, True, 19_000).to_json() == [1, 1, 1, 19_000]  # the same bytes as before
    p = Counting(7, True, False, 20_000, purchases=True)
    assert p.to_json() == [7, 1, 2, 20_000] and Counting.from_json(p.to_json()) == p
    for bad in ([1, 1, 3, 0], [1, 2, 0, 0], [1, 1, 1], "x", [1, 1, True, 0]):
        with pytest.raises(BodyError):
            Counting.from_json(bad)


def _txn(decision: FuelDecision) -> FuelTxn:
    req = FuelRequest(CARD, 1001, "AI95", 1_787_000_000, None, None)
    c = counting_for(FLEET, AI95, DAY)
    base = base_counters(tuple((lim.limit_id, LimitCounter(0, 0)) for lim in FLEET.limits), c, {})
    return FuelTxn("txn-1", req, decision, 42, 3, write_id_of("s-01ARZ3NDEKTSV4RRFFQ69G5FAV"),
                   write_id_of("s-01ARZ3NDEKTSV4RRFFQ69G5FAW"), c, base, 6_000, 0)


ALERTED = FuelDecision(Reason.OK, 40_000, 240_000, 6_000, 6_150, None,
                       (RuleException(Reason.OUTSIDE_TIME_WINDOW), RuleException(Reason.LIMIT, 1)))


def test_exceptions_are_journaled_in_preauth_and_completed_and_replay():
    t = _txn(ALERTED)
    pre = t.preauth().to_json()
    assert pre["decision"]["exceptions"] == [["OUTSIDE_TIME_WINDOW", None], ["LIMIT", 1]]
    assert pre["card"]["counting"][0] == [1, 1, 2, day_number(DAY)]
    assert pre["card"]["reserve_counters"][0] == [1, 1, day_number(DAY)]
    again = body_of("fuel.preauth", json.loads(json.dumps(pre)))
    assert isinstance(again, FuelPreauth) and again.decision == ALERTED and again == t.preauth()
    assert FuelTxn.from_bodies("txn-1", [again]).reserve_counters() == t.reserve_counters()
    done = FuelCompleted(t.request, t.decision, 40_000, 240_000, "nozzle", 0, 5, CARD, 42,
                         CardCommit(write_id_of("s-01ARZ3NDEKTSV4RRFFQ69G5FAX"), 4, t.final_counters(40_000)), None)
    j = done.to_json()
    assert j["decision"]["exceptions"] == [["OUTSIDE_TIME_WINDOW", None], ["LIMIT", 1]]
    assert body_of("fuel.completed", j) == done


def test_a_decision_without_exceptions_keeps_the_old_json():
    d = FuelDecision(Reason.LIMIT, 10_000, 60_000, 6_000, 6_150, 1)
    assert fuel_decision_body(d) == {"reason": "LIMIT", "volume_ml": 10_000, "amount_kop": 60_000,
                                     "unit_price_kop_per_l": 6_000, "list_price_kop_per_l": 6_150,
                                     "binding_limit_id": 1}
    assert fuel_decision_from_body(fuel_decision_body(d)) == d
    assert fuel_decision_from_body(fuel_decision_body(ALERTED)) == ALERTED
    assert fuel_decision_body(ALERTED)["exceptions"] == [["OUTSIDE_TIME_WINDOW", None], ["LIMIT", 1]]


@pytest.mark.parametrize("exceptions", [[], [["NO_SUCH_REASON", None]], [["LIMIT"]], [["LIMIT", "1"]],
                                        [[1, None]], "LIMIT", [["LIMIT", 1.5]], None])
def test_bad_exceptions_are_a_clear_error(exceptions):
    body = fuel_decision_body(ALERTED) | {"exceptions": exceptions}
    with pytest.raises(BodyError, match="exceptions"):
        decision_from_json(body)


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda kids: st.lists(kids, max_size=4), max_leaves=12))
def test_fuzz_exceptions_and_counting_raise_only_body_error(raw):
    for parse in (lambda r: decision_from_json(fuel_decision_body(ALERTED) | {"exceptions": r}), Counting.from_json):
        try:
            parse(raw)
        except BodyError:
            pass
