"""Operators' changes to master data: contracts, fuel cards and limits, tariffs, the stop
list, club accounts and cards, sites. Each function is one transaction that also records
the replica change (:func:`host.versions.record_change`), so a block is a stop-list delta
the moment it commits. The admin command line (:mod:`host.admin`) is a thin layer over these.

Errors: :class:`~host.errors.NotFound`, :class:`~host.errors.Conflict`,
:class:`~host.errors.InvalidInput`; nothing changes when one is raised.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import TYPE_CHECKING, Any

from authz.club_model import ClubCardKind, ClubModel, ClubRules, ClubStatus
from authz.errors import ModelError
from authz.fuel_model import (
    CardKind,
    CardStatus,
    Contract,
    DiscountKind,
    DiscountRule,
    DiscountWhere,
    FuelCard,
    FuelModel,
    Limit,
    LimitUnit,
    OnBreach,
    Period,
    Product,
    ProductGroup,
    Scope,
    Station,
    StationScope,
    Tariff,
    TimeWindow,
    check_card_rules,
    mask_card_no,
)
from authz.localtime import local_date, zone
from authz.money import BP_WHOLE, MAX_AMOUNT_KOP, MAX_PRICE_KOP_PER_L, MAX_VOLUME_ML
from wire import Table, is_site_id

from . import rows as R
from .checks import check_expiry, club_card_no, fuel_card_no
from .db import Database
from .errors import Conflict, InvalidInput, NotFound
from .ledger import Ledger
from .versions import record_change

if TYPE_CHECKING:
    from .documents.model import Requisites

__all__ = [
    "MAX_CLUB_CARDS_PER_PERSON",
    "MasterDataCounts",
    "add_site",
    "block_card",
    "change_contract",
    "KEEP",
    "change_card_controls",
    "change_fuel_card", "check_fuel_card",
    "create_club_account",
    "create_contract",
    "import_club_model",
    "import_fuel_model",
    "import_sample",
    "issue_club_card",
    "issue_fuel_card",
    "master_data_counts",
    "put_product",
    "put_products",
    "put_station",
    "put_stations",
    "put_tariffs",
    "remove_discount",
    "remove_limit",
    "replace_club_card",
    "require_no_master_data",
    "set_client_requisites",
    "set_club_rules",
    "set_credit_line",
    "set_discount",
    "set_limit",
    "set_operator_requisites",
    "set_price",
    "set_site_status",
    "set_station_address",
    "set_tariff",
    "set_tariff_discounts",
    "top_up_contract",
    "unblock_card",
]

#: At most three club cards per person (DOMAIN.md); blocked cards do not count.
MAX_CLUB_CARDS_PER_PERSON = 3
_CARD_NO = re.compile(r"[A-Za-z0-9]{1,32}")


def _card_no(card_no: object) -> str:
    if not isinstance(card_no, str) or not _CARD_NO.fullmatch(card_no):
        raise InvalidInput(f"a card number is 1 to 32 letters and digits, got {str(card_no)[:40]!r}")
    return card_no


def _amount(name: str, value: object, lo: int = 0, hi: int = MAX_AMOUNT_KOP) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise InvalidInput(f"{name} must be a whole number in {lo}..{hi}, got {value!r}")
    return value


def _run(ledger: Ledger, fn, *args, **kwargs):
    return ledger.db.run(fn, *args, **kwargs)


# -- bulk import (a fresh host, the simulation) ------------------------------------------------

def put_products(ledger: Ledger, products: Iterable[Product]) -> int:
    """Insert or replace products; returns the products version."""
    products = list(products)

    def step(db: Database) -> int:
        db.executemany("INSERT INTO products (code, name, grp) VALUES (?, ?, ?) ON CONFLICT (code) DO UPDATE SET "
                       "name = excluded.name, grp = excluded.grp", [(p.code, p.name, int(p.group)) for p in products])
        return record_change(db, Table.PRODUCTS, [p.code for p in products], now_utc_s=ledger.now())
    return _run(ledger, step)


def put_stations(ledger: Ledger, stations: Iterable[Station]) -> int:
    """Insert or replace whole stations (bulk import; checked by :class:`FuelModel`, not
    here); returns the stations version. An operator's change is :func:`put_station`."""
    stations = list(stations)

    def step(db: Database) -> int:
        db.executemany("INSERT INTO stations (station_id, region, groups, prices, max_fill_ml) VALUES (?, ?, ?, ?, ?) "
                       "ON CONFLICT (station_id) DO UPDATE SET region = excluded.region, groups = excluded.groups, "
                       "prices = excluded.prices, max_fill_ml = excluded.max_fill_ml",
                       [(s.station_id, s.region, R.groups_to_json(s.groups), R.dumps(dict(s.prices_kop_per_l)),
                         s.max_fill_ml) for s in stations])
        return record_change(db, Table.STATIONS, [s.station_id for s in stations], now_utc_s=ledger.now())
    return _run(ledger, step)


def put_tariffs(ledger: Ledger, discounts: Iterable) -> int:
    """Replace the discount rows of every tariff named in ``discounts`` (DiscountRule rows)."""
    by: dict[int, list] = defaultdict(list)
    for d in discounts:
        by[int(d.tariff)].append(d)

    def step(db: Database) -> int:
        db.executemany("INSERT INTO tariffs (tariff, discounts) VALUES (?, ?) ON CONFLICT (tariff) DO UPDATE SET "
                       "discounts = excluded.discounts", [(t, R.discounts_to_json(rs)) for t, rs in sorted(by.items())])
        return record_change(db, Table.TARIFFS, sorted(by), now_utc_s=ledger.now())
    return _run(ledger, step)


def set_club_rules(ledger: Ledger, rules: ClubRules) -> int:
    """Replace the club programme's rules (categories, accrual rates, caps, maturity,
    expiry, time zone); a club_rules delta. Returns its version."""
    if not isinstance(rules, ClubRules):
        raise InvalidInput(f"club rules must be a ClubRules, got {type(rules).__name__}")
    try:
        ClubModel(rules=rules, accounts=(), cards=())
        zone(rules.tz)
    except (ModelError, TypeError) as exc:
        raise InvalidInput(f"club rules: {exc}") from None

    def step(db: Database) -> int:
        db.execute("INSERT INTO club_rules (key, body) VALUES ('club', ?) ON CONFLICT (key) DO UPDATE SET "
                   "body = excluded.body", (R.rules_to_json(rules),))
        return record_change(db, Table.CLUB_RULES, ["club"], now_utc_s=ledger.now())
    return _run(ledger, step)


_PRODUCT_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")  # the wire's product code
_MAX_NAME = 128
#: Station ids and regions are positive 63-bit integers (``BIGINT`` keys).
_MAX_ID = 2**63 - 1


def _enum_value(cls, value: object, what: str):
    if not isinstance(value, cls):
        raise InvalidInput(f"unknown {what} {value!r}; one of: {', '.join(m.name.lower() for m in cls)}")
    return value


def _groups(groups: object, what: str) -> frozenset[ProductGroup]:
    if not isinstance(groups, (set, frozenset, tuple, list)) or not groups:
        raise InvalidInput(f"{what} lists at least one product group")
    return frozenset(_enum_value(ProductGroup, g, "product group") for g in groups)


