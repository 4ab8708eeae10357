"""Typed journal record bodies: one frozen dataclass per record kind, with its JSON.

A site journals every decision as a record whose ``body`` is a JSON object
(docs/journal.md, docs/lanes.md "Records"); the host ingests the same bodies. This module is
the one definition both sides use: each class turns into exactly the JSON the lanes have
always written (``to_json``; the journal writes it with sorted keys, so old and new records
are the same bytes) and back (``from_json``, which checks the shape and raises
:class:`BodyError` naming the field, so a damaged or foreign record is a clear error and
changes nothing). It lives in ``wire`` because the edge and the host both import it and may
not import each other (ARCHITECTURE.md).

``body_of(kind, json)`` decodes a record of any kind this module knows; ``KINDS`` lists them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from authz.fuel_model import (
    FuelDecision,
    FuelRequest,
    LimitCounter,
    LimitUnit,
    RuleException,
)
from authz.reasons import Reason

__all__ = [
    "BodyError", "Counters", "Counting", "FuelPreauth", "PreauthCard", "PreauthPump", "FuelReserved",
    "FuelPreset", "CardCommit", "FuelCompleted", "FuelCardCommitted", "FuelCorrection", "FuelVoided",
    "FuelDeclined", "FuelCardRefused", "FuelEmergencyStop", "FuelPumpReset", "FuelPumpAction", "FuelPinChecked",
    "NozzleTotals", "FuelTotalsMismatch", "TillSaleOpened", "TillCardAttached", "TillSaleVoided",
    "TillLine", "KINDS", "body_of", "request_json", "request_from_json", "decision_json",
    "decision_from_json", "counters_json", "counters_from_json", "exceptions_json", "exceptions_from_json",
    "CardTouch", "TOUCH_KINDS", "card_touch", "Charge", "charge_of", "ClubTouch", "CLUB_KINDS", "club_touch",
    "HOT_FIELDS", "hot_fields",
]

#: A card's spent counters: ``((limit_id, LimitCounter), ...)`` in the card's record order.
Counters = tuple[tuple[int, LimitCounter], ...]

class BodyError(ValueError):
    """A journal record body does not have the shape of its kind (names the field)."""


# -- strict readers ---------------------------------------------------------------------------------

def _obj(raw: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise BodyError(f"{where} must be a JSON object, got {type(raw).__name__}")
    return raw


def _field(d: Mapping[str, Any], key: str, where: str) -> Any:
    try:
        return d[key]
    except KeyError:
        raise BodyError(f"{where}: missing {key!r}") from None


def _int(d: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> Any:
    v = _field(d, key, where) if not optional else d.get(key)
    if v is None and optional:
        return None
    if type(v) is not int:
        raise BodyError(f"{where}.{key} must be a whole number, got {v!r}")
    return v


def _str(d: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> Any:
    v = _field(d, key, where) if not optional else d.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise BodyError(f"{where}.{key} must be text, got {v!r}")
    return v


def _bool(d: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> Any:
    v = _field(d, key, where) if not optional else d.get(key)
    if v is None and optional:
        return None
    if type(v) is not bool:
        raise BodyError(f"{where}.{key} must be true or false, got {v!r}")
    return v


def _hex16(d: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> Any:
    v = _str(d, key, where, optional=optional)
    if v is None:
        return None
    try:
        b = bytes.fromhex(v)
    except ValueError:
        raise BodyError(f"{where}.{key} must be hex, got {v!r}") from None
    if len(b) != 16 or v != b.hex():
        raise BodyError(f"{where}.{key} must be 32 lower-case hex digits, got {v!r}")
    return b


def _list(d: Mapping[str, Any], key: str, where: str) -> list[Any]:
    v = _field(d, key, where)
    if not isinstance(v, list):
        raise BodyError(f"{where}.{key} must be an array, got {type(v).__name__}")
    return v


def _ints(raw: Any, n: int, where: str) -> list[int]:
    if not isinstance(raw, list) or len(raw) != n or any(type(x) is not int for x in raw):
        raise BodyError(f"{where} must be an array of {n} whole numbers, got {raw!r}")
    return raw


def _exact(d: Mapping[str, Any], keys: frozenset[str], where: str) -> None:
    extra = set(d) - keys
    if extra:
        raise BodyError(f"{where}: unknown field(s) {', '.join(sorted(extra))}")


# -- shared pieces ----------------------------------------------------------------------------------

def request_json(req: FuelRequest) -> dict[str, Any]:
    """A FuelRequest as journaled (the same as ``terminal.replica.fuel_request_body``)."""
    return {"card_no": req.card_no, "station_id": req.station_id, "product": req.product,
            "now_utc_s": req.now_utc_s, "preset_volume_ml": req.preset_volume_ml,
            "preset_amount_kop": req.preset_amount_kop}


def request_from_json(raw: Any, where: str = "request") -> FuelRequest:
    """The FuelRequest journaled as ``raw``."""
    d = _obj(raw, where)
    _exact(d, _REQUEST_KEYS, where)
    return FuelRequest(_str(d, "card_no", where), _int(d, "station_id", where), _str(d, "product", where),
                       _int(d, "now_utc_s", where), _int(d, "preset_volume_ml", where, optional=True),
                       _int(d, "preset_amount_kop", where, optional=True))


_REQUEST_KEYS = frozenset({"card_no", "station_id", "product", "now_utc_s", "preset_volume_ml",
                           "preset_amount_kop"})


def decision_json(d: FuelDecision) -> dict[str, Any]:
    """A FuelDecision as journaled, the reason by name (``terminal.replica.fuel_decision_body``).

    ``exceptions`` (the alerting rules an approval broke, issue 11) is there only when there
    are any: ``[[reason_name, limit_id_or_null], ...]``; a decision without keeps the JSON of
    the records before it."""
    out: dict[str, Any] = {
        "reason": d.reason.name, "volume_ml": d.volume_ml, "amount_kop": d.amount_kop,
        "unit_price_kop_per_l": d.unit_price_kop_per_l, "list_price_kop_per_l": d.list_price_kop_per_l,
        "binding_limit_id": d.binding_limit_id}
    if d.exceptions:
        out["exceptions"] = exceptions_json(d.exceptions)
    return out


def exceptions_json(exceptions: tuple[RuleException, ...]) -> list[list[Any]]:
    """Rule exceptions as journaled: ``[[reason_name, limit_id_or_null], ...]``."""
    return [[e.reason.name, e.limit_id] for e in exceptions]


#: the reasons a rule exception may give: the card's controls, and a limit (named by its id)
RULE_EXCEPTION_REASONS = frozenset({Reason.PRODUCT_NOT_ALLOWED, Reason.STATION_NOT_ALLOWED,
                                    Reason.OUTSIDE_TIME_WINDOW, Reason.LIMIT, Reason.LIMIT_EXHAUSTED})
_LIMIT_REASONS = frozenset({Reason.LIMIT, Reason.LIMIT_EXHAUSTED})


def exceptions_from_json(raw: Any, where: str = "exceptions") -> tuple[RuleException, ...]:
    """The rule exceptions journaled as ``raw`` (a non-empty array of ``[reason, limit_id]``):
    the one reader of that shape, for the lane's recovery and the host's alerts. A reason is
    one a rule exception gives; a limit's names its limit id (a whole number >= 0), a
    control's none."""
    if not isinstance(raw, list) or not raw:
        raise BodyError(f"{where} must be a non-empty array (absent when there are none), got {str(raw)[:60]}")
    out = []
    for n, item in enumerate(raw):
        if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str) \
                or not (item[1] is None or (type(item[1]) is int and item[1] >= 0)):
            raise BodyError(f"{where}[{n}] must be [reason name, limit id or null], got {str(item)[:60]}")
        reason = Reason.__members__.get(item[0])
        if reason not in RULE_EXCEPTION_REASONS:
            raise BodyError(f"{where}[{n}]: {item[0][:40]!r} is not a rule's reason "
                            f"({', '.join(sorted(r.name for r in RULE_EXCEPTION_REASONS))})")
        if (item[1] is None) != (reason not in _LIMIT_REASONS):
            raise BodyError(f"{where}[{n}]: a limit's exception names its limit id, another rule's none")
        out.append(RuleException(reason, item[1]))
    return tuple(out)


