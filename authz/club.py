"""The reference club rules: quote, commit, return and top-up on a club card.

The readable specification of every club rule in docs/rules.md; the native evaluator must
give the same answers. Functions read the model and read/change the :class:`ClubState`
(only an approved commit, return or top-up changes it).
"""

from __future__ import annotations

from .club_model import (ANY, KOP_PER_POINT, MAX_SALE_KOP, AccountState, ClubAccount, ClubCard, ClubCommit,
                         ClubModel, ClubPayment, ClubQuote, ClubReturn, ClubReturnResult, ClubSale,
                         ClubState, ClubStatus, ClubTopUp, ClubTopUpResult, PointLot, SaleLine)
from .errors import RequestError
from .fuel_model import mask_card_no
from .localtime import MAX_UTC_S, add_months_utc, local_date, month_index
from .money import BP_WHOLE
from .reasons import Reason

#: Largest transaction id: ids are signed 64-bit integers.
MAX_ID = 2**63 - 1


class SaleTotals:
    """A sale's lines summed by what the rules need: all, accruing, redeemable, both."""

    __slots__ = ("total", "accruing", "redeemable", "both")

    def __init__(self, model: ClubModel, sale: ClubSale) -> None:
        if not isinstance(sale.lines, tuple) or not sale.lines:
            raise RequestError("a sale needs at least one line")
        self.total = self.accruing = self.redeemable = self.both = 0
        for n, line in enumerate(sale.lines, 1):
            if not isinstance(line, SaleLine):
                raise RequestError(f"line {n} is not a sale line: {type(line).__name__}")
            if type(line.category) is not str:
                raise RequestError(f"line {n} category must be text, got {type(line.category).__name__}")
            if not line.category:
                raise RequestError(f"line {n} has no category")
            ci = model.category_index.get(line.category)
            if ci is None:
                raise RequestError(f"line {n} has unknown category {line.category!r}")
            _check_int(f"line {n} amount_kop", line.amount_kop, 0, MAX_SALE_KOP)
            cat = model.rules.categories[ci]
            self.total += line.amount_kop
            if cat.accrues:
                self.accruing += line.amount_kop
            if cat.redeemable:
                self.redeemable += line.amount_kop
            if cat.accrues and cat.redeemable:
                self.both += line.amount_kop
        if self.total > MAX_SALE_KOP:
            raise RequestError(f"sale total {self.total} kop is over {MAX_SALE_KOP}")


def quote(model: ClubModel, state: ClubState, sale: ClubSale) -> ClubQuote:
    """What the sale would give: spendable points, most redeemable, accrual either way."""
    _check_type(sale, ClubSale)
    card, account = _resolve(model, sale.card_no)
    _check_time(sale.now_utc_s)
    totals = SaleTotals(model, sale)
    rate = accrual_rate_bp(model, sale.channel, sale.payment_method)
    if _blocked(card, account):
        return ClubQuote(Reason.CARD_BLOCKED, totals.total, 0, 0, 0, 0, 0, False)
    acc = state.accounts[account.account_id]
    spendable = spendable_points(acc.lots, sale.now_utc_s)
    most = min(spendable, redemption_cap_points(model, totals))
    return ClubQuote(Reason.OK, totals.total, spendable, most,
                     accrual_points(totals, 0, rate), accrual_points(totals, most, rate),
                     acc.balance_kop, account.activated)


