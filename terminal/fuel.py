"""A fuel lane: one pump's card reader, fuel-card application and dispenser as a state machine.

The flow (docs/lanes.md has the tables): a card is inserted and read (MACs checked) ->
the PIN is checked by the card -> the console authorizes a product (optional preset) ->
the evaluator answers the largest volume -> ``fuel.preauth`` is journaled -> the card
reserves it -> ``fuel.reserved`` -> the pump is preset -> ``fuel.preset`` (with the API's
answer) -> the customer dispenses -> the delivered volume is journaled (``fuel.completed``,
which the replica re-applies on restart) -> the card commits its final counters
(``fuel.card_committed``), or, with the card gone, ``fuel.correction`` tells the host to give
the unused reservation back. A void releases a reservation (``fuel.voided``).

Every record is written *before* the irreversible effect it announces, and carries what
recovery needs to finish the transaction without guessing (docs/recovery.md): the card's
counters before, the ids of every card write (reserve, commit, release) and the pump's sale
numbers. :meth:`FuelLane.recover` reads the card's counters and the pump's ``last_delivery``
and finishes or voids each transaction the last run left open; completion is journaled
exactly once.

:class:`RecordedSimPump` is the simulated dispenser with a real dispenser's memory (sale
numbers, the last sale's totals) kept in a file, so that a daemon killed mid-delivery finds
on restart what was dispensed, as it would on a real forecourt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Any

from authz import fuel as rules
from authz.errors import RequestError
from authz.fuel_model import (FuelCard, FuelDecision, FuelRequest, FuelState, LimitCounter,
                              LimitUnit, Period, Product, mask_card_no)
from authz.localtime import local_date
from authz.money import MAX_AMOUNT_KOP, MAX_VOLUME_ML, amount_for_volume
from hw.card.application import CardData, FuelCardApplication
from hw.card.keys import KeyStore, SoftwareKeyStore
from hw.card.records import Counters
from hw.errors import (CardError, CardNotGenuineError, CardRemovedError, CardStatusError,
                       CardTimeoutError, CounterMismatchError, PinBlockedError, PinFormatError,
                       WrongPinError)
from hw.pump import (Delivery, DeliveryComplete, DeliveryProgress, DeliveryReason, NozzleHungUp,
                     NozzleLifted, Preset, Pump, PumpBackOnline, PumpError, PumpOffline, PumpState,
                     PumpStateError, PumpWentOffline, StateChanged)
from hw.sim.pump import SimulatedPump

from . import crashpoints
from .config import PumpConfig, SiteConfig
from .events import EventBus
from .ids import new_id, new_txn_id
from .journal import Journal, JournalClosedError, JournalDiskError, OpenTransaction, Record
from .replica import (FUEL_COMPLETED, Replica, fuel_decision_body, fuel_decision_from_body,
                      fuel_request_body, fuel_request_from_body)
from .till import IdemSpec, LaneError

log = logging.getLogger("edgepos.fuel")

__all__ = [
    "PREAUTH", "RESERVED", "PRESET", "COMPLETED", "CARD_COMMITTED", "VOIDED", "CORRECTION",
    "DECLINED", "CARD_REFUSED", "EMERGENCY_STOP", "PUMP_RESET", "PIN_CHECKED", "TERMINAL_KINDS",
    "LaneState", "FuelTimeouts", "FuelLane", "RecordedSimPump", "SIM_ISSUER_KEY",
    "sim_key_store", "lane_name", "write_id_of",
]

# -- journal record kinds ---------------------------------------------------------------------
PREAUTH = "fuel.preauth"  #: decided and about to reserve on the card (open)
RESERVED = "fuel.reserved"  #: the card holds the reservation (open)
PRESET = "fuel.preset"  #: the pump is preset; carries the API's answer (open)
COMPLETED = FUEL_COMPLETED  #: the delivered volume, charged; replayed by the replica (open until the card part)
CARD_COMMITTED = "fuel.card_committed"  #: the card has its final counters (terminal)
VOIDED = "fuel.voided"  #: nothing dispensed; the reservation released or handed to the host (terminal)
CORRECTION = "fuel.correction"  #: the card could not be written: the host gives the unused part back (terminal)
DECLINED = "fuel.declined"  #: the evaluator declined; nothing reserved (terminal)
CARD_REFUSED = "fuel.card_refused"  #: a card refused at insertion (not genuine, suspected clone) (terminal)
EMERGENCY_STOP = "fuel.emergency_stop"  #: the console stopped the pump (its own transaction, terminal)
PUMP_RESET = "fuel.pump_reset"  #: the console cleared an emergency stop (terminal)
PIN_CHECKED = "fuel.pin_checked"  #: the card checked a PIN: the outcome, never the PIN (terminal)
#: Kinds that end a fuel transaction (for the journal's open-transaction scan).
TERMINAL_KINDS = frozenset({CARD_COMMITTED, VOIDED, CORRECTION, DECLINED, CARD_REFUSED,
                            EMERGENCY_STOP, PUMP_RESET, PIN_CHECKED})

#: TEST-ONLY issuer master key of the simulated site, used when the configuration names no
#: ``keys.issuer_key_file``. It is public (it is in this file): a real site must configure
#: its own key. The simulation personalises its virtual cards with it.
SIM_ISSUER_KEY = bytes.fromhex("5e0f7c3a9d1b4e6f8a2c7d0e9b3f1a64")


def sim_key_store() -> SoftwareKeyStore:
    """The key store of the simulated site (:data:`SIM_ISSUER_KEY`): for tests only."""
    return SoftwareKeyStore(SIM_ISSUER_KEY)


def lane_name(pump_id: int) -> str:
    """The lane name of pump ``pump_id`` in journal records and events."""
    return f"pump-{pump_id}"


_B32 = {c: i for i, c in enumerate("0123456789ABCDEFGHJKMNPQRSTVWXYZ")}


def write_id_of(record_id: str) -> bytes:
    """The 16-byte card write id of a journal record id: the 128 bits of its ULID (unique,
    never all zero), so a card's ``last write id`` names the record that announced it."""
    ulid = record_id.rpartition("-")[2]
    value = 0
    for ch in ulid:
        value = value << 5 | _B32[ch]
    return value.to_bytes(16, "big")


# -- counting a sale on the card's counters -----------------------------------------------------

@dataclass(frozen=True, slots=True)
class Counting:
    """How one of the card's limits counts this sale: whether it counts at all, in
    millilitres or kopecks, and the local day its current period started on."""

    limit_id: int
    counts: bool
    in_ml: bool
    period_start: int


def counting_for(card: FuelCard, product: Product, today: date) -> tuple[Counting, ...]:
    """The counting of every limit of ``card`` (in the card's record order) for a sale of
    ``product`` on local day ``today``: the rule of authz.fuel.complete."""
    out = []
    for lim in card.limits:
        counts = lim.period is not Period.TRANSACTION and lim.covers(product)
        start = rules.period_start(lim.period, today) if counts else 0
        out.append(Counting(lim.limit_id, counts, lim.unit is LimitUnit.MILLILITRES, start))
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
    """``base`` with a sale of ``volume_ml`` for ``amount_kop`` counted on every counting limit."""
    return tuple((limit_id, LimitCounter(c.spent + (volume_ml if how.in_ml else amount_kop), c.period_start))
                 if how.counts else (limit_id, c) for (limit_id, c), how in zip(base, counting))


