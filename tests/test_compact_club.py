"""The compact club replica (native.compact.ClubColumns): columns round-trip, the columnar
generator makes the same chain as authz.sample.club_model, an evaluator built from columns
decides exactly like the reference and like one built from the model (step after step, the
lot pool growing), club card numbers keep their leading zeros, and the ClubModel view answers
what the terminal asks of a club model."""

from __future__ import annotations

from array import array
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz import club, sample
from authz.batch import ClubQuoteBatch
from authz.club_model import (ClubAccount, ClubCard, ClubCardKind, ClubModel, ClubPayment, ClubRules,
                              ClubSale, ClubState, ClubTopUp, PointLot, SaleLine)
from authz.errors import ModelError, RequestError
from authz.reasons import Reason
from authz.reference import ReferenceClubEvaluator
from native import NativeClubEvaluator, club_evaluator
from native.compact import ClubColumns, CompactClubModel, card_key, sample_club_columns
from terminal.config import load_config
from terminal.replica import Replica
from tests.test_differential import SETTINGS, T0, _run_club_op, club_models, club_ops


def oldest_first(m: ClubModel) -> ClubModel:
    """``m`` with each account's lots in the evaluator's order: by expiry, then id (stable)."""
    accounts = [replace(a, lots=tuple(sorted(a.lots, key=lambda lot: (lot.expires_at_s, lot.lot_id))))
                for a in m.accounts]
    return ClubModel(rules=m.rules, accounts=accounts, cards=m.cards)


# -- the columnar generator is authz.sample's chain ------------------------------------------------

@pytest.mark.parametrize("n_accounts, seed, now", [
    (0, 3, sample.DAY_START_UTC), (1, 3, sample.DAY_START_UTC), (5_000, 3, sample.DAY_START_UTC),
    (3_000, 2, sample.DAY_START_UTC), (2_000, 11, T0), (500, 7, 1_711_843_200)])  # 2024-03-31: month ends clamp
def test_sample_columns_are_the_sample_model(n_accounts, seed, now):
    cols = sample_club_columns(n_accounts, seed, now)
    model = sample.club_model(n_accounts, seed, now)
    assert cols == ClubColumns.from_model(model)
    again = cols.to_model()
    assert again.accounts == model.accounts and again.cards == model.cards and again.rules == model.rules


def test_sample_columns_are_deterministic_and_seeded():
    assert sample_club_columns(1_000, seed=4) == sample_club_columns(1_000, seed=4)
    assert sample_club_columns(1_000, seed=4) != sample_club_columns(1_000, seed=5)
    assert sample_club_columns(10).card_no(9) == sample.club_card_number(9)


# -- round trips -----------------------------------------------------------------------------------

@SETTINGS
@given(club_models())
def test_columns_round_trip_through_models_and_evaluators(model):
    cols = ClubColumns.from_model(model)
    again = cols.to_model()
    assert ClubColumns.from_model(again) == cols
    assert again.accounts == model.accounts and again.cards == model.cards
    canonical = ClubColumns.from_model(oldest_first(model))
    ev = NativeClubEvaluator(cols)
    assert ev.columns() == canonical and NativeClubEvaluator(model).columns() == canonical
    assert NativeClubEvaluator(canonical).columns() == canonical
    view = ev.model
    assert isinstance(view, CompactClubModel) and isinstance(view, ClubModel)
    assert list(view.accounts) == list(oldest_first(model).accounts)
    assert list(view.cards) == list(model.cards)
    assert dict(view.card_index) == model.card_index and dict(view.account_index) == model.account_index
    assert ClubColumns.from_model(view) == canonical


# -- decisions: columns-built == model-built == reference -----------------------------------------

@SETTINGS
@given(st.data())
def test_evaluator_from_columns_agrees_with_reference_and_model_built(data):
    """Quotes, commits, returns, top-ups and account states, step after step, and the batch."""
    model = data.draw(club_models())
    ref, nat = ReferenceClubEvaluator(model), NativeClubEvaluator(model)
    com = NativeClubEvaluator(ClubColumns.from_model(model))
    ops = data.draw(club_ops(model))
    sales = ({}, {}, {})
    for op in ops:
        got = _run_club_op(ref, op, sales[0])
        assert _run_club_op(nat, op, sales[1]) == got, op
        assert _run_club_op(com, op, sales[2]) == got, op
        for a in model.accounts:
            assert com.account(a.account_id) == ref.account(a.account_id)
    quotable = [op[1] for op in ops if op[0] == "sale"]
    if quotable:
        batch = ClubQuoteBatch.from_sales(com.model, quotable)
        b_ref, b_com = ref.quote_batch(batch), com.quote_batch(batch)
        for name in b_ref.__slots__:
            assert getattr(b_com, name) == getattr(b_ref, name), name
        # the reference rules over the view (its accounts are the evaluator's now) quote alike
        view_ref = ReferenceClubEvaluator(com.model)
        for sale in quotable:
            try:
                want = view_ref.quote(sale)
            except RequestError as exc:
                want = str(exc)
            try:
                got = com.quote(sale)
            except RequestError as exc:
                got = str(exc)
            assert got == want


