"""Fleet managers' accounts for the cabinet and the fleet API: registration confirmed by a
single-use e-mail link, sign-in with rate limits and an optional TOTP second factor,
contract linking with a code the host issues, API tokens.

Functions take a :class:`~host.ledger.Ledger` and run each change in one transaction;
argon2 hashing happens outside it. Answers never tell whether a login or an e-mail
exists: :func:`register` behaves the same for a taken one (the owner gets a letter), and
:func:`sign_in` answers a wrong password and an unknown login alike, at the same cost.
Every change to master data that a fleet manager makes goes through :mod:`host.master`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

import pyotp

from authz.fuel_model import FuelCard

from . import codes, ratelimit
from .db import Database
from .errors import Conflict, InvalidInput, NotFound
from .ledger import Ledger
from .outbox import enqueue
from .passwords import Hasher, check_new_password

__all__ = [
    "LINK_CODE_TTL_S",
    "REALM",
    "ApiToken",
    "FleetUser",
    "SignIn",
    "activate",
    "api_tokens",
    "api_user",
    "card_of",
    "change_password",
    "check_totp",
    "contracts_of",
    "create_api_token",
    "enable_totp",
    "end_sessions",
    "issue_link_code",
    "link_contract",
    "register",
    "revoke_api_token",
    "sign_in",
    "start_totp",
    "user",
    "user_id_of_login",
]

REALM = "fleet"
#: A contract-link code is handed to the customer with the contract (paper, e-mail): 14 days.
LINK_CODE_TTL_S = 14 * 86_400


@dataclass(frozen=True, slots=True)
class FleetUser:
    """A fleet manager's account."""

    user_id: int
    login: str
    email: str
    company: str
    status: str  #: pending | active | blocked
    has_totp: bool


@dataclass(frozen=True, slots=True)
class SignIn:
    """What a sign-in attempt came to: ``user`` set when the password matched (and then
    ``needs_totp`` if a second factor is still due); ``retry_after_s`` when rate limited."""

    user: FleetUser | None
    needs_totp: bool = False
    retry_after_s: int = 0


_USER_COLUMNS = "user_id, login, email, company, status, totp_secret IS NOT NULL"


def _user(row: tuple) -> FleetUser:
    return FleetUser(int(row[0]), row[1], row[2], row[3], row[4], bool(row[5]))


def user(ledger: Ledger, user_id: int) -> FleetUser:
    """The account ``user_id`` (NotFound)."""
    row = ledger.db.fetchone(f"SELECT {_USER_COLUMNS} FROM web_fleet_users WHERE user_id = ?", (user_id,))
    if row is None:
        raise NotFound(f"no fleet user {user_id}")
    return _user(row)


def end_sessions(db: Database, realm: str, user_key: str) -> None:
    """End every session of a user (password changed, account or card blocked)."""
    db.execute("DELETE FROM web_sessions WHERE realm = ? AND user_key = ?", (realm, user_key))


def register(ledger: Ledger, hasher: Hasher, *, login: str, email: str, password: str, company: str,
             base_url: str) -> None:
    """Open a pending account and queue its activation link (``base_url`` + ``/fleet/activate/<link>``).
    A login or e-mail already taken changes nothing but a letter to that e-mail's owner."""
    check_new_password(password, login=login, email=email)
    pw_hash = hasher.hash(password)
    now = ledger.now()

    def step(db: Database) -> None:
        taken = db.fetchone("SELECT email FROM web_fleet_users WHERE login = ? OR email = ?", (login, email))
        if taken is not None:
            enqueue(db, "email", taken[0], "Кто-то пытался зарегистрироваться с вашими данными в личном кабинете. "
                    "Если это были вы, войдите со своим логином или восстановите пароль.",
                    subject="Личный кабинет: попытка регистрации", now=now)
            return
        uid = db.execute("INSERT INTO web_fleet_users (login, email, company, password_hash, status, created_at_utc_s) "
                         "VALUES (?, ?, ?, ?, 'pending', ?) RETURNING user_id",
                         (login, email, company, pw_hash, now)).fetchone()[0]
        link = codes.issue_link(db, "activate", str(uid), now=now)
        enqueue(db, "email", email, f"Для активации личного кабинета перейдите по ссылке (действует 10 минут, "
                f"один раз):\n{base_url}/fleet/activate/{link}\n", subject="Активация личного кабинета", now=now)
    ledger.db.run(step)


