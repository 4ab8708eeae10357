"""The replica store: the host's tables as this site holds them, on disk beside the journal.

One SQLite file (``replica.sqlite`` in ``site.data_dir``), WAL with ``synchronous=FULL`` like
the journal (docs/journal.md): a commit is on disk when :meth:`ReplicaStore.apply` returns.

- ``tables``: one row per table held: its version, its row count, when it was last written
  (the site's clock) and the SQLite table that holds its rows (``phys``);
- one SQLite table per held table and generation (``r1``, ``r2``, ...): its rows keyed by
  the row's key; a row is the MessagePack of its wire form (:func:`wire.pack_row`), read back
  with every check :func:`wire.decode` runs on a row (:func:`wire.rows_bulk.unpack_rows`).

An update (a whole snapshot or a delta, :data:`terminal.follower.FollowerUpdate`) is applied in
one SQLite transaction: the rows and the version move together or not at all, so a site killed
at any point of an apply reopens on the whole version it held before or the whole new one.
The store refuses, and changes nothing for, an update that does not follow what it holds: a
delta whose ``from_version`` is not the version held, a snapshot not newer than it. A stored
replica is therefore never replaced by an older one.

A snapshot arrives in parts; each part is written as it comes (:meth:`ReplicaStore.stage_part`)
into a new generation table that no ``tables`` row points to yet, so nothing of a snapshot is
held in memory and a half-received snapshot is invisible. When every part is in,
:class:`~terminal.follower.StagedSnapshot` makes that generation the table's in one
transaction (the old one is dropped in it). Staged parts are not fsync'd (``synchronous =
NORMAL`` while staging: only the commit that makes them the table's is), and a store
reopened drops every generation no table points to: a site killed while receiving starts
the snapshot again.

The crash points ``replica_store.rows_written`` (inside the transaction, after the rows and
before the commit) and ``replica_store.committed`` let the tests kill a process mid-apply
(:mod:`terminal.crashpoints`).
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from wire import ReplicaDelta, ReplicaSnapshot, RowKey, Table, WireError
from native._rowload import part_rows_json
from wire._partscan import TABLE_CODES as _PACKED_CODES
from wire.rows_bulk import PackedRows, pack_rows, unpack_rows

from . import crashpoints
from .follower import FollowerUpdate, FullSnapshot, StagedSnapshot

__all__ = [
    "STORE_FILE",
    "ReplicaStore",
    "ReplicaStoreError",
    "StagedUpdate",
    "StaleUpdate",
    "StoreCorrupt",
    "StoredRows",
    "TableInfo",
    "versions_text",
]

#: The store's file name in ``site.data_dir``.
STORE_FILE = "replica.sqlite"

_SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tables (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    row_count INTEGER NOT NULL,
    written_utc_s INTEGER NOT NULL,
    phys TEXT NOT NULL
);
"""
_PHYS = re.compile(r"r[0-9]{1,18}")


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


class _Staging:
    """The generation a snapshot's parts are written into until all are there."""

    __slots__ = ("broken", "parts", "phys", "rows", "staged", "version")

    def __init__(self, phys: str, version: int, parts: int) -> None:
        self.phys = phys
        self.version = version
        self.parts = parts
        self.staged: set[int] = set()
        self.rows = 0
        self.broken: str | None = None  # why this snapshot cannot be made whole (a key in two parts...)