def counters_json(counters: Counters) -> list[list[int]]:
    """Counters as journaled: ``[[limit_id, spent, period_start], ...]``."""
    return [[i, c.spent, c.period_start] for i, c in counters]


def counters_from_json(raw: Iterable[Iterable[int]]) -> Counters:
    """The counters journaled as ``raw``."""
    return tuple((int(i), LimitCounter(int(s), int(p))) for i, s, p in raw)


# -- the lane's values ----------------------------------------------------------------------------

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


@dataclass(slots=True)
class CardSession:
    """The card in the reader, read and checked genuine, with its session's PIN status."""

    app: FuelCardApplication
    data: CardData
    pin_ok: bool = False
    tries_left: int = 3

    @property
    def card_no(self) -> str:
        return self.data.card.card_no


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

    @property
    def card_no(self) -> str:
        return self.request.card_no

    @property
    def product(self) -> str:
        return self.request.product

    def reserve_counters(self) -> Counters:
        return plus(self.base, self.counting, self.decision.volume_ml, self.decision.amount_kop)

    def final_counters(self, delivered_ml: int) -> Counters:
        return plus(self.base, self.counting, delivered_ml,
                    amount_for_volume(delivered_ml, self.decision.unit_price_kop_per_l))

    def preauth_body(self) -> dict[str, Any]:
        return {"request": fuel_request_body(self.request), "decision": fuel_decision_body(self.decision),
                "card": {"card_no": self.card_no, "contract_id": self.contract_id,
                         "expected_txn": self.expected_txn, "reserve_write_id": self.reserve_write_id.hex(),
                         "release_write_id": self.release_write_id.hex(),
                         "counting": [[c.limit_id, int(c.counts), int(c.in_ml), c.period_start]
                                      for c in self.counting],
                         "base_counters": counters_json(self.base),
                         "reserve_counters": counters_json(self.reserve_counters())},
                "pump": {"product": self.product, "price_kop_per_l": self.price_kop_per_l,
                         "preset_volume_ml": self.decision.volume_ml,
                         "last_sale_no_before": self.last_sale_no_before}}

    @classmethod
    def from_records(cls, records: Iterable[Record]) -> "FuelTxn":
        """Rebuild a transaction from its journal records (the first must be ``fuel.preauth``)."""
        records = list(records)
        p = records[0].body
        card, pump = p["card"], p["pump"]
        t = cls(records[0].txn_id, fuel_request_from_body(p["request"]), fuel_decision_from_body(p["decision"]),
                card["contract_id"], card["expected_txn"], bytes.fromhex(card["reserve_write_id"]),
                bytes.fromhex(card["release_write_id"]),
                tuple(Counting(i, bool(c), bool(m), s) for i, c, m, s in card["counting"]),
                counters_from_json(card["base_counters"]), pump["price_kop_per_l"], pump["last_sale_no_before"])
        for r in records[1:]:
            if r.kind == RESERVED:
                t.reserve_applied = True
            elif r.kind == PRESET:
                t.sale_no = r.body["sale_no"]
            elif r.kind == COMPLETED:
                t.delivered_ml = r.body["delivered_volume_ml"]
        return t


class _Settle(StrEnum):
    """What became of a card write (commit or release) a lane tried to settle."""

    DONE = "done"  #: the card holds the write
    NOT_RESERVED = "not_reserved"  #: the card never applied the reservation: nothing to give back
    ABSENT = "absent"  #: the card is not in the reader
    OVERTAKEN = "overtaken"  #: the card moved on (another write): it cannot be settled here
    UNKNOWN = "unknown"  #: the card went away during the write: it may or may not hold it


# -- the lane --------------------------------------------------------------------------------------

