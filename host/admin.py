"""The host's admin command line: ``python -m host.admin [--db URL] COMMAND ...``.

The ledger is ``--db`` (or ``$EDGEPOS_HOST_DB``; default ``sqlite:///edgepos-host.sqlite``).
Amounts are typed in rubles (``--rub 1500.50``) and litres (``--litres 40.5``) and stored as
kopecks and millilitres exactly. Exit codes are :class:`ExitCode` (shared with
``python -m host.worker``; listed in ``--help`` and docs/operations.md): an error is one line
naming what to fix. A change to a replica table is a replica delta in the same transaction:
the running workers publish it within a second (a block reaches the sites within seconds).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from datetime import date
from enum import IntEnum
from pathlib import Path
from typing import Protocol

from authz.club_model import ClubCardKind
from authz.fuel_model import (
    Contract,
    DiscountKind,
    DiscountRule,
    DiscountWhere,
    FuelCard,
    Limit,
    LimitUnit,
    OnBreach,
    Period,
    Product,
    ProductGroup,
    Scope,
    Tariff,
    mask_card_no,
)

from . import alerts, master, reports
from . import card_rules as CR
from .checks import parse_date, parse_litres, parse_percent, parse_price, parse_rub
from .errors import HostError, InvalidInput, LedgerUnavailable, SchemaError
from .ledger import Ledger
from .web import serve as web_serve

__all__ = [
    "DEFAULT_DB",
    "EXIT_MEANINGS",
    "CardWriter",
    "ExitCode",
    "LedgerOpenError",
    "build_parser",
    "exit_codes_epilog",
    "main",
    "open_ledger",
    "parse_litres",
    "parse_rub",
]

DEFAULT_DB = "sqlite:///edgepos-host.sqlite"
#: how the ledger setting is named in messages
DB_SETTING = "--db (or $EDGEPOS_HOST_DB)"


class ExitCode(IntEnum):
    """What the host's commands (``python -m host.admin``, ``edgepos host``, ``python -m
    host.worker``) exit with. The numbers the edge's ``edgepos run`` also uses
    (:class:`terminal.cli.ExitCode`) mean the same there; no number means two things."""

    OK = 0  #: done (the worker: stopped by SIGTERM or Ctrl-C)
    REFUSED = 1  #: the ledger refused the request (unknown card, bad value): nothing changed
    USAGE = 2  #: bad command line
    LEDGER_UNREACHABLE = 3  #: the ledger cannot be reached or opened (--db)
    LEDGER_SCHEMA = 4  #: the ledger's schema is missing, foreign or newer than this code (--db)
    KEY_FILE = 5  #: a key file or the keys directory is missing or unreadable (--keys-dir)
    HOST_KEY_MISSING = 6  #: the worker would publish the replica but has no replica-signing.key (--keys-dir)
    INTERRUPTED = 130  #: Ctrl-C before the command was done


#: One line per exit code, for ``--help`` and the docs.
EXIT_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "done (the worker: stopped by SIGTERM or Ctrl-C)",
    ExitCode.REFUSED: "refused (unknown card, a fourth club card, a bad value): the message says why, "
                      "nothing changed",
    ExitCode.USAGE: "bad command line",
    ExitCode.LEDGER_UNREACHABLE: "the ledger (--db) cannot be reached or opened",
    ExitCode.LEDGER_SCHEMA: "the ledger's schema (--db) is missing, not an edgepos ledger, or newer than "
                            "this code",
    ExitCode.KEY_FILE: "worker: --keys-dir or a key file in it is missing or unreadable",
    ExitCode.HOST_KEY_MISSING: "worker: no replica-signing.key in --keys-dir, but replica publishing is on",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}

# the old names, for callers of this module
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNAVAILABLE = ExitCode.OK, ExitCode.REFUSED, ExitCode.USAGE, \
    ExitCode.LEDGER_UNREACHABLE


def exit_codes_epilog(*codes: ExitCode) -> str:
    """The exit-code table of ``--help`` (``codes``: the ones this command uses; default all)."""
    return "exit codes:\n" + "\n".join(f"  {int(c):>3}  {EXIT_MEANINGS[c]}" for c in codes or ExitCode)


class LedgerOpenError(Exception):
    """The ledger cannot be opened; ``code`` is the exit code, the message one line naming
    the setting (:data:`DB_SETTING`)."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(f"{DB_SETTING}: {message}")
        self.code = code


def _missing_pg_schema(url: str) -> str | None:
    """For a PostgreSQL URL whose search_path names no existing schema, what to do; else None."""
    from .db import connect
    db = connect(url)
    try:
        if db.scalar("SELECT current_schema()") is not None:
            return None
        path = db.scalar("SHOW search_path")
        database = db.scalar("SELECT current_database()")
    finally:
        db.close()
    return (f"PostgreSQL database {database!r} has no schema {path!r} (the URL's search_path): "
            f"create it (CREATE SCHEMA ...) or fix options=-csearch_path in the URL")


def open_ledger(url: str) -> Ledger:
    """:meth:`Ledger.open` for a command line: every way it can fail at start becomes a
    :class:`LedgerOpenError` with its exit code and a one-line message naming ``--db``
    (never the URL's password)."""
    from .db import redact_url
    try:
        if url.split(":", 1)[0].lower() in ("postgresql", "postgres"):
            why = _missing_pg_schema(url)
            if why is not None:
                raise LedgerOpenError(ExitCode.LEDGER_SCHEMA, why)
        return Ledger.open(url)
    except LedgerUnavailable as exc:
        raise LedgerOpenError(ExitCode.LEDGER_UNREACHABLE, str(exc)) from None
    except SchemaError as exc:
        raise LedgerOpenError(ExitCode.LEDGER_SCHEMA, f"{redact_url(url)}: {exc}") from None
    except Exception as exc:
        if not _is_database_error(exc):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LedgerOpenError(ExitCode.LEDGER_SCHEMA, f"{redact_url(url)}: cannot set up the ledger's schema: "
                              f"{first}") from None


def _is_database_error(exc: BaseException) -> bool:
    import sqlite3
    if isinstance(exc, sqlite3.Error):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - no PostgreSQL driver: no PostgreSQL error either
        return False
    return isinstance(exc, psycopg.Error)


def _enum(cls, text: str, what: str):
    try:
        return cls[text.strip().upper().replace("-", "_")]
    except KeyError:
        raise InvalidInput(f"unknown {what} {text!r}; one of: {', '.join(m.name.lower() for m in cls)}") from None


