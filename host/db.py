"""One small database interface over SQLite (:mod:`sqlite3`) and PostgreSQL (psycopg 3).

The ledger's SQL is written once, with ``?`` placeholders and the common subset of both
dialects (``INSERT ... ON CONFLICT``, ``RETURNING``, row values, partial indexes); this
module translates placeholders for psycopg and supplies the few pieces that differ: how a
write transaction starts (``BEGIN IMMEDIATE`` in SQLite takes the single write lock at once;
PostgreSQL locks rows with ``FOR UPDATE``), auto-increment keys, and bulk loading.

URLs: ``sqlite:///relative/file.sqlite``, ``sqlite:////absolute/file.sqlite``,
``postgresql://user@host:5432/db?options=-csearch_path%3Dschema``.
"""

from __future__ import annotations

import re
import sqlite3
import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from .errors import LedgerUnavailable

__all__ = ["Database", "connect", "redact_url"]

#: Rows per statement for ``IN (...)`` lists and row-value lists (SQLite allows 32766 variables).
CHUNK = 2_000
_RETRIES = 8


def redact_url(url: str) -> str:
    """``url`` without its password, fit for logs and error messages."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", url)


@lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


@lru_cache(maxsize=512)
def _pg_sql_params(sql: str, arrays: tuple[bool, ...]) -> str:
    """:func:`_pg_sql` with the placeholders of array parameters (``= ANY(?)``, ``unnest``)
    as ``%b``: psycopg sends those in binary, where its text format quotes each element
    with a regular expression (a third of ingest's client CPU on PostgreSQL)."""
    parts = sql.replace("%", "%%").split("?")
    if True not in arrays or len(parts) != len(arrays) + 1:
        return _pg_sql(sql)
    return parts[0] + "".join(("%b" if a else "%s") + p for a, p in zip(arrays, parts[1:]))


_I32 = struct.Struct("!i").pack
_INT8_MIN, _INT8_MAX = -(2 ** 63), 2 ** 63 - 1


class PgArray:
    """A list already in PostgreSQL's binary array format, sent as one binary parameter
    (:func:`_register_pg_arrays`); :class:`PgTextArray` or :class:`PgInt8Array`."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class PgTextArray(PgArray):
    """A ``text[]`` in binary."""


class PgInt8Array(PgArray):
    """An ``int8[]`` in binary."""


def pg_array(values: list[Any]) -> PgArray | None:
    """``values`` in PostgreSQL's binary array format when every one is text (``text[]``)
    or every one an integer of 64 bits (``int8[]``; ``bool`` is neither), else None (psycopg
    then dumps the list itself). Made with ``struct`` and ``bytes.join``: psycopg's array
    dumper costs about 0.2 µs an element in Python (measured in docs/sync.md, issue 12's
    fourth pass), this a third of that, and the server reads the same binary array."""
    if not values:
        return None
    kinds = set(map(type, values))
    if kinds == {str}:
        enc = [v.encode() for v in values]
        return PgTextArray(struct.pack("!iiIii", 1, 0, 25, len(enc), 1) + b"".join([_I32(len(e)) + e for e in enc]))
    if kinds == {int} and _INT8_MIN <= min(values) and max(values) <= _INT8_MAX:
        n = len(values)
        packed = [8] * (2 * n)
        packed[1::2] = values
        return PgInt8Array(struct.pack("!iiIii", 1, 0, 20, n, 1) + struct.pack("!" + "iq" * n, *packed))
    return None


def _register_pg_arrays(conn: Any) -> None:
    """Teach ``conn`` to send :class:`PgArray` values as they are, in binary."""
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    class _Text(Dumper):
        format = Format.BINARY
        oid = 1009

        def dump(self, obj: Any) -> bytes:
            return obj.data

    class _Int8(_Text):
        oid = 1016

    conn.adapters.register_dumper(PgTextArray, _Text)
    conn.adapters.register_dumper(PgInt8Array, _Int8)


class Database:
    """A connection to the ledger's database, used by one thread at a time (and closed by
    that thread: :class:`host.ledger_thread.LedgerThread` gives a connection its thread).

    ``dialect`` is ``"sqlite"`` or ``"postgresql"``. Statements run in autocommit unless
    inside :meth:`transaction`.
    """

    def __init__(self, conn: Any, dialect: str, url: str) -> None:
        self.conn = conn
        self.dialect = dialect
        self.url = url
        self._in_tx = False

    # -- dialect pieces --

    @property
    def is_pg(self) -> bool:
        return self.dialect == "postgresql"

    @property
    def for_update(self) -> str:
        """`` FOR UPDATE`` in PostgreSQL; nothing in SQLite, whose write transaction already
        holds the database's one write lock."""
        return " FOR UPDATE" if self.is_pg else ""

    @property
    def autoid(self) -> str:
        """The column type of an auto-increment primary key."""
        return "BIGSERIAL PRIMARY KEY" if self.is_pg else "INTEGER PRIMARY KEY AUTOINCREMENT"

    def _sql(self, sql: str) -> str:
        return _pg_sql(sql) if self.is_pg else sql

    # -- statements --

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; returns the cursor."""
        if self.is_pg:
            cur = self.conn.cursor()
            binary = []
            if any(type(p) is list for p in params):
                params = list(params)
                for i, p in enumerate(params):
                    if type(p) is list:
                        arr = pg_array(p)
                        if arr is not None:
                            params[i] = arr
                        binary.append(True)
                    else:
                        binary.append(False)
            cur.execute(_pg_sql_params(sql, tuple(binary)), params)
            return cur
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each of ``rows`` (psycopg pipelines them)."""
        rows = rows if isinstance(rows, list) else list(rows)
        if not rows:
            return
        if self.is_pg:
            with self.conn.cursor() as cur:
                cur.executemany(self._sql(sql), rows)
        else:
            self.conn.executemany(sql, rows)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.execute(sql, params).fetchall()

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        return self.execute(sql, params).fetchone()

    def scalar(self, sql: str, params: Sequence[Any] = (), default: Any = None) -> Any:
        row = self.fetchone(sql, params)
        return default if row is None or row[0] is None else row[0]

    def select_in(self, sql: str, values: Sequence[Any], params: Sequence[Any] = ()) -> list[tuple]:
        """Rows of ``sql`` whose ``IN ({in})`` is a list of ``values``; ``params`` come before
        the list. PostgreSQL gets one ``= ANY(array)`` parameter, SQLite chunked ``IN`` lists."""
        values = list(values)
        if self.is_pg:
            return self.fetchall(sql.replace("IN ({in})", "= ANY(?)"), (*params, values)) if values else []
        out: list[tuple] = []
        for i in range(0, len(values), CHUNK):
            part = values[i:i + CHUNK]
            out += self.fetchall(sql.replace("{in}", ",".join("?" * len(part))), (*params, *part))
        return out

    def execute_in(self, sql: str, values: Sequence[Any], params: Sequence[Any] = ()) -> None:
        """Run ``sql`` (no rows back) with its ``IN ({in})`` as a list of ``values``."""
        values = list(values)
        if self.is_pg:
            if values:
                self.execute(sql.replace("IN ({in})", "= ANY(?)"), (*params, values))
            return
        for i in range(0, len(values), CHUNK):
            part = values[i:i + CHUNK]
            self.execute(sql.replace("{in}", ",".join("?" * len(part))), (*params, *part))

    def select_pairs(self, table: str, columns: Sequence[str], keys: tuple[str, str],
                     pairs: Sequence[tuple[Any, Any]], types: tuple[str, str] = ("text", "bigint")) -> list[tuple]:
        """The ``columns`` of the rows of ``table`` whose two ``keys`` columns hold one of the
        (distinct) ``pairs``, each pair looked up by the index on ``keys``. PostgreSQL gets the
        pairs as two arrays (``unnest``); SQLite a chunked ``VALUES`` list as the outer loop of
        a join (``CROSS JOIN`` keeps that order): its row-value ``IN (VALUES ...)`` scanned the
        whole table once a chunk (docs/sync.md, issue 12's eighth pass)."""
        pairs = list(pairs)
        if not pairs:
            return []
        cols = ", ".join(f"t.{c}" for c in columns)
        k1, k2 = keys
        if self.is_pg:
            return self.fetchall(f"SELECT {cols} FROM {table} AS t WHERE (t.{k1}, t.{k2}) IN "
                                 f"(SELECT * FROM unnest(?::{types[0]}[], ?::{types[1]}[]))", [list(c) for c in zip(*pairs)])
        out: list[tuple] = []
        step = CHUNK // 2
        for i in range(0, len(pairs), step):
            part = pairs[i:i + step]
            values = ",".join("(?,?)" for _ in part)
            out += self.fetchall(f"SELECT {cols} FROM (VALUES {values}) AS v CROSS JOIN {table} AS t "
                                 f"ON t.{k1} = v.column1 AND t.{k2} = v.column2", [v for p in part for v in p])
        return out

    def insert_many(self, table: str, columns: Sequence[str], types: Sequence[str], rows: Sequence[Sequence[Any]],
                    tail: str = "") -> None:
        """``INSERT INTO table (columns) ... tail`` for every row: ``executemany`` in SQLite,
        one ``INSERT ... SELECT * FROM unnest(arrays)`` statement in PostgreSQL (``types`` are
        the columns' SQL types there). ``tail`` is an ``ON CONFLICT`` clause, the same in both."""
        rows = list(rows)
        if not rows:
            return
        cols = ", ".join(columns)
        if self.is_pg:
            arrays = ", ".join(f"?::{t}[]" for t in types)
            self.execute(f"INSERT INTO {table} ({cols}) SELECT * FROM unnest({arrays}) {tail}",
                         [list(c) for c in zip(*rows)])
        else:
            self.conn.executemany(f"INSERT INTO {table} ({cols}) VALUES ({','.join('?' * len(columns))}) {tail}", rows)

    def update_many(self, table: str, sets: Sequence[tuple[str, str]], key: str, types: Sequence[str],
                    rows: Sequence[Sequence[Any]]) -> None:
        """``UPDATE table SET col = expr WHERE key = ?`` for every row (the set values, then the
        key). ``expr`` holds ``{}`` where the row's value goes (``"balance_kop + {}"``). One
        ``UPDATE ... FROM unnest(arrays)`` statement in PostgreSQL."""
        rows = list(rows)
        if not rows:
            return
        if self.is_pg:
            names = [f"v{i}" for i in range(len(sets))] + ["k"]
            arrays = ", ".join(f"?::{t}[]" for t in types)
            assign = ", ".join(f"{c} = {e.format('d.' + n)}" for (c, e), n in zip(sets, names))
            self.execute(f"UPDATE {table} SET {assign} FROM unnest({arrays}) AS d({', '.join(names)}) "
                         f"WHERE {table}.{key} = d.k", [list(c) for c in zip(*rows)])
        else:
            assign = ", ".join(f"{c} = {e.format('?')}" for c, e in sets)
            self.conn.executemany(f"UPDATE {table} SET {assign} WHERE {key} = ?", rows)

    def copy_rows(self, table: str, columns: Sequence[str], rows: list[Sequence[Any]],
                  types: Sequence[str] | None = None) -> None:
        """Insert many new rows: ``COPY`` in PostgreSQL, ``executemany`` in SQLite. With the
        columns' SQL ``types``, PostgreSQL's COPY is binary: the server then parses no text."""
        if not rows:
            return
        if self.is_pg:
            binary = types is not None
            with self.conn.cursor() as cur:
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN"
                              + (" (FORMAT BINARY)" if binary else "")) as cp:
                    if binary:
                        cp.set_types(list(types))  # type: ignore[arg-type]
                    write = cp.write_row
                    for row in rows:
                        write(row)
        else:
            marks = ",".join("?" * len(columns))
            self.conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    # -- transactions --

    @contextmanager
    def transaction(self, *, write: bool = True, snapshot: bool = False) -> Iterator["Database"]:
        """One transaction: committed when the block ends, rolled back if it raises.

        A SQLite write transaction starts with ``BEGIN IMMEDIATE`` (the write lock, waiting up
        to the busy timeout). ``snapshot`` asks PostgreSQL for one consistent view of every
        read (``REPEATABLE READ``), as SQLite's read transactions always are.
        """
        if self._in_tx:
            raise RuntimeError("nested transaction")
        self._in_tx = True
        try:
            if self.is_pg:
                self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if snapshot and not write
                                  else "BEGIN")
            else:
                self.conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield self
            except BaseException:
                try:
                    self.conn.execute("ROLLBACK")
                except Exception:  # noqa: BLE001 - the connection broke: the server rolls back
                    pass
                raise
            self.conn.execute("COMMIT")
        finally:
            self._in_tx = False

    def run(self, fn: Any, *args: Any, write: bool = True, **kwargs: Any) -> Any:
        """``fn(db, *args, **kwargs)`` in one transaction, retried when PostgreSQL aborts it for
        a deadlock or a serialization failure, or SQLite stays busy (each retry starts over,
        so ``fn`` must not have effects outside the database)."""
        for attempt in range(_RETRIES):
            try:
                with self.transaction(write=write):
                    return fn(self, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - narrowed below
                if attempt + 1 < _RETRIES and _retryable(exc):
                    time.sleep(0.005 * (2 ** attempt))
                    continue
                raise
        raise AssertionError("unreachable")

    def interrupt(self) -> None:
        """Make the statement running on this connection fail soon: callable from any thread
        (SQLite's ``interrupt``, PostgreSQL's cancel request), the one thing that may be."""
        try:
            if self.is_pg:
                self.conn.cancel_safe(timeout=5.0)
            else:
                self.conn.interrupt()
        except Exception:  # noqa: BLE001 - a connection already broken needs no interrupt
            pass

    def close(self) -> None:
        """Close the connection. Only the thread that uses it may (see host.ledger_thread)."""
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing a broken connection
            pass


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return "locked" in str(exc) or "busy" in str(exc)
    try:
        import psycopg.errors as pe
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, (pe.DeadlockDetected, pe.SerializationFailure, pe.LockNotAvailable))


