"""The fuel-card rules of docs DOMAIN.md, one group of tests per rule, on both evaluators.

Every expected number is computed by hand in the test (the comment says how): amounts are
volume x price / 1000 rounded half up; the largest volume for an amount A at price p is the
largest v with v * p + 500 < 1000 * (A + 1).
"""

from __future__ import annotations

from datetime import date

import pytest

import native
from authz.batch import FuelBatch
from authz.errors import ModelError, RequestError
from authz.fuel_model import (CardKind, CardStatus, DiscountKind, DiscountRule, DiscountWhere,
                              FuelDecision, FuelRequest, Limit, LimitCounter, LimitUnit, OnBreach,
                              Period, ProductGroup, RuleException, Scope, StationScope, Tariff,
                              TimeWindow)
from authz.update import FuelUpdate
from native.compact import FuelColumns
from authz.reasons import Reason
from tests.evaluator_fixtures import (AWAY, CARD, CARD_B, CHOSEN_A, CHOSEN_B, CHOSEN_C, DISCOUNTS,
                                      HOME, KGD, MSK, NO_DT, VVO, card, contract, day_no,
                                      fuel_model, fuel_req, fuel_snapshot, ts)

KOP, ML = LimitUnit.KOPECKS, LimitUnit.MILLILITRES

#: Wednesday 13 March 2024, noon in Moscow.
NOW = ts(2024, 3, 13, 12)
TODAY = day_no(date(2024, 3, 13))


def fuel(impl, **kw):
    model = fuel_model(**kw)
    return native.fuel_evaluator(model, impl), model


def decide(ev, *args, **kw) -> FuelDecision:
    return ev.authorize(fuel_req(*args, **kw))


def assert_decision(d: FuelDecision, reason: Reason, volume_ml: int, amount_kop: int,
                    binding: int | None = None) -> None:
    assert (d.reason, d.volume_ml, d.amount_kop, d.binding_limit_id) == (reason, volume_ml, amount_kop, binding)


def assert_declined(d: FuelDecision, reason: Reason) -> None:
    assert d.reason is reason
    assert not d.approved
    assert (d.volume_ml, d.amount_kop) == (0, 0)


# ------------------------------------------------------------------ the answer is "how much"

def test_without_preset_the_station_largest_fill_bounds_the_answer(impl):
    ev, _ = fuel(impl)
    d = decide(ev, NOW)
    # 100 l station maximum x 50.00 RUB/l = 5,000 RUB
    assert_decision(d, Reason.OK, 100_000, 500_000)
    assert (d.unit_price_kop_per_l, d.list_price_kop_per_l) == (5000, 5000)
    assert d.approved


def test_volume_preset_is_approved_as_asked(impl):
    ev, _ = fuel(impl)
    # 30 l x 50.00 = 1,500.00 RUB
    assert_decision(decide(ev, NOW, volume=30_000), Reason.OK, 30_000, 150_000)


def test_volume_preset_above_station_largest_fill_is_kept(impl):
    ev, _ = fuel(impl)
    # the station maximum applies only without a preset: 150 l x 50.00 = 7,500 RUB
    assert_decision(decide(ev, NOW, volume=150_000), Reason.OK, 150_000, 750_000)


@pytest.mark.parametrize("product, volume_ml, amount_kop", [
    ("DT", 10, 51),        # 10 ml x 50.50 = 50.5 kop -> half up 51
    ("DT", 30, 152),       # 30 x 50.50 = 151.5 -> 152
    ("AI92", 10, 54),      # 10 x 53.99 = 53.99 -> 54
    ("AI92", 1, 5),        # 1 x 53.99 = 5.399 -> 5
    ("AI92", 9, 49),       # 9 x 53.99 = 48.591 -> 49
    ("AI95", 1, 5),        # 1 x 50.00 = 5.0
    ("AI95", 33_333, 166_665),  # 33,333 x 50.00 = 166,665.0
])
def test_amount_is_volume_times_price_rounded_half_up(impl, product, volume_ml, amount_kop):
    ev, _ = fuel(impl)
    assert_decision(decide(ev, NOW, product, volume=volume_ml), Reason.OK, volume_ml, amount_kop)


@pytest.mark.parametrize("product, preset_kop, volume_ml, amount_kop", [
    # DT 50.50: 10 ml = 50.5 -> 51 kop fits 51; 11 ml = 55.55 -> 56 does not
    ("DT", 51, 10, 51),
    # 9 ml = 45.45 -> 45 fits 50 kop; 10 ml = 51 kop does not
    ("DT", 50, 9, 45),
    # AI92 53.99: 18,522 ml = 100,000.278 -> 100,000 kop; 18,523 ml = 100,005.677 -> 100,006
    ("AI92", 100_000, 18_522, 100_000),
    # AI95 50.00: exactly 20 l for 1,000 RUB
    ("AI95", 100_000, 20_000, 100_000),
    # 1 ml = 5 kop fits 9 kop; 2 ml = 10 kop does not
    ("AI95", 9, 1, 5),
])
def test_amount_preset_gives_the_largest_volume_within_the_amount(impl, product, preset_kop, volume_ml,
                                                                   amount_kop):
    ev, _ = fuel(impl)
    assert_decision(decide(ev, NOW, product, amount=preset_kop), Reason.OK, volume_ml, amount_kop)


def test_amount_preset_below_one_millilitre_is_preset_too_small(impl):
    ev, _ = fuel(impl)
    # 1 ml of AI-95 costs 5 kop: 4 kop buys nothing, 5 kop buys 1 ml
    assert_declined(decide(ev, NOW, amount=4), Reason.PRESET_TOO_SMALL)
    assert_decision(decide(ev, NOW, amount=5), Reason.OK, 1, 5)


def test_authorization_changes_nothing(impl):
    ev, model = fuel(impl, limits=(Limit(1, KOP, Period.DAY, 100_000),))
    before = fuel_snapshot(ev, model)
    for _ in range(3):
        assert_decision(decide(ev, NOW), Reason.LIMIT, 20_000, 100_000, 1)
    assert fuel_snapshot(ev, model) == before == ((10_000_000,), (None,))


# ------------------------------------------------------------------ limits: rubles and litres

def test_ruble_limit_bounds_the_volume(impl):
    ev, _ = fuel(impl, limits=(Limit(1, KOP, Period.DAY, 100_000),))
    # 1,000 RUB / 50.00 = 20 l
    assert_decision(decide(ev, NOW), Reason.LIMIT, 20_000, 100_000, 1)
    # at 53.99 the largest volume costing <= 1,000 RUB is 18,522 ml (100,000.278 -> 100,000)
    assert_decision(decide(ev, NOW, "AI92"), Reason.LIMIT, 18_522, 100_000, 1)


def test_litre_limit_bounds_the_volume(impl):
    ev, _ = fuel(impl, limits=(Limit(2, ML, Period.DAY, 40_000),))
    # 40 l x 50.00 = 2,000 RUB; 40 l x 50.50 = 2,020 RUB
    assert_decision(decide(ev, NOW), Reason.LIMIT, 40_000, 200_000, 2)
    assert_decision(decide(ev, NOW, "DT"), Reason.LIMIT, 40_000, 202_000, 2)


def test_limit_hit_exactly_by_the_preset_is_approved_as_asked(impl):
    # 50 l a day, 30 l already taken today: 20 l left
    ev, _ = fuel(impl, limits=(Limit(2, ML, Period.DAY, 50_000),), spent={2: LimitCounter(30_000, TODAY)})
    assert_decision(decide(ev, NOW, volume=20_000), Reason.OK, 20_000, 100_000)
    assert_decision(decide(ev, NOW, volume=20_001), Reason.LIMIT, 20_000, 100_000, 2)


def test_ruble_limit_hit_exactly_by_the_preset_is_approved_as_asked(impl):
    # 1,000 RUB a day, 400 RUB taken: 600 RUB = 12 l left
    ev, _ = fuel(impl, limits=(Limit(1, KOP, Period.DAY, 100_000),), spent={1: LimitCounter(40_000, TODAY)})
    assert_decision(decide(ev, NOW, amount=60_000), Reason.OK, 12_000, 60_000)
    assert_decision(decide(ev, NOW, volume=12_000), Reason.OK, 12_000, 60_000)
    assert_decision(decide(ev, NOW, volume=12_001), Reason.LIMIT, 12_000, 60_000, 1)
    # 600.05 RUB buys 12,001 ml (60,005 kop) without the limit: the limit binds
    assert_decision(decide(ev, NOW, amount=60_005), Reason.LIMIT, 12_000, 60_000, 1)


