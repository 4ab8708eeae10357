"""EAN-13 check digits, club card parsing, phone normalization and masking (hw.barcode)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hw.barcode import (
    ean13_check_digit,
    is_valid_ean13,
    mask_code,
    normalize_phone,
    parse_club_card,
)
from hw.errors import CodeFormatError, HwError

# Check digits worked by hand (weights 1,3,1,3,... from the left; check = (10 - sum % 10) % 10):
#   400638133393: 4+0+0+18+3+24+1+9+3+9+9+9 = 89            -> 1
#   590123412345: 5+27+0+3+2+9+4+3+2+9+4+15 = 83            -> 7
#   978014300723: 9+21+8+0+1+12+3+0+0+21+2+9 = 86           -> 4
#   460000000000: 4+18 = 22                                 -> 8
#   000000000000: 0                                         -> 0
KNOWN = [
    ("400638133393", 1),
    ("590123412345", 7),
    ("978014300723", 4),
    ("460000000000", 8),
    ("000000000000", 0),
]


@pytest.mark.parametrize(("first12", "check"), KNOWN)
def test_check_digit_known_values(first12: str, check: int) -> None:
    assert ean13_check_digit(first12) == check
    assert is_valid_ean13(first12 + str(check))


def test_known_valid_and_invalid() -> None:
    assert is_valid_ean13("4006381333931")
    assert not is_valid_ean13("4006381333932")


@pytest.mark.parametrize(
    "code",
    ["", "400638133393", "40063813339310", "400638133393a", " 4006381333931",
     "4006381333931\n", "٤٠٠٦٣٨١٣٣٣٩٣١", None, 4006381333931, b"4006381333931"],
)
def test_not_valid_ean13(code: object) -> None:
    assert not is_valid_ean13(code)


@pytest.mark.parametrize(
    "bad", ["", "40063813339", "4006381333931", "40063813339x", "٤٠٠٦٣٨١٣٣٣٩٣"]
)
def test_check_digit_rejects_bad_input(bad: str) -> None:
    with pytest.raises(CodeFormatError, match="12 ASCII digits"):
        ean13_check_digit(bad)


def test_code_format_error_is_a_value_error_and_hw_error() -> None:
    assert issubclass(CodeFormatError, ValueError)
    assert issubclass(CodeFormatError, HwError)


@given(st.text(alphabet="0123456789", min_size=12, max_size=12), st.integers(0, 12),
       st.integers(1, 9))
def test_any_single_digit_error_is_detected(first12: str, pos: int, delta: int) -> None:
    """EAN-13's weights 1 and 3 are prime to 10, so changing any one digit breaks the check."""
    code = first12 + str(ean13_check_digit(first12))
    assert is_valid_ean13(code)
    changed = code[:pos] + str((int(code[pos]) + delta) % 10) + code[pos + 1 :]
    assert not is_valid_ean13(changed)


@pytest.mark.parametrize(
    "text", ["4006381333931", " 4006381333931 ", "4006 3813 3393 1", "4-006381-333931"]
)
def test_parse_club_card_accepts(text: str) -> None:
    assert parse_club_card(text) == "4006381333931"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("400638133393", "13 digits, got 12"),
        ("40063813339311", "13 digits, got 14"),
        ("40063813339X1", "only digits, found 'X' at position 12"),
        ("4006381333932", "bad EAN-13 check digit"),
    ],
)
def test_parse_club_card_rejects(text: str, message: str) -> None:
    with pytest.raises(CodeFormatError, match=message) as info:
        parse_club_card(text)
    assert "4006381333932" not in str(info.value)


def test_parse_club_card_masks_the_number_in_errors() -> None:
    with pytest.raises(CodeFormatError) as info:
        parse_club_card("4006381333932")
    assert "40*******3932" in str(info.value)


def test_parse_club_card_prefixes() -> None:
    assert parse_club_card("4006381333931", prefixes=("400", "460")) == "4006381333931"
    with pytest.raises(CodeFormatError, match="outside the club's number range"):
        parse_club_card("5901234123457", prefixes=("400", "460"))


def test_parse_club_card_rejects_non_strings() -> None:
    with pytest.raises(CodeFormatError, match="must be a string"):
        parse_club_card(4006381333931)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "+7 (912) 345-67-89",
        "+79123456789",
        "79123456789",
        "89123456789",
        "8 (912) 345-67-89",
        "8-912-345-67-89",
        "  +7 912 345.67.89  ",
        "7 912 3456789",
    ],
)
def test_normalize_phone(text: str) -> None:
    assert normalize_phone(text) == "79123456789"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("+", "empty"),
        ("9123456789", "11 digits .* got 10"),
        ("791234567890", "got 12"),
        ("+8 912 345 67 89", r"country code \+7, got \+8"),
        ("+1 212 555 0100", r"country code \+7, got \+1"),
        ("59123456789", "start with 7 or 8"),
        ("7912345678a", "found 'a' at position 11"),
        ("++79123456789", "only a leading"),
        ("7912+3456789", "only a leading"),
        ("7912345678９", "found '９'"),
    ],
)
def test_normalize_phone_rejects(text: str, message: str) -> None:
    with pytest.raises(CodeFormatError, match=message) as info:
        normalize_phone(text)
    assert "912345" not in str(info.value)  # the number itself is never echoed


def test_mask_code() -> None:
    assert mask_code("4006381333931") == "40*******3931"
    assert mask_code("1234567") == "12*4567"
    assert mask_code("123456") == "******"
    assert mask_code("") == ""
