"""The reference fuel rules: how much a card may buy, and what a completed delivery costs.

This module is the readable specification of every fuel rule in docs/rules.md; the native
evaluator must give the same answers (tests/test_differential.py checks it). Functions take
the model (read only) and the state (balances and counters; only :func:`complete` changes it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date

from .errors import RequestError
from .fuel_model import (CardStatus, Contract, DiscountKind, DiscountWhere, FuelCard,
                         FuelCompletion, FuelDecision, FuelModel, FuelRequest, FuelState, Limit,
                         LimitCounter, LimitUnit, OnBreach, Period, Product, RuleException, Station,
                         StationScope, mask_card_no)
from .localtime import (MAX_UTC_S, day_number, local_date, local_weekday_minute, month_start,
                        quarter_start, week_start, year_start)
from .money import (MAX_AMOUNT_KOP, MAX_VOLUME_ML, amount_for_volume, bp_of,
                    max_volume_for_amount)
from .reasons import Reason


def authorize(model: FuelModel, state: FuelState, req: FuelRequest) -> FuelDecision:
    """The largest volume (and its amount) ``req`` may dispense, and the binding reason.

    Checks in order: stop list, card blocked, card expired, product group allowed on the
    card, product sold at the station. Then the card's controls (:func:`broken_controls`):
    its product list, its station restriction, its time windows; a broken one declines with
    its reason when the card's ``on_breach`` is DECLINE, and becomes an exception of the
    answer when it is ALERT. Then the volume is the smallest of: the preset (or the
    station's largest fill), every covering DECLINE limit's remainder in its current period
    (a purchase-count limit leaves nothing once its count is reached, and never bounds the
    volume otherwise), and what the contract balance plus credit line pays for. Ties go to
    the earlier of that list, so a preset that exactly meets a limit is approved as asked
    (reason OK). An ALERT limit never bounds the answer: each one the answer goes past adds
    an exception (LIMIT, or LIMIT_EXHAUSTED when it has nothing left). A decline carries no
    exceptions.
    """
    card, station, product = _resolve(model, req)
    if card.card_no in (model.stop_list if state.stop_list is None else state.stop_list):
        return _decline(Reason.STOP_LIST)
    if card.status is CardStatus.BLOCKED:
        return _decline(Reason.CARD_BLOCKED)
    contract = model.contracts[model.contract_index[card.contract_id]]
    today = local_date(req.now_utc_s, contract.tz)
    if today > card.expires_on:
        return _decline(Reason.CARD_EXPIRED)
    if product.group not in card.groups:
        return _decline(Reason.PRODUCT_NOT_ALLOWED)
    list_price = station.prices_kop_per_l.get(product.code)
    if product.group not in station.groups or list_price is None:
        return _decline(Reason.PRODUCT_NOT_SOLD)
    exceptions: list[RuleException] = []
    for broken in broken_controls(card, contract, station, product, req.now_utc_s):
        if card.on_breach is OnBreach.DECLINE:
            return _decline(broken)
        exceptions.append(RuleException(broken))
    price = unit_price(model, contract, station, product, list_price)

    if req.preset_volume_ml is not None:
        volume = req.preset_volume_ml
    elif req.preset_amount_kop is not None:
        volume = max_volume_for_amount(req.preset_amount_kop, price)
    else:
        volume = station.max_fill_ml
    reason, binding = Reason.OK, None

    def fits_of(limit: Limit) -> int | None:
        """The volume ``limit`` leaves (None: a purchase count not yet reached, no bound)."""
        left = limit.amount - spent_in_period(limit, state.counters.get((card.card_no, limit.limit_id)), today)
        if limit.unit is LimitUnit.PURCHASES:
            return None if left > 0 else 0
        fits = left if limit.unit is LimitUnit.MILLILITRES else max_volume_for_amount(left, price)
        return max(fits, 0)

    covering = [limit for limit in card.limits if limit.covers(product)]
    for limit in covering:
        if limit.on_breach is OnBreach.DECLINE:
            fits = fits_of(limit)
            if fits is not None and fits < volume:
                volume, reason, binding = fits, Reason.LIMIT, limit.limit_id

    available = state.balances[contract.contract_id] + contract.credit_line_kop
    fits = max_volume_for_amount(available, price)
    if fits < volume:
        volume, reason, binding = fits, Reason.BALANCE, None

    if volume == 0:
        reason = {Reason.OK: Reason.PRESET_TOO_SMALL, Reason.LIMIT: Reason.LIMIT_EXHAUSTED,
                  Reason.BALANCE: Reason.BALANCE_EXHAUSTED}[reason]
        return FuelDecision(reason, 0, 0, price, list_price, binding)
    for limit in covering:
        if limit.on_breach is OnBreach.ALERT:
            alert_fits = fits_of(limit)
            if alert_fits is not None and alert_fits < volume:
                exceptions.append(RuleException(Reason.LIMIT if alert_fits else Reason.LIMIT_EXHAUSTED,
                                                limit.limit_id))
    return FuelDecision(reason, volume, amount_for_volume(volume, price), price, list_price, binding,
                        tuple(exceptions))


def broken_controls(card: FuelCard, contract: Contract, station: Station, product: Product,
                    now_utc_s: int) -> list[Reason]:
    """The fleet manager's controls of ``card`` that a purchase of ``product`` at ``station``
    at UTC second ``now_utc_s`` breaks, in checking order: its product list
    (PRODUCT_NOT_ALLOWED), its station restriction (STATION_NOT_ALLOWED: the contract's home
    region, or the listed stations) and its time windows (OUTSIDE_TIME_WINDOW: local weekday
    and minute in the contract's zone; no windows is any time)."""
    broken: list[Reason] = []
    if card.products is not None and product.code not in card.products:
        broken.append(Reason.PRODUCT_NOT_ALLOWED)
    if (card.station_scope is StationScope.HOME_REGION and station.region != contract.home_region) or \
            (card.station_scope is StationScope.LISTED and station.station_id not in card.station_ids):
        broken.append(Reason.STATION_NOT_ALLOWED)
    if card.windows:
        weekday, minute = local_weekday_minute(now_utc_s, contract.tz)
        if not any(w.contains(weekday, minute) for w in card.windows):
            broken.append(Reason.OUTSIDE_TIME_WINDOW)
    return broken


def complete(model: FuelModel, state: FuelState, req: FuelRequest, decision: FuelDecision,
             delivered_volume_ml: int) -> FuelCompletion:
    """Charge a delivery of ``delivered_volume_ml`` under ``decision`` and update the state.

    The amount is the delivered volume at the decision's unit price. Every covering limit
    with a period counts the delivery (litres or kopecks) in the period of the
    authorization's time; the contract balance goes down by the amount. What was authorized
    but not delivered is reported as released.
    """
    card, _station, product = _resolve(model, req)
    if not decision.approved:
        raise RequestError(f"cannot complete a declined authorization (reason {decision.reason.name})")
    if type(delivered_volume_ml) is not int or not 0 <= delivered_volume_ml <= decision.volume_ml:
        raise RequestError(f"delivered volume {delivered_volume_ml!r} ml is outside "
                           f"0..{decision.volume_ml} ml authorized")
    contract = model.contracts[model.contract_index[card.contract_id]]
    today = local_date(req.now_utc_s, contract.tz)
    amount = amount_for_volume(delivered_volume_ml, decision.unit_price_kop_per_l)
    after = count_delivery(card, product, today, lambda lid: state.counters.get((card.card_no, lid)),
                           delivered_volume_ml, amount)
    for limit_id, counter in after:
        state.counters[(card.card_no, limit_id)] = counter
    state.balances[contract.contract_id] -= amount
    return FuelCompletion(delivered_volume_ml, amount, tuple(after), state.balances[contract.contract_id],
                          decision.volume_ml - delivered_volume_ml, decision.amount_kop - amount)


def count_delivery(card: FuelCard, product: Product, today: date, counter_of: Callable[[int], LimitCounter | None],
                   volume_ml: int, amount_kop: int) -> list[tuple[int, LimitCounter]]:
    """The counters of ``card``'s limits after a delivery of ``volume_ml`` (``amount_kop``)
    of ``product`` authorized on local day ``today``: every limit with a period that covers
    the product counts it (litres, kopecks, or one purchase when anything was delivered) in
    the period containing ``today``; a counter
    of an earlier period starts again from nothing. ``counter_of(limit_id)`` is the counter
    now. The one counting rule of :func:`complete` and of the balance rule
    (:func:`authz.balance.counters_after`)."""
    after: list[tuple[int, LimitCounter]] = []
    for limit in card.limits:
        if limit.period is Period.TRANSACTION or not limit.covers(product):
            continue
        start = period_start(limit.period, today)
        counter = counter_of(limit.limit_id)
        if counter is None or counter.period_start < start:
            counter = LimitCounter(0, start)
        if limit.unit is LimitUnit.PURCHASES:
            if volume_ml == 0:
                continue  # nothing delivered: not a purchase
            added = 1
        else:
            added = volume_ml if limit.unit is LimitUnit.MILLILITRES else amount_kop
        after.append((limit.limit_id, LimitCounter(counter.spent + added, counter.period_start)))
    return after


def unit_price(model: FuelModel, contract: Contract, station: Station, product: Product,
               list_price: int) -> int:
    """The list price less the contract tariff's largest discount that applies here."""
    best = 0
    for rule in model.discount_index.get((contract.tariff, product.code), ()):
        if rule.where is DiscountWhere.HOME_REGION and station.region != contract.home_region:
            continue
        if rule.where is DiscountWhere.CHOSEN_STATIONS and station.station_id not in contract.chosen_station_ids:
            continue
        off = rule.value if rule.kind is DiscountKind.KOP_PER_L else bp_of(list_price, rule.value)
        best = max(best, off)
    return max(list_price - best, 0)


def period_start(period: Period, today: date) -> int:
    """The local day number the period containing ``today`` started on (0 for lifetime)."""
    if period is Period.DAY:
        return day_number(today)
    if period is Period.WEEK:
        return day_number(week_start(today))
    if period is Period.MONTH:
        return day_number(month_start(today))
    if period is Period.QUARTER:
        return day_number(quarter_start(today))
    if period is Period.YEAR:
        return day_number(year_start(today))
    return 0


def spent_in_period(limit: Limit, counter: LimitCounter | None, today: date) -> int:
    """What ``limit`` has spent in its current period (a per-transaction limit: nothing).

    A counter from an earlier period has rolled over; one from a later period (a clock
    that went back) still counts, which errs on the side of refusing.
    """
    if limit.period is Period.TRANSACTION or counter is None:
        return 0
    if counter.period_start < period_start(limit.period, today):
        return 0
    return counter.spent


def _resolve(model: FuelModel, req: FuelRequest) -> tuple[FuelCard, Station, Product]:
    """Check a request's shape and find its card, station and product, or RequestError."""
    check_request(req)
    card = model.card(req.card_no)
    si, pi = station_product_positions(req, model.station_index, model.product_index)
    return card, model.stations[si], model.products[pi]


def station_product_positions(req: FuelRequest, station_index: Mapping[int, int],
                              product_index: Mapping[str, int]) -> tuple[int, int]:
    """The positions of ``req``'s station and product (a checked request), or a RequestError
    naming the one that is unknown: the lookup of both evaluators."""
    si = station_index.get(req.station_id)
    if si is None:
        raise RequestError(f"unknown station {req.station_id!r}")
    pi = product_index.get(req.product)
    if pi is None:
        raise RequestError(f"unknown product {req.product!r}")
    return si, pi


def check_request(req: object) -> None:
    """A RequestError naming what is wrong unless ``req`` is a well-formed FuelRequest: card
    number text, station id a whole number, product code text, a time in 1970..2200 and
    the presets of :func:`check_presets`. Whether the card, station and product exist is
    the evaluator's to say. The one request check of the reference and native evaluators."""
    if not isinstance(req, FuelRequest):
        raise RequestError(f"expected a FuelRequest, got {type(req).__name__}")
    if type(req.card_no) is not str:
        raise RequestError(f"card_no must be text, got {type(req.card_no).__name__}")
    if type(req.station_id) is not int:
        raise RequestError(f"station_id must be a whole number, got {req.station_id!r}")
    if type(req.product) is not str:
        raise RequestError(f"product must be a product code, got {req.product!r}")
    if type(req.now_utc_s) is not int or not 0 <= req.now_utc_s <= MAX_UTC_S:
        raise RequestError(f"time {req.now_utc_s!r} is outside 1970..2200")
    check_presets(req.preset_volume_ml, req.preset_amount_kop)


def check_presets(preset_volume_ml: object, preset_amount_kop: object) -> None:
    """A RequestError unless the presets are none, or one of them a whole number in range
    (1..MAX_VOLUME_ML millilitres, 1..MAX_AMOUNT_KOP kopecks): the check of both evaluators
    (:func:`check_request`) and of the fuel lanes, before anything is decided."""
    if preset_volume_ml is not None and preset_amount_kop is not None:
        raise RequestError("give a volume preset or an amount preset, not both")
    _check_int("preset_volume_ml", preset_volume_ml, 1, MAX_VOLUME_ML)
    _check_int("preset_amount_kop", preset_amount_kop, 1, MAX_AMOUNT_KOP)


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if value is None:
        return
    if type(value) is not int or not low <= value <= high:
        raise RequestError(f"{name} must be a whole number in {low}..{high}, got {value!r}")


def _decline(reason: Reason) -> FuelDecision:
    return FuelDecision(reason, 0, 0, 0, 0, None)


__all__ = ["authorize", "broken_controls", "check_presets", "check_request", "station_product_positions", "complete",
           "count_delivery", "unit_price", "period_start", "spent_in_period", "mask_card_no"]
