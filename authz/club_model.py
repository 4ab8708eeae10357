"""The club-card model: rules (rates, categories, caps), accounts, point lots, requests.

A club card is a 13-digit barcode card; several cards (a replaced plastic) may point to one
account, which holds the bonus points (as lots) and the prepaid money balance.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from .errors import ModelError
from .fuel_model import mask_card_no
from .localtime import zone
from .money import BP_WHOLE, MAX_AMOUNT_KOP

#: Largest club sale, line, payment, return or top-up: 10 million rubles. Keeps every
#: product of two amounts inside a signed 64-bit integer for the native evaluator.
MAX_SALE_KOP = 10**9
from .reasons import Reason

#: One point is one ruble.
KOP_PER_POINT = 100
#: A wildcard in the accrual rate table.
ANY = "*"


class ClubCardKind(IntEnum):
    """Identified (passport shown) and unidentified cards have different caps."""

    IDENTIFIED = 0
    UNIDENTIFIED = 1


class ClubStatus(IntEnum):
    """A blocked card or account can do nothing."""

    ACTIVE = 0
    BLOCKED = 1


@dataclass(frozen=True, slots=True)
class Category:
    """A goods category of the catalogue and whether points accrue on it / may pay for it."""

    code: str
    accrues: bool = True
    redeemable: bool = True


@dataclass(frozen=True, slots=True)
class AccrualRate:
    """A row of the accrual table: ``rate_bp`` for sales on ``channel`` paid by ``payment_method``
    (either may be ``"*"``). The first matching row in table order wins."""

    channel: str
    payment_method: str
    rate_bp: int


@dataclass(frozen=True, slots=True)
class KindCaps:
    """The caps of one card kind: most money on the card, most turnover in a calendar month."""

    balance_cap_kop: int
    turnover_cap_kop: int


def default_categories() -> tuple[Category, ...]:
    """The categories the source names, plus ordinary goods."""
    return (
        Category("shoes"), Category("clothes"), Category("accessories"), Category("toys"),
        Category("super_price", accrues=False),
        Category("hygiene", accrues=False, redeemable=False),
        Category("food", accrues=False),
        Category("baby_food", redeemable=False),
        Category("advertised", redeemable=False),
    )


@dataclass(frozen=True, slots=True)
class ClubRules:
    """Every number of the club programme, as data: rates, caps, maturity and expiry."""

    categories: tuple[Category, ...] = field(default_factory=default_categories)
    accrual_rates: tuple[AccrualRate, ...] = (AccrualRate(ANY, ANY, 1000),)
    channels: tuple[str, ...] = ("store", "cabinet", "online")
    payment_methods: tuple[str, ...] = ("cash", "bank_card", "partner_card", "club_card")
    redemption_cap_bp: int = 3000
    maturity_s: int = 3 * 86_400
    expiry_months: int = 3
    caps: Mapping[ClubCardKind, KindCaps] = field(default_factory=lambda: {
        ClubCardKind.IDENTIFIED: KindCaps(10_000_000, 100_000_000),
        ClubCardKind.UNIDENTIFIED: KindCaps(1_500_000, 4_000_000),
    })
    #: The time zone whose calendar months the turnover caps count in.
    tz: str = "Europe/Moscow"


@dataclass(frozen=True, slots=True)
class PointLot:
    """Points accrued by one transaction: spendable from ``matures_at_s``, gone at ``expires_at_s``."""

    lot_id: int
    points: int
    matures_at_s: int
    expires_at_s: int


@dataclass(frozen=True, slots=True)
class ClubAccount:
    """A club account: its kind, activation, money balance, month turnover and point lots."""

    account_id: int
    kind: ClubCardKind
    activated: bool = True
    status: ClubStatus = ClubStatus.ACTIVE
    balance_kop: int = 0
    turnover_month: int = 0  #: months since January 1970 in the rules' time zone
    turnover_kop: int = 0
    lots: tuple[PointLot, ...] = ()


@dataclass(frozen=True, slots=True)
class ClubCard:
    """A plastic club card (13-digit barcode) pointing to its account."""

    card_no: str
    account_id: int
    status: ClubStatus = ClubStatus.ACTIVE


@dataclass(frozen=True, slots=True)
class SaleLine:
    """A receipt line: SKU, catalogue category, amount in kopecks."""

    sku: str
    category: str
    amount_kop: int


@dataclass(frozen=True, slots=True)
class ClubSale:
    """A sale on a club card: its lines, time, channel and the payment method of its money part."""

    card_no: str
    lines: tuple[SaleLine, ...]
    now_utc_s: int
    channel: str = "store"
    payment_method: str = "cash"


@dataclass(frozen=True, slots=True)
class ClubPayment:
    """How a sale is paid: points, money from the card balance, other money. Must sum to the total."""

    points: int = 0
    card_balance_kop: int = 0
    money_kop: int = 0


@dataclass(frozen=True, slots=True)
class ClubQuote:
    """What a sale would give: spendable points, most redeemable, accrual with none / most redeemed."""

    reason: Reason
    total_kop: int
    points_spendable: int
    max_redeem_points: int
    accrual_points: int
    accrual_points_at_max_redeem: int
    balance_kop: int
    payments_enabled: bool


@dataclass(frozen=True, slots=True)
class ClubCommit:
    """A committed (or declined) sale: points accrued and redeemed, lots used, balances after."""

    reason: Reason
    accrued_points: int
    redeemed_points: int
    lots_used: tuple[tuple[int, int], ...]
    new_lot: PointLot | None
    balance_after_kop: int
    turnover_after_kop: int

    @property
    def approved(self) -> bool:
        """True when the sale went through."""
        return self.reason.approved


@dataclass(frozen=True, slots=True)
class ClubReturn:
    """A return of ``returned_kop`` of an earlier sale, whose figures the journal supplies."""

    card_no: str
    return_id: int
    now_utc_s: int
    sale_id: int
    sale_total_kop: int
    sale_accrued_points: int
    sale_redeemed_points: int
    sale_card_balance_kop: int
    returned_kop: int


@dataclass(frozen=True, slots=True)
class ClubReturnResult:
    """What a return did: points taken back and given back, and how the refund is paid."""

    reason: Reason
    points_taken_back: int  #: taken from the account's lots
    points_charged: int  #: already spent: their value was kept back from the refund
    points_unrecovered: int  #: already spent and more than the refund could cover
    points_given_back: int
    refund_card_balance_kop: int
    refund_money_kop: int
    balance_after_kop: int


@dataclass(frozen=True, slots=True)
class ClubTopUp:
    """Cash put on a card at a till."""

    card_no: str
    amount_kop: int
    now_utc_s: int


@dataclass(frozen=True, slots=True)
class ClubTopUpResult:
    """A top-up's decision and the balance and month turnover after it."""

    reason: Reason
    balance_after_kop: int
    turnover_after_kop: int


