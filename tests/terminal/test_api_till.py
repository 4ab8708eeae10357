"""The till flow end to end through the local API: real HTTP on loopback, a real SQLite
journal, the native evaluator, a scanner on a pty."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import aiohttp
import pytest

from authz.club_model import ClubCardKind
from hw.sim.scanner import ScannerSim
from terminal.config import TillConfig, load_config
from terminal.daemon import Daemon
from terminal.replica import Replica

from .apitokens import TOKENS, auth, with_clients

T = 20  # seconds: every await in these tests is bounded


def site(tmp_path, tills=None):
    cfg = load_config(None)
    cfg = replace(cfg, data_dir=tmp_path, pumps=(), api=replace(cfg.api, port=0),
                  tills=tills or cfg.tills)
    return with_clients(cfg)


def replica_for(cfg):
    return Replica.simulated(cfg, club_accounts=200, seed=3)


class Client:
    """A till integrator's client: JSON, idempotency keys."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.s, self.base, self.n = session, base, 0

    async def post(self, path, body=None, key=None, raw=None, headers=None):
        self.n += 1
        h = {"Idempotency-Key": key or f"test-key-{self.n:06d}"} | auth(path) | (headers or {})
        if raw is not None:
            h["Content-Type"] = "application/json"
            async with self.s.post(self.base + path, data=raw, headers=h) as r:
                return r.status, await r.json(), r.headers
        async with self.s.post(self.base + path, json=body, headers=h) as r:
            return r.status, await r.json(), r.headers

    async def get(self, path):
        async with self.s.get(self.base + path, headers=auth(path)) as r:
            return r.status, await r.json()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def started(cfg, replica=None):
    d = Daemon(cfg, replica or replica_for(cfg))
    await asyncio.wait_for(d.start(), T)
    return d


def an_active_card(replica, activated=True, kind=None):
    """A club card whose card and account are active (and activated), of ``kind`` if given."""
    m = replica.club_model
    for card in m.cards:
        acc = m.accounts[m.account_index[card.account_id]]
        if card.status == 0 and acc.status == 0 and acc.activated == activated and kind in (None, acc.kind):
            return card.card_no
    raise AssertionError("no such card in the generated chain")


LINES = [{"sku": "A1", "category": "shoes", "amount_kop": 500_000},
         {"sku": "H1", "category": "hygiene", "amount_kop": 20_000}]


def test_sale_open_attach_quote_commit(tmp_path):
    async def main():
        cfg = site(tmp_path)
        d = await started(cfg)
        card = an_active_card(d.replica)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                c = Client(s, f"http://127.0.0.1:{d.port}")
                st, sale, _ = await c.post("/v1/tills/till-1/sales", {"lines": LINES})
                assert st == 201 and sale["state"] == "open" and sale["total_kop"] == 520_000
                sid = sale["sale_id"]
                st, body, _ = await c.post(f"/v1/tills/till-1/sales/{sid}/card", {"card_no": card})
                assert st == 200 and body["card"] != card and body["card"].endswith(card[-4:])
                st, q = await c.get(f"/v1/tills/till-1/sales/{sid}/quote")
                assert st == 200 and q["total_kop"] == 520_000
                assert q["accrual_points"] == 500  # 10% of the 5,000 RUB of shoes; hygiene earns nothing
                st, done, _ = await c.post(f"/v1/tills/till-1/sales/{sid}/commit",
                                           {"payment": {"money_kop": 520_000}})
                assert st == 200 and done["state"] == "committed"
                assert done["result"]["accrued_points"] == 500
                st, tail = await c.get("/v1/journal?limit=5")
                kinds = [r["kind"] for r in tail["records"]]
                assert "till.sale_committed" in kinds and "till.sale_opened" in kinds
                assert card not in json.dumps(tail)  # card numbers masked for operators
        finally:
            await d.stop()
    run(main())


