"""The native evaluator against the reference: generated models, generated request streams,
every answer and the state after each step must be equal (hypothesis)."""

from __future__ import annotations

from datetime import date

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from authz.batch import ClubQuoteBatch, FuelBatch
from authz.club_model import (AccrualRate, ClubAccount, ClubCard, ClubCardKind, ClubModel,
                              ClubPayment, ClubReturn, ClubRules, ClubSale, ClubStatus, ClubTopUp,
                              KindCaps, PointLot, SaleLine, default_categories)
from authz.errors import RequestError
from authz.fuel_model import (CardStatus, Contract, DiscountKind, DiscountRule, DiscountWhere,
                              FuelCard, FuelModel, FuelRequest, Limit, LimitCounter, LimitUnit, OnBreach,
                              Period, Product, ProductGroup, Scope, Station, StationScope, Tariff,
                              TimeWindow)
from authz.localtime import add_months_utc
from authz.reference import ReferenceClubEvaluator, ReferenceFuelEvaluator
from native import NativeClubEvaluator, NativeFuelEvaluator

ZONES = ("Europe/Kaliningrad", "Europe/Moscow", "Asia/Vladivostok", "America/New_York",
         "Australia/Lord_Howe", "Asia/Kathmandu", "Pacific/Chatham", "UTC")
T0 = 1_790_000_000  # 2026-09-21
times = st.integers(T0 - 400 * 86_400, T0 + 400 * 86_400)
PRODUCTS = (Product("A", "a", ProductGroup.FUEL), Product("B", "b", ProductGroup.FUEL),
            Product("W", "w", ProductGroup.CAR_WASH), Product("S", "s", ProductGroup.SHOP))
ALL_GROUPS = frozenset(ProductGroup)
# mostly everything, so that decisions get past the yes/no checks to the arithmetic
groups = st.one_of(st.just(ALL_GROUPS), st.just(ALL_GROUPS), st.frozensets(st.sampled_from(list(ProductGroup))))
mostly_active = st.sampled_from([CardStatus.ACTIVE] * 6 + [CardStatus.BLOCKED])
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


on_breach = st.sampled_from([OnBreach.DECLINE, OnBreach.DECLINE, OnBreach.ALERT])
#: minutes near the edges of a day, and any
minutes = st.sampled_from([0, 1, 359, 360, 1320, 1439]) | st.integers(0, 1439)


@st.composite
def time_windows(draw) -> TimeWindow:
    """A window of one or more weekdays; about half of them cross midnight."""
    start = draw(minutes)
    end = draw((minutes | st.just(1440)).filter(lambda e: e != start and e > 0))
    return TimeWindow(draw(st.frozensets(st.integers(0, 6), min_size=1)), start, end)


@st.composite
def card_controls(draw, card_groups, station_ids, products=PRODUCTS, always: bool = False) -> dict:
    """FuelCard keyword arguments for the fleet manager's controls: none a quarter of the
    time (unless ``always``), else a product list within the card's groups, time windows, a
    station restriction, and what a breach does."""
    if not always and draw(st.integers(0, 3)) == 0:
        return {}
    allowed = [p.code for p in products if p.group in card_groups]
    products = None
    if allowed and draw(st.booleans()):
        products = draw(st.frozensets(st.sampled_from(allowed), min_size=1))
    windows = tuple(draw(st.lists(time_windows(), max_size=3))) if draw(st.booleans()) else ()
    scope = draw(st.sampled_from(list(StationScope)))
    ids = draw(st.frozensets(st.sampled_from(station_ids), min_size=1)) if scope is StationScope.LISTED else frozenset()
    return {"products": products, "windows": windows, "station_scope": scope, "station_ids": ids,
            "on_breach": draw(on_breach)}


