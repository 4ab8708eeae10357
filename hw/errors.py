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


# --- card reader and fuel-card application (hw.card) -------------------------------------
__all__ += [
    "CardError", "NoReaderError", "CardRemovedError", "CardTimeoutError", "CardIOError",
    "CardResponseError", "CardStatusError", "WrongPinError", "PinBlockedError",
    "CounterMismatchError", "CardDataError", "CardFormatError", "CardNotGenuineError", "CloneSuspectedError",
    "PinFormatError", "KeyStoreError",
]


class CardError(HwError):
    """Base of every error of the card reader driver and the fuel-card application.

    Messages never contain a key, a PIN or a full card number (numbers are masked).
    """


class NoReaderError(CardError):
    """pcscd is not running, or the named reader is not there."""


class CardRemovedError(CardError):
    """There is no card in the reader, or it was pulled during the exchange.

    After a write command this means the write may or may not have happened: read the
    card back (``FuelCardApplication.write_outcome``) once it is reinserted.
    """


class CardTimeoutError(CardError):
    """The card did not answer within the timeout (the exchange may still complete)."""


class CardIOError(CardError):
    """PC/SC reported a failure other than a missing reader or card (``code`` holds it)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class CardResponseError(CardError):
    """The card's response is not a well-formed R-APDU: short, too long, garbage status
    word, or data of the wrong length or shape for the command."""


class CardStatusError(CardError):
    """The card answered with a status word the command does not expect (``sw`` holds it)."""

    def __init__(self, message: str, sw: int) -> None:
        super().__init__(message)
        self.sw = sw


class WrongPinError(CardStatusError):
    """The card refused the PIN (SW 63Cx); ``tries_left`` more tries before it blocks."""

    def __init__(self, message: str, sw: int, tries_left: int) -> None:
        super().__init__(message, sw)
        self.tries_left = tries_left


class PinBlockedError(CardStatusError):
    """The card's PIN is blocked (SW 6983): no more tries."""


class CounterMismatchError(CardStatusError):
    """A counter write named a transaction counter that is not the card's current one
    (SW 6985): a replayed or stale write, or one that already happened."""


class CardDataError(CardError):
    """A card record (identity, limit, counters) does not decode, or a value is out of range."""


class CardFormatError(CardDataError):
    """The card's static records (identity, limits, controls) are not in a format this
    terminal reads, or say rules that cannot be (a purchase count per transaction, a time
    window of zero length...): the card is refused at the pump like one whose data MAC fails."""


class CardNotGenuineError(CardError):
    """A MAC over card data, counters or a write receipt did not verify: the card or its
    data is not what the issuer wrote."""


class CloneSuspectedError(CardError):
    """The card's transaction counter is behind the one the terminal already saw for this
    card number: a copy of an older state of the card."""


class PinFormatError(CardError, ValueError):
    """A PIN offered for verification is not 4 to 12 digits (the PIN itself is not shown)."""


class KeyStoreError(CardError):
    """The key store could not load or use a key (the key itself is never shown)."""
