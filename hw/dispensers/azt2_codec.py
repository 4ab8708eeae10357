"""АЗТ 2.0 ("protocol 2.0" of Топаз and Нара dispensers) framing and messages, without I/O.

A frame on the RS-485 line (7 data bits, even parity, 2 stop bits on real hardware) is::

    DEL  START  [ADDR ~ADDR]  B1 ~B1  B2 ~B2 ...  ETX  ETX  CRC

``~B`` is ``B ^ 0x7F`` (every byte followed by its complement), ``CRC`` is the XOR of the
address and data bytes and one ETX, with bit 6 set. Requests carry an address (the
dispenser's channel), answers do not. Short answers are ``DEL ACK`` (done), ``DEL NAK``
(unknown or malformed command) and ``DEL CAN`` (cannot do it in the current state).

``FrameDecoder`` is a byte-at-a-time state machine: ``feed(bytes)`` returns what the bytes
completed (``Frame``, ``Short`` or ``FrameError``) and never raises; it resynchronizes on
the next DEL after an error. Message helpers parse answers into integers and raise
``PumpProtocolError`` for anything malformed. Sources and what is unverified:
docs/dispensers.md.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hw.pump import PumpProtocolError

__all__ = [
    "ACK", "CAN", "DEL", "ETX", "NAK", "STX",
    "Cmd", "Frame", "FrameDecoder", "FrameError", "Short",
    "address_bytes", "checksum", "digits", "encode_reply", "encode_request", "encode_short",
    "parse_digits", "parse_status", "split_halves",
]

DEL, STX, ETX, ACK, NAK, CAN = 0x7F, 0x02, 0x03, 0x06, 0x15, 0x18
MAX_DATA = 255
DATA_MIN, DATA_MAX = 0x20, 0x5E  # data bytes; their complements are 0x21..0x5F
MAX_CHANNEL = 225


class Cmd(enum.IntEnum):
    """The command codes this driver uses (the first data byte of a request)."""

    STATUS = 0x31  # '1' -> state digit [+ reason digit]
    AUTHORIZE = 0x32  # '2' -> ACK; state 2
    RESET = 0x33  # '3' stop / cancel -> ACK; state 4 (after flow) or 0/1
    CURRENT_VOLUME = 0x34  # '4' -> 6 digits, centilitres
    SALE_DATA = 0x35  # '5' -> volume 5 digits (cl), amount 7 (kop), price 4 (kop/L)
    TOTALS = 0x36  # '6' -> volume and amount totals, equal halves (cl, kop)
    CONFIRM = 0x38  # '8' sale recorded -> ACK; state 0/1
    VERSION = 0x50  # 'P'
    SET_PRICE = 0x51  # 'Q' + 4 digits kop/L
    SET_MONEY_DOSE = 0x53  # 'S' + 6 digits kop
    SET_VOLUME_DOSE = 0x54  # 'T' + 5 digits cl + '0' (not a full tank)


@dataclass(frozen=True, slots=True)
class Frame:
    """A complete, checked frame: ``channel`` (requests only) and its data bytes."""

    data: bytes
    channel: int | None = None


@dataclass(frozen=True, slots=True)
class Short:
    """A short answer: ACK, NAK or CAN."""

    code: int


@dataclass(frozen=True, slots=True)
class FrameError:
    """Bytes that did not make a frame, and why (the decoder has resynchronized)."""

    reason: str


def address_bytes(channel: int) -> tuple[int, int]:
    """The start byte and the address byte for ``channel`` 1..225: channels 1..15 use STX
    and addresses 0x21..0x2F; each further group of 15 uses the start bytes 0x07..0x14."""
    if isinstance(channel, bool) or not isinstance(channel, int) or not 1 <= channel <= MAX_CHANNEL:
        raise ValueError(f"channel must be 1..{MAX_CHANNEL}, got {channel!r}")
    group, index = divmod(channel - 1, 15)
    return (STX if group == 0 else 0x06 + group), 0x21 + index


def _channel_of(start: int, address: int) -> int | None:
    group = 0 if start == STX else start - 0x06
    if not 0 <= group <= 14 or not 0x21 <= address <= 0x2F:
        return None
    return group * 15 + (address - 0x21) + 1


def checksum(payload: bytes) -> int:
    """XOR of the payload and one ETX, with bit 6 set."""
    x = 0
    for b in payload:
        x ^= b
    return (x ^ ETX) | 0x40


def _body(payload: bytes) -> bytearray:
    out = bytearray()
    for b in payload:
        if not DATA_MIN <= b <= DATA_MAX:
            raise ValueError(f"byte 0x{b:02X} cannot be sent as data")
        out += bytes((b, b ^ 0x7F))
    return out


def encode_request(channel: int, command: int, args: bytes = b"") -> bytes:
    """A request frame for ``channel``."""
    start, address = address_bytes(channel)
    payload = bytes((address, command)) + args
    if len(payload) > MAX_DATA:
        raise ValueError("request too long")
    return bytes((DEL, start)) + _body(payload) + bytes((ETX, ETX, checksum(payload)))


def encode_reply(data: bytes) -> bytes:
    """A data answer frame (the dispenser's side)."""
    if not data or len(data) > MAX_DATA:
        raise ValueError("an answer carries 1..255 data bytes")
    return bytes((DEL, STX)) + _body(data) + bytes((ETX, ETX, checksum(data)))


def encode_short(code: int) -> bytes:
    """``DEL ACK``, ``DEL NAK`` or ``DEL CAN``."""
    if code not in (ACK, NAK, CAN):
        raise ValueError(f"not a short answer: 0x{code:02X}")
    return bytes((DEL, code))


class _S(enum.Enum):
    IDLE = 0  # waiting for DEL
    START = 1  # after DEL
    DATA = 2  # a data byte or ETX
    COMPLEMENT = 3  # the complement of the last data byte
    ETX2 = 4
    CRC = 5


class FrameDecoder:
    """Bytes in, frames out (see the module docstring). ``requests=True`` decodes the
    dispenser's side (frames carry an address), else the driver's side."""

    def __init__(self, *, requests: bool = False) -> None:
        """``requests``: decode request frames (with an address) instead of answers."""
        self.requests = requests
        self._reset()

    def _reset(self) -> None:
        self._state = _S.IDLE
        self._start = STX
        self._data = bytearray()
        self._value = 0

    def _fail(self, reason: str) -> FrameError:
        self._reset()
        return FrameError(reason)

    def feed(self, chunk: bytes) -> list[Frame | Short | FrameError]:
        """Consume ``chunk``; return the frames, short answers and errors it completed."""
        out: list[Frame | Short | FrameError] = []
        for b in chunk:
            item = self._byte(b)
            if item is not None:
                out.append(item)
        return out

    def _byte(self, b: int) -> Frame | Short | FrameError | None:
        s = self._state
        if s is _S.IDLE:
            if b == DEL:
                self._state = _S.START
                return None
            return FrameError(f"noise byte 0x{b:02X} outside a frame")
        if s is _S.START:
            if b in (ACK, NAK, CAN) and not self.requests:
                self._reset()
                return Short(b)
            if b == STX or (self.requests and 0x07 <= b <= 0x14):
                self._start, self._data, self._state = b, bytearray(), _S.DATA
                return None
            if b == DEL:
                return None
            return self._fail(f"byte 0x{b:02X} after DEL is not a frame start")
        if s is _S.DATA:
            if b == ETX:
                if not self._data:
                    return self._fail("empty frame")
                self._state = _S.ETX2
                return None
            if DATA_MIN <= b <= DATA_MAX:
                self._value, self._state = b, _S.COMPLEMENT
                return None
            if b == DEL:
                self._reset()
                self._state = _S.START
                return FrameError("frame cut short by a new DEL")
            return self._fail(f"byte 0x{b:02X} is not data")
        if s is _S.COMPLEMENT:
            if b != self._value ^ 0x7F:
                if b == DEL:
                    self._reset()
                    self._state = _S.START
                    return FrameError("frame cut short by a new DEL")
                return self._fail(f"byte 0x{self._value:02X} followed by 0x{b:02X}, not its complement")
            self._data.append(self._value)
            if len(self._data) > MAX_DATA:
                return self._fail("frame too long")
            self._state = _S.DATA
            return None
        if s is _S.ETX2:
            if b != ETX:
                return self._fail(f"byte 0x{b:02X} where the second ETX belongs")
            self._state = _S.CRC
            return None
        # _S.CRC
        data, start = bytes(self._data), self._start
        self._reset()
        if b != checksum(data):
            return FrameError(f"checksum 0x{b:02X}, expected 0x{checksum(data):02X}")
        if not self.requests:
            return Frame(data)
        channel = _channel_of(start, data[0])
        if channel is None or len(data) < 2:
            return FrameError("request without a valid address and command")
        return Frame(data[1:], channel)


# --- messages --------------------------------------------------------------------------------
def digits(value: int, width: int) -> bytes:
    """``value`` as ``width`` ASCII digits; ``ValueError`` if it does not fit."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value >= 10**width:
        raise ValueError(f"{value!r} does not fit {width} digits")
    return b"%0*d" % (width, value)


def parse_digits(data: bytes, what: str) -> int:
    """ASCII digits to an int; ``PumpProtocolError`` if ``data`` is empty or not digits."""
    if not data or not data.isdigit() or len(data) > 18:
        raise PumpProtocolError(f"{what}: {data!r} is not a number")
    return int(data)


def split_halves(data: bytes, what: str) -> tuple[int, int]:
    """Two equal-width numbers side by side (the totals answer)."""
    if len(data) % 2 or not data:
        raise PumpProtocolError(f"{what}: {len(data)} digits do not split in two")
    half = len(data) // 2
    return parse_digits(data[:half], what), parse_digits(data[half:], what)


def parse_status(data: bytes) -> tuple[int, int]:
    """The status answer: the state digit and the reason digit (0 if absent)."""
    if not 1 <= len(data) <= 3 or not data.isdigit():
        raise PumpProtocolError(f"status answer {data!r} is not 1-3 digits")
    state = data[0] - 0x30
    if state not in (0, 1, 2, 3, 4, 8):
        raise PumpProtocolError(f"status answer names unknown state {state}")
    reason = data[1] - 0x30 if len(data) > 1 else 0
    return state, reason
