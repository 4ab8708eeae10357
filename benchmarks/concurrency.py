"""Tills racing on the same cards and sales, then every cross-lane rule checked against the
journal: ``python -m benchmarks.concurrency``. Prints ``key: value`` lines.

The daemon runs as its own process (``edgepos run``) with N tills; N asyncio "cashiers"
drive it over loopback HTTP at once, all on a handful of club cards: sales that redeem
points and pay from the card balance, returns of one another's recent sales (full and
partial, often the same sale on several tills at once), cash top-ups. Pumps are left out:
each needs a virtual card in a reader of the one shared pcscd.

Afterwards :func:`check_invariants` reads the journal in seq order (the order the site
decided in) and replays every decision through the *reference* club evaluator (authz, not
the daemon's native one), checking:

- each journaled decision is the one the replay makes (reason, balance after, points);
- a sale's approved returns never exceed its total, and every return is of a committed sale;
- a card's redeemed points never exceed the offline allowance;
- no account balance below zero or above its cap; no month turnover above its cap.

Figures: ``concurrent_ops_checked`` (journaled decisions checked), ``invariant_violations``,
``till_commit_p99_ms`` (the commit request under this contention, client side: HTTP,
decide, fsync'd journal, answer), ``requests_per_s``; with ``--rss-sales N``, a one-till
daemon's resident memory after 200 sales and after N more (``rss_growth_mb_N_sales``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from authz.club_model import (
    ClubModel,
    ClubPayment,
    ClubReturn,
    ClubSale,
    ClubTopUp,
    SaleLine,
)
from authz.reference import ReferenceClubEvaluator
from terminal.journal import Journal, Record
from terminal.replica import club_sale_from_body

ROOT = Path(__file__).resolve().parents[1]
COMMITTED, DECLINED, RETURNED, TOPPED_UP = "till.sale_committed", "till.sale_declined", "till.return", "till.topup"


def percentile(samples: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``samples``."""
    s = sorted(samples)
    return s[max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))] if s else 0.0


# -- the driver ----------------------------------------------------------------------------------

@dataclass
class DriveStats:
    """What the cashiers did."""

    ops: int = 0  #: decisions journaled (commits, approved or declined; returns and top-ups answered 200)
    requests: int = 0
    approved_returns: int = 0
    redemptions: int = 0  #: approved commits that redeemed points
    commit_ms: list[float] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


class _Cashier:
    def __init__(self, http: aiohttp.ClientSession, base: str, till: str, stats: DriveStats,
                 rnd: random.Random, token: str | None) -> None:
        self.http, self.base, self.till, self.stats, self.rnd = http, base, till, stats, rnd
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.n = 0

    async def post(self, path: str, body: dict) -> tuple[int, dict]:
        self.n += 1
        self.stats.requests += 1
        key = f"{self.till}-{self.n:08d}-{self.rnd.getrandbits(32):08x}"
        async with self.http.post(self.base + path, json=body, headers={"Idempotency-Key": key} | self.auth) as r:
            return r.status, await r.json()

    async def get(self, path: str) -> tuple[int, dict]:
        self.stats.requests += 1
        async with self.http.get(self.base + path, headers=self.auth) as r:
            return r.status, await r.json()

    async def sale(self, card: str, recent: list[str]) -> None:
        t = f"/v1/tills/{self.till}/sales"
        amount = self.rnd.choice((50_000, 120_000, 300_000, 700_000))
        lines: list[dict[str, Any]] = [{"sku": "S1", "category": "shoes", "amount_kop": amount}]
        if self.rnd.random() < 0.3:
            lines.append({"sku": "H1", "category": "hygiene", "amount_kop": 20_000})
        total = sum(line["amount_kop"] for line in lines)
        st, sale = await self.post(t, {"lines": lines})
        if st != 201:
            self.stats.answers[f"open {st}"] += 1
            return
        sid = sale["sale_id"]
        await self.post(f"{t}/{sid}/card", {"card_no": card})
        st, q = await self.get(f"{t}/{sid}/quote")
        points = self.rnd.randint(0, q["max_redeem_points"]) if q.get("max_redeem_points") else 0
        rest = total - points * 100
        from_card = self.rnd.randint(0, min(rest, q.get("balance_kop", 0))) if q.get("payments_enabled") else 0
        body = {"payment": {"points": points, "card_balance_kop": from_card, "money_kop": rest - from_card}}
        t0 = time.perf_counter()
        st, done = await self.post(f"{t}/{sid}/commit", body)
        self.stats.commit_ms.append((time.perf_counter() - t0) * 1000)
        self.stats.ops += st == 200
        if st == 200 and done["state"] == "committed":
            recent.append(sid)
            del recent[:-6]
            if done["result"]["redeemed_points"]:
                self.stats.redemptions += 1
            self.stats.answers["commit ok"] += 1
        else:
            self.stats.answers[f"commit {st} {done.get('result', {}).get('reason', '')}".strip()] += 1
            if st != 200:
                await self.post(f"{t}/{sid}/void", {})

    async def give_back(self, recent: list[str]) -> None:
        if not recent:
            return
        sid = self.rnd.choice(recent)
        kop = self.rnd.choice((10_000, 50_000, 120_000, 300_000, 720_000))
        st, ans = await self.post(f"/v1/tills/{self.till}/returns", {"sale_id": sid, "returned_kop": kop})
        self.stats.ops += st == 200
        if st == 200 and ans["reason"] == "OK":
            self.stats.approved_returns += 1
        self.stats.answers[f"return {st}"] += 1

    async def top_up(self, card: str) -> None:
        st, ans = await self.post(f"/v1/tills/{self.till}/topups",
                                  {"card_no": card, "amount_kop": self.rnd.choice((10_000, 100_000, 400_000))})
        self.stats.ops += st == 200
        self.stats.answers[f"topup {'ok' if st == 200 and ans['approved'] else ans.get('reason', st)}"] += 1


