"""A generated day of a fuel network and a club-card store chain, run through the evaluator.

This is what ``edgepos simulate`` runs until the edge daemon exists: every pump request is
authorized and (when approved) completed with a delivered volume; every till sale is
quoted, paid (some with points, some from the card balance) and committed; some sales are
returned and some cards topped up. The summary counts decisions by reason and adds up
litres, rubles and points.
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from authz import sample
from authz.club_model import ClubPayment, ClubReturn, ClubTopUp
from authz.reasons import Reason
from native import club_evaluator, fuel_evaluator


@dataclass
class DaySummary:
    """What a simulated day did, in integers."""

    evaluator: str = ""
    fuel_cards: int = 0
    fuel_reasons: Counter = field(default_factory=Counter)
    fuel_volume_ml: int = 0
    fuel_amount_kop: int = 0
    fuel_released_ml: int = 0
    club_accounts: int = 0
    club_reasons: Counter = field(default_factory=Counter)
    club_sales_kop: int = 0
    points_accrued: int = 0
    points_redeemed: int = 0
    card_balance_paid_kop: int = 0
    returns: int = 0
    points_taken_back: int = 0
    points_given_back: int = 0
    topup_reasons: Counter = field(default_factory=Counter)
    topups_kop: int = 0
    seconds: float = 0.0

    def render(self) -> str:
        """A readable report for a terminal (thousands grouped with spaces, as in Russia)."""
        def num(x: float, fmt: str = ",") -> str:
            return format(x, fmt).replace(",", " ")

        def rub(kop: int) -> str:
            return f"{num(kop // 100)}.{kop % 100:02d} RUB"

        def reasons(c: Counter) -> list[str]:
            total = sum(c.values()) or 1
            return [f"    {r.name:<22}{num(n):>10}  {100 * n / total:5.1f}%" for r, n in sorted(c.items())]

        return "\n".join([
            f"edgepos simulated day ({self.evaluator} evaluator, {self.seconds:.1f} s)",
            "",
            f"Fuel: {num(sum(self.fuel_reasons.values()))} pump requests on {num(self.fuel_cards)} cards",
            *reasons(self.fuel_reasons),
            f"  dispensed        {num(self.fuel_volume_ml / 1000, ',.3f'):>20} L",
            f"  charged          {rub(self.fuel_amount_kop):>24}",
            f"  reserved, unused {num(self.fuel_released_ml / 1000, ',.3f'):>20} L (released)",
            "",
            f"Club: {num(sum(self.club_reasons.values()))} till sales on {num(self.club_accounts)} accounts",
            *reasons(self.club_reasons),
            f"  sales            {rub(self.club_sales_kop):>24}",
            f"  paid from cards  {rub(self.card_balance_paid_kop):>24}",
            f"  points accrued   {num(self.points_accrued):>20}",
            f"  points redeemed  {num(self.points_redeemed):>20}",
            f"  returns          {num(self.returns):>20} (points taken back {num(self.points_taken_back)}, "
            f"given back {num(self.points_given_back)})",
            f"  cash top-ups     {num(sum(self.topup_reasons.values())):>20} ({rub(self.topups_kop)} accepted)",
            *reasons(self.topup_reasons),
        ])


def run_day(*, fuel_cards: int = 20_000, fuel_requests: int = 50_000, club_accounts: int = 10_000,
            club_sales: int = 30_000, seed: int = 1, impl: str | None = None,
            progress: Callable[[str], None] | None = None) -> DaySummary:
    """Generate the models and the day's traffic for ``seed`` and run it through the evaluator."""
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    rnd = random.Random(seed)
    out = DaySummary(fuel_cards=fuel_cards, club_accounts=club_accounts)

    say(f"generating a fuel network: {fuel_cards:,} cards")
    fmodel = sample.fuel_model(n_cards=fuel_cards, seed=seed)
    fuel = fuel_evaluator(fmodel, impl)
    out.evaluator = fuel.name
    for n, req in enumerate(sample.fuel_requests(fmodel, fuel_requests, seed=seed + 1), 1):
        decision = fuel.authorize(req)
        out.fuel_reasons[decision.reason] += 1
        if decision.approved:
            # most drivers take all they asked for; some hang up early
            delivered = decision.volume_ml if rnd.random() < 0.7 else decision.volume_ml * rnd.randint(10, 99) // 100
            done = fuel.complete(req, decision, delivered)
            out.fuel_volume_ml += done.volume_ml
            out.fuel_amount_kop += done.amount_kop
            out.fuel_released_ml += done.released_volume_ml
        if n % 10_000 == 0:
            say(f"fuel: {n:,}/{fuel_requests:,} pump requests")

    say(f"generating a club chain: {club_accounts:,} accounts")
    cmodel = sample.club_model(n_accounts=club_accounts, seed=seed + 2)
    club = club_evaluator(cmodel, impl)
    recent: list[tuple] = []
    for n, sale in enumerate(sample.club_sales(cmodel, club_sales, seed=seed + 3), 1):
        quote = club.quote(sale)
        points = quote.max_redeem_points if rnd.random() < 0.4 else 0
        rest = quote.total_kop - points * 100
        from_card = min(rest, quote.balance_kop) if quote.payments_enabled and rnd.random() < 0.2 else 0
        txn = n
        result = club.commit(sale, ClubPayment(points, from_card, rest - from_card), txn)
        out.club_reasons[result.reason] += 1
        if result.approved:
            out.club_sales_kop += quote.total_kop
            out.points_accrued += result.accrued_points
            out.points_redeemed += result.redeemed_points
            out.card_balance_paid_kop += from_card
            recent.append((sale, quote.total_kop, result, from_card, txn))
        if recent and rnd.random() < 0.03:
            s, total, c, from_card, sale_id = recent.pop(rnd.randrange(len(recent)))
            back = club.return_sale(ClubReturn(s.card_no, 10**9 + n, sale.now_utc_s, sale_id, total,
                                               c.accrued_points, c.redeemed_points, from_card,
                                               total if rnd.random() < 0.5 else max(1, total // 3)))
            if back.reason is Reason.OK:
                out.returns += 1
                out.points_taken_back += back.points_taken_back
                out.points_given_back += back.points_given_back
        if rnd.random() < 0.05:
            amount = rnd.choice((50_000, 200_000, 1_000_000, 2_000_000))
            top = club.top_up(ClubTopUp(sale.card_no, amount, sale.now_utc_s))
            out.topup_reasons[top.reason] += 1
            if top.reason is Reason.OK:
                out.topups_kop += amount
        if n % 10_000 == 0:
            say(f"club: {n:,}/{club_sales:,} till sales")
    out.seconds = time.perf_counter() - t0
    return out


def stderr_progress(msg: str) -> None:
    """Progress lines on stderr, so the summary on stdout stays clean."""
    print(f"edgepos: {msg}", file=sys.stderr, flush=True)
