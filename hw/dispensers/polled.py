"""The half of a real dispenser driver that does not depend on the wire protocol.

A real dispenser or forecourt controller is polled: the driver asks for its status every
``poll_interval_s`` and works out the ``hw.pump`` events from the difference between two
answers. ``PolledPump`` does that, keeps the ``Pump`` contract's bookkeeping (the open sale,
the emergency-stop latch, suspend, exactly one ``DeliveryComplete`` per authorization) and
leaves to a subclass only the device commands (``_dev_*``), which it calls in order.

The status a subclass returns is a ``DeviceStatus``: what the device says, with nozzles
already mapped to products and units already integers.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from hw.pump import (
    Delivery,
    DeliveryComplete,
    DeliveryProgress,
    DeliveryReason,
    NozzleHungUp,
    NozzleLifted,
    Preset,
    Pump,
    PumpBackOnline,
    PumpBusy,
    PumpError,
    PumpEvent,
    PumpOffline,
    PumpProtocolError,
    PumpRefused,
    PumpState,
    PumpStateError,
    PumpTotals,
    PumpValueError,
    PumpWentOffline,
    StateChanged,
)

__all__ = ["DeviceStatus", "FinishedSale", "PolledPump", "check_nozzle_map"]

log = logging.getLogger(__name__)

_CLOSED = object()


def check_nozzle_map(pump_id: int, nozzles: Mapping[int, str], *, device: str, word: str, plural: str, top: int) -> None:
    """Refuse a pump's map of device nozzle numbers (PTS-2) or channels (АЗТ 2.0) to products
    unless it names at least one, every number is an int in 1..``top`` and every product a
    distinct non-empty name: a ``PumpValueError`` naming the pump and what is wrong, in the
    device's own ``word``."""
    if not nozzles:
        raise PumpValueError(f"pump {pump_id}: {device} needs at least one {word}")
    for n, product in nozzles.items():
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= top:
            raise PumpValueError(f"pump {pump_id}: {plural} are 1..{top}, got {n!r}")
        if not isinstance(product, str) or not product:
            raise PumpValueError(f"pump {pump_id}: {word} {n} needs a product name")
    if len(set(nozzles.values())) != len(nozzles):
        raise PumpValueError(f"pump {pump_id}: two {word}s deliver the same product")


@dataclass(frozen=True, slots=True)
class FinishedSale:
    """A sale the device has finished and still holds unconfirmed (its own numbers)."""

    sale_id: str
    product: str
    price_kop_per_l: int
    volume_ml: int
    amount_kop: int


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """One status answer of the device.

    ``state`` is IDLE, CALLING, AUTHORIZED or DISPENSING (the device's side only: the
    driver adds SUSPENDED, COMPLETED, STOPPED and OFFLINE). ``sale_id`` names the open sale
    while AUTHORIZED or DISPENSING; ``volume_ml``/``amount_kop`` are its running totals.
    ``finished`` is the finished sale the device holds unconfirmed, if any.
    """

    state: PumpState
    nozzle: str | None = None
    sale_id: str | None = None
    volume_ml: int = 0
    amount_kop: int = 0
    finished: FinishedSale | None = None


@dataclass(slots=True)
class _OpenSale:
    sale_no: int
    sale_id: str
    product: str
    price_kop_per_l: int
    preset: Preset
    progress_ml: int = 0


