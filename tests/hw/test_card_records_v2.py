"""Card format 02 (the fleet controls of issue 11): round trips of every new rule, the
choice of format, strict decoding, and fuzzed decoders that raise only CardDataError."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.fuel_model import (
    MAX_CARD_STATIONS,
    MAX_WINDOWS,
    FuelCard,
    Limit,
    LimitUnit,
    OnBreach,
    Period,
    ProductGroup,
    Scope,
    StationScope,
    TimeWindow,
)
from hw.card.records import (
    FORMAT_V1,
    FORMAT_V2,
    MAX_LIMITS,
    MAX_RECORD_LEN,
    CardRecords,
    decode_controls,
    decode_identity,
    decode_limit,
    decode_records,
    encode_controls,
    encode_limit,
    encode_records,
    needs_v2,
    static_mac_input,
)
from hw.errors import CardDataError
from tests.hw.pcsc import sample_card


def fleet_card() -> FuelCard:
    """The sample card with one of each new rule."""
    c = sample_card()
    return replace(c, limits=c.limits + (
        Limit(4, LimitUnit.PURCHASES, Period.DAY, 3),
        Limit(5, LimitUnit.KOPECKS, Period.QUARTER, 9_000_000, on_breach=OnBreach.ALERT),
        Limit(6, LimitUnit.MILLILITRES, Period.YEAR, 2_000_000, Scope.PRODUCT, None, "DT")),
        products=frozenset({"DT", "AI95"}),
        windows=(TimeWindow(frozenset({0, 1, 2, 3, 4}), 6 * 60, 22 * 60), TimeWindow(frozenset({4}), 22 * 60, 6 * 60)),
        station_scope=StationScope.LISTED, station_ids=frozenset({7, 3}), on_breach=OnBreach.ALERT)


def test_a_card_without_new_rules_is_format_01_byte_for_byte():
    card = sample_card()
    rec = encode_records(card)
    assert not needs_v2(card)
    assert rec.identity[0] == FORMAT_V1 and rec.controls is None
    # The layout of the first cards: no flags byte after the product code.
    assert rec.limits[0] == bytes.fromhex("00000001" "01" "01" "0000000000030d40" "00" "ff" "00")
    assert rec.mac_input() == static_mac_input(rec.identity, rec.limits)


@pytest.mark.parametrize("change", [
    {"products": frozenset({"DT"})},
    {"windows": (TimeWindow(frozenset({6}), 0, 1440),)},
    {"station_scope": StationScope.HOME_REGION},
    {"on_breach": OnBreach.ALERT},
    {"limits": (Limit(1, LimitUnit.PURCHASES, Period.MONTH, 10),)},
    {"limits": (Limit(1, LimitUnit.KOPECKS, Period.QUARTER, 10),)},
    {"limits": (Limit(1, LimitUnit.KOPECKS, Period.YEAR, 10),)},
    {"limits": (Limit(1, LimitUnit.KOPECKS, Period.DAY, 10, on_breach=OnBreach.ALERT),)},
])
def test_each_new_rule_makes_format_02_and_round_trips(change):
    card = replace(sample_card(), **change)
    assert needs_v2(card)
    rec = encode_records(card)
    assert rec.identity[0] == FORMAT_V2 and rec.controls is not None
    assert decode_records(rec) == card
    with pytest.raises(CardDataError, match="format 01 cannot hold"):
        encode_records(card, FORMAT_V1)


def test_fleet_card_round_trip_and_mac_input_covers_the_controls():
    card = fleet_card()
    rec = encode_records(card)
    assert decode_records(rec) == card
    assert rec.mac_input() == static_mac_input(rec.identity, rec.limits) + bytes((len(rec.controls),)) + rec.controls
    assert all(len(r) <= MAX_RECORD_LEN for r in (rec.identity, *rec.limits, rec.controls))
    # A card without new rules may still be written in format 02, and reads the same.
    plain = sample_card()
    assert decode_records(encode_records(plain, FORMAT_V2)) == plain


def test_controls_layout():
    card = replace(sample_card(), products=frozenset({"DT"}), windows=(TimeWindow(frozenset({0, 6}), 1320, 360),),
                   station_scope=StationScope.LISTED, station_ids=frozenset({258}), on_breach=OnBreach.ALERT)
    assert encode_controls(card) == bytes.fromhex("01" "02" "01" "00000102" "01" "41" "0528" "0168" "01" "02" "4454")
    assert encode_controls(sample_card()) == bytes.fromhex("00 00 00 00 ff")


def test_format_01_records_cannot_say_new_rules():
    # A limit record of format 01 with unit 2 (purchases) or period 5 (quarter): refused.
    v1 = encode_limit(Limit(9, LimitUnit.KOPECKS, Period.DAY, 1))
    for off, value in ((4, 2), (5, 5), (5, 6)):
        bad = v1[:off] + bytes((value,)) + v1[off + 1:]
        with pytest.raises(CardDataError, match="format 02"):
            decode_limit(bad, FORMAT_V1)
        assert decode_limit(encode_limit(decode_limit(bad + b"\x00", FORMAT_V2), FORMAT_V2), FORMAT_V2) \
            == decode_limit(bad + b"\x00", FORMAT_V2)
    with pytest.raises(CardDataError, match="format 02"):
        encode_limit(Limit(9, LimitUnit.PURCHASES, Period.DAY, 1), FORMAT_V1)


def test_records_and_format_must_agree():
    rec = encode_records(fleet_card())
    with pytest.raises(CardDataError, match="needs its controls"):
        decode_records(CardRecords(rec.identity, rec.limits, None))
    old = encode_records(sample_card())
    with pytest.raises(CardDataError, match="no controls record"):
        decode_records(CardRecords(old.identity, old.limits, b"\x00\x00\x00\x00\xff"))
    # Format 02 limit records (a flags byte) under a format 01 identity: trailing bytes.
    with pytest.raises(CardDataError, match="trailing"):
        decode_records(CardRecords(old.identity, tuple(r + b"\x00" for r in old.limits)))
    assert decode_identity(rec.identity).version == FORMAT_V2


@pytest.mark.parametrize("raw, why", [
    ("00 02 00 00 ff", "LISTED with 0 stations"),
    ("00 01 01 00000001 00 ff", "HOME_REGION with 1 stations"),
    ("00 02 02 00000002 00000001 00 ff", "ascending"),
    ("00 02 02 00000001 00000001 00 ff", "ascending"),
    ("00 00 00 01 00 0000 0168 ff", "days mask"),
    ("00 00 00 01 80 0000 0168 ff", "days mask"),
    ("00 00 00 01 01 0168 0168 ff", "zero length"),
    ("00 00 00 01 01 05a0 0001 ff", "outside"),
    ("00 00 00 01 01 0000 0000 ff", "outside"),
    ("00 00 00 01 01 0000 05a1 ff", "outside"),
    ("00 00 00 00 00", "empty product list"),
    ("00 00 00 00 02 02 4454 02 4454", "ascending"),
    ("00 00 00 00 01 00", "of 0 bytes"),
    ("00 00 00 00 01 01 ff", "UTF-8"),
    ("00 00 00 00 ff 00", "trailing"),
    ("00 00 00 00", "short"),
    ("02 00 00 00 ff", "unknown bits"),
    ("00 03 00 00 ff", "StationScope"),
    ("00 00 00 09 ff", "time windows"),
])
def test_bad_controls_records_are_refused(raw, why):
    with pytest.raises(CardDataError, match=why):
        decode_controls(bytes.fromhex(raw))


def test_bad_controls_are_not_written():
    c = sample_card()
    for change, why in (
            ({"products": frozenset()}, "product list of 0"),
            ({"windows": (TimeWindow(frozenset({1}), 60, 60),)}, "zero length"),
            ({"windows": (TimeWindow(frozenset(), 0, 60),)}, "days mask"),
            ({"windows": (TimeWindow(frozenset({7}), 0, 60),)}, "days are 0"),
            ({"windows": (TimeWindow(frozenset({1}), 0, 1441),)}, "outside"),
            ({"windows": (TimeWindow(frozenset({1}), 0, 60),) * (MAX_WINDOWS + 1)}, "time windows"),
            ({"station_scope": StationScope.LISTED}, "lists none"),
            ({"station_ids": frozenset({1})}, "NETWORK"),
            ({"station_scope": StationScope.LISTED, "station_ids": frozenset(range(MAX_CARD_STATIONS + 1))},
             "stations; at most"),
            ({"products": frozenset(f"P{i:030d}" for i in range(8))}, "more than one record holds"),
            ({"limits": (Limit(1, LimitUnit.PURCHASES, Period.TRANSACTION, 1),)}, "per transaction")):
        with pytest.raises(CardDataError, match=why):
            encode_records(replace(c, **change))


# -- hypothesis ----------------------------------------------------------------------------

_codes = st.text(st.characters(min_codepoint=0x30, max_codepoint=0x44F), min_size=1, max_size=8)
_windows = st.builds(lambda days, start, length: TimeWindow(frozenset(days), start, (start + length - 1) % 1440 + 1),
                     st.sets(st.integers(0, 6), min_size=1), st.integers(0, 1439), st.integers(1, 1439))


@st.composite
def _limits(draw):
    n = draw(st.integers(0, MAX_LIMITS))
    ids = draw(st.lists(st.integers(0, 2**32 - 1), min_size=n, max_size=n, unique=True))
    out = []
    for i in ids:
        unit = draw(st.sampled_from(LimitUnit))
        periods = [p for p in Period if not (unit is LimitUnit.PURCHASES and p is Period.TRANSACTION)]
        scope = draw(st.sampled_from(Scope))
        group = draw(st.sampled_from(ProductGroup)) if scope is Scope.GROUP else draw(
            st.none() | st.sampled_from(ProductGroup))
        product = draw(_codes) if scope is Scope.PRODUCT else draw(st.none() | _codes)
        out.append(Limit(i, unit, draw(st.sampled_from(periods)), draw(st.integers(0, 10**12)), scope, group,
                         product, draw(st.sampled_from(OnBreach))))
    return tuple(out)


@st.composite
def _cards(draw):
    scope = draw(st.sampled_from(StationScope))
    stations = draw(st.sets(st.integers(0, 2**32 - 1), min_size=1, max_size=MAX_CARD_STATIONS)) \
        if scope is StationScope.LISTED else set()
    return FuelCard(draw(st.text("0123456789", min_size=6, max_size=19)), draw(st.integers(0, 2**63 - 1)),
                    draw(st.dates(date(1, 1, 1), date(9999, 12, 31))), frozenset(draw(st.sets(st.sampled_from(ProductGroup)))),
                    draw(_limits()), products=draw(st.none() | st.frozensets(_codes, min_size=1, max_size=6)),
                    windows=tuple(draw(st.lists(_windows, max_size=MAX_WINDOWS))), station_scope=scope,
                    station_ids=frozenset(stations), on_breach=draw(st.sampled_from(OnBreach)))


@settings(max_examples=400, deadline=None)
@given(_cards())
def test_fuzz_card_round_trip(card):
    rec = encode_records(card)
    assert rec.identity[0] == (FORMAT_V2 if needs_v2(card) else FORMAT_V1)
    assert decode_records(rec) == card
    assert decode_records(encode_records(card, FORMAT_V2)) == card


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_v2_decoders_raise_only_card_data_error(raw):
    for decode in (decode_controls, lambda r: decode_limit(r, FORMAT_V2), decode_identity):
        try:
            decode(raw)
        except CardDataError:
            pass


@settings(max_examples=500, deadline=None)
@given(_cards(), st.integers(0, 400), st.binary(min_size=1, max_size=3))
def test_fuzz_damaged_records_raise_only_card_data_error(card, at, junk):
    """Any record of a good card, damaged anywhere: it decodes to some card or raises
    CardDataError, never anything else."""
    rec = encode_records(card)
    parts = [rec.identity, *rec.limits] + ([rec.controls] if rec.controls is not None else [])
    i = at % len(parts)
    p = parts[i]
    j = at % (len(p) + 1)
    parts[i] = p[:j] + junk + p[j + len(junk):]
    damaged = CardRecords(parts[0], tuple(parts[1:1 + len(rec.limits)]),
                          parts[-1] if rec.controls is not None else None)
    try:
        decode_records(damaged)
    except CardDataError:
        pass


def test_the_pages_controls_examples_decode_as_it_says():
    """docs/card-application.md §2.4 shows two controls records; they are what it says."""
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "card-application.md").read_text(encoding="utf-8")
    example = re.search(r"diesel only:\s+`([0-9A-F ]+)`", page).group(1)
    empty = re.search(r"no controls would be\s+`([0-9A-F ]+)`", page).group(1)
    c = decode_controls(bytes.fromhex(example))
    assert c == decode_controls(encode_controls(replace(
        sample_card(), products=frozenset({"DT"}), windows=(TimeWindow(frozenset({0, 6}), 22 * 60, 6 * 60),),
        station_scope=StationScope.LISTED, station_ids=frozenset({258}), on_breach=OnBreach.ALERT)))
    assert decode_controls(bytes.fromhex(empty)) == decode_controls(encode_controls(sample_card()))
    assert c.on_breach is OnBreach.ALERT and c.products == frozenset({"DT"})
