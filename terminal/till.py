"""A till lane: sales on club cards, returns and cash top-ups, as a small state machine.

A sale is opened with its lines (``open``), a club card is attached by the lane's scanner or
keyed in (``attached``), quoted, and committed with its payments; the commit's decision is
journaled (with the API's answer, in one transaction) before the answer goes back, so
"approved" means on disk. A sale still open when the daemon restarts is voided (nothing was
charged). Offline redemption is bounded per card by the till's allowance: points redeemed on
this site since the last host update.

Rules that span lanes (a sale's returns, a card's offline allowance, the club balances and
caps) are decided and reserved in the site's one :class:`terminal.replica.Replica` in one
synchronous step, with no ``await`` between the check and the reservation; the journal write
follows. The event loop runs one step at a time, so two tills can never both pass a check
that only one of them may pass (docs/lanes.md, "Rules that span lanes").

A lane keeps in memory only its open sale and the last few it served (``recent_sales``);
any other sale of the till is read back from the journal, after a restart too.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from authz.club_model import ClubPayment, ClubReturn, ClubSale, ClubTopUp, SaleLine
from authz.errors import RequestError
from authz.fuel_model import mask_card_no
from wire.bodies import TillCardAttached, TillLine, TillSaleOpened, TillSaleVoided

from . import crashpoints
from .config import TillConfig
from .events import EventBus
from .ids import new_id, new_txn_id
from .journal import IdemEntry, Journal, JournalError, OpenTransaction, Record
from .replica import CLUB_COMMITTED, CLUB_RETURNED, CLUB_TOPPED_UP, Replica, club_sale_body, returned_kop_of

log = logging.getLogger("edgepos.till")

SALE_OPENED = "till.sale_opened"
SALE_VOIDED = "till.sale_voided"
SALE_DECLINED = "till.sale_declined"
CARD_ATTACHED = "till.card_attached"  #: a club card attached to an open sale (scanned or keyed)
#: Kinds that end a till transaction (for the journal's open-transaction scan).
TERMINAL_KINDS = frozenset({CLUB_COMMITTED, SALE_VOIDED, CLUB_RETURNED, CLUB_TOPPED_UP, SALE_DECLINED})


class LaneError(Exception):
    """A request the lane cannot do in its current state; ``status`` is the HTTP status."""

    status = 409

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class SaleState(StrEnum):
    """Where a sale is."""

    OPEN = "open"
    COMMITTED = "committed"
    DECLINED = "declined"
    VOIDED = "voided"


@dataclass(slots=True)
class Sale:
    """A sale on this till: its lines, the card attached, and where it is."""

    sale_id: str
    lines: tuple[SaleLine, ...]
    opened_at_utc_s: int
    card_no: str | None = None
    state: SaleState = SaleState.OPEN
    result: dict[str, Any] | None = None

    @property
    def total_kop(self) -> int:
        """The sale's total."""
        return sum(line.amount_kop for line in self.lines)

    def view(self) -> dict[str, Any]:
        """The sale as the API shows it (card masked)."""
        return {"sale_id": self.sale_id, "state": self.state.value, "total_kop": self.total_kop,
                "card": mask_card_no(self.card_no) if self.card_no else None,
                "lines": [{"sku": l.sku, "category": l.category, "amount_kop": l.amount_kop} for l in self.lines],
                "result": self.result}


#: This run's key for digests of secret request bodies (a PIN): in memory only, never on
#: disk, so a journaled digest of a 4-digit PIN cannot be reversed by trying 10,000 PINs.
_RUN_KEY = os.urandom(32)
_RUN_TAG = hashlib.sha256(_RUN_KEY).hexdigest()[:16]
_SECRET_PREFIX = "hmac-sha256:"


def secret_digest(digest: str) -> str:
    """What the journal keeps for the request digest ``digest`` of a secret body: an HMAC
    under this run's in-memory key, tagged with the run."""
    mac = hmac.new(_RUN_KEY, digest.encode(), hashlib.sha256).hexdigest()
    return f"{_SECRET_PREFIX}{_RUN_TAG}:{mac}"


def same_request(stored: str, digest: str) -> bool:
    """Is ``digest`` (of a request being served) the request whose digest the journal holds
    as ``stored``? A secret digest of an earlier run cannot be compared (its key is gone):
    it is taken as the same request, so the retry gets the first answer, which can change
    nothing any more (the card session it was given in ended with that run)."""
    if not stored.startswith(_SECRET_PREFIX):
        return hmac.compare_digest(stored, digest)
    tag = stored[len(_SECRET_PREFIX):].partition(":")[0]
    return tag != _RUN_TAG or hmac.compare_digest(stored, secret_digest(digest))