def test_limit_exhausted(impl):
    ev, _ = fuel(impl, limits=(Limit(2, ML, Period.DAY, 50_000),), spent={2: LimitCounter(50_000, TODAY)})
    d = decide(ev, NOW)
    assert_declined(d, Reason.LIMIT_EXHAUSTED)
    assert d.binding_limit_id == 2
    assert_declined(decide(ev, NOW, volume=1), Reason.LIMIT_EXHAUSTED)


def test_limit_overspent_offline_is_exhausted(impl):
    # spent more than the limit (completions that came in late): nothing left, not negative
    ev, _ = fuel(impl, limits=(Limit(1, KOP, Period.DAY, 100_000),), spent={1: LimitCounter(130_000, TODAY)})
    d = decide(ev, NOW)
    assert_declined(d, Reason.LIMIT_EXHAUSTED)
    assert d.binding_limit_id == 1


def test_ruble_limit_remainder_below_one_millilitre_is_exhausted(impl):
    lim = (Limit(1, KOP, Period.DAY, 100_000),)
    # 4 kop left, 1 ml of AI-95 costs 5 kop
    ev, _ = fuel(impl, limits=lim, spent={1: LimitCounter(99_996, TODAY)})
    assert_declined(decide(ev, NOW), Reason.LIMIT_EXHAUSTED)
    # 5 kop left: exactly 1 ml
    ev, _ = fuel(impl, limits=lim, spent={1: LimitCounter(99_995, TODAY)})
    assert_decision(decide(ev, NOW), Reason.LIMIT, 1, 5, 1)


def test_a_purchase_must_fit_every_covering_limit(impl):
    limits = (Limit(1, ML, Period.DAY, 50_000),
              Limit(2, KOP, Period.WEEK, 150_000),
              Limit(3, ML, Period.MONTH, 100_000))
    # week: 1,000 of 1,500 RUB spent since Monday 11 March -> 500 RUB = 10 l (tightest)
    spent = {2: LimitCounter(100_000, day_no(date(2024, 3, 11))),
             3: LimitCounter(85_000, day_no(date(2024, 3, 1)))}
    ev, _ = fuel(impl, limits=limits, spent=spent)
    assert_decision(decide(ev, NOW), Reason.LIMIT, 10_000, 50_000, 2)
    # month: 15 l left would bind if the week limit were roomier; day limit 50 l does not
    spent[2] = LimitCounter(0, day_no(date(2024, 3, 11)))
    ev, _ = fuel(impl, limits=limits, spent=spent)
    assert_decision(decide(ev, NOW), Reason.LIMIT, 15_000, 75_000, 3)


def test_product_scoped_limit_covers_only_its_grade(impl):
    ev, _ = fuel(impl, limits=(Limit(5, ML, Period.DAY, 10_000, Scope.PRODUCT, product="DT"),))
    # 10 l of diesel x 50.50 = 505 RUB
    assert_decision(decide(ev, NOW, "DT"), Reason.LIMIT, 10_000, 50_500, 5)
    assert_decision(decide(ev, NOW, "AI95"), Reason.OK, 100_000, 500_000)


def test_group_scoped_limit_covers_only_its_group(impl):
    ev, _ = fuel(impl, limits=(Limit(6, KOP, Period.DAY, 60_000, Scope.GROUP, group=ProductGroup.CAR_WASH),
                               Limit(7, ML, Period.DAY, 30_000, Scope.GROUP, group=ProductGroup.FUEL)))
    # 600 RUB of washes at 300 RUB each: 2 washes (2,000 thousandths)
    assert_decision(decide(ev, NOW, "WASH"), Reason.LIMIT, 2_000, 60_000, 6)
    # fuel: only the 30 l fuel-group limit
    assert_decision(decide(ev, NOW, "AI95"), Reason.LIMIT, 30_000, 150_000, 7)
    # coffee (shop) is in neither group: the station maximum, 100 units x 150 RUB
    assert_decision(decide(ev, NOW, "COFFEE"), Reason.OK, 100_000, 1_500_000)


def test_litre_limit_does_not_cover_non_fuel_products(impl):
    limits = (Limit(7, ML, Period.DAY, 10_000),  # scope ALL, but litres
              Limit(8, ML, Period.DAY, 0, Scope.GROUP, group=ProductGroup.SHOP))
    ev, model = fuel(impl, limits=limits, spent={7: LimitCounter(10_000, TODAY)})
    assert_declined(decide(ev, NOW, "AI95"), Reason.LIMIT_EXHAUSTED)
    # one coffee: 1,000 thousandths x 150 RUB
    r = fuel_req(NOW, "COFFEE", volume=1_000)
    d = ev.authorize(r)
    assert_decision(d, Reason.OK, 1_000, 15_000)
    c = ev.complete(r, d, 1_000)
    # no litre limit counts the coffee
    assert c.counters_after == ()
    assert ev.counter(CARD, 7) == LimitCounter(10_000, TODAY)
    assert ev.counter(CARD, 8) is None
    assert c.balance_after_kop == 10_000_000 - 15_000


def test_ruble_limit_with_scope_all_covers_non_fuel_products(impl):
    ev, _ = fuel(impl, limits=(Limit(9, KOP, Period.DAY, 20_000),))
    # 200 RUB at 150 RUB a unit: 1,333 thousandths cost 199.95 RUB; 1,334 cost 200.10
    assert_decision(decide(ev, NOW, "COFFEE"), Reason.LIMIT, 1_333, 19_995, 9)


def test_per_transaction_limit_applies_to_each_transaction_and_counts_nothing(impl):
    ev, model = fuel(impl, limits=(Limit(10, ML, Period.TRANSACTION, 30_000),))
    r = fuel_req(NOW)
    d = ev.authorize(r)
    assert_decision(d, Reason.LIMIT, 30_000, 150_000, 10)
    c = ev.complete(r, d, 30_000)
    assert c.counters_after == ()
    assert ev.counter(CARD, 10) is None
    # the next transaction, same minute: 30 l again
    assert_decision(ev.authorize(fuel_req(NOW + 60)), Reason.LIMIT, 30_000, 150_000, 10)


def test_per_transaction_limit_ignores_a_loaded_counter(impl):
    ev, _ = fuel(impl, limits=(Limit(10, ML, Period.TRANSACTION, 30_000),),
                 spent={10: LimitCounter(30_000, TODAY)})
    assert_decision(decide(ev, NOW), Reason.LIMIT, 30_000, 150_000, 10)


def test_lifetime_limit_never_rolls_over(impl):
    ev, _ = fuel(impl, limits=(Limit(11, ML, Period.LIFETIME, 100_000),), spent={11: LimitCounter(90_000, 0)})
    # 100 l for the card's life, 90 l used: 10 l, today and in five years
    assert_decision(decide(ev, NOW), Reason.LIMIT, 10_000, 50_000, 11)
    later = ts(2029, 1, 1, 0, 0, 1)
    r = fuel_req(later)
    d = ev.authorize(r)
    assert_decision(d, Reason.LIMIT, 10_000, 50_000, 11)
    c = ev.complete(r, d, 10_000)
    assert c.counters_after == ((11, LimitCounter(100_000, 0)),)
    assert_declined(decide(ev, ts(2030, 6, 1)), Reason.LIMIT_EXHAUSTED)


def test_lifetime_limit_first_completion_starts_its_counter(impl):
    ev, _ = fuel(impl, limits=(Limit(11, KOP, Period.LIFETIME, 1_000_000),))
    r = fuel_req(NOW, volume=10_000)
    c = ev.complete(r, ev.authorize(r), 10_000)
    # 10 l x 50.00 = 500 RUB; a lifetime counter's period starts on day 0
    assert c.counters_after == ((11, LimitCounter(50_000, 0)),)
    # 10,000 - 500 = 9,500 RUB left = 190 l, beyond the 100 l station maximum
    assert_decision(decide(ev, ts(2027, 5, 5)), Reason.OK, 100_000, 500_000)


# ------------------------------------------------------------------ periods roll over locally

def test_day_limit_rolls_over_at_local_midnight_in_contract_zone(impl):
    spent = {2: LimitCounter(50_000, day_no(date(2024, 3, 13)))}
    ev, _ = fuel(impl, tz=VVO, limits=(Limit(2, ML, Period.DAY, 50_000),), spent=spent)
    assert_declined(decide(ev, ts(2024, 3, 13, 23, 59, 59, tz=VVO)), Reason.LIMIT_EXHAUSTED)
    assert_decision(decide(ev, ts(2024, 3, 14, 0, 0, 0, tz=VVO)), Reason.LIMIT, 50_000, 250_000, 2)


