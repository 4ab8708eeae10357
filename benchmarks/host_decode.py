"""A host worker's CPU before the database: ``python -m benchmarks.host_decode [--baseline DIR]``.

Prints ``key: value`` lines: per record, best of ``--rounds``, under the worker's garbage
collector settings (``host.worker.tune_gc``), on the batches of ``benchmarks.host_ingest``
(its record mix, cut to the edge's ~1 MiB frames):

- ``decode_us_per_record``: :func:`wire.decode` of every signed frame (every check);
- ``prepare_us_per_record``: what ingest does of the decoded batches before it touches the
  ledger (``host.ingest._prepare``, 8 batches at a time: the records read, their effects
  kept, their ``records`` rows built with the body text);
- ``decode_prepare_us_per_record``: the two together.

``--baseline DIR`` (a tree of the code before, e.g. ``git archive <commit> | tar -x -C DIR``,
its modules built with this interpreter) runs the same in a child process of each tree,
alternating, ``--rounds`` times, and adds ``*_baseline`` keys and ``decode_prepare_ratio``
(baseline over this tree).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

#: Prints the best decode and prepare CPU per record of ``rounds`` rounds as JSON.
_CHILD = r"""
import gc, json, sys, time
from authz import sample
from benchmarks.host_ingest import KEYS, SITE, cut, make_records
from host.ingest import _prepare
from host.worker import tune_gc
from wire import batches_topic, decode, encode
n, rounds = int(sys.argv[1]), int(sys.argv[2])
model = sample.fuel_model(n_cards=10_000, n_stations=50, seed=1)
frames = [encode(b, KEYS) for b in cut(make_records(n, model))]
topic = batches_topic(SITE)
tune_gc()
best = [1e9, 1e9]
for _ in range(rounds):
    gc.collect()
    t = time.process_time()
    msgs = [decode(f, KEYS, topic=topic) for f in frames]
    d = time.process_time() - t
    gc.collect()
    t = time.process_time()
    for k in range(0, len(msgs), 8):
        _prepare(None, msgs[k:k + 8], 1_700_000_000, 300, False)
    p = time.process_time() - t
    best = [min(best[0], d), min(best[1], p)]
    del msgs
print(json.dumps([best[0] * 1e6 / n, best[1] * 1e6 / n]))
"""


def run(tree: Path, records: int, rounds: int) -> tuple[float, float]:
    """(decode, prepare) CPU per record of the code in ``tree``, in a child process."""
    got = subprocess.run([sys.executable, "-c", _CHILD, str(records), str(rounds)], cwd=tree, capture_output=True,
                         text=True)
    if got.returncode:
        raise SystemExit(f"the tree {tree} failed:\n{got.stderr}")
    decode_us, prepare_us = json.loads(got.stdout.strip().splitlines()[-1])
    return decode_us, prepare_us


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=30_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--baseline", type=Path, help="a tree of the code before, run alternately with this one")
    args = p.parse_args()
    here = Path(__file__).resolve().parent.parent
    trees = [("", here)] + ([("_baseline", args.baseline)] if args.baseline else [])
    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.rounds if args.baseline else 1):
        for name, tree in reversed(trees):
            d, q = run(tree, args.records, 1 if args.baseline else args.rounds)
            if name not in best or d + q < sum(best[name]):
                best[name] = (d, q)
    for name, (d, q) in sorted(best.items()):
        print(f"decode_us_per_record{name}: {d:.2f}")
        print(f"prepare_us_per_record{name}: {q:.2f}")
        print(f"decode_prepare_us_per_record{name}: {d + q:.2f}")
    if args.baseline:
        print(f"decode_prepare_ratio: {sum(best['_baseline']) / sum(best['']):.2f}")


if __name__ == "__main__":
    main()
