"""The replica store: the host's tables as this site holds them, on disk beside the journal.

One SQLite file (``replica.sqlite`` in ``site.data_dir``), WAL with ``synchronous=FULL`` like
the journal (docs/journal.md): a commit is on disk when :meth:`ReplicaStore.apply` returns.

- ``tables``: one row per table held: its version, its row count and when it was last
  written (the site's clock);
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

import contextlib
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from wire import ReplicaDelta, RowKey, Table, WireError, pack_row, row_key, unpack_row

from . import crashpoints
from .follower import FullSnapshot, ReplicaUpdate

__all__ = [
    "STORE_FILE",
    "ReplicaStore",
    "ReplicaStoreError",
    "StagedUpdate",
    "StaleUpdate",
    "StoreCorrupt",
    "TableInfo",
    "versions_text",
]

#: The store's file name in ``site.data_dir``.
STORE_FILE = "replica.sqlite"

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tables (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    row_count INTEGER NOT NULL,
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
    written_utc_s: int  #: when the last update of it was committed (the site's clock)


def _key(value: RowKey) -> RowKey:
    return value if isinstance(value, int) else str(value)


class ReplicaStore:
    """The host's tables as this site holds them (module docstring). Not thread-safe: one
    owner (the daemon, on its event loop) opens, reads and applies."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._info = self._read_info()  # what is committed; kept here so readers never wait on a write

    @classmethod
    def open(cls, path: str | Path) -> ReplicaStore:
        """Open (or create) the store at ``path``, WAL and ``synchronous=FULL``.
        Raises :class:`StoreCorrupt` for a file that is not a replica store."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # one owner at a time, possibly from a worker thread (the daemon writes big snapshots off its loop)
            conn = sqlite3.connect(path, isolation_level=None, timeout=5.0, check_same_thread=False)
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
        try:
            return cls(path, conn)
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        """Close the file (every apply is already on disk)."""
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading --

    def info(self) -> dict[Table, TableInfo]:
        """Every table held, with its version, as last committed (no disk read)."""
        return dict(self._info)

    def _read_info(self) -> dict[Table, TableInfo]:
        out: dict[Table, TableInfo] = {}
        for name, version, n, written in self._conn.execute(
                "SELECT name, version, row_count, written_utc_s FROM tables"):
            try:
                table = Table(name)
            except ValueError:
                raise StoreCorrupt(f"{self.path} holds an unknown table {name!r}") from None
            out[table] = TableInfo(table, int(version), int(n), int(written))
        return out

    def versions(self) -> dict[Table, int]:
        """The version of every table held (a table not held is missing, not 0)."""
        return {t: i.version for t, i in self.info().items()}

    def complete(self, tables: Iterable[Table]) -> bool:
        """Does the store hold each of ``tables``? A table held is whole: it was written by a
        snapshot, or by a delta from version 0 (the empty table), and by deltas that followed."""
        held = self.info()
        return all(t in held for t in tables)

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
        """Apply ``update`` in one durable transaction and return what is now held of its table
        (:meth:`stage`, then :meth:`StagedUpdate.commit`). Raises as :meth:`stage` does."""
        return self.stage(update, now_utc_s=now_utc_s).commit()

    def stage(self, update: ReplicaUpdate, *, now_utc_s: int | None = None) -> StagedUpdate:
        """Write ``update`` inside an open transaction and hand it back uncommitted: the caller
        applies it elsewhere too (the evaluators), then commits it, or rolls it back if that
        failed. Until then the store is locked for other writers.

        A :class:`~terminal.follower.FullSnapshot` replaces the table if it is newer than the
        version held; a :class:`wire.ReplicaDelta` applies if its ``from_version`` is the version
        held (0 for a table not held: version 0 is the empty table). Anything else raises
        :class:`StaleUpdate`; a row that is not a row of its table raises
        :class:`ReplicaStoreError`. Either way nothing changed and no transaction is open."""
        table = Table(update.table)
        now = int(time.time()) if now_utc_s is None else now_utc_s
        try:
            packed = self._packed(update)
        except WireError as exc:
            raise ReplicaStoreError(f"{table.value} update refused: {exc}") from None
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            held = conn.execute("SELECT version, row_count FROM tables WHERE name = ?", (table.value,)).fetchone()
            version, count = (int(held[0]), int(held[1])) if held else (0, 0)
            if isinstance(update, FullSnapshot):
                if update.version <= version:
                    raise StaleUpdate(f"{table.value} snapshot version {update.version} is not newer than the "
                                      f"version held, {version}")
                conn.execute("DELETE FROM rows WHERE tbl = ?", (table.value,))
                conn.executemany("INSERT INTO rows (tbl, key, data) VALUES (?, ?, ?)",
                                 ((table.value, k, d) for k, d in packed))
                new_version, count = update.version, len(packed)
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
            conn.execute("INSERT OR REPLACE INTO tables (name, version, row_count, written_utc_s) "
                         "VALUES (?, ?, ?, ?)", (table.value, new_version, count, now))
            crashpoints.reached("replica_store.rows_written")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return StagedUpdate(self, TableInfo(table, new_version, count, now))

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
        out = []
        for r in rows:
            data = pack_row(table, r)  # checks the row's type first
            out.append((_key(row_key(table, r)), data))
        return out


class StagedUpdate:
    """An update written inside the store's open transaction (:meth:`ReplicaStore.stage`):
    :meth:`commit` makes it durable, :meth:`rollback` undoes it; one of them, once."""

    def __init__(self, store: ReplicaStore, info: TableInfo) -> None:
        self._store = store
        self.info = info  #: what the store will hold of the table once committed
        self._open = True

    def commit(self) -> TableInfo:
        """Commit (fsync'd: on disk when this returns). Raises :class:`ReplicaStoreError` if
        the commit failed (the transaction is then rolled back)."""
        self._end()
        conn = self._store._conn
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise ReplicaStoreError(f"{self._store.path}: the commit of {self.info.table.value} failed: {exc}") from None
        self._store._info[self.info.table] = self.info
        crashpoints.reached("replica_store.committed")
        return self.info

    def rollback(self) -> None:
        """Undo the update: the store holds what it held before :meth:`ReplicaStore.stage`."""
        self._end()
        self._store._conn.execute("ROLLBACK")

    def _end(self) -> None:
        if not self._open:
            raise ReplicaStoreError("this staged update was already committed or rolled back")
        self._open = False


def versions_text(versions: Mapping[Table, int]) -> str:
    """``stop_list@3, products@1`` for logs."""
    return ", ".join(f"{t.value}@{v}" for t, v in sorted(versions.items())) or "nothing"

