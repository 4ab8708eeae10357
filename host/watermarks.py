"""The watermarks a published balance or counter row carries, and the offline allowances a
contract row carries (the balance rule, :mod:`authz.balance`; docs/sync.md).

Read inside the publisher's read transaction, with the rows, so the figures and the
watermarks are of one moment:

- **Watermarks.** A site's watermark is the highest batch number n such that the ledger holds
  every batch 1..n of the site and this row's figures hold exactly their spend:
  ``sites.up_to_seq`` (every batch to there settled), lowered to just before the first batch
  the host refused (its records are not in the ledger). A batch applied past a gap is in the
  figures but not under the watermark: the site counts it once more until the gap fills
  (which only declines more). A row names the sites whose spend ingest put in it
  (``replica_spenders``, written beside the dirty marks); a site it does not name has none.
- **Allowances.** Setting a contract's offline exposure (:func:`set_offline_exposure`) shares
  it among the active sites at once and stores the shares (``offline_allowances``): a site
  whose spend the contract holds (a station its cards buy at) weighs ``priority_weight``,
  every other site 1 (the row's ``"*"`` allowance), and one share is kept for a site not yet
  known. The shares add up to at most the exposure and do not move by themselves, so all the
  sites together, each within the allowance it holds, never spend more than the balance, the
  credit line and the exposure (docs/rules.md). A contract without one takes the host's
  default exposure (:class:`AllowancePolicy`), in equal shares of the active sites plus one.
- **Pruning.** :func:`prune_spenders` drops the ``replica_spenders`` rows no watermark needs
  any more, a bounded slice per call (the worker's housekeeping). Those of a row no longer
  in its table, of a site no longer registered, or of a table that carries no watermark go
  at once. A live one (the row and the site exist) goes in two steps, because the site
  keeps the last watermark a row named it with and uses it while the row names it no more
  (docs/sync.md, the balance rule, has the argument):

  1. *cover*: when the site is settled (its watermark is its highest batch: every batch of
     it the host holds is under the watermark, none applied past a gap or refused) and the
     row was quiet since the last pass (a first pass only notes the watermark in
     ``cover_seq``, and new spend clears it: a row the site keeps spending on is never
     republished for this), the row is republished (:func:`host.versions.record_change`, a
     delta naming the site with a watermark at least that high) and the spender row notes
     that version (``cover_version``) and the watermark (``cover_seq``);
  2. *drop*: once the site reports holding that table at ``cover_version`` or later
     (``sites.replica_versions``, its presence), it has kept a watermark for the row that
     covers all its spend on it, and the spender row goes.

  New spend of the site on the row between the steps (ingest's
  :func:`host.versions.mark_dirty`) clears ``cover_version`` and ``cover_seq``: the row stays
  named and starts again. The site rows are locked while a slice is looked at, so a batch of
  the site is ingested either before (and seen) or after (and clears the cover).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from authz.balance import Allowance, Watermark
from authz.money import MAX_AMOUNT_KOP
from wire import Table

from .db import Database
from .errors import InvalidInput, NotFound
from .ledger import Ledger
from .versions import key_from_text, record_change

__all__ = [
    "PRUNE_SCAN",
    "AllowancePolicy",
    "OfflineExposure",
    "PruneResult",
    "contract_allowances",
    "offline_exposure",
    "prune_spenders",
    "row_watermarks",
    "set_offline_exposure",
    "shares",
    "site_watermarks",
]


@dataclass(frozen=True, slots=True)
class AllowancePolicy:
    """The host's default for contracts that set no exposure of their own.

    ``default_exposure_kop``: such a contract's exposure, shared equally among the active
    sites plus one (None: it gets no allowances, its sites are not capped)."""

    default_exposure_kop: int | None = None

    def __post_init__(self) -> None:
        if self.default_exposure_kop is not None and not 0 <= self.default_exposure_kop <= MAX_AMOUNT_KOP:
            raise ValueError(f"default_exposure_kop must be in 0..{MAX_AMOUNT_KOP}, got {self.default_exposure_kop}")


@dataclass(frozen=True, slots=True)
class OfflineExposure:
    """A contract's offline exposure as the host holds it (for the admin's display).

    ``exposure_kop``: its own (None: the host worker's default applies, see
    :class:`AllowancePolicy`); ``allowances``: the shares stored when it was set, by site
    (``"*"``: every site not named), empty when it has none of its own."""

    contract_id: int
    exposure_kop: int | None
    allowances: tuple[Allowance, ...]


def offline_exposure(ledger: Ledger, contract_id: int) -> OfflineExposure:
    """The offline exposure of ``contract_id`` and the allowances shared out of it; raises
    :class:`host.errors.NotFound` for an unknown contract."""
    def step(db: Database) -> OfflineExposure:
        row = db.fetchone("SELECT offline_exposure_kop FROM contracts WHERE contract_id = ?", (contract_id,))
        if row is None:
            raise NotFound(f"no contract {contract_id}")
        got = db.fetchall("SELECT site_id, amount_kop FROM offline_allowances WHERE contract_id = ?", (contract_id,))
        allowances = tuple(sorted((Allowance(s, a) for s, a in got), key=lambda x: (x.site_id == "*", x.site_id)))
        return OfflineExposure(contract_id, row[0], allowances)
    return ledger.db.run(step, write=False)


#: ``replica_spenders`` rows looked at per :func:`prune_spenders` call (the worker makes one
#: call per fold, every 2 s: the whole table is gone through at 2,500 rows a second).
PRUNE_SCAN = 5_000
#: The tables whose rows carry watermarks, with their master table and key column.
_SPENDER_TABLES = {Table.CONTRACTS.value: ("contracts", "contract_id", int),
                   Table.FUEL_CARDS.value: ("fuel_cards", "card_no", str),
                   Table.CLUB_ACCOUNTS.value: ("club_accounts", "account_id", int)}


@dataclass(frozen=True, slots=True)
class PruneResult:
    """One :func:`prune_spenders` call: rows looked at, rows dropped, where the next call
    starts (None: from the beginning, the table was gone through), and live rows whose row
    was republished to cover their site's spend (the first of the two steps)."""

    scanned: int
    pruned: int
    after: tuple[str, str, str] | None
    covered: int = 0


