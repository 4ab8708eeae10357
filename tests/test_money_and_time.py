"""authz.money (integer amounts, half-up rounding, the exact inverse) and authz.localtime
(local days, week and month starts, calendar months in UTC)."""

from __future__ import annotations

import calendar
from datetime import date, datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.errors import ModelError
from authz.localtime import (MAX_UTC_S, add_months_utc, date_of_day, day_number, local_date,
                             month_index, month_start, week_start, zone)
from authz.money import (BP_WHOLE, MAX_AMOUNT_KOP, MAX_PRICE_KOP_PER_L, MAX_VOLUME_ML,
                         amount_for_volume, bp_of, max_volume_for_amount)
from tests.evaluator_fixtures import KGD, VVO, ts


def utc(*args) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp())


# ------------------------------------------------------------------ money

def test_limits_of_the_integers():
    # 10 billion RUB, 1 million litres, 1 million RUB a litre, 100 % = 10,000 bp
    assert (MAX_AMOUNT_KOP, MAX_VOLUME_ML, MAX_PRICE_KOP_PER_L, BP_WHOLE) == (10**12, 10**9, 10**8, 10_000)
    # the largest product of two request values fits a signed 64-bit integer
    assert MAX_VOLUME_ML * MAX_PRICE_KOP_PER_L + 500 < 2**63
    assert 1000 * (2 * MAX_AMOUNT_KOP) + 499 < 2**63


@pytest.mark.parametrize("volume_ml, price, amount", [
    (1000, 5000, 5000),    # 1 l x 50.00
    (10, 5050, 51),        # 50.5 -> 51 (half up)
    (10, 5049, 50),        # 50.49 -> 50
    (1, 500, 1),           # 0.5 -> 1
    (1, 499, 0),           # 0.499 -> 0
    (3, 1500, 5),          # 4.5 -> 5
    (7, 1500, 11),         # 10.5 -> 11
    (0, 5000, 0),
    (12345, 0, 0),         # free
    (33_333, 5050, 168_332),  # 168,331.65 -> 168,332
    (MAX_VOLUME_ML, MAX_PRICE_KOP_PER_L, 10**14),
])
def test_amount_for_volume_rounds_half_up(volume_ml, price, amount):
    assert amount_for_volume(volume_ml, price) == amount


@pytest.mark.parametrize("amount, price, volume", [
    (51, 5050, 10),        # 10 ml = 51 kop, 11 ml = 56
    (50, 5050, 9),         # 9 ml = 45 kop, 10 ml = 51
    (100_000, 5399, 18_522),
    (100_000, 5000, 20_000),
    (4, 5000, 0),          # 1 ml costs 5 kop
    (5, 5000, 1),
    (0, 5000, 0),          # 1 ml rounds to 5 kop, so nothing for free
    (0, 400, 1),           # 1 ml at 4 kop/l = 0.4 kop -> 0: it costs nothing
    (-1, 5000, 0),         # a negative remainder buys nothing
    (-10**12, 1, 0),
    (1, 0, MAX_VOLUME_ML), # a free product is not bounded by money
    (MAX_AMOUNT_KOP, 1, MAX_VOLUME_ML),  # capped at the largest volume
])
def test_max_volume_for_amount_examples(amount, price, volume):
    assert max_volume_for_amount(amount, price) == volume


@settings(max_examples=400, deadline=None)
@given(amount=st.integers(0, 2 * MAX_AMOUNT_KOP), price=st.integers(1, MAX_PRICE_KOP_PER_L))
def test_max_volume_for_amount_is_the_exact_inverse(amount, price):
    v = max_volume_for_amount(amount, price)
    assert 0 <= v <= MAX_VOLUME_ML
    assert amount_for_volume(v, price) <= amount
    if v < MAX_VOLUME_ML:
        assert amount < amount_for_volume(v + 1, price)


@settings(max_examples=300, deadline=None)
@given(amount=st.integers(0, 10**7), price=st.integers(1, 20_000))
def test_max_volume_for_amount_small_values_are_the_exact_inverse(amount, price):
    # the same property where the rounding of single millilitres matters most
    v = max_volume_for_amount(amount, price)
    assert amount_for_volume(v, price) <= amount < amount_for_volume(v + 1, price) or v == MAX_VOLUME_ML


