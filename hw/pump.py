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
    "Preset",
    "Pump",
    "PumpBackOnline",
    "PumpBusy",
    "PumpError",
    "PumpEvent",
    "PumpOffline",
    "PumpState",
    "PumpStateError",
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
    """

    sale_no: int
    product: str
    price_kop_per_l: int
    preset: Preset
    volume_ml: int
    amount_kop: int
    reason: DeliveryReason


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
