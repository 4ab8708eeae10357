"""The fuel lane's state machine without I/O: events in, commands out.

The lane's transitions are the table :data:`TRANSITIONS` (docs/lanes.md shows the same table;
tests/terminal/test_fuel_core.py checks the two agree). :class:`FuelCore` holds the lane's
state and its open transaction; :meth:`FuelCore.handle` takes one event (a card read, the
PIN's outcome, the console's authorize, a card or pump result, a delivery's end, a timeout,
the pump back...) and returns the commands that follow from it, in the order they must be
performed: journal this record, hold the balance, reserve on the card, preset the pump, read
the totals, confirm the sale, set a timer, publish. A command that needs an answer from a
device (:class:`Reserve`, :class:`Preset`, :class:`Cancel`, :class:`Settle`,
:class:`ReadTotals`, :class:`ReadCard`, :class:`ReadDelivery`) is always the last of its
list; the driver (:mod:`terminal.fuel`) performs it and hands the result back as the next
event. So the rule "journal before any irreversible effect" is here, once: a
:class:`Preset` is only ever returned after the :class:`Journal` of its ``fuel.reserved``
(and so of its ``fuel.preauth``); a :class:`ConfirmSale` only after the :class:`Journal` of
the sale's ``fuel.completed`` or ``fuel.voided``; a completion is journaled once.

Nothing here awaits, reads a clock, or touches a device, a file or the network: every
transition runs in microseconds under test (``python -m benchmarks.fuel_core``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any

from authz import fuel as rules
from authz.fuel_model import FuelCard, FuelDecision, FuelRequest, LimitCounter, LimitUnit, Period, Product
from authz.money import amount_for_volume
from wire.bodies import (CardCommit, Counters, Counting, FuelCardCommitted, FuelCompleted, FuelCorrection,
                         FuelEmergencyStop, FuelPinChecked, FuelPreauth, FuelPreset, FuelPumpAction, FuelPumpReset,
                         FuelReserved, FuelTotalsMismatch, FuelVoided, NozzleTotals, PreauthCard, PreauthPump)

__all__ = [
    "LaneState", "FuelTimeouts", "Settle", "FuelTxn", "Transition", "TRANSITIONS", "FuelCore", "CoreError",
    "Refusal", "FuelLaneError",
    "counting_for", "newer", "base_counters", "plus", "write_id_of",
    # events
    "CardRead", "CardGone", "PinChecked", "Declined", "AuthorizeAsked", "ReserveDone", "PresetDone", "Progress",
    "PumpStarted", "DeliveryEnded", "TimedOut", "PumpLost", "PumpBack", "VoidAsked", "CancelDone",
    "SettleDone", "TotalsRead", "RecoverAsked", "DeliveryRead", "PumpAction", "SuspendAsked", "ResumeAsked",
    "StopAsked", "ResetAsked", "PumpActed", "UnconfirmedRead",
    # commands
    "Journal", "Hold", "Reserve", "Preset", "Cancel", "Settle_", "ReadTotals", "ConfirmSale", "SetTimer",
    "Publish", "ApplyReplica", "ReadCard", "ReadDelivery", "Reply", "Operate",
]


class CoreError(RuntimeError):
    """An event the lane's state does not allow (a driver bug, never bad input)."""


class Refusal(StrEnum):
    """Why the lane refuses a console's request. The lane names the kind; the API layer
    decides the answer's status (terminal/api.py, as h11's server reads ``error_status_hint``
    and its core never speaks HTTP)."""

    NOT_NOW = "not_now"  #: the lane's or the pump's state does not allow it now
    INVALID = "invalid"  #: a value the lane cannot take; nothing was tried
    UNAVAILABLE = "unavailable"  #: the pump or the card does not answer; the request may be sent again


class FuelLaneError(Exception):
    """A console request the fuel lane refuses, and why (:class:`Refusal`); it changed
    nothing. The message says what was wrong and with which value."""

    def __init__(self, message: str, kind: Refusal = Refusal.NOT_NOW) -> None:
        super().__init__(message)
        self.kind = kind


# -- the lane's values -------------------------------------------------------------------------------

class LaneState(StrEnum):
    """Where a pump lane is (docs/lanes.md)."""

    IDLE = "idle"  #: no card session, no transaction
    CARD_READ = "card_read"  #: a genuine card is read; waiting for its PIN
    PIN_OK = "pin_ok"  #: the card accepted the PIN; waiting for the console's authorize
    AUTHORIZED = "authorized"  #: journaled, reserved on the card, preset on the pump; waiting for the nozzle
    DISPENSING = "dispensing"  #: fuel is flowing
    COMPLETING = "completing"  #: the delivery ended: journal it, settle the card
    RECOVERING = "recovering"  #: a transaction of the last run waits for the pump to answer


@dataclass(frozen=True, slots=True)
class FuelTimeouts:
    """How long a lane waits at each step (seconds)."""

    pin_s: float = 60.0  #: CARD_READ: the PIN must be entered within this
    authorize_s: float = 90.0  #: PIN_OK: pump and product chosen within this
    nozzle_s: float = 120.0  #: AUTHORIZED: the nozzle lifted within this, else the authorization is voided
    card_apdu_s: float = 1.0  #: one APDU exchange with the card
    pump_s: float = 5.0  #: recovery: waiting for the pump to end a sale it had open
    reader_retry_s: float = 2.0  #: between attempts to open a reader that is not there


class Settle(StrEnum):
    """What became of a card write (commit or release) the lane tried to settle."""

    DONE = "done"  #: the card holds the write
    NOT_RESERVED = "not_reserved"  #: the card never applied the reservation: nothing to give back
    ABSENT = "absent"  #: the card is not in the reader
    OVERTAKEN = "overtaken"  #: the card moved on (another write): it cannot be settled here
    UNKNOWN = "unknown"  #: the card went away during the write: it may or may not hold it


