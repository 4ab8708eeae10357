"""The replica store: the host's tables as this site holds them, on disk beside the journal.

One SQLite file (``replica.sqlite`` in ``site.data_dir``), WAL with ``synchronous=FULL`` like
the journal (docs/journal.md): a commit is on disk when :meth:`ReplicaStore.apply` returns.

- ``tables``: one row per table held: its version, its row count, when it was written (the
  site's clock) and whether a whole snapshot was ever stored (``complete``);
- ``rows``: every row of every table, keyed by ``(table, key)``; a row is the MessagePack of
  its wire form (:func:`wire.pack_row`), and is read back with every check :func:`wire.decode`
  runs on a row (:func:`wire.unpack_row`).

An update (a whole snapshot or a delta, :data:`terminal.follower.ReplicaUpdate`) is applied in
one SQLite transaction: the rows and the version move together or not at all, so a site killed
at any point of an apply reopens on the whole version it held before or the whole new one.
The store refuses, and changes nothing for, an update that does not follow what it holds: a
delta whose ``from_version`` is not the version held, a snapshot not newer than it. A stored
replica is therefore never replaced by an older one.

The crash points ``replica_store.rows_written`` (inside the transaction, after the rows and
before the commit) and ``replica_store.committed`` let the tests kill a process mid-apply
(:mod:`terminal.crashpoints`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wire import ReplicaDelta, RowKey, Table, WireError, pack_row, row_key, unpack_row

from . import crashpoints
from .follower import FullSnapshot, ReplicaUpdate

__all__ = ["STORE_FILE", "ReplicaStore", "ReplicaStoreError", "StaleUpdate", "StoreCorrupt", "TableInfo",
           "versions_text"]

#: The store's file name in ``site.data_dir``.
STORE_FILE = "replica.sqlite"

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tables (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    row_count INTEGER NOT NULL,
    complete INTEGER NOT NULL,
    written_utc_s INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rows (
    tbl TEXT NOT NULL,
    key NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (tbl, key)
) WITHOUT ROWID;
"""


class ReplicaStoreError(Exception):
    """The replica store cannot do what was asked; the message says why. Nothing was changed."""


class StaleUpdate(ReplicaStoreError):
    """An update that does not follow the version held (an older or equal snapshot, a delta
    from another version): refused, the store unchanged."""


class StoreCorrupt(ReplicaStoreError):
    """The file is not a replica store, or a stored row fails its schema."""


@dataclass(frozen=True, slots=True)
class TableInfo:
    """What the store holds of one table."""

    table: Table
    version: int
    rows: int
    complete: bool  #: a whole snapshot was stored (a table is never served from deltas alone)
    written_utc_s: int  #: when the last update of it was committed (the site's clock)


def _key(value: RowKey) -> RowKey:
    return value if isinstance(value, int) else str(value)


