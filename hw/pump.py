"""The fuel dispenser (pump) driver interface: the data types, events and errors the edge
daemon programs against, whatever the dispenser behind it (a real forecourt protocol or
``hw.sim.pump.SimulatedPump``).

Shaped like aiomqtt's client: a ``Pump`` is an async context manager that owns the device,
``Pump.events()`` is an async iterator of what the dispenser reports, and everything that goes
wrong in this layer raises a ``PumpError``. Units are integers with the unit in the name:
volume in millilitres, money in kopecks, prices in kopecks per litre (see docs/pump.md).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Self, TypeAlias

# One rounding rule for the whole product: the pump's totals follow the evaluator's money
# rules, re-exported here for the pump's users.
from authz.money import amount_for_volume, max_volume_for_amount  # noqa: F401
from hw.errors import HwError

__all__ = [
    "Delivery",
    "DeliveryComplete",
    "DeliveryProgress",
    "DeliveryReason",
    "NozzleHungUp",
    "NozzleLifted",
    "NozzleTotals",
    "Preset",
    "Pump",
    "PumpBackOnline",
    "PumpBusy",
    "PumpError",
    "PumpEvent",
    "PumpOffline",
    "PumpProtocolError",
    "PumpRefused",
    "PumpState",
    "PumpStateError",
    "PumpTotals",
    "PumpValueError",
    "PumpWentOffline",
    "StateChanged",
    "amount_for_volume",
    "max_volume_for_amount",
]


# --- errors -------------------------------------------------------------------------------
class PumpError(HwError):
    """Anything that goes wrong in the pump layer; the one type a pump's lane must catch."""


class PumpStateError(PumpError):
    """A request the pump cannot accept in its current state (the message names the state)."""


class PumpBusy(PumpStateError):
    """The pump is taken: another authorization or delivery is open, or the device is
    already owned by another ``async with``."""


class PumpOffline(PumpError):
    """The dispenser does not answer; no request reaches it until it comes back online."""


class PumpProtocolError(PumpError):
    """The device answered something the driver cannot use: garbage, a truncated or
    wrong-checksum frame, a duplicated or out-of-order reply, a field out of range. Nothing
    was changed on the driver's side; the request may be retried."""


class PumpRefused(PumpError):
    """The device understood the request and refused it (a controller's error packet, a
    dispenser's NAK or CAN); ``code`` is the device's own error code or name."""

    def __init__(self, message: str, code: int | str | None = None) -> None:
        super().__init__(message)
        self.code = code


class PumpValueError(PumpError, ValueError):
    """An argument the pump cannot accept: a bad preset, price or product. Also a
    ``ValueError`` so generic validation code treats it as one."""


# --- units ---------------------------------------------------------------------------------
def _check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is a positive ``int`` (not a ``bool``), else raise
    ``PumpValueError`` naming the argument and the value."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise PumpValueError(f"{name} must be an int, got {value!r}")
    if value <= 0:
        raise PumpValueError(f"{name} must be positive, got {value}")
    return value


def _check_non_negative_int(name: str, value: object) -> int:
    """Return ``value`` if it is an ``int`` >= 0 (not a ``bool``), else ``PumpValueError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise PumpValueError(f"{name} must be an int, got {value!r}")
    if value < 0:
        raise PumpValueError(f"{name} must not be negative, got {value}")
    return value


# --- values --------------------------------------------------------------------------------
class PumpState(enum.StrEnum):
    """Where the dispenser is in its sale cycle (the table is in docs/pump.md)."""

    IDLE = "idle"
    """Nozzle hung up, no authorization."""
    CALLING = "calling"
    """A nozzle is up and the pump calls for authorization."""
    NOZZLE_UP = "calling"  # alias: forecourt protocols use both names
    AUTHORIZED = "authorized"
    """Authorized with a preset; flow starts when the authorized product's nozzle is up."""
    DISPENSING = "dispensing"
    """Fuel is flowing."""
    COMPLETED = "completed"
    """The delivery has ended and the nozzle is still up; hang up to return to IDLE."""
    SUSPENDED = "suspended"
    """A delivery paused by ``suspend()``: the sale stays open, no fuel flows until
    ``resume()``."""
    STOPPED = "stopped"
    """Emergency stop latched; only ``reset()`` leaves it."""
    OFFLINE = "offline"
    """The dispenser does not answer."""


class DeliveryReason(enum.StrEnum):
    """Why a delivery ended (a ``StrEnum``: compares equal to its string value)."""

    PRESET_REACHED = "preset_reached"
    NOZZLE_HUNG_UP = "nozzle_hung_up"
    STOPPED = "stopped"
    FAULT = "fault"


