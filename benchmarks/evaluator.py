"""Evaluator benchmark: both implementations in one run, printed as ``key: value`` lines.

    python -m benchmarks.evaluator            # the full run: 1,000,000 fuel cards
    python -m benchmarks.evaluator --cards 100000 --requests 500000   # quicker

Speedups are ratios of per-decision CPU times measured in this one run (best of several
repeats), so machine noise mostly cancels. ``fuel_batch_vs_touch_loop`` divides the batch
time by the time of a compiled loop that reads the same table memory and decides nothing:
how far the evaluator is from the machine's memory limit.

The native batch figures (``fuel_batch_native_ns``, ``fuel_batch_decisions_per_s``,
``fuel_batch_vs_touch_loop``) are measured with the fleet controls of issue 11 in use on a
share of the cards (``--rules-share``, 20 %: product lists, time windows, station
restrictions, purchase counts, quarter limits, alerting rules; :func:`with_new_rules`);
``fuel_batch_new_rules_overhead`` is that batch's time over the same batch on the same
network without them (``fuel_batch_plain_native_ns``).
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Callable
from dataclasses import replace

from array import array

from authz import sample
from authz.batch import ClubQuoteBatch, FuelBatch
from authz.fuel_model import LimitUnit, OnBreach, Period, StationScope
from authz.reference import ReferenceClubEvaluator, ReferenceFuelEvaluator
from native import NativeClubEvaluator, NativeFuelEvaluator
from native.compact import FuelColumns, days_mask, sample_fuel_columns


def best_time(fn: Callable[[], object], repeat: int = 5) -> float:
    """The fastest of ``repeat`` runs of ``fn``, in CPU seconds of this process (garbage
    collection off): on a loaded machine wall-clock time counts the other processes too."""
    return best_times([fn], repeat)[0]


def best_times(fns: list[Callable[[], object]], repeat: int = 5) -> list[float]:
    """The fastest of ``repeat`` runs of each of ``fns``, run in turn (a, b, a, b, ...) so
    that a ratio of two of them sees the same machine; CPU seconds, garbage collection off."""
    best = [float("inf")] * len(fns)
    gc.disable()
    try:
        for _ in range(repeat):
            for k, fn in enumerate(fns):
                t = time.process_time()
                fn()
                best[k] = min(best[k], time.process_time() - t)
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


def with_new_rules(cols: FuelColumns, share: float = 0.2) -> FuelColumns:
    """``cols`` (the sample network's columns) with the fleet controls on every
    ``round(1 / share)``-th card, edited in place and returned: AI-92, AI-95 and diesel only
    (AI-98 refused, or alerted on a quarter of them), Monday..Saturday 06:00-23:00 and a
    Sunday night 22:00-02:00, the home region only (half of them); their per-transaction
    litre limit becomes three purchases a day and their month limit a quarter one, the
    day litre limit alerts on half of them."""
    step = max(1, round(1 / share)) if share > 0 else 0
    n = cols.n_cards
    fuel = sorted(cols.products.index(p) for p in cols.products if p.code in ("AI92", "AI95", "DT"))
    windows = ((days_mask(range(6)), 6 * 60, 23 * 60), (days_mask([6]), 22 * 60, 2 * 60))
    nprod, nwin, scope = array("H", bytes(2 * n)), array("B", bytes(n)), array("b", bytes(n))
    nst, breach = array("B", bytes(n)), array("b", bytes(n))
    cprod, wdays, wstart, wend = array("i"), array("B"), array("H"), array("H")
    lim_breach = array("b", bytes(cols.n_limits))
    row = 0
    for i in range(n):
        rows = range(row, row + cols.card_nlimits[i])
        row += cols.card_nlimits[i]
        if not step or i % step:
            continue
        nprod[i] = len(fuel)
        cprod.extend(fuel)
        nwin[i] = len(windows)
        for m, a, b in windows:
            wdays.append(m)
            wstart.append(a)
            wend.append(b)
        scope[i] = StationScope.HOME_REGION if i % (2 * step) == 0 else StationScope.NETWORK
        breach[i] = OnBreach.ALERT if i % (4 * step) == 0 else OnBreach.DECLINE
        for r in rows:
            if cols.lim_id[r] == 3:  # 80 l a transaction -> 3 purchases a day
                cols.lim_unit[r], cols.lim_period[r], cols.lim_amount[r] = LimitUnit.PURCHASES, Period.DAY, 3
            elif cols.lim_id[r] == 2:
                cols.lim_period[r] = Period.QUARTER
            elif cols.lim_id[r] == 1 and i % (2 * step) == 0:
                lim_breach[r] = OnBreach.ALERT
    cols.card_nproducts, cols.card_nwindows, cols.card_scope, cols.card_nstations, cols.card_on_breach = \
        nprod, nwin, scope, nst, breach
    cols.cprod_pos, cols.win_days, cols.win_start, cols.win_end, cols.lim_on_breach = cprod, wdays, wstart, wend, lim_breach
    return cols


def check_new_rules_agree(n_cards: int = 5_000) -> None:
    """The native and reference evaluators agree on a small network with the new rules (the
    benchmark measures what is right)."""
    cols = with_new_rules(sample_fuel_columns(n_cards, 200, seed=5))
    nat, ref = NativeFuelEvaluator(cols), ReferenceFuelEvaluator(cols.to_model())
    batch = random_fuel_batch(ref.model, 20_000, seed=9)
    a, b = nat.authorize_batch(batch), ref.authorize_batch(batch)
    for name in a.__slots__:
        assert getattr(a, name) == getattr(b, name), name
    assert sum(a.exceptions) > 0 and len(set(a.reason)) > 3


def fuel_figures(n_cards: int, n_requests: int, rules_share: float = 0.2) -> dict[str, float]:
    """Single-call and batch speedups, batch throughput and the touch-loop ratio (the
    native batch with the new rules on ``rules_share`` of the cards)."""
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
    warm = [replace(r, card_no=model.cards[i % min(2_000, len(model.cards))].card_no) for i, r in enumerate(requests)]
    w_ref = best_time(lambda: [ref.authorize(r) for r in warm], 3) / len(warm)
    w_nat = best_time(lambda: [nat.authorize(r) for r in warm], 5) / len(warm)

    progress(f"batch of {n_requests:,} requests")
    batch = random_fuel_batch(model, n_requests)
    small = random_fuel_batch(model, 50_000, seed=8)
    tb_ref = best_time(lambda: ref.authorize_batch(small), 1) / len(small)
    progress(f"the same network with the new rules on {rules_share:.0%} of the cards")
    check_new_rules_agree()
    plain = NativeFuelEvaluator(sample_fuel_columns(n_cards, 500))  # packed as the ruled one is
    ruled = NativeFuelEvaluator(with_new_rules(sample_fuel_columns(n_cards, 500), rules_share))
    assert ruled.card_count == plain.card_count == nat.card_count
    out = ruled.authorize_batch(batch)
    tb_plain, tb_nat, t_touch = (t / n_requests for t in best_times(
        [lambda: plain.authorize_batch(batch), lambda: ruled.authorize_batch(batch),
         lambda: ruled.touch_batch(batch)], 5))
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
        "fuel_batch_plain_native_ns": tb_plain * 1e9,
        "fuel_batch_rules_share": rules_share,
        "fuel_batch_exceptions_per_decision": sum(out.exceptions) / n_requests,
        "fuel_batch_new_rules_overhead": tb_nat / tb_plain,
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
    warm = [replace(s, card_no=model.cards[i % min(2_000, len(model.cards))].card_no) for i, s in enumerate(sales)]
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
    ap.add_argument("--rules-share", type=float, default=0.2,
                    help="share of the cards with the new fleet controls in the native batch (default 0.2)")
    args = ap.parse_args(argv)
    figures = fuel_figures(args.cards, args.requests, args.rules_share) | club_figures(args.accounts)
    for key, value in figures.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