def _text(name: str, value: object, lo: int = 1, hi: int = _MAX_NAME) -> str:
    if not isinstance(value, str) or not lo <= len(value) <= hi or not value.isprintable():
        raise InvalidInput(f"{name} must be {lo} to {hi} printable characters, got {str(value)[:40]!r}")
    return value


def _check_product(p: Product) -> Product:
    if not isinstance(p.code, str) or not _PRODUCT_CODE.fullmatch(p.code):
        raise InvalidInput(f"a product code is 1 to 32 letters, digits, '_', '.', '-' (starting with a letter or "
                           f"digit), got {str(p.code)[:40]!r}")
    _text("a product name", p.name)
    _enum_value(ProductGroup, p.group, "product group")
    return p


def _products(db: Database) -> dict[str, Product]:
    return {r[0]: R.product_from_row(r) for r in db.fetchall("SELECT code, name, grp FROM products")}


def put_product(ledger: Ledger, product: Product) -> Product:
    """Add a product, or change its name or group (a products delta). A product priced at a
    station whose groups do not include the new group is refused (Conflict)."""
    _check_product(product)

    def step(db: Database) -> Product:
        old = db.fetchone(f"SELECT code, name, grp FROM products WHERE code = ?{db.for_update}", (product.code,))
        if old is not None and ProductGroup(old[2]) is not product.group:
            for sid, groups, prices in db.fetchall("SELECT station_id, groups, prices FROM stations ORDER BY station_id"):
                if product.code in json.loads(prices) and product.group not in R.groups_from_json(groups):
                    raise Conflict(f"product {product.code} is priced at station {sid}, which does not sell "
                                   f"{product.group.name.lower()}: change the station's groups first")
            for no, groups, controls in db.fetchall("SELECT card_no, groups, controls FROM fuel_cards "
                                                    "WHERE controls IS NOT NULL ORDER BY card_no"):
                allowed = R.controls_from_json(controls).get("products") or ()
                if product.code in allowed and product.group not in R.groups_from_json(groups):
                    raise Conflict(f"card {mask_card_no(no)} allows product {product.code} and may not buy "
                                   f"{product.group.name.lower()}: change the card's product list first")
        db.execute("INSERT INTO products (code, name, grp) VALUES (?, ?, ?) ON CONFLICT (code) DO UPDATE SET "
                   "name = excluded.name, grp = excluded.grp", (product.code, product.name, int(product.group)))
        record_change(db, Table.PRODUCTS, [product.code], now_utc_s=ledger.now())
        return product
    return _run(ledger, step)


def _station_row(db: Database, station_id: int) -> Station | None:
    row = db.fetchone(f"SELECT {R.STATION_COLUMNS} FROM stations WHERE station_id = ?{db.for_update}", (station_id,))
    return None if row is None else R.station_from_row(row)


def _check_station(db: Database, st: Station) -> None:
    products = _products(db)
    for code, price in st.prices_kop_per_l.items():
        p = products.get(code)
        if p is None:
            raise NotFound(f"no product {code!r}")
        if p.group not in st.groups:
            raise Conflict(f"station {st.station_id} does not sell {p.group.name.lower()}, the group of {code}")
        _amount(f"the price of {code}", price, 0, MAX_PRICE_KOP_PER_L)


def _write_station(db: Database, ledger: Ledger, st: Station) -> Station:
    db.execute("INSERT INTO stations (station_id, region, groups, prices, max_fill_ml) VALUES (?, ?, ?, ?, ?) "
               "ON CONFLICT (station_id) DO UPDATE SET region = excluded.region, groups = excluded.groups, "
               "prices = excluded.prices, max_fill_ml = excluded.max_fill_ml",
               (st.station_id, st.region, R.groups_to_json(st.groups), R.dumps(dict(sorted(st.prices_kop_per_l.items()))),
                st.max_fill_ml))
    record_change(db, Table.STATIONS, [st.station_id], now_utc_s=ledger.now())
    return st


def put_station(ledger: Ledger, station_id: int, *, region: int | None = None,
                groups: Iterable[ProductGroup] | None = None, max_fill_ml: int | None = None) -> Station:
    """Add a station (``region`` and ``groups`` needed, no prices yet) or change the given
    fields of one (its prices stay; a group still priced cannot be dropped). A stations delta."""
    _amount("station_id", station_id, 1, _MAX_ID)
    if region is not None:
        _amount("region", region, 0, _MAX_ID)
    new_groups = None if groups is None else _groups(list(groups), f"station {station_id}")
    if max_fill_ml is not None:
        _amount("max_fill_ml", max_fill_ml, 1, MAX_VOLUME_ML)

    def step(db: Database) -> Station:
        old = _station_row(db, station_id)
        if old is None:
            if region is None or new_groups is None:
                raise InvalidInput(f"station {station_id} is new: give its region and product groups")
            st = Station(station_id, region, new_groups, {}, 1_000_000 if max_fill_ml is None else max_fill_ml)
        else:
            st = Station(station_id, old.region if region is None else region,
                         old.groups if new_groups is None else new_groups, dict(old.prices_kop_per_l),
                         old.max_fill_ml if max_fill_ml is None else max_fill_ml)
        _check_station(db, st)
        return _write_station(db, ledger, st)
    return _run(ledger, step)


def set_price(ledger: Ledger, station_id: int, product: str, price_kop_per_l: int | None) -> Station:
    """Set a station's list price of a product in kopecks per litre (per unit for goods), or
    stop selling it there (``None``). A stations delta."""
    if price_kop_per_l is not None:
        _amount("price_kop_per_l", price_kop_per_l, 0, MAX_PRICE_KOP_PER_L)

    def step(db: Database) -> Station:
        old = _station_row(db, station_id)
        if old is None:
            raise NotFound(f"no station {station_id}")
        prices = dict(old.prices_kop_per_l)
        if price_kop_per_l is None:
            if prices.pop(product, None) is None:
                raise NotFound(f"station {station_id} has no price of {product!r}")
        else:
            prices[product] = price_kop_per_l
        st = Station(old.station_id, old.region, old.groups, prices, old.max_fill_ml)
        _check_station(db, st)
        return _write_station(db, ledger, st)
    return _run(ledger, step)


def _check_discount(d: DiscountRule) -> DiscountRule:
    _enum_value(Tariff, d.tariff, "tariff")
    _enum_value(DiscountWhere, d.where, "discount scope")
    _enum_value(DiscountKind, d.kind, "discount kind")
    _amount("discount value", d.value, 0, BP_WHOLE if d.kind is DiscountKind.PERCENT_BP else MAX_PRICE_KOP_PER_L)
    return d


def _tariff_rules(db: Database, tariff: Tariff) -> list[DiscountRule]:
    text = db.scalar(f"SELECT discounts FROM tariffs WHERE tariff = ?{db.for_update}", (int(tariff),))
    return [] if text is None else list(R.discounts_from_json(int(tariff), text))