_B32 = {c: i for i, c in enumerate("0123456789ABCDEFGHJKMNPQRSTVWXYZ")}


def write_id_of(record_id: str) -> bytes:
    """The 16-byte card write id of a journal record id: the 128 bits of its ULID (unique,
    never all zero), so a card's ``last write id`` names the record that announced it."""
    ulid = record_id.rpartition("-")[2]
    value = 0
    for ch in ulid:
        value = value << 5 | _B32[ch]
    return value.to_bytes(16, "big")


def counting_for(card: FuelCard, product: Product, today: date) -> tuple[Counting, ...]:
    """The counting of every limit of ``card`` (in the card's record order) for a sale of
    ``product`` on local day ``today``: the rule of authz.fuel.complete (a limit with a
    period that covers the product counts, in its unit, from the start of its period;
    quarters and years are calendar ones)."""
    out = []
    for lim in card.limits:
        counts = lim.period is not Period.TRANSACTION and lim.covers(product)
        start = rules.period_start(lim.period, today) if counts else 0
        out.append(Counting(lim.limit_id, counts, lim.unit is LimitUnit.MILLILITRES, start,
                            lim.unit is LimitUnit.PURCHASES))
    return tuple(out)


def newer(a: LimitCounter | None, b: LimitCounter | None) -> LimitCounter | None:
    """The newer of two counters of one limit: a later period wins, then the larger spend."""
    if a is None:
        return b
    if b is None:
        return a
    return a if (a.period_start, a.spent) >= (b.period_start, b.spent) else b


def base_counters(card_counters: Counters, counting: tuple[Counting, ...],
                  known: Mapping[int, LimitCounter | None]) -> Counters:
    """The counters a sale starts from: for each counting limit the newer of the card's and
    the site's (``known``) counter, restarted at zero when its period has rolled over; the
    other limits as the card has them."""
    out = []
    for (limit_id, c), how in zip(card_counters, counting):
        if how.counts:
            c = newer(c, known.get(limit_id)) or LimitCounter(0, how.period_start)
            if c.period_start < how.period_start:
                c = LimitCounter(0, how.period_start)
        out.append((limit_id, c))
    return tuple(out)


def plus(base: Counters, counting: tuple[Counting, ...], volume_ml: int, amount_kop: int) -> Counters:
    """``base`` with a sale of ``volume_ml`` for ``amount_kop`` counted on every counting
    limit: millilitres, kopecks, or one purchase when the sale delivered (or reserves)
    anything, none when ``volume_ml`` is 0 (authz.fuel.count_delivery)."""
    return tuple((limit_id, LimitCounter(c.spent + _added(how, volume_ml, amount_kop), c.period_start))
                 if how.counts else (limit_id, c) for (limit_id, c), how in zip(base, counting))


def _added(how: Counting, volume_ml: int, amount_kop: int) -> int:
    if how.purchases:
        return 1 if volume_ml > 0 else 0
    return volume_ml if how.in_ml else amount_kop


@dataclass(slots=True)
class FuelTxn:
    """One pump transaction, as journaled: everything to finish it is in its records."""

    txn_id: str
    request: FuelRequest
    decision: FuelDecision
    contract_id: int
    expected_txn: int  #: the card's transaction counter when it was read (RESERVE's expected)
    reserve_write_id: bytes
    release_write_id: bytes
    counting: tuple[Counting, ...]
    base: Counters  #: the counters the sale starts from (what a release writes back)
    price_kop_per_l: int  #: what the pump is preset at (the decision's unit price)
    last_sale_no_before: int  #: the pump's last delivery's sale number before this preset
    reserve_applied: bool | None = None  #: None: unknown (the card's answer was lost)
    sale_no: int | None = None  #: the pump's sale number, once preset
    delivered_ml: int = 0
    pump_offline: bool = False
    totals_before: NozzleTotals | None = None  #: the product's nozzle totals at authorization
    preauth_id: str | None = None  #: the ``fuel.preauth`` record's id (its ULID is the RESERVE's write id)
    completed: FuelCompleted | None = None  #: the ``fuel.completed`` body, once journaled
    sale_id: Any = None  #: the dispenser's id of the sale to confirm (``Delivery.sale_id``), if it has one
    totals_checked: bool = False  #: the totals after the sale were read (a mismatch is journaled)

    @property
    def card_no(self) -> str:
        """The card of the sale."""
        return self.request.card_no

    @property
    def product(self) -> str:
        """The product of the sale."""
        return self.request.product

    def reserve_counters(self) -> Counters:
        """What RESERVE writes: the base plus the approved volume and amount."""
        return plus(self.base, self.counting, self.decision.volume_ml, self.decision.amount_kop)

    def final_counters(self, delivered_ml: int) -> Counters:
        """What COMMIT writes: the base plus the delivered volume and its amount."""
        return plus(self.base, self.counting, delivered_ml,
                    amount_for_volume(delivered_ml, self.decision.unit_price_kop_per_l))

    def preauth(self) -> FuelPreauth:
        """The ``fuel.preauth`` body of this transaction."""
        return FuelPreauth(self.request, self.decision,
                           PreauthCard(self.card_no, self.contract_id, self.expected_txn, self.reserve_write_id,
                                       self.release_write_id, self.counting, self.base, self.reserve_counters()),
                           PreauthPump(self.product, self.price_kop_per_l, self.decision.volume_ml,
                                       self.last_sale_no_before, self.totals_before))

    @classmethod
    def from_bodies(cls, txn_id: str, bodies: list[Any]) -> FuelTxn:
        """Rebuild a transaction from its typed journal bodies (the first a :class:`FuelPreauth`)."""
        p = bodies[0]
        if not isinstance(p, FuelPreauth):
            raise CoreError(f"transaction {txn_id} does not start with fuel.preauth")
        card, pump = p.card, p.pump
        t = cls(txn_id, p.request, p.decision, card.contract_id, card.expected_txn, card.reserve_write_id,
                card.release_write_id, card.counting, card.base_counters, pump.price_kop_per_l,
                pump.last_sale_no_before, totals_before=pump.totals_before)
        for b in bodies[1:]:
            if isinstance(b, FuelReserved):
                t.reserve_applied = True
            elif isinstance(b, FuelPreset):
                t.sale_no = b.sale_no
            elif isinstance(b, FuelCompleted):
                t.delivered_ml = b.delivered_volume_ml
                t.completed = b
                t.sale_id = b.sale_id
            elif isinstance(b, FuelTotalsMismatch):
                t.totals_checked = True
        return t


