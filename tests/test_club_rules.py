"""The club-card rules of DOMAIN.md (bonus points, the card as a payment card), on both evaluators.

Every expected number is computed by hand in the test (the comment says how): 1 point =
1 ruble = 100 kop; accrual = money-paid part of the accruing lines x rate, rounded down to
whole points; the redemption cap = 30 % of the redeemable lines, rounded down to whole points.
"""

from __future__ import annotations

import pytest

import native
from authz.club_model import (AccrualRate, ClubCardKind, ClubPayment, ClubReturn, ClubRules,
                              ClubSale, ClubStatus, ClubTopUp, KindCaps, PointLot, SaleLine,
                              default_categories)
from authz.errors import RequestError
from authz.reasons import Reason
from tests.evaluator_fixtures import (ACCOUNT, CLUB_CARD, CLUB_CARD_NEW, DAY_S, UTC, club_model,
                                      club_snapshot, month_no, sale, ts)

#: Wednesday 13 March 2024, noon in Moscow (09:00 UTC).
T0 = ts(2024, 3, 13, 12)
#: T0 + 3 calendar months, same UTC time: 13 June 2024 09:00 UTC.
T0_PLUS_3M = ts(2024, 6, 13, 12)
IDENTIFIED, UNIDENTIFIED = ClubCardKind.IDENTIFIED, ClubCardKind.UNIDENTIFIED


def club(impl, **kw):
    model = club_model(**kw)
    return native.club_evaluator(model, impl), model


def ripe(lot_id: int, points: int, expires_at_s: int = T0 + 60 * DAY_S) -> PointLot:
    """A lot that matured ten days before T0."""
    return PointLot(lot_id, points, T0 - 10 * DAY_S, expires_at_s)


def pay(points: int = 0, card_kop: int = 0, money_kop: int = 0) -> ClubPayment:
    return ClubPayment(points, card_kop, money_kop)


def top_up(ev, amount_kop: int, now: int = T0, card_no: str = CLUB_CARD):
    return ev.top_up(ClubTopUp(card_no, amount_kop, now))


def refund(ev, *, sale_id: int, total: int, returned: int, accrued: int = 0, redeemed: int = 0,
           card_kop: int = 0, now: int = T0 + DAY_S, return_id: int = 900, card_no: str = CLUB_CARD):
    return ev.return_sale(ClubReturn(card_no, return_id, now, sale_id, total, accrued, redeemed, card_kop,
                                     returned))


def lots(ev) -> list[tuple[int, int]]:
    """(lot id, points) of the account's lots, oldest first."""
    return [(lot.lot_id, lot.points) for lot in ev.account(ACCOUNT).lots]


# ------------------------------------------------------------------ accrual

def test_accrual_is_10_percent_of_receipt(impl):
    ev, _ = club(impl)
    s = sale(T0, ("shoes", 100_000))
    q = ev.quote(s)
    # 10 % of 1,000 RUB = 100 points
    assert (q.reason, q.total_kop, q.accrual_points) == (Reason.OK, 100_000, 100)
    c = ev.commit(s, pay(money_kop=100_000), 10)
    assert (c.reason, c.accrued_points, c.redeemed_points, c.lots_used) == (Reason.OK, 100, 0, ())
    assert c.new_lot == PointLot(10, 100, T0 + 3 * DAY_S, T0_PLUS_3M)
    assert lots(ev) == [(10, 100)]


def test_accrual_rounds_down_to_whole_points(impl):
    ev, _ = club(impl)
    # 10 % of 1,234.56 RUB = 123.456 points -> 123
    assert ev.quote(sale(T0, ("shoes", 123_456))).accrual_points == 123
    # 10 % of 9.99 RUB = 0.999 point -> 0, and no lot is made
    c = ev.commit(sale(T0, ("clothes", 999)), pay(money_kop=999), 11)
    assert (c.reason, c.accrued_points, c.new_lot) == (Reason.OK, 0, None)
    assert lots(ev) == []


@pytest.mark.parametrize("category", ["super_price", "hygiene", "food"])
def test_no_accrual_on_super_price_hygiene_food(impl, category):
    ev, _ = club(impl)
    s = sale(T0, (category, 100_000))
    assert ev.quote(s).accrual_points == 0
    c = ev.commit(s, pay(money_kop=100_000), 12)
    assert (c.reason, c.accrued_points, c.new_lot) == (Reason.OK, 0, None)


def test_accrual_on_a_mixed_receipt_counts_only_accruing_lines(impl):
    ev, _ = club(impl)
    s = sale(T0, ("shoes", 60_000), ("super_price", 50_000), ("hygiene", 30_000), ("food", 20_000),
             ("toys", 40_000))
    # 10 % of 600 + 400 RUB = 100 points; the 1,000 RUB of excluded lines earn nothing
    q = ev.quote(s)
    assert (q.total_kop, q.accrual_points) == (200_000, 100)


@pytest.mark.parametrize("category", ["baby_food", "advertised", "shoes", "clothes", "accessories", "toys"])
def test_baby_food_and_advertised_goods_still_accrue(impl, category):
    ev, _ = club(impl)
    assert ev.quote(sale(T0, (category, 50_000))).accrual_points == 50


def test_accrual_on_money_paid_part_only(impl):
    ev, _ = club(impl, lots=(ripe(1, 1_000),))
    s = sale(T0, ("shoes", 100_000))
    q = ev.quote(s)
    # at most 300 points; then 700 RUB is paid with money: 70 points
    assert (q.max_redeem_points, q.accrual_points, q.accrual_points_at_max_redeem) == (300, 100, 70)
    c = ev.commit(s, pay(points=300, money_kop=70_000), 13)
    assert (c.reason, c.accrued_points, c.redeemed_points) == (Reason.OK, 70, 300)


def test_money_from_the_card_balance_earns_points(impl):
    ev, _ = club(impl, balance_kop=100_000)
    c = ev.commit(sale(T0, ("shoes", 100_000)), pay(card_kop=40_000, money_kop=60_000), 14)
    # the card balance is money: 10 % of the whole 1,000 RUB
    assert (c.reason, c.accrued_points, c.balance_after_kop) == (Reason.OK, 100, 60_000)


def test_points_paid_are_spread_over_the_redeemable_lines(impl):
    ev, _ = club(impl, lots=(ripe(1, 1_000),))
    # shoes accrue, super price does not; both redeemable. 600 points (30 % of 2,000 RUB)
    # fall half on each line: the shoes' money part is 1,000 - 300 RUB -> 70 points
    s = sale(T0, ("shoes", 100_000), ("super_price", 100_000))
    assert ev.quote(s).accrual_points_at_max_redeem == 70
    c = ev.commit(s, pay(points=600, money_kop=140_000), 15)
    assert (c.reason, c.accrued_points) == (Reason.OK, 70)


