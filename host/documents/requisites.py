"""Requisites of the parties to a document: checks and reads.

An INN is 10 digits (an organisation) or 12 (an individual entrepreneur) whose last digit
(two for 12) is a check digit over the others: the weighted sum of the digits modulo 11,
modulo 10 (the Federal Tax Service's rule). A KPP is 9 characters: 4 digits (the tax
office), 2 digits or capital Latin letters (the reason), 3 digits; an organisation has one,
an entrepreneur none. The writes are :func:`host.master.set_operator_requisites` and
:func:`host.master.set_client_requisites`; a document whose party has no requisites yet
carries empty ones and says so (``Requisites.name == ""``), it is not refused.
"""

from __future__ import annotations

import re

from ..db import Database
from ..errors import InvalidInput
from .model import Requisites

__all__ = [
    "MAX_ADDRESS",
    "MAX_NAME",
    "NO_REQUISITES",
    "check_inn",
    "check_kpp",
    "check_requisites",
    "client_requisites",
    "operator_requisites",
]

MAX_NAME = 300
MAX_ADDRESS = 500
NO_REQUISITES = Requisites("", "", "", "")

_W10 = (2, 4, 10, 3, 5, 9, 4, 6, 8)
_W11 = (7, 2, 4, 10, 3, 5, 9, 4, 6, 8)
_W12 = (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)
_KPP = re.compile(r"[0-9]{4}[0-9A-Z]{2}[0-9]{3}")


def _check_digit(digits: str, weights: tuple[int, ...]) -> str:
    return str(sum(int(d) * w for d, w in zip(digits, weights)) % 11 % 10)


def check_inn(inn: object) -> str:
    """``inn`` if it is a valid INN (10 or 12 digits with their check digits), else InvalidInput."""
    if not isinstance(inn, str) or not inn.isascii() or not inn.isdigit() or len(inn) not in (10, 12):
        raise InvalidInput(f"an INN is 10 digits (an organisation) or 12 (an entrepreneur), got {str(inn)[:20]!r}")
    if len(inn) == 10:
        ok = inn[9] == _check_digit(inn, _W10)
    else:
        ok = inn[10] == _check_digit(inn, _W11) and inn[11] == _check_digit(inn, _W12)
    if not ok:
        raise InvalidInput(f"INN {inn}: its check digit is wrong (a typo?)")
    return inn


def check_kpp(kpp: object) -> str:
    """``kpp`` if it is 4 digits, 2 digits or capital Latin letters, 3 digits; else InvalidInput."""
    if not isinstance(kpp, str) or not _KPP.fullmatch(kpp):
        raise InvalidInput(f"a KPP is 9 characters: 4 digits, 2 digits or capital letters A-Z, 3 digits; "
                           f"got {str(kpp)[:20]!r}")
    return kpp


def _text(what: str, value: object, hi: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > hi or not value.isprintable():
        raise InvalidInput(f"{what} must be 1 to {hi} printable characters (not only spaces), "
                           f"got {str(value)[:40]!r}")
    return value


def check_requisites(req: Requisites) -> Requisites:
    """``req`` if every field is valid (a name and an address of printable text, a valid
    INN, a KPP for an organisation and none for an entrepreneur); else InvalidInput naming
    the field."""
    if not isinstance(req, Requisites):
        raise InvalidInput(f"requisites are a Requisites value, got {type(req).__name__}")
    _text("the company name", req.name, MAX_NAME)
    _text("the address", req.address, MAX_ADDRESS)
    check_inn(req.inn)
    if len(req.inn) == 10:
        check_kpp(req.kpp)
    elif req.kpp != "":
        raise InvalidInput("an entrepreneur (12-digit INN) has no KPP: leave it empty")
    return req


def operator_requisites(db: Database) -> Requisites:
    """The network operator's requisites (the seller), or :data:`NO_REQUISITES`."""
    row = db.fetchone("SELECT name, inn, kpp, address FROM operator_requisites WHERE one = 1")
    return NO_REQUISITES if row is None else Requisites(*row)


def client_requisites(db: Database, contract_id: int) -> Requisites:
    """The requisites of the client of ``contract_id`` (the buyer), or :data:`NO_REQUISITES`."""
    row = db.fetchone("SELECT name, inn, kpp, address FROM contract_requisites WHERE contract_id = ?",
                      (contract_id,))
    return NO_REQUISITES if row is None else Requisites(*row)
