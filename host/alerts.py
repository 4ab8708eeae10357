"""Totals alerts: a pump's meters counted fuel that no sale of the site accounts for.

A site journals ``fuel.totals_mismatch`` (``wire.bodies.FuelTotalsMismatch``) when a nozzle's
totals after a sale are not its totals before plus what the sale delivered: fuel went
through the meter while the link to the dispenser was down, a meter fault, tampering. The
record reaches the host like every other; :func:`apply` (called by ``host.ingest`` for each
batch's new records, in the batch's transaction) keeps one ``totals_alerts`` row per such
record, and :func:`alerts` lists them (``edgepos host alerts``, ``--all`` for closed ones).

The table is created here, if absent, on first use (``CREATE TABLE IF NOT EXISTS``), so this
module needs no change to the ledger's schema versions; a later migration may adopt it.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from wire.bodies import BodyError, FuelTotalsMismatch

from .db import Database

__all__ = ["KIND", "TotalsAlert", "ensure_table", "apply", "alerts", "cmd_alerts", "register"]

KIND = FuelTotalsMismatch.KIND
log = logging.getLogger("edgepos.host.alerts")

_TABLE = """CREATE TABLE IF NOT EXISTS totals_alerts (
    record_id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    lane TEXT NOT NULL,
    sale_txn_id TEXT NOT NULL,
    sale_no BIGINT,
    product TEXT NOT NULL,
    nozzle BIGINT NOT NULL,
    before_volume_ml BIGINT NOT NULL,
    delivered_volume_ml BIGINT NOT NULL,
    after_volume_ml BIGINT NOT NULL,
    unexplained_ml BIGINT NOT NULL,
    unexplained_kop BIGINT NOT NULL,
    at_utc_s BIGINT NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    created_at_utc_s BIGINT NOT NULL
)"""

_COLUMNS = ("record_id, site_id, lane, sale_txn_id, sale_no, product, nozzle, before_volume_ml, "
            "delivered_volume_ml, after_volume_ml, unexplained_ml, unexplained_kop, at_utc_s, status")


@dataclass(frozen=True, slots=True)
class TotalsAlert:
    """One totals mismatch a site reported: which pump (lane) and sale, the nozzle's totals
    before and after, and the millilitres and kopecks nothing accounts for."""

    record_id: str
    site_id: str
    lane: str
    sale_txn_id: str
    sale_no: int | None
    product: str
    nozzle: int
    before_volume_ml: int
    delivered_volume_ml: int
    after_volume_ml: int
    unexplained_ml: int
    unexplained_kop: int
    at_utc_s: int
    status: str


def ensure_table(db: Database) -> None:
    """Create the ``totals_alerts`` table if it is not there (idempotent)."""
    db.execute(_TABLE)


def apply(db: Database, site_id: str, records: Iterable[Any], now_utc_s: int) -> int:
    """Keep a ``totals_alerts`` row for every ``fuel.totals_mismatch`` among ``records`` (a
    batch's new records: ``record_id``, ``lane``, ``kind``, ``body``, ``at_utc_s``); a body
    that is not the kind's shape is logged and skipped (the record itself is stored as every
record is). Returns the rows added (a record seen before adds none: ``ON CONFLICT``)."""
    rows = []
    for rec in records:
        if rec.kind != KIND:
            continue
        try:
            m = FuelTotalsMismatch.from_json(rec.body)
        except BodyError as exc:  # stored with its batch, not listed
            log.error("site %s record %s: not a totals alert: %s", site_id, rec.record_id, exc)
            continue
        rows.append((rec.record_id, site_id, rec.lane, m.sale_txn_id, m.sale_no, m.product, m.after.nozzle,
                     m.before.volume_ml, m.delivered_volume_ml, m.after.volume_ml, m.unexplained_ml,
                     m.unexplained_kop, rec.at_utc_s, now_utc_s))
    if rows:
        ensure_table(db)
        db.executemany(f"INSERT INTO totals_alerts ({_COLUMNS.replace(', status', '')}, created_at_utc_s) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (record_id) DO NOTHING", rows)
    return len(rows)


def alerts(db: Database, status: str | None = "open") -> list[TotalsAlert]:
    """The totals alerts (``status`` None: all of them), oldest first."""
    ensure_table(db)
    sql, params = f"SELECT {_COLUMNS} FROM totals_alerts", tuple[str, ...]()
    if status is not None:
        sql, params = sql + " WHERE status = ?", (status,)
    return [TotalsAlert(*r) for r in db.fetchall(sql + " ORDER BY at_utc_s, record_id", params)]


def cmd_alerts(led: Any, a: argparse.Namespace) -> None:
    """``edgepos host alerts``: print the open totals alerts (``--all``: every one)."""
    rows = alerts(led.db, None if a.all else "open")
    if not rows:
        print("no totals alerts")
        return
    print("site\tpump\tsale\tproduct\tnozzle\tbefore_ml\tdelivered_ml\tafter_ml\tunexplained_ml\tunexplained_kop\tstatus")
    for x in rows:
        print(f"{x.site_id}\t{x.lane}\t{x.sale_txn_id}\t{x.product}\t{x.nozzle}\t{x.before_volume_ml}\t"
              f"{x.delivered_volume_ml}\t{x.after_volume_ml}\t{x.unexplained_ml}\t{x.unexplained_kop}\t{x.status}")


def register(cmd: Callable[[str, Any, str], argparse.ArgumentParser]) -> None:
    """Add the ``alerts`` command to the host's admin parser (``cmd`` is its adder)."""
    sp = cmd("alerts", cmd_alerts, "totals alerts: fuel a pump's meters counted that no sale accounts for")
    sp.add_argument("--all", action="store_true", help="closed alerts too")
