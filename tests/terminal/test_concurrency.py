"""Rules that span lanes, under requests sent at the same moment on several tills: real HTTP
on loopback against the real daemon, a real SQLite journal, the native evaluator.

Each race here was found on a site (issue 9): two full returns of one sale on two tills
were both refunded; two redemptions on one card on two tills both passed its offline
allowance. The site decides every such rule in one synchronous step (docs/lanes.md), so
whatever the interleaving, the journal afterwards holds what one serial order would.
Also here: attaching a card is journaled (idempotent), and a lane keeps only its open
sales in memory (a committed sale is read from the journal, after a restart too).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from authz.club_model import ClubSale, SaleLine
from terminal.config import TillConfig
from terminal.replica import Replica
from tests.terminal.apitokens import TOKENS
from tests.terminal.test_api_till import Client, T, run, site, started

SHOES = [{"sku": "S1", "category": "shoes", "amount_kop": 300_000}]


def tills(n: int, allowance: int = 3_000) -> tuple[TillConfig, ...]:
    return tuple(TillConfig(f"till-{i}", offline_points_allowance=allowance) for i in range(1, n + 1))


def rich_card(replica, *, balance_kop: int = 0, points: int = 0) -> str:
    """An active, activated club card with at least ``balance_kop`` and ``points`` spendable."""
    m = replica.club_model
    for card in m.cards:
        acc = m.accounts[m.account_index[card.account_id]]
        if card.status != 0 or acc.status != 0 or not acc.activated or acc.balance_kop < balance_kop:
            continue
        q = replica.club.quote(ClubSale(card.card_no, (SaleLine("S1", "shoes", 1_000_000),), int(time.time())))
        if q.points_spendable >= points:
            return card.card_no
    raise AssertionError("no such card in the generated chain")


async def committed_sale(c: Client, till: str, card: str, lines, payment) -> str:
    st, sale, _ = await c.post(f"/v1/tills/{till}/sales", {"lines": lines})
    assert st == 201, sale
    sid = sale["sale_id"]
    st, body, _ = await c.post(f"/v1/tills/{till}/sales/{sid}/card", {"card_no": card})
    assert st == 200, body
    st, done, _ = await c.post(f"/v1/tills/{till}/sales/{sid}/commit", {"payment": payment})
    assert st == 200 and done["state"] == "committed", done
    return sid


async def at_once(c: Client, requests: list[tuple[str, dict]]) -> list[tuple]:
    """POST ``requests`` at the same moment: one warm connection each (opened by concurrent
    GETs first), so that they reach the daemon together rather than one handshake apart."""
    await asyncio.gather(*(c.get("/v1/health") for _ in requests))
    return await asyncio.gather(*(c.post(path, body) for path, body in requests))


async def balance_of(c: Client, till: str, card: str) -> int:
    _, sale, _ = await c.post(f"/v1/tills/{till}/sales", {"lines": SHOES})
    await c.post(f"/v1/tills/{till}/sales/{sale['sale_id']}/card", {"card_no": card})
    _, q = await c.get(f"/v1/tills/{till}/sales/{sale['sale_id']}/quote")
    await c.post(f"/v1/tills/{till}/sales/{sale['sale_id']}/void", {})
    return q["balance_kop"]


def test_two_full_returns_of_one_sale_at_once_refund_it_once(tmp_path):
    """The site's bug: 500,000 kop on the card, a 300,000 kop sale paid from it, then a full
    return sent at once on two tills: both were refunded (800,000 kop). Exactly one may be."""
    async def main():
        d = await started(site(tmp_path, tills=tills(4)))
        card = rich_card(d.replica, balance_kop=300_000)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                c = Client(s, f"http://127.0.0.1:{d.port}")
                before = await balance_of(c, "till-1", card)
                sid = await committed_sale(c, "till-1", card, SHOES, {"card_balance_kop": 300_000})
                assert await balance_of(c, "till-1", card) == before - 300_000
                results = await at_once(c, [(f"/v1/tills/till-{i}/returns",
                                             {"sale_id": sid, "returned_kop": 300_000}) for i in range(1, 5)])
                statuses = sorted(r[0] for r in results)
                assert statuses == [200, 422, 422, 422], results
                assert await balance_of(c, "till-2", card) == before  # refunded once
                returns = [r for r in d.journal.records_for_txn(sid) if r.kind == "till.return"]
                assert len(returns) == 1
        finally:
            await d.stop()
    run(main())


def test_partial_returns_at_once_never_return_more_than_the_sale(tmp_path):
    async def main():
        d = await started(site(tmp_path, tills=tills(6)))
        card = rich_card(d.replica, balance_kop=300_000)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                c = Client(s, f"http://127.0.0.1:{d.port}")
                sid = await committed_sale(c, "till-1", card, SHOES, {"card_balance_kop": 300_000})
                results = await at_once(c, [(f"/v1/tills/till-{i}/returns",
                                             {"sale_id": sid, "returned_kop": 100_000}) for i in range(1, 7)])
                assert sorted(r[0] for r in results) == [200] * 3 + [422] * 3, results  # 3 x 100,000 = the sale
                returned = sum(r.body["return"]["returned_kop"] for r in d.journal.records_for_txn(sid)
                               if r.kind == "till.return")
                assert returned == 300_000
        finally:
            await d.stop()
    run(main())


def test_two_redemptions_on_one_card_at_once_stay_within_its_offline_allowance(tmp_path):
    """The site's bug: two sales redeeming points on one card at once both passed the card's
    offline allowance. With an allowance of 2,000 points, two redemptions of 1,500 cannot both
    pass."""
    async def main():
        d = await started(site(tmp_path, tills=tills(2, allowance=2_000)))
        card = rich_card(d.replica, points=3_000)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                c = Client(s, f"http://127.0.0.1:{d.port}")
                lines = [{"sku": "S1", "category": "shoes", "amount_kop": 1_000_000}]
                sids = []
                for till in ("till-1", "till-2"):
                    _, sale, _ = await c.post(f"/v1/tills/{till}/sales", {"lines": lines})
                    await c.post(f"/v1/tills/{till}/sales/{sale['sale_id']}/card", {"card_no": card})
                    sids.append((till, sale["sale_id"]))
                body = {"payment": {"points": 1_500, "money_kop": 850_000}}
                results = await at_once(c, [(f"/v1/tills/{till}/sales/{sid}/commit", body) for till, sid in sids])
                assert sorted(r[0] for r in results) == [200, 422], results
                redeemed = sum(r.body["redeemed_points"] for till, sid in sids
                               for r in d.journal.records_for_txn(sid) if r.kind == "till.sale_committed")
                assert redeemed == 1_500
                assert d.replica.offline_redeemed[card] == 1_500
        finally:
            await d.stop()
    run(main())


def test_two_top_ups_at_once_stay_within_the_balance_cap(tmp_path):
    """Caps are decided by the one club evaluator in one call: two top-ups that each fit the
    balance cap alone but not together cannot both be approved."""
    async def main():
        d = await started(site(tmp_path))
        card = rich_card(d.replica)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                c = Client(s, f"http://127.0.0.1:{d.port}")
                m = d.replica.club_model
                acc = m.accounts[m.account_index[m.cards[m.card_index[card]].account_id]]
                cap = d.replica.club_model.rules.caps[acc.kind].balance_cap_kop
                room = cap - await balance_of(c, "till-1", card)
                amount = room // 2 + 1
                results = await at_once(c, [(f"/v1/tills/{till}/topups", {"card_no": card, "amount_kop": amount})
                                            for till in ("till-1", "till-2")])
                assert sorted(r[1]["approved"] for r in results) == [False, True], results
                assert await balance_of(c, "till-1", card) == cap - room + amount
        finally:
            await d.stop()
    run(main())


def test_attach_card_is_journaled_and_a_reused_key_is_refused(tmp_path):
    """The same Idempotency-Key with another card number answered 200 and changed the card;
    ``/v1/requests/{key}`` then said the request had no effect."""
    async def main():
        d = await started(site(tmp_path))
        m = d.replica.club_model
        a, b = (card.card_no for card in m.cards[:2])
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                c = Client(s, f"http://127.0.0.1:{d.port}")
                st, sale, _ = await c.post("/v1/tills/till-1/sales", {"lines": SHOES})
                sid = sale["sale_id"]
                path = f"/v1/tills/till-1/sales/{sid}/card"
                st, first, _ = await c.post(path, {"card_no": a}, key="attach-key-1")
                assert st == 200 and first["card"].endswith(a[-4:])
                st, again, h = await c.post(path, {"card_no": a}, key="attach-key-1")
                assert (st, again) == (200, first) and h.get("Idempotent-Replayed") == "true"
                st, err, _ = await c.post(path, {"card_no": b}, key="attach-key-1")
                assert st == 422 and err["error"]["code"] == "idempotency_key_reused", err
                st, view = await c.get(f"/v1/tills/till-1/sales/{sid}")
                assert view["card"].endswith(a[-4:])  # unchanged
                st, status = await c.get("/v1/requests/attach-key-1")
                assert st == 200 and status["response"] == first
                kinds = [r.kind for r in d.journal.records_for_txn(sid)]
                assert kinds == ["till.sale_opened", "till.card_attached"]
        finally:
            await d.stop()
    run(main())


def test_attached_card_survives_a_restart_with_the_sale_voided(tmp_path):
    async def main():
        cfg = site(tmp_path)
        d = await started(cfg)
        card = d.replica.club_model.cards[0].card_no
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
            c = Client(s, f"http://127.0.0.1:{d.port}")
            st, sale, _ = await c.post("/v1/tills/till-1/sales", {"lines": SHOES})
            await c.post(f"/v1/tills/till-1/sales/{sale['sale_id']}/card", {"card_no": card})
        await d.stop()
        d = await started(cfg)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                c = Client(s, f"http://127.0.0.1:{d.port}")
                st, view = await c.get(f"/v1/tills/till-1/sales/{sale['sale_id']}")
                assert st == 200 and view["state"] == "voided" and view["card"].endswith(card[-4:])
        finally:
            await d.stop()
    run(main())


def test_many_sales_keep_only_open_ones_in_memory_and_committed_ones_are_read_back(tmp_path):
    """``TillLane.sales`` held every sale forever (RSS 62 -> 94 MB after 1,500 sales) and a
    committed sale was 404 after a restart. Now a lane keeps its open sale and a few recent
    ones; the rest is read from the journal, for GET and for returns, after a restart too."""
    async def main():
        cfg = site(tmp_path)
        d = await started(cfg)
        card = rich_card(d.replica)
        lane = d.tills["till-1"]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
            c = Client(s, f"http://127.0.0.1:{d.port}")
            first = await committed_sale(c, "till-1", card, SHOES, {"money_kop": 300_000})
            sizes = []
            for _ in range(120):
                await committed_sale(c, "till-1", card, SHOES, {"money_kop": 300_000})
                sizes.append(len(lane.sales))
            assert max(sizes) <= lane.recent_sales + 1, max(sizes)
            st, view = await c.get(f"/v1/tills/till-1/sales/{first}")
            assert st == 200 and view["state"] == "committed" and view["total_kop"] == 300_000
            assert view["result"]["approved"] is True
            st, _ = await c.get(f"/v1/tills/till-2/sales/{first}")
            assert st == 404  # a sale of till-1 is not till-2's
        await d.stop()
        d = await started(cfg)
        try:
            assert len(d.tills["till-1"].sales) == 0
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                c = Client(s, f"http://127.0.0.1:{d.port}")
                c.n = 100_000  # fresh idempotency keys after the restart
                st, again = await c.get(f"/v1/tills/till-1/sales/{first}")
                assert st == 200 and again == view
                st, ret, _ = await c.post("/v1/tills/till-2/returns", {"sale_id": first, "returned_kop": 300_000})
                assert st == 200 and ret["reason"] == "OK", ret
        finally:
            await d.stop()
    run(main())


def test_tills_racing_on_shared_cards_keep_every_invariant(tmp_path):
    """A small run of benchmarks.concurrency: 4 tills at once on 3 cards (sales redeeming
    points and paying from the card balance, returns of one another's sales, top-ups), then
    every rule that spans lanes checked by replaying the journal through the reference
    evaluator."""
    from benchmarks.concurrency import check_invariants, drive, racing_cards

    cfg = site(tmp_path, tills=tills(4, allowance=2_000))
    model = Replica.simulated(cfg, club_accounts=200, seed=3, compact=False, impl="reference").club_model

    async def main():
        d = await started(cfg)
        try:
            return await drive(f"http://127.0.0.1:{d.port}", [t.till_id for t in cfg.tills],
                               racing_cards(model, 3), ops=400, seed=7, tokens=TOKENS)
        finally:
            await d.stop()
    stats = run(main())
    assert stats.ops >= 400 and stats.approved_returns > 0 and stats.redemptions > 0  # it did race
    checked, violations = check_invariants(tmp_path / "journal.sqlite", cfg.site_id, model, 2_000)
    assert checked >= 400
    assert violations == [], violations[:5]
