"""The compact fuel replica (native.compact): columns round-trip, the columnar generator makes
the same network as authz.sample, an evaluator built from columns decides exactly like the
reference and like one built from the model, card numbers keep their leading zeros, and the
stop list holds numbers the replica does not (yet) have."""

from __future__ import annotations

from array import array
from dataclasses import replace
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz import sample
from authz.batch import FuelBatch
from authz.errors import ModelError, RequestError
from authz.fuel_model import (CardKind, Contract, FuelCard, FuelModel, FuelRequest, Limit,
                              LimitCounter, LimitUnit, Period, ProductGroup, Station, Tariff)
from authz.reasons import Reason
from authz.reference import ReferenceFuelEvaluator
from native import NativeFuelEvaluator, fuel_evaluator
from native._evaluator import _card_key, _merge_keys
from native.compact import (CompactFuelModel, FuelColumns, card_key, card_no_of, foreign_stop_keys,
                            sample_fuel_columns)
from terminal.config import load_config
from terminal.replica import Replica
from tests.test_differential import PRODUCTS, SETTINGS, T0, fuel_models, fuel_steps

FUEL = frozenset(ProductGroup)


# -- card-number keys ------------------------------------------------------------------------------

@pytest.mark.parametrize("no, key", [
    ("", 1), ("0", 10), ("12", 112), ("0012", 10012), ("012", 1012),
    ("7005830000000001", 17005830000000001), ("9" * 18, int("1" + "9" * 18)),
    ("9" * 19, 0), ("12a", 0), ("1 2", 0), ("+12", 0), ("1_2", 0), ("\u0661\u0662", 0), ("\uff11\uff12", 0),
    ("12\u00e9", 0), (12, 0), (None, 0), (b"12", 0),
])
def test_card_keys_keep_leading_zeros_and_refuse_the_rest(no, key):
    assert card_key(no) == key
    assert _card_key(no) == key  # the C twin
    if key:
        assert card_no_of(key) == no


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=22) | st.text("0123456789", max_size=22))
def test_card_key_in_c_equals_python_and_is_injective(no):
    k = card_key(no)
    assert _card_key(no) == k
    assert (k == 0) == (not (len(no) <= 18 and all("0" <= ch <= "9" for ch in no)))
    if k:
        assert 1 <= k < 2 * 10**18 and card_no_of(k) == no


def test_merge_keys_sorts_and_drops_repeats():
    assert list(_merge_keys(array("q", [1, 5, 9]), array("q", [2, 5, 10]))) == [1, 2, 5, 9, 10]
    assert list(_merge_keys(array("q", [9, 1, 1]), array("q"))) == [1, 9]
    assert list(_merge_keys(array("q"), array("q"))) == []
    assert list(foreign_stop_keys(3)) == [card_key(f"700584{i:010d}") for i in range(3)]


# -- the columnar generator is authz.sample's network ---------------------------------------------

@pytest.mark.parametrize("n_cards, n_stations, seed", [
    (0, 200, 1), (1, 200, 1), (2_000, 200, 1), (3_000, 500, 3),  # 25 stations a region: sample()'s set path
    (1_000, 7, 11), (400, 1, 2), (5_000, 45, 8)])
def test_sample_columns_are_the_sample_model(n_cards, n_stations, seed):
    cols = sample_fuel_columns(n_cards, n_stations, seed)
    assert cols == FuelColumns.from_model(sample.fuel_model(n_cards, n_stations, seed))


def test_sample_columns_are_deterministic_and_seeded():
    assert sample_fuel_columns(1_000, seed=4) == sample_fuel_columns(1_000, seed=4)
    assert sample_fuel_columns(1_000, seed=4) != sample_fuel_columns(1_000, seed=5)


# -- round trips -----------------------------------------------------------------------------------

@SETTINGS
@given(fuel_models())
def test_columns_round_trip_through_models_and_evaluators(model):
    cols = FuelColumns.from_model(model)
    again = cols.to_model()
    assert FuelColumns.from_model(again) == cols
    assert [c.card_no for c in again.cards] == [c.card_no for c in model.cards]
    assert again.stop_list == model.stop_list
    assert again.counters == {k: v for k, v in model.counters.items()}
    ev = NativeFuelEvaluator(cols)
    assert ev.columns() == cols
    assert NativeFuelEvaluator(model).columns() == cols
    view = ev.model
    assert isinstance(view, CompactFuelModel) and isinstance(view, FuelModel)
    assert list(view.cards) == list(again.cards)
    assert list(view.contracts) == list(again.contracts)
    assert dict(view.counters) == again.counters and set(view.stop_list) == set(model.stop_list)