class ClubModel:
    """The club replica: rules, accounts and cards, validated, with id -> position maps."""

    __slots__ = ("rules", "accounts", "cards", "category_index", "account_index", "card_index",
                 "channel_index", "method_index")

    def __init__(self, *, rules: ClubRules, accounts: Iterable[ClubAccount],
                 cards: Iterable[ClubCard]) -> None:
        self.rules = rules
        self.accounts: tuple[ClubAccount, ...] = tuple(accounts)
        self.cards: tuple[ClubCard, ...] = tuple(cards)
        self.category_index = _positions((c.code for c in rules.categories), "category")
        self.channel_index = _positions(rules.channels, "channel")
        self.method_index = _positions(rules.payment_methods, "payment method")
        self.account_index = _positions((a.account_id for a in self.accounts), "account")
        self.card_index = _positions((c.card_no for c in self.cards), "club card")
        zone(rules.tz)
        if not 0 <= rules.redemption_cap_bp <= BP_WHOLE:
            raise ModelError(f"redemption cap out of range: {rules.redemption_cap_bp}")
        for r in rules.accrual_rates:
            if not 0 <= r.rate_bp <= BP_WHOLE:
                raise ModelError(f"accrual rate out of range: {r}")
        for kind in ClubCardKind:
            if kind not in rules.caps:
                raise ModelError(f"no caps for card kind {kind.name}")
        for card in self.cards:
            if card.account_id not in self.account_index:
                raise ModelError(f"club card {mask_card_no(card.card_no)} of unknown account {card.account_id}")
        for acc in self.accounts:
            if not -MAX_AMOUNT_KOP <= acc.balance_kop <= MAX_AMOUNT_KOP:
                raise ModelError(f"account {acc.account_id} balance out of range")
            for lot in acc.lots:
                if lot.points <= 0 or lot.matures_at_s > lot.expires_at_s:
                    raise ModelError(f"account {acc.account_id} has a malformed lot {lot}")


def _positions(keys: Iterable[Hashable], what: str) -> dict[Hashable, int]:
    out: dict[Hashable, int] = {}
    for i, k in enumerate(keys):
        if k in out:
            raise ModelError(f"duplicate {what} {k!r}")
        out[k] = i
    return out


@dataclass(slots=True)
class AccountState:
    """The mutable part of one account: balance, month turnover and lots (oldest first)."""

    balance_kop: int
    turnover_month: int
    turnover_kop: int
    lots: list[PointLot]


@dataclass(slots=True)
class ClubState:
    """The mutable part of the club replica: per-account balances, turnover and lots."""

    accounts: dict[int, AccountState] = field(default_factory=dict)

    @classmethod
    def from_model(cls, model: ClubModel) -> "ClubState":
        """The state as the model was loaded."""
        return cls({a.account_id: AccountState(a.balance_kop, a.turnover_month, a.turnover_kop,
                                               sorted(a.lots, key=lambda lot: (lot.expires_at_s, lot.lot_id)))
                    for a in model.accounts})
