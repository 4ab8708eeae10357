"""The site's replica built from the host's tables and following their updates at run time
(terminal.replica.Replica.from_rows / apply_update), on both evaluators."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import pytest

from authz import sample
from authz.club_model import ClubModel, ClubStatus
from authz.errors import RequestError
from authz.fuel_model import (
    CardStatus,
    FuelModel,
    FuelRequest,
    Limit,
    LimitCounter,
    LimitUnit,
    Period,
)
from authz.reasons import Reason
from terminal.follower import FullSnapshot
from terminal.replica import Replica, ReplicaUpdateError
from wire.messages import (
    ClubAccountRow,
    FuelCardRow,
    ReplicaDelta,
    StopListEntry,
    Table,
    TariffRow,
)

from ..evaluator_fixtures import (
    CLUB_CARD,
    CLUB_CARD_NEW,
    HOME,
    club_model,
    fuel_model,
    fuel_req,
    sale,
    stations,
    ts,
)

NOW = ts(2026, 6, 10, 12)
CARD = "7005830000000001"
NEW_CARD = "7005830000000777"
L100 = Limit(1, LimitUnit.MILLILITRES, Period.DAY, 100_000)


def host_rows(fuel: FuelModel | None, club: ClubModel | None) -> dict[Table, list]:
    """Every host table of ``fuel`` and ``club`` as wire rows."""
    rows: dict[Table, list] = {}
    if fuel is not None:
        by_tariff = defaultdict(list)
        for d in fuel.discounts:
            by_tariff[d.tariff].append(d)
        rows[Table.PRODUCTS] = list(fuel.products)
        rows[Table.STATIONS] = list(fuel.stations)
        rows[Table.TARIFFS] = [TariffRow(t, tuple(v)) for t, v in by_tariff.items()]
        rows[Table.CONTRACTS] = list(fuel.contracts)
        rows[Table.FUEL_CARDS] = [FuelCardRow(c, tuple(sorted(
            (lim.limit_id, fuel.counters[(c.card_no, lim.limit_id)]) for lim in c.limits
            if (c.card_no, lim.limit_id) in fuel.counters))) for c in fuel.cards]
        rows[Table.STOP_LIST] = [StopListEntry(no, 1) for no in sorted(fuel.stop_list)]
    if club is not None:
        cards = defaultdict(list)
        for c in club.cards:
            cards[c.account_id].append(c)
        rows[Table.CLUB_RULES] = [club.rules]
        rows[Table.CLUB_ACCOUNTS] = [ClubAccountRow(a, tuple(cards[a.account_id])) for a in club.accounts]
    return rows


def _replica(impl, **kw) -> Replica:
    rows = host_rows(fuel_model(limits=(L100,), **kw), club_model(balance_kop=50_000))
    return Replica.from_rows(rows, impl=impl, versions={t: 1 for t in Table})


def delta(table: Table, *upserts, deletes=(), frm: int = 1) -> ReplicaDelta:
    return ReplicaDelta(table, frm, frm + 1, tuple(upserts), tuple(deletes))


def test_from_rows_decides_as_the_models_do(impl):
    fuel, club = sample.fuel_model(n_cards=300, seed=4), sample.club_model(n_accounts=60, seed=5)
    r = Replica.from_rows(host_rows(fuel, club), impl=impl)
    assert r.fuel_card_count == len(fuel.cards) and len(r.club_model.cards) == len(club.cards)
    direct = Replica(fuel, club, impl="reference")
    st = fuel.stations[0]
    for c in fuel.cards[:100]:
        for code in st.prices_kop_per_l:
            req = FuelRequest(c.card_no, st.station_id, code, NOW)
            assert r.fuel.authorize(req) == direct.fuel.authorize(req)
    for c in club.cards[:50]:
        s = sale(NOW, ("shoes", 100_000), card_no=c.card_no)
        assert r.club.quote(s) == direct.club.quote(s)


def test_a_business_the_site_does_not_run_is_not_built(impl):
    rows = host_rows(fuel_model(), club_model())
    till_only = Replica.from_rows(rows, fuel=False, impl=impl)
    assert till_only.fuel is None and till_only.club is not None
    pump_only = Replica.from_rows({t: v for t, v in rows.items() if t not in (Table.CLUB_RULES, Table.CLUB_ACCOUNTS)},
                                  club=False, impl=impl)
    assert pump_only.club is None and pump_only.fuel is not None
    till_only.apply_update(delta(Table.FUEL_CARDS, FuelCardRow(fuel_model().cards[0])))  # counted, not applied
    assert till_only.table_versions[Table.FUEL_CARDS] == 2


def test_inconsistent_rows_are_refused(impl):
    rows = host_rows(fuel_model(), None)
    rows[Table.FUEL_CARDS].append(FuelCardRow(replace(fuel_model().cards[0], card_no=NEW_CARD, contract_id=9)))
    with pytest.raises(ReplicaUpdateError, match="unknown contract"):
        Replica.from_rows(rows, club=False, impl=impl)


def test_each_fuel_table_changes_the_next_decision(impl):
    r = _replica(impl)
    card = fuel_model(limits=(L100,)).cards[0]
    assert r.fuel.authorize(fuel_req(NOW)).volume_ml == 100_000
    # a lowered limit, with the host's counter
    r.apply_update(delta(Table.FUEL_CARDS, FuelCardRow(replace(card, limits=(replace(L100, amount=30_000),)),
                                                       ((1, LimitCounter(5_000, 20_614)),))))
    assert r.fuel.authorize(fuel_req(NOW)).volume_ml == 25_000
    # a new card
    r.apply_update(delta(Table.FUEL_CARDS, FuelCardRow(replace(card, card_no=NEW_CARD)), frm=2))
    assert r.has_fuel_card(NEW_CARD) and r.fuel.authorize(fuel_req(NOW, card_no=NEW_CARD)).volume_ml == 100_000
    # a new price
    home = stations()[0]
    r.apply_update(delta(Table.STATIONS, replace(home, prices_kop_per_l={**home.prices_kop_per_l, "AI95": 6000})))
    assert r.fuel.authorize(fuel_req(NOW, volume=10_000)).amount_kop == 60_000
    # a contract with less money
    contract = fuel_model().contracts[0]
    r.apply_update(delta(Table.CONTRACTS, replace(contract, balance_kop=120_000)))
    assert r.fuel.authorize(fuel_req(NOW)).volume_ml == 20_000
    # a tariff
    from authz.fuel_model import DiscountKind, DiscountRule, DiscountWhere, Tariff
    rule = DiscountRule(Tariff.TRANSIT, "AI95", DiscountWhere.NETWORK, DiscountKind.KOP_PER_L, 1000)
    r.apply_update(delta(Table.TARIFFS, TariffRow(Tariff.TRANSIT, (rule,))))
    assert r.fuel.authorize(fuel_req(NOW)).unit_price_kop_per_l == 5000
    # a block, then the card gone
    r.apply_update(delta(Table.STOP_LIST, StopListEntry(CARD, NOW)))
    assert r.fuel.authorize(fuel_req(NOW)).reason is Reason.STOP_LIST
    r.apply_update(delta(Table.FUEL_CARDS, deletes=(CARD,), frm=3))
    assert not r.has_fuel_card(CARD)
    with pytest.raises(RequestError):
        r.fuel.authorize(fuel_req(NOW))
    assert r.table_versions[Table.FUEL_CARDS] == 4


def test_club_deltas_change_the_next_quote(impl):
    r = _replica(impl)
    acc = club_model(balance_kop=50_000).accounts[0]
    card = club_model().cards[0]
    assert r.club.quote(sale(NOW, ("shoes", 100_000))).reason is Reason.OK
    r.apply_update(delta(Table.CLUB_ACCOUNTS, ClubAccountRow(acc, (replace(card, status=ClubStatus.BLOCKED),
                                                                  replace(card, card_no=CLUB_CARD_NEW)))))
    assert r.club.quote(sale(NOW, ("shoes", 100_000))).reason is Reason.CARD_BLOCKED
    q = r.club.quote(sale(NOW, ("shoes", 100_000), card_no=CLUB_CARD_NEW))
    assert (q.reason, q.balance_kop) == (Reason.OK, 50_000)
    rules = r.club_model.rules
    r.apply_update(delta(Table.CLUB_RULES, replace(rules, accrual_rates=(replace(rules.accrual_rates[0], rate_bp=500),))))
    assert r.club.quote(sale(NOW, ("shoes", 100_000), card_no=CLUB_CARD_NEW)).accrual_points == 50


def test_a_refused_update_changes_nothing(impl):
    r = _replica(impl)
    card = fuel_model().cards[0]
    before = r.fuel.authorize(fuel_req(NOW)), r.fuel.balance_kop(1)
    good = FuelCardRow(replace(card, status=CardStatus.BLOCKED))
    bad = FuelCardRow(replace(card, card_no=NEW_CARD, contract_id=9))
    with pytest.raises(ReplicaUpdateError, match="unknown contract"):
        r.apply_update(delta(Table.FUEL_CARDS, good, bad))
    with pytest.raises(ReplicaUpdateError, match="does not follow"):
        r.apply_update(delta(Table.FUEL_CARDS, good, frm=5))
    with pytest.raises(ReplicaUpdateError, match="unknown product"):
        r.apply_update(delta(Table.PRODUCTS, deletes=("AI95",)))
    assert (r.fuel.authorize(fuel_req(NOW)), r.fuel.balance_kop(1)) == before
    assert r.table_versions[Table.FUEL_CARDS] == 1 and not r.has_fuel_card(NEW_CARD)
    r.apply_update(delta(Table.FUEL_CARDS, good))  # the version still follows
    assert r.fuel.authorize(fuel_req(NOW)).reason is Reason.CARD_BLOCKED


def test_in_flight_authorization_completes_on_its_numbers(impl):
    r = _replica(impl)
    req = fuel_req(NOW)
    d = r.fuel.authorize(req)
    home = stations()[0]
    r.apply_update(delta(Table.STATIONS, replace(home, prices_kop_per_l={**home.prices_kop_per_l, "AI95": 9000})))
    c = r.fuel.complete(req, d, 50_000)
    assert (c.amount_kop, c.volume_ml) == (250_000, 50_000)  # at 50.00, the price it was authorized at
    assert r.fuel.authorize(fuel_req(NOW, volume=1_000)).amount_kop == 9_000


def test_snapshots_replace_whole_tables(impl):
    r = _replica(impl)
    card = fuel_model(limits=(L100,)).cards[0]
    r.apply_update(FullSnapshot(Table.FUEL_CARDS, 9, (FuelCardRow(replace(card, card_no=NEW_CARD)),)))
    assert not r.has_fuel_card(CARD) and r.has_fuel_card(NEW_CARD) and r.fuel_card_count == 1
    r.apply_update(FullSnapshot(Table.STOP_LIST, 9, (StopListEntry(NEW_CARD, 1),)))
    assert r.fuel.authorize(fuel_req(NOW, card_no=NEW_CARD)).reason is Reason.STOP_LIST
    r.apply_update(FullSnapshot(Table.STOP_LIST, 10, ()))
    assert r.fuel.authorize(fuel_req(NOW, card_no=NEW_CARD)).reason is Reason.OK
    acc = club_model().accounts[0]
    r.apply_update(FullSnapshot(Table.CLUB_ACCOUNTS, 9, (ClubAccountRow(replace(acc, balance_kop=70_000),
                                                                         (club_model().cards[0],)),)))
    assert r.club.quote(sale(NOW, ("shoes", 100_000), card_no=CLUB_CARD)).balance_kop == 70_000
    assert r.table_versions[Table.CLUB_ACCOUNTS] == 9 and HOME


def test_columns_from_rows_are_the_columns_of_the_model():
    from native.compact import ClubColumns, FuelColumns
    fuel, club = sample.fuel_model(n_cards=500, seed=3), sample.club_model(n_accounts=80, seed=3)
    # odd numbers: leading zeros, letters, too long for a key
    cards = [replace(c, card_no=no) for c, no in zip(fuel.cards, ("0012", "CARD-1", "1" * 25))] + list(fuel.cards[3:])
    counters = {(cards[i].card_no if i < 3 else k[0], k[1]): v
                for k, v in fuel.counters.items() for i in [fuel.card_index[k[0]]]}
    fuel = FuelModel(products=fuel.products, stations=fuel.stations, contracts=fuel.contracts, cards=cards,
                     discounts=fuel.discounts, stop_list=set(fuel.stop_list) | {"0012", "X-9"}, counters=counters)
    rows = host_rows(fuel, club)
    cols = FuelColumns.from_rows(products=rows[Table.PRODUCTS], stations=rows[Table.STATIONS],
                                 discounts=[d for r in rows[Table.TARIFFS] for d in r.discounts],
                                 contracts=rows[Table.CONTRACTS],
                                 cards=((r.card, r.counters) for r in rows[Table.FUEL_CARDS]),
                                 stop_list=(r.card_no for r in rows[Table.STOP_LIST]))
    expected = FuelColumns.from_model(fuel)
    expected.discounts = cols.discounts  # grouped by tariff in the rows
    assert cols == expected
    club_cols = ClubColumns.from_rows(club.rules, ((r.account, r.cards) for r in rows[Table.CLUB_ACCOUNTS]))
    by_account = ClubColumns.from_model(ClubModel(rules=club.rules, accounts=club.accounts, cards=sorted(
        club.cards, key=lambda c: club.account_index[c.account_id])))
    assert club_cols == by_account