@dataclass(frozen=True, slots=True)
class IdemSpec:
    """The idempotency key of the request being served, to journal with its answer."""

    key: str
    endpoint: str
    digest: str

    def entry(self, status: int, response: dict) -> IdemEntry:
        """The journal's idempotency entry for this request's answer."""
        return IdemEntry(self.key, self.endpoint, self.digest, status, response)

    def secret(self) -> "IdemSpec":
        """This request with its digest kept as :func:`secret_digest` (its body is a secret)."""
        return IdemSpec(self.key, self.endpoint, secret_digest(self.digest))


class TxnNumbers:
    """64-bit transaction numbers for point lots: milliseconds << 16 | a counter, increasing."""

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        """The next number (never repeats in this process, nor after a restart a ms later)."""
        n = max(int(time.time() * 1000) << 16, self._last + 1)
        self._last = n
        return n


def sale_from_records(records: list[Record]) -> Sale:
    """A sale as its journal records tell it (the first must be ``till.sale_opened``)."""
    first = records[0]
    opened = TillSaleOpened.from_json(first.body)
    sale = Sale(first.txn_id, parse_lines([line.to_json() for line in opened.lines]), first.at_utc_s)
    for rec in records[1:]:
        b = rec.body
        if rec.kind == CARD_ATTACHED:
            sale.card_no = TillCardAttached.from_json(b).card_no
        elif rec.kind in (CLUB_COMMITTED, SALE_DECLINED):
            approved = rec.kind == CLUB_COMMITTED
            sale.card_no = b["sale"]["card_no"]
            sale.state = SaleState.COMMITTED if approved else SaleState.DECLINED
            sale.result = {"reason": b["reason"], "approved": approved, "accrued_points": b["accrued_points"],
                           "redeemed_points": b["redeemed_points"], "balance_after_kop": b["balance_after_kop"]}
        elif rec.kind == SALE_VOIDED:
            sale.state = SaleState.VOIDED
            sale.result = {"reason": TillSaleVoided.from_json(b).reason}
    return sale


