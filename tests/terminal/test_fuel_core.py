"""The fuel lane's core (terminal.fuel_core) alone: no pcscd, no HTTP, no SQLite, no asyncio.

A small in-test driver plays the card, the pump and the journal as plain values: it answers
each device command of the core from a script of outcomes, and records every command. The
hypothesis tests drive the core with generated event sequences and outcomes and check the
rules the lane exists for: no preset without a journaled authorization (and reservation),
no completion journaled twice, no sale confirmed before it is journaled, every hold given
back, and every state change one the table allows.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.fuel_model import FuelDecision, FuelRequest, LimitCounter
from authz.reasons import Reason
from terminal import fuel_core as core
from terminal.fuel_core import (TRANSITIONS, Counting, FuelCore, FuelLaneError, FuelTimeouts, FuelTxn, LaneState,
                                PumpAction, Refusal, Settle, write_id_of)
from wire.bodies import (FuelCardCommitted, FuelCompleted, FuelCorrection, FuelDeclined, FuelEmergencyStop,
                         FuelPreauth, FuelPreset, FuelPumpAction, FuelPumpReset, FuelReserved, FuelTotalsMismatch,
                         FuelVoided, NozzleTotals, body_of)
from wire.bodies import BodyError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "lanes.md"
CARD = "7005830000000017"
_ids = itertools.count(1)


def new_record_id() -> str:
    """A record id whose tail is a ULID-shaped base-32 string (what write_id_of reads)."""
    return f"site-{next(_ids):026d}"


def txn(n: int = 1, *, volume_ml: int = 40_000, totals: bool = True) -> FuelTxn:
    req = FuelRequest(CARD, 1001, "AI95", 1_700_000_000, None, None)
    dec = FuelDecision(Reason.OK, volume_ml, volume_ml * 60, 6_000, 6_150, 1)
    pid = new_record_id()
    return FuelTxn(f"txn-{n}", req, dec, 42, 7, write_id_of(pid), write_id_of(new_record_id()),
                   (Counting(1, True, True, 19_000),), ((1, LimitCounter(5_000, 19_000)),), 6_000, 10,
                   totals_before=NozzleTotals(2, 1_000_000, 60_000_000) if totals else None, preauth_id=pid)


class Driver:
    """Performs the core's commands on values: a journal (list), holds, a pump, a card."""

    def __init__(self, outcomes: dict[str, Any] | None = None) -> None:
        self.core = FuelCore(new_record_id, FuelTimeouts())
        self.journal: list[tuple[str | None, Any]] = []
        self.commands: list[Any] = []
        self.holds: dict[str, int] = {}
        self.confirmed: list[Any] = []
        self.outcomes = outcomes or {}
        self.sale_no = 100
        self.totals_after: NozzleTotals | None = None
        self.transitions: list[tuple[LaneState, str, LaneState]] = []

    def kinds(self, txn_id: str | None = None) -> list[str]:
        return [b.KIND for t, b in self.journal if txn_id is None or t == txn_id]

    def run(self, event: Any) -> None:
        while event is not None:
            before = self.core.state
            cmds = self.core.handle(event)
            self.transitions.append((before, type(event).__name__, self.core.state))
            event = None
            for n, c in enumerate(cmds):
                self.commands.append(c)
                r = self.perform(c)
                if r is not None:
                    assert n == len(cmds) - 1, f"{c} asks a device but is not the last command"
                    event = r

    def perform(self, c: Any) -> Any:
        o = self.outcomes
        if isinstance(c, core.Journal):
            for b in c.bodies:
                self.journal.append((c.txn_id, b))
        elif isinstance(c, core.Hold):
            self.holds[c.txn.txn_id] = self.holds.get(c.txn.txn_id, 0) + (1 if c.on else -1)
        elif isinstance(c, core.Reserve):
            return core.ReserveDone(o.get("reserve", True), 8)
        elif isinstance(c, core.Preset):
            if o.get("preset", True):
                self.sale_no += 1
                return core.PresetDone(self.sale_no, flowing=o.get("flowing", False))
            return core.PresetDone(None, error="busy")
        elif isinstance(c, core.Cancel):
            return core.CancelDone(error=None if o.get("cancel", True) else "flowing")
        elif isinstance(c, core.Settle_):
            return core.SettleDone(o.get("settle", Settle.DONE))
        elif isinstance(c, core.ReadTotals):
            return core.TotalsRead(self.totals_after)
        elif isinstance(c, core.ConfirmSale):
            self.confirmed.append(c.sale_id)
        elif isinstance(c, core.ReadCard):
            return core.CardRead(None, None)
        elif isinstance(c, core.ReadDelivery):
            return core.DeliveryRead(o.get("recovered_ml"), sale_id=o.get("sale_id"))
        elif isinstance(c, core.Operate):
            if not o.get("operate", True):  # the pump refused: the console's error, nothing journaled
                raise FuelLaneError(f"the pump cannot {c.action.value}")
            return core.PumpActed(c.action, "stopped" if c.action is core.PumpAction.EMERGENCY_STOP else "dispensing",
                                  c.key)
        return None

    def card_in(self, known: bool = True) -> None:
        self.run(core.CardRead(object(), CARD, known, 3))

    def to_pin_ok(self) -> None:
        self.card_in()
        self.run(core.PinChecked("verified", 3))


