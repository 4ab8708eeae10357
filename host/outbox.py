"""Messages to users leave through an outbox: a row written in the same transaction as the
change that needs it (a registration and its activation link commit together), sent later
by :func:`deliver`. E-mail goes over SMTP (:class:`SmtpMailer`), SMS through a pluggable
:class:`SmsGateway` (:class:`FileSmsGateway` appends JSON lines to a file: the test and
development gateway). A sent message's body is emptied: a sent code is not kept. Nothing
here logs a recipient's code or link (log lines carry the message id and channel only).
"""

from __future__ import annotations

import json
import logging
import smtplib
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from .db import Database
from .ledger import Ledger

__all__ = ["FileSmsGateway", "Message", "SmsGateway", "SmtpMailer", "deliver", "due", "enqueue"]

log = logging.getLogger("edgepos.host.outbox")


@dataclass(frozen=True, slots=True)
class Message:
    """One message waiting in the outbox."""

    msg_id: int
    channel: str  #: email | sms
    recipient: str
    subject: str
    body: str


class SmsGateway(Protocol):
    """Something that sends an SMS (an operator's HTTP API in production)."""

    def send_sms(self, phone: str, text: str) -> None:
        """Send ``text`` to ``phone``; raise OSError if it could not be handed over."""


class FileSmsGateway:
    """An SMS gateway that appends ``{"to": phone, "text": text}`` lines to a file: what the
    tests and a development host use (nothing leaves the machine)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def send_sms(self, phone: str, text: str) -> None:
        """Append one message to the file (flushed before returning)."""
        line = json.dumps({"to": phone, "text": text}, ensure_ascii=False) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()


class SmtpMailer:
    """E-mail over SMTP (plain, or STARTTLS when ``starttls``), one connection per batch."""

    def __init__(self, host: str, port: int, sender: str, *, starttls: bool = False, timeout_s: float = 10.0) -> None:
        self.host, self.port, self.sender, self.starttls, self.timeout_s = host, port, sender, starttls, timeout_s

    def send_mail(self, messages: list[tuple[str, str, str]]) -> None:
        """Send ``(to, subject, body)`` messages; raises OSError / smtplib errors."""
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
            if self.starttls:
                smtp.starttls()
            for to, subject, body in messages:
                m = EmailMessage()
                m["From"], m["To"], m["Subject"] = self.sender, to, subject
                m.set_content(body)
                smtp.send_message(m)


def enqueue(db: Database, channel: str, recipient: str, body: str, *, subject: str = "", now: int) -> int:
    """Put a message in the outbox (inside the caller's transaction); returns its id."""
    if channel not in ("email", "sms"):
        raise ValueError(f"unknown outbox channel {channel!r}")
    return db.execute("INSERT INTO web_outbox (channel, recipient, subject, body, created_at_utc_s) "
                      "VALUES (?, ?, ?, ?, ?) RETURNING msg_id", (channel, recipient, subject, body, now)).fetchone()[0]


def due(ledger: Ledger, limit: int = 100) -> list[Message]:
    """Messages not sent yet, oldest first."""
    return [Message(*r) for r in ledger.db.fetchall(
        "SELECT msg_id, channel, recipient, subject, body FROM web_outbox WHERE sent_at_utc_s IS NULL "
        "AND tries < 10 ORDER BY msg_id LIMIT ?", (limit,))]


def send(messages: list[Message], mailer: SmtpMailer | None, sms: SmsGateway | None) -> dict[int, str | None]:
    """Send each message; returns msg_id -> None (sent) or why not. No database here, so it
    runs off the ledger's thread."""
    out: dict[int, str | None] = {}
    mails = [m for m in messages if m.channel == "email"]
    if mails:
        if mailer is None:
            out.update({m.msg_id: "no SMTP server configured" for m in mails})
        else:
            try:
                mailer.send_mail([(m.recipient, m.subject, m.body) for m in mails])
                out.update({m.msg_id: None for m in mails})
            except (OSError, smtplib.SMTPException) as exc:
                out.update({m.msg_id: f"SMTP: {type(exc).__name__}" for m in mails})
    for m in messages:
        if m.channel == "sms":
            if sms is None:
                out[m.msg_id] = "no SMS gateway configured"
                continue
            try:
                sms.send_sms(m.recipient, m.body)
                out[m.msg_id] = None
            except OSError as exc:
                out[m.msg_id] = f"SMS: {type(exc).__name__}"
    return out


def mark(ledger: Ledger, results: dict[int, str | None]) -> None:
    """Record what :func:`send` did: sent messages lose their body, failures count a try."""
    now = ledger.now()

    def step(db: Database) -> None:
        for msg_id, err in results.items():
            if err is None:
                db.execute("UPDATE web_outbox SET sent_at_utc_s = ?, body = '', tries = tries + 1 WHERE msg_id = ?",
                           (now, msg_id))
            else:
                db.execute("UPDATE web_outbox SET tries = tries + 1, last_error = ? WHERE msg_id = ?", (err, msg_id))
    ledger.db.run(step)
    for msg_id, err in results.items():
        if err is None:
            log.info("outbox: message %d sent", msg_id)
        else:
            log.warning("outbox: message %d not sent: %s", msg_id, err)


def deliver(ledger: Ledger, mailer: SmtpMailer | None, sms: SmsGateway | None) -> int:
    """Send everything due, in one go (synchronous); returns how many were sent."""
    msgs = due(ledger)
    if not msgs:
        return 0
    results = send(msgs, mailer, sms)
    mark(ledger, results)
    return sum(1 for e in results.values() if e is None)
