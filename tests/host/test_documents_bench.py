"""benchmarks.cabinet runs (on a small ledger here: the figures are the benchmark's, not a
test's), prints its keys, builds the ledger it says and leaves nothing behind."""

from __future__ import annotations

import glob
import tempfile

import psycopg

from benchmarks import cabinet


def test_the_cabinet_benchmark_builds_measures_and_cleans_up(postgres: str, capsys):
    def schemas() -> set[str]:
        with psycopg.connect(postgres, autocommit=True) as conn:
            return {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench_cabinet_%'")}
    before_dirs = set(glob.glob(f"{tempfile.gettempdir()}/edgepos-bench-cabinet-*"))
    before = schemas()
    cabinet.main(["--total", "3000", "--target", "400", "--samples", "3", "--pg", postgres, "--signins", "2"])
    out = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert out["ledger_purchases"] == "3000" and out["target_month_purchases"] == "400"
    for dialect in ("sqlite", "postgresql"):
        assert out[f"{dialect}_statement_month_entries"] == "400"
        for key in ("p50_ms", "p95_ms", "mid_page_p95_ms"):
            assert float(out[f"{dialect}_cabinet_statement_{key}"]) > 0
    assert float(out["cabinet_statement_p95_ms"]) == max(float(out["sqlite_cabinet_statement_p95_ms"]),
                                                         float(out["postgresql_cabinet_statement_p95_ms"]))
    assert out["cabinet_signins"] == "2" and float(out["cabinet_signin_p95_ms"]) > 0  # the one command
    assert schemas() == before and set(glob.glob(f"{tempfile.gettempdir()}/edgepos-bench-cabinet-*")) == before_dirs


def test_the_benchmark_ledger_balances():
    """The generated purchases are each charged once: the target's October statement adds up."""
    import shutil
    from pathlib import Path

    from host.documents import invoice, statement
    from host.ledger import Ledger
    tmp = Path(tempfile.mkdtemp(prefix="edgepos-test-cabinet-"))
    try:
        cabinet.build_sqlite(tmp / "l.sqlite", 2_000, 300)
        with Ledger.open(f"sqlite:///{tmp / 'l.sqlite'}", clock=lambda: cabinet._NOW) as led:
            s = statement(led, cabinet.TARGET, cabinet.MONTH)
            assert s.entry_count == len(s.entries) == 300 and s.credits_kop == 0
            assert s.closing_kop == s.opening_kop - s.debits_kop == s.entries[-1].balance_after_kop
            assert s.debits_kop == invoice(led, cabinet.TARGET, cabinet.MONTH).amount_kop > 0
            assert all(e.purchase is not None and e.purchase.station_name.startswith("АЗС") for e in s.entries)
    finally:
        shutil.rmtree(tmp)
