"""The replica publisher: snapshots and deltas of the master data, as wire messages.

The logic is here and needs no broker: :class:`Publisher` turns the ledger's versions into
:class:`wire.ReplicaSnapshot` parts and :class:`wire.ReplicaDelta` messages, and into
:class:`Publication` values (topic, signed payload, retain) that :mod:`host.worker`
publishes as they are.

- **Deltas.** An operator's change records a delta in its own transaction
  (:mod:`host.versions`); :meth:`Publisher.pending` returns the deltas after the last one
  published, with their rows read from the tables now (whole rows; a key no longer there is
  a delete). A block is therefore on the broker within one publisher cycle (the worker runs
  one every 0.2 s).
- **Ledger-driven changes** (balances, counters, club accounts) are marked dirty by ingest;
  :meth:`Publisher.flush_dirty` folds them into one delta per table and cycle.
- **The balance rule.** Contract, fuel card and club account rows carry the watermark of each
  site whose spend they hold, and contracts their offline allowances
  (:mod:`host.watermarks`), read in the same transaction as the figures (:func:`read_rows`).
- **Snapshots.** :meth:`Publisher.snapshot` reads a whole table at one version (one read
  transaction) and cuts it into parts with :func:`wire.rows_that_fit`. :meth:`Publisher.on_request`
  answers a :class:`wire.SnapshotRequest`: nothing if the retained snapshot is already newer
  than what the site holds or the site holds the current version, else a new snapshot, at
  most one per table every ``snapshot_interval_s``. Stale part topics of an older, longer
  snapshot are cleared with an empty retained payload.
- **Fresh on its own.** :meth:`Publisher.due_snapshots` names the tables whose retained
  snapshot is missing, or older than ``snapshot_max_age_s`` (600 s) or more than
  ``snapshot_max_deltas`` (1,000) versions behind a table that changed; the worker cuts them
  at every fold (2 s). So a new site starts from a snapshot at most that far behind, then follows the
  deltas. Deltas are retained too (the latest one per table): a site coming back learns the
  host's version on subscribing.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from authz.club_model import ClubCard, PointLot
from authz.fuel_model import Contract, LimitCounter
from wire import (
    CLUB_RULES_KEY,
    DEFAULT_LIMITS,
    ClubAccountRow,
    FuelCardRow,
    Limits,
    ReplicaDelta,
    ReplicaSnapshot,
    SiteKeys,
    SnapshotRequest,
    StopListEntry,
    Table,
    TariffRow,
    deltas_topic,
    encode,
    row_key,
    rows_that_fit,
    snapshot_topic,
)
from wire.topics import MAX_SNAPSHOT_PARTS

from . import rows as R
from .db import Database
from .ledger import Ledger
from .versions import current_version, ensure_version, key_from_text, record_change
from .watermarks import (
    AllowancePolicy,
    contract_allowances,
    row_watermarks,
    site_watermarks,
)

__all__ = ["Publisher", "Publication", "delta_publication", "read_rows", "DEFAULT_SNAPSHOT_MAX_AGE_S",
           "DEFAULT_SNAPSHOT_MAX_DELTAS"]

#: No exposure for a contract that sets none: its sites are not capped.
NO_DEFAULT_EXPOSURE = AllowancePolicy()
#: A table that changed gets a new retained snapshot once its last one is this old ...
DEFAULT_SNAPSHOT_MAX_AGE_S = 600
#: ... or this many versions behind, whichever comes first.
DEFAULT_SNAPSHOT_MAX_DELTAS = 1_000


@dataclass(frozen=True, slots=True)
class Publication:
    """One MQTT publish: ``payload`` (a signed frame, or b"" to clear a retained topic)."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


def _where(keys: Sequence | None, column: str) -> tuple[str, list]:
    if keys is None:
        return "", []
    return f" WHERE {column} IN ({{in}})", list(keys)


