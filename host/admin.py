"""The host's admin command line: ``python -m host.admin [--db URL] COMMAND ...``.

The ledger is ``--db`` (or ``$EDGEPOS_HOST_DB``; default ``sqlite:///edgepos-host.sqlite``).
Amounts are typed in rubles (``--rub 1500.50``) and litres (``--litres 40.5``) and stored as
kopecks and millilitres exactly. Exit codes: 0 done; 1 refused (unknown card, a fourth
club card, bad value: the message says why, nothing changed); 2 bad command line; 3 the
ledger cannot be opened. A change to a replica table is a replica delta in the same
transaction: the running workers publish it within a second (a block reaches the sites
within seconds).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from authz.club_model import ClubCardKind
from authz.fuel_model import (Contract, FuelCard, Limit, LimitUnit, Period, ProductGroup, Scope, Tariff,
                              mask_card_no)

from . import master, reports
from .errors import HostError, InvalidInput, LedgerUnavailable, SchemaError
from .ledger import Ledger

__all__ = ["main", "build_parser", "parse_rub", "parse_litres", "DEFAULT_DB"]

DEFAULT_DB = "sqlite:///edgepos-host.sqlite"
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m host.admin", description="edgepos central host: administration")
    p.add_argument("--db", default=os.environ.get("EDGEPOS_HOST_DB", DEFAULT_DB),
                   help="ledger URL: sqlite:///file or postgresql://... (default $EDGEPOS_HOST_DB or %(default)s)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, fn, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        return sp

    cmd("init", cmd_init, "create or migrate the ledger's schema")
    cmd("sites", cmd_sites, "list sites with their acknowledged watermark, traffic and presence")
    sp = cmd("add-site", cmd_add_site, "register a site (and write a new key for it)")
    sp.add_argument("site")
    sp.add_argument("--keys-dir", help="write the site's key to KEYS_DIR/sites/<site>.key")
    for name, status in (("disable-site", "disabled"), ("enable-site", "active")):
        sp = cmd(name, cmd_site_status, f"set a site {status} (a disabled site's batches are refused)")
        sp.add_argument("site")
        sp.set_defaults(status=status)
    sp = cmd("seed-sample", cmd_seed_sample, "load the generated sample network (authz.sample) as master data")
    sp.add_argument("--fuel-cards", type=int, default=1_000)
    sp.add_argument("--club-accounts", type=int, default=500)
    sp.add_argument("--seed", type=int, default=1)
    sp = cmd("create-contract", cmd_create_contract, "open a fuel-card contract")
    sp.add_argument("contract", type=int)
    sp.add_argument("--tz", default="Europe/Moscow")
    sp.add_argument("--region", type=int, default=0)
    sp.add_argument("--tariff", default="regional")
    sp.add_argument("--balance-rub", default="0")
    sp.add_argument("--credit-rub", default="0")
    sp.add_argument("--name", default="")
    sp = cmd("issue-card", cmd_issue_card, "issue a fuel card on a contract")
    sp.add_argument("card")
    sp.add_argument("--contract", type=int, required=True)
    sp.add_argument("--expires", required=True, help="last valid day, YYYY-MM-DD")
    sp.add_argument("--groups", default="fuel", help="product groups, comma separated (fuel,car_wash,hotel,service,shop)")
    sp = cmd("set-limit", cmd_set_limit, "set a ruble or litre limit of a fuel card")
    sp.add_argument("card")
    sp.add_argument("--limit-id", type=int, required=True)
    sp.add_argument("--rub")
    sp.add_argument("--litres")
    sp.add_argument("--period", required=True, help="transaction, day, week, month or lifetime")
    sp.add_argument("--scope", default="all", help="all, group:<group> or product:<code>")
    sp = cmd("remove-limit", cmd_remove_limit, "remove a limit of a fuel card")
    sp.add_argument("card")
    sp.add_argument("--limit-id", type=int, required=True)
    sp = cmd("block", cmd_block, "block a fuel or club card (stop list, published at once)")
    sp.add_argument("card")
    sp.add_argument("--reason", default="")
    sp = cmd("unblock", cmd_unblock, "unblock a card (off the stop list)")
    sp.add_argument("card")
    sp = cmd("set-tariff", cmd_set_tariff, "change a contract's tariff")
    sp.add_argument("contract", type=int)
    sp.add_argument("tariff", help=", ".join(t.name.lower() for t in Tariff))
    sp = cmd("top-up", cmd_top_up, "credit a contract's balance (a payment received)")
    sp.add_argument("contract", type=int)
    sp.add_argument("--rub", required=True)
    sp.add_argument("--note", default="")
    sp = cmd("issue-club-card", cmd_issue_club_card, "issue a club card (at most 3 active cards per person)")
    sp.add_argument("card")
    sp.add_argument("--person", required=True)
    sp.add_argument("--kind", default="unidentified", help="identified or unidentified")
    sp.add_argument("--not-activated", action="store_true")
    sp.add_argument("--account", type=int, help="add the card to this account of the same person")
    sp = cmd("replace-club-card", cmd_replace_club_card, "block a lost club card and issue a new one, balance carried over")
    sp.add_argument("old")
    sp.add_argument("new")
    sp.add_argument("--reason", default="lost")
    sp = cmd("clone-alerts", cmd_clone_alerts, "cards whose transaction counters say they were copied")
    sp.add_argument("--all", action="store_true", help="closed alerts too")
    sp = cmd("issues", cmd_issues, "records the ledger stored but could not fully apply, and limits broken offline")
    sp.add_argument("--last", type=int, default=50)
    cmd("corrections", cmd_corrections, "fuel cards that may still hold a reservation")
    rp = cmd("report", cmd_report, "reports per contract")
    rsub = rp.add_subparsers(dest="report", required=True)
    t = rsub.add_parser("transactions", help="transaction detail of a contract over a period")
    t.add_argument("--contract", type=int, required=True)
    t.add_argument("--from", dest="date_from", required=True)
    t.add_argument("--to", dest="date_to", required=True)
    t.add_argument("--csv", help="also write CSV to this file ('-': CSV to stdout instead of the table)")
    s = rsub.add_parser("statement", help="monthly statement of a contract")
    s.add_argument("--contract", type=int, required=True)
    s.add_argument("--month", required=True, help="YYYY-MM")
    s.add_argument("--csv", help="also write CSV to this file ('-': CSV to stdout instead of the table)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        led = Ledger.open(args.db)
    except (LedgerUnavailable, SchemaError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    try:
        args.fn(led, args)
    except HostError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except ValueError as exc:  # authz ModelError and friends: a bad value
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    finally:
        led.close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