def _write_tariff(db: Database, ledger: Ledger, tariff: Tariff, rules: Sequence[DiscountRule]) -> tuple[DiscountRule, ...]:
    products = _products(db)
    seen = set()
    for d in rules:
        if d.tariff is not tariff:
            raise InvalidInput(f"a discount of tariff {d.tariff.name.lower()} in the table of {tariff.name.lower()}")
        if d.product not in products:
            raise NotFound(f"no product {d.product!r}")
        if (d.product, d.where) in seen:
            raise InvalidInput(f"tariff {tariff.name.lower()}: two discounts of {d.product} at {d.where.name.lower()}")
        seen.add((d.product, d.where))
    ordered = tuple(sorted(rules, key=lambda d: (d.product, int(d.where))))
    db.execute("INSERT INTO tariffs (tariff, discounts) VALUES (?, ?) ON CONFLICT (tariff) DO UPDATE SET "
               "discounts = excluded.discounts", (int(tariff), R.discounts_to_json(ordered)))
    record_change(db, Table.TARIFFS, [int(tariff)], now_utc_s=ledger.now())
    return ordered


def set_tariff_discounts(ledger: Ledger, tariff: Tariff, rules: Iterable[DiscountRule]) -> tuple[DiscountRule, ...]:
    """Replace the whole discount table of ``tariff`` (one row per product and scope); a
    tariffs delta. Returns the table as stored."""
    _enum_value(Tariff, tariff, "tariff")
    checked = [_check_discount(d) for d in rules]
    return _run(ledger, lambda db: _write_tariff(db, ledger, tariff, checked))


def set_discount(ledger: Ledger, rule: DiscountRule) -> tuple[DiscountRule, ...]:
    """Add or replace one discount row (tariff x product x scope); returns the tariff's table."""
    _check_discount(rule)

    def step(db: Database) -> tuple[DiscountRule, ...]:
        rules = [d for d in _tariff_rules(db, rule.tariff) if (d.product, d.where) != (rule.product, rule.where)]
        return _write_tariff(db, ledger, rule.tariff, rules + [rule])
    return _run(ledger, step)


def remove_discount(ledger: Ledger, tariff: Tariff, product: str, where: DiscountWhere) -> tuple[DiscountRule, ...]:
    """Remove one discount row; returns the tariff's table."""
    _enum_value(Tariff, tariff, "tariff")

    def step(db: Database) -> tuple[DiscountRule, ...]:
        old = _tariff_rules(db, tariff)
        rules = [d for d in old if (d.product, d.where) != (product, where)]
        if len(rules) == len(old):
            raise NotFound(f"tariff {tariff.name.lower()} has no discount of {product!r} at {where.name.lower()}")
        return _write_tariff(db, ledger, tariff, rules)
    return _run(ledger, step)


@dataclass(frozen=True, slots=True)
class MasterDataCounts:
    """How many rows of master data a ledger holds."""

    products: int
    stations: int
    contracts: int
    fuel_cards: int
    club_accounts: int
    club_cards: int

    @property
    def empty(self) -> bool:
        """True when the ledger holds no master data at all."""
        return not any((self.products, self.stations, self.contracts, self.fuel_cards, self.club_accounts,
                        self.club_cards))


def master_data_counts(ledger: Ledger) -> MasterDataCounts:
    """The ledger's master-data row counts (one read transaction)."""
    def step(db: Database) -> MasterDataCounts:
        return MasterDataCounts(*(db.scalar(f"SELECT count(*) FROM {t}", default=0) for t in (
            "products", "stations", "contracts", "fuel_cards", "club_accounts", "club_cards")))
    return ledger.db.run(step)


def require_no_master_data(ledger: Ledger) -> None:
    """Raise Conflict (saying what it holds) unless the ledger holds no master data."""
    held = master_data_counts(ledger)
    if not held.empty:
        raise Conflict(f"the ledger holds master data already ({held.products} products, {held.stations} stations, "
                       f"{held.contracts} contracts, {held.fuel_cards} fuel cards, {held.club_accounts} club "
                       "accounts): the sample loads only into an empty ledger")


def import_sample(ledger: Ledger, fuel: FuelModel, club: ClubModel) -> None:
    """Load a generated network (``authz.sample``) into a ledger that holds no master data.
    A ledger with any is refused (Conflict), unchanged: a second load would re-attach cards
    and add opening entries twice."""
    require_no_master_data(ledger)
    import_fuel_model(ledger, fuel)
    import_club_model(ledger, club)


def import_fuel_model(ledger: Ledger, model: FuelModel) -> None:
    """Load a whole fuel network (``authz.sample.fuel_model``, or a migration from another
    system): products, stations, tariffs, contracts with their opening balances, cards,
    counters and the stop list. Existing rows with the same keys are replaced."""
    now = ledger.now()
    put_products(ledger, model.products)
    put_stations(ledger, model.stations)
    put_tariffs(ledger, model.discounts)

    def step(db: Database) -> None:
        db.executemany("INSERT INTO contracts (contract_id, tz, home_region, tariff, balance_kop, credit_line_kop, "
                       "chosen_station_ids) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (contract_id) DO UPDATE SET "
                       "tz = excluded.tz, home_region = excluded.home_region, tariff = excluded.tariff, "
                       "balance_kop = excluded.balance_kop, credit_line_kop = excluded.credit_line_kop, "
                       "chosen_station_ids = excluded.chosen_station_ids",
                       [(c.contract_id, c.tz, c.home_region, int(c.tariff), c.balance_kop, c.credit_line_kop,
                         R.dumps(list(c.chosen_station_ids))) for c in model.contracts])
        db.copy_rows("contract_entries", ("contract_id", "at_utc_s", "amount_kop", "kind", "note"),
                     [(c.contract_id, now, c.balance_kop, "opening", "imported") for c in model.contracts])
        db.executemany("INSERT INTO fuel_cards (card_no, contract_id, expires_on, groups, limits, kind, status, "
                       "controls) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (card_no) DO UPDATE SET "
                       "contract_id = excluded.contract_id, expires_on = excluded.expires_on, groups = excluded.groups, "
                       "limits = excluded.limits, kind = excluded.kind, status = excluded.status, "
                       "controls = excluded.controls",
                       [(c.card_no, c.contract_id, c.expires_on.isoformat(), R.groups_to_json(c.groups),
                         R.limits_to_json(c.limits), int(c.kind), int(c.status), R.controls_to_json(c))
                        for c in model.cards])
        db.executemany("INSERT INTO fuel_counters (card_no, limit_id, period_start, spent) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (card_no, limit_id, period_start) DO UPDATE SET spent = excluded.spent",
                       [(no, lid, c.period_start, c.spent) for (no, lid), c in sorted(model.counters.items())])
        db.executemany("INSERT INTO stop_list (card_no, listed_at_utc_s, reason) VALUES (?, ?, 'imported') "
                       "ON CONFLICT (card_no) DO NOTHING", [(no,) + (now,) for no in sorted(model.stop_list)])
        record_change(db, Table.CONTRACTS, [c.contract_id for c in model.contracts], now_utc_s=now)
        record_change(db, Table.FUEL_CARDS, [c.card_no for c in model.cards], now_utc_s=now)
        record_change(db, Table.STOP_LIST, sorted(model.stop_list), now_utc_s=now)
    _run(ledger, step)