@dataclass(frozen=True, slots=True)
class Preset:
    """How much an authorization allows: exactly one of a volume or an amount, positive.

    The evaluator answers "how much" and the pump is preset to it, so every authorization
    carries one. Bad values raise ``PumpValueError`` (a ``ValueError``) at construction.
    """

    volume_ml: int | None = None
    amount_kop: int | None = None

    def __post_init__(self) -> None:
        if (self.volume_ml is None) == (self.amount_kop is None):
            raise PumpValueError(
                "a preset needs exactly one of volume_ml or amount_kop, got "
                f"volume_ml={self.volume_ml!r}, amount_kop={self.amount_kop!r}"
            )
        if self.volume_ml is not None:
            _check_positive_int("preset volume_ml", self.volume_ml)
        else:
            _check_positive_int("preset amount_kop", self.amount_kop)

    @classmethod
    def by_volume(cls, volume_ml: int) -> Preset:
        """A volume preset of ``volume_ml`` millilitres."""
        return cls(volume_ml=volume_ml)

    @classmethod
    def by_amount(cls, amount_kop: int) -> Preset:
        """A money preset of ``amount_kop`` kopecks."""
        return cls(amount_kop=amount_kop)

    def limit_ml(self, price_kop_per_l: int) -> int:
        """The volume at which the delivery must stop at ``price_kop_per_l``: the preset
        volume itself, or the largest volume whose rounded amount fits the preset amount."""
        if self.volume_ml is not None:
            return self.volume_ml
        assert self.amount_kop is not None
        return max_volume_for_amount(self.amount_kop, price_kop_per_l)


@dataclass(frozen=True, slots=True)
class Delivery:
    """The totals of one authorization, as the dispenser keeps them after the sale.

    ``sale_no`` is the number ``Pump.authorize`` returned, so a daemon recovering from a crash
    or an offline episode can tell whether ``Pump.last_delivery`` is the sale it lost track of.
    ``sale_id`` is the device's own name for the sale (a controller's transaction number, a
    dispenser's sale counter), the one ``Pump.confirm_sale`` takes; it defaults to
    ``str(sale_no)``.
    """

    sale_no: int
    product: str
    price_kop_per_l: int
    preset: Preset
    volume_ml: int
    amount_kop: int
    reason: DeliveryReason
    sale_id: str = ""

    def __post_init__(self) -> None:
        if not self.sale_id:
            object.__setattr__(self, "sale_id", str(self.sale_no))


@dataclass(frozen=True, slots=True)
class NozzleTotals:
    """The electronic totalizers of one nozzle: everything it ever delivered. Both only go
    up, so totals read before and after a sale differ by exactly that sale (or show fuel
    that flowed outside the system)."""

    nozzle: int
    product: str
    volume_ml: int
    amount_kop: int

    def __post_init__(self) -> None:
        _check_non_negative_int("nozzle totals volume_ml", self.volume_ml)
        _check_non_negative_int("nozzle totals amount_kop", self.amount_kop)
        _check_positive_int("nozzle number", self.nozzle)


@dataclass(frozen=True, slots=True)
class PumpTotals:
    """The totals of every nozzle of one pump, as ``Pump.read_totals`` read them from the
    device, ordered by nozzle number."""

    pump_id: int
    nozzles: tuple[NozzleTotals, ...]

    def __post_init__(self) -> None:
        numbers = [n.nozzle for n in self.nozzles]
        if numbers != sorted(set(numbers)):
            raise PumpValueError(f"pump totals need distinct nozzles in order, got {numbers}")

    @property
    def volume_ml(self) -> int:
        """All nozzles' volume totals added up."""
        return sum(n.volume_ml for n in self.nozzles)

    @property
    def amount_kop(self) -> int:
        """All nozzles' money totals added up."""
        return sum(n.amount_kop for n in self.nozzles)

    def for_product(self, product: str) -> NozzleTotals:
        """The totals of the nozzle that delivers ``product``; ``PumpValueError`` if none."""
        for n in self.nozzles:
            if n.product == product:
                return n
        raise PumpValueError(f"pump {self.pump_id} has no totals for {product!r}")


# --- events --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class NozzleLifted:
    """A nozzle was taken off its holster; ``product`` is the grade it delivers."""

    product: str


@dataclass(frozen=True, slots=True)
class NozzleHungUp:
    """The nozzle of ``product`` was put back."""

    product: str


@dataclass(frozen=True, slots=True)
class DeliveryProgress:
    """Running totals of the delivery in progress; the volume only goes up."""

    volume_ml: int
    amount_kop: int


@dataclass(frozen=True, slots=True)
class DeliveryComplete:
    """The delivery has ended: the final totals and why. Every authorization not released
    by ``cancel()`` ends with exactly one of these (possibly with zero volume)."""

    volume_ml: int
    amount_kop: int
    reason: DeliveryReason


