"""Changes to a running replica: rows the host inserted, replaced or deleted, applied at once.

A :class:`FuelUpdate` or :class:`ClubUpdate` names whole rows to upsert and keys to delete,
in any of the tables of its business. :func:`apply_fuel_update` and :func:`apply_club_update`
are the readable specification of what an update does to a model and its state; the
evaluators' ``apply`` methods (reference and native) give the same decisions afterwards
(tests/test_updates.py).

The rules of an update:

- An upserted row replaces the row of the same key, in its position, or is appended at the
  end of its table; a deleted key's row goes (deleting a key that is absent changes nothing).
- The state of an upserted row is the host's: a contract's balance, a fuel card's limit
  counters (those given with it; a limit without one has spent nothing), a club account's
  balance, turnover and lots. Rows the update does not name keep their state now, this
  site's spend included. A site's replica hands the evaluators rows already translated by
  the balance rule (:mod:`authz.balance`: the host's figures plus the site's own spend past
  the row's watermark, a contract's balance capped by the site's offline allowance), so the
  state an update sets is the site's view, the same for both evaluators.
- A club account row comes with exactly the cards that point to it: a card the account had
  and the row does not list goes, unless another row of the same update lists it.
- The stop list: ``stop_listed`` numbers go on it, ``stop_unlisted`` come off (whether or not
  they are cards of this replica).
- The result must be a consistent model (every check of :class:`~authz.fuel_model.FuelModel`
  or :class:`~authz.club_model.ClubModel`: a card of an unknown contract, a limit of an
  unknown product, a contract choosing an unknown station...). If it is not, the whole
  update is refused with a :class:`~authz.errors.ModelError` and nothing changes. A key
  upserted twice, or upserted and deleted, in one update is refused too.

Positions: after a delete the rows after it move up in the reference (a new tuple); the
native evaluator keeps positions and leaves a hole. Decisions by number and id are the same;
batches must be built from the evaluator's own ``model``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from .club_model import (
    AccountState,
    ClubAccount,
    ClubCard,
    ClubModel,
    ClubRules,
    ClubState,
)
from .errors import ModelError
from .fuel_model import (
    Contract,
    DiscountRule,
    FuelCard,
    FuelModel,
    FuelState,
    LimitCounter,
    Product,
    Station,
    Tariff,
    mask_card_no,
)

__all__ = [
    "ClubUpdate",
    "FuelUpdate",
    "apply_club_update",
    "apply_fuel_update",
    "check_club_update",
    "check_fuel_update",
    "merged_discounts",
    "merged_products",
    "merged_stations",
]


_R = TypeVar("_R")

@dataclass(frozen=True, slots=True)
class FuelUpdate:
    """Rows of the fuel replica to upsert and keys to delete, applied as one change.

    ``tariffs``: (tariff, its discount rows) pairs, each replacing every row of that tariff;
    ``cards``: (card, counters) pairs, the counters as (limit_id, LimitCounter) pairs.
    """

    products: tuple[Product, ...] = ()
    delete_products: tuple[str, ...] = ()
    stations: tuple[Station, ...] = ()
    delete_stations: tuple[int, ...] = ()
    tariffs: tuple[tuple[Tariff, tuple[DiscountRule, ...]], ...] = ()
    delete_tariffs: tuple[Tariff, ...] = ()
    contracts: tuple[Contract, ...] = ()
    delete_contracts: tuple[int, ...] = ()
    cards: tuple[tuple[FuelCard, tuple[tuple[int, LimitCounter], ...]], ...] = ()
    delete_cards: tuple[str, ...] = ()
    stop_listed: tuple[str, ...] = ()
    stop_unlisted: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ClubUpdate:
    """Rows of the club replica to upsert and keys to delete, applied as one change.

    ``accounts``: (account, its cards) pairs; ``rules``: new rules, or None to keep them.
    """

    rules: ClubRules | None = None
    accounts: tuple[tuple[ClubAccount, tuple[ClubCard, ...]], ...] = ()
    delete_accounts: tuple[int, ...] = ()


def _keys_once(upserts: Iterable[Hashable], deletes: Iterable[Hashable], what: str,
               show: Callable[[Any], str] = repr) -> set[Hashable]:
    """The upserted keys; a ModelError if one repeats or is also deleted."""
    seen: set[Hashable] = set()
    for k in upserts:
        if k in seen:
            raise ModelError(f"update repeats {what} {show(k)}")
        seen.add(k)
    for k in deletes:
        if k in seen:
            raise ModelError(f"update both upserts and deletes {what} {show(k)}")
    return seen


def _merged(rows: tuple[_R, ...], key: Callable[[_R], Hashable], upserts: Iterable[_R],
            deletes: Iterable[Hashable]) -> list[_R]:
    """``rows`` with ``upserts`` replacing rows of the same key in place (or appended) and
    the rows of ``deletes`` removed."""
    gone = set(deletes)
    new = {key(r): r for r in upserts}
    out = []
    for r in rows:
        k = key(r)
        if k in gone:
            continue
        out.append(new.pop(k, r))
    out.extend(new.values())
    return out


def check_fuel_update(update: FuelUpdate) -> None:
    """The checks of ``update`` on its own (before the model): a ModelError if a key repeats,
    is both upserted and deleted, or a tariff's rows name another tariff."""
    _keys_once((p.code for p in update.products), update.delete_products, "product")
    _keys_once((s.station_id for s in update.stations), update.delete_stations, "station")
    _keys_once((t for t, _ in update.tariffs), update.delete_tariffs, "tariff")
    _keys_once((c.contract_id for c in update.contracts), update.delete_contracts, "contract")
    _keys_once((c.card_no for c, _ in update.cards), update.delete_cards, "card", mask_card_no)
    _keys_once(update.stop_listed, update.stop_unlisted, "stop-list number", mask_card_no)
    for tariff, rules in update.tariffs:
        for rule in rules:
            if rule.tariff != tariff:
                raise ModelError(f"a discount row of tariff {Tariff(rule.tariff).name} sent as {Tariff(tariff).name}")


