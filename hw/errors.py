"""The ``hw`` package's error hierarchy: one base, one error type per device layer.

Callers that only care that *some* device went wrong catch :class:`HwError`; a lane that
talks to one device catches that device's error. The card reader and pump drivers add
``CardError`` and ``PumpError`` (subclasses of :class:`HwError`) here when they land.
"""

from __future__ import annotations

__all__ = ["HwError", "ScannerError", "CodeFormatError"]


class HwError(Exception):
    """Base of every error raised by the ``hw`` package."""


class ScannerError(HwError):
    """The barcode scanner driver was misconfigured or misused (bad config, iterating a
    closed scanner, an internal failure of the reader task).

    A scanner that is unplugged is *not* an error: the driver waits for it to come back.
    Bad bytes from the scanner are not errors either: they are ``ScanNoise`` events.
    """


class CodeFormatError(HwError, ValueError):
    """A club card number or a phone number (scanned or keyed in) is malformed.

    A ``ValueError`` too, so generic input validation (``except ValueError``) catches it.
    Messages never contain the full number: card numbers are masked, phone numbers omitted.
    """