def _date(text: str) -> date:
    return parse_date(text)


def _groups(text: str) -> frozenset[ProductGroup]:
    return frozenset(_enum(ProductGroup, g, "product group") for g in text.split(",") if g.strip())


def _scope(text: str) -> tuple[Scope, ProductGroup | None, str | None]:
    if text == "all":
        return Scope.ALL, None, None
    kind, _, value = text.partition(":")
    if kind == "group" and value:
        return Scope.GROUP, _enum(ProductGroup, value, "product group"), None
    if kind == "product" and value:
        return Scope.PRODUCT, None, value
    raise InvalidInput(f"a scope is all, group:<group> or product:<code>, got {text!r}")


def _print_table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in head]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    for k, r in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


# -- commands ------------------------------------------------------------------------------------

def cmd_init(led: Ledger, a: argparse.Namespace) -> None:
    print(f"ledger ready ({led.dialect})")


def cmd_sites(led: Ledger, a: argparse.Namespace) -> None:
    rows = [(s.site_id, s.status, s.up_to_seq, s.max_seq, "gap" if s.gap else "", s.records, s.batches,
             {None: "?", True: "online", False: "offline"}[s.online], s.software_version or "")
            for s in led.sites()]
    _print_table(["site", "status", "acked up to", "highest batch", "", "records", "batches", "presence", "version"], rows)


def cmd_add_site(led: Ledger, a: argparse.Namespace) -> None:
    if not a.keys_dir:
        master.add_site(led, a.site)
        print(f"site {a.site} added")
        return
    from wire import WireKeyError, is_site_id, new_key, write_key
    path = Path(a.keys_dir) / "sites" / f"{a.site}.key"
    if not is_site_id(a.site):
        master.add_site(led, a.site)  # refuses the id, before any file is made
    if path.exists():  # refused before the ledger changes; a key is never replaced
        raise InvalidInput(f"key file {str(path)!r} already exists; remove it first to replace the key")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_key(path, new_key())
    except (WireKeyError, OSError) as exc:
        raise InvalidInput(str(exc)) from None
    master.add_site(led, a.site)
    print(f"site {a.site} added; its key is {path} (install it on the site)")


def cmd_site_status(led: Ledger, a: argparse.Namespace) -> None:
    master.set_site_status(led, a.site, a.status)
    print(f"site {a.site} {a.status}")


def cmd_seed_sample(led: Ledger, a: argparse.Namespace) -> None:
    from authz import sample
    if not 1 <= a.fuel_cards <= 10_000_000 or not 1 <= a.club_accounts <= 10_000_000:
        raise InvalidInput("--fuel-cards and --club-accounts are 1 to 10000000")
    master.require_no_master_data(led)  # before generating: a clear refusal at once
    master.import_sample(led, sample.fuel_model(n_cards=a.fuel_cards, seed=a.seed),
                         sample.club_model(n_accounts=a.club_accounts, seed=a.seed + 1))
    print(f"loaded the sample network: {a.fuel_cards} fuel cards, {a.club_accounts} club accounts (seed {a.seed})")


def cmd_create_contract(led: Ledger, a: argparse.Namespace) -> None:
    c = Contract(a.contract, a.tz, a.region, _enum(Tariff, a.tariff, "tariff"), parse_rub(a.balance_rub),
                 parse_rub(a.credit_rub))
    master.create_contract(led, c, name=a.name)
    print(f"contract {c.contract_id} opened, balance {reports.rub(c.balance_kop)} RUB")


def _limit(text: str) -> Limit:
    """``ID:PERIOD:AMOUNT[:SCOPE][:alert]``: ``1:day:200L``, ``2:month:50000.50RUB:group:shop``,
    ``3:quarter:30purchases:alert`` (``:alert``: approve past it and raise an alert)."""
    breach = OnBreach.DECLINE
    if text.lower().endswith(":alert"):
        text, breach = text[:-len(":alert")], OnBreach.ALERT
    parts = text.split(":", 3)
    if len(parts) < 3 or not re.fullmatch(r"[0-9]{1,9}", parts[0]):
        raise InvalidInput(f"a limit is ID:PERIOD:AMOUNT[:SCOPE][:alert] (1:day:200L, 2:month:5000RUB:group:shop, "
                           f"3:quarter:30purchases:alert), got {text[:60]!r}")
    amount = parts[2].strip()
    if amount.upper().endswith("RUB"):
        unit, value = LimitUnit.KOPECKS, parse_rub(amount[:-3])
    elif amount.lower().endswith("purchases"):
        unit, value = CR.parse_amount("purchases", amount[:-len("purchases")])
    elif amount.upper().endswith("L"):
        unit, value = LimitUnit.MILLILITRES, parse_litres(amount[:-1])
    else:
        raise InvalidInput(f"a limit's amount ends in L (litres), RUB (rubles) or purchases (a count), "
                           f"got {amount[:40]!r}")
    scope, group, product = _scope(parts[3] if len(parts) > 3 else "all")
    return Limit(int(parts[0]), unit, _enum(Period, parts[1], "period"), value, scope, group, product, breach)


def _controls(a: argparse.Namespace) -> dict:
    """The fleet controls given on the command line, as change_card_controls keywords (an
    option not given is not there: the card keeps what it has)."""
    out: dict = {}
    if a.all_products and a.products is not None:
        raise InvalidInput("give --products or --all-products, not both")
    if a.products is not None:
        out["products"] = CR.parse_products(a.products)
    elif a.all_products:
        out["products"] = None
    if a.any_time and a.window:
        raise InvalidInput("give --window or --any-time, not both")
    if a.window:
        out["windows"] = tuple(CR.parse_window(w) for w in a.window)
    elif a.any_time:
        out["windows"] = ()
    if a.stations is not None:
        out["station_scope"], out["station_ids"] = CR.parse_stations(a.stations)
    if a.on_breach is not None:
        out["on_breach"] = CR.parse_on_breach(a.on_breach)
    return out


