"""wire.rows_bulk refuses exactly what wire.codec refuses and gives the same rows: fuel-card
and stop-list maps (well formed, then broken field by field) through both, with hypothesis;
the store's packing and unpacking byte for byte."""

from __future__ import annotations

import copy
from dataclasses import replace

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz import sample
from authz.fuel_model import Limit, LimitUnit, OnBreach, Period, StationScope, TimeWindow
from wire import codec, rows_bulk
from wire.errors import WireFormatError
from wire.messages import FuelCardRow, StopListEntry, Table

_FUEL = sample.fuel_model(n_cards=60, seed=11)
_ROWS = [FuelCardRow(c, tuple((lid, ctr) for (no, lid), ctr in sorted(_FUEL.counters.items()) if no == c.card_no))
         for c in _FUEL.cards]
CARD_MAPS = [codec._fuel_card_to(r) for r in _ROWS]
#: cards with the fleet controls' optional fields (issue 11): the fast path leaves them to the codec
_CONTROLLED = [FuelCardRow(replace(r.card, card_no="9" + r.card.card_no[1:], products=frozenset({"DT"}),
                                   windows=(TimeWindow(frozenset({0, 4}), 1320, 360),),
                                   station_scope=StationScope.LISTED, station_ids=frozenset({3, 1}),
                                   on_breach=OnBreach.ALERT,
                                   limits=r.card.limits + (Limit(90, LimitUnit.PURCHASES, Period.QUARTER, 5,
                                                                 on_breach=OnBreach.ALERT),)), r.counters)
               for r in _ROWS[:3]]
CONTROLLED_MAPS = [codec._fuel_card_to(r) for r in _CONTROLLED]
CONTRACT_MAPS = [codec._contract_to(c) for c in _FUEL.contracts]
STOP_MAPS = [codec._stop_to(StopListEntry(c.card_no, 1_700_000_000 + i)) for i, c in enumerate(_FUEL.cards)]
assert any(r.counters for r in _ROWS) and any(len(r.card.limits) > 1 for r in _ROWS)

#: what a hostile or broken frame may hold where a field is
ODD = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 64), 2 ** 64 - 1), st.sampled_from([0, 1, 2, 4, 5, 7, -1]),
                st.text(max_size=6), st.sampled_from(["2026-02-30", "2026-12-31", "7005", "", "A" * 33, "95"]),
                st.binary(max_size=3), st.floats(allow_nan=False), st.lists(st.integers(-1, 6), max_size=7),
                st.just({}), st.just([{}]), st.just([[0]]), st.just([0, 0]), st.just([1, 2, 3, 4]),
                st.sampled_from(["Europe/Moscow", "Europe//Moscow", "A/B/C/D/E", "x" * 33]))


def reference(table: Table, items: list) -> tuple | WireFormatError:
    """What wire.codec's row checks say, row by row (``_rows_from`` without its fast path)."""
    try:
        out = codec._each(items, "rows", codec._ROWS[table].from_wire)
        codec._unique([codec.row_key(table, r) for r in out], "rows: key", cards=table is not Table.CONTRACTS)
        return out
    except WireFormatError as e:
        return e


def paths(m: dict) -> list[tuple]:
    """Every place in a row map a value sits (fields, limits' and counters' fields)."""
    out: list[tuple] = [(k,) for k in m]
    for key in ("limits", "counters", "windows"):
        subs = m.get(key)
        for i, sub in enumerate(subs if isinstance(subs, list) else []):
            if isinstance(sub, dict):
                out += [(key, i, k) for k in sub]
            elif isinstance(sub, list):
                out += [(key, i, k) for k in range(len(sub))]
    return out