def test_one_utc_instant_is_a_different_local_day_in_vladivostok_and_kaliningrad(impl):
    lim = (Limit(2, ML, Period.DAY, 50_000),)
    day13 = day_no(date(2024, 3, 13))
    model_kw = dict(
        contracts=(contract(1, tz=VVO), contract(2, tz=KGD)),
        cards=(card(CARD, 1, limits=lim), card(CARD_B, 2, limits=lim)),
        counters={(CARD, 2): LimitCounter(50_000, day13), (CARD_B, 2): LimitCounter(50_000, day13)})
    ev, _ = fuel(impl, **model_kw)
    # 15:00 UTC on 13 March is 01:00 on the 14th in Vladivostok (UTC+10), 17:00 on the 13th
    # in Kaliningrad (UTC+2)
    instant = ts(2024, 3, 13, 15, tz="UTC")
    assert_decision(decide(ev, instant), Reason.LIMIT, 50_000, 250_000, 2)
    assert_declined(decide(ev, instant, card_no=CARD_B), Reason.LIMIT_EXHAUSTED)
    # Kaliningrad's midnight is 22:00 UTC
    assert_declined(decide(ev, ts(2024, 3, 13, 21, 59, 59, tz="UTC"), card_no=CARD_B), Reason.LIMIT_EXHAUSTED)
    assert_decision(decide(ev, ts(2024, 3, 13, 22, tz="UTC"), card_no=CARD_B), Reason.LIMIT, 50_000, 250_000, 2)
    # and Vladivostok's midnight before it was 14:00 UTC
    assert_declined(decide(ev, ts(2024, 3, 13, 13, 59, 59, tz="UTC")), Reason.LIMIT_EXHAUSTED)


def test_week_limit_starts_on_monday(impl):
    # 4,000 RUB a week, all spent in the week that started Monday 11 March 2024
    ev, _ = fuel(impl, limits=(Limit(3, KOP, Period.WEEK, 400_000),),
                 spent={3: LimitCounter(400_000, day_no(date(2024, 3, 11)))})
    assert_declined(decide(ev, ts(2024, 3, 11, 0, 0, 0)), Reason.LIMIT_EXHAUSTED)      # Monday
    assert_declined(decide(ev, ts(2024, 3, 17, 23, 59, 59)), Reason.LIMIT_EXHAUSTED)   # Sunday
    # Monday 18 March: 4,000 RUB / 50.00 = 80 l
    assert_decision(decide(ev, ts(2024, 3, 18, 0, 0, 0)), Reason.LIMIT, 80_000, 400_000, 3)


def test_week_limit_completion_counts_from_monday(impl):
    ev, _ = fuel(impl, limits=(Limit(3, ML, Period.WEEK, 100_000),))
    r = fuel_req(ts(2024, 3, 17, 20), volume=30_000)  # Sunday 17 March
    c = ev.complete(r, ev.authorize(r), 30_000)
    assert c.counters_after == ((3, LimitCounter(30_000, day_no(date(2024, 3, 11)))),)
    assert_decision(decide(ev, ts(2024, 3, 17, 23, 59, 59)), Reason.LIMIT, 70_000, 350_000, 3)
    assert_decision(decide(ev, ts(2024, 3, 18)), Reason.OK, 100_000, 500_000)


def test_month_limit_starts_on_the_first(impl):
    ev, _ = fuel(impl, limits=(Limit(4, ML, Period.MONTH, 60_000),),
                 spent={4: LimitCounter(60_000, day_no(date(2024, 2, 1)))})
    assert_declined(decide(ev, ts(2024, 2, 1, 0, 0, 0)), Reason.LIMIT_EXHAUSTED)
    assert_declined(decide(ev, ts(2024, 2, 29, 23, 59, 59)), Reason.LIMIT_EXHAUSTED)  # leap day
    assert_decision(decide(ev, ts(2024, 3, 1, 0, 0, 0)), Reason.LIMIT, 60_000, 300_000, 4)


def test_month_limit_rolls_over_at_local_midnight_in_contract_zone(impl):
    ev, _ = fuel(impl, tz=KGD, limits=(Limit(4, ML, Period.MONTH, 60_000),),
                 spent={4: LimitCounter(60_000, day_no(date(2024, 2, 1)))})
    # 1 March 00:00 in Moscow is still 29 February 23:00 in Kaliningrad
    assert_declined(decide(ev, ts(2024, 3, 1, 0, 0, 0, tz=MSK)), Reason.LIMIT_EXHAUSTED)
    assert_decision(decide(ev, ts(2024, 3, 1, 0, 0, 0, tz=KGD)), Reason.LIMIT, 60_000, 300_000, 4)


def test_completion_in_a_new_period_starts_a_fresh_counter(impl):
    limits = (Limit(1, ML, Period.DAY, 60_000), Limit(2, KOP, Period.MONTH, 1_000_000))
    spent = {1: LimitCounter(50_000, day_no(date(2024, 3, 13))),
             2: LimitCounter(900_000, day_no(date(2024, 2, 1)))}
    ev, _ = fuel(impl, limits=limits, spent=spent)
    r = fuel_req(ts(2024, 3, 14, 10), volume=20_000)
    d = ev.authorize(r)
    assert_decision(d, Reason.OK, 20_000, 100_000)
    c = ev.complete(r, d, 20_000)
    assert c.counters_after == ((1, LimitCounter(20_000, day_no(date(2024, 3, 14)))),
                                (2, LimitCounter(100_000, day_no(date(2024, 3, 1)))))


def test_counter_from_a_later_period_still_counts(impl):
    # a counter stamped tomorrow (the clock went back) errs on the side of refusing
    ev, _ = fuel(impl, limits=(Limit(2, ML, Period.DAY, 50_000),),
                 spent={2: LimitCounter(50_000, TODAY + 1)})
    assert_declined(decide(ev, NOW), Reason.LIMIT_EXHAUSTED)


# ------------------------------------------------------------------ contract balance and credit line

def test_contract_balance_bounds_the_volume(impl):
    ev, _ = fuel(impl, balance_kop=100_000)
    # 1,000 RUB / 50.00 = 20 l
    d = decide(ev, NOW)
    assert_decision(d, Reason.BALANCE, 20_000, 100_000, None)
    assert d.approved


def test_balance_exactly_meeting_the_preset_is_approved_as_asked(impl):
    ev, _ = fuel(impl, balance_kop=100_000)
    assert_decision(decide(ev, NOW, volume=20_000), Reason.OK, 20_000, 100_000)
    assert_decision(decide(ev, NOW, amount=100_000), Reason.OK, 20_000, 100_000)
    assert_decision(decide(ev, NOW, volume=20_001), Reason.BALANCE, 20_000, 100_000)


def test_credit_line_extends_the_balance(impl):
    ev, _ = fuel(impl, balance_kop=0, credit_line_kop=50_000)
    # 0 + 500 RUB of credit = 10 l
    assert_decision(decide(ev, NOW), Reason.BALANCE, 10_000, 50_000)
    # already 300 RUB into a 500 RUB credit line: 200 RUB = 4 l
    ev, _ = fuel(impl, balance_kop=-30_000, credit_line_kop=50_000)
    assert_decision(decide(ev, NOW), Reason.BALANCE, 4_000, 20_000)


@pytest.mark.parametrize("balance_kop, credit_line_kop", [
    (0, 0),             # nothing
    (-50_000, 50_000),  # the credit line fully used
    (-60_000, 50_000),  # over the credit line
    (4, 0),             # 4 kop, less than 1 ml (5 kop)
])
def test_balance_exhausted(impl, balance_kop, credit_line_kop):
    ev, _ = fuel(impl, balance_kop=balance_kop, credit_line_kop=credit_line_kop)
    d = decide(ev, NOW)
    assert_declined(d, Reason.BALANCE_EXHAUSTED)
    assert d.binding_limit_id is None


def test_a_limit_wins_a_tie_with_the_balance(impl):
    ev, _ = fuel(impl, balance_kop=100_000, limits=(Limit(1, KOP, Period.DAY, 100_000),))
    assert_decision(decide(ev, NOW), Reason.LIMIT, 20_000, 100_000, 1)


def test_balance_tighter_than_a_limit_binds(impl):
    ev, _ = fuel(impl, balance_kop=50_000, limits=(Limit(1, KOP, Period.DAY, 100_000),))
    assert_decision(decide(ev, NOW), Reason.BALANCE, 10_000, 50_000, None)


