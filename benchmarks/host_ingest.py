"""Host ingest throughput per worker: ``python -m benchmarks.host_ingest [--records N]``.

Prints ``key: value`` lines. One worker (one connection) ingests batches of realistic
records (a fuel sale is 5 records: preauth, reserved, preset, completed, card_committed; a
till sale 2: opened, committed) made against the sample network, in batches of the size the
edge cuts (about 1 MiB, ~2,000 records), first on SQLite (WAL, synchronous=FULL), then on the
PostgreSQL at 127.0.0.1:5432 (a scratch schema, dropped afterwards):

- ``*_ingest_records_per_s``: :func:`host.ingest.ingest_batch` alone (the ledger's part);
- ``*_decode_ingest_records_per_s``: :func:`wire.decode` of the signed frame + ingest, what
  :meth:`host.worker.Worker.handle` does per message (the broker's share excluded);
- ``*_duplicate_batch_records_per_s``: the same batches again (all records already there).

``--baseline DIR`` instead compares this tree's grouped ingest with the code in ``DIR`` (e.g.
``git -C /work/main archive 553f6cf | tar -x -C /tmp/before-ingest``, with the compiled
modules copied in), in the same run: each round ingests the same decoded batches, 8 per
transaction (:func:`host.ingest.ingest_site_batches`, what a worker does while a backlog
flushes, with the worker's garbage collector settings), once in a child process of each
tree, alternating; best of ``--rounds`` of the
CPU per record of the process (and of its PostgreSQL backend):

- ``ab_{sqlite,postgresql}_cpu_us_per_record_{baseline,this}``: the worker's CPU (SQLite
  inside); ``ab_postgresql_server_cpu_us_per_record_{baseline,this}``: the backend's;
- ``ab_{sqlite,postgresql}_ratio``: baseline over this, client and server together.

``--statements`` instead runs one grouped ingest (8 batches a transaction) on each ledger and
splits the database's CPU by statement: for PostgreSQL the backend's CPU (``/proc/PID/schedstat``,
nanoseconds) and the WAL it wrote (``pg_current_wal_insert_lsn``, read from a second
connection) around each statement the ledger's :class:`host.db.Database` runs; for SQLite the
thread's CPU around each (SQLite runs inside it, with the Python that binds the rows). Lines
``stmt_{sqlite,postgresql}_NN: <us per record> us, <WAL bytes per record> B, <calls>: <statement>``,
dearest first, then ``stmt_*_total_us`` (the ingest's whole CPU: PostgreSQL's backend,
SQLite's process) and ``stmt_*_other_us`` (what no statement took: on PostgreSQL BEGIN and
COMMIT; on SQLite the Python of ingest, since its statements, COMMIT too, are counted).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from authz import sample
from authz.money import amount_for_volume
from host import master
from host.db import Database
from host.ingest import ingest_batch, ingest_site_batches
from host.ledger import Ledger
from terminal.ids import new_id, new_txn_id
from wire import Batch, SiteKeys, WireRecord, batches_topic, decode, encode, records_that_fit

PG = "postgresql://postgres@127.0.0.1:5432/test"
SITE = "BENCH-001"
KEYS = SiteKeys({SITE: bytes(range(32))})  # batches only: no replica key needed


def make_records(n: int, model, seed: int = 1) -> list[WireRecord]:
    rnd = random.Random(seed)
    t = sample.DAY_START_UTC
    tcs: dict[str, int] = {}
    out: list[WireRecord] = []

    def rec(lane: str, txn: str, kind: str, body: dict, rid: str | None = None) -> None:
        out.append(WireRecord(rid or new_id(SITE), SITE, lane, txn, kind, t, body))

    while len(out) < n:
        t += rnd.randrange(1, 5)
        if rnd.random() < 0.7:
            card = model.cards[rnd.randrange(len(model.cards))]
            lane = f"pump-{rnd.randrange(1, 9)}"
            txn = new_txn_id(SITE, lane)
            tc = tcs.get(card.card_no, 0)
            tcs[card.card_no] = tc + 2
            price, auth = 6_150, 50_000
            delivered = rnd.randrange(5_000, auth)
            amount = amount_for_volume(delivered, price)
            req = {"card_no": card.card_no, "station_id": 1000, "product": "AI95", "now_utc_s": t,
                   "preset_volume_ml": auth, "preset_amount_kop": None}
            dec = {"reason": "OK", "volume_ml": auth, "amount_kop": amount_for_volume(auth, price),
                   "unit_price_kop_per_l": price, "list_price_kop_per_l": price, "binding_limit_id": None}
            w1, w2 = secrets.token_hex(16), secrets.token_hex(16)
            rec(lane, txn, "fuel.preauth", {"request": req, "decision": dec, "card": {
                "card_no": card.card_no, "contract_id": card.contract_id, "expected_txn": tc, "reserve_write_id": w1,
                "release_write_id": secrets.token_hex(16), "counting": [[1, 1, 1, 20_777]],
                "base_counters": [[1, 0, 20_777]], "reserve_counters": [[1, auth, 20_777]]},
                "pump": {"product": "AI95", "price_kop_per_l": price, "preset_volume_ml": auth, "last_sale_no_before": 0}})
            rec(lane, txn, "fuel.reserved", {"card_no": card.card_no, "txn_counter": tc + 1, "write_id": w1})
            rec(lane, txn, "fuel.preset", {"sale_no": len(out), "product": "AI95", "price_kop_per_l": price,
                                           "preset_volume_ml": auth})
            rec(lane, txn, "fuel.completed", {"request": req, "decision": dec, "delivered_volume_ml": delivered,
                                              "amount_kop": amount, "delivery_reason": "nozzle_hung_up", "overrun_ml": 0,
                                              "sale_no": len(out), "card_no": card.card_no,
                                              "contract_id": card.contract_id,
                                              "card_commit": {"write_id": w2, "expected_txn": tc + 1,
                                                              "counters": [[1, delivered, 20_777]]}})
            rec(lane, txn, "fuel.card_committed", {"card_no": card.card_no, "txn_counter": tc + 2, "write_id": w2,
                                                   "counters": [[1, delivered, 20_777]]})
        else:
            lane = f"till-{rnd.randrange(1, 4)}"
            txn = new_txn_id(SITE, lane)
            lines = [{"sku": f"SKU{rnd.randrange(10**6):06d}", "category": "shoes", "amount_kop": 349_900}]
            rec(lane, txn, "till.sale_opened", {"lines": lines})
            rec(lane, txn, "till.sale_voided", {"reason": "voided by the till"})
    return out[:n]


def cut(records: list[WireRecord]) -> list[Batch]:
    out, i = [], 0
    while i < len(records):
        n = records_that_fit(SITE, records[i:])
        out.append(Batch(SITE, len(out) + 1, tuple(records[i:i + n]), sample.DAY_START_UTC))
        i += n
    return out


def run(url: str, records: list[WireRecord], model) -> dict[str, float]:
    out = {}
    with Ledger.open(url) as led:
        master.import_fuel_model(led, model)
        batches = cut(records)
        frames = [encode(b, KEYS) for b in batches]
        half = len(batches) // 2
        t = time.perf_counter()
        for b in batches[:half]:
            ingest_batch(led, b)
        n = sum(len(b.records) for b in batches[:half])
        out["ingest_records_per_s"] = n / (time.perf_counter() - t)
        topic = batches_topic(SITE)
        t = time.perf_counter()
        for f in frames[half:]:
            ingest_batch(led, decode(f, KEYS, topic=topic))
        n = sum(len(b.records) for b in batches[half:])
        out["decode_ingest_records_per_s"] = n / (time.perf_counter() - t)
        t = time.perf_counter()
        for b in batches:
            ingest_batch(led, b)
        out["duplicate_batch_records_per_s"] = len(records) / (time.perf_counter() - t)
        out["batch_records"] = len(records) / len(batches)
        assert led.record_count() == len(records) and led.site(SITE).up_to_seq == len(batches)
    return out


#: One grouped ingest of a tree (run with that tree as the working directory, so its own
#: ``host`` is imported); only calls that the code before issue 12's fourth pass has too.
#: Prints the CPU per record of the process and of its PostgreSQL backend as JSON.
_AB_CHILD = r"""
import json, secrets, sys, tempfile, time
from pathlib import Path
from authz import sample
from host import master
from host.ingest import ingest_site_batches
from host.ledger import Ledger
from host.worker import tune_gc
from benchmarks.host_ingest import KEYS, PG, SITE, cut, make_records
from benchmarks.sync import cpu_s
from wire import batches_topic, decode, encode
n, db, cards, per_txn = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
model = sample.fuel_model(n_cards=cards, n_stations=50, seed=1)
recs = make_records(n, model)
topic = batches_topic(SITE)
msgs = [decode(encode(b, KEYS), KEYS, topic=topic) for b in cut(recs)]
with tempfile.TemporaryDirectory() as d:
    schema = None
    if db == "sqlite":
        url = f"sqlite:///{Path(d) / 'ab.sqlite'}"
    else:
        import psycopg
        schema = f"bench_ab_{secrets.token_hex(4)}"
        with psycopg.connect(PG, autocommit=True) as c:
            c.execute(f"CREATE SCHEMA {schema}")
        url = f"{PG}?options=-csearch_path%3D{schema}"
    try:
        with Ledger.open(url) as led:
            master.import_fuel_model(led, model)
            pid = led.db.scalar("SELECT pg_backend_pid()") if schema else None
            tune_gc()  # as a worker runs
            s0, t0 = cpu_s(pid), time.process_time()
            for i in range(0, len(msgs), per_txn):
                ingest_site_batches(led, msgs[i:i + per_txn])
            dt, srv = time.process_time() - t0, cpu_s(pid) - s0
            assert led.record_count() == len(recs)
            print(json.dumps([dt * 1e6 / len(recs), srv * 1e6 / len(recs)]))
    finally:
        if schema:
            with psycopg.connect(PG, autocommit=True) as c:
                c.execute(f"DROP SCHEMA {schema} CASCADE")
