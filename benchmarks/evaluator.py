"""Evaluator benchmark: both implementations in one run, printed as ``key: value`` lines.

    python -m benchmarks.evaluator            # the full run: 1,000,000 fuel cards
    python -m benchmarks.evaluator --cards 100000 --requests 500000   # quicker

Speedups are ratios of per-decision times measured in this one run (best of several
repeats), so machine noise mostly cancels. ``fuel_batch_vs_touch_loop`` divides the batch
time by the time of a compiled loop that reads the same table memory and decides nothing:
how far the evaluator is from the machine's memory limit.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Callable
from dataclasses import replace

from authz import sample
from authz.batch import ClubQuoteBatch, FuelBatch
from authz.reference import ReferenceClubEvaluator, ReferenceFuelEvaluator
from native import NativeClubEvaluator, NativeFuelEvaluator


def best_time(fn: Callable[[], object], repeat: int = 5) -> float:
    """The fastest of ``repeat`` runs of ``fn``, in seconds (garbage collection off)."""
    best = float("inf")
    gc.disable()
    try:
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
    finally:
        gc.enable()
    return best


def progress(msg: str) -> None:
    """Progress on stderr, so stdout stays ``key: value`` lines."""
    print(f"[evaluator bench] {msg}", file=sys.stderr, flush=True)


def random_fuel_batch(model, n: int, seed: int = 7) -> FuelBatch:
    """``n`` requests on random cards and stations, fuel products, over one day."""
    rnd = random.Random(seed)
    b = FuelBatch(n)
    fuel = [model.product_index[c] for c in sample.FUEL_CODES]
    n_cards, n_st = len(model.cards), len(model.stations)
    for i in range(n):
        b.card[i] = rnd.randrange(n_cards)
        b.station[i] = rnd.randrange(n_st)
        b.product[i] = fuel[rnd.randrange(4)]
        b.now_utc_s[i] = sample.DAY_START_UTC + rnd.randrange(86_400)
        if i % 3 == 1:
            b.preset_volume_ml[i] = 40_000
        elif i % 3 == 2:
            b.preset_amount_kop[i] = 200_000
    return b


def fuel_figures(n_cards: int, n_requests: int) -> dict[str, float]:
    """Single-call and batch speedups, batch throughput and the touch-loop ratio."""
    progress(f"generating a fuel network with {n_cards:,} cards")
    model = sample.fuel_model(n_cards=n_cards, n_stations=500)
    progress("compiling the native tables")
    ref, nat = ReferenceFuelEvaluator(model), NativeFuelEvaluator(model)
    requests = list(sample.fuel_requests(model, 20_000, seed=11))
    assert [nat.authorize(r) for r in requests[:2000]] == [ref.authorize(r) for r in requests[:2000]]

    progress("single calls")
    t_ref = best_time(lambda: [ref.authorize(r) for r in requests], 3) / len(requests)
    t_nat = best_time(lambda: [nat.authorize(r) for r in requests], 5) / len(requests)
    # the same calls on a working set of 2,000 cards (a site's regulars): what the CPU does
    # once the card's rows and objects are in cache
    warm = [replace(r, card_no=model.cards[i % 2_000].card_no) for i, r in enumerate(requests)]
    w_ref = best_time(lambda: [ref.authorize(r) for r in warm], 3) / len(warm)
    w_nat = best_time(lambda: [nat.authorize(r) for r in warm], 5) / len(warm)

    progress(f"batch of {n_requests:,} requests")
    batch = random_fuel_batch(model, n_requests)
    small = random_fuel_batch(model, 50_000, seed=8)
    tb_ref = best_time(lambda: ref.authorize_batch(small), 1) / len(small)
    tb_nat = best_time(lambda: nat.authorize_batch(batch), 5) / n_requests
    t_touch = best_time(lambda: nat.touch_batch(batch), 5) / n_requests
    return {
        "fuel_cards": n_cards,
        "fuel_single_ref_us": t_ref * 1e6,
        "fuel_single_native_us": t_nat * 1e6,
        "fuel_single_speedup": t_ref / t_nat,
        "fuel_single_warm_ref_us": w_ref * 1e6,
        "fuel_single_warm_native_us": w_nat * 1e6,
        "fuel_single_speedup_warm": w_ref / w_nat,
        "fuel_batch_ref_us": tb_ref * 1e6,
        "fuel_batch_native_ns": tb_nat * 1e9,
        "fuel_batch_speedup": tb_ref / tb_nat,
        "fuel_batch_decisions_per_s": 1 / tb_nat,
        "fuel_touch_loop_ns": t_touch * 1e9,
        "fuel_batch_vs_touch_loop": tb_nat / t_touch,
    }


def club_figures(n_accounts: int) -> dict[str, float]:
    """Single-call (quote) and batch (quote) speedups."""
    progress(f"generating a club chain with {n_accounts:,} accounts")
    model = sample.club_model(n_accounts=n_accounts)
    ref, nat = ReferenceClubEvaluator(model), NativeClubEvaluator(model)
    sales = list(sample.club_sales(model, 20_000, seed=12))
    assert [nat.quote(s) for s in sales[:2000]] == [ref.quote(s) for s in sales[:2000]]
    progress("club single calls and batches")
    t_ref = best_time(lambda: [ref.quote(s) for s in sales], 3) / len(sales)
    t_nat = best_time(lambda: [nat.quote(s) for s in sales], 5) / len(sales)
    warm = [replace(s, card_no=model.cards[i % 2_000].card_no) for i, s in enumerate(sales)]
    w_ref = best_time(lambda: [ref.quote(s) for s in warm], 3) / len(warm)
    w_nat = best_time(lambda: [nat.quote(s) for s in warm], 5) / len(warm)
    batch = ClubQuoteBatch.from_sales(model, sales)
    tb_ref = best_time(lambda: ref.quote_batch(batch), 1) / len(sales)
    tb_nat = best_time(lambda: nat.quote_batch(batch), 5) / len(sales)
    return {
        "club_single_ref_us": t_ref * 1e6,
        "club_single_native_us": t_nat * 1e6,
        "club_single_speedup": t_ref / t_nat,
        "club_single_speedup_warm": w_ref / w_nat,
        "club_batch_native_ns": tb_nat * 1e9,
        "club_batch_speedup": tb_ref / tb_nat,
        "club_batch_quotes_per_s": 1 / tb_nat,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.evaluator", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cards", type=int, default=1_000_000, help="fuel cards in the model (default 1,000,000)")
    ap.add_argument("--requests", type=int, default=2_000_000, help="requests in the native batch (default 2,000,000)")
    ap.add_argument("--accounts", type=int, default=100_000, help="club accounts (default 100,000)")
    args = ap.parse_args(argv)
    figures = fuel_figures(args.cards, args.requests) | club_figures(args.accounts)
    for key, value in figures.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