def read_rows(db: Database, table: Table, keys: Sequence | None = None, *, now_utc_s: int,
              allowances: AllowancePolicy = NO_DEFAULT_EXPOSURE) -> list[Any]:
    """The replica rows of ``table`` (all, or those of ``keys``), ordered by key. Club lots
    already expired at ``now_utc_s`` are left out (no site can use them); a club account's
    balance below zero (offline overspend) is sent as 0, the least a site may allow.

    Contracts, fuel cards and club accounts carry the watermark of each site whose spend they
    hold, and contracts their offline allowances (:mod:`host.watermarks`): call this inside a
    read transaction, so the figures and the watermarks are of one moment."""
    rows = _read_rows(db, table, keys, now_utc_s=now_utc_s)
    if table in (Table.CONTRACTS, Table.FUEL_CARDS, Table.CLUB_ACCOUNTS) and rows:
        rows = _with_balance_fields(db, table, keys, rows, allowances)
    return rows


def _with_balance_fields(db: Database, table: Table, keys: Sequence | None, rows: list[Any],
                         policy: AllowancePolicy) -> list[Any]:
    """``rows`` with their watermarks (and a contract's allowances) filled in."""
    marks = site_watermarks(db)
    wm = row_watermarks(db, table, keys, marks)
    if table is Table.CONTRACTS:
        ids = [r.contract_id for r in rows]
        exposures = db.select_in("SELECT contract_id, offline_exposure_kop FROM contracts WHERE contract_id IN ({in})",
                                 ids)
        active = [s for (s,) in db.fetchall("SELECT site_id FROM sites WHERE status = 'active' ORDER BY site_id")]
        allowed = contract_allowances(db, exposures, policy, active)
        return [_contract_with(r, wm.get(str(r.contract_id), ()), allowed.get(r.contract_id, ())) for r in rows]
    # the rows' own constructors, not dataclasses.replace (a tenth of a fold's row reads)
    if table is Table.FUEL_CARDS:
        return [FuelCardRow(r.card, r.counters, wm[r.card.card_no]) if r.card.card_no in wm else r for r in rows]
    return [ClubAccountRow(r.account, r.cards, wm[str(r.account.account_id)]) if str(r.account.account_id) in wm
            else r for r in rows]


def _contract_with(r: Contract, watermarks: tuple, allowances: tuple) -> Contract:
    """``r`` with these watermarks and allowances: its constructor, not dataclasses.replace
    (which reads every field by name; a fold makes one a contract row)."""
    return Contract(r.contract_id, r.tz, r.home_region, r.tariff, r.balance_kop, r.credit_line_kop,
                    r.chosen_station_ids, watermarks, allowances)


