"""Ingest: apply a site's :class:`wire.Batch` to the ledger in one transaction, and answer
the :class:`wire.Ack` to publish after the commit.

Exactly-once effect from at-least-once delivery:

- **Dedup by record id.** ``records.record_id`` is the primary key. Inside the transaction
  the batch's ids already stored are read and skipped; only new records are inserted and
  have effects (:mod:`host.effects`). A batch applied twice, or two batches that overlap,
  apply each record once. On PostgreSQL the new records' rows are stored first, so the key
  makes them this transaction's: another that stores one of them meanwhile fails and runs
  again, and then finds it stored.
- **Never skip by batch number.** A batch is applied whatever its ``batch_seq``; the
  number only drives the watermark.
- **The watermark.** ``sites.up_to_seq`` is the highest n such that batches 1..n are all
  settled (applied, or refused for good). A batch beyond a gap is applied at once but the
  watermark waits for the gap. Every ingest transaction locks the site's row (``SELECT ...
  FOR UPDATE`` in PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` holds the one write lock) before
  it writes the batch rows and the watermark, so workers ingesting batches of one site at
  the same time, in any order, serialize there and the watermark is always right. On
  PostgreSQL that lock is taken last (issue 12, eighth pass): after the records are stored
  and the effects applied under the rows' own locks, so two workers of one site overlap
  all but the rows they share. What the site's lock used to serialize besides its own rows
  has a lock of its own: a till sale and its returns an advisory lock per sale
  (:func:`sale_lock_key`), the disabled-site refusal a check again under the site's lock
  (disabled meanwhile: rolled back and run again, refused).
- **Ack after commit.** :func:`ingest_batch` returns the Ack once the transaction has
  committed; the caller publishes it. A crash before the commit leaves nothing applied and
  nothing acked: the site sends the batch again.
- **Refusals.** Batches of a site an operator disabled are settled as rejected (listed in
  the ack's ``rejected``); the site keeps their records and alerts. Records of unknown
  kinds, or whose bodies lack what their kind needs, are stored and flagged, not lost.
- **No poison batch.** The wire carries integers up to 2^64 - 1, the ledger's columns are
  64-bit signed. A body holding an integer beyond that range makes the transaction fail (a
  ``COPY`` or an insert cannot take it); the batch would never be acked and the site would
  send it forever. So when a transaction fails and a body of its batches holds such an
  integer, it is run again with those records stored flagged ``bad_body`` (their body text
  kept, no columns, no effects, a warning logged), and the batches are acked. The bodies are
  walked only after a failure: the common path pays nothing for this.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence

import msgspec

from wire import DEFAULT_LIMITS, Ack, Batch, Limits, Presence, Rejection, WireRecord

from . import alerts
from .db import Database
from .effects import BatchEffects
from .ledger import Ledger
from .records import NO_FACTS, TILL_RETURN, TILL_SALE_COMMITTED
from .rows import dumps

__all__ = ["ingest_batch", "ingest_site_batches", "record_presence", "IngestStats", "wide_int_path",
           "INT64_MIN", "INT64_MAX"]

log = logging.getLogger("edgepos.host.ingest")

#: A body's text for the ``records`` row: compact JSON, keys in the order received (as
#: :func:`host.rows.dumps` writes it, about 6x faster). A record decode read from a frame
#: brings this text along (``WireRecord.body_json``, written from the body's bytes, the same
#: text byte for byte): it is used as it is (:func:`_text`).
_body_json = msgspec.json.Encoder().encode


def _text(r: WireRecord) -> str:
    """The ``records.body`` text of ``r``: the one decode wrote, else its body encoded."""
    return _body_json(r.body).decode() if r.body_json is None else r.body_json

_RECORD_COLUMNS = ("record_id", "site_id", "batch_seq", "lane", "txn_id", "kind", "at_utc_s", "body", "flag",
                   "contract_id", "card_no", "product", "amount_kop", "volume_ml", "ingested_at_utc_s")

_RECORD_TYPES = ("text", "text", "int8", "text", "text", "text", "int8", "text", "text", "int8", "text", "text",
                 "int8", "int8", "int8")


class IngestStats:
    """What the last :func:`ingest_batch` of a ledger did (for logs and benchmarks)."""

    __slots__ = ("records", "new_records", "status")

    def __init__(self, records: int = 0, new_records: int = 0, status: str = "") -> None:
        self.records, self.new_records, self.status = records, new_records, status


def ingest_batch(ledger: Ledger, batch: Batch, *, limits: Limits = DEFAULT_LIMITS,
                 stats: IngestStats | None = None) -> Ack:
    """Apply ``batch`` (decoded and verified by :func:`wire.decode`) in one transaction and
    return the site's Ack, to publish after this returns. Idempotent: applying a batch again
    changes nothing but the batch counter. Database errors propagate (nothing is applied;
    publish no ack, the site will resend)."""
    if not isinstance(batch, Batch):
        raise TypeError(f"ingest_batch takes a wire.Batch, got {type(batch).__name__}")
    return ingest_site_batches(ledger, [batch], limits=limits, stats=None if stats is None else [stats])


def ingest_site_batches(ledger: Ledger, batches: Sequence[Batch], *, limits: Limits = DEFAULT_LIMITS,
                        stats: Sequence[IngestStats] | None = None) -> Ack:
    """Apply several batches of one site in one transaction (a backlog flushing: the host
    worker takes what the broker already delivered), with the exactly-once effect of
    :func:`ingest_batch` applied to each in turn: the batches' records are deduplicated
    against the ledger and against each other, their effects applied as one set (in the
    batches' order), each batch settled in ``batches`` and the watermark moved once.
    Returns the site's Ack after the commit (it covers every batch given: acks are
    cumulative, by watermark). ``stats``, if given, gets one :class:`IngestStats` per
    batch. Database errors propagate and nothing is applied."""
    batches = list(batches)
    if not batches:
        raise ValueError("ingest_site_batches needs at least one batch")
    for b in batches:
        if not isinstance(b, Batch):
            raise TypeError(f"ingest_site_batches takes wire.Batch values, got {type(b).__name__}")
    if len({b.site_id for b in batches}) != 1:
        raise ValueError("ingest_site_batches takes batches of one site: "
                         + ", ".join(sorted({b.site_id for b in batches})))
    if stats is not None and len(stats) != len(batches):
        raise ValueError(f"{len(stats)} IngestStats for {len(batches)} batches")
    now = ledger.now()
    try:
        # the records read and their rows built before the transaction takes the site's lock:
        # only what needs the ledger's state (stored ids, balances, counters) runs under it
        prepared: _Prepared | None = _prepare(ledger.db, batches, now, ledger.clone_tolerance_s, False)
        for attempt in range(_STORE_RETRIES):
            try:
                return ledger.db.run(_ingest, batches, now, ledger.clone_tolerance_s, limits, stats, False, prepared)
            except _SiteChanged:
                prepared = None  # run again the way that takes the lock first
            except Exception as exc:
                # another transaction stored some of these records while this one stored its
                # rows before the lock (PostgreSQL): rolled back; the next run finds them stored
                if attempt + 1 == _STORE_RETRIES or not _records_race(exc):
                    raise
        raise AssertionError("unreachable")
    except Exception:
        # a value the ledger's 64-bit columns cannot hold fails the whole transaction: with
        # such records set aside (stored, flagged) the batches go in; any other error is raised
        if not any(wide_int_path(r.body) is not None for b in batches for r in b.records):
            raise
    log.warning("batch(es) %s of site %s hold integers beyond 64 bits: applying them again with those records "
                "flagged", ", ".join(str(b.batch_seq) for b in batches), batches[0].site_id)
    return ledger.db.run(_ingest, batches, now, ledger.clone_tolerance_s, limits, stats, True)


#: Runs of one ingest transaction when another stores some of its records meanwhile.
_STORE_RETRIES = 8


class _SiteChanged(Exception):
    """The site was disabled while the transaction stored its rows before the lock."""


def _records_race(exc: BaseException) -> bool:
    """``exc`` is PostgreSQL refusing a second row of one record id (``records_pkey``): another
    transaction stored the record between this one's check and its COPY."""
    diag = getattr(exc, "diag", None)
    return getattr(exc, "sqlstate", None) == "23505" and getattr(diag, "constraint_name", None) == "records_pkey"