class ReplicaStore:
    """The host's tables as this site holds them (module docstring). Not thread-safe: one
    owner at a time (the daemon, on its event loop or in the one worker thread it awaits)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._info, self._phys = self._read_info()  # what is committed; readers never wait on a write
        self._staging: dict[Table, _Staging] = {}
        self._next_phys = 1 + max((int(n[1:]) for n in self._tables_in_file()), default=0)
        try:  # SQLite's JSON functions (built in since 3.38): a part's rows in one statement
            self._json = conn.execute("SELECT json_extract('[1]', '$[0]')").fetchone()[0] == 1
        except sqlite3.Error:
            self._json = False

    @classmethod
    def open(cls, path: str | Path) -> ReplicaStore:
        """Open (or create) the store at ``path``, WAL and ``synchronous=FULL``; drop what a
        killed process had staged. Raises :class:`StoreCorrupt` for a file that is not a
        replica store."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # one owner at a time, possibly from a worker thread (the daemon writes big snapshots off its loop)
            conn = sqlite3.connect(path, isolation_level=None, timeout=5.0, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise ReplicaStoreError(f"cannot open the replica store {path}: {exc}") from None
        try:
            # 16 kB pages for a new store (a no-op on one that exists): a snapshot's rows are
            # bulk B-tree inserts, about 13% less CPU a row than with 4 kB pages (docs/sync.md)
            conn.execute("PRAGMA page_size = 16384")
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                raise ReplicaStoreError(f"the replica store {path} cannot use WAL mode")
            conn.execute("PRAGMA synchronous = FULL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1, _SCHEMA_VERSION):
                raise StoreCorrupt(f"{path} has schema version {version}; this edgepos knows {_SCHEMA_VERSION}")
            conn.execute("BEGIN IMMEDIATE")
            if version == 1:
                _migrate_v1(conn)
            conn.execute(_SCHEMA)
            live = {r[0] for r in conn.execute("SELECT phys FROM tables")}
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                if _PHYS.fullmatch(name) and name not in live:
                    conn.execute(f"DROP TABLE {name}")  # staged by a process that did not finish
            conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
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

    def _read_info(self) -> tuple[dict[Table, TableInfo], dict[Table, str]]:
        out: dict[Table, TableInfo] = {}
        phys: dict[Table, str] = {}
        for name, version, n, written, ph in self._conn.execute(
                "SELECT name, version, row_count, written_utc_s, phys FROM tables"):
            try:
                table = Table(name)
            except ValueError:
                raise StoreCorrupt(f"{self.path} holds an unknown table {name!r}") from None
            if not isinstance(ph, str) or not _PHYS.fullmatch(ph):
                raise StoreCorrupt(f"{self.path}: table {name!r} points to {ph!r}")
            out[table] = TableInfo(table, int(version), int(n), int(written))
            phys[table] = ph
        return out, phys

    def _tables_in_file(self) -> list[str]:
        return [r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                if _PHYS.fullmatch(r[0])]

    def versions(self) -> dict[Table, int]:
        """The version of every table held (a table not held is missing, not 0)."""
        return {t: i.version for t, i in self.info().items()}

    def complete(self, tables: Iterable[Table]) -> bool:
        """Does the store hold each of ``tables``? A table held is whole: it was written by a
        snapshot, or by a delta from version 0 (the empty table), and by deltas that followed."""
        held = self.info()
        return all(t in held for t in tables)

    def iter_rows(self, table: Table) -> StoredRows:
        """The rows of ``table`` as :func:`wire.decode` gives them, each checked again, in key
        order (an iterator; for fuel cards also their bytes, for the native loader:
        :class:`StoredRows`). Raises :class:`StoreCorrupt` for a row that fails its schema."""
        return StoredRows(self, table, self._phys.get(table))

    def _datas(self, phys: str | None) -> Iterator[bytes]:
        if phys is None:
            return
        for (d,) in self._conn.execute(f"SELECT data FROM {phys} ORDER BY key"):
            yield d

    def _iter_phys(self, table: Table, phys: str) -> Iterator[Any]:
        try:
            yield from unpack_rows(table, self._datas(phys))
        except WireError as exc:
            raise StoreCorrupt(f"{self.path}: a {table.value} row fails its schema: {exc}") from None

    def rows(self, table: Table) -> tuple[Any, ...]:
        """Every row of ``table`` (see :meth:`iter_rows`)."""
        return tuple(self.iter_rows(table))

    def tables(self, tables: Iterable[Table]) -> dict[Table, tuple[Any, ...]]:
        """The rows of each of ``tables``: what :meth:`terminal.replica.Replica.from_rows` builds from."""
        return {t: self.rows(t) for t in tables}

    def staged(self, table: Table) -> tuple[int, int, int] | None:
        """The snapshot of ``table`` being staged: (its version, parts staged, parts in all)."""
        st = self._staging.get(table)
        return None if st is None else (st.version, len(st.staged), st.parts)

    # -- writing --

    def stage_part(self, part: ReplicaSnapshot, *, fresh: bool = False, started: threading.Event | None = None) -> bool:
        """Write snapshot part ``part`` (verified by :func:`wire.decode`) into its table's
        staged generation (rows kept as received, :class:`wire.rows_bulk.PackedRows`, as their
        bytes: one ``executemany`` of (key, bytes)); ``fresh`` (or a part of another version or part count than the one
        staged) starts the generation anew. A part of a version not newer than the one held is
        ignored. Not durable on its own (see the module docstring). A part whose key is in a
        part staged before marks the snapshot broken: its :class:`StagedSnapshot` is refused.
        Rows kept as received are inserted by one statement that splits the frame in SQLite
        (``json_each`` over ``[key, offset, length]`` of each row,
        :func:`native._rowload.part_rows_json`): SQLite runs it without the interpreter lock,
        so the event loop fills the evaluators' columns meanwhile (docs/sync.md, "Fifth pass").
        ``started`` (if given) is set once the rows' statement runs (or once nothing is to be
        written): from then on this thread does not need the interpreter lock for a while.
        Returns whether the part's rows were written (False: ignored, or the snapshot broken).
        Raises :class:`ReplicaStoreError` if the part cannot be written (nothing of it is)."""
        try:
            return self._stage_part(part, fresh, started)
        finally:
            if started is not None:
                started.set()

    def _stage_part(self, part: ReplicaSnapshot, fresh: bool, started: threading.Event | None) -> bool:
        table = Table(part.table)
        held = self._info.get(table)
        if held is not None and part.version <= held.version:
            return False
        rows = part.rows
        packed: Iterable[tuple[RowKey, bytes]]
        whole: str | None = None  # the rows as one statement's parameter (below)
        if type(rows) is PackedRows and rows.table is table:  # kept as received (wire.decode(..., raw_rows=True))
            packed, count = rows.items(), len(rows)  # written as they are, one row's objects at a time
            if self._json:
                whole = part_rows_json(_PACKED_CODES[table.value], rows.data, rows.bounds)
        else:
            try:
                packed = list(pack_rows(table, rows))
            except WireError as exc:
                raise ReplicaStoreError(f"{table.value} snapshot part refused: {exc}") from None
            count = len(packed)
        conn = self._conn
        st = self._staging.get(table)
        conn.execute("PRAGMA synchronous = NORMAL")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if st is None or fresh or st.version != part.version or st.parts != part.parts:
                    if st is not None:
                        conn.execute(f"DROP TABLE IF EXISTS {st.phys}")
                    st = _Staging(self._new_phys(), part.version, part.parts)
                    conn.execute(f"CREATE TABLE {st.phys} (key NOT NULL PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID")
                    self._staging[table] = st
                if part.part in st.staged or st.broken:
                    conn.execute("COMMIT")
                    return False
                try:
                    if whole is not None:  # one statement: SQLite splits the frame, without the interpreter lock
                        if started is not None:
                            started.set()
                        conn.execute(f"INSERT INTO {st.phys} (key, data) SELECT json_extract(value, '$[0]'), "
                                     "substr(?1, json_extract(value, '$[1]') + 1, json_extract(value, '$[2]')) "
                                     "FROM json_each(?2)", (rows.data, whole))  # type: ignore[attr-defined]
                    else:
                        conn.executemany(f"INSERT INTO {st.phys} (key, data) VALUES (?, ?)",
                                         ((_key(k), d) for k, d in packed))
                except sqlite3.IntegrityError:
                    conn.execute("ROLLBACK")
                    st.broken = f"a key of part {part.part} is in another part too"
                    return False
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._staging.pop(table, None)  # what its generation holds is not known: start again
                raise
        except sqlite3.Error as exc:
            raise ReplicaStoreError(f"{self.path}: a {table.value} snapshot part could not be staged: {exc}") from None
        finally:
            conn.execute("PRAGMA synchronous = FULL")
        st.staged.add(part.part)
        st.rows += count
        return True

    def staging_generation(self, table: Table) -> str | None:
        """The name of the generation ``table``'s snapshot is being staged into (None: none is):
        what :class:`terminal.provision.EagerColumns` ties the columns it fills to."""
        st = self._staging.get(table)
        return None if st is None else st.phys

    def generation(self, table: Table) -> str | None:
        """The name of the generation that holds ``table`` as committed (None: not held)."""
        return self._phys.get(table)

    def _new_phys(self) -> str:
        name = f"r{self._next_phys}"
        self._next_phys += 1
        return name

    def apply(self, update: FollowerUpdate, *, now_utc_s: int | None = None) -> TableInfo:
        """Apply ``update`` in one durable transaction and return what is now held of its table
        (:meth:`stage`, then :meth:`StagedUpdate.commit`). Raises as :meth:`stage` does."""
        return self.stage(update, now_utc_s=now_utc_s).commit()

    def stage(self, update: FollowerUpdate, *, now_utc_s: int | None = None) -> StagedUpdate:
        """Write ``update`` inside an open transaction and hand it back uncommitted: the caller
        applies it elsewhere too (the evaluators, reading the new rows with
        :meth:`StagedUpdate.iter_rows`), then commits it, or rolls it back if that failed.
        Until then the store is locked for other writers.

        A :class:`~terminal.follower.FullSnapshot` (the rows given) or a
        :class:`~terminal.follower.StagedSnapshot` (every part staged by :meth:`stage_part`)
        replaces the table if it is newer than the version held; a :class:`wire.ReplicaDelta`
        applies if its ``from_version`` is the version held (0 for a table not held: version 0
        is the empty table). Anything else raises :class:`StaleUpdate`; a row that is not a row
        of its table, or a staged snapshot that is not whole, raises :class:`ReplicaStoreError`.
        Either way nothing changed and no transaction is open."""
        table = Table(update.table)
        now = int(time.time()) if now_utc_s is None else now_utc_s
        held = self._info.get(table)
        version, count = (held.version, held.rows) if held else (0, 0)
        old_phys = self._phys.get(table)
        if isinstance(update, (FullSnapshot, StagedSnapshot)) and update.version <= version:
            raise StaleUpdate(f"{table.value} snapshot version {update.version} is not newer than the "
                              f"version held, {version}")
        if isinstance(update, ReplicaDelta) and update.from_version != version:
            raise StaleUpdate(f"{table.value} delta {update.from_version}->{update.to_version} does not "
                              f"follow the version held, {version}")
        staging = None
        if isinstance(update, StagedSnapshot):
            staging = self._staging.get(table)
            why = ("no part of it is staged" if staging is None else staging.broken
                   or (f"it is version {staging.version} of {staging.parts} parts that is staged"
                       if (staging.version, staging.parts) != (update.version, update.parts) else None)
                   or (f"{staging.parts - len(staging.staged)} of its {staging.parts} parts are not staged"
                       if len(staging.staged) != staging.parts else None))
            if why:
                raise ReplicaStoreError(f"{table.value} snapshot version {update.version} is not whole: {why}")
        try:
            packed = [] if staging is not None else list(pack_rows(table, update.upserts if isinstance(
                update, ReplicaDelta) else update.rows))  # type: ignore[union-attr]
        except WireError as exc:
            raise ReplicaStoreError(f"{table.value} update refused: {exc}") from None
        except AttributeError:
            raise ReplicaStoreError(f"not a replica update: {type(update).__name__}") from None
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if isinstance(update, ReplicaDelta):
                phys = old_phys
                if phys is None:
                    phys = self._new_phys()
                    conn.execute(f"CREATE TABLE {phys} (key NOT NULL PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID")
                gone = [(_key(k),) for k in update.deletes]
                if gone:
                    count -= conn.executemany(f"DELETE FROM {phys} WHERE key = ?", gone).rowcount
                count += len(packed) - self._present(phys, [_key(k) for k, _ in packed])
                conn.executemany(f"INSERT OR REPLACE INTO {phys} (key, data) VALUES (?, ?)",
                                 ((_key(k), d) for k, d in packed))
                new_version = update.to_version
            elif staging is not None:
                phys, count, new_version = staging.phys, staging.rows, update.version
            else:
                phys = self._new_phys()
                conn.execute(f"CREATE TABLE {phys} (key NOT NULL PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID")
                try:
                    conn.executemany(f"INSERT INTO {phys} (key, data) VALUES (?, ?)",
                                     ((_key(k), d) for k, d in packed))
                except sqlite3.IntegrityError:
                    raise ReplicaStoreError(f"{table.value} snapshot version {update.version} refused: a key "
                                            "appears twice") from None
                count, new_version = len(packed), update.version  # type: ignore[union-attr]
            if old_phys is not None and phys != old_phys:
                conn.execute(f"DROP TABLE {old_phys}")
            conn.execute("INSERT OR REPLACE INTO tables (name, version, row_count, written_utc_s, phys) "
                         "VALUES (?, ?, ?, ?, ?)", (table.value, new_version, count, now, phys))
            crashpoints.reached("replica_store.rows_written")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return StagedUpdate(self, TableInfo(table, new_version, count, now), phys, staging)

    def _present(self, phys: str, keys: list[RowKey]) -> int:
        """How many of ``keys`` the store holds in ``phys``."""
        n = 0
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            n += self._conn.execute(f"SELECT count(*) FROM {phys} WHERE key IN ({','.join('?' * len(chunk))})",
                                    chunk).fetchone()[0]
        return n


class StoredRows:
    """The rows of one stored table, read once (:meth:`ReplicaStore.iter_rows`): iterated,
    each row checked again (:func:`wire.rows_bulk.unpack_rows`); or, for fuel cards, handed
    whole to :meth:`native.compact.FuelColumns.from_rows`, which reads their bytes with the
    native loader (the same checks, no object per card) and asks :meth:`card_of` for the rows
    it does not take. ``noting(f)`` calls ``f`` on every row made as an object either way (the
    balance rule's watermarks are only on such rows: the loader takes none)."""

    __slots__ = ("_hook", "_it", "_phys", "_store", "table")

    def __init__(self, store: ReplicaStore, table: Table, phys: str | None) -> None:
        self._store, self.table, self._phys = store, table, phys
        self._it: Iterator[Any] | None = None
        self._hook: Any = None

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Any:
        if self._it is None:
            self._it = iter(()) if self._phys is None else self._store._iter_phys(self.table, self._phys)
        row = next(self._it)
        if self._hook is not None:
            self._hook(row)
        return row

    def noting(self, hook: Any) -> Self:
        """These rows, calling ``hook(row)`` on each row object made."""
        self._hook = hook
        return self

    def datas(self) -> Iterator[bytes]:
        """The rows' bytes as stored, in key order, unchecked (the reader checks them)."""
        if self._it is not None:
            raise ReplicaStoreError("these rows are already being read")
        self._it = iter(())
        return self._store._datas(self._phys)

    def row_of(self, data: bytes) -> Any:
        """Stored row ``data`` checked as :meth:`__next__` checks it. Raises :class:`StoreCorrupt`."""
        try:
            row = next(unpack_rows(self.table, (data,)))
        except WireError as exc:
            raise StoreCorrupt(f"{self._store.path}: a {self.table.value} row fails its schema: {exc}") from None
        if self._hook is not None:
            self._hook(row)
        return row

    def card_of(self, data: bytes) -> tuple[Any, Any]:
        """Stored fuel-card row ``data`` as (card, counters) (see :meth:`row_of`)."""
        row = self.row_of(data)
        return row.card, row.counters


def _migrate_v1(conn: sqlite3.Connection) -> None:
    """A store of schema 1 (every table's rows in one ``rows`` table) to schema 2, in the
    caller's transaction."""
    conn.execute("ALTER TABLE tables ADD COLUMN phys TEXT NOT NULL DEFAULT ''")
    for i, (name,) in enumerate(conn.execute("SELECT name FROM tables").fetchall(), start=1):
        conn.execute(f"CREATE TABLE r{i} (key NOT NULL PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID")
        conn.execute(f"INSERT INTO r{i} (key, data) SELECT key, data FROM rows WHERE tbl = ?", (name,))
        conn.execute("UPDATE tables SET phys = ? WHERE name = ?", (f"r{i}", name))
    conn.execute("DROP TABLE IF EXISTS rows")


class StagedUpdate:
    """An update written inside the store's open transaction (:meth:`ReplicaStore.stage`):
    :meth:`commit` makes it durable, :meth:`rollback` undoes it; one of them, once."""

    def __init__(self, store: ReplicaStore, info: TableInfo, phys: str, staging: _Staging | None) -> None:
        self._store = store
        self.info = info  #: what the store will hold of the table once committed
        self._phys = phys
        self._staging = staging
        self._open = True

    def iter_rows(self) -> Iterator[Any]:
        """The rows the table will hold once committed, checked as :meth:`ReplicaStore.iter_rows`
        checks them (read through the open transaction: call it before :meth:`commit`, from
        the thread that owns the store)."""
        return self._store._iter_phys(self.info.table, self._phys)

    def commit(self) -> TableInfo:
        """Commit (fsync'd: on disk when this returns). Raises :class:`ReplicaStoreError` if
        the commit failed (the transaction is then rolled back)."""
        self._end()
        store = self._store
        conn = store._conn
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise ReplicaStoreError(f"{store.path}: the commit of {self.info.table.value} failed: {exc}") from None
        store._info[self.info.table] = self.info
        store._phys[self.info.table] = self._phys
        if self._staging is not None and store._staging.get(self.info.table) is self._staging:
            del store._staging[self.info.table]
        crashpoints.reached("replica_store.committed")
        return self.info

    def rollback(self) -> None:
        """Undo the update: the store holds what it held before :meth:`ReplicaStore.stage`
        (a staged snapshot stays staged)."""
        self._end()
        self._store._conn.execute("ROLLBACK")

    def _end(self) -> None:
        if not self._open:
            raise ReplicaStoreError("this staged update was already committed or rolled back")
        self._open = False


def versions_text(versions: Mapping[Table, int]) -> str:
    """``stop_list@3, products@1`` for logs."""
    return ", ".join(f"{t.value}@{v}" for t, v in sorted(versions.items())) or "nothing"
