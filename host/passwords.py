"""Passwords of the cabinets' users: argon2id hashes and the policy a new password meets.

OWASP ASVS 5.0 (V6): at least :data:`MIN_LENGTH` characters, at most :data:`MAX_LENGTH`,
any characters (no composition rules), not one of the common passwords shipped in
``host/data/common-passwords.txt`` (nor one with digits or ``!`` appended), and not the
user's own login or e-mail. Hashes are argon2id (argon2-cffi) with the parameters of
:data:`PARAMETERS` (OWASP's password-storage minimum for argon2id is m=19 MiB, t=2, p=1);
a hash made with older parameters is re-hashed at the next sign-in (:meth:`Hasher.verify`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .errors import InvalidInput

__all__ = [
    "MAX_LENGTH",
    "MIN_LENGTH",
    "PARAMETERS",
    "Argon2Parameters",
    "Hasher",
    "check_new_password",
    "is_common",
]

MIN_LENGTH = 12
MAX_LENGTH = 128


@dataclass(frozen=True, slots=True)
class Argon2Parameters:
    """The cost of one argon2id hash: passes, memory in KiB, lanes."""

    time_cost: int
    memory_kib: int
    parallelism: int

    def __str__(self) -> str:
        return f"argon2id t={self.time_cost} m={self.memory_kib}KiB p={self.parallelism}"


#: The production cost: OWASP's argon2id setting m=19 MiB, t=2, p=1.
PARAMETERS = Argon2Parameters(time_cost=2, memory_kib=19_456, parallelism=1)


class Hasher:
    """argon2id hashing with one set of :class:`Argon2Parameters`."""

    def __init__(self, params: Argon2Parameters = PARAMETERS) -> None:
        self.params = params
        self._ph = PasswordHasher(time_cost=params.time_cost, memory_cost=params.memory_kib,
                                  parallelism=params.parallelism, type=Type.ID)
        # verifying against this dummy costs what a real verify costs: an unknown login is
        # answered as slowly as a known one (no timing oracle for "does the account exist")
        self._dummy = self._ph.hash("edgepos-dummy-password")

    def hash(self, password: str) -> str:
        """The argon2id hash of ``password`` (with a random salt), as one text."""
        return self._ph.hash(password)

    def verify(self, stored: str | None, password: str) -> tuple[bool, str | None]:
        """``(matches, new_hash)``: whether ``password`` matches ``stored`` (``None``: no such
        user, still costs one hash), and a new hash when the stored one has old parameters."""
        if stored is None:
            try:
                self._ph.verify(self._dummy, password)
            except VerificationError:
                pass
            return False, None
        try:
            self._ph.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False, None
        return True, (self._ph.hash(password) if self._ph.check_needs_rehash(stored) else None)


@lru_cache(maxsize=1)
def _common() -> frozenset[str]:
    text = resources.files("host").joinpath("data/common-passwords.txt").read_text("utf-8")
    return frozenset(w.strip().casefold() for w in text.splitlines() if w.strip() and not w.startswith("#"))


_TAIL = re.compile(r"[0-9!]+$")


def is_common(password: str) -> bool:
    """True if ``password`` (ignoring case, and digits or ``!`` at its end) is a common one."""
    p = password.casefold()
    return p in _common() or _TAIL.sub("", p) in _common()


def check_new_password(password: object, *, field: str = "password", login: str = "", email: str = "") -> str:
    """Return ``password`` if it may be set, else raise :class:`InvalidInput` naming ``field``
    and the rule broken (the password itself is never in the message)."""
    if not isinstance(password, str):
        raise InvalidInput(f"{field}: a password is text")
    if len(password) < MIN_LENGTH:
        raise InvalidInput(f"{field}: at least {MIN_LENGTH} characters, got {len(password)}")
    if len(password) > MAX_LENGTH:
        raise InvalidInput(f"{field}: at most {MAX_LENGTH} characters, got {len(password)}")
    if not password.isprintable():
        raise InvalidInput(f"{field}: control characters are not allowed")
    if is_common(password):
        raise InvalidInput(f"{field}: this password is one of the most common ones; choose another")
    low = password.casefold()
    for what, value in (("login", login), ("e-mail", email)):
        if value and value.casefold() in low:
            raise InvalidInput(f"{field}: the password must not contain your {what}")
    return password