def test_exhausted_limit_and_balance_report_the_limit(impl):
    ev, _ = fuel(impl, balance_kop=0, limits=(Limit(1, KOP, Period.DAY, 100_000),),
                 spent={1: LimitCounter(100_000, TODAY)})
    d = decide(ev, NOW)
    assert_declined(d, Reason.LIMIT_EXHAUSTED)
    assert d.binding_limit_id == 1


def test_the_balance_is_shared_by_the_contract_cards(impl):
    ev, _ = fuel(impl, contracts=(contract(1, balance_kop=100_000),),
                 cards=(card(CARD, 1), card(CARD_B, 1)))
    r = fuel_req(NOW, volume=15_000)
    c = ev.complete(r, ev.authorize(r), 15_000)
    # 15 l x 50.00 = 750 RUB of the 1,000 RUB: 250 RUB = 5 l left for the other card
    assert c.balance_after_kop == 25_000
    assert ev.balance_kop(1) == 25_000
    assert_decision(decide(ev, NOW, card_no=CARD_B), Reason.BALANCE, 5_000, 25_000)


# ------------------------------------------------------------------ refusals

def test_stop_list_declines(impl):
    ev, _ = fuel(impl, stop_list=(CARD,))
    assert_declined(decide(ev, NOW), Reason.STOP_LIST)


def test_stop_list_comes_before_every_other_refusal(impl):
    ev, _ = fuel(impl, stop_list=(CARD,), status=CardStatus.BLOCKED, expires_on=date(2020, 1, 1),
                 groups={ProductGroup.SHOP}, balance_kop=0)
    assert_declined(decide(ev, NOW), Reason.STOP_LIST)


def test_stop_list_of_another_card_does_not_decline(impl):
    ev, _ = fuel(impl, stop_list=(CARD_B, "0000000000000000"))
    assert_decision(decide(ev, NOW), Reason.OK, 100_000, 500_000)


def test_blocked_card_declines(impl):
    ev, _ = fuel(impl, status=CardStatus.BLOCKED)
    assert_declined(decide(ev, NOW), Reason.CARD_BLOCKED)
    ev, _ = fuel(impl, status=CardStatus.BLOCKED, expires_on=date(2020, 1, 1))
    assert_declined(decide(ev, NOW), Reason.CARD_BLOCKED)


def test_card_is_valid_through_its_expiry_day_and_refused_the_next_local_day(impl):
    ev, _ = fuel(impl, tz=VVO, expires_on=date(2024, 3, 31))
    assert_decision(decide(ev, ts(2024, 3, 31, 23, 59, 59, tz=VVO)), Reason.OK, 100_000, 500_000)
    # 00:00 on 1 April in Vladivostok is still 31 March (14:00) in UTC and in Moscow
    assert_declined(decide(ev, ts(2024, 4, 1, 0, 0, 0, tz=VVO)), Reason.CARD_EXPIRED)
    assert_declined(decide(ev, ts(2024, 3, 31, 17, 0, 0, tz=MSK)), Reason.CARD_EXPIRED)


def test_product_group_not_allowed_on_the_card(impl):
    ev, _ = fuel(impl, groups={ProductGroup.FUEL})
    assert_declined(decide(ev, NOW, "WASH"), Reason.PRODUCT_NOT_ALLOWED)
    assert_declined(decide(ev, NOW, "COFFEE"), Reason.PRODUCT_NOT_ALLOWED)
    # checked before the station: AWAY does not sell washes either
    assert_declined(decide(ev, NOW, "WASH", AWAY), Reason.PRODUCT_NOT_ALLOWED)
    assert_decision(decide(ev, NOW, "AI95"), Reason.OK, 100_000, 500_000)


def test_product_not_sold_at_the_station(impl):
    ev, _ = fuel(impl)
    # AWAY has a wash price but does not sell the car-wash group (region availability)
    assert_declined(decide(ev, NOW, "WASH", AWAY), Reason.PRODUCT_NOT_SOLD)
    # NO_DT sells fuel but has no diesel; it sells shop goods but has no coffee
    assert_declined(decide(ev, NOW, "DT", NO_DT), Reason.PRODUCT_NOT_SOLD)
    assert_declined(decide(ev, NOW, "COFFEE", NO_DT), Reason.PRODUCT_NOT_SOLD)
    # no station sells hotel rooms
    assert_declined(decide(ev, NOW, "ROOM", HOME), Reason.PRODUCT_NOT_SOLD)
    assert_decision(decide(ev, NOW, "WASH", HOME, volume=1_000), Reason.OK, 1_000, 30_000)


def test_virtual_card_is_authorized_like_a_plastic_one(impl):
    ev, _ = fuel(impl, kind=CardKind.VIRTUAL, limits=(Limit(1, KOP, Period.DAY, 100_000),))
    assert_decision(decide(ev, NOW), Reason.LIMIT, 20_000, 100_000, 1)


def test_refusals_change_nothing(impl):
    ev, model = fuel(impl, status=CardStatus.BLOCKED, limits=(Limit(1, KOP, Period.DAY, 100_000),))
    before = fuel_snapshot(ev, model)
    r = fuel_req(NOW)
    d = ev.authorize(r)
    assert_declined(d, Reason.CARD_BLOCKED)
    with pytest.raises(RequestError):
        ev.complete(r, d, 0)
    assert fuel_snapshot(ev, model) == before


# ------------------------------------------------------------------ tariffs

def test_regional_discount_only_in_the_home_region(impl):
    ev, _ = fuel(impl, tariff=Tariff.REGIONAL, discounts=DISCOUNTS)
    # AI-95: 50.00 - 2.00 at home; 52.00 list price in region 50
    d = decide(ev, NOW, "AI95", HOME, volume=20_000)
    assert (d.unit_price_kop_per_l, d.list_price_kop_per_l, d.amount_kop) == (4800, 5000, 96_000)
    d = decide(ev, NOW, "AI95", AWAY, volume=20_000)
    assert (d.unit_price_kop_per_l, d.list_price_kop_per_l, d.amount_kop) == (5200, 5200, 104_000)
    # diesel 3 %: 3 % of 50.50 = 1.515 -> 1.52 off -> 48.98; 10 l = 489.80 RUB
    d = decide(ev, NOW, "DT", HOME, volume=10_000)
    assert (d.unit_price_kop_per_l, d.amount_kop) == (4898, 48_980)
    assert decide(ev, NOW, "DT", AWAY).unit_price_kop_per_l == 6100
    # AI-92 has no row: list price everywhere
    assert decide(ev, NOW, "AI92", HOME).unit_price_kop_per_l == 5399


def test_regional_plus_higher_discount_at_the_three_chosen_stations(impl):
    ev, _ = fuel(impl, tariff=Tariff.REGIONAL_PLUS, discounts=DISCOUNTS,
                 chosen=(CHOSEN_A, CHOSEN_B, CHOSEN_C))
    for station in (CHOSEN_A, CHOSEN_B, CHOSEN_C):
        # the larger of 2.00 (home region) and 3.50 (chosen): 46.50, not 50.00 - 5.50
        assert decide(ev, NOW, "AI95", station).unit_price_kop_per_l == 4650
    # a home-region station the client did not choose: the Regional discount
    assert decide(ev, NOW, "AI95", HOME).unit_price_kop_per_l == 4800
    assert decide(ev, NOW, "AI95", AWAY).unit_price_kop_per_l == 5200


def test_regional_plus_without_chosen_stations_is_regional(impl):
    ev, _ = fuel(impl, tariff=Tariff.REGIONAL_PLUS, discounts=DISCOUNTS, chosen=(CHOSEN_A,))
    assert decide(ev, NOW, "AI95", CHOSEN_A).unit_price_kop_per_l == 4650
    assert decide(ev, NOW, "AI95", CHOSEN_B).unit_price_kop_per_l == 4800


@pytest.mark.parametrize("tariff, off_kop", [
    (Tariff.TRANSIT, 100), (Tariff.TRANSIT_OPTIMAL, 150), (Tariff.TRANSIT_OPTIMAL_PLUS, 250),
])
def test_transit_optimal_and_optimal_plus_discount_network_wide(impl, tariff, off_kop):
    ev, _ = fuel(impl, tariff=tariff, discounts=DISCOUNTS)
    assert decide(ev, NOW, "AI95", HOME).unit_price_kop_per_l == 5000 - off_kop
    assert decide(ev, NOW, "AI95", AWAY).unit_price_kop_per_l == 5200 - off_kop
    assert decide(ev, NOW, "AI95", CHOSEN_C).unit_price_kop_per_l == 5000 - off_kop
    # the table has no diesel row for these tariffs
    assert decide(ev, NOW, "DT", AWAY).unit_price_kop_per_l == 6100


