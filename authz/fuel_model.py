"""The fuel-card model: products, stations, contracts, tariffs, cards, limits, requests.

Model values are frozen dataclasses. A :class:`FuelModel` is the replica the evaluator
decides against; its tuples also fix the *positions* (indexes) that batch requests use.
Mutable state (contract balances and limit counters) lives in :class:`FuelState`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import IntEnum
from typing import TYPE_CHECKING, TypeVar

from .errors import ModelError
from .localtime import zone
from .money import BP_WHOLE, MAX_AMOUNT_KOP, MAX_PRICE_KOP_PER_L, MAX_VOLUME_ML
from .reasons import Reason

_T = TypeVar("_T")
_K = TypeVar("_K", bound=Hashable)

if TYPE_CHECKING:
    from .balance import Allowance, Watermark


class ProductGroup(IntEnum):
    """What a product is; cards list the groups they may buy, stations the groups they sell."""

    FUEL = 0
    CAR_WASH = 1
    HOTEL = 2
    SERVICE = 3
    SHOP = 4


class CardKind(IntEnum):
    """Plastic cards are read over PC/SC; virtual ones are identified by number and holder."""

    PLASTIC = 0
    VIRTUAL = 1


class CardStatus(IntEnum):
    """A blocked card is refused everywhere."""

    ACTIVE = 0
    BLOCKED = 1


class LimitUnit(IntEnum):
    """A limit counts money (kopecks), volume (millilitres) or purchases (each completed
    delivery of more than nothing counts one)."""

    KOPECKS = 0
    MILLILITRES = 1
    PURCHASES = 2


class Period(IntEnum):
    """The period a limit's counter runs over; it rolls over at local midnight.

    Weeks start on Monday; months, quarters (January, April, July, October) and years are
    calendar ones, all in the contract's time zone. Values are stable (journaled, on cards).
    """

    TRANSACTION = 0
    DAY = 1
    WEEK = 2
    MONTH = 3
    LIFETIME = 4
    QUARTER = 5
    YEAR = 6


class Scope(IntEnum):
    """Which products a limit covers: all, one product group, or one product."""

    ALL = 0
    GROUP = 1
    PRODUCT = 2


class OnBreach(IntEnum):
    """What a broken rule does: decline the purchase, or approve it as if the rule were not
    there and raise an exception (journaled with the decision, synced, an alert at the host)."""

    DECLINE = 0
    ALERT = 1


class StationScope(IntEnum):
    """Where a card may buy: the whole network, the contract's home region only, or only the
    stations listed on the card."""

    NETWORK = 0
    HOME_REGION = 1
    LISTED = 2


#: Minutes in a day: a time window's end may be 1440 (midnight at the end of the day).
DAY_MINUTES = 1440


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """When a card may buy: on ``days`` (0 Monday .. 6 Sunday) from ``start_min`` to
    ``end_min`` minutes after local midnight (start inclusive, end exclusive), in the
    contract's time zone.

    ``end_min`` < ``start_min`` crosses midnight: the window opens on one of ``days`` and
    closes the next morning (22:00-06:00 on Friday covers Friday 22:00 to Saturday 06:00).
    ``end_min`` is 1..1440 and never equals ``start_min`` (a window of zero length).
    """

    days: frozenset[int]
    start_min: int
    end_min: int

    def contains(self, weekday: int, minute: int) -> bool:
        """Is local ``minute`` (0..1439) of a day with ``weekday`` (0 Monday) inside?"""
        if self.start_min < self.end_min:
            return weekday in self.days and self.start_min <= minute < self.end_min
        return ((weekday in self.days and minute >= self.start_min)
                or ((weekday - 1) % 7 in self.days and minute < self.end_min))


class Tariff(IntEnum):
    """The contract's tariff; its discounts are rows of the discount table."""

    REGIONAL = 0
    REGIONAL_PLUS = 1
    TRANSIT = 2
    TRANSIT_OPTIMAL = 3
    TRANSIT_OPTIMAL_PLUS = 4
    FUEL_ONLINE = 5


class DiscountWhere(IntEnum):
    """Where a discount row applies."""

    HOME_REGION = 0  #: stations in the contract's home region
    CHOSEN_STATIONS = 1  #: the (up to three) stations the client chose (Regional+)
    NETWORK = 2  #: every station


class DiscountKind(IntEnum):
    """A discount is a fixed kopecks-per-litre amount or a percentage in basis points."""

    KOP_PER_L = 0
    PERCENT_BP = 1


@dataclass(frozen=True, slots=True)
class Product:
    """A product sold at stations: a fuel grade (priced per litre) or another good/service
    (priced per unit; quantities are then in thousandths of a unit, like millilitres)."""

    code: str
    name: str
    group: ProductGroup


