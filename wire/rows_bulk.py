"""A fast path for the replica's big tables: fuel-card, stop-list and contract rows, checked in bulk.

A site provisioned with a million fuel cards checks a million rows when the snapshot parts
arrive and again when it reads its store back. The row checks of :mod:`wire.codec` are one
function call per field (~50 us a fuel card); here the same checks are written inline, and
the values that repeat from card to card (a limit, a set of product groups, an expiry
date) are checked once and shared (a Limit is a frozen dataclass: one object serves every
card that has that limit).

The fast path accepts a *subset* of what :mod:`wire.codec` accepts and gives the same rows
for it: whenever a row is not plainly well formed it answers None, and the caller runs the
codec's own check, which gives the exact refusal (the same message, the same row index).
So a part or a stored table is refused for the same reasons either way;
``tests/wire/test_rows_bulk.py`` checks with hypothesis that the two agree on every row.

:func:`parse_rows` serves :func:`wire.codec.decode` (a snapshot part's or a delta's rows);
:func:`pack_rows` and :func:`unpack_rows` serve the replica store (``terminal/replica_store.py``).
:class:`PackedRows` is a snapshot part's rows kept as the bytes received
(``decode(..., raw_rows=True)``, checked by :mod:`wire._partscan`), which the store writes as
they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, overload

import msgpack

from authz.fuel_model import (
    CardKind,
    CardStatus,
    Contract,
    FuelCard,
    Limit,
    LimitCounter,
    LimitUnit,
    Period,
    ProductGroup,
    Scope,
    Tariff,
)
from authz.money import MAX_AMOUNT_KOP

from . import codec as _codec
from ._partscan import TABLE_CODES as _TABLE_CODES
from ._partscan import datas as _datas
from ._partscan import iter_items as _iter_items
from .messages import FuelCardRow, RowKey, StopListEntry, Table, row_key

__all__ = ["FAST_TABLES", "PackedRows", "pack_rows", "parse_rows", "unpack_rows"]

_INT64_MIN, _INT64_MAX = _codec.INT64_MIN, _codec.INT64_MAX
_CARD_NO = re.compile(r"[0-9A-Za-z]{1,32}").fullmatch
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}").fullmatch
_CODE = _codec._CODE.fullmatch
_CARD_KEYS = _codec._CARD[1]
_LIMIT_KEYS = _codec._LIMIT[1]
_COUNTER_KEYS = _codec._COUNTER[1]
_STOP_KEYS = _codec._STOP[1]
_CONTRACT_KEYS = _codec._CONTRACT[1]
_TZ = _codec._TZ.fullmatch
_TARIFFS = {int(m): m for m in Tariff}
_UNITS = {int(m): m for m in LimitUnit}
_PERIODS = {int(m): m for m in Period}
_SCOPES = {int(m): m for m in Scope}
_GROUP = {int(m): m for m in ProductGroup}
_KINDS = {int(m): m for m in CardKind}
_STATUSES = {int(m): m for m in CardStatus}
_MAX_LIMITS = 1_000  # as wire.codec: a card's limits and counters

# shared values, checked once (bounded: a hostile stream of distinct values only fills them)
_CACHE_MAX = 100_000
_dates: dict[str, date] = {}
_groups: dict[tuple[Any, ...], frozenset[ProductGroup]] = {}
_limits: dict[tuple[Any, ...], Limit] = {}


def _date(v: object) -> date | None:
    d = _dates.get(v) if type(v) is str else None
    if d is None:
        if type(v) is not str or not _DATE_RE(v):
            return None
        try:
            d = date.fromisoformat(v)
        except ValueError:
            return None
        if len(_dates) < _CACHE_MAX:
            _dates[v] = d
    return d


def _group_set(v: object) -> frozenset[ProductGroup] | None:
    if type(v) is not list or len(v) > len(_GROUP):
        return None
    key = tuple(v)
    if any(type(x) is not int for x in key):
        return None  # (and nothing unhashable reaches the cache)
    g = _groups.get(key)
    if g is None:
        if any(x not in _GROUP for x in key) or len(set(key)) != len(key):
            return None
        g = frozenset(_GROUP[x] for x in key)
        if len(_groups) < _CACHE_MAX:
            _groups[key] = g
    return g


def _limit(v: object) -> Limit | None:
    if type(v) is not dict or v.keys() != _LIMIT_KEYS:
        return None
    lid, unit, period, amount, scope, group, product = (v["limit_id"], v["unit"], v["period"], v["amount"],
                                                        v["scope"], v["group"], v["product"])
    if type(lid) is not int or type(unit) is not int or type(period) is not int or type(amount) is not int \
            or type(scope) is not int or (group is not None and type(group) is not int) \
            or (product is not None and type(product) is not str):
        return None
    key = (lid, unit, period, amount, scope, group, product)
    lim = _limits.get(key)
    if lim is None:
        if not (0 <= lid <= _INT64_MAX and 0 <= amount <= MAX_AMOUNT_KOP and unit in _UNITS and period in _PERIODS
                and scope in _SCOPES and (group is None or group in _GROUP)
                and (product is None or _CODE(product))):
            return None
        lim = Limit(lid, _UNITS[unit], _PERIODS[period], amount, _SCOPES[scope],
                    None if group is None else _GROUP[group], None if product is None else str(product))
        if len(_limits) < _CACHE_MAX:
            _limits[key] = lim
    return lim


def _card_row(v: object) -> FuelCardRow | None:
    """The row of fuel-card map ``v`` if it is plainly well formed, else None."""
    if type(v) is not dict or v.keys() != _CARD_KEYS:
        return None
    no, cid, kind, status = v["card_no"], v["contract_id"], v["kind"], v["status"]
    if type(no) is not str or not _CARD_NO(no) or type(cid) is not int or not 0 <= cid <= _INT64_MAX \
            or type(kind) is not int or kind not in _KINDS or type(status) is not int or status not in _STATUSES:
        return None
    expires = _date(v["expires_on"])
    groups = _group_set(v["groups"])
    raw_limits, raw_counters = v["limits"], v["counters"]
    if expires is None or groups is None or type(raw_limits) is not list or len(raw_limits) > _MAX_LIMITS \
            or type(raw_counters) is not list or len(raw_counters) > _MAX_LIMITS:
        return None
    limits = []
    for x in raw_limits:
        lim = _limit(x)
        if lim is None:
            return None
        limits.append(lim)
    ids = {lim.limit_id for lim in limits}
    if len(ids) != len(limits):
        return None
    counters = []
    for c in raw_counters:
        if type(c) is not dict or c.keys() != _COUNTER_KEYS:
            return None
        lid, spent, start = c["limit_id"], c["spent"], c["period_start"]
        if type(lid) is not int or type(spent) is not int or type(start) is not int or lid not in ids \
                or not _INT64_MIN <= spent <= _INT64_MAX or not _INT64_MIN <= start <= _INT64_MAX:
            return None
        counters.append((lid, LimitCounter(spent, start)))
    if len(counters) > 1 and len({lid for lid, _ in counters}) != len(counters):
        return None
    return FuelCardRow(FuelCard(str(no), cid, expires, groups, tuple(limits), _KINDS[kind], _STATUSES[status]),
                       tuple(counters))


_tz_ok: dict[str, str] = {}


def _contract_row(v: object) -> Contract | None:
    """The contract of map ``v`` if it is plainly well formed, else None."""
    if type(v) is not dict or v.keys() != _CONTRACT_KEYS:
        return None
    cid, tz, home, tariff, balance, credit, chosen = (v["contract_id"], v["tz"], v["home_region"], v["tariff"],
                                                      v["balance_kop"], v["credit_line_kop"], v["chosen_station_ids"])
    if type(cid) is not int or type(home) is not int or type(tariff) is not int or type(balance) is not int \
            or type(credit) is not int or type(tz) is not str or type(chosen) is not list or len(chosen) > 3 \
            or not 0 <= cid <= _INT64_MAX or not 0 <= home <= _INT64_MAX or tariff not in _TARIFFS \
            or not -MAX_AMOUNT_KOP <= balance <= MAX_AMOUNT_KOP or not 0 <= credit <= MAX_AMOUNT_KOP \
            or any(type(x) is not int or not 0 <= x <= _INT64_MAX for x in chosen):
        return None
    zone = _tz_ok.get(tz)
    if zone is None:
        if not _TZ(tz):
            return None
        zone = str(tz)
        if len(_tz_ok) < _CACHE_MAX:
            _tz_ok[tz] = zone
    return Contract(cid, zone, home, _TARIFFS[tariff], balance, credit, tuple(chosen))


def _stop_row(v: object) -> StopListEntry | None:
    if type(v) is not dict or v.keys() != _STOP_KEYS:
        return None
    no, at = v["card_no"], v["listed_at_utc_s"]
    if type(no) is not str or not _CARD_NO(no) or type(at) is not int or not 0 <= at <= _INT64_MAX:
        return None
    return StopListEntry(str(no), at)


_FAST: dict[Table, Callable[[object], Any]] = {Table.FUEL_CARDS: _card_row, Table.STOP_LIST: _stop_row,
                                               Table.CONTRACTS: _contract_row}
#: The tables that have a fast path.
FAST_TABLES = frozenset(_FAST)


def parse_rows(table: Table, items: Sequence[object]) -> tuple[Any, ...] | None:
    """The rows of ``table`` that the wire maps ``items`` stand for, or None when the table
    has no fast path or any item is not plainly well formed (then :mod:`wire.codec` checks
    them one by one and says what is wrong). Keys are not checked for uniqueness here."""
    parse = _FAST.get(table)
    if parse is None:
        return None
    out = []
    for v in items:
        r = parse(v)
        if r is None:
            return None
        out.append(r)
    return tuple(out)


# -- the replica store's rows --------------------------------------------------------------

_limit_maps: dict[Limit, dict[str, Any]] = {}
_group_lists: dict[frozenset[Any], list[int]] = {}
_iso: dict[date, str] = {}


def _card_to(r: FuelCardRow) -> dict[str, Any]:
    c = r.card
    limits = []
    for lim in c.limits:
        m = _limit_maps.get(lim)
        if m is None:
            m = {"limit_id": lim.limit_id, "unit": int(lim.unit), "period": int(lim.period), "amount": lim.amount,
                 "scope": int(lim.scope), "group": None if lim.group is None else int(lim.group),
                 "product": lim.product}
            if len(_limit_maps) < _CACHE_MAX:
                _limit_maps[lim] = m
        limits.append(m)
    groups = _group_lists.get(c.groups)
    if groups is None:
        groups = sorted(int(g) for g in c.groups)
        if len(_group_lists) < _CACHE_MAX:
            _group_lists[c.groups] = groups
    exp = c.expires_on
    iso = _iso.get(exp) if type(exp) is date else None
    if iso is None:
        iso = exp.isoformat() if isinstance(exp, date) else exp
        if type(exp) is date and len(_iso) < _CACHE_MAX:
            _iso[exp] = iso
    return {"card_no": c.card_no, "contract_id": c.contract_id, "expires_on": iso, "groups": groups,
            "limits": limits, "kind": int(c.kind), "status": int(c.status),
            "counters": [{"limit_id": lid, "spent": ctr.spent, "period_start": ctr.period_start}
                         for lid, ctr in r.counters]}


def _plain(c: FuelCard) -> bool:
    """Whether ``c`` has none of the fleet controls (which :func:`_card_to` does not write)."""
    return (c.products is None and not c.windows and not c.station_scope and not c.station_ids
            and not c.on_breach and not any(lim.on_breach for lim in c.limits))


def _slow(table: Table, row: Any) -> tuple[Any, bytes]:
    data = _codec.pack_row(table, row)  # checks the row's type first
    return row_key(table, row), data


def pack_rows(table: Table, rows: Iterable[Any]) -> Iterator[tuple[Any, bytes]]:
    """(key, :func:`wire.pack_row` bytes) of each of ``rows``, the same bytes, faster for
    fuel cards; for :class:`PackedRows` of ``table``, their bytes as received (which are those
    bytes). Raises :class:`~wire.errors.WireFormatError` for a row not of ``table``."""
    if type(rows) is PackedRows and rows.table is table:
        yield from rows.items()
        return
    packer = msgpack.Packer(use_bin_type=True)
    if table is Table.FUEL_CARDS:
        for r in rows:
            if type(r) is not FuelCardRow or type(r.card) is not FuelCard or not _plain(r.card) or r.watermarks:
                yield _slow(table, r)  # says what is wrong, or writes the controls' or the balance rule's fields
            else:
                yield r.card.card_no, packer.pack(_card_to(r))
    elif table is Table.STOP_LIST:
        for r in rows:
            if type(r) is not StopListEntry:
                yield _slow(table, r)
            else:
                yield r.card_no, packer.pack({"card_no": r.card_no, "listed_at_utc_s": r.listed_at_utc_s})
    else:
        for r in rows:
            yield _slow(table, r)


def unpack_rows(table: Table, datas: Iterable[bytes]) -> Iterator[Any]:
    """The rows :func:`pack_rows` (or :func:`wire.pack_row`) packed, each with every check
    :func:`wire.unpack_row` runs (by the fast path, or by it when the fast path declines).
    Raises :class:`~wire.errors.WireFormatError` for bytes that are not such a row."""
    parse = _FAST.get(table)
    if parse is None:
        for data in datas:
            yield _codec.unpack_row(table, data)
        return
    for data in datas:
        r = None
        try:
            value = msgpack.unpackb(data, raw=False, strict_map_key=True, object_pairs_hook=_codec._pairs,
                                    ext_hook=_codec._no_ext, max_ext_len=0)
        except Exception:  # noqa: BLE001 - let the codec say what is wrong
            value = None
        else:
            r = parse(value)
        if r is None:
            r = _codec.unpack_row(table, data)  # raises WireFormatError, or accepts as the codec does
        yield r


# -- a snapshot part's rows as received ---------------------------------------------------

#: The tables whose snapshot parts can come as :class:`PackedRows`.
PACKED_TABLES = frozenset(Table(t) for t in _TABLE_CODES)


@dataclass(frozen=True, slots=True, repr=False)
class PackedRows(Sequence[Any]):
    """The rows of one snapshot part of ``table`` as they came in the frame: ``data`` is the
    whole verified frame and row i is ``data[bounds[i]:bounds[i + 1]]`` (``bounds``: native
    uint32 offsets). Every row was checked in C (:mod:`wire._partscan`) and is, byte for byte,
    what :func:`pack_rows` writes for the row :func:`wire.decode` makes of it; so the replica
    store writes :meth:`items` as they are, with no Python object per row but its key and bytes.

    It is also a sequence of the rows as objects (each read with every check of
    :func:`unpack_rows`), for a reader that wants them (tests, a site without a store).
    Made only by :func:`wire.decode` with ``raw_rows=True``."""

    table: Table
    data: bytes
    bounds: bytes

    def __len__(self) -> int:
        return len(self.bounds) // 4 - 1

    @overload
    def __getitem__(self, i: int) -> Any: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[Any, ...]: ...

    def __getitem__(self, i: int | slice) -> Any:
        datas = self.datas()
        if isinstance(i, slice):
            return tuple(unpack_rows(self.table, datas[i]))
        return next(unpack_rows(self.table, (datas[i],)))

    def __iter__(self) -> Iterator[Any]:
        return unpack_rows(self.table, self.datas())

    def __repr__(self) -> str:  # never the rows: they hold card numbers
        return f"PackedRows({self.table.value}, {len(self)} rows)"

    def datas(self) -> list[bytes]:
        """Each row's bytes, in order."""
        out: list[bytes] = _datas(self.data, self.bounds)
        return out

    def items(self) -> Iterator[tuple[RowKey, bytes]]:
        """(key, bytes) of each row, in order, one at a time: what the replica store writes."""
        out: Iterator[tuple[RowKey, bytes]] = _iter_items(_TABLE_CODES[self.table.value], self.data, self.bounds)
        return out