def test_fuel_online_has_its_own_discount_table(impl):
    ev, _ = fuel(impl, tariff=Tariff.FUEL_ONLINE, discounts=DISCOUNTS)
    # 2 %: 1.00 off 50.00 at home, 1.04 off 52.00 away
    assert decide(ev, NOW, "AI95", HOME).unit_price_kop_per_l == 4900
    assert decide(ev, NOW, "AI95", AWAY).unit_price_kop_per_l == 5096


def test_no_discount_without_a_row_for_the_contract_tariff(impl):
    ev, _ = fuel(impl, tariff=Tariff.TRANSIT, discounts=())
    assert decide(ev, NOW, "AI95", HOME).unit_price_kop_per_l == 5000
    ev, _ = fuel(impl, tariff=Tariff.REGIONAL,
                 discounts=tuple(r for r in DISCOUNTS if r.tariff is not Tariff.REGIONAL))
    assert decide(ev, NOW, "AI95", HOME).unit_price_kop_per_l == 5000


def test_percent_discount_rounds_half_up(impl):
    rows = (DiscountRule(Tariff.TRANSIT, "DT", DiscountWhere.NETWORK, DiscountKind.PERCENT_BP, 1),
            DiscountRule(Tariff.TRANSIT, "AI92", DiscountWhere.NETWORK, DiscountKind.PERCENT_BP, 1))
    ev, _ = fuel(impl, tariff=Tariff.TRANSIT, discounts=rows)
    # 0.01 % of 5050 = 0.505 -> 1 kop; of 5399 = 0.5399 -> 1 kop; of 5200 (no row) -> none
    assert decide(ev, NOW, "DT", HOME).unit_price_kop_per_l == 5049
    assert decide(ev, NOW, "AI92", HOME).unit_price_kop_per_l == 5398


def test_discount_larger_than_the_price_makes_it_free(impl):
    rows = (DiscountRule(Tariff.TRANSIT, "AI95", DiscountWhere.NETWORK, DiscountKind.KOP_PER_L, 6000),)
    ev, _ = fuel(impl, discounts=rows, balance_kop=0)
    # price 0: money binds nothing, the station maximum does
    assert_decision(decide(ev, NOW), Reason.OK, 100_000, 0)


def test_limits_and_balance_count_the_discounted_price(impl):
    ev, _ = fuel(impl, tariff=Tariff.REGIONAL, discounts=DISCOUNTS,
                 limits=(Limit(1, KOP, Period.DAY, 100_000),))
    # 1,000 RUB at 48.00: 20,833 ml cost 999.984 -> 999.98; 20,834 ml cost 1,000.032 -> 1,000.03
    assert_decision(decide(ev, NOW), Reason.LIMIT, 20_833, 99_998, 1)
    r = fuel_req(NOW, volume=10_000)
    c = ev.complete(r, ev.authorize(r), 10_000)
    # 10 l x 48.00 = 480 RUB
    assert (c.amount_kop, c.balance_after_kop) == (48_000, 10_000_000 - 48_000)
    assert c.counters_after == ((1, LimitCounter(48_000, TODAY)),)


# ------------------------------------------------------------------ completion

def test_completion_amount_counters_balance_and_release(impl):
    limits = (Limit(1, KOP, Period.DAY, 300_000), Limit(2, ML, Period.MONTH, 200_000),
              Limit(3, ML, Period.TRANSACTION, 45_000))
    ev, _ = fuel(impl, limits=limits, spent={2: LimitCounter(50_000, day_no(date(2024, 3, 1)))})
    r = fuel_req(NOW, "DT", volume=40_000)
    d = ev.authorize(r)
    # 40 l x 50.50 = 2,020 RUB; limits leave 3,000 RUB, 150 l and 45 l
    assert_decision(d, Reason.OK, 40_000, 202_000)
    c = ev.complete(r, d, 33_333)
    # 33,333 ml x 50.50 = 168,331.65 kop -> 168,332
    assert (c.volume_ml, c.amount_kop) == (33_333, 168_332)
    assert c.counters_after == ((1, LimitCounter(168_332, TODAY)),
                                (2, LimitCounter(50_000 + 33_333, day_no(date(2024, 3, 1)))))
    assert c.balance_after_kop == 10_000_000 - 168_332
    # released: 40,000 - 33,333 ml and 202,000 - 168,332 kop
    assert (c.released_volume_ml, c.released_amount_kop) == (6_667, 33_668)
    assert ev.balance_kop(1) == 9_831_668
    assert ev.counter(CARD, 1) == LimitCounter(168_332, TODAY)
    assert ev.counter(CARD, 2) == LimitCounter(83_333, day_no(date(2024, 3, 1)))
    assert ev.counter(CARD, 3) is None
    # day limit left 131,668 kop at 50.50: 26,072 ml cost 131,663.6 -> 131,664;
    # 26,073 ml cost 131,668.65 -> 131,669 (too much). Month: 116,667 ml left.
    assert_decision(decide(ev, NOW, "DT"), Reason.LIMIT, 26_072, 131_664, 1)


def test_completion_of_the_whole_authorization_releases_nothing(impl):
    ev, _ = fuel(impl, balance_kop=100_000)
    r = fuel_req(NOW)
    d = ev.authorize(r)
    assert_decision(d, Reason.BALANCE, 20_000, 100_000)
    c = ev.complete(r, d, 20_000)
    assert (c.amount_kop, c.balance_after_kop, c.released_volume_ml, c.released_amount_kop) == (100_000, 0, 0, 0)
    assert_declined(decide(ev, NOW), Reason.BALANCE_EXHAUSTED)


def test_completion_of_nothing_delivered_releases_everything(impl):
    ev, _ = fuel(impl, limits=(Limit(1, KOP, Period.DAY, 100_000),))
    r = fuel_req(NOW, volume=10_000)
    d = ev.authorize(r)
    c = ev.complete(r, d, 0)
    assert (c.amount_kop, c.balance_after_kop, c.released_volume_ml, c.released_amount_kop) == \
        (0, 10_000_000, 10_000, 50_000)
    assert c.counters_after == ((1, LimitCounter(0, TODAY)),)
    assert_decision(decide(ev, NOW), Reason.LIMIT, 20_000, 100_000, 1)


def test_completions_add_up_in_the_period(impl):
    ev, _ = fuel(impl, limits=(Limit(2, ML, Period.DAY, 50_000),))
    for n, delivered in enumerate((20_000, 20_000), 1):
        r = fuel_req(NOW + n)
        ev.complete(r, ev.authorize(r), delivered)
    assert ev.counter(CARD, 2) == LimitCounter(40_000, TODAY)
    assert_decision(decide(ev, NOW + 10), Reason.LIMIT, 10_000, 50_000, 2)
    assert ev.balance_kop(1) == 10_000_000 - 2 * 100_000


def test_completion_counts_in_the_authorization_period(impl):
    ev, _ = fuel(impl, limits=(Limit(2, ML, Period.DAY, 50_000),))
    r = fuel_req(ts(2024, 3, 13, 23, 59, 50), volume=20_000)
    d = ev.authorize(r)
    # the nozzle is hung up after midnight; the delivery belongs to the authorization's day
    c = ev.complete(r, d, 20_000)
    assert c.counters_after == ((2, LimitCounter(20_000, day_no(date(2024, 3, 13)))),)
    assert_decision(decide(ev, ts(2024, 3, 13, 23, 59, 55)), Reason.LIMIT, 30_000, 150_000, 2)
    assert_decision(decide(ev, ts(2024, 3, 14, 0, 0, 10)), Reason.LIMIT, 50_000, 250_000, 2)


def test_completion_uses_the_authorized_unit_price(impl):
    ev, _ = fuel(impl, tariff=Tariff.TRANSIT_OPTIMAL_PLUS, discounts=DISCOUNTS)
    r = fuel_req(NOW, "AI95", AWAY, volume=10_000)
    d = ev.authorize(r)
    # 52.00 - 2.50 = 49.50 at AWAY; 7,777 ml x 49.50 = 38,496.15 kop -> 38,496
    c = ev.complete(r, d, 7_777)
    assert (d.unit_price_kop_per_l, c.amount_kop) == (4950, 38_496)
    assert c.released_amount_kop == 49_500 - 38_496