def _add_control_options(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--products", metavar="CODES", help="the only products the card may buy, comma separated "
                    "(DT,AI95; each of a group the card may buy), or all")
    sp.add_argument("--all-products", action="store_true", help="every product of the card's groups (no list)")
    sp.add_argument("--window", action="append", metavar="DAYS,HH:MM-HH:MM",
                    help="when the card may buy, in the contract's time zone, repeatable: mon-fri,07:00-19:00; "
                         "sat,22:00-06:00 (an end before the start crosses midnight); the windows replace the "
                         "card's")
    sp.add_argument("--any-time", action="store_true", help="no time windows: the card may buy at any time")
    sp.add_argument("--stations", metavar="WHERE", help="network (every station), home-region (the contract's "
                    "home region only) or station ids 1000,1001")
    sp.add_argument("--on-breach", metavar="ACTION", help="what a purchase outside the products, windows or "
                    "stations does: decline, or alert (approve it and raise an alert at the host)")


def cmd_issue_card(led: Ledger, a: argparse.Namespace) -> None:
    limits = tuple(sorted((_limit(t) for t in a.limit or ()), key=lambda lim: lim.limit_id))
    controls = _controls(a)
    controls.setdefault("products", None)
    card = FuelCard(a.card, a.contract, _date(a.expires), _groups(a.groups), limits, **controls)
    master.check_fuel_card(card)  # the host's word on a bad number or limit comes first
    writer = a.card_writer.prepare(card, a) if a.card_writer is not None else None
    issued = master.issue_fuel_card(led, card)
    print(f"card {mask_card_no(a.card)} issued on contract {a.contract}")
    if writer is not None:
        try:
            print(writer(issued))
        except (OSError, ValueError) as exc:
            raise HostError(f"card {mask_card_no(a.card)} is issued in the ledger, but its card data was not "
                            f"written ({exc}): run personalise-card {mask_card_no(a.card)} again") from None


def cmd_personalise_card(led: Ledger, a: argparse.Namespace) -> None:
    card = led.fuel_card(a.card)
    writer = a.card_writer.prepare(card, a)
    if writer is None:
        raise InvalidInput("give --personalise CARD.json")
    print(writer(card))


def cmd_change_card(led: Ledger, a: argparse.Namespace) -> None:
    if a.expires is None and a.groups is None:
        raise InvalidInput("give --expires or --groups (or both)")
    card = master.change_fuel_card(led, a.card, expires_on=None if a.expires is None else _date(a.expires),
                                   groups=None if a.groups is None else _groups(a.groups))
    print(f"card {mask_card_no(a.card)}: expires {card.expires_on.isoformat()}, groups {_group_names(card.groups)}")


def _group_names(groups: frozenset[ProductGroup]) -> str:
    return ",".join(g.name.lower() for g in sorted(groups))


def _amount_text(unit: LimitUnit, amount: int) -> str:
    if unit is LimitUnit.MILLILITRES:
        return f"{litres(amount)} L"
    if unit is LimitUnit.PURCHASES:
        return f"{amount} purchase{'s' * (amount != 1)}"
    return f"{reports.rub(amount)} RUB"


def _limit_text(lim: Limit) -> str:
    scope = {Scope.ALL: "all", Scope.GROUP: f"group:{lim.group.name.lower() if lim.group is not None else ''}",
             Scope.PRODUCT: f"product:{lim.product}"}[lim.scope]
    return f"{_amount_text(lim.unit, lim.amount)} per {lim.period.name.lower()} ({scope})"


def cmd_show_card(led: Ledger, a: argparse.Namespace) -> None:
    try:
        card = led.fuel_card(a.card)
    except HostError:
        club = led.club_account_of(a.card)  # NotFound names the card masked
        print(f"club card {mask_card_no(a.card)}: account {club.account_id}, person {club.person_id}, "
              f"{club.kind.name.lower()}, {'activated' if club.activated else 'not activated'}")
        print(f"  balance {reports.rub(club.balance_kop)} RUB, {club.points(led.now())} points, "
              f"on the stop list: {'yes' if a.card in led.stop_list() else 'no'}")
        return
    counters = led.counters(a.card)
    print(f"fuel card {mask_card_no(card.card_no)}: contract {card.contract_id}, {card.kind.name.lower()}, "
          f"{card.status.name.lower()}, expires {card.expires_on.isoformat()}")
    print(f"  groups {_group_names(card.groups)}; on the stop list: {'yes' if a.card in led.stop_list() else 'no'}")
    for line in CR.controls_lines(card):
        print(f"  {line}")
    rows = []
    for lim in card.limits:
        c = counters.get(lim.limit_id)
        spent = "" if c is None else _amount_text(lim.unit, c.spent)
        rows.append((lim.limit_id, _limit_text(lim), lim.on_breach.name.lower(), spent))
    if rows:
        _print_table(["limit", "amount", "on breach", "spent (latest period)"], rows)
    else:
        print("  no limits")


def cmd_show_contract(led: Ledger, a: argparse.Namespace) -> None:
    c = led.contract(a.contract)
    print(f"contract {c.contract_id} {led.contract_name(a.contract)}".rstrip() + f": tariff {c.tariff.name.lower()}, "
          f"time zone {c.tz}, home region {c.home_region}")
    print(f"  balance {reports.rub(c.balance_kop)} RUB, credit line {reports.rub(c.credit_line_kop)} RUB"
          + (f", chosen stations {','.join(str(x) for x in c.chosen_station_ids)}" if c.chosen_station_ids else ""))
    stop = led.stop_list()
    rows = [(mask_card_no(card.card_no), card.status.name.lower(), card.expires_on.isoformat(),
             "yes" if card.card_no in stop else "") for card in led.contract_cards(a.contract)]
    if rows:
        _print_table(["card", "status", "expires", "stop list"], rows)
    else:
        print("  no cards")


def cmd_products(led: Ledger, a: argparse.Namespace) -> None:
    rows = [(p.code, p.name, p.group.name.lower()) for p in sorted(led.products().values(), key=lambda p: p.code)]
    _print_table(["code", "name", "group"], rows)


def cmd_put_product(led: Ledger, a: argparse.Namespace) -> None:
    p = master.put_product(led, Product(a.code, a.name, _enum(ProductGroup, a.group, "product group")))
    print(f"product {p.code} ({p.name}, {p.group.name.lower()}) saved")


def cmd_stations(led: Ledger, a: argparse.Namespace) -> None:
    rows = [(st.station_id, st.region, _group_names(st.groups), litres(st.max_fill_ml),
             " ".join(f"{code}={reports.rub(price)}" for code, price in sorted(st.prices_kop_per_l.items())))
            for st in led.stations()]
    _print_table(["station", "region", "groups", "max fill L", "prices (RUB per L or unit)"], rows)