@dataclass(frozen=True, slots=True)
class Station:
    """A filling station: its region, the product groups it sells and its list prices."""

    station_id: int
    region: int
    groups: frozenset[ProductGroup]
    prices_kop_per_l: Mapping[str, int]
    #: The largest volume one transaction may dispense when no preset is given.
    max_fill_ml: int = 1_000_000


@dataclass(frozen=True, slots=True)
class DiscountRule:
    """One row of the tariff table: a discount for ``tariff`` x ``product`` at ``where``."""

    tariff: Tariff
    product: str
    where: DiscountWhere
    kind: DiscountKind
    value: int


@dataclass(frozen=True, slots=True)
class Contract:
    """A company's contract: its cards share the prepaid balance (plus a credit line)."""

    contract_id: int
    tz: str
    home_region: int
    tariff: Tariff
    balance_kop: int
    credit_line_kop: int = 0
    chosen_station_ids: tuple[int, ...] = ()
    #: how far the host had counted each site's spend in ``balance_kop`` (:mod:`authz.balance`;
    #: the evaluators ignore it: a site's replica translates the balance before loading it)
    watermarks: tuple[Watermark, ...] = ()
    #: the sites' offline allowances out of this contract (:class:`authz.balance.Allowance`;
    #: site ``"*"``: every site not named); none: no allowance caps the sites
    allowances: tuple[Allowance, ...] = ()


@dataclass(frozen=True, slots=True)
class Limit:
    """A limit set by the fleet manager: ``amount`` of ``unit`` per ``period`` on ``scope``.

    A litre limit counts only products of the FUEL group, even with scope ALL (other
    products are not measured in litres).
    """

    limit_id: int
    unit: LimitUnit
    period: Period
    amount: int
    scope: Scope = Scope.ALL
    group: ProductGroup | None = None
    product: str | None = None
    #: DECLINE: the limit bounds the answer; ALERT: it never bounds it, and an answer that
    #: goes past it raises an exception instead
    on_breach: OnBreach = OnBreach.DECLINE

    def covers(self, product: Product) -> bool:
        """Does this limit count purchases of ``product``?"""
        if self.unit is LimitUnit.MILLILITRES and product.group is not ProductGroup.FUEL:
            return False
        if self.scope is Scope.GROUP:
            return product.group == self.group
        if self.scope is Scope.PRODUCT:
            return product.code == self.product
        return True


@dataclass(frozen=True, slots=True)
class LimitCounter:
    """What a limit has spent in the period that started on local day ``period_start``."""

    spent: int
    period_start: int


@dataclass(frozen=True, slots=True)
class FuelCard:
    """A fuel card: its contract, kind, status, expiry, the groups it may buy, its limits,
    and the fleet manager's controls (allowed products, time windows, stations).

    ``on_breach`` says what a purchase outside ``products``, ``windows`` or the station
    restriction does (decline, or approve and alert); each limit has its own.
    """

    card_no: str
    contract_id: int
    expires_on: date  #: last valid local day, in the contract's time zone
    groups: frozenset[ProductGroup]
    limits: tuple[Limit, ...] = ()
    kind: CardKind = CardKind.PLASTIC
    status: CardStatus = CardStatus.ACTIVE
    #: None: every product of ``groups``; otherwise only these product codes (each of a
    #: group in ``groups``; never empty)
    products: frozenset[str] | None = None
    #: empty: any time; otherwise the purchase's local time must be inside one of them
    windows: tuple[TimeWindow, ...] = ()
    station_scope: StationScope = StationScope.NETWORK
    #: the allowed stations when ``station_scope`` is LISTED (never empty then; empty otherwise)
    station_ids: frozenset[int] = frozenset()
    on_breach: OnBreach = OnBreach.DECLINE


@dataclass(frozen=True, slots=True)
class FuelRequest:
    """Ask how much ``card_no`` may buy of ``product`` at ``station_id`` at ``now_utc_s``.

    At most one preset: a volume or an amount. Without one, the station's largest fill caps
    the answer.
    """

    card_no: str
    station_id: int
    product: str
    now_utc_s: int
    preset_volume_ml: int | None = None
    preset_amount_kop: int | None = None


@dataclass(frozen=True, slots=True)
class RuleException:
    """A rule with ``OnBreach.ALERT`` that an approved answer breaks: ``reason`` says which
    kind of rule (PRODUCT_NOT_ALLOWED, STATION_NOT_ALLOWED, OUTSIDE_TIME_WINDOW, or
    LIMIT / LIMIT_EXHAUSTED for a limit, named by ``limit_id``)."""

    reason: Reason
    limit_id: int | None = None


