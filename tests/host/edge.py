"""A stand-in for an edge site in host tests: journal records with the bodies the lanes write
(terminal/fuel.py, terminal/till.py; docs/lanes.md), cut into batches.

Bodies are built with the edge's own helpers (``terminal.replica``'s request/decision bodies,
``terminal.ids``, ``terminal.fuel.write_id_of``) and club results come from the reference
evaluator, as on a real till."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import date

from authz import sample
from authz.club_model import ClubCardKind, ClubModel, ClubPayment, ClubReturn, ClubSale, ClubTopUp, SaleLine
from authz.fuel_model import (Contract, FuelCard, FuelDecision, FuelRequest, Limit, LimitUnit, Period,
                              ProductGroup, RuleException, Scope, Tariff)
from authz.money import amount_for_volume
from authz.reasons import Reason
from authz.reference import ReferenceClubEvaluator
from terminal.fuel import write_id_of
from terminal.ids import new_id, new_txn_id
from terminal.replica import club_sale_body, fuel_decision_body, fuel_request_body
from wire import Batch, WireRecord

T0 = 1_795_000_000  # 2026-11-17, a Tuesday
CONTRACT = 1
CARD = "7005830000000001"
CARD2 = "7005830000000002"
STATION = 1000


def contract(contract_id: int = CONTRACT, balance_kop: int = 10_000_000, tz: str = "Europe/Moscow") -> Contract:
    return Contract(contract_id, tz, 0, Tariff.REGIONAL, balance_kop)


def fuel_card(card_no: str = CARD, contract_id: int = CONTRACT, limits: tuple[Limit, ...] | None = None) -> FuelCard:
    if limits is None:
        limits = (Limit(1, LimitUnit.MILLILITRES, Period.DAY, 200_000),
                  Limit(2, LimitUnit.KOPECKS, Period.MONTH, 5_000_000),
                  Limit(3, LimitUnit.MILLILITRES, Period.TRANSACTION, 80_000),
                  Limit(4, LimitUnit.KOPECKS, Period.WEEK, 300_000, Scope.GROUP, group=ProductGroup.SHOP),
                  Limit(5, LimitUnit.MILLILITRES, Period.LIFETIME, 5_000_000, Scope.PRODUCT, product="AI98"))
    return FuelCard(card_no, contract_id, date(2028, 12, 31), frozenset(ProductGroup), limits)


def decision_body(dec: FuelDecision) -> dict:
    """``dec`` as the lane journals it: ``terminal.replica.fuel_decision_body``, with
    ``"exceptions": [[reason_name, limit_id_or_null], ...]`` when there are some (issue 11's
    form, added here while the lane's helper does not write it yet)."""
    body = fuel_decision_body(dec)
    if dec.exceptions and "exceptions" not in body:
        body["exceptions"] = [[x.reason.name, x.limit_id] for x in dec.exceptions]
    return body


@dataclass
class Site:
    """One site's journal, as the sync client would send it."""

    site_id: str = "S1"
    records: list[WireRecord] = field(default_factory=list)
    _sale_no: itertools.count = field(default_factory=lambda: itertools.count(1))

    def _rec(self, lane: str, txn: str, kind: str, at: int, body: dict, record_id: str | None = None) -> WireRecord:
        r = WireRecord(record_id or new_id(self.site_id), self.site_id, lane, txn, kind, at, body)
        self.records.append(r)
        return r

    # -- fuel --

    def fuel_sale(self, *, card_no: str = CARD, contract_id: int = CONTRACT, product: str = "AI95",
                  price: int = 6_000, authorized_ml: int = 50_000, delivered_ml: int = 40_000, tc: int = 10,
                  at: int = T0, lane: str = "pump-1", settle: str = "commit",
                  exceptions: tuple[RuleException, ...] = ()) -> list[WireRecord]:
        """A pump sale: preauth, reserved, preset, completed, then ``settle``: ``commit``
        (card_committed), ``absent`` / ``unknown`` (a correction), or ``void`` (nothing
        dispensed: voided with the reservation released). ``exceptions``: the approve-and-alert
        rules the decision broke (journaled in its ``decision`` as the lane writes them)."""
        txn = new_txn_id(self.site_id, lane)
        req = FuelRequest(card_no, STATION, product, at, preset_volume_ml=authorized_ml)
        dec = FuelDecision(Reason.OK, authorized_ml, amount_for_volume(authorized_ml, price), price, price + 150,
                           exceptions=exceptions)
        preauth_id = new_id(self.site_id)
        reserve_w, release_w = write_id_of(preauth_id).hex(), write_id_of(new_id(self.site_id)).hex()
        card = {"card_no": card_no, "contract_id": contract_id, "expected_txn": tc, "reserve_write_id": reserve_w,
                "release_write_id": release_w, "counting": [[1, 1, 1, 20_000]], "base_counters": [[1, 0, 20_000]],
                "reserve_counters": [[1, authorized_ml, 20_000]]}
        out = [self._rec(lane, txn, "fuel.preauth", at, {
            "request": fuel_request_body(req), "decision": decision_body(dec), "card": card,
            "pump": {"product": product, "price_kop_per_l": price, "preset_volume_ml": authorized_ml,
                     "last_sale_no_before": 0}}, preauth_id)]
        out.append(self._rec(lane, txn, "fuel.reserved", at + 1, {"card_no": card_no, "txn_counter": tc + 1,
                                                                  "write_id": reserve_w}))
        sale_no = next(self._sale_no)
        out.append(self._rec(lane, txn, "fuel.preset", at + 2, {"sale_no": sale_no, "product": product,
                                                                "price_kop_per_l": price,
                                                                "preset_volume_ml": authorized_ml}))
        if settle == "void":
            out.append(self._rec(lane, txn, "fuel.voided", at + 60, {
                "card_no": card_no, "reason": "nothing dispensed", "card_release": "released", "sale_no": sale_no,
                "txn_counter": tc + 2, "release_write_id": release_w}))
            return out
        amount = amount_for_volume(delivered_ml, price)
        done_id = new_id(self.site_id)
        commit_w = write_id_of(done_id).hex()
        final = [[1, delivered_ml, 20_000]]
        out.append(self._rec(lane, txn, "fuel.completed", at + 120, {
            "request": fuel_request_body(req), "decision": decision_body(dec), "delivered_volume_ml": delivered_ml,
            "amount_kop": amount, "delivery_reason": "preset_reached", "overrun_ml": 0, "sale_no": sale_no,
            "card_no": card_no, "contract_id": contract_id,
            "card_commit": {"write_id": commit_w, "expected_txn": tc + 1, "counters": final}}, done_id))
        if settle == "commit":
            out.append(self._rec(lane, txn, "fuel.card_committed", at + 121, {
                "card_no": card_no, "txn_counter": tc + 2, "write_id": commit_w, "counters": final}))
        else:
            out.append(self._rec(lane, txn, "fuel.correction", at + 121, {
                "card_no": card_no, "contract_id": contract_id, "why": settle, "reservation_applied": True,
                "reserved_txn_counter": tc + 1, "reserve_write_id": reserve_w, "unsent_write_id": commit_w,
                "counters_reserved": [[1, authorized_ml, 20_000]], "counters_final": final,
                "delivered_volume_ml": delivered_ml, "amount_kop": amount,
                "released_volume_ml": authorized_ml - delivered_ml,
                "released_amount_kop": dec.amount_kop - amount}))
        return out

    # -- club --

    def club_commit(self, ev: ReferenceClubEvaluator, card_no: str, lines: tuple[SaleLine, ...], at: int,
                    payment: ClubPayment, txn_no: int, lane: str = "till-1") -> WireRecord:
        """A till commit decided by ``ev`` (as terminal/till.py journals it)."""
        sale = ClubSale(card_no, lines, at, "store", "cash")
        res = ev.commit(sale, payment, txn_no)
        body = {"sale": club_sale_body(sale), "txn_no": txn_no,
                "payment": {"points": payment.points, "card_balance_kop": payment.card_balance_kop,
                            "money_kop": payment.money_kop},
                "reason": res.reason.name, "accrued_points": res.accrued_points, "redeemed_points": res.redeemed_points,
                "lots_used": [list(x) for x in res.lots_used], "balance_after_kop": res.balance_after_kop}
        kind = "till.sale_committed" if res.approved else "till.sale_declined"
        return self._rec(lane, new_txn_id(self.site_id, lane), kind, at, body)

    def club_return(self, ev: ReferenceClubEvaluator, sale_rec: WireRecord, returned_kop: int, at: int,
                    return_id: int, lane: str = "till-1") -> WireRecord:
        b = sale_rec.body
        total = sum(line["amount_kop"] for line in b["sale"]["lines"])
        ret = ClubReturn(b["sale"]["card_no"], return_id, at, b["txn_no"], total, b["accrued_points"],
                         b["redeemed_points"], b["payment"]["card_balance_kop"], returned_kop)
        res = ev.return_sale(ret)
        result = {"sale_id": sale_rec.txn_id, "reason": res.reason.name, "points_taken_back": res.points_taken_back,
                  "points_charged": res.points_charged, "points_given_back": res.points_given_back,
                  "refund_card_balance_kop": res.refund_card_balance_kop, "refund_money_kop": res.refund_money_kop,
                  "balance_after_kop": res.balance_after_kop}
        body = {"return": {f: getattr(ret, f) for f in ClubReturn.__dataclass_fields__}, "result": result}
        return self._rec(lane, sale_rec.txn_id, "till.return", at, body)

    def club_topup(self, ev: ReferenceClubEvaluator, card_no: str, amount_kop: int, at: int,
                   lane: str = "till-1") -> WireRecord:
        res = ev.top_up(ClubTopUp(card_no, amount_kop, at))
        txn = new_txn_id(self.site_id, lane)
        result = {"topup_id": txn, "card": "**", "reason": res.reason.name, "approved": res.reason.approved,
                  "balance_after_kop": res.balance_after_kop, "turnover_after_kop": res.turnover_after_kop}
        return self._rec(lane, txn, "till.topup", at, {"topup": {"card_no": card_no, "amount_kop": amount_kop,
                                                                  "now_utc_s": at}, "result": result})

    def other(self, kind: str, body: dict, at: int = T0, lane: str = "pump-1") -> WireRecord:
        return self._rec(lane, new_txn_id(self.site_id, lane), kind, at, body)

    # -- batches --

    def batches(self, size: int = 5, records: list[WireRecord] | None = None, first_seq: int = 1) -> list[Batch]:
        recs = self.records if records is None else records
        return [Batch(self.site_id, first_seq + i, tuple(recs[k:k + size]), T0)
                for i, k in enumerate(range(0, len(recs), size))]


def club_world(n_accounts: int = 5) -> ClubModel:
    """A small club chain (sample data) whose accounts are all active and activated."""
    from dataclasses import replace
    from authz.club_model import ClubStatus
    m = sample.club_model(n_accounts=n_accounts, seed=11, now_utc_s=T0)
    accounts = [replace(a, status=ClubStatus.ACTIVE, activated=True, kind=ClubCardKind.IDENTIFIED) for a in m.accounts]
    return ClubModel(rules=m.rules, accounts=accounts, cards=m.cards)
