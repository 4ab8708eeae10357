"""The balance rule and the till's declined operations (issue 8, item 4).

The till journals a top-up or a return it declined as well as one it approved (the record's
result says which), and a declined sale as ``till.sale_declined``. When a host row of the
account is translated (the host's figures plus this site's spend past the row's watermark),
a declined operation must never become approved spend, and an approved one must count
exactly once, whatever the host's figures are now: the site decided, its answer went to the
customer, and the host applies the decision's figures without deciding again
(:mod:`host.club`). So after any sequence of till operations approved and declined, spend at
another site raising or lowering the host's balance, batches acknowledged, host updates,
snapshots and restarts, the site's view of every club account is the host's plus the site's
unacknowledged *approved* spend, to the kopeck, on both evaluators (the World's check).
"""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from authz.club_model import ClubPayment, ClubReturn, ClubSale, ClubTopUp, SaleLine
from host.ingest import ingest_batch
from terminal.ids import new_id, new_txn_id
from terminal.replica import club_sale_body
from tests.host.edge import T0, club_world
from tests.test_balance_club_swap import SwapWorld
from tests.test_balance_watermark import BALANCE_TABLES, SITE, World, own_club_kop
from wire import Batch, Table, WireRecord


class TillWorld(World):
    """The World of tests/test_balance_watermark.py, whose till journals what it declined as
    the till lane does (a top-up or a return with its result; a sale as
    ``till.sale_declined``), makes returns of its own sales, and whose other site S2 tops up
    and spends club money at the host."""

    def __init__(self, tmp) -> None:
        super().__init__(tmp)
        self.sales: list[WireRecord] = []  # the site's committed sales, for returns
        self.returned: dict[str, int] = {}
        self.s2_ids = itertools.count(1)

    def till_applied(self, name: str, card_no: str, kop: int) -> list[WireRecord]:
        txn = new_txn_id(SITE, "till-1")
        if name == "topup":
            req = ClubTopUp(card_no, kop, T0)
            results = {impl: r.club.top_up(req) for impl, r in self.replicas.items()}
            assert len({(x.reason, x.balance_after_kop) for x in results.values()}) == 1, results
            res = results["native"]
            return [WireRecord(new_id(SITE), SITE, "till-1", txn, "till.topup", T0, {
                "topup": {"card_no": card_no, "amount_kop": kop, "now_utc_s": T0},
                "result": {"topup_id": txn, "card": "**", "reason": res.reason.name, "approved": res.reason.approved,
                           "balance_after_kop": res.balance_after_kop, "turnover_after_kop": res.turnover_after_kop}})]
        sale = ClubSale(card_no, (SaleLine("sku-1", "shoes", kop),), T0, "store", "cash")
        payment = ClubPayment(card_balance_kop=kop)
        txn_no = next(self.txn_no)
        results = {impl: r.club.commit(sale, payment, txn_no) for impl, r in self.replicas.items()}
        assert len({(x.reason, x.balance_after_kop, x.accrued_points) for x in results.values()}) == 1, results
        res = results["native"]
        body = {"sale": club_sale_body(sale), "txn_no": txn_no,
                "payment": {"points": 0, "card_balance_kop": kop, "money_kop": 0},
                "reason": res.reason.name, "accrued_points": res.accrued_points, "redeemed_points": 0,
                "lots_used": [], "balance_after_kop": res.balance_after_kop}
        kind = "till.sale_committed" if res.approved else "till.sale_declined"
        rec = WireRecord(new_id(SITE), SITE, "till-1", txn, kind, T0, body)
        if res.approved:
            self.sales.append(rec)
        return [rec]

    async def give_back(self, which: int, kop: int, declined: bool) -> None:
        """A return of ``kop`` (at most what is left) of one of the site's committed sales,
        decided on every replica as the till does it and journaled; ``declined``: journaled
        as a return the till refused (the card was blocked when it was asked), which changed
        nothing."""
        if not self.sales:
            return
        sale = self.sales[which % len(self.sales)]
        b = sale.body
        total = b["payment"]["card_balance_kop"]
        left = total - self.returned.get(sale.txn_id, 0)
        if left <= 0:
            return
        kop = min(kop, left)
        ret = ClubReturn(b["sale"]["card_no"], next(self.txn_no) + 1_000_000, T0, b["txn_no"], total,
                         b["accrued_points"], b["redeemed_points"], b["payment"]["card_balance_kop"], kop)
        if declined:
            result = {"sale_id": sale.txn_id, "reason": "CARD_BLOCKED", "points_taken_back": 0, "points_charged": 0,
                      "points_given_back": 0, "refund_card_balance_kop": 0, "refund_money_kop": 0,
                      "balance_after_kop": self.replicas["native"].club.account(self.account_of[ret.card_no]).balance_kop}
        else:
            results = {impl: r.club.return_sale(ret) for impl, r in self.replicas.items()}
            assert len({(x.reason, x.refund_card_balance_kop, x.points_taken_back) for x in results.values()}) == 1
            res = results["native"]
            assert res.reason.approved
            self.returned[sale.txn_id] = self.returned.get(sale.txn_id, 0) + kop
            result = {"sale_id": sale.txn_id, "reason": res.reason.name, "points_taken_back": res.points_taken_back,
                      "points_charged": res.points_charged, "points_given_back": res.points_given_back,
                      "refund_card_balance_kop": res.refund_card_balance_kop, "refund_money_kop": res.refund_money_kop,
                      "balance_after_kop": res.balance_after_kop}
        body = {"return": {f: getattr(ret, f) for f in ClubReturn.__dataclass_fields__}, "result": result}
        await self.append([WireRecord(new_id(SITE), SITE, "till-1", sale.txn_id, "till.return", T0, body)])

    async def other_club(self, card: int, kop: int) -> None:
        """Site S2 tops up (``kop`` > 0) or spends (``kop`` < 0) club money on a card; the host
        ingests it at once: the host's balance of the account goes up or down."""
        card_no = self.club_cards[card]
        aid = self.account_of[card_no]
        if kop < 0:  # S2 spends only money that is there (the host's, and the site's view of it)
            host = self.ledger.db.scalar("SELECT balance_kop FROM club_accounts WHERE account_id = ?", (aid,))
            kop = -min(-kop, host, host + own_club_kop(self.unacked(), self.account_of, aid))
            if kop >= 0:
                return
        txn = f"S2-{next(self.s2_ids)}"
        if kop > 0:
            rec = WireRecord(new_id("S2"), "S2", "till-1", txn, "till.topup", T0, {
                "topup": {"card_no": card_no, "amount_kop": kop, "now_utc_s": T0},
                "result": {"topup_id": txn, "card": "**", "reason": "OK", "approved": True,
                           "balance_after_kop": 0, "turnover_after_kop": 0}})
        else:
            sale = ClubSale(card_no, (SaleLine("sku-1", "shoes", -kop),), T0, "store", "cash")
            rec = WireRecord(new_id("S2"), "S2", "till-1", txn, "till.sale_committed", T0, {
                "sale": club_sale_body(sale), "txn_no": 10**12 + next(self.s2_ids),
                "payment": {"points": 0, "card_balance_kop": -kop, "money_kop": 0}, "reason": "OK",
                "accrued_points": 0, "redeemed_points": 0, "lots_used": [], "balance_after_kop": 0})
        ingest_batch(self.ledger, Batch("S2", next(self.s2_batch), (rec,), T0))