def import_club_model(ledger: Ledger, model: ClubModel, persons: dict[int, str] | None = None) -> None:
    """Load a club chain: rules, accounts (with lots) and cards. ``persons`` maps an account to
    its person (default: one person per account, ``"P<account_id>"``)."""
    now = ledger.now()
    set_club_rules(ledger, model.rules)
    persons = persons or {}

    def step(db: Database) -> None:
        db.executemany("INSERT INTO club_accounts (account_id, person_id, kind, activated, status, balance_kop, "
                       "turnover_month, turnover_kop, points_debt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0) "
                       "ON CONFLICT (account_id) DO NOTHING",
                       [(a.account_id, persons.get(a.account_id, f"P{a.account_id}"), int(a.kind), int(a.activated),
                         int(a.status), a.balance_kop, a.turnover_month, a.turnover_kop) for a in model.accounts])
        db.executemany("INSERT INTO club_lots (account_id, lot_id, points, matures_at_s, expires_at_s) "
                       "VALUES (?, ?, ?, ?, ?) ON CONFLICT (account_id, lot_id) DO NOTHING",
                       [(a.account_id, lot.lot_id, lot.points, lot.matures_at_s, lot.expires_at_s)
                        for a in model.accounts for lot in a.lots])
        db.executemany("INSERT INTO club_cards (card_no, account_id, status, issued_at_utc_s) VALUES (?, ?, ?, ?) "
                       "ON CONFLICT (card_no) DO NOTHING",
                       [(c.card_no, c.account_id, int(c.status), now) for c in model.cards])
        record_change(db, Table.CLUB_ACCOUNTS, [a.account_id for a in model.accounts], now_utc_s=now)
    _run(ledger, step)


# -- contracts -----------------------------------------------------------------------------------

def create_contract(ledger: Ledger, contract: Contract, *, name: str = "") -> Contract:
    """Open a contract with its opening balance. Raises Conflict if the id is taken."""
    _amount("contract_id", contract.contract_id, 1, _MAX_ID)
    _tz(contract.tz)
    _amount("home_region", contract.home_region, 0, _MAX_ID)
    _enum_value(Tariff, contract.tariff, "tariff")
    _amount("balance_kop", contract.balance_kop, -MAX_AMOUNT_KOP)
    _amount("credit_line_kop", contract.credit_line_kop)
    _chosen(tuple(contract.chosen_station_ids))
    _text("a contract name", name, 0)
    now = ledger.now()

    def step(db: Database) -> Contract:
        if db.fetchone("SELECT 1 FROM contracts WHERE contract_id = ?", (contract.contract_id,)):
            raise Conflict(f"contract {contract.contract_id} exists already")
        _known_stations(db, contract.chosen_station_ids)
        db.execute("INSERT INTO contracts (contract_id, name, tz, home_region, tariff, balance_kop, credit_line_kop, "
                   "chosen_station_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (contract.contract_id, name, contract.tz, contract.home_region, int(contract.tariff),
                    contract.balance_kop, contract.credit_line_kop, R.dumps(list(contract.chosen_station_ids))))
        db.execute("INSERT INTO contract_entries (contract_id, at_utc_s, amount_kop, kind, note) VALUES (?, ?, ?, "
                   "'opening', 'contract opened')", (contract.contract_id, now, contract.balance_kop))
        record_change(db, Table.CONTRACTS, [contract.contract_id], now_utc_s=now)
        return contract
    return _run(ledger, step)


def set_tariff(ledger: Ledger, contract_id: int, tariff: Tariff) -> Contract:
    """Move a contract to another tariff (a contracts delta)."""
    if not isinstance(tariff, Tariff):
        raise InvalidInput(f"unknown tariff {tariff!r}; tariffs: {', '.join(t.name.lower() for t in Tariff)}")

    def step(db: Database) -> Contract:
        if db.execute("UPDATE contracts SET tariff = ? WHERE contract_id = ?", (int(tariff), contract_id)).rowcount != 1:
            raise NotFound(f"no contract {contract_id}")
        record_change(db, Table.CONTRACTS, [contract_id], now_utc_s=ledger.now())
        row = db.fetchone(f"SELECT {R.CONTRACT_COLUMNS} FROM contracts WHERE contract_id = ?", (contract_id,))
        if row is None:  # updated above in this transaction: cannot happen
            raise NotFound(f"no contract {contract_id}")
        return R.contract_from_row(row)
    return _run(ledger, step)


def change_contract(ledger: Ledger, contract_id: int, *, name: str | None = None, tz: str | None = None,
                    home_region: int | None = None, credit_line_kop: int | None = None,
                    chosen_station_ids: Sequence[int] | None = None) -> Contract:
    """Change the given fields of a contract: its name, time zone (where its day and month
    limits roll over), home region, credit line (how far below zero its balance may go) or
    chosen stations (at most three known stations, Regional+). A contracts delta."""
    if name is not None:
        _text("a contract name", name, 0)
    if tz is not None:
        _tz(tz)
    if home_region is not None:
        _amount("home_region", home_region, 0, _MAX_ID)
    if credit_line_kop is not None:
        _amount("credit_line_kop", credit_line_kop)
    chosen = None if chosen_station_ids is None else tuple(chosen_station_ids)
    if chosen is not None:
        _chosen(chosen)

    def step(db: Database) -> Contract:
        row = db.fetchone(f"SELECT {R.CONTRACT_COLUMNS} FROM contracts WHERE contract_id = ?{db.for_update}",
                          (contract_id,))
        if row is None:
            raise NotFound(f"no contract {contract_id}")
        old = R.contract_from_row(row)
        if chosen is not None:
            _known_stations(db, chosen)
        new = Contract(old.contract_id, old.tz if tz is None else tz,
                       old.home_region if home_region is None else home_region, old.tariff, old.balance_kop,
                       old.credit_line_kop if credit_line_kop is None else credit_line_kop,
                       old.chosen_station_ids if chosen is None else chosen)
        db.execute("UPDATE contracts SET tz = ?, home_region = ?, credit_line_kop = ?, chosen_station_ids = ? "
                   "WHERE contract_id = ?", (new.tz, new.home_region, new.credit_line_kop,
                                             R.dumps(list(new.chosen_station_ids)), contract_id))
        if name is not None:
            db.execute("UPDATE contracts SET name = ? WHERE contract_id = ?", (name, contract_id))
        record_change(db, Table.CONTRACTS, [contract_id], now_utc_s=ledger.now())
        return new
    return _run(ledger, step)


def set_credit_line(ledger: Ledger, contract_id: int, credit_line_kop: int) -> Contract:
    """Set how far below zero a contract's balance may go (0: prepaid only)."""
    return change_contract(ledger, contract_id, credit_line_kop=credit_line_kop)


def _tz(tz: object) -> str:
    try:
        zone(tz)  # type: ignore[arg-type]
    except (ModelError, TypeError, ValueError):
        raise InvalidInput(f"unknown time zone {str(tz)[:40]!r} (an IANA name such as Europe/Moscow)") from None
    return tz  # type: ignore[return-value]


def _chosen(chosen: tuple[int, ...]) -> None:
    if len(chosen) > 3:
        raise InvalidInput(f"a contract chooses at most three stations, got {len(chosen)}")
    if len(set(chosen)) != len(chosen):
        raise InvalidInput("a chosen station is named twice")
    for sid in chosen:
        _amount("a chosen station id", sid, 1, _MAX_ID)


