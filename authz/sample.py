"""Generated, realistic models and traffic: a fuel network and a club-card chain.

Used by the main job (``edgepos simulate``), the benchmarks and the tests. Everything is
deterministic for a seed. Numbers are plausible for a Russian fuel network and shoe chain
in 2026, not real data.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone

from .club_model import (AccountState, ClubAccount, ClubCard, ClubCardKind, ClubModel,
                         ClubRules, ClubSale, ClubStatus, PointLot, SaleLine)
from .fuel_model import (CardStatus, Contract, DiscountKind, DiscountRule, DiscountWhere,
                         FuelCard, FuelModel, FuelRequest, Limit, LimitCounter, LimitUnit,
                         Period, Product, ProductGroup, Scope, Station, Tariff)
from .localtime import add_months_utc

#: Russia's time zones, west to east: a contract's limits roll over at its own midnight.
RUSSIAN_ZONES = ("Europe/Kaliningrad", "Europe/Moscow", "Europe/Samara", "Asia/Yekaterinburg",
                 "Asia/Omsk", "Asia/Novosibirsk", "Asia/Krasnoyarsk", "Asia/Irkutsk",
                 "Asia/Yakutsk", "Asia/Vladivostok", "Asia/Magadan", "Asia/Kamchatka")

PRODUCTS = (
    Product("AI92", "AI-92", ProductGroup.FUEL), Product("AI95", "AI-95", ProductGroup.FUEL),
    Product("AI98", "AI-98", ProductGroup.FUEL), Product("DT", "Diesel", ProductGroup.FUEL),
    Product("LPG", "Autogas", ProductGroup.FUEL), Product("WASH", "Car wash", ProductGroup.CAR_WASH),
    Product("HOTEL", "Hotel night", ProductGroup.HOTEL), Product("TYRES", "Tyre service", ProductGroup.SERVICE),
    Product("SHOP", "Shop goods", ProductGroup.SHOP),
)
#: List prices in kopecks per litre (fuel) or per unit (others).
BASE_PRICES = {"AI92": 5_590, "AI95": 6_150, "AI98": 7_690, "DT": 6_890, "LPG": 2_950,
               "WASH": 60_000, "HOTEL": 350_000, "TYRES": 240_000, "SHOP": 25_000}
FUEL_CODES = ("AI92", "AI95", "AI98", "DT", "LPG")

#: The day every generated traffic starts on (local midnight differs per zone).
DAY_START_UTC = int(datetime(2026, 11, 20, tzinfo=timezone.utc).timestamp())


def tariff_table() -> tuple[DiscountRule, ...]:
    """The discount table: Regional and Regional+ in the home region (Regional+ more at the
    chosen stations), Transit and its options network-wide, Fuel online network-wide."""
    rows = []
    for code in FUEL_CODES:
        rows += [
            DiscountRule(Tariff.REGIONAL, code, DiscountWhere.HOME_REGION, DiscountKind.KOP_PER_L, 150),
            DiscountRule(Tariff.REGIONAL_PLUS, code, DiscountWhere.HOME_REGION, DiscountKind.KOP_PER_L, 150),
            DiscountRule(Tariff.REGIONAL_PLUS, code, DiscountWhere.CHOSEN_STATIONS, DiscountKind.KOP_PER_L, 300),
            DiscountRule(Tariff.TRANSIT, code, DiscountWhere.NETWORK, DiscountKind.PERCENT_BP, 100),
            DiscountRule(Tariff.TRANSIT_OPTIMAL, code, DiscountWhere.NETWORK, DiscountKind.PERCENT_BP, 200),
            DiscountRule(Tariff.TRANSIT_OPTIMAL_PLUS, code, DiscountWhere.NETWORK, DiscountKind.PERCENT_BP, 300),
            DiscountRule(Tariff.FUEL_ONLINE, code, DiscountWhere.NETWORK, DiscountKind.KOP_PER_L, 50),
        ]
    return tuple(rows)


def card_number(i: int) -> str:
    """A 16-digit fuel card number (issuer prefix 7005 83) for card ``i``."""
    return f"700583{i:010d}"


def ean13(first12: str) -> str:
    """``first12`` with its EAN-13 check digit appended."""
    s = sum(int(c) * (3 if k % 2 else 1) for k, c in enumerate(first12))
    return first12 + str((10 - s % 10) % 10)


def club_card_number(i: int) -> str:
    """A 13-digit club card barcode (prefix 2990) for card ``i``."""
    return ean13(f"2990{i:08d}")


#: Regions of the generated fuel network (station ``s`` is in region ``s % N_REGIONS``).
N_REGIONS = 20


def fuel_stations(rnd: random.Random, n_stations: int) -> list[Station]:
    """The stations of :func:`fuel_model`, drawn from ``rnd`` (its first draws)."""
    stations = []
    for s in range(n_stations):
        groups = {ProductGroup.FUEL} | {g for g in (ProductGroup.CAR_WASH, ProductGroup.HOTEL,
                                                    ProductGroup.SERVICE, ProductGroup.SHOP)
                                        if rnd.random() < 0.5}
        codes = [p.code for p in PRODUCTS if p.group in groups and (p.code != "LPG" or rnd.random() < 0.4)]
        prices = {c: BASE_PRICES[c] * rnd.randint(97, 103) // 100 for c in codes}
        stations.append(Station(1000 + s, s % N_REGIONS, frozenset(groups), prices))
    return stations


def fuel_model(n_cards: int = 10_000, n_stations: int = 200, seed: int = 1) -> FuelModel:
    """A fuel network of ``n_stations`` stations and ``n_cards`` cards on ~n/5 contracts.

    ``native.compact.sample_fuel_columns`` makes the same network as columns, without the
    objects (a port of the contract and card loops below: change both together)."""
    rnd = random.Random(seed)
    n_regions = N_REGIONS
    stations = fuel_stations(rnd, n_stations)
    n_contracts = max(1, n_cards // 5)
    contracts = []
    for c in range(n_contracts):
        tariff = rnd.choice(list(Tariff))
        region = rnd.randrange(n_regions)
        chosen: tuple[int, ...] = ()
        if tariff is Tariff.REGIONAL_PLUS:
            local = [st.station_id for st in stations if st.region == region]
            chosen = tuple(rnd.sample(local, min(3, len(local))))
        contracts.append(Contract(
            contract_id=c + 1, tz=RUSSIAN_ZONES[region % len(RUSSIAN_ZONES)], home_region=region,
            tariff=tariff, balance_kop=rnd.choice((0, 500_000, 5_000_000, 50_000_000, 200_000_000)),
            credit_line_kop=rnd.choice((0, 0, 0, 1_000_000, 10_000_000)), chosen_station_ids=chosen))
    cards, counters, stop = [], {}, []
    for i in range(n_cards):
        no = card_number(i)
        limits = []
        if rnd.random() < 0.7:
            limits.append(Limit(1, LimitUnit.MILLILITRES, Period.DAY, rnd.choice((60_000, 100_000, 200_000))))
        if rnd.random() < 0.5:
            limits.append(Limit(2, LimitUnit.KOPECKS, Period.MONTH, rnd.choice((1_000_000, 5_000_000, 10_000_000))))
        if rnd.random() < 0.3:
            limits.append(Limit(3, LimitUnit.MILLILITRES, Period.TRANSACTION, 80_000))
        if rnd.random() < 0.2:
            limits.append(Limit(4, LimitUnit.KOPECKS, Period.WEEK, 300_000, Scope.GROUP, group=ProductGroup.SHOP))
        if rnd.random() < 0.1:
            limits.append(Limit(5, LimitUnit.MILLILITRES, Period.LIFETIME, 5_000_000, Scope.PRODUCT, product="AI98"))
        for lim in limits:
            if lim.period is Period.MONTH and rnd.random() < 0.5:
                counters[(no, lim.limit_id)] = LimitCounter(rnd.randrange(lim.amount + 1), 20_758)  # 2026-11-01
        groups = {ProductGroup.FUEL} | ({ProductGroup.CAR_WASH, ProductGroup.SHOP} if rnd.random() < 0.5 else set())
        if rnd.random() < 0.1:
            groups |= {ProductGroup.HOTEL, ProductGroup.SERVICE}
        expires = date(2026, 11, 1) + timedelta(days=rnd.choice((-30, 400, 700, 900)) if rnd.random() < 0.02 else 800)
        status = CardStatus.BLOCKED if rnd.random() < 0.005 else CardStatus.ACTIVE
        if rnd.random() < 0.01:
            stop.append(no)
        cards.append(FuelCard(no, rnd.randint(1, n_contracts), expires, frozenset(groups), tuple(limits),
                              status=status))
    return FuelModel(products=PRODUCTS, stations=stations, contracts=contracts, cards=cards,
                     discounts=tariff_table(), stop_list=stop, counters=counters)


def fuel_requests(model: FuelModel, n: int, seed: int = 2, start_utc_s: int = DAY_START_UTC,
                  span_s: int = 86_400) -> Iterator[FuelRequest]:
    """``n`` pump requests over ``span_s`` seconds in time order: random cards and stations,
    mostly fuel, a third with a volume preset, a third with an amount preset."""
    rnd = random.Random(seed)
    times = sorted(rnd.randrange(start_utc_s, start_utc_s + span_s) for _ in range(n))
    for t in times:
        card = model.cards[rnd.randrange(len(model.cards))]
        station = model.stations[rnd.randrange(len(model.stations))]
        fuel = [c for c in station.prices_kop_per_l if c in FUEL_CODES]
        product = rnd.choice(fuel) if rnd.random() < 0.9 else rnd.choice([p.code for p in PRODUCTS])
        kind = rnd.randrange(3)
        yield FuelRequest(card.card_no, station.station_id, product, t,
                          preset_volume_ml=rnd.choice((20_000, 40_000, 50_000, 100_000)) if kind == 1 else None,
                          preset_amount_kop=rnd.choice((100_000, 200_000, 300_000, 500_000)) if kind == 2 else None)


def club_model(n_accounts: int = 5_000, seed: int = 3, now_utc_s: int = DAY_START_UTC) -> ClubModel:
    """A club chain's accounts (70% identified), one card each, with point lots accrued over
    the last four months (some immature, some expired) and some money on the cards.

    ``native.compact.sample_club_columns`` makes the same chain as columns, without the
    objects (a port of the account loop below: change both together)."""
    rnd = random.Random(seed)
    rules = ClubRules()
    accounts, cards = [], []
    for a in range(n_accounts):
        lots = []
        for k in range(rnd.randrange(5)):
            at = now_utc_s - rnd.randrange(120 * 86_400)
            lots.append(PointLot(a * 10 + k, rnd.randint(10, 2_000), at + rules.maturity_s,
                                 add_months_utc(at, rules.expiry_months)))
        kind = ClubCardKind.IDENTIFIED if rnd.random() < 0.7 else ClubCardKind.UNIDENTIFIED
        cap = rules.caps[kind].balance_cap_kop
        accounts.append(ClubAccount(
            a + 1, kind, activated=rnd.random() < 0.9,
            status=ClubStatus.BLOCKED if rnd.random() < 0.005 else ClubStatus.ACTIVE,
            balance_kop=rnd.choice((0, 0, 100_000, 500_000, cap // 2)), lots=tuple(lots)))
        cards.append(ClubCard(club_card_number(a), a + 1))
    return ClubModel(rules=rules, accounts=accounts, cards=cards)


SKU_CATEGORIES = ("shoes", "shoes", "shoes", "clothes", "accessories", "toys", "super_price",
                  "hygiene", "food", "baby_food", "advertised")


def club_sales(model: ClubModel, n: int, seed: int = 4, start_utc_s: int = DAY_START_UTC,
               span_s: int = 86_400) -> Iterator[ClubSale]:
    """``n`` till sales in time order: 1 to 5 lines of the chain's categories."""
    rnd = random.Random(seed)
    times = sorted(rnd.randrange(start_utc_s, start_utc_s + span_s) for _ in range(n))
    for t in times:
        card = model.cards[rnd.randrange(len(model.cards))]
        lines = tuple(SaleLine(f"SKU{rnd.randrange(10**6):06d}", rnd.choice(SKU_CATEGORIES),
                               rnd.choice((29_900, 49_900, 199_900, 349_900, 599_900)) if rnd.random() < 0.8
                               else rnd.randrange(1_000, 30_000))
                      for _ in range(rnd.randint(1, 5)))
        yield ClubSale(card.card_no, lines, t, "store", rnd.choice(("cash", "bank_card", "bank_card")))


def account_points(state: AccountState, now_utc_s: int) -> int:
    """Unexpired points of an account, matured or not."""
    return sum(lot.points for lot in state.lots if now_utc_s < lot.expires_at_s)