STEPS = {
    # amounts around the cap (10,000,000) and the first account's balance (5,000,000), so
    # that the till declines some and another site's spend turns the host's figures around
    "topup": st.tuples(st.just("topup"), st.integers(0, 2), st.integers(1, 7_000_000)),
    "pay": st.tuples(st.just("pay"), st.integers(0, 2), st.integers(1, 7_000_000)),
    "give_back": st.tuples(st.just("give_back"), st.integers(0, 5), st.integers(1, 7_000_000), st.booleans()),
    "other_club": st.tuples(st.just("other_club"), st.integers(0, 2),
                            st.integers(-7_000_000, 7_000_000).filter(bool)),
    "batch": st.tuples(st.just("batch"), st.integers(1, 6)),
    "update": st.tuples(st.just("update")),
    "snapshot": st.tuples(st.just("snapshot"), st.sampled_from(BALANCE_TABLES)),
    "restart": st.tuples(st.just("restart")),
}
steps = st.lists(st.one_of(*STEPS.values()), min_size=1, max_size=20)


def _play(tmp, plan) -> None:
    with TillWorld(tmp) as w:
        w.play(plan, give_back=w.give_back, other_club=w.other_club)
        assert w.unacked() == []


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps)
# declined at the cap, then another site's spend lowers the host's balance: re-deciding the
# top-up on the new row would approve it
@example([("topup", 0, 6_000_000), ("other_club", 0, -3_000_000), ("update",), ("restart",)])
# approved, then another site's top-up takes the host's balance near the cap: re-deciding
# the top-up on the new row would refuse it
@example([("topup", 0, 4_000_000), ("other_club", 0, 3_000_000), ("update",), ("pay", 1, 100),
          ("snapshot", Table.CLUB_ACCOUNTS), ("restart",)])
# a return declined and one approved, across the host's figures moving and a restart
@example([("pay", 0, 2_000_000), ("batch", 6), ("give_back", 0, 1_000_000, True), ("other_club", 0, 7_000_000),
          ("give_back", 0, 500_000, False), ("other_club", 0, -6_000_000), ("restart",), ("batch", 1)])
