"""From a change committed at the host to the first decision at a running site that applies
it: ``python -m benchmarks.replica_latency [--changes N]``. Prints ``key: value`` lines.

Everything is real: the embedded mosquitto, a SQLite host ledger loaded with the site's
master data, a :class:`host.worker.Worker` publishing signed deltas (its default 0.2 s
publisher cycle), and the edge daemon following them through its sync client. A driver
blocks and unblocks a card at the host (``host.master``) and, from the moment the commit
returns, asks the site's own fuel evaluator for a decision on that card every millisecond
(the decision a pump would get) until the answer follows the change. Figures:
``host_change_to_enforced_p50_ms``, ``..._p99_ms``, ``..._max_ms`` over N changes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from authz import sample
from authz.fuel_model import FuelRequest
from authz.reasons import Reason


def _pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def measure(changes: int, tmp: Path) -> dict[str, float]:
    """Run ``changes`` block/unblock changes at the host; the latency of each to enforcement."""
    from host.ledger import Ledger
    from host.master import block_card, unblock_card
    from terminal.config import load_config
    from terminal.daemon import Daemon
    from terminal.replica import Replica
    from terminal.simsite import _start_host

    cfg = load_config(None)
    cfg = replace(cfg, data_dir=tmp / "site", pumps=(), api=replace(cfg.api, port=0))
    fuel = sample.fuel_model(n_cards=2_000, seed=7)
    club = sample.club_model(n_accounts=100, seed=8)
    replica = Replica(fuel, club)
    host = await _start_host(cfg, replica, tmp, lambda _m: None)
    took: list[float] = []
    try:
        d = Daemon(host.site_config, replica)
        await asyncio.wait_for(d.start(), 30)
        try:
            card = next(c for c in fuel.cards if c.card_no not in fuel.stop_list and c.status == 0)
            station = fuel.stations[0]
            req = FuelRequest(card.card_no, station.station_id, next(iter(station.prices_kop_per_l)),
                              int(time.time()), preset_volume_ml=10_000)
            ledger = Ledger.open(host.ledger_url)
            try:
                for i in range(changes):
                    blocking = i % 2 == 0
                    change = block_card if blocking else unblock_card
                    await asyncio.to_thread(change, ledger, card.card_no)
                    t0 = time.monotonic()  # the change is committed at the host
                    while (replica.fuel.authorize(req).reason is Reason.STOP_LIST) != blocking:
                        if time.monotonic() - t0 > 30:
                            raise RuntimeError(f"change {i} not enforced at the site within 30 s")
                        await asyncio.sleep(0.001)
                    took.append((time.monotonic() - t0) * 1000)
                    print(f"change {i + 1}/{changes}: {took[-1]:.0f} ms", file=sys.stderr)
            finally:
                ledger.close()
        finally:
            await d.stop()
    finally:
        await host.stop()
    return {"host_change_to_enforced_p50_ms": _pct(took, 50), "host_change_to_enforced_p99_ms": _pct(took, 99),
            "host_change_to_enforced_max_ms": max(took), "host_changes_measured": float(len(took))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.replica_latency", description=__doc__.splitlines()[0])
    p.add_argument("--changes", type=int, default=40, help="block/unblock changes to time (default 40)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="edgepos-replica-latency-") as tmp:
        out = asyncio.run(measure(args.changes, Path(tmp)))
    for k, v in out.items():
        print(f"{k}: {v:.0f}" if k.endswith("measured") else f"{k}: {v:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
