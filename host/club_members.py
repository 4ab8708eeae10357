"""Club members in the payment cabinet: the registered phone and birth date of a person,
cabinet activation by barcode + birth date + an SMS code, sign-in by card number or phone
and password, password reset by SMS code, blocking a lost card (from the cabinet or by an
SMS "Блокировка" from the registered phone), and what the cabinet shows of an account.

Answers never tell whether a card or phone exists: an unknown card, a wrong birth date and
a known one all answer "if the data matched, a code was sent". Blocks go through
:func:`host.master.block_card` (a stop-list delta); activating the cabinet turns the
account's payment functions on (a club_accounts delta, as every master-data change).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime

from authz.club_model import ClubCardKind, ClubStatus, KindCaps, PointLot
from authz.fuel_model import mask_card_no
from authz.localtime import local_date, month_index
from wire import Table

from . import codes, master, ratelimit
from .db import Database
from .errors import InvalidInput, NotFound
from .fleet_users import end_sessions
from .ledger import Ledger
from .schema import CLUB_HISTORY_KINDS_SQL
from .outbox import enqueue
from .passwords import Hasher, check_new_password
from .versions import record_change

__all__ = [
    "REALM",
    "CabinetView",
    "HistoryLine",
    "block_lost",
    "finish_code",
    "has_active_card",
    "person_of_card",
    "register_member",
    "set_password",
    "sign_in",
    "sms_block",
    "start_activation",
    "start_reset",
    "view",
]

REALM = "club"


@dataclass(frozen=True, slots=True)
class HistoryLine:
    """One purchase, return or top-up of the member's cards."""

    at_utc_s: int
    kind: str
    card_no: str
    amount_kop: int | None
    record_id: str


@dataclass(frozen=True, slots=True)
class CabinetView:
    """What the cabinet shows: accounts (balance, month turnover, caps, lots), cards, history."""

    person_id: str
    accounts: tuple[dict, ...]
    history: tuple[HistoryLine, ...]


def register_member(ledger: Ledger, person_id: str, *, phone: str, birth_date: date) -> None:
    """Record (or change) a person's registered phone and birth date (the till, the hotline
    or ``edgepos host register-club-member`` does this when a card is issued): the cabinet's
    activation and password reset send their codes to that phone and ask that date.

    Raises InvalidInput for a phone not of 10 to 15 ASCII digits or a birth date not a date
    from 1900 to today, NotFound for a person who holds no club account; nothing changes then."""
    if not isinstance(phone, str) or not phone.isascii() or not phone.isdigit() or not 10 <= len(phone) <= 15:
        raise InvalidInput(f"a phone is 10 to 15 digits, got {len(str(phone))} characters")
    if not isinstance(birth_date, date) or isinstance(birth_date, datetime):
        raise InvalidInput("a birth date is a date")
    now = ledger.now()
    if not date(1900, 1, 1) <= birth_date <= datetime.fromtimestamp(now, UTC).date():
        raise InvalidInput(f"a birth date is from 1900-01-01 to today, got {birth_date.isoformat()}")

    def step(db: Database) -> None:
        if db.fetchone("SELECT 1 FROM club_accounts WHERE person_id = ?", (person_id,)) is None:
            raise NotFound(f"no club account of person {str(person_id)[:40]!r}")
        db.execute("INSERT INTO web_club_members (person_id, phone, birth_date, created_at_utc_s) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (person_id) DO UPDATE SET phone = excluded.phone, birth_date = excluded.birth_date",
                   (person_id, phone, birth_date.isoformat(), now))
    ledger.db.run(step)


def person_of_card(db: Database, card_no: str) -> str | None:
    """The person of a club card (any status), or None."""
    return db.scalar("SELECT a.person_id FROM club_cards c JOIN club_accounts a ON a.account_id = c.account_id "
                     "WHERE c.card_no = ?", (card_no,))


def has_active_card(ledger: Ledger, person_id: str) -> bool:
    """True while the person holds at least one active club card."""
    return ledger.db.fetchone("SELECT 1 FROM club_cards c JOIN club_accounts a ON a.account_id = c.account_id "
                              "WHERE a.person_id = ? AND c.status = ?", (person_id, int(ClubStatus.ACTIVE))) is not None


def _member(db: Database, person_id: str) -> tuple[str, str, str | None] | None:
    row = db.fetchone("SELECT phone, birth_date, password_hash FROM web_club_members WHERE person_id = ?", (person_id,))
    return None if row is None else (row[0], row[1], row[2])


