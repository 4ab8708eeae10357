"""wire.bodies: the typed journal bodies are the JSON the lanes always wrote, both ways.

``legacy_*`` below are the dict literals terminal/fuel.py wrote before the bodies were typed
(copied from it, commit f12b5b5): every typed body must encode to the same JSON (the journal
writes sorted keys, so the same JSON object is the same bytes) and decode back to itself,
so old journals replay and the host reads the same records. Garbage decodes to a BodyError,
never to another exception.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.fuel_model import FuelDecision, FuelRequest, LimitCounter
from authz.reasons import Reason
from terminal.replica import fuel_decision_body, fuel_request_body
from wire.bodies import (KINDS, BodyError, CardCommit, Counting, FuelCardCommitted, FuelCardRefused, FuelCompleted,
                         FuelCorrection, FuelDeclined, FuelEmergencyStop, FuelPinChecked, FuelPreauth, FuelPreset,
                         FuelPumpReset, FuelReserved, FuelTotalsMismatch, FuelVoided, NozzleTotals, PreauthCard,
                         PreauthPump, TillCardAttached, TillLine, TillSaleOpened, TillSaleVoided, body_of,
                         counters_json)

ints = st.integers(0, 2**40)
ids = st.binary(min_size=16, max_size=16)
text = st.text(max_size=20)
card_nos = st.sampled_from(["7005830000000017", "7005830000000025", "7005000000000000"])
requests = st.builds(FuelRequest, card_nos, ints, st.sampled_from(["AI92", "AI95", "DT"]), ints,
                     st.none() | ints, st.none() | ints)
decisions = st.builds(FuelDecision, st.sampled_from(list(Reason)), ints, ints, ints, ints, st.none() | ints)
counters = st.lists(st.tuples(ints, st.builds(LimitCounter, ints, ints)), max_size=4).map(tuple)
countings = st.lists(st.builds(Counting, ints, st.booleans(), st.booleans(), ints), max_size=4).map(tuple)
totals = st.builds(NozzleTotals, ints, ints, ints)
preauths = st.builds(FuelPreauth, requests, decisions,
                     st.builds(PreauthCard, card_nos, ints, ints, ids, ids, countings, counters, counters),
                     st.builds(PreauthPump, text, ints, ints, ints, st.none() | totals))
completeds = st.builds(FuelCompleted, requests, decisions, ints, ints, text, ints, st.none() | ints, card_nos, ints,
                       st.builds(CardCommit, ids, ints, counters), st.none() | text)
corrections = st.builds(FuelCorrection, card_nos, ints, st.sampled_from(sorted(FuelCorrection.WHY)),
                        st.none() | st.booleans(), ints, ids, ids, counters, counters, ints, ints, ints, ints)
voideds = st.builds(FuelVoided, card_nos, text, st.sampled_from(sorted(FuelVoided.RELEASE)), st.none() | ints,
                    st.none() | ints, st.none() | ids)
bodies = st.one_of(
    preauths, completeds, corrections, voideds,
    st.builds(FuelReserved, card_nos, ints, ids), st.builds(FuelPreset, ints, text, ints, ints),
    st.builds(FuelCardCommitted, card_nos, ints, ids, counters),
    st.builds(FuelDeclined, requests, decisions, card_nos, ints),
    st.builds(FuelCardRefused, st.none() | card_nos, text),
    st.builds(FuelEmergencyStop, st.none() | text), st.just(FuelPumpReset()),
    st.builds(FuelPinChecked, st.none() | card_nos, st.sampled_from(sorted(FuelPinChecked.OUTCOMES)), ints),
    st.builds(FuelTotalsMismatch, text, st.none() | ints, text, totals, ints, ints, totals),
    st.builds(TillSaleOpened, st.lists(st.builds(TillLine, text, text | ints, ints), max_size=3).map(tuple)),
    st.builds(TillCardAttached, card_nos, st.sampled_from(["scanner", "keyed"])), st.builds(TillSaleVoided, text))


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


@settings(max_examples=100)
@given(bodies)
def test_every_body_round_trips_through_its_json(body):
    raw = json.loads(canonical(body.to_json()))  # what the journal stores and gives back
    assert body_of(body.KIND, raw) == body
    assert canonical(type(body).from_json(raw).to_json()) == canonical(raw)


# -- the bodies as terminal/fuel.py wrote them before they were typed -------------------------------

def legacy_preauth(b: FuelPreauth) -> dict:
    c, p = b.card, b.pump
    return {"request": fuel_request_body(b.request), "decision": fuel_decision_body(b.decision),
            "card": {"card_no": c.card_no, "contract_id": c.contract_id,
                     "expected_txn": c.expected_txn, "reserve_write_id": c.reserve_write_id.hex(),
                     "release_write_id": c.release_write_id.hex(),
                     "counting": [[x.limit_id, int(x.counts), int(x.in_ml), x.period_start] for x in c.counting],
                     "base_counters": counters_json(c.base_counters),
                     "reserve_counters": counters_json(c.reserve_counters)},
            "pump": {"product": p.product, "price_kop_per_l": p.price_kop_per_l,
                     "preset_volume_ml": p.preset_volume_ml, "last_sale_no_before": p.last_sale_no_before}}


def legacy_completed(b: FuelCompleted) -> dict:
    return {"request": fuel_request_body(b.request), "decision": fuel_decision_body(b.decision),
            "delivered_volume_ml": b.delivered_volume_ml, "amount_kop": b.amount_kop,
            "delivery_reason": b.delivery_reason, "overrun_ml": b.overrun_ml, "sale_no": b.sale_no,
            "card_no": b.card_no, "contract_id": b.contract_id,
            "card_commit": {"write_id": b.card_commit.write_id.hex(), "expected_txn": b.card_commit.expected_txn,
                            "counters": counters_json(b.card_commit.counters)}}


def legacy_correction(b: FuelCorrection) -> dict:
    return {"card_no": b.card_no, "contract_id": b.contract_id, "why": b.why,
            "reservation_applied": b.reservation_applied,
            "reserved_txn_counter": b.reserved_txn_counter, "reserve_write_id": b.reserve_write_id.hex(),
            "unsent_write_id": b.unsent_write_id.hex(),
            "counters_reserved": counters_json(b.counters_reserved),
            "counters_final": counters_json(b.counters_final),
            "delivered_volume_ml": b.delivered_volume_ml, "amount_kop": b.amount_kop,
            "released_volume_ml": b.released_volume_ml, "released_amount_kop": b.released_amount_kop}


def legacy_voided(b: FuelVoided) -> dict:
    released = b.card_release == "released"
    return {"card_no": b.card_no, "reason": b.reason, "card_release": b.card_release, "sale_no": b.sale_no,
            "txn_counter": b.txn_counter if released else None,
            "release_write_id": b.release_write_id.hex() if released and b.release_write_id else None}


@settings(max_examples=60)
@given(preauths.filter(lambda b: b.pump.totals_before is None))
def test_preauth_is_the_legacy_json(b):
    assert canonical(b.to_json()) == canonical(legacy_preauth(b))
    assert FuelPreauth.from_json(legacy_preauth(b)) == b


@settings(max_examples=60)
@given(completeds.filter(lambda b: b.sale_id is None))
def test_completed_is_the_legacy_json(b):
    assert canonical(b.to_json()) == canonical(legacy_completed(b))
    assert FuelCompleted.from_json(legacy_completed(b)) == b


@settings(max_examples=60)
@given(corrections)
def test_correction_is_the_legacy_json(b):
    assert canonical(b.to_json()) == canonical(legacy_correction(b))


@settings(max_examples=60)
@given(voideds.map(lambda b: b if b.card_release == "released" and b.txn_counter is not None
                   and b.release_write_id is not None else
                   FuelVoided(b.card_no, b.reason, "not_reserved" if b.card_release == "released" else b.card_release,
                              b.sale_no, None, None)))
def test_voided_is_the_legacy_json(b):
    assert canonical(b.to_json()) == canonical(legacy_voided(b))


def test_the_small_kinds_are_the_legacy_json():
    wid = bytes(range(16))
    assert FuelReserved("7005", 3, wid).to_json() == {"card_no": "7005", "txn_counter": 3, "write_id": wid.hex()}
    assert FuelPreset(7, "AI95", 6_000, 20_000).to_json() == {"sale_no": 7, "product": "AI95",
                                                              "price_kop_per_l": 6_000, "preset_volume_ml": 20_000}
    assert FuelCardRefused(None, "x").to_json() == {"card_no": None, "reason": "x"}
    assert FuelEmergencyStop(None).to_json() == {"sale_txn_id": None}
    assert FuelPumpReset().to_json() == {}
    assert FuelPinChecked("7005", "verified", 3).to_json() == {"card_no": "7005", "outcome": "verified",
                                                               "tries_left": 3}
    assert TillSaleVoided("x").to_json() == {"reason": "x"}
    assert TillCardAttached("7", "keyed").to_json() == {"card_no": "7", "source": "keyed"}


# -- bad input -------------------------------------------------------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=5), max_leaves=20)


@settings(max_examples=200)
@given(st.sampled_from(sorted(KINDS)), json_values)
def test_garbage_is_a_body_error_and_nothing_else(kind, raw):
    try:
        body_of(kind, raw)
    except BodyError:
        pass


@settings(max_examples=100)
@given(bodies, st.data())
def test_a_damaged_field_is_a_body_error_naming_it(body, data):
    raw = json.loads(canonical(body.to_json()))
    if not raw:
        return
    key = data.draw(st.sampled_from(sorted(raw)))
    raw[key] = {"not": "this"}
    with pytest.raises(BodyError, match=key):
        body_of(body.KIND, raw)


def test_clear_errors():
    with pytest.raises(BodyError, match="no typed body"):
        body_of("fuel.unheard_of", {})
    with pytest.raises(BodyError, match=r"fuel.reserved.write_id must be 32 lower-case hex"):
        FuelReserved.from_json({"card_no": "7", "txn_counter": 1, "write_id": "AB" * 16})
    with pytest.raises(BodyError, match="unknown field"):
        FuelReserved.from_json({"card_no": "7", "txn_counter": 1, "write_id": "ab" * 16, "extra": 1})
    with pytest.raises(BodyError, match="txn_counter must be a whole number"):
        FuelReserved.from_json({"card_no": "7", "txn_counter": True, "write_id": "ab" * 16})
    m = FuelTotalsMismatch("t", 1, "AI95", NozzleTotals(1, 0, 0), 10, 60, NozzleTotals(1, 15, 90)).to_json()
    assert m["unexplained_ml"] == 5 and m["unexplained_kop"] == 30
    with pytest.raises(BodyError, match="disagree"):
        FuelTotalsMismatch.from_json(m | {"unexplained_ml": 0})