def connect(url: str, *, busy_timeout_ms: int = 60_000) -> Database:
    """Open the database at ``url`` (``sqlite:///...`` or ``postgresql://...``).

    Raises :class:`LedgerUnavailable` naming the URL (without its password) and the cause.
    """
    if not isinstance(url, str):
        raise LedgerUnavailable(f"a ledger URL is text, got {type(url).__name__}")
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        parts = urlsplit(url)
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path or parts.netloc:
            raise LedgerUnavailable(f"ledger URL {url!r}: use sqlite:///relative/path or sqlite:////absolute/path")
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                   timeout=busy_timeout_ms / 1000)
            conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA journal_size_limit=67108864")
            conn.execute("PRAGMA cache_size=-65536")
        except sqlite3.Error as exc:
            raise LedgerUnavailable(f"cannot open the SQLite ledger {path!r}: {exc}") from None
        if path != ":memory:" and mode.lower() != "wal":
            raise LedgerUnavailable(f"SQLite ledger {path!r} refused WAL mode (got {mode!r})")
        return Database(conn, "sqlite", url)
    if scheme in ("postgresql", "postgres"):
        try:
            import psycopg
        except ImportError:
            raise LedgerUnavailable("a PostgreSQL ledger needs psycopg 3: pip install 'psycopg[binary]>=3.1'") from None
        try:
            conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise LedgerUnavailable(f"cannot connect to the PostgreSQL ledger {redact_url(url)}: "
                                    f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}") from None
        _register_pg_arrays(conn)
        return Database(conn, "postgresql", url)
    raise LedgerUnavailable(f"unknown ledger URL scheme {scheme!r} in {redact_url(url)!r}: "
                            "use sqlite:///path or postgresql://...")