def _send_code(db: Database, purpose: str, person_id: str, phone: str, now: int) -> None:
    code = codes.issue_code(db, purpose, person_id, now=now)
    what = "активации кабинета" if purpose == "club_activate" else "восстановления пароля"
    enqueue(db, "sms", phone, f"Код {what}: {code}. Никому его не сообщайте. Действует 10 минут.", now=now)


def start_activation(ledger: Ledger, card_no: str, birth: date, *, address: str) -> str | None:
    """Check barcode + birth date; if they match an active card, SMS a code to the registered
    phone. Returns the person (for the session to remember) or None; the caller answers the
    same either way."""
    now = ledger.now()

    def step(db: Database) -> str | None:
        if ratelimit.retry_after(db, f"club-act:{card_no}", address, now=now):
            return None
        person = person_of_card(db, card_no)
        m = None if person is None else _member(db, person)
        status = db.scalar("SELECT status FROM club_cards WHERE card_no = ?", (card_no,))
        if person is None or m is None or m[1] != birth.isoformat() or status != int(ClubStatus.ACTIVE):
            ratelimit.fail(db, f"club-act:{card_no}", address, now=now)
            return None
        _send_code(db, "club_activate", person, m[0], now)
        return person
    return ledger.db.run(step)


def start_reset(ledger: Ledger, phone: str, card_no: str, *, address: str) -> str | None:
    """Password reset: phone + card number; an SMS code if they belong together."""
    now = ledger.now()

    def step(db: Database) -> str | None:
        if ratelimit.retry_after(db, f"club-reset:{phone}", address, now=now):
            return None
        person = person_of_card(db, card_no)
        m = None if person is None else _member(db, person)
        if person is None or m is None or m[0] != phone or m[2] is None:
            ratelimit.fail(db, f"club-reset:{phone}", address, now=now)
            return None
        _send_code(db, "club_reset", person, phone, now)
        return person
    return ledger.db.run(step)


def finish_code(ledger: Ledger, purpose: str, person_id: str, code: str, *, address: str) -> bool:
    """True if ``code`` is the person's live code for ``purpose`` (spent); each wrong code
    uses a try of the code and counts against the rate limits."""
    now = ledger.now()

    def step(db: Database) -> bool:
        if ratelimit.retry_after(db, f"club-code:{person_id}", address, now=now):
            return False
        if codes.check_code(db, purpose, person_id, code, now=now):
            return True
        ratelimit.fail(db, f"club-code:{person_id}", address, now=now)
        return False
    return ledger.db.run(step)


def set_password(ledger: Ledger, hasher: Hasher, person_id: str, password: str) -> None:
    """Set the person's cabinet password (after a code proved the phone): the cabinet is
    active, the accounts' payment functions are on, every other session ends."""
    check_new_password(password)
    h = hasher.hash(password)
    now = ledger.now()

    def step(db: Database) -> None:
        if db.execute("UPDATE web_club_members SET password_hash = ? WHERE person_id = ?", (h, person_id)).rowcount != 1:
            raise NotFound("no such member")
        ids = [r[0] for r in db.fetchall("SELECT account_id FROM club_accounts WHERE person_id = ? AND activated = 0",
                                         (person_id,))]
        if ids:
            db.execute("UPDATE club_accounts SET activated = 1 WHERE person_id = ?", (person_id,))
            record_change(db, Table.CLUB_ACCOUNTS, ids, now_utc_s=now)
        end_sessions(db, REALM, person_id)
    ledger.db.run(step)


def sign_in(ledger: Ledger, hasher: Hasher, login: str, password: str, *, address: str,
            device_token: str | None) -> tuple[str | None, int]:
    """``(person, 0)`` on success, ``(None, 0)`` for a wrong login or password (answered
    alike), ``(None, seconds)`` when rate limited. ``login`` is a card number (13 digits) or
    a phone (10..15 digits); a person with no active card does not sign in."""
    now = ledger.now()
    account = f"club:{login}"
    db = ledger.db
    person = person_of_card(db, login) if len(login) == 13 else None
    if person is None:
        person = db.scalar("SELECT person_id FROM web_club_members WHERE phone = ? ORDER BY person_id", (login,))
    m = None if person is None else _member(db, person)
    trusted = person is not None and ratelimit.is_trusted_device(db, REALM, person, device_token)
    wait = db.run(lambda d: ratelimit.retry_after(d, account, address, now=now, trusted=trusted))
    if wait:
        return None, wait
    ok, rehash = hasher.verify(None if m is None else m[2], password)
    if not ok or person is None or not has_active_card(ledger, person):
        db.run(lambda d: ratelimit.fail(d, account, address, now=now))
        return None, 0

    def step(d: Database) -> None:
        ratelimit.succeed(d, account, address)
        if rehash:
            d.execute("UPDATE web_club_members SET password_hash = ? WHERE person_id = ?", (rehash, person))
    db.run(step)
    return person, 0


