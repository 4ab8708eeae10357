"""Small fuel and club models for the rule tests, with numbers chosen for hand arithmetic.

Fuel: one contract (id 1, home region 77, Moscow time, 100,000 RUB balance, no credit line)
and one card that may buy every group. Prices at the home station: AI-95 50.00 RUB/l,
AI-92 53.99 RUB/l, diesel 50.50 RUB/l, a car wash 300 RUB, a coffee 150 RUB. Every station
fills at most 100 litres without a preset. The contract's tariff is Transit with *no*
discount rows unless a test passes some, so prices are list prices by default.

Club: one account (id 1) with one card, default programme rules (10 % accrual, 30 %
redemption cap, 3 days to mature, 3 months to expire, 100,000 / 1,000,000 RUB caps for
identified cards, 15,000 / 40,000 RUB for unidentified ones).

Times are UTC seconds built from local wall-clock times with :func:`ts`.
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from authz.club_model import (ClubAccount, ClubCard, ClubCardKind, ClubModel, ClubRules, ClubSale,
                              ClubStatus, PointLot, SaleLine)
from authz.fuel_model import (CardKind, CardStatus, Contract, DiscountKind, DiscountRule,
                              DiscountWhere, FuelCard, FuelModel, FuelRequest, Limit, LimitCounter,
                              Product, ProductGroup, Station, Tariff)

MSK = "Europe/Moscow"
VVO = "Asia/Vladivostok"  # UTC+10
KGD = "Europe/Kaliningrad"  # UTC+2
UTC = "UTC"


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
       tz: str = MSK) -> int:
    """The UTC second of a local wall-clock time in ``tz``."""
    return int(datetime(year, month, day, hour, minute, second, tzinfo=ZoneInfo(tz)).timestamp())


def day_no(d: date) -> int:
    """Days from 1970-01-01 to ``d`` (how limit counters name the day their period starts)."""
    return (d - date(1970, 1, 1)).days


def month_no(year: int, month: int) -> int:
    """Months since January 1970 (how club accounts name their turnover month)."""
    return (year - 1970) * 12 + month - 1


DAY_S = 86_400

# ---------------------------------------------------------------------------------- fuel

CARD = "7005830000000001"
CARD_B = "7005830000000002"

HOME = 1  # region 77 (the contract's home region): sells fuel, car wash, shop
AWAY = 2  # region 50: sells fuel only (it has a wash price, but not the group)
NO_DT = 3  # region 77: sells fuel and shop, but has no diesel and no coffee price
CHOSEN_A, CHOSEN_B, CHOSEN_C = 4, 5, 6  # region 77, fuel only

HOME_REGION = 77
ALL_GROUPS = frozenset(ProductGroup)

PRODUCTS = (
    Product("AI95", "AI-95", ProductGroup.FUEL),
    Product("AI92", "AI-92", ProductGroup.FUEL),
    Product("DT", "Diesel", ProductGroup.FUEL),
    Product("WASH", "Car wash", ProductGroup.CAR_WASH),
    Product("COFFEE", "Coffee", ProductGroup.SHOP),
    Product("ROOM", "Hotel room", ProductGroup.HOTEL),
)

_FUEL_PRICES = {"AI95": 5000, "AI92": 5399, "DT": 5050}


def stations(max_fill_ml: int = 100_000) -> tuple[Station, ...]:
    """The stations above."""
    fuel = frozenset({ProductGroup.FUEL})
    return (
        Station(HOME, HOME_REGION, frozenset({ProductGroup.FUEL, ProductGroup.CAR_WASH, ProductGroup.SHOP}),
                {**_FUEL_PRICES, "WASH": 30_000, "COFFEE": 15_000}, max_fill_ml),
        Station(AWAY, 50, fuel, {"AI95": 5200, "AI92": 5600, "DT": 6100, "WASH": 30_000}, max_fill_ml),
        Station(NO_DT, HOME_REGION, frozenset({ProductGroup.FUEL, ProductGroup.SHOP}),
                {"AI95": 5000, "AI92": 5399}, max_fill_ml),
        Station(CHOSEN_A, HOME_REGION, fuel, dict(_FUEL_PRICES), max_fill_ml),
        Station(CHOSEN_B, HOME_REGION, fuel, dict(_FUEL_PRICES), max_fill_ml),
        Station(CHOSEN_C, HOME_REGION, fuel, dict(_FUEL_PRICES), max_fill_ml),
    )


#: A discount table with a row for every tariff (values in kopecks per litre or basis points).
DISCOUNTS = (
    DiscountRule(Tariff.REGIONAL, "AI95", DiscountWhere.HOME_REGION, DiscountKind.KOP_PER_L, 200),
    DiscountRule(Tariff.REGIONAL, "DT", DiscountWhere.HOME_REGION, DiscountKind.PERCENT_BP, 300),
    DiscountRule(Tariff.REGIONAL_PLUS, "AI95", DiscountWhere.HOME_REGION, DiscountKind.KOP_PER_L, 200),
    DiscountRule(Tariff.REGIONAL_PLUS, "AI95", DiscountWhere.CHOSEN_STATIONS, DiscountKind.KOP_PER_L, 350),
    DiscountRule(Tariff.TRANSIT, "AI95", DiscountWhere.NETWORK, DiscountKind.KOP_PER_L, 100),
    DiscountRule(Tariff.TRANSIT_OPTIMAL, "AI95", DiscountWhere.NETWORK, DiscountKind.KOP_PER_L, 150),
    DiscountRule(Tariff.TRANSIT_OPTIMAL_PLUS, "AI95", DiscountWhere.NETWORK, DiscountKind.KOP_PER_L, 250),
    DiscountRule(Tariff.FUEL_ONLINE, "AI95", DiscountWhere.NETWORK, DiscountKind.PERCENT_BP, 200),
)


def contract(contract_id: int = 1, *, tz: str = MSK, tariff: Tariff = Tariff.TRANSIT,
             balance_kop: int = 10_000_000, credit_line_kop: int = 0,
             chosen: tuple[int, ...] = ()) -> Contract:
    """A contract in the home region."""
    return Contract(contract_id, tz, HOME_REGION, tariff, balance_kop, credit_line_kop, chosen)


def card(card_no: str = CARD, contract_id: int = 1, *, limits: tuple[Limit, ...] = (),
         groups=ALL_GROUPS, expires_on: date = date(2030, 12, 31),
         status: CardStatus = CardStatus.ACTIVE, kind: CardKind = CardKind.PLASTIC, **controls) -> FuelCard:
    """A fuel card; ``controls`` are the fleet manager's (FuelCard's ``products``,
    ``windows``, ``station_scope``, ``station_ids``, ``on_breach``)."""
    return FuelCard(card_no, contract_id, expires_on, frozenset(groups), tuple(limits), kind, status, **controls)


def fuel_model(*, limits: tuple[Limit, ...] = (), spent: dict[int, LimitCounter] | None = None,
               tz: str = MSK, tariff: Tariff = Tariff.TRANSIT, balance_kop: int = 10_000_000,
               credit_line_kop: int = 0, chosen: tuple[int, ...] = (), discounts=(),
               groups=ALL_GROUPS, expires_on: date = date(2030, 12, 31),
               status: CardStatus = CardStatus.ACTIVE, kind: CardKind = CardKind.PLASTIC,
               stop_list=(), max_fill_ml: int = 100_000, contracts=None, cards=None,
               counters: dict[tuple[str, int], LimitCounter] | None = None, **controls) -> FuelModel:
    """One contract and one card :data:`CARD` (unless ``contracts`` / ``cards`` are given)
    with the given ``controls`` (see :func:`card`); ``spent`` maps a limit id of
    :data:`CARD` to its counter at load time."""
    if contracts is None:
        contracts = (contract(tz=tz, tariff=tariff, balance_kop=balance_kop,
                              credit_line_kop=credit_line_kop, chosen=chosen),)
    if cards is None:
        cards = (card(limits=limits, groups=groups, expires_on=expires_on, status=status, kind=kind, **controls),)
    all_counters = {(CARD, lid): c for lid, c in (spent or {}).items()}
    all_counters.update(counters or {})
    return FuelModel(products=PRODUCTS, stations=stations(max_fill_ml), contracts=contracts,
                     cards=cards, discounts=discounts, stop_list=stop_list, counters=all_counters)


def fuel_req(now: int, product: str = "AI95", station: int = HOME, *, volume: int | None = None,
             amount: int | None = None, card_no: str = CARD) -> FuelRequest:
    """A fuel authorization request."""
    return FuelRequest(card_no, station, product, now, volume, amount)


def fuel_snapshot(ev, model: FuelModel) -> tuple:
    """Every contract balance and every limit counter of the evaluator, for before/after checks."""
    return (tuple(ev.balance_kop(c.contract_id) for c in model.contracts),
            tuple(ev.counter(c.card_no, lim.limit_id) for c in model.cards for lim in c.limits))


# ---------------------------------------------------------------------------------- club

# 13-digit barcodes with a valid EAN-13 check digit
CLUB_CARD = "4600000000015"
CLUB_CARD_NEW = "4600000000022"  # a second plastic of the same account
ACCOUNT = 1


def club_model(*, kind: ClubCardKind = ClubCardKind.IDENTIFIED, activated: bool = True,
               account_status: ClubStatus = ClubStatus.ACTIVE,
               card_status: ClubStatus = ClubStatus.ACTIVE, balance_kop: int = 0,
               turnover_month: int = 0, turnover_kop: int = 0, lots: tuple[PointLot, ...] = (),
               rules: ClubRules | None = None, new_card: bool = False) -> ClubModel:
    """One account :data:`ACCOUNT` with card :data:`CLUB_CARD` (and :data:`CLUB_CARD_NEW`,
    active, when ``new_card``)."""
    account = ClubAccount(ACCOUNT, kind, activated, account_status, balance_kop, turnover_month,
                          turnover_kop, tuple(lots))
    cards = [ClubCard(CLUB_CARD, ACCOUNT, card_status)]
    if new_card:
        cards.append(ClubCard(CLUB_CARD_NEW, ACCOUNT))
    return ClubModel(rules=rules or ClubRules(), accounts=(account,), cards=tuple(cards))


def sale(now: int, *lines: tuple[str, int], channel: str = "store", method: str = "cash",
         card_no: str = CLUB_CARD) -> ClubSale:
    """A sale of ``lines`` given as (category, amount_kop)."""
    return ClubSale(card_no, tuple(SaleLine(f"SKU{n}", cat, amt) for n, (cat, amt) in enumerate(lines, 1)),
                    now, channel, method)


def club_snapshot(ev, model: ClubModel) -> tuple:
    """Every account's state (balance, turnover, lots) now, for before/after checks."""
    return tuple(ev.account(a.account_id) for a in model.accounts)