# -- events (what happened) ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CardRead:
    """A card in the reader was read and checked genuine (``session`` is the driver's
    handle on it); ``known``: the replica knows it. ``None`` session: no usable card
    (absent, unreadable or refused; ``notice`` says which)."""

    session: Any
    card_no: str | None
    known: bool = True
    tries_left: int = 3
    notice: str | None = None


@dataclass(frozen=True, slots=True)
class CardGone:
    """The card left the reader (or the reader went away)."""


@dataclass(frozen=True, slots=True)
class PinChecked:
    """The card answered a PIN check: ``verified``, ``wrong_pin``, ``pin_blocked``, or
    ``removed`` (the card left during the check). ``answer``: the console's answer, which
    is journaled with ``fuel.pin_checked`` (not for ``removed``: nothing is journaled)."""

    outcome: str
    tries_left: int
    answer: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Declined:
    """The console's authorize was declined: ``body`` is its ``fuel.declined`` (in
    transaction ``txn_id``), ``answer`` the console's answer journaled with it; the lane
    stays ready for another try."""

    txn_id: str
    body: Any
    answer: Mapping[str, Any]
    notice: str


@dataclass(frozen=True, slots=True)
class AuthorizeAsked:
    """The console's authorize was decided and approved: ``txn`` is the transaction to
    open (its decision taken, its holds not yet)."""

    txn: FuelTxn


@dataclass(frozen=True, slots=True)
class ReserveDone:
    """The card's answer to RESERVE: applied (True), refused (False) or lost (None)."""

    applied: bool | None
    txn_counter: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PresetDone:
    """The pump's answer to the preset: its sale number, or ``error``; ``flowing`` if the
    nozzle was already up."""

    sale_no: int | None
    error: str | None = None
    flowing: bool = False


@dataclass(frozen=True, slots=True)
class Progress:
    """Fuel is flowing: the running volume."""

    volume_ml: int
    amount_kop: int


@dataclass(frozen=True, slots=True)
class PumpStarted:
    """The pump reports it is dispensing."""


@dataclass(frozen=True, slots=True)
class DeliveryEnded:
    """The pump ended the sale ``sale_no`` with ``volume_ml`` (its own record of it)."""

    sale_no: int | None
    volume_ml: int
    reason: str
    sale_id: Any = None


@dataclass(frozen=True, slots=True)
class TimedOut:
    """The timer the core last set ran out."""


@dataclass(frozen=True, slots=True)
class PumpLost:
    """The pump stopped answering."""


@dataclass(frozen=True, slots=True)
class PumpBack:
    """The pump answers again."""


@dataclass(frozen=True, slots=True)
class VoidAsked:
    """The console asks to void the authorization."""


@dataclass(frozen=True, slots=True)
class CancelDone:
    """The pump's answer to cancelling its authorization: ``error`` None if cancelled;
    ``flowing`` if it refused because fuel flows."""

    error: str | None = None
    flowing: bool = False


@dataclass(frozen=True, slots=True)
class SettleDone:
    """What became of the card write (commit or release) of the transaction."""

    settle: Settle
    reserve_applied: bool | None = None  #: what the card's counters showed (None: not learnt)


@dataclass(frozen=True, slots=True)
class TotalsRead:
    """The product's nozzle totals after the sale (None: the pump cannot tell)."""

    totals: NozzleTotals | None


@dataclass(frozen=True, slots=True)
class RecoverAsked:
    """Finish ``txn``, a transaction the last run left open (``held``: its balance is held
    already, from an earlier attempt)."""

    txn: FuelTxn
    held: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryRead:
    """What the pump dispensed for the recovered transaction (None: it does not answer)."""

    volume_ml: int | None
    reason: str = "recovered"
    sale_id: Any = None


class PumpAction(StrEnum):
    """What an operator may have the pump do (``POST /v1/pumps/{pump}/...``)."""

    SUSPEND = "suspend"  #: pause the delivery in progress (the valve closes, the sale stays open)
    RESUME = "resume"  #: let a suspended delivery flow again
    EMERGENCY_STOP = "emergency_stop"  #: end any delivery now and latch the pump stopped
    RESET = "reset"  #: clear an emergency stop


@dataclass(frozen=True, slots=True)
class _OperatorAsked:
    """An operator's request to the pump (``key``: the request's idempotency key, opaque
    here: the answer is journaled under it)."""

    key: Any = None


@dataclass(frozen=True, slots=True)
class SuspendAsked(_OperatorAsked):
    """An operator asks to suspend the sale's delivery."""


@dataclass(frozen=True, slots=True)
class ResumeAsked(_OperatorAsked):
    """An operator asks to resume the suspended delivery."""


@dataclass(frozen=True, slots=True)
class StopAsked(_OperatorAsked):
    """An operator asks for an emergency stop (in any state: the driver takes no lane lock)."""


@dataclass(frozen=True, slots=True)
class ResetAsked(_OperatorAsked):
    """An operator asks to clear the pump's emergency stop."""


