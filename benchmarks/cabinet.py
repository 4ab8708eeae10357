"""The cabinet's statement page on a big ledger: ``python -m benchmarks.cabinet``.

Prints ``key: value`` lines. A ledger of ``--total`` purchases (default 5,000,000
``fuel.completed`` records, each with its ``contract_entries`` row) is built directly
(SQLite in a temporary directory, PostgreSQL at
127.0.0.1:5432, in a scratch schema), not through ingest: ``INSERT ... SELECT`` from a
generated series (a recursive CTE in SQLite, ``generate_series`` in PostgreSQL), the rows
spread by hashing their number, so the data is made by the database at its own speed. The
indexes of the two tables are dropped for the load and built again after it (the same
statements as the schema's), the way a restore goes; in PostgreSQL the two tables are
UNLOGGED for it (reads are the same). The target contract's records carry the body the
page reads; the others' a short one (never read by the page). One contract (the target) has
``--target`` purchases (default 100,000)
in its month, October 2026, and a few thousand in November; the rest spread over 2,000
other contracts and twelve months. The statement page is what the cabinet shows first:
:func:`host.documents.statement_page` of the target's October, 50 lines, with the month's
opening and closing balances, credits and debits.

- ``<dialect>_cabinet_statement_p95_ms`` / ``_p50_ms``: the first page, ``--samples``
  times after two warm-up calls; ``_mid_page_p95_ms``: a page from the middle of the month
  (its cursor costs a sum of the movements before it);
- ``sqlite_cabinet_statement_cpu_p95_ms``: the process CPU time of the SQLite page (the
  database runs in-process there, so this is the work, whatever the machine's load);
- ``cabinet_statement_p95_ms``: the slower dialect's p95 (the goal is <= 200 ms on both);
- ``<dialect>_build_s``: the time to build the ledger;
- then :mod:`benchmarks.cabinet_signin`'s lines (``--signins`` sign-ins, default 40, with the
  production argon2id parameters): ``cabinet_signin_p95_ms`` (goal: the issue's), its p50 and
  the argon2id verify's wall and CPU time. ``--signin-only`` prints only these (no ledger is
  built); ``--signins 0`` leaves them out.

Nothing is left behind: the SQLite file's directory is removed and the schema dropped.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from host.db import Database
from host.documents import Month, statement_page
from host.ledger import Ledger

PG = "postgresql://postgres@127.0.0.1:5432/test"
TARGET = 7_000_001
MONTH = Month(2026, 10)
OTHERS = 2_000
_TABLES = ("records", "contract_entries")
_START = 1_788_210_000  # 2026-09-01 (the first of the twelve months)
_SPAN = 365 * 86_400
_NOW = 1_796_169_600  # 2026-12-02 UTC: October is closed, November done
_PRICE = 6_150


def _bounds(month: Month) -> tuple[int, int]:
    from host.reports import local_bounds
    return local_bounds(month.first_day, month.last_day, "Europe/Moscow")


def _select(db: Database, total: int, target: int, series: str) -> tuple[str, list[int]]:
    """The SELECT that generates the ``records`` rows of purchases ``i`` = 0..total-1 from
    ``series`` (a relation of ``i``): spread by multiplicative hashing of ``i``, in the
    database itself (Python would spend minutes making 5 M rows)."""
    m0, m1 = _bounds(MONTH)
    n0, n1 = _bounds(MONTH.next())
    extra = min(5_000, max(total // 1_000, 1))
    cat = "||"
    pad = (lambda e, w: f"printf('%0{w}d', {e})") if not db.is_pg else (lambda e, w: f"lpad(({e})::text, {w}, '0')")
    cid = (f"CASE WHEN i < {target + extra} THEN {TARGET} ELSE 1 + (i * 40503) % {OTHERS} END")
    at = (f"CASE WHEN i < {target} THEN {m0} + ({m1 - m0 - 1} * i) / {target} "
          f"WHEN i < {target + extra} THEN {n0} + (i * 7919) % {n1 - n0} "
          f"ELSE {_START} + (i * 2654435761) % {_SPAN} END")
    vol = "(5000 + (i * 7919) % 55000)"
    amount = f"(({vol} * {_PRICE} + 500) / 1000)"
    body = (f"'{{\"request\":{{\"station_id\":' {cat} (1000 + i % 50) {cat} ',\"product\":\"AI95\"}},"
            f"\"decision\":{{\"unit_price_kop_per_l\":{_PRICE},\"list_price_kop_per_l\":{_PRICE + 150}}},"
            f"\"delivered_volume_ml\":' {cat} {vol} {cat} ',\"amount_kop\":' {cat} {amount} {cat} '}}'")
    # the target's records carry the body the statement reads; the others' a short one (the
    # page never reads them; 4.9 M full bodies would only make the build write another GB)
    body = f"CASE WHEN i < {target + extra} THEN {body} ELSE '{{}}' END"
    sql = (f"SELECT 'B' {cat} {pad('i', 10)}, 'BENCH', 1 + i / 2000, 'pump-1', 'T' {cat} {pad('i', 10)}, "
           f"'fuel.completed', at, {body}, NULL, cid, '7005' {cat} {pad('cid', 8)} {cat} {pad('i % 4', 4)}, "
           f"'AI95', {amount}, {vol}, at FROM (SELECT i, {cid} AS cid, {at} AS at FROM {series}) AS g")
    return sql, []


_REC_COLS = ("record_id", "site_id", "batch_seq", "lane", "txn_id", "kind", "at_utc_s", "body", "flag",
             "contract_id", "card_no", "product", "amount_kop", "volume_ml", "ingested_at_utc_s")
_ENTRIES = ("INSERT INTO contract_entries (contract_id, at_utc_s, amount_kop, kind, record_id, note) "
            "SELECT contract_id, at_utc_s, -amount_kop, 'purchase', record_id, '' FROM records "
            "WHERE kind = 'fuel.completed' ORDER BY record_id")


def _master(db: Database) -> None:
    db.execute("INSERT INTO products (code, name, grp) VALUES ('AI95', 'АИ-95', 0)")
    contracts = [(c, f"Клиент {c}", "Europe/Moscow", 0, 1, 0, 0, "[]") for c in [TARGET, *range(1, OTHERS + 1)]]
    db.executemany("INSERT INTO contracts (contract_id, name, tz, home_region, tariff, balance_kop, credit_line_kop, "
                   "chosen_station_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", contracts)
    db.executemany("INSERT INTO contract_entries (contract_id, at_utc_s, amount_kop, kind, note) VALUES "
                   "(?, ?, ?, 'opening', 'contract opened')", [(c[0], _START - 86_400, 10**12) for c in contracts])
    db.executemany("INSERT INTO station_addresses (station_id, name, address) VALUES (?, ?, ?)",
                   [(1000 + s, f"АЗС №{s}", f"Омск, ул. Заправочная, {s}") for s in range(50)])


def _finish(db: Database) -> None:
    db.execute("UPDATE contracts SET balance_kop = (SELECT sum(amount_kop) FROM contract_entries e "
               "WHERE e.contract_id = contracts.contract_id)")


def build_sqlite(path: Path, total: int, target: int) -> None:
    """The ledger in a SQLite file: schema, indexes dropped, rows, indexes built."""
    Ledger.open(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-1048576")  # 1 GiB: index builds sort in memory
    conn.execute("PRAGMA temp_store=MEMORY")
    db = Database(conn, "sqlite", "")
    indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                           f"AND tbl_name IN {_TABLES}").fetchall()
    conn.execute("BEGIN")
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    _master(db)
    sql, _ = _select(db, total, target, "n")
    conn.execute(f"WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {total - 1}) "
                 f"INSERT INTO records ({', '.join(_REC_COLS)}) {sql}")
    conn.execute(_ENTRIES)
    for _, sql in indexes:
        conn.execute(sql)
    _finish(db)
    conn.execute("COMMIT")
    conn.execute("PRAGMA analysis_limit=1000")  # statistics from a sample, not 5 M rows per index
    conn.execute("ANALYZE")
    conn.close()


def build_postgresql(url: str, total: int, target: int) -> None:
    """The ledger in a PostgreSQL schema: schema, indexes dropped, rows, indexes built, VACUUM ANALYZE."""
    led = Ledger.open(url)
    db = led.db
    try:
        indexes = db.fetchall("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                              f"AND tablename IN {_TABLES} AND indexname NOT LIKE '%pkey' "
                              "AND indexname NOT LIKE '%record_id_key'")
        with db.transaction():
            for name, _ in indexes:
                db.execute(f"DROP INDEX {name}")
            for table in _TABLES:  # no WAL for the load (reads are the same; the schema is dropped after)
                db.execute(f"ALTER TABLE {table} SET UNLOGGED")
            _master(db)
            sql, _ = _select(db, total, target, f"generate_series(0, {total - 1}::bigint) AS s(i)")
            db.execute(f"INSERT INTO records ({', '.join(_REC_COLS)}) {sql}")
            db.execute(_ENTRIES)
            db.execute("SET LOCAL maintenance_work_mem = '256MB'")
            for _, sql in indexes:
                db.execute(sql)
            _finish(db)
        db.execute("VACUUM ANALYZE contract_entries")  # the visibility map: index-only scans
        db.execute("ANALYZE records")
        db.execute("ANALYZE contracts")
    finally:
        led.close()


def _p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def measure(url: str, samples: int) -> dict[str, float]:
    """p50/p95 of the first statement page and of a middle page, with CPU time."""
    led = Ledger.open(url, clock=lambda: _NOW)
    try:
        first = statement_page(led, TARGET, MONTH)
        mid_cursor = None
        page = first
        # the cursor of the middle of the month: the line at half the month's movements
        m0, m1 = _bounds(MONTH)
        half = led.db.fetchone("SELECT at_utc_s, entry_id FROM contract_entries WHERE contract_id = ? "
                               "AND at_utc_s >= ? AND at_utc_s < ? ORDER BY at_utc_s, entry_id LIMIT 1 OFFSET ?",
                               (TARGET, m0, m1, first.entry_count // 2))
        if half is not None:
            mid_cursor = f"{half[0]}.{half[1]}"
        wall, cpu, mid = [], [], []
        for _ in range(2):
            statement_page(led, TARGET, MONTH)
        for _ in range(samples):
            t0, c0 = time.perf_counter(), time.process_time()
            page = statement_page(led, TARGET, MONTH)
            wall.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
            if mid_cursor is not None:
                t0 = time.perf_counter()
                statement_page(led, TARGET, MONTH, cursor=mid_cursor)
                mid.append((time.perf_counter() - t0) * 1000)
        assert len(page.entries) == min(50, page.entry_count) and page.entry_count >= 1
        return {"p50_ms": _p(wall, 0.5), "p95_ms": _p(wall, 0.95), "cpu_p95_ms": _p(cpu, 0.95),
                "mid_page_p95_ms": _p(mid, 0.95) if mid else 0.0, "entries": float(first.entry_count),
                "records": float(led.db.scalar("SELECT count(*) FROM records"))}
    finally:
        led.close()


def main(argv: list[str] | None = None) -> None:
    """Build each ledger, measure, print, remove."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cabinet", description=__doc__.split("\n\n")[0])
    ap.add_argument("--total", type=int, default=5_000_000, help="purchases in the ledger (default %(default)s)")
    ap.add_argument("--target", type=int, default=100_000, help="the target contract's purchases in its month")
    ap.add_argument("--samples", type=int, default=50, help="statement pages measured (default %(default)s)")
    ap.add_argument("--dialect", choices=("sqlite", "postgresql", "both"), default="both")
    ap.add_argument("--pg", default=PG, help="PostgreSQL database for the scratch schema (default %(default)s)")
    ap.add_argument("--signins", type=int, default=40,
                    help="sign-ins timed by benchmarks.cabinet_signin at the end (default %(default)s; 0: none)")
    ap.add_argument("--signin-only", action="store_true", help="only the sign-in figures: no statement ledger")
    a = ap.parse_args(argv)
    if not 1 <= a.target <= a.total:
        ap.error("need 1 <= --target <= --total")
    if a.signins < 0 or (a.signin_only and a.signins == 0):
        ap.error("--signins is at least 1 with --signin-only, and never negative")
    if not a.signin_only:
        _statement(a)
    if a.signins:
        from . import cabinet_signin  # cabinet_signin_p95_ms and the argon2id figures
        cabinet_signin.main(["--signins", str(a.signins)])