def _known_stations(db: Database, ids: Sequence[int]) -> None:
    for sid in ids:
        if not db.fetchone("SELECT 1 FROM stations WHERE station_id = ?", (sid,)):
            raise NotFound(f"no station {sid}")


def top_up_contract(ledger: Ledger, contract_id: int, amount_kop: int, *, note: str = "",
                    at_utc_s: int | None = None) -> int:
    """Credit a contract (a payment received); returns the balance after."""
    _amount("amount_kop", amount_kop, 1)
    now = ledger.now()

    def step(db: Database) -> int:
        row = db.fetchone(f"SELECT balance_kop FROM contracts WHERE contract_id = ?{db.for_update}", (contract_id,))
        if row is None:
            raise NotFound(f"no contract {contract_id}")
        if row[0] + amount_kop > MAX_AMOUNT_KOP:
            raise Conflict(f"contract {contract_id}: balance {row[0]} + {amount_kop} kop is over {MAX_AMOUNT_KOP}")
        db.execute("UPDATE contracts SET balance_kop = balance_kop + ? WHERE contract_id = ?", (amount_kop, contract_id))
        db.execute("INSERT INTO contract_entries (contract_id, at_utc_s, amount_kop, kind, note) VALUES (?, ?, ?, 'topup', ?)",
                   (contract_id, now if at_utc_s is None else at_utc_s, amount_kop, note))
        record_change(db, Table.CONTRACTS, [contract_id], now_utc_s=now)
        return row[0] + amount_kop
    return _run(ledger, step)


# -- fuel cards ----------------------------------------------------------------------------------

def issue_fuel_card(ledger: Ledger, card: FuelCard) -> FuelCard:
    """Issue a fuel card of an existing contract: a 16-digit number (:func:`host.checks.fuel_card_no`)
    not yet taken by a fuel or club card (Conflict), an expiry from today (in the contract's
    time zone) on, at least one product group, limits on known products and on groups the
    card may buy, and fleet controls (allowed products, time windows, stations, on-breach)
    that :func:`authz.fuel_model.check_card_rules` accepts against the ledger's products and
    stations."""
    groups = check_fuel_card(card)

    def step(db: Database) -> FuelCard:
        tz = db.scalar("SELECT tz FROM contracts WHERE contract_id = ?", (card.contract_id,))
        if tz is None:
            raise NotFound(f"no contract {card.contract_id}")
        check_expiry(card.expires_on, local_date(ledger.now(), tz))
        _limits_refer_to_known(db, card.card_no, groups, card.limits)
        if db.fetchone("SELECT 1 FROM fuel_cards WHERE card_no = ? UNION ALL SELECT 1 FROM club_cards WHERE card_no = ?",
                       (card.card_no, card.card_no)):
            raise Conflict(f"card {mask_card_no(card.card_no)} is issued already")
        new = replace(card, groups=groups, limits=tuple(sorted(card.limits, key=lambda lim: lim.limit_id)))
        _check_rules(db, new)
        db.execute("INSERT INTO fuel_cards (card_no, contract_id, expires_on, groups, limits, kind, status, controls) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (new.card_no, new.contract_id, new.expires_on.isoformat(), R.groups_to_json(groups),
                    R.limits_to_json(new.limits), int(new.kind), int(new.status), R.controls_to_json(new)))
        record_change(db, Table.FUEL_CARDS, [card.card_no], now_utc_s=ledger.now())
        return new
    return _run(ledger, step)


def _check_rules(db: Database, card: FuelCard) -> None:
    """The one check of a card's rules (:func:`authz.fuel_model.check_card_rules`, which the
    sites run on the replica too) against the ledger's products and stations: InvalidInput
    with its message, naming the rule, when it fails (a card the sites would refuse is never
    stored, so it can never make a site refuse a snapshot)."""
    products = tuple(sorted(_products(db).values(), key=lambda p: p.code))
    stations = [r[0] for r in db.fetchall("SELECT station_id FROM stations ORDER BY station_id")]
    try:
        check_card_rules(card, {p.code: i for i, p in enumerate(products)}, products,
                         {sid: i for i, sid in enumerate(stations)})
    except ModelError as exc:
        raise InvalidInput(str(exc)) from None


def check_fuel_card(card: FuelCard) -> frozenset[ProductGroup]:
    """The checks of :func:`issue_fuel_card` that need no ledger (the number's format, the
    types, the limits' shapes and ranges); returns the card's groups. InvalidInput if one fails."""
    fuel_card_no(card.card_no)
    if type(card.contract_id) is not int:
        raise InvalidInput(f"a contract number is a whole number, got {card.contract_id!r}")
    if not isinstance(card.expires_on, date):
        raise InvalidInput(f"expires_on must be a date, got {card.expires_on!r}")
    groups = _groups(card.groups, f"card {mask_card_no(card.card_no)}")
    _enum_value(CardKind, card.kind, "card kind")
    _enum_value(CardStatus, card.status, "card status")
    _check_limits(card.limits)
    _check_controls(card.products, card.windows, card.station_scope, card.station_ids, card.on_breach)
    return groups


def _check_controls(products: object, windows: object, station_scope: object, station_ids: object,
                    on_breach: object) -> None:
    """The types of a card's fleet controls (what they say is :func:`_check_rules`'s)."""
    if products is not None and (not isinstance(products, frozenset)
                                 or not all(isinstance(c, str) for c in products)):
        raise InvalidInput(f"a card's product list is a set of product codes, got {str(products)[:60]!r}")
    if not isinstance(windows, tuple) or not all(isinstance(w, TimeWindow) for w in windows):
        raise InvalidInput(f"a card's time windows are a tuple of TimeWindow, got {str(windows)[:60]!r}")
    for w in windows:
        if not isinstance(w.days, frozenset) or not all(type(d) is int for d in w.days):
            raise InvalidInput(f"a time window's days are a set of 0 (Monday) .. 6 (Sunday), got {w.days!r}")
    _enum_value(StationScope, station_scope, "station restriction")
    if not isinstance(station_ids, frozenset) or not all(type(s) is int for s in station_ids):
        raise InvalidInput(f"a card's stations are a set of station ids, got {str(station_ids)[:60]!r}")
    _enum_value(OnBreach, on_breach, "on-breach action")


class _Keep:
    """The type of :data:`KEEP`."""

    def __repr__(self) -> str:
        return "KEEP"


#: A :func:`change_card_controls` argument left as it is.
KEEP: Any = _Keep()