@dataclass(frozen=True, slots=True)
class PumpActed:
    """The pump did the operator's ``action``; ``pump_state`` is its state after it. (A pump
    that refused or did not answer never gets here: the driver refuses the request, and
    nothing is journaled.)"""

    action: PumpAction
    pump_state: str
    key: Any = None


@dataclass(frozen=True, slots=True)
class UnconfirmedRead:
    """At start, the pump holds the finished sale ``sale_id`` unconfirmed (a confirm the last
    run could not send); ``journaled``: the journal holds its end (``fuel.completed``, or the
    ``fuel.voided`` of a sale that dispensed nothing)."""

    sale_id: Any
    sale_no: int
    journaled: bool


# -- commands (what to do) ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Reply:
    """The console's answer to the request being served: ``outcome`` names it (the API
    layer maps it to a status), ``payload`` its fields."""

    outcome: str
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Journal:
    """Append these bodies (one transaction: ``txn_id``; None: a new transaction of its
    own) as one durable write. ``record_id`` names the first record's id when it matters
    (card write ids). ``reply``: the answer journaled with it under the request's key.
    ``undo``: performed if the write fails (then the driver raises). ``secret``: the
    request's body is a secret (a PIN): its key keeps an HMAC of it, not a hash."""

    bodies: tuple[Any, ...]
    txn_id: str | None
    record_id: str | None = None
    reply: Reply | None = None
    undo: Any = None
    secret: bool = False
    key: Any = None  #: journal the reply under this request key rather than the one being served


@dataclass(frozen=True, slots=True)
class Operate:
    """Have the pump do the operator's ``action`` (answers :class:`PumpActed`)."""

    action: PumpAction
    key: Any = None


@dataclass(frozen=True, slots=True)
class Hold:
    """Hold (``on``) or give back the contract balance and the card's open authorization
    of ``txn`` (site-wide, synchronous)."""

    txn: FuelTxn
    on: bool


@dataclass(frozen=True, slots=True)
class Reserve:
    """RESERVE ``txn``'s counters on its card (answers :class:`ReserveDone`)."""

    txn: FuelTxn


@dataclass(frozen=True, slots=True)
class Preset:
    """Preset the pump for ``txn`` (answers :class:`PresetDone`)."""

    txn: FuelTxn


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel the pump's authorization (answers :class:`CancelDone`)."""


@dataclass(frozen=True, slots=True)
class Settle_:
    """Make the card hold ``write_id`` with ``counters`` (answers :class:`SettleDone`)."""

    txn: FuelTxn
    write_id: bytes
    counters: Counters
    release: bool  #: a release (void) rather than a commit


@dataclass(frozen=True, slots=True)
class ReadTotals:
    """Read the nozzle totals of ``product`` (answers :class:`TotalsRead`)."""

    product: str


@dataclass(frozen=True, slots=True)
class ConfirmSale:
    """Tell the dispenser its sale is recorded (it may forget it now)."""

    sale_id: Any


@dataclass(frozen=True, slots=True)
class ApplyReplica:
    """Apply the journaled completion to the replica (what a restart's replay does)."""

    body: FuelCompleted


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Run out after ``seconds`` (None: no timer)."""

    seconds: float | None


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish the lane's view as event ``type`` (with ``extra`` fields)."""

    type: str = "pump.state"
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReadCard:
    """Read the card in the reader, if any (answers :class:`CardRead`)."""


@dataclass(frozen=True, slots=True)
class ReadDelivery:
    """Ask the pump what it dispensed for the recovered ``txn``, stopping an open sale first
    (answers :class:`DeliveryRead`)."""

    txn: FuelTxn


# -- the table ----------------------------------------------------------------------------------------

S = LaneState
ANY = frozenset(LaneState)


@dataclass(frozen=True, slots=True)
class Transition:
    """One row of the lane's table: from these states, on this event, to these states,
    journaling these record kinds (some of them, depending on the event's outcome)."""

    sources: frozenset[LaneState]
    event: str
    targets: frozenset[LaneState]
    journal: tuple[str, ...] = ()


def _t(src: Any, event: str, dst: Any, *journal: str) -> Transition:
    def states(x: Any) -> frozenset[LaneState]:
        return frozenset(x) if isinstance(x, (set, frozenset, tuple)) else frozenset({x})
    return Transition(states(src), event, states(dst), journal)


IDLE, CARD_READ, PIN_OK, AUTHORIZED, DISPENSING, COMPLETING, RECOVERING = (
    S.IDLE, S.CARD_READ, S.PIN_OK, S.AUTHORIZED, S.DISPENSING, S.COMPLETING, S.RECOVERING)
_SESSION = {IDLE, CARD_READ}  # where an ended sale leaves the lane: a new session, or none

