"""The native loader of stored fuel-card rows (native._rowload, through
native.compact.FuelColumns.from_rows given StoredCards) against the general path (each row
read by wire.rows_bulk.unpack_rows into a FuelCardRow, then _fill_card_columns): with
hypothesis, the same rows accepted with equal columns, the same rows refused with the same
error; and a replica built from a real replica store either way."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.balance import Watermark
from authz.errors import ModelError
from native.compact import FuelColumns, StoredCards
from terminal.follower import FullSnapshot
from terminal.replica import Replica
from terminal.replica_store import ReplicaStore, StoredRows
from wire import Table, WireError, rows_bulk
from wire.messages import FuelCardRow

from .wire.test_rows_bulk import _CONTROLLED, _FUEL, _ROWS, ODD, paths, put


class Corrupt(Exception):
    """What the store raises for a row that fails its schema (StoreCorrupt's stand-in)."""


def _checked(data: bytes) -> FuelCardRow:
    try:
        return next(rows_bulk.unpack_rows(Table.FUEL_CARDS, (data,)))
    except WireError as exc:
        raise Corrupt(str(exc)) from None


class Stored:
    """StoredCards over a list of bytes, refusing as the store does."""

    def __init__(self, datas: list[bytes]) -> None:
        self._datas = datas
        self.slow = 0

    def datas(self) -> Iterable[bytes]:
        return iter(self._datas)

    def card_of(self, data: bytes) -> tuple[Any, Any]:
        r = self.row_of(data)
        return r.card, r.counters

    def row_of(self, data: bytes) -> Any:
        self.slow += 1
        return _checked(data)


def _general(datas: list[bytes]) -> Iterator[tuple[Any, Any]]:
    for d in datas:
        r = _checked(d)
        yield r.card, r.counters


def build(cards: Any, contracts: Any = _FUEL.contracts, products: Any = _FUEL.products) -> FuelColumns | str:
    """The columns, or what refused them (the exception's type and words)."""
    try:
        return FuelColumns.from_rows(products=products, stations=_FUEL.stations, discounts=_FUEL.discounts,
                                     contracts=contracts, cards=cards)
    except (ModelError, Corrupt) as exc:
        return f"{type(exc).__name__}: {exc}"


def same(a: FuelColumns | str, b: FuelColumns | str) -> None:
    assert type(a) is type(b), (a, b)
    if isinstance(a, str):
        assert a == b
        return
    assert isinstance(b, FuelColumns)
    for name, _ in FuelColumns.ARRAYS:
        assert getattr(a, name) == getattr(b, name), name
    assert a.card_other == b.card_other


PLAIN = [d for _, d in rows_bulk.pack_rows(Table.FUEL_CARDS, _ROWS)]
CONTROLLED = [d for _, d in rows_bulk.pack_rows(Table.FUEL_CARDS, _CONTROLLED)]
WATERMARKED = [d for _, d in rows_bulk.pack_rows(
    Table.FUEL_CARDS, [replace(_ROWS[1], watermarks=(Watermark("S1", 7),))])]


def test_plain_rows_take_the_native_path_and_build_the_same_columns():
    stored = Stored(PLAIN + CONTROLLED + WATERMARKED)
    fast = build(stored)
    assert isinstance(fast, FuelColumns) and fast.n_cards == len(PLAIN) + len(CONTROLLED) + 1
    assert stored.slow == len(CONTROLLED) + 1  # controls and watermarks: the general path
    same(fast, build(_general(PLAIN + CONTROLLED + WATERMARKED)))
    assert isinstance(stored, StoredCards)


def _mangle(data: bytes, how: str, k: int) -> bytes:
    if how == "truncate":
        return data[:k % max(1, len(data))]
    if how == "trailing":
        return data + b"\x00"
    if how == "flip":
        i = k % len(data)
        return data[:i] + bytes([data[i] ^ (1 << (k % 8))]) + data[i + 1:]
    if how == "wide_int":  # the first positive fixint as a uint64: the same value, the longest way
        for i, b in enumerate(data):
            if i > 0 and b < 0x80 and data[i - 1] not in range(0xa0, 0xc0):
                return data[:i] + b"\xcf" + b.to_bytes(8, "big") + data[i + 1:]
    return data


def _packed(data: Any, row: Any) -> bytes:
    """``row`` packed, then maybe mangled (drawn)."""
    try:
        d = msgpack.packb(row, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        d = b"\xc1"
    how = data.draw(st.sampled_from(["as_is"] * 4 + ["truncate", "trailing", "flip", "wide_int"]))
    return _mangle(d, how, data.draw(st.integers(0, 10_000)))


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_the_native_loader_accepts_and_refuses_exactly_as_the_general_path(data):
    maps = [msgpack.unpackb(d) for d in PLAIN + CONTROLLED]
    picks = data.draw(st.lists(st.sampled_from(range(len(maps))), min_size=1, max_size=4))
    rows = [copy.deepcopy(maps[i]) for i in picks]
    for _ in range(data.draw(st.integers(0, 3))):
        row = rows[data.draw(st.integers(0, len(rows) - 1))]
        how = data.draw(st.sampled_from(["set", "drop", "add", "dup_limit", "reorder", "small"]))
        if how == "set":
            put(row, data.draw(st.sampled_from(paths(row))), data.draw(ODD))
        elif how == "drop" and row:
            del row[data.draw(st.sampled_from(sorted(row)))]
        elif how == "add":
            row[data.draw(st.sampled_from(["extra", "watermarks", "products", "on_breach"]))] = data.draw(ODD)
        elif how == "dup_limit" and isinstance(row.get("limits"), list) and row["limits"]:
            row["limits"].append(copy.deepcopy(row["limits"][0]))
        elif how == "reorder" and row:
            first = next(iter(row))
            row[first] = row.pop(first)
        elif how == "small":  # values at the edges the columns and the checks draw
            put(row, data.draw(st.sampled_from(paths(row))),
                data.draw(st.sampled_from([0, 1, 4, 5, 8, 63, 64, -1, -32, -33, 2 ** 31, -(2 ** 31), 2 ** 63 - 1,
                                           "2024-02-29", "2023-02-29", "0000-01-01", "9999-12-31", "DT", "A-",
                                           "-A", "a" * 32, "a" * 33, "é", None, [], [0, 0], [4, 0]])))
    datas = [_packed(data, r) for r in rows]
    contracts = _FUEL.contracts if data.draw(st.booleans()) else _FUEL.contracts[:1]  # unknown contracts
    products = _FUEL.products if data.draw(st.booleans()) else _FUEL.products[1:]  # a limit's unknown product
    same(build(Stored(datas), contracts, products), build(_general(datas), contracts, products))


def test_a_replica_from_the_store_is_the_replica_from_the_rows(tmp_path):
    rows = {
        Table.PRODUCTS: tuple(_FUEL.products), Table.STATIONS: tuple(_FUEL.stations), Table.TARIFFS: (),
        Table.CONTRACTS: tuple(_FUEL.contracts), Table.STOP_LIST: (),
        Table.FUEL_CARDS: tuple(sorted(_ROWS[2:] + [replace(r, card=replace(r.card, station_ids=frozenset(
            {_FUEL.stations[0].station_id}))) for r in _CONTROLLED] + [replace(_ROWS[1], watermarks=(Watermark("S1", 7),))],
                                       key=lambda r: r.card.card_no)),
    }
    with ReplicaStore.open(tmp_path / "replica.sqlite") as store:
        for table, table_rows in rows.items():
            store.apply(FullSnapshot(table, 1, table_rows))
        stored = {t: store.iter_rows(t) for t in rows}
        assert isinstance(stored[Table.FUEL_CARDS], StoredRows)
        from_store = Replica.from_rows(stored, club=False, site_id="S1")
        plain = Replica.from_rows(rows, club=False, site_id="S1")
    assert from_store.own_watermarks == plain.own_watermarks == {(Table.FUEL_CARDS, _ROWS[1].card.card_no): 7}
    assert tuple(from_store.fuel_model.cards) == tuple(plain.fuel_model.cards)
    assert dict(from_store.fuel_model.counters) == dict(plain.fuel_model.counters)


class StoredStops(Stored):
    """StoredCards over stop-list rows."""

    def row_of(self, data: bytes) -> Any:
        self.slow += 1
        try:
            return next(rows_bulk.unpack_rows(Table.STOP_LIST, (data,)))
        except WireError as exc:
            raise Corrupt(str(exc)) from None


def _stop_columns(stop_list: Any) -> tuple[Any, ...] | str:
    try:
        cols = FuelColumns.from_rows(products=_FUEL.products, stations=_FUEL.stations, discounts=(),
                                     contracts=_FUEL.contracts, cards=(), stop_list=stop_list)
    except Corrupt as exc:
        return f"Corrupt: {exc}"
    return tuple(cols.stop_keys), cols.stop_other


STOPS = [msgpack.packb({"card_no": no, "listed_at_utc_s": at}) for no, at in (
    ("7005830000000001", 1_700_000_000), ("0042", 0), ("ABC123", 5), ("1" * 19, 2 ** 63 - 1), ("9" * 32, 1))]


def _general_stops(datas: list[bytes]) -> Iterator[str]:
    stops = StoredStops(datas)
    for d in datas:
        yield stops.row_of(d).card_no


def test_the_stop_list_takes_the_native_path_and_gives_the_same_keys():
    stored = StoredStops(STOPS)
    assert _stop_columns(stored) == _stop_columns(_general_stops(STOPS))
    assert stored.slow == 0
    keys, other = _stop_columns(stored)  # type: ignore[misc]
    assert len(keys) == 2 and other == frozenset({"ABC123", "1" * 19, "9" * 32})  # 19 digits: no key


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_the_native_stop_list_loader_accepts_and_refuses_exactly_as_the_general_path(data):
    datas = []
    for base in data.draw(st.lists(st.sampled_from(STOPS), min_size=1, max_size=4)):
        row = msgpack.unpackb(base)
        how = data.draw(st.sampled_from(["as_is", "set", "drop", "add", "reorder"]))
        if how == "set":
            row[data.draw(st.sampled_from(sorted(row)))] = data.draw(ODD)
        elif how == "drop":
            del row[data.draw(st.sampled_from(sorted(row)))]
        elif how == "add":
            row["extra"] = 1
        elif how == "reorder":
            row = dict(reversed(list(row.items())))
        datas.append(_packed(data, row))
    assert _stop_columns(StoredStops(datas)) == _stop_columns(_general_stops(datas))