def test_points_do_not_fall_on_lines_they_may_not_pay(impl):
    ev, _ = club(impl, lots=(ripe(1, 1_000),))
    # baby food accrues but points may not pay it: all 300 points fall on the shoes,
    # money part 700 + 1,000 RUB -> 170 points
    s = sale(T0, ("shoes", 100_000), ("baby_food", 100_000))
    q = ev.quote(s)
    assert (q.max_redeem_points, q.accrual_points, q.accrual_points_at_max_redeem) == (300, 200, 170)
    c = ev.commit(s, pay(points=300, money_kop=170_000), 16)
    assert c.accrued_points == 170


def test_points_share_on_accruing_lines_rounds_up(impl):
    ev, _ = club(impl, lots=(ripe(1, 100),))
    # 30 points = 3,000 kop over redeemable 329.80 RUB; the shoes' share is
    # 3,000 x 11,000 / 32,980 = 1,000.6 kop -> 1,001 kop; money part 11,000 - 1,001 = 9,999 kop;
    # 10 % of it = 999.9 kop = 9.999 points -> 9 (rounding the share down would give 10)
    s = sale(T0, ("shoes", 11_000), ("super_price", 21_980))
    c = ev.commit(s, pay(points=30, money_kop=32_980 - 3_000), 17)
    assert (c.reason, c.accrued_points) == (Reason.OK, 9)


def test_accrual_rate_table_by_channel_and_payment_method(impl):
    rules = ClubRules(accrual_rates=(
        AccrualRate("online", "partner_card", 300),
        AccrualRate("*", "partner_card", 50),
        AccrualRate("cabinet", "*", 700),
        AccrualRate("*", "*", 1000),
    ))
    ev, _ = club(impl, rules=rules)

    def accrual(channel, method):
        return ev.quote(sale(T0, ("shoes", 200_000), channel=channel, method=method)).accrual_points

    # 2,000 RUB at: 3 % -> 60; 0.5 % -> 10; 7 % -> 140; 10 % -> 200 (first matching row wins)
    assert accrual("online", "partner_card") == 60
    assert accrual("store", "partner_card") == 10
    assert accrual("cabinet", "partner_card") == 10
    assert accrual("cabinet", "cash") == 140
    assert accrual("cabinet", "bank_card") == 140
    assert accrual("store", "cash") == 200
    assert accrual("online", "bank_card") == 200
    c = ev.commit(sale(T0, ("shoes", 200_000), channel="online", method="partner_card"),
                  pay(money_kop=200_000), 18)
    assert c.accrued_points == 60


def test_no_matching_rate_row_means_no_accrual(impl):
    ev, _ = club(impl, rules=ClubRules(accrual_rates=(AccrualRate("online", "*", 1000),)))
    assert ev.quote(sale(T0, ("shoes", 200_000), channel="store")).accrual_points == 0
    assert ev.quote(sale(T0, ("shoes", 200_000), channel="online")).accrual_points == 200


# ------------------------------------------------------------------ redemption

def test_redemption_capped_at_30_percent_of_eligible_lines(impl):
    ev, model = club(impl, lots=(ripe(1, 1_000),))
    s = sale(T0, ("shoes", 100_000), ("hygiene", 50_000), ("baby_food", 20_000), ("advertised", 30_000))
    q = ev.quote(s)
    # eligible: the shoes only, 1,000 RUB -> 300 points of the 1,000 spendable
    assert (q.total_kop, q.points_spendable, q.max_redeem_points) == (200_000, 1_000, 300)
    before = club_snapshot(ev, model)
    c = ev.commit(s, pay(points=301, money_kop=200_000 - 30_100), 19)
    assert (c.reason, c.accrued_points, c.redeemed_points, c.new_lot) == (Reason.REDEMPTION_CAP, 0, 0, None)
    assert club_snapshot(ev, model) == before
    c = ev.commit(s, pay(points=300, money_kop=170_000), 20)
    assert (c.reason, c.redeemed_points, c.lots_used) == (Reason.OK, 300, ((1, 300),))


def test_redemption_cap_rounds_down_to_whole_points(impl):
    ev, _ = club(impl, lots=(ripe(1, 1_000),))
    # 30 % of 999.99 RUB = 299.997 -> 299
    assert ev.quote(sale(T0, ("shoes", 99_999))).max_redeem_points == 299
    # 30 % of 3.33 RUB = 0.999 -> 0
    assert ev.quote(sale(T0, ("shoes", 333))).max_redeem_points == 0
    assert ev.quote(sale(T0, ("shoes", 334))).max_redeem_points == 1


@pytest.mark.parametrize("category", ["hygiene", "baby_food", "advertised"])
def test_no_redemption_on_hygiene_baby_food_advertised(impl, category):
    ev, model = club(impl, lots=(ripe(1, 1_000),))
    s = sale(T0, (category, 100_000))
    assert ev.quote(s).max_redeem_points == 0
    before = club_snapshot(ev, model)
    c = ev.commit(s, pay(points=1, money_kop=99_900), 21)
    assert c.reason is Reason.REDEMPTION_CAP
    assert club_snapshot(ev, model) == before


@pytest.mark.parametrize("category", ["super_price", "food"])
def test_points_may_pay_super_price_and_food(impl, category):
    ev, _ = club(impl, lots=(ripe(1, 1_000),))
    s = sale(T0, (category, 100_000))
    assert ev.quote(s).max_redeem_points == 300
    assert ev.commit(s, pay(points=300, money_kop=70_000), 22).reason is Reason.OK


def test_redemption_limited_by_spendable_points(impl):
    ev, model = club(impl, lots=(ripe(1, 50),))
    s = sale(T0, ("shoes", 100_000))
    q = ev.quote(s)
    # the cap is 300, the card has 50; accrual on 1,000 - 50 RUB -> 95
    assert (q.points_spendable, q.max_redeem_points, q.accrual_points_at_max_redeem) == (50, 50, 95)
    before = club_snapshot(ev, model)
    c = ev.commit(s, pay(points=51, money_kop=100_000 - 5_100), 23)
    assert c.reason is Reason.INSUFFICIENT_POINTS
    assert club_snapshot(ev, model) == before


def test_redemption_cap_is_data(impl):
    ev, _ = club(impl, rules=ClubRules(redemption_cap_bp=5000), lots=(ripe(1, 1_000),))
    assert ev.quote(sale(T0, ("shoes", 100_000))).max_redeem_points == 500