@st.composite
def fuel_models(draw, controls: bool = False) -> FuelModel:
    """Small fuel models that still reach every rule: few cards, stations, limits, zones
    (``controls``: every card has some of the fleet manager's controls)."""
    n_st = draw(st.integers(1, 3))
    stations = []
    for s in range(n_st):
        prices = draw(st.dictionaries(st.sampled_from([p.code for p in PRODUCTS]),
                                      st.integers(0, 300_000), min_size=2, max_size=4))
        stations.append(Station(s + 1, draw(st.integers(0, 2)), draw(groups), prices,
                                draw(st.integers(1, 300_000))))
    contracts = []
    for c in range(draw(st.integers(1, 3))):
        contracts.append(Contract(
            c + 1, draw(st.sampled_from(ZONES)), draw(st.integers(0, 2)), draw(st.sampled_from(list(Tariff))),
            draw(st.integers(-10_000, 2_000_000)), draw(st.integers(0, 100_000)),
            tuple(draw(st.lists(st.integers(1, n_st), max_size=3, unique=True)))))
    discounts = draw(st.lists(st.builds(
        DiscountRule, st.sampled_from(list(Tariff)), st.sampled_from([p.code for p in PRODUCTS]),
        st.sampled_from(list(DiscountWhere)), st.just(DiscountKind.KOP_PER_L), st.integers(0, 1_000)), max_size=6))
    discounts += draw(st.lists(st.builds(
        DiscountRule, st.sampled_from(list(Tariff)), st.sampled_from([p.code for p in PRODUCTS]),
        st.sampled_from(list(DiscountWhere)), st.just(DiscountKind.PERCENT_BP), st.integers(0, 10_000)), max_size=4))
    cards, counters = [], {}
    for i in range(draw(st.integers(1, 4))):
        no = f"70058300000000{i:02d}"
        limits = []
        for lid in range(draw(st.integers(0, 4))):
            scope = draw(st.sampled_from(list(Scope)))
            unit = draw(st.sampled_from(list(LimitUnit)))
            period = draw(st.sampled_from([p for p in Period if unit is not LimitUnit.PURCHASES or p is not Period.TRANSACTION]))
            amount = draw(st.integers(0, 4)) if unit is LimitUnit.PURCHASES else draw(st.integers(0, 300_000))
            lim = Limit(lid + 1, unit, period, amount, scope,
                        group=draw(st.sampled_from(list(ProductGroup))) if scope is Scope.GROUP else None,
                        product=draw(st.sampled_from([p.code for p in PRODUCTS])) if scope is Scope.PRODUCT else None,
                        on_breach=draw(on_breach))
            limits.append(lim)
            if draw(st.booleans()):
                spent = draw(st.integers(0, 5)) if unit is LimitUnit.PURCHASES else draw(st.integers(0, 400_000))
                counters[(no, lim.limit_id)] = LimitCounter(spent, draw(st.integers(20_300, 20_800)))
        card_groups = draw(groups)
        cards.append(FuelCard(no, draw(st.integers(1, len(contracts))),
                              date.fromordinal(draw(st.integers(date(2025, 9, 1).toordinal(), date(2028, 9, 1).toordinal()))),
                              card_groups, tuple(limits), status=draw(mostly_active),
                              **draw(card_controls(card_groups, [s.station_id for s in stations], always=controls))))
    stop = draw(st.lists(st.sampled_from([c.card_no for c in cards]), max_size=1)) if draw(st.booleans()) else []
    return FuelModel(products=PRODUCTS, stations=stations, contracts=contracts, cards=cards,
                     discounts=discounts, stop_list=stop, counters=counters)


@st.composite
def fuel_steps(draw, model: FuelModel):
    """(request, fraction of the authorized volume delivered, or None for no completion)."""
    steps = []
    t = draw(times)
    for _ in range(draw(st.integers(1, 12))):
        t += draw(st.sampled_from([0, 1, 3_600, 86_400, 7 * 86_400]) | st.integers(0, 3 * 86_400))
        preset = draw(st.sampled_from(("none", "volume", "amount")))
        steps.append((FuelRequest(
            draw(st.sampled_from([c.card_no for c in model.cards])),
            draw(st.sampled_from([s.station_id for s in model.stations])),
            draw(st.sampled_from([p.code for p in PRODUCTS])), t,
            draw(st.integers(1, 400_000)) if preset == "volume" else None,
            draw(st.integers(1, 3_000_000)) if preset == "amount" else None),
            draw(st.none() | st.integers(0, 100))))
    return steps