def decision_from_json(raw: Any, where: str = "decision") -> FuelDecision:
    """The FuelDecision journaled as ``raw``."""
    d = _obj(raw, where)
    _exact(d, _DECISION_KEYS, where)
    name = _str(d, "reason", where)
    try:
        reason = Reason[name]
    except KeyError:
        raise BodyError(f"{where}.reason: unknown reason {name!r}") from None
    exceptions = exceptions_from_json(d["exceptions"], f"{where}.exceptions") if "exceptions" in d else ()
    return FuelDecision(reason, _int(d, "volume_ml", where), _int(d, "amount_kop", where),
                        _int(d, "unit_price_kop_per_l", where), _int(d, "list_price_kop_per_l", where),
                        _int(d, "binding_limit_id", where, optional=True), exceptions)


_DECISION_KEYS = frozenset({"reason", "volume_ml", "amount_kop", "unit_price_kop_per_l",
                            "list_price_kop_per_l", "binding_limit_id", "exceptions"})


def counters_json(counters: Counters) -> list[list[int]]:
    """Counters as journaled: ``[[limit_id, spent, period_start], ...]``."""
    return [[i, c.spent, c.period_start] for i, c in counters]


def counters_from_json(raw: Any, where: str = "counters") -> Counters:
    """The counters journaled as ``raw``."""
    if not isinstance(raw, list):
        raise BodyError(f"{where} must be an array")
    out = []
    for n, item in enumerate(raw):
        i, s, p = _ints(item, 3, f"{where}[{n}]")
        out.append((i, LimitCounter(s, p)))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Counting:
    """How one of the card's limits counts a sale: whether it counts at all, in
    millilitres, kopecks or purchases (one per sale that delivered anything), and the local
    day its current period started on."""

    limit_id: int
    counts: bool
    in_ml: bool
    period_start: int
    #: the limit counts purchases (issue 11); ``in_ml`` is then False
    purchases: bool = False

    @property
    def unit(self) -> LimitUnit:
        """The limit's unit."""
        if self.purchases:
            return LimitUnit.PURCHASES
        return LimitUnit.MILLILITRES if self.in_ml else LimitUnit.KOPECKS

    def to_json(self) -> list[int]:
        """``[limit_id, counts, unit, period_start]`` as journaled: ``counts`` 0/1, ``unit`` 0
        kopecks, 1 millilitres, 2 purchases (records before issue 11 hold 0 or 1 only, which
        mean the same)."""
        return [self.limit_id, int(self.counts), int(self.unit), self.period_start]

    @classmethod
    def from_json(cls, raw: Any, where: str = "counting") -> Counting:
        """The counting journaled as ``raw``."""
        i, c, u, s = _ints(raw, 4, where)
        if c not in (0, 1) or u not in (0, 1, 2):
            raise BodyError(f"{where}: counts must be 0 or 1 and the unit 0, 1 or 2, got {raw!r}")
        return cls(i, bool(c), u == LimitUnit.MILLILITRES, s, u == LimitUnit.PURCHASES)


class _Body:
    """What every body class has: its record kind, and its JSON both ways."""

    KIND: ClassVar[str]

    def to_json(self) -> dict[str, Any]:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    @classmethod
    def from_json(cls, raw: Any) -> Self:  # pragma: no cover - every subclass defines it
        raise NotImplementedError