def put(m: dict, path: tuple, value: object) -> None:
    for p in path[:-1]:
        m = m[p]
    m[path[-1]] = value


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([Table.FUEL_CARDS, Table.STOP_LIST, Table.CONTRACTS]), st.data())
def test_the_fast_path_accepts_only_what_the_codec_accepts_and_gives_the_same_rows(table, data):
    maps = {Table.FUEL_CARDS: CARD_MAPS + CONTROLLED_MAPS, Table.STOP_LIST: STOP_MAPS, Table.CONTRACTS: CONTRACT_MAPS}[table]
    items = data.draw(st.lists(st.sampled_from(range(len(maps))), min_size=1, max_size=4))
    rows = [copy.deepcopy(maps[i]) for i in items]
    for _ in range(data.draw(st.integers(0, 3))):
        row = rows[data.draw(st.integers(0, len(rows) - 1))]
        how = data.draw(st.sampled_from(["set", "drop", "add", "dup_limit"]))
        if not row:
            how = "add"
        if how == "set":
            put(row, data.draw(st.sampled_from(paths(row))), data.draw(ODD))
        elif how == "drop":
            del row[data.draw(st.sampled_from(sorted(row)))]
        elif how == "add":
            row[data.draw(st.sampled_from(["extra", "card_no ", "Limits", "products", "windows", "station_scope",
                                           "station_ids", "on_breach"]))] = data.draw(ODD)
        elif isinstance(row.get("limits"), list) and row["limits"]:
            row["limits"].append(copy.deepcopy(row["limits"][0]))
    want = reference(table, rows)
    got = rows_bulk.parse_rows(table, rows)  # keys are checked after it, by the codec
    if got is not None:
        per_row = [reference(table, [r]) for r in rows]
        assert not any(isinstance(w, WireFormatError) for w in per_row), \
            f"the fast path accepted what the codec refuses: {per_row}"
        assert got == tuple(w[0] for w in per_row)
    # and through the codec, which takes the fast path first: the same refusal, word for word
    try:
        through = codec._rows_from(table, rows, "rows", codec.DEFAULT_LIMITS)
    except WireFormatError as e:
        assert isinstance(want, WireFormatError) and str(e) == str(want)
    else:
        assert through == want


def test_well_formed_rows_take_the_fast_path():
    assert rows_bulk.parse_rows(Table.FUEL_CARDS, CARD_MAPS) == tuple(_ROWS)
    assert rows_bulk.parse_rows(Table.STOP_LIST, STOP_MAPS) == reference(Table.STOP_LIST, STOP_MAPS)
    assert rows_bulk.parse_rows(Table.CONTRACTS, CONTRACT_MAPS) == tuple(_FUEL.contracts)
    assert rows_bulk.parse_rows(Table.PRODUCTS, [codec._product_to(p) for p in _FUEL.products]) is None  # no fast path


def test_the_store_packs_the_same_bytes_and_reads_back_with_the_same_checks():
    packed = list(rows_bulk.pack_rows(Table.FUEL_CARDS, _ROWS))
    assert packed == [(r.card.card_no, codec.pack_row(Table.FUEL_CARDS, r)) for r in _ROWS]
    assert tuple(rows_bulk.unpack_rows(Table.FUEL_CARDS, (d for _, d in packed))) == tuple(_ROWS)
    bad = [msgpack.packb({"bad": True}), b"\xc1", packed[0][1] + b"\x00",
           msgpack.packb(CARD_MAPS[0] | {"kind": 9})]
    for data in bad:
        with pytest.raises(WireFormatError) as slow:
            codec.unpack_row(Table.FUEL_CARDS, data)
        with pytest.raises(WireFormatError) as fast:
            list(rows_bulk.unpack_rows(Table.FUEL_CARDS, [data]))
        assert str(fast.value) == str(slow.value)
    with pytest.raises(WireFormatError, match="a fuel_cards row is a FuelCardRow"):
        list(rows_bulk.pack_rows(Table.FUEL_CARDS, [StopListEntry("1", 1)]))


def test_a_card_with_fleet_controls_goes_to_the_codec_both_ways():
    assert rows_bulk.parse_rows(Table.FUEL_CARDS, CARD_MAPS + CONTROLLED_MAPS) is None
    assert codec._rows_from(Table.FUEL_CARDS, CARD_MAPS + CONTROLLED_MAPS, "rows", codec.DEFAULT_LIMITS) \
        == tuple(_ROWS + _CONTROLLED)
    packed = list(rows_bulk.pack_rows(Table.FUEL_CARDS, _ROWS + _CONTROLLED))
    assert packed == [(r.card.card_no, codec.pack_row(Table.FUEL_CARDS, r)) for r in _ROWS + _CONTROLLED]
    assert tuple(rows_bulk.unpack_rows(Table.FUEL_CARDS, (d for _, d in packed))) == tuple(_ROWS + _CONTROLLED)
    # only the limit alerts: still not plain
    one = FuelCardRow(replace(_ROWS[0].card, limits=(Limit(1, LimitUnit.KOPECKS, Period.DAY, 5, on_breach=OnBreach.ALERT),)))
    [(_, data)] = rows_bulk.pack_rows(Table.FUEL_CARDS, [one])
    assert msgpack.unpackb(data)["limits"][0]["on_breach"] == 1
    assert list(rows_bulk.unpack_rows(Table.FUEL_CARDS, [data])) == [one]
