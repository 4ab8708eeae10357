"""Operators' changes to master data: contracts, fuel cards and limits, tariffs, the stop
list, club accounts and cards, sites. Each function is one transaction that also records
the replica change (:func:`host.versions.record_change`), so a block is a stop-list delta
the moment it commits. The admin command line (:mod:`host.admin`) is a thin layer over these.

Errors: :class:`~host.errors.NotFound`, :class:`~host.errors.Conflict`,
:class:`~host.errors.InvalidInput`; nothing changes when one is raised.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date

from authz.club_model import ClubCardKind, ClubModel, ClubRules, ClubStatus
from authz.fuel_model import (CardStatus, Contract, FuelCard, FuelModel, Limit, Product, Scope, Station, Tariff,
                              mask_card_no)
from authz.localtime import zone
from authz.errors import ModelError
from authz.money import MAX_AMOUNT_KOP
from wire import Table, is_site_id

from . import rows as R
from .db import Database
from .errors import Conflict, InvalidInput, NotFound
from .ledger import Ledger
from .versions import record_change

__all__ = ["MAX_CLUB_CARDS_PER_PERSON", "import_fuel_model", "import_club_model", "create_contract",
           "issue_fuel_card", "set_limit", "remove_limit", "block_card", "unblock_card", "set_tariff",
           "top_up_contract", "issue_club_card", "replace_club_card", "add_site", "set_site_status",
           "set_club_rules", "put_products", "put_stations", "put_tariffs"]

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
    ClubModel(rules=rules, accounts=(), cards=())  # ModelError for bad rules

    def step(db: Database) -> int:
        db.execute("INSERT INTO club_rules (key, body) VALUES ('club', ?) ON CONFLICT (key) DO UPDATE SET "
                   "body = excluded.body", (R.rules_to_json(rules),))
        return record_change(db, Table.CLUB_RULES, ["club"], now_utc_s=ledger.now())
    return _run(ledger, step)


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
        db.executemany("INSERT INTO fuel_cards (card_no, contract_id, expires_on, groups, limits, kind, status) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (card_no) DO UPDATE SET contract_id = excluded.contract_id, "
                       "expires_on = excluded.expires_on, groups = excluded.groups, limits = excluded.limits, "
                       "kind = excluded.kind, status = excluded.status",
                       [(c.card_no, c.contract_id, c.expires_on.isoformat(), R.groups_to_json(c.groups),
                         R.limits_to_json(c.limits), int(c.kind), int(c.status)) for c in model.cards])
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
    _amount("contract_id", contract.contract_id, 1, 2**63 - 1)
    try:
        zone(contract.tz)
    except ModelError:
        raise InvalidInput(f"unknown time zone {contract.tz!r}") from None
    _amount("balance_kop", contract.balance_kop, -MAX_AMOUNT_KOP)
    _amount("credit_line_kop", contract.credit_line_kop)
    if len(contract.chosen_station_ids) > 3:
        raise InvalidInput("a contract chooses at most three stations")
    now = ledger.now()

    def step(db: Database) -> Contract:
        if db.fetchone("SELECT 1 FROM contracts WHERE contract_id = ?", (contract.contract_id,)):
            raise Conflict(f"contract {contract.contract_id} exists already")
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
        return R.contract_from_row(db.fetchone(f"SELECT {R.CONTRACT_COLUMNS} FROM contracts WHERE contract_id = ?",
                                               (contract_id,)))
    return _run(ledger, step)


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
    """Issue a fuel card of an existing contract. Raises Conflict if the number is taken (by
    a fuel or club card)."""
    _card_no(card.card_no)
    if not isinstance(card.expires_on, date):
        raise InvalidInput(f"expires_on must be a date, got {card.expires_on!r}")
    _check_limits(card.limits)

    def step(db: Database) -> FuelCard:
        if not db.fetchone("SELECT 1 FROM contracts WHERE contract_id = ?", (card.contract_id,)):
            raise NotFound(f"no contract {card.contract_id}")
        if db.fetchone("SELECT 1 FROM fuel_cards WHERE card_no = ? UNION ALL SELECT 1 FROM club_cards WHERE card_no = ?",
                       (card.card_no, card.card_no)):
            raise Conflict(f"card {mask_card_no(card.card_no)} is issued already")
        db.execute("INSERT INTO fuel_cards (card_no, contract_id, expires_on, groups, limits, kind, status) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (card.card_no, card.contract_id, card.expires_on.isoformat(), R.groups_to_json(card.groups),
                    R.limits_to_json(card.limits), int(card.kind), int(card.status)))
        record_change(db, Table.FUEL_CARDS, [card.card_no], now_utc_s=ledger.now())
        return card
    return _run(ledger, step)


def _check_limits(limits: Sequence[Limit]) -> None:
    seen = set()
    for lim in limits:
        _amount("limit_id", lim.limit_id, 0, 2**31 - 1)
        _amount("limit amount", lim.amount)
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
    litres: ``LimitUnit.MILLILITRES``). If the limit's unit or period changes, what it had
    counted so far no longer means anything: its counters are cleared."""
    _check_limits([limit])

    def step(db: Database) -> FuelCard:
        card = _card_row(db, card_no)
        old = {lim.limit_id: lim for lim in card.limits}
        prev = old.get(limit.limit_id)
        if limit.scope is Scope.PRODUCT and not db.fetchone("SELECT 1 FROM products WHERE code = ?", (limit.product,)):
            raise NotFound(f"no product {limit.product!r}")
        old[limit.limit_id] = limit
        limits = tuple(sorted(old.values(), key=lambda lim: lim.limit_id))
        db.execute("UPDATE fuel_cards SET limits = ? WHERE card_no = ?", (R.limits_to_json(limits), card_no))
        if prev is not None and (prev.unit, prev.period) != (limit.unit, limit.period):
            db.execute("DELETE FROM fuel_counters WHERE card_no = ? AND limit_id = ?", (card_no, limit.limit_id))
        record_change(db, Table.FUEL_CARDS, [card_no], now_utc_s=ledger.now())
        return FuelCard(card.card_no, card.contract_id, card.expires_on, card.groups, limits, card.kind, card.status)
    return _run(ledger, step)


