"""The fuel lane with fleet-control cards (issue 11), end to end through the local API: real
pcscd and a virtual card of card format 02, a real SQLite journal, a simulated pump.

The replica decides (its card's rules); the card's own limit records say how its counters
count: here the card carries a purchase-count limit (id 9) the replica's card does not have,
so the count is kept on the card whatever the evaluator does with the new rules. A card
whose stored rules fail their MAC or their format is refused and journaled.
"""

from __future__ import annotations

from dataclasses import replace

from authz.fuel_model import (
    Limit,
    LimitCounter,
    LimitUnit,
    OnBreach,
    Period,
    RuleException,
    TimeWindow,
)
from authz.reasons import Reason
from hw.card.records import FORMAT_V2, static_mac_input
from hw.sim.personalise import personalise
from tests.hw.pcsc import keys, pcscd  # noqa: F401  (fixtures)

from .test_fuel_lane import GOOD, PIN, Site, clear_of_midnight, fuel_model, run, today  # noqa: F401  (fixture)

COUNT = 9  # the card's purchases-a-day limit


def fleet_state(keys, **change):
    """GOOD's virtual card in format 02: the replica's limits, plus 3 purchases a day
    (approve and alert), AI95 and DT only, any time, alerting card rules."""
    card = next(c for c in fuel_model().cards if c.card_no == GOOD)
    card = replace(card, limits=card.limits + (Limit(COUNT, LimitUnit.PURCHASES, Period.DAY, 3,
                                                     on_breach=OnBreach.ALERT),),
                   products=frozenset({"AI95", "DT"}), windows=(TimeWindow(frozenset(range(7)), 0, 1440),),
                   on_breach=OnBreach.ALERT, **change)
    state = personalise(card, PIN, keys)
    assert state.identity[0] == FORMAT_V2 and state.controls is not None
    return state


def test_a_fleet_card_counts_one_purchase_per_sale_that_delivered_fuel(pcscd, tmp_path, keys):
    async def test(s: Site):
        await s.insert()
        await s.pin_ok()
        st, ans, _ = await s.post("/v1/pumps/1/authorize", {"product": "AI95", "preset_volume_ml": 5_000})
        assert st == 200 and ans["approved"] and ans["exceptions"] == [], ans
        pre = s.record(ans["txn_id"], "fuel.preauth")["card"]
        assert pre["counting"][-1] == [COUNT, 1, 2, today()]  # counts purchases, from today
        assert pre["reserve_counters"][-1] == [COUNT, 1, today()]
        s.pump.lift_nozzle("AI95")
        await s.wait_state("card_read")
        s.pump.hang_up()
        committed = s.record(ans["txn_id"], "fuel.card_committed")["counters"]
        assert committed == s.card_counters()
        assert committed[0][1:] == [5_000, today()] and committed[-1] == [COUNT, 1, today()]
        # An authorization voided before fuel flowed is no purchase: the count stays 1.
        await s.pin_ok()
        st, ans2, _ = await s.post("/v1/pumps/1/authorize", {"product": "DT", "preset_volume_ml": 5_000})
        assert st == 200 and ans2["approved"]
        assert s.record(ans2["txn_id"], "fuel.preauth")["card"]["reserve_counters"][-1] == [COUNT, 2, today()]
        st, voided, _ = await s.post("/v1/pumps/1/void", {})
        assert st == 200 and voided["card_release"] == "released"
        assert s.card_counters()[-1] == [COUNT, 1, today()]
        # A second sale with fuel: 2.
        await s.pin_ok()
        st, _, _ = await s.post("/v1/pumps/1/authorize", {"product": "DT", "preset_volume_ml": 3_000})
        assert st == 200
        s.pump.lift_nozzle("DT")
        await s.wait(lambda v: v["txn"] is None and v["state"] == "card_read", "the second sale's end")
        s.pump.hang_up()
        assert s.card_counters()[-1] == [COUNT, 2, today()]
        assert s.card.state.txn_counter == 6
    run(pcscd, tmp_path, keys, test, card_state=fleet_state(keys))


def test_an_approval_with_exceptions_says_so_and_journals_them(pcscd, tmp_path, keys):
    """The evaluator's exceptions (constructed here: the evaluators' new rules land apart)
    go into the answer, fuel.preauth and fuel.completed."""
    raised = (RuleException(Reason.OUTSIDE_TIME_WINDOW), RuleException(Reason.LIMIT, COUNT))

    async def test(s: Site):
        lane = s.daemon.pumps[1]
        decide = lane._decide
        lane._decide = lambda req, data: replace(decide(req, data), exceptions=raised)
        await s.insert()
        await s.pin_ok()
        st, ans, _ = await s.post("/v1/pumps/1/authorize", {"product": "AI95", "preset_volume_ml": 2_000})
        assert st == 200 and ans["approved"]
        assert ans["exceptions"] == [{"reason": "OUTSIDE_TIME_WINDOW", "limit_id": None},
                                     {"reason": "LIMIT", "limit_id": COUNT}]
        s.pump.lift_nozzle("AI95")
        await s.wait_state("card_read")
        s.pump.hang_up()
        want = [["OUTSIDE_TIME_WINDOW", None], ["LIMIT", COUNT]]
        assert s.record(ans["txn_id"], "fuel.preauth")["decision"]["exceptions"] == want
        assert s.record(ans["txn_id"], "fuel.completed")["decision"]["exceptions"] == want
        # the replayed record reads back with them (what recovery and the host read)
        from wire.bodies import body_of
        rec = next(r for r in s.daemon.journal.records_for_txn(ans["txn_id"]) if r.kind == "fuel.completed")
        assert body_of(rec.kind, rec.body).decision.exceptions == raised
    run(pcscd, tmp_path, keys, test, card_state=fleet_state(keys))