#: The lane's transitions. docs/lanes.md "Transitions" is this table; a test checks it.
TRANSITIONS: tuple[Transition, ...] = (
    _t({IDLE, CARD_READ, PIN_OK}, "CardRead", {IDLE, CARD_READ}),
    _t({AUTHORIZED, DISPENSING, COMPLETING}, "CardRead", {AUTHORIZED, DISPENSING, COMPLETING}),
    _t({CARD_READ, PIN_OK}, "CardGone", IDLE),
    _t({IDLE, AUTHORIZED, DISPENSING, COMPLETING, RECOVERING}, "CardGone",
       {IDLE, AUTHORIZED, DISPENSING, COMPLETING, RECOVERING}),
    _t({CARD_READ, PIN_OK}, "PinChecked", {CARD_READ, PIN_OK, IDLE}, "fuel.pin_checked"),
    _t(PIN_OK, "Declined", PIN_OK, "fuel.declined"),
    _t(PIN_OK, "AuthorizeAsked", PIN_OK, "fuel.preauth"),
    _t(PIN_OK, "ReserveDone", {PIN_OK, IDLE}, "fuel.reserved", "fuel.voided"),
    _t(PIN_OK, "PresetDone", {AUTHORIZED, DISPENSING, PIN_OK}, "fuel.preset"),
    _t({PIN_OK, AUTHORIZED, DISPENSING, IDLE, RECOVERING}, "SettleDone", _SESSION | {RECOVERING},
       "fuel.voided", "fuel.correction"),
    _t({AUTHORIZED, DISPENSING}, "Progress", DISPENSING),
    _t({AUTHORIZED, DISPENSING}, "PumpStarted", DISPENSING),
    _t({AUTHORIZED, DISPENSING}, "DeliveryEnded", {COMPLETING, AUTHORIZED, DISPENSING}, "fuel.completed"),
    _t(COMPLETING, "TotalsRead", COMPLETING, "fuel.totals_mismatch"),
    _t(COMPLETING, "SettleDone", _SESSION, "fuel.card_committed", "fuel.correction"),
    _t({CARD_READ, PIN_OK}, "TimedOut", IDLE),
    _t(AUTHORIZED, "TimedOut", AUTHORIZED),
    _t(AUTHORIZED, "VoidAsked", AUTHORIZED),
    _t({AUTHORIZED, DISPENSING}, "CancelDone", {AUTHORIZED, DISPENSING}),
    _t(ANY - {RECOVERING}, "PumpLost", ANY - {RECOVERING}),
    _t(ANY - {RECOVERING}, "PumpBack", ANY - {RECOVERING}),
    _t({IDLE, RECOVERING}, "RecoverAsked", {COMPLETING, RECOVERING, IDLE}),
    _t({IDLE, RECOVERING}, "DeliveryRead", {COMPLETING, RECOVERING, IDLE}, "fuel.completed", "fuel.voided"),
    _t({IDLE, RECOVERING}, "UnconfirmedRead", {IDLE, RECOVERING}),
    _t({AUTHORIZED, DISPENSING}, "SuspendAsked", {AUTHORIZED, DISPENSING}),
    _t({AUTHORIZED, DISPENSING}, "ResumeAsked", {AUTHORIZED, DISPENSING}),
    _t(ANY, "StopAsked", ANY),
    _t(ANY, "ResetAsked", ANY),
    _t(ANY, "PumpActed", ANY, "fuel.pump_action", "fuel.emergency_stop", "fuel.pump_reset"),
)

#: What the pump is asked to do for each of the operator's requests.
_ACTION_OF: dict[type[_OperatorAsked], PumpAction] = {
    SuspendAsked: PumpAction.SUSPEND, ResumeAsked: PumpAction.RESUME, StopAsked: PumpAction.EMERGENCY_STOP,
    ResetAsked: PumpAction.RESET}
#: The operator's requests: one the lane's state does not take is refused (FuelLaneError).
_CONSOLE = {"SuspendAsked": "suspend the delivery", "ResumeAsked": "resume the delivery"}

_ALLOWED: dict[tuple[LaneState, str], frozenset[LaneState]] = {}
for _row in TRANSITIONS:
    for _s in _row.sources:
        key = (_s, _row.event)
        _ALLOWED[key] = _ALLOWED.get(key, frozenset()) | _row.targets


def allowed(state: LaneState, event: str) -> frozenset[LaneState] | None:
    """The states ``event`` may lead to from ``state`` (None: the event is not handled there)."""
    return _ALLOWED.get((state, event))


# -- the core -----------------------------------------------------------------------------------------

@dataclass(slots=True)
class Card:
    """The card session the core knows: the driver's handle, its number, its PIN status."""

    session: Any
    card_no: str
    pin_ok: bool = False
    tries_left: int = 3