def remove_limit(ledger: Ledger, card_no: str, limit_id: int) -> FuelCard:
    def step(db: Database) -> FuelCard:
        card = _card_row(db, card_no)
        limits = tuple(lim for lim in card.limits if lim.limit_id != limit_id)
        if len(limits) == len(card.limits):
            raise NotFound(f"card {mask_card_no(card_no)} has no limit {limit_id}")
        db.execute("UPDATE fuel_cards SET limits = ? WHERE card_no = ?", (R.limits_to_json(limits), card_no))
        db.execute("DELETE FROM fuel_counters WHERE card_no = ? AND limit_id = ?", (card_no, limit_id))
        record_change(db, Table.FUEL_CARDS, [card_no], now_utc_s=ledger.now())
        return FuelCard(card.card_no, card.contract_id, card.expires_on, card.groups, limits, card.kind, card.status)
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
            aid, replaced = db.fetchone("SELECT account_id, replaced_by FROM club_cards WHERE card_no = ?", (card_no,))
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


def issue_club_card(ledger: Ledger, card_no: str, *, person_id: str, kind: ClubCardKind,
                    activated: bool = True, account_id: int | None = None) -> int:
    """Issue a club card to ``person_id`` on a new account (or on ``account_id``, an account
    of the same person). At most :data:`MAX_CLUB_CARDS_PER_PERSON` active cards per person:
    a fourth is refused (Conflict). Returns the account id."""
    _card_no(card_no)
    if not isinstance(person_id, str) or not 1 <= len(person_id) <= 64:
        raise InvalidInput(f"person id must be 1 to 64 characters, got {person_id!r}")
    if not isinstance(kind, ClubCardKind):
        raise InvalidInput(f"unknown club card kind {kind!r}")
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
    _card_no(new_card_no)
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

