"""The simulation's cabinets (host.web.demo): on a host ledger they make a fleet manager with
the first contract linked and a club member of the first card, serve the cabinets, and the
printed sign-ins work over real HTTP."""

from __future__ import annotations

import asyncio
import re
import threading

from host.ledger import Ledger
from host.web.demo import DEMO_CLUB_PHONE, DEMO_FLEET_LOGIN, DEMO_PASSWORD, DemoCabinets

from .client import Client
from .conftest import CONTRACT, seed_club


def test_demo_cabinets_sign_ins_work(ledger: Ledger, db_url: str) -> None:
    seed_club(ledger)
    out: list[str] = []
    demo = DemoCabinets(out=out.append)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    done = threading.Event()

    def run() -> None:
        loop.run_until_complete(demo.start(db_url))
        ready.set()
        loop.run_until_complete(asyncio.to_thread(done.wait))
        loop.run_until_complete(demo.after_day())
    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert ready.wait(60)
    try:
        demo.print_sign_ins()
        base = re.match(r"cabinets: (http://127\.0\.0\.1:\d+)/fleet ", out[0]).group(1)
        assert f"login {DEMO_FLEET_LOGIN}" in out[1] and f"contract {CONTRACT} linked" in out[1]
        fleet = Client(base)
        r = fleet.submit("/fleet/login", "/fleet/login", {"login": DEMO_FLEET_LOGIN, "password": DEMO_PASSWORD})
        assert r.status == 303 and f"/fleet/contracts/{CONTRACT}" in fleet.get("/fleet").text
        club = Client(base)
        r = club.submit("/club/login", "/club/login", {"login": DEMO_CLUB_PHONE, "password": DEMO_PASSWORD})
        assert r.status == 303 and club.get("/club").status == 200
    finally:
        done.set()
        t.join(30)