def test_the_happy_path_journals_in_order_and_confirms_after_completion():
    d = Driver({"sale_id": "S1"})
    d.to_pin_ok()
    t = txn()
    d.run(core.AuthorizeAsked(t))
    assert d.core.state is LaneState.AUTHORIZED
    assert d.kinds("txn-1") == ["fuel.preauth", "fuel.reserved", "fuel.preset"]
    d.run(core.Progress(1_000, 60))
    assert d.core.state is LaneState.DISPENSING
    d.totals_after = NozzleTotals(2, 1_030_000, 60_000_000 + 30_000 * 6)
    d.run(core.DeliveryEnded(t.sale_no, 30_000, "nozzle_hung_up", "S1"))
    assert d.kinds("txn-1") == ["fuel.preauth", "fuel.reserved", "fuel.preset", "fuel.completed",
                                "fuel.card_committed"]
    assert d.confirmed == ["S1"]
    assert "fuel.totals_mismatch" not in d.kinds()
    assert d.core.state is LaneState.IDLE and d.core.txn is None
    assert d.holds == {"txn-1": 0}
    completed = next(b for _, b in d.journal if isinstance(b, FuelCompleted))
    assert completed.delivered_volume_ml == 30_000 and completed.amount_kop == 30_000 * 6


def test_totals_that_disagree_are_journaled_as_their_own_transaction():
    d = Driver()
    d.to_pin_ok()
    t = txn()
    d.run(core.AuthorizeAsked(t))
    d.totals_after = NozzleTotals(2, 1_000_000 + 30_000 + 5_000, 60_000_000)  # 5 L the sale does not explain
    d.run(core.DeliveryEnded(t.sale_no, 30_000, "preset_reached"))
    (tid, m), = [(tid, b) for tid, b in d.journal if isinstance(b, FuelTotalsMismatch)]
    assert tid == "txn-1"  # in the sale's transaction, after its completion
    assert m.unexplained_ml == 5_000 and m.sale_txn_id == "txn-1" and m.before == t.totals_before
    assert d.kinds("txn-1")[-1] == "fuel.card_committed"


def test_no_totals_known_means_no_mismatch_check():
    d = Driver()
    d.to_pin_ok()
    t = txn(totals=False)
    d.run(core.AuthorizeAsked(t))
    d.run(core.DeliveryEnded(t.sale_no, 30_000, "preset_reached"))
    assert not any(isinstance(c, core.ReadTotals) for c in d.commands)
    assert d.kinds("txn-1")[-1] == "fuel.card_committed"