def create_active_user(ledger: Ledger, hasher: Hasher, *, login: str, email: str, password: str,
                       company: str = "") -> int:
    """An account that is active at once (an operator's or a simulation's demo user, whose
    e-mail is known to be right); returns its id. Conflict if the login or e-mail is taken."""
    check_new_password(password, login=login, email=email)
    pw_hash = hasher.hash(password)
    now = ledger.now()

    def step(db: Database) -> int:
        if db.fetchone("SELECT 1 FROM web_fleet_users WHERE login = ? OR email = ?", (login, email)):
            raise Conflict(f"login {login!r} or its e-mail is taken")
        return db.execute("INSERT INTO web_fleet_users (login, email, company, password_hash, status, "
                          "created_at_utc_s) VALUES (?, ?, ?, ?, 'active', ?) RETURNING user_id",
                          (login, email, company, pw_hash, now)).fetchone()[0]
    return ledger.db.run(step)


def activate(ledger: Ledger, link: str, *, address: str) -> bool:
    """Activate the account of a live activation link (the link is spent). Rate limited per
    address like a sign-in: guessing links is stopped."""
    now = ledger.now()

    def step(db: Database) -> bool:
        if ratelimit.retry_after(db, "activation-link", address, now=now, by_address_only=True):
            return False
        uid = codes.check_link(db, "activate", link, now=now)
        if uid is None:
            ratelimit.fail(db, "activation-link", address, now=now)
            return False
        db.execute("UPDATE web_fleet_users SET status = 'active' WHERE user_id = ? AND status = 'pending'", (int(uid),))
        return True
    return ledger.db.run(step)


def sign_in(ledger: Ledger, hasher: Hasher, login: str, password: str, *, address: str,
            device_token: str | None) -> SignIn:
    """Check a login and password under the rate limits. A pending or blocked account does
    not sign in, and is answered like a wrong password."""
    now = ledger.now()
    account = f"fleet:{login}"
    row = ledger.db.fetchone(f"SELECT {_USER_COLUMNS}, password_hash FROM web_fleet_users WHERE login = ?", (login,))
    trusted = row is not None and ratelimit.is_trusted_device(ledger.db, REALM, str(row[0]), device_token)
    wait = ledger.db.run(lambda db: ratelimit.retry_after(db, account, address, now=now, trusted=trusted))
    if wait:
        return SignIn(None, retry_after_s=wait)
    ok, rehash = hasher.verify(None if row is None else row[6], password)
    if not ok or row is None or row[4] != "active":
        ledger.db.run(lambda db: ratelimit.fail(db, account, address, now=now))
        return SignIn(None)
    u = _user(row)

    def step(db: Database) -> None:
        ratelimit.succeed(db, account, address)
        if rehash:
            db.execute("UPDATE web_fleet_users SET password_hash = ? WHERE user_id = ?", (rehash, u.user_id))
    ledger.db.run(step)
    return SignIn(u, needs_totp=u.has_totp)


