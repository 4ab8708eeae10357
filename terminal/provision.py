"""Provisioning: which host tables a site needs, how far it got, and its replica built from them.

A site serves only once its replica store (:mod:`terminal.replica_store`) holds a whole,
verified snapshot of every table its business needs (:func:`tables_needed`): a pump site the
fuel tables, a till site the club tables, both all; the stop list always. The snapshots come
from the host's retained snapshot topics through the sync client (docs/operations.md,
"Provisioning a new site"); :class:`ProvisionStatus` is what the site says while it waits, in
its log and on ``/v1/health``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from authz.errors import ModelError
from native import _rowload
from native.compact import ContractColumns, FilledCards, FilledStopList, card_key, load_card_datas
from wire import ReplicaSnapshot, Table, WireError
from wire.rows_bulk import PackedRows, unpack_rows

from .config import SiteConfig
from .replica import CLUB_TABLES as _CLUB_BUSINESS
from .replica import FUEL_TABLES as _FUEL_BUSINESS
from .replica import Replica

__all__ = ["CLUB_TABLES", "FUEL_TABLES", "EagerColumns", "ProvisionStatus", "build_replica", "tables_needed"]

log = logging.getLogger(__name__)

#: What a pump site decides on (the stop list among them).
FUEL_TABLES: tuple[Table, ...] = tuple(_FUEL_BUSINESS)
#: What a till site decides on: the club's tables and the stop list.
CLUB_TABLES: tuple[Table, ...] = (*_CLUB_BUSINESS, *(() if Table.STOP_LIST in _CLUB_BUSINESS else (Table.STOP_LIST,)))


def tables_needed(config: SiteConfig) -> tuple[Table, ...]:
    """The tables ``config``'s site needs: the fuel tables if it has pumps, the club tables if
    it has tills (a site with neither needs the stop list only)."""
    wanted: list[Table] = []
    for tables, used in ((FUEL_TABLES, bool(config.pumps)), (CLUB_TABLES, bool(config.tills))):
        if used:
            wanted += [t for t in tables if t not in wanted]
    return tuple(wanted) or (Table.STOP_LIST,)


@dataclass(frozen=True, slots=True)
class ProvisionStatus:
    """Where provisioning stands: the tables wanted, those held whole (with their versions),
    and the snapshot parts collected so far of those still missing."""

    wanted: tuple[Table, ...]
    held: Mapping[Table, int]  #: table -> version, whole snapshots only
    collecting: Mapping[Table, tuple[int, int, int]]  #: table -> (version, parts held, parts)

    @property
    def missing(self) -> tuple[Table, ...]:
        """The tables wanted and not held."""
        return tuple(t for t in self.wanted if t not in self.held)

    @property
    def complete(self) -> bool:
        """Every table wanted is held."""
        return not self.missing

    def text(self) -> str:
        """One line for the log: ``tables held 2/6 (...); waiting for fuel_cards (parts 3/12 of version 5), ...``."""
        held = ", ".join(f"{t.value}@{v}" for t, v in self.held.items() if t in self.wanted) or "none"
        waits = []
        for t in self.missing:
            c = self.collecting.get(t)
            waits.append(f"{t.value} (parts {c[1]}/{c[2]} of version {c[0]})" if c else f"{t.value} (no part yet)")
        line = f"tables held {len(self.wanted) - len(self.missing)}/{len(self.wanted)} ({held})"
        return line + (f"; waiting for {', '.join(waits)}" if waits else "")

    def as_dict(self) -> dict[str, Any]:
        """For ``/v1/health``."""
        return {"tables_wanted": [t.value for t in self.wanted],
                "tables_held": {t.value: v for t, v in self.held.items() if t in self.wanted},
                "tables_missing": [t.value for t in self.missing],
                "parts_collected": {t.value: {"version": c[0], "parts": c[1], "of": c[2]}
                                    for t, c in self.collecting.items() if t in self.missing}}


def build_replica(config: SiteConfig, rows: Mapping[Table, Iterable[Any]], *,
                  versions: Mapping[Table, int] | None = None, impl: str | None = None) -> Replica:
    """The site's replica from whole host tables (rows as :func:`wire.decode` gives them; each
    iterable read once, so the store can stream a million cards): the fuel business for a
    site with pumps, the club for one with tills (:meth:`terminal.replica.Replica.from_rows`).
    Raises :class:`terminal.replica.ReplicaUpdateError` for tables that do not hold together."""
    return Replica.from_rows(rows, fuel=bool(config.pumps), club=bool(config.tills), versions=versions, impl=impl,
                             site_id=config.site_id)  # the balance rule: each row's watermark for this site


# -- the fuel columns filled while the snapshots are staged ------------------------------------------

class _Fill:
    """One table's columns being filled from the parts of one staged snapshot, in part order."""

    __slots__ = ("deps", "done", "last", "next", "off", "parts", "phys", "rows", "table", "target", "version")

    def __init__(self, table: Table, version: int, parts: int) -> None:
        self.table, self.version, self.parts = table, version, parts
        self.next = 0  # the part to fill next: parts come in order, or the fill is off
        self.done: set[int] = set()  # parts the store was asked to stage (it ignores a part twice)
        self.rows = 0
        self.phys: str | None = None  # the store's generation the parts went into
        self.off: str | None = None  # why these columns will not be used (the build reads the store)
        self.last: Any = None  # the last key filled (the store's order)
        self.deps: tuple[Any, ...] = ()  # for fuel cards: the contracts' fill, the products' generation and version
        self.target: Any = None  # ContractColumns, FilledCards or FilledStopList