def _refused(s: Site) -> list:
    return [r for r in s.daemon.journal.tail(10) if r.kind == "fuel.card_refused"]


def test_a_card_whose_controls_fail_their_mac_is_refused_and_journaled(pcscd, tmp_path, keys):
    state = fleet_state(keys)
    # The controls record says "any product" now (FF) instead of AI95 and DT: the data MAC no longer holds.
    at = len(state.controls) - 1 - sum(1 + len(p) for p in ("AI95", "DT"))
    state.controls = state.controls[:at] + b"\xff"

    async def test(s: Site):
        s.card.insert()
        v = await s.wait(lambda v: v["card_present"] and v["notice"] and "refused" in v["notice"], "a refusal")
        assert v["state"] == "idle" and "genuine" in v["notice"]
        refused = _refused(s)
        assert len(refused) == 1 and "MAC over its data" in refused[0].body["reason"]
        assert GOOD not in refused[0].body["reason"]
        assert s.card.state.txn_counter == 0
    run(pcscd, tmp_path, keys, test, card_state=state)


def test_a_card_whose_stored_rules_fail_their_format_is_refused_and_journaled(pcscd, tmp_path, keys):
    """Genuine (the issuer's MAC holds) but a time window of zero length: never sold on."""
    state = fleet_state(keys)
    window = bytes.fromhex("7f" "0000" "05a0")  # every day, 00:00-24:00
    assert window in state.controls
    state.controls = state.controls.replace(window, bytes.fromhex("7f" "0168" "0168"))  # 06:00-06:00
    state.data_mac = keys.mac(GOOD, static_mac_input(state.identity, state.limits, state.controls))

    async def test(s: Site):
        s.card.insert()
        v = await s.wait(lambda v: v["card_present"] and v["notice"] and "refused" in v["notice"], "a refusal")
        assert v["state"] == "idle" and "unreadable" in v["notice"] and "zero length" in v["notice"]
        refused = _refused(s)
        assert len(refused) == 1 and "zero length" in refused[0].body["reason"]
        assert GOOD not in refused[0].body["reason"]
        st, _, _ = await s.post("/v1/pumps/1/pin", {"pin": PIN})
        assert st == 409  # no card session
    run(pcscd, tmp_path, keys, test, card_state=state)


def test_a_format_01_limit_record_with_a_new_unit_is_refused(pcscd, tmp_path, keys):
    """A card of format 01 cannot say "purchases": one that does is refused, MAC or not."""
    card = next(c for c in fuel_model().cards if c.card_no == GOOD)
    state = personalise(card, PIN, keys)
    assert state.identity[0] == 1 and state.controls is None
    state.limits[1] = state.limits[1][:4] + b"\x02" + state.limits[1][5:]  # unit 2 in format 01
    state.data_mac = keys.mac(GOOD, static_mac_input(state.identity, state.limits))

    async def test(s: Site):
        s.card.insert()
        v = await s.wait(lambda v: v["card_present"] and v["notice"] and "refused" in v["notice"], "a refusal")
        assert "format 02" in v["notice"]
        assert len(_refused(s)) == 1
    run(pcscd, tmp_path, keys, test, card_state=state)


def test_a_card_limit_that_counts_otherwise_than_the_replicas_is_not_merged(pcscd, tmp_path, keys):  # noqa: F811
    """The card's limit 1 counts purchases (2 today); the replica's limit 1 counts litres. The
    decision is the replica's, on the site's litres only (2 purchases are not 2 ml); the card
    keeps counting its purchases."""
    card = next(c for c in fuel_model().cards if c.card_no == GOOD)
    on_card = replace(card, limits=(Limit(1, LimitUnit.PURCHASES, Period.DAY, 3),) + card.limits[1:])
    state = personalise(on_card, PIN, keys, [(1, LimitCounter(2, today()))])
    assert state.identity[0] == FORMAT_V2

    async def test(s: Site):
        await s.insert()
        await s.pin_ok()
        st, ans, _ = await s.post("/v1/pumps/1/authorize", {"product": "AI95"})
        assert st == 200 and (ans["reason"], ans["volume_ml"], ans["binding_limit_id"]) == ("LIMIT", 100_000, 1), ans
        pre = s.record(ans["txn_id"], "fuel.preauth")["card"]
        assert pre["counting"][0] == [1, 1, 2, today()]
        assert pre["base_counters"][0] == [1, 2, today()] and pre["reserve_counters"][0] == [1, 3, today()]
        st, voided, _ = await s.post("/v1/pumps/1/void", {})
        assert st == 200 and s.card_counters()[0] == [1, 2, today()]
    run(pcscd, tmp_path, keys, test, card_state=state)
