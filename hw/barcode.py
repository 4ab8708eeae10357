"""Club card numbers (EAN-13) and keyed-in phone numbers: validation, normalization, masking.

Pure functions, no I/O: the scanner driver uses them on every scan, and the till's
keyed-in path (a cashier typing the card number or the customer's phone) uses the same
ones so both paths accept exactly the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable

from hw.errors import CodeFormatError

__all__ = [
    "CodeFormatError",
    "ean13_check_digit",
    "is_valid_ean13",
    "parse_club_card",
    "normalize_phone",
    "mask_code",
]

_DIGITS = frozenset("0123456789")
# Separators a cashier may type inside a number; they carry no meaning.
_CARD_SEPARATORS = " -"
_PHONE_SEPARATORS = " -().\t"


def _is_ascii_digits(text: str) -> bool:
    """True if ``text`` is non-empty and only ASCII digits (``str.isdigit`` also accepts
    Arabic-Indic and superscript digits, which no scanner or card emits)."""
    return bool(text) and all(ch in _DIGITS for ch in text)


def mask_code(code: str) -> str:
    """Return ``code`` safe for logs: the first 2 and last 4 characters, the rest as ``*``.

    Codes of 6 characters or fewer are masked entirely, since showing 6 of them would
    show everything. Used for every code the scanner logs, not only club cards: a
    13-digit code with a bad check digit is most likely a misread card.
    """
    if len(code) <= 6:
        return "*" * len(code)
    return code[:2] + "*" * (len(code) - 6) + code[-4:]


def ean13_check_digit(first12: str) -> int:
    """Return the EAN-13 check digit for the first 12 digits of a code.

    Weights alternate 1, 3, 1, 3, ... from the left; the check digit brings the weighted
    sum up to a multiple of 10. Raises :class:`CodeFormatError` unless ``first12`` is
    exactly 12 ASCII digits.
    """
    if not isinstance(first12, str) or len(first12) != 12 or not _is_ascii_digits(first12):
        raise CodeFormatError(
            f"EAN-13 check digit needs exactly 12 ASCII digits, got {_describe(first12)}"
        )
    total = sum(int(ch) * (3 if i % 2 else 1) for i, ch in enumerate(first12))
    return (10 - total % 10) % 10


def is_valid_ean13(code: object) -> bool:
    """True if ``code`` is a string of 13 ASCII digits whose last digit is the EAN-13
    check digit of the first 12. Never raises: anything else is simply not valid."""
    if not isinstance(code, str) or len(code) != 13 or not _is_ascii_digits(code):
        return False
    return ean13_check_digit(code[:12]) == int(code[12])


def parse_club_card(text: str, prefixes: Iterable[str] = ()) -> str:
    """Parse a scanned or keyed-in club card number and return its 13 digits.

    Surrounding whitespace and spaces or hyphens between digits are ignored (cashiers
    type numbers in groups, as printed on the card). The number must be 13 ASCII digits
    with a valid EAN-13 check digit and, if ``prefixes`` is not empty, start with one of
    them (the club's number range). Raises :class:`CodeFormatError` (a ``ValueError``)
    saying what is wrong; the message shows the number masked, never in full.
    """
    if not isinstance(text, str):
        raise CodeFormatError(f"club card number must be a string, got {type(text).__name__}")
    digits = text.strip()
    for sep in _CARD_SEPARATORS:
        digits = digits.replace(sep, "")
    if not digits:
        raise CodeFormatError("club card number is empty")
    for pos, ch in enumerate(digits, start=1):
        if ch not in _DIGITS:
            raise CodeFormatError(
                f"club card number may contain only digits, found {ch!r} at position {pos}"
            )
    if len(digits) != 13:
        raise CodeFormatError(f"club card number must have 13 digits, got {len(digits)}")
    if not is_valid_ean13(digits):
        raise CodeFormatError(
            f"club card number {mask_code(digits)} has a bad EAN-13 check digit"
        )
    allowed = tuple(prefixes)
    if allowed and not digits.startswith(allowed):
        raise CodeFormatError(
            f"club card number {mask_code(digits)} is outside the club's number range "
            f"(prefixes {', '.join(allowed)})"
        )
    return digits


def normalize_phone(text: str) -> str:
    """Normalize a keyed-in Russian mobile number to its 11 digits starting with 7.

    Accepts the usual ways of writing one: ``+7 (912) 345-67-89``, ``8 912 345 67 89``,
    ``79123456789``. The trunk prefix 8 becomes the country code 7. Spaces, hyphens,
    dots and parentheses are ignored; a ``+`` is allowed only at the start, before 7.
    Raises :class:`CodeFormatError` for anything else (letters, a wrong number of
    digits, another country code); the message never repeats the number.
    """
    if not isinstance(text, str):
        raise CodeFormatError(f"phone number must be a string, got {type(text).__name__}")
    body = text.strip()
    plus = body.startswith("+")
    if plus:
        body = body[1:]
    digits = []
    for pos, ch in enumerate(body, start=2 if plus else 1):
        if ch in _DIGITS:
            digits.append(ch)
        elif ch == "+":
            raise CodeFormatError(
                f"phone number has a '+' at position {pos}; only a leading '+' is allowed"
            )
        elif ch not in _PHONE_SEPARATORS:
            raise CodeFormatError(
                "phone number may contain only digits, spaces and + - ( ) . ;"
                f" found {ch!r} at position {pos}"
            )
    number = "".join(digits)
    if not number:
        raise CodeFormatError("phone number is empty")
    if len(number) != 11:
        raise CodeFormatError(
            f"phone number must have 11 digits (7 or 8, then 10 digits), got {len(number)}"
        )
    if plus and number[0] != "7":
        raise CodeFormatError(f"phone number must have country code +7, got +{number[0]}")
    if number[0] == "8":
        number = "7" + number[1:]
    if number[0] != "7":
        raise CodeFormatError(f"phone number must start with 7 or 8 (Russia), got {number[0]}")
    return number


def _describe(value: object) -> str:
    """Describe a bad argument without echoing it in full (it may be a card number)."""
    if isinstance(value, str):
        return f"{len(value)} characters"
    return type(value).__name__
