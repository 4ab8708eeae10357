"""The cabinets beside a simulated day (``edgepos simulate``): demo sign-ins made on the
simulation's host ledger (a fleet manager with the first contract linked, a club member of
the first club card), the cabinets served on loopback, their address and sign-ins printed;
with ``keep_serving`` the host and the cabinets stay up after the day until interrupted, so a
newcomer can look at the day's transactions and documents."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from aiohttp import web

from host import club_members, fleet_users
from host.ledger import Ledger
from host.passwords import Hasher

from .access_log import SafeAccessLogger
from .app import create_app
from .config import WebConfig

__all__ = ["DEMO_CLUB_PHONE", "DEMO_FLEET_LOGIN", "DEMO_PASSWORD", "DemoCabinets"]

DEMO_FLEET_LOGIN = "demo-fleet"
DEMO_PASSWORD = "demo cabinet passphrase"  # a simulation's demo sign-in, printed on purpose
DEMO_CLUB_PHONE = "79000000001"


@dataclass
class DemoCabinets:
    """Starts the cabinets on a simulation's ledger and says how to sign in."""

    port: int = 0  #: 0: any free port (the address printed is the real one)
    keep_serving: bool = False
    out: Callable[[str], None] = field(default=lambda line: print(line, flush=True))
    runner: web.AppRunner | None = None
    lines: list[str] = field(default_factory=list)

    def _prepare(self, ledger_url: str, base_url: str) -> list[str]:
        hasher = Hasher()
        led = Ledger.open(ledger_url)
        try:
            lines = [(f"cabinets: {base_url}/fleet (fleet manager), {base_url}/club (club member), "
                      f"{base_url}/api/v1/openapi.json (fleet API)")]
            cid = led.db.scalar("SELECT min(contract_id) FROM contracts")
            if cid is not None:
                uid = fleet_users.create_active_user(led, hasher, login=DEMO_FLEET_LOGIN, email="demo@fleet.invalid",
                                                     password=DEMO_PASSWORD, company="Демо")
                code = fleet_users.issue_link_code(led, cid)
                fleet_users.link_contract(led, uid, cid, code, address="simulation")
                lines.append(f"  fleet sign-in: login {DEMO_FLEET_LOGIN}, password '{DEMO_PASSWORD}' "
                             f"(contract {cid} linked)")
            card = led.db.scalar("SELECT min(card_no) FROM club_cards WHERE status = 0")
            if card is not None:
                person = led.db.scalar("SELECT a.person_id FROM club_cards c JOIN club_accounts a "
                                       "ON a.account_id = c.account_id WHERE c.card_no = ?", (card,))
                club_members.register_member(led, person, phone=DEMO_CLUB_PHONE, birth_date=date(1990, 1, 1))
                club_members.set_password(led, hasher, person, DEMO_PASSWORD)
                lines.append(f"  club sign-in: phone {DEMO_CLUB_PHONE}, password '{DEMO_PASSWORD}'")
            return lines
        finally:
            led.close()

    async def start(self, ledger_url: str) -> None:
        """Make the demo sign-ins and serve the cabinets on 127.0.0.1:``port``."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", self.port))
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.lines = await asyncio.to_thread(self._prepare, ledger_url, base)
        self.runner = web.AppRunner(create_app(WebConfig(db_url=ledger_url, base_url=base)),
                                    access_log_class=SafeAccessLogger)
        await self.runner.setup()
        await web.SockSite(self.runner, sock).start()
        for line in self.lines:
            print(f"edgepos: {line}", file=sys.stderr, flush=True)

    def print_sign_ins(self) -> None:
        """The cabinets' address and the demo sign-ins, to stdout."""
        for line in self.lines:
            self.out(line)

    async def after_day(self) -> None:
        """With ``keep_serving`` serve until interrupted; then stop the cabinets."""
        try:
            if self.keep_serving:
                print("edgepos: the host and the cabinets keep running: press Ctrl-C to stop", file=sys.stderr,
                      flush=True)
                await asyncio.Event().wait()
        finally:
            if self.runner is not None:
                await self.runner.cleanup()