def test_points_cannot_be_cashed_out(impl):
    # points only pay goods: a sale of 0 kop can redeem nothing, and points beyond the
    # receipt are not paid out (the payment no longer adds up to the sale)
    ev, model = club(impl, lots=(ripe(1, 1_000),))
    q = ev.quote(sale(T0, ("shoes", 0)))
    assert (q.total_kop, q.max_redeem_points, q.accrual_points) == (0, 0, 0)
    before = club_snapshot(ev, model)
    with pytest.raises(RequestError):
        ev.commit(sale(T0, ("shoes", 0)), pay(points=1), 24)
    with pytest.raises(RequestError):
        ev.commit(sale(T0, ("shoes", 10_000)), pay(points=200), 25)
    assert club_snapshot(ev, model) == before


# ------------------------------------------------------------------ maturity, expiry, lot order

def test_points_mature_after_exactly_3_days(impl):
    ev, model = club(impl)
    ev.commit(sale(T0, ("shoes", 100_000)), pay(money_kop=100_000), 30)
    later = sale(T0 + 3 * DAY_S - 1, ("shoes", 100_000))
    assert ev.quote(later).points_spendable == 0
    before = club_snapshot(ev, model)
    c = ev.commit(later, pay(points=1, money_kop=99_900), 31)
    assert c.reason is Reason.INSUFFICIENT_POINTS
    assert club_snapshot(ev, model) == before
    at = sale(T0 + 3 * DAY_S, ("shoes", 100_000))
    assert ev.quote(at).points_spendable == 100
    c = ev.commit(at, pay(points=100, money_kop=90_000), 32)
    assert (c.reason, c.lots_used) == (Reason.OK, ((30, 100),))


def test_points_expire_after_3_months(impl):
    ev, model = club(impl)
    ev.commit(sale(T0, ("shoes", 100_000)), pay(money_kop=100_000), 30)
    # 13 March 09:00 UTC + 3 months = 13 June 09:00 UTC
    assert ev.quote(sale(T0_PLUS_3M - 1, ("shoes", 100_000))).points_spendable == 100
    assert ev.quote(sale(T0_PLUS_3M, ("shoes", 100_000))).points_spendable == 0
    c = ev.commit(sale(T0_PLUS_3M, ("shoes", 100_000)), pay(points=1, money_kop=99_900), 33)
    assert c.reason is Reason.INSUFFICIENT_POINTS
    c = ev.commit(sale(T0_PLUS_3M - 1, ("shoes", 100_000)), pay(points=100, money_kop=90_000), 34)
    assert (c.reason, c.lots_used) == (Reason.OK, ((30, 100),))


@pytest.mark.parametrize("accrued, expires", [
    # calendar months, the day clamped to the month's end, the time of day kept (UTC)
    (ts(2023, 11, 30, 12, tz=UTC), ts(2024, 2, 29, 12, tz=UTC)),  # leap year
    (ts(2022, 11, 30, 12, tz=UTC), ts(2023, 2, 28, 12, tz=UTC)),
    (ts(2024, 11, 29, 23, 59, 59, tz=UTC), ts(2025, 2, 28, 23, 59, 59, tz=UTC)),
    (ts(2024, 10, 31, 6, tz=UTC), ts(2025, 1, 31, 6, tz=UTC)),    # over the new year
    (ts(2024, 5, 31, 0, tz=UTC), ts(2024, 8, 31, 0, tz=UTC)),
    (ts(2024, 3, 31, 0, tz=UTC), ts(2024, 6, 30, 0, tz=UTC)),     # June has 30 days
    (ts(2024, 12, 1, 0, tz=UTC), ts(2025, 3, 1, 0, tz=UTC)),
])
def test_points_expire_after_3_calendar_months_clamped_to_month_end(impl, accrued, expires):
    ev, _ = club(impl)
    c = ev.commit(sale(accrued, ("shoes", 100_000)), pay(money_kop=100_000), 35)
    assert c.new_lot == PointLot(35, 100, accrued + 3 * DAY_S, expires)


def test_expiry_and_maturity_are_data(impl):
    ev, _ = club(impl, rules=ClubRules(maturity_s=DAY_S, expiry_months=12))
    c = ev.commit(sale(T0, ("shoes", 100_000)), pay(money_kop=100_000), 36)
    assert c.new_lot == PointLot(36, 100, T0 + DAY_S, ts(2025, 3, 13, 12))


def test_oldest_lots_spent_first(impl):
    a = ripe(1, 50, ts(2024, 4, 1))
    b = ripe(2, 80, ts(2024, 5, 1))
    c_ = ripe(3, 100, ts(2024, 6, 1))
    ev, _ = club(impl, lots=(c_, a, b))  # loaded out of order
    assert lots(ev) == [(1, 50), (2, 80), (3, 100)]
    c = ev.commit(sale(T0, ("shoes", 100_000)), pay(points=100, money_kop=90_000), 40)
    assert (c.reason, c.lots_used) == (Reason.OK, ((1, 50), (2, 50)))
    # the sale's own new lot (90 points, expiring 13 June) sorts after lot 3 (1 June)
    assert lots(ev) == [(2, 30), (3, 100), (40, 90)]
    c = ev.commit(sale(T0, ("shoes", 100_000)), pay(points=60, money_kop=94_000), 41)
    assert c.lots_used == ((2, 30), (3, 30))


def test_equal_expiry_lots_are_spent_in_id_order(impl):
    ev, _ = club(impl, lots=(ripe(7, 10), ripe(5, 10), ripe(6, 10)))
    c = ev.commit(sale(T0, ("shoes", 100_000)), pay(points=25, money_kop=97_500), 42)
    assert c.lots_used == ((5, 10), (6, 10), (7, 5))


def test_unripe_and_expired_lots_are_skipped(impl):
    expired = PointLot(1, 500, T0 - 100 * DAY_S, T0)         # expired at T0 exactly
    young = PointLot(2, 500, T0 + 1, T0 + 10 * DAY_S)        # matures one second after T0
    ev, model = club(impl, lots=(expired, young, ripe(3, 40, T0 + 20 * DAY_S)))
    q = ev.quote(sale(T0, ("shoes", 100_000)))
    assert (q.points_spendable, q.max_redeem_points) == (40, 40)
    c = ev.commit(sale(T0, ("shoes", 100_000)), pay(points=40, money_kop=96_000), 43)
    assert c.lots_used == ((3, 40),)
    assert ev.commit(sale(T0, ("shoes", 100_000)), pay(points=1, money_kop=99_900), 44).reason \
        is Reason.INSUFFICIENT_POINTS


