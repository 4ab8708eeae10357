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
from hw.scanner import Scan, ScanKind, Scanner, ScannerConfig, ScanNoise

from .api import LocalApi
from .config import SiteConfig
from .events import EventBus
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


class Daemon:
    """One site's daemon. ``async with Daemon(...)`` starts it; leaving the block stops it."""

    def __init__(self, config: SiteConfig, replica: Replica, *, journal_path: Path | None = None,
                 listen: bool = True) -> None:
        self.config = config
        self.replica = replica
        self.journal_path = journal_path or config.data_dir / "journal.sqlite"
        self.listen = listen
        self.bus = EventBus()
        self.journal: Journal | None = None
        self.tills: dict[str, TillLane] = {}
        self.pumps: dict[int, Any] = {}
        self.scanners: dict[str, Scanner] = {}
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
        self.journal = Journal.open(self.journal_path, self.config.site_id, terminal_kinds=TILL_TERMINAL_KINDS)
        replayed = self.replica.replay(self._all_records())
        for till_cfg in self.config.tills:
            self.tills[till_cfg.till_id] = TillLane(till_cfg, self.config.site_id, self.replica, self.journal, self.bus)
        by_lane: dict[str, list] = {}
        for txn in self.journal.open_transactions():
            by_lane.setdefault(txn.lane, []).append(txn)
        for till in self.tills.values():
            await till.recover(by_lane.pop(till.lane, []))
        for lane, txns in by_lane.items():
            log.error("journal has %d open transaction(s) of lane %s, which this configuration lacks", len(txns), lane)
        for till in self.tills.values():
            if till.config.scanner_port:
                self._tasks.append(asyncio.create_task(self._scanner_task(till), name=f"scanner {till.lane}"))
        if self.listen:
            self.api = LocalApi(self)
            self._runner = web.AppRunner(self.api.app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.config.api.host, self.config.api.port)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]
        log.info("site %s up in %.2f s: %d till(s), %d pump(s), %d journaled operation(s) re-applied, API %s:%s",
                 self.config.site_id, time.perf_counter() - t0, len(self.tills), len(self.pumps), replayed,
                 self.config.api.host, self.port)

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
                    till.on_scan(ev.code)
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
                            "evaluator": (self.replica.fuel or self.replica.club).name}}

    def lane_views(self) -> list[dict[str, Any]]:
        """Each lane and what it is doing."""
        out = []
        for till in self.tills.values():
            open_sale = till._open_sale()
            out.append({"lane": till.lane, "kind": "till", "open_sale": open_sale.sale_id if open_sale else None,
                        "scanner": till.config.scanner_port})
        return out

    def journal_view(self, limit: int, lane: str | None) -> list[dict[str, Any]]:
        """The latest records, card numbers masked."""
        return [{"seq": r.seq, "record_id": r.record_id, "lane": r.lane, "txn_id": r.txn_id, "kind": r.kind,
                 "at_utc_s": r.at_utc_s, "body": _mask_body(r.body)} for r in self.journal.tail(limit, lane=lane)]