# -- fuel ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PreauthCard:
    """The card part of ``fuel.preauth``: what the card held and what will be written to it."""

    card_no: str
    contract_id: int
    expected_txn: int  #: the card's transaction counter when read (RESERVE's expected)
    reserve_write_id: bytes
    release_write_id: bytes
    counting: tuple[Counting, ...]
    base_counters: Counters
    reserve_counters: Counters

    def to_json(self) -> dict[str, Any]:
        """As journaled under ``card``."""
        return {"card_no": self.card_no, "contract_id": self.contract_id, "expected_txn": self.expected_txn,
                "reserve_write_id": self.reserve_write_id.hex(), "release_write_id": self.release_write_id.hex(),
                "counting": [c.to_json() for c in self.counting],
                "base_counters": counters_json(self.base_counters),
                "reserve_counters": counters_json(self.reserve_counters)}

    @classmethod
    def from_json(cls, raw: Any, where: str = "fuel.preauth.card") -> PreauthCard:
        """The card part journaled as ``raw``."""
        d = _obj(raw, where)
        _exact(d, frozenset({"card_no", "contract_id", "expected_txn", "reserve_write_id", "release_write_id",
                             "counting", "base_counters", "reserve_counters"}), where)
        counting = tuple(Counting.from_json(c, f"{where}.counting[{n}]")
                         for n, c in enumerate(_list(d, "counting", where)))
        return cls(_str(d, "card_no", where), _int(d, "contract_id", where), _int(d, "expected_txn", where),
                   _hex16(d, "reserve_write_id", where), _hex16(d, "release_write_id", where), counting,
                   counters_from_json(_field(d, "base_counters", where), f"{where}.base_counters"),
                   counters_from_json(_field(d, "reserve_counters", where), f"{where}.reserve_counters"))


@dataclass(frozen=True, slots=True)
class NozzleTotals:
    """A dispenser's running totals of one nozzle (what its meters have counted, ever)."""

    nozzle: int
    volume_ml: int
    amount_kop: int

    def to_json(self) -> list[int]:
        """``[nozzle, volume_ml, amount_kop]``."""
        return [self.nozzle, self.volume_ml, self.amount_kop]

    @classmethod
    def from_json(cls, raw: Any, where: str = "totals") -> NozzleTotals:
        """The totals journaled as ``raw``."""
        n, v, a = _ints(raw, 3, where)
        return cls(n, v, a)


@dataclass(frozen=True, slots=True)
class PreauthPump:
    """The pump part of ``fuel.preauth``: the preset and where the pump stood before it.
    ``totals_before`` (the product's nozzle totals read at authorization) is absent from
    records written before issue 10 and from pumps that cannot report totals."""

    product: str
    price_kop_per_l: int
    preset_volume_ml: int
    last_sale_no_before: int
    totals_before: NozzleTotals | None = None

    def to_json(self) -> dict[str, Any]:
        """As journaled under ``pump`` (``totals_before`` only when known)."""
        out: dict[str, Any] = {"product": self.product, "price_kop_per_l": self.price_kop_per_l,
                               "preset_volume_ml": self.preset_volume_ml,
                               "last_sale_no_before": self.last_sale_no_before}
        if self.totals_before is not None:
            out["totals_before"] = self.totals_before.to_json()
        return out

    @classmethod
    def from_json(cls, raw: Any, where: str = "fuel.preauth.pump") -> PreauthPump:
        """The pump part journaled as ``raw``."""
        d = _obj(raw, where)
        _exact(d, frozenset({"product", "price_kop_per_l", "preset_volume_ml", "last_sale_no_before",
                             "totals_before"}), where)
        tb = d.get("totals_before")
        return cls(_str(d, "product", where), _int(d, "price_kop_per_l", where), _int(d, "preset_volume_ml", where),
                   _int(d, "last_sale_no_before", where),
                   None if tb is None else NozzleTotals.from_json(tb, f"{where}.totals_before"))


@dataclass(frozen=True, slots=True)
class FuelPreauth(_Body):
    """``fuel.preauth``: approved, journaled before the card's RESERVE."""

    KIND: ClassVar[str] = "fuel.preauth"
    request: FuelRequest
    decision: FuelDecision
    card: PreauthCard
    pump: PreauthPump

    def to_json(self) -> dict[str, Any]:
        """As journaled."""
        return {"request": request_json(self.request), "decision": decision_json(self.decision),
                "card": self.card.to_json(), "pump": self.pump.to_json()}

    @classmethod
    def from_json(cls, raw: Any) -> FuelPreauth:
        """The body journaled as ``raw``."""
        d = _obj(raw, cls.KIND)
        _exact(d, frozenset({"request", "decision", "card", "pump"}), cls.KIND)
        return cls(request_from_json(_field(d, "request", cls.KIND), f"{cls.KIND}.request"),
                   decision_from_json(_field(d, "decision", cls.KIND), f"{cls.KIND}.decision"),
                   PreauthCard.from_json(_field(d, "card", cls.KIND)),
                   PreauthPump.from_json(_field(d, "pump", cls.KIND)))


@dataclass(frozen=True, slots=True)
class FuelReserved(_Body):
    """``fuel.reserved``: the card's RESERVE receipt checked."""

    KIND: ClassVar[str] = "fuel.reserved"
    card_no: str
    txn_counter: int  #: the card's transaction counter after the RESERVE
    write_id: bytes

    def to_json(self) -> dict[str, Any]:
        """As journaled."""
        return {"card_no": self.card_no, "txn_counter": self.txn_counter, "write_id": self.write_id.hex()}

    @classmethod
    def from_json(cls, raw: Any) -> FuelReserved:
        """The body journaled as ``raw``."""
        d, w = _obj(raw, cls.KIND), cls.KIND
        _exact(d, frozenset({"card_no", "txn_counter", "write_id"}), w)
        return cls(_str(d, "card_no", w), _int(d, "txn_counter", w), _hex16(d, "write_id", w))