@pytest.mark.parametrize("reserve, release, kinds", [
    (False, "not_reserved", ["fuel.preauth", "fuel.voided"]),
    (None, "released", ["fuel.preauth", "fuel.voided"]),
])
def test_a_reservation_the_card_refused_or_lost_voids_without_a_preset(reserve, release, kinds):
    d = Driver({"reserve": reserve})
    d.to_pin_ok()
    d.run(core.AuthorizeAsked(txn()))
    assert not any(isinstance(c, core.Preset) for c in d.commands)
    assert d.kinds("txn-1") == kinds
    voided = d.journal[-1][1]
    assert isinstance(voided, FuelVoided) and voided.card_release == release
    reply = [c.reply for c in d.commands if isinstance(c, core.Journal) and c.reply is not None]
    assert [r.outcome for r in reply] == ["verified", "failed"]  # the PIN's, then the authorize's
    assert d.holds == {"txn-1": 0}


def test_a_refused_preset_voids_and_releases_the_card():
    d = Driver({"preset": False})
    d.to_pin_ok()
    d.run(core.AuthorizeAsked(txn()))
    assert d.kinds("txn-1") == ["fuel.preauth", "fuel.reserved", "fuel.voided"]
    assert any(isinstance(c, core.Settle_) and c.release for c in d.commands)
    assert d.core.state is LaneState.IDLE


def test_a_card_gone_at_release_leaves_a_correction():
    d = Driver({"preset": False, "settle": Settle.ABSENT})
    d.to_pin_ok()
    d.run(core.AuthorizeAsked(txn()))
    assert d.kinds("txn-1") == ["fuel.preauth", "fuel.reserved", "fuel.voided", "fuel.correction"]
    corr = d.journal[-1][1]
    assert isinstance(corr, FuelCorrection) and corr.why == "absent" and corr.delivered_volume_ml == 0


def test_void_releases_and_answers_the_release():
    d = Driver()
    d.to_pin_ok()
    d.run(core.AuthorizeAsked(txn()))
    d.run(core.VoidAsked())
    reply = [c.reply for c in d.commands if isinstance(c, core.Journal) and c.reply is not None][-1]
    assert reply.outcome == "voided" and reply.payload["card_release"] == "released"
    assert d.kinds()[-1] == "fuel.voided"


def test_nozzle_timeout_voids_unless_the_pump_refuses_the_cancel():
    d = Driver({"cancel": False})
    d.to_pin_ok()
    d.run(core.AuthorizeAsked(txn()))
    d.run(core.TimedOut())
    assert d.core.state is LaneState.AUTHORIZED and d.kinds()[-1] == "fuel.preset"
    d.outcomes["cancel"] = True
    d.run(core.TimedOut())
    assert d.kinds()[-1] == "fuel.voided" and d.core.state is LaneState.IDLE


def test_zero_volume_delivery_voids():
    d = Driver()
    d.to_pin_ok()
    t = txn()
    d.run(core.AuthorizeAsked(t))
    d.run(core.DeliveryEnded(t.sale_no, 0, "stopped"))
    assert d.kinds()[-1] == "fuel.voided" and "fuel.completed" not in d.kinds()


def test_pin_outcomes_and_card_removal():
    d = Driver()
    d.card_in()
    assert d.core.state is LaneState.CARD_READ
    d.run(core.PinChecked("wrong_pin", 2))
    assert d.core.state is LaneState.CARD_READ and d.core.card.tries_left == 2
    d.run(core.PinChecked("pin_blocked", 0))
    assert d.core.notice == "the card's PIN is blocked"
    d.run(core.PinChecked("verified", 3))
    assert d.core.state is LaneState.PIN_OK
    assert d.kinds() == ["fuel.pin_checked"] * 3  # each check its own transaction, never the PIN
    pins = [c for c in d.commands if isinstance(c, core.Journal)]
    assert all(c.txn_id is None and c.secret for c in pins)
    assert [(b.outcome, b.tries_left) for c in pins for b in c.bodies] == [("wrong_pin", 2), ("pin_blocked", 0),
                                                                            ("verified", 3)]
    d.run(core.CardGone())
    assert d.core.state is LaneState.IDLE and d.core.card is None