# -- decisions: columns-built == model-built == reference -----------------------------------------

@SETTINGS
@given(st.data())
def test_evaluator_from_columns_agrees_with_reference_and_model_built(data):
    """Every decision, completion, balance and counter, step after step, and the batch."""
    model = data.draw(fuel_models())
    ref, nat, com = ReferenceFuelEvaluator(model), NativeFuelEvaluator(model), NativeFuelEvaluator(FuelColumns.from_model(model))
    steps = data.draw(fuel_steps(model))
    for req, pct in steps:
        d_ref = ref.authorize(req)
        assert nat.authorize(req) == d_ref and com.authorize(req) == d_ref, req
        if pct is not None and d_ref.approved:
            delivered = d_ref.volume_ml * pct // 100
            c_ref = ref.complete(req, d_ref, delivered)
            assert nat.complete(req, d_ref, delivered) == c_ref and com.complete(req, d_ref, delivered) == c_ref
    for c in model.contracts:
        assert com.balance_kop(c.contract_id) == ref.balance_kop(c.contract_id)
    for card in model.cards:
        for lim in card.limits:
            assert com.counter(card.card_no, lim.limit_id) == ref.counter(card.card_no, lim.limit_id)
    batch = FuelBatch.from_requests(com.model, [r for r, _ in steps])
    b_ref, b_com = ref.authorize_batch(batch), com.authorize_batch(batch)
    for name in b_ref.__slots__:
        assert getattr(b_com, name) == getattr(b_ref, name), name
    # the reference rules over the view decide as the evaluator does (what terminal.fuel relies on)
    view_ref = ReferenceFuelEvaluator(com.model)
    for req, _ in steps:
        assert view_ref.authorize(req) == com.authorize(req)


@SETTINGS
@given(st.data())
def test_malformed_requests_rejected_alike(data):
    model = data.draw(fuel_models())
    ref, com = ReferenceFuelEvaluator(model), NativeFuelEvaluator(FuelColumns.from_model(model))
    card = model.cards[0].card_no
    req = FuelRequest(
        data.draw(st.sampled_from([card, "0" + card, card[1:], "", "0000", 12, card + "x"])),
        data.draw(st.sampled_from([1, 999, "1"])), data.draw(st.sampled_from(["A", "Z", None])),
        data.draw(st.sampled_from([T0, -1, 2**40, True])), data.draw(st.sampled_from([None, 0, 1000, 1.5])),
        data.draw(st.sampled_from([None, -5, 1000])))
    outcomes = []
    for ev in (ref, com):
        try:
            outcomes.append(ev.authorize(req))
        except RequestError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]


