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
from collections.abc import Sequence
from datetime import date
from enum import IntEnum
from pathlib import Path

from authz.club_model import ClubCardKind
from authz.fuel_model import (
    Contract,
    FuelCard,
    Limit,
    LimitUnit,
    Period,
    ProductGroup,
    Scope,
    Tariff,
    mask_card_no,
)

from . import master, reports
from .errors import HostError, InvalidInput, LedgerUnavailable, SchemaError
from .ledger import Ledger

__all__ = ["DEFAULT_DB", "EXIT_MEANINGS", "ExitCode", "LedgerOpenError", "build_parser", "exit_codes_epilog",
           "main", "open_ledger", "parse_litres", "parse_rub"]

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


def parse_rub(text: str) -> int:
    """``"1500.5"`` -> 150050 kopecks; exact, at most 2 decimals, no sign."""
    m = re.fullmatch(r"(\d{1,13})(?:[.,](\d{1,2}))?", text.strip())
    if not m:
        raise InvalidInput(f"an amount in rubles looks like 1500 or 1500.50, got {text!r}")
    return int(m.group(1)) * 100 + int((m.group(2) or "0").ljust(2, "0"))


def parse_litres(text: str) -> int:
    """``"40.5"`` -> 40500 millilitres; exact, at most 3 decimals."""
    m = re.fullmatch(r"(\d{1,9})(?:[.,](\d{1,3}))?", text.strip())
    if not m:
        raise InvalidInput(f"a volume in litres looks like 40 or 40.5, got {text!r}")
    return int(m.group(1)) * 1000 + int((m.group(2) or "0").ljust(3, "0"))


def _enum(cls, text: str, what: str):
    try:
        return cls[text.strip().upper().replace("-", "_")]
    except KeyError:
        raise InvalidInput(f"unknown {what} {text!r}; one of: {', '.join(m.name.lower() for m in cls)}") from None


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"a date is YYYY-MM-DD, got {text!r}") from None


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
    master.add_site(led, a.site)
    if a.keys_dir:
        from wire import WireKeyError, new_key, write_key
        d = Path(a.keys_dir)
        (d / "sites").mkdir(parents=True, exist_ok=True)
        try:
            write_key(d / "sites" / f"{a.site}.key", new_key())
        except WireKeyError as exc:
            raise InvalidInput(str(exc)) from None
        print(f"site {a.site} added; its key is {d / 'sites' / (a.site + '.key')} (install it on the site)")
    else:
        print(f"site {a.site} added")


def cmd_site_status(led: Ledger, a: argparse.Namespace) -> None:
    master.set_site_status(led, a.site, a.status)
    print(f"site {a.site} {a.status}")


def cmd_seed_sample(led: Ledger, a: argparse.Namespace) -> None:
    from authz import sample
    master.import_fuel_model(led, sample.fuel_model(n_cards=a.fuel_cards, seed=a.seed))
    master.import_club_model(led, sample.club_model(n_accounts=a.club_accounts, seed=a.seed + 1))
    print(f"loaded the sample network: {a.fuel_cards} fuel cards, {a.club_accounts} club accounts (seed {a.seed})")


def cmd_create_contract(led: Ledger, a: argparse.Namespace) -> None:
    c = Contract(a.contract, a.tz, a.region, _enum(Tariff, a.tariff, "tariff"), parse_rub(a.balance_rub),
                 parse_rub(a.credit_rub))
    master.create_contract(led, c, name=a.name)
    print(f"contract {c.contract_id} opened, balance {reports.rub(c.balance_kop)} RUB")


def cmd_issue_card(led: Ledger, a: argparse.Namespace) -> None:
    master.issue_fuel_card(led, FuelCard(a.card, a.contract, _date(a.expires), _groups(a.groups)))
    print(f"card {mask_card_no(a.card)} issued on contract {a.contract}")


def cmd_set_limit(led: Ledger, a: argparse.Namespace) -> None:
    if (a.rub is None) == (a.litres is None):
        raise InvalidInput("give the limit in rubles (--rub) or in litres (--litres), one of them")
    unit, amount = (LimitUnit.KOPECKS, parse_rub(a.rub)) if a.rub is not None else \
        (LimitUnit.MILLILITRES, parse_litres(a.litres))
    scope, group, product = _scope(a.scope)
    master.set_limit(led, a.card, Limit(a.limit_id, unit, _enum(Period, a.period, "period"), amount, scope, group, product))
    shown = f"{a.rub} RUB" if a.rub is not None else f"{a.litres} L"
    print(f"card {mask_card_no(a.card)}: limit {a.limit_id} = {shown} per {a.period} ({a.scope})")


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


def build_parser(prog: str = "python -m host.admin") -> argparse.ArgumentParser:
    """The admin command line's parser; ``prog`` is how it was called (``edgepos host``)."""
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
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, fn, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        return sp

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
    sp = cmd("set-limit", cmd_set_limit, "set a ruble or litre limit of a fuel card")
    sp.add_argument("card", help="the card number")
    sp.add_argument("--limit-id", type=int, required=True, help="the limit's number on the card (a new one, "
                    "or the one to change)")
    sp.add_argument("--rub", help="the limit in rubles (or --litres)")
    sp.add_argument("--litres", help="the limit in litres (or --rub)")
    sp.add_argument("--period", required=True, help="transaction, day, week, month or lifetime")
    sp.add_argument("--scope", default="all", help="all, group:<group> or product:<code>")
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
    return p


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m host.admin") -> int:
    """Run one admin command; returns its :class:`ExitCode`. ``prog`` names the command in
    usage and help (``edgepos host`` when called through the ``edgepos`` command)."""
    args = build_parser(prog).parse_args(argv)
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