def test_an_unknown_card_stays_idle_with_its_notice():
    d = Driver()
    d.run(core.CardRead(object(), CARD, False, 3, notice="card 70**0017 is not known at this site"))
    assert d.core.state is LaneState.IDLE and d.core.notice.endswith("not known at this site")


def test_events_a_state_does_not_take_are_refused_before_anything_changes():
    d = Driver()
    with pytest.raises(core.CoreError):
        d.core.handle(core.AuthorizeAsked(txn()))
    with pytest.raises(core.CoreError):
        d.core.handle(core.VoidAsked())
    assert d.core.state is LaneState.IDLE and d.core.txn is None and not d.journal


def test_recovery_completes_from_the_pump_and_confirms_after_journaling():
    d = Driver({"recovered_ml": 12_000, "sale_id": "S9"})
    d.core.recovering = True
    t = txn()
    t.sale_no = 101
    d.run(core.RecoverAsked(t))
    assert d.kinds() == ["fuel.completed", "fuel.card_committed"]
    journaled = d.commands.index(next(c for c in d.commands if isinstance(c, core.Journal)))
    confirm = d.commands.index(next(c for c in d.commands if isinstance(c, core.ConfirmSale)))
    assert journaled < confirm
    assert d.holds == {"txn-1": 0}


def test_recovery_of_a_completed_sale_does_not_journal_it_again():
    d = Driver()
    d.core.recovering = True
    t = txn()
    t.sale_no = 101
    done = FuelCompleted(t.request, t.decision, 9_000, 54_000, "fault", 0, 101, CARD, 42,
                         core.CardCommit(write_id_of(new_record_id()), 8, t.final_counters(9_000)))
    t2 = FuelTxn.from_bodies("txn-1", [t.preauth(), FuelReserved(CARD, 8, t.reserve_write_id),
                                       FuelPreset(101, "AI95", 6_000, 40_000), done])
    d.run(core.RecoverAsked(t2))
    assert d.kinds() == ["fuel.card_committed"]


def test_recovery_with_a_silent_pump_waits_held():
    d = Driver({"recovered_ml": None})
    d.core.recovering = True
    t = txn()
    d.run(core.RecoverAsked(t))
    assert d.core.state is LaneState.RECOVERING and d.holds == {"txn-1": 1} and not d.journal
    d.core.recovered(1)
    assert d.core.notice.startswith("1 sale(s)")
    d.outcomes["recovered_ml"] = 0
    d.run(core.RecoverAsked(txn_from(t), held=True))
    assert d.kinds() == ["fuel.voided"] and d.holds == {"txn-1": 0}


# -- the operator's actions and a confirm left over ----------------------------------------------------

def flowing(d: Driver) -> FuelTxn:
    d.to_pin_ok()
    t = txn()
    d.run(core.AuthorizeAsked(t))
    d.run(core.Progress(1_000, 6_000))
    assert d.core.state is LaneState.DISPENSING
    return t


