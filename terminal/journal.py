"""The edge daemon's durable journal: every decision, on disk before it counts.

One SQLite file per site in WAL mode with ``synchronous=FULL``: :meth:`Journal.append`
resolves only after the transaction holding its records has committed and the WAL has been
fsync'd, so "approved" means "on disk" (see ``docs/journal.md``).

Writes go through one writer thread that owns the only write connection. Appends that
arrive while a commit is in progress queue up and are committed together in the next
transaction (group commit: one fsync for many lanes); each caller's work runs in its own
SAVEPOINT, so a caller whose records break a constraint gets a :class:`JournalError` and
the rest of the group still commits. The local API's answer to a request (its idempotency
entry) commits in the same transaction as the request's records: after a crash a retry
finds both or neither.

Reads are synchronous calls on a small pool of read connections: WAL readers never wait for
the writer and the queries are indexed, so they take microseconds to a few milliseconds and
are fine to call on the event loop (``open_transactions`` and ``counts`` scan, see their
docstrings). The journal knows nothing of lanes' state machines: which record kinds end a
transaction is a parameter of :meth:`Journal.open`.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import msgspec

from terminal.ids import IdError, check_name

__all__ = [
    "SCHEMA_VERSION", "JournalError", "JournalClosedError", "JournalDiskError", "BodyError",
    "DuplicateRecordError", "DuplicateRequestError", "Record", "IdemEntry", "OpenTransaction",
    "JournalCounts", "Journal", "canonical_json", "unacked_count",
]

SCHEMA_VERSION = 2
MAX_GROUP = 512  # appends committed in one transaction at most
MAX_PENDING = 4096  # appends queued for the writer before append() waits (backpressure)
BUSY_TIMEOUT_MS = 5_000
MAX_BODY_BYTES = 1 << 20
MAX_DEPTH = 32
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 63) - 1  # what SQLite, MessagePack and the host keep
_READ_POOL = 4


# --- errors ---------------------------------------------------------------------------------

class JournalError(Exception):
    """Anything that goes wrong in the journal; the one type its callers must catch."""


class JournalClosedError(JournalError):
    """The journal was used after :meth:`Journal.close`."""


class JournalDiskError(JournalError):
    """SQLite could not read or write the file (I/O error, disk full, locked, corrupt).

    When a COMMIT itself fails, whether the group reached the disk is unknown; the journal
    then refuses every further write until it is reopened, so the daemon restarts and
    recovers from what the file really holds.
    """


class BodyError(JournalError, ValueError):
    """A record body or an API response is not canonical JSON (a float, NaN, a tuple, a
    non-string key, ...). Raised before anything is written."""


class DuplicateRecordError(JournalError):
    """A record id is already in the journal (or twice in one append)."""


class DuplicateRequestError(JournalError):
    """An idempotency key is already in the journal: look the first answer up instead."""


# --- values ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Record:
    """One journal record: one step of one transaction on one lane.

    ``body`` holds JSON values only (ints, strings, bools, None, lists, dicts with string
    keys); floats are refused because money and volumes are integers (``amount_kop``,
    ``volume_ml``). ``seq`` and ``acked`` are set by the journal: leave them at their
    defaults when appending.
    """

    record_id: str
    site_id: str
    lane: str
    txn_id: str
    kind: str
    at_utc_s: int
    body: Mapping[str, Any]
    seq: int | None = None
    acked: bool = False


@dataclass(frozen=True, slots=True)
class IdemEntry:
    """The local API's first answer to a state-changing request, kept under its
    idempotency key. ``record_seq`` (the seq of the request's first record) and
    ``created_utc_s`` are filled in by the journal."""

    idem_key: str
    endpoint: str
    request_digest: str
    status: int  # HTTP status of the first answer
    response: Mapping[str, Any]
    record_seq: int | None = None
    created_utc_s: int | None = None


@dataclass(frozen=True, slots=True)
class OpenTransaction:
    """A transaction whose last record's kind is not terminal: recovery must finish it."""

    txn_id: str
    lane: str
    records: tuple[Record, ...]  # in seq order


@dataclass(frozen=True, slots=True)
class JournalCounts:
    """Figures for a health endpoint."""

    records: int
    unacked: int
    requests: int
    last_seq: int  # 0 for an empty journal
    oldest_unacked_seq: int | None
    oldest_unacked_at_utc_s: int | None
    commits: int  # transactions committed by this Journal object since it was opened


# --- canonical JSON -------------------------------------------------------------------------

def _plain(value: object, where: str, depth: int) -> object:
    """``value`` as plain JSON types (dict, list, str, int, bool, None), or BodyError."""
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BodyError(f"{where}: string {value!r} is not valid Unicode "
                            "(an unpaired surrogate)") from None
        return value if type(value) is str else str.__str__(value)
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise BodyError(f"{where}: integer {value} is outside the signed 64-bit range")
        return value if type(value) is int else int(value)
    if isinstance(value, float):
        raise BodyError(f"{where}: float {value!r} is not allowed: money, volumes and "
                        "points are integers (amount_kop, volume_ml, points)")
    if depth >= MAX_DEPTH:
        raise BodyError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        return [_plain(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise BodyError(f"{where}: key {k!r} is a {type(k).__name__}; "
                                "JSON object keys are strings")
            k = _plain(k, f"{where} key", depth + 1)
            out[k] = _plain(v, f"{where}.{k}", depth + 1)
        return out
    if isinstance(value, tuple):
        raise BodyError(f"{where}: a tuple is not JSON; use a list (it reads back as a list)")
    raise BodyError(f"{where}: a {type(value).__name__} is not JSON "
                    "(ints, strings, bools, None, lists and dicts only)")


def canonical_json(value: Mapping[str, Any], what: str = "body") -> str:
    """The canonical JSON text of a mapping: sorted keys, compact separators, UTF-8.

    Raises :class:`BodyError` naming the offending path (``body.lines[2].amount``) if
    ``value`` holds anything but JSON values, or is over 1 MiB.
    """
    if not isinstance(value, Mapping):
        raise BodyError(f"{what}: must be a mapping (a JSON object), got {type(value).__name__}")
    text = json.dumps(_plain(value, what, 0), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False)
    if len(text) > MAX_BODY_BYTES // 4 and len(text.encode("utf-8")) > MAX_BODY_BYTES:
        raise BodyError(f"{what}: {len(text.encode('utf-8'))} bytes of JSON, "
                        f"more than {MAX_BODY_BYTES}")
    return text


def _text(what: str, value: object, limit: int = 256) -> str:
    if not isinstance(value, str) or not value or len(value) > limit:
        raise JournalError(f"{what} must be a non-empty string of at most {limit} characters, "
                           f"got {value!r}")
    return value


def _integer(what: str, value: object, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise JournalError(f"{what} must be an integer in [{low}, {high}], got {value!r}")
    return value


# --- schema ---------------------------------------------------------------------------------

def _migrate_to_1(conn: sqlite3.Connection) -> None:
    conn.execute("""
        CREATE TABLE records (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            record_id TEXT NOT NULL UNIQUE,
            site_id TEXT NOT NULL,
            lane TEXT NOT NULL,
            txn_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            at_utc_s INTEGER NOT NULL,
            body TEXT NOT NULL,              -- canonical JSON: sorted keys, compact
            acked INTEGER NOT NULL DEFAULT 0 -- 1 once the host acknowledged it
        )""")
    conn.execute("CREATE INDEX records_txn ON records (txn_id)")
    conn.execute("CREATE INDEX records_lane ON records (lane, seq)")
    conn.execute("CREATE INDEX records_acked ON records (acked, seq)")
    conn.execute("""
        CREATE TABLE requests (
            idem_key TEXT PRIMARY KEY,
            endpoint TEXT NOT NULL,
            request_digest TEXT NOT NULL,
            status INTEGER NOT NULL,         -- HTTP status of the first answer
            response TEXT NOT NULL,          -- canonical JSON of the first answer
            record_seq INTEGER REFERENCES records (seq),
            created_utc_s INTEGER NOT NULL
        )""")
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")


def _migrate_to_2(conn: sqlite3.Connection) -> None:
    """The acknowledgements as ranges of seqs (table ``acked``), not a flag in every row: an
    ack then writes a row or two, not every record's row (body included) and an index entry
    each. The flags of a version-1 file become its ranges (runs of consecutive acked seqs);
    their index goes, and the column is renamed ``acked_v1`` so that a reader still asking for
    ``acked`` fails instead of reading flags nobody writes any more. (Dropping the column
    would copy the table: 13 s and 1 GB of WAL for 1,000,000 records here, at the first open.)
    """
    conn.execute("""
        CREATE TABLE acked (
            first_seq INTEGER PRIMARY KEY,   -- records first_seq..last_seq are acknowledged
            last_seq INTEGER NOT NULL,
            CHECK (last_seq >= first_seq)
        )""")
    conn.execute("""
        INSERT INTO acked (first_seq, last_seq)
        SELECT MIN(seq), MAX(seq) FROM (
            SELECT seq, seq - ROW_NUMBER() OVER (ORDER BY seq) AS run FROM records WHERE acked = 1)
        GROUP BY run""")
    conn.execute("DROP INDEX records_acked")
    conn.execute("ALTER TABLE records RENAME COLUMN acked TO acked_v1")


# MIGRATIONS[n] takes a file at version n - 1 to version n, inside one transaction.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _migrate_to_1, 2: _migrate_to_2}


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema of ``conn`` (autocommit mode) up to :data:`SCHEMA_VERSION`, one
    transaction per step, and return the version. An empty file goes through every step.

    Raises :class:`JournalError` for a file made by a newer version of the software.
    """
    while True:
        conn.execute("BEGIN IMMEDIATE")  # re-read the version under the write lock
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise JournalError(f"journal schema version {version} is newer than this "
                                   f"software understands ({SCHEMA_VERSION}); upgrade edgepos")
            if version == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return version
            MIGRATIONS[version + 1](conn)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


_RECORD_COLS = "seq, record_id, site_id, lane, txn_id, kind, at_utc_s, body"


#: Reads a stored body (canonical JSON that :func:`canonical_json` wrote): the same values as
#: ``json.loads``, 2-3x faster (the sync client reads every record once).
_read_body = msgspec.json.Decoder().decode


_STORED_ROWS = ("SELECT seq, record_id, site_id, lane, txn_id, kind, at_utc_s, body FROM records "
                "WHERE seq > ? ORDER BY seq LIMIT ?")


def _runs(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted distinct ``seqs`` as runs of consecutive seqs: ``(first, last)`` pairs."""
    runs: list[tuple[int, int]] = []
    for s in seqs:
        if runs and runs[-1][1] == s - 1:
            runs[-1] = (runs[-1][0], s)
        else:
            runs.append((s, s))
    return runs


def _write_meta(conn: sqlite3.Connection, changes: list[tuple[str, str | None]]) -> None:
    for key, value in changes:
        if value is None:
            conn.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))


# --- acknowledged ranges (table ``acked``, schema version 2) --------------------------------
#
# The acknowledged records are kept as disjoint ranges of seqs, sorted, two ranges never
# adjacent (they are merged). A range only ever covers seqs up to the highest stored when it
# was written: seqs are AUTOINCREMENT, so a record appended later has a seq above every range
# and starts unacked.

Ranges = list[tuple[int, int]]


def _acked_ranges(conn: sqlite3.Connection) -> Ranges:
    """The acknowledged ranges ``(first_seq, last_seq)``, in seq order."""
    return conn.execute("SELECT first_seq, last_seq FROM acked ORDER BY first_seq").fetchall()


def _uncovered(runs: Ranges, ranges: Ranges) -> Ranges:
    """The parts of ``runs`` (sorted, disjoint) that no range of ``ranges`` covers."""
    out: Ranges = []
    i = 0
    for first, last in runs:
        while i < len(ranges) and ranges[i][1] < first:
            i += 1
        j = i
        while first <= last:
            if j < len(ranges) and ranges[j][0] <= last:
                a, b = ranges[j]
                if first < a:
                    out.append((first, a - 1))
                first = max(first, b + 1)
                j += 1
            else:
                out.append((first, last))
                break
    return out


def _merged(ranges: Ranges) -> Ranges:
    """``ranges`` sorted, with overlapping and adjacent ones merged."""
    out: Ranges = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out


def _gaps(ranges: Ranges) -> Iterator[tuple[int, int | None]]:
    """The seqs outside ``ranges`` as ``(first, last)`` runs; the last run is open (None)."""
    first = 1
    for a, b in ranges:
        if first < a:
            yield first, a - 1
        first = b + 1
    yield first, None


def _count_between(conn: sqlite3.Connection, first: int, last: int) -> int:
    n: int = conn.execute("SELECT COUNT(*) FROM records WHERE seq BETWEEN ? AND ?", (first, last)).fetchone()[0]
    return n


def unacked_count(conn: sqlite3.Connection) -> int:
    """How many records of the journal open on ``conn`` (any connection, say a read-only one
    from another process) the host has not acknowledged. Counts rows, as :meth:`Journal.counts`
    does."""
    total: int = conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
    return total - sum(_count_between(conn, a, b) for a, b in _acked_ranges(conn))


def _mark(conn: sqlite3.Connection, runs: Ranges, count: bool) -> int | None:
    """Acknowledge the records in ``runs`` (sorted, disjoint ``(first, last)`` seq runs); return
    how many of them were not acknowledged before (``count``; else None: counting them reads
    their rows, which the ranges are there to avoid). Writes only the ranges that change."""
    top = conn.execute("SELECT MAX(seq) FROM records").fetchone()[0] or 0
    runs = [(a, min(b, top)) for a, b in runs if a <= min(b, top)]  # never past the last record
    old = _acked_ranges(conn) if runs else []
    fresh = _uncovered(runs, old)
    if not fresh:
        return 0 if count else None
    new = _merged(old + fresh)
    gone = set(old) - set(new)
    conn.executemany("DELETE FROM acked WHERE first_seq = ?", [(a,) for a, _ in gone])
    conn.executemany("INSERT INTO acked (first_seq, last_seq) VALUES (?, ?)", list(set(new) - set(old)))
    return sum(_count_between(conn, a, b) for a, b in fresh) if count else None


def _records(rows: list[tuple], ranges: Ranges) -> list[Record]:
    """``Record``s of rows read with :data:`_RECORD_COLS` (in any order), ``acked`` from
    ``ranges``."""
    firsts = [a for a, _ in ranges]
    out = []
    for seq, record_id, site_id, lane, txn_id, kind, at_utc_s, body in rows:
        i = bisect.bisect_right(firsts, seq) - 1
        out.append(Record(record_id, site_id, lane, txn_id, kind, at_utc_s, _read_body(body), seq,
                          i >= 0 and seq <= ranges[i][1]))
    return out


def _idem(row: tuple) -> IdemEntry:
    key, endpoint, digest, status, response, record_seq, created = row
    return IdemEntry(key, endpoint, digest, status, json.loads(response), record_seq, created)


# --- the writer's work items ----------------------------------------------------------------

class _Op:
    """One caller's write: applied in its own SAVEPOINT of a group transaction."""

    __slots__ = ("apply", "loop", "future", "durable")

    def __init__(self, apply: Callable[[sqlite3.Connection], object],
                 loop: asyncio.AbstractEventLoop, future: asyncio.Future, durable: bool = True) -> None:
        self.apply = apply
        self.loop = loop
        self.future = future
        self.durable = durable  # False: this write alone needs no fsync (mark_acked)


def _settle(future: asyncio.Future, result: object, error: BaseException | None) -> None:
    if future.done():  # the caller gave up (cancelled): the outcome stays in the journal
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _settle_batch(batch: list[tuple[asyncio.Future, object, BaseException | None]]) -> None:
    for future, result, error in batch:
        _settle(future, result, error)


def _settle_all(outcomes: list[tuple[_Op, object, BaseException | None]]) -> None:
    """Resolve a group's futures with one wake-up per event loop, not one per caller."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for op, result, error in outcomes:
        by_loop.setdefault(op.loop, []).append((op.future, result, error))
    for loop, batch in by_loop.items():
        _call_in_loop(loop, _settle_batch, batch)


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _call_in_loop(loop: asyncio.AbstractEventLoop, fn: Callable, *args: object) -> None:
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
        pass


def _connect(path: Path, busy_timeout_ms: int, *, check_same_thread: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None,
                           check_same_thread=check_same_thread)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    return conn


# --- the journal ----------------------------------------------------------------------------

class Journal:
    """A site's journal file. Make one with :meth:`Journal.open`; use it as ``async with``
    (or ``with``) or call :meth:`close`.

    Writes (:meth:`append`, :meth:`mark_acked`, :meth:`set_meta`) are coroutines that
    resolve once committed; they may be awaited from any event loop. Reads are synchronous.
    A cancelled write may still commit: its caller must look in the journal to learn the
    outcome (which is what crash recovery does anyway).
    """

    def __init__(self, path: Path, site_id: str, terminal_kinds: frozenset[str],
                 max_group: int, max_pending: int, busy_timeout_ms: int) -> None:
        """Use :meth:`Journal.open`."""
        self.path = path
        self.site_id = site_id
        self.terminal_kinds = terminal_kinds
        self._terminal_json = json.dumps(sorted(terminal_kinds))
        self._max_group = max_group
        self._max_pending = max_pending
        self._busy_timeout_ms = busy_timeout_ms
        self._cond = threading.Condition(threading.Lock())
        self._queue: collections.deque[_Op] = collections.deque()
        self._space_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._closed = False
        self._failure: str | None = None  # set when a COMMIT failed: outcome unknown
        self._commits = 0
        self._fsync = True  # the writer connection's synchronous setting: FULL (True) or NORMAL
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"journal-writer:{path.name}",
                                        daemon=True)

    # --- lifecycle ---

    @classmethod
    def open(cls, path: str | os.PathLike[str], site_id: str, *,
             terminal_kinds: Iterable[str] = frozenset(), max_group: int = MAX_GROUP,
             max_pending: int = MAX_PENDING, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> Journal:
        """Open (creating it and its folder if missing) the journal file at ``path`` of site
        ``site_id``, migrate its schema, and start the writer thread.

        ``terminal_kinds``: the record kinds that end a transaction (for
        :meth:`open_transactions`). Raises :class:`JournalError` if the file is not a
        journal, belongs to another site, is from a newer version, or cannot be written.
        """
        try:
            check_name("site id", site_id)
        except IdError as e:
            raise JournalError(str(e)) from None
        kinds = frozenset(terminal_kinds)
        for kind in kinds:
            _text("terminal kind", kind)
        _integer("max_group", max_group, 1, 1 << 20)
        _integer("max_pending", max_pending, 1, 1 << 24)
        _integer("busy_timeout_ms", busy_timeout_ms, 0, 3_600_000)
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise JournalDiskError(f"cannot create the journal folder {path.parent}: {e}") from None
        journal = cls(path, site_id, kinds, max_group, max_pending, busy_timeout_ms)
        journal._thread.start()
        journal._ready.wait()
        if journal._start_error is not None:
            journal._thread.join()
            raise journal._start_error
        return journal

    def close(self) -> None:
        """Commit what is queued, stop the writer and close the file. Idempotent.

        Blocks for the last group's commit (milliseconds)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            waiters, self._space_waiters = self._space_waiters, []
            self._cond.notify_all()
        for loop, fut in waiters:
            _call_in_loop(loop, _wake, fut)
        self._thread.join()
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    @property
    def commits(self) -> int:
        """Transactions the writer committed since open (one per group, so many appends)."""
        return self._commits

    async def __aenter__(self) -> Journal:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("failed" if self._failure else "open")
        return f"<Journal {str(self.path)!r} site={self.site_id!r} {state}>"

    # --- writes ---

    async def append(self, records: Sequence[Record], *, idem: IdemEntry | None = None) -> list[int]:
        """Append ``records`` (and ``idem``, the API's answer to the request that made them)
        in one transaction; return their seqs once it is committed and on disk.

        Raises :class:`BodyError` (a body is not JSON) or :class:`JournalError` (a bad field,
        another site's record) before anything is written; :class:`DuplicateRecordError` or
        :class:`DuplicateRequestError` if a record id or the idempotency key is already in
        the journal (nothing of this call is written, other callers are unaffected);
        :class:`JournalDiskError` if the disk failed; :class:`JournalClosedError`.
        """
        rows = self._record_rows(records)
        idem_row = self._idem_row(idem) if idem is not None else None
        if not rows and idem_row is None:
            self._check_open()
            return []

        def apply(conn: sqlite3.Connection) -> list[int]:
            seqs = []
            for row in rows:
                try:
                    cur = conn.execute(
                        "INSERT INTO records (record_id, site_id, lane, txn_id, kind, at_utc_s, "
                        "body) VALUES (?, ?, ?, ?, ?, ?, ?)", row)
                except sqlite3.IntegrityError:
                    raise DuplicateRecordError(
                        f"record id {row[0]!r} is already in the journal") from None
                seqs.append(cur.lastrowid)
            if idem_row is not None:
                try:
                    conn.execute(
                        "INSERT INTO requests (idem_key, endpoint, request_digest, status, "
                        "response, record_seq, created_utc_s) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (*idem_row, seqs[0] if seqs else None, int(time.time())))
                except sqlite3.IntegrityError:
                    raise DuplicateRequestError(
                        f"idempotency key {idem_row[0]!r} is already in the journal "
                        "(a retry or a concurrent request: look its first answer up)") from None
            return seqs

        return await self._submit(apply)  # type: ignore[return-value]

    async def mark_acked(self, up_to_seq: int | None = None, *,
                         seqs: Iterable[int] | None = None,
                         meta: Mapping[str, str | None] | None = None, count: bool = True) -> int | None:
        """Mark records as acknowledged by the host: every record with ``seq <= up_to_seq``,
        or exactly the records in ``seqs`` (give one of the two). Returns how many records
        changed from unacked to acked; with ``count=False``, None (the sync client, which
        does not need the figure: counting reads every record row the mark covers, and cost
        about as much as the rest of the mark). Nothing is deleted.

        The marks are kept as ranges of seqs (table ``acked``): a mark writes a row or two,
        whatever the number of records it covers (``seqs`` as their runs of consecutive
        seqs), and ``Record.acked``, :meth:`unacked` and :meth:`counts` read the ranges.
        ``meta`` (key to value, None deletes) is set in the same transaction, so the marks
        and, say, the sync client's acked batch number are stored together or not at all.

        The marks are the one write that is not fsync'd on its own: a group holding only
        marks commits with ``synchronous=NORMAL`` (atomic, durable with the next fsync'd
        commit or checkpoint). A power cut may undo the last marks, never half of one; the
        records are then sent again and the host drops them by record id. A group that also
        holds an append or a meta write is fsync'd as ever.
        """
        if (up_to_seq is None) == (seqs is None):
            raise JournalError("mark_acked: give either up_to_seq or seqs")
        changes = self._meta_changes(meta or {})
        if up_to_seq is not None:
            runs = [(1, _integer("up_to_seq", up_to_seq, 0, _INT_MAX))]
        else:
            chosen = sorted({_integer("seq", s, 1, _INT_MAX) for s in seqs})  # type: ignore[union-attr]
            if not chosen and not changes:
                self._check_open()
                return 0 if count else None
            runs = _runs(chosen)

        def apply(conn: sqlite3.Connection) -> int | None:
            n = _mark(conn, runs, count)
            _write_meta(conn, changes)
            return n

        return await self._submit(apply, durable=False)  # type: ignore[return-value]

    async def set_meta(self, key: str, value: str | None) -> None:
        """Set (or with None, delete) a meta value, e.g. the replica version applied."""
        changes = self._meta_changes({key: value})

        def apply(conn: sqlite3.Connection) -> None:
            _write_meta(conn, changes)

        await self._submit(apply)

    @staticmethod
    def _meta_changes(meta: Mapping[str, str | None]) -> list[tuple[str, str | None]]:
        if not isinstance(meta, Mapping):
            raise JournalError(f"meta must be a mapping of keys to values, got {type(meta).__name__}")
        out = []
        for key, value in meta.items():
            _text("meta key", key)
            if value is not None and not isinstance(value, str):
                raise JournalError(f"meta value of {key!r} must be a string or None, got {value!r}")
            out.append((key, value))
        return out

    # --- reads (synchronous) ---

    async def lookup_request(self, idem_key: str) -> IdemEntry | None:
        """The first answer stored under ``idem_key``, or None. (A primary-key read: it runs
        inline, the coroutine form keeps the API free to move it to a thread.)"""
        _text("idempotency key", idem_key)
        with self._reading() as conn:
            row = conn.execute("SELECT idem_key, endpoint, request_digest, status, response, "
                               "record_seq, created_utc_s FROM requests WHERE idem_key = ?",
                               (idem_key,)).fetchone()
        return _idem(row) if row else None

    def records_for_txn(self, txn_id: str) -> list[Record]:
        """The records of one transaction, in seq order."""
        with self._reading() as conn:
            rows = conn.execute(f"SELECT {_RECORD_COLS} FROM records WHERE txn_id = ? ORDER BY seq",
                                (txn_id,)).fetchall()
            ranges = _acked_ranges(conn)
        return _records(rows, ranges)

    def tail(self, n: int, lane: str | None = None) -> list[Record]:
        """The latest ``n`` records (of ``lane``, if given), in seq order."""
        _integer("n", n, 0, _INT_MAX)
        with self._reading() as conn:
            if lane is None:
                rows = conn.execute(f"SELECT {_RECORD_COLS} FROM records ORDER BY seq DESC "
                                    "LIMIT ?", (n,)).fetchall()
            else:
                rows = conn.execute(f"SELECT {_RECORD_COLS} FROM records WHERE lane = ? "
                                    "ORDER BY seq DESC LIMIT ?", (lane, n)).fetchall()
            ranges = _acked_ranges(conn)
        return _records(rows[::-1], ranges)

    def after(self, seq: int, limit: int) -> list[Record]:
        """At most ``limit`` records with a seq greater than ``seq``, in seq order (the sync
        client's cursor)."""
        _integer("seq", seq, 0, _INT_MAX)
        _integer("limit", limit, 0, _INT_MAX)
        with self._reading() as conn:
            rows = conn.execute(f"SELECT {_RECORD_COLS} FROM records WHERE seq > ? ORDER BY seq "
                                "LIMIT ?", (seq, limit)).fetchall()
            ranges = _acked_ranges(conn)
        return _records(rows, ranges)

    def after_rows(self, seq: int, limit: int) -> list[tuple[int, str, str, str, str, str, int, dict[str, Any]]]:
        """What :meth:`after` returns, as plain tuples ``(seq, record_id, site_id, lane,
        txn_id, kind, at_utc_s, body)``: no ``Record`` per row (the sync client packs them
        for the wire at once, :func:`wire.codec.pack_record_rows`)."""
        body = _read_body
        return [(s, rid, site, lane, txn, kind, at, body(b))
                for s, rid, site, lane, txn, kind, at, b in self.after_stored(seq, limit)]

    def after_stored(self, seq: int, limit: int) -> list[tuple[int, str, str, str, str, str, int, str]]:
        """:meth:`after_rows` with each body as stored: its canonical JSON text, not decoded.
        The sync client packs the text for the wire in C (:func:`wire.codec.pack_record_rows`)
        without a Python object per body value."""
        _integer("seq", seq, 0, _INT_MAX)
        _integer("limit", limit, 0, _INT_MAX)
        with self._reading() as conn:
            return conn.execute(_STORED_ROWS, (seq, limit)).fetchall()

    def unacked(self, limit: int) -> list[Record]:
        """The oldest ``limit`` records the host has not acknowledged, in seq order."""
        _integer("limit", limit, 0, _INT_MAX)
        rows: list[tuple] = []
        with self._reading() as conn:
            for first, last in _gaps(_acked_ranges(conn)):  # one indexed read per gap between ranges
                if len(rows) >= limit:
                    break
                if last is None:
                    rows += conn.execute(f"SELECT {_RECORD_COLS} FROM records WHERE seq >= ? "
                                         "ORDER BY seq LIMIT ?", (first, limit - len(rows))).fetchall()
                else:
                    rows += conn.execute(f"SELECT {_RECORD_COLS} FROM records WHERE seq BETWEEN ? AND ? "
                                         "ORDER BY seq LIMIT ?", (first, last, limit - len(rows))).fetchall()
        return _records(rows, [])

    def open_transactions(self) -> list[OpenTransaction]:
        """Every transaction whose last record's kind is not one of ``terminal_kinds``, with
        all its records, oldest transaction first: what recovery must finish on restart.

        Scans the txn_id index once (about 0.3 s per million records).
        """
        with self._reading() as conn:
            rows = conn.execute(f"""
                WITH last AS (SELECT txn_id, MAX(seq) AS seq FROM records GROUP BY txn_id),
                     open AS (SELECT r.txn_id FROM last JOIN records r ON r.seq = last.seq
                              WHERE r.kind NOT IN (SELECT value FROM json_each(?)))
                SELECT {_RECORD_COLS} FROM records
                WHERE txn_id IN (SELECT txn_id FROM open) ORDER BY seq""",
                                (self._terminal_json,)).fetchall()
            ranges = _acked_ranges(conn)
        by_txn: dict[str, list[Record]] = {}
        for rec in _records(rows, ranges):
            by_txn.setdefault(rec.txn_id, []).append(rec)
        return [OpenTransaction(txn_id, recs[-1].lane, tuple(recs)) for txn_id, recs in by_txn.items()]

    def get_meta(self, key: str) -> str | None:
        """A meta value, or None if it was never set."""
        with self._reading() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def counts(self) -> JournalCounts:
        """Record and request counts for a health endpoint (counts rows: about 0.12 s per
        million records)."""
        with self._reading() as conn:
            records, last_seq = conn.execute("SELECT COUNT(*), MAX(seq) FROM records").fetchone()
            unacked = unacked_count(conn)
            oldest = oldest_at = None
            for first, last in _gaps(_acked_ranges(conn)):
                row = conn.execute("SELECT seq, at_utc_s FROM records WHERE seq BETWEEN ? AND ? "
                                   "ORDER BY seq LIMIT 1", (first, _INT_MAX if last is None else last)).fetchone()
                if row is not None:
                    oldest, oldest_at = row
                    break
            requests = conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
        return JournalCounts(records, unacked, requests, last_seq or 0, oldest, oldest_at,
                             self._commits)

    # --- validation (in the caller's thread, before anything is queued) ---

    def _check_open(self) -> None:
        if self._closed:
            raise JournalClosedError(f"journal {self.path} is closed")
        if self._failure is not None:
            raise JournalDiskError(f"journal {self.path} refuses writes since a commit failed "
                                   f"({self._failure}); reopen it to recover")

    def _record_rows(self, records: Sequence[Record]) -> list[tuple]:
        if isinstance(records, Record) or not isinstance(records, Sequence):
            raise JournalError(f"append takes a sequence of Records, got {type(records).__name__}")
        rows, seen = [], set()
        for i, rec in enumerate(records):
            if not isinstance(rec, Record):
                raise JournalError(f"records[{i}] is a {type(rec).__name__}, not a Record")
            _text(f"records[{i}].record_id", rec.record_id)
            if rec.record_id in seen:
                raise DuplicateRecordError(f"record id {rec.record_id!r} appears twice in one append")
            seen.add(rec.record_id)
            if rec.site_id != self.site_id:
                raise JournalError(f"record {rec.record_id!r} is of site {rec.site_id!r}; "
                                   f"this journal is site {self.site_id!r}'s")
            _text(f"record {rec.record_id!r}: lane", rec.lane)
            _text(f"record {rec.record_id!r}: txn_id", rec.txn_id)
            _text(f"record {rec.record_id!r}: kind", rec.kind)
            _integer(f"record {rec.record_id!r}: at_utc_s", rec.at_utc_s, 0, _INT_MAX)
            if rec.seq is not None or rec.acked:
                raise JournalError(f"record {rec.record_id!r}: seq and acked are set by the "
                                   "journal; append records with their defaults")
            body = canonical_json(rec.body, f"record {rec.record_id!r} body")
            rows.append((rec.record_id, rec.site_id, rec.lane, rec.txn_id, rec.kind,
                         rec.at_utc_s, body))
        return rows

    @staticmethod
    def _idem_row(idem: IdemEntry) -> tuple:
        if not isinstance(idem, IdemEntry):
            raise JournalError(f"idem must be an IdemEntry, got {type(idem).__name__}")
        _text("idem_key", idem.idem_key)
        _text("endpoint", idem.endpoint)
        _text("request_digest", idem.request_digest)
        _integer("status", idem.status, 100, 599)
        response = canonical_json(idem.response, f"response to {idem.idem_key!r}")
        return (idem.idem_key, idem.endpoint, idem.request_digest, idem.status, response)

    # --- the writer ---

    async def _submit(self, apply: Callable[[sqlite3.Connection], object], *, durable: bool = True) -> object:
        loop = asyncio.get_running_loop()
        op = _Op(apply, loop, loop.create_future(), durable)
        while True:
            with self._cond:
                self._check_open()
                if len(self._queue) < self._max_pending:
                    self._queue.append(op)
                    self._cond.notify()
                    break
                waiter = loop.create_future()
                self._space_waiters.append((loop, waiter))
            await waiter  # backpressure: the writer wakes us when it takes a group
        return await op.future

    def _run(self) -> None:
        """The writer thread: owns the write connection, commits groups until closed."""
        try:
            conn = self._open_writer()
        except BaseException as e:  # noqa: BLE001 - handed to open()'s caller
            self._start_error = e
            self._ready.set()
            return
        self._ready.set()
        group: list[_Op] = []
        try:
            while True:
                with self._cond:
                    while not self._queue and not self._closed:
                        self._cond.wait()
                    if not self._queue:
                        break  # closed and drained
                    n = min(len(self._queue), self._max_group)
                    group = [self._queue.popleft() for _ in range(n)]
                    waiters, self._space_waiters = self._space_waiters, []
                for loop, fut in waiters:
                    _call_in_loop(loop, _wake, fut)
                self._commit_group(conn, group)
                group = []
        except BaseException as e:  # a bug in the writer: fail everyone rather than hang them
            with self._cond:
                self._failure = f"writer thread crashed: {e!r}"
                group.extend(self._queue)
                self._queue.clear()
            self._fail_all(group, JournalDiskError, self._failure)
            raise
        finally:
            conn.close()

    def _open_writer(self) -> sqlite3.Connection:
        try:
            conn = _connect(self.path, self._busy_timeout_ms, check_same_thread=True)
        except sqlite3.Error as e:
            raise JournalDiskError(f"cannot open journal {self.path}: {e}") from None
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise JournalDiskError(f"journal {self.path}: SQLite refused WAL mode ({mode})")
            conn.execute("PRAGMA synchronous = FULL")
            if conn.execute("PRAGMA synchronous").fetchone()[0] != 2:  # 2 is FULL
                raise JournalDiskError(f"journal {self.path}: SQLite refused synchronous=FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA journal_size_limit = 67108864")  # truncate the WAL to 64 MiB
            migrate(conn)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('site_id', ?)",
                         (self.site_id,))
            owner = conn.execute("SELECT value FROM meta WHERE key = 'site_id'").fetchone()[0]
            conn.execute("COMMIT")
            if owner != self.site_id:
                raise JournalError(f"journal {self.path} belongs to site {owner!r}, "
                                   f"not {self.site_id!r}")
            return conn
        except sqlite3.Error as e:
            conn.close()
            raise JournalDiskError(f"cannot open journal {self.path}: {e}") from None
        except BaseException:
            conn.close()
            raise

    def _commit_group(self, conn: sqlite3.Connection, group: list[_Op]) -> None:
        """One transaction for the whole group, one SAVEPOINT per caller."""
        if self._failure is not None:
            self._fail_all(group, JournalDiskError, f"journal {self.path} refuses writes since "
                           f"a commit failed ({self._failure}); reopen it to recover")
            return
        try:
            # fsync'd (FULL) if any write of the group needs it; only marks: NORMAL (mark_acked)
            durable = any(op.durable for op in group)
            if durable != self._fsync:
                conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
                self._fsync = durable
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            self._fail_all(group, JournalDiskError, f"journal {self.path}: cannot start a write "
                           f"transaction: {e}")
            return
        outcomes: list[tuple[_Op, object, BaseException | None]] = []
        try:
            for op in group:
                conn.execute("SAVEPOINT op")
                try:
                    result = op.apply(conn)
                except sqlite3.Error:
                    raise  # not a constraint of this caller (disk full, I/O): the group fails
                except Exception as e:  # noqa: BLE001 - this caller's error only
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    if not isinstance(e, JournalError):
                        e = JournalError(f"journal write failed: {e!r}")
                    outcomes.append((op, None, e))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((op, result, None))
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            self._fail_all(group, JournalDiskError, f"journal {self.path}: write failed, "
                           f"nothing of it was committed: {e}")
            return
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            # Whether the WAL frames reached the disk is unknown (a failed fsync may have
            # dropped them or not). Refuse every later write; a reopen reads the truth.
            self._failure = f"COMMIT failed: {e}"
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            self._fail_all(group, JournalDiskError, f"journal {self.path}: commit failed, its "
                           f"outcome is unknown until the journal is reopened: {e}")
            return
        self._commits += 1
        _settle_all(outcomes)

    @staticmethod
    def _fail_all(group: list[_Op], kind: type[JournalError], message: str) -> None:
        _settle_all([(op, None, kind(message)) for op in group])

    # --- the read pool ---

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A read connection inside one read transaction (one consistent snapshot)."""
        if self._closed:
            raise JournalClosedError(f"journal {self.path} is closed")
        with self._readers_lock:
            conn = self._readers.pop() if self._readers else None
        try:
            if conn is None:
                conn = _connect(self.path, self._busy_timeout_ms, check_same_thread=False)
                conn.execute("PRAGMA query_only = ON")
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn is not None:
                conn.close()
                conn = None
            raise JournalDiskError(f"journal {self.path}: read failed: {e}") from None
        finally:
            if conn is not None:
                with self._readers_lock:
                    keep = not self._closed and len(self._readers) < _READ_POOL
                    if keep:
                        self._readers.append(conn)
                if not keep:
                    conn.close()