async def drive(base_url: str, tills: list[str], cards: list[str], *, ops: int, seed: int = 1,
                tokens: dict[str, str] | None = None) -> DriveStats:
    """Run one cashier per till at once until ``ops`` decisions were journaled: sales on
    ``cards``, returns of any till's recent sales, top-ups; each till with its bearer token
    from ``tokens`` (by till id)."""
    stats = DriveStats()
    recent: list[str] = []  # committed sales, shared by the tills: returns race on them
    t0 = time.perf_counter()
    conn = aiohttp.TCPConnector(limit=len(tills) * 2)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as http:
        async def cashier(i: int, till: str) -> None:
            c = _Cashier(http, base_url, till, stats, random.Random(seed * 1000 + i), (tokens or {}).get(till))
            while stats.ops < ops:
                r = c.rnd.random()
                card = c.rnd.choice(cards)
                if r < 0.5:
                    await c.sale(card, recent)
                elif r < 0.85:
                    await c.give_back(recent)
                    await asyncio.sleep(0)
                else:
                    await c.top_up(card)
        await asyncio.gather(*(cashier(i, t) for i, t in enumerate(tills)))
    stats.seconds = time.perf_counter() - t0
    return stats


def racing_cards(model: ClubModel, n: int) -> list[str]:
    """The ``n`` active cards of activated accounts (payments on) with the most points
    spendable now: redemptions then race on the offline allowance from the start."""
    ev, now = ReferenceClubEvaluator(model), int(time.time())
    usable = []
    for card in model.cards:
        acc = model.accounts[model.account_index[card.account_id]]
        if card.status == 0 and acc.status == 0 and acc.activated:
            q = ev.quote(ClubSale(card.card_no, (SaleLine("S1", "shoes", 1_000_000),), now))
            usable.append((-q.points_spendable, card.card_no))
    if len(usable) < n:
        raise ValueError(f"the model has fewer than {n} usable cards")
    return [no for _, no in sorted(usable)[:n]]


# -- the checker ---------------------------------------------------------------------------------

def _records(journal: Journal, batch: int = 10_000) -> Iterator[Record]:
    seq = 0
    while chunk := journal.after(seq, batch):
        yield from chunk
        seq = chunk[-1].seq or seq