@dataclass(frozen=True, slots=True)
class FuelDecision:
    """The largest volume and amount allowed, at which unit price, and what bound it.

    ``exceptions`` lists the alerting rules the answer breaks, in the order the rules are
    checked (card rules first, then limits in card order); empty when none.
    """

    reason: Reason
    volume_ml: int
    amount_kop: int
    unit_price_kop_per_l: int
    list_price_kop_per_l: int
    binding_limit_id: int | None = None
    exceptions: tuple[RuleException, ...] = ()

    @property
    def approved(self) -> bool:
        """True when some volume may be dispensed."""
        return self.reason.approved


@dataclass(frozen=True, slots=True)
class FuelCompletion:
    """A completed delivery: what it cost, the counters and balance after, what was unused."""

    volume_ml: int
    amount_kop: int
    counters_after: tuple[tuple[int, LimitCounter], ...]
    balance_after_kop: int
    released_volume_ml: int
    released_amount_kop: int


def _unique(items: Iterable[_T], key: Callable[[_T], _K], what: str) -> dict[_K, _T]:
    out: dict[_K, _T] = {}
    for item in items:
        k = key(item)
        if k in out:
            raise ModelError(f"duplicate {what} {k!r}")
        out[k] = item
    return out


class FuelModel:
    """The fuel replica: every table the evaluator reads, validated, with id -> position maps.

    ``counters`` holds the limit counters known at load time, keyed by (card_no, limit_id);
    a missing counter means nothing spent yet.
    """

    __slots__ = ("products", "stations", "contracts", "cards", "discounts", "stop_list",
                 "counters", "product_index", "station_index", "contract_index", "card_index",
                 "discount_index")

    def __init__(self, *, products: Iterable[Product], stations: Iterable[Station],
                 contracts: Iterable[Contract], cards: Iterable[FuelCard],
                 discounts: Iterable[DiscountRule] = (), stop_list: Iterable[str] = (),
                 counters: Mapping[tuple[str, int], LimitCounter] | None = None) -> None:
        self.products: tuple[Product, ...] = tuple(products)
        self.stations: tuple[Station, ...] = tuple(stations)
        self.contracts: tuple[Contract, ...] = tuple(contracts)
        self.cards: tuple[FuelCard, ...] = tuple(cards)
        self.discounts: tuple[DiscountRule, ...] = tuple(discounts)
        self.stop_list: frozenset[str] = frozenset(stop_list)
        self.counters: dict[tuple[str, int], LimitCounter] = dict(counters or {})
        self.product_index = {c: i for i, c in enumerate(_unique(self.products, lambda p: p.code, "product"))}
        self.station_index = {s: i for i, s in enumerate(_unique(self.stations, lambda s: s.station_id, "station"))}
        self.contract_index = {c: i for i, c in enumerate(_unique(self.contracts, lambda c: c.contract_id, "contract"))}
        self.card_index = {c: i for i, c in enumerate(_unique(self.cards, lambda c: c.card_no, "card"))}
        self._validate()
        self.discount_index: dict[tuple[Tariff, str], tuple[DiscountRule, ...]] = {}
        for d in self.discounts:
            self.discount_index[(d.tariff, d.product)] = self.discount_index.get((d.tariff, d.product), ()) + (d,)

    def _validate(self) -> None:
        for st in self.stations:
            for code, price in st.prices_kop_per_l.items():
                if code not in self.product_index:
                    raise ModelError(f"station {st.station_id} prices unknown product {code!r}")
                if not 0 <= price <= MAX_PRICE_KOP_PER_L:
                    raise ModelError(f"station {st.station_id} price of {code} out of range: {price}")
            if not 0 < st.max_fill_ml <= MAX_VOLUME_ML:
                raise ModelError(f"station {st.station_id} max_fill_ml out of range: {st.max_fill_ml}")
        for c in self.contracts:
            zone(c.tz)
            if len(c.chosen_station_ids) > 3:
                raise ModelError(f"contract {c.contract_id} chose more than three stations")
            for sid in c.chosen_station_ids:
                if sid not in self.station_index:
                    raise ModelError(f"contract {c.contract_id} chose unknown station {sid}")
            if abs(c.balance_kop) > MAX_AMOUNT_KOP or not 0 <= c.credit_line_kop <= MAX_AMOUNT_KOP:
                raise ModelError(f"contract {c.contract_id} balance or credit line out of range")
        for d in self.discounts:
            if d.product not in self.product_index:
                raise ModelError(f"discount for unknown product {d.product!r}")
            top = BP_WHOLE if d.kind is DiscountKind.PERCENT_BP else MAX_PRICE_KOP_PER_L
            if not 0 <= d.value <= top:
                raise ModelError(f"discount value out of range: {d}")
        for card in self.cards:
            if card.contract_id not in self.contract_index:
                raise ModelError(f"card {mask_card_no(card.card_no)} of unknown contract {card.contract_id}")
            check_card_rules(card, self.product_index, self.products, self.station_index)

    def card(self, card_no: str) -> FuelCard:
        """The card ``card_no``, or a RequestError."""
        from .errors import RequestError
        try:
            return self.cards[self.card_index[card_no]]
        except (KeyError, TypeError):
            raise RequestError(f"unknown card {mask_card_no(card_no)}") from None


