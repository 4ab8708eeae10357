"""Signed MessagePack frames: :func:`encode` a message, :func:`decode` bytes from the broker.

A frame (protocol version 1) is one MessagePack array of five elements::

    [version: int, type: str, site: str | nil, payload: map, signature: bin 8]

The signature covers every byte of the frame before the signature element: the array
header, version, type, site and payload exactly as sent; nothing of a frame is outside the
signature but the signature itself. Its kind follows from the type (which it covers):

- site messages (batch, presence, snapshot request) and acks: HMAC-SHA256 under the site's
  key, encoded ``c4 20`` + 32 bytes, the last 34 bytes of the frame;
- replica messages (snapshot, delta): Ed25519 by the host's replica signing key, encoded
  ``c4 40`` + 64 bytes, the last 66 bytes. A replica frame carrying a 32-byte MAC is
  refused: every site could make one.

:func:`decode` checks everything before it returns anything, in this order: size, the
version (read first, so a frame of another version is named as such), well-formed
MessagePack under strict options (no extension types, UTF-8 strings, string map keys, no
duplicate keys, no trailing bytes, lengths bounded by the frame), the envelope's fields and
types, the type, the signature, the topic against the envelope, then every payload field's
type and range. It returns a whole message or raises a :class:`~wire.errors.WireError`.
:func:`encode` runs the same payload checks, so it never makes a frame that decode refuses.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from enum import IntEnum, StrEnum
from functools import lru_cache
from operator import itemgetter
from typing import Any

import msgpack
import msgspec

from authz.club_model import (AccrualRate, Category, ClubAccount, ClubCard, ClubCardKind, ClubRules,
                              ClubStatus, KindCaps, PointLot)
from authz.balance import MAX_WATERMARKS, Allowance, Watermark
from authz.fuel_model import (DAY_MINUTES, MAX_CARD_STATIONS, MAX_WINDOWS, CardKind, CardStatus, Contract,
                              DiscountKind, DiscountRule, DiscountWhere, FuelCard, Limit, LimitCounter,
                              LimitUnit, OnBreach, Period, Product, ProductGroup, Scope, Station,
                              StationScope, Tariff, TimeWindow, mask_card_no)
from authz.money import BP_WHOLE, MAX_AMOUNT_KOP, MAX_PRICE_KOP_PER_L, MAX_VOLUME_ML

try:
    from ._partscan import scan_part as _scan_part
    from ._wirecheck import read_batch as _native_batch
    from ._wirecheck import read_frame as _native_frame
    from ._wirecheck import records_fast as _native_records
except ImportError as exc:  # pragma: no cover - only on a broken install
    raise ImportError("edgepos: wire's record check (wire._wirecheck) is not built. Install edgepos with "
                      f"`pip install .` (or `bash scripts/bootstrap.sh`) on a machine with a C compiler. ({exc})"
                      ) from exc
from .bodies import HOT_FIELDS
from .errors import WireError, WireFormatError, WireSignatureError, WireTooLarge, WireTopicError, WireVersionError
from .messages import (CLUB_RULES_KEY, Ack, Batch, ClubAccountRow, FuelCardRow, Message, Presence,
                       Rejection, ReplicaDelta, ReplicaSnapshot, SnapshotRequest, StopListEntry, Table,
                       TariffRow, WireRecord, row_key)
from .signing import MAC_BYTES, SIGNATURE_BYTES, SiteKeys, mac, mac_ok, replica_sign, replica_signature_ok
from .topics import MAX_SNAPSHOT_PARTS, SITE_ID_RE, TopicKind, parse_topic

__all__ = [
    "PROTOCOL_VERSION", "SUPPORTED_VERSIONS", "INT64_MIN", "INT64_MAX", "MessageType", "Limits",
    "DEFAULT_LIMITS", "encode", "decode", "records_that_fit", "rows_that_fit", "pack_row", "unpack_row",
    "card_controls_to_map", "card_controls_from_map",
]

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

_MAC_HEADER = b"\xc4" + bytes([MAC_BYTES])  # bin 8, 32 bytes
_SIG_HEADER = b"\xc4" + bytes([SIGNATURE_BYTES])  # bin 8, 64 bytes
_FRAME_FIELDS = 5


class MessageType(StrEnum):
    """The ``type`` of a frame."""

    BATCH = "batch"
    PRESENCE = "presence"
    SNAPSHOT_REQUEST = "snapshot_request"
    ACK = "ack"
    SNAPSHOT = "snapshot"
    DELTA = "delta"


_TYPES = {t.value: t for t in MessageType}
_TYPE_OF_CLASS = {Batch: MessageType.BATCH, Presence: MessageType.PRESENCE,
                  SnapshotRequest: MessageType.SNAPSHOT_REQUEST, Ack: MessageType.ACK,
                  ReplicaSnapshot: MessageType.SNAPSHOT, ReplicaDelta: MessageType.DELTA}
#: The topic each type travels on.
_TOPIC_KIND = {MessageType.BATCH: TopicKind.BATCHES, MessageType.PRESENCE: TopicKind.PRESENCE,
               MessageType.SNAPSHOT_REQUEST: TopicKind.SNAPSHOT_REQUESTS, MessageType.ACK: TopicKind.ACKS,
               MessageType.SNAPSHOT: TopicKind.SNAPSHOT, MessageType.DELTA: TopicKind.DELTAS}
#: Types whose envelope names a site and that carry an HMAC under its key; the others
#: (replica) name none and carry the host's Ed25519 signature.
_SITE_TYPES = frozenset({MessageType.BATCH, MessageType.PRESENCE, MessageType.SNAPSHOT_REQUEST, MessageType.ACK})


@dataclass(frozen=True, slots=True)
class Limits:
    """How big a message may be. Both sides must agree; the defaults suit MQTT brokers'
    usual settings and a site's memory."""

    max_message_bytes: int = 1 << 20  #: a whole frame
    max_records: int = 10_000  #: records in one batch
    max_rows: int = 100_000  #: rows in a snapshot part; upserts + deletes in a delta
    max_rejections: int = 1_000  #: rejected batches named in one ack
    max_body_depth: int = 32  #: nesting of a record body (as the journal allows)


DEFAULT_LIMITS = Limits()


# --- primitive checks -----------------------------------------------------------------------
# Each raises WireFormatError("<field>: <what is wrong>"); the callers above prefix where.

_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
_KIND = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_CARD_NO = re.compile(r"[0-9A-Za-z]{1,32}")
_TZ = re.compile(r"[A-Za-z0-9_+-]{1,32}(/[A-Za-z0-9_+-]{1,32}){0,3}")
_VERSION_STR = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_MAX_NAME = 128
_MAX_REASON = 512


def _tn(v: object) -> str:
    """The MessagePack name of a decoded value's type, for messages."""
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "bool"
    return {int: "int", float: "float", str: "str", bytes: "bin", list: "array", dict: "map",
            tuple: "tuple"}.get(type(v), type(v).__name__)


def _show(v: object, n: int = 40) -> str:
    """A value for a message: its type, and its first characters for a scalar."""
    if isinstance(v, (list, dict, tuple)):
        return f"{_tn(v)} of {len(v)}"
    if isinstance(v, (str, bytes)):
        return f"{_tn(v)} {v[:n]!r}"
    return f"{_tn(v)} {v!r}"[:n + 10]


def _bad(field: str, what: str) -> WireFormatError:
    return WireFormatError(f"{field}: {what}" if field else what)


def _int(v: object, field: str, lo: int = 0, hi: int = INT64_MAX) -> int:
    if type(v) is not int:
        if isinstance(v, int) and not isinstance(v, bool):
            v = int(v)  # an IntEnum or int subclass given to encode
        else:
            raise _bad(field, f"must be an integer, got {_show(v)}")
    if not lo <= v <= hi:
        raise _bad(field, f"{v} is out of range {lo}..{hi}")
    return v


def _bool(v: object, field: str) -> bool:
    if v is not True and v is not False:
        raise _bad(field, f"must be true or false, got {_tn(v)}")
    return v


def _str(v: object, field: str, pattern: re.Pattern[str] | None = None, max_len: int = _MAX_NAME) -> str:
    if not isinstance(v, str):
        raise _bad(field, f"must be a string, got {_tn(v)}")
    if pattern is not None:
        if not pattern.fullmatch(v):
            raise _bad(field, f"malformed: {v[:80]!r}")
    elif len(v) > max_len:
        raise _bad(field, f"{len(v)} characters, more than {max_len}")
    return str(v)


def _card_no(v: object, field: str = "card_no") -> str:
    if not isinstance(v, str) or not _CARD_NO.fullmatch(v):
        shown = f"{len(v)} characters" if isinstance(v, str) else _tn(v)
        raise _bad(field, f"a card number is 1 to 32 letters and digits, got {shown}")
    return str(v)


@lru_cache(maxsize=None)
def _members(cls: type[IntEnum]) -> dict[int, Any]:
    """An IntEnum's members by value (a dict look-up is ~10x an Enum call)."""
    return {int(m.value): m for m in cls}


def _enum(v: object, field: str, cls: type[IntEnum]) -> Any:
    if type(v) is not int and not isinstance(v, cls):
        raise _bad(field, f"must be an integer {cls.__name__}, got {_tn(v)}")
    member = _members(cls).get(v)
    if member is None:
        names = ", ".join(f"{m.value}={m.name}" for m in cls)
        raise _bad(field, f"{v} is not a {cls.__name__} ({names})")
    return member


def _opt(v: object, field: str, check: Callable[..., Any], *args: Any) -> Any:
    return None if v is None else check(v, field, *args)


def _list(v: object, field: str, max_len: int | None = None) -> list[Any] | tuple[Any, ...]:
    if type(v) is not list and type(v) is not tuple:
        raise _bad(field, f"must be an array, got {_tn(v)}")
    if max_len is not None and len(v) > max_len:
        raise WireTooLarge(f"{field}: {len(v)} items, more than the limit of {max_len}")
    return v


def _fields(v: object, what: str, names: tuple[str, ...], keyset: frozenset[str],
            values: Callable[[dict[str, Any]], tuple[Any, ...]]) -> tuple[Any, ...]:
    """The values of map ``v``'s fields ``names``; exactly these fields, no others."""
    if type(v) is not dict:
        raise _bad(what, f"must be a map, got {_tn(v)}")
    if v.keys() != keyset:
        missing = [n for n in names if n not in v]
        extra = [k for k in v if k not in keyset]
        parts = []
        if missing:
            parts.append(f"missing field{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))}")
        if extra:
            parts.append(f"unknown field{'s' * (len(extra) > 1)} {', '.join(repr(k)[:40] for k in extra[:5])}")
        raise _bad(what, f"{'; '.join(parts)} (expected {', '.join(names)})")
    return values(v)