def check_invariants(journal_path: str | os.PathLike[str], site_id: str, model: ClubModel,
                     allowance_points: int) -> tuple[int, list[str]]:
    """Replay the journal's till decisions in seq order through the reference evaluator over
    ``model`` (the replica as the run started) and check every cross-lane rule. Returns the
    number of decisions checked and the violations (text)."""
    ev = ReferenceClubEvaluator(model)
    caps = model.rules.caps
    kind_of = {a.account_id: a.kind for a in model.accounts}
    account_of = {c.card_no: c.account_id for c in model.cards}
    totals: dict[str, int] = {}
    returned: dict[str, int] = defaultdict(int)
    redeemed: Counter[str] = Counter()
    bad: list[str] = []
    n = 0

    def account_ok(seq: int | None, card_no: str) -> None:
        aid = account_of[card_no]
        st, cap = ev.state.accounts[aid], caps[kind_of[aid]]
        if st.balance_kop < 0 or st.balance_kop > cap.balance_cap_kop:
            bad.append(f"seq {seq}: account {aid} balance {st.balance_kop} kop outside 0..{cap.balance_cap_kop}")
        if st.turnover_kop > cap.turnover_cap_kop:
            bad.append(f"seq {seq}: account {aid} month turnover {st.turnover_kop} over {cap.turnover_cap_kop}")

    with Journal.open(journal_path, site_id) as journal:
        for rec in _records(journal):
            b = rec.body
            if rec.kind in (COMMITTED, DECLINED):
                n += 1
                sale = club_sale_from_body(b["sale"])
                res = ev.commit(sale, ClubPayment(**b["payment"]), b["txn_no"])
                if (res.approved, res.reason.name, res.redeemed_points, res.balance_after_kop) != \
                        (rec.kind == COMMITTED, b["reason"], b["redeemed_points"], b["balance_after_kop"]):
                    bad.append(f"seq {rec.seq}: commit of {rec.txn_id} journaled {b['reason']} "
                               f"{b['balance_after_kop']} kop, the replay says {res.reason.name} {res.balance_after_kop}")
                if res.approved:
                    totals[rec.txn_id] = sum(line.amount_kop for line in sale.lines)
                    redeemed[sale.card_no] += res.redeemed_points
                    if redeemed[sale.card_no] > allowance_points:
                        bad.append(f"seq {rec.seq}: card ...{sale.card_no[-4:]} redeemed {redeemed[sale.card_no]} "
                                   f"points offline, over the allowance of {allowance_points}")
                account_ok(rec.seq, sale.card_no)
            elif rec.kind == RETURNED:
                n += 1
                ret = ClubReturn(**b["return"])
                if rec.txn_id not in totals:
                    bad.append(f"seq {rec.seq}: return of {rec.txn_id}, which is no committed sale")
                    continue
                back = ev.return_sale(ret)
                if (back.reason.name, back.balance_after_kop, back.refund_card_balance_kop) != \
                        (b["result"]["reason"], b["result"]["balance_after_kop"], b["result"]["refund_card_balance_kop"]):
                    bad.append(f"seq {rec.seq}: return journaled {b['result']}, the replay says {back}")
                if back.reason.name == "OK":
                    returned[rec.txn_id] += ret.returned_kop
                    if returned[rec.txn_id] > totals[rec.txn_id]:
                        bad.append(f"seq {rec.seq}: sale {rec.txn_id} returned {returned[rec.txn_id]} kop "
                                   f"of {totals[rec.txn_id]}")
                account_ok(rec.seq, ret.card_no)
            elif rec.kind == TOPPED_UP:
                n += 1
                req = ClubTopUp(**b["topup"])
                up = ev.top_up(req)
                if (up.reason.approved, up.balance_after_kop) != (b["result"]["approved"], b["result"]["balance_after_kop"]):
                    bad.append(f"seq {rec.seq}: top-up journaled {b['result']}, the replay says {up}")
                account_ok(rec.seq, req.card_no)
    return n, bad


# -- the benchmark ---------------------------------------------------------------------------------

def site_toml(data_dir: Path, tills: int, allowance: int) -> tuple[str, dict[str, str]]:
    """The embedded site with ``tills`` tills and no pumps, its API on a free port, a till
    client per till; and the clients' tokens by till id."""
    from terminal.apiauth import client_toml, new_token
    from terminal.config import DEFAULT_SITE_TOML, ApiRole

    text = DEFAULT_SITE_TOML.split("[[pumps]]")[0].replace('data_dir = "var/sim"', f'data_dir = "{data_dir}"')
    tokens = {f"till-{i}": new_token() for i in range(1, tills + 1)}
    for till in tokens:
        text += f'\n[[tills]]\nid = "{till}"\noffline_points_allowance = {allowance}\n'
    text += '\n[api]\nhost = "127.0.0.1"\nport = 0\n\n'
    return text + "\n".join(client_toml(t, ApiRole.TILL, tok, till=t) for t, tok in tokens.items()), tokens


