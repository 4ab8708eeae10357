"""The balance rule: a site's view of a balance is the host's plus its own spend the host
has not counted yet, exactly.

The host's balances and counters (a contract's balance, a fuel card's limit counters, a club
account's balance, turnover and lots) include every record of a site the host had ingested
when it cut the row. A row says how far that was with a :class:`Watermark` per site: the
site's batches 1..``batch_seq`` are in the row, later ones are not. A site that receives the
row re-applies on top of it only its own spend in records past its watermark. A row that does
not name the site has the watermark a row of the same key last named it with
(:func:`kept_watermark`; 0 if none ever did: all its spend is re-applied): the host stops
naming a site on a row only once the site holds a watermark covering all its spend on it.
This module is the readable specification of that re-application; the site's replica translates every row this
way *before* handing it to an evaluator, so the reference and the native evaluator hold the
same figures (tests/test_balance_watermark.py).

The host errs on the safe side where it cannot say exactly: a batch it applied past a gap in
a site's batch numbers is left out of the watermark (its spend is counted twice until the gap
fills, which only declines more), and so is every batch from the first one it refused.

Offline allowances (:class:`Allowance`, docs/rules.md): the host gives a site an amount of a
contract's money it may spend without the host, out of the contract's balance. The site
never lets its own uncounted spend on the contract pass it: :func:`allowed_balance` is the
balance the evaluators decide on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date

from .club_model import (
    AccountState,
    ClubAccount,
    ClubCard,
    ClubPayment,
    ClubReturn,
    ClubRules,
    ClubSale,
    ClubTopUp,
    PointLot,
)
from .errors import ModelError
from .fuel_model import FuelCard, LimitCounter, Product

__all__ = [
    "MAX_WATERMARKS",
    "Allowance",
    "ClubCommitSpend",
    "ClubReturnSpend",
    "ClubSpend",
    "FuelSpend",
    "Watermark",
    "account_after",
    "allowance_for",
    "allowed_balance",
    "balance_after",
    "check_watermarks",
    "club_card_of",
    "counters_after",
    "kept_watermark",
    "named_watermark",
    "own_watermark",
]

#: Most watermarks (sites) one row may carry.
MAX_WATERMARKS = 10_000


@dataclass(frozen=True, slots=True)
class Watermark:
    """Site ``site_id``'s batches 1..``batch_seq`` are counted in the row that carries this;
    none after."""

    site_id: str
    batch_seq: int


@dataclass(frozen=True, slots=True)
class Allowance:
    """Site ``site_id`` may spend ``amount_kop`` of the contract's money that the host has
    not counted yet (its offline allowance), until the host issues a new one."""

    site_id: str
    amount_kop: int


def own_watermark(watermarks: Iterable[Watermark], site_id: str) -> int:
    """The batch watermark of ``site_id`` among ``watermarks``: 0 when the row names it not
    (the host counted none of its spend there)."""
    for w in watermarks:
        if w.site_id == site_id:
            return w.batch_seq
    return 0


def named_watermark(watermarks: Iterable[Watermark], site_id: str) -> int | None:
    """The batch watermark of ``site_id`` among ``watermarks``, None when the row names it not."""
    for w in watermarks:
        if w.site_id == site_id:
            return w.batch_seq
    return None


def kept_watermark(watermarks: Iterable[Watermark], site_id: str, kept: int) -> int:
    """The watermark a site uses for a row: the one the row names it with, else ``kept``,
    the last one a row of the same key named it with (0: never). The host stops naming a
    site on a row only once the site holds a watermark for it that covers all its spend on
    it (host.watermarks.prune_spenders), so a missing watermark is an unchanged one."""
    named = named_watermark(watermarks, site_id)
    return kept if named is None else named


def allowance_for(allowances: Iterable[Allowance], site_id: str) -> int | None:
    """``site_id``'s allowance among ``allowances``: its own, else the ``"*"`` one (every site
    not named); None when there is neither (no cap)."""
    anyone = None
    for a in allowances:
        if a.site_id == site_id:
            return a.amount_kop
        if a.site_id == "*":
            anyone = a.amount_kop
    return anyone


def check_watermarks(watermarks: tuple[Watermark, ...], what: str) -> None:
    """A ModelError unless ``watermarks`` names each site once, with a batch number >= 0."""
    if len(watermarks) > MAX_WATERMARKS:
        raise ModelError(f"{what} carries {len(watermarks)} watermarks, more than {MAX_WATERMARKS}")
    seen: set[str] = set()
    for w in watermarks:
        if not isinstance(w, Watermark) or type(w.batch_seq) is not int or w.batch_seq < 0:
            raise ModelError(f"{what} has a malformed watermark {w!r}")
        if w.site_id in seen:
            raise ModelError(f"{what} names site {w.site_id!r} in two watermarks")
        seen.add(w.site_id)


# -- fuel -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FuelSpend:
    """One completed delivery of this site, as its journal records it: journal ``seq``, the
    card and contract, the product, what was charged and the authorization's local day."""

    seq: int
    contract_id: int
    card_no: str
    product: str
    amount_kop: int
    volume_ml: int
    local_day: date  #: the authorization's day in the contract's time zone


def balance_after(host_balance_kop: int, spends: Iterable[FuelSpend]) -> int:
    """The host's balance less the amounts of ``spends`` (this site's deliveries on the
    contract past its watermark)."""
    return host_balance_kop - sum(s.amount_kop for s in spends)


