"""Provisioning: which host tables a site needs, how far it got, and its replica built from them.

A site serves only once its replica store (:mod:`terminal.replica_store`) holds a whole,
verified snapshot of every table its business needs (:func:`tables_needed`): a pump site the
fuel tables, a till site the club tables, both all; the stop list always. The snapshots come
from the host's retained snapshot topics through the sync client (docs/operations.md,
"Provisioning a new site"); :class:`ProvisionStatus` is what the site says while it waits, in
its log and on ``/v1/health``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wire import Table

from .config import SiteConfig
from .replica import Replica

__all__ = ["CLUB_TABLES", "FUEL_TABLES", "ProvisionStatus", "build_replica", "tables_needed"]

#: What a pump site decides on.
FUEL_TABLES: tuple[Table, ...] = (Table.STOP_LIST, Table.PRODUCTS, Table.STATIONS, Table.TARIFFS,
                                  Table.CONTRACTS, Table.FUEL_CARDS)
#: What a till site decides on.
CLUB_TABLES: tuple[Table, ...] = (Table.CLUB_RULES, Table.CLUB_ACCOUNTS, Table.STOP_LIST)


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


def build_replica(config: SiteConfig, tables: Mapping[Table, Sequence[Any]], *, impl: str | None = None) -> Replica:
    """The site's replica from whole host tables (rows as :func:`wire.decode` gives them).

    Uses :meth:`terminal.replica.Replica.from_rows` when this build has it; otherwise builds
    the fuel and club models here (FuelModel, ClubModel: fine for tests and small sites; the
    compact columns for a million cards come with ``from_rows``). Raises
    :class:`authz.errors.AuthzError` (``ModelError``) for tables that do not hold together."""
    from_rows = getattr(Replica, "from_rows", None)
    if from_rows is not None:
        return from_rows(config, tables, impl=impl)  # type: ignore[no-any-return]
    return _models_replica(config, tables, impl)


def _models_replica(config: SiteConfig, tables: Mapping[Table, Sequence[Any]], impl: str | None) -> Replica:
    from authz.club_model import ClubModel
    from authz.fuel_model import FuelModel

    fuel = club = None
    stops = [r.card_no for r in tables.get(Table.STOP_LIST, ())]
    if config.pumps:
        cards = tables[Table.FUEL_CARDS]
        fuel = FuelModel(products=tables[Table.PRODUCTS], stations=tables[Table.STATIONS],
                         contracts=tables[Table.CONTRACTS], cards=[r.card for r in cards],
                         discounts=[d for t in tables[Table.TARIFFS] for d in t.discounts], stop_list=stops,
                         counters={(r.card.card_no, lid): c for r in cards for lid, c in r.counters})
    if config.tills:
        rules = tables[Table.CLUB_RULES]
        if len(rules) != 1:
            from authz.errors import ModelError
            raise ModelError(f"the club_rules table holds {len(rules)} rows; a club has one")
        accounts = tables[Table.CLUB_ACCOUNTS]
        club = ClubModel(rules=rules[0], accounts=[r.account for r in accounts],
                         cards=[c for r in accounts for c in r.cards])
    return Replica(fuel, club, impl=impl)