@pytest.mark.parametrize("delivered", [20_001, -1, 1.0, 20_000.0, True, None, "20000"])
def test_completing_other_than_0_to_the_authorized_volume_is_a_request_error(impl, delivered):
    ev, model = fuel(impl, limits=(Limit(1, KOP, Period.DAY, 1_000_000),))
    first = fuel_req(NOW - 60, volume=1_000)
    ev.complete(first, ev.authorize(first), 1_000)  # so there is a counter to keep
    r = fuel_req(NOW, volume=20_000)
    d = ev.authorize(r)
    before = fuel_snapshot(ev, model)
    assert before == ((10_000_000 - 5_000,), (LimitCounter(5_000, TODAY),))
    with pytest.raises(RequestError):
        ev.complete(r, d, delivered)
    assert fuel_snapshot(ev, model) == before


@pytest.mark.parametrize("reason", [Reason.LIMIT_EXHAUSTED, Reason.BALANCE_EXHAUSTED, Reason.STOP_LIST,
                                    Reason.PRESET_TOO_SMALL])
def test_completing_a_declined_authorization_is_a_request_error(impl, reason):
    ev, model = fuel(impl)
    before = fuel_snapshot(ev, model)
    with pytest.raises(RequestError):
        ev.complete(fuel_req(NOW), FuelDecision(reason, 0, 0, 0, 0), 0)
    assert fuel_snapshot(ev, model) == before


# ------------------------------------------------------------------ malformed requests

MAX_VOLUME_ML = 10**9
MAX_AMOUNT_KOP = 10**12
MAX_UTC_S = 7_258_118_400  # 2200-01-01


@pytest.mark.parametrize("req", [
    FuelRequest("7005830000000099", HOME, "AI95", NOW),     # unknown card
    FuelRequest(7005830000000001, HOME, "AI95", NOW),       # card number not a string
    FuelRequest(CARD, 99, "AI95", NOW),                     # unknown station
    FuelRequest(CARD, HOME, "AI98", NOW),                   # unknown product
    FuelRequest(CARD, HOME, "ai95", NOW),
    FuelRequest(CARD, HOME, "AI95", NOW, 10_000, 50_000),  # both presets
    FuelRequest(CARD, HOME, "AI95", NOW, 0),
    FuelRequest(CARD, HOME, "AI95", NOW, -1),
    FuelRequest(CARD, HOME, "AI95", NOW, MAX_VOLUME_ML + 1),
    FuelRequest(CARD, HOME, "AI95", NOW, 2**63),
    FuelRequest(CARD, HOME, "AI95", NOW, 1.5),
    FuelRequest(CARD, HOME, "AI95", NOW, True),
    FuelRequest(CARD, HOME, "AI95", NOW, None, 0),
    FuelRequest(CARD, HOME, "AI95", NOW, None, -100),
    FuelRequest(CARD, HOME, "AI95", NOW, None, MAX_AMOUNT_KOP + 1),
    FuelRequest(CARD, HOME, "AI95", NOW, None, 2**64),
    FuelRequest(CARD, HOME, "AI95", NOW, None, "100"),
    FuelRequest(CARD, HOME, "AI95", -1),
    FuelRequest(CARD, HOME, "AI95", MAX_UTC_S + 1),
    FuelRequest(CARD, HOME, "AI95", float(NOW)),
    FuelRequest(CARD, HOME, "AI95", None),
], ids=lambda r: f"{r.card_no[-4:] if isinstance(r.card_no, str) else r.card_no}-{r.station_id}-{r.product}"
                 f"-{r.now_utc_s!r}-{r.preset_volume_ml!r}-{r.preset_amount_kop!r}")
def test_malformed_request_is_a_request_error_and_changes_nothing(impl, req):
    ev, model = fuel(impl, limits=(Limit(1, KOP, Period.DAY, 1_000_000), Limit(2, ML, Period.WEEK, 500_000)))
    ok = fuel_req(NOW - 60, volume=10_000)
    good = ev.authorize(ok)
    ev.complete(ok, good, 4_000)
    before = fuel_snapshot(ev, model)
    assert before == ((10_000_000 - 20_000,),
                      (LimitCounter(20_000, TODAY), LimitCounter(4_000, day_no(date(2024, 3, 11)))))
    with pytest.raises(RequestError):
        ev.authorize(req)
    with pytest.raises(RequestError):
        ev.complete(req, good, 1_000)
    assert fuel_snapshot(ev, model) == before


def test_a_request_of_the_wrong_type_is_a_request_error(impl):
    ev, model = fuel(impl)
    before = fuel_snapshot(ev, model)
    for bad in (None, (CARD, HOME, "AI95", NOW), {"card_no": CARD}):
        with pytest.raises(RequestError):
            ev.authorize(bad)
    assert fuel_snapshot(ev, model) == before


def test_largest_accepted_values_are_not_errors(impl):
    ev, _ = fuel(impl, balance_kop=0)
    assert_declined(decide(ev, MAX_UTC_S, volume=MAX_VOLUME_ML), Reason.CARD_EXPIRED)
    ev, _ = fuel(impl, expires_on=date(2200, 1, 1))
    # 10^9 ml (1,000,000 l) x 50.00 = 50,000,000 RUB; the 100,000 RUB balance buys 2,000 l
    assert_decision(decide(ev, MAX_UTC_S, volume=MAX_VOLUME_ML), Reason.BALANCE, 2_000_000, 10_000_000)
    assert_decision(decide(ev, 0, amount=MAX_AMOUNT_KOP), Reason.BALANCE, 2_000_000, 10_000_000)


@pytest.mark.parametrize("station, product", [
    ([HOME], "AI95"),            # unhashable station id
    ({"id": HOME}, "AI95"),
    (HOME, ["AI95"]),            # unhashable product code
    (HOME, {"AI95"}),
], ids=["station-list", "station-dict", "product-list", "product-set"])
def test_ids_of_the_wrong_type_are_request_errors(impl, station, product):
    # authz.errors: one type, RequestError, for every malformed request (not a TypeError)
    ev, model = fuel(impl, limits=(Limit(1, KOP, Period.DAY, 1_000_000),))
    before = fuel_snapshot(ev, model)
    req = FuelRequest(CARD, station, product, NOW)
    with pytest.raises(RequestError):
        ev.authorize(req)
    assert fuel_snapshot(ev, model) == before


# ------------------------------------------------------------------ the fleet controls (issue 11)

PUR = LimitUnit.PURCHASES
ALERT = OnBreach.ALERT
WEEKDAYS = frozenset(range(5))
#: Friday 15 March 2024 and the next days, Moscow time.
FRI, SAT = (2024, 3, 15), (2024, 3, 16)


def test_a_diesel_only_card_is_refused_ai95_with_a_product_reason(impl):
    ev, _ = fuel(impl, products=frozenset({"DT"}))
    assert_declined(decide(ev, NOW, "AI95"), Reason.PRODUCT_NOT_ALLOWED)
    assert_declined(decide(ev, NOW, "AI92"), Reason.PRODUCT_NOT_ALLOWED)
    # 100 l x 50.50 = 5,050 RUB
    d = decide(ev, NOW, "DT")
    assert_decision(d, Reason.OK, 100_000, 505_000)
    assert d.exceptions == ()


def test_the_product_group_check_comes_before_the_product_list_and_declines_even_when_alerting(impl):
    ev, _ = fuel(impl, groups={ProductGroup.FUEL}, products=frozenset({"DT"}), on_breach=ALERT)
    assert_declined(decide(ev, NOW, "COFFEE"), Reason.PRODUCT_NOT_ALLOWED)
    assert decide(ev, NOW, "COFFEE").exceptions == ()


def test_a_product_the_station_does_not_sell_is_not_sold_before_the_product_list_is_read(impl):
    ev, _ = fuel(impl, products=frozenset({"AI95"}))
    assert_declined(decide(ev, NOW, "DT", NO_DT), Reason.PRODUCT_NOT_SOLD)


def test_an_alerting_product_list_approves_and_raises_an_exception(impl):
    ev, _ = fuel(impl, products=frozenset({"DT"}), on_breach=ALERT)
    d = decide(ev, NOW, "AI95", volume=30_000)
    assert_decision(d, Reason.OK, 30_000, 150_000)
    assert d.exceptions == (RuleException(Reason.PRODUCT_NOT_ALLOWED),)


@pytest.mark.parametrize("station, allowed", [(HOME, True), (CHOSEN_A, True), (AWAY, False)])
def test_home_region_only_cards_buy_in_the_contract_region(impl, station, allowed):
    ev, _ = fuel(impl, station_scope=StationScope.HOME_REGION)
    d = decide(ev, NOW, station=station)
    if allowed:
        assert d.approved and d.exceptions == ()
    else:
        assert_declined(d, Reason.STATION_NOT_ALLOWED)


