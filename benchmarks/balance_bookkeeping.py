"""The balance rule's bookkeeping on a host replica: ``python -m benchmarks.balance_bookkeeping``,
``key: value`` lines.

A host replica matches every operation a lane applies with its journal record (the balance
rule under concurrency, docs/sync.md). This measures what that costs: ``--n`` deliveries
journaled (the World of tests/test_balance_watermark.py: a real host ledger, a real journal,
a reference and a native replica), applied to each replica as the pump lane does
(``Replica.apply``), then the journal read past them (``Replica._read_spend``, what a host
delta or the start of a build does first). CPU seconds (``time.process_time``, the garbage
collector off while timed), per operation.

``--tree DIR`` measures another checkout instead (put first on ``sys.path``: e.g. the code
before, ``git archive <commit> | tar -x -C DIR`` with the compiled modules copied in), so the
two are compared by the same script, back to back.

Printed: ``deliveries``, ``apply_us_per_op_reference``, ``apply_us_per_op_native``,
``read_us_per_record_reference``, ``read_us_per_record_native``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import sys
import tempfile
import time
from pathlib import Path


async def measure(n: int) -> dict[str, float]:
    """The figures of one run of ``n`` deliveries."""
    # the test suite's World, imported by name (the checked tree does not take the tests in)
    edge = importlib.import_module("tests.host.edge")
    World = importlib.import_module("tests.test_balance_watermark").World
    CARD, CARD2 = edge.CARD, edge.CARD2

    w = World(Path(tempfile.mkdtemp(prefix="balance-bookkeeping-")))
    try:
        bodies = []
        for i in range(n):
            card = (CARD, CARD2)[i % 2]
            w.tc[card] += 2
            recs = w.s1.fuel_sale(card_no=card, delivered_ml=1_000 + i, authorized_ml=1_000 + i, tc=w.tc[card])
            await w.append(recs)
            bodies.append(dict(recs[-2].body))
        out: dict[str, float] = {"deliveries": n}
        for impl, r in w.replicas.items():
            gc.collect()  # the collector's passes over the whole heap are not the bookkeeping's
            gc.disable()
            t0 = time.process_time()
            for b in bodies:
                r.apply("fuel.completed", dict(b))
            t1 = time.process_time()
            r._read_spend()
            t2 = time.process_time()
            gc.enable()
            out[f"apply_us_per_op_{impl}"] = (t1 - t0) / n * 1e6
            out[f"read_us_per_record_{impl}"] = (t2 - t1) / n * 1e6
        return out
    finally:
        w.close()


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run, print ``key: value`` lines."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2_000, help="deliveries (default 2000)")
    ap.add_argument("--tree", type=Path, default=None, help="measure the checkout in DIR instead")
    args = ap.parse_args(argv)
    if args.n < 1:
        ap.error("--n must be at least 1")
    if args.tree is not None:
        sys.path.insert(0, str(args.tree.resolve()))
        for name in [m for m in sys.modules if m.split(".")[0] in ("tests", "terminal", "authz", "host", "native",
                                                                     "wire")]:
            del sys.modules[name]
    for key, value in asyncio.run(measure(args.n)).items():
        print(f"{key}: {value:.1f}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    main()
