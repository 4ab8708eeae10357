"""АЗТ 2.0 dispensers (Топаз, Нара) on an RS-485 line: ``Azt2Bus`` owns the serial port
(pyserial) and runs one exchange at a time; ``Azt2Pump`` drives the channels of one pump.

An exchange writes a request frame and reads until an answer (a data frame, ACK, NAK or
CAN) or a timeout: ``answer_timeout_s`` for the first byte, ``byte_timeout_s`` between
bytes. A garbled or missing answer is retried (``retries`` attempts in all); NAK and CAN
are not (the dispenser understood and refused). Out of attempts: ``PumpOffline`` if
nothing came back, ``PumpProtocolError`` if only garbage did.

In АЗТ 2.0 one channel is one hose (one product), so a pump with several grades has one
channel per nozzle. The framing is ``hw.dispensers.azt2_codec``; docs/dispensers.md says
which source each command follows and what is unverified.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Self, TypeVar

import serial

from authz.money import amount_for_volume
from hw.dispensers.azt2_codec import (
    ACK,
    NAK,
    Cmd,
    Frame,
    FrameDecoder,
    FrameError,
    Short,
    digits,
    encode_request,
    parse_digits,
    parse_status,
    split_halves,
)
from hw.dispensers.polled import (
    DeviceStatus,
    FinishedSale,
    PolledPump,
    check_nozzle_map,
)
from hw.pump import (
    NozzleTotals,
    Preset,
    PumpError,
    PumpOffline,
    PumpProtocolError,
    PumpRefused,
    PumpState,
    PumpTotals,
    PumpValueError,
)

__all__ = ["Azt2Bus", "Azt2Pump"]

log = logging.getLogger(__name__)

CL = 10  # the dispenser meters in centilitres: 10 ml
T = TypeVar("T")
_FORMATS = {
    "7E2": (serial.SEVENBITS, serial.PARITY_EVEN, serial.STOPBITS_TWO),
    "8N1": (serial.EIGHTBITS, serial.PARITY_NONE, serial.STOPBITS_ONE),
}


class Azt2Bus:
    """One RS-485 line (a serial port) shared by the ``Azt2Pump`` objects on it.

    ``async with`` opens the port (7E2 at ``baudrate`` on a real line). ``exchange`` is serialized:
    the line carries one request at a time.
    """

    def __init__(self, port: str, *, baudrate: int = 4800, line_format: str = "7E2",
                 answer_timeout_s: float = 0.4, byte_timeout_s: float = 0.05, retries: int = 3) -> None:
        """``line_format``: ``"7E2"`` (the dispensers' format) or ``"8N1"`` (a pty, which
        cannot carry 7E2: Linux forces CS8 and refuses to re-set parity). Timeouts and
        retries as in the module docstring (defaults: an open Топаз driver's)."""
        if line_format not in _FORMATS:
            raise PumpValueError(f"line_format must be one of {sorted(_FORMATS)}, got {line_format!r}")
        if not isinstance(port, str) or not port:
            raise PumpValueError(f"serial port must be a path, got {port!r}")
        if baudrate not in (1200, 2400, 4800, 9600, 19200):
            raise PumpValueError(f"baudrate must be one of 1200..19200, got {baudrate!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or not 1 <= retries <= 10:
            raise PumpValueError(f"retries must be 1..10, got {retries!r}")
        self.port, self.baudrate, self.line_format = port, baudrate, line_format
        self.answer_timeout_s, self.byte_timeout_s, self.retries = answer_timeout_s, byte_timeout_s, retries
        self._serial: serial.Serial | None = None
        self._users = 0
        self._lock = asyncio.Lock()
        self._io = threading.Lock()
        self.exchanges = 0
        self.retried = 0

    async def __aenter__(self) -> Self:
        """Open the port (shared: the last user to leave closes it)."""
        if self._serial is None:
            try:
                bytesize, parity, stopbits = _FORMATS[self.line_format]
                self._serial = serial.Serial(
                    self.port, baudrate=self.baudrate, bytesize=bytesize, parity=parity,
                    stopbits=stopbits, timeout=0, exclusive=True)
            except (serial.SerialException, OSError) as e:
                raise PumpOffline(f"cannot open the RS-485 port {self.port}: {e}") from None
        self._users += 1
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close the port when its last user leaves."""
        self._users -= 1
        if self._users <= 0 and self._serial is not None:
            port, self._serial = self._serial, None
            self._users = 0
            async with self._lock:
                port.close()

    async def exchange(self, channel: int, command: int, args: bytes = b"") -> bytes:
        """One request to ``channel``; the answer's data (``b""`` for ACK). Raises
        ``PumpRefused`` for NAK/CAN, ``PumpOffline`` or ``PumpProtocolError`` when out of
        attempts (see the module docstring)."""
        return await self.ask(channel, command, _as_is, args)

    async def ask(self, channel: int, command: int, parse: Callable[[bytes], T], args: bytes = b"") -> T:
        """As ``exchange``, returning what ``parse`` makes of the answer. An answer
        ``parse`` refuses (``PumpProtocolError``: a stale or out-of-order answer meant for
        another command) is retried like a garbled one."""
        frame = encode_request(channel, command, args)
        async with self._lock:
            if self._serial is None:
                raise PumpError("the RS-485 bus is not open: use 'async with bus:'")
            errors: list[str] = []
            for attempt in range(self.retries):
                if attempt:
                    self.retried += 1
                self.exchanges += 1
                answer = await asyncio.to_thread(self._transact, self._serial, frame)
                if isinstance(answer, Short):
                    if answer.code == ACK:
                        return parse(b"")
                    name = "NAK" if answer.code == NAK else "CAN"
                    why = "does not know the command" if answer.code == NAK else "cannot do it now"
                    raise PumpRefused(f"channel {channel}: the dispenser answered {name} to "
                                      f"command 0x{command:02X} ({why})", name)
                if isinstance(answer, Frame):
                    try:
                        return parse(answer.data)
                    except PumpProtocolError as e:
                        errors.append(str(e))
                        continue
                errors.append(answer)
            if all(e == "no answer" for e in errors):
                raise PumpOffline(f"channel {channel}: the dispenser does not answer")
            raise PumpProtocolError(f"channel {channel}: no usable answer to 0x{command:02X} "
                                    f"after {self.retries} attempts ({'; '.join(errors)[:200]})")

    def _transact(self, port: serial.Serial, frame: bytes) -> Frame | Short | str:
        """Write ``frame`` and read one answer (runs in a worker thread)."""
        with self._io:
            try:
                port.reset_input_buffer()  # stale bytes belong to an earlier exchange
                port.write(frame)
                port.flush()
                decoder = FrameDecoder()
                deadline = time.monotonic() + self.answer_timeout_s
                seen = False
                first_error = ""
                while True:
                    chunk = port.read(64)
                    if chunk:
                        seen = True
                        deadline = time.monotonic() + self.byte_timeout_s
                        for item in decoder.feed(chunk):
                            if isinstance(item, FrameError):
                                first_error = first_error or item.reason
                            else:
                                return item
                    elif time.monotonic() >= deadline:
                        return first_error or ("answer cut short" if seen else "no answer")
                    else:
                        time.sleep(0.001)
            except (serial.SerialException, OSError) as e:
                return f"serial error: {e}"


@dataclass(frozen=True, slots=True)
class _Channel:
    channel: int
    product: str


class Azt2Pump(PolledPump):
    """One pump whose hoses are АЗТ 2.0 channels on ``bus``: ``nozzles`` maps each
    channel number to the product its hose delivers."""

    volume_resolution_ml = CL

    def __init__(self, bus: Azt2Bus, pump_id: int, nozzles: Mapping[int, str], *,
                 poll_interval_s: float = 0.2, offline_after: int = 2) -> None:
        """See the class docstring."""
        super().__init__(pump_id, poll_interval_s=poll_interval_s, offline_after=offline_after)
        check_nozzle_map(pump_id, nozzles, device="an АЗТ 2.0 pump", word="channel", plural="channels", top=225)
        self.bus = bus
        self.channels = [_Channel(ch, p) for ch, p in sorted(nozzles.items())]
        self._by_product = {c.product: c for c in self.channels}
        self._active: _Channel | None = None  # the channel of the open sale
        self._held: dict[int, str] = {}  # channel -> id of the sale it holds unconfirmed

    async def _dev_open(self) -> None:
        await self.bus.__aenter__()

    async def _dev_close(self) -> None:
        await self.bus.__aexit__(None, None, None)

    async def _status_of(self, ch: _Channel) -> tuple[int, int]:
        return await self.bus.ask(ch.channel, Cmd.STATUS, parse_status)

    async def _totals_of(self, ch: _Channel) -> tuple[int, int]:
        what = f"channel {ch.channel} totals"
        cl, kop = await self.bus.ask(ch.channel, Cmd.TOTALS, lambda d: _totals(d, what))
        return cl * CL, kop

    async def _finished_of(self, ch: _Channel, reason: int) -> FinishedSale:
        what = f"channel {ch.channel} sale data"
        volume_cl, amount, price = await self.bus.ask(ch.channel, Cmd.SALE_DATA, lambda d: _sale_data(d, what))
        volume_ml = volume_cl * CL
        if ch.channel in self._held:
            sale_id = self._held[ch.channel]
        elif self._open is not None and self._active is ch:
            sale_id = self._held[ch.channel] = self._open.sale_id
        else:
            total_ml, _ = await self._totals_of(ch)
            if total_ml < volume_ml:
                raise PumpProtocolError(f"channel {ch.channel}: totals {total_ml} ml below the sale's {volume_ml} ml")
            sale_id = f"{ch.channel}-{(total_ml - volume_ml) // CL}"
        return FinishedSale(sale_id, ch.product, price, volume_ml, amount)

    async def _dev_status(self) -> DeviceStatus:
        nozzle: str | None = None
        finished: FinishedSale | None = None
        active: DeviceStatus | None = None
        for ch in self.channels:
            state, reason = await self._status_of(ch)
            if state == 1 or state == 3:
                nozzle = ch.product
            if state != 4:
                self._held.pop(ch.channel, None)
            if state == 4:
                finished = await self._finished_of(ch, reason)
            elif self._open is not None and self._active is ch:
                sale_id = self._open.sale_id
                if state == 2:
                    active = DeviceStatus(PumpState.AUTHORIZED, sale_id=sale_id)
                elif state == 3:
                    cl = await self.bus.ask(ch.channel, Cmd.CURRENT_VOLUME, functools.partial(
                        _volume, what=f"channel {ch.channel} current volume"))
                    ml = cl * CL
                    active = DeviceStatus(PumpState.DISPENSING, sale_id=sale_id, volume_ml=ml,
                                          amount_kop=amount_for_volume(ml, self._open.price_kop_per_l))
        if active is not None:
            return DeviceStatus(active.state, nozzle, active.sale_id, active.volume_ml,
                                active.amount_kop, finished)
        return DeviceStatus(PumpState.CALLING if nozzle else PumpState.IDLE, nozzle, finished=finished)

    async def _dev_authorize(self, product: str, price_kop_per_l: int, preset: Preset) -> str:
        ch = self._by_product.get(product)
        if ch is None:
            raise PumpValueError(f"pump {self._pump_id} has no channel for {product!r}; it has {sorted(self._by_product)}")
        for other in self.channels:
            state, _ = await self._status_of(other)
            if state == 4:
                raise PumpRefused(f"pump {self._pump_id}: channel {other.channel} holds an unconfirmed "
                                  "sale: confirm it first", "CAN")
        try:
            price = digits(price_kop_per_l, 4)
            if preset.volume_ml is not None:
                cl = preset.volume_ml // CL
                if cl == 0:
                    raise PumpValueError(f"preset {preset.volume_ml} ml is below the dispenser's 10 ml step")
                dose = (Cmd.SET_VOLUME_DOSE, digits(cl, 5) + b"0")
            else:
                assert preset.amount_kop is not None
                dose = (Cmd.SET_MONEY_DOSE, digits(preset.amount_kop, 6))
        except ValueError as e:
            raise PumpValueError(f"pump {self._pump_id}: {e} (the dispenser's field width)") from None
        total_ml, _ = await self._totals_of(ch)
        await self.bus.exchange(ch.channel, Cmd.SET_PRICE, price)
        await self.bus.exchange(ch.channel, *dose)
        await self.bus.exchange(ch.channel, Cmd.AUTHORIZE)
        self._active = ch
        return f"{ch.channel}-{total_ml // CL}"

    async def _dev_cancel(self, sale_id: str) -> None:
        if self._active is not None:
            await self.bus.exchange(self._active.channel, Cmd.RESET)

    async def _dev_stop(self, emergency: bool) -> None:
        # АЗТ 2.0 has one stop (reset); an emergency stop sends it to every channel
        targets = self.channels if emergency or self._active is None else [self._active]
        for ch in targets:
            state, _ = await self._status_of(ch)
            if state in (2, 3, 8):
                await self.bus.exchange(ch.channel, Cmd.RESET)

    async def _dev_suspend(self) -> None:
        raise PumpRefused(f"pump {self._pump_id}: АЗТ 2.0 has no command to suspend a delivery", "unsupported")

    async def _dev_resume(self) -> None:
        raise PumpRefused(f"pump {self._pump_id}: АЗТ 2.0 has no command to resume a delivery", "unsupported")

    async def _dev_totals(self) -> PumpTotals:
        out = []
        for i, ch in enumerate(self.channels, 1):
            ml, kop = await self._totals_of(ch)
            out.append(NozzleTotals(i, ch.product, ml, kop))
        return PumpTotals(self._pump_id, tuple(out))

    async def _dev_confirm(self, sale_id: str) -> bool:
        for ch in self.channels:
            state, reason = await self._status_of(ch)
            if state == 4 and (await self._finished_of(ch, reason)).sale_id == sale_id:
                await self.bus.exchange(ch.channel, Cmd.CONFIRM)
                self._held.pop(ch.channel, None)
                if self._active is ch and self._open is None:
                    self._active = None
                return True
        return False


def _totals(data: bytes, what: str) -> tuple[int, int]:
    """The totals answer: volume (cl) and amount (kop), at least 6 digits each."""
    if len(data) < 12:
        raise PumpProtocolError(f"{what}: {len(data)} digits, expected two numbers of 6 or more")
    return split_halves(data, what)


def _sale_data(data: bytes, what: str) -> tuple[int, int, int]:
    """The sale data answer: volume 5 digits (cl), amount 7 (kop), price 4 (kop/L)."""
    if len(data) != 16:
        raise PumpProtocolError(f"{what}: {len(data)} digits, expected 16")
    return parse_digits(data[:5], what), parse_digits(data[5:12], what), parse_digits(data[12:], what)


def _volume(data: bytes, what: str) -> int:
    """The current volume answer: 6 digits (cl)."""
    if len(data) != 6:
        raise PumpProtocolError(f"{what}: {len(data)} digits, expected 6")
    return parse_digits(data, what)


def _as_is(data: bytes) -> bytes:
    return data
