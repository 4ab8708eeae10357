"""Provisioning: which host tables a site needs, how far it got, and its replica built from them.

A site serves only once its replica store (:mod:`terminal.replica_store`) holds a whole,
verified snapshot of every table its business needs (:func:`tables_needed`): a pump site the
fuel tables, a till site the club tables, both all; the stop list always. The snapshots come
from the host's retained snapshot topics through the sync client (docs/operations.md,
"Provisioning a new site"); :class:`ProvisionStatus` is what the site says while it waits, in
its log and on ``/v1/health``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from wire import Table

from .config import SiteConfig
from .replica import CLUB_TABLES as _CLUB_BUSINESS
from .replica import FUEL_TABLES as _FUEL_BUSINESS
from .replica import Replica

__all__ = ["CLUB_TABLES", "FUEL_TABLES", "ProvisionStatus", "build_replica", "tables_needed"]

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