@pytest.mark.parametrize("station, allowed", [(CHOSEN_A, True), (CHOSEN_B, True), (CHOSEN_C, False), (HOME, False),
                                              (AWAY, False)])
def test_listed_station_cards_buy_only_at_those(impl, station, allowed):
    ev, _ = fuel(impl, station_scope=StationScope.LISTED, station_ids=frozenset({CHOSEN_A, CHOSEN_B}))
    d = decide(ev, NOW, station=station)
    if allowed:
        assert d.approved
    else:
        assert_declined(d, Reason.STATION_NOT_ALLOWED)


def test_an_alerting_station_restriction_approves_with_an_exception(impl):
    ev, _ = fuel(impl, station_scope=StationScope.HOME_REGION, on_breach=ALERT)
    d = decide(ev, NOW, station=AWAY, volume=10_000)
    # the away station's list price: 10 l x 52.00 = 520 RUB
    assert_decision(d, Reason.OK, 10_000, 52_000)
    assert d.exceptions == (RuleException(Reason.STATION_NOT_ALLOWED),)


@pytest.mark.parametrize("when, allowed", [
    ((2024, 3, 13, 12), True),          # Wednesday noon
    ((2024, 3, 13, 8), True),           # the window's first minute
    ((2024, 3, 13, 7, 59), False),
    ((2024, 3, 13, 19, 59), True),      # its last minute
    ((2024, 3, 13, 20), False),         # the end is exclusive
    ((*SAT, 12), False),                # Saturday
])
def test_a_weekday_day_time_window(impl, when, allowed):
    ev, _ = fuel(impl, windows=(TimeWindow(WEEKDAYS, 8 * 60, 20 * 60),))
    d = decide(ev, ts(*when))
    if allowed:
        assert d.approved
    else:
        assert_declined(d, Reason.OUTSIDE_TIME_WINDOW)


@pytest.mark.parametrize("when, allowed", [
    ((*FRI, 22), True),                 # Friday 22:00 opens it
    ((*FRI, 21, 59), False),
    ((*FRI, 23, 59), True),
    ((*SAT, 0), True),                  # past midnight: still Friday's night
    ((*SAT, 5, 59), True),
    ((*SAT, 6), False),                 # closes Saturday 06:00
    ((*SAT, 22, 30), False),            # Saturday is not one of its days
    ((2024, 3, 14, 23), False),         # Thursday night either
    ((*FRI, 3), False),                 # Friday 03:00 belongs to Thursday's night
])
def test_a_window_crossing_midnight_runs_into_the_next_morning(impl, when, allowed):
    ev, _ = fuel(impl, windows=(TimeWindow(frozenset({4}), 22 * 60, 6 * 60),))
    d = decide(ev, ts(*when))
    assert d.approved is allowed
    if not allowed:
        assert d.reason is Reason.OUTSIDE_TIME_WINDOW


def test_a_window_ending_at_midnight_and_any_of_several_windows(impl):
    ev, _ = fuel(impl, windows=(TimeWindow(frozenset({5}), 23 * 60, 1440), TimeWindow(frozenset({6}), 0, 60)))
    assert decide(ev, ts(*SAT, 23, 30)).approved
    assert decide(ev, ts(2024, 3, 17, 0, 30)).approved
    assert decide(ev, ts(2024, 3, 17, 1)).reason is Reason.OUTSIDE_TIME_WINDOW
    assert decide(ev, ts(*SAT, 22, 59)).reason is Reason.OUTSIDE_TIME_WINDOW


def test_time_windows_are_read_in_the_contract_zone(impl):
    # Wednesday 23:00 in Moscow is Thursday 06:00 in Vladivostok
    ev, _ = fuel(impl, tz=VVO, windows=(TimeWindow(frozenset({3}), 6 * 60, 7 * 60),))
    assert decide(ev, ts(2024, 3, 13, 23)).approved
    assert decide(ev, ts(2024, 3, 13, 22, 59)).reason is Reason.OUTSIDE_TIME_WINDOW


def test_time_windows_follow_daylight_saving_time(impl):
    # Berlin leaves UTC+1 for UTC+2 on Sunday 31 March 2024 at 02:00: 08:00 local is 06:00 UTC after it
    ev, _ = fuel(impl, tz="Europe/Berlin", windows=(TimeWindow(frozenset(range(7)), 8 * 60, 9 * 60),))
    assert decide(ev, ts(2024, 3, 31, 8, tz="Europe/Berlin")).approved
    assert decide(ev, ts(2024, 3, 30, 8, tz="Europe/Berlin")).approved
    assert decide(ev, ts(2024, 3, 31, 7, 59, tz="Europe/Berlin")).reason is Reason.OUTSIDE_TIME_WINDOW


def test_a_card_with_every_control_broken_declines_with_the_first_in_checking_order(impl):
    ev, _ = fuel(impl, products=frozenset({"DT"}), station_scope=StationScope.HOME_REGION,
                 windows=(TimeWindow(frozenset({6}), 0, 60),))
    assert_declined(decide(ev, NOW, "AI95", AWAY), Reason.PRODUCT_NOT_ALLOWED)
    assert_declined(decide(ev, NOW, "DT", AWAY), Reason.STATION_NOT_ALLOWED)
    assert_declined(decide(ev, NOW, "DT", HOME), Reason.OUTSIDE_TIME_WINDOW)


def test_exceptions_come_in_checking_order_then_limits_in_card_order(impl):
    limits = (Limit(7, ML, Period.DAY, 20_000, on_breach=ALERT), Limit(3, KOP, Period.DAY, 0, on_breach=ALERT))
    ev, _ = fuel(impl, limits=limits, products=frozenset({"DT"}), station_scope=StationScope.HOME_REGION,
                 windows=(TimeWindow(frozenset({6}), 0, 60),), on_breach=ALERT)
    d = decide(ev, NOW, "AI95", AWAY)
    assert_decision(d, Reason.OK, 100_000, 520_000)
    assert d.exceptions == (RuleException(Reason.PRODUCT_NOT_ALLOWED), RuleException(Reason.STATION_NOT_ALLOWED),
                            RuleException(Reason.OUTSIDE_TIME_WINDOW), RuleException(Reason.LIMIT, 7),
                            RuleException(Reason.LIMIT_EXHAUSTED, 3))


def test_an_alerting_limit_never_bounds_the_answer(impl):
    ev, _ = fuel(impl, limits=(Limit(1, ML, Period.DAY, 20_000, on_breach=ALERT),),
                 spent={1: LimitCounter(5_000, TODAY)})
    d = decide(ev, NOW)
    assert_decision(d, Reason.OK, 100_000, 500_000)  # not 15 l
    assert d.exceptions == (RuleException(Reason.LIMIT, 1),)
    # an answer within it raises nothing: 15 l exactly is what is left
    assert decide(ev, NOW, volume=15_000).exceptions == ()
    assert decide(ev, NOW, volume=15_001).exceptions == (RuleException(Reason.LIMIT, 1),)


def test_an_exhausted_alerting_limit_raises_limit_exhausted(impl):
    ev, _ = fuel(impl, limits=(Limit(1, KOP, Period.MONTH, 100_000, on_breach=ALERT),),
                 spent={1: LimitCounter(100_000, day_no(date(2024, 3, 1)))})
    d = decide(ev, NOW, volume=1_000)
    assert_decision(d, Reason.OK, 1_000, 5_000)
    assert d.exceptions == (RuleException(Reason.LIMIT_EXHAUSTED, 1),)


def test_an_alerting_limit_beside_a_declining_one(impl):
    # the declining 30 l binds; the alerting 20 l is broken by that answer
    limits = (Limit(1, ML, Period.DAY, 20_000, on_breach=ALERT), Limit(2, ML, Period.DAY, 30_000))
    ev, _ = fuel(impl, limits=limits)
    d = decide(ev, NOW)
    assert_decision(d, Reason.LIMIT, 30_000, 150_000, 2)
    assert d.exceptions == (RuleException(Reason.LIMIT, 1),)


def test_a_decline_carries_no_exceptions(impl):
    ev, _ = fuel(impl, products=frozenset({"DT"}), on_breach=ALERT, balance_kop=0,
                 limits=(Limit(1, ML, Period.DAY, 0, on_breach=ALERT),))
    d = decide(ev, NOW, "AI95")
    assert_declined(d, Reason.BALANCE_EXHAUSTED)
    assert d.exceptions == ()


