"""Reconciliation: the host ledger against the edges' journals, per site and record kind.

``host.reconcile(ledger, journals)`` counts records and sums their amounts and volumes
(:func:`host.records.facts`, the same function on both sides) per (site, kind) in each
journal file and in the ledger, and compares them. After a full sync they must match
exactly: every journaled record reached the ledger once. For a group that differs, the
record ids missing on either side are listed (a few examples).

A journal is read straight from its SQLite file (read-only; the daemon may be running) by
its documented schema (docs/journal.md), so ``host`` does not import ``terminal``; a
``terminal.journal.Journal`` object is accepted too (its ``path`` is used).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ledger import Ledger
from .records import BodyError, facts

__all__ = ["reconcile", "Reconciliation", "GroupTotals", "Mismatch"]

_EXAMPLES = 10


@dataclass(frozen=True, slots=True)
class GroupTotals:
    """Records of one (site, kind): how many, and their amounts and volumes summed."""

    count: int = 0
    amount_kop: int = 0
    volume_ml: int = 0


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A (site, kind) whose totals differ, with example record ids missing on each side."""

    site_id: str
    kind: str
    edge: GroupTotals
    host: GroupTotals
    missing_on_host: tuple[str, ...] = ()
    unknown_to_edge: tuple[str, ...] = ()


@dataclass
class Reconciliation:
    """The comparison: per (site, kind) totals of both sides, and what differs."""

    edge: dict[tuple[str, str], GroupTotals] = field(default_factory=dict)
    host: dict[tuple[str, str], GroupTotals] = field(default_factory=dict)
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    @property
    def records(self) -> int:
        return sum(t.count for t in self.edge.values())

    def summary(self) -> str:
        """A few lines for a terminal: totals, then each mismatch."""
        sites = sorted({s for s, _ in self.edge})
        lines = [f"reconciliation: {len(sites)} site(s), {self.records} journal records, "
                 f"{sum(t.count for t in self.host.values())} in the host ledger: "
                 + ("match: OK" if self.ok else f"MISMATCH in {len(self.mismatches)} group(s)")]
        for m in self.mismatches:
            lines.append(f"  {m.site_id} {m.kind}: edge {m.edge.count} records / {m.edge.amount_kop} kop / "
                         f"{m.edge.volume_ml} ml, host {m.host.count} / {m.host.amount_kop} / {m.host.volume_ml}"
                         + (f"; missing on the host e.g. {', '.join(m.missing_on_host[:3])}" if m.missing_on_host else "")
                         + (f"; not in the journal e.g. {', '.join(m.unknown_to_edge[:3])}" if m.unknown_to_edge else ""))
        return "\n".join(lines)


def _path(journal: Any) -> Path:
    if isinstance(journal, (str, os.PathLike)):
        return Path(journal)
    p = getattr(journal, "path", None)
    if p is None:
        raise TypeError(f"a journal is a path or has a .path, got {type(journal).__name__}")
    return Path(p)


def _open_ro(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise FileNotFoundError(f"journal {str(path)!r} does not exist")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def _add(acc: dict, key: tuple[str, str], amount: int | None, volume: int | None) -> None:
    c, a, v = acc.get(key, (0, 0, 0))
    acc[key] = (c + 1, a + (amount or 0), v + (volume or 0))


def _fact(kind: str, body: dict) -> tuple[int | None, int | None]:
    try:
        f = facts(kind, body)
    except BodyError:
        return None, None
    return f.amount_kop, f.volume_ml


def reconcile(ledger: Ledger, journals: Iterable[Any] | Any) -> Reconciliation:
    """Compare ``ledger`` with the edge ``journals`` (paths or Journal objects) per (site, kind),
    over the sites the journals hold. Raises FileNotFoundError for a missing journal file."""
    if isinstance(journals, (str, os.PathLike)) or hasattr(journals, "path"):
        journals = [journals]
    edge: dict[tuple[str, str], tuple[int, int, int]] = {}
    edge_ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    for j in journals:
        conn = _open_ro(_path(j))
        try:
            for rid, site, kind, body in conn.execute("SELECT record_id, site_id, kind, body FROM records"):
                amount, volume = _fact(kind, json.loads(body))
                _add(edge, (site, kind), amount, volume)
                edge_ids[(site, kind)].add(rid)
        finally:
            conn.close()
    sites = sorted({s for s, _ in edge})
    host: dict[tuple[str, str], tuple[int, int, int]] = {}
    if sites:
        for site, kind, n, amount, volume in ledger.db.select_in(
                "SELECT site_id, kind, count(*), sum(amount_kop), sum(volume_ml) FROM records "
                "WHERE site_id IN ({in}) GROUP BY site_id, kind", sites):
            host[(site, kind)] = (int(n), int(amount or 0), int(volume or 0))
    out = Reconciliation({k: GroupTotals(*v) for k, v in edge.items()}, {k: GroupTotals(*v) for k, v in host.items()})
    for key in sorted(set(edge) | set(host)):
        e, h = out.edge.get(key, GroupTotals()), out.host.get(key, GroupTotals())
        if e == h:
            continue
        on_host = {r[0] for r in ledger.db.fetchall("SELECT record_id FROM records WHERE site_id = ? AND kind = ?", key)}
        mine = edge_ids.get(key, set())
        out.mismatches.append(Mismatch(key[0], key[1], e, h, tuple(sorted(mine - on_host))[:_EXAMPLES],
                                       tuple(sorted(on_host - mine))[:_EXAMPLES]))
    return out