@settings(max_examples=200, deadline=None)
@given(volume=st.integers(0, MAX_VOLUME_ML), price=st.integers(1, MAX_PRICE_KOP_PER_L))
def test_an_amount_buys_back_at_least_its_volume(volume, price):
    assert max_volume_for_amount(amount_for_volume(volume, price), price) >= volume


@pytest.mark.parametrize("amount, bp, out", [
    (5000, 200, 100),      # 2 % of 50.00
    (5200, 200, 104),
    (5050, 300, 152),      # 3 % of 50.50 = 151.5 -> 152
    (5050, 1, 1),          # 0.505 -> 1
    (4999, 1, 0),          # 0.4999 -> 0
    (5000, 1, 1),          # 0.5 -> 1
    (12345, 0, 0),
    (12345, BP_WHOLE, 12345),
])
def test_bp_of_rounds_half_up(amount, bp, out):
    assert bp_of(amount, bp) == out


# ------------------------------------------------------------------ local days

def test_day_numbers():
    assert day_number(date(1970, 1, 1)) == 0
    assert day_number(date(1969, 12, 31)) == -1
    # 54 x 365 + 13 leap days (1972..2020) + 31 + 29 + 12 days into 2024
    assert day_number(date(2024, 3, 13)) == 19795
    assert date_of_day(19795) == date(2024, 3, 13)
    assert date_of_day(0) == date(1970, 1, 1)


@given(st.dates(min_value=date(1960, 1, 1), max_value=date(2200, 12, 31)))
def test_date_of_day_inverts_day_number(d):
    assert date_of_day(day_number(d)) == d


def test_one_utc_instant_is_a_different_local_day_by_zone():
    t = utc(2024, 3, 13, 15, 0, 0)
    assert local_date(t, VVO) == date(2024, 3, 14)   # 01:00 at UTC+10
    assert local_date(t, KGD) == date(2024, 3, 13)   # 17:00 at UTC+2
    assert local_date(t, "Europe/Moscow") == date(2024, 3, 13)


@pytest.mark.parametrize("tz", [VVO, KGD, "Europe/Moscow", "Asia/Kamchatka", "Europe/Samara"])
def test_local_midnight_is_where_the_day_changes(tz):
    midnight = ts(2024, 3, 14, 0, 0, 0, tz=tz)
    assert local_date(midnight - 1, tz) == date(2024, 3, 13)
    assert local_date(midnight, tz) == date(2024, 3, 14)


def test_local_date_across_the_2014_russian_clock_change():
    # Moscow: UTC+4 until 26 October 2014 02:00 local, then UTC+3
    assert local_date(utc(2014, 10, 25, 20, 0, 0), "Europe/Moscow") == date(2014, 10, 26)  # 00:00 +4
    assert local_date(utc(2014, 10, 25, 19, 59, 59), "Europe/Moscow") == date(2014, 10, 25)
    assert local_date(utc(2014, 10, 26, 20, 59, 59), "Europe/Moscow") == date(2014, 10, 26)  # 23:59:59 +3
    assert local_date(utc(2014, 10, 26, 21, 0, 0), "Europe/Moscow") == date(2014, 10, 27)


def test_unknown_zone_is_a_model_error():
    with pytest.raises(ModelError):
        zone("Mars/Olympus_Mons")
    with pytest.raises(ModelError):
        zone("")


@pytest.mark.parametrize("d, monday", [
    (date(2024, 3, 11), date(2024, 3, 11)),  # Monday
    (date(2024, 3, 13), date(2024, 3, 11)),  # Wednesday
    (date(2024, 3, 17), date(2024, 3, 11)),  # Sunday
    (date(2024, 3, 18), date(2024, 3, 18)),  # Monday
    (date(2024, 1, 1), date(2024, 1, 1)),    # a Monday new year
    (date(2023, 1, 1), date(2022, 12, 26)),  # a Sunday new year: week began in December
    (date(2024, 3, 1), date(2024, 2, 26)),   # a week across a leap-year month end
    (date(1970, 1, 1), date(1969, 12, 29)),  # day 0 was a Thursday
])
def test_weeks_start_on_monday(d, monday):
    assert week_start(d) == monday


