"""Master data as stored (canonical JSON columns) to and from the :mod:`authz` model types."""

from __future__ import annotations

import json
from functools import lru_cache
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

from authz.club_model import (AccrualRate, Category, ClubAccount, ClubCard, ClubCardKind, ClubRules,
                              ClubStatus, KindCaps, PointLot)
from authz.fuel_model import (CardKind, CardStatus, Contract, DiscountKind, DiscountRule, DiscountWhere,
                              FuelCard, Limit, LimitUnit, OnBreach, Period, Product, ProductGroup, Scope,
                              Station, Tariff)
from wire import card_controls_from_map, card_controls_to_map

__all__ = ["dumps", "limits_to_json", "limits_from_json", "groups_to_json", "groups_from_json",
           "discounts_to_json", "discounts_from_json", "rules_to_json", "rules_from_json",
           "contract_from_row", "CONTRACT_COLUMNS", "card_from_row", "CARD_COLUMNS",
           "controls_to_json", "controls_from_json", "station_from_row",
           "STATION_COLUMNS", "account_from_row", "ACCOUNT_COLUMNS", "product_from_row", "club_card_from_row"]


_ENCODE = json.JSONEncoder(sort_keys=False, separators=(",", ":"), ensure_ascii=False).encode


def dumps(value: Any) -> str:
    """Compact JSON, UTF-8 text; keys in the order given (a body keeps the order the edge
    journaled, which is sorted: the journal's canonical form)."""
    return _ENCODE(value)


def _limit_json(lim: Limit) -> dict:
    d = {"limit_id": lim.limit_id, "unit": int(lim.unit), "period": int(lim.period), "amount": lim.amount,
         "scope": int(lim.scope), "group": None if lim.group is None else int(lim.group), "product": lim.product}
    if lim.on_breach is not OnBreach.DECLINE:
        d["on_breach"] = int(lim.on_breach)  # only when set: the limits stored before issue 11 are unchanged
    return d


def limits_to_json(limits: Iterable[Limit]) -> str:
    """A card's limits as stored (``on_breach`` only when not DECLINE)."""
    return dumps([_limit_json(lim) for lim in limits])


@lru_cache(maxsize=65_536)
def limits_from_json(text: str) -> tuple[Limit, ...]:
    """The limits stored as ``text`` (cached: many cards share the same limits)."""
    return tuple(Limit(d["limit_id"], LimitUnit(d["unit"]), Period(d["period"]), d["amount"], Scope(d["scope"]),
                       None if d["group"] is None else ProductGroup(d["group"]), d["product"],
                       OnBreach(d.get("on_breach", 0)))
                 for d in json.loads(text))


def controls_to_json(card: FuelCard) -> str | None:
    """The card's fleet controls (allowed products, time windows, station restriction,
    on-breach) as the ``fuel_cards.controls`` column: None when every one is the default
    (the card as before issue 11), else JSON of the fields that are not, in the form the
    fuel-card row carries them (:func:`wire.card_controls_to_map`)."""
    d = card_controls_to_map(card)
    return dumps(d) if d else None


@lru_cache(maxsize=4_096)
def controls_from_json(text: str | None) -> dict[str, Any]:
    """The FuelCard keywords of a ``controls`` column (empty for None), read with the wire
    row's checks (:func:`wire.card_controls_from_map`). Cached: fleets share them; the dict
    returned is read only."""
    return {} if text is None else card_controls_from_map(json.loads(text))


def groups_to_json(groups: Iterable[ProductGroup]) -> str:
    return dumps(sorted(int(g) for g in groups))


@lru_cache(maxsize=4_096)
def groups_from_json(text: str) -> frozenset[ProductGroup]:
    """The product groups stored as ``text`` (cached: cards and stations share a few sets;
    the frozenset is immutable)."""
    return frozenset(ProductGroup(g) for g in json.loads(text))


def _member(members: dict[Any, Any], cls: Any, value: Any) -> Any:
    """``cls(value)`` by a dict look-up (an Enum call costs a few us, a fold makes thousands);
    a value not in ``members`` goes to ``cls`` itself, so it raises as before."""
    m = members.get(value)
    return cls(value) if m is None else m


_TARIFFS = {t.value: t for t in Tariff}
_CARD_KINDS = {k.value: k for k in CardKind}
_CARD_STATUSES = {s.value: s for s in CardStatus}