class EagerColumns:
    """The fuel business's big tables (contracts, fuel cards, the stop list) put into the
    evaluators' columns while their snapshots' parts are staged, so that once the last table
    is stored the build does not read them back (docs/sync.md, "Fifth pass").

    The daemon calls :meth:`plan` for each verified part before the store writes it, then
    :meth:`fill` on the event loop while the store writes it in its thread (SQLite inserts a
    part kept as received without the interpreter lock), then :meth:`written`. The store
    stays the durable copy and the judge: :meth:`rows` hands a table's filled columns to the
    build only if the store committed exactly the generation they were filled from (every
    part of it, in order, each once; the same version and row count; no delta since) and, for
    fuel cards, on the contracts' filled columns and the products held when they were filled;
    any other table, or a fill that is off (a part out of order or not kept as received, a
    snapshot abandoned, replaced or broken, a row the columns refuse), is read from the store
    as before, which also says what is wrong with it in its own words."""

    TABLES = (Table.CONTRACTS, Table.FUEL_CARDS, Table.STOP_LIST)

    def __init__(self) -> None:
        self._fills: dict[Table, _Fill] = {}

    def plan(self, part: ReplicaSnapshot, fresh: bool, store: Any) -> _Fill | None:
        """The fill ``part`` goes into (None: none), decided as the store decides what it does
        with the part (:meth:`terminal.replica_store.ReplicaStore.stage_part`). Call it before
        the store writes ``part``: it may read the products from the store."""
        table = Table(part.table)
        if table not in self.TABLES:
            return None
        held = store.info().get(table)
        if held is not None and part.version <= held.version:
            return None  # the store ignores it
        f = self._fills.get(table)
        if f is None or fresh or (f.version, f.parts) != (part.version, part.parts):
            f = self._fills[table] = _Fill(table, part.version, part.parts)  # the store starts a new generation
        if part.part in f.done:
            return None  # the store ignores a part it has
        f.done.add(part.part)
        if f.off:
            return None
        if part.part != f.next:
            f.off = f"part {part.part} came before part {f.next}"
        elif type(part.rows) is not PackedRows:
            f.off = f"part {part.part} was not kept as received"
        elif f.target is None:
            self._start(f, store)
        return None if f.off else f

    def _start(self, f: _Fill, store: Any) -> None:
        if f.table is Table.CONTRACTS:
            f.target = ContractColumns(Table.CONTRACTS, rising=True)
        elif f.table is Table.STOP_LIST:
            f.target = FilledStopList(Table.STOP_LIST)
        else:  # on the contracts filled and stored, and the products stored: positions known
            cf = self._fills.get(Table.CONTRACTS)
            if cf is None or not self._usable(cf, store):
                f.off = "the contracts were not filled and stored before the fuel cards came"
                return
            held = store.info().get(Table.PRODUCTS)
            if held is None:
                f.off = "the products were not stored before the fuel cards came"
                return
            codes = tuple(p.code for p in store.iter_rows(Table.PRODUCTS))
            f.deps = (cf, store.generation(Table.PRODUCTS), held.version)
            f.target = FilledCards(Table.FUEL_CARDS, cf.target, codes)

    def fill(self, f: _Fill, part: ReplicaSnapshot) -> None:
        """Put ``part``'s rows into ``f``'s columns (on the event loop, while the store writes
        them). A row the columns refuse turns the fill off (the build then reads the store)."""
        rows = part.rows
        assert type(rows) is PackedRows
        try:
            if f.table is Table.CONTRACTS:
                cc = f.target
                ids = cc.arrays["ct_id"]
                if _rowload.load_packed_contracts(rows.data, rows.bounds, cc.arrays, cc.tz_pos,
                                                  ids[-1] if ids else -1) is None:  # not as expected: as objects
                    cs = list(rows)  # checked as the store's rows are read back (wire.rows_bulk.unpack_rows)
                    cc.noted += [c for c in cs if c.watermarks or c.allowances]
                    cc.add(cs)  # in rising id order (the store's), or refused
            else:
                last = _rowload.part_keys_after(rows.data, rows.bounds, f.last or b"")
                if last is None and f.table is Table.FUEL_CARDS:
                    raise ValueError("the fuel cards are not in the store's order")
                f.last = last or f.last
                t = f.target
                if f.table is Table.FUEL_CARDS:
                    load_card_datas(rows.datas(), lambda d: _slow_card(t, d), f.deps[0].target,
                                    {c: i for i, c in enumerate(t.product_codes)}, t.cols, t.day_of)
                    if f.next + 1 == f.parts:
                        t.day_of = {}  # not held while the rest is received
                else:
                    _rowload.load_stop_keys(rows.datas(), lambda d: next(unpack_rows(Table.STOP_LIST, (d,))).card_no,
                                            card_key, t.keys, t.other)
        except (WireError, ModelError, ValueError, TypeError, OverflowError, AttributeError) as exc:
            f.off = f"part {part.part}: {exc}"
            return
        f.rows += len(rows)
        f.next += 1

    def written(self, f: _Fill, ok: bool, phys: str | None) -> None:
        """The store wrote the part ``f`` was filled with (``ok``) into generation ``phys``."""
        if not ok:
            f.off = f.off or "the store did not write a part"
        elif f.phys is None:
            f.phys = phys
        elif f.phys != phys:
            f.off = f.off or "the store started the snapshot again"

    def failed(self, table: Table) -> None:
        """The store could not write a part of ``table`` (it starts that snapshot again)."""
        f = self._fills.pop(table, None)
        if f is not None:
            f.off = f.off or "the store could not write a part"

    def _usable(self, f: _Fill, store: Any) -> bool:
        held = store.info().get(f.table)
        return (not f.off and f.next == f.parts and f.phys is not None and held is not None
                and held.version == f.version and held.rows == f.rows and store.generation(f.table) == f.phys)

    def usable(self, store: Any) -> dict[Table, Any]:
        """The filled columns of each table the store holds exactly as filled (class docstring)."""
        out: dict[Table, Any] = {}
        for table, f in self._fills.items():
            if not self._usable(f, store):
                continue
            if table is Table.FUEL_CARDS:
                cf: _Fill = f.deps[0]
                products_phys, products_version = f.deps[1:]
                held = store.info().get(Table.PRODUCTS)
                if (self._fills.get(Table.CONTRACTS) is not cf or not self._usable(cf, store) or held is None
                        or held.version != products_version or store.generation(Table.PRODUCTS) != products_phys):
                    continue
            out[table] = f.target
        if Table.FUEL_CARDS in out and Table.CONTRACTS not in out:
            del out[Table.FUEL_CARDS]
        return out

    def rows(self, store: Any, needed: Iterable[Table]) -> dict[Table, Any]:
        """What :func:`build_replica` builds from: each table of ``needed`` as filled if it is
        usable (:meth:`usable`), else streamed from the store (:meth:`ReplicaStore.iter_rows`)."""
        filled = self.usable(store)
        for table, f in self._fills.items():
            if table not in filled:
                log.info("provisioning: %s read back from the store (%s)", table.value,
                         f.off or "not stored as filled")
        self._fills.clear()
        return {t: filled[t] if t in filled else store.iter_rows(t) for t in needed}


def _slow_card(t: FilledCards, data: bytes) -> tuple[Any, Any]:
    """A fuel-card row the native loader does not take, by the general path (as the store's
    :meth:`StoredRows.card_of`), kept if it carries the balance rule's fields."""
    row = next(unpack_rows(Table.FUEL_CARDS, (data,)))
    if row.watermarks:
        t.noted.append(row)
    return row.card, row.counters