def _totp_step(secret: str, code: object, now: float) -> int | None:
    """The time step (``now // 30``, one step either side) whose code ``code`` is, or None."""
    if not (isinstance(code, str) and len(code) == 6 and code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    found = None
    for offset in (-1, 0, 1):  # compare all three so the time taken does not say which matched
        t = int(now) + offset * totp.interval
        if hmac.compare_digest(totp.at(t), code):
            found = t // totp.interval
    return found


def check_totp(ledger: Ledger, user_id: int, code: str, *, address: str) -> bool | int:
    """True if ``code`` is the user's current TOTP (a window of one step either side) and its
    time step is later than the last one accepted for the user (a code is good once: ASVS
    2.8.4), False if not; an int (seconds to wait) when rate limited."""
    now = ledger.now()
    account = f"fleet-totp:{user_id}"
    secret = ledger.db.scalar("SELECT totp_secret FROM web_fleet_users WHERE user_id = ?", (user_id,))
    wait = ledger.db.run(lambda db: ratelimit.retry_after(db, account, address, now=now))
    if wait:
        return wait
    step = _totp_step(secret, code, now) if secret else None

    def accept(db: Database) -> bool:
        if step is None:
            return False
        # the compare-and-set makes two requests racing with one code accept it once
        return db.execute("UPDATE web_fleet_users SET totp_last_step = ? WHERE user_id = ? AND "
                          "(totp_last_step IS NULL OR totp_last_step < ?)",
                          (step, user_id, step)).rowcount == 1
    if ledger.db.run(accept):
        ledger.db.run(lambda db: ratelimit.succeed(db, account, address))
        return True
    ledger.db.run(lambda db: ratelimit.fail(db, account, address, now=now))
    return False


def start_totp(login: str) -> tuple[str, str]:
    """A new TOTP secret and its ``otpauth://`` URI (shown to the user to scan); not stored
    until :func:`enable_totp` sees a code made with it."""
    secret = pyotp.random_base32()
    return secret, pyotp.TOTP(secret).provisioning_uri(name=login, issuer_name="edgepos")


def enable_totp(ledger: Ledger, user_id: int, secret: str, code: str) -> None:
    """Turn the second factor on with ``secret`` once ``code`` proves the user holds it."""
    step = _totp_step(secret, code, ledger.now())
    if step is None:
        raise InvalidInput("totp: код не подходит")
    # the code that proved the secret is spent: it cannot sign in as well
    ledger.db.run(lambda db: db.execute("UPDATE web_fleet_users SET totp_secret = ?, totp_last_step = ? "
                                        "WHERE user_id = ?", (secret, step, user_id)))


def change_password(ledger: Ledger, hasher: Hasher, user_id: int, old: str, new: str) -> None:
    """Change the password (the old one must match); every session of the user ends."""
    row = ledger.db.fetchone("SELECT login, email, password_hash FROM web_fleet_users WHERE user_id = ?", (user_id,))
    if row is None:
        raise NotFound(f"no fleet user {user_id}")
    if not hasher.verify(row[2], old)[0]:
        raise InvalidInput("old_password: текущий пароль не подходит")
    check_new_password(new, login=row[0], email=row[1])
    h = hasher.hash(new)

    def step(db: Database) -> None:
        db.execute("UPDATE web_fleet_users SET password_hash = ? WHERE user_id = ?", (h, user_id))
        end_sessions(db, REALM, str(user_id))
    ledger.db.run(step)


def issue_link_code(ledger: Ledger, contract_id: int, *, ttl_s: int = LINK_CODE_TTL_S) -> str:
    """A code that lets a fleet manager link contract ``contract_id`` to their cabinet (the
    host's operator gives it to the customer). Ends older codes of the contract."""
    ledger.contract(contract_id)  # NotFound
    code = "-".join(secrets.token_hex(3).upper() for _ in range(3))
    now = ledger.now()
    ledger.db.run(lambda db: codes._insert(db, "link_contract", str(contract_id), code, now, ttl_s, codes.TRIES))
    return code


def link_contract(ledger: Ledger, user_id: int, contract_id: int, code: str, *, address: str) -> bool:
    """Link a contract to the user's cabinet with its code: True if linked, False for a wrong
    or dead code (a try used up) or when rate limited. A contract linked by another company
    is answered the same (Conflict is not told apart from a wrong code)."""
    now = ledger.now()
    account = f"link:{contract_id}"

    def step(db: Database) -> bool:
        if ratelimit.retry_after(db, account, address, now=now):
            return False
        if not codes.check_code(db, "link_contract", str(contract_id), code.strip().upper(), now=now):
            ratelimit.fail(db, account, address, now=now)
            return False
        if db.fetchone("SELECT 1 FROM web_fleet_contracts WHERE contract_id = ?", (contract_id,)):
            return False
        db.execute("INSERT INTO web_fleet_contracts (user_id, contract_id, linked_at_utc_s) VALUES (?, ?, ?)",
                   (user_id, contract_id, now))
        return True
    return ledger.db.run(step)


def contracts_of(ledger: Ledger, user_id: int) -> list[int]:
    """The contracts linked to a user's cabinet, in number order."""
    return [r[0] for r in ledger.db.fetchall(
        "SELECT contract_id FROM web_fleet_contracts WHERE user_id = ? ORDER BY contract_id", (user_id,))]


def owns_contract(ledger: Ledger, user_id: int, contract_id: int) -> None:
    """NotFound unless the contract is linked to the user (another company's contract looks
    like no contract)."""
    if not ledger.db.fetchone("SELECT 1 FROM web_fleet_contracts WHERE user_id = ? AND contract_id = ?",
                              (user_id, contract_id)):
        raise NotFound(f"no contract {contract_id}")


def card_of(ledger: Ledger, user_id: int, card_no: str) -> FuelCard:
    """The fuel card ``card_no`` if it belongs to a contract of the user, else NotFound."""
    try:
        card = ledger.fuel_card(card_no)
    except (NotFound, InvalidInput):
        raise NotFound("no such card") from None
    owns_contract(ledger, user_id, card.contract_id)
    return card


# -- API tokens ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ApiToken:
    """A fleet API token as listed (never the token itself: only its first characters)."""

    token_id: int
    name: str
    prefix: str
    created_at_utc_s: int
    revoked: bool


def _th(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_token(ledger: Ledger, user_id: int, name: str) -> str:
    """A new API token of the user's company; shown once, only its hash is kept."""
    token = "ept_" + secrets.token_urlsafe(32)
    now = ledger.now()
    ledger.db.run(lambda db: db.execute(
        "INSERT INTO web_api_tokens (user_id, name, token_hash, prefix, created_at_utc_s) VALUES (?, ?, ?, ?, ?)",
        (user_id, name, _th(token), token[:8], now)))
    return token


def revoke_api_token(ledger: Ledger, user_id: int, token_id: int) -> None:
    """Revoke one of the user's tokens (NotFound for another's)."""
    now = ledger.now()

    def step(db: Database) -> None:
        if db.execute("UPDATE web_api_tokens SET revoked_at_utc_s = ? WHERE token_id = ? AND user_id = ? "
                      "AND revoked_at_utc_s IS NULL", (now, token_id, user_id)).rowcount != 1:
            raise NotFound(f"no live API token {token_id}")
    ledger.db.run(step)


def api_tokens(ledger: Ledger, user_id: int) -> list[ApiToken]:
    """The user's tokens, newest first."""
    return [ApiToken(r[0], r[1], r[2], r[3], r[4] is not None) for r in ledger.db.fetchall(
        "SELECT token_id, name, prefix, created_at_utc_s, revoked_at_utc_s FROM web_api_tokens WHERE user_id = ? "
        "ORDER BY token_id DESC", (user_id,))]


def api_user(ledger: Ledger, token: str) -> FleetUser | None:
    """The active user of a live token, or None."""
    if not isinstance(token, str) or not token.startswith("ept_") or len(token) > 100:
        return None
    row = ledger.db.fetchone(f"SELECT {', '.join('u.' + c for c in _USER_COLUMNS.split(', ')[:-1])}, "
                             "u.totp_secret IS NOT NULL FROM web_api_tokens t JOIN web_fleet_users u "
                             "ON u.user_id = t.user_id WHERE t.token_hash = ? AND t.revoked_at_utc_s IS NULL",
                             (_th(token),))
    if row is None or row[4] != "active":
        return None
    return _user(row)


def user_id_of_login(ledger: Ledger, login: str) -> int:
    """The user id of a fleet manager's login (lower-cased, as the cabinet stores it); NotFound if none."""
    if not isinstance(login, str) or not login.strip() or len(login) > 200:
        raise InvalidInput("a fleet user's login is 1 to 200 characters")
    uid = ledger.db.scalar("SELECT user_id FROM web_fleet_users WHERE login = ?", (login.strip().lower(),))
    if uid is None:
        raise NotFound(f"no fleet user with login {login.strip()[:40]!r}")
    return int(uid)


def block_user(ledger: Ledger, user_id: int) -> None:
    """Block a fleet manager's account (operator): its sessions end at once, its tokens stop."""
    def step(db: Database) -> None:
        if db.execute("UPDATE web_fleet_users SET status = 'blocked' WHERE user_id = ?", (user_id,)).rowcount != 1:
            raise NotFound(f"no fleet user {user_id}")
        end_sessions(db, REALM, str(user_id))
    ledger.db.run(step)