def counters_after(card: FuelCard, host_counters: Iterable[tuple[int, LimitCounter]],
                   products: Mapping[str, Product], spends: Iterable[FuelSpend]) -> tuple[tuple[int, LimitCounter], ...]:
    """The card's counters: the host's, with ``spends`` (this site's deliveries on the card
    past its watermark, in journal order) counted by the rule of :func:`authz.fuel.complete`
    (:func:`authz.fuel.count_delivery`). A delivery of a product this replica does not know
    counts on no limit (the host does the same)."""
    from .fuel import count_delivery
    counters = dict(host_counters)
    for s in spends:
        product = products.get(s.product)
        if product is None:
            continue
        for limit_id, counter in count_delivery(card, product, s.local_day, counters.get, s.volume_ml, s.amount_kop):
            counters[limit_id] = counter
    return tuple(sorted(counters.items()))


def allowed_balance(balance_kop: int, credit_line_kop: int, allowance_kop: int | None, own_unacked_kop: int) -> int:
    """The balance the evaluators decide on: the site's view ``balance_kop`` (the host's less
    ``own_unacked_kop``, this site's uncounted spend), but never more than the site's offline
    allowance leaves: spend past the watermark may not exceed ``allowance_kop``. So
    ``own_unacked_kop + (what may still be approved) <= allowance_kop``. No allowance: the
    view as it is."""
    if allowance_kop is None:
        return balance_kop
    return min(balance_kop, allowance_kop - own_unacked_kop - credit_line_kop)


# -- club -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ClubCommitSpend:
    """An approved sale of this site as journaled (``till.sale_committed``): the sale, its
    payment, its txn number (the accrual lot's id) and the points the decision accrued. A
    declined sale is journaled as ``till.sale_declined`` and is no spend."""

    sale: ClubSale
    payment: ClubPayment
    txn_no: int
    accrued_points: int = 0


@dataclass(frozen=True, slots=True)
class ClubReturnSpend:
    """An approved return of this site as journaled (``till.return`` whose result is ``OK``):
    the return and what its decision did (points taken back, points given back, kopecks put
    back on the card). A declined return changed nothing and is no spend."""

    ret: ClubReturn
    points_taken_back: int
    points_given_back: int
    refund_card_kop: int


#: An approved club operation of this site: a commit, a return, or a top-up (an approved
#: ``till.topup``; a declined one is no spend).
ClubSpend = ClubCommitSpend | ClubReturnSpend | ClubTopUp


def club_card_of(op: ClubSpend) -> str:
    """The club card ``op`` was made on."""
    if isinstance(op, ClubCommitSpend):
        return op.sale.card_no
    if isinstance(op, ClubReturnSpend):
        return op.ret.card_no
    return op.card_no


def account_after(rules: ClubRules, account: ClubAccount, cards: tuple[ClubCard, ...],
                  spends: Iterable[ClubSpend]) -> ClubAccount:
    """The host's ``account`` (with ``cards``) after this site's approved commits, returns and
    top-ups past its watermark (in journal order), each applied with the figures its decision
    had, exactly as the host applies them when it ingests the records (:mod:`host.club`): the
    site decided (its answer went to the customer), so an operation is never decided again
    here. An approved one counts once whatever the host's figures are now (a balance another
    site lowered, a card blocked since); a declined one is not a :data:`ClubSpend` and never
    counts. An operation on a card not of this account changes nothing.

    A commit redeems its ``payment.points`` oldest spendable lot first, adds its accrual lot
    and takes its card-balance part; a return takes back its points (the sale's own lot
    first), gives back its points as a lot spendable at once and puts its refund on the
    balance; a top-up adds its amount. Money moves count on the month's turnover of the
    operation's month (one of an earlier month than the account's counts nowhere). Points the
    lots cannot give are not taken (the host keeps them as a debt the next lots pay)."""
    from .club import _add_lot, _take_points
    from .localtime import add_months_utc, local_date, month_index
    mine = {c.card_no for c in cards if c.account_id == account.account_id}
    now = AccountState(account.balance_kop, account.turnover_month, account.turnover_kop, list(account.lots))

    def turnover(at_utc_s: int, amount_kop: int) -> None:
        month = month_index(local_date(at_utc_s, rules.tz))
        if month > now.turnover_month:
            now.turnover_month, now.turnover_kop = month, amount_kop
        elif month == now.turnover_month:
            now.turnover_kop += amount_kop

    for op in spends:
        if club_card_of(op) not in mine:
            continue
        if isinstance(op, ClubCommitSpend):
            at = op.sale.now_utc_s
            if op.payment.points:
                _take_points(now, op.payment.points, at, spendable_only=True)
            if op.accrued_points:
                _add_lot(now, PointLot(op.txn_no, op.accrued_points, at + rules.maturity_s,
                                       add_months_utc(at, rules.expiry_months)))
            if op.payment.card_balance_kop:
                now.balance_kop -= op.payment.card_balance_kop
                turnover(at, op.payment.card_balance_kop)
        elif isinstance(op, ClubReturnSpend):
            ret = op.ret
            if op.points_taken_back:
                _take_points(now, op.points_taken_back, ret.now_utc_s, spendable_only=False, first_lot=ret.sale_id)
            if op.points_given_back:
                _add_lot(now, PointLot(ret.return_id, op.points_given_back, ret.now_utc_s,
                                       add_months_utc(ret.now_utc_s, rules.expiry_months)))
            now.balance_kop += op.refund_card_kop
        elif isinstance(op, ClubTopUp):
            now.balance_kop += op.amount_kop
            turnover(op.now_utc_s, op.amount_kop)
    return replace(account, balance_kop=now.balance_kop, turnover_month=now.turnover_month,
                   turnover_kop=now.turnover_kop, lots=tuple(now.lots))
