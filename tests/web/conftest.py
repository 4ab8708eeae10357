"""Fixtures of the cabinet tests: a real SMTP server (aiosmtpd) on loopback, an SMS file
gateway, the cabinets' aiohttp application served on a real loopback port from its own
thread, and a ledger with a contract and cards made through host.master.

The argon2id cost is lowered here (t=1, m=8 MiB) so a sign-in costs milliseconds in tests;
the production parameters are measured in benchmarks/cabinet_signin.py.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import date
from email.message import Message
from pathlib import Path

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from authz.fuel_model import (
    Contract,
    FuelCard,
    Limit,
    LimitUnit,
    Period,
    Product,
    ProductGroup,
    Tariff,
)
from host import master
from host.ledger import Ledger
from host.outbox import FileSmsGateway, SmtpMailer
from host.passwords import Argon2Parameters
from host.web.access_log import SafeAccessLogger
from host.web.app import create_app
from host.web.config import WebConfig

from .client import Client

FAST_ARGON2 = Argon2Parameters(time_cost=1, memory_kib=8192, parallelism=1)
CONTRACT = 1001
OTHER_CONTRACT = 1002
CARD = "7005830000000001"
CARD2 = "7005830000000002"
OTHER_CARD = "7005830000000009"
START = 1_795_000_000  # 2026-11-18


class Clock:
    """A settable clock shared by the ledger and the test."""

    def __init__(self, now: int = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Mailbox:
    """What the SMTP server received."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._cv = threading.Condition()

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        with self._cv:
            self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
            self._cv.notify_all()
        return "250 OK"

    def wait(self, n: int, timeout: float = 10.0) -> list[Message]:
        """The first ``n`` messages, waiting for them to arrive (fails if they do not)."""
        with self._cv:
            if not self._cv.wait_for(lambda: len(self.messages) >= n, timeout):
                raise AssertionError(f"{len(self.messages)} e-mails arrived, expected {n}")
            return list(self.messages[:n])


def body_of(m: Message) -> str:
    return m.get_content()  # type: ignore[attr-defined]


class SmsBox:
    """The SMS file gateway's file, read back."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text("utf-8").splitlines() if line]

    def wait(self, n: int, timeout: float = 10.0) -> list[dict]:
        """The first ``n`` SMS, waiting for them (fails if they do not come)."""
        deadline = time.monotonic() + timeout
        while len(msgs := self.all()) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(msgs)} SMS sent, expected {n}")
            time.sleep(0.02)
        return msgs[:n]


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    """A real SMTP server on 127.0.0.1 and what it received."""
    box = Mailbox()
    probe = listening_socket()
    port = probe.getsockname()[1]
    probe.close()
    ctl = Controller(box, hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        yield box, port
    finally:
        ctl.stop()


def listening_socket() -> socket.socket:
    """A TCP socket bound to a free loopback port (known before the app is configured)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


class Server:
    """The cabinets' app served on a loopback port from a thread of its own."""

    def __init__(self, cfg: WebConfig, sock: socket.socket) -> None:
        self.cfg = cfg
        self.loop = asyncio.new_event_loop()
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        self.error: BaseException | None = None

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                # the access logger edgepos host serve uses (the log test reads its lines)
                self.runner = web.AppRunner(create_app(cfg), access_log_class=SafeAccessLogger)
                self.loop.run_until_complete(self.runner.setup())
                self.loop.run_until_complete(web.SockSite(self.runner, sock).start())
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                self.error = exc
                ready.set()
                return
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.runner.cleanup())
        self.thread = threading.Thread(target=run, name="cabinet-server", daemon=True)
        self.thread.start()
        ready.wait(30)
        if self.error is not None:
            raise self.error

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


