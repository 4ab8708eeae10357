"""The fuel lane's core alone (terminal.fuel_core): transitions per second, no I/O.

    python -m benchmarks.fuel_core               # 20,000 whole sales
    python -m benchmarks.fuel_core --sales 2000  # quicker

Each sale is the core's whole happy path, 11 events (card read, PIN verified, authorize,
reserve done, preset done, progress, delivery ended, totals read, settle done, the next card
read, card gone) answered by a driver that performs nothing: what is measured is
FuelCore.handle and the typed bodies it builds. Printed as ``key: value`` lines; CPU time
(process time) is printed beside the wall-clock rate, since the machine may be shared.
``benchmarks.forecourt`` calls :func:`main`.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import sys
import time
from collections.abc import Sequence

from authz.fuel_model import FuelDecision, FuelRequest, LimitCounter
from authz.reasons import Reason
from terminal import fuel_core as core
from terminal.fuel_core import FuelCore, FuelTxn, Settle, write_id_of
from wire.bodies import Counting, NozzleTotals

CARD = "7005830000000017"


def _ids() -> itertools.count:
    return itertools.count(1)


def one_sale(c: FuelCore, n: int, ids: itertools.count) -> int:
    """Drive one whole sale through ``c``; returns the number of events handled."""
    def rid() -> str:
        return f"bench-{next(ids):026d}"
    req = FuelRequest(CARD, 1001, "AI95", 1_700_000_000, 20_000, None)
    dec = FuelDecision(Reason.OK, 20_000, 120_000, 6_000, 6_150, 1)
    pid = rid()
    txn = FuelTxn(f"t{n}", req, dec, 42, 2 * n, write_id_of(pid), write_id_of(rid()),
                  (Counting(1, True, True, 19_000),), ((1, LimitCounter(0, 19_000)),), 6_000, n,
                  totals_before=NozzleTotals(1, 20_000 * n, 120_000 * n), preauth_id=pid)
    events = (core.CardRead(object(), CARD, True, 3), core.PinChecked("verified", 3), core.AuthorizeAsked(txn),
              core.ReserveDone(True, 2 * n + 1), core.PresetDone(n + 1), core.Progress(1_000, 6_000),
              core.DeliveryEnded(n + 1, 20_000, "preset_reached", str(n + 1)),
              core.TotalsRead(NozzleTotals(1, 20_000 * (n + 1), 120_000 * (n + 1))), core.SettleDone(Settle.DONE),
              core.CardRead(object(), CARD, True, 3), core.CardGone())
    for ev in events:
        c.handle(ev)
    return len(events)


def run(sales: int) -> dict[str, float]:
    """Run ``sales`` sales through one core; the rates and the journaled records per sale."""
    ids = _ids()
    c = FuelCore(lambda: f"bench-{next(ids):026d}")
    one_sale(c, 0, ids)  # warm up, and check the path ends where it should
    assert c.state is core.LaneState.IDLE and c.txn is None
    gc.disable()
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        events = sum(one_sale(c, n, ids) for n in range(1, sales + 1))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        gc.enable()
    return {"events": events, "wall_s": wall, "cpu_s": cpu}


def main(argv: Sequence[str] | None = None) -> None:
    """Print ``fuel_core_transitions_per_s`` (wall clock) and its CPU-time twin."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.fuel_core", description=__doc__.split("\n")[0])
    p.add_argument("--sales", type=int, default=20_000, help="whole sales to run (default 20,000)")
    a = p.parse_args(argv)
    r = run(a.sales)
    print(f"fuel_core_sales: {a.sales}")
    print(f"fuel_core_events: {int(r['events'])}")
    print(f"fuel_core_transitions_per_s: {r['events'] / r['wall_s']:.0f}")
    print(f"fuel_core_transitions_per_cpu_s: {r['events'] / r['cpu_s']:.0f}")
    print(f"fuel_core_sale_us: {r['wall_s'] / a.sales * 1e6:.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
