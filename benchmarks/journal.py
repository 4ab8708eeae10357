"""Journal benchmark: durable append latency and group-commit throughput, ``key: value`` lines.

    python -m benchmarks.journal                      # in a temporary folder
    python -m benchmarks.journal --dir /var/lib/edgepos --appends 5000

Every append is a real ``synchronous=FULL`` commit on the folder's file system, so the
figures are those of this machine's disk: run it where the daemon keeps its journal.
``journal_append_*``: one caller appending one pre-authorization-sized record at a time
(enqueue, writer thread, BEGIN/INSERT/COMMIT with fsync, answer back on the loop).
``journal_group_*``: ``--callers`` lanes appending one record each as fast as they can; their
appends share commits.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from terminal.ids import new_id, new_txn_id
from terminal.journal import IdemEntry, Journal, Record

SITE = "BENCH-001"


def progress(msg: str) -> None:
    """Progress on stderr, so stdout stays ``key: value`` lines."""
    print(f"[journal bench] {msg}", file=sys.stderr, flush=True)


def preauth(lane: str, i: int) -> Record:
    """A record the size of a fuel pre-authorization."""
    return Record(new_id(SITE), SITE, lane, new_txn_id(SITE, lane), "preauth", 1_700_000_000 + i,
                  {"card": "7005********1234", "product": "AI95", "price_kop_per_l": 6150,
                   "volume_ml": 40_000, "amount_kop": 246_000, "reason": "approved",
                   "limits": {"day_ml": 200_000, "month_kop": 5_000_000}})


def percentile(sorted_values: list[float], p: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


async def single_caller(journal: Journal, n: int) -> list[float]:
    times = []
    for i in range(n):
        record = preauth("pump1", i)
        entry = IdemEntry(record.record_id, "/v1/fuel/preauth", "d", 201, {"decision": "approved"})
        t = time.perf_counter()
        await journal.append([record], idem=entry)
        times.append(time.perf_counter() - t)
    return sorted(times)


async def concurrent_callers(journal: Journal, callers: int, seconds: float) -> tuple[int, float]:
    done = 0
    stop_at = time.perf_counter() + seconds

    async def lane(n: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < stop_at:
            await journal.append([preauth(f"pump{n}", i)])
            i += 1
            done += 1

    t = time.perf_counter()
    await asyncio.gather(*(lane(n) for n in range(callers)))
    return done, time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.journal", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, help="folder for the journal file (default: a temporary one)")
    ap.add_argument("--appends", type=int, default=3000, help="single-caller appends (default 3000)")
    ap.add_argument("--callers", type=int, default=8, help="concurrent callers (default 8)")
    ap.add_argument("--seconds", type=float, default=3.0, help="concurrent run length (default 3)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "journal.sqlite"
        with Journal.open(path, SITE) as journal:
            progress(f"{args.appends} single-caller appends in {path}")
            asyncio.run(single_caller(journal, 200))  # warm up: file growth, page cache
            times = asyncio.run(single_caller(journal, args.appends))
            commits_before = journal.commits
            progress(f"{args.callers} concurrent callers for {args.seconds} s")
            done, elapsed = asyncio.run(concurrent_callers(journal, args.callers, args.seconds))
            commits = journal.commits - commits_before
    print(f"journal_append_p50_ms: {percentile(times, 50) * 1e3:.3f}")
    print(f"journal_append_p99_ms: {percentile(times, 99) * 1e3:.3f}")
    print(f"journal_append_max_ms: {times[-1] * 1e3:.3f}")
    print(f"journal_group_callers: {args.callers}")
    print(f"journal_group_records_per_s: {done / elapsed:.0f}")
    print(f"journal_group_records_per_commit: {done / max(commits, 1):.2f}")


if __name__ == "__main__":
    main()