def _start_daemon(cfg_path: Path, club_accounts: int, seed: int) -> tuple[subprocess.Popen, int]:
    """``edgepos run`` on ``cfg_path`` as a subprocess; its process and API port."""
    proc = subprocess.Popen([sys.executable, "-m", "terminal.cli", "run", "--simulated-replica", "--config", str(cfg_path),
                             "--club-accounts", str(club_accounts), "--fuel-cards", "10", "--seed", str(seed)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT)
    assert proc.stderr is not None
    for line in proc.stderr:
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stderr or ()], daemon=True).start()  # drain
            return proc, int(m.group(1))
    proc.kill()
    raise SystemExit("the daemon did not start")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def memory_figures(sales: int, club_accounts: int, seed: int) -> dict[str, float]:
    """RSS of a one-till daemon after 200 sales (warm) and after ``sales`` more, each sale
    of 40 lines opened, given a card, committed and GET once more (a till's whole flow)."""
    with tempfile.TemporaryDirectory(prefix="edgepos-races-rss-") as tmp:
        cfg_path = Path(tmp) / "site.toml"
        text, tokens = site_toml(Path(tmp) / "data", 1, 3_000)
        cfg_path.write_text(text)
        auth = {"Authorization": f"Bearer {tokens['till-1']}"}
        from terminal.config import parse_config
        from terminal.replica import Replica
        model = Replica.simulated(parse_config(cfg_path.read_text()), club_accounts=club_accounts, seed=seed,
                                  compact=False, impl="reference").club_model
        assert model is not None
        cards = racing_cards(model, 50)
        proc, port = _start_daemon(cfg_path, club_accounts, seed)

        async def run(n: int, offset: int) -> None:
            base = f"http://127.0.0.1:{port}/v1/tills/till-1/sales"
            async with aiohttp.ClientSession() as http:
                async def post(path: str, body: dict, key: str) -> dict:
                    async with http.post(path, json=body, headers={"Idempotency-Key": key} | auth) as r:
                        return await r.json()
                for i in range(offset, offset + n):
                    lines = [{"sku": f"SKU-{k:04d}", "category": "shoes", "amount_kop": 2_500} for k in range(40)]
                    sale = await post(base, {"lines": lines}, f"rss-o-{i:08d}")
                    sid = sale["sale_id"]
                    await post(f"{base}/{sid}/card", {"card_no": cards[i % len(cards)]}, f"rss-a-{i:08d}")
                    await post(f"{base}/{sid}/commit", {"payment": {"money_kop": 100_000}}, f"rss-c-{i:08d}")
                    async with http.get(f"{base}/{sid}", headers=auth) as r:
                        await r.read()
        try:
            asyncio.run(run(200, 0))
            warm = _rss_mb(proc.pid)
            asyncio.run(run(sales, 200))
            after = _rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
    return {"rss_mb_after_200_sales": warm, f"rss_mb_after_{sales}_more_sales": after,
            f"rss_growth_mb_{sales}_sales": after - warm}


def main(argv: list[str] | None = None) -> int:
    """Run the tills against a daemon process, check the journal, print the figures."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.concurrency", description=__doc__.split("\n")[0])
    ap.add_argument("--tills", type=int, default=8)
    ap.add_argument("--cards", type=int, default=4, help="club cards the tills share")
    ap.add_argument("--ops", type=int, default=10_000, help="decisions to journal (commits, returns, top-ups)")
    ap.add_argument("--allowance", type=int, default=3_000, help="offline points allowance per card")
    ap.add_argument("--club-accounts", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rss-sales", type=int, default=0, metavar="N",
                    help="also measure a one-till daemon's RSS growth over N sales")
    args = ap.parse_args(argv)

    from terminal.config import parse_config
    from terminal.replica import Replica

    with tempfile.TemporaryDirectory(prefix="edgepos-races-") as tmp:
        cfg_path = Path(tmp) / "site.toml"
        text, tokens = site_toml(Path(tmp) / "data", args.tills, args.allowance)
        cfg_path.write_text(text)
        cfg = parse_config(cfg_path.read_text())
        model = Replica.simulated(cfg, club_accounts=args.club_accounts, seed=args.seed, compact=False,
                                  impl="reference").club_model
        assert model is not None  # the site has tills
        proc, port = _start_daemon(cfg_path, args.club_accounts, args.seed)
        try:
            stats = asyncio.run(drive(f"http://127.0.0.1:{port}", [f"till-{i}" for i in range(1, args.tills + 1)],
                                      racing_cards(model, args.cards), ops=args.ops, seed=args.seed,
                                      tokens=tokens))
        finally:
            proc.terminate()
            proc.wait(30)
        checked, bad = check_invariants(cfg.data_dir / "journal.sqlite", cfg.site_id, model, args.allowance)
    for text in bad[:10]:
        print(f"# violation: {text}", file=sys.stderr)
    print(f"tills: {args.tills}")
    print(f"shared_cards: {args.cards}")
    print(f"concurrent_requests: {stats.requests}")
    print(f"concurrent_ops_checked: {checked}")
    print(f"invariant_violations: {len(bad)}")
    print(f"approved_returns: {stats.approved_returns}")
    print(f"redemptions: {stats.redemptions}")
    print(f"requests_per_s: {stats.requests / stats.seconds:.0f}")
    print(f"till_commit_p50_ms: {percentile(stats.commit_ms, 50):.3f}")
    print(f"till_commit_p99_ms: {percentile(stats.commit_ms, 99):.3f}")
    if args.rss_sales:
        for key, mb in memory_figures(args.rss_sales, args.club_accounts, args.seed).items():
            print(f"{key}: {mb:.1f}")
    for k, v in sorted(stats.answers.items()):
        print(f"# {k}: {v}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