def change_card_controls(ledger: Ledger, card_no: str, *, products: frozenset[str] | None = KEEP,
                         windows: Sequence[TimeWindow] = KEEP, station_scope: StationScope = KEEP,
                         station_ids: Iterable[int] = KEEP, on_breach: OnBreach = KEEP) -> FuelCard:
    """Change the fleet controls of a fuel card (issue 11); an argument not given (:data:`KEEP`)
    stays as it is. ``products``: the only product codes it may buy (each of a group the
    card may buy; None: every product of its groups); ``windows``: when it may buy, in the
    contract's time zone (empty: any time); ``station_scope`` and ``station_ids``: the whole
    network, the contract's home region, or only the listed stations (giving a scope other
    than LISTED drops the list); ``on_breach``: decline a purchase that breaks one of these,
    or approve it and raise an alert. Checked as a whole by :func:`_check_rules` (InvalidInput
    naming the rule, nothing changed). A fuel_cards delta."""
    _card_no(card_no)
    for name, value in (("products", products), ("windows", windows), ("station_ids", station_ids)):
        if isinstance(value, (str, bytes)) or not (value is KEEP or value is None or isinstance(value, Iterable)):
            raise InvalidInput(f"{name} is a collection, got {str(value)[:40]!r}")
    if station_ids is None:
        raise InvalidInput("station_ids is a collection of station ids, got None")
    new_products = products if products is KEEP or products is None else frozenset(products)
    new_windows = windows if windows is KEEP or windows is None else tuple(windows)
    new_ids = station_ids if station_ids is KEEP else frozenset(station_ids)

    def step(db: Database) -> FuelCard:
        card = _card_row(db, card_no)
        ids = new_ids
        if ids is KEEP:
            ids = card.station_ids if station_scope is KEEP or station_scope is StationScope.LISTED else frozenset()
        new = replace(card, products=card.products if new_products is KEEP else new_products,
                      windows=card.windows if new_windows is KEEP else new_windows,
                      station_scope=card.station_scope if station_scope is KEEP else station_scope,
                      station_ids=ids, on_breach=card.on_breach if on_breach is KEEP else on_breach)
        _check_controls(new.products, new.windows, new.station_scope, new.station_ids, new.on_breach)
        _check_rules(db, new)
        db.execute("UPDATE fuel_cards SET controls = ? WHERE card_no = ?", (R.controls_to_json(new), card_no))
        record_change(db, Table.FUEL_CARDS, [card_no], now_utc_s=ledger.now())
        return new
    return _run(ledger, step)


def change_fuel_card(ledger: Ledger, card_no: str, *, expires_on: date | None = None,
                     groups: Iterable[ProductGroup] | None = None) -> FuelCard:
    """Change a fuel card's expiry (from today on) or the product groups it may buy (a group
    a limit is set on cannot be dropped). A fuel_cards delta."""
    new_groups = None if groups is None else _groups(list(groups), f"card {mask_card_no(card_no)}")

    def step(db: Database) -> FuelCard:
        card = _card_row(db, card_no)
        if expires_on is not None:
            tz = db.scalar("SELECT tz FROM contracts WHERE contract_id = ?", (card.contract_id,))
            check_expiry(expires_on, local_date(ledger.now(), tz or "UTC"))
        new = replace(card, expires_on=card.expires_on if expires_on is None else expires_on,
                      groups=card.groups if new_groups is None else new_groups)
        _limits_refer_to_known(db, card_no, new.groups, new.limits)
        _check_rules(db, new)  # a product list outside the new groups
        db.execute("UPDATE fuel_cards SET expires_on = ?, groups = ? WHERE card_no = ?",
                   (new.expires_on.isoformat(), R.groups_to_json(new.groups), card_no))
        record_change(db, Table.FUEL_CARDS, [card_no], now_utc_s=ledger.now())
        return new
    return _run(ledger, step)


def _limits_refer_to_known(db: Database, card_no: str, groups: frozenset[ProductGroup],
                           limits: Sequence[Limit]) -> None:
    products = _products(db)
    for lim in limits:
        if lim.scope is Scope.PRODUCT:
            p = products.get(lim.product or "")
            if p is None:
                raise NotFound(f"limit {lim.limit_id}: no product {lim.product!r}")
            if p.group not in groups:
                raise Conflict(f"limit {lim.limit_id}: card {mask_card_no(card_no)} may not buy {p.code} "
                               f"(group {p.group.name.lower()})")
        elif lim.scope is Scope.GROUP and lim.group not in groups:
            raise Conflict(f"limit {lim.limit_id}: card {mask_card_no(card_no)} may not buy group "
                           f"{lim.group.name.lower() if lim.group is not None else None}")


def _check_limits(limits: Sequence[Limit]) -> None:
    seen = set()
    for lim in limits:
        _amount("limit_id", lim.limit_id, 0, 2**31 - 1)
        _enum_value(LimitUnit, lim.unit, "limit unit")
        _enum_value(Period, lim.period, "period")
        _enum_value(Scope, lim.scope, "limit scope")
        _enum_value(OnBreach, lim.on_breach, "on-breach action")
        what = {LimitUnit.MILLILITRES: "millilitres", LimitUnit.PURCHASES: "count of purchases"}.get(lim.unit, "kopecks")
        _amount(f"limit {lim.limit_id} ({what})", lim.amount, 0,
                MAX_VOLUME_ML if lim.unit is LimitUnit.MILLILITRES else MAX_AMOUNT_KOP)
        if lim.unit is LimitUnit.PURCHASES and lim.period is Period.TRANSACTION:
            raise InvalidInput(f"limit {lim.limit_id} counts purchases per transaction: give it a period "
                               "(day, week, month, quarter, year or lifetime)")
        if lim.group is not None:
            _enum_value(ProductGroup, lim.group, "product group")
        if lim.limit_id in seen:
            raise InvalidInput(f"limit id {lim.limit_id} given twice")
        seen.add(lim.limit_id)
        if lim.scope is Scope.GROUP and lim.group is None:
            raise InvalidInput(f"limit {lim.limit_id}: scope group needs a product group")
        if lim.scope is Scope.PRODUCT and not lim.product:
            raise InvalidInput(f"limit {lim.limit_id}: scope product needs a product code")


def _card_row(db: Database, card_no: str) -> FuelCard:
    row = db.fetchone(f"SELECT {R.CARD_COLUMNS} FROM fuel_cards WHERE card_no = ?{db.for_update}", (card_no,))
    if row is None:
        raise NotFound(f"no fuel card {mask_card_no(card_no)}")
    return R.card_from_row(row)


def set_limit(ledger: Ledger, card_no: str, limit: Limit) -> FuelCard:
    """Add or replace limit ``limit.limit_id`` of a fuel card (rubles: ``LimitUnit.KOPECKS``,
    litres: ``LimitUnit.MILLILITRES``, a count of purchases: ``LimitUnit.PURCHASES``, which
    needs a period; ``limit.on_breach`` ALERT: the limit never declines, a purchase past it
    raises an alert). The card's rules are checked as a whole (:func:`_check_rules`). If the
    limit's unit or period changes, what it had counted so far no longer means anything: its
    counters are cleared."""
    _check_limits([limit])

    def step(db: Database) -> FuelCard:
        card = _card_row(db, card_no)
        old = {lim.limit_id: lim for lim in card.limits}
        prev = old.get(limit.limit_id)
        _limits_refer_to_known(db, card_no, card.groups, [limit])
        old[limit.limit_id] = limit
        limits = tuple(sorted(old.values(), key=lambda lim: lim.limit_id))
        new = replace(card, limits=limits)
        _check_rules(db, new)
        db.execute("UPDATE fuel_cards SET limits = ? WHERE card_no = ?", (R.limits_to_json(limits), card_no))
        if prev is not None and (prev.unit, prev.period) != (limit.unit, limit.period):
            db.execute("DELETE FROM fuel_counters WHERE card_no = ? AND limit_id = ?", (card_no, limit.limit_id))
        record_change(db, Table.FUEL_CARDS, [card_no], now_utc_s=ledger.now())
        return new
    return _run(ledger, step)


