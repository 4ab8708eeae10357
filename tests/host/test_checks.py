"""The parsers and checks of what operators type (host.checks), fuzzed with hypothesis:
each either gives the exact value or refuses with InvalidInput, never anything else."""

from __future__ import annotations

import re
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.money import MAX_AMOUNT_KOP, MAX_VOLUME_ML
from authz.sample import card_number, club_card_number
from host.checks import (
    check_expiry,
    club_card_no,
    ean13_check_digit,
    fuel_card_no,
    parse_date,
    parse_litres,
    parse_percent,
    parse_rub,
)
from host.errors import InvalidInput

# text near the formats: digits, separators, signs, exponents, unicode digits and spaces
NEAR = st.text(alphabet=st.sampled_from(list("0123456789.,-+eE :/") + ["٣", "７", "\u00a0", "\n", "x"]), max_size=24)
ANY_TEXT = st.one_of(NEAR, st.text(max_size=24))


@settings(max_examples=400, deadline=None)
@given(st.integers(0, MAX_AMOUNT_KOP))
def test_rubles_round_trip_exactly(kop):
    assert parse_rub(f"{kop // 100}.{kop % 100:02d}") == kop
    assert parse_rub(f"{kop // 100},{kop % 100:02d}") == kop
    if kop % 100 == 0:
        assert parse_rub(str(kop // 100)) == kop
    if kop % 10 == 0:
        assert parse_rub(f"{kop // 100}.{kop % 100 // 10}") == kop


@settings(max_examples=400, deadline=None)
@given(st.integers(0, MAX_VOLUME_ML))
def test_litres_round_trip_exactly(ml):
    assert parse_litres(f"{ml // 1000}.{ml % 1000:03d}") == ml
    if ml % 1000 == 0:
        assert parse_litres(str(ml // 1000)) == ml


@settings(max_examples=200, deadline=None)
@given(st.integers(MAX_AMOUNT_KOP + 1, 10**15 - 1))
def test_amounts_over_the_range_are_refused(kop):
    with pytest.raises(InvalidInput, match="over the most allowed"):
        parse_rub(f"{kop // 100}.{kop % 100:02d}")


@settings(max_examples=200, deadline=None)
@given(st.integers(MAX_VOLUME_ML + 1, 10**12 - 1))
def test_volumes_over_the_range_are_refused(ml):
    with pytest.raises(InvalidInput, match="over the most allowed"):
        parse_litres(f"{ml // 1000}.{ml % 1000:03d}")


@settings(max_examples=1500, deadline=None)
@given(ANY_TEXT)
def test_amount_parsers_give_an_exact_value_or_refuse(text):
    for parse, top, scale, decimals in ((parse_rub, MAX_AMOUNT_KOP, 100, 2), (parse_litres, MAX_VOLUME_ML, 1000, 3),
                                        (parse_percent, 10_000, 100, 2)):
        try:
            value = parse(text)
        except InvalidInput:
            continue
        # accepted: ASCII digits with at most `decimals` decimals, and the value is exactly that
        m = re.fullmatch(rf"([0-9]+)(?:[.,]([0-9]{{1,{decimals}}}))?", text.strip(" \t\n\r"))
        assert m, (parse.__name__, text)
        assert value == int(m.group(1)) * scale + int((m.group(2) or "0").ljust(decimals, "0"))
        assert 0 <= value <= top


@settings(max_examples=400, deadline=None)
@given(st.dates())
def test_dates_round_trip(d):
    assert parse_date(d.isoformat()) == d


@settings(max_examples=1500, deadline=None)
@given(ANY_TEXT)
def test_the_date_parser_takes_only_yyyy_mm_dd(text):
    try:
        d = parse_date(text)
    except InvalidInput:
        return
    assert d.isoformat() == text.strip(" \t\n\r")


@pytest.mark.parametrize("text", ["20281231", "2028-W01-1", "2028-1-1", "2028-02-30", "٢٠٢٨-٠١-٠١", "2028-01-01T00:00",
                                  "", "2028/01/01"])
def test_dates_python_would_take_or_misread_are_refused(text):
    with pytest.raises(InvalidInput, match="YYYY-MM-DD"):
        parse_date(text)


def test_an_expiry_is_from_today_up_to_twenty_years():
    today = date(2026, 11, 17)
    assert check_expiry(today, today) == today
    with pytest.raises(InvalidInput, match="in the past"):
        check_expiry(date(2026, 11, 16), today)
    with pytest.raises(InvalidInput, match="years ahead"):
        check_expiry(date(2047, 1, 1), today)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(ANY_TEXT, st.text(alphabet="0123456789", min_size=12, max_size=17), st.integers(), st.none()))
def test_card_numbers_are_accepted_only_in_their_format(value):
    try:
        fuel_card_no(value)
        fuel_ok = True
    except InvalidInput as exc:
        fuel_ok = False
        assert str(value) not in str(exc) or len(str(value)) <= 6  # masked (or too short to show anything)
    assert fuel_ok == (isinstance(value, str) and len(value) == 16 and all(c in "0123456789" for c in value))
    try:
        club_card_no(value)
        club_ok = True
    except InvalidInput:
        club_ok = False
    assert club_ok == (isinstance(value, str) and len(value) == 13 and all(c in "0123456789" for c in value)
                       and ean13_check_digit(value[:12]) == value[12])


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="0123456789", min_size=12, max_size=12), st.integers(0, 12), st.integers(1, 9))
def test_ean13_catches_every_single_digit_error(first12, pos, delta):
    good = first12 + ean13_check_digit(first12)
    assert club_card_no(good) == good
    bad = good[:pos] + str((int(good[pos]) + delta) % 10) + good[pos + 1:]
    with pytest.raises(InvalidInput):
        club_card_no(bad)


def test_the_sample_networks_numbers_are_in_the_format():
    for i in (0, 1, 99_999, 9_999_999_999):
        assert fuel_card_no(card_number(i)) == card_number(i)
    for i in (0, 1, 99_999_999):
        assert club_card_no(club_card_number(i)) == club_card_number(i)
