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
- ``edge_journal_pack``: the sync client's read and pack of a backlog, 3,000 records at a
  time: :meth:`~terminal.journal.Journal.after_rows` and
  :func:`wire.codec.pack_record_rows` (plain rows, checked in C);
  ``edge_journal_pack_records``: the same as before, through ``Record`` and ``WireRecord``
  objects (:meth:`~terminal.journal.Journal.after`, :func:`wire.codec.pack_records`);
  ``edge_journal_pack_stored``: what the client does now: the bodies as stored
  (:meth:`~terminal.journal.Journal.after_stored`), their JSON text packed in C
  (``wire._jsonpack``), no object per body value;
- ``decode``: :func:`wire.decode` of every frame (every check); ``decode_general``: the same
  without the native batch reader (``wire._wirecheck.read_batch``: the frame read into dicts,
  then the record check, as before issue 12's eighth pass); ``decode_strict``: the same
  with the fast reader and the one-pass record check turned off (the strict path alone);
  ``decode_python_frame``: with the frame read by msgpack and the repack check (before
  ``wire._wirecheck.read_frame``);
  ``decode_python_records``: with the one-pass record check in Python
  (``wire.codec._records_fast_py``) instead of the native one (``wire._wirecheck``);
- ``ingest_sqlite`` / ``ingest_postgresql``: :func:`host.ingest.ingest_batch` of every
  batch into a fresh ledger (the database's own CPU is in-process for SQLite, in the
  server for PostgreSQL: ``ingest_postgresql_server`` is its backend's CPU);
  ``ingest_*_grouped``: the same with ``--per-txn`` batches of the site per transaction
  (:func:`host.ingest.ingest_site_batches`, what a worker does while a backlog flushes);
- ``publish_sqlite`` / ``publish_postgresql``: the replica publisher's fold after every
  ``--fold-every`` batches ingested (``flush_dirty``, ``pending``, each delta signed,
  ``mark_sent`` once a table), only its calls timed, per record ingested; ``publish_*_deltas`` counts them;
  ``publish_sqlite_rows_checked``: the same with every delta encoded with decode's row
  checks (``wire.encode`` without ``rows_checked``, as before issue 12's fourth pass).

Ratios (``*_ratio``) compare two ways measured in the same run, interleaved, best of
``--rounds``: steadier than wall-clock figures on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import pstats
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from authz import sample
from host import master
from host.ingest import ingest_batch, ingest_site_batches
from host.ledger import Ledger
from host.publisher import Publisher, delta_publication
from host.worker import tune_gc
from terminal.journal import Journal, Record
from wire import (
    Batch,
    SiteKeys,
    Table,
    WireRecord,
    batches_topic,
    decode,
    encode,
    new_replica_signing_key,
    records_that_fit,
)
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


@contextlib.contextmanager
def without_batch_reader() -> Iterator[None]:
    """decode without the native batch reader (``wire._wirecheck.read_batch``, issue 12's
    eighth pass): the frame read into dicts, then the record check, as before it."""
    batch = C._batch_fast
    C._batch_fast = lambda *a: None  # type: ignore[assignment]
    try:
        yield
    finally:
        C._batch_fast = batch  # type: ignore[assignment]


def decode_general(frames: list[bytes]) -> list:
    """decode's general path: the native frame reader and record check (before the batch reader)."""
    with without_batch_reader():
        return decode_all(frames)


def decode_strict(frames: list[bytes]) -> list:
    fast, records = C._unpack_fast, C._records_fast
    C._unpack_fast, C._records_fast = (lambda data: None), (lambda *a: None)  # type: ignore[assignment]
    try:
        with without_batch_reader():
            return decode_all(frames)
    finally:
        C._unpack_fast, C._records_fast = fast, records  # type: ignore[assignment]


def decode_python_frame(frames: list[bytes]) -> list:
    """decode with the frame read by msgpack's unpacker and the repack check (before the
    native frame reader, ``wire._wirecheck.read_frame``)."""
    fast = C._unpack_fast
    C._unpack_fast = C._unpack_fast_py  # type: ignore[assignment]
    try:
        with without_batch_reader():
            return decode_all(frames)
    finally:
        C._unpack_fast = fast  # type: ignore[assignment]


def decode_python_records(frames: list[bytes]) -> list:
    records = C._records_fast
    C._records_fast = C._records_fast_py  # type: ignore[assignment]
    try:
        with without_batch_reader():
            return decode_all(frames)
    finally:
        C._records_fast = records  # type: ignore[assignment]


class Timer:
    """Best-of CPU time per variant, and an optional cProfile of one."""

    def __init__(self, n: int, profile: str | None) -> None:
        self.n, self.profile = n, profile
        self.best: dict[str, float] = {}

    def run(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        gc.collect()  # each stage starts with no garbage of the last one to collect
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


def journal_pack(path: Path, rows: bool | str) -> list[bytes]:
    """What the sync client does to cut batches from a backlog: read the journal 3,000 records
    at a time and pack them; ``rows`` "stored": as plain rows with the stored JSON text of
    each body (``after_stored``, ``pack_record_rows`` packing the text in C, as now); True: as
    plain rows with decoded bodies (``after_rows``, ``pack_record_rows``, before); False: as
    ``Record`` and ``WireRecord`` objects (``after``, ``pack_records``, before that)."""
    out: list[bytes] = []
    got: list[Any]
    with Journal.open(path, SITE) as j:
        after = 0
        while True:
            if rows == "stored":
                got = j.after_stored(after, 3_000)
                packed = C.pack_record_rows(SITE, got, bodies_checked=True)
            elif rows:
                got = j.after_rows(after, 3_000)
                packed = C.pack_record_rows(SITE, got, bodies_checked=True)
            else:
                recs = j.after(after, 3_000)
                got = [(r.seq,) for r in recs]
                packed = C.pack_records(SITE, [WireRecord.from_record(r) for r in recs], bodies_checked=True)
            if not got:
                return out
            out += packed
            after = got[-1][0]


def group(msgs: list, k: int) -> list[list]:
    """``msgs`` in runs of ``k`` (what a worker takes together while a backlog flushes)."""
    return [msgs[i:i + k] for i in range(0, len(msgs), k)]


def ingest(url: str, msgs: list, model, timer: Timer, name: str, server_pid: bool = False, per_txn: int = 1) -> float:
    with Ledger.open(url) as led:
        master.import_fuel_model(led, model)
        pid = led.db.scalar("SELECT pg_backend_pid()") if server_pid else None
        before = cpu_s(pid)

        def go() -> None:
            for g in group(msgs, per_txn):
                if len(g) == 1:
                    ingest_batch(led, g[0])
                else:
                    ingest_site_batches(led, g)
        timer.run(name, go)
        return (cpu_s(pid) - before) * 1e6 / timer.n


def publish(url: str, msgs: list, model, timer: Timer, name: str, fold_every: int, checked: bool = False) -> None:
    """Ingest ``msgs`` and fold the publisher every ``fold_every`` batches as the worker does
    every 2 s (flush_dirty, pending, each delta signed, mark_sent); only the publisher's
    calls are timed. ``checked``: each delta encoded with decode's row checks (``wire.encode``
    without ``rows_checked``), as before."""
    keys = SiteKeys({}, replica_signing=new_replica_signing_key())
    with Ledger.open(url) as led:
        master.import_fuel_model(led, model)
        pub = Publisher(led)
        for table in Table:  # the snapshots' versions first, as a running worker has them
            pub.mark_snapshot(pub.snapshot(table))
        for d in pub.pending():
            pub.mark_sent(d)
        spent = 0.0
        deltas = 0
        prof = cProfile.Profile() if timer.profile == name else None
        for g in group(msgs, fold_every):
            for m in g:
                ingest_batch(led, m)
            if prof:
                prof.enable()
            t0 = time.process_time()
            pub.flush_dirty()
            sent = {}
            for d in pub.pending():
                encode(d, keys) if checked else delta_publication(d, keys)
                sent[d.table] = d
                deltas += 1
            for d in sent.values():  # as the worker: once a table, after its deltas are out
                pub.mark_sent(d)
            spent += time.process_time() - t0
            if prof:
                prof.disable()
        if prof:
            pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
            timer.profile = None
        us = spent * 1e6 / timer.n
        timer.best[name] = min(us, timer.best.get(name, us))
        timer.best[f"{name}_deltas"] = deltas


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=30_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--profile", help="a stage to cProfile (its first round)")
    p.add_argument("--no-postgresql", action="store_true")
    p.add_argument("--no-ingest", action="store_true", help="the edge and decode stages only")
    p.add_argument("--worker-gc", action="store_true",
                   help="the host worker's garbage collector settings (host.worker.tune_gc) for every stage")
    p.add_argument("--per-txn", type=int, default=8,
                   help="batches per transaction of the grouped ingest stages (ingest_*_grouped)")
    p.add_argument("--fold-every", type=int, default=3, help="batches ingested between publisher folds")
    args = p.parse_args(argv)
    model = sample.fuel_model(n_cards=10_000, n_stations=50, seed=1)
    recs = make_records(args.records, model)
    timer = Timer(len(recs), args.profile)
    if args.worker_gc:
        tune_gc()  # as a worker runs: else a collection lands in whichever stage allocates next
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
            old = timer.run("edge_journal_pack_records", journal_pack, jp, False)
            assert timer.run("edge_journal_pack", journal_pack, jp, True) == old, "the rows packed differently"
            assert timer.run("edge_journal_pack_stored", journal_pack, jp, "stored") == old, \
                "the stored bodies packed differently"
            del old
            timer.run("edge_encode_checked", cut_checked, recs)  # cut a little shorter (an upper bound of size)
            frames = timer.run("edge_pack", cut_packed, recs)
            msgs = []  # the last round's messages are not kept alive through this one's stages
            strict = timer.run("decode_strict", decode_strict, frames)
            py = timer.run("decode_python_records", decode_python_records, frames)
            timer.run("decode_python_frame", decode_python_frame, frames)
            assert strict == py, "the native record check changed the records"
            general = timer.run("decode_general", decode_general, frames)
            assert general == strict, "the native frame reader changed the records"
            del strict, py, general
            msgs = timer.run("decode", decode_all, frames)
            # compared on a second decode: the stages below get the records as a worker does,
            # their bodies not built yet (the batch reader builds a body when it is first read)
            assert [r for m in decode_all(frames) for r in m.records] == recs, "decode lost or changed records"
        out["records_per_batch"] = round(len(recs) / len(frames))
        for _ in range(0 if args.no_ingest else args.rounds):
            ingest(f"sqlite:///{Path(d) / f'ledger-{secrets.token_hex(3)}.sqlite'}", msgs, model, timer, "ingest_sqlite")
            ingest(f"sqlite:///{Path(d) / f'ledger-{secrets.token_hex(3)}.sqlite'}", msgs, model, timer,
                   "ingest_sqlite_grouped", per_txn=args.per_txn)
            publish(f"sqlite:///{Path(d) / f'ledger-{secrets.token_hex(3)}.sqlite'}", msgs, model, timer,
                    "publish_sqlite", args.fold_every)
            # as before issue 12's fourth pass: every delta encoded with decode's row checks
            publish(f"sqlite:///{Path(d) / f'ledger-{secrets.token_hex(3)}.sqlite'}", msgs, model, timer,
                    "publish_sqlite_rows_checked", args.fold_every, checked=True)
    server: dict[str, float] = {}
    if not args.no_postgresql and not args.no_ingest:
        import psycopg
        for _ in range(args.rounds):
            for name, per_txn in (("ingest_postgresql", 1), ("ingest_postgresql_grouped", args.per_txn),
                                  ("publish_postgresql", 0)):
                schema = f"bench_stages_{secrets.token_hex(4)}"
                with psycopg.connect(PG, autocommit=True) as c:
                    c.execute(f"CREATE SCHEMA {schema}")
                try:
                    url = f"{PG}?options=-csearch_path%3D{schema}"
                    if per_txn == 0:
                        publish(url, msgs, model, timer, name, args.fold_every)
                        continue
                    s = ingest(url, msgs, model, timer, name, server_pid=True, per_txn=per_txn)
                    server[name] = min(s, server.get(name, s))
                finally:
                    with psycopg.connect(PG, autocommit=True) as c:
                        c.execute(f"DROP SCHEMA {schema} CASCADE")
    for k, v in timer.best.items():
        out[k if k.endswith("_deltas") else f"{k}_cpu_us_per_record"] = v if k.endswith("_deltas") else round(v, 1)
    for name, v in server.items():
        out[f"{name}_server_cpu_us_per_record"] = round(v, 1)
    b = timer.best
    out["edge_pack_vs_encode_checked_ratio"] = round(b["edge_encode_checked"] / b["edge_pack"], 2)
    out["decode_strict_vs_decode_ratio"] = round(b["decode_strict"] / b["decode"], 2)
    out["edge_journal_pack_records_vs_rows_ratio"] = round(b["edge_journal_pack_records"] / b["edge_journal_pack"], 2)
    out["edge_journal_pack_rows_vs_stored_ratio"] = round(b["edge_journal_pack"] / b["edge_journal_pack_stored"], 2)
    out["decode_python_records_vs_decode_ratio"] = round(b["decode_python_records"] / b["decode"], 2)
    out["decode_python_frame_vs_decode_ratio"] = round(b["decode_python_frame"] / b["decode"], 2)
    out["decode_general_vs_decode_ratio"] = round(b["decode_general"] / b["decode"], 2)
    if "publish_sqlite" in b:
        out["publish_sqlite_rows_checked_vs_publish_ratio"] = round(b["publish_sqlite_rows_checked"]
                                                                     / b["publish_sqlite"], 2)
        out["ingest_sqlite_vs_grouped_ratio"] = round(b["ingest_sqlite"] / b["ingest_sqlite_grouped"], 2)
    if "ingest_postgresql_grouped" in b:
        one = b["ingest_postgresql"] + server["ingest_postgresql"]
        grouped = b["ingest_postgresql_grouped"] + server["ingest_postgresql_grouped"]
        out["ingest_postgresql_vs_grouped_ratio_with_server"] = round(one / grouped, 2)
    for key, value in out.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