def remove_limit(ledger: Ledger, card_no: str, limit_id: int) -> FuelCard:
    """Remove limit ``limit_id`` of a fuel card and its counters (a fuel_cards delta)."""
    def step(db: Database) -> FuelCard:
        card = _card_row(db, card_no)
        limits = tuple(lim for lim in card.limits if lim.limit_id != limit_id)
        if len(limits) == len(card.limits):
            raise NotFound(f"card {mask_card_no(card_no)} has no limit {limit_id}")
        db.execute("UPDATE fuel_cards SET limits = ? WHERE card_no = ?", (R.limits_to_json(limits), card_no))
        db.execute("DELETE FROM fuel_counters WHERE card_no = ? AND limit_id = ?", (card_no, limit_id))
        record_change(db, Table.FUEL_CARDS, [card_no], now_utc_s=ledger.now())
        return replace(card, limits=limits)
    return _run(ledger, step)


# -- blocking ------------------------------------------------------------------------------------

def block_card(ledger: Ledger, card_no: str, *, reason: str = "") -> str:
    """Block a fuel or club card: it goes on the stop list (a stop-list delta at once) and its
    status becomes blocked (a fuel_cards or club_accounts delta). Returns ``"fuel"`` or
    ``"club"``. Blocking a blocked card changes nothing."""
    _card_no(card_no)
    now = ledger.now()

    def step(db: Database) -> str:
        what = _which(db, card_no)
        if what == "fuel":
            db.execute("UPDATE fuel_cards SET status = ? WHERE card_no = ?", (int(CardStatus.BLOCKED), card_no))
            record_change(db, Table.FUEL_CARDS, [card_no], now_utc_s=now)
        else:
            aid = db.scalar("SELECT account_id FROM club_cards WHERE card_no = ?", (card_no,))
            db.execute("UPDATE club_cards SET status = ? WHERE card_no = ?", (int(ClubStatus.BLOCKED), card_no))
            record_change(db, Table.CLUB_ACCOUNTS, [aid], now_utc_s=now)
        if db.execute("INSERT INTO stop_list (card_no, listed_at_utc_s, reason) VALUES (?, ?, ?) "
                      "ON CONFLICT (card_no) DO NOTHING", (card_no, now, reason)).rowcount:
            record_change(db, Table.STOP_LIST, [card_no], now_utc_s=now)
        return what
    return _run(ledger, step)


def unblock_card(ledger: Ledger, card_no: str) -> str:
    """Take a card off the stop list and make it active again (a stop-list delete). A club
    card replaced by another stays blocked."""
    _card_no(card_no)
    now = ledger.now()

    def step(db: Database) -> str:
        what = _which(db, card_no)
        if what == "fuel":
            db.execute("UPDATE fuel_cards SET status = ? WHERE card_no = ?", (int(CardStatus.ACTIVE), card_no))
            record_change(db, Table.FUEL_CARDS, [card_no], now_utc_s=now)
        else:
            row = db.fetchone("SELECT account_id, replaced_by FROM club_cards WHERE card_no = ?", (card_no,))
            if row is None:  # _which found it in this transaction: cannot happen
                raise NotFound(f"no club card {mask_card_no(card_no)}")
            aid, replaced = row
            if replaced:
                raise Conflict(f"club card {mask_card_no(card_no)} was replaced by {mask_card_no(replaced)}: "
                               "it stays blocked")
            db.execute("UPDATE club_cards SET status = ? WHERE card_no = ?", (int(ClubStatus.ACTIVE), card_no))
            record_change(db, Table.CLUB_ACCOUNTS, [aid], now_utc_s=now)
        if db.execute("DELETE FROM stop_list WHERE card_no = ?", (card_no,)).rowcount:
            record_change(db, Table.STOP_LIST, deletes=[card_no], now_utc_s=now)
        return what
    return _run(ledger, step)


def _which(db: Database, card_no: str) -> str:
    if db.fetchone("SELECT 1 FROM fuel_cards WHERE card_no = ?", (card_no,)):
        return "fuel"
    if db.fetchone("SELECT 1 FROM club_cards WHERE card_no = ?", (card_no,)):
        return "club"
    raise NotFound(f"no fuel or club card {mask_card_no(card_no)}")


# -- club ----------------------------------------------------------------------------------------

def _active_cards_of(db: Database, person_id: str) -> int:
    return db.scalar("SELECT count(*) FROM club_cards c JOIN club_accounts a ON a.account_id = c.account_id "
                     "WHERE a.person_id = ? AND c.status = ?", (person_id, int(ClubStatus.ACTIVE)), 0)


def _person(person_id: object) -> str:
    if not isinstance(person_id, str) or not 1 <= len(person_id) <= 64 or not person_id.isprintable():
        raise InvalidInput(f"person id must be 1 to 64 printable characters, got {str(person_id)[:40]!r}")
    return person_id


def create_club_account(ledger: Ledger, person_id: str, kind: ClubCardKind, *, activated: bool = True) -> int:
    """Open an empty club account (no card yet, zero balance and points) for ``person_id``;
    returns its id. Cards are added with :func:`issue_club_card` (``account_id=``)."""
    _person(person_id)
    _enum_value(ClubCardKind, kind, "club card kind")
    if not isinstance(activated, bool):
        raise InvalidInput(f"activated is true or false, got {activated!r}")
    now = ledger.now()

    def step(db: Database) -> int:
        aid = db.scalar("SELECT max(account_id) FROM club_accounts", default=0) + 1
        db.execute("INSERT INTO club_accounts (account_id, person_id, kind, activated, status, balance_kop, "
                   "turnover_month, turnover_kop, points_debt) VALUES (?, ?, ?, ?, ?, 0, 0, 0, 0)",
                   (aid, person_id, int(kind), int(activated), int(ClubStatus.ACTIVE)))
        record_change(db, Table.CLUB_ACCOUNTS, [aid], now_utc_s=now)
        return aid
    return _run(ledger, step)


def issue_club_card(ledger: Ledger, card_no: str, *, person_id: str, kind: ClubCardKind,
                    activated: bool = True, account_id: int | None = None) -> int:
    """Issue a club card to ``person_id`` on a new account (or on ``account_id``, an account
    of the same person). At most :data:`MAX_CLUB_CARDS_PER_PERSON` active cards per person:
    a fourth is refused (Conflict). Returns the account id."""
    club_card_no(card_no)
    _person(person_id)
    _enum_value(ClubCardKind, kind, "club card kind")
    now = ledger.now()

    def step(db: Database) -> int:
        if db.fetchone("SELECT 1 FROM fuel_cards WHERE card_no = ? UNION ALL SELECT 1 FROM club_cards WHERE card_no = ?",
                       (card_no, card_no)):
            raise Conflict(f"card {mask_card_no(card_no)} is issued already")
        # One person's cards are counted under a lock on the person's accounts (PostgreSQL),
        # so two issues at once cannot both pass the count.
        db.fetchall(f"SELECT account_id FROM club_accounts WHERE person_id = ? ORDER BY account_id{db.for_update}",
                    (person_id,))
        n = _active_cards_of(db, person_id)
        if n >= MAX_CLUB_CARDS_PER_PERSON:
            raise Conflict(f"person {person_id} has {n} active club cards already; at most "
                           f"{MAX_CLUB_CARDS_PER_PERSON} per person (block or replace one)")
        aid = account_id
        if aid is None:
            aid = db.scalar("SELECT max(account_id) FROM club_accounts", default=0) + 1
            db.execute("INSERT INTO club_accounts (account_id, person_id, kind, activated, status, balance_kop, "
                       "turnover_month, turnover_kop, points_debt) VALUES (?, ?, ?, ?, ?, 0, 0, 0, 0)",
                       (aid, person_id, int(kind), int(activated), int(ClubStatus.ACTIVE)))
        else:
            owner = db.scalar("SELECT person_id FROM club_accounts WHERE account_id = ?", (aid,))
            if owner is None:
                raise NotFound(f"no club account {aid}")
            if owner != person_id:
                raise Conflict(f"club account {aid} belongs to another person")
        db.execute("INSERT INTO club_cards (card_no, account_id, status, issued_at_utc_s) VALUES (?, ?, ?, ?)",
                   (card_no, aid, int(ClubStatus.ACTIVE), now))
        record_change(db, Table.CLUB_ACCOUNTS, [aid], now_utc_s=now)
        return aid
    return _run(ledger, step)


