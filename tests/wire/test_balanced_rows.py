"""Rows that carry the balance rule's watermarks (fuel cards, contracts) and allowances
(contracts), as every row ingest changed does, take the fast path of ``wire.codec._rows_from``
(the balance fields checked as the row checks do, the rest by ``wire.rows_bulk``) and give
exactly what the row-by-row checks give: the same rows, or the same refusal word for word,
with hypothesis breaking the balance fields and the rows' own fields."""

from __future__ import annotations

import copy

from hypothesis import given, settings
from hypothesis import strategies as st

from authz.balance import Allowance, Watermark
from wire import codec
from wire.errors import WireFormatError
from wire.messages import FuelCardRow, Table

from .test_rows_bulk import _FUEL, _ROWS, ODD, paths, put, reference

WM = (Watermark("S-001", 7), Watermark("S-002", 0))
CARDS = [FuelCardRow(r.card, r.counters, WM[: 1 + i % 2]) for i, r in enumerate(_ROWS)]
CONTRACTS = [type(c)(c.contract_id, c.tz, c.home_region, c.tariff, c.balance_kop, c.credit_line_kop,
                     c.chosen_station_ids, WM[: 1 + i % 2], (Allowance("S-001", 500), Allowance("*", 100))[: i % 3])
             for i, c in enumerate(_FUEL.contracts)]
CARD_MAPS = [codec._fuel_card_to(r) for r in CARDS]
CONTRACT_MAPS = [codec._contract_to(c) for c in CONTRACTS]
BAD_BALANCE = st.one_of(ODD, st.just([["S-001", 1], ["S-001", 2]]), st.just([["*", 5]]), st.just([["S 1", 5]]),
                        st.just([["S-001", -1]]), st.just([["S-001", 2 ** 63]]), st.just([["S-001"]]),
                        st.just([("S-001", 3)]), st.just([["S-001", 1]] * 300))


def through_codec(table: Table, rows: list) -> tuple | str:
    try:
        return codec._rows_from(table, rows, "rows", codec.DEFAULT_LIMITS)
    except WireFormatError as e:
        return f"{type(e).__name__}: {e}"


def said(want: tuple | WireFormatError) -> tuple | str:
    return f"{type(want).__name__}: {want}" if isinstance(want, WireFormatError) else want


def test_well_formed_balanced_rows_take_the_fast_path_and_come_out_the_same():
    assert codec._balanced_fast(Table.FUEL_CARDS, CARD_MAPS) == tuple(CARDS)
    assert codec._balanced_fast(Table.CONTRACTS, CONTRACT_MAPS) == tuple(CONTRACTS)
    assert through_codec(Table.FUEL_CARDS, CARD_MAPS) == tuple(CARDS) == reference(Table.FUEL_CARDS, CARD_MAPS)
    assert through_codec(Table.CONTRACTS, CONTRACT_MAPS) == tuple(CONTRACTS)
    assert any(c.allowances for c in CONTRACTS) and all(r.watermarks for r in CARDS)
    assert codec._balanced_fast(Table.STOP_LIST, []) is None  # no balance fields in that table


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([Table.FUEL_CARDS, Table.CONTRACTS]), st.data())
def test_balanced_rows_are_refused_for_the_same_reasons_either_way(table, data):
    maps = CARD_MAPS if table is Table.FUEL_CARDS else CONTRACT_MAPS
    rows = [copy.deepcopy(maps[i]) for i in data.draw(st.lists(st.sampled_from(range(len(maps))), min_size=1,
                                                               max_size=4))]
    for _ in range(data.draw(st.integers(0, 3))):
        row = rows[data.draw(st.integers(0, len(rows) - 1))]
        how = data.draw(st.sampled_from(["watermarks", "allowances", "drop_balance", "field"]))
        if how in ("watermarks", "allowances"):
            row[how] = data.draw(BAD_BALANCE)
        elif how == "drop_balance":
            row.pop(data.draw(st.sampled_from(["watermarks", "allowances"])), None)
        else:
            put(row, data.draw(st.sampled_from(paths(row))), data.draw(ODD))
    assert through_codec(table, rows) == said(reference(table, rows))