def test_sample_network_decides_alike_built_both_ways():
    model = sample.fuel_model(5_000, 60, seed=7)
    ref, com = ReferenceFuelEvaluator(model), NativeFuelEvaluator(sample_fuel_columns(5_000, 60, seed=7))
    reqs = list(sample.fuel_requests(model, 3_000, seed=8))
    for r in reqs:
        d = ref.authorize(r)
        assert com.authorize(r) == d
        if d.approved:
            assert com.complete(r, d, d.volume_ml // 3) == ref.complete(r, d, d.volume_ml // 3)
    batch = FuelBatch.from_requests(model, reqs)
    assert com.authorize_batch(batch).reason == ref.authorize_batch(batch).reason


# -- card numbers: leading zeros, long numbers, any order -----------------------------------------

ODD_NUMBERS = ("12", "0012", "012", "", "7" * 18, "7" * 19, "12A", "99", "0", "00", "1" * 25)


def odd_model() -> FuelModel:
    """Cards numbered oddly, out of order, each on its own contract with its own balance (so a
    mix-up shows in the decision), plus a stop list of replica and foreign numbers."""
    contracts = [Contract(i + 1, "Europe/Moscow", 0, Tariff.REGIONAL, 100_000 * (i + 1)) for i in range(len(ODD_NUMBERS))]
    cards = [FuelCard(no, i + 1, date(2030, 1, 1), FUEL,
                      (Limit(7, LimitUnit.MILLILITRES, Period.DAY, 1_000 * (i + 1)),),
                      kind=CardKind.VIRTUAL if i % 2 else CardKind.PLASTIC)
             for i, no in enumerate(ODD_NUMBERS)]
    return FuelModel(products=PRODUCTS, stations=[Station(1, 0, FUEL, {"A": 5_000})], contracts=contracts,
                     cards=cards, stop_list=["0", "7" * 19, "0099", "42" * 12, "700584"],
                     counters={("012", 7): LimitCounter(300, 20_000)})


def test_lookup_with_leading_zeros_and_long_numbers():
    model = odd_model()
    cols = FuelColumns.from_model(model)
    assert set(cols.card_other.values()) == {"7" * 19, "12A", "1" * 25}
    assert cols.stop_other == {"7" * 19, "42" * 12}
    ref, com = ReferenceFuelEvaluator(model), NativeFuelEvaluator(cols)
    for i, no in enumerate(ODD_NUMBERS):
        req = FuelRequest(no, 1, "A", T0)
        d = com.authorize(req)
        assert d == ref.authorize(req)
        assert com.card_position(no) == i and com.card_number(i) == no
        assert com.card_at(i) == model.cards[i]
        if d.approved:
            assert d.volume_ml == 1_000 * (i + 1)  # its own limit: the right card was found
    for unknown in ("000012", "0120", "7" * 17, "12a", "1" * 24, "1" * 26, " 12", "12 "):
        with pytest.raises(RequestError, match="unknown card"):
            com.authorize(FuelRequest(unknown, 1, "A", T0))
        assert com.card_position(unknown) is None and unknown not in com.model.card_index
    assert com.counter("012", 7) == LimitCounter(300, 20_000) and com.counter("12", 7) is None
    with pytest.raises(KeyError):
        com.counter("0120", 7)


def test_unsorted_and_mixed_numbers_index_the_same():
    """Cards in descending order with a gap-ridden key range still find their positions."""
    nos = [f"{n:016d}" for n in (10**15 * 9, 5, 10**12, 3, 10**15, 999)] + ["00042"]
    contracts = [Contract(-5, "UTC", 0, Tariff.REGIONAL, 10**6), Contract(2**40, "UTC", 0, Tariff.REGIONAL, 7)]
    cards = [FuelCard(no, contracts[i % 2].contract_id, date(2030, 1, 1), FUEL) for i, no in enumerate(nos)]
    model = FuelModel(products=PRODUCTS, stations=[Station(1, 0, FUEL, {"A": 5_000})], contracts=contracts, cards=cards)
    com = NativeFuelEvaluator(FuelColumns.from_model(model))
    assert [com.card_position(no) for no in nos] == list(range(len(nos)))
    assert com.balance_kop(-5) == 10**6 and com.balance_kop(2**40) == 7 and com.balance_kop(2**40 * 1.0) == 7
    for bad in (0, 2**70, "x", None):
        with pytest.raises(KeyError):
            com.balance_kop(bad)


card_numbers = st.text("0123456789", max_size=20) | st.text("0123456789AZ -", min_size=1, max_size=6) | \
    st.integers(0, 10**18).map(str)


@SETTINGS
@given(st.data())
def test_odd_numbers_and_stop_lists_decide_alike(data):
    """A generated model with its cards renumbered (leading zeros, 19+ digits, letters, any
    order) and a stop list of its cards and foreign numbers: the compact evaluator finds each
    card, refuses the near misses, and decides as the reference."""
    model = data.draw(fuel_models())
    nos = data.draw(st.lists(card_numbers, min_size=len(model.cards), max_size=len(model.cards), unique=True))
    rename = {c.card_no: no for c, no in zip(model.cards, nos)}
    foreign = data.draw(st.lists(card_numbers, max_size=4))
    listed = [no for no in nos if data.draw(st.booleans())] + foreign
    model = FuelModel(products=model.products, stations=model.stations, contracts=model.contracts,
                      cards=[replace(c, card_no=rename[c.card_no]) for c in model.cards], discounts=model.discounts,
                      stop_list=listed, counters={(rename[no], lid): v for (no, lid), v in model.counters.items()})
    ref, com = ReferenceFuelEvaluator(model), NativeFuelEvaluator(FuelColumns.from_model(model))
    near = [no[1:] for no in nos] + ["0" + no for no in nos] + [no + "0" for no in nos] + foreign
    for no in nos + near:
        req = FuelRequest(no, model.stations[0].station_id, "A", T0, preset_volume_ml=1_000)
        try:
            want = ref.authorize(req)
        except RequestError as exc:
            want = str(exc)
        try:
            got = com.authorize(req)
        except RequestError as exc:
            got = str(exc)
        assert got == want, no
        assert com.on_stop_list(no) == (no in model.stop_list)
    assert com.stop_list_size == len(model.stop_list)
    assert NativeFuelEvaluator(FuelColumns.from_model(model)).columns() == FuelColumns.from_model(model)


# -- the stop list ---------------------------------------------------------------------------------

def test_stop_list_flags_replica_cards_and_keeps_the_others():
    model = odd_model()
    com = NativeFuelEvaluator(FuelColumns.from_model(model))
    assert com.authorize(FuelRequest("0", 1, "A", T0)).reason is Reason.STOP_LIST
    assert com.authorize(FuelRequest("7" * 19, 1, "A", T0)).reason is Reason.STOP_LIST
    assert com.authorize(FuelRequest("00", 1, "A", T0)).reason is not Reason.STOP_LIST
    assert com.authorize(FuelRequest("99", 1, "A", T0)).reason is not Reason.STOP_LIST  # "0099" is listed, not "99"
    for no in ("0099", "42" * 12, "700584", "0", "7" * 19):  # listed; the first three have no card here (yet)
        assert com.on_stop_list(no) and no in com.model.stop_list
    for no in ("99", "00", "42", "700585", 12, None):
        assert not com.on_stop_list(no)
    assert com.stop_list_size == len(model.stop_list) == len(com.model.stop_list)
    assert set(com.stop_list_numbers()) == set(model.stop_list)


def test_stop_keys_added_later_flag_cards_and_pad():
    model = odd_model()
    cols = FuelColumns.from_model(model).with_stop_keys(array("q", [card_key("99"), card_key("31337"), card_key("99")]))
    com = NativeFuelEvaluator(cols)
    assert com.authorize(FuelRequest("99", 1, "A", T0)).reason is Reason.STOP_LIST
    assert com.on_stop_list("31337") and com.stop_list_size == len(model.stop_list) + 2


# -- bad columns are refused with a clear error ----------------------------------------------------

def _bad(edit, match, model=None):
    cols = FuelColumns.from_model(model or odd_model())
    edit(cols)
    with pytest.raises(ModelError, match=match):
        NativeFuelEvaluator(cols)


def test_bad_columns_are_refused():
    _bad(lambda c: c.card_key.__setitem__(1, c.card_key[0]), "duplicate card")
    _bad(lambda c: c.card_contract.__setitem__(0, 99), "unknown contract")
    _bad(lambda c: c.card_nlimits.__setitem__(0, 2), "limit rows")
    _bad(lambda c: c.card_status.__setitem__(0, 3), "out of range")
    _bad(lambda c: c.ct_tz.__setitem__(0, 5), "time zone")
    _bad(lambda c: c.ct_tariff.__setitem__(0, 9), "tariff")
    _bad(lambda c: (c.ct_nchosen.__setitem__(0, 1), c.ct_chosen.__setitem__(0, 77)), "unknown station")
    _bad(lambda c: c.ct_id.__setitem__(1, c.ct_id[0]), "duplicate contract")
    _bad(lambda c: c.lim_scope.__setitem__(0, 2) or c.lim_scope_value.__setitem__(0, 40), "unknown product")
    _bad(lambda c: c.lim_amount.__setitem__(0, -1), "amount out of range")
    _bad(lambda c: c.stop_keys.append(c.stop_keys[0]), "stop list repeats")
    _bad(lambda c: c.ct_balance.pop(), "differ in length")
    _bad(lambda c: setattr(c, "tz_names", ("Mars/Olympus",)), "unknown time zone")
    _bad(lambda c: setattr(c, "card_other", {**c.card_other, 0: "0"}), "key or a number")
    with pytest.raises(ModelError, match="array of type"):
        FuelColumns(card_key=array("i"))


def test_repeated_limit_id_on_a_card_is_refused():
    cols = FuelColumns.from_model(odd_model())
    i = 0
    cols.lim_id.insert(i, 7)
    for name, value in (("lim_unit", 1), ("lim_period", 1), ("lim_scope", 0), ("lim_amount", 5), ("lim_scope_value", -1),
                        ("lim_spent", 0), ("lim_pstart", 0), ("lim_on_breach", 0)):
        getattr(cols, name).insert(i, value)
    cols.card_nlimits[0] += 1
    with pytest.raises(ModelError, match="repeats limit id 7"):
        NativeFuelEvaluator(cols)


# -- the view and the replica ----------------------------------------------------------------------

def test_view_is_a_read_only_fuel_model():
    model = sample.fuel_model(300, 20, seed=3)
    view = NativeFuelEvaluator(sample_fuel_columns(300, 20, seed=3)).model
    assert len(view.cards) == 300 and len(view.card_index) == 300 and len(view.contracts) == len(model.contracts)
    assert view.cards[-1] == model.cards[-1] and view.cards[10:12] == list(model.cards[10:12])
    assert view.card(model.cards[5].card_no) == model.cards[5]
    with pytest.raises(RequestError):
        view.card("nope")
    assert list(view.card_index) == [c.card_no for c in model.cards]
    assert view.contracts[view.contract_index[17]] == model.contracts[model.contract_index[17]]
    assert dict(view.counters) == model.counters and set(view.stop_list) == set(model.stop_list)
    assert view.product_index == model.product_index and view.station_index == model.station_index
    with pytest.raises(IndexError):
        view.cards[300]


def test_reference_impl_accepts_columns():
    cols = sample_fuel_columns(200, 20, seed=2)
    ref = fuel_evaluator(cols, "reference")
    assert isinstance(ref, ReferenceFuelEvaluator) and len(ref.model.cards) == 200


@pytest.mark.parametrize("stop_list", [0, 5_000])
def test_simulated_replica_is_the_same_compact_or_not(stop_list):
    cfg = load_config(None)
    compact = Replica.simulated(cfg, fuel_cards=3_000, club_accounts=10, stop_list=stop_list, seed=6)
    objects = Replica.simulated(cfg, fuel_cards=3_000, club_accounts=10, stop_list=stop_list, seed=6, compact=False)
    assert isinstance(compact.fuel_model, CompactFuelModel) and not isinstance(objects.fuel_model, CompactFuelModel)
    assert compact.fuel.columns() == objects.fuel.columns()
    assert compact.fuel_card_count == objects.fuel_card_count == len(compact.fuel_model.cards) == 3_000
    assert compact.fuel.stop_list_size == len(objects.fuel_model.stop_list) == max(stop_list, len(objects.fuel_model.stop_list))
    no = objects.fuel_model.cards[1234].card_no
    assert compact.fuel_card(no) == objects.fuel_card(no) == objects.fuel_model.cards[1234]
    assert compact.fuel_card_number(1234) == no and compact.has_fuel_card(no) and not compact.has_fuel_card(no + "0")
    assert compact.fuel_card("0" + no) is None
    reqs = list(sample.fuel_requests(objects.fuel_model, 500, seed=9))
    assert [compact.fuel.authorize(r) for r in reqs] == [objects.fuel.authorize(r) for r in reqs]


def test_compact_tables_are_small():
    """Packed tables of a sample network: well under 100 bytes a card (cards, their ~1.8
    limits, contracts, indexes), a handful of shared limit definitions."""
    ev = NativeFuelEvaluator(sample_fuel_columns(100_000, seed=1))
    assert ev.limit_definitions == 9
    assert ev.nbytes() < 70 * 100_000


# -- the fleet controls (issue 11) in columns -----------------------------------------------------

@SETTINGS
@given(fuel_models(controls=True))
def test_columns_with_controls_round_trip(model):
    """Product lists, windows, station restrictions and on-breach survive every path: model
    -> columns -> model, host rows -> columns, evaluator -> columns and cards."""
    cols = FuelColumns.from_model(model)
    assert cols.to_model().cards == model.cards
    rows = FuelColumns.from_rows(
        products=model.products, stations=model.stations, discounts=model.discounts, contracts=model.contracts,
        cards=((c, [(lim.limit_id, model.counters[(c.card_no, lim.limit_id)]) for lim in c.limits
                    if (c.card_no, lim.limit_id) in model.counters]) for c in model.cards),
        stop_list=model.stop_list)
    assert rows == cols
    ev = NativeFuelEvaluator(cols)
    assert ev.columns() == cols
    assert [ev.card_at(i) for i in range(ev.card_count)] == list(model.cards)


def _controlled_model() -> FuelModel:
    from authz.fuel_model import OnBreach, StationScope, TimeWindow
    card = FuelCard("7005830000000001", 1, date(2030, 1, 1), frozenset({ProductGroup.FUEL}),
                    (Limit(1, LimitUnit.PURCHASES, Period.DAY, 2),),
                    products=frozenset({"A"}), windows=(TimeWindow(frozenset({0, 4}), 1320, 360),),
                    station_scope=StationScope.LISTED, station_ids=frozenset({1}), on_breach=OnBreach.ALERT)
    return FuelModel(products=PRODUCTS, stations=[Station(1, 0, FUEL, {"A": 5000})],
                     contracts=[Contract(1, "Europe/Moscow", 0, Tariff.REGIONAL, 10**6)], cards=[card])


@pytest.mark.parametrize("column, at, value, match", [
    ("card_scope", None, None, "differ in length"),                 # one value short
    ("card_nstations", 0, 2, "more rows than there are"),
    ("cprod_pos", 0, 40, "unknown product"),
    ("cprod_pos", 0, 2, "which the card's product groups exclude"),
    ("win_end", 0, 1320, "zero length"),
    ("win_end", 0, 2000, "outside 00:00..24:00"),
    ("win_days", 0, 0, "time window with days"),
    ("win_days", 0, 255, "time window with days"),
    ("cst_id", 0, 77, "unknown station 77"),
    ("card_scope", 0, 7, "station restriction or on-breach out of range"),
    ("card_scope", 0, 1, "lists stations but its station restriction is HOME_REGION"),
    ("lim_period", 0, 0, "counts purchases per transaction"),
    ("lim_on_breach", 0, 3, "on-breach out of range"),
    ("cst_id", "append", 1, "no card owns"),
])
def test_bad_control_columns_are_refused(column, at, value, match):
    def edit(cols):
        a = getattr(cols, column)
        if at is None:
            a.pop()
        elif at == "append":
            a.append(value)
        else:
            a[at] = value
    _bad(edit, match, _controlled_model())


# -- one card-number index for both businesses (issue 11 item 3) -----------------------------------

class _Number(str):
    """A str subclass holding a card number (what a decoder or a form library may hand over)."""


def test_a_str_subclass_finds_a_fuel_card_as_it_finds_a_club_card():
    from authz.club_model import ClubAccount, ClubCard, ClubCardKind, ClubModel, ClubRules
    from native import NativeClubEvaluator
    fuel = odd_model()
    club = ClubModel(rules=ClubRules(), accounts=[ClubAccount(1, ClubCardKind.IDENTIFIED)],
                     cards=[ClubCard(c.card_no, 1) for c in fuel.cards])
    f_ev, c_ev = NativeFuelEvaluator(fuel), NativeClubEvaluator(club)
    for i, c in enumerate(fuel.cards):
        no = _Number(c.card_no)
        assert fuel.card_index[no] == i  # what a dict of str says
        assert f_ev.card_position(no) == c_ev.card_position(no) == i
        assert no in f_ev.model.card_index
    for ev in (f_ev, c_ev):
        assert ev.card_position(12) is None and ev.card_position(["12"]) is None


_RANGES = {"H": (0, 2**16 - 1), "B": (0, 255), "b": (-128, 127), "i": (-2**31, 2**31 - 1), "q": (-2**63, 2**63 - 1)}
_CONTROL_COLUMNS = [n for n, _ in FuelColumns.CONTROL_FIELDS + FuelColumns.CONTROL_ROW_FIELDS] + \
    ["lim_on_breach", "lim_unit", "lim_period", "lim_amount"]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_corrupted_control_columns_are_refused_or_decide_like_the_reference(data):
    """Any value in a control column (or a limit's unit, period, amount, on-breach), set or
    appended: the evaluator refuses the columns with a ModelError, or takes them and then
    decides exactly as the reference does on the model they stand for."""
    cols = FuelColumns.from_model(_controlled_model())
    for _ in range(data.draw(st.integers(1, 3))):
        name = data.draw(st.sampled_from(_CONTROL_COLUMNS))
        column = getattr(cols, name)
        low, high = _RANGES[column.typecode]
        value = data.draw(st.integers(low, high) | st.integers(max(low, -2), min(high, 1500)))
        if len(column) and data.draw(st.booleans()):
            column[data.draw(st.integers(0, len(column) - 1))] = value
        else:
            column.append(value)
    try:
        ev = NativeFuelEvaluator(cols)
    except ModelError:
        return
    ref = ReferenceFuelEvaluator(ev.columns().to_model())
    for t in range(T0, T0 + 7 * 86_400, 5 * 3_600):
        for product in ("A", "B"):
            req = FuelRequest("7005830000000001", 1, product, t)
            assert ev.authorize(req) == ref.authorize(req)