def cmd_put_station(led: Ledger, a: argparse.Namespace) -> None:
    st = master.put_station(led, a.station, region=a.region, groups=None if a.groups is None else _groups(a.groups),
                            max_fill_ml=None if a.max_fill_litres is None else parse_litres(a.max_fill_litres))
    print(f"station {st.station_id}: region {st.region}, groups {_group_names(st.groups)}, "
          f"max fill {litres(st.max_fill_ml)} L, {len(st.prices_kop_per_l)} prices")


def cmd_set_price(led: Ledger, a: argparse.Namespace) -> None:
    if (a.rub is None) == (not a.remove):
        raise InvalidInput("give the price (--rub, per litre or unit) or --remove, one of them")
    st = master.set_price(led, a.station, a.product, None if a.remove else parse_price(a.rub))
    shown = "removed" if a.remove else f"{reports.rub(st.prices_kop_per_l[a.product])} RUB"
    print(f"station {st.station_id}: price of {a.product} {shown}")


def cmd_tariffs(led: Ledger, a: argparse.Namespace) -> None:
    rows = [(d.tariff.name.lower(), d.product, d.where.name.lower(),
             f"{reports.rub(d.value)} RUB/L" if d.kind is DiscountKind.KOP_PER_L else f"{reports.rub(d.value)} %")
            for d in led.discounts()]
    _print_table(["tariff", "product", "where", "discount"], rows)


def cmd_set_discount(led: Ledger, a: argparse.Namespace) -> None:
    if (a.rub is None) == (a.percent is None):
        raise InvalidInput("give the discount in rubles per litre (--rub) or in percent (--percent), one of them")
    kind, value = (DiscountKind.KOP_PER_L, parse_price(a.rub)) if a.rub is not None else \
        (DiscountKind.PERCENT_BP, parse_percent(a.percent))
    rule = DiscountRule(_enum(Tariff, a.tariff, "tariff"), a.product, _enum(DiscountWhere, a.where, "discount scope"),
                        kind, value)
    table = master.set_discount(led, rule)
    print(f"tariff {rule.tariff.name.lower()}: discount of {rule.product} at {rule.where.name.lower()} = "
          f"{a.rub + ' RUB/L' if a.rub is not None else a.percent + ' %'} ({len(table)} rows)")


def cmd_remove_discount(led: Ledger, a: argparse.Namespace) -> None:
    tariff, where = _enum(Tariff, a.tariff, "tariff"), _enum(DiscountWhere, a.where, "discount scope")
    table = master.remove_discount(led, tariff, a.product, where)
    print(f"tariff {tariff.name.lower()}: discount of {a.product} at {where.name.lower()} removed ({len(table)} rows)")


def _station_ids(text: str) -> tuple[int, ...]:
    if text.strip().lower() == "none":
        return ()
    parts = [x.strip() for x in text.split(",")]
    if not all(re.fullmatch(r"[0-9]{1,18}", x) for x in parts):
        raise InvalidInput(f"stations are ids separated by commas (1001,1002), or none, got {text[:60]!r}")
    return tuple(int(x) for x in parts)


def cmd_change_contract(led: Ledger, a: argparse.Namespace) -> None:
    if all(v is None for v in (a.name, a.tz, a.region, a.chosen, a.credit_rub)):
        raise InvalidInput("give at least one of --name, --tz, --region, --credit-rub, --chosen")
    c = master.change_contract(led, a.contract, name=a.name, tz=a.tz, home_region=a.region,
                               credit_line_kop=None if a.credit_rub is None else parse_rub(a.credit_rub),
                               chosen_station_ids=None if a.chosen is None else _station_ids(a.chosen))
    print(f"contract {c.contract_id}: time zone {c.tz}, home region {c.home_region}, credit line "
          f"{reports.rub(c.credit_line_kop)} RUB, chosen stations {','.join(map(str, c.chosen_station_ids)) or 'none'}")


def cmd_set_credit_line(led: Ledger, a: argparse.Namespace) -> None:
    c = master.set_credit_line(led, a.contract, parse_rub(a.rub))
    print(f"contract {c.contract_id}: credit line {reports.rub(c.credit_line_kop)} RUB")


def cmd_create_club_account(led: Ledger, a: argparse.Namespace) -> None:
    aid = master.create_club_account(led, a.person, _enum(ClubCardKind, a.kind, "club card kind"),
                                     activated=not a.not_activated)
    print(f"club account {aid} opened for {a.person}")


def cmd_set_club_rules(led: Ledger, a: argparse.Namespace) -> None:
    from . import rows as R
    try:
        text = Path(a.file).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read {a.file}: {exc.strerror or exc}") from None
    try:
        rules = R.rules_from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput(f"{a.file}: not club rules ({type(exc).__name__}: {str(exc)[:80]})") from None
    version = master.set_club_rules(led, rules)
    print(f"club rules saved (version {version})")


def cmd_club_rules(led: Ledger, a: argparse.Namespace) -> None:
    from . import rows as R
    print(R.rules_to_json(led.club_rules()))


def cmd_create_keys(led: Ledger, a: argparse.Namespace) -> None:
    from wire import WireKeyError, key_id, new_key, write_key

    from .keys import ensure_replica_keys
    d = Path(a.keys_dir)
    known = {s.site_id for s in led.sites()}
    for site in a.sites:  # every check before anything is written
        if site not in known:
            raise InvalidInput(f"no site {site!r}: add it first (add-site {site})")
        if (d / "sites" / f"{site}.key").exists():
            raise InvalidInput(f"site {site} has a key already ({d / 'sites' / (site + '.key')}): remove it first "
                               "to replace it")
    try:
        files = ensure_replica_keys(d)
        print(f"replica signing key {'made' if files.created else 'already there'}: {files.signing_key_file} "
              f"(key id {files.key_id}); give {files.verify_key_file} to every site")
        if a.sites:
            (d / "sites").mkdir(mode=0o700, exist_ok=True)
        for site in a.sites:
            key = new_key()
            write_key(d / "sites" / f"{site}.key", key)
            print(f"site {site}: key {d / 'sites' / (site + '.key')} (key id {key_id(key)}); install it on the site")
    except (WireKeyError, OSError) as exc:
        raise InvalidInput(str(exc)) from None


