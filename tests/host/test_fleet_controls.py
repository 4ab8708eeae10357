"""The fleet controls in the host's master data (issue 11), on SQLite and PostgreSQL: stored
and published through host.master, every change checked by authz.fuel_model.check_card_rules
(refused with the message naming the rule, the ledger unchanged to the last row), and the
published row is what a site's model accepts."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authz import sample
from authz.fuel_model import (
    FuelCard,
    FuelModel,
    Limit,
    LimitUnit,
    OnBreach,
    Period,
    Product,
    ProductGroup,
    StationScope,
    TimeWindow,
)
from host import master
from host.errors import Conflict, InvalidInput
from host.ledger import Ledger
from host.publisher import Publisher
from host.schema import _V1
from wire import SiteKeys, Table, decode

from .edge import CARD, CARD2, contract, fuel_card

KEYS = SiteKeys({"S1": bytes(32)}, replica_signing=Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
TABLES = re.findall(r"CREATE TABLE (\w+)", _V1)
WEEKDAYS = TimeWindow(frozenset(range(5)), 7 * 60, 19 * 60)
SAT_NIGHT = TimeWindow(frozenset({5}), 22 * 60, 6 * 60)


def dump(ledger: Ledger) -> dict[str, list[tuple]]:
    return {t: sorted(map(tuple, ledger.db.fetchall(f"SELECT * FROM {t}")), key=repr) for t in TABLES}


@pytest.fixture
def world(ledger: Ledger) -> Ledger:
    master.put_products(ledger, sample.PRODUCTS)
    for sid in (1000, 1001):
        master.put_station(ledger, sid, region=7, groups=[ProductGroup.FUEL, ProductGroup.SHOP])
    master.create_contract(ledger, contract(balance_kop=10_000_000))
    master.issue_fuel_card(ledger, fuel_card())
    return ledger


def published_card(ledger: Ledger, card_no: str) -> FuelCard:
    pub = Publisher(ledger)
    parts = pub.snapshot(Table.FUEL_CARDS)
    rows = [r for p in pub.snapshot_publications(parts, KEYS) for r in decode(p.payload, KEYS, topic=p.topic).rows]
    (row,) = [r for r in rows if r.card.card_no == card_no]
    return row.card


def test_controls_are_stored_published_and_accepted_by_a_sites_model(world: Ledger):
    card = master.change_card_controls(world, CARD, products=frozenset({"DT", "AI95"}), windows=[WEEKDAYS, SAT_NIGHT],
                                       station_scope=StationScope.LISTED, station_ids=[1001], on_breach=OnBreach.ALERT)
    assert (card.products, card.windows, card.station_ids) == (frozenset({"DT", "AI95"}), (WEEKDAYS, SAT_NIGHT),
                                                              frozenset({1001}))
    master.set_limit(world, CARD, Limit(7, LimitUnit.PURCHASES, Period.QUARTER, 30))
    master.set_limit(world, CARD, Limit(8, LimitUnit.KOPECKS, Period.YEAR, 9_000_000, on_breach=OnBreach.ALERT))
    stored = world.fuel_card(CARD)
    assert stored == replace(card, limits=card.limits + (Limit(7, LimitUnit.PURCHASES, Period.QUARTER, 30),
                                                         Limit(8, LimitUnit.KOPECKS, Period.YEAR, 9_000_000,
                                                               on_breach=OnBreach.ALERT)))
    got = published_card(world, CARD)
    assert got == stored
    # what a site builds its model from accepts it (the one rules check, on the replica side)
    FuelModel(products=sample.PRODUCTS, stations=world.stations(), contracts=[world.contract(1)], cards=[got])
    # KEEP leaves the rest; another scope drops the list
    card = master.change_card_controls(world, CARD, station_scope=StationScope.HOME_REGION)
    assert (card.station_scope, card.station_ids, card.products, card.on_breach) == (
        StationScope.HOME_REGION, frozenset(), frozenset({"DT", "AI95"}), OnBreach.ALERT)
    card = master.change_card_controls(world, CARD, products=None, windows=(), station_scope=StationScope.NETWORK,
                                       on_breach=OnBreach.DECLINE)
    assert world.db.scalar("SELECT controls FROM fuel_cards WHERE card_no = ?", (CARD,)) is None  # as before issue 11
    assert published_card(world, CARD) == card == replace(stored, products=None, windows=(), station_ids=frozenset(),
                                                          station_scope=StationScope.NETWORK,
                                                          on_breach=OnBreach.DECLINE)


def test_a_card_is_issued_with_its_controls(world: Ledger):
    card = replace(fuel_card(CARD2), products=frozenset({"DT"}), windows=(SAT_NIGHT,),
                   station_scope=StationScope.HOME_REGION)
    assert master.issue_fuel_card(world, card) == card
    assert world.fuel_card(CARD2) == card == published_card(world, CARD2)


def test_a_change_is_a_fuel_cards_delta(world: Ledger):
    pub = Publisher(world)
    for d in pub.pending():
        pub.mark_sent(d)
    master.change_card_controls(world, CARD, windows=[WEEKDAYS])
    (delta,) = pub.pending(Table.FUEL_CARDS)
    assert [r.card.windows for r in delta.upserts] == [(WEEKDAYS,)]


@pytest.mark.parametrize("change, says", [
    (lambda led: master.change_card_controls(led, CARD, products=frozenset()),
     "has an empty product list: it could buy nothing"),
    (lambda led: master.change_card_controls(led, CARD, windows=[TimeWindow(frozenset({0}), 600, 600)]),
     "has a time window of zero length at minute 600"),
    (lambda led: master.change_card_controls(led, CARD, windows=[TimeWindow(frozenset(), 600, 700)]),
     "has a time window with days"),
    (lambda led: master.set_limit(led, CARD, Limit(9, LimitUnit.PURCHASES, Period.DAY, -1)),
     r"limit 9 \(count of purchases\) must be a whole number in 0\.\.\d+, got -1"),
    (lambda led: master.change_card_controls(led, CARD, products=frozenset({"DT", "KEROSENE"})),
     "allows product 'KEROSENE' the network does not sell"),
    (lambda led: master.change_card_controls(led, CARD, station_scope=StationScope.LISTED, station_ids=[1000, 4242]),
     "lists unknown station 4242"),
    (lambda led: master.change_card_controls(led, CARD, station_scope=StationScope.LISTED),
     "may buy only at listed stations but lists none"),
    (lambda led: master.change_card_controls(led, CARD, station_ids=[1000]),
     "lists stations but its station restriction is NETWORK"),
    (lambda led: master.set_limit(led, CARD, Limit(9, LimitUnit.PURCHASES, Period.TRANSACTION, 3)),
     "limit 9 counts purchases per transaction: give it a period"),
    (lambda led: master.change_card_controls(led, CARD, on_breach=2),
     "unknown on-breach action 2"),
    (lambda led: master.change_card_controls(led, CARD, windows=[(0, 600, 700)]),
     "time windows are a tuple of TimeWindow"),
    (lambda led: master.issue_fuel_card(led, replace(fuel_card(CARD2), products=frozenset())),
     "has an empty product list"),
    (lambda led: master.issue_fuel_card(led, replace(fuel_card(CARD2, limits=()), groups=frozenset({ProductGroup.SHOP}),
                                                     products=frozenset({"DT"}))),
     "allows product 'DT' of group FUEL, which the card's product groups exclude"),
])
def test_bad_rules_are_refused_naming_the_rule_and_nothing_changes(world: Ledger, change, says):
    before = dump(world)
    with pytest.raises(InvalidInput, match=says):
        change(world)
    assert dump(world) == before


def test_groups_and_products_stay_consistent(world: Ledger):
    master.change_fuel_card(world, CARD, groups=[ProductGroup.FUEL, ProductGroup.SHOP])
    master.change_card_controls(world, CARD, products=frozenset({"SHOP", "DT"}))
    master.remove_limit(world, CARD, 4)  # the shop group's limit: the groups check would come first
    before = dump(world)
    with pytest.raises(InvalidInput, match="allows product 'SHOP' of group SHOP, which the card's product groups exclude"):
        master.change_fuel_card(world, CARD, groups=[ProductGroup.FUEL])
    assert dump(world) == before
    with pytest.raises(Conflict, match="allows product SHOP and may not buy hotel"):
        master.put_product(world, Product("SHOP", "Shop goods", ProductGroup.HOTEL))
    assert dump(world) == before


def test_every_fuel_card_of_a_plain_ledger_reads_as_before(world: Ledger):
    assert world.db.scalar("SELECT controls FROM fuel_cards WHERE card_no = ?", (CARD,)) is None
    assert world.fuel_card(CARD) == fuel_card() and published_card(world, CARD) == fuel_card()
    assert fuel_card().expires_on == date(2028, 12, 31)