@given(st.dates(min_value=date(1970, 1, 1), max_value=date(2200, 1, 1)))
def test_week_start_is_the_monday_on_or_before(d):
    m = week_start(d)
    assert m.weekday() == 0 and 0 <= (d - m).days <= 6


@pytest.mark.parametrize("d, first", [
    (date(2024, 3, 13), date(2024, 3, 1)),
    (date(2024, 3, 1), date(2024, 3, 1)),
    (date(2024, 2, 29), date(2024, 2, 1)),
    (date(2023, 12, 31), date(2023, 12, 1)),
])
def test_months_start_on_the_first(d, first):
    assert month_start(d) == first


@pytest.mark.parametrize("d, index", [
    (date(1970, 1, 1), 0),
    (date(1970, 12, 31), 11),
    (date(1971, 1, 1), 12),
    (date(2024, 2, 29), 54 * 12 + 1),
    (date(2024, 3, 1), 54 * 12 + 2),
])
def test_month_index_counts_months_since_1970(d, index):
    assert month_index(d) == index


# ------------------------------------------------------------------ calendar months in UTC

@pytest.mark.parametrize("start, months, end", [
    (utc(2023, 11, 30, 12, 0, 0), 3, utc(2024, 2, 29, 12, 0, 0)),   # leap February
    (utc(2022, 11, 30, 12, 0, 0), 3, utc(2023, 2, 28, 12, 0, 0)),
    (utc(2024, 1, 31, 23, 59, 59), 1, utc(2024, 2, 29, 23, 59, 59)),
    (utc(2023, 1, 31, 0, 0, 0), 1, utc(2023, 2, 28, 0, 0, 0)),
    (utc(2024, 3, 31, 8, 0, 0), 1, utc(2024, 4, 30, 8, 0, 0)),
    (utc(2024, 3, 31, 8, 0, 0), 3, utc(2024, 6, 30, 8, 0, 0)),
    (utc(2024, 5, 31, 8, 0, 0), 3, utc(2024, 8, 31, 8, 0, 0)),
    (utc(2024, 10, 31, 6, 0, 0), 3, utc(2025, 1, 31, 6, 0, 0)),     # over the new year
    (utc(2024, 12, 15, 0, 0, 0), 1, utc(2025, 1, 15, 0, 0, 0)),
    (utc(2024, 12, 31, 0, 0, 0), 2, utc(2025, 2, 28, 0, 0, 0)),
    (utc(2023, 12, 31, 0, 0, 0), 2, utc(2024, 2, 29, 0, 0, 0)),
    (utc(2024, 2, 29, 10, 0, 0), 12, utc(2025, 2, 28, 10, 0, 0)),
    (utc(2024, 2, 29, 10, 0, 0), 48, utc(2028, 2, 29, 10, 0, 0)),
    (utc(2024, 3, 13, 9, 0, 0), 0, utc(2024, 3, 13, 9, 0, 0)),
    (utc(2024, 3, 13, 9, 0, 0), 25, utc(2026, 4, 13, 9, 0, 0)),
    (utc(2099, 11, 30, 0, 0, 0), 3, utc(2100, 2, 28, 0, 0, 0)),     # 2100 is not a leap year
    (utc(2099, 11, 30, 0, 0, 0), 3 + 12 * 100, utc(2200, 2, 28, 0, 0, 0)),
    (utc(1999, 11, 30, 0, 0, 0), 3, utc(2000, 2, 29, 0, 0, 0)),     # 2000 is
])
def test_add_months_utc_clamps_to_the_end_of_the_month(start, months, end):
    assert add_months_utc(start, months) == end


@given(t=st.integers(0, MAX_UTC_S - 20 * 366 * 86_400), months=st.integers(0, 240))
def test_add_months_utc_keeps_time_of_day_and_clamps_the_day(t, months):
    start = datetime.fromtimestamp(t, timezone.utc)
    end = datetime.fromtimestamp(add_months_utc(t, months), timezone.utc)
    m = start.month - 1 + months
    year, month = start.year + m // 12, m % 12 + 1
    assert (end.year, end.month) == (year, month)
    assert end.day == min(start.day, calendar.monthrange(year, month)[1])
    assert end.time() == start.time()
