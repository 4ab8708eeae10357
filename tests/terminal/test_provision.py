"""A new site provisioned from the host: the real host worker (``host.worker.Worker``) on a
SQLite ledger, the real Mosquitto (the embedded broker), the real daemon, its real replica store.

The site serves only once it holds the host's snapshot of every table it needs, then decides
on host data; restarted with the broker down it serves from its store and says how old that
is; a stored replica is never replaced by an older one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp

from authz import sample
from authz.club_model import ClubCardKind
from terminal.config import SiteConfig, load_config
from terminal.daemon import Daemon
from terminal.follower import FullSnapshot
from terminal.replica_store import STORE_FILE, ReplicaStore
from wire import StopListEntry, Table

from .apitokens import auth, with_clients

T = 60
CLUB_WANTED = ["club_rules", "club_accounts", "stop_list"]


class Host:
    """The host side: keys, an embedded mosquitto, a SQLite ledger with master data, and a
    worker that can be started and stopped (it publishes a retained snapshot of every table on
    its own once it runs)."""

    def __init__(self, tmp: Path, cfg: SiteConfig) -> None:
        from host.keys import ensure_replica_keys
        from terminal.broker import embedded_broker
        from wire import new_key, write_key

        self.keys_dir = tmp / "host-keys"
        (self.keys_dir / "sites").mkdir(parents=True)
        verify = ensure_replica_keys(self.keys_dir).verify_key_file
        write_key(self.keys_dir / "sites" / f"{cfg.site_id}.key", new_key())
        self.broker = embedded_broker(tmp / "broker")
        self.ledger_url = f"sqlite:///{tmp / 'host-ledger.sqlite'}"
        self.site_config = replace(cfg, broker=replace(cfg.broker, url=self.broker.url),
                                   keys=replace(cfg.keys, site_key_file=str(self.keys_dir / "sites" / f"{cfg.site_id}.key"),
                                                host_key_file=str(verify)))
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def ledger(self) -> Any:
        from host.ledger import Ledger
        return Ledger.open(self.ledger_url)

    def load(self, *, club=None, fuel=None) -> None:
        from host.master import import_club_model, import_fuel_model
        ledger = self.ledger()
        try:
            if fuel is not None:
                import_fuel_model(ledger, fuel)
            if club is not None:
                import_club_model(ledger, club)
        finally:
            ledger.close()

    async def start_worker(self) -> None:
        from host.worker import Worker, load_keys
        self._stop = asyncio.Event()
        worker = Worker(self.ledger_url, load_keys(self.keys_dir), hostname="127.0.0.1", port=self.broker.port)
        self._task = asyncio.create_task(worker.run(self._stop), name="host worker")

    async def stop_worker(self) -> None:
        if self._task is not None and self._stop is not None:
            self._stop.set()
            await asyncio.wait_for(self._task, 30)
            self._task = None

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish as the host would (the test signs with the host's key)."""
        import aiomqtt
        async with aiomqtt.Client("127.0.0.1", self.broker.port, identifier="test-host-publisher") as c:
            await c.publish(topic, payload, qos=1)


async def _wait(cond, what: str, timeout: float = T) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def provisioned_site(tmp: Path, *, fuel_cards: int, club_accounts: int) -> AsyncIterator[ProvisionedSite]:
    """A pump and till site (the default configuration, simulation clients) provisioned from a
    host: broker, ledger loaded from a generated replica, host worker, then the site's daemon
    started on the host's snapshots; everything stopped on leaving. The pump lanes open their
    readers through pcscd: tests using it run under flock /tmp/edgepos-pcscd.lock."""
    from terminal.replica import Replica
    cfg = load_config(None)
    # a simulation: its virtual cards are made under the simulation's public test issuer key
    cfg = with_clients(replace(cfg, data_dir=tmp / "site", api=replace(cfg.api, port=0, simulation=True)))
    generated = Replica.simulated(cfg, fuel_cards=fuel_cards, club_accounts=club_accounts, compact=False)
    host = Host(tmp, cfg)
    await asyncio.to_thread(host.broker.start)
    try:
        await asyncio.to_thread(host.load, fuel=generated.fuel_model, club=generated.club_model)
        await host.start_worker()
        d = Daemon(host.site_config, None, progress_interval_s=0.3)
        await asyncio.wait_for(d.start(), T)
        try:
            yield ProvisionedSite(host, d, generated, cfg)
        finally:
            await d.stop()
    finally:
        await host.stop_worker()
        await asyncio.to_thread(host.broker.stop)