def replace_club_card(ledger: Ledger, old_card_no: str, new_card_no: str, *, reason: str = "lost") -> int:
    """A lost club card: block it (stop list) and issue ``new_card_no`` on the same account,
    so the balance and the points carry over. The person's card count does not grow. Returns
    the account id."""
    _card_no(old_card_no)
    club_card_no(new_card_no)
    now = ledger.now()

    def step(db: Database) -> int:
        row = db.fetchone(f"SELECT account_id, status, replaced_by FROM club_cards WHERE card_no = ?{db.for_update}",
                          (old_card_no,))
        if row is None:
            raise NotFound(f"no club card {mask_card_no(old_card_no)}")
        aid, _status, replaced = row
        if replaced:
            raise Conflict(f"club card {mask_card_no(old_card_no)} was replaced already by {mask_card_no(replaced)}")
        if db.fetchone("SELECT 1 FROM fuel_cards WHERE card_no = ? UNION ALL SELECT 1 FROM club_cards WHERE card_no = ?",
                       (new_card_no, new_card_no)):
            raise Conflict(f"card {mask_card_no(new_card_no)} is issued already")
        person = db.scalar(f"SELECT person_id FROM club_accounts WHERE account_id = ?{db.for_update}", (aid,))
        db.execute("UPDATE club_cards SET status = ?, replaced_by = ? WHERE card_no = ?",
                   (int(ClubStatus.BLOCKED), new_card_no, old_card_no))
        if _active_cards_of(db, person) >= MAX_CLUB_CARDS_PER_PERSON:
            raise Conflict(f"person {person} has {MAX_CLUB_CARDS_PER_PERSON} active club cards")
        db.execute("INSERT INTO club_cards (card_no, account_id, status, issued_at_utc_s) VALUES (?, ?, ?, ?)",
                   (new_card_no, aid, int(ClubStatus.ACTIVE), now))
        if db.execute("INSERT INTO stop_list (card_no, listed_at_utc_s, reason) VALUES (?, ?, ?) "
                      "ON CONFLICT (card_no) DO NOTHING", (old_card_no, now, reason)).rowcount:
            record_change(db, Table.STOP_LIST, [old_card_no], now_utc_s=now)
        record_change(db, Table.CLUB_ACCOUNTS, [aid], now_utc_s=now)
        return aid
    return _run(ledger, step)


# -- sites ---------------------------------------------------------------------------------------

def add_site(ledger: Ledger, site_id: str) -> None:
    """Register a site (ingest also registers a site on its first batch)."""
    if not is_site_id(site_id):
        raise InvalidInput(f"site id: letters, digits, '.', '_', '-', 1 to 64 characters, got {site_id!r}")
    ledger.db.run(lambda db: db.execute("INSERT INTO sites (site_id, created_at_utc_s) VALUES (?, ?) "
                                        "ON CONFLICT (site_id) DO NOTHING", (site_id, ledger.now())))


def set_site_status(ledger: Ledger, site_id: str, status: str) -> None:
    """``active``, or ``disabled``: its batches are then refused for good (listed in acks)."""
    if status not in ("active", "disabled"):
        raise InvalidInput(f"site status is active or disabled, got {status!r}")

    def step(db: Database) -> None:
        if db.execute("UPDATE sites SET status = ? WHERE site_id = ?", (status, site_id)).rowcount != 1:
            raise NotFound(f"no site {site_id!r}")
    ledger.db.run(step)



# -- requisites and addresses for documents (host.documents) -------------------------------------

def set_operator_requisites(ledger: Ledger, req: Requisites) -> Requisites:
    """Set the network operator's requisites, the seller on every invoice and act (checked:
    :func:`host.documents.requisites.check_requisites`)."""
    from .documents.requisites import check_requisites
    check_requisites(req)
    now = ledger.now()

    def step(db: Database) -> None:
        db.execute("INSERT INTO operator_requisites (one, name, inn, kpp, address, updated_at_utc_s) "
                   "VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT (one) DO UPDATE SET name = excluded.name, "
                   "inn = excluded.inn, kpp = excluded.kpp, address = excluded.address, "
                   "updated_at_utc_s = excluded.updated_at_utc_s", (req.name, req.inn, req.kpp, req.address, now))
    _run(ledger, step)
    return req


def set_client_requisites(ledger: Ledger, contract_id: int, req: Requisites) -> Requisites:
    """Set the requisites of a contract's client, the buyer on its invoices and acts.
    Raises NotFound for an unknown contract, InvalidInput for a bad field."""
    from .documents.requisites import check_requisites
    _amount("contract_id", contract_id, 1, _MAX_ID)
    check_requisites(req)
    now = ledger.now()

    def step(db: Database) -> None:
        if not db.fetchone("SELECT 1 FROM contracts WHERE contract_id = ?", (contract_id,)):
            raise NotFound(f"no contract {contract_id}")
        db.execute("INSERT INTO contract_requisites (contract_id, name, inn, kpp, address, updated_at_utc_s) "
                   "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (contract_id) DO UPDATE SET name = excluded.name, "
                   "inn = excluded.inn, kpp = excluded.kpp, address = excluded.address, "
                   "updated_at_utc_s = excluded.updated_at_utc_s",
                   (contract_id, req.name, req.inn, req.kpp, req.address, now))
    _run(ledger, step)
    return req


def set_station_address(ledger: Ledger, station_id: int, *, name: str, address: str) -> None:
    """Give a station the name and address transaction detail shows. NotFound for an
    unknown station."""
    _amount("station_id", station_id, 0, _MAX_ID)
    _text("a station name", name, 1, 200)
    _text("a station address", address, 1, 500)

    def step(db: Database) -> None:
        if _station_row(db, station_id) is None:
            raise NotFound(f"no station {station_id}")
        db.execute("INSERT INTO station_addresses (station_id, name, address) VALUES (?, ?, ?) "
                   "ON CONFLICT (station_id) DO UPDATE SET name = excluded.name, address = excluded.address",
                   (station_id, name, address))
    _run(ledger, step)
