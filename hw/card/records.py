"""Card data encoding: the fixed binary layouts of the fuel-card application's records.

Every layout is specified byte by byte in ``docs/card-application.md``; integers are
big-endian and unsigned unless the doc says otherwise. Decoders are strict: a short record,
trailing bytes, an unknown enum value or an out-of-range number raises
:class:`hw.errors.CardDataError`. Encoders take and decoders return the ``authz`` model types
(:class:`FuelCard`, :class:`Limit`, :class:`LimitCounter`).

Two formats (the identity record's first byte, under the data MAC): 01, the records as the
first cards carry them, and 02, written only for a card with a rule format 01 cannot hold
(purchase-count limits, quarter and year periods, approve-and-alert, allowed products, time
windows, a station restriction): its limit records end in a flags byte and its controls
are a record of their own (SFI 3). A card without such a rule is written in format 01,
byte for byte as before.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from datetime import date

from authz.fuel_model import (
    DAY_MINUTES,
    MAX_CARD_STATIONS,
    MAX_WINDOWS,
    CardKind,
    CardStatus,
    FuelCard,
    Limit,
    LimitCounter,
    LimitUnit,
    OnBreach,
    Period,
    ProductGroup,
    Scope,
    StationScope,
    TimeWindow,
    mask_card_no,
)
from authz.money import MAX_AMOUNT_KOP
from hw.errors import CardDataError

__all__ = [
    "FORMAT_VERSION", "FORMAT_V1", "FORMAT_V2", "FORMATS", "MAX_LIMITS", "MAX_RECORD_LEN",
    "CardRecords", "Controls", "Identity", "needs_v2", "encode_records", "decode_records",
    "encode_controls", "decode_controls", "WRITE_ID_LEN", "CHALLENGE_LEN", "NO_WRITE",
    "Counters", "CounterState", "CounterWrite",
    "encode_identity", "decode_identity", "encode_limit", "decode_limit",
    "encode_card", "decode_card", "static_mac_input",
    "encode_counter_state", "decode_counter_state", "encode_counter_write",
    "decode_counter_write", "limit_id_of_record", "encode_counters", "decode_counters",
]

FORMAT_V1 = 1  #: identity + limit records (the first cards)
FORMAT_V2 = 2  #: + a flags byte per limit record and the controls record (SFI 3)
FORMATS = (FORMAT_V1, FORMAT_V2)
#: The newest format this terminal writes (for a card that needs it; see :func:`needs_v2`).
FORMAT_VERSION = FORMAT_V2
#: A record's length is one byte in the data MAC input, and READ RECORD answers at most 256.
MAX_RECORD_LEN = 255
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
_FLAG_ALERT = 0x01                      # limit flags / controls flags: on breach, alert
_WINDOW = struct.Struct(">BHH")          # days mask, start minute, end minute
_STATION = struct.Struct(">I")
_NO_PRODUCT_LIST = 0xFF
#: What format 01 can hold: the enum values of the first cards.
_V1_UNITS = frozenset({LimitUnit.KOPECKS, LimitUnit.MILLILITRES})
_V1_PERIODS = frozenset({Period.TRANSACTION, Period.DAY, Period.WEEK, Period.MONTH, Period.LIFETIME})


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


def needs_v2(card: FuelCard) -> bool:
    """Does ``card`` have a rule format 01 cannot hold (so it is written in format 02)?"""
    if (card.products is not None or card.windows or card.station_scope is not StationScope.NETWORK
            or card.station_ids or card.on_breach is not OnBreach.DECLINE):
        return True
    return any(lim.unit not in _V1_UNITS or lim.period not in _V1_PERIODS
               or lim.on_breach is not OnBreach.DECLINE for lim in card.limits)


def encode_identity(card: FuelCard, version: int | None = None) -> bytes:
    """The identity record (SFI 1, record 1) of ``card``, in format ``version`` (by default
    the one the card needs: 02 if :func:`needs_v2`, else 01)."""
    version = _version_for(card, version)
    no = _check_card_no(card.card_no)
    if not 0 <= card.contract_id < 1 << 63:
        raise CardDataError(f"contract id out of range: {card.contract_id}")
    if len(card.limits) > MAX_LIMITS:
        raise CardDataError(f"a card holds at most {MAX_LIMITS} limits, got {len(card.limits)}")
    return (_ID_HEAD.pack(version) + bytes((len(no),)) + no
            + _ID_TAIL.pack(card.contract_id, card.kind, card.status, _date_to_u32(card.expires_on),
                            _groups_mask(card.groups), len(card.limits)))


def _version_for(card: FuelCard, version: int | None) -> int:
    if version is None:
        return FORMAT_V2 if needs_v2(card) else FORMAT_V1
    if version not in FORMATS:
        raise CardDataError(f"card format {version}: this terminal writes {', '.join(f'{v:02}' for v in FORMATS)}")
    if version == FORMAT_V1 and needs_v2(card):
        raise CardDataError(f"card {mask_card_no(card.card_no)} has rules that card format 01 cannot hold")
    return version


@dataclass(frozen=True, slots=True)
class Identity:
    """The identity record decoded: the card without its limits and controls, how many
    limit records it has, and the card's data format (01 or 02)."""

    card_no: str
    contract_id: int
    kind: CardKind
    status: CardStatus
    expires_on: date
    groups: frozenset[ProductGroup]
    n_limits: int
    version: int = FORMAT_V1