def check_card_rules(card: FuelCard, product_index: Mapping[str, int], products: tuple[Product, ...],
                     station_index: Mapping[int, int]) -> None:
    """Refuse (ModelError naming the rule) limits and controls of ``card`` that contradict
    each other or cannot be satisfied: the one check of the replica and of the host's
    master data."""
    who = f"card {mask_card_no(card.card_no)}"
    seen = set()
    for lim in card.limits:
        if lim.limit_id in seen:
            raise ModelError(f"{who} repeats limit id {lim.limit_id}")
        seen.add(lim.limit_id)
        if not 0 <= lim.amount <= MAX_AMOUNT_KOP:
            raise ModelError(f"limit {lim.limit_id} amount out of range: {lim.amount}")
        if lim.scope is Scope.GROUP and lim.group is None:
            raise ModelError(f"limit {lim.limit_id} has scope GROUP but no group")
        if lim.scope is Scope.PRODUCT and lim.product not in product_index:
            raise ModelError(f"limit {lim.limit_id} names unknown product {lim.product!r}")
        if lim.unit is LimitUnit.PURCHASES and lim.period is Period.TRANSACTION:
            raise ModelError(f"limit {lim.limit_id} counts purchases per transaction: give it a period")
    if card.products is not None:
        if not card.products:
            raise ModelError(f"{who} has an empty product list: it could buy nothing "
                             "(give no list to allow every product of its groups)")
        for code in sorted(card.products):
            i = product_index.get(code)
            if i is None:
                raise ModelError(f"{who} allows product {code!r} the network does not sell")
            if products[i].group not in card.groups:
                raise ModelError(f"{who} allows product {code!r} of group {products[i].group.name}, "
                                 "which the card's product groups exclude")
    if len(card.windows) > MAX_WINDOWS:
        raise ModelError(f"{who} has {len(card.windows)} time windows; at most {MAX_WINDOWS}")
    for w in card.windows:
        if not w.days or not w.days <= _WEEKDAYS:
            raise ModelError(f"{who} has a time window with days {sorted(w.days)}: give days 0 (Monday) .. 6 (Sunday)")
        if type(w.start_min) is not int or type(w.end_min) is not int \
                or not 0 <= w.start_min < DAY_MINUTES or not 0 < w.end_min <= DAY_MINUTES:
            raise ModelError(f"{who} has a time window {w.start_min!r}..{w.end_min!r} outside 00:00..24:00")
        if w.start_min == w.end_min:
            raise ModelError(f"{who} has a time window of zero length at minute {w.start_min}")
    if card.station_scope is StationScope.LISTED:
        if not card.station_ids:
            raise ModelError(f"{who} may buy only at listed stations but lists none")
        if len(card.station_ids) > MAX_CARD_STATIONS:
            raise ModelError(f"{who} lists {len(card.station_ids)} stations; at most {MAX_CARD_STATIONS}")
        for sid in sorted(card.station_ids):
            if sid not in station_index:
                raise ModelError(f"{who} lists unknown station {sid}")
    elif card.station_ids:
        raise ModelError(f"{who} lists stations but its station restriction is {card.station_scope.name}")


#: At most this many time windows and listed stations on a card (they fit its records).
MAX_WINDOWS = 8
MAX_CARD_STATIONS = 16
_WEEKDAYS = frozenset(range(7))


def mask_card_no(card_no: object) -> str:
    """A card number fit for logs and messages: first 2 and last 4 characters."""
    s = str(card_no)
    if len(s) <= 6:
        return "*" * len(s)
    return f"{s[:2]}{'*' * (len(s) - 6)}{s[-4:]}"


@dataclass(slots=True)
class FuelState:
    """The mutable part of the replica: contract balances and limit counters."""

    balances: dict[int, int] = field(default_factory=dict)
    counters: dict[tuple[str, int], LimitCounter] = field(default_factory=dict)
    #: the stop list now (None: the model's); blocks and unblocks from the host change it
    stop_list: set[str] | None = None

    @classmethod
    def from_model(cls, model: FuelModel) -> "FuelState":
        """The state as the model was loaded: contract balances and known counters."""
        return cls({c.contract_id: c.balance_kop for c in model.contracts}, dict(model.counters))