def test_suspend_and_resume_go_through_the_pump_then_are_journaled_with_their_key():
    d = Driver()
    t = flowing(d)
    before = list(d.journal)
    d.run(core.SuspendAsked("key-1"))
    d.run(core.ResumeAsked("key-2"))
    new = d.journal[len(before):]
    assert new == [(None, FuelPumpAction("suspend", t.txn_id)), (None, FuelPumpAction("resume", t.txn_id))]
    journals = [c for c in d.commands if isinstance(c, core.Journal) and c.key is not None]
    assert [(c.key, c.reply.outcome, c.reply.payload["action"]) for c in journals] == [
        ("key-1", "operated", "suspend"), ("key-2", "operated", "resume")]
    operate = [c for c in d.commands if isinstance(c, core.Operate)]
    assert [c.action for c in operate] == [PumpAction.SUSPEND, PumpAction.RESUME]
    # each Operate comes before the Journal of what the pump did
    order = [type(c).__name__ for c in d.commands if isinstance(c, (core.Operate, core.Journal)) and
             (isinstance(c, core.Operate) or c.key is not None)]
    assert order == ["Operate", "Journal", "Operate", "Journal"]
    assert d.core.state is LaneState.DISPENSING and d.core.txn is t  # the sale goes on


@pytest.mark.parametrize("state", ["idle", "card_read", "pin_ok"])
def test_suspend_or_resume_with_no_sale_flowing_is_refused_and_changes_nothing(state):
    d = Driver()
    if state != "idle":
        d.card_in()
    if state == "pin_ok":
        d.run(core.PinChecked("verified", 3))
    journal, cmds = list(d.journal), list(d.commands)
    for ask in (core.SuspendAsked("k"), core.ResumeAsked("k")):
        with pytest.raises(FuelLaneError) as info:
            d.run(ask)
        assert info.value.kind is Refusal.NOT_NOW and "no sale is flowing" in str(info.value)
    assert d.core.state.value == state and d.journal == journal and d.commands == cmds


def test_a_pump_that_refuses_an_action_leaves_no_record():
    d = Driver({"operate": False})
    flowing(d)
    journal = list(d.journal)
    with pytest.raises(FuelLaneError):
        d.run(core.SuspendAsked("k"))
    assert d.journal == journal and d.core.state is LaneState.DISPENSING


@pytest.mark.parametrize("state", ["idle", "card_read", "dispensing"])
def test_emergency_stop_and_reset_are_taken_in_any_state(state):
    d = Driver()
    sale = None
    if state == "card_read":
        d.card_in()
    elif state == "dispensing":
        sale = flowing(d).txn_id
    d.run(core.StopAsked("stop-key"))
    d.run(core.ResetAsked("reset-key"))
    assert d.journal[-2:] == [(None, FuelEmergencyStop(sale)), (None, FuelPumpReset())]
    assert d.core.state.value == state
    stop = next(c for c in d.commands if isinstance(c, core.Journal) and c.key == "stop-key")
    assert stop.reply.payload == {"stopped": True, "txn_id": sale, "pump_state": "stopped"}


def test_a_sale_left_unconfirmed_is_confirmed_only_when_its_end_is_journaled():
    d = Driver()
    d.core.recovering = True
    d.run(core.UnconfirmedRead("S-7", 7, journaled=False))
    assert d.confirmed == [] and "sale 7" in d.core.notice and not d.journal
    d.run(core.UnconfirmedRead("S-7", 7, journaled=True))
    assert d.confirmed == ["S-7"] and not d.journal  # nothing journaled again
    d.core.recovered(0)
    d.to_pin_ok()
    with pytest.raises(core.CoreError):  # only at start, with no session or sale
        d.run(core.UnconfirmedRead("S-8", 8, journaled=True))
    assert d.confirmed == ["S-7"]


def txn_from(t: FuelTxn) -> FuelTxn:
    return FuelTxn.from_bodies(t.txn_id, [body_of("fuel.preauth", t.preauth().to_json())])


# -- every sequence -----------------------------------------------------------------------------------

EVENTS = st.sampled_from(["card", "unknown_card", "gone", "pin_ok", "pin_wrong", "authorize", "decline", "void",
                          "progress", "started", "end", "end_zero", "timeout", "lost", "back", "suspend", "resume",
                          "stop", "reset"])