def seed(led: Ledger) -> None:
    """Two contracts with cards, through the host's master-data functions."""
    master.put_products(led, [Product("AI95", "АИ-95", ProductGroup.FUEL), Product("DT", "ДТ", ProductGroup.FUEL),
                              Product("COFFEE", "Кофе", ProductGroup.SHOP)])
    master.put_station(led, 501, region=77, groups=[ProductGroup.FUEL, ProductGroup.SHOP])
    master.set_price(led, 501, "AI95", 5_500)
    for cid, name in ((CONTRACT, "ООО «Ромашка»"), (OTHER_CONTRACT, "АО «Чужой»")):
        master.create_contract(led, Contract(cid, "Europe/Moscow", 77, Tariff.REGIONAL, 500_000_00, 100_000_00, ()),
                               name=name)
    exp = date(2028, 12, 31)
    master.issue_fuel_card(led, FuelCard(CARD, CONTRACT, exp, frozenset({ProductGroup.FUEL}),
                                         (Limit(1, LimitUnit.MILLILITRES, Period.DAY, 200_000),)))
    master.issue_fuel_card(led, FuelCard(CARD2, CONTRACT, exp, frozenset({ProductGroup.FUEL, ProductGroup.SHOP}), ()))
    master.issue_fuel_card(led, FuelCard(OTHER_CARD, OTHER_CONTRACT, exp, frozenset({ProductGroup.FUEL}), ()))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'host.sqlite'}"


@pytest.fixture
def ledger(db_url: str, clock: Clock) -> Iterator[Ledger]:
    led = Ledger.open(db_url, clock=clock)
    seed(led)
    yield led
    led.close()


@pytest.fixture
def sms(tmp_path: Path) -> SmsBox:
    return SmsBox(tmp_path / "sms.jsonl")


@pytest.fixture
def server(ledger: Ledger, db_url: str, clock: Clock, smtp, sms: SmsBox) -> Iterator[Server]:
    _, port = smtp
    sock = listening_socket()
    cfg = WebConfig(db_url=db_url, base_url=f"http://127.0.0.1:{sock.getsockname()[1]}",
                    mailer=SmtpMailer("127.0.0.1", port, "cabinet@edgepos.test"),
                    sms=FileSmsGateway(sms.path), argon2=FAST_ARGON2, clock=clock, sms_inbound_token="gw-secret",
                    outbox_interval_s=0.05)
    srv = Server(cfg, sock)
    yield srv
    srv.stop()


@pytest.fixture
def client(server: Server) -> Client:
    return Client(server.url)


def club_no(first12: str) -> str:
    """A valid EAN-13 club card number."""
    from host.checks import ean13_check_digit
    return first12 + ean13_check_digit(first12)


CLUB_CARD = club_no("200000000001")
CLUB_NEW_CARD = club_no("200000000002")
CLUB_PHONE = "79001234567"
CLUB_BIRTH = date(1990, 5, 17)
CLUB_PERSON = "P1"


def seed_club(led: Ledger) -> None:
    """A club member with an identified account (balance, turnover, two lots) and a card."""
    from authz.club_model import (
        ClubAccount,
        ClubCard,
        ClubCardKind,
        ClubModel,
        ClubRules,
        PointLot,
    )
    from authz.localtime import local_date, month_index
    from host import club_members
    rules = ClubRules()
    month = month_index(local_date(START, rules.tz))
    acc = ClubAccount(1, ClubCardKind.IDENTIFIED, activated=False, balance_kop=12_345_00, turnover_month=month,
                      turnover_kop=2_000_00, lots=(PointLot(1, 150, START - 86_400, START + 80 * 86_400),
                                                   PointLot(2, 40, START + 2 * 86_400, START + 90 * 86_400)))
    master.import_club_model(led, ClubModel(rules=rules, accounts=(acc,), cards=(ClubCard(CLUB_CARD, 1),)),
                             persons={1: CLUB_PERSON})
    club_members.register_member(led, CLUB_PERSON, phone=CLUB_PHONE, birth_date=CLUB_BIRTH)


@pytest.fixture
def club_ledger(ledger: Ledger) -> Ledger:
    seed_club(ledger)
    return ledger
