"""End to end: a limit lowered in the fleet cabinet refuses the next pump authorization at a
running site. The real host worker on the ledger the cabinet writes, the embedded mosquitto,
a pump and till site provisioned from the host (its pump lanes open their readers through
pcscd: run under flock /tmp/edgepos-pcscd.lock), the cabinet served over real HTTP."""

from __future__ import annotations

import asyncio
import time

from authz.fuel_model import FuelRequest
from host import fleet_users as fu
from host.ledger import Ledger
from host.outbox import SmtpMailer
from host.passwords import Hasher
from host.web.config import WebConfig
from ..terminal.test_provision import _wait, provisioned_site
from .client import Client
from .conftest import FAST_ARGON2, Server, listening_socket

PASSWORD = "end to end passphrase 42"


def test_a_limit_lowered_in_the_cabinet_refuses_the_next_pump_authorization(tmp_path, smtp) -> None:
    async def main() -> None:
        server = None
        async with provisioned_site(tmp_path, fuel_cards=200, club_accounts=20) as site:
            host, d, master, cfg = site.host, site.daemon, site.generated, site.config
            try:
                fuel = master.fuel_model
                station = next(s for s in fuel.stations if s.station_id == cfg.station_id)
                now = int(time.time())

                def request(card_no: str, product: str) -> FuelRequest:
                    return FuelRequest(card_no, station.station_id, product, now, preset_volume_ml=10_000)
                card, product = next((c, p) for c in fuel.cards for p in station.prices_kop_per_l
                                     if d.replica.fuel.authorize(request(c.card_no, p)).approved)
                led = Ledger.open(host.ledger_url)
                try:
                    uid = fu.create_active_user(led, Hasher(FAST_ARGON2), login="e2efleet", email="e2e@fleet.test",
                                                password=PASSWORD)
                    assert fu.link_contract(led, uid, card.contract_id, fu.issue_link_code(led, card.contract_id),
                                            address="test")
                finally:
                    led.close()
                sock = listening_socket()
                server = Server(WebConfig(db_url=host.ledger_url, base_url=f"http://127.0.0.1:{sock.getsockname()[1]}",
                                          mailer=SmtpMailer("127.0.0.1", smtp[1], "c@e2e.test"), argon2=FAST_ARGON2),
                                sock)
                c = Client(server.url)
                r = await asyncio.to_thread(c.submit, "/fleet/login", "/fleet/login",
                                            {"login": "e2efleet", "password": PASSWORD})
                assert r.status == 303
                page = await asyncio.to_thread(c.get, f"/fleet/cards/{card.card_no}")
                r = await asyncio.to_thread(c.post, f"/fleet/cards/{card.card_no}/limits", {
                    "csrf": page.csrf(), "limit_id": "77", "amount": "0", "unit": "litres", "period": "transaction",
                    "scope": "all"})
                assert r.status == 303, r.text
                await _wait(lambda: not d.replica.fuel.authorize(request(card.card_no, product)).approved,
                            "the lowered limit at the site")
                decision = d.replica.fuel.authorize(request(card.card_no, product))
                assert decision.reason.name in ("LIMIT", "LIMIT_EXHAUSTED") and decision.volume_ml == 0, decision
            finally:
                if server is not None:
                    await asyncio.to_thread(server.stop)
    asyncio.run(asyncio.wait_for(main(), 180))