@SETTINGS
@given(st.data())
def test_fuel_native_agrees_with_reference(data):
    """Every decision, completion, balance and counter is the same, step after step."""
    model = data.draw(fuel_models())
    ref, nat = ReferenceFuelEvaluator(model), NativeFuelEvaluator(model)
    steps = data.draw(fuel_steps(model))
    for req, pct in steps:
        d_ref, d_nat = ref.authorize(req), nat.authorize(req)
        assert d_nat == d_ref, req
        event(f"fuel {d_ref.reason.name}")
        for e in d_ref.exceptions:
            event(f"fuel exception {e.reason.name}")
        if pct is not None and d_ref.approved:
            delivered = d_ref.volume_ml * pct // 100
            assert nat.complete(req, d_nat, delivered) == ref.complete(req, d_ref, delivered)
    for c in model.contracts:
        assert nat.balance_kop(c.contract_id) == ref.balance_kop(c.contract_id)
    for card in model.cards:
        for lim in card.limits:
            assert nat.counter(card.card_no, lim.limit_id) == ref.counter(card.card_no, lim.limit_id)
    batch = FuelBatch.from_requests(model, [r for r, _ in steps])
    b_ref, b_nat = ref.authorize_batch(batch), nat.authorize_batch(batch)
    for name in b_ref.__slots__:
        assert getattr(b_nat, name) == getattr(b_ref, name), name


@SETTINGS
@given(st.data())
def test_fuel_controls_native_agrees_with_reference(data):
    """The same, with the fleet manager's controls on every card (product lists, station
    restrictions, time windows crossing midnight, alerting rules and limits)."""
    model = data.draw(fuel_models(controls=True))
    ref, nat = ReferenceFuelEvaluator(model), NativeFuelEvaluator(model)
    steps = data.draw(fuel_steps(model))
    for req, pct in steps:
        d_ref = ref.authorize(req)
        assert nat.authorize(req) == d_ref, req
        event(f"fuel {d_ref.reason.name}" + "".join(f" +{e.reason.name}" for e in d_ref.exceptions))
        if pct is not None and d_ref.approved:
            delivered = d_ref.volume_ml * pct // 100
            assert nat.complete(req, d_ref, delivered) == ref.complete(req, d_ref, delivered)
    batch = FuelBatch.from_requests(model, [r for r, _ in steps])
    b_ref, b_nat = ref.authorize_batch(batch), nat.authorize_batch(batch)
    for name in b_ref.__slots__:
        assert getattr(b_nat, name) == getattr(b_ref, name), name


@SETTINGS
@given(st.data())
def test_fuel_malformed_requests_rejected_by_both(data):
    """Malformed requests raise RequestError in both implementations and change nothing."""
    model = data.draw(fuel_models())
    ref, nat = ReferenceFuelEvaluator(model), NativeFuelEvaluator(model)
    card = model.cards[0].card_no
    req = FuelRequest(
        data.draw(st.sampled_from([card, "0000", "", 12])), data.draw(st.sampled_from([1, 999, "1"])),
        data.draw(st.sampled_from(["A", "Z", None])), data.draw(st.sampled_from([T0, -1, 2**40, T0 * 1.0, True])),
        data.draw(st.sampled_from([None, 0, -5, 10**10, 1000, 1.5])),
        data.draw(st.sampled_from([None, 0, -5, 10**13, 1000])))
    outcomes = []
    for ev in (ref, nat):
        try:
            outcomes.append(ev.authorize(req))
        except RequestError:
            outcomes.append("error")
    assert outcomes[0] == outcomes[1]


CLUB_ZONES = ("Europe/Moscow", "Asia/Vladivostok", "UTC")


