"""The e2e fleet: a few sites' journals of realistic records, the host's master data they
refer to, and what the ledger must hold once everything has synced.

Records are built by ``tests.host.edge.Site`` with the edge's own body helpers (the kinds
and bodies of terminal/fuel.py and terminal/till.py): pump sales (preauth, reserved, preset,
completed, then card_committed, or voided, or a correction for a card pulled or a lost
answer), declined pumps, till sales opened and voided, club commits, returns and top-ups
decided by the reference club evaluator, as the till decides them.

Each site has its own fuel card (two contracts, so two sites charge one contract) and its
own club accounts, so after a full sync:

- every contract's balance is its opening balance less the ``fuel.completed`` amounts of
  every journal (each charged once, whatever was delivered twice);
- every club account is what the site's evaluator left (card balance, month turnover, total
  points), whatever order its records arrived in;
- no card's transaction counter raised a clone alert and no record is flagged.

Journals are built once per test session (:func:`build_templates`) and copied per test.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from authz import sample
from authz.club_model import ClubModel, ClubPayment, ClubSale, SaleLine
from authz.fuel_model import FuelDecision, FuelRequest
from authz.reasons import Reason
from authz.reference import ReferenceClubEvaluator
from host import master
from host.ledger import Ledger
from terminal.ids import new_id, new_txn_id
from terminal.journal import Journal, Record, unacked_count
from terminal.replica import fuel_decision_body, fuel_request_body
from tests.host.edge import T0, Site, club_world, contract, fuel_card
from wire import WireRecord

#: Contract id -> opening balance (kopecks).
CONTRACTS = {1: 2_000_000_000, 2: 1_500_000_000}
PRICES = {"AI92": 5_500, "AI95": 6_000, "AI98": 7_000, "DT": 6_500}


def card_of(index: int) -> str:
    """Site ``index``'s fuel card."""
    return f"700583{index + 1:010d}"


def contract_of(index: int) -> int:
    return 1 + index % 2


def to_record(w: WireRecord) -> Record:
    return Record(w.record_id, w.site_id, w.lane, w.txn_id, w.kind, w.at_utc_s, dict(w.body))


@dataclass(frozen=True)
class ClubView:
    """What the host must hold for a club account: card balance, month turnover, points."""

    balance_kop: int
    turnover_kop: int
    points: int


@dataclass
class SitePlan:
    """One site: its journal template (the offline backlog), records to journal later (in
    chunks, e.g. while the broker is down), and the club accounts it owns."""

    index: int
    site_id: str
    template: Path
    later: list[list[Record]] = field(default_factory=list)
    accounts: dict[int, ClubView] = field(default_factory=dict)
    records: int = 0

    @property
    def card_no(self) -> str:
        return card_of(self.index)