@lru_cache(maxsize=4_096)
def _day(text: str) -> date:
    """``date.fromisoformat(text)``, cached: cards share a few expiry days."""
    return date.fromisoformat(text)


@lru_cache(maxsize=4_096)
def _station_ids(text: str) -> tuple[int, ...]:
    """A contract's chosen station ids as stored (cached: most contracts choose none or few
    alike; the tuple is immutable)."""
    return tuple(json.loads(text))


def discounts_to_json(rules: Iterable[DiscountRule]) -> str:
    return dumps([{"product": d.product, "where": int(d.where), "kind": int(d.kind), "value": d.value} for d in rules])


def discounts_from_json(tariff: int, text: str) -> tuple[DiscountRule, ...]:
    return tuple(DiscountRule(Tariff(tariff), d["product"], DiscountWhere(d["where"]), DiscountKind(d["kind"]),
                              d["value"]) for d in json.loads(text))


def rules_to_json(r: ClubRules) -> str:
    return dumps({"categories": [[c.code, c.accrues, c.redeemable] for c in r.categories],
                  "accrual_rates": [[a.channel, a.payment_method, a.rate_bp] for a in r.accrual_rates],
                  "channels": list(r.channels), "payment_methods": list(r.payment_methods),
                  "redemption_cap_bp": r.redemption_cap_bp, "maturity_s": r.maturity_s,
                  "expiry_months": r.expiry_months,
                  "caps": [[int(k), c.balance_cap_kop, c.turnover_cap_kop] for k, c in sorted(r.caps.items())],
                  "tz": r.tz})


def rules_from_json(text: str) -> ClubRules:
    d = json.loads(text)
    return ClubRules(categories=tuple(Category(c, a, r) for c, a, r in d["categories"]),
                     accrual_rates=tuple(AccrualRate(c, m, bp) for c, m, bp in d["accrual_rates"]),
                     channels=tuple(d["channels"]), payment_methods=tuple(d["payment_methods"]),
                     redemption_cap_bp=d["redemption_cap_bp"], maturity_s=d["maturity_s"],
                     expiry_months=d["expiry_months"],
                     caps={ClubCardKind(k): KindCaps(b, t) for k, b, t in d["caps"]}, tz=d["tz"])


CONTRACT_COLUMNS = "contract_id, tz, home_region, tariff, balance_kop, credit_line_kop, chosen_station_ids"


def contract_from_row(row: Sequence[Any]) -> Contract:
    cid, tz, region, tariff, balance, credit, chosen = row
    return Contract(cid, tz, region, _member(_TARIFFS, Tariff, tariff), balance, credit, _station_ids(chosen))


CARD_COLUMNS = "card_no, contract_id, expires_on, groups, limits, kind, status, controls"


def card_from_row(row: Sequence[Any]) -> FuelCard:
    """The FuelCard of a ``fuel_cards`` row read as :data:`CARD_COLUMNS`."""
    no, cid, expires, groups, limits, kind, status, controls = row
    if controls is None:  # the common case: no fleet controls, no keywords to unpack
        return FuelCard(no, cid, _day(expires), groups_from_json(groups), limits_from_json(limits),
                        _member(_CARD_KINDS, CardKind, kind), _member(_CARD_STATUSES, CardStatus, status))
    return FuelCard(no, cid, _day(expires), groups_from_json(groups), limits_from_json(limits),
                    _member(_CARD_KINDS, CardKind, kind), _member(_CARD_STATUSES, CardStatus, status),
                    **controls_from_json(controls))


STATION_COLUMNS = "station_id, region, groups, prices, max_fill_ml"


def station_from_row(row: Sequence[Any]) -> Station:
    sid, region, groups, prices, max_fill = row
    return Station(sid, region, groups_from_json(groups), json.loads(prices), max_fill)


ACCOUNT_COLUMNS = "account_id, kind, activated, status, balance_kop, turnover_month, turnover_kop"


def account_from_row(row: Sequence[Any], lots: Sequence[PointLot]) -> ClubAccount:
    aid, kind, activated, status, balance, month, turnover = row
    return ClubAccount(aid, ClubCardKind(kind), bool(activated), ClubStatus(status), balance, month, turnover,
                       tuple(lots))


def product_from_row(row: Sequence[Any]) -> Product:
    return Product(row[0], row[1], ProductGroup(row[2]))


def club_card_from_row(row: Sequence[Any]) -> ClubCard:
    return ClubCard(row[0], row[1], ClubStatus(row[2]))