@st.composite
def club_models(draw) -> ClubModel:
    """Small club models: custom rates and caps, a few accounts with lots around T0."""
    cats = default_categories()
    rates = tuple(draw(st.lists(st.builds(
        AccrualRate, st.sampled_from(["store", "online", "*"]), st.sampled_from(["cash", "bank_card", "*"]),
        st.integers(0, 2_000)), max_size=3))) + (AccrualRate("*", "*", 1000),)
    rules = ClubRules(
        categories=cats, accrual_rates=rates, channels=("store", "online"), payment_methods=("cash", "bank_card"),
        redemption_cap_bp=draw(st.sampled_from([3000, 0, 10_000, 2500])),
        maturity_s=draw(st.sampled_from([3 * 86_400, 0, 60])), expiry_months=draw(st.integers(0, 4)),
        caps={ClubCardKind.IDENTIFIED: KindCaps(10_000_000, 100_000_000),
              ClubCardKind.UNIDENTIFIED: KindCaps(draw(st.integers(0, 1_500_000)), draw(st.integers(0, 4_000_000)))},
        tz=draw(st.sampled_from(CLUB_ZONES)))
    accounts, cards = [], []
    for a in range(draw(st.integers(1, 3))):
        lots = []
        for _ in range(draw(st.integers(0, 4))):
            at = T0 - draw(st.integers(0, 150 * 86_400))
            lots.append(PointLot(draw(st.integers(0, 5)), draw(st.integers(1, 3_000)),
                                 at + rules.maturity_s, max(at + rules.maturity_s, add_months_utc(at, 3))))
        accounts.append(ClubAccount(a + 1, draw(st.sampled_from(list(ClubCardKind))), draw(st.booleans()),
                                    draw(st.sampled_from([ClubStatus.ACTIVE] * 4 + [ClubStatus.BLOCKED])),
                                    draw(st.integers(0, 1_500_000)), draw(st.integers(678, 682)),
                                    draw(st.integers(0, 4_000_000)), tuple(lots)))
        cards.append(ClubCard(f"29900000000{a}{a}", a + 1,
                              draw(st.sampled_from([ClubStatus.ACTIVE] * 4 + [ClubStatus.BLOCKED]))))
    return ClubModel(rules=rules, accounts=accounts, cards=cards)


@st.composite
def club_ops(draw, model: ClubModel):
    """A stream of quotes-then-commits, returns of earlier sales, and top-ups, in time order."""
    ops = []
    t = T0 + draw(st.integers(-5 * 86_400, 5 * 86_400))
    for n in range(draw(st.integers(1, 10))):
        t += draw(st.integers(0, 40 * 86_400))
        card = draw(st.sampled_from([c.card_no for c in model.cards]))
        kind = draw(st.sampled_from(("sale", "sale", "return", "topup")))
        if kind == "sale":
            lines = tuple(SaleLine("x", draw(st.sampled_from([c.code for c in model.rules.categories])),
                                   draw(st.integers(0, 600_000))) for _ in range(draw(st.integers(1, 4))))
            ops.append(("sale", ClubSale(card, lines, t, draw(st.sampled_from(model.rules.channels)),
                                         draw(st.sampled_from(model.rules.payment_methods))),
                        draw(st.floats(0, 1.2)), draw(st.integers(0, 100)), 100 + n))
        elif kind == "return":
            ops.append(("return", card, t, 100 + n, draw(st.integers(1, 100))))
        else:
            ops.append(("topup", ClubTopUp(card, draw(st.integers(1, 2_000_000)), t)))
    return ops