def test_retry_returns_the_first_answer_and_reuse_is_refused(tmp_path):
    async def main():
        cfg = site(tmp_path)
        d = await started(cfg)
        card = an_active_card(d.replica)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                c = Client(s, f"http://127.0.0.1:{d.port}")
                st, sale, _ = await c.post("/v1/tills/till-1/sales", {"lines": LINES}, key="open-0001")
                st2, sale2, h = await c.post("/v1/tills/till-1/sales", {"lines": LINES}, key="open-0001")
                assert (st2, sale2) == (st, sale) and h.get("Idempotent-Replayed") == "true"
                st3, err, _ = await c.post("/v1/tills/till-1/sales", {"lines": LINES[:1]}, key="open-0001")
                assert st3 == 422 and err["error"]["code"] == "idempotency_key_reused"
                sid = sale["sale_id"]
                await c.post(f"/v1/tills/till-1/sales/{sid}/card", {"card_no": card})
                body = {"payment": {"money_kop": 520_000}}
                first = await c.post(f"/v1/tills/till-1/sales/{sid}/commit", body, key="commit-0001")
                again = await c.post(f"/v1/tills/till-1/sales/{sid}/commit", body, key="commit-0001")
                assert first[:2] == again[:2]
                st, status = await c.get("/v1/requests/commit-0001")
                assert st == 200 and status["response"] == first[1]
                st, unknown = await c.get("/v1/requests/never-sent-0001")
                assert st == 404 and "safe to send it again" in unknown["error"]["message"]
                # one commit journaled, not two
                n = sum(1 for r in d.journal.records_for_txn(sid) if r.kind == "till.sale_committed")
                assert n == 1
        finally:
            await d.stop()
    run(main())


def test_idempotent_answer_survives_a_restart(tmp_path):
    async def main():
        cfg = site(tmp_path)
        d = await started(cfg)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
            c = Client(s, f"http://127.0.0.1:{d.port}")
            first = await c.post("/v1/tills/till-1/sales", {"lines": LINES}, key="open-restart-1")
        await d.stop()
        d = await started(cfg)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                c = Client(s, f"http://127.0.0.1:{d.port}")
                again = await c.post("/v1/tills/till-1/sales", {"lines": LINES}, key="open-restart-1")
                assert again[:2] == first[:2]
                # the sale itself was voided by the restart's recovery: nothing was charged
                kinds = [r.kind for r in d.journal.records_for_txn(first[1]["sale_id"])]
                assert kinds == ["till.sale_opened", "till.sale_voided"]
        finally:
            await d.stop()
    run(main())


@pytest.mark.parametrize("path, body, raw, status, fragment", [
    ("/v1/tills/till-1/sales", {"lines": []}, None, 422, "non-empty"),
    ("/v1/tills/till-1/sales", {"lines": [{"sku": "x", "amount_kop": 5}]}, None, 422, "no category"),
    ("/v1/tills/till-1/sales", {"lines": [{"category": "shoes", "amount_kop": -5}]}, None, 422, "amount_kop"),
    ("/v1/tills/till-1/sales", {"lines": [{"category": "shoes", "amount_kop": 10**20}]}, None, 422, "amount_kop"),
    ("/v1/tills/till-1/sales", {"lines": [{"category": "caviar", "amount_kop": 5}]}, None, 422, "unknown category"),
    ("/v1/tills/till-1/sales", {"lines": [{"category": "shoes", "amount_kop": 1.5}]}, None, 422, "amount_kop"),
    ("/v1/tills/till-1/sales", {"lines": LINES, "extra": 1}, None, 422, "unknown field"),
    ("/v1/tills/till-1/sales", None, b"{not json", 400, "not valid JSON"),
    ("/v1/tills/till-9/sales", {"lines": LINES}, None, 403, "may not"),  # till-1's token, another till
    ("/v1/tills/till-1/topups", {"card_no": "0000000000000", "amount_kop": 100}, None, 422, "unknown club card"),
    ("/v1/tills/till-1/topups", {"card_no": 5, "amount_kop": 100}, None, 422, "club card"),
    ("/v1/tills/till-1/returns", {"sale_id": "nope", "returned_kop": 100}, None, 404, "no committed sale"),
])
def test_bad_input_is_a_clear_error_and_changes_nothing(tmp_path, path, body, raw, status, fragment):
    async def main():
        cfg = site(tmp_path)
        d = await started(cfg)
        try:
            before = d.journal.counts()
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                c = Client(s, f"http://127.0.0.1:{d.port}")
                st, err, _ = await c.post(path, body, raw=raw)
                assert st == status, err
                assert fragment in err["error"]["message"]
            assert d.journal.counts() == before
        finally:
            await d.stop()
    run(main())


def test_missing_idempotency_key_is_refused(tmp_path):
    async def main():
        d = await started(site(tmp_path))
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                async with s.post(f"http://127.0.0.1:{d.port}/v1/tills/till-1/sales", json={"lines": LINES},
                                  headers=auth("/v1/tills/till-1/sales")) as r:
                    assert r.status == 400 and (await r.json())["error"]["code"] == "idempotency_key_required"
        finally:
            await d.stop()
    run(main())


