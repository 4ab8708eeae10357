"""The host's readers of a few fields of a record (wire.bodies ``card_touch``, ``charge_of``
for fuel records, ``club_touch`` for the till's) agree with the whole typed decode of the
same body (or, for the till's kinds, with the body the till writes), and refuse anything
else with a BodyError naming the field (hypothesis: generated bodies, and any JSON value)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from authz.fuel_model import FuelDecision, FuelRequest, LimitCounter
from authz.reasons import Reason
from authz.club_model import ClubSale, SaleLine
from terminal.replica import club_sale_body
from wire.bodies import (CLUB_KINDS, TOUCH_KINDS, BodyError, CardCommit, CardTouch, Charge, ClubTouch, Counting,
                         FuelCardCommitted, FuelCompleted, FuelPreauth, FuelReserved, PreauthCard, PreauthPump,
                         body_of, card_touch, charge_of, club_touch)

ints = st.integers(0, 2**40)
card_nos = st.from_regex(r"[0-9]{16}", fullmatch=True)
write_ids = st.binary(min_size=16, max_size=16)
counters = st.lists(st.tuples(st.integers(1, 99), st.builds(LimitCounter, ints, ints)), max_size=3).map(tuple)
requests = st.builds(FuelRequest, card_nos, st.integers(1, 9_999), st.sampled_from(["AI92", "AI95", "DT"]),
                     st.integers(0, 2**33), st.none() | st.integers(1, 10**6), st.none())
decisions = st.builds(FuelDecision, st.just(Reason.OK), st.integers(1, 10**6), st.integers(1, 10**8),
                      st.integers(1, 10**5), st.integers(1, 10**5), st.none())
preauths = st.builds(FuelPreauth, requests, decisions,
                     st.builds(PreauthCard, card_nos, ints, ints, write_ids, write_ids,
                               st.lists(st.builds(Counting, st.integers(1, 99), st.booleans(), st.booleans(), ints),
                                        max_size=3).map(tuple), counters, counters),
                     st.builds(PreauthPump, st.just("AI95"), st.integers(1, 10**5), st.integers(1, 10**6), ints))
reserved = st.builds(FuelReserved, card_nos, ints, write_ids)
committed = st.builds(FuelCardCommitted, card_nos, ints, write_ids, counters)
completed = st.builds(FuelCompleted, requests, decisions, st.integers(0, 10**6), st.integers(0, 10**8),
                      st.sampled_from(["preset_reached", "stopped"]), st.integers(0, 100), st.none() | ints, card_nos,
                      ints, st.builds(CardCommit, write_ids, ints, counters), st.none() | st.just("17"))
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                        max_size=5), max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(st.one_of(preauths, reserved, committed))
def test_the_card_touch_is_what_the_whole_decode_says(body):
    whole = body_of(body.KIND, body.to_json())
    got = card_touch(body.KIND, body.to_json())
    assert body.KIND in TOUCH_KINDS
    if isinstance(whole, FuelPreauth):
        assert got == CardTouch(whole.card.card_no, whole.card.expected_txn, None)
    else:
        assert got == CardTouch(whole.card_no, whole.txn_counter, whole.write_id)


@settings(max_examples=200, deadline=None)
@given(completed)
def test_the_charge_is_what_the_whole_decode_says(body):
    whole = body_of(body.KIND, body.to_json())
    assert charge_of(body.to_json()) == Charge(whole.contract_id, whole.card_no, whole.request.product,
                                               whole.amount_kop, whole.delivered_volume_ml, whole.request.now_utc_s)


@settings(max_examples=100, deadline=None)
@given(st.from_regex(r"[0-9]{13}", fullmatch=True), st.lists(st.integers(0, 10**9), min_size=1, max_size=5),
       st.integers(1, 10**9), st.booleans())
def test_the_club_touch_is_what_the_till_wrote(card_no, amounts, kop, ok):
    lines = tuple(SaleLine(f"SKU{n}", "shoes", a) for n, a in enumerate(amounts))
    sale = {"sale": club_sale_body(ClubSale(card_no, lines, 1_700_000_000)), "txn_no": 1,
            "result": {"reason": "OK", "approved": True}}
    ret = {"return": {"card_no": card_no, "return_id": 1, "now_utc_s": 1, "sale_id": 1, "sale_total_kop": kop,
                      "sale_accrued_points": 0, "sale_redeemed_points": 0, "sale_card_balance_kop": 0,
                      "returned_kop": kop},
           "result": {"reason": "OK" if ok else "RETURN_EXCEEDS_SALE"}}
    top = {"topup": {"card_no": card_no, "amount_kop": kop, "now_utc_s": 1}, "result": {"approved": ok}}
    assert club_touch("till.sale_committed", sale) == ClubTouch(card_no, True, sum(amounts))
    assert club_touch("till.return", ret) == ClubTouch(card_no, ok, kop)
    assert club_touch("till.topup", top) == ClubTouch(card_no, ok, kop)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(TOUCH_KINDS | CLUB_KINDS)), json_values)
def test_anything_else_is_a_clear_body_error(kind, raw):
    reads = [lambda: club_touch(kind, raw)] if kind in CLUB_KINDS else [lambda: card_touch(kind, raw),
                                                                        lambda: charge_of(raw)]
    for read in reads:
        try:
            got = read()
        except BodyError as exc:
            assert str(exc).startswith(("fuel.", "till.")), exc  # names the kind and the field
        else:
            assert isinstance(got, (CardTouch, Charge, ClubTouch))


def test_a_wrong_field_is_named():
    raw = FuelReserved("7005830000000017", 3, bytes(range(16))).to_json() | {"txn_counter": "3"}
    try:
        card_touch("fuel.reserved", raw)
    except BodyError as exc:
        assert "fuel.reserved.txn_counter must be a whole number" in str(exc)
    else:
        raise AssertionError("a text counter was taken")
    try:
        card_touch("fuel.completed", {})
    except BodyError as exc:
        assert "fuel.completed" in str(exc)
    else:
        raise AssertionError("card_touch took a kind it does not read")
