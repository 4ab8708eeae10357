"""Card data encoding: the fixed binary layouts of the fuel-card application's records.

Every layout is specified byte by byte in ``docs/card-application.md``; integers are
big-endian and unsigned unless the doc says otherwise. Decoders are strict: a short record,
trailing bytes, an unknown enum value or an out-of-range number raises
:class:`hw.errors.CardDataError`. Encoders take and decoders return the ``authz`` model types
(:class:`FuelCard`, :class:`Limit`, :class:`LimitCounter`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import date

from authz.fuel_model import (
    CardKind,
    CardStatus,
    FuelCard,
    Limit,
    LimitCounter,
    LimitUnit,
    Period,
    ProductGroup,
    Scope,
    mask_card_no,
)
from authz.money import MAX_AMOUNT_KOP
from hw.errors import CardDataError

__all__ = [
    "FORMAT_VERSION", "MAX_LIMITS", "WRITE_ID_LEN", "CHALLENGE_LEN", "NO_WRITE",
    "Counters", "CounterState", "CounterWrite",
    "encode_identity", "decode_identity", "encode_limit", "decode_limit",
    "encode_card", "decode_card", "static_mac_input",
    "encode_counter_state", "decode_counter_state", "encode_counter_write",
    "decode_counter_write", "limit_id_of_record", "encode_counters", "decode_counters",
]

FORMAT_VERSION = 1
#: At most 12 limits: a write command with every counter must fit one short APDU.
MAX_LIMITS = 12
WRITE_ID_LEN = 16
CHALLENGE_LEN = 8
NO_WRITE = bytes(WRITE_ID_LEN)  #: the last-write id of a card never written
_NO_GROUP = 0xFF
_MAX_PRODUCT_LEN = 32
_MAX_U32 = 0xFFFFFFFF

#: (limit_id, counter) in the order of the card's limit records, as FuelCompletion has them.
Counters = tuple[tuple[int, LimitCounter], ...]

_ID_HEAD = struct.Struct(">B")          # format version
_ID_TAIL = struct.Struct(">QBBIBB")     # contract, kind, status, expiry, groups, n_limits
_LIMIT = struct.Struct(">IBBQBB")        # id, unit, period, amount, scope, group
_COUNTER = struct.Struct(">IQi")         # limit id, spent, period start (local day number)
_STATE_HEAD = struct.Struct(">I16sBB")   # txn counter, last write id, flags, n
_WRITE_HEAD = struct.Struct(">I16sB")    # expected txn counter, write id, n
_FLAG_RESERVED = 0x01


class _Cursor:
    """Strict reader over one record: every read is bounds-checked."""

    __slots__ = ("buf", "pos", "what")

    def __init__(self, buf: bytes, what: str) -> None:
        self.buf, self.pos, self.what = bytes(buf), 0, what

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise CardDataError(f"{self.what} record is short: {len(self.buf)} bytes")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, st: struct.Struct) -> tuple:
        return st.unpack(self.take(st.size))

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise CardDataError(f"{self.what} record has {len(self.buf) - self.pos} trailing bytes")


def _enum(cls, value: int, what: str):
    try:
        return cls(value)
    except ValueError:
        raise CardDataError(f"{what}: unknown {cls.__name__} value {value}") from None


def _check_card_no(card_no: str) -> bytes:
    if not isinstance(card_no, str) or not card_no.isascii() or not card_no.isdigit() \
            or not 6 <= len(card_no) <= 19:
        raise CardDataError(f"card number must be 6..19 digits: {mask_card_no(card_no)}")
    return card_no.encode("ascii")


def _date_to_u32(d: date) -> int:
    return d.year * 10000 + d.month * 100 + d.day


def _u32_to_date(v: int) -> date:
    try:
        return date(v // 10000, v // 100 % 100, v % 100)
    except ValueError:
        raise CardDataError(f"expiry {v} is not a YYYYMMDD date") from None


def _groups_mask(groups: frozenset[ProductGroup]) -> int:
    mask = 0
    for g in groups:
        mask |= 1 << int(g)
    return mask


def encode_identity(card: FuelCard) -> bytes:
    """The identity record (SFI 1, record 1) of ``card``."""
    no = _check_card_no(card.card_no)
    if not 0 <= card.contract_id < 1 << 63:
        raise CardDataError(f"contract id out of range: {card.contract_id}")
    if len(card.limits) > MAX_LIMITS:
        raise CardDataError(f"a card holds at most {MAX_LIMITS} limits, got {len(card.limits)}")
    return (_ID_HEAD.pack(FORMAT_VERSION) + bytes((len(no),)) + no
            + _ID_TAIL.pack(card.contract_id, card.kind, card.status, _date_to_u32(card.expires_on),
                            _groups_mask(card.groups), len(card.limits)))


@dataclass(frozen=True, slots=True)
class Identity:
    """The identity record decoded: the card without its limits, and how many it has."""

    card_no: str
    contract_id: int
    kind: CardKind
    status: CardStatus
    expires_on: date
    groups: frozenset[ProductGroup]
    n_limits: int


def decode_identity(raw: bytes) -> Identity:
    """Decode the identity record; raise CardDataError."""
    cur = _Cursor(raw, "identity")
    (version,) = cur.unpack(_ID_HEAD)
    if version != FORMAT_VERSION:
        raise CardDataError(f"identity record format {version}, this terminal reads {FORMAT_VERSION}")
    n = cur.take(1)[0]
    try:
        card_no = cur.take(n).decode("ascii")
    except UnicodeDecodeError:
        raise CardDataError("card number is not ASCII") from None
    _check_card_no(card_no)
    contract, kind, status, expiry, groups, n_limits = cur.unpack(_ID_TAIL)
    cur.end()
    if contract >= 1 << 63:
        raise CardDataError(f"contract id out of range: {contract}")
    if groups >> len(ProductGroup):
        raise CardDataError(f"product group mask {groups:#04x} names unknown groups")
    if n_limits > MAX_LIMITS:
        raise CardDataError(f"identity names {n_limits} limits, at most {MAX_LIMITS}")
    return Identity(card_no, contract, _enum(CardKind, kind, "identity"),
                    _enum(CardStatus, status, "identity"), _u32_to_date(expiry),
                    frozenset(g for g in ProductGroup if groups >> int(g) & 1), n_limits)


def encode_limit(limit: Limit) -> bytes:
    """One limit record (SFI 2)."""
    if not 0 <= limit.limit_id <= _MAX_U32:
        raise CardDataError(f"limit id out of range: {limit.limit_id}")
    if not 0 <= limit.amount <= MAX_AMOUNT_KOP:
        raise CardDataError(f"limit {limit.limit_id} amount out of range: {limit.amount}")
    product = (limit.product or "").encode("utf-8")
    if len(product) > _MAX_PRODUCT_LEN:
        raise CardDataError(f"limit {limit.limit_id} product code longer than {_MAX_PRODUCT_LEN} bytes")
    group = _NO_GROUP if limit.group is None else int(limit.group)
    return (_LIMIT.pack(limit.limit_id, limit.unit, limit.period, limit.amount, limit.scope, group)
            + bytes((len(product),)) + product)


def decode_limit(raw: bytes) -> Limit:
    """Decode one limit record; raise CardDataError."""
    cur = _Cursor(raw, "limit")
    limit_id, unit, period, amount, scope, group = cur.unpack(_LIMIT)
    n = cur.take(1)[0]
    if n > _MAX_PRODUCT_LEN:
        raise CardDataError(f"limit {limit_id} product code of {n} bytes")
    try:
        product = cur.take(n).decode("utf-8") or None
    except UnicodeDecodeError:
        raise CardDataError(f"limit {limit_id} product code is not UTF-8") from None
    cur.end()
    if amount > MAX_AMOUNT_KOP:
        raise CardDataError(f"limit {limit_id} amount out of range: {amount}")
    scope_v = _enum(Scope, scope, f"limit {limit_id}")
    group_v = None if group == _NO_GROUP else _enum(ProductGroup, group, f"limit {limit_id}")
    if scope_v is Scope.GROUP and group_v is None:
        raise CardDataError(f"limit {limit_id} has scope GROUP but no group")
    if scope_v is Scope.PRODUCT and product is None:
        raise CardDataError(f"limit {limit_id} has scope PRODUCT but no product")
    return Limit(limit_id, _enum(LimitUnit, unit, f"limit {limit_id}"),
                 _enum(Period, period, f"limit {limit_id}"), amount, scope_v, group_v, product)


def limit_id_of_record(raw: bytes) -> int:
    """The limit id (first 4 bytes) of a limit record: all the card itself parses."""
    if len(raw) < 4:
        raise CardDataError("limit record is short")
    return int.from_bytes(raw[:4], "big")


def encode_card(card: FuelCard) -> tuple[bytes, tuple[bytes, ...]]:
    """The identity record and the limit records of ``card``."""
    ids = [lim.limit_id for lim in card.limits]
    if len(set(ids)) != len(ids):
        raise CardDataError(f"card {mask_card_no(card.card_no)} repeats a limit id")
    return encode_identity(card), tuple(encode_limit(lim) for lim in card.limits)


def decode_card(identity: bytes, limits: tuple[bytes, ...] | list[bytes]) -> FuelCard:
    """The :class:`FuelCard` from its identity record and limit records."""
    ident = decode_identity(identity)
    if len(limits) != ident.n_limits:
        raise CardDataError(f"identity names {ident.n_limits} limits, {len(limits)} records given")
    decoded = tuple(decode_limit(r) for r in limits)
    if len({lim.limit_id for lim in decoded}) != len(decoded):
        raise CardDataError("limit records repeat a limit id")
    return FuelCard(ident.card_no, ident.contract_id, ident.expires_on, ident.groups, decoded,
                    ident.kind, ident.status)


def static_mac_input(identity: bytes, limits: tuple[bytes, ...] | list[bytes]) -> bytes:
    """What the static data MAC covers: tag 01, then each record with a length byte."""
    out = bytearray(b"\x01")
    for rec in (identity, *limits):
        out.append(len(rec))
        out += rec
    return bytes(out)


def encode_counters(counters: Counters) -> bytes:
    """n counter entries of 16 bytes each (no count byte)."""
    out = bytearray()
    for limit_id, c in counters:
        if not 0 <= limit_id <= _MAX_U32:
            raise CardDataError(f"limit id out of range: {limit_id}")
        if not 0 <= c.spent <= MAX_AMOUNT_KOP:
            raise CardDataError(f"limit {limit_id} spent out of range: {c.spent}")
        if not -(1 << 31) <= c.period_start < 1 << 31:
            raise CardDataError(f"limit {limit_id} period start out of range: {c.period_start}")
        out += _COUNTER.pack(limit_id, c.spent, c.period_start)
    return bytes(out)


def decode_counters(cur: _Cursor, n: int) -> Counters:
    out = []
    for _ in range(n):
        limit_id, spent, start = cur.unpack(_COUNTER)
        if spent > MAX_AMOUNT_KOP:
            raise CardDataError(f"limit {limit_id} spent out of range: {spent}")
        out.append((limit_id, LimitCounter(spent, start)))
    if len({i for i, _ in out}) != len(out):
        raise CardDataError("counters repeat a limit id")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class CounterState:
    """The card's dynamic data: its transaction counter, the id of the last write it
    applied, whether a reservation is open, and the spent counter of each limit."""

    txn_counter: int
    last_write_id: bytes
    reservation_open: bool
    counters: Counters


@dataclass(frozen=True, slots=True)
class CounterWrite:
    """A RESERVE or COMMIT body: applies only when the card's counter is ``expected_txn``."""

    expected_txn: int
    write_id: bytes
    counters: Counters