@dataclass(frozen=True, slots=True)
class FuelPreset(_Body):
    """``fuel.preset``: the pump accepted the preset (the record carries the API's answer)."""

    KIND: ClassVar[str] = "fuel.preset"
    sale_no: int
    product: str
    price_kop_per_l: int
    preset_volume_ml: int

    def to_json(self) -> dict[str, Any]:
        """As journaled."""
        return {"sale_no": self.sale_no, "product": self.product, "price_kop_per_l": self.price_kop_per_l,
                "preset_volume_ml": self.preset_volume_ml}

    @classmethod
    def from_json(cls, raw: Any) -> FuelPreset:
        """The body journaled as ``raw``."""
        d, w = _obj(raw, cls.KIND), cls.KIND
        _exact(d, frozenset({"sale_no", "product", "price_kop_per_l", "preset_volume_ml"}), w)
        return cls(_int(d, "sale_no", w), _str(d, "product", w), _int(d, "price_kop_per_l", w),
                   _int(d, "preset_volume_ml", w))


@dataclass(frozen=True, slots=True)
class CardCommit:
    """The COMMIT a completion announces: its write id, the counter it expects, the counters."""

    write_id: bytes
    expected_txn: int
    counters: Counters

    def to_json(self) -> dict[str, Any]:
        """As journaled under ``card_commit``."""
        return {"write_id": self.write_id.hex(), "expected_txn": self.expected_txn,
                "counters": counters_json(self.counters)}

    @classmethod
    def from_json(cls, raw: Any, where: str = "fuel.completed.card_commit") -> CardCommit:
        """The commit journaled as ``raw``."""
        d = _obj(raw, where)
        _exact(d, frozenset({"write_id", "expected_txn", "counters"}), where)
        return cls(_hex16(d, "write_id", where), _int(d, "expected_txn", where),
                   counters_from_json(_field(d, "counters", where), f"{where}.counters"))


@dataclass(frozen=True, slots=True)
class FuelCompleted(_Body):
    """``fuel.completed``: the delivered volume, charged (the replica and the host apply it).
    ``sale_id`` (the dispenser's name for the sale, which it is confirmed by) is absent from
    records written before issue 10 and when the dispenser did not name the sale."""

    KIND: ClassVar[str] = "fuel.completed"
    request: FuelRequest
    decision: FuelDecision
    delivered_volume_ml: int
    amount_kop: int
    delivery_reason: str
    overrun_ml: int
    sale_no: int | None
    card_no: str
    contract_id: int
    card_commit: CardCommit
    sale_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """As journaled (``sale_id`` only when known)."""
        out = {"request": request_json(self.request), "decision": decision_json(self.decision),
               "delivered_volume_ml": self.delivered_volume_ml, "amount_kop": self.amount_kop,
               "delivery_reason": self.delivery_reason, "overrun_ml": self.overrun_ml, "sale_no": self.sale_no,
               "card_no": self.card_no, "contract_id": self.contract_id, "card_commit": self.card_commit.to_json()}
        if self.sale_id is not None:
            out["sale_id"] = self.sale_id
        return out

    @classmethod
    def from_json(cls, raw: Any) -> FuelCompleted:
        """The body journaled as ``raw``."""
        d, w = _obj(raw, cls.KIND), cls.KIND
        _exact(d, frozenset({"request", "decision", "delivered_volume_ml", "amount_kop", "delivery_reason",
                             "overrun_ml", "sale_no", "card_no", "contract_id", "card_commit", "sale_id"}), w)
        return cls(request_from_json(_field(d, "request", w), f"{w}.request"),
                   decision_from_json(_field(d, "decision", w), f"{w}.decision"),
                   _int(d, "delivered_volume_ml", w), _int(d, "amount_kop", w), _str(d, "delivery_reason", w),
                   _int(d, "overrun_ml", w), _int(d, "sale_no", w, optional=True), _str(d, "card_no", w),
                   _int(d, "contract_id", w), CardCommit.from_json(_field(d, "card_commit", w)),
                   _str(d, "sale_id", w, optional=True))


@dataclass(frozen=True, slots=True)
class FuelCardCommitted(_Body):
    """``fuel.card_committed``: the card holds the final counters."""

    KIND: ClassVar[str] = "fuel.card_committed"
    card_no: str
    txn_counter: int
    write_id: bytes
    counters: Counters

    def to_json(self) -> dict[str, Any]:
        """As journaled."""
        return {"card_no": self.card_no, "txn_counter": self.txn_counter, "write_id": self.write_id.hex(),
                "counters": counters_json(self.counters)}

    @classmethod
    def from_json(cls, raw: Any) -> FuelCardCommitted:
        """The body journaled as ``raw``."""
        d, w = _obj(raw, cls.KIND), cls.KIND
        _exact(d, frozenset({"card_no", "txn_counter", "write_id", "counters"}), w)
        return cls(_str(d, "card_no", w), _int(d, "txn_counter", w), _hex16(d, "write_id", w),
                   counters_from_json(_field(d, "counters", w), f"{w}.counters"))


