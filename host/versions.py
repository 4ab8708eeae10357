"""Replica versions: every change of a replica table, inside the transaction that makes it.

Each table has one version counter (``replica_versions``). A change made by an operator
(a block, a limit, a tariff) calls :func:`record_change` in its own transaction: the version
goes up and a delta row names the keys upserted or deleted; the publisher builds the rows
when it publishes, so a block is a delta at once. Changes that ingest makes (balances,
counters, club accounts, thousands a second) only :func:`mark_dirty` their keys; the
publisher folds them into one delta every few seconds (:meth:`host.publisher.Publisher.flush_dirty`).

Versions of one table are consecutive: the counter row is locked (``FOR UPDATE``) while a
version is allocated, so two transactions never make two deltas from the same version.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from wire import Table

from .db import Database
from .rows import dumps

__all__ = ["INT_KEYED", "MAX_KEYS_PER_DELTA", "record_change", "mark_dirty", "current_version", "key_from_text", "ensure_version"]

#: Tables whose row keys are integers (the others have text keys).
INT_KEYED = frozenset({Table.STATIONS, Table.TARIFFS, Table.CONTRACTS, Table.CLUB_ACCOUNTS})
#: Keys per delta row: a delta must fit in one message (1 MiB).
MAX_KEYS_PER_DELTA = 500


def key_from_text(table: Table, key: str) -> str | int:
    return int(key) if table in INT_KEYED else key


def current_version(db: Database, table: Table) -> int:
    return db.scalar("SELECT version FROM replica_versions WHERE tbl = ?", (table.value,), 0)


def _lock_version(db: Database, table: Table) -> int:
    db.execute("INSERT INTO replica_versions (tbl, version) VALUES (?, 0) ON CONFLICT (tbl) DO NOTHING",
               (table.value,))
    return db.scalar(f"SELECT version FROM replica_versions WHERE tbl = ?{db.for_update}", (table.value,), 0)


def ensure_version(db: Database, table: Table) -> int:
    """Move a table still at version 0 to version 1 (with no delta: a site at 0 sees the gap
    and takes a snapshot); returns the version."""
    version = _lock_version(db, table)
    if version == 0:
        db.execute("UPDATE replica_versions SET version = 1 WHERE tbl = ?", (table.value,))
        return 1
    return version


def record_change(db: Database, table: Table, upserts: Sequence = (), deletes: Sequence = (), *,
                  now_utc_s: int) -> int:
    """Record that ``upserts`` and ``deletes`` (row keys) of ``table`` changed; returns the new
    version (the current one if nothing changed). Call inside the transaction of the change."""
    up = list(dict.fromkeys(upserts))
    gone = [k for k in dict.fromkeys(deletes) if k not in set(up)]
    if not up and not gone:
        return current_version(db, table)
    version = _lock_version(db, table)
    keys = [("u", k) for k in up] + [("d", k) for k in gone]
    rows = []
    for i in range(0, len(keys), MAX_KEYS_PER_DELTA):
        part = keys[i:i + MAX_KEYS_PER_DELTA]
        rows.append((table.value, version + 1, version, dumps([k for t, k in part if t == "u"]),
                     dumps([k for t, k in part if t == "d"]), now_utc_s))
        version += 1
    db.executemany("INSERT INTO replica_deltas (tbl, to_version, from_version, upsert_keys, delete_keys, "
                   "created_at_utc_s) VALUES (?, ?, ?, ?, ?, ?)", rows)
    db.execute("UPDATE replica_versions SET version = ? WHERE tbl = ?", (version, table.value))
    return version


def mark_dirty(db: Database, keys: Iterable[tuple[Table, str | int]], site_id: str | None = None) -> None:
    """Note rows that ingest changed, for the publisher's next coalesced delta. The upsert
    locks the dirty row until commit, so a concurrent flush cannot clear the mark and read the
    row before this transaction's change is visible.

    ``site_id``: the site whose spend changed them. Each row then holds some of that site's
    spend, so every publication of the row names the site's watermark (``replica_spenders``;
    the balance rule, :mod:`authz.balance`)."""
    rows = sorted({(t.value, str(k)) for t, k in keys})
    db.insert_many("replica_dirty", ("tbl", "key", "gen"), ("text", "text", "bigint"), [r + (0,) for r in rows],
                   "ON CONFLICT (tbl, key) DO UPDATE SET gen = replica_dirty.gen + 1")
    if site_id is not None:  # new spend on a row whose pruning is under way stops it (host.watermarks)
        db.insert_many("replica_spenders", ("tbl", "key", "site_id"), ("text", "text", "text"),
                       [r + (site_id,) for r in rows], "ON CONFLICT (tbl, key, site_id) DO UPDATE SET "
                       "cover_version = NULL, cover_seq = NULL WHERE replica_spenders.cover_seq IS NOT NULL")
