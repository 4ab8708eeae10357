"""The edge daemon: configuration -> journal -> replica (with the journal's local spend
re-applied) -> lanes (each open transaction recovered) -> local API and device tasks.

Start order matters for "nothing lost, nothing counted twice": the replica is rebuilt from
the journal before any lane takes a request, and every lane finishes or voids what the last
run left open before the API listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from authz.fuel_model import mask_card_no
from hw.card.keys import KeyStore, SoftwareKeyStore
from hw.pump import Pump
from hw.scanner import Scan, ScanKind, Scanner, ScannerConfig, ScanNoise

from . import fuel_api
from .api import LocalApi
from .config import SiteConfig
from .events import EventBus
from .fuel import CARD_COMMITTED, PREAUTH, RESERVED, VOIDED, FuelLane, FuelTimeouts, RecordedSimPump, sim_key_store
from .fuel import TERMINAL_KINDS as FUEL_TERMINAL_KINDS
from .journal import Journal
from .replica import Replica
from .till import TERMINAL_KINDS as TILL_TERMINAL_KINDS
from .till import TillLane

log = logging.getLogger("edgepos.daemon")


def _mask_body(value: Any) -> Any:
    """A journal body for operators: every ``card_no`` masked."""
    if isinstance(value, dict):
        return {k: (mask_card_no(v) if k == "card_no" and isinstance(v, str) else _mask_body(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_body(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """A status for JSON: enums by value, mappings with text keys."""
    if isinstance(value, dict):
        return {str(getattr(k, "value", k)): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return getattr(value, "value", value)


class Daemon:
    """One site's daemon. ``async with Daemon(...)`` starts it; leaving the block stops it.

    ``keys`` is the card issuer's key store (default: ``keys.issuer_key_file`` of the
    configuration, else the simulation's public test key). ``pumps`` gives dispenser objects
    by pump id (tests); a pump not given, with dispenser "sim", is a
    :class:`terminal.fuel.RecordedSimPump` keeping its memory in ``data_dir/pumps``.
    """

    def __init__(self, config: SiteConfig, replica: Replica, *, journal_path: Path | None = None,
                 listen: bool = True, keys: KeyStore | None = None, pumps: dict[int, Pump] | None = None,
                 fuel_timeouts: FuelTimeouts | None = None) -> None:
        self.config = config
        self.replica = replica
        self.journal_path = journal_path or config.data_dir / "journal.sqlite"
        self.listen = listen
        self.bus = EventBus()
        self.journal: Journal | None = None
        self.tills: dict[str, TillLane] = {}
        #: the fuel lanes by pump id (``daemon.pumps[1].pump`` is the dispenser)
        self.pumps: dict[int, FuelLane] = {}
        self.keys = keys
        self.fuel_timeouts = fuel_timeouts
        self._pump_devices = dict(pumps or {})
        #: kopecks held per contract by open authorizations (shared by the pump lanes)
        self.fuel_holds: dict[int, int] = replica.fuel_holds
        #: the highest transaction counter seen per fuel card (from the journal, then live)
        self.card_counters_seen: dict[str, int] = {}
        self.scanners: dict[str, Scanner] = {}
        self.sync = None  #: the sync client, when a broker is configured
        self._host_stop_list: set[str] = set()
        self.api: LocalApi | None = None
        self.port: int | None = None
        self.started_at = time.time()
        self.stopped = asyncio.Event()
        self.failure: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task] = []

    # -- lifecycle --

    async def start(self) -> None:
        """Open the journal, rebuild the replica, recover lanes, then listen."""
        t0 = time.perf_counter()
        self.journal_path.parent.mkdir(parents=True, exist_ok=True)
        self.journal = Journal.open(self.journal_path, self.config.site_id,
                                    terminal_kinds=TILL_TERMINAL_KINDS | FUEL_TERMINAL_KINDS)
        replayed = self.replica.replay(self._noting_cards(self._all_records()))
        for till_cfg in self.config.tills:
            self.tills[till_cfg.till_id] = TillLane(till_cfg, self.config.site_id, self.replica, self.journal, self.bus)
        by_lane: dict[str, list] = {}
        for txn in self.journal.open_transactions():
            by_lane.setdefault(txn.lane, []).append(txn)
        for till in self.tills.values():
            await till.recover(by_lane.pop(till.lane, []))
        if self.config.pumps:
            await self._open_pumps(by_lane)
        for lane, txns in by_lane.items():
            log.error("journal has %d open transaction(s) of lane %s, which this configuration lacks", len(txns), lane)
        for lane in self.pumps.values():
            lane.start()
        if self.config.broker.url:
            await self._start_sync()
        else:
            log.warning("no broker.url configured: journaling only, nothing is sent to the host")
        for till in self.tills.values():
            if till.config.scanner_port:
                self._tasks.append(asyncio.create_task(self._scanner_task(till), name=f"scanner {till.lane}"))
        if self.listen:
            self.api = LocalApi(self)
            self._runner, self.port = await self.api.listen()  # TLS, tokens, timeouts: terminal/api.py
        log.info("site %s up in %.2f s: %d till(s), %d pump(s), %d journaled operation(s) re-applied, API %s:%s",
                 self.config.site_id, time.perf_counter() - t0, len(self.tills), len(self.pumps), replayed,
                 self.config.api.host, self.port)

    async def _start_sync(self) -> None:
        """Start the sync client: it reads the journal and sends what the host has not acked."""
        from .sync import SyncClient, load_site_keys, settings_from_config

        from wire import Table

        keys = load_site_keys(self.config.site_id, self.config.keys.site_key_file, self.config.keys.host_key_file)
        follow = {}
        if keys.host is not None and self.replica.fuel is not None:
            follow = {Table.STOP_LIST: 0}  # the locally built replica is version 0
        self.sync = SyncClient(self.journal, keys, settings_from_config(self.config.broker), on_fatal=self.fatal,
                               on_replica=self._on_replica if follow else None,
                               replica_versions=follow or None, tables=tuple(follow))
        await self.sync.__aenter__()

    def _on_replica(self, update: Any) -> None:
        """A replica update from the host, in version order. The stop list is applied at once
        (a block reaches the pumps within seconds); the other tables arrive with the host's
        snapshots in a later issue."""
        from wire import ReplicaDelta, Table

        if update.table is not Table.STOP_LIST or self.replica.fuel is None:
            return
        fuel = self.replica.fuel
        if isinstance(update, ReplicaDelta):
            changes = [(row.card_no, True) for row in update.upserts] + [(key, False) for key in update.deletes]
        else:  # a whole stop list: everything not in it comes off
            listed = {row.card_no for row in update.rows}
            was = set(fuel.stop_list_numbers()) | self._host_stop_list
            changes = [(no, False) for no in was - listed] + [(no, True) for no in listed]
            self._host_stop_list = listed
        for card_no, on in changes:
            fuel.set_stop_listed(card_no, on)
            if isinstance(update, ReplicaDelta):
                (self._host_stop_list.add if on else self._host_stop_list.discard)(card_no)
            self.bus.publish("replica.stop_list", "site", card=mask_card_no(card_no), listed=on,
                             version=update.to_version if isinstance(update, ReplicaDelta) else update.version)
        log.info("stop list at version %s: %d change(s) applied",
                 update.to_version if isinstance(update, ReplicaDelta) else update.version, len(changes))

    async def _open_pumps(self, by_lane: dict[str, list]) -> None:
        """Create each pump's lane, take its devices and recover what the last run left open."""
        keys = self.keys or self._default_keys()
        for cfg in self.config.pumps:
            pump = self._pump_devices.get(cfg.pump_id)
            if pump is None:
                pump = RecordedSimPump(cfg.pump_id, products=cfg.products or None,
                                       flow_ml_per_min=cfg.flow_ml_per_min,
                                       state_path=self.config.data_dir / "pumps" / f"pump-{cfg.pump_id}.json")
            lane = FuelLane(cfg, self.config, self.replica, self.journal, self.bus, keys, pump,
                            timeouts=self.fuel_timeouts, holds=self.fuel_holds,
                            card_counters_seen=self.card_counters_seen, on_fatal=self.fatal)
            self.pumps[cfg.pump_id] = lane
            await lane.open()
            await lane.recover(by_lane.pop(lane.lane, []))

    def _default_keys(self) -> KeyStore:
        if self.config.keys.issuer_key_file:
            return SoftwareKeyStore.from_file(self.config.keys.issuer_key_file)
        log.warning("no keys.issuer_key_file configured: using the simulation's PUBLIC test issuer key "
                    "(never on a real site)")
        return sim_key_store()

    def _noting_cards(self, records):
        """Pass journal records through, noting the fuel cards' transaction counters."""
        seen = self.card_counters_seen
        for rec in records:
            if rec.kind == PREAUTH:
                c = rec.body["card"]
                seen[c["card_no"]] = max(seen.get(c["card_no"], 0), c["expected_txn"])
            elif rec.kind in (RESERVED, CARD_COMMITTED, VOIDED) and rec.body.get("txn_counter") is not None:
                no = rec.body["card_no"]
                seen[no] = max(seen.get(no, 0), rec.body["txn_counter"])
            yield rec

    def _all_records(self, batch: int = 10_000):
        seq = 0
        while True:
            chunk = self.journal.after(seq, batch)
            if not chunk:
                return
            yield from chunk
            seq = chunk[-1].seq

    async def stop(self) -> None:
        """Stop listening, stop device tasks, close the journal."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._runner is not None:
            self.api.close_streams()
            await self._runner.cleanup()
            self._runner = None
        for lane in self.pumps.values():
            await lane.close()
        if self.sync is not None:
            from .sync import SyncError
            with contextlib.suppress(SyncError):
                await self.sync.stop()
            self.sync = None
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        self.stopped.set()

    def fatal(self, exc: BaseException) -> None:
        """Something the daemon cannot go on after (the journal failed): stop."""
        self.failure = exc
        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self.stop()))

    async def __aenter__(self) -> "Daemon":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- devices --

    async def _scanner_task(self, till: TillLane) -> None:
        cfg = till.config
        scanner = Scanner(ScannerConfig(port=cfg.scanner_port, baudrate=cfg.scanner_baudrate,
                                        suffix=cfg.scanner_suffix))
        self.scanners[cfg.till_id] = scanner
        async with scanner:
            async for ev in scanner:
                if isinstance(ev, Scan) and ev.kind is ScanKind.CLUB_CARD:
                    await till.on_scan(ev.code)
                elif isinstance(ev, ScanNoise):
                    self.bus.publish("till.scan_noise", till.lane, reason=ev.reason)

    # -- views for the API --

    def health(self) -> dict[str, Any]:
        """Up, since when, what the journal holds, the replica version."""
        return {"status": "ok" if self.failure is None else "failing", "site_id": self.config.site_id,
                "uptime_s": int(time.time() - self.started_at),
                "journal": dataclasses.asdict(self.journal.counts()) if self.journal else None,
                "replica": {"fuel_cards": len(self.replica.fuel_model.cards) if self.replica.fuel_model else 0,
                            "club_cards": len(self.replica.club_model.cards) if self.replica.club_model else 0,
                            "evaluator": (self.replica.fuel or self.replica.club).name},
                "pumps": {str(p.pump_id): p.state.value for p in self.pumps.values()},
                "sync": _plain(dataclasses.asdict(self.sync.status())) if self.sync else None}

    def lane_views(self) -> list[dict[str, Any]]:
        """Each lane and what it is doing."""
        out = []
        for till in self.tills.values():
            open_sale = till._open_sale()
            out.append({"lane": till.lane, "kind": "till", "open_sale": open_sale.sale_id if open_sale else None,
                        "scanner": till.config.scanner_port})
        for lane in self.pumps.values():
            v = lane.view(brief=True)
            out.append({"lane": lane.lane, "kind": "pump", "pump": lane.pump_id, "state": v["state"],
                        "pump_state": v["pump_state"], "card": v["card"],
                        "open_txn": v["txn"]["txn_id"] if v["txn"] else None})
        return out

    def extra_routes(self) -> list[tuple[str, str, Any]]:
        """The pump console's routes, added to the local API (terminal/fuel_api.py)."""
        return fuel_api.routes(self)

    def journal_view(self, limit: int, lane: str | None) -> list[dict[str, Any]]:
        """The latest records, card numbers masked."""
        return [{"seq": r.seq, "record_id": r.record_id, "lane": r.lane, "txn_id": r.txn_id, "kind": r.kind,
                 "at_utc_s": r.at_utc_s, "body": _mask_body(r.body)} for r in self.journal.tail(limit, lane=lane)]