def test_declined_operations_never_count_and_approved_ones_count_once(tmp_path_factory, plan):
    _play(tmp_path_factory.mktemp("declined"), plan)


def test_a_declined_record_is_no_spend_and_an_approved_one_is_applied_as_decided():
    """The spend of the till's records: a declined top-up or return is none; an approved
    one is applied with its decision's figures, even where the rules would refuse it now."""
    from authz.balance import ClubCommitSpend, ClubReturnSpend, account_after
    from terminal.own_spend import approved_record, item_of
    club = club_world(1)
    acct, cards = club.accounts[0], tuple(club.cards)
    card = cards[0].card_no
    declined_topup = {"topup": {"card_no": card, "amount_kop": 100, "now_utc_s": T0},
                      "result": {"reason": "BALANCE_CAP", "approved": False}}
    declined_return = {"return": {f: 1 for f in ClubReturn.__dataclass_fields__} | {"card_no": card},
                       "result": {"reason": "CARD_BLOCKED", "points_taken_back": 0, "points_given_back": 0,
                                  "refund_card_balance_kop": 0}}
    for kind, body in (("till.topup", declined_topup), ("till.return", declined_return)):
        assert not approved_record(kind, body)
        assert item_of(_Rec(1, kind, body), lambda _: None) is None
    assert not approved_record("till.topup", {"topup": declined_topup["topup"]})  # no result: not approved
    approved = dict(declined_topup, result={"reason": "OK", "approved": True})
    item = item_of(_Rec(2, "till.topup", approved), lambda _: None)
    assert item is not None and item.club == ClubTopUp(card, 100, T0)
    # an approved top-up past the cap and a sale past the balance both count as decided
    cap = club.rules.caps[acct.kind].balance_cap_kop
    sale = ClubSale(card, (SaleLine("s", "shoes", acct.balance_kop + 5),), T0, "store", "cash")
    spends = [ClubTopUp(card, cap, T0), ClubCommitSpend(sale, ClubPayment(card_balance_kop=acct.balance_kop + 5), 7),
              ClubReturnSpend(ClubReturn(card, 8, T0, 7, acct.balance_kop + 5, 0, 0, acct.balance_kop + 5, 3), 0, 0, 3)]
    after = account_after(club.rules, acct, cards, spends)
    assert after.balance_kop == acct.balance_kop + cap - (acct.balance_kop + 5) + 3
    # an operation on a card of another account changes nothing
    assert account_after(club.rules, acct, (), spends) == acct


class _Rec:
    def __init__(self, seq, kind, body) -> None:
        self.seq, self.kind, self.body = seq, kind, body


def test_the_worlds_till_declines_some():
    """The plans above do reach declines (else the property would hold trivially)."""
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as d, TillWorld(Path(d)) as w:
        async def go() -> None:
            await w.topup(w.club_cards[0], 6_000_000)
            await w.pay(w.club_cards[1], 6_000_000)
        asyncio.run(go())
        kinds = [(r.kind, r.body.get("result", {}).get("approved")) for r in w.unacked()]
        assert kinds == [("till.topup", False), ("till.sale_declined", None)]


class SwapTillWorld(TillWorld, SwapWorld):
    """The TillWorld, with club-accounts snapshots applied through the off-loop build
    (terminal/club_swap.py), another site's club spend ingested first (in the snapshot, not
    yet seen by the site's live table)."""

    async def swap_after(self, other: list[tuple[int, int]], during: list[tuple]) -> None:
        for card, kop in other:
            await self.other_club(card, kop)
        await self.swap_snapshot(during)


till_op = st.tuples(st.sampled_from(["topup", "pay"]), st.integers(0, 2), st.integers(1, 7_000_000))
swap_steps = st.lists(st.one_of(*(STEPS[k] for k in ("topup", "pay", "give_back", "batch", "update", "restart")),
                                st.tuples(st.just("swap"),
                                          st.lists(st.tuples(st.integers(0, 2),
                                                             st.integers(-7_000_000, 7_000_000).filter(bool)),
                                                   max_size=2),
                                          st.lists(till_op, max_size=3))),
                      min_size=1, max_size=15)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(swap_steps)
# approved on the live table during the build; the new table (another site's top-up in it)
# would refuse it at the cap if it were decided again at the swap
@example([("swap", [(0, 3_000_000)], [("topup", 0, 4_000_000)]), ("restart",)])
# declined on the live table during the build (insufficient), the new table would approve it
@example([("swap", [(1, 6_000_000)], [("pay", 1, 5_000_000), ("topup", 0, 6_000_000)])])
def test_operations_during_a_club_build_count_as_they_were_decided(tmp_path_factory, plan):
    with SwapTillWorld(tmp_path_factory.mktemp("declined-swap")) as w:
        w.play(plan, give_back=w.give_back, swap=w.swap_after)
        assert w.unacked() == []