LINE = (SaleLine("x", "shoes", 100_000),)


@SETTINGS
@given(st.data())
def test_malformed_requests_rejected_alike(data):
    model = data.draw(club_models())
    ref, com = ReferenceClubEvaluator(model), NativeClubEvaluator(ClubColumns.from_model(model))
    card = model.cards[0].card_no

    class Text(str):
        pass

    sale = ClubSale(
        data.draw(st.sampled_from([card, Text(card), "0" + card, card[1:], card + "0", "", 12, None, b"1"])),
        data.draw(st.sampled_from([LINE, (), (SaleLine("x", "nope", 1),), (SaleLine("x", "shoes", -1),)])),
        data.draw(st.sampled_from([T0, -1, 2**40, True])), data.draw(st.sampled_from(["store", "x", None])),
        data.draw(st.sampled_from(["cash", "y"])))
    outcomes = []
    for ev in (ref, com):
        try:
            outcomes.append(ev.quote(sale))
        except RequestError as exc:
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]


def test_sample_chain_decides_alike_built_both_ways():
    model = sample.club_model(3_000, seed=7)
    ref, com = ReferenceClubEvaluator(model), NativeClubEvaluator(sample_club_columns(3_000, seed=7))
    sales = list(sample.club_sales(model, 2_000, seed=8))
    for n, s in enumerate(sales):
        q = ref.quote(s)
        assert com.quote(s) == q
        points = q.max_redeem_points // 2
        pay = ClubPayment(points, 0, q.total_kop - points * 100)
        assert com.commit(s, pay, 10**6 + n) == ref.commit(s, pay, 10**6 + n)
    for a in model.accounts[:300]:
        assert com.account(a.account_id) == ref.account(a.account_id)
    batch = ClubQuoteBatch.from_sales(model, sales)
    assert com.quote_batch(batch).reason == ref.quote_batch(batch).reason


def test_lot_pool_grows_and_recycles():
    """Hundreds of accruing commits on one account (more lots than the pool first holds), then
    redemptions that empty lots: every answer and the state equal the reference's."""
    model = ClubModel(rules=ClubRules(maturity_s=0), accounts=[ClubAccount(1, ClubCardKind.IDENTIFIED),
                                                               ClubAccount(2, ClubCardKind.IDENTIFIED)],
                      cards=[ClubCard("2990000000002", 1), ClubCard("2990000000019", 2)])
    ref, com = ReferenceClubEvaluator(model), NativeClubEvaluator(ClubColumns.from_model(model))
    t = T0
    for n in range(400):
        no = model.cards[n % 2].card_no
        t += 3_600
        sale = ClubSale(no, LINE, t)
        q = ref.quote(sale)
        assert com.quote(sale) == q
        points = q.max_redeem_points if n % 7 == 6 else 0
        pay = ClubPayment(points, 0, q.total_kop - points * 100)
        assert com.commit(sale, pay, 5_000 - n) == ref.commit(sale, pay, 5_000 - n)
    for aid in (1, 2):
        assert com.account(aid) == ref.account(aid)
    assert com.lot_count == sum(len(ref.account(aid).lots) for aid in (1, 2)) > 64


# -- club card numbers: leading zeros, long numbers, any order ------------------------------------

card_numbers = st.text("0123456789", max_size=20) | st.text("0123456789AZ -", min_size=1, max_size=6) | \
    st.integers(0, 10**18).map(str)


@SETTINGS
@given(st.data())
def test_odd_numbers_decide_alike(data):
    """A generated model with its cards renumbered (leading zeros, 19+ digits, letters, any
    order): the compact evaluator finds each card, refuses the near misses, and decides as
    the reference."""
    model = data.draw(club_models())
    nos = data.draw(st.lists(card_numbers, min_size=len(model.cards), max_size=len(model.cards), unique=True))
    model = ClubModel(rules=model.rules, accounts=model.accounts,
                      cards=[replace(c, card_no=no) for c, no in zip(model.cards, nos)])
    ref, com = ReferenceClubEvaluator(model), NativeClubEvaluator(ClubColumns.from_model(model))
    near = [no[1:] for no in nos] + ["0" + no for no in nos] + [no + "0" for no in nos]
    for no in nos + near:
        sale = ClubSale(no, LINE, T0, model.rules.channels[0], model.rules.payment_methods[0])
        try:
            want = ref.quote(sale)
        except RequestError as exc:
            want = str(exc)
        try:
            got = com.quote(sale)
        except RequestError as exc:
            got = str(exc)
        assert got == want, no
        assert (no in com.model.card_index) == (no in model.card_index)
        assert com.card_position(no) == model.card_index.get(no)
    for i, no in enumerate(nos):
        assert com.card_number(i) == no and com.card_at(i) == model.cards[i]