def _int_key(text: str) -> int | None:
    try:
        v = int(text)
    except ValueError:
        return None
    return v if -2**63 <= v < 2**63 and str(v) == text else None


def prune_spenders(ledger: Ledger, after: tuple[str, str, str] | None = None, *,
                   scan: int = PRUNE_SCAN, live: bool = True) -> PruneResult:
    """Drop the ``replica_spenders`` rows no watermark needs (module docstring) among the
    ``scan`` rows after ``after`` (in key order: tbl, key, site_id), in one transaction;
    ``live``: live rows too, in the two steps of the module docstring (False: only rows of
    a row or site that is gone). Safe beside ingest: a spender row is written in the
    transaction that counted the spend on a row that exists, beside its site's row (locked
    here), and master rows are never deleted under it."""
    if type(scan) is not int or scan < 1:
        raise InvalidInput(f"scan must be a whole number >= 1, got {scan!r}")

    def step(db: Database) -> PruneResult:
        cols = "tbl, key, site_id, cover_version, cover_seq"
        if after is None:
            rows = db.fetchall(f"SELECT {cols} FROM replica_spenders ORDER BY tbl, key, site_id LIMIT ?", (scan,))
        else:
            rows = db.fetchall(f"SELECT {cols} FROM replica_spenders WHERE (tbl, key, site_id) > (?, ?, ?) "
                               "ORDER BY tbl, key, site_id LIMIT ?", (*after, scan))
        if not rows:
            return PruneResult(0, 0, None)
        site_rows = db.select_in("SELECT site_id, up_to_seq, max_seq, replica_versions FROM sites "
                                 f"WHERE site_id IN ({{in}}) ORDER BY site_id{db.for_update}",
                                 sorted({r[2] for r in rows}))
        sites = {s[0]: s for s in site_rows}
        known: dict[str, set[str]] = {}
        for tbl, (master, column, kind) in _SPENDER_TABLES.items():
            keys = {r[1] for r in rows if r[0] == tbl}
            typed = [k for k in (_int_key(x) for x in keys) if k is not None] if kind is int else sorted(keys)
            known[tbl] = {str(k) for (k,) in db.select_in(f"SELECT {column} FROM {master} WHERE {column} IN ({{in}})",
                                                        typed)} if typed else set()
        gone = [r[:3] for r in rows if r[2] not in sites or r[0] not in known or r[1] not in known[r[0]]]
        if gone:
            db.executemany("DELETE FROM replica_spenders WHERE tbl = ? AND key = ? AND site_id = ?", gone)
        dropped, covered = 0, 0
        if live:
            dropped, covered = _prune_live(ledger, db, [r for r in rows if r[:3] not in set(gone)], sites)
        last = tuple(rows[-1][:3])
        return PruneResult(len(rows), len(gone) + dropped, last if len(rows) == scan else None,  # type: ignore[arg-type]
                           covered)
    return ledger.db.run(step)


