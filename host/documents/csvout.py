"""A document as CSV for Excel as Russian users open it.

UTF-8 with a byte order mark (without it Excel reads UTF-8 as the ANSI code page and the
Cyrillic comes out garbled), ``;`` between fields (the list separator of Russian Windows:
Excel splits a double-clicked .csv on it, while ``,`` is the decimal separator there and
would split every amount), CRLF line ends, RFC 4180 quoting. Amounts have a decimal comma,
so Excel reads them as numbers. Text from the ledger (names, addresses, notes) that starts
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``, so Excel
shows it as text instead of running it as a formula (OWASP's CSV injection advice);
numbers the host wrote are never changed.

Layout: the title; ``key;value`` lines; an empty line; the table's header and rows; an
empty line; the totals as ``key;value`` lines.
"""

from __future__ import annotations

import csv
import io

from .layout import Cell, Layout

__all__ = ["BOM", "escape_text", "to_csv"]

BOM = "\ufeff"
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def escape_text(text: str) -> str:
    """``text`` safe in a spreadsheet cell: a leading ``'`` before a formula's first character."""
    return "'" + text if text.startswith(_FORMULA) else text


def _cell(c: Cell) -> str:
    return c.text if c.number else escape_text(c.text)


def to_csv(doc: Layout) -> bytes:
    """The CSV bytes of a laid-out document (UTF-8 with BOM, ``;``-separated)."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=";", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    w.writerow([escape_text(doc.title)])
    w.writerows([escape_text(k), _cell(v)] for k, v in doc.head)
    w.writerow([])
    w.writerow(doc.table.head)
    w.writerows([_cell(c) for c in row] for row in doc.table.rows)
    w.writerow([])
    w.writerows([escape_text(k), _cell(v)] for k, v in doc.tail)
    return (BOM + buf.getvalue()).encode("utf-8")