@dataclass(frozen=True, slots=True)
class FuelCorrection(_Body):
    """``fuel.correction``: the card could not be settled; the host puts it right."""

    KIND: ClassVar[str] = "fuel.correction"
    WHY: ClassVar[frozenset[str]] = frozenset({"absent", "unknown", "overtaken", "not_reserved"})
    card_no: str
    contract_id: int
    why: str
    reservation_applied: bool | None
    reserved_txn_counter: int
    reserve_write_id: bytes
    unsent_write_id: bytes
    counters_reserved: Counters
    counters_final: Counters
    delivered_volume_ml: int
    amount_kop: int
    released_volume_ml: int
    released_amount_kop: int

    def to_json(self) -> dict[str, Any]:
        """As journaled."""
        return {"card_no": self.card_no, "contract_id": self.contract_id, "why": self.why,
                "reservation_applied": self.reservation_applied, "reserved_txn_counter": self.reserved_txn_counter,
                "reserve_write_id": self.reserve_write_id.hex(), "unsent_write_id": self.unsent_write_id.hex(),
                "counters_reserved": counters_json(self.counters_reserved),
                "counters_final": counters_json(self.counters_final),
                "delivered_volume_ml": self.delivered_volume_ml, "amount_kop": self.amount_kop,
                "released_volume_ml": self.released_volume_ml, "released_amount_kop": self.released_amount_kop}

    @classmethod
    def from_json(cls, raw: Any) -> FuelCorrection:
        """The body journaled as ``raw``."""
        d, w = _obj(raw, cls.KIND), cls.KIND
        _exact(d, frozenset({"card_no", "contract_id", "why", "reservation_applied", "reserved_txn_counter",
                             "reserve_write_id", "unsent_write_id", "counters_reserved", "counters_final",
                             "delivered_volume_ml", "amount_kop", "released_volume_ml",
                             "released_amount_kop"}), w)
        why = _str(d, "why", w)
        if why not in cls.WHY:
            raise BodyError(f"{w}.why must be one of {', '.join(sorted(cls.WHY))}, got {why!r}")
        return cls(_str(d, "card_no", w), _int(d, "contract_id", w), why,
                   _bool(d, "reservation_applied", w, optional=True), _int(d, "reserved_txn_counter", w),
                   _hex16(d, "reserve_write_id", w), _hex16(d, "unsent_write_id", w),
                   counters_from_json(_field(d, "counters_reserved", w), f"{w}.counters_reserved"),
                   counters_from_json(_field(d, "counters_final", w), f"{w}.counters_final"),
                   _int(d, "delivered_volume_ml", w), _int(d, "amount_kop", w), _int(d, "released_volume_ml", w),
                   _int(d, "released_amount_kop", w))


@dataclass(frozen=True, slots=True)
class FuelVoided(_Body):
    """``fuel.voided``: nothing dispensed; the reservation released or handed to the host."""

    KIND: ClassVar[str] = "fuel.voided"
    RELEASE: ClassVar[frozenset[str]] = frozenset({"released", "not_reserved", "correction"})
    card_no: str
    reason: str
    card_release: str
    sale_no: int | None
    txn_counter: int | None
    release_write_id: bytes | None

    def to_json(self) -> dict[str, Any]:
        """As journaled."""
        return {"card_no": self.card_no, "reason": self.reason, "card_release": self.card_release,
                "sale_no": self.sale_no, "txn_counter": self.txn_counter,
                "release_write_id": None if self.release_write_id is None else self.release_write_id.hex()}

    @classmethod
    def from_json(cls, raw: Any) -> FuelVoided:
        """The body journaled as ``raw``."""
        d, w = _obj(raw, cls.KIND), cls.KIND
        _exact(d, frozenset({"card_no", "reason", "card_release", "sale_no", "txn_counter", "release_write_id"}), w)
        release = _str(d, "card_release", w)
        if release not in cls.RELEASE:
            raise BodyError(f"{w}.card_release must be one of {', '.join(sorted(cls.RELEASE))}, got {release!r}")
        return cls(_str(d, "card_no", w), _str(d, "reason", w), release, _int(d, "sale_no", w, optional=True),
                   _int(d, "txn_counter", w, optional=True), _hex16(d, "release_write_id", w, optional=True))


@dataclass(frozen=True, slots=True)
class FuelDeclined(_Body):
    """``fuel.declined``: the evaluator declined; nothing reserved (carries the answer)."""

    KIND: ClassVar[str] = "fuel.declined"
    request: FuelRequest
    decision: FuelDecision
    card_no: str
    contract_id: int

    def to_json(self) -> dict[str, Any]:
        """As journaled (the card under ``card``)."""
        return {"request": request_json(self.request), "decision": decision_json(self.decision),
                "card": {"card_no": self.card_no, "contract_id": self.contract_id}}

    @classmethod
    def from_json(cls, raw: Any) -> FuelDeclined:
        """The body journaled as ``raw``."""
        d, w = _obj(raw, cls.KIND), cls.KIND
        _exact(d, frozenset({"request", "decision", "card"}), w)
        card = _obj(_field(d, "card", w), f"{w}.card")
        _exact(card, frozenset({"card_no", "contract_id"}), f"{w}.card")
        return cls(request_from_json(_field(d, "request", w), f"{w}.request"),
                   decision_from_json(_field(d, "decision", w), f"{w}.decision"),
                   _str(card, "card_no", f"{w}.card"), _int(card, "contract_id", f"{w}.card"))


@dataclass(frozen=True, slots=True)
class FuelCardRefused(_Body):
    """``fuel.card_refused``: a card refused at insertion (``card_no`` None if unreadable)."""

    KIND: ClassVar[str] = "fuel.card_refused"
    card_no: str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        """As journaled."""
        return {"card_no": self.card_no, "reason": self.reason}

    @classmethod
    def from_json(cls, raw: Any) -> FuelCardRefused:
        """The body journaled as ``raw``."""
        d, w = _obj(raw, cls.KIND), cls.KIND
        _exact(d, frozenset({"card_no", "reason"}), w)
        return cls(_str(d, "card_no", w, optional=True), _str(d, "reason", w))


