"""pytest-benchmark benchmarks of the evaluator's hot calls, on both implementations.

Run with timing: ``pytest tests/test_bench_evaluator.py --benchmark-enable``. Without that
flag (the default, and CI) each runs once as a plain test, which still checks the answers.
"""

import pytest

from authz import sample
from authz.batch import ClubQuoteBatch, FuelBatch
from native import club_evaluator, fuel_evaluator


@pytest.fixture(scope="module")
def fuel_model():
    return sample.fuel_model(n_cards=20_000, n_stations=200, seed=21)


@pytest.fixture(scope="module")
def club_model():
    return sample.club_model(n_accounts=5_000, seed=22)


def test_bench_fuel_authorize(benchmark, impl, fuel_model):
    ev = fuel_evaluator(fuel_model, impl)
    reqs = list(sample.fuel_requests(fuel_model, 1_000, seed=23))
    decisions = benchmark(lambda: [ev.authorize(r) for r in reqs])
    assert len(decisions) == 1_000 and any(d.approved for d in decisions)


def test_bench_fuel_authorize_batch(benchmark, impl, fuel_model):
    ev = fuel_evaluator(fuel_model, impl)
    batch = FuelBatch.from_requests(fuel_model, list(sample.fuel_requests(fuel_model, 5_000, seed=24)))
    out = benchmark(ev.authorize_batch, batch)
    assert len(out) == 5_000 and max(out.volume_ml) > 0


def test_bench_club_quote(benchmark, impl, club_model):
    ev = club_evaluator(club_model, impl)
    sales = list(sample.club_sales(club_model, 1_000, seed=25))
    quotes = benchmark(lambda: [ev.quote(s) for s in sales])
    assert sum(q.accrual_points for q in quotes) > 0


def test_bench_club_quote_batch(benchmark, impl, club_model):
    ev = club_evaluator(club_model, impl)
    batch = ClubQuoteBatch.from_sales(club_model, list(sample.club_sales(club_model, 5_000, seed=26)))
    out = benchmark(ev.quote_batch, batch)
    assert len(out) == 5_000 and max(out.accrual_points) > 0


def test_the_evaluator_benchmark_prints_its_keys_with_the_new_rules(capsys):
    """``python -m benchmarks.evaluator`` on a small network: every figure a ``key: value``
    line, the new-rules overhead among them (no timing is asserted)."""
    from benchmarks.evaluator import main
    assert main(["--cards", "3000", "--requests", "20000", "--accounts", "500"]) == 0
    lines = dict(line.split(": ") for line in capsys.readouterr().out.splitlines())
    for key in ("fuel_batch_decisions_per_s", "fuel_batch_vs_touch_loop", "fuel_batch_plain_native_ns",
                "fuel_batch_new_rules_overhead", "fuel_batch_exceptions_per_decision", "club_batch_quotes_per_s"):
        assert float(lines[key]) > 0, key
    assert float(lines["fuel_batch_rules_share"]) == 0.2
