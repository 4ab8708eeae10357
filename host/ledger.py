"""The ledger: the host's database, opened by URL, and what can be read from it.

``Ledger.open("sqlite:///host.sqlite")`` or ``Ledger.open("postgresql://...")`` connects and
migrates the schema. One Ledger is one connection, for one thread at a time; each worker
opens its own. Writes are :mod:`host.ingest` (batches), :mod:`host.master` (operators'
changes) and :mod:`host.publisher` (versions); this module reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from authz.club_model import ClubCard, ClubCardKind, ClubRules, ClubStatus, PointLot
from authz.fuel_model import Contract, DiscountRule, FuelCard, LimitCounter, Product, Station

from . import rows as R
from .db import Database, connect
from .errors import NotFound
from .schema import migrate

__all__ = ["Ledger", "SiteInfo", "CloneAlert", "Issue", "CardCorrection", "ClubAccountInfo", "DEFAULT_CLONE_TOLERANCE_S"]

#: Clock skew between sites tolerated before a card's counter is called "going backwards".
DEFAULT_CLONE_TOLERANCE_S = 600


@dataclass(frozen=True, slots=True)
class SiteInfo:
    """A site as the host knows it: its watermark, traffic and presence."""

    site_id: str
    status: str
    up_to_seq: int
    max_seq: int
    batches: int
    records: int
    last_batch_at_utc_s: int | None
    online: bool | None
    presence_at_utc_s: int | None
    software_version: str | None
    replica_versions: dict[str, int]

    @property
    def gap(self) -> bool:
        """A later batch arrived while an earlier one is missing."""
        return self.max_seq > self.up_to_seq


@dataclass(frozen=True, slots=True)
class CloneAlert:
    """A card whose transaction counter says two plastics carry it."""

    alert_id: int
    card_no: str
    kind: str  #: tc_conflict | tc_backwards | edge_refused
    txn_counter: int | None
    record_id: str
    site_id: str
    at_utc_s: int
    other_record_id: str | None
    other_site_id: str | None
    detail: str
    status: str


@dataclass(frozen=True, slots=True)
class Issue:
    """Something the ledger stored but could not (fully) apply, or an operator should see."""

    issue_id: int
    record_id: str | None
    site_id: str | None
    kind: str
    detail: str
    created_at_utc_s: int


@dataclass(frozen=True, slots=True)
class CardCorrection:
    """A reservation a fuel card may still hold because it could not be settled on the card."""

    record_id: str
    site_id: str
    card_no: str
    contract_id: int | None
    why: str
    status: str  #: due | check_card | not_needed
    reserved_txn_counter: int
    excess: tuple[tuple[int, int, int], ...]  #: (limit_id, period_start, too high by)
    released_volume_ml: int
    released_amount_kop: int
    resolved_by_record_id: str | None


@dataclass(frozen=True, slots=True)
class ClubAccountInfo:
    """A club account with its person, cards, lots and points debt."""

    account_id: int
    person_id: str
    kind: ClubCardKind
    activated: bool
    status: ClubStatus
    balance_kop: int
    turnover_month: int
    turnover_kop: int
    points_debt: int
    lots: tuple[PointLot, ...]
    cards: tuple[ClubCard, ...]

    def points(self, now_utc_s: int) -> int:
        """Unexpired points less the debt."""
        return sum(lot.points for lot in self.lots if now_utc_s < lot.expires_at_s) - self.points_debt


class Ledger:
    """The host's ledger on one database connection."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time,
                 clone_tolerance_s: int = DEFAULT_CLONE_TOLERANCE_S) -> None:
        self.db = db
        self.clock = clock
        self.clone_tolerance_s = clone_tolerance_s

    @classmethod
    def open(cls, url: str, *, migrate_schema: bool = True, **kwargs: Any) -> "Ledger":
        """Connect to ``url`` and bring its schema up to date. Raises
        :class:`~host.errors.LedgerUnavailable` or :class:`~host.errors.SchemaError`."""
        db = connect(url)
        try:
            if migrate_schema:
                migrate(db)
        except BaseException:
            db.close()
            raise
        return cls(db, **kwargs)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def now(self) -> int:
        return int(self.clock())

    @property
    def dialect(self) -> str:
        return self.db.dialect

    # -- sites --

    _SITE = ("site_id, status, up_to_seq, max_seq, batches, records, last_batch_at_utc_s, online, "
             "presence_at_utc_s, software_version, replica_versions")

    @staticmethod
    def _site(row: tuple) -> SiteInfo:
        return SiteInfo(row[0], row[1], row[2], row[3], row[4], row[5], row[6],
                        None if row[7] is None else bool(row[7]), row[8], row[9], json.loads(row[10] or "{}"))

    def sites(self) -> list[SiteInfo]:
        """Every site, by id."""
        return [self._site(r) for r in self.db.fetchall(f"SELECT {self._SITE} FROM sites ORDER BY site_id")]

    def site(self, site_id: str) -> SiteInfo | None:
        row = self.db.fetchone(f"SELECT {self._SITE} FROM sites WHERE site_id = ?", (site_id,))
        return None if row is None else self._site(row)

    def batch_status(self, site_id: str, batch_seq: int) -> tuple[str, str | None] | None:
        """(status, reason) of a batch the host has settled, or None."""
        row = self.db.fetchone("SELECT status, reason FROM batches WHERE site_id = ? AND batch_seq = ?",
                               (site_id, batch_seq))
        return None if row is None else (row[0], row[1])

    # -- records --

    def record_count(self, site_id: str | None = None, kind: str | None = None) -> int:
        sql, params = "SELECT count(*) FROM records WHERE 1 = 1", []
        if site_id is not None:
            sql, params = sql + " AND site_id = ?", params + [site_id]
        if kind is not None:
            sql, params = sql + " AND kind = ?", params + [kind]
        return self.db.scalar(sql, params, 0)

    def record(self, record_id: str) -> dict | None:
        """A stored record as a dict (body parsed), or None."""
        row = self.db.fetchone("SELECT record_id, site_id, batch_seq, lane, txn_id, kind, at_utc_s, body, flag "
                               "FROM records WHERE record_id = ?", (record_id,))
        if row is None:
            return None
        keys = ("record_id", "site_id", "batch_seq", "lane", "txn_id", "kind", "at_utc_s", "body", "flag")
        out = dict(zip(keys, row))
        out["body"] = json.loads(out["body"])
        return out

    def flagged(self) -> list[tuple[str, str, str]]:
        """(record_id, kind, flag) of every flagged record."""
        return [tuple(r) for r in self.db.fetchall(
            "SELECT record_id, kind, flag FROM records WHERE flag IS NOT NULL ORDER BY record_id")]

    def issues(self) -> list[Issue]:
        return [Issue(*r) for r in self.db.fetchall(
            "SELECT issue_id, record_id, site_id, kind, detail, created_at_utc_s FROM ledger_issues ORDER BY issue_id")]

    # -- fuel --

    def products(self) -> dict[str, Product]:
        return {r[0]: R.product_from_row(r) for r in self.db.fetchall("SELECT code, name, grp FROM products")}

    def contract(self, contract_id: int) -> Contract:
        row = self.db.fetchone(f"SELECT {R.CONTRACT_COLUMNS} FROM contracts WHERE contract_id = ?", (contract_id,))
        if row is None:
            raise NotFound(f"no contract {contract_id}")
        return R.contract_from_row(row)

    def contract_name(self, contract_id: int) -> str:
        """The customer's name on the contract ('' if none or no such contract)."""
        return self.db.scalar("SELECT name FROM contracts WHERE contract_id = ?", (contract_id,), "")

    def contract_cards(self, contract_id: int) -> list[FuelCard]:
        """The contract's fuel cards, by number."""
        return [R.card_from_row(r) for r in self.db.fetchall(
            f"SELECT {R.CARD_COLUMNS} FROM fuel_cards WHERE contract_id = ? ORDER BY card_no", (contract_id,))]

    def stations(self) -> list[Station]:
        """Every station, by id."""
        return [R.station_from_row(r) for r in self.db.fetchall(
            f"SELECT {R.STATION_COLUMNS} FROM stations ORDER BY station_id")]

    def discounts(self) -> list[DiscountRule]:
        """Every tariff's discount rows, by tariff."""
        return [d for t, text in self.db.fetchall("SELECT tariff, discounts FROM tariffs ORDER BY tariff")
                for d in R.discounts_from_json(t, text)]

    def balance_kop(self, contract_id: int) -> int:
        return self.contract(contract_id).balance_kop

    def fuel_card(self, card_no: str) -> FuelCard:
        row = self.db.fetchone(f"SELECT {R.CARD_COLUMNS} FROM fuel_cards WHERE card_no = ?", (card_no,))
        if row is None:
            raise NotFound(f"no fuel card {_mask(card_no)}")
        return R.card_from_row(row)

    def counters(self, card_no: str) -> dict[int, LimitCounter]:
        """The card's counter of each limit in its latest period."""
        out: dict[int, LimitCounter] = {}
        for lid, start, spent in self.db.fetchall(
                "SELECT limit_id, period_start, spent FROM fuel_counters WHERE card_no = ? "
                "ORDER BY limit_id, period_start", (card_no,)):
            out[lid] = LimitCounter(spent, start)
        return out

    def spent(self, card_no: str, limit_id: int, period_start: int) -> int:
        return self.db.scalar("SELECT spent FROM fuel_counters WHERE card_no = ? AND limit_id = ? AND period_start = ?",
                              (card_no, limit_id, period_start), 0)

    def stop_list(self) -> dict[str, int]:
        return dict(self.db.fetchall("SELECT card_no, listed_at_utc_s FROM stop_list"))

    def clone_alerts(self, status: str | None = "open") -> list[CloneAlert]:
        sql = ("SELECT alert_id, card_no, kind, txn_counter, record_id, site_id, at_utc_s, other_record_id, "
               "other_site_id, detail, status FROM clone_alerts")
        params: tuple = ()
        if status is not None:
            sql, params = sql + " WHERE status = ?", (status,)
        return [CloneAlert(*r) for r in self.db.fetchall(sql + " ORDER BY alert_id", params)]

    def corrections(self, card_no: str | None = None) -> list[CardCorrection]:
        sql = ("SELECT record_id, site_id, card_no, contract_id, why, status, reserved_txn_counter, excess, "
               "released_volume_ml, released_amount_kop, resolved_by_record_id FROM card_corrections")
        params: tuple = ()
        if card_no is not None:
            sql, params = sql + " WHERE card_no = ?", (card_no,)
        out = []
        for r in self.db.fetchall(sql + " ORDER BY at_utc_s, record_id", params):
            excess = tuple(tuple(x) for x in json.loads(r[7]))
            out.append(CardCorrection(r[0], r[1], r[2], r[3], r[4], r[5], r[6], excess, r[8], r[9], r[10]))
        return out

    # -- club --

    def club_rules(self) -> ClubRules:
        body = self.db.scalar("SELECT body FROM club_rules WHERE key = 'club'")
        return ClubRules() if body is None else R.rules_from_json(body)

    def club_card(self, card_no: str) -> ClubCard:
        row = self.db.fetchone("SELECT card_no, account_id, status FROM club_cards WHERE card_no = ?", (card_no,))
        if row is None:
            raise NotFound(f"no club card {_mask(card_no)}")
        return R.club_card_from_row(row)

    def club_account(self, account_id: int) -> ClubAccountInfo:
        row = self.db.fetchone("SELECT account_id, person_id, kind, activated, status, balance_kop, turnover_month, "
                               "turnover_kop, points_debt FROM club_accounts WHERE account_id = ?", (account_id,))
        if row is None:
            raise NotFound(f"no club account {account_id}")
        lots = tuple(PointLot(*r) for r in self.db.fetchall(
            "SELECT lot_id, points, matures_at_s, expires_at_s FROM club_lots WHERE account_id = ? "
            "ORDER BY expires_at_s, lot_id", (account_id,)))
        cards = tuple(R.club_card_from_row(r) for r in self.db.fetchall(
            "SELECT card_no, account_id, status FROM club_cards WHERE account_id = ? ORDER BY card_no", (account_id,)))
        return ClubAccountInfo(row[0], row[1], ClubCardKind(row[2]), bool(row[3]), ClubStatus(row[4]), row[5], row[6],
                               row[7], row[8], lots, cards)

    def club_account_of(self, card_no: str) -> ClubAccountInfo:
        return self.club_account(self.club_card(card_no).account_id)


def _mask(card_no: object) -> str:
    from authz.fuel_model import mask_card_no
    return mask_card_no(card_no)