#: The ledger's integers: 64-bit signed (PostgreSQL ``bigint``, SQLite ``INTEGER``).
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def wide_int_path(body: object, path: str = "body") -> str | None:
    """The path (``body.a.b[2]``) of the first integer in ``body`` beyond the ledger's 64-bit
    signed range, or None. The wire allows integers up to 2^64 - 1; the ledger's columns do
    not, and an effect or a column holding such a value would fail its batch's transaction."""
    if type(body) is int:
        return None if INT64_MIN <= body <= INT64_MAX else path
    if isinstance(body, dict):
        for k, v in body.items():
            found = wide_int_path(v, f"{path}.{k}")
            if found is not None:
                return found
    elif isinstance(body, (list, tuple)):
        for i, v in enumerate(body):
            found = wide_int_path(v, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _ingest(db: Database, batches: list[Batch], now: int, tolerance: int, limits: Limits,
            stats: Sequence[IngestStats] | None, wide_checked: bool, prepared: _Prepared | None = None) -> Ack:
    site = batches[0].site_id
    status = _site_status(db, site, now)
    if db.is_pg and prepared is not None and not wide_checked and status == "active":
        new, up_to, rejected = _ingest_site_last(db, batches, now, tolerance, limits, prepared)
        outcome = "applied"
    else:
        new, outcome, up_to, rejected = _ingest_site_first(db, batches, now, tolerance, limits, wide_checked,
                                                           prepared)
    if stats is not None:
        for st, b, n in zip(stats, batches, new):
            st.records, st.new_records, st.status = len(b.records), n, outcome
    return Ack(site, up_to, tuple(Rejection(s, r) for s, r in reversed(rejected)))


def _site_status(db: Database, site: str, now: int) -> str:
    """The site's status, read without a lock; its row made first if there is none. The
    row is read before it is inserted: an ``INSERT ... ON CONFLICT DO NOTHING`` waits for
    any transaction that has updated the row and not yet committed (PostgreSQL checks the
    key against the newest row version), which would hold this one up behind another
    worker's commit of the same site."""
    status = db.scalar("SELECT status FROM sites WHERE site_id = ?", (site,))
    if status is None:
        db.execute("INSERT INTO sites (site_id, created_at_utc_s) VALUES (?, ?) ON CONFLICT (site_id) DO NOTHING",
                   (site, now))
        status = db.scalar("SELECT status FROM sites WHERE site_id = ?", (site,))
    return str(status)


def _ingest_site_last(db: Database, batches: list[Batch], now: int, tolerance: int, limits: Limits,
                      prepared: _Prepared) -> tuple[list[int], int, list[tuple]]:
    """PostgreSQL, a site active when the transaction began: the site's row locked last and
    briefly. The records' rows are stored first (their primary key makes each record this
    transaction's, :func:`_store_early`), then the effects are applied under the rows' own
    locks in their fixed order (the returns under their sales' locks, :func:`_lock_sales`),
    and only then, before the dirty marks, the site's row is locked for the batch rows, the
    watermark and the counters (:func:`_settle`). A site disabled meanwhile raises
    :class:`_SiteChanged`: everything is rolled back and run again the way that locks first.
    Returns each batch's new count, the watermark and the rejections to list."""
    site = batches[0].site_id
    prepared = _store_early(db, batches, now, tolerance, prepared)
    new, shared = _apply_records(db, batches, now, tolerance, False, prepared)
    settled: list[tuple[int, list[tuple]]] = []

    def settle() -> None:
        status, up_to, max_seq = db.fetchone(
            f"SELECT status, up_to_seq, max_seq FROM sites WHERE site_id = ?{db.for_update}", (site,))
        if status != "active":
            raise _SiteChanged(site)  # disabled while this transaction applied its batches
        settled.append(_settle(db, batches, now, limits, new, "applied", None, up_to, max_seq))
    if shared is None:
        settle()
    else:
        shared.finish(settle)
    return new, *settled[0]


def _ingest_site_first(db: Database, batches: list[Batch], now: int, tolerance: int, limits: Limits,
                       wide_checked: bool, prepared: _Prepared | None) -> tuple[list[int], str, int, list[tuple]]:
    """The site's row locked first, everything after it: SQLite (whose write transaction
    holds the one write lock anyway), a site not active when the transaction began (its
    batches refused, or applied if it was enabled meanwhile), the run again after
    :class:`_SiteChanged`, and the wide-integer fallback. Returns each batch's new count, the
    outcome, the watermark and the rejections to list."""
    site = batches[0].site_id
    status, up_to, max_seq = db.fetchone(
        f"SELECT status, up_to_seq, max_seq FROM sites WHERE site_id = ?{db.for_update}", (site,))
    shared: _Shared | None = None
    if status != "active":
        outcome, reason = "rejected", f"site {site} is {status} on the host: batch refused"
        new = [0] * len(batches)
    else:
        new, shared = _apply_records(db, batches, now, tolerance, wide_checked, prepared)
        outcome, reason = "applied", None
    up_to, rejected = _settle(db, batches, now, limits, new, outcome, reason, up_to, max_seq)
    if shared is not None:
        shared.finish()  # the rows other sites' transactions write too: last, held only to the commit
    if outcome == "rejected":
        log.warning("batch(es) %s of site %s refused: %s", ", ".join(str(b.batch_seq) for b in batches), site, reason)
    return new, outcome, up_to, rejected


def _settle(db: Database, batches: list[Batch], now: int, limits: Limits, new: list[int], outcome: str,
            reason: str | None, up_to: int, max_seq: int) -> tuple[int, list[tuple]]:
    """Under the site's lock: each batch's row written (``outcome``), the watermark moved over
    every consecutive settled batch, the site's counters; returns the watermark and the
    site's rejected batches up to it (the latest ``limits.max_rejections``)."""
    site = batches[0].site_id
    # An applied batch stays applied; a resend of a refused batch to a re-enabled site applies it.
    db.executemany("INSERT INTO batches (site_id, batch_seq, status, reason, records, new_records, created_utc_s, "
                   "applied_at_utc_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site_id, batch_seq) DO UPDATE SET "
                   "status = excluded.status, reason = excluded.reason, "
                   "new_records = batches.new_records + excluded.new_records, "
                   "applied_at_utc_s = excluded.applied_at_utc_s WHERE batches.status <> 'applied'",
                   [(site, b.batch_seq, outcome, reason, len(b.records), n, b.created_utc_s, now)
                    for b, n in zip(batches, new)])
    if any(b.batch_seq == up_to + 1 for b in batches):
        while True:
            seqs = [r[0] for r in db.fetchall("SELECT batch_seq FROM batches WHERE site_id = ? AND batch_seq > ? "
                                              "ORDER BY batch_seq LIMIT 1000", (site, up_to))]
            n = 0
            for s in seqs:
                if s != up_to + 1:
                    break
                up_to, n = s, n + 1
            if n < 1000:
                break
    db.execute("UPDATE sites SET up_to_seq = ?, max_seq = ?, batches = batches + ?, records = records + ?, "
               "last_batch_at_utc_s = ? WHERE site_id = ?",
               (up_to, max(max_seq, *(b.batch_seq for b in batches)), len(batches), sum(new), now, site))
    rejected = db.fetchall("SELECT batch_seq, reason FROM batches WHERE site_id = ? AND status = 'rejected' "
                           "AND batch_seq <= ? ORDER BY batch_seq DESC LIMIT ?", (site, up_to, limits.max_rejections))
    return up_to, rejected


class _Prepared:
    """What an ingest transaction needs that the ledger's state does not decide, built before
    the transaction takes the site's lock (:func:`_prepare`): the batches' records deduplicated
    among themselves, each read once (its effects kept in a :class:`BatchEffects`, not yet
    applied) and its ``records`` row made. Under the lock it is used as it is when none of
    the records is stored yet (the common case); otherwise it is discarded and built again
    without the stored ones. ``used``: applied once already (a retried transaction builds
    afresh: applying changes the effects' state)."""

    __slots__ = ("excluded", "ids", "fresh", "counts", "fx", "rows", "applied", "used", "stored_flags")

    def __init__(self, excluded: frozenset[str], ids: list[str], fresh: list[WireRecord], counts: list[int],
                 fx: BatchEffects | None, rows: list[tuple], applied: list[WireRecord]) -> None:
        self.excluded, self.ids, self.fresh, self.counts = excluded, ids, fresh, counts
        self.fx, self.rows, self.applied, self.used = fx, rows, applied, False
        #: the flags the rows were stored with, once stored before the lock (:func:`_store_early`)
        self.stored_flags: dict[str, str] | None = None


def _prepare(db: Database, batches: list[Batch], now: int, tolerance: int, wide_checked: bool,
             stored: frozenset[str] = frozenset()) -> _Prepared:
    """Deduplicate, read and build the rows of ``batches`` (one site), leaving out the record
    ids in ``stored``: everything of an ingest that needs no ledger state, so that it can run
    before the site's lock is taken. ``wide_checked``: every body is first walked for
    integers beyond 64 bits, and a record holding one is kept as a row flagged ``bad_body``
    with no columns and no effects."""
    site = batches[0].site_id
    ids = [r.record_id for b in batches for r in b.records]
    seen = set(stored)
    fresh: list[WireRecord] = []
    seqs: list[int] = []
    counts = []
    for b in batches:
        n = 0
        for r in b.records:
            if r.record_id not in seen:
                seen.add(r.record_id)
                fresh.append(r)
                seqs.append(b.batch_seq)
                n += 1
        counts.append(n)
    if not fresh:
        return _Prepared(stored, ids, fresh, counts, None, [], [])
    fx = BatchEffects(db, site, now, tolerance)
    read, body_json = fx.read, _body_json
    # One pass: each record's effects kept and its row made (the flag is filled in under the
    # lock, once the effects are applied: applying is what flags an unknown contract or card).
    if wide_checked:
        rows, applied = [], []
        for r, seq in zip(fresh, seqs):
            path = wide_int_path(r.body)
            if path is None:
                cols = read(r)
                applied.append(r)
            else:
                detail = (f"{r.kind}: {path} is beyond the ledger's 64-bit integers "
                          f"({INT64_MIN}..{INT64_MAX}): stored, not applied")
                fx.flag(r, "bad_body", detail)
                log.warning("site %s record %s (batch %d): %s", site, r.record_id, seq, detail)
                cols = NO_FACTS
            rows.append((r.record_id, site, seq, r.lane, r.txn_id, r.kind, r.at_utc_s, _text(r), None) + cols + (now,))
    else:
        rows = [(r.record_id, site, seq, r.lane, r.txn_id, r.kind, r.at_utc_s,
                 body_json(r.body).decode() if r.body_json is None else r.body_json, None)
                + read(r) + (now,) for r, seq in zip(fresh, seqs)]
        applied = fresh
    return _Prepared(stored, ids, fresh, counts, fx, rows, applied)


def _store_early(db: Database, batches: list[Batch], now: int, tolerance: int,
                 prepared: _Prepared) -> _Prepared:
    """PostgreSQL, before the site's lock: store the rows of the records not stored yet
    (``COPY``, with the flags their reading gave), so that the part under the lock is the
    effects only. Exactly-once holds by the ``records`` primary key: a record another
    transaction stores meanwhile makes this COPY fail (``records_pkey``, after that one
    commits), the transaction is rolled back and run again (:func:`ingest_site_batches`),
    and then finds it stored. Returns what was stored (``prepared``, or one built again
    without records stored before)."""
    prepared = _current(db, batches, now, tolerance, False, prepared)
    fx = prepared.fx
    prepared.stored_flags = {}
    if fx is not None:
        flags = dict(fx.flags)  # what reading the records flagged (unknown kinds, bad bodies)
        db.copy_rows("records", _RECORD_COLUMNS, _with_flags(prepared.rows, flags), _RECORD_TYPES)
        prepared.stored_flags = flags
        fx.stored_already = prepared.fresh
    return prepared


#: The first key of the PostgreSQL advisory locks ingest takes on till sales (the two-key
#: form: a key space apart from the single-key lock of the migrations, ``host.schema``).
SALE_LOCK_CLASS = 1_202_612
_SALE_KINDS = frozenset({TILL_SALE_COMMITTED, TILL_RETURN})


def sale_lock_key(site_id: str, txn_id: str) -> int:
    """The second key of the advisory lock of one till sale of a site (32 bits of a hash of
    both ids: two sales sharing a key only wait for each other)."""
    return int.from_bytes(hashlib.blake2b(f"{site_id}\x00{txn_id}".encode(), digest_size=4).digest(), "big",
                          signed=True)


def _lock_sales(db: Database, site_id: str, club: Sequence[tuple[str, str, WireRecord]]) -> None:
    """PostgreSQL: lock, to the commit, each till sale that ``club`` (the effects' club
    records) commits or returns, in key order, before the returns are checked against their
    sales (:meth:`BatchEffects._check_returns` reads the site's sale and its returns stored
    before). Two transactions of one site then check and apply a sale's returns one after
    the other, whatever else they hold: the second waits here and then reads what the first
    committed. SQLite's one write lock already serializes every writer."""
    if not db.is_pg:
        return
    keys = sorted({sale_lock_key(site_id, rec.txn_id) for kind, _, rec in club if kind in _SALE_KINDS})
    if keys:
        db.execute("SELECT count(pg_advisory_xact_lock(?, k::int4)) FROM unnest(?::int8[]) AS k",
                   (SALE_LOCK_CLASS, keys))


class _Shared:
    """The part of an ingest transaction that locks rows other sites' transactions write too
    (club accounts, contracts, limit counters, cards' transaction counters, dirty marks), run
    by :func:`_ingest` as its last statements, after the site's own rows and bookkeeping: the
    effects (:meth:`host.effects.BatchEffects.apply`), with the records' rows (stored, or
    their new flags written) once the flags are final, before the rows other sites share."""

    __slots__ = ("db", "fx", "rows", "stored_flags")

    def __init__(self, db: Database, fx: BatchEffects, rows: list[tuple] | None,
                 stored_flags: dict[str, str] | None) -> None:
        self.db, self.fx, self.rows, self.stored_flags = db, fx, rows, stored_flags

    def finish(self, before_marks: Callable[[], None] | None = None) -> None:
        """Apply the effects and store the records' rows (inside the transaction, once), the
        till sales the records name locked first (:func:`_lock_sales`); ``before_marks`` runs
        after the shared rows, just before the dirty marks (:attr:`BatchEffects.before_marks`)."""
        fx = self.fx
        _lock_sales(self.db, fx.site_id, fx.club)
        fx.before_balances, fx.before_marks = self._rows, before_marks
        fx.apply()

    def _rows(self) -> None:
        """The records' rows stored, or (stored before the lock) their new flags written: the
        flags are final once the effects but the balances are applied."""
        db, fx = self.db, self.fx
        flags = fx.flags
        if self.stored_flags is not None:  # the rows stored before the lock: only new flags
            before = self.stored_flags
            db.executemany("UPDATE records SET flag = ? WHERE record_id = ?",
                           [(f, rid) for rid, f in flags.items() if rid not in before])
        elif self.rows is not None:
            db.copy_rows("records", _RECORD_COLUMNS, _with_flags(self.rows, flags), _RECORD_TYPES)


def _apply_records(db: Database, batches: list[Batch], now: int, tolerance: int, wide_checked: bool,
                   prepared: _Prepared | None = None) -> tuple[list[int], _Shared | None]:
    """Store and apply the records of ``batches`` (one site) not stored yet, each once (a
    record in two of the batches counts for the first); returns each batch's new count and
    what is left to run last (:class:`_Shared`: the rows shared with other sites, and the
    records' rows or flags, which the shared part's flags complete), or None.
    Runs under the site's lock, or, once the rows are stored (PostgreSQL,
    :func:`_ingest_site_last`), before it. ``prepared``: the records read and their rows built before
    the lock (:func:`_prepare`, with the same ``wide_checked``), used when none of them is
    stored yet, else built again here without the stored ones; if its rows were stored
    already (:func:`_store_early`), only the effects are applied, and the flags that
    applying gives are written to those rows."""
    if prepared is not None and prepared.stored_flags is not None:
        rows, stored_flags = None, prepared.stored_flags
    else:
        prepared = _current(db, batches, now, tolerance, wide_checked, prepared)
        rows, stored_flags = prepared.rows, None
    fx = prepared.fx
    if fx is None:
        return prepared.counts, None
    alerts.apply(db, batches[0].site_id, prepared.applied, now)  # fuel.totals_mismatch -> totals_alerts
    return prepared.counts, _Shared(db, fx, rows, stored_flags)


def _current(db: Database, batches: list[Batch], now: int, tolerance: int, wide_checked: bool,
             prepared: _Prepared | None) -> _Prepared:
    """``prepared`` if it was built without exactly the records of ``batches`` stored now and
    is not used yet, else one built again (stale: a duplicate, a retry); marked used."""
    ids = [r.record_id for b in batches for r in b.records]
    stored = frozenset(r[0] for r in db.select_in("SELECT record_id FROM records WHERE record_id IN ({in})", ids))
    if prepared is None or prepared.used or prepared.excluded != stored:
        prepared = _prepare(db, batches, now, tolerance, wide_checked, stored)
    prepared.used = True
    return prepared


def _with_flags(rows: list[tuple], flags: dict[str, str]) -> list[tuple]:
    """The ``records`` rows with each flagged record's flag column set."""
    if not flags:
        return rows
    return [row if row[0] not in flags else row[:8] + (flags[row[0]],) + row[9:] for row in rows]


def record_presence(ledger: Ledger, presence: Presence) -> bool:
    """Keep ``presence`` if it is the site's newest (highest ``at_utc_s``; on a tie, the one
    that arrived last). Returns whether it was kept: a stale last will of an earlier
    session never overrides the presence of a newer one."""
    def step(db: Database) -> bool:
        now = ledger.now()
        db.execute("INSERT INTO sites (site_id, created_at_utc_s) VALUES (?, ?) ON CONFLICT (site_id) DO NOTHING",
                   (presence.site_id, now))
        at = db.scalar(f"SELECT presence_at_utc_s FROM sites WHERE site_id = ?{db.for_update}", (presence.site_id,))
        if at is not None and presence.at_utc_s < at:
            return False
        db.execute("UPDATE sites SET online = ?, presence_at_utc_s = ?, software_version = ?, replica_versions = ? "
                   "WHERE site_id = ?", (int(presence.online), presence.at_utc_s, presence.software_version,
                                         dumps({str(t): v for t, v in dict(presence.replica_versions).items()}),
                                         presence.site_id))
        return True
    return ledger.db.run(step)


def ingest_all(ledger: Ledger, batches: Iterable[Batch]) -> list[Ack]:
    """:func:`ingest_batch` of each batch in turn (tests, tools)."""
    return [ingest_batch(ledger, b) for b in batches]
