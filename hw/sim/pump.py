"""A simulated fuel dispenser: the ``hw.pump.Pump`` state machine with a metered flow on
asyncio, driven from tests (or a demo console) by nozzle actions, with injectable faults.

Flow is simulated in ticks of ``tick_ms`` simulated milliseconds; each tick sleeps
``tick_ms / 1000 / time_scale`` real seconds. Volumes are computed from the number of ticks,
never from the wall clock, so a delivery's events are the same on a fast or a loaded machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
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
    NozzleTotals,
    Preset,
    Pump,
    PumpBackOnline,
    PumpBusy,
    PumpError,
    PumpEvent,
    PumpOffline,
    PumpState,
    PumpStateError,
    PumpTotals,
    PumpValueError,
    PumpWentOffline,
    StateChanged,
    amount_for_volume,
)

__all__ = ["DEFAULT_FLOW_ML_PER_MIN", "SimulatedPump"]

_FLOWING = (PumpState.DISPENSING, PumpState.SUSPENDED)  # a delivery has started
_SALE_OPEN = (PumpState.AUTHORIZED, *_FLOWING, PumpState.COMPLETED)

DEFAULT_FLOW_ML_PER_MIN = 40_000
"""A car-dispenser nozzle: 40 L/min."""

_CLOSED = object()  # sentinel that ends events()


@dataclass(slots=True)
class _Sale:
    """The open authorization (mutable: the volume grows as fuel flows)."""

    sale_no: int
    product: str
    price_kop_per_l: int
    preset: Preset
    limit_ml: int
    volume_ml: int = 0

    def delivery(self, reason: DeliveryReason) -> Delivery:
        """The totals of this sale ended for ``reason``."""
        return Delivery(
            sale_no=self.sale_no,
            product=self.product,
            price_kop_per_l=self.price_kop_per_l,
            preset=self.preset,
            volume_ml=self.volume_ml,
            amount_kop=amount_for_volume(self.volume_ml, self.price_kop_per_l),
            reason=reason,
        )


class SimulatedPump(Pump):
    """A dispenser in memory: a real flow rate, a time scale, and fault knobs.

    Physical actions (``lift_nozzle``, ``hang_up``) and link actions (``go_offline``,
    ``come_back_online``) are plain methods the test calls. Fault knobs are one-shot and may
    be reassigned between deliveries:

    - ``stop_early_at_ml``: the next delivery that reaches it halts there, reason ``fault``;
    - ``go_offline_at_ml``: the next delivery that reaches it halts there and the pump goes
      OFFLINE until ``come_back_online()``.

    A knob at or above the delivery's preset limit does not fire (the preset wins a tie).
    ``lose_confirms`` (a count, 0 by default): the next that many ``confirm_sale`` calls are
    lost on the line (``PumpOffline``, the sale stays unconfirmed), as when the link drops
    between a sale's end and its confirm.

    Every finished sale stays unconfirmed until ``confirm_sale``; with
    ``hold_until_confirmed=True`` the pump refuses the next authorization until then (as
    АЗТ 2.0 dispensers do), otherwise a new sale supersedes the unconfirmed one. The
    totalizers count every millilitre metered, including ``meter_untracked`` fuel.
    """

    def __init__(
        self,
        pump_id: int,
        *,
        products: Iterable[str] | None = None,
        flow_ml_per_min: int = DEFAULT_FLOW_ML_PER_MIN,
        time_scale: float = 1.0,
        tick_ms: int = 1000,
        stop_early_at_ml: int | None = None,
        go_offline_at_ml: int | None = None,
        hold_until_confirmed: bool = False,
    ) -> None:
        """``products``: the grades this dispenser has nozzles for (``None``: any).
        ``time_scale``: simulated seconds per real second (100 makes a simulated second take
        10 ms). ``tick_ms``: simulated milliseconds between ``DeliveryProgress`` events."""
        _positive("flow_ml_per_min", flow_ml_per_min)
        _positive("tick_ms", tick_ms)
        if isinstance(time_scale, bool) or not isinstance(time_scale, int | float):
            raise PumpValueError(f"time_scale must be a positive number, got {time_scale!r}")
        if time_scale <= 0:
            raise PumpValueError(f"time_scale must be a positive number, got {time_scale!r}")
        if stop_early_at_ml is not None:
            _positive("stop_early_at_ml", stop_early_at_ml)
        if go_offline_at_ml is not None:
            _positive("go_offline_at_ml", go_offline_at_ml)
        self._pump_id = pump_id
        grades = None if products is None else tuple(dict.fromkeys(products))
        self._products = None if grades is None else frozenset(grades)
        self.flow_ml_per_min = flow_ml_per_min
        self.time_scale = time_scale
        self.tick_ms = tick_ms
        self.stop_early_at_ml = stop_early_at_ml
        self.go_offline_at_ml = go_offline_at_ml
        self.hold_until_confirmed = hold_until_confirmed
        self.lose_confirms = 0

        self._state = PumpState.IDLE
        self._nozzle: str | None = None  # the product whose nozzle is up
        self._awaiting_hang_up = False  # a delivery ended with the nozzle still up
        self._stopped = False  # emergency-stop latch, survives an offline episode
        self._offline = False
        self._sale: _Sale | None = None
        self._last: Delivery | None = None
        self._sale_no = 0
        self._unconfirmed: Delivery | None = None
        self._confirmed_id: str | None = None  # the sale confirmed last
        # the totalizers by product, in nozzle order: [volume_ml, amount_kop] of finished sales
        self._totals: dict[str, list[int]] = {p: [0, 0] for p in grades or ()}
        self._pending: list[PumpEvent] = []  # what to report when back online
        self._flow: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[object] | None = None  # set while open

    # --- Pump: read-only ---------------------------------------------------------------
    @property
    def pump_id(self) -> int:
        """The pump's number on the forecourt."""
        return self._pump_id

    @property
    def state(self) -> PumpState:
        """The current state."""
        return self._state

    @property
    def last_delivery(self) -> Delivery | None:
        """The last finished sale's totals; raises ``PumpOffline`` while offline."""
        self._require_open()
        self._require_online()
        return self._last

    # --- Pump: requests ----------------------------------------------------------------
    async def authorize(self, product: str, price_kop_per_l: int, preset: Preset) -> int:
        """Open a sale; flow starts at once if the product's nozzle is already up."""
        self._require_open()
        self._require_online()
        if self._state in _SALE_OPEN:
            raise PumpBusy(
                f"pump {self._pump_id} is {self._state}: a sale is open"
                + (", hang up the nozzle first" if self._state is PumpState.COMPLETED else "")
            )
        if self._state is not PumpState.IDLE and self._state is not PumpState.CALLING:
            raise PumpStateError(f"pump {self._pump_id} cannot authorize while {self._state}")
        self._check_product(product)
        _positive("price_kop_per_l", price_kop_per_l)
        if self.hold_until_confirmed and self._unconfirmed is not None:
            raise PumpBusy(
                f"pump {self._pump_id} holds unconfirmed sale {self._unconfirmed.sale_id}: "
                "confirm it first"
            )
        if not isinstance(preset, Preset):
            raise PumpValueError(f"preset must be a Preset, got {preset!r}")
        limit_ml = preset.limit_ml(price_kop_per_l)
        if limit_ml <= 0:
            raise PumpValueError(
                f"preset {preset.amount_kop} kop buys no fuel at {price_kop_per_l} kop/L"
            )
        self._sale_no += 1
        self._sale = _Sale(self._sale_no, product, price_kop_per_l, preset, limit_ml)
        self._set_state(PumpState.AUTHORIZED)
        if self._nozzle == product:
            self._start_flow()
        return self._sale_no

    async def cancel(self) -> None:
        """Release the authorization; only before fuel has flowed."""
        self._require_open()
        self._require_online()
        if self._state is not PumpState.AUTHORIZED:
            hint = "; use stop() to end a delivery" if self._state is PumpState.DISPENSING else ""
            raise PumpStateError(
                f"pump {self._pump_id} has no authorization to cancel while {self._state}{hint}"
            )
        self._sale = None
        self._set_state(self._resting_state())

    async def stop(self) -> None:
        """Emergency stop: end the delivery (reason ``stopped``) and latch STOPPED."""
        self._require_open()
        self._require_online()
        self._emergency_stop()

    async def reset(self) -> None:
        """Clear the emergency stop latch."""
        self._require_open()
        self._require_online()
        if self._state is not PumpState.STOPPED:
            raise PumpStateError(
                f"pump {self._pump_id} has no emergency stop to reset while {self._state}"
            )
        self._stopped = False
        self._set_state(self._resting_state())

    async def suspend(self) -> None:
        """Pause the delivery: the flow stops, the sale stays open (SUSPENDED)."""
        self._require_open()
        self._require_online()
        if self._state is not PumpState.DISPENSING:
            raise PumpStateError(f"pump {self._pump_id} has no delivery to suspend while {self._state}")
        self._halt_flow()
        self._set_state(PumpState.SUSPENDED)

    async def resume(self) -> None:
        """Let the suspended delivery flow again from where it paused."""
        self._require_open()
        self._require_online()
        if self._state is not PumpState.SUSPENDED:
            raise PumpStateError(f"pump {self._pump_id} has no suspended delivery while {self._state}")
        self._start_flow()

    async def read_totals(self) -> PumpTotals:
        """The totalizers: finished sales, untracked fuel and the open sale's metered part."""
        self._require_open()
        self._require_online()
        totals = {p: list(t) for p, t in self._totals.items()}
        if self._sale is not None and self._sale.volume_ml:
            t = totals.setdefault(self._sale.product, [0, 0])
            t[0] += self._sale.volume_ml
            t[1] += amount_for_volume(self._sale.volume_ml, self._sale.price_kop_per_l)
        return PumpTotals(
            self._pump_id,
            tuple(NozzleTotals(i, p, v, a) for i, (p, (v, a)) in enumerate(totals.items(), 1)),
        )

    async def unconfirmed_sale(self) -> Delivery | None:
        """The finished sale not yet confirmed, or ``None``."""
        self._require_open()
        self._require_online()
        return self._unconfirmed

    async def confirm_sale(self, sale_id: str) -> None:
        """Forget the unconfirmed sale ``sale_id``; confirming the last confirmed one again
        is a no-op."""
        self._require_open()
        self._require_online()
        if not isinstance(sale_id, str):
            raise PumpValueError(f"sale_id must be a str, got {sale_id!r}")
        if self.lose_confirms > 0:
            self.lose_confirms -= 1
            raise PumpOffline(f"pump {self._pump_id}: the confirm of sale {sale_id!r} was lost on the line")
        if self._unconfirmed is not None and self._unconfirmed.sale_id == sale_id:
            self._unconfirmed, self._confirmed_id = None, sale_id
            return
        if sale_id == self._confirmed_id:
            return
        held = "none" if self._unconfirmed is None else repr(self._unconfirmed.sale_id)
        raise PumpValueError(
            f"pump {self._pump_id} holds no unconfirmed sale {sale_id!r} (unconfirmed: {held})"
        )

    def events(self) -> AsyncIterator[PumpEvent]:
        """Events in order until the pump is closed (one consumer). Raises ``PumpError`` at
        once, not on first iteration, if the pump is not open."""
        return _drain(self._require_open())

    async def __aenter__(self) -> Self:
        """Open the pump; a second concurrent open raises ``PumpBusy``."""
        if self._queue is not None:
            raise PumpBusy(f"pump {self._pump_id} is already open")
        self._queue = asyncio.Queue()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the pump. Fuel must not flow unsupervised: an open sale is ended as by an
        emergency stop, and its totals stay readable in ``last_delivery`` after reopening."""
        if self._queue is None:
            return
        if not self._offline and self._sale is not None:
            self._emergency_stop()
        self._halt_flow()
        self._queue.put_nowait(_CLOSED)
        self._queue = None

    # --- simulator controls: the physical world --------------------------------------------
    def lift_nozzle(self, product: str) -> None:
        """The customer lifts the nozzle of ``product``; flow starts if it is authorized."""
        self._check_product(product)
        if self._nozzle is not None:
            raise PumpStateError(
                f"pump {self._pump_id} already has the {self._nozzle!r} nozzle up ({self._state})"
            )
        self._nozzle = product
        if self._offline:
            return  # nobody hears it; the state is worked out when the link returns
        self._emit(NozzleLifted(product))
        if self._state is PumpState.IDLE:
            self._set_state(PumpState.CALLING)
        elif self._state is PumpState.AUTHORIZED:
            assert self._sale is not None
            if self._sale.product == product:
                self._start_flow()
            # a different grade's nozzle: no flow until the customer swaps nozzles

    def hang_up(self) -> None:
        """The customer puts the nozzle back; a delivery in progress ends with its volume."""
        if self._nozzle is None:
            raise PumpStateError(f"pump {self._pump_id} has no nozzle up ({self._state})")
        product, self._nozzle = self._nozzle, None
        self._awaiting_hang_up = False
        if self._offline:
            return
        self._emit(NozzleHungUp(product))
        if self._state in _FLOWING:
            self._end_sale(DeliveryReason.NOZZLE_HUNG_UP)
        elif self._state in (PumpState.CALLING, PumpState.COMPLETED):
            self._set_state(PumpState.IDLE)
        # AUTHORIZED (a wrong grade was up) and STOPPED stay where they are.

    def meter_untracked(self, product: str, volume_ml: int, price_kop_per_l: int) -> None:
        """Fuel flows outside any sale (a dispenser switched to manual mode while the link was
        down): only the totalizers see it, so totals before + delivered != totals after."""
        self._check_product(product)
        _positive("volume_ml", volume_ml)
        _positive("price_kop_per_l", price_kop_per_l)
        t = self._totals.setdefault(product, [0, 0])
        t[0] += volume_ml
        t[1] += amount_for_volume(volume_ml, price_kop_per_l)

    def go_offline(self) -> None:
        """The link to the dispenser drops. A delivery in progress halts where it is (the
        dispenser fails safe) and an authorization is dropped; both are reported when the
        link returns."""
        if self._offline:
            raise PumpStateError(f"pump {self._pump_id} is already {PumpState.OFFLINE}")
        self._halt_flow()
        self._emit(PumpWentOffline())
        old = self._state
        self._offline = True
        self._state = PumpState.OFFLINE
        self._emit(StateChanged(old, PumpState.OFFLINE))
        if self._sale is not None:
            sale, self._sale = self._sale, None
            delivery = self._record(sale, DeliveryReason.FAULT)
            self._awaiting_hang_up = self._nozzle is not None and old in _FLOWING
            self._pending.append(
                DeliveryComplete(delivery.volume_ml, delivery.amount_kop, delivery.reason)
            )

    def come_back_online(self) -> None:
        """The link returns: ``PumpBackOnline``, the state the dispenser is really in, and the
        completion of a sale that ended while offline."""
        if not self._offline:
            raise PumpStateError(f"pump {self._pump_id} is not offline ({self._state})")
        self._offline = False
        self._emit(PumpBackOnline())
        self._set_state(self._resting_state())
        pending, self._pending = self._pending, []
        for event in pending:
            self._emit(event)

    # --- internals -------------------------------------------------------------------------
    def _require_open(self) -> asyncio.Queue[object]:
        if self._queue is None:
            raise PumpError(f"pump {self._pump_id} is not open: use 'async with pump:'")
        return self._queue

    def _require_online(self) -> None:
        if self._offline:
            raise PumpOffline(f"pump {self._pump_id} is offline")

    def _check_product(self, product: str) -> None:
        if not isinstance(product, str) or not product:
            raise PumpValueError(f"product must be a non-empty str, got {product!r}")
        if self._products is not None and product not in self._products:
            raise PumpValueError(
                f"pump {self._pump_id} has no nozzle for {product!r}; "
                f"it has {sorted(self._products)}"
            )

    def _emit(self, event: PumpEvent) -> None:
        if self._queue is not None:
            self._queue.put_nowait(event)

    def _set_state(self, new: PumpState) -> None:
        old, self._state = self._state, new
        if old is not new:
            self._emit(StateChanged(old, new))

    def _resting_state(self) -> PumpState:
        """The state with no sale open, from the nozzle and the latches."""
        if self._stopped:
            return PumpState.STOPPED
        if self._nozzle is not None:
            return PumpState.COMPLETED if self._awaiting_hang_up else PumpState.CALLING
        return PumpState.IDLE

    def _record(self, sale: _Sale, reason: DeliveryReason) -> Delivery:
        """Keep the finished sale: last delivery, unconfirmed sale, totalizers."""
        self._last = self._unconfirmed = sale.delivery(reason)
        t = self._totals.setdefault(sale.product, [0, 0])
        t[0] += self._last.volume_ml
        t[1] += self._last.amount_kop
        return self._last

    def _end_sale(self, reason: DeliveryReason) -> None:
        """Close the open sale: COMPLETED (or STOPPED), then ``DeliveryComplete``; back to
        IDLE at once if the nozzle is already down."""
        self._halt_flow()
        sale, self._sale = self._sale, None
        assert sale is not None
        delivery = self._record(sale, reason)
        flowed = self._state in _FLOWING
        if reason is DeliveryReason.STOPPED:
            self._stopped = True
            self._awaiting_hang_up = self._nozzle is not None and flowed
            self._set_state(PumpState.STOPPED)
        else:
            self._awaiting_hang_up = self._nozzle is not None
            self._set_state(PumpState.COMPLETED)
        self._emit(DeliveryComplete(delivery.volume_ml, delivery.amount_kop, reason))
        if self._state is PumpState.COMPLETED and self._nozzle is None:
            self._set_state(PumpState.IDLE)

    def _emergency_stop(self) -> None:
        if self._sale is not None:
            self._end_sale(DeliveryReason.STOPPED)
        else:
            self._stopped = True
            self._set_state(PumpState.STOPPED)

    def _start_flow(self) -> None:
        self._set_state(PumpState.DISPENSING)
        self._flow = asyncio.get_running_loop().create_task(self._run_flow())

    def _halt_flow(self) -> None:
        task, self._flow = self._flow, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _stop_point(self, sale: _Sale) -> tuple[int, str]:
        """Where this delivery halts and why: the preset limit, or a lower armed fault."""
        point, why = sale.limit_ml, "preset"
        for knob in ("stop_early_at_ml", "go_offline_at_ml"):
            at = getattr(self, knob)
            if at is not None and sale.volume_ml < at < point:
                point, why = at, knob
        return point, why

    @staticmethod
    def _progress(sale: _Sale) -> DeliveryProgress:
        amount_kop = amount_for_volume(sale.volume_ml, sale.price_kop_per_l)
        return DeliveryProgress(sale.volume_ml, amount_kop)

    async def _run_flow(self) -> None:
        """Meter fuel tick by tick until the stop point; runs as a task while DISPENSING."""
        sale = self._sale
        assert sale is not None
        elapsed_ms = 0
        start_ml = sale.volume_ml
        while True:
            await asyncio.sleep(self.tick_ms / 1000 / self.time_scale)
            elapsed_ms += self.tick_ms
            point, why = self._stop_point(sale)
            sale.volume_ml = min(start_ml + self.flow_ml_per_min * elapsed_ms // 60_000, point)
            if sale.volume_ml < point:
                self._emit(self._progress(sale))
                continue
            if why == "go_offline_at_ml":
                self.go_offline_at_ml = None
                self.go_offline()  # the last metered millilitres are never reported
                return
            self._emit(self._progress(sale))
            if why == "stop_early_at_ml":
                self.stop_early_at_ml = None
                self._end_sale(DeliveryReason.FAULT)
            else:
                self._end_sale(DeliveryReason.PRESET_REACHED)
            return


async def _drain(queue: asyncio.Queue[object]) -> AsyncIterator[PumpEvent]:
    """Yield the queued events until the close sentinel."""
    while True:
        item = await queue.get()
        if item is _CLOSED:
            queue.put_nowait(_CLOSED)  # so a second iterator ends too
            return
        yield item  # type: ignore[misc]


def _positive(name: str, value: object) -> None:
    """Raise ``PumpValueError`` unless ``value`` is a positive int."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise PumpValueError(f"{name} must be a positive int, got {value!r}")