class PolledPump(Pump):
    """A ``Pump`` over a device that is polled for its status (see the module docstring).

    ``offline_after`` consecutive failed polls (no answer, or an answer the driver cannot
    use) make the pump OFFLINE; the first good answer brings it back.
    """

    volume_resolution_ml = 1
    """The device meters in steps of this many millilitres (a preset is reached when the
    delivery is within one step of it)."""

    def __init__(self, pump_id: int, *, poll_interval_s: float = 0.2, offline_after: int = 2) -> None:
        """``poll_interval_s``: time between status requests; ``offline_after``: failed
        polls in a row before the pump is reported offline."""
        if isinstance(pump_id, bool) or not isinstance(pump_id, int) or pump_id <= 0:
            raise PumpValueError(f"pump_id must be a positive int, got {pump_id!r}")
        if not isinstance(poll_interval_s, int | float) or poll_interval_s <= 0:
            raise PumpValueError(f"poll_interval_s must be positive, got {poll_interval_s!r}")
        if isinstance(offline_after, bool) or not isinstance(offline_after, int) or offline_after < 1:
            raise PumpValueError(f"offline_after must be an int >= 1, got {offline_after!r}")
        self._pump_id = pump_id
        self.poll_interval_s = float(poll_interval_s)
        self.offline_after = offline_after
        self._state = PumpState.OFFLINE
        self._nozzle: str | None = None
        self._open: _OpenSale | None = None
        self._last: Delivery | None = None
        self._latched = False
        self._suspended = False
        self._awaiting_hang_up = False
        self._stopping = False  # a stop was sent for the open sale
        self._offline = True
        self._failures = 0
        self._confirmed_id: str | None = None
        self._sale_no = 0
        self._generation = 0  # bumped by every command: a poll begun before it is stale
        self._presets: dict[str, Preset] = {}  # the presets this process authorized, by sale id
        self._sale_nos: dict[str, int] = {}  # sale numbers this process gave, by sale id
        self._quiet = False  # no events while reading the device at open
        self._queue: asyncio.Queue[object] | None = None
        self._poller: asyncio.Task[None] | None = None

    # --- what a device driver supplies ------------------------------------------------------
    async def _dev_open(self) -> None:
        """Open the transport (called first in ``async with``)."""

    async def _dev_close(self) -> None:
        """Close the transport (called last)."""

    @abc.abstractmethod
    async def _dev_status(self) -> DeviceStatus:
        """Ask the device for its status; ``PumpOffline`` if it does not answer."""

    @abc.abstractmethod
    async def _dev_authorize(self, product: str, price_kop_per_l: int, preset: Preset) -> str:
        """Preset and authorize; return the device's id of the new sale."""

    @abc.abstractmethod
    async def _dev_cancel(self, sale_id: str) -> None:
        """Release an authorization before flow."""

    @abc.abstractmethod
    async def _dev_stop(self, emergency: bool) -> None:
        """End the delivery now (the emergency variant if the device has one)."""

    @abc.abstractmethod
    async def _dev_suspend(self) -> None:
        """Pause the flow, keeping the sale open."""

    @abc.abstractmethod
    async def _dev_resume(self) -> None:
        """Let a paused flow go on."""

    @abc.abstractmethod
    async def _dev_totals(self) -> PumpTotals:
        """Read the totalizers."""

    @abc.abstractmethod
    async def _dev_confirm(self, sale_id: str) -> bool:
        """Confirm the finished sale ``sale_id``; False if the device no longer holds it."""

    def _preset_of(self, sale_id: str) -> Preset | None:
        """The preset of a sale this process authorized (None after a restart)."""
        if self._open is not None and self._open.sale_id == sale_id:
            return self._open.preset
        return self._presets.get(sale_id)

    def _sale_no_of(self, sale_id: str) -> int:
        """The ``sale_no`` to report for a device sale id (subclasses may override)."""
        return int(sale_id) if sale_id.isdigit() else 0

    # --- Pump: read-only ---------------------------------------------------------------------
    @property
    def pump_id(self) -> int:
        """The pump's number on the forecourt."""
        return self._pump_id

    @property
    def state(self) -> PumpState:
        """The state worked out from the last answer (OFFLINE while there is none)."""
        return self._state

    @property
    def last_delivery(self) -> Delivery | None:
        """The last finished sale known to the driver (read from the device when opened)."""
        self._require_open()
        self._require_online()
        return self._last

    # --- Pump: requests -----------------------------------------------------------------------
    async def authorize(self, product: str, price_kop_per_l: int, preset: Preset) -> int:
        """Preset the device and authorize it; the sale number is the device's."""
        self._require_open()
        self._require_online()
        if self._state in (PumpState.AUTHORIZED, PumpState.DISPENSING, PumpState.SUSPENDED,
                           PumpState.COMPLETED):
            raise PumpBusy(f"pump {self._pump_id} is {self._state}: a sale is open")
        if self._state is PumpState.STOPPED:
            raise PumpStateError(f"pump {self._pump_id} cannot authorize while {self._state}")
        if not isinstance(product, str) or not product:
            raise PumpValueError(f"product must be a non-empty str, got {product!r}")
        if isinstance(price_kop_per_l, bool) or not isinstance(price_kop_per_l, int) or price_kop_per_l <= 0:
            raise PumpValueError(f"price_kop_per_l must be a positive int, got {price_kop_per_l!r}")
        if not isinstance(preset, Preset):
            raise PumpValueError(f"preset must be a Preset, got {preset!r}")
        if preset.limit_ml(price_kop_per_l) <= 0:
            raise PumpValueError(f"preset {preset.amount_kop} kop buys no fuel at {price_kop_per_l} kop/L")
        self._generation += 1
        sale_id = await self._dev_authorize(product, price_kop_per_l, preset)
        self._generation += 1
        self._sale_no = max(self._sale_no + 1, self._sale_no_of(sale_id))
        self._open = _OpenSale(self._sale_no, sale_id, product, price_kop_per_l, preset)
        self._presets[sale_id] = preset
        self._sale_nos[sale_id] = self._sale_no
        self._stopping = False
        self._set_state(PumpState.AUTHORIZED)
        sale_no = self._sale_no
        await self._poll_once()  # flow may start at once (nozzle up): report it without a poll's wait
        return sale_no

    async def cancel(self) -> None:
        """Release the authorization before any fuel has flowed."""
        self._require_open()
        self._require_online()
        if self._state is not PumpState.AUTHORIZED or self._open is None:
            raise PumpStateError(f"pump {self._pump_id} has no authorization to cancel while {self._state}")
        self._generation += 1
        await self._dev_cancel(self._open.sale_id)
        self._generation += 1
        self._open = None
        self._set_state(self._resting_state())

    async def stop(self) -> None:
        """Stop: end the delivery (reason ``stopped``) and latch STOPPED."""
        await self._stop(emergency=False)

    async def emergency_stop(self) -> None:
        """Emergency stop: the device's emergency command, then as ``stop()``."""
        await self._stop(emergency=True)

    async def _stop(self, emergency: bool) -> None:
        self._require_open()
        self._require_online()
        self._generation += 1
        await self._dev_stop(emergency)
        self._generation += 1
        self._latched = True
        self._suspended = False
        if self._open is not None:
            self._stopping = True
            await self._poll_once()  # the sale usually ends at once: report it now
        self._set_state(PumpState.STOPPED)

    async def reset(self) -> None:
        """Clear the stop latch (a driver-side latch: the device is simply left idle)."""
        self._require_open()
        self._require_online()
        if self._state is not PumpState.STOPPED:
            raise PumpStateError(f"pump {self._pump_id} has no emergency stop to reset while {self._state}")
        self._latched = False
        self._set_state(self._resting_state())

    async def suspend(self) -> None:
        """Pause the delivery in progress."""
        self._require_open()
        self._require_online()
        if self._state is not PumpState.DISPENSING:
            raise PumpStateError(f"pump {self._pump_id} has no delivery to suspend while {self._state}")
        self._generation += 1
        await self._dev_suspend()
        self._generation += 1
        self._suspended = True
        self._set_state(PumpState.SUSPENDED)

    async def resume(self) -> None:
        """Let the suspended delivery go on."""
        self._require_open()
        self._require_online()
        if self._state is not PumpState.SUSPENDED:
            raise PumpStateError(f"pump {self._pump_id} has no suspended delivery while {self._state}")
        self._generation += 1
        await self._dev_resume()
        self._generation += 1
        self._suspended = False
        self._set_state(PumpState.DISPENSING)

    async def read_totals(self) -> PumpTotals:
        """The totalizers, read from the device now."""
        self._require_open()
        self._require_online()
        return await self._dev_totals()

    async def unconfirmed_sale(self) -> Delivery | None:
        """The finished sale the device holds unconfirmed, read from the device now."""
        self._require_open()
        self._require_online()
        status = await self._dev_status()
        return None if status.finished is None else self._delivery(status.finished, None)

    async def confirm_sale(self, sale_id: str) -> None:
        """Confirm (close) the device's finished sale ``sale_id``."""
        self._require_open()
        self._require_online()
        if not isinstance(sale_id, str) or not sale_id:
            raise PumpValueError(f"sale_id must be a non-empty str, got {sale_id!r}")
        status = await self._dev_status()
        held = status.finished
        if held is not None and held.sale_id == sale_id:
            self._generation += 1
            if await self._dev_confirm(sale_id):
                self._confirmed_id = sale_id
                return
        if sale_id == self._confirmed_id:
            return
        if held is None and await self._dev_confirm(sale_id):
            return  # the device says it was confirmed already (a retry after a restart)
        raise PumpValueError(
            f"pump {self._pump_id} holds no unconfirmed sale {sale_id!r} "
            f"(unconfirmed: {'none' if held is None else repr(held.sale_id)})"
        )

    def events(self) -> AsyncIterator[PumpEvent]:
        """Events in order until the pump is closed (one consumer)."""
        return _drain(self._require_open())

    async def __aenter__(self) -> Self:
        """Open the transport, read the device once and start polling."""
        if self._queue is not None:
            raise PumpBusy(f"pump {self._pump_id} is already open")
        self._queue = asyncio.Queue()
        try:
            await self._dev_open()
            self._offline, self._state = True, PumpState.OFFLINE
            self._failures = self.offline_after - 1  # one failure at start means offline
            self._quiet = True
            try:
                await self._poll_once(strict=True)  # bad credentials fail the open, loudly
            finally:
                self._quiet = False
        except BaseException:
            self._queue = None
            await self._dev_close()
            raise
        self._poller = asyncio.get_running_loop().create_task(self._poll_loop())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop polling; a delivery still open is stopped (fuel must not flow unsupervised)."""
        if self._queue is None:
            return
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await poller
        if self._open is not None and not self._offline:
            with contextlib.suppress(PumpError):
                await self._dev_stop(True)
                self._latched = True
        await self._dev_close()
        self._queue.put_nowait(_CLOSED)
        self._queue = None
        self._state = PumpState.OFFLINE
        self._offline = True

    # --- polling ------------------------------------------------------------------------------
    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await self._poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a driver bug must not kill the pump's supervision silently
                log.exception("pump %d: poll failed unexpectedly", self._pump_id)

    async def _poll_once(self, strict: bool = False) -> None:
        """One status request and its consequences. A refused status request (an error
        packet, NAK, CAN) counts as a failed poll, unless ``strict`` (at open)."""
        generation = self._generation
        try:
            status = await self._dev_status()
        except PumpRefused as e:
            if strict:
                raise
            self._failures += 1
            if self._failures >= self.offline_after and not self._offline:
                log.warning("pump %d: offline, the device refuses its status request (%s)", self._pump_id, e)
                self._go_offline()
            return
        except (PumpOffline, PumpProtocolError) as e:
            self._failures += 1
            if strict:
                log.warning("pump %d: offline at start (%s)", self._pump_id, e)
            if self._failures >= self.offline_after and not self._offline:
                log.warning("pump %d: offline (%s)", self._pump_id, e)
                self._go_offline()
            return
        if generation != self._generation:
            return  # a command ran meanwhile: this answer may predate it
        self._failures = 0
        if self._offline:
            self._offline = False
            self._emit(PumpBackOnline())
        self._apply(status)

    def _go_offline(self) -> None:
        self._emit(PumpWentOffline())
        old, self._state = self._state, PumpState.OFFLINE
        self._offline = True
        if old is not PumpState.OFFLINE:
            self._emit(StateChanged(old, PumpState.OFFLINE))

    def _apply(self, st: DeviceStatus) -> None:
        """Turn one status answer into events and the new state."""
        if st.nozzle != self._nozzle:
            if self._nozzle is not None:
                self._emit(NozzleHungUp(self._nozzle))
                self._awaiting_hang_up = False
            if st.nozzle is not None:
                self._emit(NozzleLifted(st.nozzle))
            self._nozzle = st.nozzle
        sale = self._open
        if sale is not None and st.finished is not None and st.finished.sale_id == sale.sale_id:
            self._finish(sale, st.finished)
            return
        if sale is not None and st.sale_id == sale.sale_id and st.state is PumpState.DISPENSING:
            if self._state is PumpState.AUTHORIZED or self._state is PumpState.OFFLINE:
                self._set_state(PumpState.SUSPENDED if self._suspended else PumpState.DISPENSING)
            if st.volume_ml > sale.progress_ml:
                sale.progress_ml = st.volume_ml
                self._emit(DeliveryProgress(st.volume_ml, st.amount_kop))
            return
        if sale is not None and st.sale_id == sale.sale_id:
            if self._state is PumpState.OFFLINE:
                self._set_state(PumpState.AUTHORIZED)
            return
        if sale is None and st.finished is not None and self._last is None:
            self._last = self._delivery(st.finished, None)
        if sale is not None and st.sale_id is None and st.finished is None:
            if self._stopping:  # stopped before any flow: the device kept no sale
                self._finish(sale, FinishedSale(sale.sale_id, sale.product, sale.price_kop_per_l, 0, 0))
                return
            if self._state is not PumpState.OFFLINE:
                return  # the device has not caught up with our authorization yet
        self._set_state(self._resting_state())

    def _finish(self, sale: _OpenSale, done: FinishedSale) -> None:
        """The open sale has ended on the device: COMPLETED or STOPPED, then one
        ``DeliveryComplete``; IDLE at once if the nozzle is already down."""
        if self._stopping:
            reason = DeliveryReason.STOPPED
        elif done.volume_ml > sale.preset.limit_ml(sale.price_kop_per_l) - self.volume_resolution_ml:
            reason = DeliveryReason.PRESET_REACHED
        elif self._nozzle is None:
            reason = DeliveryReason.NOZZLE_HUNG_UP
        else:
            reason = DeliveryReason.FAULT
        self._last = self._delivery(done, reason, sale)
        self._open = None
        self._suspended = False
        self._stopping = False
        self._awaiting_hang_up = self._nozzle is not None and done.volume_ml > 0
        if reason is DeliveryReason.STOPPED:
            self._set_state(PumpState.STOPPED)
        else:
            self._set_state(PumpState.COMPLETED)
        self._emit(DeliveryComplete(done.volume_ml, done.amount_kop, reason))
        if self._state is PumpState.COMPLETED and self._nozzle is None:
            self._set_state(PumpState.IDLE)

    def _delivery(self, done: FinishedSale, reason: DeliveryReason | None,
                  sale: _OpenSale | None = None) -> Delivery:
        """A ``Delivery`` from the device's finished sale (preset and reason from this
        process's memory when it authorized the sale, else a volume preset of the
        delivered volume and reason ``preset_reached``/``fault``: see docs/dispensers.md)."""
        preset = sale.preset if sale is not None else self._preset_of(done.sale_id)
        if preset is None:
            preset = Preset.by_volume(max(done.volume_ml, 1))
        if reason is None:
            if self._last is not None and self._last.sale_id == done.sale_id:
                reason = self._last.reason
            else:
                limit = preset.limit_ml(done.price_kop_per_l)
                reason = DeliveryReason.PRESET_REACHED if done.volume_ml >= limit else DeliveryReason.FAULT
        if sale is not None:
            sale_no = sale.sale_no
        else:
            sale_no = self._sale_nos.get(done.sale_id, self._sale_no_of(done.sale_id))
        return Delivery(sale_no, done.product, done.price_kop_per_l, preset, done.volume_ml,
                        done.amount_kop, reason, sale_id=done.sale_id)

    # --- internals ----------------------------------------------------------------------------
    def _resting_state(self) -> PumpState:
        if self._latched:
            return PumpState.STOPPED
        if self._nozzle is not None:
            return PumpState.COMPLETED if self._awaiting_hang_up else PumpState.CALLING
        return PumpState.IDLE

    def _require_open(self) -> asyncio.Queue[object]:
        if self._queue is None:
            raise PumpError(f"pump {self._pump_id} is not open: use 'async with pump:'")
        return self._queue

    def _require_online(self) -> None:
        if self._offline:
            raise PumpOffline(f"pump {self._pump_id} is offline")

    def _emit(self, event: PumpEvent) -> None:
        if self._queue is not None and not self._quiet:
            self._queue.put_nowait(event)

    def _set_state(self, new: PumpState) -> None:
        old, self._state = self._state, new
        if old is not new:
            self._emit(StateChanged(old, new))


async def _drain(queue: asyncio.Queue[object]) -> AsyncIterator[PumpEvent]:
    """Yield the queued events until the close sentinel."""
    while True:
        item = await queue.get()
        if item is _CLOSED:
            queue.put_nowait(_CLOSED)
            return
        yield item  # type: ignore[misc]