def _statement(a: argparse.Namespace) -> None:
    """The statement figures: build each dialect's ledger, measure, print, remove."""
    print(f"ledger_purchases: {a.total}")
    print(f"target_month_purchases: {a.target}")
    worst = 0.0
    if a.dialect in ("sqlite", "both"):
        tmp = Path(tempfile.mkdtemp(prefix="edgepos-bench-cabinet-"))
        try:
            t0 = time.perf_counter()
            build_sqlite(tmp / "ledger.sqlite", a.total, a.target)
            print(f"sqlite_build_s: {time.perf_counter() - t0:.1f}")
            print(f"sqlite_ledger_mb: {(tmp / 'ledger.sqlite').stat().st_size / 2**20:.0f}")
            r = measure(f"sqlite:///{tmp / 'ledger.sqlite'}", a.samples)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for k in ("p50_ms", "p95_ms", "cpu_p95_ms", "mid_page_p95_ms"):
            print(f"sqlite_cabinet_statement_{k}: {r[k]:.1f}")
        print(f"sqlite_statement_month_entries: {r['entries']:.0f}")
        worst = max(worst, r["p95_ms"])
    if a.dialect in ("postgresql", "both"):
        import psycopg
        schema = f"bench_cabinet_{secrets.token_hex(4)}"
        with psycopg.connect(a.pg, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        try:
            url = f"{a.pg}?options=-csearch_path%3D{schema}"
            t0 = time.perf_counter()
            build_postgresql(url, a.total, a.target)
            print(f"postgresql_build_s: {time.perf_counter() - t0:.1f}")
            r = measure(url, a.samples)
        finally:
            with psycopg.connect(a.pg, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
        for k in ("p50_ms", "p95_ms", "mid_page_p95_ms"):
            print(f"postgresql_cabinet_statement_{k}: {r[k]:.1f}")
        print(f"postgresql_statement_month_entries: {r['entries']:.0f}")
        worst = max(worst, r["p95_ms"])
    print(f"cabinet_statement_p95_ms: {worst:.1f}")


if __name__ == "__main__":
    main()