def _prune_live(ledger: Ledger, db: Database, rows: list[tuple], sites: dict[str, tuple]) -> tuple[int, int]:
    """The steps for live spender rows (tbl, key, site_id, cover_version, cover_seq): covered
    rows whose site holds the cover version dropped; of a settled site, rows not yet looked
    at made candidates (``cover_seq`` set, nothing republished), candidates still quiet since
    the last pass covered. Returns (dropped, covered)."""
    marks = _watermarks_of(db, sites)
    drop, cover = [], defaultdict(list)
    quiet = []
    for tbl, key, site, cover_version, cover_seq in rows:
        _, _, max_seq, versions = sites[site]
        if cover_version is not None:
            held = json.loads(versions or "{}").get(tbl, 0)
            if type(held) is int and held >= cover_version:
                drop.append((tbl, key, site, cover_version))
        elif marks[site] != max_seq:  # not settled: a batch of the site is above its watermark
            continue
        elif cover_seq is None:  # a candidate: covered if no spend on it clears this by the next pass
            quiet.append((marks[site], tbl, key, site))
        else:
            cover[tbl].append((key, site))
    if quiet:
        db.executemany("UPDATE replica_spenders SET cover_seq = ? WHERE tbl = ? AND key = ? AND site_id = ? "
                       "AND cover_version IS NULL", quiet)
    if drop:
        db.executemany("DELETE FROM replica_spenders WHERE tbl = ? AND key = ? AND site_id = ? AND cover_version = ?",
                       drop)
    n = 0
    for tbl, pairs in cover.items():
        table = Table(tbl)
        version = record_change(db, table, sorted({key_from_text(table, k) for k, _ in pairs}, key=str),
                                now_utc_s=ledger.now())
        db.executemany("UPDATE replica_spenders SET cover_version = ?, cover_seq = ? "
                       "WHERE tbl = ? AND key = ? AND site_id = ? AND cover_version IS NULL",
                       [(version, marks[site], tbl, key, site) for key, site in pairs])
        n += len(pairs)
    return len(drop), n


def _watermarks_of(db: Database, sites: dict[str, tuple]) -> dict[str, int]:
    """:func:`site_watermarks` of the sites given as their (site_id, up_to_seq, ...) rows."""
    refused = dict(db.select_in("SELECT site_id, MIN(batch_seq) FROM batches WHERE status = 'rejected' "
                                "AND site_id IN ({in}) GROUP BY site_id", sorted(sites)))
    return {s: (row[1] if s not in refused else min(row[1], refused[s] - 1)) for s, row in sites.items()}


def site_watermarks(db: Database) -> dict[str, int]:
    """Each site's watermark now: batches 1..n of it are all in the ledger's figures."""
    first_refused = dict(db.fetchall("SELECT site_id, MIN(batch_seq) FROM batches WHERE status = 'rejected' "
                                     "GROUP BY site_id"))
    out = {}
    for site, up_to in db.fetchall("SELECT site_id, up_to_seq FROM sites"):
        refused = first_refused.get(site)
        out[site] = up_to if refused is None else min(up_to, refused - 1)
    return out


def _spenders(db: Database, table: Table, keys: Sequence | None) -> dict[str, list[str]]:
    if keys is None:
        rows = db.fetchall("SELECT key, site_id FROM replica_spenders WHERE tbl = ?", (table.value,))
    else:
        rows = db.select_in("SELECT key, site_id FROM replica_spenders WHERE tbl = ? AND key IN ({in})",
                            [str(k) for k in keys], (table.value,)) if keys else []
    out: dict[str, list[str]] = defaultdict(list)
    for key, site in rows:
        out[key].append(site)
    return out