def encode_counter_state(state: CounterState) -> bytes:
    """The GET COUNTERS response body (without its MAC)."""
    if not 0 <= state.txn_counter <= _MAX_U32:
        raise CardDataError(f"transaction counter out of range: {state.txn_counter}")
    if len(state.last_write_id) != WRITE_ID_LEN:
        raise CardDataError(f"write id must be {WRITE_ID_LEN} bytes")
    flags = _FLAG_RESERVED if state.reservation_open else 0
    return (_STATE_HEAD.pack(state.txn_counter, state.last_write_id, flags, len(state.counters))
            + encode_counters(state.counters))


def decode_counter_state(raw: bytes) -> CounterState:
    """Decode a GET COUNTERS response body (without its MAC); raise CardDataError."""
    cur = _Cursor(raw, "counters")
    txn, write_id, flags, n = cur.unpack(_STATE_HEAD)
    if flags & ~_FLAG_RESERVED:
        raise CardDataError(f"counters flags {flags:#04x} has unknown bits")
    if n > MAX_LIMITS:
        raise CardDataError(f"counters record names {n} counters, at most {MAX_LIMITS}")
    counters = decode_counters(cur, n)
    cur.end()
    return CounterState(txn, write_id, bool(flags & _FLAG_RESERVED), counters)


def encode_counter_write(w: CounterWrite) -> bytes:
    """The RESERVE / COMMIT body (without its MAC)."""
    if not 0 <= w.expected_txn < _MAX_U32:
        raise CardDataError(f"expected transaction counter out of range: {w.expected_txn}")
    if len(w.write_id) != WRITE_ID_LEN or w.write_id == NO_WRITE:
        raise CardDataError(f"write id must be {WRITE_ID_LEN} bytes, not all zero")
    if len(w.counters) > MAX_LIMITS:
        raise CardDataError(f"at most {MAX_LIMITS} counters per write")
    return _WRITE_HEAD.pack(w.expected_txn, w.write_id, len(w.counters)) + encode_counters(w.counters)


def decode_counter_write(raw: bytes) -> CounterWrite:
    """Decode a RESERVE / COMMIT body (without its MAC); raise CardDataError."""
    cur = _Cursor(raw, "write")
    expected, write_id, n = cur.unpack(_WRITE_HEAD)
    if n > MAX_LIMITS:
        raise CardDataError(f"write names {n} counters, at most {MAX_LIMITS}")
    counters = decode_counters(cur, n)
    cur.end()
    return CounterWrite(expected, write_id, counters)
