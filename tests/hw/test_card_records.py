"""Card record layouts: round trips with the authz model, strict decoding, fuzzed decoders
that raise only CardDataError."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.fuel_model import CardKind, CardStatus, FuelCard, Limit, LimitCounter, LimitUnit, Period, ProductGroup
from hw.card.records import (
    MAX_LIMITS,
    CounterState,
    CounterWrite,
    decode_card,
    decode_counter_state,
    decode_counter_write,
    decode_identity,
    decode_limit,
    encode_card,
    encode_counter_state,
    encode_counter_write,
    encode_identity,
    encode_limit,
)
from hw.errors import CardDataError
from tests.hw.pcsc import sample_card


def test_card_round_trip():
    card = sample_card()
    rec = encode_card(card)
    assert rec.controls is None and rec.identity[0] == 1  # no new rule: format 01
    assert decode_card(rec.identity, rec.limits) == card
    assert all(len(r) <= 250 for r in (rec.identity, *rec.limits))


def test_blocked_virtual_card_round_trip():
    card = FuelCard("123456", 0, date(2030, 1, 31), frozenset(), (), CardKind.VIRTUAL, CardStatus.BLOCKED)
    rec = encode_card(card)
    assert decode_card(rec.identity, rec.limits, rec.controls) == card


def test_counter_state_and_write_round_trip():
    counters = ((1, LimitCounter(5, 20_000)), (7, LimitCounter(10**12, -3)))
    s = CounterState(4, b"w" * 16, True, counters)
    assert decode_counter_state(encode_counter_state(s)) == s
    w = CounterWrite(4, b"w" * 16, counters)
    assert decode_counter_write(encode_counter_write(w)) == w


def test_largest_write_fits_a_short_apdu():
    counters = tuple((i, LimitCounter(10**12, 0)) for i in range(MAX_LIMITS))
    assert len(encode_counter_write(CounterWrite(1, b"x" * 16, counters))) + 16 <= 255
    assert len(encode_counter_state(CounterState(1, b"x" * 16, False, counters))) + 16 <= 256


@pytest.mark.parametrize("card", [
    FuelCard("12345", 1, date(2030, 1, 1), frozenset()),  # too short a number
    FuelCard("12345678901234567890", 1, date(2030, 1, 1), frozenset()),
    FuelCard("12345a789", 1, date(2030, 1, 1), frozenset()),
    FuelCard("123456789", -1, date(2030, 1, 1), frozenset()),
    FuelCard("123456789", 1, date(2030, 1, 1), frozenset(),
             tuple(Limit(i, LimitUnit.KOPECKS, Period.DAY, 1) for i in range(MAX_LIMITS + 1))),
    FuelCard("123456789", 1, date(2030, 1, 1), frozenset(),
             (Limit(1, LimitUnit.KOPECKS, Period.DAY, 1), Limit(1, LimitUnit.KOPECKS, Period.DAY, 2))),
    FuelCard("123456789", 1, date(2030, 1, 1), frozenset(), (Limit(1, LimitUnit.KOPECKS, Period.DAY, -1),)),
])
def test_encoding_refuses_bad_cards(card):
    with pytest.raises(CardDataError) as exc:
        encode_card(card)
    assert card.card_no not in str(exc.value) or len(card.card_no) <= 6


def test_strict_decoding():
    rec = encode_card(sample_card())
    identity, limits = rec.identity, rec.limits
    with pytest.raises(CardDataError):
        decode_identity(identity + b"\x00")
    with pytest.raises(CardDataError):
        decode_identity(identity[:-1])
    with pytest.raises(CardDataError):
        decode_limit(limits[0] + b"\x00")
    with pytest.raises(CardDataError):
        decode_card(identity, limits[:-1])
    bad_version = b"\x03" + identity[1:]
    with pytest.raises(CardDataError):
        decode_identity(bad_version)
    bad_unit = limits[0][:4] + b"\x09" + limits[0][5:]
    with pytest.raises(CardDataError):
        decode_limit(bad_unit)


def test_write_ids_must_be_real():
    with pytest.raises(CardDataError):
        encode_counter_write(CounterWrite(0, bytes(16), ()))
    with pytest.raises(CardDataError):
        encode_counter_write(CounterWrite(0, b"short", ()))


@settings(max_examples=1000)
@given(st.binary(max_size=300))
def test_fuzz_decoders_raise_only_card_data_error(raw):
    for decode in (decode_identity, decode_limit, decode_counter_state, decode_counter_write):
        try:
            decode(raw)
        except CardDataError:
            pass


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 10**12), st.integers(-2**31, 2**31 - 1)),
                max_size=MAX_LIMITS, unique_by=lambda t: t[0]),
       st.integers(0, 2**32 - 2), st.binary(min_size=16, max_size=16), st.booleans())
def test_fuzz_counter_round_trip(entries, txn, wid, open_):
    counters = tuple((i, LimitCounter(s, p)) for i, s, p in entries)
    s = CounterState(txn, wid, open_, counters)
    assert decode_counter_state(encode_counter_state(s)) == s


def test_product_group_mask_covers_all_groups():
    card = FuelCard("123456789", 1, date(2030, 1, 1), frozenset(ProductGroup))
    assert decode_identity(encode_identity(card)).groups == frozenset(ProductGroup)
    assert decode_limit(encode_limit(Limit(9, LimitUnit.MILLILITRES, Period.LIFETIME, 0))).product is None
