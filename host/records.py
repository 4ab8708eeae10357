"""What the host reads out of the edge's journal records (docs/lanes.md has the bodies).

The record kinds are the edge's (``terminal/fuel.py``, ``terminal/till.py``); ``host``
does not import ``terminal``, so the names are repeated here. :func:`facts` pulls the
columns the ledger indexes (contract, card, product, amount, volume) out of a body, and is
also what :func:`host.reconcile` sums on the edge's side, so both sides count alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FUEL_PREAUTH", "FUEL_RESERVED", "FUEL_PRESET", "FUEL_COMPLETED", "FUEL_CARD_COMMITTED",
           "FUEL_VOIDED", "FUEL_CORRECTION", "FUEL_DECLINED", "FUEL_CARD_REFUSED", "FUEL_EMERGENCY_STOP",
           "FUEL_PUMP_RESET", "FUEL_PUMP_ACTION", "FUEL_PIN_CHECKED", "TILL_SALE_OPENED", "TILL_SALE_COMMITTED",
           "TILL_SALE_DECLINED",
           "TILL_SALE_VOIDED", "TILL_RETURN", "TILL_TOPUP", "TILL_CARD_ATTACHED", "KNOWN_KINDS", "Facts", "facts", "BodyError",
           "get", "FACTLESS_KINDS", "NO_FACTS"]

FUEL_PREAUTH = "fuel.preauth"
FUEL_RESERVED = "fuel.reserved"
FUEL_PRESET = "fuel.preset"
FUEL_COMPLETED = "fuel.completed"
FUEL_CARD_COMMITTED = "fuel.card_committed"
FUEL_VOIDED = "fuel.voided"
FUEL_CORRECTION = "fuel.correction"
FUEL_DECLINED = "fuel.declined"
FUEL_CARD_REFUSED = "fuel.card_refused"
FUEL_EMERGENCY_STOP = "fuel.emergency_stop"
FUEL_PUMP_RESET = "fuel.pump_reset"
FUEL_PUMP_ACTION = "fuel.pump_action"
FUEL_PIN_CHECKED = "fuel.pin_checked"
TILL_SALE_OPENED = "till.sale_opened"
TILL_SALE_COMMITTED = "till.sale_committed"
TILL_SALE_DECLINED = "till.sale_declined"
TILL_SALE_VOIDED = "till.sale_voided"
TILL_RETURN = "till.return"
TILL_TOPUP = "till.topup"
TILL_CARD_ATTACHED = "till.card_attached"

#: Every kind the edge writes today. Another kind is stored and flagged ``unknown_kind``.
KNOWN_KINDS = frozenset({
    FUEL_PREAUTH, FUEL_RESERVED, FUEL_PRESET, FUEL_COMPLETED, FUEL_CARD_COMMITTED, FUEL_VOIDED,
    FUEL_CORRECTION, FUEL_DECLINED, FUEL_CARD_REFUSED, FUEL_EMERGENCY_STOP, FUEL_PUMP_RESET, FUEL_PUMP_ACTION,
    FUEL_PIN_CHECKED,
    TILL_SALE_OPENED, TILL_SALE_COMMITTED, TILL_SALE_DECLINED, TILL_SALE_VOIDED, TILL_RETURN, TILL_TOPUP,
    TILL_CARD_ATTACHED, "fuel.totals_mismatch",  # the last one: host.alerts
})


#: The known kinds :func:`facts` reads nothing of (their ``records`` columns stay NULL).
FACTLESS_KINDS = KNOWN_KINDS - {
    FUEL_COMPLETED, FUEL_CORRECTION, FUEL_PREAUTH, FUEL_RESERVED, FUEL_CARD_COMMITTED, FUEL_VOIDED,
    FUEL_CARD_REFUSED, FUEL_PIN_CHECKED, FUEL_DECLINED, TILL_SALE_COMMITTED, TILL_SALE_DECLINED, TILL_RETURN,
    TILL_CARD_ATTACHED, TILL_TOPUP}

#: The five columns of a record of no facts, as :meth:`Facts.columns` gives them.
NO_FACTS: tuple[None, None, None, None, None] = (None, None, None, None, None)


class BodyError(ValueError):
    """A record body lacks a field the ledger needs, or holds the wrong type there."""


_MISSING = object()
_PATHS: dict[str, tuple[str, ...]] = {}


def get(body: Mapping[str, Any], path: str, typ: type | tuple[type, ...] = int, *, optional: bool = False) -> Any:
    """``body[a][b]...`` for ``path`` = ``"a.b"``, checked to be of ``typ`` (``bool`` is not an
    ``int`` here). Raises :class:`BodyError` naming the path."""
    parts = _PATHS.get(path)
    if parts is None:
        parts = _PATHS[path] = tuple(path.split("."))
    v: Any = body
    for part in parts:
        if type(v) is dict:  # what wire.decode gives: no ABC check
            v = v.get(part, _MISSING)
        elif v is not _MISSING and isinstance(v, Mapping):
            try:
                v = v[part]
            except KeyError:
                v = _MISSING
        else:
            v = _MISSING
            break
    if type(v) is typ:  # the common case
        return v
    if v is _MISSING or (v is None and optional):
        if optional:
            return None
        raise BodyError(f"body.{path} is missing")
    if type(v) is bool and typ is not bool and (not isinstance(typ, tuple) or bool not in typ):
        raise BodyError(f"body.{path} must be {_tname(typ)}, got a bool")
    if not isinstance(v, typ):
        raise BodyError(f"body.{path} must be {_tname(typ)}, got {type(v).__name__}")
    return v


def _tname(typ: type | tuple[type, ...]) -> str:
    if isinstance(typ, tuple):
        return " or ".join(t.__name__ for t in typ)
    return typ.__name__


@dataclass(frozen=True, slots=True)
class Facts:
    """The indexed columns of one record (None where the kind has no such fact)."""

    contract_id: int | None = None
    card_no: str | None = None
    product: str | None = None
    amount_kop: int | None = None
    volume_ml: int | None = None

    def columns(self) -> tuple[int | None, str | None, str | None, int | None, int | None]:
        """The ``records`` columns ``contract_id, card_no, product, amount_kop, volume_ml``."""
        return (self.contract_id, self.card_no, self.product, self.amount_kop, self.volume_ml)


_NONE = Facts()


def facts(kind: str, body: Mapping[str, Any]) -> Facts:
    """The contract, card, product, amount and volume of a record, by kind:

    - ``fuel.completed``: the charged ``amount_kop`` and ``delivered_volume_ml``;
    - ``fuel.correction``: the released (unused) amount and volume;
    - ``fuel.preauth``: the authorized amount and volume;
    - ``till.sale_committed``: the sale's total; ``till.return``: the returned amount;
      ``till.topup``: the amount put on the card.

    Raises :class:`BodyError` when a field the kind needs is missing or mistyped.
    """
    if kind == FUEL_COMPLETED:
        return Facts(get(body, "contract_id"), get(body, "card_no", str), get(body, "request.product", str),
                     get(body, "amount_kop"), get(body, "delivered_volume_ml"))
    if kind == FUEL_CORRECTION:
        return Facts(get(body, "contract_id"), get(body, "card_no", str), None,
                     get(body, "released_amount_kop"), get(body, "released_volume_ml"))
    if kind == FUEL_PREAUTH:
        return Facts(get(body, "card.contract_id"), get(body, "card.card_no", str), get(body, "request.product", str),
                     get(body, "decision.amount_kop"), get(body, "decision.volume_ml"))
    if kind in (FUEL_RESERVED, FUEL_CARD_COMMITTED, FUEL_VOIDED, FUEL_CARD_REFUSED, FUEL_PIN_CHECKED):
        return Facts(card_no=get(body, "card_no", str, optional=True))
    if kind == FUEL_DECLINED:
        return Facts(get(body, "card.contract_id", optional=True), get(body, "card.card_no", str, optional=True),
                     get(body, "request.product", str, optional=True))
    if kind in (TILL_SALE_COMMITTED, TILL_SALE_DECLINED):
        lines = get(body, "sale.lines", list)
        total = 0
        for i, line in enumerate(lines):
            total += get(line if isinstance(line, Mapping) else {}, "amount_kop") if isinstance(line, Mapping) \
                else _bad(f"body.sale.lines[{i}] must be a map")
        return Facts(card_no=get(body, "sale.card_no", str), amount_kop=total)
    if kind == TILL_RETURN:
        return Facts(card_no=get(body, "return.card_no", str), amount_kop=get(body, "return.returned_kop"))
    if kind == TILL_CARD_ATTACHED:
        return Facts(card_no=get(body, "card_no", str))
    if kind == TILL_TOPUP:
        return Facts(card_no=get(body, "topup.card_no", str), amount_kop=get(body, "topup.amount_kop"))
    return _NONE


def _bad(msg: str) -> int:
    raise BodyError(msg)