"""


def ab(baseline: Path, records: int, cards: int, rounds: int, dbs: list[str], per_txn: int = 8) -> dict[str, float]:
    """The grouped ingest of ``baseline`` and of this tree, alternating in child processes,
    best of ``rounds`` (client + server CPU) each: the ``ab_*`` keys of the module's doc."""
    here = Path(__file__).resolve().parent.parent
    out: dict[str, float] = {}
    for db in dbs:
        best: dict[str, tuple[float, float]] = {}
        for _ in range(rounds):
            for name, tree in (("baseline", baseline), ("this", here)):
                got = subprocess.run([sys.executable, "-c", _AB_CHILD, str(records), db, str(cards), str(per_txn)],
                                     cwd=tree, capture_output=True, text=True)
                if got.returncode:
                    raise SystemExit(f"the {name} tree ({tree}) failed:\n{got.stderr}")
                client, server = json.loads(got.stdout.strip().splitlines()[-1])
                if name not in best or client + server < sum(best[name]):
                    best[name] = (client, server)
        for name, (client, server) in best.items():
            out[f"ab_{db}_cpu_us_per_record_{name}"] = round(client, 1)
            if db == "postgresql":
                out[f"ab_{db}_server_cpu_us_per_record_{name}"] = round(server, 1)
        out[f"ab_{db}_ratio"] = round(sum(best["baseline"]) / sum(best["this"]), 2)
    return out