def test_many_lots_are_kept_in_order(impl):
    ev, _ = club(impl)
    # 40 purchases a day apart, 100 RUB each: 10 points each, lot i expires 3 months after day i
    for i in range(40):
        c = ev.commit(sale(T0 + i * DAY_S, ("shoes", 10_000)), pay(money_kop=10_000), 100 + i)
        assert c.accrued_points == 10
    assert lots(ev) == [(100 + i, 10) for i in range(40)]
    # on day 42 lots 100..139 are ripe (lot 139 ripened on day 42): 400 points
    now = T0 + 42 * DAY_S
    assert ev.quote(sale(now, ("shoes", 1_000_000))).points_spendable == 400
    c = ev.commit(sale(now, ("shoes", 1_000_000)), pay(points=255, money_kop=1_000_000 - 25_500), 200)
    assert c.lots_used == tuple((100 + i, 10) for i in range(25)) + ((125, 5),)
    # 10 % of the 10,000 - 255 = 9,745 RUB paid in money: 974.5 -> 974 points, the newest lot
    assert c.accrued_points == 974
    assert lots(ev) == [(125, 5)] + [(100 + i, 10) for i in range(26, 40)] + [(200, 974)]


# ------------------------------------------------------------------ returns

def test_full_return_takes_back_the_accrual(impl):
    ev, _ = club(impl)
    ev.commit(sale(T0, ("shoes", 100_000)), pay(money_kop=100_000), 10)
    r = refund(ev, sale_id=10, total=100_000, returned=100_000, accrued=100)
    assert (r.reason, r.points_taken_back, r.points_charged, r.points_unrecovered, r.points_given_back,
            r.refund_card_balance_kop, r.refund_money_kop, r.balance_after_kop) == \
        (Reason.OK, 100, 0, 0, 0, 0, 100_000, 0)
    assert lots(ev) == []


def test_partial_return_takes_back_the_returned_share(impl):
    ev, _ = club(impl)
    ev.commit(sale(T0, ("shoes", 100_000)), pay(money_kop=100_000), 10)
    # a quarter returned: 25 of the 100 points
    r = refund(ev, sale_id=10, total=100_000, returned=25_000, accrued=100)
    assert (r.points_taken_back, r.points_given_back, r.refund_money_kop) == (25, 0, 25_000)
    assert lots(ev) == [(10, 75)]


def test_return_gives_back_redeemed_points_spendable_at_once(impl):
    ev, _ = club(impl, lots=(ripe(1, 500),))
    ev.commit(sale(T0, ("shoes", 100_000)), pay(points=300, money_kop=70_000), 10)
    now = T0 + 3600
    r = refund(ev, sale_id=10, total=100_000, returned=100_000, accrued=70, redeemed=300, now=now,
               return_id=20)
    # 70 accrued points taken back; 300 redeemed points given back; 700 RUB refunded in money
    assert (r.reason, r.points_taken_back, r.points_given_back, r.refund_money_kop) == (Reason.OK, 70, 300, 70_000)
    acc = ev.account(ACCOUNT)
    assert [(lot.lot_id, lot.points) for lot in acc.lots] == [(1, 200), (20, 300)]
    assert acc.lots[1] == PointLot(20, 300, now, ts(2024, 6, 13, 13))
    # 200 + 300 points spendable right away
    assert ev.quote(sale(now, ("shoes", 1_000_000))).points_spendable == 500


def test_partial_return_with_points_card_balance_and_money(impl):
    ev, _ = club(impl, lots=(ripe(1, 500),), balance_kop=100_000)
    c = ev.commit(sale(T0, ("shoes", 100_000)), pay(points=300, card_kop=50_000, money_kop=20_000), 10)
    # 10 % of the 700 RUB paid with card balance and money
    assert (c.accrued_points, c.balance_after_kop, c.turnover_after_kop) == (70, 50_000, 50_000)
    r = refund(ev, sale_id=10, total=100_000, returned=50_000, accrued=70, redeemed=300, card_kop=50_000,
               return_id=20)
    # half returned: 35 points back from the sale's lot, 150 points given back, 250 RUB to the
    # card, 500 - 150 - 250 = 100 RUB in money
    assert (r.points_taken_back, r.points_charged, r.points_given_back, r.refund_card_balance_kop,
            r.refund_money_kop, r.balance_after_kop) == (35, 0, 150, 25_000, 10_000, 75_000)
    assert lots(ev) == [(1, 200), (10, 35), (20, 150)]


def test_partial_return_shares_round_down(impl):
    ev, _ = club(impl, lots=(ripe(1, 500),))
    ev.commit(sale(T0, ("shoes", 100_000)), pay(points=300, money_kop=70_000), 10)
    r = refund(ev, sale_id=10, total=100_000, returned=33_333, accrued=70, redeemed=300)
    # 70 x 0.33333 = 23.3 -> 23 taken; 300 x 0.33333 = 99.999 -> 99 given; 333.33 - 99 RUB in money
    assert (r.points_taken_back, r.points_given_back, r.refund_money_kop) == (23, 99, 23_433)


def test_return_takes_the_accrual_from_the_sale_lot_first(impl):
    ev, _ = club(impl, lots=(ripe(1, 500),))
    ev.commit(sale(T0, ("shoes", 100_000)), pay(money_kop=100_000), 10)
    r = refund(ev, sale_id=10, total=100_000, returned=100_000, accrued=100)
    # lot 1 is older, but the sale's own (not yet ripe) lot 10 goes first
    assert r.points_taken_back == 100
    assert lots(ev) == [(1, 500)]


def test_return_charges_already_spent_accrual_against_the_refund(impl):
    ev, _ = club(impl)
    ev.commit(sale(T0, ("shoes", 100_000)), pay(money_kop=100_000), 10)
    # three days later all 100 points pay for a super-price item (which earns nothing)
    c = ev.commit(sale(T0 + 3 * DAY_S, ("super_price", 40_000)), pay(points=100, money_kop=30_000), 11)
    assert (c.reason, c.accrued_points) == (Reason.OK, 0)
    assert lots(ev) == []
    r = refund(ev, sale_id=10, total=100_000, returned=100_000, accrued=100, now=T0 + 4 * DAY_S)
    # nothing left to take back: the 100 points' value (100 RUB) is kept from the refund
    assert (r.points_taken_back, r.points_charged, r.points_unrecovered, r.refund_money_kop) == (0, 100, 0, 90_000)


def test_return_charges_the_part_of_the_accrual_already_spent(impl):
    ev, _ = club(impl)
    ev.commit(sale(T0, ("shoes", 100_000)), pay(money_kop=100_000), 10)
    ev.commit(sale(T0 + 3 * DAY_S, ("super_price", 20_000)), pay(points=60, money_kop=14_000), 11)
    assert lots(ev) == [(10, 40)]
    r = refund(ev, sale_id=10, total=100_000, returned=100_000, accrued=100, now=T0 + 4 * DAY_S)
    # 40 points taken back, 60 charged: 1,000 - 60 RUB refunded
    assert (r.points_taken_back, r.points_charged, r.refund_money_kop) == (40, 60, 94_000)
    assert lots(ev) == []


