"""Alerts from the sites' journals: totals mismatches and approve-and-alert rule exceptions.

Totals alerts: a pump's meters counted fuel that no sale of the site accounts for.

A site journals ``fuel.totals_mismatch`` (``wire.bodies.FuelTotalsMismatch``) when a nozzle's
totals after a sale are not its totals before plus what the sale delivered: fuel went
through the meter while the link to the dispenser was down, a meter fault, tampering. The
record reaches the host like every other; :func:`apply` (called by ``host.ingest`` for each
batch's new records, in the batch's transaction) keeps one ``totals_alerts`` row per such
record, and :func:`alerts` lists them (``edgepos host alerts``, ``--all`` for closed ones).

The table is created here, if absent, on first use (``CREATE TABLE IF NOT EXISTS``), so this
module needs no change to the ledger's schema versions; a later migration may adopt it.

Rule exceptions (``fuel.rule_exception``, issue 11): a card rule or limit set to approve and
alert (``authz.fuel_model.OnBreach.ALERT``) that a purchase broke. The lane journals the
decision with ``"exceptions": [[reason_name, limit_id_or_null], ...]`` (only when there are
some) inside the ``decision`` of ``fuel.preauth`` and ``fuel.completed``; a completed one is
a purchase that happened, so :func:`apply` keeps one ``rule_alerts`` row (schema v7) per
exception of each ``fuel.completed`` (the preauth's copy would count it twice, and a preauth
that delivered nothing bought nothing). :func:`rule_alerts` lists them; card numbers are
shown masked.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from authz.fuel_model import mask_card_no
from wire.bodies import BodyError, FuelTotalsMismatch, exceptions_from_json

from .db import Database

__all__ = ["KIND", "RULE_KIND", "RuleAlert", "TotalsAlert", "alerts", "apply", "cmd_alerts", "ensure_table",
           "register", "rule_alerts"]

KIND = FuelTotalsMismatch.KIND
#: The kind of alert a completed purchase that broke an approve-and-alert rule raises.
RULE_KIND = "fuel.rule_exception"
_COMPLETED = "fuel.completed"
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


@dataclass(frozen=True, slots=True)
class RuleAlert:
    """One exception a completed purchase raised: the rule it broke (``reason``: the
    ``authz.reasons.Reason`` name; ``limit_id`` for a limit), the card (its number is kept
    whole in the ledger; :attr:`card` masks it), where and what was bought."""

    record_id: str
    n: int
    site_id: str
    lane: str
    card_no: str
    contract_id: int | None
    reason: str
    limit_id: int | None
    station_id: int | None
    product: str
    volume_ml: int
    amount_kop: int
    at_utc_s: int
    status: str

    @property
    def card(self) -> str:
        """The card number masked (for listings and logs)."""
        return mask_card_no(self.card_no)

    @property
    def rule(self) -> str:
        """The rule broken, in words: ``limit 3`` or ``OUTSIDE_TIME_WINDOW``."""
        if self.limit_id is not None:
            return f"limit {self.limit_id} ({self.reason})"
        return self.reason


def _exceptions(body: Any) -> list[tuple[str, int | None]]:
    """The ``decision.exceptions`` of a ``fuel.completed`` body (empty when absent); a
    BodyError for a malformed one (:func:`wire.bodies.exceptions_from_json`, the lane's shape)."""
    decision = body.get("decision") if isinstance(body, dict) else None
    if not isinstance(decision, dict):
        raise BodyError("fuel.completed.decision must be an object")
    raw = decision.get("exceptions")
    if raw is None:
        return []
    return [(e.reason.name, e.limit_id) for e in exceptions_from_json(raw, "decision.exceptions")]


def _rule_rows(site_id: str, rec: Any, now_utc_s: int) -> list[tuple]:
    body = rec.body
    found = _exceptions(body)
    if not found:
        return []
    req = body.get("request")
    req = req if isinstance(req, dict) else {}
    card_no, cid = body.get("card_no"), body.get("contract_id")
    station, product = req.get("station_id"), req.get("product")
    volume, amount = body.get("delivered_volume_ml"), body.get("amount_kop")
    if not isinstance(card_no, str) or not isinstance(product, str) or type(volume) is not int \
            or type(amount) is not int:
        raise BodyError("fuel.completed: card_no, request.product, delivered_volume_ml and amount_kop are needed")
    return [(rec.record_id, n, site_id, rec.lane, card_no, cid if type(cid) is int else None, reason, lid,
             station if type(station) is int else None, product, volume, amount, rec.at_utc_s, now_utc_s)
            for n, (reason, lid) in enumerate(found)]


def ensure_table(db: Database) -> None:
    """Create the ``totals_alerts`` table if it is not there (idempotent)."""
    db.execute(_TABLE)


def apply(db: Database, site_id: str, records: Iterable[Any], now_utc_s: int) -> int:
    """Keep a ``totals_alerts`` row for every ``fuel.totals_mismatch`` among ``records`` (a
    batch's new records: ``record_id``, ``lane``, ``kind``, ``body``, ``at_utc_s``), and a
    ``rule_alerts`` row for every exception of a ``fuel.completed``; a body that is not the
    kind's shape is logged and skipped (the record itself is stored as every record is).
    Returns the rows added (a record seen before adds none: ``ON CONFLICT``)."""
    rows, rule_rows = [], []
    for rec in records:
        if rec.kind == _COMPLETED:
            try:
                rule_rows += _rule_rows(site_id, rec, now_utc_s)
            except BodyError as exc:
                log.error("site %s record %s: its rule exceptions are not listed: %s", site_id, rec.record_id, exc)
            continue
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
    if rule_rows:
        db.executemany(f"INSERT INTO rule_alerts ({_RULE_COLUMNS.replace(', status', '')}, created_at_utc_s) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (record_id, n) DO NOTHING",
                       rule_rows)
    return len(rows) + len(rule_rows)


_RULE_COLUMNS = ("record_id, n, site_id, lane, card_no, contract_id, reason, limit_id, station_id, product, "
                 "volume_ml, amount_kop, at_utc_s, status")


def rule_alerts(db: Database, status: str | None = "open", *, contract_id: int | None = None) -> list[RuleAlert]:
    """The rule exceptions (``status`` None: all; ``contract_id``: one contract's), oldest first."""
    where: list[str] = []
    params: list[object] = []
    if status is not None:
        where.append("status = ?")
        params.append(status)
    if contract_id is not None:
        where.append("contract_id = ?")
        params.append(contract_id)
    sql = f"SELECT {_RULE_COLUMNS} FROM rule_alerts" + (" WHERE " + " AND ".join(where) if where else "")
    return [RuleAlert(*r) for r in db.fetchall(sql + " ORDER BY at_utc_s, record_id, n", tuple(params))]


def alerts(db: Database, status: str | None = "open") -> list[TotalsAlert]:
    """The totals alerts (``status`` None: all of them), oldest first."""
    ensure_table(db)
    sql, params = f"SELECT {_COLUMNS} FROM totals_alerts", tuple[str, ...]()
    if status is not None:
        sql, params = sql + " WHERE status = ?", (status,)
    return [TotalsAlert(*r) for r in db.fetchall(sql + " ORDER BY at_utc_s, record_id", params)]


def cmd_alerts(led: Any, a: argparse.Namespace) -> None:
    """``edgepos host alerts``: print the open totals alerts and rule exceptions (``--all``:
    every one)."""
    status = None if a.all else "open"
    _print_totals(alerts(led.db, status))
    rules = rule_alerts(led.db, status)
    if not rules:
        print(f"no {RULE_KIND} alerts")
        return
    print("kind\tsite\tpump\tcard\tcontract\trule\tstation\tproduct\tdelivered_ml\tamount_kop\tat_utc_s\tstatus")
    for r in rules:
        print(f"{RULE_KIND}\t{r.site_id}\t{r.lane}\t{r.card}\t{r.contract_id}\t{r.rule}\t{r.station_id}\t"
              f"{r.product}\t{r.volume_ml}\t{r.amount_kop}\t{r.at_utc_s}\t{r.status}")


def _print_totals(rows: list[TotalsAlert]) -> None:
    if not rows:
        print("no totals alerts")
        return
    print("site\tpump\tsale\tproduct\tnozzle\tbefore_ml\tdelivered_ml\tafter_ml\tunexplained_ml\tunexplained_kop\tstatus")
    for x in rows:
        print(f"{x.site_id}\t{x.lane}\t{x.sale_txn_id}\t{x.product}\t{x.nozzle}\t{x.before_volume_ml}\t"
              f"{x.delivered_volume_ml}\t{x.after_volume_ml}\t{x.unexplained_ml}\t{x.unexplained_kop}\t{x.status}")


def register(cmd: Callable[[str, Any, str], argparse.ArgumentParser]) -> None:
    """Add the ``alerts`` command to the host's admin parser (``cmd`` is its adder)."""
    sp = cmd("alerts", cmd_alerts, "alerts: totals mismatches (fuel a pump's meters counted that no sale "
                                   "accounts for) and rule exceptions (purchases approved past a card rule or "
                                   "limit set to alert)")
    sp.add_argument("--all", action="store_true", help="closed alerts too")
