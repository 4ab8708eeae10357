"""The documents' commands of ``edgepos host`` (``python -m host.admin``):

- ``document KIND --contract N (--month YYYY-MM | --from DAY --to DAY [--card NO]) --format csv|pdf --out FILE``
  writes one document (KIND: detail, statement, report, invoice, act) to FILE (``-``: stdout);
- ``set-requisites (--operator | --contract N) --name --inn [--kpp] --address`` sets the
  seller's or a client's requisites;
- ``set-station-address STATION --name --address`` names a station for the detail.

:func:`add_commands` registers them with host.admin's parser; each command is a thin layer
over :mod:`host.documents` and :mod:`host.master`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

from .. import master
from ..checks import parse_date
from ..errors import InvalidInput
from ..ledger import Ledger
from . import monthly, queries
from .model import DetailLine, Document, Month, Requisites
from .render import FORMATS, render

__all__ = ["KINDS", "add_commands"]

KINDS = ("detail", "statement", "report", "invoice", "act")


def _document(led: Ledger, a: argparse.Namespace) -> Document:
    if a.kind == "detail":
        if a.date_from is None or a.date_to is None or a.month is not None:
            raise InvalidInput("the detail is of a period: give --from and --to (not --month)")
        first, last = parse_date(a.date_from), parse_date(a.date_to)
        lines: list[DetailLine] = []
        cursor = None
        while True:  # the whole period, page by page
            page = queries.transaction_detail(led, a.contract, first, last, card_no=a.card, cursor=cursor,
                                              limit=queries.MAX_PAGE)
            lines += page.lines
            cursor = page.next_cursor
            if cursor is None:
                return dataclasses.replace(page, lines=tuple(lines))
    if a.month is None or a.date_from is not None or a.date_to is not None or a.card is not None:
        raise InvalidInput(f"a {a.kind} is of a month: give --month YYYY-MM (not --from, --to or --card)")
    month = Month.parse(a.month)
    if a.kind == "statement":
        return queries.statement(led, a.contract, month)
    if a.kind == "report":
        return monthly.transaction_report(led, a.contract, month)
    if a.kind == "invoice":
        return monthly.invoice(led, a.contract, month)
    return monthly.reconciliation_act(led, a.contract, month)


def cmd_document(led: Ledger, a: argparse.Namespace) -> None:
    data = render(_document(led, a), a.format)
    if a.out == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    Path(a.out).write_bytes(data)
    print(f"written {a.out} ({len(data)} bytes)")


def cmd_set_requisites(led: Ledger, a: argparse.Namespace) -> None:
    req = Requisites(a.name, a.inn, a.kpp, a.address)
    if a.operator == (a.contract is not None):
        raise InvalidInput("give either --operator or --contract N")
    if a.operator:
        master.set_operator_requisites(led, req)
        print(f"operator requisites set: {a.name}, INN {a.inn}")
    else:
        master.set_client_requisites(led, a.contract, req)
        print(f"contract {a.contract}: client requisites set: {a.name}, INN {a.inn}")


def cmd_set_station_address(led: Ledger, a: argparse.Namespace) -> None:
    master.set_station_address(led, a.station, name=a.name, address=a.address)
    print(f"station {a.station}: {a.name}, {a.address}")


def add_commands(cmd: Callable[[str, Callable, str], argparse.ArgumentParser]) -> None:
    """Register the documents' commands through host.admin's ``cmd(name, fn, help)``."""
    sp = cmd("document", cmd_document, "write a contract's document as CSV or PDF: transaction detail, monthly "
             "statement, and for a closed month the transaction report, invoice or reconciliation act")
    sp.add_argument("kind", choices=KINDS, help="detail (of a period), statement, report, invoice or act (of a month)")
    sp.add_argument("--contract", type=int, required=True, help="the contract number")
    sp.add_argument("--month", help="YYYY-MM, in the contract's time zone (statement, report, invoice, act)")
    sp.add_argument("--from", dest="date_from", help="first day, YYYY-MM-DD (detail)")
    sp.add_argument("--to", dest="date_to", help="last day, YYYY-MM-DD (detail)")
    sp.add_argument("--card", help="only this card's purchases (detail)")
    sp.add_argument("--format", choices=FORMATS, required=True, help="csv (UTF-8 with BOM, ';') or pdf")
    sp.add_argument("--out", required=True, help="the file to write ('-': standard output)")
    sp = cmd("set-requisites", cmd_set_requisites, "set the requisites on invoices and acts: the network "
             "operator's (the seller) or a contract's client's (the buyer)")
    sp.add_argument("--operator", action="store_true", help="the network operator's")
    sp.add_argument("--contract", type=int, help="the client of this contract's")
    sp.add_argument("--name", required=True, help="the company's full name")
    sp.add_argument("--inn", required=True, help="INN: 10 digits (an organisation) or 12 (an entrepreneur)")
    sp.add_argument("--kpp", default="", help="KPP, 9 characters (organisations only)")
    sp.add_argument("--address", required=True, help="the legal address")
    sp = cmd("set-station-address", cmd_set_station_address, "give a station the name and address the "
             "transaction detail shows")
    sp.add_argument("station", type=int, help="the station id")
    sp.add_argument("--name", required=True, help="its name (АЗС №17)")
    sp.add_argument("--address", required=True, help="its address")