@dataclass(frozen=True)
class ProvisionedSite:
    """What :func:`provisioned_site` set up: the host, the running site, the replica the
    host's ledger was loaded from (its ``fuel`` evaluator decides as the host's data says),
    and the site's configuration."""

    host: Host
    daemon: Daemon
    generated: Any
    config: SiteConfig


def _till_site(tmp: Path) -> SiteConfig:
    cfg = load_config(None)
    return with_clients(replace(cfg, data_dir=tmp / "site", pumps=(), api=replace(cfg.api, port=0)))


async def _health(s: aiohttp.ClientSession, d: Daemon) -> dict:
    async with s.get(f"http://127.0.0.1:{d.port}/v1/health", headers=auth("/v1/health")) as r:
        assert r.status == 200
        return await r.json()


async def _open_sale(s: aiohttp.ClientSession, d: Daemon, key: str) -> tuple[int, dict]:
    path = "/v1/tills/till-1/sales"
    async with s.post(f"http://127.0.0.1:{d.port}{path}", headers={"Idempotency-Key": key} | auth(path),
                      json={"lines": [{"category": "shoes", "amount_kop": 100_000}]}) as r:
        return r.status, await r.json()


async def _attach(s: aiohttp.ClientSession, d: Daemon, sale_id: str, card_no: str, key: str) -> tuple[int, dict]:
    path = f"/v1/tills/till-1/sales/{sale_id}/card"
    async with s.post(f"http://127.0.0.1:{d.port}{path}", headers={"Idempotency-Key": key} | auth(path),
                      json={"card_no": card_no}) as r:
        return r.status, await r.json()


def test_a_new_site_serves_only_after_the_hosts_snapshots_and_restarts_from_its_store(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="edgepos")

    async def main() -> None:
        host = Host(tmp_path, _till_site(tmp_path))
        await asyncio.to_thread(host.broker.start)
        try:
            await asyncio.to_thread(host.load, club=sample.club_model(n_accounts=60, seed=8))
            # a card created at the host, through its master-data functions
            from host.master import issue_club_card
            new_card = sample.club_card_number(900_001)
            ledger = host.ledger()
            try:
                await asyncio.to_thread(issue_club_card, ledger, new_card, person_id="new-member",
                                        kind=ClubCardKind.IDENTIFIED)
            finally:
                ledger.close()

            d = Daemon(host.site_config, None, progress_interval_s=0.3)
            starting = asyncio.create_task(d.start())
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                await _wait(lambda: d.port is not None or starting.done(), "the API listening while provisioning")
                assert not starting.done()
                h = await _health(s, d)
                assert h["status"] == "provisioning" and h["serving"] is False
                assert h["provisioning"]["tables_wanted"] == CLUB_WANTED
                assert h["provisioning"]["tables_missing"] == CLUB_WANTED
                status, body = await _open_sale(s, d, "provision-early")
                assert status == 503 and body["error"]["code"] == "provisioning", body
                await asyncio.sleep(0.8)  # nothing to provision from: the worker is not up
                assert not starting.done() and not d.tills

                await host.start_worker()
                await asyncio.wait_for(starting, T)
                h = await _health(s, d)
                assert h["status"] == "ok" and h["serving"] is True
                assert h["replica"]["source"] == "host"
                assert set(h["replica"]["versions"]) == set(CLUB_WANTED)
                assert all(v >= 1 for v in h["replica"]["versions"].values())
                assert h["provisioning"]["tables_missing"] == []
                assert h["replica"]["club_cards"] == len(d.replica.club_model.cards) > 60
                # the site decides on host data: the card issued at the host is known
                assert new_card in d.replica.club_model.card_index
                status, sale = await _open_sale(s, d, "provision-1")
                assert status == 201, sale
                status, body = await _attach(s, d, sale["sale_id"], new_card, "provision-1-card")
                assert status == 200, body
                versions = h["replica"]["versions"]
            await d.stop()
            text = caplog.text
            assert "provisioning: tables held 0/3" in text and "waiting for club_rules" in text
            assert "provisioned from the host in" in text

            # restarted with the host unreachable: it serves from its store and says how old it is
            await host.stop_worker()
            await asyncio.to_thread(host.broker.stop)
            caplog.clear()
            d = Daemon(host.site_config, None)
            await asyncio.wait_for(d.start(), T)
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                    h = await _health(s, d)
                    assert h["serving"] is True and h["replica"]["versions"] == versions
                    assert isinstance(h["replica"]["age_s"], int) and h["replica"]["age_s"] >= 0
                    assert h["sync"]["connected"] is False
                    status, sale = await _open_sale(s, d, "provision-2")
                    assert status == 201, sale
                    status, body = await _attach(s, d, sale["sale_id"], new_card, "provision-2-card")
                    assert status == 200, body
            finally:
                await d.stop()
            assert "serving from the stored replica" in caplog.text and "last updated by the host" in caplog.text
        finally:
            await host.stop_worker()
            await asyncio.to_thread(host.broker.stop)
    asyncio.run(asyncio.wait_for(main(), 180))