def decode_identity(raw: bytes) -> Identity:
    """Decode the identity record; raise CardDataError."""
    cur = _Cursor(raw, "identity")
    (version,) = cur.unpack(_ID_HEAD)
    if version not in FORMATS:
        raise CardDataError(f"identity record format {version:02}, this terminal reads "
                            f"{', '.join(f'{v:02}' for v in FORMATS)}")
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
                    frozenset(g for g in ProductGroup if groups >> int(g) & 1), n_limits, version)


def encode_limit(limit: Limit, version: int = FORMAT_V1) -> bytes:
    """One limit record (SFI 2) in card format ``version`` (02 adds the flags byte)."""
    if not 0 <= limit.limit_id <= _MAX_U32:
        raise CardDataError(f"limit id out of range: {limit.limit_id}")
    if not 0 <= limit.amount <= MAX_AMOUNT_KOP:
        raise CardDataError(f"limit {limit.limit_id} amount out of range: {limit.amount}")
    product = (limit.product or "").encode("utf-8")
    if len(product) > _MAX_PRODUCT_LEN:
        raise CardDataError(f"limit {limit.limit_id} product code longer than {_MAX_PRODUCT_LEN} bytes")
    if version == FORMAT_V1:
        if (limit.unit not in _V1_UNITS or limit.period not in _V1_PERIODS
                or limit.on_breach is not OnBreach.DECLINE):
            raise CardDataError(f"limit {limit.limit_id} needs card format 02")
    elif version != FORMAT_V2:
        raise CardDataError(f"card format {version}: no such limit record")
    if limit.unit is LimitUnit.PURCHASES and limit.period is Period.TRANSACTION:
        raise CardDataError(f"limit {limit.limit_id} counts purchases per transaction")
    group = _NO_GROUP if limit.group is None else int(limit.group)
    out = (_LIMIT.pack(limit.limit_id, limit.unit, limit.period, limit.amount, limit.scope, group)
           + bytes((len(product),)) + product)
    if version == FORMAT_V2:
        out += bytes((_FLAG_ALERT if limit.on_breach is OnBreach.ALERT else 0,))
    return out


