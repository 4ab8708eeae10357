"""The balance rule, end to end without a broker: a real host ledger (SQLite) ingests a site's
batches and publishes deltas and snapshots; the site (a real journal, both evaluators side by
side) applies them. After any sequence of local spend, batches ingested, spend at another
site, host updates, snapshots and restarts, the site's view of every balance and counter is
the host's plus the site's own spend the host has not ingested, to the kopeck and
millilitre, on the reference and the native evaluator alike."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import defaultdict
from pathlib import Path
from typing import Self

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from authz import sample
from authz.club_model import ClubPayment, ClubSale, ClubTopUp, SaleLine
from authz.fuel_model import ProductGroup, Station
from host import master
from host.ingest import ingest_batch
from host.ledger import Ledger
from host.publisher import Publisher
from host.watermarks import prune_spenders
from terminal.follower import FullSnapshot
from terminal.ids import new_id, new_txn_id
from terminal.journal import Journal, Record
from terminal.own_spend import JournalSpend
from terminal.replica import CLUB_TABLES, FUEL_TABLES, Replica, club_sale_body
from terminal.sync import _batch_key, _Range
from tests.host.edge import (
    CARD,
    CARD2,
    CONTRACT,
    STATION,
    T0,
    Site,
    club_world,
    contract,
    fuel_card,
)
from wire import Batch, Table, WireRecord, row_key

SITE = "S1"
CARDS = (CARD, CARD2)
IMPLS = ("reference", "native")
BALANCE_TABLES = (Table.CONTRACTS, Table.FUEL_CARDS, Table.CLUB_ACCOUNTS)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class World:
    """One host ledger, one site S1 (journal + a replica per evaluator), and site S2's spend
    ingested straight at the host."""

    def __init__(self, tmp: Path) -> None:
        self.ledger = Ledger.open(f"sqlite:///{tmp / 'ledger.sqlite'}", clock=Clock())
        master.put_products(self.ledger, sample.PRODUCTS)
        master.put_stations(self.ledger, [Station(STATION, 0, frozenset(ProductGroup), {"AI95": 6_000})])
        master.create_contract(self.ledger, contract(balance_kop=10_000_000))
        for no in CARDS:
            master.issue_fuel_card(self.ledger, fuel_card(no))
        club = club_world(3)
        master.import_club_model(self.ledger, club)
        self.club_cards = tuple(c.card_no for c in club.cards)
        self.account_of = {c.card_no: c.account_id for c in club.cards}
        for s in ("S1", "S2"):
            master.add_site(self.ledger, s)
        self.pub = Publisher(self.ledger)
        self.journal = Journal.open(tmp / "journal.sqlite", SITE)
        self.stored: dict[Table, dict] = {}
        self.versions: dict[Table, int] = {}
        for t in FUEL_TABLES + CLUB_TABLES:
            parts = self.pub.snapshot(t)
            self.stored[t] = {row_key(t, r): r for p in parts for r in p.rows}
            self.versions[t] = parts[0].version
        for d in self.pub.pending():
            self.pub.mark_sent(d)
        self.replicas = self._start()
        self.s1 = Site(SITE)  # builds the records' bodies as the lanes write them
        self.s2 = Site("S2")
        self.s2_batch = itertools.count(1)
        self.batch_no = 0
        self.cursor = 0  # the last journal seq put in a batch
        self.ingested = 0  # the last journal seq of a batch the host ingested
        self.txn_no = itertools.count(1)
        self.tc = defaultdict(lambda: 10)
        self.all_fuel: list[tuple[str, int, int]] = []  # (card, ml, kop) of every delivery, both sites
        self.dropped = 0  # spender rows the host's pruning dropped

    def _start(self) -> dict[str, Replica]:
        out = {}
        for impl in IMPLS:
            r = Replica.from_rows({t: list(rows.values()) for t, rows in self.stored.items()}, site_id=SITE,
                                  versions=self.versions, impl=impl)
            r.follow_own_spend(JournalSpend(SITE, self.journal))
            r.replay(self._records())
            out[impl] = r
        return out

    def _records(self):
        seq = 0
        while chunk := self.journal.after(seq, 1000):
            yield from chunk
            seq = chunk[-1].seq

    async def append(self, recs: list[WireRecord]) -> None:
        await self.journal.append([Record(r.record_id, r.site_id, r.lane, r.txn_id, r.kind, r.at_utc_s, dict(r.body))
                                   for r in recs])

    # -- steps --

    async def fuel(self, card_no: str, ml: int) -> None:
        self.fuel_applied(await self.fuel_journaled(card_no, ml))

    async def fuel_journaled(self, card_no: str, ml: int) -> dict:
        """A delivery's records journaled as the pump lane does, first; returns the completion's
        body, which the lane applies to the replica next (:meth:`fuel_applied`)."""
        self.tc[card_no] += 2
        recs = self.s1.fuel_sale(card_no=card_no, delivered_ml=ml, authorized_ml=ml, tc=self.tc[card_no])
        await self.append(recs)
        done = recs[-2]
        assert done.kind == "fuel.completed"
        self.all_fuel.append((card_no, ml, done.body["amount_kop"]))
        return dict(done.body)

    def fuel_applied(self, body: dict) -> None:
        """The pump lane's step after the journal: the completion applied to every replica."""
        for r in self.replicas.values():
            r.apply("fuel.completed", dict(body))

    async def topup(self, card_no: str, kop: int) -> None:
        await self.append(self.till_applied("topup", card_no, kop))

    async def pay(self, card_no: str, kop: int) -> None:
        await self.append(self.till_applied("pay", card_no, kop))

    def till_applied(self, name: str, card_no: str, kop: int) -> list[WireRecord]:
        """A top-up or a sale paid from the card decided on every replica, as the till does it
        first; returns the records the till journals next (none for a declined one)."""
        txn = new_txn_id(SITE, "till-1")
        if name == "topup":
            req = ClubTopUp(card_no, kop, T0)
            results = {impl: r.club.top_up(req) for impl, r in self.replicas.items()}
            assert len({(x.reason, x.balance_after_kop) for x in results.values()}) == 1, results
            res = results["native"]
            if not res.reason.approved:
                return []  # journaled as a top-up that changed nothing; left out here
            return [WireRecord(new_id(SITE), SITE, "till-1", txn, "till.topup", T0, {
                "topup": {"card_no": card_no, "amount_kop": kop, "now_utc_s": T0},
                "result": {"topup_id": txn, "card": "**", "reason": res.reason.name, "approved": True,
                           "balance_after_kop": res.balance_after_kop, "turnover_after_kop": res.turnover_after_kop}})]
        sale = ClubSale(card_no, (SaleLine("sku-1", "shoes", kop),), T0, "store", "cash")
        payment = ClubPayment(card_balance_kop=kop)
        txn_no = next(self.txn_no)
        results = {impl: r.club.commit(sale, payment, txn_no) for impl, r in self.replicas.items()}
        assert len({(x.reason, x.balance_after_kop, x.accrued_points) for x in results.values()}) == 1, results
        res = results["native"]
        if not res.approved:
            return []
        body = {"sale": club_sale_body(sale), "txn_no": txn_no,
                "payment": {"points": 0, "card_balance_kop": kop, "money_kop": 0},
                "reason": res.reason.name, "accrued_points": res.accrued_points, "redeemed_points": 0,
                "lots_used": [], "balance_after_kop": res.balance_after_kop}
        return [WireRecord(new_id(SITE), SITE, "till-1", txn, "till.sale_committed", T0, body)]

    async def other_site(self, card_no: str, ml: int) -> None:
        self.tc[card_no] += 2
        recs = self.s2.fuel_sale(card_no=card_no, delivered_ml=ml, authorized_ml=ml, tc=self.tc[card_no])
        ingest_batch(self.ledger, Batch("S2", next(self.s2_batch), tuple(recs), T0))
        self.all_fuel.append((card_no, ml, recs[-2].body["amount_kop"]))

    async def batch(self, k: int) -> None:
        """The sync client's part: number the next batch (its range into the journal's meta),
        and the host ingests it."""
        recs = self.journal.after(self.cursor, k)
        if not recs:
            return
        self.batch_no += 1
        await self.journal.set_meta(_batch_key(self.batch_no),
                                    _Range(recs[0].seq, recs[-1].seq, len(recs), T0).to_meta())
        self.cursor = recs[-1].seq
        ingest_batch(self.ledger, Batch(SITE, self.batch_no, tuple(WireRecord.from_record(r) for r in recs), T0))
        self.ingested = self.cursor

    def _deliver(self, update) -> None:
        t = update.table
        if isinstance(update, FullSnapshot):
            if update.version < self.versions[t]:
                return
            self.stored[t] = {row_key(t, r): r for r in update.rows}
            self.versions[t] = update.version
        else:
            if update.to_version <= self.versions[t]:
                return
            assert update.from_version == self.versions[t]
            for k in update.deletes:
                self.stored[t].pop(k, None)
            self.stored[t].update((row_key(t, r), r) for r in update.upserts)
            self.versions[t] = update.to_version
        for r in self.replicas.values():
            r.apply_update(update)

    def update(self) -> None:
        """The host's fold: ledger changes into deltas, delivered in version order."""
        self.pub.flush_dirty()
        for d in self.pub.pending():
            self._deliver(d)
            self.pub.mark_sent(d)

    async def prune(self, scan: int, ingest_first: int = 0, passes: int = 1) -> int:
        """The host's housekeeping (host.watermarks.prune_spenders, live rows too), every
        spender row gone through ``passes`` times in a row, ``scan`` rows a call; first
        ``ingest_first`` records batched and ingested that the site is not told of yet.
        Returns the spender rows dropped."""
        if ingest_first:
            await self.batch(ingest_first)
        dropped = 0
        for _ in range(passes):
            after = None
            while True:
                res = prune_spenders(self.ledger, after, scan=scan)
                dropped += res.pruned
                if (after := res.after) is None:
                    break
        self.dropped += dropped
        return dropped

    async def acknowledge(self) -> None:
        """The site's side after an update, as the daemon does it: the kept watermarks of rows
        that name it no more written beside the journal (and those no row needs any more
        deleted), then its presence report of the table
        versions it holds (what the host's pruning waits for)."""
        for r in self.replicas.values():
            await r.persist_marks()
            await r.drop_marks()  # after the "store" (self.stored, written at delivery) holds the rows
        report = json.dumps({t.value: v for t, v in self.versions.items()})
        self.ledger.db.run(lambda db: db.execute("UPDATE sites SET replica_versions = ? WHERE site_id = ?",
                                                 (report, SITE)))

    def snapshot(self, table: Table) -> None:
        parts = self.pub.snapshot(table)
        self._deliver(FullSnapshot(table, parts[0].version, tuple(r for p in parts for r in p.rows)))

    def restart(self) -> None:
        self.replicas = self._start()

    async def step(self, name: str, *args) -> None:
        """One step of a generated plan by its name (club cards by their index), then the
        host's fold and the check."""
        if name == "fuel":
            await self.fuel(*args)
        elif name == "topup":
            await self.topup(self.club_cards[args[0]], args[1])
        elif name == "pay":
            await self.pay(self.club_cards[args[0]], args[1])
        elif name == "other":
            await self.other_site(*args)
        elif name == "batch":
            await self.batch(args[0])
        elif name == "snapshot":
            self.snapshot(args[0])
        elif name == "restart":
            self.restart()
        elif name == "prune":
            await self.prune(*args)
        elif name != "update":
            raise ValueError(f"no step {name!r}")
        self.update()
        await self.acknowledge()
        self.check()

    def play(self, plan, **extra) -> None:
        """Every step of ``plan`` (one named in ``extra``: that coroutine with the step's
        arguments, then the host's fold and the check), then :meth:`settle`."""
        async def run() -> None:
            for step in plan:
                if step[0] in extra:
                    await extra[step[0]](*step[1:])
                    await self.step("update")
                else:
                    await self.step(*step)
            await self.settle()
        asyncio.run(run())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def assert_redeemed(self, card_no: str, points: int) -> None:
        """Every replica counts ``points`` redeemed on ``card_no`` against its offline allowance."""
        assert all(r.offline_redeemed.get(card_no, 0) == points for r in self.replicas.values())

    async def settle(self) -> None:
        """Every journal record batched and ingested: the site is the host."""
        while self.cursor < (self.journal.counts().last_seq or 0):
            await self.batch(50)
        self.update()
        self.check()

    async def redeem(self, card_no: str, points: int, money_kop: int) -> None:
        """A sale on ``card_no`` paid with ``points`` and money at every replica, as the till
        lane does it (its redemption counted against the offline allowance), journaled."""
        sale = ClubSale(card_no, (SaleLine("s", "shoes", points * 100 + money_kop),), T0, "store", "cash")
        txn_no = next(self.txn_no)
        for r in self.replicas.values():
            res = r.club.commit(sale, ClubPayment(points=points, money_kop=money_kop), txn_no)
            assert res.approved and res.redeemed_points == points
            r.offline_redeemed[card_no] += res.redeemed_points  # what the till lane does
        body = {"sale": club_sale_body(sale), "txn_no": txn_no,
                "payment": {"points": points, "card_balance_kop": 0, "money_kop": money_kop}, "reason": "OK",
                "accrued_points": res.accrued_points, "redeemed_points": points, "lots_used": [],
                "balance_after_kop": res.balance_after_kop}
        await self.append([WireRecord(new_id(SITE), SITE, "till-1", new_txn_id(SITE, "till-1"), "till.sale_committed",
                                      T0, body)])

    def redeemable_card(self) -> str:
        """A club card that may redeem points on a 100-ruble sale now."""
        return next(no for no in self.club_cards if self.replicas["native"].club.quote(
            ClubSale(no, (SaleLine("s", "shoes", 10_000),), T0)).max_redeem_points)

    # -- the property --

    def unacked(self):
        return [r for r in self._records() if r.seq > self.ingested]

    def check(self) -> None:
        led = self.ledger
        pending = self.unacked()
        fuel_kop = sum(r.body["amount_kop"] for r in pending if r.kind == "fuel.completed")
        for impl, rep in self.replicas.items():
            ev = rep.fuel
            # the host's balance less this site's spend the host has not ingested ...
            assert ev.balance_kop(CONTRACT) == led.balance_kop(CONTRACT) - fuel_kop, impl
            # ... which is every delivery at every site counted exactly once
            assert ev.balance_kop(CONTRACT) == 10_000_000 - sum(k for _, _, k in self.all_fuel), impl
            for no in CARDS:
                ml = sum(m for c, m, _ in self.all_fuel if c == no)
                kop = sum(k for c, _, k in self.all_fuel if c == no)
                day = ev.counter(no, 1)
                month = ev.counter(no, 2)
                assert (day.spent if day else 0, month.spent if month else 0) == (ml, kop), (impl, no)
            for no in self.club_cards:
                aid = self.account_of[no]
                host = led.db.scalar("SELECT balance_kop FROM club_accounts WHERE account_id = ?", (aid,))
                mine = own_club_kop(pending, self.account_of, aid)
                assert rep.club.account(aid).balance_kop == host + mine, (impl, aid)
        ref, nat = (self.replicas[i].club for i in IMPLS)
        for aid in set(self.account_of.values()):
            a, b = ref.account(aid), nat.account(aid)
            assert (a.balance_kop, a.turnover_kop, _lots(a)) == (b.balance_kop, b.turnover_kop, _lots(b))

    def close(self) -> None:
        self.journal.close()
        self.ledger.close()