def _backend_cpu_ns(pid: int) -> int:
    """CPU time of the PostgreSQL backend ``pid`` so far, in nanoseconds (this machine's)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


class _Timed:
    """A SQLite connection whose ``execute`` and ``executemany`` are measured (SQLite runs
    inside them); everything else is the connection's own."""

    def __init__(self, conn: Any, meter: "_StatementMeter") -> None:
        self._conn, self._meter = conn, meter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def execute(self, sql: str, params: Any = ()) -> Any:
        with self._meter.measure(sql):
            return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> Any:
        with self._meter.measure(sql):
            return self._conn.executemany(sql, rows)


class _StatementMeter:
    """The database's CPU (and PostgreSQL's WAL) around each statement a ledger runs, by its
    text. PostgreSQL: :meth:`Database.execute` (and so every select, ``insert_many`` and
    ``update_many``), ``executemany`` and ``copy_rows`` wrapped on the one ``db``; BEGIN and
    COMMIT are left out (``other``). SQLite: every statement of its connection, COMMIT too."""

    def __init__(self, db: Database, wal: Callable[[], int] | None, cpu: Callable[[], int]) -> None:
        self.db, self.wal, self.cpu = db, wal, cpu
        self.by: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # calls, CPU ns, WAL bytes
        self._conn = db.conn
        if db.is_pg:
            for name in ("execute", "executemany", "copy_rows"):
                setattr(db, name, self._wrap(getattr(db, name), name))
        else:
            db.conn = _Timed(db.conn, self)

    def stop(self) -> None:
        """The ledger's own methods and connection back."""
        for name in ("execute", "executemany", "copy_rows"):
            self.db.__dict__.pop(name, None)
        self.db.conn = self._conn

    def _wrap(self, fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        def timed(sql: str, *args: Any, **kwargs: Any) -> Any:
            with self.measure(f"COPY {sql}" if name == "copy_rows" else sql):
                return fn(sql, *args, **kwargs)
        return timed

    @contextmanager
    def measure(self, sql: str) -> Iterator[None]:
        """Count one statement's CPU (and WAL) under its first 80 characters."""
        w0, c0 = self.wal() if self.wal else 0, self.cpu()
        try:
            yield
        finally:
            entry = self.by[re.sub(r"\s+", " ", sql)[:80]]
            entry[0] += 1
            entry[1] += self.cpu() - c0
            entry[2] += (self.wal() - w0) if self.wal else 0


def statements(db_kind: str, records: int, cards: int, per_txn: int = 8) -> dict[str, str | float]:
    """One grouped ingest of ``records`` on ``db_kind`` with the database's CPU split by
    statement: the ``stmt_*`` keys of the module's doc."""
    model = sample.fuel_model(n_cards=cards, n_stations=50, seed=1)
    recs = make_records(records, model)
    topic = batches_topic(SITE)
    msgs = [decode(encode(b, KEYS), KEYS, topic=topic) for b in cut(recs)]
    out: dict[str, str | float] = {}
    with tempfile.TemporaryDirectory() as d:
        schema = None
        url = f"sqlite:///{Path(d) / 'stmt.sqlite'}"
        if db_kind == "postgresql":
            import psycopg
            schema = f"bench_stmt_{secrets.token_hex(4)}"
            with psycopg.connect(PG, autocommit=True) as c:
                c.execute(f"CREATE SCHEMA {schema}")
            url = f"{PG}?options=-csearch_path%3D{schema}"
        try:
            with Ledger.open(url) as led:
                master.import_fuel_model(led, model)
                if schema is not None:
                    import psycopg
                    pid = led.db.scalar("SELECT pg_backend_pid()")
                    side = psycopg.connect(PG, autocommit=True)
                    def wal() -> int:
                        row = side.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()
                        assert row is not None
                        return int(row[0])
                    meter = _StatementMeter(led.db, wal, lambda: _backend_cpu_ns(pid))
                    total = lambda: _backend_cpu_ns(pid)  # noqa: E731
                else:
                    side = None
                    meter = _StatementMeter(led.db, None, time.thread_time_ns)
                    total = time.process_time_ns
                try:
                    t0 = total()
                    for i in range(0, len(msgs), per_txn):
                        ingest_site_batches(led, msgs[i:i + per_txn])
                    whole = total() - t0
                finally:
                    meter.stop()
                    if side is not None:
                        side.close()
                assert led.record_count() == len(recs)
        finally:
            if schema is not None:
                with psycopg.connect(PG, autocommit=True) as c:
                    c.execute(f"DROP SCHEMA {schema} CASCADE")
    n = len(recs)
    ranked = sorted(meter.by.items(), key=lambda kv: -kv[1][1])
    for i, (sql, (calls, ns, wal_b)) in enumerate(ranked):
        out[f"stmt_{db_kind}_{i:02d}"] = f"{ns / 1e3 / n:.2f} us, {wal_b / n:.0f} B, {calls}: {sql}"
    out[f"stmt_{db_kind}_total_us"] = round(whole / 1e3 / n, 2)
    out[f"stmt_{db_kind}_other_us"] = round((whole - sum(v[1] for v in meter.by.values())) / 1e3 / n, 2)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--cards", type=int, default=10_000)
    p.add_argument("--no-postgresql", action="store_true")
    p.add_argument("--baseline", type=Path, help="a tree of the code before: compare its grouped ingest with this one's")
    p.add_argument("--rounds", type=int, default=3, help="rounds of --baseline (best of)")
    p.add_argument("--statements", action="store_true", help="split the database's CPU by statement instead")
    args = p.parse_args()
    if args.statements:
        print(f"records: {args.records}")
        for db_kind in ["sqlite"] + ([] if args.no_postgresql else ["postgresql"]):
            for k, v in statements(db_kind, args.records, args.cards).items():
                print(f"{k}: {v}")
        return
    if args.baseline is not None:
        if not (args.baseline / "host" / "ingest.py").is_file():
            raise SystemExit(f"--baseline {args.baseline}: not a tree of this project (no host/ingest.py)")
        print(f"records: {args.records}")
        dbs = ["sqlite"] + ([] if args.no_postgresql else ["postgresql"])
        for k, v in ab(args.baseline, args.records, args.cards, args.rounds, dbs).items():
            print(f"{k}: {v}")
        return
    model = sample.fuel_model(n_cards=args.cards, n_stations=50, seed=1)
    records = make_records(args.records, model)
    print(f"records: {len(records)}")
    with tempfile.TemporaryDirectory() as d:
        for k, v in run(f"sqlite:///{Path(d) / 'bench.sqlite'}", records, model).items():
            print(f"sqlite_{k}: {v:.0f}")
    if not args.no_postgresql:
        import psycopg
        schema = f"bench_{secrets.token_hex(4)}"
        with psycopg.connect(PG, autocommit=True) as c:
            c.execute(f"CREATE SCHEMA {schema}")
        try:
            for k, v in run(f"{PG}?options=-csearch_path%3D{schema}", records, model).items():
                print(f"postgresql_{k}: {v:.0f}")
        finally:
            with psycopg.connect(PG, autocommit=True) as c:
                c.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    main()