OUTCOMES = st.fixed_dictionaries({
    "reserve": st.sampled_from([True, False, None]), "preset": st.booleans(), "flowing": st.booleans(),
    "cancel": st.booleans(), "settle": st.sampled_from(list(Settle)), "sale_id": st.sampled_from([None, "S"]),
    "operate": st.booleans(),
    "mismatch_ml": st.integers(-1_000, 1_000)})


def feed(d: Driver, name: str, n: int) -> None:
    c = d.core
    if name == "card":
        d.run(core.CardRead(object(), CARD, True, 3))
    elif name == "unknown_card":
        d.run(core.CardRead(object(), "7005830000000099", False, 3, notice="unknown"))
    elif name == "gone":
        d.run(core.CardGone())
    elif name in ("pin_ok", "pin_wrong") and c.state in (LaneState.CARD_READ, LaneState.PIN_OK) and c.card:
        d.run(core.PinChecked("verified", 3) if name == "pin_ok" else core.PinChecked("wrong_pin", 1))
    elif name == "authorize" and c.state is LaneState.PIN_OK and c.card and c.card.pin_ok and c.txn is None:
        d.run(core.AuthorizeAsked(txn(n)))
    elif name == "decline" and c.state is LaneState.PIN_OK and c.txn is None:
        t = txn(n)
        d.run(core.Declined(f"declined-{n}", FuelDeclined(t.request, t.decision, CARD, 42), {}, "declined: LIMIT"))
    elif name == "void" and c.state is LaneState.AUTHORIZED:
        d.run(core.VoidAsked())
    elif name == "progress":
        d.run(core.Progress(1_000, 6_000))
    elif name == "started":
        d.run(core.PumpStarted())
    elif name in ("end", "end_zero") and c.txn is not None and c.txn.sale_no is not None:
        t = c.txn
        vol = 0 if name == "end_zero" else 25_000
        d.totals_after = NozzleTotals(2, 1_000_000 + vol + d.outcomes["mismatch_ml"], 0)
        d.run(core.DeliveryEnded(t.sale_no, vol, "preset_reached", d.outcomes["sale_id"]))
    elif name == "timeout":
        d.run(core.TimedOut())
    elif name == "lost":
        d.run(core.PumpLost())
    elif name == "back":
        d.run(core.PumpBack())
    elif name in ("suspend", "resume", "stop", "reset"):
        ask = {"suspend": core.SuspendAsked, "resume": core.ResumeAsked, "stop": core.StopAsked,
               "reset": core.ResetAsked}[name](f"{name}-{n}")
        state, txn_ = c.state, c.txn
        try:
            d.run(ask)
        except FuelLaneError:  # refused by the lane or the pump: nothing changed
            assert (c.state, c.txn) == (state, txn_)


def check_invariants(d: Driver) -> None:
    journaled: dict[str, list[str]] = {}
    for c in d.commands:
        if isinstance(c, core.Journal):
            for b in c.bodies:
                journaled.setdefault(c.txn_id or "", []).append(b.KIND)
        elif isinstance(c, core.Preset):  # no preset without a journaled authorization and reservation
            assert journaled.get(c.txn.txn_id, [])[:2] == ["fuel.preauth", "fuel.reserved"]
        elif isinstance(c, core.Reserve):
            assert journaled.get(c.txn.txn_id, []) == ["fuel.preauth"]
        elif isinstance(c, core.ConfirmSale):  # no sale confirmed before it is journaled
            assert any(k in ("fuel.completed", "fuel.voided") for ks in journaled.values() for k in ks)
    for txn_id, kinds in journaled.items():
        if not txn_id:  # a PIN check and an operator's action are each their own transaction
            assert set(kinds) <= {"fuel.pin_checked", "fuel.pump_action", "fuel.emergency_stop", "fuel.pump_reset"}
            continue
        if kinds[0] == "fuel.declined":
            assert kinds == ["fuel.declined"]
            continue
        assert kinds.count("fuel.completed") <= 1  # no completion recorded twice
        assert kinds.count("fuel.totals_mismatch") <= 1  # totals checked once
        if "fuel.totals_mismatch" in kinds:
            assert kinds.index("fuel.totals_mismatch") == kinds.index("fuel.completed") + 1
        assert kinds[0] == "fuel.preauth"
        ends = [k for k in kinds if k in ("fuel.card_committed", "fuel.voided")]
        assert len(ends) <= 1
        if "fuel.completed" in kinds:
            assert "fuel.voided" not in kinds
    for before, event, after in d.transitions:  # every step is one the table allows
        allowed = core.allowed(before, event)
        assert allowed is None and before is after or allowed is not None and after in allowed, \
            (before, event, after)
    if d.core.txn is None:
        assert all(v == 0 for v in d.holds.values()), d.holds  # every hold given back
    else:
        assert d.holds[d.core.txn.txn_id] == 1


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.lists(EVENTS, max_size=40),
                 st.lists(EVENTS, max_size=30).map(lambda tail: ["card", "pin_ok", "authorize", *tail])), OUTCOMES)