def own_club_kop(records, account_of, aid: int) -> int:
    """The money the site's approved club operations among ``records`` put on (or took off)
    account ``aid``, read straight from the journal: approved top-ups and returns' refunds
    to the card, less sales paid from it; a top-up or return the till declined counts
    nothing (tests/test_balance_declined.py journals those)."""
    kop = 0
    for r in records:
        b = r.body
        if r.kind == "till.topup" and b["result"]["approved"] and account_of[b["topup"]["card_no"]] == aid:
            kop += b["topup"]["amount_kop"]
        elif r.kind == "till.return" and b["result"]["reason"] == "OK" and account_of[b["return"]["card_no"]] == aid:
            kop += b["result"]["refund_card_balance_kop"]
        elif r.kind == "till.sale_committed" and account_of[b["sale"]["card_no"]] == aid:
            kop -= b["payment"]["card_balance_kop"]
    return kop


def _lots(account) -> list:
    return sorted((x.lot_id, x.points, x.matures_at_s, x.expires_at_s) for x in account.lots)


#: The steps of a plan, by name (other tests add their own to these).
STEPS = {
    "fuel": st.tuples(st.just("fuel"), st.sampled_from(CARDS), st.integers(1, 40_000)),
    "topup": st.tuples(st.just("topup"), st.integers(0, 2), st.integers(1, 300_000)),
    "pay": st.tuples(st.just("pay"), st.integers(0, 2), st.integers(1, 300_000)),
    "other": st.tuples(st.just("other"), st.sampled_from(CARDS), st.integers(1, 40_000)),
    "batch": st.tuples(st.just("batch"), st.integers(1, 12)),
    "update": st.tuples(st.just("update")),
    "snapshot": st.tuples(st.just("snapshot"), st.sampled_from(BALANCE_TABLES)),
    "restart": st.tuples(st.just("restart")),
    "prune": st.tuples(st.just("prune"), st.integers(1, 7), st.sampled_from([0, 2, 12]), st.integers(1, 3)),
}
steps = st.lists(st.one_of(*STEPS.values()), min_size=1, max_size=25)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
# spend the host has not counted survives two rows of the same contract in a row
@example([("fuel", CARD, 1_000), ("batch", 12), ("fuel", CARD, 2_000), ("other", CARD2, 500), ("other", CARD2, 700),
          ("topup", 0, 1_000), ("batch", 3), ("topup", 0, 2_000), ("pay", 0, 500), ("batch", 1), ("restart",)])