def decode_limit(raw: bytes, version: int = FORMAT_V1) -> Limit:
    """Decode one limit record of card format ``version``; raise CardDataError."""
    cur = _Cursor(raw, "limit")
    limit_id, unit, period, amount, scope, group = cur.unpack(_LIMIT)
    n = cur.take(1)[0]
    if n > _MAX_PRODUCT_LEN:
        raise CardDataError(f"limit {limit_id} product code of {n} bytes")
    try:
        product = cur.take(n).decode("utf-8") or None
    except UnicodeDecodeError:
        raise CardDataError(f"limit {limit_id} product code is not UTF-8") from None
    on_breach = OnBreach.DECLINE
    if version == FORMAT_V2:
        (flags,) = cur.take(1)
        if flags & ~_FLAG_ALERT:
            raise CardDataError(f"limit {limit_id} flags {flags:#04x} has unknown bits")
        on_breach = OnBreach.ALERT if flags & _FLAG_ALERT else OnBreach.DECLINE
    elif version != FORMAT_V1:
        raise CardDataError(f"card format {version}: no such limit record")
    cur.end()
    if amount > MAX_AMOUNT_KOP:
        raise CardDataError(f"limit {limit_id} amount out of range: {amount}")
    scope_v = _enum(Scope, scope, f"limit {limit_id}")
    group_v = None if group == _NO_GROUP else _enum(ProductGroup, group, f"limit {limit_id}")
    if scope_v is Scope.GROUP and group_v is None:
        raise CardDataError(f"limit {limit_id} has scope GROUP but no group")
    if scope_v is Scope.PRODUCT and product is None:
        raise CardDataError(f"limit {limit_id} has scope PRODUCT but no product")
    unit_v = _enum(LimitUnit, unit, f"limit {limit_id}")
    period_v = _enum(Period, period, f"limit {limit_id}")
    if version == FORMAT_V1 and (unit_v not in _V1_UNITS or period_v not in _V1_PERIODS):
        raise CardDataError(f"limit {limit_id}: unit {unit} / period {period} exist only in card format 02")
    if unit_v is LimitUnit.PURCHASES and period_v is Period.TRANSACTION:
        raise CardDataError(f"limit {limit_id} counts purchases per transaction")
    return Limit(limit_id, unit_v, period_v, amount, scope_v, group_v, product, on_breach)


def limit_id_of_record(raw: bytes) -> int:
    """The limit id (first 4 bytes) of a limit record: all the card itself parses."""
    if len(raw) < 4:
        raise CardDataError("limit record is short")
    return int.from_bytes(raw[:4], "big")


@dataclass(frozen=True, slots=True)
class Controls:
    """The card's controls record (SFI 3, format 02) decoded: what a purchase outside them
    does, where the card may buy, when, and which products (None: every product of its
    groups)."""

    on_breach: OnBreach
    station_scope: StationScope
    station_ids: frozenset[int]
    windows: tuple[TimeWindow, ...]
    products: frozenset[str] | None


def _days_mask(days: frozenset[int]) -> int:
    mask = 0
    for d in days:
        if type(d) is not int or not 0 <= d <= 6:
            raise CardDataError(f"time window day {d!r}: days are 0 (Monday) .. 6 (Sunday)")
        mask |= 1 << d
    return mask


