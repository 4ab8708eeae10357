"""A fuel lane's driver: one pump's card reader, fuel-card application and dispenser.

The lane's transitions are decided by :class:`terminal.fuel_core.FuelCore` (no I/O; its table
is in docs/lanes.md). :class:`FuelLane` feeds it the events of the card reader, the
dispenser, the console and the timer, and performs the commands it returns, in order:
journal records, hold the contract's balance, reserve or settle on the card, preset or
cancel the pump, read its totals, confirm its sale, set the timer, publish. The flow: a card
is inserted and read (MACs checked) -> the PIN is checked by the card -> the console
authorizes a product (optional preset) -> the evaluator answers the largest volume ->
``fuel.preauth`` -> RESERVE -> ``fuel.reserved`` -> preset -> ``fuel.preset`` (with the
API's answer) -> the customer dispenses -> ``fuel.completed`` (which the replica re-applies
on restart) -> the card commits its final counters (``fuel.card_committed``), or, with the
card gone, ``fuel.correction``. A void releases a reservation (``fuel.voided``).

:meth:`FuelLane.recover` reads the card's counters and the pump's last (or unconfirmed) sale
and finishes or voids each transaction the last run left open; completion is journaled
exactly once (docs/recovery.md).

The simulated dispenser with a memory (:class:`hw.sim.recorded_pump.RecordedSimPump`) and
the simulation's public test key (:mod:`hw.sim.keys`) live in ``hw.sim``; this module
re-exports them for the daemon and the tools that name them here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from authz import fuel as rules
from authz.errors import RequestError
from authz.fuel_model import FuelDecision, FuelRequest, FuelState, LimitCounter, mask_card_no
from authz.localtime import local_date
from authz.money import amount_for_volume
from hw.card.application import CardData, FuelCardApplication
from hw.card.keys import KeyStore
from hw.card.records import Counters
from hw.errors import (CardError, CardFormatError, CardNotGenuineError, CardRemovedError, CardStatusError,
                       CardTimeoutError, CounterMismatchError, PinBlockedError, PinFormatError,
                       WrongPinError)
from hw.pump import (Delivery, DeliveryComplete, DeliveryProgress, NozzleHungUp, NozzleLifted,
                     Preset as PumpPreset, Pump, PumpBackOnline, PumpError, PumpOffline, PumpRefused, PumpState,
                     PumpStateError, PumpValueError, PumpWentOffline, StateChanged)
from hw.sim.keys import SIM_ISSUER_KEY, sim_key_store
from hw.sim.recorded_pump import RecordedSimPump
from wire.bodies import (Counting, FuelCardRefused, FuelCompleted, FuelDeclined, FuelVoided, NozzleTotals, body_of,
                         counters_from_json, counters_json)

from . import crashpoints
from . import fuel_core as core
from .config import PumpConfig, SiteConfig
from .events import EventBus
from .fuel_core import (FuelCore, FuelLaneError, FuelTimeouts, FuelTxn, LaneState, Refusal, Settle, base_counters,
                        counting_for, newer, plus, write_id_of)
from .ids import new_id, new_txn_id
from .journal import Journal, JournalClosedError, JournalDiskError, OpenTransaction, Record
from .replica import FUEL_COMPLETED, Replica
from .till import IdemSpec

log = logging.getLogger("edgepos.fuel")

__all__ = [
    "PREAUTH", "RESERVED", "PRESET", "COMPLETED", "CARD_COMMITTED", "VOIDED", "CORRECTION",
    "DECLINED", "CARD_REFUSED", "EMERGENCY_STOP", "PUMP_RESET", "PUMP_ACTION", "PIN_CHECKED", "TOTALS_MISMATCH",
    "TERMINAL_KINDS", "LaneState", "FuelTimeouts", "FuelLane", "RecordedSimPump", "SIM_ISSUER_KEY",
    "sim_key_store", "lane_name", "write_id_of", "FuelTxn", "Counting", "counting_for", "newer",
    "base_counters", "plus", "counters_json", "counters_from_json",
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
PUMP_ACTION = "fuel.pump_action"  #: an operator suspended or resumed the delivery (its own transaction, terminal)
PIN_CHECKED = "fuel.pin_checked"  #: the card checked a PIN: the outcome, never the PIN (terminal)
TOTALS_MISMATCH = "fuel.totals_mismatch"  #: the nozzle's totals disagree with the sale (in the sale's transaction, open)
#: Kinds that end a fuel transaction (for the journal's open-transaction scan).
TERMINAL_KINDS = frozenset({CARD_COMMITTED, VOIDED, CORRECTION, DECLINED, CARD_REFUSED,
                            EMERGENCY_STOP, PUMP_RESET, PUMP_ACTION, PIN_CHECKED})


def lane_name(pump_id: int) -> str:
    """The lane name of pump ``pump_id`` in journal records and events."""
    return f"pump-{pump_id}"


@dataclass(slots=True)
class CardSession:
    """The card in the reader, read and checked genuine, with its session's PIN status."""

    app: FuelCardApplication
    data: CardData

    @property
    def card_no(self) -> str:
        """The card's number."""
        return self.data.card.card_no


