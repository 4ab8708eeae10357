"""Checks of what the cabinets' forms and the fleet API receive: each failure is a
:class:`FieldError` that names the field and says why (in Russian, as the users read it),
and nothing is changed when one is raised."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date

from host.checks import parse_litres, parse_rub
from host.errors import InvalidInput

__all__ = [
    "LABELS",
    "FieldError",
    "birth_date",
    "choice",
    "digits",
    "email",
    "integer",
    "litres",
    "login",
    "phone",
    "rub",
    "text",
]

#: field -> its label on the forms
LABELS = {
    "login": "Логин", "email": "Электронная почта", "password": "Пароль", "password2": "Повтор пароля",
    "company": "Компания", "contract": "Номер договора", "code": "Код", "limit_id": "Номер лимита",
    "amount": "Сумма лимита", "unit": "Единица", "period": "Период", "scope": "Область", "group": "Группа",
    "product": "Продукт", "from": "С даты", "to": "По дату", "month": "Месяц", "card": "Номер карты",
    "barcode": "Штрихкод карты", "birth_date": "Дата рождения", "phone": "Телефон", "name": "Название",
    "totp": "Код из приложения", "old_password": "Текущий пароль", "reason": "Причина",
}


class FieldError(InvalidInput):
    """A form or API field with a bad value."""

    def __init__(self, field: str, why: str) -> None:
        self.field = field
        self.why = why
        super().__init__(f"{LABELS.get(field, field)}: {why}")


def text(form: Mapping[str, str], field: str, *, lo: int = 1, hi: int = 128, required: bool = True) -> str:
    """A field's text, stripped of ASCII blanks, ``lo``..``hi`` printable characters."""
    raw = form.get(field)
    if raw is None or not isinstance(raw, str):
        if required:
            raise FieldError(field, "обязательное поле")
        return ""
    v = raw.strip(" \t\r\n")
    if not v and not required:
        return ""
    if not v:
        raise FieldError(field, "обязательное поле")
    if not v.isprintable():
        raise FieldError(field, "недопустимые символы")
    if not lo <= len(v) <= hi:
        raise FieldError(field, f"от {lo} до {hi} символов, сейчас {len(v)}")
    return v


_LOGIN = re.compile(r"[a-z0-9][a-z0-9._-]{2,31}")
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")
_PHONE = re.compile(r"\+?[0-9]{10,15}")


def login(form: Mapping[str, str], field: str = "login") -> str:
    """A login: 3 to 32 of a-z, 0-9, '.', '_', '-' (lower-cased), starting with a letter or digit."""
    v = text(form, field, hi=32).lower()
    if not _LOGIN.fullmatch(v):
        raise FieldError(field, "3–32 символа: латинские буквы, цифры, «.», «_», «-»")
    return v


def email(form: Mapping[str, str], field: str = "email") -> str:
    """An e-mail address (lower-cased), at most 254 characters."""
    v = text(form, field, hi=254).lower()
    if not _EMAIL.fullmatch(v):
        raise FieldError(field, "не похоже на адрес электронной почты")
    return v


def phone(form: Mapping[str, str], field: str = "phone") -> str:
    """A phone number as digits only (``+7 900 000-00-00`` -> ``79000000000``)."""
    v = re.sub(r"[ ()-]", "", text(form, field, hi=32))
    if not _PHONE.fullmatch(v):
        raise FieldError(field, "номер телефона: от 10 до 15 цифр")
    return v.lstrip("+")


def birth_date(form: Mapping[str, str], field: str = "birth_date") -> date:
    """A date ``YYYY-MM-DD`` (the date input's format) or ``DD.MM.YYYY``."""
    v = text(form, field, hi=10)
    m = re.fullmatch(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", v) or None
    try:
        if m:
            return date(int(m[1]), int(m[2]), int(m[3]))
        m2 = re.fullmatch(r"([0-9]{2})\.([0-9]{2})\.([0-9]{4})", v)
        if m2:
            return date(int(m2[3]), int(m2[2]), int(m2[1]))
    except ValueError:
        pass
    raise FieldError(field, "дата в виде ГГГГ-ММ-ДД")


def integer(form: Mapping[str, str], field: str, *, lo: int = 0, hi: int = 2**63 - 1) -> int:
    """A whole number ``lo``..``hi`` written in ASCII digits."""
    v = text(form, field, hi=20)
    if not v.isascii() or not v.isdigit():
        raise FieldError(field, "целое число")
    n = int(v)
    if not lo <= n <= hi:
        raise FieldError(field, f"число от {lo} до {hi}")
    return n


def digits(form: Mapping[str, str], field: str, n: int) -> str:
    """Exactly ``n`` ASCII digits (blanks inside are dropped)."""
    v = text(form, field, hi=n + 8).replace(" ", "")
    if len(v) != n or not v.isascii() or not v.isdigit():
        raise FieldError(field, f"{n} цифр")
    return v


def rub(form: Mapping[str, str], field: str) -> int:
    """Rubles (``1500``, ``1500.50``, ``1500,5``) as kopecks."""
    try:
        return parse_rub(text(form, field, hi=20))
    except InvalidInput as exc:
        if isinstance(exc, FieldError):
            raise
        raise FieldError(field, "сумма в рублях, например 1500 или 1500.50") from None


def litres(form: Mapping[str, str], field: str) -> int:
    """Litres (``40``, ``40.5``) as millilitres."""
    try:
        return parse_litres(text(form, field, hi=20))
    except InvalidInput as exc:
        if isinstance(exc, FieldError):
            raise
        raise FieldError(field, "объём в литрах, например 40 или 40.5") from None


def choice(form: Mapping[str, str], field: str, options: Mapping[str, object]) -> object:
    """One of ``options`` (by key)."""
    v = text(form, field, hi=64)
    if v not in options:
        raise FieldError(field, "допустимо: " + ", ".join(options))
    return options[v]