def test_return_takes_spent_accrual_from_other_lots_before_charging(impl):
    ev, _ = club(impl)
    ev.commit(sale(T0, ("shoes", 100_000)), pay(money_kop=100_000), 10)
    ev.commit(sale(T0 + 3 * DAY_S, ("super_price", 20_000)), pay(points=60, money_kop=14_000), 11)
    ev.commit(sale(T0 + 3 * DAY_S, ("toys", 50_000)), pay(money_kop=50_000), 12)  # 50 new points
    r = refund(ev, sale_id=10, total=100_000, returned=100_000, accrued=100, now=T0 + 4 * DAY_S)
    # 40 from the sale's lot, then 50 from lot 12; 10 charged (10 RUB)
    assert (r.points_taken_back, r.points_charged, r.refund_money_kop) == (90, 10, 99_000)
    assert lots(ev) == []


def test_return_charges_the_card_refund_when_no_money_is_refunded(impl):
    ev, _ = club(impl, balance_kop=100_000)
    ev.commit(sale(T0, ("shoes", 100_000)), pay(card_kop=100_000), 10)
    ev.commit(sale(T0 + 3 * DAY_S, ("super_price", 40_000)), pay(points=100, money_kop=30_000), 11)
    r = refund(ev, sale_id=10, total=100_000, returned=100_000, accrued=100, card_kop=100_000,
               now=T0 + 4 * DAY_S)
    # all 1,000 RUB go back to the card, less the 100 spent points' 100 RUB
    assert (r.points_charged, r.refund_card_balance_kop, r.refund_money_kop, r.balance_after_kop) == \
        (100, 90_000, 0, 90_000)
    assert ev.account(ACCOUNT).balance_kop == 90_000


def test_return_to_the_card_balance_does_not_break_the_balance_cap(impl):
    # an unidentified card holds at most 15,000 RUB (DOMAIN.md), whatever puts the money there
    ev, _ = club(impl, kind=UNIDENTIFIED, balance_kop=1_500_000)
    c = ev.commit(sale(T0, ("shoes", 1_000_000)), pay(card_kop=1_000_000), 10)
    assert (c.reason, c.balance_after_kop, c.accrued_points) == (Reason.OK, 500_000, 1_000)
    t = top_up(ev, 1_000_000)
    assert (t.reason, t.balance_after_kop) == (Reason.OK, 1_500_000)
    r = refund(ev, sale_id=10, total=1_000_000, returned=1_000_000, accrued=1_000, card_kop=1_000_000)
    # the 1,000 points come back from the sale's lot; the 10,000 RUB refund is all owed to the
    # customer, but no more than 15,000 - 15,000 = 0 RUB of it may go onto the card
    assert r.points_taken_back == 1_000
    assert r.refund_card_balance_kop + r.refund_money_kop == 1_000_000
    assert r.balance_after_kop <= 1_500_000
    assert ev.account(ACCOUNT).balance_kop <= 1_500_000


def test_return_refund_never_goes_negative(impl):
    ev, _ = club(impl)
    # a journal sale of 100 RUB that accrued 500 points (a promotion), all spent
    r = refund(ev, sale_id=10, total=10_000, returned=10_000, accrued=500)
    # 100 RUB can cover 100 points; 400 are reported unrecovered
    assert (r.points_taken_back, r.points_charged, r.points_unrecovered, r.refund_money_kop,
            r.refund_card_balance_kop) == (0, 100, 400, 0, 0)


def test_return_ignores_expired_lots(impl):
    ev, _ = club(impl)
    ev.commit(sale(T0, ("shoes", 100_000)), pay(money_kop=100_000), 10)
    r = refund(ev, sale_id=10, total=100_000, returned=100_000, accrued=100, now=T0_PLUS_3M)
    # the sale's lot expired: its points count as spent
    assert (r.points_taken_back, r.points_charged, r.refund_money_kop) == (0, 100, 90_000)


def test_return_on_a_blocked_card_is_refused(impl):
    ev, model = club(impl, card_status=ClubStatus.BLOCKED, lots=(ripe(10, 100),), balance_kop=5_000)
    before = club_snapshot(ev, model)
    r = refund(ev, sale_id=10, total=100_000, returned=100_000, accrued=100)
    assert (r.reason, r.points_taken_back, r.refund_money_kop, r.balance_after_kop) == \
        (Reason.CARD_BLOCKED, 0, 0, 5_000)
    assert club_snapshot(ev, model) == before


@pytest.mark.parametrize("kw", [
    dict(returned=0),                                   # nothing returned
    dict(returned=-1),
    dict(returned=100_001),                             # more than the sale
    dict(total=0, returned=0),
    dict(total=10**9 + 1, returned=1),                  # over the largest sale
    dict(accrued=-1),
    dict(accrued=100_001),                              # more points than kopecks sold
    dict(redeemed=1_001),                               # more than the sale in points
    dict(redeemed=-1),
    dict(redeemed=300, card_kop=70_001),                # card part + points over the total
    dict(card_kop=-1),
    dict(now=-1),
    dict(now=7_258_118_401),
    dict(return_id=-1),
    dict(sale_id=-1),
    dict(returned=50_000.0),
    dict(card_no="4600000000039"),                      # unknown card
])
def test_malformed_return_is_a_request_error_and_changes_nothing(impl, kw):
    ev, model = club(impl, lots=(ripe(1, 500),), balance_kop=100_000)
    ev.commit(sale(T0, ("shoes", 100_000)), pay(points=300, card_kop=50_000, money_kop=20_000), 10)
    before = club_snapshot(ev, model)
    args = dict(sale_id=10, total=100_000, returned=100_000, accrued=70, redeemed=300, card_kop=50_000)
    args.update(kw)
    with pytest.raises(RequestError):
        refund(ev, **args)
    assert club_snapshot(ev, model) == before


# ------------------------------------------------------------------ the card as a payment card: caps

def test_identified_card_balance_cap_100000_rub(impl):
    ev, model = club(impl, kind=IDENTIFIED, balance_kop=9_000_000)
    # 90,000 + 10,000 RUB = exactly 100,000 RUB
    t = top_up(ev, 1_000_000)
    assert (t.reason, t.balance_after_kop, t.turnover_after_kop) == (Reason.OK, 10_000_000, 1_000_000)
    before = club_snapshot(ev, model)
    t = top_up(ev, 1)
    assert (t.reason, t.balance_after_kop, t.turnover_after_kop) == (Reason.BALANCE_CAP, 10_000_000, 1_000_000)
    assert club_snapshot(ev, model) == before


