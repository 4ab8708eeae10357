"""CPU per record of each stage of sync, one process, no broker: ``key: value`` lines.

    python -m benchmarks.sync_stages                  # 30,000 records, 3 rounds
    python -m benchmarks.sync_stages --profile decode # cProfile of one stage (top 25, stderr)

The records are those of ``benchmarks.host_ingest`` (fuel sales of 5 records, till sales of
2). Stages, each timed as CPU (``time.process_time``) per record:

- ``journal_read``: :meth:`terminal.journal.Journal.after` over the whole backlog (SQLite
  read, JSON decode of the bodies, ``Record`` objects);
- ``edge_pack``: what the sync client does per batch now: :func:`wire.codec.pack_records`
  once per record (bodies not walked: the journal checked them), then
  :func:`~wire.codec.packed_that_fit` and :func:`~wire.codec.encode_packed_batch`;
  ``edge_encode_checked``: what it did before: :func:`wire.records_that_fit` and
  :func:`wire.encode` with every payload check;
- ``decode``: :func:`wire.decode` of every frame (every check); ``decode_strict``: the same
  with the fast reader and the one-pass record check turned off (the strict path alone);
- ``ingest_sqlite`` / ``ingest_postgresql``: :func:`host.ingest.ingest_batch` of every
  batch into a fresh ledger (the database's own CPU is in-process for SQLite, in the
  server for PostgreSQL: ``ingest_postgresql_server`` is its backend's CPU).

Ratios (``*_ratio``) compare two ways measured in the same run, interleaved, best of
``--rounds``: steadier than wall-clock figures on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from authz import sample
from host import master
from host.ingest import ingest_batch
from host.ledger import Ledger
from terminal.journal import Journal, Record
from wire import Batch, batches_topic, decode, encode, records_that_fit
from wire import codec as C

from .host_ingest import KEYS, PG, SITE, make_records
from .sync import cpu_s


def cut_checked(recs: list) -> list[bytes]:
    """Frames as the client cut them before: records_that_fit, then encode (all checks)."""
    frames: list[bytes] = []
    i = 0
    while i < len(recs):
        n = records_that_fit(SITE, recs[i:i + 10_000])
        frames.append(encode(Batch(SITE, len(frames) + 1, tuple(recs[i:i + n]), sample.DAY_START_UTC), KEYS))
        i += n
    return frames


def cut_packed(recs: list) -> list[bytes]:
    """Frames as the client cuts them now: each record packed once, exact fit."""
    packed = C.pack_records(SITE, recs, bodies_checked=True)
    frames: list[bytes] = []
    i = 0
    while i < len(packed):
        n = C.packed_that_fit(SITE, len(frames) + 1, sample.DAY_START_UTC, packed[i:i + 10_000])
        frames.append(C.encode_packed_batch(SITE, len(frames) + 1, sample.DAY_START_UTC, packed[i:i + n], KEYS))
        i += n
    return frames


def decode_all(frames: list[bytes]) -> list:
    topic = batches_topic(SITE)
    return [decode(f, KEYS, topic=topic) for f in frames]


def decode_strict(frames: list[bytes]) -> list:
    fast, records = C._unpack_fast, C._records_fast
    C._unpack_fast, C._records_fast = (lambda data: None), (lambda *a: None)  # type: ignore[assignment]
    try:
        return decode_all(frames)
    finally:
        C._unpack_fast, C._records_fast = fast, records  # type: ignore[assignment]


class Timer:
    """Best-of CPU time per variant, and an optional cProfile of one."""

    def __init__(self, n: int, profile: str | None) -> None:
        self.n, self.profile = n, profile
        self.best: dict[str, float] = {}

    def run(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        prof = cProfile.Profile() if self.profile == name else None
        if prof:
            prof.enable()
        t = time.process_time()
        out = fn(*args)
        dt = time.process_time() - t
        if prof:
            prof.disable()
            pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
            self.profile = None
        us = dt * 1e6 / self.n
        self.best[name] = min(us, self.best.get(name, us))
        return out


def journal_read(path: Path) -> list:
    with Journal.open(path, SITE) as j:
        out: list[Record] = []
        after = 0
        while True:
            got = j.after(after, 10_000)
            if not got:
                return out
            out += got
            after = got[-1].seq or 0


def ingest(url: str, msgs: list, model, timer: Timer, name: str, server_pid: bool = False) -> float:
    with Ledger.open(url) as led:
        master.import_fuel_model(led, model)
        pid = led.db.scalar("SELECT pg_backend_pid()") if server_pid else None
        before = cpu_s(pid)

        def go() -> None:
            for m in msgs:
                ingest_batch(led, m)
        timer.run(name, go)
        return (cpu_s(pid) - before) * 1e6 / timer.n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=30_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--profile", help="a stage to cProfile (its first round)")
    p.add_argument("--no-postgresql", action="store_true")
    args = p.parse_args(argv)
    model = sample.fuel_model(n_cards=10_000, n_stations=50, seed=1)
    recs = make_records(args.records, model)
    timer = Timer(len(recs), args.profile)
    out: dict[str, object] = {"records": len(recs)}
    with tempfile.TemporaryDirectory(prefix="sync-stages-") as d:
        jp = Path(d) / "journal.sqlite"

        async def fill() -> None:
            with Journal.open(jp, SITE) as j:
                for i in range(0, len(recs), 5_000):
                    await j.append([Record(r.record_id, r.site_id, r.lane, r.txn_id, r.kind, r.at_utc_s, r.body)
                                    for r in recs[i:i + 5_000]])
        asyncio.run(fill())
        frames: list[bytes] = []
        for _ in range(args.rounds):
            timer.run("journal_read", journal_read, jp)
            timer.run("edge_encode_checked", cut_checked, recs)  # cut a little shorter (an upper bound of size)
            frames = timer.run("edge_pack", cut_packed, recs)
            strict = timer.run("decode_strict", decode_strict, frames)
            msgs = timer.run("decode", decode_all, frames)
            assert msgs == strict and [r for m in msgs for r in m.records] == recs, "decode lost or changed records"
        out["records_per_batch"] = round(len(recs) / len(frames))
        for _ in range(args.rounds):
            ingest(f"sqlite:///{Path(d) / f'ledger-{secrets.token_hex(3)}.sqlite'}", msgs, model, timer, "ingest_sqlite")
    server: float | None = None
    if not args.no_postgresql:
        import psycopg
        for _ in range(args.rounds):
            schema = f"bench_stages_{secrets.token_hex(4)}"
            with psycopg.connect(PG, autocommit=True) as c:
                c.execute(f"CREATE SCHEMA {schema}")
            try:
                s = ingest(f"{PG}?options=-csearch_path%3D{schema}", msgs, model, timer, "ingest_postgresql",
                           server_pid=True)
                server = s if server is None else min(server, s)
            finally:
                with psycopg.connect(PG, autocommit=True) as c:
                    c.execute(f"DROP SCHEMA {schema} CASCADE")
    for k, v in timer.best.items():
        out[f"{k}_cpu_us_per_record"] = round(v, 1)
    if server is not None:
        out["ingest_postgresql_server_cpu_us_per_record"] = round(server, 1)
    b = timer.best
    out["edge_pack_vs_encode_checked_ratio"] = round(b["edge_encode_checked"] / b["edge_pack"], 2)
    out["decode_strict_vs_decode_ratio"] = round(b["decode_strict"] / b["decode"], 2)
    for key, value in out.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
