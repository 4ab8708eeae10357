"""Checks and parsers of what operators type: card numbers, amounts, volumes, dates.

The master-data functions (:mod:`host.master`) check every value with these before they
touch the ledger, so the admin command line, the cabinets and the fleet API refuse the same
inputs with the same one-line message (:class:`~host.errors.InvalidInput`). Card numbers in
messages are masked.

Formats (DOMAIN.md, ``authz.sample``):

- a **fuel card** number is 16 ASCII digits (``700583`` issuer prefix + a 10-digit serial in
  the generated network). The scheme has no check digit (``authz.sample.card_number``
  appends none), so none is checked; the issuer prefix is not forced either (a migrated
  network may bring others).
- a **club card** number is the 13-digit EAN-13 barcode: 12 digits and a valid check digit.
"""

from __future__ import annotations

import re
from datetime import date

from authz.fuel_model import mask_card_no
from authz.money import BP_WHOLE, MAX_AMOUNT_KOP, MAX_PRICE_KOP_PER_L, MAX_VOLUME_ML

from .errors import InvalidInput

__all__ = [
    "CLUB_CARD_DIGITS",
    "FUEL_CARD_DIGITS",
    "check_expiry",
    "club_card_no",
    "ean13_check_digit",
    "fuel_card_no",
    "parse_date",
    "parse_litres",
    "parse_percent",
    "parse_price",
    "parse_rub",
]

FUEL_CARD_DIGITS = 16
CLUB_CARD_DIGITS = 13
_ASCII_DIGITS = re.compile(r"[0-9]+")
#: What may surround a typed value (ASCII blanks only: str.strip() would take any Unicode space).
_BLANKS = " \t\n\r"
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_RUB = re.compile(r"([0-9]{1,13})(?:[.,]([0-9]{1,2}))?")
_LITRES = re.compile(r"([0-9]{1,9})(?:[.,]([0-9]{1,3}))?")
#: The furthest an expiry may lie ahead (a plastic card lives a few years).
MAX_EXPIRY_YEARS = 20


def _digits(value: object, n: int, what: str) -> str:
    if not isinstance(value, str) or len(value) != n or not _ASCII_DIGITS.fullmatch(value):
        text = str(value)
        # masked like every card number; a long or odd value is only counted, not echoed
        shown = repr(mask_card_no(text)) if len(text) <= 40 and text.isascii() and text.isprintable() else "a value"
        raise InvalidInput(f"a {what} number is {n} digits 0-9, got {shown} of {len(text)} characters")
    return value


def ean13_check_digit(first12: str) -> str:
    """The EAN-13 check digit of 12 ASCII digits (weights 1, 3, 1, 3, ... from the left)."""
    s = sum(int(c) * (3 if k % 2 else 1) for k, c in enumerate(first12))
    return str((10 - s % 10) % 10)


def fuel_card_no(value: object) -> str:
    """``value`` if it is a fuel card number (16 ASCII digits); else InvalidInput."""
    return _digits(value, FUEL_CARD_DIGITS, "fuel card")


def club_card_no(value: object) -> str:
    """``value`` if it is a club card barcode (13 ASCII digits, valid EAN-13 check digit)."""
    no = _digits(value, CLUB_CARD_DIGITS, "club card")
    if ean13_check_digit(no[:12]) != no[12]:
        raise InvalidInput(f"club card {mask_card_no(no)}: the EAN-13 check digit is wrong (the barcode was "
                           "misread or mistyped)")
    return no


def parse_rub(text: str, *, max_kop: int = MAX_AMOUNT_KOP) -> int:
    """``"1500.5"`` -> 150050 kopecks; exact, at most 2 decimals, no sign, at most ``max_kop``."""
    m = _RUB.fullmatch(text.strip(_BLANKS)) if isinstance(text, str) else None
    if not m:
        raise InvalidInput(f"an amount in rubles looks like 1500 or 1500.50, got {str(text)[:40]!r}")
    kop = int(m.group(1)) * 100 + int((m.group(2) or "0").ljust(2, "0"))
    if kop > max_kop:
        raise InvalidInput(f"{text.strip(_BLANKS)} RUB is over the most allowed, {max_kop // 100} RUB")
    return kop


def parse_litres(text: str, *, max_ml: int = MAX_VOLUME_ML) -> int:
    """``"40.5"`` -> 40500 millilitres; exact, at most 3 decimals, no sign, at most ``max_ml``."""
    m = _LITRES.fullmatch(text.strip(_BLANKS)) if isinstance(text, str) else None
    if not m:
        raise InvalidInput(f"a volume in litres looks like 40 or 40.5, got {str(text)[:40]!r}")
    ml = int(m.group(1)) * 1000 + int((m.group(2) or "0").ljust(3, "0"))
    if ml > max_ml:
        raise InvalidInput(f"{text.strip(_BLANKS)} L is over the most allowed, {max_ml // 1000} L")
    return ml


def parse_price(text: str) -> int:
    """A price in rubles per litre (``"61.50"``) -> kopecks per litre, at most the model's top."""
    return parse_rub(text, max_kop=MAX_PRICE_KOP_PER_L)


def parse_percent(text: str) -> int:
    """``"2.5"`` (percent) -> 250 basis points; at most 2 decimals, 0 to 100."""
    m = _RUB.fullmatch(text.strip(_BLANKS)) if isinstance(text, str) else None
    bp = None if not m else int(m.group(1)) * 100 + int((m.group(2) or "0").ljust(2, "0"))
    if bp is None or bp > BP_WHOLE:
        raise InvalidInput(f"a percentage is 0 to 100 with at most 2 decimals (2.5), got {str(text)[:40]!r}")
    return bp


def parse_date(text: str) -> date:
    """``"2028-12-31"`` -> a date. Only ``YYYY-MM-DD`` with ASCII digits (Python's
    ``date.fromisoformat`` also takes ``20281231`` and week dates: not here)."""
    m = _DATE.fullmatch(text.strip(_BLANKS)) if isinstance(text, str) else None
    if m:
        try:
            return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            pass
    raise InvalidInput(f"a date is YYYY-MM-DD, got {str(text)[:40]!r}")


def check_expiry(expires_on: object, today: date) -> date:
    """``expires_on`` (the card's last valid day) if it is a date from ``today`` up to
    :data:`MAX_EXPIRY_YEARS` ahead; else InvalidInput."""
    if not isinstance(expires_on, date):
        raise InvalidInput(f"an expiry must be a date, got {expires_on!r}")
    if expires_on < today:
        raise InvalidInput(f"expiry {expires_on.isoformat()} is in the past (today is {today.isoformat()})")
    if expires_on.year > today.year + MAX_EXPIRY_YEARS:
        raise InvalidInput(f"expiry {expires_on.isoformat()} is more than {MAX_EXPIRY_YEARS} years ahead")
    return expires_on