def _schema(*names: str) -> tuple[tuple[str, ...], frozenset[str], Callable[[dict[str, Any]], tuple[Any, ...]]]:
    """One map's field names, defined once: what :func:`_fields` checks and reads them with
    (the set of names, and a C-level getter of their values in order)."""
    getter = itemgetter(*names)
    return names, frozenset(names), (getter if len(names) > 1 else lambda v: (getter(v),))


def _each(items: Sequence[Any], what: str, parse: Callable[[Any], Any]) -> tuple[Any, ...]:
    out = []
    for i, item in enumerate(items):
        try:
            out.append(parse(item))
        except WireFormatError as e:
            raise type(e)(f"{what}[{i}] {e}") from None
    return tuple(out)


def _unique(keys: Sequence[Any], what: str, cards: bool = False) -> None:
    """Refuses a key that appears twice; ``cards``: the keys are card numbers, shown masked."""
    if len(set(keys)) != len(keys):
        seen: set[Any] = set()
        for k in keys:
            if k in seen:
                raise _bad(what, f"{mask_card_no(k) if cards else repr(k)} appears twice")
            seen.add(k)


def _json_ok(body: dict[str, Any], max_depth: int) -> bool:
    """Whether ``body`` holds plain JSON values only (the fast path of :func:`_json`, which is
    run to say what is wrong, or to accept str and int subclasses, when this says no)."""
    lo, hi = INT64_MIN, INT64_MAX
    stack: list[tuple[Any, int]] = [(body, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        container, depth = pop()
        if depth >= max_depth:
            return False
        if type(container) is dict:
            for k in container:
                if type(k) is not str:
                    return False
            items = container.values()
        else:
            items = container
        for v in items:
            t = type(v)
            if t is str or t is bool or v is None:
                continue
            if t is int:
                if not lo <= v <= hi:
                    return False
            elif t is dict or t is list:
                push((v, depth + 1))
            else:
                return False
    return True


def _json(v: object, depth: int, max_depth: int) -> None:
    """Checks a record body value: JSON values only, ints signed 64-bit, no floats."""
    if v is None or v is True or v is False or isinstance(v, str):
        return
    if isinstance(v, int):
        if not INT64_MIN <= v <= INT64_MAX:
            raise WireFormatError(f": integer {v} is outside the signed 64-bit range")
        return
    if isinstance(v, (list, dict)):
        if depth >= max_depth:
            raise WireFormatError(f": nested deeper than {max_depth} levels")
        if isinstance(v, list):
            for i, item in enumerate(v):
                try:
                    _json(item, depth + 1, max_depth)
                except WireFormatError as e:
                    raise WireFormatError(f"[{i}]{e}") from None
        else:
            for k, item in v.items():
                if not isinstance(k, str):
                    raise WireFormatError(f": key {k!r} is a {_tn(k)}; keys are strings"[:200])
                try:
                    _json(item, depth + 1, max_depth)
                except WireFormatError as e:
                    raise WireFormatError(f".{k[:64]}{e}") from None
        return
    if isinstance(v, float):
        raise WireFormatError(f": float {v!r} is not allowed: money, volumes and points are integers")
    if isinstance(v, (bytes, bytearray)):
        raise WireFormatError(": binary data is not allowed: a body holds JSON values only")
    if isinstance(v, tuple):
        raise WireFormatError(": a tuple is not allowed: use a list (it decodes as a list)")
    raise WireFormatError(f": a {type(v).__name__} is not allowed: ints, strings, bools, nil, "
                          "arrays and maps only")


# --- replica rows: to and from the wire -------------------------------------------------------

_STOP = _schema("card_no", "listed_at_utc_s")
_PRODUCT = _schema("code", "name", "group")
_STATION = _schema("station_id", "region", "groups", "prices_kop_per_l", "max_fill_ml")
_TARIFF = _schema("tariff", "discounts")
_DISCOUNT = _schema("product", "where", "kind", "value")
_CONTRACT = _schema("contract_id", "tz", "home_region", "tariff", "balance_kop", "credit_line_kop",
                    "chosen_station_ids")
_CARD = _schema("card_no", "contract_id", "expires_on", "groups", "limits", "kind", "status", "counters")
_LIMIT = _schema("limit_id", "unit", "period", "amount", "scope", "group", "product")
_COUNTER = _schema("limit_id", "spent", "period_start")
_RULES = _schema("categories", "accrual_rates", "channels", "payment_methods", "redemption_cap_bp",
                 "maturity_s", "expiry_months", "caps", "tz")
_CATEGORY = _schema("code", "accrues", "redeemable")
_RATE = _schema("channel", "payment_method", "rate_bp")
_CAPS = _schema("kind", "balance_cap_kop", "turnover_cap_kop")
_ACCOUNT = _schema("account_id", "kind", "activated", "status", "balance_kop", "turnover_month",
                   "turnover_kop", "lots", "cards")
_LOT = _schema("lot_id", "points", "matures_at_s", "expires_at_s")
_CLUB_CARD = _schema("card_no", "status")


def _groups(v: object, field: str) -> frozenset[ProductGroup]:
    items = _list(v, field, len(ProductGroup))
    groups = [_enum(g, f"{field}[{i}]", ProductGroup) for i, g in enumerate(items)]
    _unique(groups, field)
    return frozenset(groups)


def _stop_to(r: StopListEntry) -> dict[str, Any]:
    return {"card_no": r.card_no, "listed_at_utc_s": r.listed_at_utc_s}


def _stop_from(v: object) -> StopListEntry:
    card_no, at = _fields(v, "", *_STOP)
    return StopListEntry(_card_no(card_no), _int(at, "listed_at_utc_s"))


def _product_to(r: Product) -> dict[str, Any]:
    return {"code": r.code, "name": r.name, "group": int(r.group)}


def _product_from(v: object) -> Product:
    code, name, group = _fields(v, "", *_PRODUCT)
    return Product(_str(code, "code", _CODE), _str(name, "name"), _enum(group, "group", ProductGroup))


def _station_to(r: Station) -> dict[str, Any]:
    return {"station_id": r.station_id, "region": r.region, "groups": sorted(int(g) for g in r.groups),
            "prices_kop_per_l": dict(r.prices_kop_per_l), "max_fill_ml": r.max_fill_ml}


def _station_from(v: object) -> Station:
    sid, region, groups, prices, max_fill = _fields(v, "", *_STATION)
    if type(prices) is not dict:
        raise _bad("prices_kop_per_l", f"must be a map, got {_tn(prices)}")
    checked = {}
    for code, price in prices.items():
        checked[_str(code, "prices_kop_per_l key", _CODE)] = _int(price, f"prices_kop_per_l.{code}", 0,
                                                                  MAX_PRICE_KOP_PER_L)
    return Station(_int(sid, "station_id"), _int(region, "region"), _groups(groups, "groups"), checked,
                   _int(max_fill, "max_fill_ml", 1, MAX_VOLUME_ML))


def _tariff_to(r: TariffRow) -> dict[str, Any]:
    for d in r.discounts:
        if d.tariff != r.tariff:
            raise _bad("discounts", f"a rule of tariff {d.tariff!r} in the row of tariff {r.tariff!r}")
    return {"tariff": int(r.tariff), "discounts": [
        {"product": d.product, "where": int(d.where), "kind": int(d.kind), "value": d.value}
        for d in r.discounts]}


def _tariff_from(v: object) -> TariffRow:
    tariff, discounts = _fields(v, "", *_TARIFF)
    tariff = _enum(tariff, "tariff", Tariff)

    def rule(d: object) -> DiscountRule:
        product, where, kind, value = _fields(d, "", *_DISCOUNT)
        kind = _enum(kind, "kind", DiscountKind)
        top = BP_WHOLE if kind is DiscountKind.PERCENT_BP else MAX_PRICE_KOP_PER_L
        return DiscountRule(tariff, _str(product, "product", _CODE), _enum(where, "where", DiscountWhere),
                            kind, _int(value, "value", 0, top))
    return TariffRow(tariff, _each(_list(discounts, "discounts", 10_000), "discounts", rule))


# -- the balance rule's optional fields (authz.balance): present only when not empty --------

_SITE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _with_balance_fields(d: dict[str, Any], watermarks: tuple[Any, ...] = (), allowances: tuple[Any, ...] = ()) -> dict[str, Any]:
    if watermarks:
        d["watermarks"] = [[w.site_id, w.batch_seq] for w in watermarks]
    if allowances:
        d["allowances"] = [[a.site_id, a.amount_kop] for a in allowances]
    return d


def _balance_fields(v: object) -> tuple[object, tuple[Watermark, ...], tuple[Allowance, ...]]:
    """``v`` without its optional ``watermarks`` and ``allowances``, and those parsed."""
    if type(v) is not dict or ("watermarks" not in v and "allowances" not in v):
        return v, (), ()
    v = dict(v)
    pairs: list[tuple[Any, ...]] = []
    for name in ("watermarks", "allowances"):
        raw = v.pop(name, [])
        out: list[Any] = []
        for i, item in enumerate(_list(raw, name, MAX_WATERMARKS)):
            if type(item) is not list and type(item) is not tuple or len(item) != 2:
                raise _bad(f"{name}[{i}]", f"must be [site_id, number], got {_show(item)}")
            if name == "watermarks":
                out.append(Watermark(_str(item[0], f"{name}[{i}] site_id", _SITE_ID),
                                     _int(item[1], f"{name}[{i}] batch_seq", 0)))
            else:
                site = "*" if item[0] == "*" else _str(item[0], f"{name}[{i}] site_id", _SITE_ID)
                out.append(Allowance(site, _int(item[1], f"{name}[{i}] amount_kop", 0, MAX_AMOUNT_KOP)))
        _unique([x.site_id for x in out], f"{name}: site_id")
        pairs.append(tuple(out))
    return v, pairs[0], pairs[1]


def _contract_to(r: Contract) -> dict[str, Any]:
    return _with_balance_fields(
        {"contract_id": r.contract_id, "tz": r.tz, "home_region": r.home_region, "tariff": int(r.tariff),
         "balance_kop": r.balance_kop, "credit_line_kop": r.credit_line_kop,
         "chosen_station_ids": list(r.chosen_station_ids)}, r.watermarks, r.allowances)


def _contract_from(v: object) -> Contract:
    v, watermarks, allowances = _balance_fields(v)
    cid, tz, home, tariff, balance, credit, chosen = _fields(v, "", *_CONTRACT)
    chosen = tuple(_int(s, f"chosen_station_ids[{i}]")
                   for i, s in enumerate(_list(chosen, "chosen_station_ids", 3)))
    return Contract(_int(cid, "contract_id"), _str(tz, "tz", _TZ), _int(home, "home_region"),
                    _enum(tariff, "tariff", Tariff), _int(balance, "balance_kop", -MAX_AMOUNT_KOP, MAX_AMOUNT_KOP),
                    _int(credit, "credit_line_kop", 0, MAX_AMOUNT_KOP), chosen, watermarks, allowances)


def _limit_to(lim: Limit) -> dict[str, Any]:
    d = {"limit_id": lim.limit_id, "unit": int(lim.unit), "period": int(lim.period), "amount": lim.amount,
         "scope": int(lim.scope), "group": None if lim.group is None else int(lim.group), "product": lim.product}
    if lim.on_breach:  # not DECLINE (0)
        d["on_breach"] = int(lim.on_breach)
    return d


@lru_cache(maxsize=4_096)
def _groups_to(groups: frozenset[Any]) -> tuple[int, ...]:
    """A card's groups as the row carries them, in order (cached: cards share a few sets;
    the caller copies it into the list the map holds: the native row readers take lists)."""
    return tuple(sorted(int(g) for g in groups))


def _fuel_card_to(r: FuelCardRow) -> dict[str, Any]:
    c = r.card
    d = {"card_no": c.card_no, "contract_id": c.contract_id,
         "expires_on": c.expires_on.isoformat() if isinstance(c.expires_on, date) else c.expires_on,
         "groups": list(_groups_to(c.groups)) if type(c.groups) is frozenset else sorted(int(g) for g in c.groups),
         "limits": [_limit_to(lim) for lim in c.limits],
         "kind": int(c.kind), "status": int(c.status),
         "counters": [{"limit_id": lid, "spent": ctr.spent, "period_start": ctr.period_start}
                      for lid, ctr in r.counters]}
    if c.products is not None or c.windows or c.station_scope or c.station_ids or c.on_breach:
        _with_card_controls(d, c)  # (few cards have any: the common case costs five tests)
    if r.watermarks:
        _with_balance_fields(d, r.watermarks)
    return d


# -- the fleet controls' optional fields (issue 11): present only when not the default ------
# (a card without them is exactly the row as before, byte for byte)

_CONTROLS = ("products", "windows", "station_scope", "station_ids", "on_breach")
_MAX_CARD_PRODUCTS = 1_000


def _with_card_controls(d: dict[str, Any], c: FuelCard) -> dict[str, Any]:
    if c.products is not None:
        d["products"] = sorted(c.products)
    if c.windows:
        d["windows"] = [[sorted(int(x) for x in w.days), w.start_min, w.end_min] for w in c.windows]
    if c.station_scope is not StationScope.NETWORK:
        d["station_scope"] = int(c.station_scope)
    if c.station_ids:
        d["station_ids"] = sorted(c.station_ids)
    if c.on_breach is not OnBreach.DECLINE:
        d["on_breach"] = int(c.on_breach)
    return d


def card_controls_to_map(card: FuelCard) -> dict[str, Any]:
    """The fleet controls of ``card`` that are not the default, as the fuel-card row carries
    them (empty for a card without any). The host stores them in this form too."""
    return _with_card_controls({}, card)


def card_controls_from_map(v: object) -> dict[str, Any]:
    """The FuelCard keywords of a map of fleet controls (:func:`card_controls_to_map`'s),
    with the row's checks; WireFormatError for anything else in it."""
    rest, out = _card_controls(v)
    if type(rest) is not dict or rest:
        raise _bad("controls", f"a map of {', '.join(_CONTROLS)} only, got {_show(rest)}")
    return out


def _window_from(v: object) -> TimeWindow:
    if type(v) is not list and type(v) is not tuple or len(v) != 3:
        raise _bad("", f"a time window is [days, start_min, end_min], got {_show(v)}")
    days = tuple(_int(x, f"days[{i}]", 0, 6) for i, x in enumerate(_list(v[0], "days", 7)))
    if not days:
        raise _bad("days", "a time window needs at least one day (0 Monday .. 6 Sunday)")
    _unique(days, "days")
    start, end = _int(v[1], "start_min", 0, DAY_MINUTES - 1), _int(v[2], "end_min", 1, DAY_MINUTES)
    if start == end:
        raise _bad("end_min", f"a time window of zero length (start_min = end_min = {start})")
    return TimeWindow(frozenset(days), start, end)


def _card_controls(v: object) -> tuple[object, dict[str, Any]]:
    """``v`` without the fleet controls' optional fields, and those parsed (FuelCard keywords)."""
    if type(v) is not dict or not any(k in v for k in _CONTROLS):
        return v, {}
    v = dict(v)
    out: dict[str, Any] = {}
    if "products" in v:
        raw = _list(v.pop("products"), "products", _MAX_CARD_PRODUCTS)
        if not raw:
            raise _bad("products", "an empty list allows nothing: leave the field out to allow every "
                                   "product of the card's groups")
        codes = [_str(x, f"products[{i}]", _CODE) for i, x in enumerate(raw)]
        _unique(codes, "products")
        out["products"] = frozenset(codes)
    if "windows" in v:
        raw = _list(v.pop("windows"), "windows", MAX_WINDOWS)
        if not raw:
            raise _bad("windows", "an empty list: leave the field out for a card that may buy at any time")
        out["windows"] = _each(raw, "windows", _window_from)
    scope = StationScope.NETWORK
    if "station_scope" in v:
        scope = _enum(v.pop("station_scope"), "station_scope", StationScope)
        if scope is StationScope.NETWORK:
            raise _bad("station_scope", "0 (NETWORK) is the default: leave the field out")
        out["station_scope"] = scope
    if "station_ids" in v:
        raw = _list(v.pop("station_ids"), "station_ids", MAX_CARD_STATIONS)
        ids = [_int(x, f"station_ids[{i}]") for i, x in enumerate(raw)]
        _unique(ids, "station_ids")
        if scope is not StationScope.LISTED or not ids:
            raise _bad("station_ids", f"a card lists stations only when its station_scope is "
                                      f"{int(StationScope.LISTED)} (LISTED), and then at least one")
        out["station_ids"] = frozenset(ids)
    elif scope is StationScope.LISTED:
        raise _bad("station_ids", "missing: a card with station_scope 2 (LISTED) lists its stations")
    if "on_breach" in v:
        breach = _enum(v.pop("on_breach"), "on_breach", OnBreach)
        if breach is OnBreach.DECLINE:
            raise _bad("on_breach", "0 (DECLINE) is the default: leave the field out")
        out["on_breach"] = breach
    return v, out


def _date(v: object, field: str) -> date:
    if not isinstance(v, str) or not _DATE.fullmatch(v):
        raise _bad(field, f"must be a date 'YYYY-MM-DD', got {_show(v)}")
    try:
        return date.fromisoformat(v)
    except ValueError:
        raise _bad(field, f"no such day {v!r}") from None


def _limit_from(v: object) -> Limit:
    breach = OnBreach.DECLINE
    if type(v) is dict and "on_breach" in v:
        v = dict(v)
        breach = _enum(v.pop("on_breach"), "on_breach", OnBreach)
        if breach is OnBreach.DECLINE:
            raise _bad("on_breach", "0 (DECLINE) is the default: leave the field out")
    lid, unit, period, amount, scope, group, product = _fields(v, "", *_LIMIT)
    lim = Limit(_int(lid, "limit_id"), _enum(unit, "unit", LimitUnit), _enum(period, "period", Period),
                _int(amount, "amount", 0, MAX_AMOUNT_KOP), _enum(scope, "scope", Scope),
                _opt(group, "group", _enum, ProductGroup), _opt(product, "product", _str, _CODE), breach)
    if lim.unit is LimitUnit.PURCHASES and lim.period is Period.TRANSACTION:
        raise _bad("period", "a count of purchases needs a period (day .. year, lifetime), not per transaction")
    return lim


def _fuel_card_from(v: object) -> FuelCardRow:
    v, watermarks, allowances = _balance_fields(v)
    if allowances:
        raise _bad("allowances", "a fuel card row carries no allowances")
    v, controls = _card_controls(v)
    card_no, cid, expires, groups, limits, kind, status, counters = _fields(v, "", *_CARD)
    limits = _each(_list(limits, "limits", 1_000), "limits", _limit_from)
    _unique([lim.limit_id for lim in limits], "limits: limit_id")

    def counter(c: object) -> tuple[int, LimitCounter]:
        lid, spent, start = _fields(c, "", *_COUNTER)
        return _int(lid, "limit_id"), LimitCounter(_int(spent, "spent", INT64_MIN), _int(start, "period_start", INT64_MIN))
    ctrs = _each(_list(counters, "counters", 1_000), "counters", counter)
    ids = [lid for lid, _ in ctrs]
    _unique(ids, "counters: limit_id")
    known = {lim.limit_id for lim in limits}
    for lid in ids:
        if lid not in known:
            raise _bad("counters", f"a counter of limit {lid}, which the card does not have")
    card = FuelCard(_card_no(card_no), _int(cid, "contract_id"), _date(expires, "expires_on"),
                    _groups(groups, "groups"), limits, _enum(kind, "kind", CardKind),
                    _enum(status, "status", CardStatus), **controls)
    return FuelCardRow(card, ctrs, watermarks)


def _rules_to(r: ClubRules) -> dict[str, Any]:
    return {"categories": [{"code": c.code, "accrues": c.accrues, "redeemable": c.redeemable} for c in r.categories],
            "accrual_rates": [{"channel": a.channel, "payment_method": a.payment_method, "rate_bp": a.rate_bp}
                              for a in r.accrual_rates],
            "channels": list(r.channels), "payment_methods": list(r.payment_methods),
            "redemption_cap_bp": r.redemption_cap_bp, "maturity_s": r.maturity_s,
            "expiry_months": r.expiry_months,
            "caps": [{"kind": int(k), "balance_cap_kop": c.balance_cap_kop, "turnover_cap_kop": c.turnover_cap_kop}
                     for k, c in sorted(r.caps.items())],
            "tz": r.tz}


def _code_or_any(v: object, field: str) -> str:
    return "*" if v == "*" else _str(v, field, _CODE)


def _rules_from(v: object) -> ClubRules:
    cats, rates, channels, methods, cap_bp, maturity, expiry, caps, tz = _fields(v, "", *_RULES)

    def category(c: object) -> Category:
        code, accrues, redeemable = _fields(c, "", *_CATEGORY)
        return Category(_str(code, "code", _CODE), _bool(accrues, "accrues"), _bool(redeemable, "redeemable"))

    def rate(a: object) -> AccrualRate:
        channel, method, bp = _fields(a, "", *_RATE)
        return AccrualRate(_code_or_any(channel, "channel"), _code_or_any(method, "payment_method"),
                           _int(bp, "rate_bp", 0, BP_WHOLE))

    def kind_caps(c: object) -> tuple[ClubCardKind, KindCaps]:
        kind, balance, turnover = _fields(c, "", *_CAPS)
        return _enum(kind, "kind", ClubCardKind), KindCaps(_int(balance, "balance_cap_kop", 0, MAX_AMOUNT_KOP),
                                                           _int(turnover, "turnover_cap_kop", 0, MAX_AMOUNT_KOP))
    categories = _each(_list(cats, "categories", 1_000), "categories", category)
    _unique([c.code for c in categories], "categories: code")
    channels = tuple(_str(c, f"channels[{i}]", _CODE) for i, c in enumerate(_list(channels, "channels", 100)))
    _unique(channels, "channels")
    methods = tuple(_str(m, f"payment_methods[{i}]", _CODE) for i, m in enumerate(_list(methods, "payment_methods", 100)))
    _unique(methods, "payment_methods")
    cap_pairs = _each(_list(caps, "caps", len(ClubCardKind)), "caps", kind_caps)
    _unique([k for k, _ in cap_pairs], "caps: kind")
    return ClubRules(categories=categories, accrual_rates=_each(_list(rates, "accrual_rates", 1_000),
                                                                "accrual_rates", rate),
                     channels=channels, payment_methods=methods,
                     redemption_cap_bp=_int(cap_bp, "redemption_cap_bp", 0, BP_WHOLE),
                     maturity_s=_int(maturity, "maturity_s"), expiry_months=_int(expiry, "expiry_months", 0, 1_200),
                     caps=dict(cap_pairs), tz=_str(tz, "tz", _TZ))


def _account_to(r: ClubAccountRow) -> dict[str, Any]:
    a = r.account
    for c in r.cards:
        if c.account_id != a.account_id:
            raise _bad("cards", f"card {mask_card_no(c.card_no)} points to account {c.account_id}, "
                                f"not to the row's {a.account_id}")
    return {"account_id": a.account_id, "kind": int(a.kind), "activated": a.activated, "status": int(a.status),
            "balance_kop": a.balance_kop, "turnover_month": a.turnover_month, "turnover_kop": a.turnover_kop,
            "lots": [{"lot_id": lot.lot_id, "points": lot.points, "matures_at_s": lot.matures_at_s,
                      "expires_at_s": lot.expires_at_s} for lot in a.lots],
            "cards": [{"card_no": c.card_no, "status": int(c.status)} for c in r.cards]} \
        | _with_balance_fields({}, r.watermarks)


def _account_from(v: object) -> ClubAccountRow:
    v, watermarks, allowances = _balance_fields(v)
    if allowances:
        raise _bad("allowances", "a club account row carries no allowances")
    aid, kind, activated, status, balance, month, turnover, lots, cards = _fields(v, "", *_ACCOUNT)
    aid = _int(aid, "account_id")

    def lot(v: object) -> PointLot:
        lot_id, points, matures, expires = _fields(v, "", *_LOT)
        return PointLot(_int(lot_id, "lot_id"), _int(points, "points", 0, MAX_AMOUNT_KOP),
                        _int(matures, "matures_at_s", INT64_MIN), _int(expires, "expires_at_s", INT64_MIN))

    def card(v: object) -> ClubCard:
        card_no, status = _fields(v, "", *_CLUB_CARD)
        return ClubCard(_card_no(card_no), aid, _enum(status, "status", ClubStatus))
    lots = _each(_list(lots, "lots", 10_000), "lots", lot)
    _unique([x.lot_id for x in lots], "lots: lot_id")
    cards = _each(_list(cards, "cards", 1_000), "cards", card)
    _unique([c.card_no for c in cards], "cards: card_no", cards=True)
    account = ClubAccount(aid, _enum(kind, "kind", ClubCardKind), _bool(activated, "activated"),
                          _enum(status, "status", ClubStatus),
                          _int(balance, "balance_kop", -MAX_AMOUNT_KOP, MAX_AMOUNT_KOP),
                          _int(month, "turnover_month", INT64_MIN), _int(turnover, "turnover_kop", 0, MAX_AMOUNT_KOP),
                          lots)
    return ClubAccountRow(account, cards, watermarks)


def _key_int(v: object, field: str) -> int:
    return _int(v, field)


def _key_tariff(v: object, field: str) -> int:
    return int(_enum(v, field, Tariff))


def _key_rules(v: object, field: str) -> str:
    if v != CLUB_RULES_KEY:
        raise _bad(field, f"the club_rules table has one key, {CLUB_RULES_KEY!r}; got {_show(v)}")
    return CLUB_RULES_KEY


@dataclass(frozen=True, slots=True)
class _RowCodec:
    cls: type
    to_wire: Callable[[Any], dict[str, Any]]
    from_wire: Callable[[object], Any]
    key: Callable[[object, str], Any]  # checks a delete's key


_ROWS: dict[Table, _RowCodec] = {
    Table.STOP_LIST: _RowCodec(StopListEntry, _stop_to, _stop_from, _card_no),
    Table.PRODUCTS: _RowCodec(Product, _product_to, _product_from, lambda v, f: _str(v, f, _CODE)),
    Table.STATIONS: _RowCodec(Station, _station_to, _station_from, _key_int),
    Table.TARIFFS: _RowCodec(TariffRow, _tariff_to, _tariff_from, _key_tariff),
    Table.CONTRACTS: _RowCodec(Contract, _contract_to, _contract_from, _key_int),
    Table.FUEL_CARDS: _RowCodec(FuelCardRow, _fuel_card_to, _fuel_card_from, _card_no),
    Table.CLUB_RULES: _RowCodec(ClubRules, _rules_to, _rules_from, _key_rules),
    Table.CLUB_ACCOUNTS: _RowCodec(ClubAccountRow, _account_to, _account_from, _key_int),
}


#: Tables whose keys are card numbers, which messages show masked.
_CARD_KEYED = frozenset({Table.STOP_LIST, Table.FUEL_CARDS})


def _balanced_fast(table: Table, items: Sequence[Any]) -> tuple[Any, ...] | None:
    """The fast path for rows that carry the balance rule's watermarks (and a contract's
    allowances), as every row ingest changed does: those fields are checked as the row
    checks do (:func:`_balance_fields`), the rest of each row by :mod:`wire.rows_bulk`. None
    whenever either would refuse or not say (the caller then checks row by row, which gives
    the exact refusal)."""
    if table is not Table.FUEL_CARDS and table is not Table.CONTRACTS:
        return None
    try:
        split = [_balance_fields(v) for v in items]
    except WireFormatError:
        return None
    rows = rows_bulk.parse_rows(table, [v for v, _, _ in split])
    if rows is None:
        return None
    if table is Table.FUEL_CARDS:
        if any(allowances for _, _, allowances in split):
            return None
        return tuple(FuelCardRow(r.card, r.counters, wm) if wm else r for r, (_, wm, _) in zip(rows, split))
    return tuple(Contract(r.contract_id, r.tz, r.home_region, r.tariff, r.balance_kop, r.credit_line_kop,
                          r.chosen_station_ids, wm, al) if wm or al else r for r, (_, wm, al) in zip(rows, split))


def _rows_from(table: Table, rows: object, field: str, limits: Limits) -> tuple[Any, ...]:
    items = _list(rows, field, limits.max_rows)
    out = rows_bulk.parse_rows(table, items)  # the fast path of the big tables; None: check row by row
    if out is None:
        out = _balanced_fast(table, items)
    if out is None:
        out = _each(items, field, _ROWS[table].from_wire)
    _unique([row_key(table, r) for r in out], f"{field}: key", cards=table in _CARD_KEYED)
    return out


def _rows_to(table: Table, rows: Sequence[Any]) -> list[dict[str, Any]]:
    codec = _ROWS[table]
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, codec.cls):
            raise _bad(f"row {i}", f"a {table.value} row is a {codec.cls.__name__}, got {type(r).__name__}")
        out.append(codec.to_wire(r))
    return out


# --- payloads -------------------------------------------------------------------------------

_RECORD = _schema("record_id", "lane", "txn_id", "kind", "at_utc_s", "body")
_BATCH = _schema("batch_seq", "created_utc_s", "records")
_PRESENCE = _schema("online", "at_utc_s", "software_version", "replica_versions")
_SNAP_REQ = _schema("table", "have_version")
_ACK = _schema("up_to_seq", "rejected")
_REJECTION = _schema("batch_seq", "reason")
_SNAPSHOT = _schema("table", "version", "part", "parts", "rows")
_DELTA = _schema("table", "from_version", "to_version", "upserts", "deletes")
_TABLES = {t.value: t for t in Table}


def _table(v: object, field: str = "table") -> Table:
    if isinstance(v, str) and v in _TABLES:
        return _TABLES[v]
    raise _bad(field, f"unknown table {v[:40] if isinstance(v, str) else _show(v)!r}; the tables are {', '.join(_TABLES)}")


def _record_to(r: WireRecord) -> dict[str, Any]:
    return {"record_id": r.record_id, "lane": r.lane, "txn_id": r.txn_id, "kind": r.kind,
            "at_utc_s": r.at_utc_s, "body": r.body}


def _record_from(v: object, site_id: str, limits: Limits) -> WireRecord:
    record_id, lane, txn_id, kind, at, body = _fields(v, "", *_RECORD)
    prefix = site_id + "-"
    if not (type(record_id) is str and record_id.startswith(prefix) and _ULID.fullmatch(record_id, len(prefix))):
        raise _bad("record_id", f"must be '{site_id}-<ULID>' (the sending site's), got {_show(record_id, 100)}")
    lane = _str(lane, "lane", SITE_ID_RE)
    if type(txn_id) is not str or not txn_id.startswith(site_id + ":"):
        raise _bad("txn_id", f"must be '{site_id}:<lane>-<ULID>' (the sending site's), got {_show(txn_id, 100)}")
    txn_lane, dash, ulid = txn_id[len(site_id) + 1:].rpartition("-")
    if not dash or not SITE_ID_RE.fullmatch(txn_lane) or not _ULID.fullmatch(ulid):
        raise _bad("txn_id", f"must be '{site_id}:<lane>-<ULID>', got {txn_id[:100]!r}")
    kind = _str(kind, "kind", _KIND)
    at = _int(at, "at_utc_s")
    if type(body) is not dict:
        raise _bad("body", f"must be a map, got {_tn(body)}")
    if not _json_ok(body, limits.max_body_depth):
        try:
            _json(body, 0, limits.max_body_depth)
        except WireFormatError as e:
            raise WireFormatError(f"body{e}") from None
    return WireRecord(record_id, site_id, lane, txn_id, kind, at, body)


@lru_cache(maxsize=4096)
def _site_patterns(site_id: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The record id and transaction id patterns of one site's records, compiled once."""
    s = re.escape(site_id)
    return (re.compile(f"{s}-{_ULID.pattern}"),
            re.compile(f"{s}:{SITE_ID_RE.pattern}-{_ULID.pattern}"))


_RECORD_VALUES = _RECORD[2]


def _records_fast_py(records: list[Any], site_id: str, limits: Limits) -> tuple[WireRecord, ...] | None:
    """The records of a batch when every one is well formed, checked as
    :func:`_record_from` checks them but in one pass, with the record and transaction id
    patterns compiled per site and each body walked once (:func:`_json_ok`). None if
    anything is off: the careful path then names it in the same words as ever."""
    rid_re, txn_re = _site_patterns(site_id)
    rid_ok, txn_ok, lane_ok, kind_ok = rid_re.fullmatch, txn_re.fullmatch, SITE_ID_RE.fullmatch, _KIND.fullmatch
    keyset, depth, hi = _RECORD[1], limits.max_body_depth, INT64_MAX
    out = []
    for r in records:
        if type(r) is not dict or r.keys() != keyset:
            return None
        rid, lane, txn, kind, at, body = _RECORD_VALUES(r)
        if not (type(rid) is str and rid_ok(rid) and type(lane) is str and lane_ok(lane)
                and type(txn) is str and txn_ok(txn) and type(kind) is str and kind_ok(kind)
                and type(at) is int and 0 <= at <= hi and type(body) is dict):
            return None
        if not _json_ok(body, depth):
            return None
        out.append(WireRecord(rid, site_id, lane, txn, kind, at, body))
    if len({w.record_id for w in out}) != len(out):
        return None
    return tuple(out)


_NATIVE_MAX_DEPTH = 256  # the native body walk recurses: deeper limits take the Python walk


def _records_fast(records: list[Any], site_id: str, limits: Limits) -> tuple[WireRecord, ...] | None:
    """:func:`_records_fast_py`'s answer, from the native check (``wire._wirecheck``: the
    same tests on the characters, and the ``WireRecord`` fields set in C; 1.2 against 5.7 us
    per record). A body depth limit over 256 takes the Python walk (the native one
    recurses). tests/wire/test_native_records.py holds the two to the same answers."""
    if limits.max_body_depth > _NATIVE_MAX_DEPTH:
        return _records_fast_py(records, site_id, limits)
    out: tuple[WireRecord, ...] | None = _native_records(records, site_id, limits.max_body_depth,
                                                         _RECORD[1], WireRecord)
    return out


def _batch_from(p: object, site_id: str, limits: Limits) -> Batch:
    seq, created, records = _fields(p, "payload", *_BATCH)
    seq = _int(seq, "batch_seq", 1)
    records = _list(records, "records", limits.max_records)
    fast = _records_fast(records, site_id, limits) if type(records) is list else None
    if fast is not None:
        return Batch(site_id, seq, fast, _int(created, "created_utc_s"))
    out = []
    ids = set()
    for i, r in enumerate(records):
        try:
            rec = _record_from(r, site_id, limits)
        except WireFormatError as e:
            rid = r.get("record_id") if type(r) is dict else None
            named = f" ({rid[:100]})" if type(rid) is str else ""
            raise type(e)(f"batch {seq} record {i}{named} {e}") from None
        if rec.record_id in ids:
            raise WireFormatError(f"batch {seq} record {i}: record id {rec.record_id!r} appears twice in the batch")
        ids.add(rec.record_id)
        out.append(rec)
    return Batch(site_id, seq, tuple(out), _int(created, "created_utc_s"))


def _batch_to(m: Batch) -> dict[str, Any]:
    for i, r in enumerate(m.records):
        if not isinstance(r, WireRecord):
            raise _bad(f"records[{i}]", f"must be a WireRecord, got {type(r).__name__}")
        if r.site_id != m.site_id:
            raise _bad(f"records[{i}]", f"a record of site {r.site_id!r} in a batch of site {m.site_id!r}")
    return {"batch_seq": m.batch_seq, "created_utc_s": m.created_utc_s,
            "records": [_record_to(r) for r in m.records]}


def _presence_from(p: object, site_id: str, limits: Limits) -> Presence:
    online, at, software, versions = _fields(p, "payload", *_PRESENCE)
    if type(versions) is not dict:
        raise _bad("replica_versions", f"must be a map, got {_tn(versions)}")
    checked = {_table(t, "replica_versions key"): _int(n, f"replica_versions.{t}") for t, n in versions.items()}
    return Presence(site_id, _bool(online, "online"), _int(at, "at_utc_s"),
                    _str(software, "software_version", _VERSION_STR), checked)


def _presence_to(m: Presence) -> dict[str, Any]:
    return {"online": m.online, "at_utc_s": m.at_utc_s, "software_version": m.software_version,
            "replica_versions": {str(t): n for t, n in dict(m.replica_versions).items()}}


def _snap_req_from(p: object, site_id: str, limits: Limits) -> SnapshotRequest:
    table, have = _fields(p, "payload", *_SNAP_REQ)
    return SnapshotRequest(site_id, _table(table), _int(have, "have_version"))


def _snap_req_to(m: SnapshotRequest) -> dict[str, Any]:
    return {"table": str(m.table), "have_version": m.have_version}


def _ack_from(p: object, site_id: str, limits: Limits) -> Ack:
    up_to, rejected = _fields(p, "payload", *_ACK)
    up_to = _int(up_to, "up_to_seq")

    def rejection(v: object) -> Rejection:
        seq, reason = _fields(v, "", *_REJECTION)
        reason = _str(reason, "reason", max_len=_MAX_REASON)
        if not reason:
            raise _bad("reason", "empty: say why the batch is refused")
        return Rejection(_int(seq, "batch_seq (1..up_to_seq)", 1, up_to), reason)
    out = _each(_list(rejected, "rejected", limits.max_rejections), "rejected", rejection)
    for a, b in zip(out, out[1:]):
        if a.batch_seq >= b.batch_seq:
            raise _bad("rejected", f"batch numbers must increase, got {a.batch_seq} then {b.batch_seq}")
    return Ack(site_id, up_to, out)


def _ack_to(m: Ack) -> dict[str, Any]:
    for i, r in enumerate(m.rejected):
        if not isinstance(r, Rejection):
            raise _bad(f"rejected[{i}]", f"must be a Rejection, got {type(r).__name__}")
    return {"up_to_seq": m.up_to_seq, "rejected": [{"batch_seq": r.batch_seq, "reason": r.reason}
                                                   for r in m.rejected]}


def _snapshot_from(p: object, site_id: None, limits: Limits) -> ReplicaSnapshot:
    table, version, part, parts, rows = _fields(p, "payload", *_SNAPSHOT)
    table = _table(table)
    parts = _int(parts, "parts", 1, MAX_SNAPSHOT_PARTS)
    return ReplicaSnapshot(table, _int(version, "version", 1), _int(part, "part", 0, parts - 1), parts,
                           _rows_from(table, rows, "rows", limits))


def _snapshot_to(m: ReplicaSnapshot) -> dict[str, Any]:
    table = _table(m.table)
    return {"table": str(table), "version": m.version, "part": m.part, "parts": m.parts,
            "rows": _rows_to(table, m.rows)}


def _delta_from(p: object, site_id: None, limits: Limits) -> ReplicaDelta:
    table, from_v, to_v, upserts, deletes = _fields(p, "payload", *_DELTA)
    table = _table(table)
    from_v = _int(from_v, "from_version", 0, INT64_MAX - 1)
    to_v = _int(to_v, "to_version (greater than from_version)", from_v + 1)
    deletes = _list(deletes, "deletes", limits.max_rows)
    upserts = _list(upserts, "upserts", limits.max_rows - len(deletes))
    rows = _rows_from(table, upserts, "upserts", limits)
    key = _ROWS[table].key
    gone = tuple(key(k, f"deletes[{i}]") for i, k in enumerate(deletes))
    _unique(gone, "deletes", cards=table in _CARD_KEYED)
    both = {row_key(table, r) for r in rows}.intersection(gone)
    if both:
        k = sorted(both, key=str)[0]
        raise _bad("deletes", f"key {mask_card_no(k) if table in _CARD_KEYED else repr(k)} is both "
                              "upserted and deleted")
    return ReplicaDelta(table, from_v, to_v, rows, gone)


def _delta_to(m: ReplicaDelta) -> dict[str, Any]:
    table = _table(m.table)
    return {"table": str(table), "from_version": m.from_version, "to_version": m.to_version,
            "upserts": _rows_to(table, m.upserts), "deletes": list(m.deletes)}


_PAYLOADS: dict[MessageType, tuple[Callable[[Any], dict[str, Any]], Callable[[object, Any, Limits], Message]]] = {
    MessageType.BATCH: (_batch_to, _batch_from),
    MessageType.PRESENCE: (_presence_to, _presence_from),
    MessageType.SNAPSHOT_REQUEST: (_snap_req_to, _snap_req_from),
    MessageType.ACK: (_ack_to, _ack_from),
    MessageType.SNAPSHOT: (_snapshot_to, _snapshot_from),
    MessageType.DELTA: (_delta_to, _delta_from),
}


def _what(mtype: MessageType, site: str | None) -> str:
    return f"{mtype.value} of site {site!r}" if site is not None else f"{mtype.value}"


# --- frames ---------------------------------------------------------------------------------

def _signer(mtype: MessageType, site: str | None, keys: SiteKeys) -> tuple[bytes, Callable[[bytes], bytes]]:
    """The signature element's header and the function that signs a frame of ``mtype``.
    Raises :class:`WireSignatureError` if ``keys`` cannot sign it."""
    if mtype in _SITE_TYPES:
        key = keys.site(site)  # type: ignore[arg-type]
        return _MAC_HEADER, lambda data: mac(key, data)
    signing = keys.replica_signing
    return _SIG_HEADER, lambda data: replica_sign(signing, data)


def _pack(obj: object) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


_ROW_FIELD = {MessageType.SNAPSHOT: "rows", MessageType.DELTA: "upserts"}


def _rows_checked_payload(mtype: MessageType, payload: dict[str, Any], site: None, limits: Limits) -> None:
    """decode's checks of a replica payload but for its rows' contents: every other field
    (table, versions, parts, deletes) as decode checks it, and the rows' count."""
    field = _ROW_FIELD[mtype]
    rows = payload[field]
    _PAYLOADS[mtype][1]({**payload, field: []}, site, limits)
    cap = limits.max_rows - (len(payload["deletes"]) if mtype is MessageType.DELTA else 0)
    if len(rows) > cap:
        raise WireTooLarge(f"{field}: {len(rows)} items, more than the limit of {cap}")


def encode(msg: Message, keys: SiteKeys, *, limits: Limits = DEFAULT_LIMITS, rows_checked: bool = False) -> bytes:
    """The signed frame of ``msg``: site messages and acks with an HMAC under the site's key,
    replica messages with an Ed25519 signature by the replica signing key (host only).

    Raises :class:`~wire.errors.WireFormatError` if ``msg`` is not one that :func:`decode`
    would return (a float in a body, a record id of another site, an enum value out of
    range, ...), :class:`~wire.errors.WireTooLarge` if its frame is over
    ``limits.max_message_bytes`` (send fewer records or rows), and
    :class:`~wire.errors.WireSignatureError` if ``keys`` lacks the key to sign with.

    ``rows_checked``: for a snapshot or delta whose rows the caller built itself from data
    it holds checked (the host's publisher, from its ledger), the rows' contents are not
    checked again as decode checks them; everything else is (the message's other fields,
    the rows' count and types, the frame's size). Validation belongs where bytes come from
    outside: every site still checks every row it receives. Ignored for other messages.
    """
    mtype = _TYPE_OF_CLASS.get(type(msg))
    if mtype is None:
        raise WireFormatError(f"not a wire message: {type(msg).__name__}")
    site = msg.site_id if mtype in _SITE_TYPES else None  # type: ignore[union-attr]
    if site is not None and not (type(site) is str and SITE_ID_RE.fullmatch(site)):
        raise WireFormatError(f"{mtype.value}: malformed site id {site!r}")
    sig_header, sign = _signer(mtype, site, keys)
    to_wire, from_wire = _PAYLOADS[mtype]
    try:
        payload = to_wire(msg)
    except WireFormatError as e:
        raise type(e)(f"{_what(mtype, site)}: {e}") from None
    except (AttributeError, TypeError, ValueError) as e:
        raise WireFormatError(f"{_what(mtype, site)}: cannot encode a field: {e}") from None
    try:
        if rows_checked and mtype in _ROW_FIELD:
            _rows_checked_payload(mtype, payload, None, limits)
        else:
            from_wire(payload, site, limits)  # the checks decode runs: refuse what it would refuse
    except WireFormatError as e:
        raise type(e)(f"{_what(mtype, site)}: {e}") from None
    try:
        signed = msgpack.Packer(use_bin_type=True).pack_array_header(_FRAME_FIELDS) + \
            _pack(PROTOCOL_VERSION) + _pack(mtype.value) + _pack(site) + _pack(payload)
    except (TypeError, ValueError, OverflowError) as e:  # e.g. an unpaired surrogate in a str
        raise WireFormatError(f"{_what(mtype, site)}: cannot encode: {e}") from None
    size = len(signed) + len(sig_header) + sig_header[1]
    if size > limits.max_message_bytes:
        raise WireTooLarge(f"{_what(mtype, site)} encodes to {size} bytes, over the limit of "
                           f"{limits.max_message_bytes}: send fewer records or rows per message")
    out: bytes = signed + sig_header + sign(signed)
    return out


def _pairs(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    """A decoded map, refusing a key that appears twice (which value counts would depend on
    the decoder). Binary keys get through here and are refused where the map is read."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[Any] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"map key {str(dup)[:40]!r} appears twice")
    return out


def _no_ext(code: int, data: bytes) -> object:
    raise ValueError(f"extension type {code} is not allowed")


_FAST_OPTS: dict[str, Any] = {"raw": False, "strict_map_key": True, "max_ext_len": 0, "ext_hook": _no_ext,
                              "use_list": True}


def _unpack_fast(data: bytes) -> tuple[Any, Any, Any, Any] | None:
    """:func:`_unpack_strict`'s answer for a frame it reads, in one native pass over the
    bytes (``wire._wirecheck.read_frame``): each map is checked for a key twice as it is
    built, so there is no repack. None for anything else (malformed, another version, a key
    twice, a map key that is not a str, a float, an extension type, bytes that are not
    UTF-8): the strict reader then says what is wrong, with the same words as ever.
    tests/wire/test_native_frame.py holds it to the strict reader's answers."""
    out = _native_frame(data, _FRAME_FIELDS)
    if out is None:
        return None
    version, mtype_raw, site, payload, tag = out
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        return None
    return mtype_raw, site, payload, tag


def _unpack_fast_py(data: bytes) -> tuple[Any, Any, Any, Any] | None:
    """The fast reader before the native one (kept as a reference for the tests and
    ``benchmarks.sync_stages``): :func:`_unpack_strict`'s answer for a well-formed frame, the frame is
    read into plain dicts by msgpack's C code (no Python call per map), then its payload is
    packed again and must come out byte for byte as it came in, which proves no map held a
    key twice (the dict would have fewer entries: fewer bytes). None for anything else
    (malformed, another version, a key twice, a value not packed the shortest way): the
    strict reader then says what is wrong, with the same words as ever."""
    unpacker = msgpack.Unpacker(max_buffer_size=len(data), **_FAST_OPTS)
    unpacker.feed(data)
    try:
        if unpacker.read_array_header() != _FRAME_FIELDS:
            return None
        version = unpacker.unpack()
        if type(version) is not int or version not in SUPPORTED_VERSIONS:
            return None
        mtype_raw, site = unpacker.unpack(), unpacker.unpack()
        start = unpacker.tell()
        payload = unpacker.unpack()
        end = unpacker.tell()
        tag = unpacker.unpack()
        if unpacker.tell() != len(data):
            return None
    except Exception:  # noqa: BLE001 - whatever is wrong, the strict reader names it
        return None
    for v in (mtype_raw, site, tag):  # scalars hold no map: only the payload can hide a repeated key
        if isinstance(v, (dict, list)):
            return None
    try:
        if _pack(payload) != data[start:end]:
            return None
    except Exception:  # noqa: BLE001 - e.g. an integer msgpack reads but cannot pack back
        return None
    return mtype_raw, site, payload, tag


def _unpack_strict(data: bytes) -> tuple[Any, Any, Any, Any]:
    """The frame's type, site, payload and signature elements, read under every MessagePack
    rule (a map key twice is refused as the map is read); raises :class:`WireError` naming
    the first thing wrong."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=len(data), max_ext_len=0,
                                ext_hook=_no_ext, object_pairs_hook=_pairs, use_list=True)
    unpacker.feed(data)
    try:
        try:
            n = unpacker.read_array_header()
        except ValueError:
            raise WireFormatError("not an edgepos frame: it does not start with a MessagePack array") from None
        if n < 1:
            raise WireFormatError("not an edgepos frame: an empty array")
        version = unpacker.unpack()
        if type(version) is not int:
            raise WireFormatError(f"not an edgepos frame: the first element (the protocol version) "
                                  f"is a {_tn(version)}, not an integer")
        if version not in SUPPORTED_VERSIONS:
            raise WireVersionError(f"protocol version {version} is not supported; this code speaks "
                                   f"version {', '.join(map(str, SUPPORTED_VERSIONS))}")
        if n != _FRAME_FIELDS:
            raise WireFormatError(f"a version {version} frame is an array of {_FRAME_FIELDS} elements "
                                  f"[version, type, site, payload, mac], got {n}")
        mtype_raw, site, payload, tag = (unpacker.unpack() for _ in range(4))
        if unpacker.tell() != len(data):
            raise WireFormatError(f"{len(data) - unpacker.tell()} bytes after the end of the frame")
    except WireError:
        raise
    except msgpack.OutOfData:
        raise WireFormatError(f"truncated frame: {len(data)} bytes end inside the message") from None
    except Exception as e:  # noqa: BLE001 - whatever the unpacker raises on malformed input: refuse it
        why = {"StackError": "nested too deeply", "FormatError": "a byte that is no MessagePack type"}.get(
            type(e).__name__) or str(e)[:200]
        if "max_ext_len" in why:
            why = f"extension types are not allowed ({why})"
        raise WireFormatError(f"malformed MessagePack: {why}") from None
    return mtype_raw, site, payload, tag


def _mask(cls: type[IntEnum]) -> int:
    return sum(1 << int(m) for m in cls)


_PART_MASKS = (_mask(CardKind), _mask(CardStatus), _mask(LimitUnit), _mask(Period), _mask(Scope),
               _mask(ProductGroup), _mask(Tariff), _mask(ClubCardKind), _mask(ClubStatus), MAX_AMOUNT_KOP)


def _snapshot_packed(data: bytes, keys: SiteKeys, topic: str | None, parsed_topic: Any,
                     limits: Limits) -> ReplicaSnapshot | None:
    """:func:`decode`'s answer for a snapshot part that :mod:`wire._partscan` takes (its rows
    checked in C where they lie, :mod:`wire._partscan`, kept as :class:`wire.rows_bulk.PackedRows`), with the checks
    decode makes after the payload's, in its order and words: the signature, then the topic.
    None for any other frame (decode's general path then accepts it or says what is wrong)."""
    got = _scan_part(data, limits.max_rows, *_PART_MASKS)
    if got is None:
        return None
    proto, table_name, version, part, parts, bounds = got
    if proto not in SUPPORTED_VERSIONS or not 1 <= version <= INT64_MAX or not 1 <= parts <= MAX_SNAPSHOT_PARTS \
            or not 0 <= part < parts:
        return None  # refused by the general path, in its words
    mtype, table = MessageType.SNAPSHOT, _TABLES[table_name]
    if not replica_signature_ok(keys.replica_verify, data[:-SIGNATURE_BYTES - 2], data[-SIGNATURE_BYTES:]):
        raise WireSignatureError(f"{_what(mtype, None)}: the signature does not verify under the host's "
                                 "replica verify key")
    if parsed_topic is not None:
        _topic_check(mtype, None, topic, parsed_topic)
        if parsed_topic.table is not None and (parsed_topic.table != table or parsed_topic.part != part):
            raise WireTopicError(f"{mtype.value} of table {table.value!r} part {part} on topic {topic!r}")
    return ReplicaSnapshot(table, version, part, parts, rows_bulk.PackedRows(table, data, bounds))


def _envelope(data: bytes, keys: SiteKeys, topic: str | None, parsed_topic: Any, mtype: MessageType,
              site: Any, payload: Any, tag: Any) -> None:
    """decode's checks of a frame's envelope, in their order: the site, the payload's type,
    the signature, the topic; raises :class:`WireError`."""
    if mtype in _SITE_TYPES:
        if type(site) is not str or not SITE_ID_RE.fullmatch(site):
            raise WireFormatError(f"{mtype.value}: the envelope's site must be a site id, got "
                                  f"{_show(site, 80)}")
    elif site is not None:
        raise WireFormatError(f"{mtype.value}: a replica message names no site, got {_tn(site)}")
    if type(payload) is not dict:
        raise WireFormatError(f"{_what(mtype, site)}: the payload must be a map, got {_tn(payload)}")
    if mtype in _SITE_TYPES:
        if type(tag) is not bytes or len(tag) != MAC_BYTES or data[-MAC_BYTES - 2:-MAC_BYTES] != _MAC_HEADER:
            raise WireFormatError(f"{_what(mtype, site)}: the mac must be the last element, "
                                  f"{MAC_BYTES} bytes encoded as bin 8")
        if not mac_ok(keys.site(site), data[:-MAC_BYTES - 2], tag):
            raise WireSignatureError(f"{_what(mtype, site)}: the signature does not verify under the key of "
                                     f"site {site!r}")
    else:
        if type(tag) is bytes and len(tag) == MAC_BYTES:
            raise WireSignatureError(f"{_what(mtype, site)}: carries a {MAC_BYTES}-byte MAC; a replica message "
                                     f"must carry the host's {SIGNATURE_BYTES}-byte Ed25519 signature")
        if type(tag) is not bytes or len(tag) != SIGNATURE_BYTES or \
                data[-SIGNATURE_BYTES - 2:-SIGNATURE_BYTES] != _SIG_HEADER:
            raise WireFormatError(f"{_what(mtype, site)}: the signature must be the last element, "
                                  f"{SIGNATURE_BYTES} bytes encoded as bin 8")
        if not replica_signature_ok(keys.replica_verify, data[:-SIGNATURE_BYTES - 2], tag):
            raise WireSignatureError(f"{_what(mtype, site)}: the signature does not verify under the host's "
                                     "replica verify key")
    if parsed_topic is not None:
        _topic_check(mtype, site, topic, parsed_topic)


def _topic_check(mtype: MessageType, site: Any, topic: str | None, parsed_topic: Any) -> None:
    """The topic a message came on carries its type and, if it names a site, the message's
    own site (None for a replica message: no site topic may carry one)."""
    if parsed_topic.kind is not _TOPIC_KIND[mtype]:
        raise WireTopicError(f"{_what(mtype, site)} on topic {topic!r}, which carries {parsed_topic.kind.value}")
    if parsed_topic.site_id is not None and parsed_topic.site_id != site:
        raise WireTopicError(f"{_what(mtype, site)} on topic {topic!r} of site {parsed_topic.site_id!r}: "
                             "a site publishes on its own topics only")


_HOT_PATHS = {kind: tuple((p.split(".")[0].encode(), p.split(".")[1].encode() if "." in p else None) for p in paths)
              for kind, paths in HOT_FIELDS.items()}


def _batch_fast(data: bytes, keys: SiteKeys, topic: str | None, parsed_topic: Any,
                limits: Limits) -> Batch | None:
    """decode's answer for a batch frame whose records are all well formed, read in one native
    pass (``wire._wirecheck.read_batch``: every check of the frame reader and the record check,
    each body checked where it lies and kept as its bytes, its JSON text and its
    :data:`wire.bodies.HOT_FIELDS` values; no dict built). The envelope and the batch's own
    fields are then checked here as decode checks them, in its order and words. None for any
    other frame: decode's general path accepts it or says what is wrong."""
    got = _native_batch(data, limits.max_body_depth, limits.max_records, _HOT_PATHS, WireRecord)
    if got is None:
        return None
    version, site, seq, created, records, tag = got
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        return None
    mtype = MessageType.BATCH
    _envelope(data, keys, topic, parsed_topic, mtype, site, {}, tag)
    try:
        seq = _int(seq, "batch_seq", 1)
        return Batch(site, seq, records, _int(created, "created_utc_s"))
    except WireFormatError as e:
        raise type(e)(f"{_what(mtype, site)}: {e}") from None


def decode(data: bytes, keys: SiteKeys, *, topic: str | None, limits: Limits = DEFAULT_LIMITS,
           raw_rows: bool = False) -> Message:
    """The message in frame ``data``, received on ``topic``, after checking all of it.

    ``topic`` is the topic the message arrived on: the message must be of the kind that
    topic carries and, for a site topic, of that topic's site (a site cannot publish as
    another); for a snapshot or delta, of that topic's table (and snapshot part). Pass
    ``None`` only for a frame that did not come from the broker (a file, a test).

    Returns a :class:`~wire.messages.Batch`, :class:`~wire.messages.Presence`,
    :class:`~wire.messages.SnapshotRequest`, :class:`~wire.messages.Ack`,
    :class:`~wire.messages.ReplicaSnapshot` or :class:`~wire.messages.ReplicaDelta`.
    Raises :class:`~wire.errors.WireTooLarge`, :class:`~wire.errors.WireFormatError`,
    :class:`~wire.errors.WireVersionError`, :class:`~wire.errors.WireSignatureError` or
    :class:`~wire.errors.WireTopicError`, and nothing else, whatever ``data`` holds.

    ``raw_rows``: a snapshot part of the big tables (fuel cards, the stop list, contracts,
    club accounts)
    whose rows are each exactly as the replica store writes them comes back with its rows as
    :class:`wire.rows_bulk.PackedRows` (the bytes received, every check made on them), not as
    objects; the replica store writes them as they are. Any other frame decodes as without it.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireFormatError(f"a frame is bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > limits.max_message_bytes:
        raise WireTooLarge(f"frame of {len(data)} bytes is over the limit of {limits.max_message_bytes}")
    if not data:
        raise WireFormatError("empty frame (an empty retained message clears a topic; skip it)")
    parsed_topic = None
    if topic is not None:
        parsed_topic = parse_topic(topic)
    if raw_rows:
        packed = _snapshot_packed(data, keys, topic, parsed_topic, limits)
        if packed is not None:
            return packed
    batch = _batch_fast(data, keys, topic, parsed_topic, limits)
    if batch is not None:
        return batch
    mtype_raw, site, payload, tag = _unpack_fast(data) or _unpack_strict(data)
    if type(mtype_raw) is not str or mtype_raw not in _TYPES:
        raise WireFormatError(f"unknown message type ({_show(mtype_raw)}); "
                              f"the types are {', '.join(_TYPES)}")
    mtype = _TYPES[mtype_raw]
    _envelope(data, keys, topic, parsed_topic, mtype, site, payload, tag)
    try:
        msg = _PAYLOADS[mtype][1](payload, site, limits)
    except WireFormatError as e:
        raise type(e)(f"{_what(mtype, site)}: {e}") from None
    if parsed_topic is not None and parsed_topic.table is not None:
        if parsed_topic.table != msg.table or parsed_topic.part != getattr(msg, "part", None):  # type: ignore[union-attr]
            where = f"table {msg.table.value!r}" + (f" part {msg.part}" if isinstance(msg, ReplicaSnapshot) else "")  # type: ignore[union-attr]
            raise WireTopicError(f"{mtype.value} of {where} on topic {topic!r}")
    return msg


# Upper bounds of a frame's bytes besides its records or rows: array header, version, type,
# site, the payload map's other fields (ints of 9 bytes at most, table names), the array
# header, the signature (66 bytes at most).
_BATCH_OVERHEAD = 160
_ROWS_OVERHEAD = 200


def records_that_fit(site_id: str, records: Sequence[WireRecord], *, limits: Limits = DEFAULT_LIMITS) -> int:
    """How many of ``records``, from the first, fit in one batch of ``site_id`` under
    ``limits`` (by count and by encoded size). The sync client cuts its batches with it.

    Returns at least 1 when ``records`` is not empty, even if the first record alone is too
    large: :func:`encode` then raises :class:`~wire.errors.WireTooLarge` for it.
    """
    budget = limits.max_message_bytes - _BATCH_OVERHEAD - len(site_id)
    n = 0
    for r in records[:limits.max_records]:
        try:
            size = len(_pack(_record_to(r)))
        except (TypeError, ValueError, OverflowError):
            size = 0  # encode will say what is wrong with it
        budget -= size
        if budget < 0:
            break
        n += 1
    return max(n, 1) if records else 0


def rows_that_fit(table: Table, rows: Sequence[Any], *, limits: Limits = DEFAULT_LIMITS) -> int:
    """How many of ``rows``, from the first, fit in one snapshot part (or as the upserts of
    one delta without deletes) of ``table`` under ``limits``. The host cuts snapshots into
    parts with it. Returns at least 1 when ``rows`` is not empty (see
    :func:`records_that_fit`)."""
    codec = _ROWS[table]
    budget = limits.max_message_bytes - _ROWS_OVERHEAD
    n = 0
    for r in rows[:limits.max_rows]:
        try:
            size = len(_pack(codec.to_wire(r)))
        except (AttributeError, TypeError, ValueError, OverflowError):
            size = 0  # encode will say what is wrong with it
        budget -= size
        if budget < 0:
            break
        n += 1
    return max(n, 1) if rows else 0


def pack_row(table: Table, row: Any) -> bytes:
    """One row of ``table`` as MessagePack of its wire form (the encoding inside a snapshot
    or a delta). A site's replica store keeps rows this way. Raises :class:`WireFormatError`
    if ``row`` is not a row of ``table``."""
    codec = _ROWS[_table(table)]
    if not isinstance(row, codec.cls):
        raise _bad("row", f"a {table.value} row is a {codec.cls.__name__}, got {type(row).__name__}")
    return _pack(codec.to_wire(row))


def unpack_row(table: Table, data: bytes) -> Any:
    """The row :func:`pack_row` packed, with every check :func:`decode` runs on a row.
    Raises :class:`WireFormatError` for bytes that are not such a row."""
    codec = _ROWS[_table(table)]
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, object_pairs_hook=_pairs, ext_hook=_no_ext,
                                max_ext_len=0)
    except WireFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - msgpack's own errors: not MessagePack, truncated, trailing bytes
        raise _bad("row", f"not a MessagePack row: {type(exc).__name__}") from None
    return codec.from_wire(value)


# --- the edge's batch path: each record packed once -------------------------------------------

def _record_envelope(r: WireRecord, site_id: str) -> None:
    """The checks :func:`_record_from` runs on a record's own fields (its id, lane, txn id,
    kind, time), on the record as given; raises :class:`WireFormatError`."""
    if not isinstance(r, WireRecord):
        raise _bad("record", f"must be a WireRecord, got {type(r).__name__}")
    if r.site_id != site_id:
        raise _bad("record", f"a record of site {r.site_id!r} in a batch of site {site_id!r}")
    rid, prefix = r.record_id, site_id + "-"
    if not (type(rid) is str and rid.startswith(prefix) and _ULID.fullmatch(rid, len(prefix))):
        raise _bad("record_id", f"must be '{site_id}-<ULID>' (the sending site's), got {_show(rid, 100)}")
    _str(r.lane, "lane", SITE_ID_RE)
    txn_id = r.txn_id
    if type(txn_id) is not str or not txn_id.startswith(site_id + ":"):
        raise _bad("txn_id", f"must be '{site_id}:<lane>-<ULID>' (the sending site's), got {_show(txn_id, 100)}")
    txn_lane, dash, ulid = txn_id[len(site_id) + 1:].rpartition("-")
    if not dash or not SITE_ID_RE.fullmatch(txn_lane) or not _ULID.fullmatch(ulid):
        raise _bad("txn_id", f"must be '{site_id}:<lane>-<ULID>', got {txn_id[:100]!r}")
    _str(r.kind, "kind", _KIND)
    _int(r.at_utc_s, "at_utc_s")
    if type(r.body) is not dict:
        raise _bad("body", f"must be a dict, got {type(r.body).__name__}")


def pack_records(site_id: str, records: Sequence[WireRecord], *, limits: Limits = DEFAULT_LIMITS,
                 bodies_checked: bool = False) -> list[bytes]:
    """Each of ``records`` as the MessagePack of its wire form, for
    :func:`encode_packed_batch`: a site packs each journal record once, however many cuts
    and resends it takes part in.

    Every record field is checked as :func:`decode` checks it. ``bodies_checked``: the
    caller vouches that every body was already checked to hold JSON values only (string
    keys, signed 64-bit integers, no floats) nested at most ``limits.max_body_depth`` deep,
    as the edge's journal checks each body before it stores it
    (:func:`terminal.journal.canonical_json`); the bodies are then not walked again.
    Validation belongs where bytes come from outside: the host's :func:`decode` still runs
    every check. Raises :class:`WireFormatError` naming the record (its index and id).
    """
    if type(site_id) is not str or not SITE_ID_RE.fullmatch(site_id):
        raise WireFormatError(f"batch: malformed site id {site_id!r}")
    out = []
    pack = msgpack.Packer(use_bin_type=True).pack
    depth = limits.max_body_depth
    for i, r in enumerate(records):
        try:
            _record_envelope(r, site_id)
            if not bodies_checked and not _json_ok(r.body, depth):  # type: ignore[arg-type]
                try:
                    _json(r.body, 0, depth)
                except WireFormatError as e:
                    raise WireFormatError(f"body{e}") from None
            out.append(pack(_record_to(r)))
        except WireFormatError as e:
            named = f" ({r.record_id[:100]})" if isinstance(r, WireRecord) and type(r.record_id) is str else ""
            raise type(e)(f"batch of site {site_id!r}: record {i}{named} {e}") from None
        except (TypeError, ValueError, OverflowError) as e:  # an unpaired surrogate, an int over 64 bits
            raise WireFormatError(f"batch of site {site_id!r}: record {i}: cannot encode: {e}") from None
    return out


#: A journal record as a plain row: seq, record_id, site_id, lane, txn_id, kind, at_utc_s, body;
#: the body decoded (a dict) or as the journal stored it (its canonical JSON text).
JournalRow = tuple[int, str, str, str, str, str, int, "dict[str, Any] | str"]

from ._jsonpack import pack_rows as _native_pack_rows  # noqa: E402 - built with _wirecheck (setup.py)

_read_json = msgspec.json.Decoder().decode


def _decoded(site_id: str, i: int, row: JournalRow) -> JournalRow:
    """``row`` with its body decoded if it is the stored JSON text; WireFormatError if it is
    not JSON."""
    body = row[7]
    if type(body) is not str:
        return row
    try:
        return (*row[:7], _read_json(body))
    except (msgspec.DecodeError, UnicodeEncodeError) as e:
        named = f" ({row[1][:100]})" if type(row[1]) is str else ""
        raise WireFormatError(f"batch of site {site_id!r}: record {i}{named} body: not JSON: {e}") from None


def pack_record_rows(site_id: str, rows: Sequence[JournalRow], *, limits: Limits = DEFAULT_LIMITS,
                     bodies_checked: bool = False) -> list[bytes]:
    """:func:`pack_records`' answer (the same bytes, the same refusals) for records given as
    the journal's plain rows (``terminal.journal.Journal.after_rows``: seq, record_id,
    site_id, lane, txn_id, kind, at_utc_s, body): no ``Record`` or ``WireRecord`` per
    record. Each row's wire map is checked in C as :func:`decode` checks it (``wire._wirecheck``)
    and packed; if anything is off, the rows go through :func:`pack_records`, which names it.

    A body may be given as the canonical JSON text the journal stored
    (``Journal.after_stored``): then the rows are checked and packed straight from the text
    in C (``wire._jsonpack``: the record's fields as ``wire._wirecheck`` checks them, every
    body value as the record check does, no Python object per record or value). Rows it does
    not take (a text that is not canonical JSON of plain values, a field it refuses) are
    decoded and take the path above, which names what is wrong."""
    if type(site_id) is not str or not SITE_ID_RE.fullmatch(site_id):
        raise WireFormatError(f"batch: malformed site id {site_id!r}")
    depth = limits.max_body_depth
    if rows and type(rows[0][7]) is str:
        if depth <= _NATIVE_MAX_DEPTH:
            packed: list[bytes] | None = _native_pack_rows(rows if type(rows) is list else list(rows), site_id, depth)
            if packed is not None:
                return packed
        rows = [_decoded(site_id, i, r) for i, r in enumerate(rows)]
    maps = [{"record_id": rid, "lane": lane, "txn_id": txn, "kind": kind, "at_utc_s": at, "body": body}
            for _, rid, site, lane, txn, kind, at, body in rows if site == site_id]
    if len(maps) == len(rows) and depth <= _NATIVE_MAX_DEPTH and \
            _native_records(maps, site_id, depth, _RECORD[1], None) is not None:
        pack = msgpack.Packer(use_bin_type=True).pack
        return [pack(m) for m in maps]
    return pack_records(site_id, [WireRecord(*r[1:]) for r in rows], limits=limits,  # type: ignore[arg-type]
                        bodies_checked=bodies_checked)


def _batch_head(site_id: str, batch_seq: int, created_utc_s: int, n: int) -> bytes:
    """The bytes of a batch frame before its records: the same as :func:`encode` makes."""
    p = msgpack.Packer(use_bin_type=True)
    head: bytes = (p.pack_array_header(_FRAME_FIELDS) + p.pack(PROTOCOL_VERSION) + p.pack(MessageType.BATCH.value)
            + p.pack(site_id) + p.pack_map_header(3) + p.pack("batch_seq") + p.pack(batch_seq)
            + p.pack("created_utc_s") + p.pack(created_utc_s) + p.pack("records") + p.pack_array_header(n))
    return head


def packed_that_fit(site_id: str, batch_seq: int, created_utc_s: int, packed: Sequence[bytes], *,
                    limits: Limits = DEFAULT_LIMITS) -> int:
    """How many of the ``packed`` records (:func:`pack_records`), from the first, fit in
    batch ``batch_seq``'s frame under ``limits``, by count and by exact encoded size. At
    least 1 when ``packed`` is not empty: :func:`encode_packed_batch` then says if that one
    is too large."""
    n = min(len(packed), limits.max_records)
    fixed = len(_batch_head(site_id, batch_seq, created_utc_s, n)) + len(_MAC_HEADER) + MAC_BYTES
    budget = limits.max_message_bytes - fixed
    k = 0
    for b in packed[:n]:
        budget -= len(b)
        if budget < 0:
            break
        k += 1
    if k < n:  # the array header may have shrunk with the count: at most 4 bytes
        return max(k, 1)
    return n


def encode_packed_batch(site_id: str, batch_seq: int, created_utc_s: int, packed: Sequence[bytes],
                        keys: SiteKeys, *, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The signed batch frame of the ``packed`` records (:func:`pack_records` of records of
    ``site_id``): byte for byte what :func:`encode` makes of the same
    :class:`~wire.messages.Batch`, without building the payload again. Raises
    :class:`WireFormatError` for a bad batch number, time or site,
    :class:`WireTooLarge` over the limits, :class:`WireSignatureError` without the site's
    key."""
    what = f"batch of site {site_id!r}"
    if type(site_id) is not str or not SITE_ID_RE.fullmatch(site_id):
        raise WireFormatError(f"batch: malformed site id {site_id!r}")
    try:
        _int(batch_seq, "batch_seq", 1)
        _int(created_utc_s, "created_utc_s")
    except WireFormatError as e:
        raise WireFormatError(f"{what}: {e}") from None
    if len(packed) > limits.max_records:
        raise WireTooLarge(f"{what}: records: {len(packed)} items, more than the limit of {limits.max_records}")
    _, sign = _signer(MessageType.BATCH, site_id, keys)
    signed = _batch_head(site_id, int(batch_seq), int(created_utc_s), len(packed)) + b"".join(packed)
    size = len(signed) + len(_MAC_HEADER) + MAC_BYTES
    if size > limits.max_message_bytes:
        raise WireTooLarge(f"{what} encodes to {size} bytes, over the limit of "
                           f"{limits.max_message_bytes}: send fewer records or rows per message")
    return signed + _MAC_HEADER + sign(signed)


from . import rows_bulk  # last: it reads this module's checks