def _card_counters(data: CardData) -> dict[tuple[int, Any, Any], LimitCounter]:
    """The card's counters by (limit id, unit, period) of its own limit records: a counter
    joins the replica's limit of the same id only when that limit counts the same way."""
    shape = {lim.limit_id: (lim.unit, lim.period) for lim in data.card.limits}
    return {(i, *shape[i]): c for i, c in data.state.counters if i in shape}


def txn_from_records(records: Iterable[Record]) -> FuelTxn:
    """Rebuild a transaction from its journal records (the first must be ``fuel.preauth``)."""
    records = list(records)
    return FuelTxn.from_bodies(records[0].txn_id, [body_of(r.kind, r.body) for r in records])


# -- the lane --------------------------------------------------------------------------------------

class FuelLane:
    """One pump: its card reader, the card session, its dispenser, and its transaction.

    Lifecycle (driven by the daemon): :meth:`open` (reader and pump), :meth:`recover` (the
    last run's open transactions), :meth:`start` (event tasks), then the console's calls
    (:meth:`pin`, :meth:`authorize`, :meth:`void`, :meth:`emergency_stop`, :meth:`reset`),
    and :meth:`close`. One lock serializes the console's calls and the device events; the
    decisions are the core's (:attr:`core`).
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
        self.core = FuelCore(lambda: new_id(site.site_id), self.timeouts)
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
        self.pending: list[FuelTxn] = []  # transactions of the last run waiting for the pump
        self.reader: Any = None
        self.reader_error: str | None = None
        self._card_q: asyncio.Queue = asyncio.Queue()
        self._pump_q: asyncio.Queue = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._deadline: float | None = None
        self._deadline_changed = asyncio.Event()
        self._pump_open = False
        self._closed = False
        self._idem: IdemSpec | None = None  # the console request being answered
        #: what the console sees (state, transaction, card, notice): the core's, taken when
        #: the driver publishes and when it has performed all of an event's commands, so a
        #: view never shows a state whose records are still being written
        self._shown: tuple[LaneState, FuelTxn | None, Any, str | None] = (LaneState.IDLE, None, None, None)
        self._pump_silent = False  # the last ReadDelivery found the pump not answering

    # -- what the core holds, as the rest of the daemon reads it --

    @property
    def state(self) -> LaneState:
        """Where the lane is (the core's state)."""
        return self.core.state

    @property
    def txn(self) -> FuelTxn | None:
        """The open transaction, if any."""
        return self.core.txn

    @property
    def session(self) -> CardSession | None:
        """The card session, if a card is read."""
        return self.core.card.session if self.core.card is not None else None

    @property
    def notice(self) -> str | None:
        """What the console shows the customer."""
        return self.core.notice

    @property
    def pump_id(self) -> int:
        """The pump's number."""
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
                        if self.state is not LaneState.RECOVERING:  # picked up when the recovery ends
                            await self._run(await self._card_read())
                    elif isinstance(ev, (CardRemoved, _ReaderLost)):
                        await self._run(core.CardGone())
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
                        await self._run(core.TimedOut())
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

    # -- running the core -------------------------------------------------------------------------

    async def _run(self, event: Any) -> core.Reply | None:
        """Feed ``event`` to the core and perform the commands it returns, in order; a
        device command's result is the next event. Returns the reply journaled, if any."""
        reply = None
        while event is not None:
            commands = self.core.handle(event)
            event = None
            for c in commands:
                if isinstance(c, core.Journal) and c.reply is not None:
                    reply = c.reply
                result = await self._perform(c)
                if result is not None:
                    event = result
        self._show()
        return reply

    def _show(self) -> None:
        """Let the console see the core's state (its records are on disk by now)."""
        c = self.core
        self._shown = (c.state, c.txn, c.card, c.notice)

    async def _perform(self, c: Any) -> Any:
        """Perform one command of the core; a device command returns its result event."""
        if isinstance(c, core.Journal):
            await self._journal(c)
        elif isinstance(c, core.Hold):
            self._hold(c.txn, c.on)
        elif isinstance(c, core.SetTimer):
            self._deadline = time.monotonic() + c.seconds if c.seconds is not None else None
            self._deadline_changed.set()
        elif isinstance(c, core.Publish):
            self._show()
            self._publish(c.type, **c.extra)
        elif isinstance(c, core.Reserve):
            return await self._reserve(c.txn)
        elif isinstance(c, core.Preset):
            return await self._preset(c.txn)
        elif isinstance(c, core.Cancel):
            try:
                await self.pump.cancel()
            except PumpError as exc:  # flowing already, or offline: the pump's DeliveryComplete ends the sale
                log.info("%s: nozzle timeout, cancel refused: %s", self.lane, exc)
                return core.CancelDone(error=str(exc), flowing=isinstance(exc, PumpStateError))
            return core.CancelDone()
        elif isinstance(c, core.Settle_):
            settle, applied = await self._settle_card(c.txn, c.write_id, c.counters)
            if settle is Settle.DONE:
                crashpoints.reached("card.released" if c.release else "card.committed")
            return core.SettleDone(settle, applied)
        elif isinstance(c, core.ApplyReplica):
            try:
                self.replica.apply(COMPLETED, c.body.to_json())  # exactly what a restart's replay does
            except RequestError as exc:  # the replica changed under the sale: the host settles it
                log.error("%s: completion not applied to the replica: %s", self.lane, exc)
            crashpoints.reached(COMPLETED)
        elif isinstance(c, core.ReadTotals):
            return core.TotalsRead(await self._totals(c.product))
        elif isinstance(c, core.ConfirmSale):
            await self._confirm(c.sale_id)
            crashpoints.reached("pump.confirmed")
        elif isinstance(c, core.ReadCard):
            return await self._card_read()
        elif isinstance(c, core.ReadDelivery):
            return await self._delivered_for(c.txn)
        elif isinstance(c, core.Operate):
            return await self._operate(c)
        else:  # pragma: no cover - a command the driver does not know is a bug
            raise TypeError(f"unknown command {c!r}")
        return None

    async def _journal(self, c: core.Journal) -> None:
        txn_id = c.txn_id or new_txn_id(self.site.site_id, self.lane)
        records = [self._record(txn_id, b, c.record_id if n == 0 else None) for n, b in enumerate(c.bodies)]
        idem = None
        served = c.key if c.key is not None else self._idem  # an operator's request names its own key
        if c.reply is not None and served is not None:
            key = served.secret() if c.secret else served
            idem = key.entry(*self._answer(c.reply, txn_id))
        try:
            await self.journal.append(records, idem=idem)
        except BaseException:
            for u in c.undo or ():
                await self._perform(u)
            if self.core.txn is not None and self.core.txn.txn_id == txn_id and c.undo:
                self.core.forget(self.core.txn)
            raise
        last = records[-1]
        if last.kind != COMPLETED:  # fuel.completed's point is after the replica applied it
            crashpoints.reached(last.kind)
        if last.kind == TOTALS_MISMATCH:
            log.error("%s: nozzle totals disagree with sale %s: %s", self.lane, last.body["sale_txn_id"], last.body)
        elif last.kind in (VOIDED, CORRECTION, CARD_COMMITTED, COMPLETED):
            log.info("%s: %s %s", self.lane, last.kind, txn_id)

    def _answer(self, reply: core.Reply, txn_id: str) -> tuple[int, dict]:
        """The local API's status and body for the core's ``reply`` (HTTP lives here, at the
        edge of the lane, not in the core)."""
        p = dict(reply.payload)
        txn = self.core.txn
        if reply.outcome == "authorized" and txn is not None:
            return 200, self._decision_answer(txn_id, txn.request, txn.decision, **p)
        if reply.outcome == "failed":
            return 409, _error(p["code"], p["message"], txn_id=txn_id)
        if reply.outcome == "voided":
            return 200, {"pump": self.pump_id, "txn_id": txn_id, "state": "voided", **p}
        if reply.outcome in ("declined", "verified"):
            return 200, p
        if reply.outcome == "operated":
            return 200, {"pump": self.pump_id, **p}
        if reply.outcome in ("wrong_pin", "pin_blocked"):
            return 403, p
        raise ValueError(f"no answer for {reply!r}")  # pragma: no cover

    # -- state and views ---------------------------------------------------------------------------

    def _publish(self, type_: str = "pump.state", **extra: Any) -> None:
        v = self.view(brief=True)
        self.bus.publish(type_, self.lane, **v, **extra)

    def view(self, *, brief: bool = False) -> dict[str, Any]:
        """What the pump console shows: lane state, card (masked), transaction, pump."""
        state, t, card, notice = self._shown
        no = t.card_no if t else card.card_no if card else None
        out: dict[str, Any] = {"pump": self.pump_id, "state": state.value, "card": mask_card_no(no) if no else None,
                               "pump_state": self.pump.state.value, "notice": notice}
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
        out["pin_tries_left"] = card.tries_left if card else None
        out["recovery_pending"] = len(self.pending)
        try:
            out["last_delivery"] = _delivery_view(self.pump.last_delivery)
            out["pump_offline"] = False
        except PumpError:
            out["last_delivery"] = None
            out["pump_offline"] = True
        return out

    def _record(self, txn_id: str, body: Any, record_id: str | None = None) -> Record:
        """A record of this lane holding the typed ``body`` (its kind is the body's)."""
        sid = self.site.site_id
        return Record(record_id or new_id(sid), sid, self.lane, txn_id, body.KIND, int(time.time()), body.to_json())

    # -- card --------------------------------------------------------------------------------------

    async def _card_read(self) -> core.CardRead:
        """Read the card in the reader and check it: the core's :class:`CardRead` (with no
        session, and a notice, when there is no usable card)."""
        if self.reader is None or not self.reader.card_present:
            return core.CardRead(None, None)
        session, notice = await self._read_card()
        if session is None:
            return core.CardRead(None, None, notice=notice)
        known = session.card_no in self.replica.fuel_model.card_index
        return core.CardRead(session, session.card_no, known, session.data.info.pin_tries_left,
                             None if known else f"card {mask_card_no(session.card_no)} is not known at this site")

    async def _read_card(self) -> tuple[CardSession | None, str | None]:
        """Read the card in the reader and check it; (None, why) if it cannot be used. A card
        not genuine or behind a state this site saw is refused and journaled."""
        if self.reader is None:
            return None, None
        app = FuelCardApplication(self.reader, self.keys, timeout_s=self.timeouts.card_apdu_s)
        try:
            data = await app.read_card()
        except CardRemovedError:
            return None, None
        except CardNotGenuineError as exc:
            return None, await self._refuse(None, f"card not genuine: {exc}")
        except CardFormatError as exc:  # genuine or not, its stored rules cannot be read: never sold on
            return None, await self._refuse(None, f"card data unreadable: {exc}")
        except CardError as exc:
            return None, f"card unreadable: {exc}"
        card_no = data.card.card_no
        seen = self.card_counters_seen.get(card_no)
        if seen is not None and data.state.txn_counter < seen:
            return None, await self._refuse(card_no, f"transaction counter {data.state.txn_counter} is behind "
                                                     f"{seen} already seen: a copy of an older card state")
        self.card_counters_seen[card_no] = max(seen or 0, data.state.txn_counter)
        return CardSession(app, data), None

    async def _refuse(self, card_no: str | None, why: str) -> str:
        masked = mask_card_no(card_no) if card_no else "?"
        log.warning("%s: card %s refused: %s", self.lane, masked, why)
        txn_id = new_txn_id(self.site.site_id, self.lane)
        await self.journal.append([self._record(txn_id, FuelCardRefused(card_no, why))])
        notice = f"card refused: {why}"
        self.core.notice = notice
        self._show()
        self._publish()
        return notice

    async def _reserve(self, txn: FuelTxn) -> core.ReserveDone:
        s = self.session
        if s is None or s.card_no != txn.card_no:
            return core.ReserveDone(None, error="the card is gone")
        try:
            after = await s.app.reserve(s.data.state, txn.reserve_write_id, txn.reserve_counters())
        except CardStatusError as exc:  # a status word: the card checked and did not apply it
            log.warning("%s: the card refused the reservation: %s", self.lane, exc)
            return core.ReserveDone(False, error=str(exc))
        except CardError as exc:  # removed, timeout, garbage, bad receipt: applied or not, unknown
            log.warning("%s: the card's answer to the reservation was lost: %s", self.lane, exc)
            return core.ReserveDone(None, error=str(exc))
        self.card_counters_seen[txn.card_no] = after.txn_counter
        s.data = CardData(s.data.card, after, s.data.info)
        crashpoints.reached("card.reserved")
        return core.ReserveDone(True, after.txn_counter)

    async def _preset(self, txn: FuelTxn) -> core.PresetDone:
        try:
            sale_no = await self.pump.authorize(txn.product, txn.price_kop_per_l,
                                                PumpPreset.by_volume(txn.decision.volume_ml))
        except PumpError as exc:
            log.warning("%s: pump %d refused the preset: %s", self.lane, self.pump_id, exc)
            return core.PresetDone(None, error=f"pump {self.pump_id} refused the preset: {exc}")
        crashpoints.reached("pump.preset")
        log.info("%s: card %s authorized for %d ml of %s (%s), pump sale %d", self.lane, mask_card_no(txn.card_no),
                 txn.decision.volume_ml, txn.product, txn.decision.reason.name, sale_no)
        return core.PresetDone(sale_no, flowing=self.pump.state is PumpState.DISPENSING)

    async def _totals(self, product: str) -> NozzleTotals | None:
        """The nozzle totals of ``product`` (None: the pump has no totals, or does not answer)."""
        try:
            n = (await self.pump.read_totals()).for_product(product)
        except PumpValueError:  # no nozzle of that product counted yet
            return None
        except PumpError as exc:
            log.warning("%s: the pump's totals could not be read: %s", self.lane, exc)
            return None
        return NozzleTotals(n.nozzle, n.volume_ml, n.amount_kop)

    async def _confirm(self, sale_id: Any) -> None:
        try:
            await self.pump.confirm_sale(sale_id)
        except PumpError as exc:  # it stays unconfirmed: the next recovery confirms it
            log.warning("%s: the pump's sale %r could not be confirmed: %s", self.lane, sale_id, exc)

    # -- the console: PIN ------------------------------------------------------------------------------

    async def pin(self, pin: Any, idem: IdemSpec) -> tuple[int, dict]:
        """Have the card check ``pin``, then journal that the step happened and its outcome
        (``fuel.pin_checked``: verified, wrong or blocked, the tries left; never the PIN)
        with the answer under the request's key. The key's request digest is kept as an
        HMAC under this run's in-memory key (:func:`terminal.till.secret_digest`): a hash
        of a 4-digit PIN on disk would be the PIN."""
        if not isinstance(pin, str):
            raise FuelLaneError("pin must be text: 4 to 12 digits", Refusal.INVALID)
        async with self.lock:
            self._idem = idem
            try:
                return await self._pin(pin)
            finally:
                self._idem = None

    async def _pin(self, pin: str) -> tuple[int, dict]:
        s = self.session
        if self.state not in (LaneState.CARD_READ, LaneState.PIN_OK) or s is None:
            raise FuelLaneError(self._why_not("check a PIN"))
        try:
            await s.app.verify_pin(pin)
        except PinFormatError:
            raise FuelLaneError("pin must be 4 to 12 digits", Refusal.INVALID) from None
        except WrongPinError as exc:
            answer = _error("wrong_pin", f"wrong PIN: {exc.tries_left} tries left", tries_left=exc.tries_left)
            await self._run(core.PinChecked("wrong_pin", exc.tries_left, answer))
            return 403, answer
        except PinBlockedError:
            answer = _error("pin_blocked", "the card's PIN is blocked: no more tries", tries_left=0)
            await self._run(core.PinChecked("pin_blocked", 0, answer))
            return 403, answer
        except CardRemovedError:
            await self._run(core.PinChecked("removed", 0))
            raise FuelLaneError("the card was removed") from None
        except CardError as exc:
            raise FuelLaneError(f"the card did not answer the PIN check: {exc}", Refusal.UNAVAILABLE) from None
        answer = {"pump": self.pump_id, "verified": True, "state": LaneState.PIN_OK.value}
        await self._run(core.PinChecked("verified", 3, answer))
        return 200, answer

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
            c = self.core.card
            if self.state is not LaneState.PIN_OK or c is None or not c.pin_ok:
                raise FuelLaneError(self._why_not("authorize"))
            self._idem = idem
            try:
                return await self._authorize(c.session, product, preset_volume_ml, preset_amount_kop, idem)
            finally:
                self._idem = None

    def _check_input(self, product: Any, pv: Any, pa: Any) -> None:
        if not isinstance(product, str) or not product:
            raise FuelLaneError("product must be a product code", Refusal.INVALID)
        if self.config.products and product not in self.config.products:
            raise FuelLaneError(f"pump {self.pump_id} has no nozzle for {product!r}; it has "
                            f"{', '.join(self.config.products)}", Refusal.INVALID)
        if product not in self.replica.fuel_model.product_index:
            raise FuelLaneError(f"unknown product {product!r}", Refusal.INVALID)
        try:
            rules.check_presets(pv, pa)  # the evaluators' own check
        except RequestError as exc:
            raise FuelLaneError(str(exc), Refusal.INVALID) from None

    def _decide(self, req: FuelRequest, data: CardData) -> FuelDecision:
        """The evaluator's decision, with the card's own counters merged in when they are
        newer or larger than the site's, and the balance other open authorizations hold."""
        ev, model = self.replica.fuel, self.replica.fuel_model
        decision = ev.authorize(req)
        if not decision.approved:
            return decision
        card = model.card(req.card_no)
        on_card = _card_counters(data)
        counters, merged = {}, False
        for lim in card.limits:
            mine, theirs = ev.counter(card.card_no, lim.limit_id), on_card.get((lim.limit_id, lim.unit, lim.period))
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
                "binding_limit_id": d.binding_limit_id, "card": mask_card_no(req.card_no),
                "exceptions": [{"reason": e.reason.name, "limit_id": e.limit_id} for e in d.exceptions], **extra}

    async def _authorize(self, s: CardSession, product: str, pv: int | None, pa: int | None,
                         idem: IdemSpec) -> tuple[int, dict]:
        model = self.replica.fuel_model
        busy = self.open_cards.get(s.card_no)
        if busy is not None:
            raise FuelLaneError(f"card {mask_card_no(s.card_no)} has an open authorization on this site "
                            f"({busy}): one pump at a time per card")
        # The totals are read first: from the decision to the fuel.preauth append nothing
        # awaits (the decision and its holds are one step for the whole site).
        totals = await self._totals(product) if self.pump.state in (PumpState.IDLE, PumpState.CALLING) else None
        req = FuelRequest(s.card_no, self.site.station_id, product, int(time.time()), pv, pa)
        decision = self._decide(req, s.data)  # RequestError: 422, nothing changed
        card = model.card(s.card_no)
        txn_id = new_txn_id(self.site.site_id, self.lane)
        if not decision.approved:
            answer = self._decision_answer(txn_id, req, decision, state=LaneState.PIN_OK.value)
            log.info("%s: card %s declined (%s)", self.lane, mask_card_no(s.card_no), decision.reason.name)
            await self._run(core.Declined(txn_id, FuelDeclined(req, decision, s.card_no, card.contract_id), answer,
                                          f"declined: {decision.reason.name}"))
            return 200, answer
        if self.pump.state not in (PumpState.IDLE, PumpState.CALLING):
            raise FuelLaneError(f"pump {self.pump_id} cannot be preset while it is {self.pump.state.value}")
        try:
            last = self.pump.last_delivery
        except PumpError as exc:
            raise FuelLaneError(f"pump {self.pump_id} does not answer: {exc}", Refusal.UNAVAILABLE) from None
        contract = model.contracts[model.contract_index[card.contract_id]]
        today = local_date(req.now_utc_s, contract.tz)
        product_ = model.products[model.product_index[product]]
        # The card's own limits (MAC-checked) say how its counters count this sale.
        counting = counting_for(s.data.card, product_, today)
        # The site's counter of a limit joins the card's only where both say the same unit
        # and period (a count of purchases is never read as kopecks).
        same = {(lim.limit_id, lim.unit, lim.period) for lim in s.data.card.limits}
        known = {lim.limit_id: self.replica.fuel.counter(s.card_no, lim.limit_id) for lim in card.limits
                 if (lim.limit_id, lim.unit, lim.period) in same}
        preauth_id = new_id(self.site.site_id)
        txn = FuelTxn(txn_id, req, decision, card.contract_id, s.data.state.txn_counter, write_id_of(preauth_id),
                      write_id_of(new_id(self.site.site_id)), counting,
                      base_counters(s.data.state.counters, counting, known),
                      decision.unit_price_kop_per_l or decision.list_price_kop_per_l or 1,
                      last.sale_no if last is not None else 0, totals_before=totals, preauth_id=preauth_id)
        reply = await self._run(core.AuthorizeAsked(txn))
        assert reply is not None
        return self._answer(reply, txn_id)

    # -- the console: void, stop, reset ---------------------------------------------------------------

    async def void(self, idem: IdemSpec) -> tuple[int, dict]:
        """Release the authorization before any fuel has flowed."""
        async with self.lock:
            txn = self.txn
            if txn is None or self.state is not LaneState.AUTHORIZED:
                if txn is not None:
                    raise FuelLaneError(f"pump {self.pump_id}: fuel is {self.state.value}: stop the pump instead of voiding")
                raise FuelLaneError(f"pump {self.pump_id} has no authorization to void")
            try:
                await self.pump.cancel()
            except PumpOffline as exc:
                raise FuelLaneError(f"pump {self.pump_id} does not answer ({exc}); the authorization ends when it does",
                                503) from None
            except PumpStateError as exc:
                raise FuelLaneError(f"pump {self.pump_id}: fuel is flowing ({exc}): stop the pump instead") from None
            self._idem = idem
            try:
                reply = await self._run(core.VoidAsked())
            finally:
                self._idem = None
            assert reply is not None
            return self._answer(reply, txn.txn_id)

    async def operate(self, action: core.PumpAction, idem: IdemSpec) -> tuple[int, dict]:
        """An operator's action on the pump (suspend, resume, emergency stop, reset), through
        the core: the pump does it, then ``fuel.pump_action`` / ``fuel.emergency_stop`` /
        ``fuel.pump_reset`` is journaled (its own transaction) with the answer. A pump that
        refuses or does not answer is a FuelLaneError and nothing is journaled. An emergency
        stop takes no lane lock (it does not queue behind a card write); a delivery it ends
        is completed with what was dispensed."""
        ask = {core.PumpAction.SUSPEND: core.SuspendAsked, core.PumpAction.RESUME: core.ResumeAsked,
               core.PumpAction.EMERGENCY_STOP: core.StopAsked, core.PumpAction.RESET: core.ResetAsked}[action](idem)
        if action is core.PumpAction.EMERGENCY_STOP:
            reply = await self._run(ask)
        else:
            async with self.lock:
                reply = await self._run(ask)
        assert reply is not None
        if action is core.PumpAction.EMERGENCY_STOP:
            log.warning("%s: emergency stop", self.lane)
        return self._answer(reply, "")

    async def _operate(self, c: core.Operate) -> core.PumpActed:
        """Have the pump do ``c.action``; its refusal is the console's error (nothing journaled)."""
        do = {core.PumpAction.SUSPEND: self.pump.suspend, core.PumpAction.RESUME: self.pump.resume,
              core.PumpAction.EMERGENCY_STOP: self.pump.emergency_stop, core.PumpAction.RESET: self.pump.reset}
        try:
            await do[c.action]()
        except PumpOffline as exc:
            raise FuelLaneError(f"pump {self.pump_id} does not answer: {exc}", Refusal.UNAVAILABLE) from None
        except (PumpStateError, PumpRefused) as exc:
            raise FuelLaneError(f"pump {self.pump_id} cannot {c.action.value.replace('_', ' ')}: {exc}") from None
        return core.PumpActed(c.action, self.pump.state.value, c.key)

    # -- pump events --------------------------------------------------------------------------------

    async def _on_pump_event(self, ev: Any) -> None:
        txn = self.txn
        if self.state is LaneState.RECOVERING:
            if isinstance(ev, (PumpBackOnline, StateChanged)) and self.pump.state is not PumpState.OFFLINE:
                await self._retry_pending()
            return
        if isinstance(ev, DeliveryProgress):
            await self._run(core.Progress(ev.volume_ml, ev.amount_kop))
            if txn is not None:
                crashpoints.reached("fuel.dispensing")
        elif isinstance(ev, DeliveryComplete):
            if txn is None or txn.sale_no is None or self.state not in (LaneState.AUTHORIZED, LaneState.DISPENSING):
                log.info("%s: delivery end %r with no sale of ours open", self.lane, ev)
                return
            volume, sale_id = ev.volume_ml, None
            try:  # the dispenser's own totals are the record (they include what an offline spell hid)
                last = self.pump.last_delivery
                if last is not None and last.sale_no == txn.sale_no:
                    volume, sale_id = last.volume_ml, last.sale_id
            except PumpError:
                pass
            await self._run(core.DeliveryEnded(txn.sale_no, volume, str(ev.reason), sale_id))
        elif isinstance(ev, StateChanged):
            if ev.new is PumpState.DISPENSING:
                await self._run(core.PumpStarted())
            else:
                self._publish()
        elif isinstance(ev, PumpWentOffline):
            await self._run(core.PumpLost())
        elif isinstance(ev, PumpBackOnline):
            await self._run(core.PumpBack())
        elif isinstance(ev, (NozzleLifted, NozzleHungUp)):
            self._publish("pump.nozzle", lifted=isinstance(ev, NozzleLifted), product=ev.product)

    # -- settling the card ----------------------------------------------------------------------------

    async def _settle_card(self, txn: FuelTxn, write_id: bytes, counters: Counters) -> tuple[Settle, bool | None]:
        """Make the card hold ``write_id`` (a commit or a release of ``txn``'s reservation),
        reading its counters first so that a write already made is never made twice.
        Returns what became of it, and whether the card shows the reservation applied
        (None: not learnt)."""
        for attempt in range(2):
            s = self.session
            if (s is None or s.card_no != txn.card_no) and self.reader is not None and self.reader.card_present:
                fresh, _ = await self._read_card()
                if fresh is not None and fresh.card_no == txn.card_no:
                    self.core.attach(fresh, fresh.card_no)
                    s = fresh
            if s is None or s.card_no != txn.card_no:
                # Gone before any write was sent: absent; gone after one was: unknown.
                return (Settle.ABSENT if attempt == 0 else Settle.UNKNOWN), None
            try:
                st = await s.app.read_counters()
                self.card_counters_seen[txn.card_no] = max(self.card_counters_seen.get(txn.card_no, 0),
                                                           st.txn_counter)
                if st.txn_counter == txn.expected_txn + 2 and st.last_write_id == write_id:
                    return Settle.DONE, None
                if st.txn_counter == txn.expected_txn and st.last_write_id != txn.reserve_write_id:
                    return Settle.NOT_RESERVED, False
                if st.txn_counter != txn.expected_txn + 1 or st.last_write_id != txn.reserve_write_id:
                    return Settle.OVERTAKEN, None
                after = await s.app.commit(st, write_id, counters)
                self.card_counters_seen[txn.card_no] = after.txn_counter
                s.data = CardData(s.data.card, after, s.data.info)
                return Settle.DONE, True
            except (CardRemovedError, CardTimeoutError) as exc:
                log.warning("%s: card write of %s interrupted: %s", self.lane, txn.txn_id, exc)
                self.core.detach()  # a reader that still sees the card gets one more try
                continue
            except CardError as exc:
                log.warning("%s: card refused the write of %s: %s", self.lane, txn.txn_id, exc)
                return (Settle.OVERTAKEN if isinstance(exc, CounterMismatchError) else Settle.UNKNOWN), None
        return Settle.UNKNOWN, None

    # -- recovery -----------------------------------------------------------------------------------

    async def recover(self, open_txns: list[OpenTransaction]) -> int:
        """Finish or void every transaction this lane's last run left open (before the API
        listens). A transaction whose outcome depends on a pump that does not answer stays
        open, and the lane waits in RECOVERING until the pump is back."""
        n = 0
        self.core.recovering = True
        try:
            for ot in open_txns:
                if not ot.records or ot.records[0].kind != PREAUTH:
                    log.error("%s: open transaction %s does not start with %s (kinds %s): left alone",
                              self.lane, ot.txn_id, PREAUTH, [r.kind for r in ot.records])
                    continue
                txn = txn_from_records(ot.records)
                if await self._recover_one(txn, held=False):
                    n += 1
                else:
                    self.pending.append(txn)
            if not self.pending:
                await self._confirm_left_over()
        finally:
            self.core.recovering = False
        self.core.recovered(len(self.pending))
        self._show()
        if self.pending:
            log.error("%s: %s", self.lane, self.notice)
        if n:
            log.warning("%s: finished %d transaction(s) left open by the last run", self.lane, n)
        return n

    async def _confirm_left_over(self) -> None:
        """A sale the last run finished and journaled but could not confirm (the dispenser
        did not answer the confirm, or the daemon stopped first) is still held unconfirmed by
        the dispenser: confirm it now if the journal holds its end, through the core."""
        try:
            held = await self.pump.unconfirmed_sale()
        except PumpError as exc:
            log.warning("%s: the pump's unconfirmed sale could not be read: %s", self.lane, exc)
            return
        if held is None:
            return
        journaled = self._journaled_end(held)
        log.log(logging.INFO if journaled else logging.ERROR, "%s: the pump holds sale %d (%r) unconfirmed; %s",
                self.lane, held.sale_no, held.sale_id,
                "the journal holds its end: confirming it" if journaled else "the journal does not hold it")
        await self._run(core.UnconfirmedRead(held.sale_id, held.sale_no, journaled))

    def _journaled_end(self, sale: Delivery, lookback: int = 1_000) -> bool:
        """Whether this lane's latest ``lookback`` records hold the end of the dispenser's
        ``sale``: a ``fuel.completed`` naming its sale id (or, for one journaled without, its
        sale number and volume), or the ``fuel.voided`` of that sale number if it dispensed
        nothing."""
        for rec in reversed(self.journal.tail(lookback, self.lane)):
            if rec.kind == COMPLETED:
                c = body_of(rec.kind, rec.body)
                assert isinstance(c, FuelCompleted)
                if c.sale_id is not None:
                    if c.sale_id == str(sale.sale_id):
                        return True
                elif c.sale_no == sale.sale_no and c.delivered_volume_ml + c.overrun_ml == sale.volume_ml:
                    return True
            elif rec.kind == VOIDED and sale.volume_ml == 0:
                v = body_of(rec.kind, rec.body)
                assert isinstance(v, FuelVoided)
                if v.sale_no == sale.sale_no:
                    return True
        return False

    async def _retry_pending(self) -> None:
        still = []
        self.core.recovering = True
        try:
            for old in self.pending:
                txn = txn_from_records(self.journal.records_for_txn(old.txn_id))
                if not await self._recover_one(txn, held=True):
                    still.append(txn)
        finally:
            self.core.recovering = False
        self.pending = still
        if not still:
            self.core.recovered(0, "recovered the last run's sales")
            self._show()
            await self._confirm_left_over()
            await self._run(await self._card_read())

    async def _recover_one(self, txn: FuelTxn, *, held: bool) -> bool:
        """Finish one open transaction; False when the pump cannot say what was dispensed."""
        if self.reader is not None and self.reader.card_present and (self.session is None
                                                                     or self.session.card_no != txn.card_no):
            fresh, _ = await self._read_card()
            if fresh is not None:
                self.core.attach(fresh, fresh.card_no)
            else:
                self.core.detach()
        if txn.completed is not None and txn.sale_id is None and txn.sale_no is not None:
            try:  # a sale journaled before issue 10 names no sale id: the dispenser's may match
                unconfirmed = await self.pump.unconfirmed_sale()
            except PumpError:
                unconfirmed = None
            if unconfirmed is not None and unconfirmed.sale_no == txn.sale_no:
                txn.sale_id = unconfirmed.sale_id
        log.warning("%s: recovering %s (%s)", self.lane, txn.txn_id,
                    "completed, settling the card" if txn.completed is not None else "asking the pump")
        self._pump_silent = False
        await self._run(core.RecoverAsked(txn, held))
        return not self._pump_silent

    async def _delivered_for(self, txn: FuelTxn) -> core.DeliveryRead:
        """What the pump dispensed for ``txn`` (0: nothing), or None if it does not answer.
        A sale still open on the pump is stopped first: fuel must not flow unsupervised.
        A pump that keeps its finished sales until confirmed (``unconfirmed_sale``) is
        asked for that sale first."""
        try:
            if self.pump.state in (PumpState.AUTHORIZED, PumpState.DISPENSING):
                await self.pump.stop()
                await self._wait_delivery_end()
                if self._pump_state() is PumpState.STOPPED:
                    await self.pump.reset()
            last = await self.pump.unconfirmed_sale()
            if last is None or not self._is_sale_of(last, txn):
                last = self.pump.last_delivery
        except PumpOffline:
            self._pump_silent = True
            return core.DeliveryRead(None)
        if last is None:
            return core.DeliveryRead(0)
        if self._is_sale_of(last, txn):
            log.warning("%s: recovering %s: the pump dispensed %d ml", self.lane, txn.txn_id, last.volume_ml)
            return core.DeliveryRead(last.volume_ml, sale_id=last.sale_id)
        return core.DeliveryRead(0)

    def _pump_state(self) -> PumpState:
        """The pump's state read now (after an await, not the state checked before it)."""
        return self.pump.state

    @staticmethod
    def _is_sale_of(last: Delivery, txn: FuelTxn) -> bool:
        if txn.sale_no is not None:
            return last.sale_no == txn.sale_no
        # Killed between presetting the pump and journaling it: the pump's sale numbers
        # only go up, and no other sale could be preset on this pump meanwhile.
        return last.sale_no > txn.last_sale_no_before and last.product == txn.product

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


def _card_reader(name: str) -> Any:
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