def test_every_event_sequence_keeps_the_lane_safe(events, outcomes):
    d = Driver(outcomes)
    for n, name in enumerate(events):
        feed(d, name, n)
        check_invariants(d)


# -- the table in docs/lanes.md is the table in code ----------------------------------------------------

def _docs_rows() -> set[tuple[frozenset[str], str, frozenset[str], tuple[str, ...]]]:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("### Transitions", 1)[1].split("\n### ", 1)[0]
    rows = set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 5 or not cells[1].startswith("`") or cells[0] in ("from",):
            continue
        def names(cell: str) -> list[str]:
            return re.findall(r"`([a-z_.]+|[A-Z][A-Za-z]+)`", cell)
        src = frozenset(names(cells[0]))
        (event,) = names(cells[1])
        dst = frozenset(names(cells[2]))
        journal = tuple(names(cells[3]))
        rows.add((src, event, dst, journal))
    return rows


def test_the_documented_transitions_are_the_code_s():
    code = {(frozenset(s.value for s in t.sources), t.event, frozenset(s.value for s in t.targets), t.journal)
            for t in TRANSITIONS}
    docs = _docs_rows()
    assert docs, "no transition rows found in docs/lanes.md"
    assert docs == code, {"only in docs": docs - code, "only in code": code - docs}


def test_every_event_class_has_a_row_and_a_handler():
    events = {t.event for t in TRANSITIONS}
    for name in events:
        assert isinstance(getattr(core, name), type)
        assert callable(getattr(FuelCore, "_on_" + name))


def test_typed_bodies_used_by_the_core_round_trip():
    t = txn()
    p = t.preauth()
    assert FuelPreauth.from_json(p.to_json()) == p
    assert isinstance(body_of("fuel.card_committed",
                              FuelCardCommitted(CARD, 9, t.reserve_write_id, t.base).to_json()), FuelCardCommitted)
    for action in ("suspend", "resume"):
        b = FuelPumpAction(action, t.txn_id)
        assert body_of(b.KIND, b.to_json()) == b
    for bad in ({"action": "explode", "sale_txn_id": None}, {"sale_txn_id": None},
                {"action": "suspend", "sale_txn_id": None, "extra": 1}, {"action": 1, "sale_txn_id": None}):
        with pytest.raises(BodyError):
            body_of("fuel.pump_action", bad)


def test_the_benchmark_prints_its_figure(capsys):
    """benchmarks.fuel_core (called by benchmarks.forecourt) runs whole sales through one core."""
    from benchmarks.fuel_core import main
    main(["--sales", "20"])
    lines = dict(line.split(": ") for line in capsys.readouterr().out.splitlines())
    assert int(lines["fuel_core_events"]) == 20 * 11 and float(lines["fuel_core_transitions_per_s"]) > 0