class _Gen:
    """Generates one site's traffic, in time order, with a card counter that only goes up."""

    def __init__(self, index: int, site_id: str, club: ClubModel, n_sites: int, seed: int) -> None:
        self.index, self.site = index, Site(site_id)
        self.rnd = random.Random(seed)
        self.ev = ReferenceClubEvaluator(club)
        self.cards = [c for c in club.cards if (c.account_id - 1) % n_sites == index]
        self.tc = 10
        self.t = T0 + 3_600 * 8 + index * 17
        self.sales: list[WireRecord] = []
        self.k = 0

    def fuel(self) -> None:
        rnd, s = self.rnd, self.site
        self.t += rnd.randrange(60, 400)
        lane = f"pump-{rnd.randrange(1, 5)}"
        product = rnd.choice(tuple(PRICES))
        r = rnd.random()
        if r < 0.04:  # declined: nothing reserved (terminal/fuel.py DECLINED)
            req = FuelRequest(card_of(self.index), 1000, product, self.t, preset_volume_ml=50_000)
            dec = FuelDecision(Reason.LIMIT_EXHAUSTED, 0, 0, PRICES[product], PRICES[product])
            s.other("fuel.declined", {"request": fuel_request_body(req), "decision": fuel_decision_body(dec),
                                      "card": {"card_no": card_of(self.index), "contract_id": contract_of(self.index)}},
                    at=self.t, lane=lane)
            return
        settle = "commit" if r < 0.88 else "void" if r < 0.93 else "absent" if r < 0.97 else "unknown"
        auth = rnd.choice((20_000, 40_000, 50_000))
        delivered = rnd.randrange(2_000, auth + 1)
        s.fuel_sale(card_no=card_of(self.index), contract_id=contract_of(self.index), product=product,
                    price=PRICES[product], authorized_ml=auth, delivered_ml=delivered, tc=self.tc, at=self.t,
                    lane=lane, settle=settle)
        # the card holds the reserve (tc + 1); the commit or release (tc + 2) only if it was written
        self.tc += 1 if settle in ("absent", "unknown") else 2
        self.t += 130

    def till(self) -> None:
        rnd, s, ev = self.rnd, self.site, self.ev
        self.t += rnd.randrange(30, 300)
        self.k += 1
        lane = f"till-{rnd.randrange(1, 3)}"
        op = rnd.random()
        if op < 0.15:  # opened, then voided at the till: stored only
            txn = new_txn_id(s.site_id, lane)
            lines = [{"sku": f"SKU{rnd.randrange(10**6):06d}", "category": "food", "amount_kop": 49_900}]
            s.records.append(WireRecord(new_id(s.site_id), s.site_id, lane, txn, "till.sale_opened", self.t,
                                        {"lines": lines}))
            s.records.append(WireRecord(new_id(s.site_id), s.site_id, lane, txn, "till.sale_voided", self.t + 20,
                                        {"reason": "voided by the till"}))
            return
        if not self.cards:
            return
        card = self.cards[rnd.randrange(len(self.cards))].card_no
        if op < 0.3:
            s.club_topup(ev, card, rnd.choice((10_000, 100_000, 500_000)), self.t, lane=lane)
        elif op < 0.42 and self.sales:
            sale = self.sales.pop(rnd.randrange(len(self.sales)))
            total = sum(line["amount_kop"] for line in sale.body["sale"]["lines"])
            s.club_return(ev, sale, rnd.randint(1, total), self.t, return_id=100_000 * (self.index + 1) + self.k,
                          lane=sale.lane)
        else:
            ls = tuple(SaleLine(f"SKU{i}", rnd.choice(("shoes", "food", "toys")), rnd.choice((29_900, 49_900, 199_900)))
                       for i in range(rnd.randint(1, 3)))
            total = sum(line.amount_kop for line in ls)
            q = ev.quote(ClubSale(card, ls, self.t, "store", "cash"))
            pts = rnd.choice((0, q.max_redeem_points))
            from_card = min(q.balance_kop, (total - 100 * pts) // 2) if rnd.random() < 0.5 else 0
            rec = s.club_commit(ev, card, ls, self.t, ClubPayment(pts, from_card, total - 100 * pts - from_card),
                                txn_no=200_000 * (self.index + 1) + self.k, lane=lane)
            if rec.kind == "till.sale_committed":
                self.sales.append(rec)


def club_model(n_sites: int) -> ClubModel:
    return club_world(3 * n_sites)


def setup_ledger(led: Ledger, n_sites: int) -> None:
    """The host's master data the fleet's records refer to."""
    master.put_products(led, sample.PRODUCTS)
    for cid, balance in CONTRACTS.items():
        master.create_contract(led, contract(cid, balance_kop=balance))
    for i in range(n_sites):
        master.issue_fuel_card(led, fuel_card(card_of(i), contract_of(i)))
    master.import_club_model(led, club_model(n_sites))


def _journal(path: Path, site_id: str, records: list[Record]) -> None:
    import asyncio

    async def go() -> None:
        with Journal.open(path, site_id) as j:
            for i in range(0, len(records), 2_000):
                await j.append(records[i:i + 2_000])
    asyncio.run(go())


def build_templates(out: Path, site_ids: list[str], *, fuel_sales: int, till_ops: int, later_sales: int,
                    later_chunks: int, seed: int = 7) -> list[SitePlan]:
    """Build each site's journal template in ``out`` (``fuel_sales`` pump and ``till_ops`` till
    operations, interleaved) and ``later_chunks`` chunks of ``later_sales`` more pump sales."""
    club = club_model(len(site_ids))
    plans = []
    for i, site_id in enumerate(site_ids):
        g = _Gen(i, site_id, club, len(site_ids), seed + i)
        steps = ["f"] * fuel_sales + ["t"] * till_ops
        g.rnd.shuffle(steps)
        for st in steps:
            g.fuel() if st == "f" else g.till()
        backlog = [to_record(r) for r in g.site.records]
        path = out / f"{site_id}.journal.sqlite"
        _journal(path, site_id, backlog)
        later = []
        for _ in range(later_chunks):
            start = len(g.site.records)
            for _ in range(later_sales):
                g.fuel()
            later.append([to_record(r) for r in g.site.records[start:]])
        views = {}
        for c in g.cards:
            st = g.ev.state.accounts[c.account_id]
            views[c.account_id] = ClubView(st.balance_kop, st.turnover_kop, sum(lot.points for lot in st.lots))
        plans.append(SitePlan(i, site_id, path, later, views, len(backlog)))
    return plans


def copy_journal(template: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, dest)
    return dest


# -- what a journal file holds (read-only: a client process may be writing it) ---------------

def _ro(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def journal_ids(path: Path) -> set[str]:
    with _ro(path) as c:
        return {r[0] for r in c.execute("SELECT record_id FROM records")}


@dataclass(frozen=True)
class JournalFigures:
    records: int
    unacked: int
    acked_batch: int


def journal_figures(path: Path) -> JournalFigures:
    c = _ro(path)
    try:
        c.execute("BEGIN")  # one snapshot for both counts
        n, unacked = c.execute("SELECT count(*) FROM records").fetchone()[0], unacked_count(c)
        row = c.execute("SELECT value FROM meta WHERE key = 'sync.acked_batch'").fetchone()
    finally:
        c.close()
    return JournalFigures(n, unacked, int(row[0]) if row and row[0] else 0)


#: Kinds whose amount (and volume) the e2e checks sum on both sides, and the body fields.
AMOUNTS = {"fuel.completed": ("amount_kop", "delivered_volume_ml"), "till.topup": ("topup.amount_kop", None),
           "till.return": ("return.returned_kop", None), "till.sale_committed": ("sale.lines", None)}


def _get(body: dict, path: str):
    for part in path.split("."):
        body = body[part]
    return body


def amount_volume(kind: str, body: dict) -> tuple[int, int]:
    """The amount and volume a record of ``kind`` carries (0, 0 for kinds not summed)."""
    if kind not in AMOUNTS:
        return 0, 0
    a, v = AMOUNTS[kind]
    amount = _get(body, a)
    if isinstance(amount, list):  # a sale: its lines
        amount = sum(line["amount_kop"] for line in amount)
    return amount, (_get(body, v) if v else 0)


def journal_groups(path: Path) -> dict[tuple[str, str], tuple[int, int, int]]:
    """Per (site, kind): count, summed amount and volume (of the kinds in :data:`AMOUNTS`)."""
    out: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    c = _ro(path)
    try:
        for site, kind, body in c.execute("SELECT site_id, kind, body FROM records"):
            g = out[(site, kind)]
            a, v = amount_volume(kind, json.loads(body))
            g[0] += 1
            g[1] += a
            g[2] += v
    finally:
        c.close()
    return {k: tuple(v) for k, v in out.items()}


def charged(paths: list[Path]) -> dict[int, int]:
    """Contract id -> the sum of ``fuel.completed`` amounts in the journals."""
    out: dict[int, int] = defaultdict(int)
    for p in paths:
        c = _ro(p)
        try:
            for (body,) in c.execute("SELECT body FROM records WHERE kind = 'fuel.completed'"):
                b = json.loads(body)
                out[b["contract_id"]] += b["amount_kop"]
        finally:
            c.close()
    return out