def test_a_stored_replica_is_never_replaced_by_an_older_snapshot(tmp_path):
    async def main() -> None:
        host = Host(tmp_path, _till_site(tmp_path))
        await asyncio.to_thread(host.broker.start)
        try:
            await asyncio.to_thread(host.load, club=sample.club_model(n_accounts=20, seed=8))
            await host.start_worker()
            d = Daemon(host.site_config, None, progress_interval_s=0.3)
            await asyncio.wait_for(d.start(), T)
            await d.stop()
            # the site's store moves ahead of the host's stop list (as after a host restored from an old backup)
            ahead = StopListEntry(sample.club_card_number(900_002), 1)
            with ReplicaStore.open(host.site_config.data_dir / STORE_FILE) as store:
                store.apply(FullSnapshot(Table.STOP_LIST, 1000, (ahead,)))
            d = Daemon(host.site_config, None)
            await asyncio.wait_for(d.start(), T)
            try:
                assert d.sync is not None
                await d.sync.wait_until(lambda st: st.connected, T)
                from host.master import block_card
                ledger = host.ledger()
                try:  # a change at the host: its delta and a later snapshot are older than 1000
                    await asyncio.to_thread(block_card, ledger, d.replica.club_model.cards[0].card_no, reason="lost")
                finally:
                    ledger.close()
                await asyncio.sleep(3)
                assert d.store is not None
                assert d.store.versions()[Table.STOP_LIST] == 1000
                assert d.store.rows(Table.STOP_LIST) == (ahead,)
                assert d.sync.status().replica_versions[Table.STOP_LIST] == 1000
            finally:
                await d.stop()
        finally:
            await host.stop_worker()
            await asyncio.to_thread(host.broker.stop)
    asyncio.run(asyncio.wait_for(main(), 180))