@dataclass(frozen=True, slots=True)
class FuelEmergencyStop(_Body):
    """``fuel.emergency_stop``: the console stopped the pump (carries the answer)."""

    KIND: ClassVar[str] = "fuel.emergency_stop"
    sale_txn_id: str | None

    def to_json(self) -> dict[str, Any]:
        """As journaled."""
        return {"sale_txn_id": self.sale_txn_id}

    @classmethod
    def from_json(cls, raw: Any) -> FuelEmergencyStop:
        """The body journaled as ``raw``."""
        d, w = _obj(raw, cls.KIND), cls.KIND
        _exact(d, frozenset({"sale_txn_id"}), w)
        return cls(_str(d, "sale_txn_id", w, optional=True))


@dataclass(frozen=True, slots=True)
class FuelPumpReset(_Body):
    """``fuel.pump_reset``: the console cleared an emergency stop (an empty body)."""

    KIND: ClassVar[str] = "fuel.pump_reset"

    def to_json(self) -> dict[str, Any]:
        """As journaled: ``{}``."""
        return {}

    @classmethod
    def from_json(cls, raw: Any) -> FuelPumpReset:
        """The body journaled as ``raw``."""
        _exact(_obj(raw, cls.KIND), frozenset(), cls.KIND)
        return cls()


@dataclass(frozen=True, slots=True)
class FuelPumpAction(_Body):
    """``fuel.pump_action``: an operator suspended or resumed the pump's delivery (``action``
    ``suspend`` or ``resume``; ``sale_txn_id`` the lane's sale then, if any). Its own
    transaction; carries the answer."""

    KIND: ClassVar[str] = "fuel.pump_action"
    ACTIONS: ClassVar[frozenset[str]] = frozenset({"suspend", "resume"})
    action: str
    sale_txn_id: str | None

    def __post_init__(self) -> None:
        if self.action not in self.ACTIONS:
            raise BodyError(f"{self.KIND}.action must be one of {sorted(self.ACTIONS)}, got {self.action!r:.40}")

    def to_json(self) -> dict[str, Any]:
        """As journaled."""
        return {"action": self.action, "sale_txn_id": self.sale_txn_id}

    @classmethod
    def from_json(cls, raw: Any) -> FuelPumpAction:
        """The body journaled as ``raw``."""
        d, w = _obj(raw, cls.KIND), cls.KIND
        _exact(d, frozenset({"action", "sale_txn_id"}), w)
        return cls(_str(d, "action", w), _str(d, "sale_txn_id", w, optional=True))


@dataclass(frozen=True, slots=True)
class FuelPinChecked(_Body):
    """``fuel.pin_checked``: the card checked a PIN; the outcome, never the PIN."""

    KIND: ClassVar[str] = "fuel.pin_checked"
    OUTCOMES: ClassVar[frozenset[str]] = frozenset({"verified", "wrong_pin", "pin_blocked"})
    card_no: str | None
    outcome: str
    tries_left: int

    def to_json(self) -> dict[str, Any]:
        """As journaled."""
        return {"card_no": self.card_no, "outcome": self.outcome, "tries_left": self.tries_left}

    @classmethod
    def from_json(cls, raw: Any) -> FuelPinChecked:
        """The body journaled as ``raw``."""
        d, w = _obj(raw, cls.KIND), cls.KIND
        _exact(d, frozenset({"card_no", "outcome", "tries_left"}), w)
        outcome = _str(d, "outcome", w)
        if outcome not in cls.OUTCOMES:
            raise BodyError(f"{w}.outcome must be one of {', '.join(sorted(cls.OUTCOMES))}, got {outcome!r}")
        return cls(_str(d, "card_no", w, optional=True), outcome, _int(d, "tries_left", w))


@dataclass(frozen=True, slots=True)
class FuelTotalsMismatch(_Body):
    """``fuel.totals_mismatch``: the nozzle's totals after a sale are not its totals before
    plus what the sale delivered: fuel went through the meter that no sale of this lane
    accounts for (dispensed while the link was down, a meter fault, tampering). Journaled in
    the sale's transaction, after ``fuel.completed`` (so recovery checks a sale's totals
    once); the host lists it as an alert (``host.alerts``)."""

    KIND: ClassVar[str] = "fuel.totals_mismatch"
    sale_txn_id: str
    sale_no: int | None
    product: str
    before: NozzleTotals
    delivered_volume_ml: int
    delivered_amount_kop: int
    after: NozzleTotals

    @property
    def unexplained_ml(self) -> int:
        """Millilitres through the meter that the sale does not account for (may be < 0)."""
        return self.after.volume_ml - self.before.volume_ml - self.delivered_volume_ml

    @property
    def unexplained_kop(self) -> int:
        """Kopecks on the meter's money total that the sale does not account for."""
        return self.after.amount_kop - self.before.amount_kop - self.delivered_amount_kop

    def to_json(self) -> dict[str, Any]:
        """As journaled (the differences included, for a reader of the journal)."""
        return {"sale_txn_id": self.sale_txn_id, "sale_no": self.sale_no, "product": self.product,
                "before": self.before.to_json(), "delivered_volume_ml": self.delivered_volume_ml,
                "delivered_amount_kop": self.delivered_amount_kop, "after": self.after.to_json(),
                "unexplained_ml": self.unexplained_ml, "unexplained_kop": self.unexplained_kop}

    @classmethod
    def from_json(cls, raw: Any) -> FuelTotalsMismatch:
        """The body journaled as ``raw`` (its differences must agree with its totals)."""
        d, w = _obj(raw, cls.KIND), cls.KIND
        _exact(d, frozenset({"sale_txn_id", "sale_no", "product", "before", "delivered_volume_ml",
                             "delivered_amount_kop", "after", "unexplained_ml", "unexplained_kop"}), w)
        out = cls(_str(d, "sale_txn_id", w), _int(d, "sale_no", w, optional=True), _str(d, "product", w),
                  NozzleTotals.from_json(_field(d, "before", w), f"{w}.before"), _int(d, "delivered_volume_ml", w),
                  _int(d, "delivered_amount_kop", w), NozzleTotals.from_json(_field(d, "after", w), f"{w}.after"))
        if (_int(d, "unexplained_ml", w), _int(d, "unexplained_kop", w)) != (out.unexplained_ml, out.unexplained_kop):
            raise BodyError(f"{w}: unexplained_ml/unexplained_kop disagree with the totals")
        return out


