"""The errors of the host: one base type, :class:`HostError`.

Messages say what was wrong and with which value; card numbers are shown masked.
"""

from __future__ import annotations

__all__ = ["HostError", "LedgerUnavailable", "SchemaError", "NotFound", "Conflict", "InvalidInput"]


class HostError(Exception):
    """Anything the host refuses or cannot do."""


class LedgerUnavailable(HostError):
    """The ledger's database cannot be reached or opened (bad URL, server down, no file)."""


class SchemaError(HostError):
    """The database's schema is of a newer version than this code, or not an edgepos ledger."""


class NotFound(HostError, LookupError):
    """A contract, card, account or site named in a request does not exist."""


class Conflict(HostError):
    """A request that breaks a rule of the ledger: a card number already issued, a fourth
    club card for a person, a top-up that would overflow."""


class InvalidInput(HostError, ValueError):
    """A malformed value: a negative amount, an unknown tariff, a date that is no date."""
