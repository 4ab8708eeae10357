"""ISO 7816-4 command and response APDUs (short form only), status words, a strict parser.

The fuel-card application (``docs/card-application.md``) uses short APDUs only: at most 255
bytes of command data and 256 bytes of response data. :func:`parse_response` is the one
place raw bytes from a card become a :class:`Response`; anything that is not a well-formed
R-APDU raises :class:`hw.errors.CardResponseError` and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from hw.errors import CardResponseError

__all__ = ["Command", "Response", "SW", "parse_response", "parse_command", "ApduFormatError",
           "MAX_DATA", "MAX_RESPONSE_DATA"]

#: Largest command data field of a short APDU (Lc is one byte).
MAX_DATA = 255
#: Largest response data field of a short APDU (Le = 00 means 256).
MAX_RESPONSE_DATA = 256


class SW(IntEnum):
    """The status words the fuel-card application answers with (ISO 7816-4, section 5.6)."""

    OK = 0x9000
    WRONG_PIN_BASE = 0x63C0  #: 63Cx: verification failed, x tries left
    MEMORY_FAILURE = 0x6581
    WRONG_LENGTH = 0x6700
    SECURITY_STATUS = 0x6982  #: PIN not verified
    PIN_BLOCKED = 0x6983  #: authentication method blocked
    CONDITIONS = 0x6985  #: conditions of use not satisfied: stale transaction counter
    NOT_ALLOWED = 0x6986  #: command not allowed: no application selected, no open reservation
    BAD_MAC = 0x6988  #: incorrect secure messaging data object: the MAC did not verify
    WRONG_DATA = 0x6A80
    FILE_NOT_FOUND = 0x6A82  #: unknown AID or SFI
    RECORD_NOT_FOUND = 0x6A83
    WRONG_P1P2 = 0x6A86
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00


class ApduFormatError(ValueError):
    """A command APDU is malformed (raised by :func:`parse_command` and :class:`Command`)."""


def _byte(name: str, value: int) -> int:
    if not isinstance(value, int) or not 0 <= value <= 0xFF:
        raise ApduFormatError(f"{name} must be a byte, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Command:
    """A short command APDU: ``CLA INS P1 P2 [Lc data] [Le]``.

    ``le`` is the number of response data bytes expected, 1..256 (256 is encoded ``00``),
    or None when the command expects no data back (ISO case 1 or 3).
    """

    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None

    def __post_init__(self) -> None:
        for name in ("cla", "ins", "p1", "p2"):
            _byte(name, getattr(self, name))
        if not isinstance(self.data, (bytes, bytearray)):
            raise ApduFormatError(f"data must be bytes, got {type(self.data).__name__}")
        if len(self.data) > MAX_DATA:
            raise ApduFormatError(f"data of {len(self.data)} bytes does not fit a short APDU")
        if self.le is not None and not 1 <= self.le <= MAX_RESPONSE_DATA:
            raise ApduFormatError(f"le must be 1..256 or None, got {self.le!r}")

    def to_bytes(self) -> bytes:
        """The APDU as sent to the card."""
        out = bytearray((self.cla, self.ins, self.p1, self.p2))
        if self.data:
            out.append(len(self.data))
            out += self.data
        if self.le is not None:
            out.append(self.le & 0xFF)
        return bytes(out)

    def __repr__(self) -> str:  # data may be a PIN block: never show it
        return (f"Command(cla={self.cla:02X}, ins={self.ins:02X}, p1={self.p1:02X}, "
                f"p2={self.p2:02X}, lc={len(self.data)}, le={self.le})")


def parse_command(raw: bytes) -> Command:
    """Parse a short command APDU (ISO 7816-3 cases 1 to 4); raise ApduFormatError."""
    raw = bytes(raw)
    n = len(raw)
    if n < 4:
        raise ApduFormatError(f"command of {n} bytes is shorter than a header")
    cla, ins, p1, p2 = raw[:4]
    if n == 4:
        return Command(cla, ins, p1, p2)
    if n == 5:
        return Command(cla, ins, p1, p2, b"", raw[4] or 256)
    lc = raw[4]
    if lc == 0:
        raise ApduFormatError("extended APDUs are not supported")
    if n == 5 + lc:
        return Command(cla, ins, p1, p2, raw[5:])
    if n == 6 + lc:
        return Command(cla, ins, p1, p2, raw[5:5 + lc], raw[-1] or 256)
    raise ApduFormatError(f"Lc={lc} does not match a command of {n} bytes")


@dataclass(frozen=True, slots=True)
class Response:
    """A response APDU: data and the status word."""

    data: bytes
    sw: int

    @property
    def ok(self) -> bool:
        """True for 9000."""
        return self.sw == SW.OK

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    def to_bytes(self) -> bytes:
        """The R-APDU as the card sends it."""
        return bytes(self.data) + self.sw.to_bytes(2, "big")

    def __repr__(self) -> str:
        return f"Response(len={len(self.data)}, sw={self.sw:04X})"


def _valid_sw1(sw1: int) -> bool:
    # ISO 7816-4 5.6: SW1 is 61..6F (processing warnings and errors, 60 is reserved
    # for the procedure byte) or 90..9F (normal processing); anything else is garbage.
    return 0x61 <= sw1 <= 0x6F or 0x90 <= sw1 <= 0x9F


def parse_response(raw: bytes | bytearray | Iterable[int],
                   max_data: int = MAX_RESPONSE_DATA) -> Response:
    """Parse raw bytes from a card into a :class:`Response`.

    Raises :class:`hw.errors.CardResponseError` (and nothing else) when ``raw`` is not a
    sequence of bytes, is shorter than a status word, carries more than ``max_data`` bytes
    of data, or ends in a status word ISO 7816-4 does not define.
    """
    try:
        buf = bytes(raw)
    except (TypeError, ValueError) as exc:
        raise CardResponseError(f"response is not a byte string: {exc}") from None
    if len(buf) < 2:
        raise CardResponseError(f"response of {len(buf)} bytes is shorter than a status word")
    if len(buf) - 2 > max_data:
        raise CardResponseError(f"response carries {len(buf) - 2} data bytes, at most {max_data}")
    sw1, sw2 = buf[-2], buf[-1]
    if not _valid_sw1(sw1):
        raise CardResponseError(f"response ends in an undefined status word {sw1:02X}{sw2:02X}")
    return Response(buf[:-2], (sw1 << 8) | sw2)