def encode_controls(card: FuelCard) -> bytes:
    """The controls record (SFI 3, record 1) of ``card``; at most :data:`MAX_RECORD_LEN`."""
    who = f"card {mask_card_no(card.card_no)}"
    if card.station_scope is StationScope.LISTED and not card.station_ids:
        raise CardDataError(f"{who} may buy only at listed stations but lists none")
    if card.station_scope is not StationScope.LISTED and card.station_ids:
        raise CardDataError(f"{who} lists stations but its station restriction is {card.station_scope.name}")
    if len(card.station_ids) > MAX_CARD_STATIONS:
        raise CardDataError(f"{who} lists {len(card.station_ids)} stations; at most {MAX_CARD_STATIONS}")
    if len(card.windows) > MAX_WINDOWS:
        raise CardDataError(f"{who} has {len(card.windows)} time windows; at most {MAX_WINDOWS}")
    out = bytearray((_FLAG_ALERT if card.on_breach is OnBreach.ALERT else 0, int(card.station_scope),
                     len(card.station_ids)))
    for sid in sorted(card.station_ids):
        if type(sid) is not int or not 0 <= sid <= _MAX_U32:
            raise CardDataError(f"{who} lists station id {sid!r} out of range")
        out += _STATION.pack(sid)
    out.append(len(card.windows))
    for w in card.windows:
        mask = _days_mask(w.days)
        _check_window(mask, w.start_min, w.end_min, who)
        out += _WINDOW.pack(mask, w.start_min, w.end_min)
    if card.products is None:
        out.append(_NO_PRODUCT_LIST)
    else:
        codes = sorted(card.products)
        if not codes or len(codes) >= _NO_PRODUCT_LIST:
            raise CardDataError(f"{who} has a product list of {len(codes)} products: give 1..254, or none")
        out.append(len(codes))
        for code in codes:
            raw = code.encode("utf-8") if isinstance(code, str) else b""
            if not 1 <= len(raw) <= _MAX_PRODUCT_LEN:
                raise CardDataError(f"{who} allows a product code of {len(raw)} bytes: 1..{_MAX_PRODUCT_LEN}")
            out += bytes((len(raw),)) + raw
    if len(out) > MAX_RECORD_LEN:
        raise CardDataError(f"{who}: its controls take {len(out)} bytes, more than one record holds "
                            f"({MAX_RECORD_LEN}); list fewer products or stations")
    return bytes(out)


def _check_window(mask: int, start: int, end: int, who: str) -> None:
    if not mask or mask >> 7:
        raise CardDataError(f"{who} has a time window with days mask {mask:#04x}: give days 0..6, at least one")
    if type(start) is not int or type(end) is not int or not 0 <= start < DAY_MINUTES \
            or not 0 < end <= DAY_MINUTES:
        raise CardDataError(f"{who} has a time window {start!r}..{end!r} outside 00:00..24:00")
    if start == end:
        raise CardDataError(f"{who} has a time window of zero length at minute {start}")


def decode_controls(raw: bytes) -> Controls:
    """Decode the controls record (SFI 3, record 1); raise CardDataError."""
    cur = _Cursor(raw, "controls")
    flags, scope, n_stations = cur.take(3)
    if flags & ~_FLAG_ALERT:
        raise CardDataError(f"controls flags {flags:#04x} has unknown bits")
    scope_v = _enum(StationScope, scope, "controls")
    if n_stations > MAX_CARD_STATIONS:
        raise CardDataError(f"controls list {n_stations} stations, at most {MAX_CARD_STATIONS}")
    stations = [cur.unpack(_STATION)[0] for _ in range(n_stations)]
    if stations != sorted(set(stations)):
        raise CardDataError("controls: station ids must be ascending, each once")
    if (scope_v is StationScope.LISTED) != bool(stations):
        raise CardDataError(f"controls: station restriction {scope_v.name} with {n_stations} stations listed")
    (n_windows,) = cur.take(1)
    if n_windows > MAX_WINDOWS:
        raise CardDataError(f"controls have {n_windows} time windows, at most {MAX_WINDOWS}")
    windows = []
    for _ in range(n_windows):
        mask, start, end = cur.unpack(_WINDOW)
        _check_window(mask, start, end, "controls")
        windows.append(TimeWindow(frozenset(d for d in range(7) if mask >> d & 1), start, end))
    (n_products,) = cur.take(1)
    products: frozenset[str] | None = None
    if n_products != _NO_PRODUCT_LIST:
        if n_products == 0:
            raise CardDataError("controls: an empty product list (FF means no list)")
        codes = []
        for _ in range(n_products):
            (n,) = cur.take(1)
            if not 1 <= n <= _MAX_PRODUCT_LEN:
                raise CardDataError(f"controls: a product code of {n} bytes")
            try:
                codes.append(cur.take(n).decode("utf-8"))
            except UnicodeDecodeError:
                raise CardDataError("controls: a product code is not UTF-8") from None
        if codes != sorted(set(codes)):
            raise CardDataError("controls: product codes must be ascending, each once")
        products = frozenset(codes)
    cur.end()
    return Controls(OnBreach.ALERT if flags & _FLAG_ALERT else OnBreach.DECLINE, scope_v,
                    frozenset(stations), tuple(windows), products)