def cmd_set_limit(led: Ledger, a: argparse.Namespace) -> None:
    given = [x for x in (a.rub, a.litres, a.amount) if x is not None]
    if len(given) != 1 or (a.amount is None) != (a.unit is None):
        raise InvalidInput("give the limit as --rub X, --litres X, or --unit rub|litres|purchases --amount X: "
                           "one of them")
    if a.rub is not None:
        unit, amount = LimitUnit.KOPECKS, parse_rub(a.rub)
    elif a.litres is not None:
        unit, amount = LimitUnit.MILLILITRES, parse_litres(a.litres)
    else:
        unit, amount = CR.parse_amount(a.unit, a.amount)
    scope, group, product = _scope(a.scope)
    breach = OnBreach.DECLINE if a.on_breach is None else CR.parse_on_breach(a.on_breach)
    period = _enum(Period, a.period, "period")
    master.set_limit(led, a.card, Limit(a.limit_id, unit, period, amount, scope, group, product, breach))
    print(f"card {mask_card_no(a.card)}: limit {a.limit_id} = {_amount_text(unit, amount)} per "
          f"{period.name.lower()} ({a.scope}), on breach {breach.name.lower()}")


def cmd_set_controls(led: Ledger, a: argparse.Namespace) -> None:
    changes = _controls(a)
    if not changes:
        raise InvalidInput("give at least one of --products/--all-products, --window/--any-time, --stations, "
                           "--on-breach")
    card = master.change_card_controls(led, a.card, **changes)
    print(f"card {mask_card_no(a.card)}: " + "; ".join(CR.controls_lines(card)))


def cmd_remove_limit(led: Ledger, a: argparse.Namespace) -> None:
    master.remove_limit(led, a.card, a.limit_id)
    print(f"card {mask_card_no(a.card)}: limit {a.limit_id} removed")


def cmd_block(led: Ledger, a: argparse.Namespace) -> None:
    what = master.block_card(led, a.card, reason=a.reason)
    print(f"{what} card {mask_card_no(a.card)} blocked: on the stop list")


def cmd_unblock(led: Ledger, a: argparse.Namespace) -> None:
    what = master.unblock_card(led, a.card)
    print(f"{what} card {mask_card_no(a.card)} unblocked: off the stop list")


def cmd_set_tariff(led: Ledger, a: argparse.Namespace) -> None:
    c = master.set_tariff(led, a.contract, _enum(Tariff, a.tariff, "tariff"))
    print(f"contract {c.contract_id}: tariff {c.tariff.name.lower()}")


def cmd_top_up(led: Ledger, a: argparse.Namespace) -> None:
    after = master.top_up_contract(led, a.contract, parse_rub(a.rub), note=a.note)
    print(f"contract {a.contract}: +{a.rub} RUB, balance {reports.rub(after)} RUB")


def cmd_issue_club_card(led: Ledger, a: argparse.Namespace) -> None:
    aid = master.issue_club_card(led, a.card, person_id=a.person, kind=_enum(ClubCardKind, a.kind, "club card kind"),
                                 activated=not a.not_activated, account_id=a.account)
    print(f"club card {mask_card_no(a.card)} issued to {a.person}, account {aid}")


def cmd_replace_club_card(led: Ledger, a: argparse.Namespace) -> None:
    aid = master.replace_club_card(led, a.old, a.new, reason=a.reason)
    acc = led.club_account(aid)
    print(f"club card {mask_card_no(a.old)} blocked and replaced by {mask_card_no(a.new)} on account {aid}: "
          f"balance {reports.rub(acc.balance_kop)} RUB and {acc.points(led.now())} points carried over")


def cmd_clone_alerts(led: Ledger, a: argparse.Namespace) -> None:
    rows = [(x.alert_id, x.kind, mask_card_no(x.card_no), x.txn_counter, x.site_id, x.other_site_id or "", x.status,
             x.detail) for x in led.clone_alerts(None if a.all else "open")]
    _print_table(["id", "kind", "card", "counter", "site", "other site", "status", "detail"], rows)
    if not rows:
        print("no clone alerts")


def cmd_issues(led: Ledger, a: argparse.Namespace) -> None:
    rows = [(i.issue_id, i.kind, i.site_id or "", i.record_id or "", i.detail) for i in led.issues()[-a.last:]]
    _print_table(["id", "kind", "site", "record", "detail"], rows)


def cmd_corrections(led: Ledger, a: argparse.Namespace) -> None:
    rows = [(c.record_id, mask_card_no(c.card_no), c.why, c.status, litres(c.released_volume_ml),
             reports.rub(c.released_amount_kop)) for c in led.corrections()]
    _print_table(["record", "card", "why", "status", "released L", "released RUB"], rows)


def cmd_serve(led: Ledger, a: argparse.Namespace) -> None:
    try:
        cfg = web_serve.config_from_args(a.db, a)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"serve: {exc}") from None
    web_serve.run(cfg, a.host, a.port, tls_cert=a.tls_cert, tls_key=a.tls_key)


def cmd_link_code(led: Ledger, a: argparse.Namespace) -> None:
    from . import fleet_users
    code = fleet_users.issue_link_code(led, a.contract, ttl_s=a.days * 86_400)
    print(f"contract {a.contract}: link code {code} (valid {a.days} days, {fleet_users.codes.TRIES} tries; "
          "an older code of the contract no longer works)")


def cmd_register_club_member(led: Ledger, a: argparse.Namespace) -> None:
    from . import club_members
    club_members.register_member(led, a.person, phone=a.phone, birth_date=_date(a.birth_date))
    print(f"club member {a.person}: phone ...{a.phone[-4:]} and birth date registered "
          "(the club cabinet's codes go to that phone)")


def cmd_block_fleet_user(led: Ledger, a: argparse.Namespace) -> None:
    from . import fleet_users
    uid = fleet_users.user_id_of_login(led, a.login)
    fleet_users.block_user(led, uid)
    print(f"fleet user {a.login.strip().lower()} (id {uid}) blocked: its sessions ended, its API tokens refused")


def litres(ml: int) -> str:
    return reports.litres(ml)


def cmd_report(led: Ledger, a: argparse.Namespace) -> None:
    rep: reports.Statement | list[reports.TxnLine]
    if a.report == "transactions":
        rep = reports.transactions(led, a.contract, _date(a.date_from), _date(a.date_to))
    else:
        m = re.fullmatch(r"(\d{4})-(\d{2})", a.month)
        if not m or not 1 <= int(m.group(2)) <= 12:
            raise InvalidInput(f"a month is YYYY-MM, got {a.month!r}")
        rep = reports.statement(led, a.contract, int(m.group(1)), int(m.group(2)))
    if a.csv == "-":
        sys.stdout.write(reports.to_csv(rep))
    else:
        sys.stdout.write(reports.to_table(rep))
        if a.csv:
            Path(a.csv).write_text(reports.to_csv(rep), encoding="utf-8")
            print(f"written {a.csv}")