def row_watermarks(db: Database, table: Table, keys: Sequence | None,
                   marks: dict[str, int]) -> dict[str, tuple[Watermark, ...]]:
    """The watermarks of the rows of ``table`` (all, or those of ``keys``) by key as text:
    one per site whose spend the row holds, in site order (``marks``: :func:`site_watermarks`)."""
    return {key: tuple(Watermark(s, marks.get(s, 0)) for s in sorted(sites))
            for key, sites in _spenders(db, table, keys).items()}


def contract_allowances(db: Database, contracts: Sequence[tuple[int, int | None]], policy: AllowancePolicy,
                        active_sites: Sequence[str]) -> dict[int, tuple[Allowance, ...]]:
    """The allowances of each contract of ``contracts`` ((contract_id, its own exposure or
    None) pairs), by contract id: those shared out when its exposure was set, else equal
    shares of the host's default exposure (one kept for a site not yet known); none for a
    contract without either."""
    out: dict[int, list[Allowance]] = defaultdict(list)
    for cid, site, amount in db.select_in("SELECT contract_id, site_id, amount_kop FROM offline_allowances "
                                          "WHERE contract_id IN ({in}) ORDER BY contract_id, site_id",
                                          [cid for cid, _ in contracts]):
        out[cid].append(Allowance(site, amount))
    default = policy.default_exposure_kop
    for cid, own in contracts:
        if own is None and default is not None:
            out[cid] = [Allowance("*", default // (len(active_sites) + 1))]
    return {cid: tuple(sorted(a, key=lambda x: (x.site_id == "*", x.site_id))) for cid, a in out.items()}


def shares(exposure_kop: int, priority: Sequence[str], others: int, priority_weight: int) -> tuple[Allowance, ...]:
    """``exposure_kop`` shared: each ``priority`` site ``priority_weight`` shares, each of
    ``others`` sites one (the ``"*"`` allowance), one share kept for a site not yet known.
    The allowances of all those sites add up to at most the exposure."""
    unit = exposure_kop // (priority_weight * len(priority) + others + 1)
    return tuple(Allowance(s, unit * priority_weight) for s in sorted(priority)) + (Allowance("*", unit),)


def set_offline_exposure(ledger: Ledger, contract_id: int, exposure_kop: int | None, *,
                         priority_weight: int = 3) -> None:
    """Set how much a contract may lose to its sites' offline spend (None: the host's
    default) and share it out now as the sites' allowances (:func:`shares`: a site where the
    contract's cards already buy weighs ``priority_weight``); published at once (a contracts
    delta). The shares stay as set until the next call, so a site that is offline holds the
    same allowance as the host counts for it."""
    if type(priority_weight) is not int or priority_weight < 1:
        raise InvalidInput(f"priority_weight must be a whole number >= 1, got {priority_weight!r}")
    if exposure_kop is not None and (type(exposure_kop) is not int or not 0 <= exposure_kop <= MAX_AMOUNT_KOP):
        raise InvalidInput(f"offline exposure must be a whole number of kopecks in 0..{MAX_AMOUNT_KOP}, "
                           f"got {exposure_kop!r}")

    def step(db: Database) -> None:
        if db.execute("UPDATE contracts SET offline_exposure_kop = ? WHERE contract_id = ?",
                      (exposure_kop, contract_id)).rowcount != 1:
            raise NotFound(f"no contract {contract_id}")
        db.execute("DELETE FROM offline_allowances WHERE contract_id = ?", (contract_id,))
        if exposure_kop is not None:
            active = {s for (s,) in db.fetchall("SELECT site_id FROM sites WHERE status = 'active'")}
            priority = [s for s in _spenders(db, Table.CONTRACTS, [contract_id]).get(str(contract_id), ())
                        if s in active]
            db.executemany("INSERT INTO offline_allowances (contract_id, site_id, amount_kop) VALUES (?, ?, ?)",
                           [(contract_id, a.site_id, a.amount_kop)
                            for a in shares(exposure_kop, priority, len(active) - len(priority), priority_weight)])
        record_change(db, Table.CONTRACTS, [contract_id], now_utc_s=ledger.now())
    ledger.db.run(step)
