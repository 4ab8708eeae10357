"""Club accounts on the host: what a site's committed sale, return or top-up does to the
account it names, by the rules of :mod:`authz.club`.

The site decided (its answer went to the customer), so the host applies the decision's
figures and does not decide again: a commit redeems ``redeemed_points`` oldest lot first
(spendable lots at the sale's time, :func:`authz.club.spendable_points`'s rule), adds the
accrual lot named by the sale's ``txn_no`` (spendable ``maturity_s`` later, expiring
``expiry_months`` calendar months later, :func:`authz.localtime.add_months_utc`) and takes
the card-balance part; a return takes back ``points_taken_back`` (the sale's own lot first,
then the oldest unexpired), gives back ``points_given_back`` as a lot spendable at once, and
refunds ``refund_card_balance_kop`` to the balance; a top-up adds its amount.

Records of one account can reach the host out of order (several workers, several sites,
offline spells), so the host may be asked to take points it does not hold yet. They become
``points_debt``, paid by the next lots added: the account's total points then do not depend
on the order records arrive in. A balance may go below zero (money spent offline at two
sites) or above its cap (top-ups at two sites): the ledger keeps it and reports an issue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from authz.club import spendable_points
from authz.club_model import ClubCardKind, ClubRules, PointLot
from authz.localtime import MAX_UTC_S, add_months_utc, local_date, month_index
from authz.money import MAX_AMOUNT_KOP

from .records import BodyError, get

__all__ = ["AccountBook", "apply_commit", "apply_return", "apply_topup"]


@dataclass(slots=True)
class AccountBook:
    """The mutable state of one club account while a batch is applied."""

    account_id: int
    kind: ClubCardKind
    balance_kop: int
    turnover_month: int
    turnover_kop: int
    points_debt: int
    lots: list[PointLot] = field(default_factory=list)  #: ordered oldest first: (expires_at_s, lot_id)

    def sort(self) -> None:
        self.lots.sort(key=lambda lot: (lot.expires_at_s, lot.lot_id))

    def add_lot(self, lot: PointLot) -> None:
        """Add ``lot`` (merged with a lot of the same id), paying any points debt from it first."""
        points = lot.points
        if self.points_debt:
            paid = min(self.points_debt, points)
            self.points_debt -= paid
            points -= paid
        if points <= 0:
            return
        for i, old in enumerate(self.lots):
            if old.lot_id == lot.lot_id:
                self.lots[i] = PointLot(lot.lot_id, old.points + points, old.matures_at_s, old.expires_at_s)
                return
        self.lots.append(PointLot(lot.lot_id, points, lot.matures_at_s, lot.expires_at_s))
        self.sort()

    def take(self, points: int, now_utc_s: int, *, spendable_only: bool, first_lot: int | None = None) -> int:
        """Take ``points`` oldest first (``first_lot`` before the others), from unexpired lots,
        matured ones only if ``spendable_only``; what the lots cannot give becomes debt.
        Returns the points taken from lots."""
        want = points
        order = sorted(range(len(self.lots)), key=lambda i: (self.lots[i].lot_id != first_lot, i))
        for i in order:
            if want == 0:
                break
            lot = self.lots[i]
            if now_utc_s >= lot.expires_at_s or (spendable_only and now_utc_s < lot.matures_at_s):
                continue
            n = min(want, lot.points)
            self.lots[i] = PointLot(lot.lot_id, lot.points - n, lot.matures_at_s, lot.expires_at_s)
            want -= n
        self.lots = [lot for lot in self.lots if lot.points > 0]
        self.points_debt += want
        return points - want

    def spendable(self, now_utc_s: int) -> int:
        return spendable_points(self.lots, now_utc_s)

    def count_turnover(self, rules: ClubRules, now_utc_s: int, amount_kop: int) -> None:
        """Add ``amount_kop`` to the turnover of the calendar month of ``now_utc_s`` (in the
        rules' zone); a record of an earlier month than the account's counts nowhere."""
        month = month_index(local_date(now_utc_s, rules.tz))
        if month > self.turnover_month:
            self.turnover_month, self.turnover_kop = month, amount_kop
        elif month == self.turnover_month:
            self.turnover_kop += amount_kop


def _nonneg(body: Mapping[str, Any], path: str, top: int = MAX_AMOUNT_KOP) -> int:
    v = get(body, path)
    if not 0 <= v <= top:
        raise BodyError(f"body.{path} must be in 0..{top}, got {v}")
    return v


def _time(body: Mapping[str, Any], path: str) -> int:
    return _nonneg(body, path, MAX_UTC_S)


def apply_commit(book: AccountBook, rules: ClubRules, body: Mapping[str, Any]) -> list[str]:
    """Apply a ``till.sale_committed`` body; returns issues (text) worth an operator's look."""
    now = _time(body, "sale.now_utc_s")
    redeemed = _nonneg(body, "redeemed_points")
    accrued = _nonneg(body, "accrued_points")
    from_card = _nonneg(body, "payment.card_balance_kop")
    txn_no = get(body, "txn_no")
    if redeemed:
        book.take(redeemed, now, spendable_only=True)
    if accrued:
        book.add_lot(PointLot(txn_no, accrued, now + rules.maturity_s, add_months_utc(now, rules.expiry_months)))
    issues = []
    if from_card:
        book.balance_kop -= from_card
        book.count_turnover(rules, now, from_card)
        if book.balance_kop < 0:
            issues.append(f"account {book.account_id} balance below zero: {book.balance_kop} kop")
        cap = rules.caps[book.kind].turnover_cap_kop
        if book.turnover_kop > cap:
            issues.append(f"account {book.account_id} month turnover {book.turnover_kop} kop over its cap {cap}")
    return issues


def apply_return(book: AccountBook, rules: ClubRules, body: Mapping[str, Any]) -> list[str]:
    """Apply a ``till.return`` body whose result was approved (reason OK)."""
    now = _time(body, "return.now_utc_s")
    sale_id = get(body, "return.sale_id")
    return_id = get(body, "return.return_id")
    taken = _nonneg(body, "result.points_taken_back")
    given = _nonneg(body, "result.points_given_back")
    refund = _nonneg(body, "result.refund_card_balance_kop")
    if taken:
        book.take(taken, now, spendable_only=False, first_lot=sale_id)
    if given:
        book.add_lot(PointLot(return_id, given, now, add_months_utc(now, rules.expiry_months)))
    book.balance_kop += refund
    cap = rules.caps[book.kind].balance_cap_kop
    return [f"account {book.account_id} balance {book.balance_kop} kop over its cap {cap}"] if book.balance_kop > cap else []


def apply_topup(book: AccountBook, rules: ClubRules, body: Mapping[str, Any]) -> list[str]:
    """Apply a ``till.topup`` body whose result was approved."""
    now = _time(body, "topup.now_utc_s")
    amount = _nonneg(body, "topup.amount_kop")
    book.balance_kop += amount
    book.count_turnover(rules, now, amount)
    caps = rules.caps[book.kind]
    issues = []
    if book.balance_kop > caps.balance_cap_kop:
        issues.append(f"account {book.account_id} balance {book.balance_kop} kop over its cap {caps.balance_cap_kop}")
    if book.turnover_kop > caps.turnover_cap_kop:
        issues.append(f"account {book.account_id} month turnover {book.turnover_kop} kop over its cap "
                      f"{caps.turnover_cap_kop}")
    return issues