class CardWriter(Protocol):
    """Writes the card data of a fuel card from its ledger record (a virtual card's state
    file, a card bureau's job). The host knows no card hardware: the ``edgepos`` command
    supplies one (``terminal.issuing``), which adds its options to ``issue-card`` and
    enables ``personalise-card``."""

    def add_arguments(self, parser: argparse.ArgumentParser, *, required: bool) -> None:
        """Add the writer's options (where to write, the PIN's source, the issuer key)."""

    def prepare(self, card: FuelCard, args: argparse.Namespace) -> Callable[[FuelCard], str] | None:
        """Check every input for writing ``card`` (the PIN, the key, the output path) before
        the ledger changes; None when the writer's options were not given. Raise ValueError
        or HostError to refuse. The function returned writes the card of the issued record
        and returns one line to print (no PIN, key or full card number)."""


def register_offline_exposure(cmd: Callable[..., argparse.ArgumentParser]) -> None:
    """``set-offline-exposure CONTRACT AMOUNT`` and ``offline-exposure CONTRACT``: how much of a
    contract's money its sites may spend while they cannot reach the host, and the allowances
    each site holds out of it (:mod:`host.watermarks`; docs/host.md)."""
    from .watermarks import offline_exposure, set_offline_exposure

    def set_it(led: Ledger, a: argparse.Namespace) -> None:
        amount = None if a.amount == "default" else parse_rub(a.amount)
        set_offline_exposure(led, a.contract, amount, priority_weight=a.priority_weight)
        show(led, a)

    def show(led: Ledger, a: argparse.Namespace) -> None:
        e = offline_exposure(led, a.contract)
        if e.exposure_kop is None:
            print(f"contract {e.contract_id}: offline exposure: the host worker's default "
                  "(--default-offline-exposure-rub; none: its sites are not capped)")
            return
        print(f"contract {e.contract_id}: offline exposure {reports.rub(e.exposure_kop)} RUB")
        _print_table(["site", "allowance (RUB)"], [("every other site" if x.site_id == "*" else x.site_id,
                                                    reports.rub(x.amount_kop)) for x in e.allowances])

    sp = cmd("set-offline-exposure", set_it, "set how much a contract may lose to its sites' offline spend, "
             "shared out now as the sites' allowances ('default': the host worker's default)")
    sp.add_argument("contract", type=int, help="the contract number")
    sp.add_argument("amount", help="the exposure in rubles (15000.50), or 'default'")
    sp.add_argument("--priority-weight", type=int, default=3,
                    help="shares of a site where the contract's cards already buy, against 1 of any "
                         "other site (default %(default)s)")
    sp = cmd("offline-exposure", show, "a contract's offline exposure and each site's allowance out of it")
    sp.add_argument("contract", type=int, help="the contract number")