def test_identified_monthly_turnover_cap_1000000_rub(impl):
    month = month_no(2024, 3)
    ev, model = club(impl, kind=IDENTIFIED, turnover_month=month, turnover_kop=99_000_000)
    # 990,000 + 10,000 RUB = exactly 1,000,000 RUB this month
    t = top_up(ev, 1_000_000)
    assert (t.reason, t.balance_after_kop, t.turnover_after_kop) == (Reason.OK, 1_000_000, 100_000_000)
    before = club_snapshot(ev, model)
    t = top_up(ev, 1)
    assert (t.reason, t.balance_after_kop, t.turnover_after_kop) == (Reason.TURNOVER_CAP, 1_000_000, 100_000_000)
    assert club_snapshot(ev, model) == before


def test_unidentified_balance_cap_15000_rub(impl):
    ev, model = club(impl, kind=UNIDENTIFIED, balance_kop=1_400_000)
    t = top_up(ev, 100_001)
    assert (t.reason, t.balance_after_kop) == (Reason.BALANCE_CAP, 1_400_000)
    # 14,000 + 1,000 RUB = exactly 15,000 RUB
    t = top_up(ev, 100_000)
    assert (t.reason, t.balance_after_kop, t.turnover_after_kop) == (Reason.OK, 1_500_000, 100_000)
    before = club_snapshot(ev, model)
    assert top_up(ev, 1).reason is Reason.BALANCE_CAP
    assert club_snapshot(ev, model) == before


def test_unidentified_turnover_cap_40000_rub(impl):
    ev, model = club(impl, kind=UNIDENTIFIED, turnover_month=month_no(2024, 3), turnover_kop=3_900_000)
    t = top_up(ev, 100_001)
    assert (t.reason, t.turnover_after_kop) == (Reason.TURNOVER_CAP, 3_900_000)
    # 39,000 + 1,000 RUB = exactly 40,000 RUB
    t = top_up(ev, 100_000)
    assert (t.reason, t.balance_after_kop, t.turnover_after_kop) == (Reason.OK, 100_000, 4_000_000)
    before = club_snapshot(ev, model)
    assert top_up(ev, 1).reason is Reason.TURNOVER_CAP
    assert club_snapshot(ev, model) == before


def test_balance_cap_is_checked_before_turnover_cap(impl):
    ev, _ = club(impl, kind=UNIDENTIFIED, balance_kop=1_500_000, turnover_month=month_no(2024, 3),
                 turnover_kop=4_000_000)
    assert top_up(ev, 1).reason is Reason.BALANCE_CAP


def test_top_ups_add_up_to_the_caps(impl):
    ev, _ = club(impl, kind=UNIDENTIFIED)
    # 15,000 RUB in three top-ups; spend 10,000; top up 10,000 more; turnover 40,000 reached
    for amount in (500_000, 500_000, 500_000):
        assert top_up(ev, amount).reason is Reason.OK
    assert top_up(ev, 1).reason is Reason.BALANCE_CAP
    c = ev.commit(sale(T0, ("shoes", 1_000_000)), pay(card_kop=1_000_000), 50)
    assert (c.reason, c.balance_after_kop, c.turnover_after_kop) == (Reason.OK, 500_000, 2_500_000)
    t = top_up(ev, 1_000_000)
    assert (t.reason, t.balance_after_kop, t.turnover_after_kop) == (Reason.OK, 1_500_000, 3_500_000)
    c = ev.commit(sale(T0, ("shoes", 500_000)), pay(card_kop=500_000), 51)
    assert (c.reason, c.turnover_after_kop) == (Reason.OK, 4_000_000)
    t = top_up(ev, 1)
    assert (t.reason, t.balance_after_kop, t.turnover_after_kop) == (Reason.TURNOVER_CAP, 1_000_000, 4_000_000)


def test_card_payments_count_against_the_turnover_cap(impl):
    ev, model = club(impl, kind=UNIDENTIFIED, balance_kop=1_000_000, turnover_month=month_no(2024, 3),
                     turnover_kop=3_950_000)
    s = sale(T0, ("shoes", 100_000))
    before = club_snapshot(ev, model)
    c = ev.commit(s, pay(card_kop=50_001, money_kop=49_999), 52)
    assert (c.reason, c.accrued_points, c.balance_after_kop, c.turnover_after_kop) == \
        (Reason.TURNOVER_CAP, 0, 1_000_000, 3_950_000)
    assert club_snapshot(ev, model) == before
    # 39,500 + 500 RUB = exactly 40,000
    c = ev.commit(s, pay(card_kop=50_000, money_kop=50_000), 53)
    assert (c.reason, c.accrued_points, c.balance_after_kop, c.turnover_after_kop) == \
        (Reason.OK, 100, 950_000, 4_000_000)
    # money and points from outside the card are not turnover
    c = ev.commit(s, pay(money_kop=100_000), 54)
    assert (c.reason, c.turnover_after_kop) == (Reason.OK, 4_000_000)


def test_turnover_resets_in_a_new_month(impl):
    ev, _ = club(impl, kind=UNIDENTIFIED, turnover_month=month_no(2024, 2), turnover_kop=4_000_000)
    # the turnover months are Moscow's: 1 March 00:00 MSK is 29 February 21:00 UTC
    t = top_up(ev, 100_000, ts(2024, 2, 29, 23, 59, 59))
    assert (t.reason, t.turnover_after_kop) == (Reason.TURNOVER_CAP, 4_000_000)
    t = top_up(ev, 100_000, ts(2024, 3, 1, 0, 0, 0))
    assert (t.reason, t.balance_after_kop, t.turnover_after_kop) == (Reason.OK, 100_000, 100_000)
    assert (ev.account(ACCOUNT).turnover_month, ev.account(ACCOUNT).turnover_kop) == (month_no(2024, 3), 100_000)
    # the late-arriving February top-up still sees March's turnover (it never goes back a month)
    t = top_up(ev, 100_000, ts(2024, 2, 29, 23, 59, 59))
    assert (t.reason, t.turnover_after_kop) == (Reason.OK, 200_000)


def test_turnover_resets_in_a_new_month_for_card_payments(impl):
    ev, _ = club(impl, kind=UNIDENTIFIED, balance_kop=100_000, turnover_month=month_no(2024, 3),
                 turnover_kop=4_000_000)
    s = sale(ts(2024, 3, 31, 23, 59, 59), ("shoes", 10_000))
    assert ev.commit(s, pay(card_kop=10_000), 55).reason is Reason.TURNOVER_CAP
    c = ev.commit(sale(ts(2024, 4, 1), ("shoes", 10_000)), pay(card_kop=10_000), 56)
    assert (c.reason, c.balance_after_kop, c.turnover_after_kop) == (Reason.OK, 90_000, 10_000)