def _run_club_op(ev, op, sales: dict):
    """Apply one generated operation; returns its result (or "error")."""
    try:
        if op[0] == "sale":
            _, sale, redeem_share, card_pct, txn = op
            q = ev.quote(sale)
            points = int(q.max_redeem_points * redeem_share) if q.max_redeem_points else int(redeem_share)
            rest = q.total_kop - points * 100
            from_card = max(0, rest) * card_pct // 100 if card_pct > 50 else 0
            pay = ClubPayment(points, from_card, rest - from_card)
            c = ev.commit(sale, pay, txn)
            if c.approved:
                sales.setdefault(sale.card_no, []).append((txn, q.total_kop, c, from_card))
            return q, c
        if op[0] == "return":
            _, card, t, rid, pct = op
            if not sales.get(card):
                return None
            txn, total, c, from_card = sales[card][-1]
            return ev.return_sale(ClubReturn(card, rid, t, txn, total, c.accrued_points, c.redeemed_points,
                                             from_card, max(1, total * pct // 100)))
        return ev.top_up(op[1])
    except RequestError:
        return "error"


@SETTINGS
@given(st.data())
def test_club_native_agrees_with_reference(data):
    """Quotes, commits, returns, top-ups and account states are the same, step after step."""
    model = data.draw(club_models())
    ref, nat = ReferenceClubEvaluator(model), NativeClubEvaluator(model)
    ops = data.draw(club_ops(model))
    sales_ref: dict = {}
    sales_nat: dict = {}
    for op in ops:
        got = _run_club_op(ref, op, sales_ref)
        assert _run_club_op(nat, op, sales_nat) == got, op
        event(f"club {op[0]} " + ("error" if got == "error" else type(got).__name__ if got is not None else "none")
              + ("" if not isinstance(got, tuple) else f" {got[1].reason.name}")
              + (f" {got.reason.name}" if hasattr(got, "reason") else ""))
        for a in model.accounts:
            assert nat.account(a.account_id) == ref.account(a.account_id)
    quotable = [op[1] for op in ops if op[0] == "sale"]
    if quotable:
        batch = ClubQuoteBatch.from_sales(model, quotable)
        b_ref, b_nat = ref.quote_batch(batch), nat.quote_batch(batch)
        for name in b_ref.__slots__:
            assert getattr(b_nat, name) == getattr(b_ref, name), name


@SETTINGS
@given(st.integers(0, 7_258_118_400), st.sampled_from(ZONES), st.integers(0, 40))
def test_calendar_arithmetic_agrees(t, tz, months):
    """Local days (zoneinfo vs the native transition tables) and month addition agree
    across 1970..2200 in odd zones (half-hour and 45-minute offsets, DST both hemispheres)."""
    model = FuelModel(products=PRODUCTS[:1], stations=[Station(1, 0, frozenset({ProductGroup.FUEL}), {"A": 1000})],
                      contracts=[Contract(1, tz, 0, Tariff.REGIONAL, 10**9)],
                      cards=[FuelCard("1234567", 1, date(2200, 1, 1), frozenset({ProductGroup.FUEL}),
                                      (Limit(1, LimitUnit.MILLILITRES, Period.DAY, 10**6),))])
    ref, nat = ReferenceFuelEvaluator(model), NativeFuelEvaluator(model)
    req = FuelRequest("1234567", 1, "A", t, preset_volume_ml=1000)
    d = ref.authorize(req)
    assert nat.complete(req, nat.authorize(req), 1000) == ref.complete(req, d, 1000)
    rules = ClubRules(expiry_months=months, maturity_s=0, tz=tz)
    cm = ClubModel(rules=rules, accounts=[ClubAccount(1, ClubCardKind.IDENTIFIED)], cards=[ClubCard("1", 1)])
    sale = ClubSale("1", (SaleLine("x", "shoes", 100_000),), min(t, 7_000_000_000))
    assert NativeClubEvaluator(cm).commit(sale, ClubPayment(money_kop=100_000), 1) == \
        ReferenceClubEvaluator(cm).commit(sale, ClubPayment(money_kop=100_000), 1)


@SETTINGS
@given(st.data())
def test_stop_list_changes_agree(data):
    """Blocks and unblocks at run time (host deltas) change decisions the same way in both."""
    model = data.draw(fuel_models())
    ref, nat = ReferenceFuelEvaluator(model), NativeFuelEvaluator(model)
    numbers = [c.card_no for c in model.cards] + ["7005849999999999"]
    for req, _ in data.draw(fuel_steps(model)):
        no = data.draw(st.sampled_from(numbers))
        listed = data.draw(st.booleans())
        assert nat.set_stop_listed(no, listed) == ref.set_stop_listed(no, listed)
        assert nat.on_stop_list(no) == ref.on_stop_list(no) == listed
        d = ref.authorize(req)
        assert nat.authorize(req) == d
        if ref.on_stop_list(req.card_no):
            assert d.reason.name == "STOP_LIST"