def commit(model: ClubModel, state: ClubState, sale: ClubSale, payment: ClubPayment,
           txn_id: int) -> ClubCommit:
    """Commit the sale paid by ``payment``: redeem points oldest lot first, pay from the card
    balance, accrue points on the money-paid part as a new lot named ``txn_id``."""
    _check_type(sale, ClubSale)
    _check_type(payment, ClubPayment)
    card, account = _resolve(model, sale.card_no)
    _check_time(sale.now_utc_s)
    totals = SaleTotals(model, sale)
    rate = accrual_rate_bp(model, sale.channel, sale.payment_method)
    _check_int("txn_id", txn_id, 0, MAX_ID)
    _check_int("points", payment.points, 0, MAX_SALE_KOP // KOP_PER_POINT)
    _check_int("card_balance_kop", payment.card_balance_kop, 0, MAX_SALE_KOP)
    _check_int("money_kop", payment.money_kop, 0, MAX_SALE_KOP)
    paid = payment.points * KOP_PER_POINT + payment.card_balance_kop + payment.money_kop
    if paid != totals.total:
        raise RequestError(f"payments add up to {paid} kop, the sale is {totals.total} kop")
    acc = state.accounts[account.account_id]
    month = month_index(local_date(sale.now_utc_s, model.rules.tz))
    turnover = acc.turnover_kop if acc.turnover_month >= month else 0

    def decline(reason: Reason) -> ClubCommit:
        return ClubCommit(reason, 0, 0, (), None, acc.balance_kop, turnover)

    if _blocked(card, account):
        return decline(Reason.CARD_BLOCKED)
    if payment.points > redemption_cap_points(model, totals):
        return decline(Reason.REDEMPTION_CAP)
    if payment.points > spendable_points(acc.lots, sale.now_utc_s):
        return decline(Reason.INSUFFICIENT_POINTS)
    if payment.card_balance_kop > 0:
        if not account.activated:
            return decline(Reason.CARD_NOT_ACTIVATED)
        if payment.card_balance_kop > acc.balance_kop:
            return decline(Reason.INSUFFICIENT_FUNDS)
        if turnover + payment.card_balance_kop > model.rules.caps[account.kind].turnover_cap_kop:
            return decline(Reason.TURNOVER_CAP)

    used = _take_points(acc, payment.points, sale.now_utc_s, spendable_only=True)
    accrued = accrual_points(totals, payment.points, rate)
    new_lot = None
    if accrued:
        new_lot = PointLot(txn_id, accrued, sale.now_utc_s + model.rules.maturity_s,
                           add_months_utc(sale.now_utc_s, model.rules.expiry_months))
        _add_lot(acc, new_lot)
    acc.balance_kop -= payment.card_balance_kop
    acc.turnover_month = max(acc.turnover_month, month)
    acc.turnover_kop = turnover + payment.card_balance_kop
    return ClubCommit(Reason.OK, accrued, payment.points, tuple(used), new_lot, acc.balance_kop,
                      acc.turnover_kop)


def return_sale(model: ClubModel, state: ClubState, ret: ClubReturn) -> ClubReturnResult:
    """Return part or all of an earlier sale.

    The returned share (returned / sale total, rounded down) of the sale's accrual is taken
    back (from the sale's own lot first, then oldest first; points already spent are charged
    against the refund), the same share of the redeemed points is given back as a new lot
    that is spendable at once, and of the card-balance part back to the card balance; the
    rest is refunded as money; what the card balance cannot take under its cap is refunded
    as money too.
    """
    _check_type(ret, ClubReturn)
    card, account = _resolve(model, ret.card_no)
    _check_time(ret.now_utc_s)
    _check_int("return_id", ret.return_id, 0, MAX_ID)
    _check_int("sale_id", ret.sale_id, 0, MAX_ID)
    _check_int("sale_total_kop", ret.sale_total_kop, 1, MAX_SALE_KOP)
    _check_int("returned_kop", ret.returned_kop, 1, ret.sale_total_kop)
    _check_int("sale_accrued_points", ret.sale_accrued_points, 0, ret.sale_total_kop)
    _check_int("sale_redeemed_points", ret.sale_redeemed_points, 0, ret.sale_total_kop // KOP_PER_POINT)
    _check_int("sale_card_balance_kop", ret.sale_card_balance_kop, 0,
               ret.sale_total_kop - ret.sale_redeemed_points * KOP_PER_POINT)
    acc = state.accounts[account.account_id]
    if _blocked(card, account):
        return ClubReturnResult(Reason.CARD_BLOCKED, 0, 0, 0, 0, 0, 0, acc.balance_kop)

    share, whole = ret.returned_kop, ret.sale_total_kop
    take = ret.sale_accrued_points * share // whole
    give = ret.sale_redeemed_points * share // whole
    refund_card = ret.sale_card_balance_kop * share // whole
    refund_money = ret.returned_kop - give * KOP_PER_POINT - refund_card

    taken = sum(p for _, p in _take_points(acc, take, ret.now_utc_s, spendable_only=False,
                                           first_lot=ret.sale_id))
    short = take - taken
    charged = min(short, (refund_money + refund_card) // KOP_PER_POINT)
    from_money = min(refund_money, charged * KOP_PER_POINT)
    refund_money -= from_money
    refund_card -= charged * KOP_PER_POINT - from_money
    room = max(0, model.rules.caps[account.kind].balance_cap_kop - acc.balance_kop)
    if refund_card > room:
        refund_money += refund_card - room
        refund_card = room
    if give:
        _add_lot(acc, PointLot(ret.return_id, give, ret.now_utc_s,
                               add_months_utc(ret.now_utc_s, model.rules.expiry_months)))
    acc.balance_kop += refund_card
    return ClubReturnResult(Reason.OK, taken, charged, short - charged, give, refund_card,
                            refund_money, acc.balance_kop)


def top_up(model: ClubModel, state: ClubState, req: ClubTopUp) -> ClubTopUpResult:
    """Put cash on the card if the balance cap and the month's turnover cap of its kind allow."""
    _check_type(req, ClubTopUp)
    card, account = _resolve(model, req.card_no)
    _check_time(req.now_utc_s)
    _check_int("amount_kop", req.amount_kop, 1, MAX_SALE_KOP)
    acc = state.accounts[account.account_id]
    month = month_index(local_date(req.now_utc_s, model.rules.tz))
    turnover = acc.turnover_kop if acc.turnover_month >= month else 0
    caps = model.rules.caps[account.kind]
    reason = Reason.OK
    if _blocked(card, account):
        reason = Reason.CARD_BLOCKED
    elif not account.activated:
        reason = Reason.CARD_NOT_ACTIVATED
    elif acc.balance_kop + req.amount_kop > caps.balance_cap_kop:
        reason = Reason.BALANCE_CAP
    elif turnover + req.amount_kop > caps.turnover_cap_kop:
        reason = Reason.TURNOVER_CAP
    if reason is not Reason.OK:
        return ClubTopUpResult(reason, acc.balance_kop, turnover)
    acc.balance_kop += req.amount_kop
    acc.turnover_month = max(acc.turnover_month, month)
    acc.turnover_kop = turnover + req.amount_kop
    return ClubTopUpResult(Reason.OK, acc.balance_kop, acc.turnover_kop)


def accrual_rate_bp(model: ClubModel, channel: str, payment_method: str) -> int:
    """The rate of the first accrual-table row matching channel and method (0 if none)."""
    if type(channel) is not str or channel not in model.channel_index:
        raise RequestError(f"unknown channel {channel!r}")
    if type(payment_method) is not str or payment_method not in model.method_index:
        raise RequestError(f"unknown payment method {payment_method!r}")
    for row in model.rules.accrual_rates:
        if row.channel in (channel, ANY) and row.payment_method in (payment_method, ANY):
            return row.rate_bp
    return 0


def redemption_cap_points(model: ClubModel, totals: SaleTotals) -> int:
    """Most points the redeemable lines allow: 30% of their total, in whole points, rounded down."""
    return totals.redeemable * model.rules.redemption_cap_bp // (BP_WHOLE * KOP_PER_POINT)


def accrual_points(totals: SaleTotals, points_redeemed: int, rate_bp: int) -> int:
    """Points accrued on the money-paid part of the accruing lines, rounded down.

    Redeemed points are spread over the redeemable lines in proportion to their amounts;
    the part that falls on accruing lines (rounded up) is not money and earns nothing.
    """
    on_accruing = 0
    if points_redeemed and totals.redeemable:
        on_accruing = -(-points_redeemed * KOP_PER_POINT * totals.both // totals.redeemable)
    return (totals.accruing - on_accruing) * rate_bp // (BP_WHOLE * KOP_PER_POINT)


def spendable_points(lots: list[PointLot], now_utc_s: int) -> int:
    """Points of the lots that have matured and not yet expired at ``now_utc_s``."""
    return sum(lot.points for lot in lots if lot.matures_at_s <= now_utc_s < lot.expires_at_s)


def _take_points(acc: AccountState, points: int, now_utc_s: int, *, spendable_only: bool,
                 first_lot: int | None = None) -> list[tuple[int, int]]:
    """Take up to ``points`` from the lots, oldest first (``first_lot`` before all others);
    unexpired lots only, and matured ones only when ``spendable_only``. Returns (lot, points)."""
    order = sorted(range(len(acc.lots)), key=lambda i: (acc.lots[i].lot_id != first_lot, i))
    used: list[tuple[int, int]] = []
    for i in order:
        if points == 0:
            break
        lot = acc.lots[i]
        if now_utc_s >= lot.expires_at_s or (spendable_only and now_utc_s < lot.matures_at_s):
            continue
        n = min(points, lot.points)
        if n:
            acc.lots[i] = PointLot(lot.lot_id, lot.points - n, lot.matures_at_s, lot.expires_at_s)
            used.append((lot.lot_id, n))
            points -= n
    acc.lots[:] = [lot for lot in acc.lots if lot.points > 0]
    return used


def _add_lot(acc: AccountState, lot: PointLot) -> None:
    """Insert ``lot`` keeping the lots ordered oldest first: by expiry, then id."""
    key = (lot.expires_at_s, lot.lot_id)
    i = len(acc.lots)
    while i > 0 and (acc.lots[i - 1].expires_at_s, acc.lots[i - 1].lot_id) > key:
        i -= 1
    acc.lots.insert(i, lot)


def _resolve(model: ClubModel, card_no: str) -> tuple[ClubCard, ClubAccount]:
    i = model.card_index.get(card_no) if isinstance(card_no, str) else None
    if i is None:
        raise RequestError(f"unknown club card {mask_card_no(card_no)}")
    card = model.cards[i]
    return card, model.accounts[model.account_index[card.account_id]]


def _blocked(card: ClubCard, account: ClubAccount) -> bool:
    return card.status is ClubStatus.BLOCKED or account.status is ClubStatus.BLOCKED


def _check_type(obj: object, cls: type) -> None:
    if not isinstance(obj, cls):
        raise RequestError(f"expected a {cls.__name__}, got {type(obj).__name__}")


def _check_time(now_utc_s: int) -> None:
    _check_int("now_utc_s", now_utc_s, 0, MAX_UTC_S)


def _check_int(name: str, value: int, low: int, high: int) -> None:
    if type(value) is not int or not low <= value <= high:
        raise RequestError(f"{name} must be a whole number in {low}..{high}, got {value!r}")


__all__ = ["quote", "commit", "return_sale", "top_up", "accrual_rate_bp", "accrual_points",
           "redemption_cap_points", "spendable_points", "SaleTotals"]