def _read_rows(db: Database, table: Table, keys: Sequence | None = None, *, now_utc_s: int) -> list[Any]:

    def q(sql: str, column: str) -> list[tuple]:
        if keys is None:
            return db.fetchall(sql.replace(" WHERE {in}", "") + f" ORDER BY {column}")
        return db.select_in(sql.replace("{in}", f"{column} IN ({{in}})"), list(keys)) if keys else []

    if table is Table.STOP_LIST:
        return sorted((StopListEntry(no, at) for no, at in q("SELECT card_no, listed_at_utc_s FROM stop_list WHERE {in}",
                                                             "card_no")), key=lambda r: r.card_no)
    if table is Table.PRODUCTS:
        return sorted((R.product_from_row(r) for r in q("SELECT code, name, grp FROM products WHERE {in}", "code")),
                      key=lambda p: p.code)
    if table is Table.STATIONS:
        return sorted((R.station_from_row(r) for r in q(f"SELECT {R.STATION_COLUMNS} FROM stations WHERE {{in}}",
                                                        "station_id")), key=lambda s: s.station_id)
    if table is Table.TARIFFS:
        return sorted((TariffRow(R.Tariff(t), R.discounts_from_json(t, d))
                       for t, d in q("SELECT tariff, discounts FROM tariffs WHERE {in}", "tariff")),
                      key=lambda t: int(t.tariff))
    if table is Table.CONTRACTS:
        return sorted((R.contract_from_row(r) for r in q(f"SELECT {R.CONTRACT_COLUMNS} FROM contracts WHERE {{in}}",
                                                         "contract_id")), key=lambda c: c.contract_id)
    if table is Table.FUEL_CARDS:
        cards = sorted((R.card_from_row(r) for r in q(f"SELECT {R.CARD_COLUMNS} FROM fuel_cards WHERE {{in}}",
                                                      "card_no")), key=lambda c: c.card_no)
        latest: dict[tuple[str, int], LimitCounter] = {}
        for no, lid, start, spent in q("SELECT card_no, limit_id, period_start, spent FROM fuel_counters WHERE {in}",
                                       "card_no"):
            was = latest.get((no, lid))
            if was is None or start > was.period_start:
                latest[(no, lid)] = LimitCounter(spent, start)
        out = []
        ids_of: dict[int, list[int]] = {}  # by id(card.limits): cards of the same limits share the tuple
        for c in cards:
            ids = ids_of.get(id(c.limits))
            if ids is None:
                ids = ids_of[id(c.limits)] = sorted(lim.limit_id for lim in c.limits)
            no = c.card_no
            out.append(FuelCardRow(c, tuple((lid, latest[(no, lid)]) for lid in ids if (no, lid) in latest)))
        return out
    if table is Table.CLUB_RULES:
        body = db.scalar("SELECT body FROM club_rules WHERE key = 'club'")
        return [] if body is None or (keys is not None and CLUB_RULES_KEY not in keys) else [R.rules_from_json(body)]
    if table is Table.CLUB_ACCOUNTS:
        accounts = q(f"SELECT {R.ACCOUNT_COLUMNS} FROM club_accounts WHERE {{in}}", "account_id")
        lots: dict[int, list[PointLot]] = defaultdict(list)
        for aid, lid, pts, mat, exp in q("SELECT account_id, lot_id, points, matures_at_s, expires_at_s FROM club_lots "
                                         "WHERE {in}", "account_id"):
            if exp > now_utc_s and pts > 0:
                lots[aid].append(PointLot(lid, pts, mat, exp))
        cards: dict[int, list[ClubCard]] = defaultdict(list)
        for row in q("SELECT card_no, account_id, status FROM club_cards WHERE {in}", "account_id"):
            cards[row[1]].append(R.club_card_from_row(row))
        out = []
        for row in sorted(accounts):
            row = list(row)
            acc_lots = sorted(lots[row[0]], key=lambda lot: (lot.expires_at_s, lot.lot_id))
            out.append(ClubAccountRow(R.account_from_row(row, acc_lots),
                                      tuple(sorted(cards[row[0]], key=lambda c: c.card_no))))
        return out
    raise ValueError(f"unknown table {table!r}")