@dataclass
class TillLane:
    """One till lane: its open sale (and a few recent ones), its scanner's last scan.

    ``sales`` holds the open sale and at most ``recent_sales`` ended ones; every other sale
    of this till is read from the journal (:meth:`sale`).
    """

    config: TillConfig
    site_id: str
    replica: Replica
    journal: Journal
    bus: EventBus
    numbers: TxnNumbers = field(default_factory=TxnNumbers)
    sales: OrderedDict[str, Sale] = field(default_factory=OrderedDict)
    last_scan: tuple[str, float] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: ended sales kept in memory besides the open one (a till often asks right after)
    recent_sales: int = 16

    @property
    def lane(self) -> str:
        """The lane name used in journal records and events: the till's id."""
        return self.config.till_id

    def _open_sale(self) -> Sale | None:
        return next((s for s in self.sales.values() if s.state is SaleState.OPEN), None)

    def _keep(self, sale: Sale) -> None:
        """Remember ``sale`` as the most recent; forget the oldest ended ones beyond the bound."""
        self.sales[sale.sale_id] = sale
        self.sales.move_to_end(sale.sale_id)
        ended = [sid for sid, s in self.sales.items() if s.state is not SaleState.OPEN]
        for sid in ended[:max(0, len(ended) - self.recent_sales)]:
            del self.sales[sid]

    def sale(self, sale_id: str) -> Sale:
        """The sale ``sale_id`` of this till (from memory, else from the journal), or a 404
        LaneError."""
        s = self.sales.get(sale_id)
        if s is not None:
            return s
        records = self.journal.records_for_txn(sale_id) if isinstance(sale_id, str) and sale_id else []
        if not records or records[0].kind != SALE_OPENED or records[0].lane != self.lane:
            raise LaneError(f"no sale {sale_id!r} on {self.lane}", 404)
        return sale_from_records(records)

    def _record(self, txn_id: str, kind: str, body: Any) -> Record:
        """A record of this lane; ``body`` is a typed body (``wire.bodies``) or, for the kinds
        not typed yet (commit, return, top-up), the JSON object itself."""
        if not isinstance(body, dict):
            kind, body = body.KIND, body.to_json()
        return Record(new_id(self.site_id), self.site_id, self.lane, txn_id, kind, int(time.time()), body)

    # -- sales --

    async def open(self, lines: tuple[SaleLine, ...], idem: IdemSpec | None = None) -> tuple[int, dict]:
        """Open a sale (one at a time per till). A card scanned in the last 60 s is attached."""
        async with self.lock:
            if self.replica.club is None:
                raise LaneError("this site has no club replica", 503)
            current = self._open_sale()
            if current is not None:
                raise LaneError(f"sale {current.sale_id} is still open on {self.lane}: commit or void it first")
            probe = ClubSale(self.replica.club_model.cards[0].card_no, lines, int(time.time()))
            self.replica.club.quote(probe)  # RequestError for bad lines, before anything is journaled
            sale = Sale(new_txn_id(self.site_id, self.lane), lines, int(time.time()))
            if self.last_scan and time.monotonic() - self.last_scan[1] < 60:
                sale.card_no = self.last_scan[0]
                self.last_scan = None
            response = sale.view()
            opened = TillSaleOpened(tuple(TillLine.from_json(line) for line in response["lines"]))
            records = [self._record(sale.sale_id, SALE_OPENED, opened)]
            if sale.card_no is not None:
                records.append(self._record(sale.sale_id, CARD_ATTACHED, TillCardAttached(sale.card_no, "scanner")))
            await self.journal.append(records, idem=idem.entry(201, response) if idem else None)
            crashpoints.reached(SALE_OPENED)
            self._keep(sale)
            log.info("%s: sale %s opened, %d lines, %d kop", self.lane, sale.sale_id, len(lines), sale.total_kop)
            return 201, response

    async def attach(self, sale_id: str, card_no: str, *, source: str,
                     idem: IdemSpec | None = None) -> tuple[int, dict]:
        """Attach club card ``card_no`` to the open sale (scanned or keyed): journaled
        (``till.card_attached``, with the API's answer), then the sale holds the card."""
        async with self.lock:
            return await self._attach(sale_id, card_no, source=source, idem=idem)

    async def _attach(self, sale_id: str, card_no: str, *, source: str,
                      idem: IdemSpec | None = None) -> tuple[int, dict]:
        sale = self.sale(sale_id)
        if sale.state is not SaleState.OPEN:
            raise LaneError(f"sale {sale_id} is {sale.state.value}, a card can only be attached to an open sale")
        if self.replica.club_model is None or card_no not in self.replica.club_model.card_index:
            raise LaneError(f"unknown club card {mask_card_no(card_no)}", 422)
        response = sale.view() | {"card": mask_card_no(card_no)}
        await self.journal.append([self._record(sale_id, CARD_ATTACHED, TillCardAttached(card_no, source))],
                                  idem=idem.entry(200, response) if idem else None)
        crashpoints.reached(CARD_ATTACHED)
        sale.card_no = card_no
        self.bus.publish("till.card_attached", self.lane, sale_id=sale_id, card=mask_card_no(card_no), source=source)
        log.info("%s: card %s attached to sale %s (%s)", self.lane, mask_card_no(card_no), sale_id, source)
        return 200, response

    async def on_scan(self, card_no: str) -> None:
        """A club card was scanned on this lane's scanner: attach it to the open sale, or keep
        it for the next sale opened within 60 s."""
        self.bus.publish("till.card_scanned", self.lane, card=mask_card_no(card_no))
        async with self.lock:
            current = self._open_sale()
            if current is not None and current.card_no is None:
                try:
                    await self._attach(current.sale_id, card_no, source="scanner")
                except LaneError as exc:
                    log.warning("%s: scanned card not attached: %s", self.lane, exc)
                except JournalError as exc:  # the scanner goes on; the till may key the card in
                    log.error("%s: scanned card %s not attached, the journal refused it: %s", self.lane,
                              mask_card_no(card_no), exc)
                return
            self.last_scan = (card_no, time.monotonic())

    def _club_sale(self, sale: Sale, payment_method: str = "cash") -> ClubSale:
        if sale.card_no is None:
            raise LaneError(f"sale {sale.sale_id} has no club card attached: scan or key one first")
        return ClubSale(sale.card_no, sale.lines, int(time.time()), "store", payment_method)

    def allowance_left(self, card_no: str) -> int:
        """Points this card may still redeem offline on this site."""
        return max(0, self.config.offline_points_allowance - self.replica.offline_redeemed[card_no])

    def quote(self, sale_id: str, payment_method: str = "cash") -> dict:
        """The quote of the open sale, its redeemable points bounded by the offline allowance."""
        sale = self.sale(sale_id)
        if sale.state is not SaleState.OPEN:
            raise LaneError(f"sale {sale_id} is {sale.state.value}")
        q = self.replica.club.quote(self._club_sale(sale, payment_method))
        most = min(q.max_redeem_points, self.allowance_left(sale.card_no))
        return {"sale_id": sale_id, "reason": q.reason.name, "total_kop": q.total_kop,
                "points_spendable": q.points_spendable, "max_redeem_points": most,
                "accrual_points": q.accrual_points, "balance_kop": q.balance_kop,
                "payments_enabled": q.payments_enabled,
                "offline_allowance_left": self.allowance_left(sale.card_no)}

    async def commit(self, sale_id: str, payment: ClubPayment, payment_method: str,
                     idem: IdemSpec | None = None) -> tuple[int, dict]:
        """Commit the open sale with ``payment``: decide, journal (durably), answer."""
        async with self.lock:
            sale = self.sale(sale_id)
            if sale.state is not SaleState.OPEN:
                raise LaneError(f"sale {sale_id} is {sale.state.value}, not open")
            club_sale = self._club_sale(sale, payment_method)
            crashpoints.reached("till.before_commit")
            if type(payment.points) is int and payment.points > self.allowance_left(sale.card_no):
                raise LaneError(f"{payment.points} points is over this card's offline allowance "
                                f"({self.allowance_left(sale.card_no)} left)", 422)
            txn_no = self.numbers.next()
            result = self.replica.club.commit(club_sale, payment, txn_no)  # RequestError: nothing changed
            body = {"sale": club_sale_body(club_sale), "txn_no": txn_no,
                    "payment": {"points": payment.points, "card_balance_kop": payment.card_balance_kop,
                                "money_kop": payment.money_kop},
                    "reason": result.reason.name, "accrued_points": result.accrued_points,
                    "redeemed_points": result.redeemed_points,
                    "lots_used": [list(x) for x in result.lots_used],
                    "balance_after_kop": result.balance_after_kop}
            if result.approved:  # reserved now, before the await: another till's check sees it
                self.replica.offline_redeemed[sale.card_no] += result.redeemed_points
            sale.state = SaleState.COMMITTED if result.approved else SaleState.DECLINED
            sale.result = {"reason": result.reason.name, "approved": result.approved,
                           "accrued_points": result.accrued_points, "redeemed_points": result.redeemed_points,
                           "balance_after_kop": result.balance_after_kop}
            response = sale.view()
            kind = CLUB_COMMITTED if result.approved else SALE_DECLINED
            await self.journal.append([self._record(sale_id, kind, body)],
                                      idem=idem.entry(200, response) if idem else None)
            crashpoints.reached(kind)
            self._keep(sale)
            self.bus.publish("till.sale_" + sale.state.value, self.lane, sale_id=sale_id, reason=result.reason.name)
            log.info("%s: sale %s %s (%s), accrued %d, redeemed %d", self.lane, sale_id, sale.state.value,
                     result.reason.name, result.accrued_points, result.redeemed_points)
            return 200, response

    async def void(self, sale_id: str, idem: IdemSpec | None = None, reason: str = "voided by the till") -> tuple[int, dict]:
        """Void the open sale: nothing was charged."""
        async with self.lock:
            sale = self.sale(sale_id)
            if sale.state is not SaleState.OPEN:
                raise LaneError(f"sale {sale_id} is {sale.state.value}, not open")
            sale.state = SaleState.VOIDED
            sale.result = {"reason": reason}
            response = sale.view()
            await self.journal.append([self._record(sale_id, SALE_VOIDED, TillSaleVoided(reason))],
                                      idem=idem.entry(200, response) if idem else None)
            self._keep(sale)
            return 200, response

    # -- returns and top-ups --

    async def return_sale(self, sale_id: str, returned_kop: int, idem: IdemSpec | None = None) -> tuple[int, dict]:
        """Return ``returned_kop`` of committed sale ``sale_id`` of any till of this site
        (found in the journal). What the sale can still return is decided site-wide: the
        journal's approved returns plus those decided on any till and not yet on disk
        (``replica.returns_in_flight``), checked and reserved with no await in between."""
        async with self.lock:
            records = self.journal.records_for_txn(sale_id)
            committed = [r for r in records if r.kind == CLUB_COMMITTED]
            if not committed:
                raise LaneError(f"no committed sale {sale_id!r} in this site's journal", 404)
            body = committed[-1].body
            total = sum(l["amount_kop"] for l in body["sale"]["lines"])
            on_disk = {r.record_id for r in records if r.kind == CLUB_RETURNED}
            in_flight = self.replica.returns_in_flight.get(sale_id, {})
            returned_before = returned_kop_of(records) + sum(kop for rid, kop in in_flight.items()
                                                             if rid not in on_disk)
            if type(returned_kop) is not int or not 0 < returned_kop <= total - returned_before:
                raise LaneError(f"returned_kop must be 1..{total - returned_before} (sale {total} kop, "
                                f"{returned_before} returned before), got {returned_kop!r}", 422)
            ret = ClubReturn(body["sale"]["card_no"], self.numbers.next(), int(time.time()), body["txn_no"],
                             total, body["accrued_points"], body["redeemed_points"],
                             body["payment"]["card_balance_kop"], returned_kop)
            result = self.replica.club.return_sale(ret)
            response = {"sale_id": sale_id, "reason": result.reason.name,
                        "points_taken_back": result.points_taken_back, "points_charged": result.points_charged,
                        "points_given_back": result.points_given_back,
                        "refund_card_balance_kop": result.refund_card_balance_kop,
                        "refund_money_kop": result.refund_money_kop, "balance_after_kop": result.balance_after_kop}
            rec_body = {"return": {f: getattr(ret, f) for f in ClubReturn.__dataclass_fields__}, "result": response}
            rec = self._record(sale_id, CLUB_RETURNED, rec_body)
            if result.reason.approved:
                # Reserved before the await. Kept if the write fails (the evaluator has already
                # refunded in memory: refusing more is the safe side until the restart).
                self.replica.returns_in_flight.setdefault(sale_id, {})[rec.record_id] = returned_kop
            await self.journal.append([rec], idem=idem.entry(200, response) if idem else None)
            crashpoints.reached(CLUB_RETURNED)
            self.replica.return_on_disk(sale_id, rec.record_id)
            return 200, response

    async def top_up(self, card_no: str, amount_kop: int, idem: IdemSpec | None = None) -> tuple[int, dict]:
        """Cash top-up of a club card at this till, within its caps."""
        async with self.lock:
            if self.replica.club is None:
                raise LaneError("this site has no club replica", 503)
            req = ClubTopUp(card_no, amount_kop, int(time.time()))
            result = self.replica.club.top_up(req)
            txn = new_txn_id(self.site_id, self.lane)
            response = {"topup_id": txn, "card": mask_card_no(card_no), "reason": result.reason.name,
                        "approved": result.reason.approved, "balance_after_kop": result.balance_after_kop,
                        "turnover_after_kop": result.turnover_after_kop}
            rec_body = {"topup": {"card_no": card_no, "amount_kop": amount_kop, "now_utc_s": req.now_utc_s},
                        "result": response}
            await self.journal.append([self._record(txn, CLUB_TOPPED_UP, rec_body)],
                                      idem=idem.entry(200, response) if idem else None)
            crashpoints.reached(CLUB_TOPPED_UP)
            return 200, response

    # -- recovery --

    async def recover(self, open_txns: list[OpenTransaction]) -> int:
        """Void every sale this lane left open (opened, never committed): nothing was charged."""
        n = 0
        for txn in open_txns:
            if txn.records and txn.records[0].kind == SALE_OPENED:
                reason = "daemon restarted"
                await self.journal.append([self._record(txn.txn_id, SALE_VOIDED, TillSaleVoided(reason))])
                n += 1  # a till asking about it reads "voided" from the journal
        if n:
            log.warning("%s: voided %d sale(s) left open by the last run", self.lane, n)
        return n


def parse_lines(raw: Any) -> tuple[SaleLine, ...]:
    """Sale lines from the API's JSON, or a RequestError naming what is wrong."""
    if not isinstance(raw, list) or not raw:
        raise RequestError("lines must be a non-empty array")
    if len(raw) > 500:
        raise RequestError("at most 500 lines per sale")
    out = []
    for n, item in enumerate(raw, 1):
        if not isinstance(item, dict):
            raise RequestError(f"line {n} must be an object")
        extra = set(item) - {"sku", "category", "amount_kop"}
        if extra:
            raise RequestError(f"line {n} has unknown field(s) {', '.join(sorted(extra))}")
        sku, cat, amount = item.get("sku", ""), item.get("category"), item.get("amount_kop")
        if not isinstance(sku, str) or len(sku) > 64:
            raise RequestError(f"line {n} sku must be text of at most 64 characters")
        if cat is None or cat == "":
            raise RequestError(f"line {n} has no category")
        out.append(SaleLine(sku, cat, amount))
    return tuple(out)