# -- till ------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TillLine:
    """One line of a till sale as journaled: ``{"sku", "category", "amount_kop"}``."""

    sku: str
    category: Any  #: the category code (text or a number, as the till sent it)
    amount_kop: int

    def to_json(self) -> dict[str, Any]:
        """As journaled."""
        return {"sku": self.sku, "category": self.category, "amount_kop": self.amount_kop}

    @classmethod
    def from_json(cls, raw: Any, where: str = "line") -> TillLine:
        """The line journaled as ``raw``."""
        d = _obj(raw, where)
        _exact(d, frozenset({"sku", "category", "amount_kop"}), where)
        cat = _field(d, "category", where)
        if not isinstance(cat, (str, int)) or isinstance(cat, bool):
            raise BodyError(f"{where}.category must be text or a number, got {cat!r}")
        return cls(_str(d, "sku", where), cat, _int(d, "amount_kop", where))


@dataclass(frozen=True, slots=True)
class TillSaleOpened(_Body):
    """``till.sale_opened``: a sale opened with its lines (carries the answer)."""

    KIND: ClassVar[str] = "till.sale_opened"
    lines: tuple[TillLine, ...]

    def to_json(self) -> dict[str, Any]:
        """As journaled."""
        return {"lines": [line.to_json() for line in self.lines]}

    @classmethod
    def from_json(cls, raw: Any) -> TillSaleOpened:
        """The body journaled as ``raw``."""
        d, w = _obj(raw, cls.KIND), cls.KIND
        _exact(d, frozenset({"lines"}), w)
        return cls(tuple(TillLine.from_json(x, f"{w}.lines[{n}]") for n, x in enumerate(_list(d, "lines", w))))


@dataclass(frozen=True, slots=True)
class TillCardAttached(_Body):
    """``till.card_attached``: a club card attached to an open sale."""

    KIND: ClassVar[str] = "till.card_attached"
    SOURCES: ClassVar[frozenset[str]] = frozenset({"scanner", "keyed"})
    card_no: str
    source: str

    def to_json(self) -> dict[str, Any]:
        """As journaled."""
        return {"card_no": self.card_no, "source": self.source}

    @classmethod
    def from_json(cls, raw: Any) -> TillCardAttached:
        """The body journaled as ``raw``."""
        d, w = _obj(raw, cls.KIND), cls.KIND
        _exact(d, frozenset({"card_no", "source"}), w)
        source = _str(d, "source", w)
        if source not in cls.SOURCES:
            raise BodyError(f"{w}.source must be scanner or keyed, got {source!r}")
        return cls(_str(d, "card_no", w), source)


@dataclass(frozen=True, slots=True)
class TillSaleVoided(_Body):
    """``till.sale_voided``: voided by the till or by recovery; nothing charged."""

    KIND: ClassVar[str] = "till.sale_voided"
    reason: str

    def to_json(self) -> dict[str, Any]:
        """As journaled."""
        return {"reason": self.reason}

    @classmethod
    def from_json(cls, raw: Any) -> TillSaleVoided:
        """The body journaled as ``raw``."""
        d, w = _obj(raw, cls.KIND), cls.KIND
        _exact(d, frozenset({"reason"}), w)
        return cls(_str(d, "reason", w))


# -- what the host's ledger reads, without decoding the whole body ---------------------------------
# (and, for the till's kinds that have no typed body yet, the one place their layout is read)
# The host applies effects per record on every batch it ingests; a whole typed decode of a
# fuel.preauth costs ~20 us in CPython, against ~1 us for the two fields the ledger needs. These
# readers take those fields from the layouts above (same keys, same checks), so the layout of
# each kind is still defined here once; tests/wire/test_body_views.py checks they agree with
# the whole decode.

@dataclass(frozen=True, slots=True)
class CardTouch:
    """A fuel record's word on its card's transaction counter: ``txn_counter`` seen, and the
    card write ``write_id`` that counter value holds (None: the record only read it)."""

    card_no: str
    txn_counter: int
    write_id: bytes | None


#: The kinds :func:`card_touch` reads (a released ``fuel.voided`` and an applied
#: ``fuel.correction`` touch the card too: decode those whole, they are rare).
TOUCH_KINDS = frozenset({"fuel.preauth", "fuel.reserved", "fuel.card_committed"})


def card_touch(kind: str, raw: Any) -> CardTouch:
    """The :class:`CardTouch` of a ``fuel.preauth`` (the counter read, no write), a
    ``fuel.reserved`` or a ``fuel.card_committed`` journaled as ``raw``."""
    if kind == "fuel.preauth":
        d = _obj(raw, kind)
        w = f"{kind}.card"
        card = _obj(_field(d, "card", kind), w)
        return CardTouch(_str(card, "card_no", w), _int(card, "expected_txn", w), None)
    if kind in ("fuel.reserved", "fuel.card_committed"):
        d = _obj(raw, kind)
        return CardTouch(_str(d, "card_no", kind), _int(d, "txn_counter", kind), _hex16(d, "write_id", kind))
    raise BodyError(f"no card counter in a record of kind {kind!r}")