def test_a_purchase_count_reached_leaves_nothing_and_names_its_limit(impl):
    ev, _ = fuel(impl, limits=(Limit(9, PUR, Period.DAY, 2),), spent={9: LimitCounter(2, TODAY)})
    d = decide(ev, NOW)
    assert_declined(d, Reason.LIMIT_EXHAUSTED)
    assert d.binding_limit_id == 9


def test_a_purchase_count_not_reached_does_not_bound_the_volume(impl):
    ev, _ = fuel(impl, limits=(Limit(9, PUR, Period.DAY, 2),), spent={9: LimitCounter(1, TODAY)})
    assert_decision(decide(ev, NOW), Reason.OK, 100_000, 500_000)


def test_a_purchase_count_rolls_over_with_its_period(impl):
    ev, _ = fuel(impl, limits=(Limit(9, PUR, Period.DAY, 2),), spent={9: LimitCounter(5, TODAY - 1)})
    assert decide(ev, NOW).approved


def test_a_completion_counts_one_purchase_and_nothing_delivered_counts_none(impl):
    ev, _ = fuel(impl, limits=(Limit(9, PUR, Period.WEEK, 2), Limit(4, PUR, Period.DAY, 5, on_breach=ALERT)))
    req = fuel_req(NOW, volume=10_000)
    d = ev.authorize(req)
    done = ev.complete(req, d, 0)
    assert done.counters_after == ()
    assert ev.counter(CARD, 9) is None
    ev.complete(req, ev.authorize(req), 10_000)
    done = ev.complete(req, ev.authorize(req), 1)
    monday = day_no(date(2024, 3, 11))
    assert done.counters_after == ((9, LimitCounter(2, monday)), (4, LimitCounter(2, TODAY)))
    d = ev.authorize(req)
    assert_declined(d, Reason.LIMIT_EXHAUSTED)
    assert d.binding_limit_id == 9


def test_an_alerting_purchase_count_reached_raises_limit_exhausted(impl):
    ev, _ = fuel(impl, limits=(Limit(9, PUR, Period.DAY, 1, on_breach=ALERT),), spent={9: LimitCounter(1, TODAY)})
    d = decide(ev, NOW)
    assert_decision(d, Reason.OK, 100_000, 500_000)
    assert d.exceptions == (RuleException(Reason.LIMIT_EXHAUSTED, 9),)


@pytest.mark.parametrize("period, first_day", [(Period.QUARTER, date(2024, 1, 1)), (Period.YEAR, date(2024, 1, 1))])
def test_quarter_and_year_counters_count_since_their_calendar_start(impl, period, first_day):
    ev, _ = fuel(impl, limits=(Limit(1, ML, period, 50_000),), spent={1: LimitCounter(20_000, day_no(first_day))})
    assert_decision(decide(ev, NOW), Reason.LIMIT, 30_000, 150_000, 1)


BERLIN = "Europe/Berlin"


@pytest.mark.parametrize("period, last, first, start", [
    # Q1 -> Q2: Berlin is on summer time (UTC+2) since 31 March, so the quarter turns at 22:00 UTC
    (Period.QUARTER, (2024, 3, 31, 23, 59), (2024, 4, 1, 0, 0), date(2024, 1, 1)),
    # Q3 -> Q4 on summer time too; Q4 -> next year on winter time (UTC+1)
    (Period.QUARTER, (2024, 9, 30, 23, 59), (2024, 10, 1, 0, 0), date(2024, 7, 1)),
    (Period.YEAR, (2024, 12, 31, 23, 59), (2025, 1, 1, 0, 0), date(2024, 1, 1)),
])
def test_quarters_and_years_roll_over_at_local_midnight_in_a_zone_with_dst(impl, period, last, first, start):
    ev, _ = fuel(impl, tz=BERLIN, limits=(Limit(1, ML, period, 50_000),),
                 spent={1: LimitCounter(50_000, day_no(start))})
    assert_declined(decide(ev, ts(*last, tz=BERLIN)), Reason.LIMIT_EXHAUSTED)
    assert_decision(decide(ev, ts(*first, tz=BERLIN)), Reason.LIMIT, 50_000, 250_000, 1)
    # a completion in the new period starts its counter on the period's first local day
    req = fuel_req(ts(*first, tz=BERLIN), volume=1_000)
    done = ev.complete(req, ev.authorize(req), 1_000)
    assert done.counters_after == ((1, LimitCounter(1_000, day_no(date(*first[:3])))),)


def test_a_batch_counts_each_decision_exceptions(impl):
    ev, model = fuel(impl, products=frozenset({"DT"}), station_scope=StationScope.HOME_REGION, on_breach=ALERT)
    batch = FuelBatch.from_requests(model, [fuel_req(NOW, "AI95", AWAY), fuel_req(NOW, "DT"), fuel_req(NOW, "AI95")])
    out = ev.authorize_batch(batch)
    assert list(out.exceptions) == [2, 0, 1]
    assert list(out.reason) == [Reason.OK] * 3


@pytest.mark.parametrize("controls, limits, message", [
    ({"products": frozenset()}, (), "empty product list"),
    ({"products": frozenset({"GOLD"})}, (), "does not sell"),
    ({"groups": {ProductGroup.FUEL}, "products": frozenset({"COFFEE"})}, (), "product groups exclude"),
    ({"windows": (TimeWindow(WEEKDAYS, 600, 600),)}, (), "zero length"),
    ({"windows": (TimeWindow(frozenset(), 0, 60),)}, (), "time window with days"),
    ({"station_scope": StationScope.LISTED}, (), "lists none"),
    ({"station_scope": StationScope.LISTED, "station_ids": frozenset({99})}, (), "unknown station 99"),
    ({}, (Limit(1, PUR, Period.DAY, -1),), "amount out of range"),
    ({}, (Limit(1, PUR, Period.TRANSACTION, 3),), "purchases per transaction"),
])
def test_rules_that_cannot_be_satisfied_are_refused_naming_the_rule(impl, controls, limits, message):
    with pytest.raises(ModelError, match=message):
        fuel(impl, limits=limits, **controls)
    # and through the compact replica's columns too (the native evaluator's own checks)
    if impl == "native":
        good = fuel_model()
        cols = FuelColumns.from_model(good)
        bad_card = card(limits=limits, **{k: v for k, v in controls.items() if k != "groups"},
                        groups=controls.get("groups", good.cards[0].groups))
        ev = native.NativeFuelEvaluator(cols)
        with pytest.raises(ModelError, match=message):
            ev.apply(FuelUpdate(cards=((bad_card, ()),)))
        assert ev.card_at(0) == good.cards[0]  # nothing changed


def test_card_updates_carry_the_controls(impl):
    ev, _ = fuel(impl)
    ev.apply(FuelUpdate(cards=((card(products=frozenset({"DT"}), station_scope=StationScope.LISTED,
                                     station_ids=frozenset({HOME})), ()),)))
    assert_declined(decide(ev, NOW, "AI95"), Reason.PRODUCT_NOT_ALLOWED)
    assert_declined(decide(ev, NOW, "DT", AWAY), Reason.STATION_NOT_ALLOWED)
    assert decide(ev, NOW, "DT").approved
    assert ev.model.card(CARD).products == frozenset({"DT"})


def test_deleting_a_station_a_card_lists_is_refused(impl):
    ev, _ = fuel(impl, station_scope=StationScope.LISTED, station_ids=frozenset({CHOSEN_C}))
    with pytest.raises(ModelError, match=f"unknown station {CHOSEN_C}"):
        ev.apply(FuelUpdate(delete_stations=(CHOSEN_C,)))
    assert decide(ev, NOW, station=CHOSEN_C).approved


def test_a_card_with_many_alerting_limits_lists_every_exception(impl):
    # 70 alerting day limits of 1 litre each (more than the native call's stack room of 64)
    limits = tuple(Limit(i, ML, Period.DAY, 1_000, on_breach=ALERT) for i in range(1, 71))
    ev, model = fuel(impl, limits=limits, products=frozenset({"DT"}), on_breach=ALERT)
    d = decide(ev, NOW, volume=2_000)
    assert_decision(d, Reason.OK, 2_000, 10_000)
    assert d.exceptions == (RuleException(Reason.PRODUCT_NOT_ALLOWED),) + tuple(
        RuleException(Reason.LIMIT, i) for i in range(1, 71))
    out = ev.authorize_batch(FuelBatch.from_requests(model, [fuel_req(NOW, volume=2_000)]))
    assert list(out.exceptions) == [71]