# spenders pruned: covered, then new spend ingested before the site saw the rows (the cover
# is off, nothing dropped); spend ingested, then covered and gone through again before the
# site saw any of it (dropped only once it holds the rows); the rows that name it no more
# keep its mark, across a restart
@example([("fuel", CARD, 1_000), ("topup", 1, 3_000), ("batch", 12), ("prune", 5, 0, 2), ("fuel", CARD, 700),
          ("pay", 1, 300), ("prune", 5, 12, 1), ("prune", 5, 0, 2), ("other", CARD, 400), ("fuel", CARD2, 500),
          ("prune", 5, 12, 3), ("prune", 5, 0, 1), ("other", CARD2, 300), ("other", CARD, 300),
          ("snapshot", Table.CLUB_ACCOUNTS), ("restart",), ("fuel", CARD, 100)])
@example([("topup", 0, 1_000), ("batch", 12), ("topup", 0, 2_000), ("snapshot", Table.CLUB_ACCOUNTS),
          ("snapshot", Table.CLUB_ACCOUNTS), ("fuel", CARD2, 900), ("snapshot", Table.FUEL_CARDS),
          ("snapshot", Table.FUEL_CARDS)])
def test_the_site_sees_the_host_plus_its_own_unacknowledged_spend_on_both_evaluators(tmp_path_factory, plan):
    with World(tmp_path_factory.mktemp("balance")) as w:
        w.play(plan)  # then everything acked: the site is the host
        assert w.unacked() == []


def test_the_offline_redemption_allowance_starts_again_once_the_host_counts_it(tmp_path):
    """Points redeemed on a card count against the till's per-card offline allowance only
    until the host has counted them (the account row's watermark passes them): after a
    restart they still count, once the account comes back from the host they do not."""
    w = World(tmp_path)

    async def go() -> None:
        card = w.redeemable_card()
        await w.redeem(card, 2, 9_800)
        w.update()
        w.assert_redeemed(card, 2)  # not counted by the host yet
        w.restart()
        w.assert_redeemed(card, 2)  # from the journal
        await w.batch(10)
        w.update()
        w.assert_redeemed(card, 0)
        w.restart()
        w.assert_redeemed(card, 0)
        w.check()
    with w:
        asyncio.run(go())