@dataclass(frozen=True, slots=True)
class PumpWentOffline:
    """The dispenser stopped answering; no further events until ``PumpBackOnline``."""


@dataclass(frozen=True, slots=True)
class PumpBackOnline:
    """The dispenser answers again; read ``Pump.last_delivery`` for what happened meanwhile."""


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The pump moved from ``old`` to ``new`` (one event per transition)."""

    old: PumpState
    new: PumpState


PumpEvent: TypeAlias = (
    NozzleLifted
    | NozzleHungUp
    | DeliveryProgress
    | DeliveryComplete
    | PumpWentOffline
    | PumpBackOnline
    | StateChanged
)


# --- the interface -------------------------------------------------------------------------
class Pump(abc.ABC):
    """One fuel dispenser, owned by the code inside ``async with pump:``.

    Requests (``authorize``, ``cancel``, ``stop``, ``reset``) raise ``PumpOffline`` while the
    dispenser does not answer, ``PumpStateError`` (naming the current state) for a transition
    the state machine forbids, and ``PumpError`` when the pump is not open.
    """

    @property
    @abc.abstractmethod
    def pump_id(self) -> int:
        """The pump's number on the forecourt."""

    @property
    @abc.abstractmethod
    def state(self) -> PumpState:
        """The current state (``OFFLINE`` while the dispenser does not answer)."""

    @property
    @abc.abstractmethod
    def last_delivery(self) -> Delivery | None:
        """The totals of the last finished authorization, kept by the dispenser, or ``None``
        if there was none. Raises ``PumpOffline`` while offline."""

    @abc.abstractmethod
    async def authorize(self, product: str, price_kop_per_l: int, preset: Preset) -> int:
        """Allow one delivery of ``product`` at ``price_kop_per_l``, stopping at ``preset``;
        return the sale number the dispenser will report in ``last_delivery``.

        Allowed in IDLE and CALLING. Raises ``PumpBusy`` if a sale is open, ``PumpValueError``
        for a bad price, product or a preset that buys nothing.
        """

    @abc.abstractmethod
    async def cancel(self) -> None:
        """Release an authorization before any fuel has flowed (AUTHORIZED only)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Emergency stop: end any delivery now (reason ``stopped``) and latch STOPPED.
        Accepted in every online state; idempotent."""

    @abc.abstractmethod
    async def reset(self) -> None:
        """Clear an emergency stop (STOPPED only)."""

    async def emergency_stop(self) -> None:
        """Emergency stop under its own name: the same as ``stop()`` (end any delivery with
        reason ``stopped``, latch STOPPED until ``reset()``). Drivers whose device has both a
        soft stop and an emergency stop send the emergency one here and from ``stop()``."""
        await self.stop()

    @abc.abstractmethod
    async def suspend(self) -> None:
        """Pause the delivery in progress (DISPENSING -> SUSPENDED): the valve closes, the
        sale stays open. Raises ``PumpStateError`` in any other state."""

    @abc.abstractmethod
    async def resume(self) -> None:
        """Let a suspended delivery flow again (SUSPENDED -> DISPENSING, or AUTHORIZED if
        the nozzle went back meanwhile). Raises ``PumpStateError`` outside SUSPENDED."""

    @abc.abstractmethod
    async def read_totals(self) -> PumpTotals:
        """Read the nozzles' electronic totalizers from the device (a request, not a cache).
        Raises ``PumpOffline`` while the device does not answer."""

    @abc.abstractmethod
    async def unconfirmed_sale(self) -> Delivery | None:
        """The finished sale the device still holds unconfirmed, or ``None``.

        Every finished sale (one that ended with ``DeliveryComplete``) stays unconfirmed in
        the device until ``confirm_sale`` names it; the device keeps it across a restart of
        the driver or the daemon, so recovery asks here what the pump last sold. Raises
        ``PumpOffline`` while the device does not answer."""

    @abc.abstractmethod
    async def confirm_sale(self, sale_id: str) -> None:
        """Tell the device the sale ``sale_id`` is recorded (journaled) so it may forget it.

        Confirming the sale that is already confirmed last is a no-op (a retry after a
        crash between confirming and journaling it); any other id raises ``PumpValueError``
        naming the unconfirmed one. Call it only after the sale is journaled."""

    @abc.abstractmethod
    def events(self) -> AsyncIterator[PumpEvent]:
        """The events the dispenser reports, in order; ends when the pump is closed.
        Meant for one consumer (the pump's lane)."""

    @abc.abstractmethod
    async def __aenter__(self) -> Self:
        """Take ownership of the device; raises ``PumpBusy`` if it is already owned."""

    @abc.abstractmethod
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Release the device and end the ``events()`` iterator."""