def build_parser(prog: str = "python -m host.admin", card_writer: CardWriter | None = None) -> argparse.ArgumentParser:
    """The admin command line's parser; ``prog`` is how it was called (``edgepos host``);
    ``card_writer`` adds card personalisation to ``issue-card`` and ``personalise-card``."""
    p = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="edgepos central host: administration of the ledger and its master data. "
                    "Amounts in rubles (1500.50), volumes in litres (40.5).",
        epilog=f"Run '{prog} COMMAND --help' for a command's options. The host's MQTT workers run "
               "as 'python -m host.worker'.\n\n"
               + exit_codes_epilog(ExitCode.OK, ExitCode.REFUSED, ExitCode.USAGE, ExitCode.LEDGER_UNREACHABLE,
                                   ExitCode.LEDGER_SCHEMA))
    p.add_argument("--db", default=os.environ.get("EDGEPOS_HOST_DB", DEFAULT_DB),
                   help="ledger URL: sqlite:///file or postgresql://user@host/db (a schema other than public: "
                        "?options=-csearch_path%%3Dname); default $EDGEPOS_HOST_DB or %(default)s")
    p.set_defaults(card_writer=card_writer)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, fn, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        return sp

    alerts.register(cmd)  # edgepos host alerts (host/alerts.py)
    register_offline_exposure(cmd)
    cmd("init", cmd_init, "create or migrate the ledger's schema")
    cmd("sites", cmd_sites, "list sites with their acknowledged watermark, traffic and presence")
    sp = cmd("add-site", cmd_add_site, "register a site (and write a new key for it)")
    sp.add_argument("site", help="the site id, as in its configuration's site.id")
    sp.add_argument("--keys-dir", help="write the site's key to KEYS_DIR/sites/<site>.key")
    for name, status in (("disable-site", "disabled"), ("enable-site", "active")):
        sp = cmd(name, cmd_site_status, f"set a site {status} (a disabled site's batches are refused)")
        sp.add_argument("site", help="the site id")
        sp.set_defaults(status=status)
    sp = cmd("seed-sample", cmd_seed_sample, "load the generated sample network (authz.sample) as master data")
    sp.add_argument("--fuel-cards", type=int, default=1_000, help="fuel cards to generate (default %(default)s)")
    sp.add_argument("--club-accounts", type=int, default=500, help="club accounts to generate (default %(default)s)")
    sp.add_argument("--seed", type=int, default=1, help="random seed (default %(default)s)")
    sp = cmd("create-contract", cmd_create_contract, "open a fuel-card contract")
    sp.add_argument("contract", type=int, help="the contract number")
    sp.add_argument("--tz", default="Europe/Moscow", help="the contract's time zone, for day and month "
                    "limits (default %(default)s)")
    sp.add_argument("--region", type=int, default=0, help="price region (default %(default)s)")
    sp.add_argument("--tariff", default="regional", help=", ".join(t.name.lower() for t in Tariff)
                    + " (default %(default)s)")
    sp.add_argument("--balance-rub", default="0", help="opening balance in rubles (default 0)")
    sp.add_argument("--credit-rub", default="0", help="credit line in rubles (default 0)")
    sp.add_argument("--name", default="", help="the customer's name")
    sp = cmd("issue-card", cmd_issue_card, "issue a fuel card on a contract")
    sp.add_argument("card", help="the card number")
    sp.add_argument("--contract", type=int, required=True, help="the contract number")
    sp.add_argument("--expires", required=True, help="last valid day, YYYY-MM-DD")
    sp.add_argument("--groups", default="fuel", help="product groups, comma separated (fuel,car_wash,hotel,service,shop)")
    sp.add_argument("--limit", action="append", metavar="ID:PERIOD:AMOUNT[:SCOPE][:alert]",
                    help="a limit, repeatable: 1:day:200L, 2:month:50000.50RUB:group:shop, 3:lifetime:500L:product:AI98, "
                         "4:quarter:30purchases:alert (periods: transaction, day, week, month, quarter, year, "
                         "lifetime; a count of purchases needs a period; :alert approves past the limit and "
                         "raises an alert)")
    _add_control_options(sp)
    if card_writer is not None:
        card_writer.add_arguments(sp, required=False)
        sp = cmd("personalise-card", cmd_personalise_card, "write an issued fuel card's card data from its ledger record")
        sp.add_argument("card", help="the card number")
        card_writer.add_arguments(sp, required=True)
    sp = cmd("change-card", cmd_change_card, "change a fuel card's expiry or product groups")
    sp.add_argument("card", help="the card number")
    sp.add_argument("--expires", help="last valid day, YYYY-MM-DD")
    sp.add_argument("--groups", help="product groups, comma separated")
    sp = cmd("show-card", cmd_show_card, "a fuel or club card: contract or account, status, limits, controls "
             "(products, time windows, stations, on breach), stop list")
    sp.add_argument("card", help="the card number")
    sp = cmd("show-contract", cmd_show_contract, "a contract: tariff, time zone, balance, credit line, cards")
    sp.add_argument("contract", type=int, help="the contract number")
    sp = cmd("change-contract", cmd_change_contract, "change a contract's name, time zone, home region, credit line "
             "or chosen stations")
    sp.add_argument("contract", type=int, help="the contract number")
    sp.add_argument("--name", help="the customer's name")
    sp.add_argument("--tz", help="the time zone its day and month limits roll over in (Asia/Omsk)")
    sp.add_argument("--region", type=int, help="the home region (Regional tariffs)")
    sp.add_argument("--credit-rub", help="the credit line in rubles")
    sp.add_argument("--chosen", help="chosen stations (Regional+), at most 3: 1001,1002,1003, or none")
    sp = cmd("set-credit-line", cmd_set_credit_line, "set how far below zero a contract's balance may go")
    sp.add_argument("contract", type=int, help="the contract number")
    sp.add_argument("--rub", required=True, help="the credit line in rubles (0: prepaid only)")
    cmd("products", cmd_products, "list the products")
    sp = cmd("put-product", cmd_put_product, "add a product or change its name or group")
    sp.add_argument("code", help="the product code (AI95)")
    sp.add_argument("--name", required=True, help="its name (AI-95)")
    sp.add_argument("--group", required=True, help="fuel, car_wash, hotel, service or shop")
    cmd("stations", cmd_stations, "list the stations with their regions and prices")
    sp = cmd("put-station", cmd_put_station, "add a station or change its region, product groups or largest fill")
    sp.add_argument("station", type=int, help="the station id")
    sp.add_argument("--region", type=int, help="its region (needed for a new station)")
    sp.add_argument("--groups", help="the product groups it sells, comma separated (needed for a new station)")
    sp.add_argument("--max-fill-litres", help="the largest fill without a preset (default 1000 for a new station)")
    sp = cmd("set-price", cmd_set_price, "set a station's list price of a product")
    sp.add_argument("station", type=int, help="the station id")
    sp.add_argument("product", help="the product code")
    sp.add_argument("--rub", help="the price in rubles per litre (per unit for goods and services)")
    sp.add_argument("--remove", action="store_true", help="stop selling the product at the station")
    cmd("tariffs", cmd_tariffs, "list the tariffs' discount tables")
    sp = cmd("set-discount", cmd_set_discount, "set one row of a tariff's discount table")
    sp.add_argument("tariff", help=", ".join(t.name.lower() for t in Tariff))
    sp.add_argument("product", help="the product code")
    sp.add_argument("--where", required=True, help="home_region, chosen_stations or network")
    sp.add_argument("--rub", help="the discount in rubles per litre (or --percent)")
    sp.add_argument("--percent", help="the discount in percent of the list price (or --rub)")
    sp = cmd("remove-discount", cmd_remove_discount, "remove one row of a tariff's discount table")
    sp.add_argument("tariff", help="the tariff")
    sp.add_argument("product", help="the product code")
    sp.add_argument("--where", required=True, help="home_region, chosen_stations or network")
    cmd("club-rules", cmd_club_rules, "print the club programme's rules as JSON (the set-club-rules format)")
    sp = cmd("set-club-rules", cmd_set_club_rules, "replace the club programme's rules from a JSON file")
    sp.add_argument("file", help="the rules, as club-rules prints them")
    sp = cmd("create-club-account", cmd_create_club_account, "open an empty club account for a person")
    sp.add_argument("--person", required=True, help="the member's person id")
    sp.add_argument("--kind", default="unidentified", help="identified or unidentified")
    sp.add_argument("--not-activated", action="store_true", help="payment functions off until activated")
    sp = cmd("create-keys", cmd_create_keys, "make the host's replica signing key pair (if none) and new site keys")
    sp.add_argument("sites", nargs="*", metavar="SITE", help="registered sites to make a key for (never replaced)")
    sp.add_argument("--keys-dir", required=True, help="the host's keys directory (replica-signing.key, "
                    "replica-signing.pub, sites/<site>.key)")
    sp = cmd("set-limit", cmd_set_limit, "set a ruble, litre or purchase-count limit of a fuel card")
    sp.add_argument("card", help="the card number")
    sp.add_argument("--limit-id", type=int, required=True, help="the limit's number on the card (a new one, "
                    "or the one to change)")
    sp.add_argument("--rub", help="the limit in rubles (or --litres, or --unit and --amount)")
    sp.add_argument("--litres", help="the limit in litres (or --rub, or --unit and --amount)")
    sp.add_argument("--unit", help="rub, litres or purchases (a count of purchases: each delivery of more than "
                    "nothing counts one), with --amount")
    sp.add_argument("--amount", help="the limit in --unit (1500.50 rubles, 40.5 litres, 30 purchases)")
    sp.add_argument("--period", required=True, help="transaction, day, week, month, quarter, year or lifetime "
                    "(calendar ones, in the contract's time zone; a count of purchases needs one other than "
                    "transaction)")
    sp.add_argument("--scope", default="all", help="all, group:<group> or product:<code>")
    sp.add_argument("--on-breach", metavar="ACTION", help="decline (the default: the limit bounds the purchase) "
                    "or alert (approve past it and raise an alert at the host)")
    sp = cmd("set-controls", cmd_set_controls, "set a fuel card's allowed products, time windows, stations and "
             "what a purchase outside them does; options not given stay as they are")
    sp.formatter_class = argparse.RawDescriptionHelpFormatter
    sp.epilog = ("examples:\n"
                 f"  {prog} set-controls 7005830000000001 --products DT --stations home-region\n"
                 f"  {prog} set-controls 7005830000000001 --window mon-fri,07:00-19:00 --window sat,22:00-06:00\n"
                 f"  {prog} set-controls 7005830000000001 --stations 1000,1001 --on-breach alert\n"
                 f"  {prog} set-controls 7005830000000001 --all-products --any-time --stations network\n\n"
                 "The rules are checked together against the network's products and stations (an empty or "
                 "unknown product,\na window of zero length, an unknown station is refused, naming it, and "
                 "nothing changes). A change\nreaches the sites as a fuel_cards delta.")
    sp.add_argument("card", help="the card number")
    _add_control_options(sp)
    sp = cmd("remove-limit", cmd_remove_limit, "remove a limit of a fuel card")
    sp.add_argument("card", help="the card number")
    sp.add_argument("--limit-id", type=int, required=True, help="the limit's number on the card")
    sp = cmd("block", cmd_block, "block a fuel or club card (stop list, published at once)")
    sp.add_argument("card", help="the card number")
    sp.add_argument("--reason", default="", help="why (kept with the block)")
    sp = cmd("unblock", cmd_unblock, "unblock a card (off the stop list)")
    sp.add_argument("card", help="the card number")
    sp = cmd("set-tariff", cmd_set_tariff, "change a contract's tariff")
    sp.add_argument("contract", type=int, help="the contract number")
    sp.add_argument("tariff", help=", ".join(t.name.lower() for t in Tariff))
    sp = cmd("top-up", cmd_top_up, "credit a contract's balance (a payment received)")
    sp.add_argument("contract", type=int, help="the contract number")
    sp.add_argument("--rub", required=True, help="the amount in rubles")
    sp.add_argument("--note", default="", help="a note kept with the payment (its reference)")
    sp = cmd("issue-club-card", cmd_issue_club_card, "issue a club card (at most 3 active cards per person)")
    sp.add_argument("card", help="the club card number")
    sp.add_argument("--person", required=True, help="the member's person id")
    sp.add_argument("--kind", default="unidentified", help="identified or unidentified")
    sp.add_argument("--not-activated", action="store_true", help="issue it not yet activated")
    sp.add_argument("--account", type=int, help="add the card to this account of the same person")
    sp = cmd("replace-club-card", cmd_replace_club_card, "block a lost club card and issue a new one, balance carried over")
    sp.add_argument("old", help="the lost card's number")
    sp.add_argument("new", help="the new card's number")
    sp.add_argument("--reason", default="lost", help="why (default %(default)s)")
    sp = cmd("clone-alerts", cmd_clone_alerts, "cards whose transaction counters say they were copied")
    sp.add_argument("--all", action="store_true", help="closed alerts too")
    sp = cmd("issues", cmd_issues, "records the ledger stored but could not fully apply, and limits broken offline")
    sp.add_argument("--last", type=int, default=50, help="how many, newest last (default %(default)s)")
    cmd("corrections", cmd_corrections, "fuel cards that may still hold a reservation")
    sp = cmd("serve", cmd_serve, "run the fleet manager's cabinet, the fleet API and the club cabinet (HTTP)")
    web_serve.add_arguments(sp)
    sp = cmd("link-code", cmd_link_code, "issue the code a fleet manager links a contract to their cabinet with")
    sp.add_argument("contract", type=int, help="the contract number")
    sp.add_argument("--days", type=int, default=14, choices=range(1, 91), metavar="DAYS",
                    help="how long the code is valid, 1..90 days (default %(default)s)")
    sp = cmd("register-club-member", cmd_register_club_member,
             "register (or change) a club member's phone and birth date for the club cabinet")
    sp.add_argument("person", help="the member's person id (of a club account)")
    sp.add_argument("--phone", required=True, help="10 to 15 digits, the country code first (79001234567)")
    sp.add_argument("--birth-date", required=True, help="YYYY-MM-DD")
    sp = cmd("block-fleet-user", cmd_block_fleet_user,
             "block a fleet manager's cabinet account: its sessions end, its API tokens stop working")
    sp.add_argument("login", help="the manager's login")
    rp = cmd("report", cmd_report, "reports per contract")
    rsub = rp.add_subparsers(dest="report", required=True, metavar="REPORT")
    t = rsub.add_parser("transactions", help="transaction detail of a contract over a period")
    t.add_argument("--contract", type=int, required=True, help="the contract number")
    t.add_argument("--from", dest="date_from", required=True, help="first day, YYYY-MM-DD")
    t.add_argument("--to", dest="date_to", required=True, help="last day, YYYY-MM-DD")
    t.add_argument("--csv", help="also write CSV to this file ('-': CSV to stdout instead of the table)")
    s = rsub.add_parser("statement", help="monthly statement of a contract")
    s.add_argument("--contract", type=int, required=True, help="the contract number")
    s.add_argument("--month", required=True, help="YYYY-MM")
    s.add_argument("--csv", help="also write CSV to this file ('-': CSV to stdout instead of the table)")
    from .documents.cli import add_commands as add_document_commands
    add_document_commands(cmd)
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m host.admin",
         card_writer: CardWriter | None = None) -> int:
    """Run one admin command; returns its :class:`ExitCode`. ``prog`` names the command in
    usage and help (``edgepos host`` when called through the ``edgepos`` command, which
    also gives the ``card_writer``)."""
    args = build_parser(prog, card_writer).parse_args(argv)
    try:
        led = open_ledger(args.db)
    except LedgerOpenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    try:
        args.fn(led, args)
    except HostError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.REFUSED
    except ValueError as exc:  # authz ModelError and friends: a bad value
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.REFUSED
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    finally:
        led.close()
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