def test_an_update_that_fails_a_consistency_rule_or_its_schema_is_refused_whole(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="edgepos")

    async def main() -> None:
        from host.worker import load_keys
        from wire import ClubAccountRow, ReplicaDelta, deltas_topic, encode

        host = Host(tmp_path, _till_site(tmp_path))
        await asyncio.to_thread(host.broker.start)
        try:
            await asyncio.to_thread(host.load, club=sample.club_model(n_accounts=20, seed=8))
            await host.start_worker()
            d = Daemon(host.site_config, None, progress_interval_s=0.3)
            await asyncio.wait_for(d.start(), T)
            try:
                assert d.store is not None and d.sync is not None
                held = d.store.versions()[Table.CLUB_ACCOUNTS]
                rows_before = d.store.rows(Table.CLUB_ACCOUNTS)
                model = d.replica.club_model
                a, b = model.accounts[0], model.accounts[1]
                card = next(c for c in model.cards if c.account_id == a.account_id)
                # signed by the host, well formed, following the version held; but two rows list one card
                bad = ReplicaDelta(Table.CLUB_ACCOUNTS, held, held + 1,
                                   (ClubAccountRow(a, (card,)), ClubAccountRow(b, (replace(card, account_id=b.account_id),))))
                frame = encode(bad, load_keys(host.keys_dir))
                await host.publish(deltas_topic(Table.CLUB_ACCOUNTS), frame)
                await d.sync.wait_until(lambda st: st.replica_errors >= 1, T)
                await _wait(lambda: "asked for a snapshot of club_accounts" in caplog.text, "the snapshot request")
                assert "refused by the evaluators, store unchanged" in caplog.text
                assert "lists club card" in caplog.text and card.card_no not in caplog.text  # masked
                assert d.store.versions()[Table.CLUB_ACCOUNTS] == held
                assert d.store.rows(Table.CLUB_ACCOUNTS) == rows_before
                assert d.sync.status().replica_versions[Table.CLUB_ACCOUNTS] == held
                assert d.replica.club_model.cards[d.replica.club_model.card_index[card.card_no]].account_id == a.account_id
                # a frame that fails its check (one bit flipped) never reaches the store
                rejected = d.sync.status().rejected_messages
                good = ReplicaDelta(Table.CLUB_ACCOUNTS, held, held + 1, (ClubAccountRow(a, (card,)),))
                flipped = bytearray(encode(good, load_keys(host.keys_dir)))
                flipped[len(flipped) // 2] ^= 0x01
                await host.publish(deltas_topic(Table.CLUB_ACCOUNTS), bytes(flipped))
                await d.sync.wait_until(lambda st: st.rejected_messages > rejected, T)
                assert d.store.versions()[Table.CLUB_ACCOUNTS] == held
                assert d.store.rows(Table.CLUB_ACCOUNTS) == rows_before
            finally:
                await d.stop()
        finally:
            await host.stop_worker()
            await asyncio.to_thread(host.broker.stop)
    asyncio.run(asyncio.wait_for(main(), 180))


def test_a_pump_and_till_site_is_provisioned_with_every_table_and_follows_the_host(tmp_path):
    """Both businesses: all eight tables; then a fuel card issued at the host and a block reach
    the running site's store and evaluator (the pump lanes open their readers through pcscd:
    run under flock /tmp/edgepos-pcscd.lock)."""
    from authz.fuel_model import FuelRequest

    async def main() -> None:
        async with provisioned_site(tmp_path, fuel_cards=300, club_accounts=40) as site:
            host, d, master, cfg = site.host, site.daemon, site.generated, site.config
            assert d.store is not None and d.sync is not None
            assert set(d.store.versions()) == set(Table)
            assert d.replica.fuel_card_count == 300 and len(d.replica.club_model.cards) == len(master.club_model.cards)
            fuel = master.fuel_model
            station = next(s for s in fuel.stations if s.station_id == cfg.station_id)
            now = int(time.time())

            def sells(card) -> str | None:  # a product the card may buy here now
                for product in station.prices_kop_per_l:
                    if master.fuel.authorize(FuelRequest(card.card_no, station.station_id, product, now,
                                                         preset_volume_ml=10_000)).approved:
                        return product
                return None
            old, product = next((c, p) for c in fuel.cards if (p := sells(c)) is not None)
            new_no = sample.card_number(900_003)
            assert not d.replica.has_fuel_card(new_no)
            from host.master import block_card, issue_fuel_card
            ledger = host.ledger()
            try:
                await asyncio.to_thread(issue_fuel_card, ledger, replace(old, card_no=new_no))
                await asyncio.to_thread(block_card, ledger, old.card_no, reason="stolen")
            finally:
                ledger.close()
            await _wait(lambda: d.replica.has_fuel_card(new_no) and d.replica.fuel.on_stop_list(old.card_no),
                        "the new card and the block at the site")
            new_decision = d.replica.fuel.authorize(FuelRequest(new_no, station.station_id, product, now,
                                                                preset_volume_ml=10_000))
            old_decision = d.replica.fuel.authorize(FuelRequest(old.card_no, station.station_id, product, now,
                                                                preset_volume_ml=10_000))
            assert old_decision.reason.name == "STOP_LIST"
            assert new_decision.approved and new_decision.volume_ml > 0, new_decision  # decided on the host's card
            assert any(r.card.card_no == new_no for r in d.store.rows(Table.FUEL_CARDS))
            assert any(r.card_no == old.card_no for r in d.store.rows(Table.STOP_LIST))
    asyncio.run(asyncio.wait_for(main(), 180))


def test_a_site_restarted_on_its_store_catches_up_with_what_changed_at_the_host_meanwhile(tmp_path):
    """Two blocks while the site is down: the retained delta is the second, a gap from the
    version stored; the site asks for a snapshot, gets it, and stores and enforces both."""
    async def main() -> None:
        host = Host(tmp_path, _till_site(tmp_path))
        await asyncio.to_thread(host.broker.start)
        try:
            await asyncio.to_thread(host.load, club=sample.club_model(n_accounts=20, seed=8))
            await host.start_worker()
            d = Daemon(host.site_config, None, progress_interval_s=0.3)
            await asyncio.wait_for(d.start(), T)
            cards = [c.card_no for c in d.replica.club_model.cards[:2]]
            assert d.store is not None
            held = d.store.versions()[Table.STOP_LIST]
            await d.stop()
            from host.master import block_card
            ledger = host.ledger()
            try:
                for no in cards:
                    await asyncio.to_thread(block_card, ledger, no, reason="lost")
            finally:
                ledger.close()
            with ReplicaStore.open(host.site_config.data_dir / STORE_FILE) as store:  # as the site left it
                assert store.versions()[Table.STOP_LIST] == held
                assert not {r.card_no for r in store.rows(Table.STOP_LIST)} & set(cards)
            d = Daemon(host.site_config, None)
            await asyncio.wait_for(d.start(), T)  # serves at once, from the store
            try:
                assert d.serving and d.store is not None
                from authz.club_model import ClubStatus

                def status(no: str) -> ClubStatus:
                    m = d.replica.club_model
                    return m.cards[m.card_index[no]].status
                await _wait(lambda: d.store.versions()[Table.STOP_LIST] >= held + 2
                            and all(status(no) == ClubStatus.BLOCKED for no in cards), "the site catching up")
                assert {r.card_no for r in d.store.rows(Table.STOP_LIST)} >= set(cards)
            finally:
                await d.stop()
        finally:
            await host.stop_worker()
            await asyncio.to_thread(host.broker.stop)
    asyncio.run(asyncio.wait_for(main(), 180))


def test_a_site_killed_while_storing_its_first_snapshots_restarts_on_whole_versions(tmp_path):
    """``edgepos run`` SIGKILLed at the store's crash points while it is being provisioned (inside
    a table's transaction, then right after a commit): each restart finds whole tables only, and
    the last run provisions the rest and serves."""
    import os
    import re
    import signal
    import subprocess
    import sys

    from terminal.config import parse_config

    from .test_daemon_start import ROOT, site_toml

    async def main() -> None:
        probe = site_toml(tmp_path, name="probe.toml")
        host = Host(tmp_path, parse_config(probe.read_text()))
        k = host.site_config.keys
        cfg = site_toml(tmp_path, extra=f'\n[broker]\nurl = "{host.broker.url}"\n\n[keys]\n'
                                        f'site_key_file = "{k.site_key_file}"\nhost_key_file = "{k.host_key_file}"\n')
        store_path = tmp_path / "data" / STORE_FILE
        await asyncio.to_thread(host.broker.start)
        try:
            await asyncio.to_thread(host.load, club=sample.club_model(n_accounts=200, seed=8))
            await host.start_worker()

            def run(crash_at: str | None) -> subprocess.Popen:
                env = dict(os.environ, PYTHONPATH=str(ROOT))
                env.pop("EDGEPOS_CRASH_AT", None)
                if crash_at:
                    env["EDGEPOS_CRASH_AT"] = crash_at
                return subprocess.Popen([sys.executable, "-m", "terminal.cli", "run", "--config", str(cfg)],
                                        env=env, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)

            p = run("replica_store.rows_written")
            assert await asyncio.to_thread(p.wait, T) == -signal.SIGKILL
            with ReplicaStore.open(store_path) as store:
                assert store.versions() == {}  # the table being written is not there at all
            p = run("replica_store.committed")
            assert await asyncio.to_thread(p.wait, T) == -signal.SIGKILL
            with ReplicaStore.open(store_path) as store:
                held = store.info()
                assert len(held) == 1
                (table, info), = held.items()
                assert len(store.rows(table)) == info.rows  # whole
            p = run(None)
            try:
                assert p.stderr is not None
                line = await asyncio.to_thread(lambda: next(x for x in p.stderr if "listening on" in x or "Traceback" in x))
                assert re.search(r"listening on http://127\.0\.0\.1:\d+", line), line
                with ReplicaStore.open(store_path) as store:
                    assert set(store.versions()) == {Table(t) for t in CLUB_WANTED}
            finally:
                p.terminate()
                assert await asyncio.to_thread(p.wait, T) == 0
        finally:
            await host.stop_worker()
            await asyncio.to_thread(host.broker.stop)
    asyncio.run(asyncio.wait_for(main(), 240))


def test_sigterm_while_waiting_for_the_host_stops_the_site_cleanly(tmp_path):
    """No host worker runs: the site waits, logs its progress, and a SIGTERM stops it (exit 0)."""
    import os
    import signal
    import subprocess
    import sys

    from terminal.config import parse_config

    from .test_daemon_start import ROOT, site_toml

    probe = site_toml(tmp_path, name="probe.toml")
    host = Host(tmp_path, parse_config(probe.read_text()))
    k = host.site_config.keys
    cfg = site_toml(tmp_path, extra=f'\n[broker]\nurl = "{host.broker.url}"\n\n[keys]\n'
                                    f'site_key_file = "{k.site_key_file}"\nhost_key_file = "{k.host_key_file}"\n')
    host.broker.start()
    try:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("EDGEPOS_CRASH_AT", None)
        p = subprocess.Popen([sys.executable, "-m", "terminal.cli", "run", "--config", str(cfg)], env=env, cwd=ROOT,
                             stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        assert p.stderr is not None
        line = next(x for x in p.stderr if "provisioning: tables held" in x or "Traceback" in x)
        assert "tables held 0/3" in line and "waiting for club_rules (no part yet)" in line, line
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
    finally:
        host.broker.stop()


def test_while_waiting_health_and_the_log_show_the_snapshot_parts_collected(tmp_path, caplog):
    """One part of three of a club_accounts snapshot is retained (no worker runs): the waiting
    site shows it collected, in /v1/health and in its progress line."""
    caplog.set_level(logging.INFO, logger="edgepos")

    async def main() -> None:
        from host.worker import load_keys
        from wire import ClubAccountRow, ReplicaSnapshot, encode, snapshot_topic

        host = Host(tmp_path, _till_site(tmp_path))
        await asyncio.to_thread(host.broker.start)
        try:
            club = sample.club_model(n_accounts=3, seed=8)
            row = ClubAccountRow(club.accounts[0], tuple(c for c in club.cards if c.account_id == club.accounts[0].account_id))
            part = encode(ReplicaSnapshot(Table.CLUB_ACCOUNTS, 5, 0, 3, (row,)), load_keys(host.keys_dir))
            import aiomqtt
            async with aiomqtt.Client("127.0.0.1", host.broker.port, identifier="test-host-retain") as c:
                await c.publish(snapshot_topic(Table.CLUB_ACCOUNTS, 0), part, qos=1, retain=True)
            d = Daemon(host.site_config, None, progress_interval_s=0.3)
            starting = asyncio.create_task(d.start())
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                    await _wait(lambda: d.port is not None, "the API listening")
                    await _wait(lambda: d.sync is not None and Table.CLUB_ACCOUNTS in d.sync.snapshots_collecting(),
                                "the part collected")
                    h = await _health(s, d)
                    assert h["provisioning"]["parts_collected"] == {"club_accounts": {"version": 5, "parts": 1, "of": 3}}
                    assert h["provisioning"]["tables_held"] == {} and h["serving"] is False
                await _wait(lambda: "club_accounts (parts 1/3 of version 5)" in caplog.text, "the progress line")
                assert not starting.done()
            finally:
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
                await d.stop()
        finally:
            await asyncio.to_thread(host.broker.stop)
    asyncio.run(asyncio.wait_for(main(), 120))