def test_caps_are_data(impl):
    rules = ClubRules(caps={IDENTIFIED: KindCaps(500, 1_000), UNIDENTIFIED: KindCaps(100, 150)})
    ev, _ = club(impl, kind=UNIDENTIFIED, rules=rules)
    assert top_up(ev, 100).reason is Reason.OK
    assert top_up(ev, 1).reason is Reason.BALANCE_CAP


def test_insufficient_funds_on_the_card(impl):
    ev, model = club(impl, balance_kop=5_000)
    before = club_snapshot(ev, model)
    c = ev.commit(sale(T0, ("shoes", 10_000)), pay(card_kop=5_001, money_kop=4_999), 57)
    assert (c.reason, c.balance_after_kop) == (Reason.INSUFFICIENT_FUNDS, 5_000)
    assert club_snapshot(ev, model) == before
    c = ev.commit(sale(T0, ("shoes", 10_000)), pay(card_kop=5_000, money_kop=5_000), 58)
    assert (c.reason, c.balance_after_kop) == (Reason.OK, 0)


# ------------------------------------------------------------------ activation and blocking

def test_non_activated_card_earns_and_redeems_points(impl):
    ev, _ = club(impl, activated=False, lots=(ripe(1, 500),))
    s = sale(T0, ("shoes", 100_000))
    q = ev.quote(s)
    assert (q.reason, q.points_spendable, q.max_redeem_points, q.accrual_points_at_max_redeem,
            q.payments_enabled) == (Reason.OK, 500, 300, 70, False)
    c = ev.commit(s, pay(points=300, money_kop=70_000), 60)
    assert (c.reason, c.accrued_points, c.redeemed_points) == (Reason.OK, 70, 300)


def test_non_activated_card_refuses_card_payment(impl):
    ev, model = club(impl, activated=False, balance_kop=50_000)
    before = club_snapshot(ev, model)
    c = ev.commit(sale(T0, ("shoes", 10_000)), pay(card_kop=1, money_kop=9_999), 61)
    assert (c.reason, c.accrued_points, c.new_lot) == (Reason.CARD_NOT_ACTIVATED, 0, None)
    assert club_snapshot(ev, model) == before


def test_non_activated_card_refuses_top_up(impl):
    ev, model = club(impl, activated=False)
    before = club_snapshot(ev, model)
    t = top_up(ev, 100)
    assert (t.reason, t.balance_after_kop) == (Reason.CARD_NOT_ACTIVATED, 0)
    assert club_snapshot(ev, model) == before


def test_activated_card_has_payments_enabled(impl):
    ev, _ = club(impl, balance_kop=1_234)
    q = ev.quote(sale(T0, ("shoes", 100)))
    assert (q.reason, q.balance_kop, q.payments_enabled) == (Reason.OK, 1_234, True)


@pytest.mark.parametrize("blocked", ["card", "account"])
def test_blocked_club_card_is_refused_everything(impl, blocked):
    kw = {"card_status": ClubStatus.BLOCKED} if blocked == "card" else {"account_status": ClubStatus.BLOCKED}
    ev, model = club(impl, lots=(ripe(1, 500),), balance_kop=50_000, **kw)
    before = club_snapshot(ev, model)
    s = sale(T0, ("shoes", 100_000))
    q = ev.quote(s)
    assert (q.reason, q.total_kop, q.points_spendable, q.max_redeem_points, q.accrual_points,
            q.balance_kop, q.payments_enabled) == (Reason.CARD_BLOCKED, 100_000, 0, 0, 0, 0, False)
    c = ev.commit(s, pay(money_kop=100_000), 62)
    assert (c.reason, c.accrued_points, c.new_lot) == (Reason.CARD_BLOCKED, 0, None)
    assert top_up(ev, 100).reason is Reason.CARD_BLOCKED
    assert club_snapshot(ev, model) == before


def test_a_lost_card_is_blocked_and_the_new_plastic_carries_the_balance(impl):
    ev, _ = club(impl, card_status=ClubStatus.BLOCKED, new_card=True, balance_kop=70_000, lots=(ripe(1, 500),))
    assert ev.quote(sale(T0, ("shoes", 100_000))).reason is Reason.CARD_BLOCKED
    q = ev.quote(sale(T0, ("shoes", 100_000), card_no=CLUB_CARD_NEW))
    assert (q.reason, q.balance_kop, q.points_spendable) == (Reason.OK, 70_000, 500)
    c = ev.commit(sale(T0, ("shoes", 100_000), card_no=CLUB_CARD_NEW),
                  pay(points=300, card_kop=70_000), 63)
    assert (c.reason, c.balance_after_kop, c.accrued_points) == (Reason.OK, 0, 70)


def test_quote_changes_nothing(impl):
    ev, model = club(impl, lots=(ripe(1, 500),), balance_kop=50_000)
    before = club_snapshot(ev, model)
    for _ in range(2):
        ev.quote(sale(T0, ("shoes", 100_000)))
    assert club_snapshot(ev, model) == before


def test_commit_changes_the_account_as_reported(impl):
    ev, _ = club(impl, lots=(ripe(1, 500),), balance_kop=50_000, turnover_month=month_no(2024, 3),
                 turnover_kop=10_000)
    c = ev.commit(sale(T0, ("shoes", 100_000)), pay(points=200, card_kop=30_000, money_kop=50_000), 64)
    # money part 800 RUB -> 80 points
    assert (c.reason, c.accrued_points, c.redeemed_points, c.lots_used, c.balance_after_kop,
            c.turnover_after_kop) == (Reason.OK, 80, 200, ((1, 200),), 20_000, 40_000)
    acc = ev.account(ACCOUNT)
    assert (acc.balance_kop, acc.turnover_month, acc.turnover_kop) == (20_000, month_no(2024, 3), 40_000)
    assert acc.lots == [ripe(1, 300), PointLot(64, 80, T0 + 3 * DAY_S, T0_PLUS_3M)]


# ------------------------------------------------------------------ malformed requests

MAX_SALE_KOP = 10**9


