"""Forecourt driver benchmarks against the simulators, printed as ``key: value`` lines:

    python -m benchmarks.forecourt              # 200 PTS-2 sales, 1,000 АЗТ 2.0 exchanges
    python -m benchmarks.forecourt --quick      # 40 and 200

* ``pts2_authorize_to_flowing_p99_ms``: ``Pump.authorize`` called (nozzle already up) to
  the driver's ``StateChanged(…, DISPENSING)``, over jsonPTS on loopback HTTP to
  ``hw.sim.pts2``. It includes up to one status poll period (``pts2_poll_interval_ms``):
  the controller is polled, it does not push.
* ``azt2_roundtrip_p99_ms``: one АЗТ 2.0 status request and its answer through pyserial,
  a pty and ``hw.sim.azt2`` (framing, checksum, complement checks both ways).
* ``fuel_core_transitions_per_s`` (and its lines): ``benchmarks.fuel_core.main`` when that
  module is present (the fuel lane's core, another branch).

CPU time of the whole process is printed beside the wall-clock figures, since the machine
may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import sys
import tempfile
import time
import tty
from collections.abc import Sequence
from pathlib import Path

from hw.dispensers.azt2 import Azt2Bus
from hw.dispensers.azt2_codec import Cmd
from hw.dispensers.pts2 import Pts2Controller, Pts2Pump
from hw.pump import Preset, PumpState, StateChanged
from hw.sim.azt2 import Azt2Simulator
from hw.sim.pts2 import Pts2Simulator

POLL_S = 0.02


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


async def pts2_authorize_to_flowing(sales: int) -> list[float]:
    """Milliseconds from authorize to DISPENSING, one per sale."""
    out: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        sim = Pts2Simulator({1: {1: "AI95"}}, Path(tmp) / "pts2.json", time_scale=1.0)
        await sim.start()
        try:
            async with Pts2Controller(sim.url) as ctl, Pts2Pump(ctl, 1, {1: "AI95"}, poll_interval_s=POLL_S) as p:
                events = p.events()
                sim.lift_nozzle(1, 1)
                while p.state is not PumpState.CALLING:
                    await asyncio.wait_for(anext(events), 5)
                for _ in range(sales):
                    t0 = time.perf_counter()
                    await p.authorize("AI95", 5_499, Preset.by_volume(100_000))
                    while True:
                        e = await asyncio.wait_for(anext(events), 5)
                        if isinstance(e, StateChanged) and e.new is PumpState.DISPENSING:
                            break
                    out.append((time.perf_counter() - t0) * 1000)
                    await p.stop()
                    sale = await p.unconfirmed_sale()
                    while sale is None:
                        await asyncio.sleep(POLL_S)
                        sale = await p.unconfirmed_sale()
                    await p.confirm_sale(sale.sale_id)
                    await p.reset()
        finally:
            await sim.close()
    return out


async def azt2_roundtrips(n: int) -> list[float]:
    """Milliseconds per status exchange over a pty."""
    master, slave = os.openpty()
    tty.setraw(slave)
    sim = Azt2Simulator(master, [1])
    sim.start()
    out: list[float] = []
    try:
        async with Azt2Bus(os.ttyname(slave), line_format="8N1") as bus:
            for _ in range(n):
                t0 = time.perf_counter()
                await bus.exchange(1, Cmd.STATUS)
                out.append((time.perf_counter() - t0) * 1000)
    finally:
        sim.close()
        os.close(master)
        os.close(slave)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Print the figures (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.forecourt", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples")
    a = ap.parse_args(argv)
    sales, exchanges = (40, 200) if a.quick else (200, 1_000)
    cpu0 = time.process_time()
    flowing = asyncio.run(pts2_authorize_to_flowing(sales))
    print(f"pts2_sales: {sales}")
    print(f"pts2_poll_interval_ms: {POLL_S * 1000:.0f}")
    print(f"pts2_authorize_to_flowing_p50_ms: {percentile(flowing, 0.5):.1f}")
    print(f"pts2_authorize_to_flowing_p99_ms: {percentile(flowing, 0.99):.1f}")
    cpu1 = time.process_time()
    print(f"pts2_cpu_ms_per_sale: {(cpu1 - cpu0) / sales * 1000:.2f}")
    trips = asyncio.run(azt2_roundtrips(exchanges))
    print(f"azt2_exchanges: {exchanges}")
    print(f"azt2_roundtrip_p50_ms: {percentile(trips, 0.5):.2f}")
    print(f"azt2_roundtrip_p99_ms: {percentile(trips, 0.99):.2f}")
    print(f"azt2_cpu_ms_per_exchange: {(time.process_time() - cpu1) / exchanges * 1000:.3f}", flush=True)
    if importlib.util.find_spec("benchmarks.fuel_core") is not None:
        fuel_core = importlib.import_module("benchmarks.fuel_core")
        fuel_core.main([])
    else:
        print("fuel_core_transitions_per_s: n/a (benchmarks.fuel_core is not on this branch)")


if __name__ == "__main__":
    main(sys.argv[1:])