def test_top_up_caps_and_returns(tmp_path):
    async def main():
        cfg = site(tmp_path)
        d = await started(cfg)
        card = an_active_card(d.replica, kind=ClubCardKind.UNIDENTIFIED)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                c = Client(s, f"http://127.0.0.1:{d.port}")
                st, big, _ = await c.post("/v1/tills/till-1/topups", {"card_no": card, "amount_kop": 1_500_001})
                assert st == 200 and big["reason"] == "BALANCE_CAP" and not big["approved"]
                st, sale, _ = await c.post("/v1/tills/till-1/sales", {"lines": LINES})
                sid = sale["sale_id"]
                await c.post(f"/v1/tills/till-1/sales/{sid}/card", {"card_no": card})
                st, done, _ = await c.post(f"/v1/tills/till-1/sales/{sid}/commit", {"payment": {"money_kop": 520_000}})
                assert done["state"] == "committed"
                st, ret, _ = await c.post("/v1/tills/till-1/returns", {"sale_id": sid, "returned_kop": 520_000})
                assert st == 200 and ret["reason"] == "OK" and ret["points_taken_back"] + ret["points_charged"] == 500
                st, again, _ = await c.post("/v1/tills/till-1/returns", {"sale_id": sid, "returned_kop": 1})
                assert st == 422 and "returned before" in again["error"]["message"]
        finally:
            await d.stop()
    run(main())


def test_scanned_card_attaches_and_the_event_stream_tells(tmp_path):
    async def main():
        sim = ScannerSim()
        try:
            cfg = site(tmp_path, tills=(TillConfig("till-1", scanner_port=sim.link),))
            d = await started(cfg)
            card = an_active_card(d.replica)
            try:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                    c = Client(s, f"http://127.0.0.1:{d.port}")
                    st, sale, _ = await c.post("/v1/tills/till-1/sales", {"lines": LINES})
                    async with s.get(f"http://127.0.0.1:{d.port}/v1/events?lanes=till-1",
                                     headers={"Authorization": f"Bearer {TOKENS['till-1']}"}) as stream:
                        await asyncio.wait_for(stream.content.readline(), T)  # the stream's opening comment
                        await asyncio.wait_for(d.scanners["till-1"].wait_connected(), T)
                        sim.scan(card)
                        seen = []
                        while "event: till.card_attached" not in seen:
                            seen.append((await asyncio.wait_for(stream.content.readline(), T)).decode().strip())
                        assert any("event: till.card_scanned" in line for line in seen)
                        assert not any(card in line for line in seen)  # masked
                    st, got = await c.get(f"/v1/tills/till-1/sales/{sale['sale_id']}")
                    assert got["card"].endswith(card[-4:])
            finally:
                await d.stop()
        finally:
            sim.close()
    run(main())


def test_two_tills_cannot_spend_one_balance_twice(tmp_path):
    """Concurrent lanes: two tills commit at the same moment, each paying from the same card's
    balance an amount that fits alone but not twice; exactly one is approved."""
    async def main():
        cfg = site(tmp_path)
        d = await started(cfg)
        m = d.replica.club_model
        card = next(c.card_no for c in m.cards
                    if c.status == 0 and m.accounts[m.account_index[c.account_id]].activated
                    and m.accounts[m.account_index[c.account_id]].status == 0
                    and m.accounts[m.account_index[c.account_id]].balance_kop >= 100_000)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as s:
                c = Client(s, f"http://127.0.0.1:{d.port}")
                sids = []
                for till in ("till-1", "till-2"):
                    st, sale, _ = await c.post(f"/v1/tills/{till}/sales", {"lines": LINES})
                    await c.post(f"/v1/tills/{till}/sales/{sale['sale_id']}/card", {"card_no": card})
                    sids.append((till, sale["sale_id"]))
                st, q = await c.get(f"/v1/tills/till-1/sales/{sids[0][1]}/quote")
                balance = q["balance_kop"]
                pay = balance * 2 // 3  # fits once, not twice
                body = {"payment": {"card_balance_kop": pay, "money_kop": 520_000 - pay}}
                results = await asyncio.gather(*(c.post(f"/v1/tills/{till}/sales/{sid}/commit", body)
                                                 for till, sid in sids))
                reasons = sorted(r[1]["result"]["reason"] for r in results)
                assert reasons == ["INSUFFICIENT_FUNDS", "OK"], results
                st, sale, _ = await c.post("/v1/tills/till-1/sales", {"lines": LINES})
                await c.post(f"/v1/tills/till-1/sales/{sale['sale_id']}/card", {"card_no": card})
                st, q = await c.get(f"/v1/tills/till-1/sales/{sale['sale_id']}/quote")
                assert q["balance_kop"] == balance - pay  # spent once
        finally:
            await d.stop()
    run(main())