def test_account_lookup_by_id():
    model = ClubModel(rules=ClubRules(), accounts=[ClubAccount(-5, ClubCardKind.IDENTIFIED, balance_kop=7),
                                                   ClubAccount(2**40, ClubCardKind.UNIDENTIFIED)],
                      cards=[ClubCard("0012", 2**40), ClubCard("12", -5)])
    com = NativeClubEvaluator(ClubColumns.from_model(model))
    assert com.account(-5).balance_kop == 7 and com.account(-5.0).balance_kop == 7
    assert com.model.account_index[2**40] == 1 and com.model.cards[0].account_id == 2**40
    assert com.quote(ClubSale("12", LINE, T0)).balance_kop == 7
    for bad in (0, 2**70, "x", None, 1.5):
        with pytest.raises(KeyError):
            com.account(bad)
        assert bad not in com.model.account_index


# -- bad columns are refused with a clear error ----------------------------------------------------

def small_model() -> ClubModel:
    lots = (PointLot(1, 100, T0, T0 + 86_400), PointLot(2, 50, T0 - 10, T0 + 10))
    return ClubModel(rules=ClubRules(), accounts=[ClubAccount(1, ClubCardKind.IDENTIFIED, lots=lots),
                                                  ClubAccount(2, ClubCardKind.UNIDENTIFIED)],
                     cards=[ClubCard("2990000000002", 1), ClubCard("2990000000019", 2), ClubCard("X1", 2)])


def _bad(edit, match):
    cols = ClubColumns.from_model(small_model())
    edit(cols)
    with pytest.raises(ModelError, match=match):
        NativeClubEvaluator(cols)


def test_bad_columns_are_refused():
    _bad(lambda c: c.card_key.__setitem__(1, c.card_key[0]), "duplicate club card")
    _bad(lambda c: c.acc_id.__setitem__(1, c.acc_id[0]), "duplicate account 1")
    _bad(lambda c: c.card_account.__setitem__(0, 2), "unknown account")
    _bad(lambda c: c.card_status.__setitem__(0, 2), "status out of range")
    _bad(lambda c: c.acc_kind.__setitem__(0, 2), "out of range")
    _bad(lambda c: c.acc_balance.__setitem__(0, -10**12 - 1), "account 1 balance out of range")
    _bad(lambda c: c.lot_points.__setitem__(1, 0), "account 1 has a malformed lot")
    _bad(lambda c: c.lot_matures.__setitem__(0, T0 + 86_401), "malformed lot")
    _bad(lambda c: c.acc_nlots.__setitem__(1, 1), "lot rows")
    _bad(lambda c: c.acc_nlots.__setitem__(0, -1), "negative lot count")
    _bad(lambda c: c.lot_expires.pop(), "differ in length")
    _bad(lambda c: c.acc_status.pop(), "differ in length")
    _bad(lambda c: c.card_status.pop(), "differ in length")
    _bad(lambda c: setattr(c, "rules", ClubRules(tz="Mars/Olympus")), "time zone")
    _bad(lambda c: setattr(c, "rules", ClubRules(redemption_cap_bp=10_001)), "redemption cap")
    _bad(lambda c: setattr(c, "card_other", {**c.card_other, 0: "0"}), "key or a number")
    _bad(lambda c: setattr(c, "card_other", {2: "123"}), "not a club card without a key")
    with pytest.raises(ModelError, match="array of type"):
        ClubColumns(acc_id=array("i"))
    with pytest.raises(ModelError, match="does not fit"):
        ClubColumns.from_model(ClubModel(rules=ClubRules(), accounts=[ClubAccount(2**64, ClubCardKind.IDENTIFIED)],
                                         cards=()))
    with pytest.raises(TypeError):
        NativeClubEvaluator(object())


# -- the view and the replica ----------------------------------------------------------------------