class FuelLane:
    """One pump: its card reader, the card session, its dispenser, and its transaction.

    Lifecycle (driven by the daemon): :meth:`open` (reader and pump), :meth:`recover` (the
    last run's open transactions), :meth:`start` (event tasks), then the console's calls
    (:meth:`pin`, :meth:`authorize`, :meth:`void`, :meth:`emergency_stop`, :meth:`reset`),
    and :meth:`close`. One lock serializes the console's calls and the device events.
    """

    def __init__(self, config: PumpConfig, site: SiteConfig, replica: Replica, journal: Journal,
                 bus: EventBus, keys: KeyStore, pump: Pump, *, timeouts: FuelTimeouts | None = None,
                 holds: dict[int, int] | None = None, card_counters_seen: dict[str, int] | None = None,
                 reader_factory: Callable[[str], Any] | None = None,
                 on_fatal: Callable[[BaseException], None] | None = None) -> None:
        if replica.fuel is None or replica.fuel_model is None:
            raise ValueError(f"pump {config.pump_id}: the site has pumps but its replica has no fuel model")
        if site.station_id is None:
            raise ValueError(f"pump {config.pump_id}: the site has no station_id")
        self.config = config
        self.site = site
        self.replica = replica
        self.journal = journal
        self.bus = bus
        self.keys = keys
        self.pump = pump
        self.timeouts = timeouts or FuelTimeouts()
        #: kopecks held per contract by open authorizations on this site (shared by the lanes:
        #: the replica's, unless a test gives its own)
        self.holds = holds if holds is not None else replica.fuel_holds
        #: card number -> transaction id of every open authorization on this site
        self.open_cards = replica.fuel_open_cards
        #: the highest card transaction counter this site has seen per card (clone check)
        self.card_counters_seen = card_counters_seen if card_counters_seen is not None else {}
        self._reader_factory = reader_factory or _card_reader
        #: called when the journal fails under a device event (the daemon stops and recovers)
        self._on_fatal = on_fatal
        self.lock = asyncio.Lock()
        self.state = LaneState.IDLE
        self.session: CardSession | None = None
        self.txn: FuelTxn | None = None
        self.pending: list[list[Record]] = []  # transactions of the last run waiting for the pump
        self.notice: str | None = None
        self.reader: Any = None
        self.reader_error: str | None = None
        self._card_q: asyncio.Queue = asyncio.Queue()
        self._pump_q: asyncio.Queue = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._deadline: float | None = None
        self._deadline_changed = asyncio.Event()
        self._pump_open = False
        self._closed = False
        self._recovering = False

    @property
    def pump_id(self) -> int:
        return self.config.pump_id

    @property
    def lane(self) -> str:
        """The lane name used in journal records and events."""
        return lane_name(self.config.pump_id)

    # -- lifecycle -------------------------------------------------------------------------------

    async def open(self) -> None:
        """Take the pump and the reader (a missing reader is retried in the background)."""
        await self.pump.__aenter__()
        self._pump_open = True
        self._tasks.append(asyncio.create_task(self._feed_pump(), name=f"{self.lane} pump events"))
        try:
            await self._open_reader()
        except CardError as exc:
            self._reader_down(exc)
        self._tasks.append(asyncio.create_task(self._feed_cards(), name=f"{self.lane} card events"))

    def start(self) -> None:
        """Start serving device events and timeouts (after :meth:`recover`)."""
        self._tasks.append(asyncio.create_task(self._card_loop(), name=f"{self.lane} cards"))
        self._tasks.append(asyncio.create_task(self._pump_loop(), name=f"{self.lane} pump"))
        self._tasks.append(asyncio.create_task(self._timer_loop(), name=f"{self.lane} timer"))
        if self.state is not LaneState.RECOVERING:
            self._publish()

    async def close(self) -> None:
        """Stop the tasks, release the reader and the pump. An open transaction stays open in
        the journal; the next start recovers it from the card and the pump."""
        self._closed = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        if self.reader is not None:
            try:
                await self.reader.aclose()
            except Exception:  # pragma: no cover - closing is best effort
                log.exception("%s: closing the reader failed", self.lane)
            self.reader = None
        if self._pump_open:
            self._pump_open = False
            await self.pump.__aexit__(None, None, None)

    async def _open_reader(self) -> None:
        reader = self._reader_factory(self.config.reader)
        await reader.__aenter__()
        self.reader = reader
        self.reader_error = None

    def _reader_down(self, exc: BaseException) -> None:
        self.reader_error = f"{type(exc).__name__}: {exc}"
        log.error("%s: card reader %r unavailable: %s", self.lane, self.config.reader, exc)

    async def _feed_cards(self) -> None:
        """Card reader events into the lane's queue; reopen the reader when it goes away."""
        while not self._closed:
            if self.reader is None:
                try:
                    await self._open_reader()
                except CardError as exc:
                    self.reader_error = f"{type(exc).__name__}: {exc}"
                    await asyncio.sleep(self.timeouts.reader_retry_s)
                    continue
            reader = self.reader
            try:
                async for ev in reader.events():
                    self._card_q.put_nowait(ev)
                return
            except CardError as exc:
                self._reader_down(exc)
                self.reader = None
                self._card_q.put_nowait(_ReaderLost())
                try:
                    await reader.aclose()
                except Exception:
                    pass
                await asyncio.sleep(self.timeouts.reader_retry_s)

    async def _feed_pump(self) -> None:
        async for ev in self.pump.events():
            self._pump_q.put_nowait(ev)

    async def _card_loop(self) -> None:
        from hw.card.reader import CardInserted, CardRemoved
        while True:
            ev = await self._card_q.get()
            async with self.lock:
                try:
                    if isinstance(ev, CardInserted):
                        await self._on_card_inserted()
                    elif isinstance(ev, (CardRemoved, _ReaderLost)):
                        self._on_card_removed()
                except Exception as exc:
                    self._failed(exc, f"card event {ev!r}")

    async def _pump_loop(self) -> None:
        while True:
            ev = await self._pump_q.get()
            async with self.lock:
                try:
                    await self._on_pump_event(ev)
                except Exception as exc:
                    self._failed(exc, f"pump event {ev!r}")

    async def _timer_loop(self) -> None:
        while True:
            self._deadline_changed.clear()
            deadline = self._deadline
            if deadline is None:
                await self._deadline_changed.wait()
                continue
            try:
                await asyncio.wait_for(self._deadline_changed.wait(), max(0.0, deadline - time.monotonic()))
                continue
            except TimeoutError:
                pass
            async with self.lock:
                if self._deadline == deadline:
                    self._deadline = None
                    try:
                        await self._on_timeout()
                    except Exception as exc:
                        self._failed(exc, "a timeout")

    def _failed(self, exc: BaseException, what: str) -> None:
        if isinstance(exc, (JournalDiskError, JournalClosedError)):
            # The evaluator or the card may be ahead of the disk: stop, and let the restart
            # recover from what the journal really holds (as the API does).
            log.critical("%s: the journal failed while handling %s: %s", self.lane, what, exc)
            if self._on_fatal is not None:
                self._on_fatal(exc)
            return
        log.error("%s: handling %s failed", self.lane, what, exc_info=exc)

    # -- state and views ---------------------------------------------------------------------------

    def _set(self, state: LaneState, *, timeout_s: float | None = None, notice: str | None = None) -> None:
        self.state = state
        self.notice = notice
        self._deadline = time.monotonic() + timeout_s if timeout_s is not None else None
        self._deadline_changed.set()
        self._publish()

    def _publish(self, type_: str = "pump.state", **extra: Any) -> None:
        v = self.view(brief=True)
        self.bus.publish(type_, self.lane, **v, **extra)

    def _card_masked(self) -> str | None:
        no = self.txn.card_no if self.txn else self.session.card_no if self.session else None
        return mask_card_no(no) if no else None

    def view(self, *, brief: bool = False) -> dict[str, Any]:
        """What the pump console shows: lane state, card (masked), transaction, pump."""
        out: dict[str, Any] = {"pump": self.pump_id, "state": self.state.value, "card": self._card_masked(),
                               "pump_state": self.pump.state.value, "notice": self.notice}
        t = self.txn
        out["txn"] = None if t is None else {
            "txn_id": t.txn_id, "product": t.product, "approved_volume_ml": t.decision.volume_ml,
            "approved_amount_kop": t.decision.amount_kop, "unit_price_kop_per_l": t.decision.unit_price_kop_per_l,
            "delivered_volume_ml": t.delivered_ml,
            "delivered_amount_kop": amount_for_volume(t.delivered_ml, t.decision.unit_price_kop_per_l),
            "sale_no": t.sale_no}
        if brief:
            return out
        out["lane"] = self.lane
        out["products"] = list(self.config.products)
        out["reader"] = self.config.reader
        out["reader_ok"] = self.reader is not None
        out["reader_error"] = self.reader_error
        out["card_present"] = bool(self.reader is not None and self.reader.card_present)
        out["pin_tries_left"] = self.session.tries_left if self.session else None
        out["recovery_pending"] = len(self.pending)
        try:
            out["last_delivery"] = _delivery_view(self.pump.last_delivery)
            out["pump_offline"] = False
        except PumpError:
            out["last_delivery"] = None
            out["pump_offline"] = True
        return out

    def _record(self, txn_id: str, kind: str, body: dict, record_id: str | None = None) -> Record:
        sid = self.site.site_id
        return Record(record_id or new_id(sid), sid, self.lane, txn_id, kind, int(time.time()), body)

    def _journaled(self, txn_id: str, kind: str) -> Record | None:
        return next((r for r in self.journal.records_for_txn(txn_id) if r.kind == kind), None)

    # -- card events -------------------------------------------------------------------------------

    async def _read_card(self) -> CardSession | None:
        """Read the card in the reader and check it; None (with a notice) if it cannot be used."""
        if self.reader is None:
            return None
        app = FuelCardApplication(self.reader, self.keys, timeout_s=self.timeouts.card_apdu_s)
        try:
            data = await app.read_card()
        except CardRemovedError:
            return None
        except CardNotGenuineError as exc:
            await self._refuse(None, f"card not genuine: {exc}")
            return None
        except CardError as exc:
            self.notice = f"card unreadable: {exc}"
            self._publish()
            return None
        card_no = data.card.card_no
        seen = self.card_counters_seen.get(card_no)
        if seen is not None and data.state.txn_counter < seen:
            await self._refuse(card_no, f"transaction counter {data.state.txn_counter} is behind "
                                        f"{seen} already seen: a copy of an older card state")
            return None
        self.card_counters_seen[card_no] = max(seen or 0, data.state.txn_counter)
        return CardSession(app, data, tries_left=data.info.pin_tries_left)

    async def _refuse(self, card_no: str | None, why: str) -> None:
        masked = mask_card_no(card_no) if card_no else "?"
        log.warning("%s: card %s refused: %s", self.lane, masked, why)
        txn_id = new_txn_id(self.site.site_id, self.lane)
        await self.journal.append([self._record(txn_id, CARD_REFUSED, {"card_no": card_no, "reason": why})])
        self.notice = f"card refused: {why}"
        self._publish()

    async def _on_card_inserted(self) -> None:
        if self.state is LaneState.RECOVERING:
            return  # picked up when the recovery ends
        if self.txn is not None:
            # A transaction is on: only its own card may come back (to be committed).
            session = await self._read_card()
            if session is not None and session.card_no == self.txn.card_no:
                self.session = session
                self.notice = "card back in the reader"
            elif session is not None:
                self.notice = "the pump is busy with another card's sale"
            self._publish()
            return
        await self._start_session()

    async def _start_session(self) -> None:
        """Begin a card session on the card in the reader, if there is one."""
        self.session = None
        if self.reader is None or not self.reader.card_present:
            self._set(LaneState.IDLE, notice=self.notice)
            return
        session = await self._read_card()
        if session is None:
            self._set(LaneState.IDLE, notice=self.notice)
            return
        if session.card_no not in self.replica.fuel_model.card_index:
            self._set(LaneState.IDLE, notice=f"card {mask_card_no(session.card_no)} is not known at this site")
            return
        self.session = session
        blocked = session.tries_left == 0
        self._set(LaneState.CARD_READ, timeout_s=self.timeouts.pin_s,
                  notice="the card's PIN is blocked" if blocked else "enter the PIN")

    def _on_card_removed(self) -> None:
        self.session = None
        if self.state in (LaneState.CARD_READ, LaneState.PIN_OK):
            self._set(LaneState.IDLE, notice="card removed")
        elif self.txn is not None:
            self.notice = "card removed; the sale goes on"
            self._publish()

    # -- the console: PIN ------------------------------------------------------------------------------

    async def pin(self, pin: Any, idem: IdemSpec) -> tuple[int, dict]:
        """Have the card check ``pin``, then journal that the step happened and its outcome
        (``fuel.pin_checked``: verified, wrong or blocked, the tries left; never the PIN)
        with the answer under the request's key. The key's request digest is kept as an
        HMAC under this run's in-memory key (:func:`terminal.till.secret_digest`): a hash
        of a 4-digit PIN on disk would be the PIN."""
        if not isinstance(pin, str):
            raise LaneError("pin must be text: 4 to 12 digits", 422)
        async with self.lock:
            card_no = self.session.card_no if self.session is not None else None
            status, answer = await self._pin(pin)
            outcome = "verified" if status == 200 else answer["error"]["code"]
            body = {"card_no": card_no, "outcome": outcome,
                    "tries_left": 3 if status == 200 else answer["error"]["tries_left"]}
            txn_id = new_txn_id(self.site.site_id, self.lane)
            await self.journal.append([self._record(txn_id, PIN_CHECKED, body)],
                                      idem=idem.secret().entry(status, answer))
        return status, answer

    async def _pin(self, pin: str) -> tuple[int, dict]:
        if self.state not in (LaneState.CARD_READ, LaneState.PIN_OK) or self.session is None:
            raise LaneError(self._why_not("check a PIN"))
        s = self.session
        try:
            await s.app.verify_pin(pin)
        except PinFormatError:
            raise LaneError("pin must be 4 to 12 digits", 422) from None
        except WrongPinError as exc:
            s.tries_left, s.pin_ok = exc.tries_left, False
            self._set(LaneState.CARD_READ, timeout_s=self.timeouts.pin_s,
                      notice=f"wrong PIN, {exc.tries_left} tries left")
            return 403, _error("wrong_pin", f"wrong PIN: {exc.tries_left} tries left", tries_left=exc.tries_left)
        except PinBlockedError:
            s.tries_left, s.pin_ok = 0, False
            self._set(LaneState.CARD_READ, timeout_s=self.timeouts.pin_s, notice="the card's PIN is blocked")
            return 403, _error("pin_blocked", "the card's PIN is blocked: no more tries", tries_left=0)
        except CardRemovedError:
            self.session = None
            self._set(LaneState.IDLE, notice="card removed")
            raise LaneError("the card was removed") from None
        except CardError as exc:
            raise LaneError(f"the card did not answer the PIN check: {exc}", 503) from None
        s.pin_ok, s.tries_left = True, 3
        self._set(LaneState.PIN_OK, timeout_s=self.timeouts.authorize_s, notice="choose the product")
        return 200, {"pump": self.pump_id, "verified": True, "state": self.state.value}

    def _why_not(self, what: str) -> str:
        if self.state is LaneState.RECOVERING:
            return f"pump {self.pump_id} cannot {what}: it is finishing a sale of the last run (the pump does not answer)"
        if self.txn is not None:
            return f"pump {self.pump_id} cannot {what}: a sale is {self.state.value}"
        if self.session is None:
            return f"pump {self.pump_id} cannot {what}: no card in the reader"
        if self.state is LaneState.CARD_READ:
            return f"pump {self.pump_id} cannot {what}: the PIN is not verified yet"
        return f"pump {self.pump_id} cannot {what} now ({self.state.value})"

    # -- the console: authorize ---------------------------------------------------------------------

    async def authorize(self, product: Any, preset_volume_ml: Any, preset_amount_kop: Any,
                        idem: IdemSpec) -> tuple[int, dict]:
        """Decide, journal, reserve on the card, preset the pump; answer the decision.

        Bad input is a 422 and changes nothing; a lane not ready is a 409. A decline is a
        200 with ``approved: false`` (journaled). A card or pump failure after the
        pre-authorization is journaled voids it and answers 409 (journaled with the void).
        """
        self._check_input(product, preset_volume_ml, preset_amount_kop)
        async with self.lock:
            if self.state is not LaneState.PIN_OK or self.session is None or not self.session.pin_ok:
                raise LaneError(self._why_not("authorize"))
            return await self._authorize(self.session, product, preset_volume_ml, preset_amount_kop, idem)

    def _check_input(self, product: Any, pv: Any, pa: Any) -> None:
        if not isinstance(product, str) or not product:
            raise LaneError("product must be a product code", 422)
        if self.config.products and product not in self.config.products:
            raise LaneError(f"pump {self.pump_id} has no nozzle for {product!r}; it has "
                            f"{', '.join(self.config.products)}", 422)
        if product not in self.replica.fuel_model.product_index:
            raise LaneError(f"unknown product {product!r}", 422)
        for name, v, top in (("preset_volume_ml", pv, MAX_VOLUME_ML), ("preset_amount_kop", pa, MAX_AMOUNT_KOP)):
            if v is not None and (type(v) is not int or not 1 <= v <= top):
                raise LaneError(f"{name} must be a whole number in 1..{top}, got {v!r}", 422)
        if pv is not None and pa is not None:
            raise LaneError("give preset_volume_ml or preset_amount_kop, not both", 422)

    def _decide(self, req: FuelRequest, data: CardData) -> FuelDecision:
        """The evaluator's decision, with the card's own counters merged in when they are
        newer or larger than the site's, and the balance other open authorizations hold."""
        ev, model = self.replica.fuel, self.replica.fuel_model
        decision = ev.authorize(req)
        if not decision.approved:
            return decision
        card = model.card(req.card_no)
        on_card = dict(data.state.counters)
        counters, merged = {}, False
        for lim in card.limits:
            mine, theirs = ev.counter(card.card_no, lim.limit_id), on_card.get(lim.limit_id)
            best = newer(mine, theirs)
            if best is not None:
                counters[(card.card_no, lim.limit_id)] = best
            if best is theirs and theirs is not None and theirs.spent > 0 and theirs != mine:
                merged = True
        held = self.holds.get(card.contract_id, 0)
        if not merged and not held:
            return decision
        # The evaluators take no outside counters; the reference rules over a one-card state
        # give the same decision the evaluator would with the merged counters.
        state = FuelState({card.contract_id: ev.balance_kop(card.contract_id) - held}, counters,
                          {card.card_no} if ev.on_stop_list(card.card_no) else set())
        return rules.authorize(model, state, req)

    def _hold(self, txn: FuelTxn, on: bool) -> None:
        """Hold (or give back) the contract balance ``txn`` authorized, and mark its card as
        having an open authorization on this site."""
        c = txn.contract_id
        self.holds[c] = self.holds.get(c, 0) + (txn.decision.amount_kop if on else -txn.decision.amount_kop)
        if self.holds[c] <= 0:
            del self.holds[c]
        if on:
            self.open_cards[txn.card_no] = txn.txn_id
        elif self.open_cards.get(txn.card_no) == txn.txn_id:
            del self.open_cards[txn.card_no]

    def _decision_answer(self, txn_id: str, req: FuelRequest, d: FuelDecision, **extra: Any) -> dict:
        return {"pump": self.pump_id, "txn_id": txn_id, "approved": d.approved, "reason": d.reason.name,
                "product": req.product, "volume_ml": d.volume_ml, "amount_kop": d.amount_kop,
                "unit_price_kop_per_l": d.unit_price_kop_per_l, "list_price_kop_per_l": d.list_price_kop_per_l,
                "binding_limit_id": d.binding_limit_id, "card": mask_card_no(req.card_no), **extra}

    async def _authorize(self, s: CardSession, product: str, pv: int | None, pa: int | None,
                         idem: IdemSpec) -> tuple[int, dict]:
        model = self.replica.fuel_model
        # From here to the fuel.preauth append nothing awaits: the decision and the holds it
        # takes (the contract's balance, the card) are one step for the whole site.
        busy = self.open_cards.get(s.card_no)
        if busy is not None:
            raise LaneError(f"card {mask_card_no(s.card_no)} has an open authorization on this site "
                            f"({busy}): one pump at a time per card")
        req = FuelRequest(s.card_no, self.site.station_id, product, int(time.time()), pv, pa)
        decision = self._decide(req, s.data)  # RequestError: 422, nothing changed
        card = model.card(s.card_no)
        txn_id = new_txn_id(self.site.site_id, self.lane)
        if not decision.approved:
            answer = self._decision_answer(txn_id, req, decision, state=LaneState.PIN_OK.value)
            body = {"request": fuel_request_body(req), "decision": fuel_decision_body(decision),
                    "card": {"card_no": s.card_no, "contract_id": card.contract_id}}
            await self.journal.append([self._record(txn_id, DECLINED, body)], idem=idem.entry(200, answer))
            log.info("%s: card %s declined (%s)", self.lane, mask_card_no(s.card_no), decision.reason.name)
            self._set(LaneState.PIN_OK, timeout_s=self.timeouts.authorize_s,
                      notice=f"declined: {decision.reason.name}")
            return 200, answer
        if self.pump.state not in (PumpState.IDLE, PumpState.CALLING):
            raise LaneError(f"pump {self.pump_id} cannot be preset while it is {self.pump.state.value}")
        try:
            last = self.pump.last_delivery
        except PumpError as exc:
            raise LaneError(f"pump {self.pump_id} does not answer: {exc}", 503) from None
        contract = model.contracts[model.contract_index[card.contract_id]]
        today = local_date(req.now_utc_s, contract.tz)
        product_ = model.products[model.product_index[product]]
        # The card's own limits (MAC-checked) say how its counters count this sale.
        counting = counting_for(s.data.card, product_, today)
        known = {lim.limit_id: self.replica.fuel.counter(s.card_no, lim.limit_id) for lim in card.limits}
        preauth_id = new_id(self.site.site_id)
        txn = FuelTxn(txn_id, req, decision, card.contract_id, s.data.state.txn_counter, write_id_of(preauth_id),
                      write_id_of(new_id(self.site.site_id)), counting,
                      base_counters(s.data.state.counters, counting, known),
                      decision.unit_price_kop_per_l or decision.list_price_kop_per_l or 1,
                      last.sale_no if last is not None else 0)
        self._hold(txn, True)  # before the await: another pump's decision sees it
        try:
            await self.journal.append([self._record(txn_id, PREAUTH, txn.preauth_body(), preauth_id)])
        except BaseException:
            self._hold(txn, False)  # nothing was written (a failed COMMIT stops the daemon)
            raise
        crashpoints.reached(PREAUTH)
        self.txn = txn

        # Reserve on the card.
        try:
            after = await s.app.reserve(s.data.state, txn.reserve_write_id, txn.reserve_counters())
        except CardStatusError as exc:  # a status word: the card checked and did not apply it
            txn.reserve_applied = False
            return await self._fail(txn, idem, "card_refused_reservation", f"the card refused the reservation: {exc}")
        except CardError as exc:  # removed, timeout, garbage, bad receipt: applied or not, unknown
            txn.reserve_applied = None
            return await self._fail(txn, idem, "card_write_failed", f"the card's answer to the reservation was lost: {exc}")
        txn.reserve_applied = True
        self.card_counters_seen[txn.card_no] = after.txn_counter
        s.data = CardData(s.data.card, after, s.data.info)
        crashpoints.reached("card.reserved")
        await self.journal.append([self._record(txn_id, RESERVED, {"card_no": txn.card_no,
                                                                   "txn_counter": after.txn_counter,
                                                                   "write_id": txn.reserve_write_id.hex()})])
        crashpoints.reached(RESERVED)

        # Preset the pump.
        try:
            txn.sale_no = await self.pump.authorize(product, txn.price_kop_per_l, Preset.by_volume(decision.volume_ml))
        except PumpError as exc:
            return await self._fail(txn, idem, "pump_not_ready", f"pump {self.pump_id} refused the preset: {exc}")
        crashpoints.reached("pump.preset")
        dispensing = self.pump.state is PumpState.DISPENSING
        state = LaneState.DISPENSING if dispensing else LaneState.AUTHORIZED
        answer = self._decision_answer(txn_id, req, decision, state=state.value, sale_no=txn.sale_no)
        await self.journal.append([self._record(txn_id, PRESET, {"sale_no": txn.sale_no, "product": product,
                                                                 "price_kop_per_l": txn.price_kop_per_l,
                                                                 "preset_volume_ml": decision.volume_ml})],
                                  idem=idem.entry(200, answer))
        crashpoints.reached(PRESET)
        log.info("%s: card %s authorized for %d ml of %s (%s), pump sale %d", self.lane, mask_card_no(s.card_no),
                 decision.volume_ml, product, decision.reason.name, txn.sale_no)
        self._set(state, timeout_s=None if dispensing else self.timeouts.nozzle_s,
                  notice="lift the nozzle" if not dispensing else None)
        return 200, answer

    async def _fail(self, txn: FuelTxn, idem: IdemSpec, code: str, message: str) -> tuple[int, dict]:
        """Void an authorization that failed after its pre-authorization was journaled;
        the error answer is journaled with the void."""
        log.warning("%s: %s", self.lane, message)
        answer = _error(code, message, txn_id=txn.txn_id)
        await self._void(txn, message, idem=idem, answer=(409, answer))
        return 409, answer

    # -- the console: void, stop, reset ---------------------------------------------------------------

    async def void(self, idem: IdemSpec) -> tuple[int, dict]:
        """Release the authorization before any fuel has flowed."""
        async with self.lock:
            txn = self.txn
            if txn is None or self.state is not LaneState.AUTHORIZED:
                if txn is not None:
                    raise LaneError(f"pump {self.pump_id}: fuel is {self.state.value}: stop the pump instead of voiding")
                raise LaneError(f"pump {self.pump_id} has no authorization to void")
            try:
                await self.pump.cancel()
            except PumpOffline as exc:
                raise LaneError(f"pump {self.pump_id} does not answer ({exc}); the authorization ends when it does",
                                503) from None
            except PumpStateError as exc:
                raise LaneError(f"pump {self.pump_id}: fuel is flowing ({exc}): stop the pump instead") from None
            answer = {"pump": self.pump_id, "txn_id": txn.txn_id, "state": "voided"}
            settle = await self._void(txn, "voided by the console", idem=idem, answer=(200, answer))
            answer["card_release"] = settle
            return 200, answer

    async def emergency_stop(self, idem: IdemSpec) -> tuple[int, dict]:
        """Stop the pump now (no lock: an emergency does not queue). A delivery ends as
        ``stopped`` and is completed with what was dispensed."""
        try:
            await self.pump.stop()
        except PumpOffline as exc:
            raise LaneError(f"pump {self.pump_id} does not answer: {exc}", 503) from None
        txn_id = new_txn_id(self.site.site_id, self.lane)
        answer = {"pump": self.pump_id, "stopped": True, "pump_state": self.pump.state.value,
                  "txn_id": self.txn.txn_id if self.txn else None}
        await self.journal.append([self._record(txn_id, EMERGENCY_STOP, {"sale_txn_id": answer["txn_id"]})],
                                  idem=idem.entry(200, answer))
        log.warning("%s: emergency stop", self.lane)
        self._publish()
        return 200, answer

    async def reset(self, idem: IdemSpec) -> tuple[int, dict]:
        """Clear the pump's emergency stop."""
        try:
            await self.pump.reset()
        except PumpOffline as exc:
            raise LaneError(f"pump {self.pump_id} does not answer: {exc}", 503) from None
        except PumpStateError as exc:
            raise LaneError(str(exc)) from None
        answer = {"pump": self.pump_id, "pump_state": self.pump.state.value}
        await self.journal.append([self._record(new_txn_id(self.site.site_id, self.lane), PUMP_RESET, {})],
                                  idem=idem.entry(200, answer))
        self._publish()
        return 200, answer

    # -- pump events and timeouts -----------------------------------------------------------------

    async def _on_pump_event(self, ev: Any) -> None:
        txn = self.txn
        if self.state is LaneState.RECOVERING:
            if isinstance(ev, (PumpBackOnline, StateChanged)) and self.pump.state is not PumpState.OFFLINE:
                await self._retry_pending()
            return
        if isinstance(ev, DeliveryProgress):
            if txn is not None and self.state in (LaneState.AUTHORIZED, LaneState.DISPENSING):
                txn.delivered_ml = ev.volume_ml
                if self.state is LaneState.AUTHORIZED:
                    self._set(LaneState.DISPENSING)
                self._publish("pump.progress", volume_ml=ev.volume_ml, amount_kop=ev.amount_kop)
                crashpoints.reached("fuel.dispensing")
        elif isinstance(ev, DeliveryComplete):
            if txn is None or txn.sale_no is None or self.state not in (LaneState.AUTHORIZED, LaneState.DISPENSING):
                log.info("%s: delivery end %r with no sale of ours open", self.lane, ev)
                return
            volume = ev.volume_ml
            try:  # the dispenser's own totals are the record (they include what an offline spell hid)
                last = self.pump.last_delivery
                if last is not None and last.sale_no == txn.sale_no:
                    volume = last.volume_ml
            except PumpError:
                pass
            await self._finish(txn, volume, str(ev.reason))
        elif isinstance(ev, StateChanged):
            if txn is not None and ev.new is PumpState.DISPENSING and self.state is LaneState.AUTHORIZED:
                self._set(LaneState.DISPENSING)
            else:
                self._publish()
        elif isinstance(ev, PumpWentOffline):
            if txn is not None:
                txn.pump_offline = True
            self.notice = "the pump does not answer"
            self._publish()
        elif isinstance(ev, PumpBackOnline):
            if txn is not None:
                txn.pump_offline = False
            self.notice = "the pump answers again"
            self._publish()
        elif isinstance(ev, (NozzleLifted, NozzleHungUp)):
            self._publish("pump.nozzle", lifted=isinstance(ev, NozzleLifted), product=ev.product)

    async def _on_timeout(self) -> None:
        if self.state in (LaneState.CARD_READ, LaneState.PIN_OK):
            self.session = None
            self._set(LaneState.IDLE, notice="timed out: take the card and insert it again")
        elif self.state is LaneState.AUTHORIZED and self.txn is not None:
            txn = self.txn
            try:
                await self.pump.cancel()
            except PumpError as exc:
                # Flowing already, or offline: the pump's DeliveryComplete ends the sale.
                log.info("%s: nozzle timeout, cancel refused: %s", self.lane, exc)
                return
            await self._void(txn, f"the nozzle was not lifted within {self.timeouts.nozzle_s:g} s")

    # -- ending a transaction ---------------------------------------------------------------------

    async def _finish(self, txn: FuelTxn, volume_ml: int, why: str) -> None:
        """The pump's delivery for ``txn`` ended with ``volume_ml``: complete it, or void it
        if nothing was dispensed."""
        if volume_ml <= 0:
            await self._void(txn, f"nothing dispensed ({why})")
        else:
            await self._complete(txn, volume_ml, why)

    async def _complete(self, txn: FuelTxn, volume_ml: int, why: str) -> None:
        """Journal the delivery (once), re-apply it to the replica, then settle the card."""
        self._set(LaneState.COMPLETING)
        done = self._journaled(txn.txn_id, COMPLETED)
        if done is None:
            charged = min(volume_ml, txn.decision.volume_ml)
            if volume_ml > txn.decision.volume_ml:
                log.error("%s: pump delivered %d ml over the %d ml authorized", self.lane,
                          volume_ml - txn.decision.volume_ml, txn.decision.volume_ml)
            rec_id = new_id(self.site.site_id)
            amount = amount_for_volume(charged, txn.decision.unit_price_kop_per_l)
            body = {"request": fuel_request_body(txn.request), "decision": fuel_decision_body(txn.decision),
                    "delivered_volume_ml": charged, "amount_kop": amount, "delivery_reason": why,
                    "overrun_ml": volume_ml - charged, "sale_no": txn.sale_no,
                    "card_no": txn.card_no, "contract_id": txn.contract_id,
                    "card_commit": {"write_id": write_id_of(rec_id).hex(), "expected_txn": txn.expected_txn + 1,
                                    "counters": counters_json(txn.final_counters(charged))}}
            done = self._record(txn.txn_id, COMPLETED, body, rec_id)
            await self.journal.append([done])
            try:
                self.replica.apply(COMPLETED, body)  # exactly what a restart's replay does
            except RequestError as exc:  # the replica changed under the sale: the host settles it
                log.error("%s: completion of %s not applied to the replica: %s", self.lane, txn.txn_id, exc)
            crashpoints.reached(COMPLETED)
            log.info("%s: %s completed: %d ml, %d kop (%s)", self.lane, txn.txn_id, charged, amount, why)
        txn.delivered_ml = done.body["delivered_volume_ml"]
        commit = done.body["card_commit"]
        write_id, counters = bytes.fromhex(commit["write_id"]), counters_from_json(commit["counters"])
        settle = await self._settle_card(txn, write_id, counters)
        if settle is _Settle.DONE:
            crashpoints.reached("card.committed")
            rec = self._record(txn.txn_id, CARD_COMMITTED,
                               {"card_no": txn.card_no, "txn_counter": txn.expected_txn + 2,
                                "write_id": write_id.hex(), "counters": counters_json(counters)})
        else:
            rec = self._correction(txn, settle, txn.delivered_ml, write_id)
        await self.journal.append([rec])
        crashpoints.reached(rec.kind)
        await self._end(txn, f"sale completed: {txn.delivered_ml} ml" +
                        ("" if settle is _Settle.DONE else "; the card will be corrected by the host"))

    async def _void(self, txn: FuelTxn, reason: str, *, idem: IdemSpec | None = None,
                    answer: tuple[int, dict] | None = None) -> str:
        """Nothing was dispensed: give the card's reservation back (or hand it to the host)
        and journal the void (with the API's answer, when a request is being answered)."""
        if txn.reserve_applied is False:
            settle = _Settle.NOT_RESERVED
        else:
            settle = await self._settle_card(txn, txn.release_write_id, txn.base)
        if settle is _Settle.DONE:
            crashpoints.reached("card.released")
        release = {_Settle.DONE: "released", _Settle.NOT_RESERVED: "not_reserved"}.get(settle, "correction")
        records = [self._record(txn.txn_id, VOIDED, {
            "card_no": txn.card_no, "reason": reason, "card_release": release, "sale_no": txn.sale_no,
            "txn_counter": txn.expected_txn + 2 if release == "released" else None,
            "release_write_id": txn.release_write_id.hex() if release == "released" else None})]
        if release == "correction":
            records.append(self._correction(txn, settle, 0, txn.release_write_id))
        if answer is not None and isinstance(answer[1], dict) and "card_release" not in answer[1] and answer[0] == 200:
            answer[1]["card_release"] = release
        await self.journal.append(records, idem=idem.entry(*answer) if idem is not None and answer else None)
        crashpoints.reached(VOIDED)
        log.info("%s: %s voided (%s), card %s", self.lane, txn.txn_id, reason, release)
        await self._end(txn, f"voided: {reason}")
        return release

    def _correction(self, txn: FuelTxn, settle: _Settle, delivered_ml: int, write_id: bytes) -> Record:
        """What the host needs to put the card right: the counters it may hold, the ones it
        should hold, and the write that could not be made."""
        may_hold = txn.reserve_counters() if txn.reserve_applied is not False else txn.base
        amount = amount_for_volume(delivered_ml, txn.decision.unit_price_kop_per_l)
        body = {"card_no": txn.card_no, "contract_id": txn.contract_id, "why": settle.value,
                "reservation_applied": txn.reserve_applied,
                "reserved_txn_counter": txn.expected_txn + 1, "reserve_write_id": txn.reserve_write_id.hex(),
                "unsent_write_id": write_id.hex(),
                "counters_reserved": counters_json(may_hold),
                "counters_final": counters_json(txn.final_counters(delivered_ml) if delivered_ml else txn.base),
                "delivered_volume_ml": delivered_ml, "amount_kop": amount,
                "released_volume_ml": txn.decision.volume_ml - delivered_ml,
                "released_amount_kop": txn.decision.amount_kop - amount}
        return self._record(txn.txn_id, CORRECTION, body)

    async def _settle_card(self, txn: FuelTxn, write_id: bytes, counters: Counters) -> _Settle:
        """Make the card hold ``write_id`` (a commit or a release of ``txn``'s reservation),
        reading its counters first so that a write already made is never made twice."""
        for attempt in range(2):
            s = self.session
            if (s is None or s.card_no != txn.card_no) and self.reader is not None and self.reader.card_present:
                fresh = await self._read_card()
                if fresh is not None and fresh.card_no == txn.card_no:
                    self.session = s = fresh
            if s is None or s.card_no != txn.card_no:
                # Gone before any write was sent: absent; gone after one was: unknown.
                return _Settle.ABSENT if attempt == 0 else _Settle.UNKNOWN
            try:
                st = await s.app.read_counters()
                self.card_counters_seen[txn.card_no] = max(self.card_counters_seen.get(txn.card_no, 0),
                                                           st.txn_counter)
                if st.txn_counter == txn.expected_txn + 2 and st.last_write_id == write_id:
                    return _Settle.DONE
                if st.txn_counter == txn.expected_txn and st.last_write_id != txn.reserve_write_id:
                    txn.reserve_applied = False
                    return _Settle.NOT_RESERVED
                if st.txn_counter != txn.expected_txn + 1 or st.last_write_id != txn.reserve_write_id:
                    return _Settle.OVERTAKEN
                txn.reserve_applied = True
                after = await s.app.commit(st, write_id, counters)
                self.card_counters_seen[txn.card_no] = after.txn_counter
                s.data = CardData(s.data.card, after, s.data.info)
                return _Settle.DONE
            except (CardRemovedError, CardTimeoutError) as exc:
                log.warning("%s: card write of %s interrupted: %s", self.lane, txn.txn_id, exc)
                self.session = None  # a reader that still sees the card gets one more try
                continue
            except CardError as exc:
                log.warning("%s: card refused the write of %s: %s", self.lane, txn.txn_id, exc)
                return _Settle.OVERTAKEN if isinstance(exc, CounterMismatchError) else _Settle.UNKNOWN
        return _Settle.UNKNOWN

    async def _end(self, txn: FuelTxn, notice: str) -> None:
        if self.txn is txn:
            self.txn = None
            self._hold(txn, False)
        self.notice = notice
        # A card still in the reader starts a new session (its PIN is asked again); during
        # recovery that waits until every transaction of the last run is settled.
        if not self._recovering:
            await self._start_session()

    # -- recovery -----------------------------------------------------------------------------------

    async def recover(self, open_txns: list[OpenTransaction]) -> int:
        """Finish or void every transaction this lane's last run left open (before the API
        listens). A transaction whose outcome depends on a pump that does not answer stays
        open, and the lane waits in RECOVERING until the pump is back."""
        n = 0
        self._recovering = True
        try:
            n = await self._recover_all(open_txns)
        finally:
            self._recovering = False
        if self.pending:
            self.state = LaneState.RECOVERING
            self.notice = f"{len(self.pending)} sale(s) of the last run wait for the pump to answer"
            log.error("%s: %s", self.lane, self.notice)
        else:
            self.session = None
            self.state = LaneState.IDLE
        if n:
            log.warning("%s: finished %d transaction(s) left open by the last run", self.lane, n)
        return n

    async def _recover_all(self, open_txns: list[OpenTransaction]) -> int:
        n = 0
        for ot in open_txns:
            if not ot.records or ot.records[0].kind != PREAUTH:
                log.error("%s: open transaction %s does not start with %s (kinds %s): left alone",
                          self.lane, ot.txn_id, PREAUTH, [r.kind for r in ot.records])
                continue
            if await self._recover_one(list(ot.records)):
                n += 1
            else:
                self.pending.append(list(ot.records))
                self._hold(FuelTxn.from_records(ot.records), True)
        return n

    async def _retry_pending(self) -> None:
        still = []
        self._recovering = True
        try:
            for records in self.pending:
                txn = FuelTxn.from_records(records)
                if await self._recover_one(self.journal.records_for_txn(txn.txn_id)):
                    self._hold(txn, False)
                else:
                    still.append(records)
        finally:
            self._recovering = False
        self.pending = still
        if not still:
            self.notice = "recovered the last run's sales"
            await self._start_session()

    async def _recover_one(self, records: list[Record]) -> bool:
        """Finish one open transaction; False when the pump cannot say what was dispensed."""
        txn = FuelTxn.from_records(records)
        kinds = [r.kind for r in records]
        if self.reader is not None and self.reader.card_present and (self.session is None
                                                                     or self.session.card_no != txn.card_no):
            self.session = await self._read_card()
        if COMPLETED in kinds:  # the delivery is journaled: only the card part is left
            log.warning("%s: recovering %s: completed, settling the card", self.lane, txn.txn_id)
            await self._complete(txn, txn.delivered_ml, "recovered")
            return True
        volume = await self._delivered_for(txn)
        if volume is None:
            return False
        log.warning("%s: recovering %s (%s): the pump dispensed %d ml", self.lane, txn.txn_id, kinds[-1], volume)
        if volume > 0:
            await self._complete(txn, volume, "recovered")
        else:
            await self._void(txn, "the daemon restarted before fuel flowed")
        return True

    async def _delivered_for(self, txn: FuelTxn) -> int | None:
        """What the pump dispensed for ``txn`` (0: nothing), or None if it does not answer.
        A sale still open on the pump is stopped first: fuel must not flow unsupervised."""
        try:
            if self.pump.state in (PumpState.AUTHORIZED, PumpState.DISPENSING):
                await self.pump.stop()
                await self._wait_delivery_end()
                if self.pump.state is PumpState.STOPPED:
                    await self.pump.reset()
            last = self.pump.last_delivery
        except PumpOffline:
            return None
        if last is None:
            return 0
        if txn.sale_no is not None:
            return last.volume_ml if last.sale_no == txn.sale_no else 0
        # Killed between presetting the pump and journaling it: the pump's sale numbers
        # only go up, and no other sale could be preset on this pump meanwhile.
        if last.sale_no > txn.last_sale_no_before and last.product == txn.product:
            return last.volume_ml
        return 0

    async def _wait_delivery_end(self) -> None:
        deadline = time.monotonic() + self.timeouts.pump_s
        while time.monotonic() < deadline:
            try:
                ev = await asyncio.wait_for(self._pump_q.get(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
            if isinstance(ev, DeliveryComplete):
                return
        log.warning("%s: the pump did not report the end of its open sale in %.1f s", self.lane,
                    self.timeouts.pump_s)


class _ReaderLost:
    """The card reader went away (pcscd stopped, reader unplugged): as if the card left."""


def _card_reader(name: str):
    from hw.card.reader import CardReader
    return CardReader(name)


def _error(code: str, message: str, **extra: Any) -> dict:
    return {"error": {"code": code, "message": message, **extra}}


def _delivery_view(d: Delivery | None) -> dict | None:
    if d is None:
        return None
    return {"sale_no": d.sale_no, "product": d.product, "price_kop_per_l": d.price_kop_per_l,
            "volume_ml": d.volume_ml, "amount_kop": d.amount_kop, "reason": str(d.reason),
            "preset_volume_ml": d.preset.volume_ml, "preset_amount_kop": d.preset.amount_kop}


# -- the simulated dispenser with a dispenser's memory ------------------------------------------------

class RecordedSimPump(SimulatedPump):
    """:class:`hw.sim.pump.SimulatedPump` that keeps what a real dispenser keeps across a
    restart of its controller: its sale number and the last sale's totals, in a JSON file
    replaced atomically at every change (before the change is reported). A daemon killed with
    a sale open finds, when it comes back, that sale ended where the meter stood (reason
    ``fault``): the dispenser failed safe when its controller went away.

    Crash-safe for a process crash (the OS keeps the page cache), not for power loss: it
    stands in for the dispenser's own NVRAM and is no part of a real site.
    """

    def __init__(self, pump_id: int, *, state_path: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__(pump_id, **kwargs)
        self.state_path = Path(state_path)
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        self._load()

    def _load(self) -> None:
        try:
            d = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise PumpError(f"simulated pump {self.pump_id}: its memory {self.state_path} does not load: {exc}") from None
        self._sale_no = int(d["sale_no"])
        last = d.get("open") or d.get("last")
        if d.get("open") is not None:
            last = dict(last, reason=DeliveryReason.FAULT.value,
                        amount_kop=amount_for_volume(last["volume_ml"], last["price_kop_per_l"]))
        if last is not None:
            self._last = Delivery(last["sale_no"], last["product"], last["price_kop_per_l"],
                                  Preset(last.get("preset_volume_ml"), last.get("preset_amount_kop")),
                                  last["volume_ml"], last["amount_kop"], DeliveryReason(last["reason"]))
        self._save()

    def _save(self) -> None:
        last, sale = self._last, self._sale
        d = {"format": 1, "sale_no": self._sale_no,
             "last": None if last is None else {
                 "sale_no": last.sale_no, "product": last.product, "price_kop_per_l": last.price_kop_per_l,
                 "preset_volume_ml": last.preset.volume_ml, "preset_amount_kop": last.preset.amount_kop,
                 "volume_ml": last.volume_ml, "amount_kop": last.amount_kop, "reason": str(last.reason)},
             "open": None if sale is None else {
                 "sale_no": sale.sale_no, "product": sale.product, "price_kop_per_l": sale.price_kop_per_l,
                 "preset_volume_ml": sale.preset.volume_ml, "preset_amount_kop": sale.preset.amount_kop,
                 "volume_ml": sale.volume_ml}}
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(d), encoding="utf-8")
        os.replace(tmp, self.state_path)

    # SimulatedPump reports every change through _emit and records a finished sale in
    # _record: saving there keeps the file ahead of what the lane hears.
    def _emit(self, event: Any) -> None:
        self._save()
        super()._emit(event)

    def _record(self, sale: Any, reason: DeliveryReason) -> Delivery:
        out = super()._record(sale, reason)
        self._save()
        return out