class Publisher:
    """Builds replica messages from one ledger (one connection)."""

    def __init__(self, ledger: Ledger, *, limits: Limits = DEFAULT_LIMITS, snapshot_interval_s: int = 5,
                 snapshot_max_age_s: int = DEFAULT_SNAPSHOT_MAX_AGE_S,
                 snapshot_max_deltas: int = DEFAULT_SNAPSHOT_MAX_DELTAS,
                 allowances: AllowancePolicy = NO_DEFAULT_EXPOSURE) -> None:
        self.ledger = ledger
        #: how contracts' offline exposure is shared among the sites (host.watermarks)
        self.allowances = allowances
        self.limits = limits
        self.snapshot_interval_s = snapshot_interval_s
        self.snapshot_max_age_s = snapshot_max_age_s
        self.snapshot_max_deltas = snapshot_max_deltas

    @property
    def db(self) -> Database:
        return self.ledger.db

    # -- versions --

    def version(self, table: Table) -> int:
        return current_version(self.db, table)

    def versions(self) -> dict[Table, int]:
        got = dict(self.db.fetchall("SELECT tbl, version FROM replica_versions"))
        return {t: got.get(t.value, 0) for t in Table}

    def _published(self, table: Table) -> tuple[int, int, int, int]:
        row = self.db.fetchone("SELECT delta_version, snapshot_version, snapshot_parts, snapshot_at_utc_s "
                               "FROM replica_published WHERE tbl = ?", (table.value,))
        return tuple(row) if row else (0, 0, 0, 0)

    def _set_published(self, table: Table, **cols: int) -> None:
        def step(db: Database) -> None:
            db.execute("INSERT INTO replica_published (tbl) VALUES (?) ON CONFLICT (tbl) DO NOTHING", (table.value,))
            sets = ", ".join(f"{c} = ?" for c in cols)
            guard = " AND delta_version < ?" if set(cols) == {"delta_version"} else ""
            params = [*cols.values(), table.value] + ([cols["delta_version"]] if guard else [])
            db.execute(f"UPDATE replica_published SET {sets} WHERE tbl = ?{guard}", params)
        self.db.run(step)

    # -- ledger-driven changes --

    def flush_dirty(self) -> dict[Table, int]:
        """Fold the rows ingest changed into deltas (one per table, split by size); returns
        the new version of each table that changed."""
        now = self.ledger.now()

        def step(db: Database) -> dict[Table, int]:
            out = {}
            for table in (Table.CONTRACTS, Table.FUEL_CARDS, Table.CLUB_ACCOUNTS):
                keys = [key_from_text(table, k) for (k,) in db.fetchall(
                    "SELECT key FROM replica_dirty WHERE tbl = ? ORDER BY key", (table.value,))]
                if not keys:
                    continue
                db.execute_in("DELETE FROM replica_dirty WHERE tbl = ? AND key IN ({in})", [str(k) for k in keys],
                             (table.value,))
                out[table] = record_change(db, table, keys, now_utc_s=now)
            return out
        return self.db.run(step)

    # -- deltas --

    def pending(self, table: Table | None = None) -> list[ReplicaDelta]:
        """Deltas recorded after the last published one (of ``table``, or of every table),
        in version order, with their rows as they are now."""
        out: list[ReplicaDelta] = []
        # what each table has published, in one query (not one a table: a fold every 2 s asks)
        done_of = dict(self.db.fetchall("SELECT tbl, delta_version FROM replica_published"))
        for t in ([table] if table is not None else list(Table)):
            done = done_of.get(t.value, 0)
            rows = self.db.fetchall("SELECT from_version, to_version, upsert_keys, delete_keys FROM replica_deltas "
                                    "WHERE tbl = ? AND to_version > ? ORDER BY to_version", (t.value, done))
            for from_v, to_v, up, gone in rows:
                out.append(self.delta(t, from_v, to_v, json.loads(up), json.loads(gone)))
        return out

    def delta(self, table: Table, from_v: int, to_v: int, up_keys: Sequence, gone_keys: Sequence) -> ReplicaDelta:
        """The delta ``from_v -> to_v`` of ``table`` with the rows of ``up_keys`` now; a key
        whose row is gone is a delete."""
        now = self.ledger.now()
        with self.db.transaction(write=False, snapshot=True):
            rows = read_rows(self.db, table, list(up_keys), now_utc_s=now, allowances=self.allowances)
        found = set(map(partial(row_key, table), rows))
        deletes = tuple(dict.fromkeys([k for k in up_keys if k not in found] + [k for k in gone_keys
                                                                               if k not in found]))
        return ReplicaDelta(table, from_v, to_v, tuple(rows), deletes)

    def mark_sent(self, delta: ReplicaDelta) -> None:
        """Note that ``delta`` is on the broker (never moves backwards)."""
        self._set_published(delta.table, delta_version=delta.to_version)

    # -- snapshots --

    def snapshot(self, table: Table) -> list[ReplicaSnapshot]:
        """Every part of ``table`` at its current version. A table never changed is moved to
        version 1 first (a snapshot's version is 1 or more, and the first change must then
        be a later version)."""
        now = self.ledger.now()
        if current_version(self.db, table) == 0:
            self.db.run(ensure_version, table)
        with self.db.transaction(write=False, snapshot=True):
            version = current_version(self.db, table)
            rows = read_rows(self.db, table, None, now_utc_s=now, allowances=self.allowances)
        parts: list[tuple] = []
        i = 0
        while i < len(rows) or not parts:
            n = rows_that_fit(table, rows[i:], limits=self.limits) if i < len(rows) else 0
            if i < len(rows) and n == 0:
                raise ValueError(f"a {table.value} row is larger than a whole message")
            parts.append(tuple(rows[i:i + n]))
            i += n
            if len(parts) > MAX_SNAPSHOT_PARTS:
                raise ValueError(f"{table.value}: more than {MAX_SNAPSHOT_PARTS} snapshot parts")
        return [ReplicaSnapshot(table, version, k, len(parts), p) for k, p in enumerate(parts)]

    def on_request(self, req: SnapshotRequest) -> list[ReplicaSnapshot]:
        """A site's request: a new snapshot of the table unless the retained one is newer than
        ``have_version``, the site already holds the current version, or one was made less
        than ``snapshot_interval_s`` ago."""
        _, snap_v, _, snap_at = self._published(req.table)
        if snap_v > req.have_version and snap_v >= 1:
            return []
        if req.have_version >= 1 and req.have_version >= self.version(req.table):
            return []  # nothing newer than what the site holds
        if self.ledger.now() - snap_at < self.snapshot_interval_s and snap_v >= self.version(req.table):
            return []
        return self.snapshot(req.table)

    def due_snapshots(self) -> list[Table]:
        """The tables whose retained snapshot is due for a new one: none was ever published,
        or the table changed since and the snapshot is ``snapshot_max_age_s`` old or
        ``snapshot_max_deltas`` versions behind. The worker cuts these on its own, so the
        retained snapshot a new site starts from is never older than that bound."""
        now = self.ledger.now()
        due = []
        for table in Table:
            _, snap_v, _, snap_at = self._published(table)
            version = self.version(table)
            if snap_v == 0 or (version > snap_v and (now - snap_at >= self.snapshot_max_age_s
                                                     or version - snap_v >= self.snapshot_max_deltas)):
                due.append(table)
        return due

    def mark_snapshot(self, parts: Sequence[ReplicaSnapshot]) -> None:
        if parts:
            self._set_published(parts[0].table, snapshot_version=parts[0].version, snapshot_parts=len(parts),
                                snapshot_at_utc_s=self.ledger.now())

    # -- publications (signed, ready for the broker) --

    def snapshot_publications(self, parts: Sequence[ReplicaSnapshot], keys: SiteKeys) -> list[Publication]:
        """The retained publishes of ``parts``, then empty retained payloads on the part topics
        of the previous, longer snapshot."""
        if not parts:
            return []
        table = parts[0].table
        pubs = [Publication(snapshot_topic(table, p.part), encode(p, keys, limits=self.limits, rows_checked=True),
                            1, True) for p in parts]
        old_parts = self._published(table)[2]
        pubs += [Publication(snapshot_topic(table, k), b"", 1, True) for k in range(len(parts), old_parts)]
        return pubs

    def delta_publication(self, delta: ReplicaDelta, keys: SiteKeys) -> Publication:
        return delta_publication(delta, keys, limits=self.limits)


def delta_publication(delta: ReplicaDelta, keys: SiteKeys, *, limits: Limits = DEFAULT_LIMITS) -> Publication:
    """The publish of one delta (signed by the host); needs no ledger. Its rows are encoded
    without decode's row checks (``wire.encode(rows_checked=True)``): the publisher built
    them from the ledger, and every site checks them as it decodes. Retained: a site that
    (re)subscribes gets the table's latest delta at once, so it learns how far the host is
    (a gap from the version it holds makes it ask for a snapshot) even if nothing changes
    after it comes back."""
    return Publication(deltas_topic(delta.table), encode(delta, keys, limits=limits, rows_checked=True), 1, True)

