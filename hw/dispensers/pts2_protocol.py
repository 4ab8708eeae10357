"""jsonPTS, the HTTP protocol of Technotrade PTS-2 forecourt controllers, without I/O.

A request is one ``POST /jsonPTS`` whose body is an envelope
``{"Protocol": "jsonPTS", "Packets": [{"Id": 1, "Type": "PumpGetStatus", "Data": {...}}]}``;
the answer is an envelope of the same shape with one packet per request packet, matched by
``Id``. An error packet carries ``"Error": true`` with a ``"Code"`` and a ``"Message"``.

Numbers on the wire are decimals in the controller's units (litres, money units); here they
are parsed as ``Decimal`` (never float) and converted exactly to millilitres and kopecks.
Anything the driver cannot use raises ``PumpProtocolError``; an error packet is a
``Reply`` with ``error`` set (the driver raises ``PumpRefused`` for it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from hw.pump import PumpProtocolError

__all__ = [
    "MAX_BODY_BYTES",
    "Packet",
    "Reply",
    "decode_request",
    "decode_response",
    "dumps",
    "encode_request",
    "from_kop",
    "from_ml",
    "to_int",
    "to_kop",
    "to_ml",
]

MAX_BODY_BYTES = 1 << 20
"""A controller's answer larger than this is refused unread (a real one is a few kB)."""


@dataclass(frozen=True, slots=True)
class Packet:
    """One request packet: ``Id`` (unique in its envelope), ``Type`` and ``Data``."""

    id: int
    type: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer packet. ``error`` is None on success, else ``(code, message)``."""

    id: int
    type: str
    data: Mapping[str, Any]
    error: tuple[int | None, str] | None = None


def dumps(value: object) -> str:
    """JSON text for ``value`` where ``Decimal`` is written as a JSON number (exactly)."""
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"not a finite number: {value}")
        return format(value, "f")
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    if isinstance(value, float):
        raise TypeError("floats are not written on the wire: use Decimal")
    return json.dumps(value)


def encode_request(packets: Sequence[Packet]) -> bytes:
    """The body of one ``POST /jsonPTS`` carrying ``packets``."""
    ids = [p.id for p in packets]
    if not packets or len(set(ids)) != len(ids):
        raise ValueError(f"a jsonPTS request needs packets with distinct ids, got {ids}")
    body = {
        "Protocol": "jsonPTS",
        "Packets": [{"Id": p.id, "Type": p.type, "Data": dict(p.data)} for p in packets],
    }
    return dumps(body).encode()


def _loads(body: bytes, what: str) -> Any:
    if len(body) > MAX_BODY_BYTES:
        raise PumpProtocolError(f"{what} too large: {len(body)} bytes")
    try:
        text = body.decode("utf-8")
        return json.loads(text, parse_float=Decimal, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise PumpProtocolError(f"{what} is not JSON: {type(e).__name__}: {str(e)[:80]}") from None


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number")


def _envelope(doc: Any, what: str) -> list[Any]:
    if not isinstance(doc, dict) or doc.get("Protocol") != "jsonPTS":
        raise PumpProtocolError(f"{what} is not a jsonPTS envelope")
    packets = doc.get("Packets")
    if not isinstance(packets, list) or not packets:
        raise PumpProtocolError(f"{what} has no Packets list")
    return packets


def decode_response(body: bytes, sent: Sequence[Packet]) -> dict[int, Reply]:
    """The replies of an answer to ``sent``, by packet id. Every sent packet must be
    answered exactly once, by a packet of its own type or an error packet; a missing,
    duplicated or unknown id, or a malformed packet, raises ``PumpProtocolError``."""
    packets = _envelope(_loads(body, "controller answer"), "controller answer")
    by_id = {p.id: p for p in sent}
    replies: dict[int, Reply] = {}
    for raw in packets:
        if not isinstance(raw, dict):
            raise PumpProtocolError("controller answer has a packet that is not an object")
        pid = raw.get("Id")
        if isinstance(pid, bool) or not isinstance(pid, int) or pid not in by_id:
            raise PumpProtocolError(f"controller answered packet Id {pid!r} it was not asked")
        if pid in replies:
            raise PumpProtocolError(f"controller answered packet Id {pid} twice")
        ptype = raw.get("Type", by_id[pid].type)
        if not isinstance(ptype, str):
            raise PumpProtocolError(f"packet {pid}: Type is not a string")
        data = raw.get("Data", {})
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise PumpProtocolError(f"packet {pid}: Data is not an object")
        error = raw.get("Error", False)
        if error not in (True, False, "true", "false"):
            raise PumpProtocolError(f"packet {pid}: Error is {error!r}")
        if error in (True, "true"):
            code = raw.get("Code")
            if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
                raise PumpProtocolError(f"packet {pid}: error Code is {code!r}")
            message = raw.get("Message", "")
            replies[pid] = Reply(pid, ptype, data, (code, str(message)[:200]))
        else:
            replies[pid] = Reply(pid, ptype, data)
    missing = sorted(set(by_id) - set(replies))
    if missing:
        raise PumpProtocolError(f"controller did not answer packets {missing}")
    return replies


def decode_request(body: bytes) -> list[Packet]:
    """The packets of a request (the simulator's side): ``PumpProtocolError`` if it is
    not a jsonPTS envelope of objects with an int ``Id`` and a string ``Type``."""
    out: list[Packet] = []
    for raw in _envelope(_loads(body, "request"), "request"):
        if not isinstance(raw, dict):
            raise PumpProtocolError("request has a packet that is not an object")
        pid, ptype, data = raw.get("Id"), raw.get("Type"), raw.get("Data", {})
        if isinstance(pid, bool) or not isinstance(pid, int):
            raise PumpProtocolError(f"request packet Id {pid!r} is not an int")
        if not isinstance(ptype, str) or not isinstance(data, dict | None):
            raise PumpProtocolError(f"request packet {pid} has a bad Type or Data")
        out.append(Packet(pid, ptype, data or {}))
    return out


# --- units ---------------------------------------------------------------------------------
def _decimal(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise PumpProtocolError(f"{name} is not a number: {value!r}")
    d = Decimal(value)
    if not d.is_finite() or d < 0 or d > Decimal(10) ** 12:
        raise PumpProtocolError(f"{name} is out of range: {value!r}")
    return d


def _scaled(value: Any, name: str, scale: int) -> int:
    d = _decimal(value, name) * scale
    try:
        if d != d.to_integral_value():
            raise PumpProtocolError(f"{name} {value} has more digits than a 1/{scale} unit")
        return int(d)
    except InvalidOperation:
        raise PumpProtocolError(f"{name} is out of range: {value!r}") from None


def to_ml(value: Any, name: str = "volume") -> int:
    """Litres on the wire (up to 3 decimals) to millilitres."""
    return _scaled(value, name, 1000)


def to_kop(value: Any, name: str = "amount") -> int:
    """Money units on the wire (up to 2 decimals) to kopecks."""
    return _scaled(value, name, 100)


def to_int(value: Any, name: str) -> int:
    """A whole non-negative number on the wire (pump, nozzle, transaction)."""
    return _scaled(value, name, 1)


def from_ml(volume_ml: int) -> Decimal:
    """Millilitres to litres for the wire."""
    return Decimal(volume_ml).scaleb(-3)


def from_kop(amount_kop: int) -> Decimal:
    """Kopecks to money units for the wire."""
    return Decimal(amount_kop).scaleb(-2)