class FuelCore:
    """The lane's state and open transaction; :meth:`handle` turns one event into commands.

    ``recovering``: set by the driver while it finishes the last run's transactions (an
    ended sale then starts no card session).
    """

    def __init__(self, new_record_id: Callable[[], str], timeouts: FuelTimeouts | None = None) -> None:
        #: makes a journal record id (a ULID-tailed id: ``terminal.ids.new_id``): the core
        #: names the ``fuel.completed`` record, whose ULID is the card COMMIT's write id
        self.new_record_id = new_record_id
        self.timeouts = timeouts or FuelTimeouts()
        self.state = LaneState.IDLE
        self.card: Card | None = None
        self.txn: FuelTxn | None = None
        self.notice: str | None = None
        self.recovering = False
        self._void_reason: str | None = None
        self._void_reply: Reply | None = None
        self._releasing = False  #: the Settle_ in flight is a release (a void), not a commit

    # -- the entry point --

    def handle(self, event: Any) -> list[Any]:
        """The commands ``event`` leads to, in order. Raises CoreError for an event the
        state does not take (the driver's bug), before anything changes."""
        name = type(event).__name__
        before = self.state
        targets = allowed(before, name)
        if targets is None:
            return self._ignored(event)
        out: list[Any] = getattr(self, "_on_" + name)(event)
        if self.state not in targets:  # pragma: no cover - the table and the code disagree
            raise CoreError(f"{name} took the lane from {before.value} to {self.state.value}, "
                            f"which the table does not allow")
        return out

    def _ignored(self, event: Any) -> list[Any]:
        if isinstance(event, (PumpLost, PumpBack, Progress, PumpStarted, DeliveryEnded, TimedOut, CardGone)):
            return []  # a device event with nothing of ours to act on
        what = _CONSOLE.get(type(event).__name__)
        if what is not None:
            raise FuelLaneError(f"the pump cannot {what}: no sale is flowing (the lane is {self.state.value})")
        raise CoreError(f"{type(event).__name__} is not taken in state {self.state.value}")

    # -- helpers --

    def _set(self, state: LaneState, notice: str | None, timeout_s: float | None = None) -> list[Any]:
        self.state = state
        self.notice = notice
        return [SetTimer(timeout_s), Publish()]

    def _end(self, notice: str) -> list[Any]:
        """The transaction is over (its last record is in the commands before this)."""
        txn = self.txn
        out: list[Any] = []
        if txn is not None:
            self.txn = None
            out.append(Hold(txn, False))
        self.notice = notice
        if self.recovering:
            self.state = LaneState.IDLE
            return out
        self.card = None
        self.state = LaneState.IDLE
        out += [SetTimer(None), ReadCard()]  # a card still in starts a new session (PIN again)
        return out

    # -- card --

    def _on_CardRead(self, ev: CardRead) -> list[Any]:
        if self.txn is not None:  # only the sale's own card may come back (to be committed)
            if ev.session is not None and ev.card_no == self.txn.card_no:
                self.card = Card(ev.session, ev.card_no, tries_left=ev.tries_left)
                self.notice = "card back in the reader"
            elif ev.session is not None:
                self.notice = "the pump is busy with another card's sale"
            elif ev.notice is not None:
                self.notice = ev.notice
            return [Publish()]
        if ev.session is None or ev.card_no is None:
            self.card = None
            return self._set(LaneState.IDLE, ev.notice if ev.notice is not None else self.notice)
        if not ev.known:
            self.card = None
            return self._set(LaneState.IDLE, ev.notice)
        self.card = Card(ev.session, ev.card_no, tries_left=ev.tries_left)
        blocked = ev.tries_left == 0
        return self._set(LaneState.CARD_READ, "the card's PIN is blocked" if blocked else "enter the PIN",
                         self.timeouts.pin_s)

    def _on_CardGone(self, ev: CardGone) -> list[Any]:
        self.card = None
        if self.state in (LaneState.CARD_READ, LaneState.PIN_OK):
            return self._set(LaneState.IDLE, "card removed")
        if self.txn is not None:
            self.notice = "card removed; the sale goes on"
            return [Publish()]
        return []

    def _on_PinChecked(self, ev: PinChecked) -> list[Any]:
        c = self.card
        if c is None:
            raise CoreError("a PIN result with no card")
        if ev.outcome == "removed":
            self.card = None
            return self._set(LaneState.IDLE, "card removed")
        if ev.outcome == "verified":
            c.pin_ok, c.tries_left = True, 3
            out = self._set(LaneState.PIN_OK, "choose the product", self.timeouts.authorize_s)
        elif ev.outcome == "wrong_pin":
            c.pin_ok, c.tries_left = False, ev.tries_left
            out = self._set(LaneState.CARD_READ, f"wrong PIN, {ev.tries_left} tries left", self.timeouts.pin_s)
        elif ev.outcome == "pin_blocked":
            c.pin_ok, c.tries_left = False, 0
            out = self._set(LaneState.CARD_READ, "the card's PIN is blocked", self.timeouts.pin_s)
        else:
            raise CoreError(f"unknown PIN outcome {ev.outcome!r}")
        # The step happened and its outcome: its own transaction, never the PIN.
        body = FuelPinChecked(c.card_no, ev.outcome, c.tries_left)
        return out + [Journal((body,), None, reply=Reply(ev.outcome, ev.answer), secret=True)]

    def _on_TimedOut(self, ev: TimedOut) -> list[Any]:
        if self.state in (LaneState.CARD_READ, LaneState.PIN_OK):
            self.card = None
            return self._set(LaneState.IDLE, "timed out: take the card and insert it again")
        if self.txn is None:
            return []
        self._void_reason = f"the nozzle was not lifted within {self.timeouts.nozzle_s:g} s"
        self._void_reply = None
        return [Cancel()]

    def _on_Declined(self, ev: Declined) -> list[Any]:
        return [Journal((ev.body,), ev.txn_id, reply=Reply("declined", ev.answer))] + \
            self._set(LaneState.PIN_OK, ev.notice, self.timeouts.authorize_s)

    # -- authorize: preauth -> reserve -> reserved -> preset -> preset journaled --

    def _on_AuthorizeAsked(self, ev: AuthorizeAsked) -> list[Any]:
        if self.txn is not None or self.card is None or not self.card.pin_ok:
            raise CoreError("authorize asked with a sale on, or no verified card")
        txn = ev.txn
        self.txn = txn
        return [Hold(txn, True),  # before the await: another pump's decision sees it
                Journal((txn.preauth(),), txn.txn_id, txn.preauth_id, undo=(Hold(txn, False),)),
                Reserve(txn)]

    def attach(self, session: Any, card_no: str) -> None:
        """The driver re-read the sale's card while settling it, or during recovery: keep
        its session (no transition: the sale's state goes on)."""
        self.card = Card(session, card_no)

    def detach(self) -> None:
        """The card went away in the middle of a card write (no transition)."""
        self.card = None

    def recovered(self, pending: int, notice: str | None = None) -> None:
        """The driver finished (or retried) the last run's transactions: ``pending`` of them
        still wait for the pump (RECOVERING), else the lane is IDLE with no card session."""
        self.txn = None
        self.card = None
        if pending:
            self.state = LaneState.RECOVERING
            self.notice = f"{pending} sale(s) of the last run wait for the pump to answer"
        else:
            self.state = LaneState.IDLE
            if notice is not None:
                self.notice = notice

    def forget(self, txn: FuelTxn) -> None:
        """The driver could not journal ``txn``'s pre-authorization (it performed the
        Journal's ``undo`` and stops): the lane has no transaction."""
        if self.txn is txn:
            self.txn = None

    def _on_ReserveDone(self, ev: ReserveDone) -> list[Any]:
        txn = self._txn()
        if ev.applied is True:
            txn.reserve_applied = True
            return [Journal((FuelReserved(txn.card_no, int(ev.txn_counter or 0), txn.reserve_write_id),),
                            txn.txn_id),
                    Preset(txn)]
        txn.reserve_applied = ev.applied
        if ev.applied is False:
            return self._fail("card_refused_reservation", f"the card refused the reservation: {ev.error}")
        return self._fail("card_write_failed", f"the card's answer to the reservation was lost: {ev.error}")

    def _on_PresetDone(self, ev: PresetDone) -> list[Any]:
        txn = self._txn()
        if ev.sale_no is None:
            return self._fail("pump_not_ready", f"the pump refused the preset: {ev.error}")
        txn.sale_no = ev.sale_no
        state = LaneState.DISPENSING if ev.flowing else LaneState.AUTHORIZED
        reply = Reply("authorized", {"state": state.value, "sale_no": ev.sale_no})
        out: list[Any] = [Journal((FuelPreset(ev.sale_no, txn.product, txn.price_kop_per_l, txn.decision.volume_ml),),
                                  txn.txn_id, reply=reply)]
        return out + self._set(state, None if ev.flowing else "lift the nozzle",
                               None if ev.flowing else self.timeouts.nozzle_s)

    def _fail(self, code: str, message: str) -> list[Any]:
        """An authorization failed after its pre-authorization was journaled: void it; the
        error answer is journaled with the void."""
        return self._void(message, Reply("failed", {"code": code, "message": message}))

    # -- void --

    def _on_VoidAsked(self, ev: VoidAsked) -> list[Any]:
        # The driver cancelled the pump's authorization first (a refusal is the console's error).
        return self._void("voided by the console", Reply("voided", {}))

    def _on_CancelDone(self, ev: CancelDone) -> list[Any]:
        reason = self._void_reason or "voided"
        self._void_reason = self._void_reply = None
        if ev.error is not None or self.txn is None:  # flowing, or offline: the pump's DeliveryComplete ends it
            return []
        return self._void(reason, None)

    def _void(self, reason: str, reply: Reply | None) -> list[Any]:
        txn = self._txn()
        self._void_reason, self._void_reply = reason, reply
        if txn.reserve_applied is False:
            return self._voided(Settle.NOT_RESERVED)
        self._releasing = True
        return [Settle_(txn, txn.release_write_id, txn.base, release=True)]

    def _voided(self, settle: Settle) -> list[Any]:
        txn = self._txn()
        reason, reply = self._void_reason or "voided", self._void_reply
        self._void_reason = self._void_reply = None
        release = {Settle.DONE: "released", Settle.NOT_RESERVED: "not_reserved"}.get(settle, "correction")
        released = release == "released"
        bodies: list[Any] = [FuelVoided(txn.card_no, reason, release, txn.sale_no,
                                        txn.expected_txn + 2 if released else None,
                                        txn.release_write_id if released else None)]
        if release == "correction":
            bodies.append(self._correction(txn, settle, 0, txn.release_write_id))
        if reply is not None and reply.outcome == "voided":
            reply = Reply(reply.outcome, {**reply.payload, "card_release": release})
        out: list[Any] = [Journal(tuple(bodies), txn.txn_id, reply=reply)]
        if txn.sale_id is not None:
            out.append(ConfirmSale(txn.sale_id))  # after the void is journaled
        return out + self._end(f"voided: {reason}")

    def _correction(self, txn: FuelTxn, settle: Settle, delivered_ml: int, write_id: bytes) -> FuelCorrection:
        may_hold = txn.reserve_counters() if txn.reserve_applied is not False else txn.base
        amount = amount_for_volume(delivered_ml, txn.decision.unit_price_kop_per_l)
        return FuelCorrection(txn.card_no, txn.contract_id, settle.value, txn.reserve_applied,
                              txn.expected_txn + 1, txn.reserve_write_id, write_id, may_hold,
                              txn.final_counters(delivered_ml) if delivered_ml else txn.base, delivered_ml, amount,
                              txn.decision.volume_ml - delivered_ml, txn.decision.amount_kop - amount)

    # -- the pump --

    def _on_Progress(self, ev: Progress) -> list[Any]:
        txn = self.txn
        if txn is None:
            return []
        txn.delivered_ml = ev.volume_ml
        out: list[Any] = []
        if self.state is LaneState.AUTHORIZED:
            out += self._set(LaneState.DISPENSING, self.notice)
        return out + [Publish("pump.progress", {"volume_ml": ev.volume_ml, "amount_kop": ev.amount_kop})]

    def _on_PumpStarted(self, ev: PumpStarted) -> list[Any]:
        if self.txn is not None and self.state is LaneState.AUTHORIZED:
            return self._set(LaneState.DISPENSING, self.notice)
        return [Publish()]

    def _on_PumpLost(self, ev: PumpLost) -> list[Any]:
        if self.txn is not None:
            self.txn.pump_offline = True
        self.notice = "the pump does not answer"
        return [Publish()]

    def _on_PumpBack(self, ev: PumpBack) -> list[Any]:
        if self.txn is not None:
            self.txn.pump_offline = False
        self.notice = "the pump answers again"
        return [Publish()]

    def _on_DeliveryEnded(self, ev: DeliveryEnded) -> list[Any]:
        txn = self.txn
        if txn is None or txn.sale_no is None or ev.sale_no != txn.sale_no:
            return []  # not a sale of ours
        if ev.sale_id is not None:
            txn.sale_id = ev.sale_id
        return self._finish(ev.volume_ml, ev.reason)

    def _finish(self, volume_ml: int, why: str) -> list[Any]:
        if volume_ml <= 0:
            return self._void(f"nothing dispensed ({why})", None)
        return self._complete(volume_ml, why)

    # -- completion: completed (once) -> replica -> totals -> confirm -> card --

    def _complete(self, volume_ml: int, why: str, record_id: str | None = None) -> list[Any]:
        txn = self._txn()
        out = self._set(LaneState.COMPLETING, self.notice)
        if txn.completed is None:
            charged = min(volume_ml, txn.decision.volume_ml)
            amount = amount_for_volume(charged, txn.decision.unit_price_kop_per_l)
            rid = record_id or self.new_record_id()
            body = FuelCompleted(txn.request, txn.decision, charged, amount, why, volume_ml - charged, txn.sale_no,
                                 txn.card_no, txn.contract_id,
                                 CardCommit(write_id_of(rid), txn.expected_txn + 1,
                                            txn.final_counters(charged)),
                                 None if txn.sale_id is None else str(txn.sale_id))
            txn.completed = body
            out += [Journal((body,), txn.txn_id, rid), ApplyReplica(body)]
        txn.delivered_ml = txn.completed.delivered_volume_ml
        if txn.sale_id is not None:
            out.append(ConfirmSale(txn.sale_id))  # after fuel.completed is journaled
        if txn.totals_before is not None and not txn.totals_checked:
            return out + [ReadTotals(txn.product)]
        return out + self._settle_commit()

    def _on_TotalsRead(self, ev: TotalsRead) -> list[Any]:
        txn = self._txn()
        txn.totals_checked = True
        out: list[Any] = []
        before, after = txn.totals_before, ev.totals
        done = txn.completed
        if before is not None and after is not None and done is not None:
            delivered_ml = done.delivered_volume_ml + done.overrun_ml
            delivered_kop = amount_for_volume(delivered_ml, txn.decision.unit_price_kop_per_l)
            m = FuelTotalsMismatch(txn.txn_id, txn.sale_no, txn.product, before, delivered_ml, delivered_kop, after)
            if m.unexplained_ml != 0:
                out.append(Journal((m,), txn.txn_id))  # in the sale's transaction: checked once
        return out + self._settle_commit()

    def _settle_commit(self) -> list[Any]:
        txn = self._txn()
        c = txn.completed
        assert c is not None
        return [Settle_(txn, c.card_commit.write_id, c.card_commit.counters, release=False)]

    def _on_SettleDone(self, ev: SettleDone) -> list[Any]:
        txn = self._txn()
        if ev.reserve_applied is not None:
            txn.reserve_applied = ev.reserve_applied
        if self._releasing:
            self._releasing = False
            return self._voided(ev.settle)
        c = txn.completed
        assert c is not None
        if ev.settle is Settle.DONE:
            body: Any = FuelCardCommitted(txn.card_no, txn.expected_txn + 2, c.card_commit.write_id,
                                          c.card_commit.counters)
        else:
            body = self._correction(txn, ev.settle, txn.delivered_ml, c.card_commit.write_id)
        return [Journal((body,), txn.txn_id)] + self._end(
            f"sale completed: {txn.delivered_ml} ml" +
            ("" if ev.settle is Settle.DONE else "; the card will be corrected by the host"))

    # -- recovery --

    def _on_RecoverAsked(self, ev: RecoverAsked) -> list[Any]:
        if self.txn is not None:
            raise CoreError("recovery asked with a sale on")
        self.txn = txn = ev.txn
        out: list[Any] = [] if ev.held else [Hold(txn, True)]  # held until it ends
        if txn.completed is not None:  # the delivery is journaled: only the card part is left
            return out + self._complete(txn.delivered_ml, "recovered")
        return out + [ReadDelivery(txn)]

    def _on_DeliveryRead(self, ev: DeliveryRead) -> list[Any]:
        txn = self._txn()
        if ev.sale_id is not None:
            txn.sale_id = ev.sale_id
        if ev.volume_ml is None:  # the pump does not answer: it waits for the pump, still held
            self.txn = None
            self.state = LaneState.RECOVERING
            return []
        if ev.volume_ml > 0:
            return self._complete(ev.volume_ml, ev.reason)
        return self._void("the daemon restarted before fuel flowed", None)

    # -- the operator's actions --

    def _on_operator(self, ev: _OperatorAsked) -> list[Any]:
        """Have the pump do it first; what it did is journaled on :class:`PumpActed`."""
        return [Operate(_ACTION_OF[type(ev)], ev.key)]

    _on_SuspendAsked = _on_ResumeAsked = _on_StopAsked = _on_ResetAsked = _on_operator

    def _on_PumpActed(self, ev: PumpActed) -> list[Any]:
        """The pump did it: journal that (its own transaction, with the answer). The lane's
        state and sale are unchanged: a stopped delivery ends by the pump's DeliveryEnded."""
        sale = self.txn.txn_id if self.txn is not None else None
        body: Any
        if ev.action is PumpAction.EMERGENCY_STOP:
            body, payload, notice = (FuelEmergencyStop(sale), {"stopped": True, "txn_id": sale},
                                     "emergency stop: the pump is stopped")
        elif ev.action is PumpAction.RESET:
            body, payload, notice = FuelPumpReset(), {}, "the emergency stop is cleared"
        else:
            body = FuelPumpAction(ev.action.value, sale)
            payload = {"action": ev.action.value, "txn_id": sale}
            notice = "the delivery is suspended" if ev.action is PumpAction.SUSPEND else "the delivery goes on"
        self.notice = notice
        reply = Reply("operated", {**payload, "pump_state": ev.pump_state})
        return [Journal((body,), None, reply=reply, key=ev.key), Publish()]

    # -- a confirm the last run could not send --

    def _on_UnconfirmedRead(self, ev: UnconfirmedRead) -> list[Any]:
        if ev.journaled:  # its end is on disk: the dispenser may forget it now
            return [ConfirmSale(ev.sale_id)]
        self.notice = (f"the pump holds sale {ev.sale_no} that the journal does not: left unconfirmed "
                       "for the operator to check")
        return [Publish()]

    def _txn(self) -> FuelTxn:
        if self.txn is None:
            raise CoreError("no transaction is open")
        return self.txn
