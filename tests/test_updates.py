"""Host updates applied to a running evaluator (authz.update): every table's change reaches
the next decision, a refused update changes nothing, and an in-flight authorization
completes on its own numbers. Every test runs on both implementations (``impl``)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from authz.club_model import (
    ClubAccount,
    ClubCard,
    ClubCardKind,
    ClubRules,
    ClubStatus,
    ClubTopUp,
    PointLot,
)
from authz.errors import ModelError, RequestError
from authz.fuel_model import (
    CardStatus,
    Contract,
    DiscountKind,
    DiscountRule,
    DiscountWhere,
    Limit,
    LimitCounter,
    LimitUnit,
    Period,
    Product,
    ProductGroup,
    Scope,
    Tariff,
)
from authz.reasons import Reason
from authz.update import ClubUpdate, FuelUpdate
from native import club_evaluator, fuel_evaluator

from .evaluator_fixtures import (
    ACCOUNT,
    CARD,
    CLUB_CARD,
    CLUB_CARD_NEW,
    HOME,
    MSK,
    card,
    club_model,
    contract,
    fuel_model,
    fuel_req,
    fuel_snapshot,
    sale,
    stations,
    ts,
)

NOW = ts(2026, 6, 10, 12)
L100 = Limit(1, LimitUnit.MILLILITRES, Period.DAY, 100_000)
L30 = Limit(1, LimitUnit.MILLILITRES, Period.DAY, 30_000)
OTHER = "7005830000000777"


def _fuel(impl, **kw):
    return fuel_evaluator(fuel_model(**kw), impl)


# -- fuel: each table --------------------------------------------------------------------------

def test_lowered_litre_limit_lowers_the_next_authorization(impl):
    ev = _fuel(impl, limits=(L100,), spent={1: LimitCounter(10_000, 0)})
    assert ev.authorize(fuel_req(NOW)).volume_ml == 100_000
    ev.apply(FuelUpdate(cards=((card(limits=(L30,)), ((1, LimitCounter(10_000, day(NOW))),)),)))
    d = ev.authorize(fuel_req(NOW))
    assert (d.reason, d.volume_ml, d.binding_limit_id) == (Reason.LIMIT, 20_000, 1)
    assert ev.counter(CARD, 1) == LimitCounter(10_000, day(NOW))


def day(t: int) -> int:
    from authz.localtime import day_number, local_date
    return day_number(local_date(t, MSK))


def test_upserted_card_takes_the_hosts_counters_and_more_limits(impl):
    ev = _fuel(impl, limits=(L100,))
    ev.authorize(fuel_req(NOW))
    limits = (L100, Limit(2, LimitUnit.KOPECKS, Period.TRANSACTION, 50_000), Limit(3, LimitUnit.MILLILITRES,
              Period.MONTH, 500_000, Scope.PRODUCT, product="AI95"))
    ev.apply(FuelUpdate(cards=((card(limits=limits), ((1, LimitCounter(95_000, day(NOW))),)),)))
    d = ev.authorize(fuel_req(NOW))
    assert (d.reason, d.volume_ml, d.binding_limit_id) == (Reason.LIMIT, 5_000, 1)
    ev.apply(FuelUpdate(cards=((card(limits=limits), ()),)))  # the host reset the counters
    d = ev.authorize(fuel_req(NOW))
    assert (d.volume_ml, d.amount_kop, d.binding_limit_id) == (10_000, 50_000, 2)


def test_new_card_becomes_known_and_deleted_card_unknown(impl):
    ev = _fuel(impl)
    with pytest.raises(RequestError):
        ev.authorize(fuel_req(NOW, card_no=OTHER))
    ev.apply(FuelUpdate(cards=((card(OTHER, limits=(L30,)), ()),)))
    assert ev.authorize(fuel_req(NOW, card_no=OTHER)).volume_ml == 30_000
    assert ev.authorize(fuel_req(NOW)).volume_ml == 100_000
    ev.apply(FuelUpdate(delete_cards=(CARD,)))
    with pytest.raises(RequestError):
        ev.authorize(fuel_req(NOW))
    assert ev.authorize(fuel_req(NOW, card_no=OTHER)).volume_ml == 30_000
    ev.apply(FuelUpdate(cards=((card(), ()),)))  # back again
    assert ev.authorize(fuel_req(NOW)).volume_ml == 100_000


def test_blocked_card_and_stop_list(impl):
    ev = _fuel(impl)
    ev.apply(FuelUpdate(cards=((card(status=CardStatus.BLOCKED), ()),)))
    assert ev.authorize(fuel_req(NOW)).reason is Reason.CARD_BLOCKED
    ev.apply(FuelUpdate(cards=((card(), ()),), stop_listed=(CARD, OTHER)))
    assert ev.authorize(fuel_req(NOW)).reason is Reason.STOP_LIST
    assert ev.on_stop_list(OTHER)
    ev.apply(FuelUpdate(cards=((card(OTHER), ()),)))  # a card on the list before it arrives
    assert ev.authorize(fuel_req(NOW, card_no=OTHER)).reason is Reason.STOP_LIST
    ev.apply(FuelUpdate(stop_unlisted=(CARD,)))
    assert ev.authorize(fuel_req(NOW)).reason is Reason.OK


def test_topped_up_contract_and_new_contract(impl):
    ev = _fuel(impl, balance_kop=100_000)  # 20 litres at 50.00
    assert ev.authorize(fuel_req(NOW)).volume_ml == 20_000
    ev.apply(FuelUpdate(contracts=(contract(balance_kop=250_000, credit_line_kop=50_000),)))
    assert ev.authorize(fuel_req(NOW)).volume_ml == 60_000
    assert ev.balance_kop(1) == 250_000
    ev.apply(FuelUpdate(contracts=(contract(2, balance_kop=50_000),), cards=((card(OTHER, 2), ()),)))
    assert ev.authorize(fuel_req(NOW, card_no=OTHER)).volume_ml == 10_000
    ev.apply(FuelUpdate(cards=((card(OTHER, 1), ()),)))  # moved to contract 1
    assert ev.authorize(fuel_req(NOW, card_no=OTHER)).volume_ml == 60_000
    ev.apply(FuelUpdate(delete_contracts=(2,)))
    with pytest.raises(KeyError):
        ev.balance_kop(2)


def test_price_change_changes_the_amount(impl):
    ev = _fuel(impl)
    assert ev.authorize(fuel_req(NOW, volume=10_000)).amount_kop == 50_000
    home = stations()[0]
    ev.apply(FuelUpdate(stations=(replace(home, prices_kop_per_l={**home.prices_kop_per_l, "AI95": 5500}),)))
    d = ev.authorize(fuel_req(NOW, volume=10_000))
    assert (d.amount_kop, d.list_price_kop_per_l) == (55_000, 5500)


def test_tariff_rows_and_new_product(impl):
    ev = _fuel(impl)
    rule = DiscountRule(Tariff.TRANSIT, "AI95", DiscountWhere.NETWORK, DiscountKind.KOP_PER_L, 300)
    ev.apply(FuelUpdate(tariffs=((Tariff.TRANSIT, (rule,)),)))
    assert ev.authorize(fuel_req(NOW, volume=10_000)).unit_price_kop_per_l == 4700
    ev.apply(FuelUpdate(delete_tariffs=(Tariff.TRANSIT,)))
    assert ev.authorize(fuel_req(NOW, volume=10_000)).unit_price_kop_per_l == 5000
    home = stations()[0]
    gas = Product("LPG", "Gas", ProductGroup.FUEL)
    ev.apply(FuelUpdate(products=(gas,), stations=(replace(home, prices_kop_per_l={**home.prices_kop_per_l,
                                                                                  "LPG": 2500}),)))
    assert ev.authorize(fuel_req(NOW, "LPG", volume=10_000)).amount_kop == 25_000
    assert ev.authorize(fuel_req(NOW, volume=10_000)).amount_kop == 50_000


# -- fuel: refusals ----------------------------------------------------------------------------

REFUSED = [
    FuelUpdate(cards=((card(OTHER, 9), ()),)),  # unknown contract
    FuelUpdate(cards=((card(limits=(Limit(1, LimitUnit.KOPECKS, Period.DAY, 5, Scope.PRODUCT, product="XX"),)), ()),)),
    FuelUpdate(cards=((card(limits=(L30, L100)), ()),)),  # repeated limit id
    FuelUpdate(tariffs=((Tariff.TRANSIT, (DiscountRule(Tariff.TRANSIT, "XX", DiscountWhere.NETWORK,
                                                        DiscountKind.KOP_PER_L, 1),)),)),  # unknown product
    FuelUpdate(tariffs=((Tariff.REGIONAL, (DiscountRule(Tariff.TRANSIT, "AI95", DiscountWhere.NETWORK,
                                                         DiscountKind.KOP_PER_L, 1),)),)),  # row of another tariff
    FuelUpdate(delete_contracts=(1,)),  # its card remains
    FuelUpdate(delete_products=("AI95",)),  # stations price it
    FuelUpdate(delete_stations=(HOME,), contracts=(contract(chosen=(HOME,)),)),
    FuelUpdate(contracts=(Contract(1, "Mars/Olympus", 77, Tariff.TRANSIT, 0),)),
    FuelUpdate(contracts=(contract(balance_kop=10**20),)),
    FuelUpdate(cards=((card(), ()), (card(), ()))),  # twice
    FuelUpdate(cards=((card(OTHER), ()),), delete_cards=(OTHER,)),
    # a good change first, then a bad one: nothing of it is applied
    FuelUpdate(contracts=(contract(balance_kop=1),), cards=((card(limits=(L30,)), ()), (card(OTHER, 9), ()))),
]


@pytest.mark.parametrize("update", REFUSED, ids=range(len(REFUSED)))
def test_refused_fuel_update_changes_nothing(impl, update):
    model = fuel_model(limits=(L100,), spent={1: LimitCounter(1_000, day(NOW))})
    ev = fuel_evaluator(model, impl)
    before = ev.authorize(fuel_req(NOW)), fuel_snapshot(ev, model), ev.on_stop_list(CARD)
    with pytest.raises(ModelError):
        ev.apply(update)
    assert (ev.authorize(fuel_req(NOW)), fuel_snapshot(ev, model), ev.on_stop_list(CARD)) == before
    with pytest.raises(RequestError):
        ev.authorize(fuel_req(NOW, card_no=OTHER))


def test_in_flight_authorization_completes_on_its_numbers(impl):
    ev = _fuel(impl, limits=(L100,))
    req = fuel_req(NOW)
    d = ev.authorize(req)
    assert (d.volume_ml, d.unit_price_kop_per_l) == (100_000, 5000)
    home = stations()[0]
    ev.apply(FuelUpdate(stations=(replace(home, prices_kop_per_l={**home.prices_kop_per_l, "AI95": 6000}),),
                        cards=((card(limits=(L30,)), ()),)))
    c = ev.complete(req, d, 80_000)  # the pump delivered what it was preset to
    assert (c.volume_ml, c.amount_kop, c.released_volume_ml) == (80_000, 400_000, 20_000)
    assert c.balance_after_kop == 10_000_000 - 400_000
    d2 = ev.authorize(req)  # the next one: new price, new limit, already exceeded
    assert (d2.reason, d2.volume_ml) == (Reason.LIMIT_EXHAUSTED, 0)


def test_untouched_rows_keep_this_sites_spend(impl):
    ev = _fuel(impl, limits=(L100,), cards=None)
    req = fuel_req(NOW)
    ev.complete(req, ev.authorize(req), 40_000)
    ev.apply(FuelUpdate(cards=((card(OTHER), ()),)))
    assert ev.balance_kop(1) == 10_000_000 - 200_000
    assert ev.counter(CARD, 1) == LimitCounter(40_000, day(NOW))
    assert ev.authorize(req).volume_ml == 60_000


# -- club --------------------------------------------------------------------------------------

def _account(**kw) -> ClubAccount:
    base = ClubAccount(ACCOUNT, ClubCardKind.IDENTIFIED, True, ClubStatus.ACTIVE, 50_000, 0, 0,
                       (PointLot(1, 200, 0, 2 * NOW),))
    return replace(base, **kw)


def test_blocked_club_card_is_refused_at_the_next_quote(impl):
    ev = club_evaluator(club_model(balance_kop=50_000), impl)
    assert ev.quote(sale(NOW, ("shoes", 100_000))).reason is Reason.OK
    ev.apply(ClubUpdate(accounts=((_account(), (ClubCard(CLUB_CARD, ACCOUNT, ClubStatus.BLOCKED),)),)))
    assert ev.quote(sale(NOW, ("shoes", 100_000))).reason is Reason.CARD_BLOCKED


def test_replaced_club_card_carries_the_account(impl):
    ev = club_evaluator(club_model(), impl)
    ev.apply(ClubUpdate(accounts=((_account(), (ClubCard(CLUB_CARD, ACCOUNT, ClubStatus.BLOCKED),
                                                ClubCard(CLUB_CARD_NEW, ACCOUNT))),)))
    q = ev.quote(sale(NOW, ("shoes", 100_000), card_no=CLUB_CARD_NEW))
    assert (q.reason, q.balance_kop, q.points_spendable) == (Reason.OK, 50_000, 200)
    ev.apply(ClubUpdate(accounts=((_account(), (ClubCard(CLUB_CARD_NEW, ACCOUNT),)),)))  # the old one gone
    with pytest.raises(RequestError):
        ev.quote(sale(NOW, ("shoes", 100_000)))


def test_new_club_account_rules_and_delete(impl):
    ev = club_evaluator(club_model(), impl)
    other = ClubAccount(7, ClubCardKind.UNIDENTIFIED, True, ClubStatus.ACTIVE, 1_000, 0, 0, ())
    ev.apply(ClubUpdate(accounts=((other, (ClubCard("4600000000077", 7),)),)))
    assert ev.quote(sale(NOW, ("shoes", 100_000), card_no="4600000000077")).balance_kop == 1_000
    assert ev.quote(sale(NOW, ("shoes", 100_000))).accrual_points == 100
    ev.apply(ClubUpdate(rules=replace(ClubRules(), accrual_rates=(ClubRules().accrual_rates[0].__class__("*", "*", 500),))))
    assert ev.quote(sale(NOW, ("shoes", 100_000))).accrual_points == 50
    ev.apply(ClubUpdate(delete_accounts=(7,)))
    with pytest.raises(RequestError):
        ev.quote(sale(NOW, ("shoes", 100_000), card_no="4600000000077"))


CLUB_REFUSED = [
    ClubUpdate(accounts=((_account(), (ClubCard(CLUB_CARD, 99),)),)),  # card of another account
    ClubUpdate(accounts=((_account(balance_kop=-10**12 - 1), ()),)),
    ClubUpdate(accounts=((_account(lots=(PointLot(1, 0, 0, 1),)), ()),)),
    ClubUpdate(accounts=((_account(), ()), (_account(), ()))),
    ClubUpdate(accounts=((_account(), (ClubCard(CLUB_CARD, ACCOUNT),)),
                         (_account(account_id=8), (ClubCard(CLUB_CARD, 8),)))),  # one card, two rows
    ClubUpdate(rules=replace(ClubRules(), tz="Mars/Olympus")),
    ClubUpdate(accounts=((_account(balance_kop=1), ()),), rules=replace(ClubRules(), redemption_cap_bp=-1)),
]


def test_a_club_balance_below_zero_is_held_as_a_debt(impl):
    """An account the host counts below zero (spent offline at two sites) is held as it is:
    a payment from the card is refused, a top-up first pays the debt back."""
    ev = club_evaluator(club_model(balance_kop=7_000), impl)
    ev.apply(ClubUpdate(accounts=((_account(balance_kop=-500), (ClubCard(CLUB_CARD, ACCOUNT),)),)))
    assert ev.account(ACCOUNT).balance_kop == -500
    assert ev.top_up(ClubTopUp(CLUB_CARD, 1_000, NOW)).balance_after_kop == 500 == ev.account(ACCOUNT).balance_kop


@pytest.mark.parametrize("update", CLUB_REFUSED, ids=range(len(CLUB_REFUSED)))
def test_refused_club_update_changes_nothing(impl, update):
    ev = club_evaluator(club_model(balance_kop=7_000, lots=(PointLot(1, 300, 0, 2 * NOW),)), impl)
    before = ev.quote(sale(NOW, ("shoes", 100_000))), ev.account(ACCOUNT)
    with pytest.raises(ModelError):
        ev.apply(update)
    assert (ev.quote(sale(NOW, ("shoes", 100_000))), ev.account(ACCOUNT)) == before


def test_replace_stop_list_is_the_whole_list(impl):
    ev = _fuel(impl, stop_list=(CARD, "X-1"))
    ev.apply(FuelUpdate(cards=((card(OTHER), ()),), stop_listed=("7005840000000001",)))
    assert ev.authorize(fuel_req(NOW)).reason is Reason.STOP_LIST
    ev.replace_stop_list([OTHER, "Y-2"])
    assert ev.authorize(fuel_req(NOW)).reason is Reason.OK
    assert ev.authorize(fuel_req(NOW, card_no=OTHER)).reason is Reason.STOP_LIST
    assert [ev.on_stop_list(n) for n in (CARD, "X-1", "7005840000000001", OTHER, "Y-2")] == [False] * 3 + [True] * 2
    with pytest.raises(ModelError):
        ev.replace_stop_list([CARD, 7])
    assert ev.on_stop_list(OTHER) and not ev.on_stop_list(CARD)