@dataclass(frozen=True, slots=True)
class CardRecords:
    """A card's static records as it serves them: identity (SFI 1/1), limits (SFI 2/1..n),
    and in format 02 the controls (SFI 3/1; None in format 01)."""

    identity: bytes
    limits: tuple[bytes, ...]
    controls: bytes | None = None

    def mac_input(self) -> bytes:
        """What the data MAC (tag 01) covers: :func:`static_mac_input` of these records."""
        return static_mac_input(self.identity, self.limits, self.controls)


def encode_records(card: FuelCard, version: int | None = None) -> CardRecords:
    """The static records of ``card`` in format ``version`` (by default the one it needs)."""
    version = _version_for(card, version)
    ids = [lim.limit_id for lim in card.limits]
    if len(set(ids)) != len(ids):
        raise CardDataError(f"card {mask_card_no(card.card_no)} repeats a limit id")
    limits = tuple(encode_limit(lim, version) for lim in card.limits)
    controls = encode_controls(card) if version == FORMAT_V2 else None
    return CardRecords(encode_identity(card, version), limits, controls)


def decode_records(rec: CardRecords) -> FuelCard:
    """The :class:`FuelCard` its records say; raise CardDataError (a record of the wrong
    format, a controls record missing in format 02 or present in 01, ...)."""
    ident = decode_identity(rec.identity)
    if len(rec.limits) != ident.n_limits:
        raise CardDataError(f"identity names {ident.n_limits} limits, {len(rec.limits)} records given")
    decoded = tuple(decode_limit(r, ident.version) for r in rec.limits)
    if len({lim.limit_id for lim in decoded}) != len(decoded):
        raise CardDataError("limit records repeat a limit id")
    card = FuelCard(ident.card_no, ident.contract_id, ident.expires_on, ident.groups, decoded,
                    ident.kind, ident.status)
    if ident.version == FORMAT_V1:
        if rec.controls is not None:
            raise CardDataError("a card of format 01 has no controls record")
        return card
    if rec.controls is None:
        raise CardDataError("a card of format 02 needs its controls record")
    c = decode_controls(rec.controls)
    return replace(card, products=c.products, windows=c.windows, station_scope=c.station_scope,
                   station_ids=c.station_ids, on_breach=c.on_breach)


def encode_card(card: FuelCard, version: int | None = None) -> CardRecords:
    """The static records of ``card`` (:func:`encode_records`)."""
    return encode_records(card, version)


def decode_card(identity: bytes, limits: tuple[bytes, ...] | list[bytes],
                controls: bytes | None = None) -> FuelCard:
    """The :class:`FuelCard` from its identity record, limit records and (format 02)
    controls record."""
    return decode_records(CardRecords(identity, tuple(limits), controls))


def static_mac_input(identity: bytes, limits: tuple[bytes, ...] | list[bytes],
                     controls: bytes | None = None) -> bytes:
    """What the static data MAC covers: tag 01, then each record with a length byte
    (identity, the limit records in order, then the controls record in format 02)."""
    out = bytearray(b"\x01")
    for rec in (identity, *limits, *(() if controls is None else (controls,))):
        if len(rec) > MAX_RECORD_LEN:
            raise CardDataError(f"a card record of {len(rec)} bytes: at most {MAX_RECORD_LEN}")
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
