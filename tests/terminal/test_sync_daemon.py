"""The daemon synced to a real host through a real broker: a block at the host reaches the
site's evaluator within seconds, and the site's journal reaches the host ledger exactly."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import aiohttp

from authz import sample
from authz.fuel_model import FuelRequest
from terminal.config import load_config
from terminal.daemon import Daemon
from terminal.replica import Replica
from terminal.simsite import SimHost, _start_host

from .apitokens import auth, with_clients

T = 30


def test_block_at_the_host_reaches_the_site_and_the_ledger_matches(tmp_path):
    async def main():
        cfg = load_config(None)
        cfg = with_clients(replace(cfg, data_dir=tmp_path / "site", pumps=(), api=replace(cfg.api, port=0)))
        fuel = sample.fuel_model(n_cards=300, seed=7)
        club = sample.club_model(n_accounts=100, seed=8)
        replica = Replica(fuel, club)
        host: SimHost = await _start_host(cfg, replica, tmp_path, lambda _m: None)
        try:
            d = Daemon(host.site_config, replica)
            await asyncio.wait_for(d.start(), T)
            try:
                card = next(c for c in fuel.cards if c.card_no not in fuel.stop_list and c.status == 0)
                station = fuel.stations[0]
                req = FuelRequest(card.card_no, station.station_id, next(iter(station.prices_kop_per_l)),
                                  int(time.time()), preset_volume_ml=10_000)
                assert replica.fuel.authorize(req).reason.name != "STOP_LIST"
                from host.ledger import Ledger
                from host.master import block_card, unblock_card
                ledger = Ledger.open(host.ledger_url)
                try:
                    t0 = time.monotonic()
                    await asyncio.to_thread(block_card, ledger, card.card_no, reason="lost")
                    while not replica.fuel.on_stop_list(card.card_no):
                        assert time.monotonic() - t0 < 15, "the block did not reach the site in 15 s"
                        await asyncio.sleep(0.05)
                    assert replica.fuel.authorize(req).reason.name == "STOP_LIST"
                    await asyncio.to_thread(unblock_card, ledger, card.card_no)
                    while replica.fuel.on_stop_list(card.card_no):
                        assert time.monotonic() - t0 < 30, "the unblock did not reach the site"
                        await asyncio.sleep(0.05)
                finally:
                    ledger.close()
                # a till sale journaled at the site reaches the host ledger
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                    base = f"http://127.0.0.1:{d.port}"
                    async with s.post(base + "/v1/tills/till-1/sales",
                                      headers={"Idempotency-Key": "sync-open-1"} | auth("/v1/tills/till-1/sales"),
                                      json={"lines": [{"category": "shoes", "amount_kop": 100_000}]}) as r:
                        assert r.status == 201
                await asyncio.wait_for(d.sync.wait_flushed(T), T + 5)
                journal_path = d.journal_path
            finally:
                await d.stop()
            await host.stop()
            from host.ledger import Ledger
            from host.reconciliation import reconcile
            ledger = Ledger.open(host.ledger_url)
            try:
                result = reconcile(ledger, [journal_path])
                assert result.ok, result.summary()
                assert result.records >= 1
            finally:
                ledger.close()
        finally:
            await host.stop()
    asyncio.run(asyncio.wait_for(main(), 120))