def merged_products(products: tuple[Product, ...], update: FuelUpdate) -> list[Product]:
    """The products after ``update``."""
    return _merged(products, lambda p: p.code, update.products, update.delete_products)


def merged_stations(stations: tuple[Station, ...], update: FuelUpdate) -> list[Station]:
    """The stations after ``update``."""
    return _merged(stations, lambda s: s.station_id, update.stations, update.delete_stations)


def merged_discounts(discounts: tuple[DiscountRule, ...], update: FuelUpdate) -> list[DiscountRule]:
    """The discount rows after ``update``: every row of a tariff it names is replaced."""
    replaced = {Tariff(t) for t, _ in update.tariffs} | {Tariff(t) for t in update.delete_tariffs}
    out = [d for d in discounts if d.tariff not in replaced]
    for _, rules in update.tariffs:
        out.extend(rules)
    return out


def apply_fuel_update(model: FuelModel, state: FuelState, update: FuelUpdate) -> tuple[FuelModel, FuelState]:
    """The model and state after ``update`` (new objects; ``model`` and ``state`` are not
    changed). Raises ModelError, naming the row, if the result would be inconsistent."""
    check_fuel_update(update)
    cards = _merged(model.cards, lambda c: c.card_no, (c for c, _ in update.cards), update.delete_cards)
    host_counters: dict[tuple[str, int], LimitCounter] = {}
    for card, pairs in update.cards:
        limit_ids = {lim.limit_id for lim in card.limits}
        for limit_id, counter in pairs:
            if limit_id in limit_ids:
                host_counters[(card.card_no, limit_id)] = counter
    touched = {c.card_no for c, _ in update.cards} | set(update.delete_cards)
    stop = set(model.stop_list if state.stop_list is None else state.stop_list)
    stop.difference_update(update.stop_unlisted)
    stop.update(update.stop_listed)
    new_model = FuelModel(  # checks every table: ModelError if inconsistent
        products=merged_products(model.products, update),
        stations=merged_stations(model.stations, update),
        contracts=_merged(model.contracts, lambda c: c.contract_id, update.contracts, update.delete_contracts),
        cards=cards, discounts=merged_discounts(model.discounts, update), stop_list=stop,
        counters={**{k: v for k, v in model.counters.items() if k[0] not in touched}, **host_counters})
    # the state: the host's for the rows upserted, this site's now for the others
    upserted = {c.contract_id for c in update.contracts}
    balances = {c.contract_id: c.balance_kop if c.contract_id in upserted else state.balances[c.contract_id]
                for c in new_model.contracts}
    counters = {k: v for k, v in state.counters.items() if k[0] not in touched}
    counters.update(host_counters)
    return new_model, FuelState(balances, counters)


def check_club_update(update: ClubUpdate) -> None:
    """The checks of ``update`` on its own: a ModelError if an account repeats or is both
    upserted and deleted, a card is listed twice or with an account it does not point to."""
    _keys_once((a.account_id for a, _ in update.accounts), update.delete_accounts, "account")
    listed: set[str] = set()
    for account, cards in update.accounts:
        for card in cards:
            if card.account_id != account.account_id:
                raise ModelError(f"club card {mask_card_no(card.card_no)} of account {card.account_id} "
                                 f"sent with account {account.account_id}")
            if card.card_no in listed:
                raise ModelError(f"update lists club card {mask_card_no(card.card_no)} twice")
            listed.add(card.card_no)


def apply_club_update(model: ClubModel, state: ClubState, update: ClubUpdate) -> tuple[ClubModel, ClubState]:
    """The model and state after ``update`` (new objects). Raises ModelError if the result
    would be inconsistent."""
    check_club_update(update)
    rewritten = {a.account_id for a, _ in update.accounts} | set(update.delete_accounts)
    accounts = _merged(model.accounts, lambda a: a.account_id, (a for a, _ in update.accounts),
                       update.delete_accounts)
    # a card stays where it is unless a row lists it or its account row is rewritten
    new_cards = {c.card_no: c for _, cards in update.accounts for c in cards}
    cards = []
    for c in model.cards:
        if c.card_no in new_cards:
            cards.append(new_cards.pop(c.card_no))
        elif c.account_id not in rewritten:
            cards.append(c)
    cards.extend(new_cards.values())
    new_model = ClubModel(rules=model.rules if update.rules is None else update.rules,
                          accounts=accounts, cards=cards)
    # the state: the host's for the accounts upserted, this site's now for the others
    new_state = ClubState.from_model(new_model)
    for account_id, now in state.accounts.items():
        if account_id not in rewritten:
            new_state.accounts[account_id] = AccountState(now.balance_kop, now.turnover_month, now.turnover_kop,
                                                          list(now.lots))
    return new_model, new_state