def block_lost(ledger: Ledger, person_id: str, card_no: str) -> None:
    """Block one of the person's cards at once (stop list) and end the person's sessions."""
    def own(db: Database) -> None:
        if person_of_card(db, card_no) != person_id:
            raise NotFound("no such card")
    ledger.db.run(own, write=False)
    master.block_card(ledger, card_no, reason="lost (club cabinet)")
    ledger.db.run(lambda db: end_sessions(db, REALM, person_id))


def sms_block(ledger: Ledger, phone: str, text: str) -> list[str]:
    """An inbound SMS: if it says "Блокировка" and comes from a registered phone, block every
    active club card of that person at once and answer by SMS. Returns the blocked cards
    (masked); anything else changes nothing."""
    if "блокировка" not in text.casefold():
        return []
    persons = [r[0] for r in ledger.db.fetchall("SELECT person_id FROM web_club_members WHERE phone = ?", (phone,))]
    blocked = []
    for person in persons:
        for (card_no,) in ledger.db.fetchall(
                "SELECT c.card_no FROM club_cards c JOIN club_accounts a ON a.account_id = c.account_id "
                "WHERE a.person_id = ? AND c.status = ? ORDER BY c.card_no", (person, int(ClubStatus.ACTIVE))):
            master.block_card(ledger, card_no, reason="lost (SMS)")
            blocked.append(mask_card_no(card_no))
        now = ledger.now()

        def step(db: Database, person: str = person, now: int = now) -> None:
            end_sessions(db, REALM, person)
            if blocked:
                enqueue(db, "sms", phone, "Карты заблокированы: " + ", ".join(blocked)
                        + ". Новую карту с переносом баланса выдадут на кассе.", now=now)
        ledger.db.run(step)
    return blocked


def view(ledger: Ledger, person_id: str, *, history_limit: int = 200) -> CabinetView:
    """The person's accounts, cards and latest history."""
    now = ledger.now()
    rules = ledger.club_rules()
    month = month_index(local_date(now, rules.tz))
    accounts = []
    all_cards: list[str] = []
    for (aid,) in ledger.db.fetchall("SELECT account_id FROM club_accounts WHERE person_id = ? ORDER BY account_id",
                                     (person_id,)):
        a = ledger.club_account(aid)
        caps: KindCaps = rules.caps[a.kind]
        lots: list[PointLot] = [lot for lot in a.lots if now < lot.expires_at_s]
        accounts.append({
            "account_id": a.account_id, "identified": a.kind is ClubCardKind.IDENTIFIED, "activated": a.activated,
            "balance_kop": a.balance_kop, "turnover_kop": a.turnover_kop if a.turnover_month >= month else 0,
            "balance_cap_kop": caps.balance_cap_kop, "turnover_cap_kop": caps.turnover_cap_kop,
            "points": a.points(now), "spendable": sum(lot.points for lot in lots if lot.matures_at_s <= now)
            - a.points_debt, "lots": lots,
            "cards": [{"no": c.card_no, "masked": mask_card_no(c.card_no), "blocked": c.status is ClubStatus.BLOCKED}
                      for c in a.cards]})
        all_cards += [c.card_no for c in a.cards]
    history = []
    if all_cards:
        rows = ledger.db.select_in(
            "SELECT at_utc_s, kind, card_no, amount_kop, record_id, body FROM records WHERE card_no IN ({in}) "
            f"AND {CLUB_HISTORY_KINDS_SQL} ORDER BY at_utc_s DESC", all_cards)
        for at, kind, card, amount, rid, body in rows[:history_limit]:
            history.append(HistoryLine(at, _kind_name(kind, json.loads(body)), card, amount, rid))
    history.sort(key=lambda h: -h.at_utc_s)
    return CabinetView(person_id, tuple(accounts), tuple(history))


def _kind_name(kind: str, body: dict) -> str:
    if kind == "till.return":
        return "возврат"
    if kind == "till.topup":
        return "пополнение"
    acc, red = body.get("accrued_points") or 0, body.get("redeemed_points") or 0
    parts = ["покупка"]
    if acc:
        parts.append(f"начислено {acc} б.")
    if red:
        parts.append(f"списано {red} б.")
    return ", ".join(parts)