def test_view_is_a_read_only_club_model():
    model = sample.club_model(300, seed=3)
    view = NativeClubEvaluator(sample_club_columns(300, seed=3)).model
    sorted_model = oldest_first(model)
    assert len(view.cards) == len(view.card_index) == len(view.accounts) == len(view.account_index) == 300
    assert view.cards[-1] == model.cards[-1] and view.cards[10:12] == list(model.cards[10:12])
    assert view.accounts[5] == sorted_model.accounts[5] and view.accounts[-1] == sorted_model.accounts[-1]
    assert list(view.card_index) == [c.card_no for c in model.cards]
    assert list(view.account_index) == [a.account_id for a in model.accounts]
    no = model.cards[17].card_no
    assert no in view.card_index and view.card_index[no] == 17 and view.card_index.get(no + "0") is None
    assert 12 not in view.card_index and view.card_index.get(None) is None
    acc = view.accounts[view.account_index[view.cards[17].account_id]]
    assert acc == sorted_model.accounts[17]
    assert view.rules == model.rules and view.category_index == model.category_index
    assert view.channel_index == model.channel_index and view.method_index == model.method_index
    with pytest.raises(IndexError):
        view.cards[300]
    with pytest.raises(IndexError):
        view.accounts[-301]
    # what terminal code does with a club model: batches and the reference rules over it
    sales = list(sample.club_sales(model, 50, seed=4))
    assert ClubQuoteBatch.from_sales(view, sales).card == ClubQuoteBatch.from_sales(model, sales).card
    state = ClubState.from_model(view)
    assert [club.quote(view, state, s) for s in sales] == [ReferenceClubEvaluator(model).quote(s) for s in sales]


def test_view_accounts_are_the_evaluator_now():
    ev = NativeClubEvaluator(ClubColumns.from_model(small_model()))
    assert ev.top_up(ClubTopUp("2990000000019", 10_000, T0)).balance_after_kop == ev.model.accounts[1].balance_kop == 10_000
    sale = ClubSale("2990000000002", LINE, T0 + 3_600)
    c = ev.commit(sale, ClubPayment(0, 0, 100_000), 77)
    assert c.approved and c.new_lot is not None
    acc = ev.model.accounts[0]
    assert c.new_lot in acc.lots and acc.turnover_kop == c.turnover_after_kop
    assert ev.account(1).lots == list(acc.lots)


def test_reference_impl_accepts_columns():
    cols = sample_club_columns(200, seed=2)
    ref = club_evaluator(cols, "reference")
    assert isinstance(ref, ReferenceClubEvaluator) and len(ref.model.cards) == 200
    assert isinstance(club_evaluator(cols), NativeClubEvaluator)


def test_simulated_replica_is_the_same_compact_or_not():
    cfg = load_config(None)
    compact = Replica.simulated(cfg, fuel_cards=10, club_accounts=2_000, seed=6)
    objects = Replica.simulated(cfg, fuel_cards=10, club_accounts=2_000, seed=6, compact=False)
    assert isinstance(compact.club_model, CompactClubModel) and not isinstance(objects.club_model, CompactClubModel)
    assert compact.club_model is compact.club_model
    assert compact.club.columns() == objects.club.columns()
    m, o = compact.club_model, objects.club_model
    # what terminal.till and the terminal tests ask of the club model
    assert m.cards[0].card_no == o.cards[0].card_no and m.cards[0].card_no in m.card_index
    assert "0" + m.cards[0].card_no not in m.card_index
    for i in (0, 1, 999, 1_999):
        card = m.cards[i]
        assert card == o.cards[i]
        assert m.accounts[m.account_index[card.account_id]] == oldest_first(o).accounts[o.account_index[card.account_id]]
    sales = list(sample.club_sales(o, 500, seed=9))
    assert [compact.club.quote(s) for s in sales] == [objects.club.quote(s) for s in sales]
    pay = [ClubPayment(0, 0, sum(line.amount_kop for line in s.lines)) for s in sales]
    assert [compact.club.commit(s, p, n) for n, (s, p) in enumerate(zip(sales, pay))] == \
        [objects.club.commit(s, p, n) for n, (s, p) in enumerate(zip(sales, pay))]


def test_compact_club_tables_are_small():
    """Packed tables of a sample chain: under 200 bytes an account with its card and ~2 lots
    (the lot pool has room for a quarter more)."""
    ev = NativeClubEvaluator(sample_club_columns(100_000, seed=1))
    assert ev.account_count == ev.card_count == 100_000 and ev.lot_count > 150_000
    assert ev.nbytes() < 200 * 100_000
    assert ev.quote(ClubSale(sample.club_card_number(99_999), LINE, sample.DAY_START_UTC)).reason in (
        Reason.OK, Reason.CARD_BLOCKED)
    assert card_key(sample.club_card_number(99_999)) == ev.columns().card_key[99_999]