@dataclass(frozen=True, slots=True)
class Charge:
    """What a ``fuel.completed`` charges: the contract, the card, the product, the amount and
    volume delivered, and the authorization's time (the period its limits count in)."""

    contract_id: int
    card_no: str
    product: str
    amount_kop: int
    delivered_volume_ml: int
    auth_at_utc_s: int


def charge_of(raw: Any) -> Charge:
    """The :class:`Charge` of a ``fuel.completed`` journaled as ``raw``."""
    w = FuelCompleted.KIND
    d = _obj(raw, w)
    req = _obj(_field(d, "request", w), f"{w}.request")
    return Charge(_int(d, "contract_id", w), _str(d, "card_no", w), _str(req, "product", f"{w}.request"),
                  _int(d, "amount_kop", w), _int(d, "delivered_volume_ml", w), _int(req, "now_utc_s", f"{w}.request"))


@dataclass(frozen=True, slots=True)
class ClubTouch:
    """What a till record does to a club account: its card, whether it applies (every
    committed sale; a return whose result is ``OK``; an approved top-up), and its amount (the
    sale's total, the kopecks returned, the top-up)."""

    card_no: str
    applies: bool
    amount_kop: int


#: The till kinds :func:`club_touch` reads (their bodies are the till's: terminal/till.py).
CLUB_KINDS = frozenset({"till.sale_committed", "till.return", "till.topup"})


def club_touch(kind: str, raw: Any) -> ClubTouch:
    """The :class:`ClubTouch` of a ``till.sale_committed`` (``{"sale": {"card_no", "lines":
    [{"amount_kop"}...]}, "result"...}``), a ``till.return`` (``{"return": {"card_no",
    "returned_kop"...}, "result": {"reason"...}}``) or a ``till.topup`` (``{"topup":
    {"card_no", "amount_kop"...}, "result": {"approved"...}}``) journaled as ``raw``."""
    d = _obj(raw, kind)
    if kind == "till.sale_committed":
        w = f"{kind}.sale"
        sale = _obj(_field(d, "sale", kind), w)
        lines = _list(sale, "lines", w)
        total = sum(_int(_obj(line, f"{w}.lines[{n}]"), "amount_kop", f"{w}.lines[{n}]")
                    for n, line in enumerate(lines))
        return ClubTouch(_str(sale, "card_no", w), True, total)
    if kind == "till.return":
        w = f"{kind}.return"
        ret = _obj(_field(d, "return", kind), w)
        result = _obj(_field(d, "result", kind), f"{kind}.result")
        return ClubTouch(_str(ret, "card_no", w), _str(result, "reason", f"{kind}.result") == "OK",
                         _int(ret, "returned_kop", w))
    if kind == "till.topup":
        w = f"{kind}.topup"
        top = _obj(_field(d, "topup", kind), w)
        result = _obj(_field(d, "result", kind), f"{kind}.result")
        return ClubTouch(_str(top, "card_no", w), _bool(result, "approved", f"{kind}.result"),
                         _int(top, "amount_kop", w))
    raise BodyError(f"no club account in a record of kind {kind!r}")


#: The fields the host's ingest reads of the kinds most records are, as paths into the body
#: (``"a.b"``: key ``b`` of the map at key ``a``; one or two keys): what :func:`charge_of`
#: and :func:`card_touch` read, and a ``fuel.preauth``'s facts (its contract, card, counter,
#: product, authorized amount and volume). :func:`wire.decode` picks them out of a batch's
#: bodies as it checks them (``WireRecord.body_fields``); :func:`hot_fields` reads them of a
#: dict. The one list both readers follow.
HOT_FIELDS: dict[str, tuple[str, ...]] = {
    "fuel.completed": ("contract_id", "card_no", "request.product", "amount_kop", "delivered_volume_ml",
                       "request.now_utc_s"),
    "fuel.reserved": ("card_no", "txn_counter", "write_id"),
    "fuel.card_committed": ("card_no", "txn_counter", "write_id"),
    "fuel.preauth": ("card.contract_id", "card.card_no", "card.expected_txn", "request.product",
                     "decision.amount_kop", "decision.volume_ml"),
}
_HOT_SPLIT = {kind: tuple(tuple(p.split(".")) for p in paths) for kind, paths in HOT_FIELDS.items()}


def _at(body: Any, path: tuple[str, ...]) -> Any:
    v = body
    for key in path:
        if type(v) is not dict:
            return None
        v = v.get(key)
    return v if type(v) is int or type(v) is str else None


def hot_fields(kind: str, body: Any) -> tuple[Any, ...] | None:
    """The values at ``HOT_FIELDS[kind]``'s paths in ``body`` (plain dicts): each an exact int
    or str, else None (missing, another type, a path through something not a dict); what
    :func:`wire.decode` gives as ``WireRecord.body_fields``. None for a kind not listed."""
    paths = _HOT_SPLIT.get(kind)
    if paths is None:
        return None
    return tuple(_at(body, p) for p in paths)


#: Every kind this module types, by record kind.
KINDS: dict[str, type[_Body]] = {c.KIND: c for c in (
    FuelPreauth, FuelReserved, FuelPreset, FuelCompleted, FuelCardCommitted, FuelCorrection, FuelVoided,
    FuelDeclined, FuelCardRefused, FuelEmergencyStop, FuelPumpReset, FuelPumpAction, FuelPinChecked,
    FuelTotalsMismatch, TillSaleOpened, TillCardAttached, TillSaleVoided)}


def body_of(kind: str, raw: Any) -> Any:
    """The typed body of a record of ``kind`` journaled as ``raw``; BodyError if ``kind`` is
    not typed here or ``raw`` is not its shape."""
    cls = KINDS.get(kind)
    if cls is None:
        raise BodyError(f"no typed body for record kind {kind!r}")
    return cls.from_json(raw)