class ReplicaStore:
    """The host's tables as this site holds them (module docstring). Not thread-safe: one
    owner (the daemon, on its event loop) opens, reads and applies."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    @classmethod
    def open(cls, path: str | Path) -> "ReplicaStore":
        """Open (or create) the store at ``path``, WAL and ``synchronous=FULL``.
        Raises :class:`StoreCorrupt` for a file that is not a replica store."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
        except (OSError, sqlite3.Error) as exc:
            raise ReplicaStoreError(f"cannot open the replica store {path}: {exc}") from None
        try:
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                raise ReplicaStoreError(f"the replica store {path} cannot use WAL mode")
            conn.execute("PRAGMA synchronous = FULL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise StoreCorrupt(f"{path} has schema version {version}; this edgepos knows {_SCHEMA_VERSION}")
            conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA + f"PRAGMA user_version = {_SCHEMA_VERSION}; COMMIT;")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreCorrupt(f"{path} is not a replica store: {exc}") from None
        except ReplicaStoreError:
            conn.close()
            raise
        return cls(path, conn)

    def close(self) -> None:
        """Close the file (every apply is already on disk)."""
        self._conn.close()

    def __enter__(self) -> "ReplicaStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading --

    def info(self) -> dict[Table, TableInfo]:
        """Every table held, with its version."""
        out: dict[Table, TableInfo] = {}
        for name, version, n, complete, written in self._conn.execute(
                "SELECT name, version, row_count, complete, written_utc_s FROM tables"):
            try:
                table = Table(name)
            except ValueError:
                raise StoreCorrupt(f"{self.path} holds an unknown table {name!r}") from None
            out[table] = TableInfo(table, int(version), int(n), bool(complete), int(written))
        return out

    def versions(self) -> dict[Table, int]:
        """The version of every table held (a table not held is missing, not 0)."""
        return {t: i.version for t, i in self.info().items()}

    def complete(self, tables: Iterable[Table]) -> bool:
        """Does the store hold a whole snapshot (and what followed it) of each of ``tables``?"""
        held = self.info()
        return all(t in held and held[t].complete for t in tables)

    def iter_rows(self, table: Table) -> Iterator[Any]:
        """The rows of ``table`` as :func:`wire.decode` gives them, each checked again.
        Raises :class:`StoreCorrupt` for a row that fails its schema."""
        cur = self._conn.execute("SELECT key, data FROM rows WHERE tbl = ? ORDER BY key", (table.value,))
        for key, data in cur:
            try:
                yield unpack_row(table, data)
            except WireError as exc:
                raise StoreCorrupt(f"{self.path}: a {table.value} row fails its schema: {exc}") from None

    def rows(self, table: Table) -> tuple[Any, ...]:
        """Every row of ``table`` (see :meth:`iter_rows`)."""
        return tuple(self.iter_rows(table))

    def tables(self, tables: Iterable[Table]) -> dict[Table, tuple[Any, ...]]:
        """The rows of each of ``tables``: what :meth:`terminal.replica.Replica.from_rows` builds from."""
        return {t: self.rows(t) for t in tables}

    # -- writing --

    def apply(self, update: ReplicaUpdate, *, now_utc_s: int | None = None) -> TableInfo:
        """Apply ``update`` in one durable transaction and return what is now held of its table.

        A :class:`~terminal.follower.FullSnapshot` replaces the table if it is newer than the
        version held; a :class:`wire.ReplicaDelta` applies if its ``from_version`` is the version
        held. Anything else raises :class:`StaleUpdate`; a row that is not a row of its table
        raises :class:`ReplicaStoreError`. Either way nothing changed."""
        table = Table(update.table)
        now = int(time.time()) if now_utc_s is None else now_utc_s
        try:
            packed = self._packed(update)
        except WireError as exc:
            raise ReplicaStoreError(f"{table.value} update refused: {exc}") from None
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            held = conn.execute("SELECT version, row_count, complete FROM tables WHERE name = ?",
                                (table.value,)).fetchone()
            version, count, complete = (int(held[0]), int(held[1]), bool(held[2])) if held else (0, 0, False)
            if isinstance(update, FullSnapshot):
                if update.version <= version:
                    raise StaleUpdate(f"{table.value} snapshot version {update.version} is not newer than the "
                                      f"version held, {version}")
                conn.execute("DELETE FROM rows WHERE tbl = ?", (table.value,))
                conn.executemany("INSERT INTO rows (tbl, key, data) VALUES (?, ?, ?)",
                                 ((table.value, k, d) for k, d in packed))
                new_version, count, complete = update.version, len(packed), True
            elif isinstance(update, ReplicaDelta):
                if update.from_version != version:
                    raise StaleUpdate(f"{table.value} delta {update.from_version}->{update.to_version} does not "
                                      f"follow the version held, {version}")
                gone = [(table.value, _key(k)) for k in update.deletes]
                if gone:
                    count -= conn.executemany("DELETE FROM rows WHERE tbl = ? AND key = ?", gone).rowcount
                count += len(packed) - self._present(table, [k for k, _ in packed])
                conn.executemany("INSERT OR REPLACE INTO rows (tbl, key, data) VALUES (?, ?, ?)",
                                 ((table.value, k, d) for k, d in packed))
                new_version = update.to_version
            else:
                raise ReplicaStoreError(f"not a replica update: {type(update).__name__}")
            conn.execute("INSERT OR REPLACE INTO tables (name, version, row_count, complete, written_utc_s) "
                         "VALUES (?, ?, ?, ?, ?)", (table.value, new_version, count, int(complete), now))
            crashpoints.reached("replica_store.rows_written")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        crashpoints.reached("replica_store.committed")
        return TableInfo(table, new_version, count, complete, now)

    def _present(self, table: Table, keys: list[RowKey]) -> int:
        """How many of ``keys`` the store holds in ``table``."""
        n = 0
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            n += self._conn.execute(f"SELECT count(*) FROM rows WHERE tbl = ? AND key IN ({','.join('?' * len(chunk))})",
                                    (table.value, *chunk)).fetchone()[0]
        return n

    @staticmethod
    def _packed(update: ReplicaUpdate) -> list[tuple[RowKey, bytes]]:
        table = Table(update.table)
        rows = update.rows if isinstance(update, FullSnapshot) else update.upserts
        return [(_key(row_key(table, r)), pack_row(table, r)) for r in rows]


def versions_text(versions: Mapping[Table, int]) -> str:
    """``stop_list@3, products@1`` for logs."""
    return ", ".join(f"{t.value}@{v}" for t, v in sorted(versions.items())) or "nothing"

