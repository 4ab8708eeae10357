"""Every ledger effect of the edge's records, on SQLite and PostgreSQL: contract balances and
statements' entries, limit counters per period, corrections, clone detection, club accounts
(checked against the reference club evaluator that decided at the till)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from authz import sample
from authz.club_model import ClubPayment, SaleLine
from authz.fuel import period_start
from authz.localtime import day_number, local_date
from authz.reference import ReferenceClubEvaluator
from host import master
from host.ingest import ingest_batch
from host.ledger import Ledger

from .edge import CARD, CARD2, CONTRACT, T0, Site, club_world, contract, fuel_card


@pytest.fixture
def world(ledger: Ledger) -> Ledger:
    master.put_products(ledger, sample.PRODUCTS)
    master.create_contract(ledger, contract(balance_kop=10_000_000))
    master.create_contract(ledger, contract(2, balance_kop=0, tz="Asia/Vladivostok"))
    master.issue_fuel_card(ledger, fuel_card())
    master.issue_fuel_card(ledger, fuel_card(CARD2, 2))
    return ledger


def send(ledger: Ledger, site: Site, size: int = 100) -> None:
    for b in site.batches(size):
        ingest_batch(ledger, b)


# -- fuel: balances and counters -----------------------------------------------------------------

def test_completions_charge_the_contract_and_count_every_covering_limit(world: Ledger):
    s = Site("S1")
    s.fuel_sale(product="AI95", price=6_000, delivered_ml=40_000, tc=10, at=T0)
    s.fuel_sale(product="AI98", price=7_000, delivered_ml=30_000, tc=12, at=T0 + 3_600)
    s.fuel_sale(product="SHOP", price=25_000, authorized_ml=2_000, delivered_ml=2_000, tc=14, at=T0 + 7_200)
    send(world, s)
    amounts = [240_000, 210_000, 50_000]
    assert world.balance_kop(CONTRACT) == 10_000_000 - sum(amounts)
    today = local_date(T0, "Europe/Moscow")
    from authz.fuel_model import Period
    c = world.counters(CARD)
    assert c[1].spent == 70_000 and c[1].period_start == day_number(today)  # litres: fuel only
    assert c[2].spent == sum(amounts) and c[2].period_start == period_start(Period.MONTH, today)
    assert 3 not in c  # per transaction: no counter
    assert c[4].spent == 50_000  # the shop group's week limit
    assert c[5].spent == 30_000 and c[5].period_start == 0  # AI98 lifetime, in ml


def test_counters_roll_over_at_the_contracts_local_midnight(world: Ledger):
    s = Site("S1")
    # 2026-11-18 14:30 UTC is already the 19th in Vladivostok (UTC+10)
    t = 1_795_012_200
    s.fuel_sale(card_no=CARD2, contract_id=2, delivered_ml=10_000, at=t - 7_200)  # 12:30 UTC: 22:30 local, the 18th
    s.fuel_sale(card_no=CARD2, contract_id=2, delivered_ml=20_000, tc=12, at=t)   # 00:30 local, the 19th
    send(world, s)
    d18 = day_number(local_date(t - 7_200, "Asia/Vladivostok"))
    assert world.spent(CARD2, 1, d18) == 10_000
    assert world.spent(CARD2, 1, d18 + 1) == 20_000
    assert world.counters(CARD2)[1].spent == 20_000
    assert world.balance_kop(2) == -(60_000 + 120_000)  # a contract may go below zero offline


def test_purchase_counts_and_quarter_and_year_periods_are_counted_and_roll_over(world: Ledger):
    """Issue 11: a PURCHASES limit counts one per delivery of more than nothing (the rule of
    authz.fuel.count_delivery, the ledger's too); quarters and years are calendar ones in the
    contract's zone, and roll over."""
    from authz.fuel_model import Limit, LimitUnit, Period, ProductGroup, Scope
    master.set_limit(world, CARD, Limit(6, LimitUnit.PURCHASES, Period.DAY, 3))
    master.set_limit(world, CARD, Limit(7, LimitUnit.PURCHASES, Period.QUARTER, 30, Scope.GROUP, ProductGroup.FUEL))
    master.set_limit(world, CARD, Limit(8, LimitUnit.KOPECKS, Period.YEAR, 9_000_000))
    master.set_limit(world, CARD, Limit(9, LimitUnit.MILLILITRES, Period.QUARTER, 900_000))
    s = Site("S1")
    s.fuel_sale(delivered_ml=40_000, tc=10, at=T0)             # 2026-11-18 (Moscow)
    s.fuel_sale(delivered_ml=0, tc=12, at=T0 + 60)             # nothing delivered: no purchase
    s.fuel_sale(product="SHOP", price=25_000, authorized_ml=2_000, delivered_ml=1_000, tc=14, at=T0 + 120)
    new_year = 1_798_750_800 + 3_600                            # 2027-01-01 01:00 in Moscow (2026-12-31 22:00 UTC)
    s.fuel_sale(delivered_ml=10_000, tc=16, at=new_year)
    send(world, s)
    nov18, jan1 = local_date(T0, "Europe/Moscow"), local_date(new_year, "Europe/Moscow")
    assert (nov18.isoformat(), jan1.isoformat()) == ("2026-11-18", "2027-01-01")
    q4, q1 = period_start(Period.QUARTER, nov18), period_start(Period.QUARTER, jan1)
    y26, y27 = period_start(Period.YEAR, nov18), period_start(Period.YEAR, jan1)
    assert (q4, y26, q1) == (day_number(nov18.replace(month=10, day=1)), day_number(nov18.replace(month=1, day=1)),
                             day_number(jan1)) and y27 == q1
    assert world.spent(CARD, 6, day_number(nov18)) == 2  # the fuel and the shop purchase; the empty one not
    assert world.spent(CARD, 6, day_number(jan1)) == 1
    assert world.spent(CARD, 7, q4) == 1 and world.spent(CARD, 7, q1) == 1  # fuel only
    assert world.spent(CARD, 8, y26) == 240_000 + 25_000 and world.spent(CARD, 8, y27) == 60_000
    assert world.spent(CARD, 9, q4) == 40_000 and world.spent(CARD, 9, q1) == 10_000
    c = world.counters(CARD)
    assert (c[6].spent, c[7].spent, c[7].period_start, c[8].period_start) == (1, 1, q1, y27)


def test_every_purchase_is_a_contract_entry(world: Ledger):
    s = Site("S1")
    for i in range(5):
        s.fuel_sale(tc=10 + 2 * i, at=T0 + i * 1000, delivered_ml=1_000 * (i + 1))
    send(world, s, 7)
    master.top_up_contract(world, CONTRACT, 1_000_000, note="payment 17")
    entries = world.db.fetchall("SELECT kind, amount_kop FROM contract_entries WHERE contract_id = ? ORDER BY entry_id",
                                (CONTRACT,))
    assert [k for k, _ in entries] == ["opening"] + ["purchase"] * 5 + ["topup"]
    assert sum(a for _, a in entries) == world.balance_kop(CONTRACT)


# -- corrections -----------------------------------------------------------------------------------

def test_a_card_that_left_the_reader_is_a_correction_due(world: Ledger):
    s = Site("S1")
    s.fuel_sale(authorized_ml=50_000, delivered_ml=20_000, settle="absent")
    send(world, s)
    (c,) = world.corrections(CARD)
    assert c.status == "due" and c.why == "absent"
    assert c.excess == ((1, 20_000, 30_000),)  # the card's day counter is 30 L too high
    assert c.released_volume_ml == 30_000 and c.released_amount_kop == 180_000
    assert world.balance_kop(CONTRACT) == 10_000_000 - 120_000  # only the delivery is charged
    assert world.counters(CARD)[1].spent == 20_000


def test_an_unknown_write_is_settled_by_the_cards_next_counter(world: Ledger):
    s = Site("S1")
    s.fuel_sale(tc=10, settle="unknown")
    send(world, s)
    assert world.corrections(CARD)[0].status == "check_card"
    # The card comes back elsewhere; its counter shows the commit was made after all.
    unsent = s.records[-1].body["unsent_write_id"]
    s2 = Site("S2")
    s2.other("fuel.preauth", {**s.records[0].body, "card": {**s.records[0].body["card"], "expected_txn": 12}},
             at=T0 + 3_600)
    s2.other("fuel.card_committed", {"card_no": CARD, "txn_counter": 12, "write_id": unsent, "counters": []},
             at=T0 + 3_601)
    send(world, s2)
    c = world.corrections(CARD)[0]
    assert c.status == "not_needed" and c.resolved_by_record_id == s2.records[-1].record_id
    assert world.clone_alerts() == []


def test_an_unknown_write_that_was_not_made_is_due(world: Ledger):
    s = Site("S1")
    s.fuel_sale(tc=10, settle="unknown")
    s.fuel_sale(tc=11, at=T0 + 3_600)  # the card still held the reservation (TC 11): its next sale reserves 12
    send(world, s)
    assert world.corrections(CARD)[0].status == "due"


def test_a_void_with_the_card_released_is_no_correction(world: Ledger):
    s = Site("S1")
    s.fuel_sale(settle="void")
    send(world, s)
    assert world.corrections() == [] and world.balance_kop(CONTRACT) == 10_000_000


# -- clones ----------------------------------------------------------------------------------------

def test_a_genuine_card_across_sites_raises_no_alert(world: Ledger):
    a, b = Site("A"), Site("B")
    tc = 10
    for k in range(6):
        (a if k % 2 else b).fuel_sale(tc=tc, at=T0 + 3_600 * k)
        tc += 2
    send(world, b)  # B's batches first: arrival order does not matter
    send(world, a)
    assert world.clone_alerts() == []


def test_two_writes_at_one_counter_value_are_a_clone(world: Ledger):
    a, b = Site("A"), Site("B")
    a.fuel_sale(tc=20, at=T0)
    b.fuel_sale(tc=20, at=T0 + 60)  # a copy of the card, same counter, another site
    send(world, a)
    send(world, b)
    alerts = world.clone_alerts()
    conflicts = [x for x in alerts if x.kind == "tc_conflict"]
    assert {x.txn_counter for x in conflicts} == {21, 22}
    assert all(x.site_id == "B" and x.other_site_id == "A" for x in conflicts)
    assert "70**********0001" in conflicts[0].detail and CARD not in conflicts[0].detail


def test_a_counter_going_back_in_time_is_a_clone(world: Ledger):
    a, b = Site("A"), Site("B")
    a.fuel_sale(tc=50, at=T0)
    b.fuel_sale(tc=30, at=T0 + 86_400)  # a day later, a copy from long ago
    send(world, a)
    send(world, b)
    kinds = {x.kind for x in world.clone_alerts()}
    assert kinds == {"tc_backwards"}


def test_the_backwards_check_works_whatever_arrives_first(world: Ledger):
    a, b = Site("A"), Site("B")
    a.fuel_sale(tc=50, at=T0)
    b.fuel_sale(tc=30, at=T0 + 86_400)
    send(world, b)
    send(world, a)
    assert {x.kind for x in world.clone_alerts()} == {"tc_backwards"}


def test_small_clock_skew_is_tolerated(world: Ledger):
    a, b = Site("A"), Site("B")
    a.fuel_sale(tc=10, at=T0 + 300)  # A's clock is 5 minutes ahead
    b.fuel_sale(tc=12, at=T0 + 200)
    send(world, a)
    send(world, b)
    assert world.clone_alerts() == []


def test_an_edge_refusal_for_an_old_counter_is_an_alert(world: Ledger):
    s = Site("S1")
    s.other("fuel.card_refused", {"card_no": CARD, "reason": "transaction counter 4 is behind 9 already seen: "
                                                             "a copy of an older card state"})
    s.other("fuel.card_refused", {"card_no": None, "reason": "card not genuine: bad MAC"})
    send(world, s)
    (alert,) = world.clone_alerts()
    assert alert.kind == "edge_refused" and alert.card_no == CARD


def test_alerts_are_raised_once_however_often_a_batch_comes(world: Ledger):
    a, b = Site("A"), Site("B")
    a.fuel_sale(tc=20)
    b.fuel_sale(tc=20, at=T0 + 60)
    for _ in range(3):
        send(world, a)
        send(world, b)
    assert len(world.clone_alerts()) == 2


# -- club ------------------------------------------------------------------------------------------

@pytest.fixture
def club(ledger: Ledger):
    model = club_world(5)
    master.import_club_model(ledger, model)
    return model


def lines(*amounts: int, category: str = "shoes") -> tuple[SaleLine, ...]:
    return tuple(SaleLine(f"SKU{i}", category, a) for i, a in enumerate(amounts))


def host_view(ledger: Ledger, account_id: int):
    acc = ledger.club_account(account_id)
    return acc.balance_kop, acc.turnover_kop, sorted((lot.lot_id, lot.points, lot.matures_at_s, lot.expires_at_s)
                                                     for lot in acc.lots), acc.points_debt


def ref_view(ev: ReferenceClubEvaluator, account_id: int):
    st = ev.state.accounts[account_id]
    return st.balance_kop, st.turnover_kop, sorted((lot.lot_id, lot.points, lot.matures_at_s, lot.expires_at_s)
                                                   for lot in st.lots), 0


def test_club_operations_leave_the_account_as_the_till_left_it(ledger: Ledger, club):
    ev = ReferenceClubEvaluator(club)
    s = Site("S1")
    card = club.cards[0].card_no
    aid = club.cards[0].account_id
    t = T0 + 86_400
    s.club_topup(ev, card, 500_000, t)
    sale = s.club_commit(ev, card, lines(349_900, 29_900), t + 10, ClubPayment(points=0, card_balance_kop=100_000,
                                                                               money_kop=279_800), txn_no=9001)
    spendable = ev.quote(replace(sample.club_sales(club, 1).__next__(), card_no=card, lines=lines(100_000),
                                 now_utc_s=t + 20)).max_redeem_points
    s.club_commit(ev, card, lines(100_000), t + 20, ClubPayment(points=spendable, money_kop=100_000 - 100 * spendable),
                  txn_no=9002)
    s.club_return(ev, sale, 29_900, t + 30, return_id=9003)
    send(ledger, s, 2)
    assert all(r.kind != "till.sale_declined" for r in s.records)
    assert host_view(ledger, aid) == ref_view(ev, aid)


def test_club_operations_out_of_order_reach_the_same_points(ledger: Ledger, club):
    ev = ReferenceClubEvaluator(club)
    s = Site("S1")
    from authz.club_model import ClubCardKind
    card = "2990000999993"
    aid = master.issue_club_card(ledger, card, person_id="new", kind=ClubCardKind.IDENTIFIED)
    from authz.club_model import ClubAccount, ClubCard, ClubModel
    ev = ReferenceClubEvaluator(ClubModel(rules=club.rules, accounts=[ClubAccount(aid, ClubCardKind.IDENTIFIED)],
                                          cards=[ClubCard(card, aid)]))
    t = T0 + 86_400
    before = 0
    sale = s.club_commit(ev, card, lines(199_900), t, ClubPayment(money_kop=199_900), txn_no=8001)
    s.club_return(ev, sale, 199_900, t + 60, return_id=8002)  # takes back the whole accrual
    batches = s.batches(1)
    ingest_batch(ledger, batches[1])  # the return first: its sale is not there yet -> it waits
    assert [f for _, _, f in ledger.flagged()] == ["return_waits_for_sale"]
    assert ledger.club_account(aid).points_debt == 0 and not ledger.club_account(aid).lots
    ingest_batch(ledger, batches[0])
    acc = ledger.club_account(aid)
    assert acc.points_debt == 0 and sum(lot.points for lot in acc.lots) == before
    assert ledger.flagged() == []  # applied when the sale came


def test_a_return_beyond_what_the_sale_can_still_return_is_refused_and_flagged(ledger: Ledger, club):
    """The edge's race of issue 9: two full returns of one sale, both approved at the site.
    The host applies the first and refuses the second, whatever the edge sent."""
    ev = ReferenceClubEvaluator(club)
    s = Site("S1")
    card = club.cards[1].card_no
    aid = club.cards[1].account_id
    t = T0 + 86_400
    s.club_topup(ev, card, 500_000, t)
    sale = s.club_commit(ev, card, lines(300_000), t + 10, ClubPayment(card_balance_kop=300_000), txn_no=7001)
    send(ledger, s)
    paid = ledger.club_account(aid).balance_kop
    s.records.clear()
    s.club_return(ev, sale, 300_000, t + 20, return_id=7002)
    twin = s.club_return(ev, sale, 300_000, t + 20, return_id=7003)  # approved too (the edge had the bug)
    assert twin.body["result"]["reason"] == "OK"
    later = s.club_return(ev, sale, 1, t + 30, return_id=7004)  # and one more kopeck, another batch
    first_batch, second_batch = s.batches(2)
    ingest_batch(ledger, first_batch)
    ingest_batch(ledger, second_batch)
    ingest_batch(ledger, second_batch)  # a resend changes nothing
    assert ledger.club_account(aid).balance_kop == paid + 300_000  # refunded once
    flagged = {rid: f for rid, _, f in ledger.flagged()}
    assert flagged == {twin.record_id: "return_over_sale", later.record_id: "return_over_sale"}
    issues = [i for i in ledger.issues() if i.kind == "return_over_sale"]
    assert [i.record_id for i in issues] == [twin.record_id, later.record_id]
    assert "can return only 0 kop more" in issues[0].detail


def test_partial_returns_are_applied_up_to_the_sale(ledger: Ledger, club):
    ev = ReferenceClubEvaluator(club)
    s = Site("S1")
    card = club.cards[2].card_no
    aid = club.cards[2].account_id
    start = ledger.club_account(aid).balance_kop
    t = T0 + 86_400
    s.club_topup(ev, card, 500_000, t)
    sale = s.club_commit(ev, card, lines(300_000), t + 10, ClubPayment(card_balance_kop=300_000), txn_no=6001)
    rets = [s.club_return(ev, sale, 100_000, t + 20 + i, return_id=6002 + i) for i in range(3)]
    over = s.club_return(ReferenceClubEvaluator(club), sale, 100_000, t + 30, return_id=6009)
    batches = s.batches(1)
    for b in reversed(batches[2:]):  # the returns before their sale, in any order
        ingest_batch(ledger, b)
    assert {f for _, _, f in ledger.flagged()} == {"return_waits_for_sale"}
    for b in batches[:2]:
        ingest_batch(ledger, b)
    flagged = {rid: f for rid, _, f in ledger.flagged()}
    assert flagged == {over.record_id: "return_over_sale"}  # 3 of the 4 fit, in the sale's order
    assert len(rets) == 3 and ledger.club_account(aid).balance_kop == start + 500_000  # 300,000 back of 300,000 paid


def test_declined_operations_change_nothing(ledger: Ledger, club):
    ev = ReferenceClubEvaluator(club)
    s = Site("S1")
    card = club.cards[3].card_no
    aid = club.cards[3].account_id
    before = host_view(ledger, aid)
    s.club_topup(ev, card, 10**9, T0)  # over the balance cap: declined at the till
    send(ledger, s)
    assert s.records[0].body["result"]["approved"] is False
    assert host_view(ledger, aid) == before


def test_club_records_of_an_unknown_card_are_flagged(ledger: Ledger, club):
    ev = ReferenceClubEvaluator(club)
    s = Site("S1")
    r = s.club_topup(ev, club.cards[0].card_no, 1_000, T0)
    body = {**r.body, "topup": {**r.body["topup"], "card_no": "2990999999999"}}
    s.records[-1] = replace(r, body=body)
    send(ledger, s)
    assert [f for _, _, f in ledger.flagged()] == ["unknown_club_card"]


def test_a_random_day_of_club_traffic_matches_the_reference(ledger: Ledger, club):
    """Commits, returns and top-ups decided by the reference evaluator, sent in batches: every
    account on the host ends as the till's evaluator has it."""
    ev = ReferenceClubEvaluator(club)
    rnd = random.Random(5)
    s = Site("S1")
    t = T0 + 86_400
    sales = []
    for k in range(120):
        card = club.cards[rnd.randrange(len(club.cards))].card_no
        t += rnd.randrange(60, 4_000)
        op = rnd.random()
        if op < 0.2:
            s.club_topup(ev, card, rnd.choice((10_000, 100_000, 500_000)), t)
        elif op < 0.35 and sales:
            sale = sales.pop(rnd.randrange(len(sales)))
            total = sum(line["amount_kop"] for line in sale.body["sale"]["lines"])
            s.club_return(ev, sale, rnd.randint(1, total), t, return_id=100_000 + k)
        else:
            ls = lines(*[rnd.choice((29_900, 49_900, 199_900)) for _ in range(rnd.randint(1, 3))],
                       category=rnd.choice(("shoes", "food", "toys")))
            total = sum(line.amount_kop for line in ls)
            q = ev.quote(replace(next(sample.club_sales(club, 1)), card_no=card, lines=ls, now_utc_s=t))
            pts = rnd.choice((0, q.max_redeem_points))
            from_card = min(q.balance_kop, (total - 100 * pts) // 2) if rnd.random() < 0.5 else 0
            rec = s.club_commit(ev, card, ls, t, ClubPayment(pts, from_card, total - 100 * pts - from_card),
                                txn_no=200_000 + k)
            if rec.kind == "till.sale_committed":
                sales.append(rec)
    send(ledger, s, 17)
    for acc in club.accounts:
        assert host_view(ledger, acc.account_id) == ref_view(ev, acc.account_id), acc.account_id