@pytest.mark.parametrize("s", [
    ClubSale("4600000000039", (SaleLine("A", "shoes", 100_000),), T0),         # unknown card
    ClubSale(4600000000015, (SaleLine("A", "shoes", 100_000),), T0),           # card not a string
    ClubSale(CLUB_CARD, (SaleLine("A", "boots", 100_000),), T0),               # unknown category
    ClubSale(CLUB_CARD, (SaleLine("A", "", 100_000),), T0),                    # line without category
    ClubSale(CLUB_CARD, (SaleLine("A", None, 100_000),), T0),
    ClubSale(CLUB_CARD, (SaleLine("A", "shoes", 50_000), SaleLine("B", "", 50_000)), T0),
    ClubSale(CLUB_CARD, (), T0),                                               # no lines
    ClubSale(CLUB_CARD, [SaleLine("A", "shoes", 100_000)], T0),                # lines not a tuple
    ClubSale(CLUB_CARD, (SaleLine("A", "shoes", -1),), T0),                    # negative amount
    ClubSale(CLUB_CARD, (SaleLine("A", "shoes", MAX_SALE_KOP + 1),), T0),      # overflowing line
    ClubSale(CLUB_CARD, (SaleLine("A", "shoes", 2**63),), T0),
    ClubSale(CLUB_CARD, (SaleLine("A", "shoes", MAX_SALE_KOP), SaleLine("B", "toys", 1)), T0),  # total
    ClubSale(CLUB_CARD, (SaleLine("A", "shoes", 100.0),), T0),                 # not an integer
    ClubSale(CLUB_CARD, (SaleLine("A", "shoes", True),), T0),
    ClubSale(CLUB_CARD, (SaleLine("A", "shoes", 100_000),), -1),               # time out of range
    ClubSale(CLUB_CARD, (SaleLine("A", "shoes", 100_000),), 7_258_118_401),
    ClubSale(CLUB_CARD, (SaleLine("A", "shoes", 100_000),), float(T0)),
    ClubSale(CLUB_CARD, (SaleLine("A", "shoes", 100_000),), T0, channel="phone"),        # unknown channel
    ClubSale(CLUB_CARD, (SaleLine("A", "shoes", 100_000),), T0, payment_method="gold"),  # unknown method
], ids=range(19))
def test_malformed_sale_is_a_request_error_and_changes_nothing(impl, s):
    ev, model = club(impl, lots=(ripe(1, 500),), balance_kop=100_000, turnover_month=month_no(2024, 3),
                     turnover_kop=20_000)
    before = club_snapshot(ev, model)
    with pytest.raises(RequestError):
        ev.quote(s)
    with pytest.raises(RequestError):
        ev.commit(s, pay(money_kop=100_000), 70)
    assert club_snapshot(ev, model) == before


@pytest.mark.parametrize("payment, txn_id", [
    (pay(money_kop=99_999), 71),                          # short of the total
    (pay(money_kop=100_001), 71),                         # more than the total
    (pay(points=100, money_kop=100_000), 71),             # points on top of the full amount
    (pay(points=300, card_kop=50_000, money_kop=19_999), 71),
    (pay(points=-100, money_kop=110_000), 71),            # negative parts
    (pay(card_kop=-1, money_kop=100_001), 71),
    (pay(money_kop=-100_000, card_kop=200_000), 71),
    (pay(points=10**7 + 1), 71),                          # overflowing points
    (pay(money_kop=100_000.0), 71),                       # not integers
    (pay(points=True, money_kop=99_900), 71),
    (pay(money_kop=100_000), -1),                         # bad transaction id
    (pay(money_kop=100_000), 2**63),
    (pay(money_kop=100_000), "71"),
])
def test_payments_not_adding_up_or_malformed_are_a_request_error(impl, payment, txn_id):
    ev, model = club(impl, lots=(ripe(1, 500),), balance_kop=100_000)
    before = club_snapshot(ev, model)
    with pytest.raises(RequestError):
        ev.commit(sale(T0, ("shoes", 100_000)), payment, txn_id)
    assert club_snapshot(ev, model) == before


@pytest.mark.parametrize("req", [
    ClubTopUp(CLUB_CARD, 0, T0),
    ClubTopUp(CLUB_CARD, -100, T0),
    ClubTopUp(CLUB_CARD, MAX_SALE_KOP + 1, T0),
    ClubTopUp(CLUB_CARD, 2**64, T0),
    ClubTopUp(CLUB_CARD, 100.0, T0),
    ClubTopUp(CLUB_CARD, "100", T0),
    ClubTopUp(CLUB_CARD, 100, -1),
    ClubTopUp(CLUB_CARD, 100, 7_258_118_401),
    ClubTopUp("4600000000039", 100, T0),
    ClubTopUp(None, 100, T0),
], ids=range(10))
def test_malformed_top_up_is_a_request_error_and_changes_nothing(impl, req):
    ev, model = club(impl, balance_kop=100_000)
    before = club_snapshot(ev, model)
    with pytest.raises(RequestError):
        ev.top_up(req)
    assert club_snapshot(ev, model) == before


def test_default_rules_are_the_sources_numbers():
    r = ClubRules()
    assert r.accrual_rates == (AccrualRate("*", "*", 1000),)  # 10 %
    assert r.redemption_cap_bp == 3000  # 30 %
    assert (r.maturity_s, r.expiry_months) == (3 * 86_400, 3)
    assert r.caps[IDENTIFIED] == KindCaps(100_000_00, 1_000_000_00)
    assert r.caps[UNIDENTIFIED] == KindCaps(15_000_00, 40_000_00)
    cats = {c.code: (c.accrues, c.redeemable) for c in default_categories()}
    assert {code for code, (accrues, _) in cats.items() if not accrues} == {"super_price", "hygiene", "food"}
    assert {code for code, (_, red) in cats.items() if not red} == {"hygiene", "baby_food", "advertised"}


def test_values_and_requests_of_the_wrong_type_are_request_errors(impl):
    # authz.errors: one type, RequestError, for every malformed request (the fuel evaluator
    # checks a request's type; the club one must not let a TypeError or AttributeError out)
    ev, model = club(impl, lots=(ripe(1, 500),), balance_kop=100_000)
    before = club_snapshot(ev, model)
    good = sale(T0, ("shoes", 100_000))
    calls = {
        "category-list": lambda: ev.quote(sale(T0, (["shoes"], 100_000))),
        "channel-list": lambda: ev.quote(sale(T0, ("shoes", 100_000), channel=["store"])),
        "method-dict": lambda: ev.commit(sale(T0, ("shoes", 100_000), method={}), pay(money_kop=100_000), 80),
        "quote-None": lambda: ev.quote(None),
        "commit-None": lambda: ev.commit(None, pay(money_kop=100_000), 80),
        "payment-None": lambda: ev.commit(good, None, 80),
        "payment-tuple": lambda: ev.commit(good, (0, 0, 100_000), 80),
        "top-up-None": lambda: ev.top_up(None),
        "return-None": lambda: ev.return_sale(None),
    }
    escaped = {}
    for name, call in calls.items():
        try:
            call()
        except RequestError:
            continue
        except Exception as exc:  # noqa: BLE001 - collected to name every case at once
            escaped[name] = type(exc).__name__
        else:
            escaped[name] = "no error"
    assert escaped == {}
    assert club_snapshot(ev, model) == before
