"""The fuel flow end to end through the local API: real HTTP on loopback, a real SQLite
journal, the native evaluator, a virtual card through the real pcscd, a simulated pump.

Every await is bounded. pcscd polls vpcd every 0.4 s, so each test inserts its card once
and waits for the reader to be empty (plus a poll) when it ends.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, replace
from datetime import date

import aiohttp
import pytest

from authz import sample
from authz.fuel_model import (Contract, FuelCard, FuelModel, Limit, LimitCounter, LimitUnit,
                              Period, ProductGroup, Station, Tariff)
from authz.localtime import day_number, local_date
from authz.money import amount_for_volume, max_volume_for_amount
from hw.sim.card import VirtualCard
from hw.sim.personalise import personalise
from hw.pump import Preset, PumpOffline
from hw.sim.pump import SimulatedPump
from terminal.config import PumpConfig, load_config
from terminal.daemon import Daemon
from terminal.fuel import FuelTimeouts
from terminal.replica import Replica
from tests.hw.pcsc import READER, keys, pcscd, settle_empty_reader  # noqa: F401  (fixtures)

from .apitokens import auth, with_clients

T = 10  # seconds: bound of every single await
PIN = "1234"
PRODUCTS = ("AI92", "AI95", "DT")
GOOD = "7005830000000017"  # 100 L a day, 50,000 RUB a month; contract of 10,000 RUB
STOPPED = "7005830000000025"  # on the stop list
LIMITED = "7005830000000033"  # 30 L a day; its card says 20 L are spent today
EXHAUSTED = "7005830000000041"  # 30 L a day; its card says all 30 L are spent today
PRICE = 6_150 - 150  # AI95 list price less the Regional tariff's home-region discount
SITE_TZ = "Europe/Moscow"  # the contracts' time zone: their day is the limits' day
MIDNIGHT_MARGIN_S = 75  # longer than any one test here (each is bounded by 60 s)


def _day(utc_s: float) -> int:
    return day_number(local_date(int(utc_s), SITE_TZ))


def today() -> int:
    """The contracts' day number now: what the site dates its limit counters with."""
    return _day(time.time())


@pytest.fixture(autouse=True)
def clear_of_midnight():
    """Keep a test clear of the contracts' midnight, so that ``today()`` in the test and the
    site's day agree from its first step to its last (a test started a minute before midnight
    in Moscow would count against one day and see the next)."""
    while _day(now := time.time()) != _day(now + MIDNIGHT_MARGIN_S):
        time.sleep(1)


def fuel_model() -> FuelModel:
    fuel = frozenset({ProductGroup.FUEL})
    day30 = (Limit(1, LimitUnit.MILLILITRES, Period.DAY, 30_000),)
    cards = [
        FuelCard(GOOD, 42, date(2030, 12, 31), fuel,
                 (Limit(1, LimitUnit.MILLILITRES, Period.DAY, 100_000),
                  Limit(2, LimitUnit.KOPECKS, Period.MONTH, 5_000_000))),
        FuelCard(STOPPED, 42, date(2030, 12, 31), fuel),
        FuelCard(LIMITED, 43, date(2030, 12, 31), fuel, day30),
        FuelCard(EXHAUSTED, 43, date(2030, 12, 31), fuel, day30),
    ]
    return FuelModel(
        products=sample.PRODUCTS,
        stations=[Station(1001, 1, fuel, {"AI92": 5_590, "AI95": 6_150, "DT": 6_890})],
        contracts=[Contract(42, "Europe/Moscow", 1, Tariff.REGIONAL, 1_000_000),
                   Contract(43, "Europe/Moscow", 1, Tariff.REGIONAL, 1_000_000)],
        cards=cards, discounts=sample.tariff_table(), stop_list=[STOPPED])


def card_counters(card_no: str) -> dict[int, LimitCounter]:
    """What the virtual card ``card_no`` says it has spent today, by limit id."""
    spent = {LIMITED: 20_000, EXHAUSTED: 30_000}
    return {1: LimitCounter(spent[card_no], today())} if card_no in spent else {}


@dataclass
class Site:
    """A daemon with one pump, its simulated dispenser and a virtual card, over HTTP."""

    daemon: Daemon
    pump: SimulatedPump
    card: VirtualCard
    http: aiohttp.ClientSession
    n: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.daemon.port}"

    async def post(self, path: str, body=None, key: str | None = None, raw: bytes | None = None):
        self.n += 1
        h = {"Idempotency-Key": key or f"fuel-test-{self.n:06d}"} | auth(path)
        if raw is not None:
            h["Content-Type"] = "application/json"
            kw = {"data": raw}
        else:
            kw = {"json": body if body is not None else {}}
        async with self.http.post(self.base + path, headers=h, **kw) as r:
            return r.status, await r.json(), r.headers

    async def get(self, path: str):
        async with self.http.get(self.base + path, headers=auth(path)) as r:
            return r.status, await r.json()

    async def view(self) -> dict:
        return (await self.get("/v1/pumps/1"))[1]

    async def wait(self, cond, what: str, timeout: float = T) -> dict:
        """Poll the pump's view until ``cond(view)``."""
        async def poll():
            while True:
                v = await self.view()
                if cond(v):
                    return v
                await asyncio.sleep(0.01)
        try:
            return await asyncio.wait_for(poll(), timeout)
        except TimeoutError:
            raise AssertionError(f"pump never got to {what}: {await self.view()}") from None

    async def wait_state(self, *states: str, timeout: float = T) -> dict:
        return await self.wait(lambda v: v["state"] in states, "/".join(states), timeout)

    async def insert(self) -> dict:
        self.card.insert()
        return await self.wait_state("card_read")

    async def pull(self) -> None:
        self.card.pull()
        await self.wait(lambda v: not v["card_present"], "the card out")

    async def pin_ok(self) -> None:
        st, body, _ = await self.post("/v1/pumps/1/pin", {"pin": PIN})
        assert st == 200 and body["verified"], body

    def kinds(self, txn_id: str) -> list[str]:
        return [r.kind for r in self.daemon.journal.records_for_txn(txn_id)]

    def record(self, txn_id: str, kind: str) -> dict:
        return next(r.body for r in self.daemon.journal.records_for_txn(txn_id) if r.kind == kind)

    def card_counters(self) -> list[list[int]]:
        return [list(c) for c in self.card.state.counters]

    def balance(self, contract_id: int = 42) -> int:
        return self.daemon.replica.fuel.balance_kop(contract_id)


def run(pcscd, tmp_path, keys, test, *, card_no: str = GOOD, time_scale: float = 1000,
        timeouts: FuelTimeouts | None = None, card_keys=None, hold_until_confirmed: bool = False,
        card_state=None):
    """Start a daemon with a pump and the virtual card ``card_no`` (or the virtual card
    state ``card_state``, a ``hw.sim.card.CardState``), run ``test(site)``."""
    async def main():
        cfg = load_config(None)
        cfg = with_clients(replace(cfg, data_dir=tmp_path, tills=(), api=replace(cfg.api, port=0),
                                   pumps=(PumpConfig(1, READER, "sim", PRODUCTS),)))
        card, = (c for c in fuel_model().cards if c.card_no == card_no)
        path = tmp_path / f"{card_no}.json"
        (card_state or personalise(card, PIN, card_keys or keys, card_counters(card_no).items())).save(path)
        vcard = VirtualCard(path)
        pump = SimulatedPump(1, products=PRODUCTS, time_scale=time_scale, hold_until_confirmed=hold_until_confirmed)
        await asyncio.to_thread(settle_empty_reader)
        d = Daemon(cfg, Replica(fuel_model(), None), keys=keys, pumps={1: pump}, fuel_timeouts=timeouts)
        await asyncio.wait_for(d.start(), T)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as http:
                await test(Site(d, pump, vcard, http))
        finally:
            vcard.pull()
            await asyncio.wait_for(d.stop(), T)
            await asyncio.to_thread(settle_empty_reader)
    asyncio.run(asyncio.wait_for(main(), 60))


@pytest.mark.parametrize("preset, volume_ml", [({"preset_volume_ml": 20_000}, 20_000),
                                               ({"preset_amount_kop": 50_000}, max_volume_for_amount(50_000, PRICE))])
def test_whole_sale_with_a_preset(pcscd, tmp_path, keys, preset, volume_ml):
    async def test(s: Site):
        events = s.daemon.bus.subscribe()
        opening = s.balance()
        await s.insert()
        await s.pin_ok()
        st, ans, _ = await s.post("/v1/pumps/1/authorize", {"product": "AI95", **preset})
        assert st == 200 and ans["approved"] and ans["reason"] == "OK", ans
        assert ans["volume_ml"] == volume_ml and ans["unit_price_kop_per_l"] == PRICE
        amount = amount_for_volume(volume_ml, PRICE)
        assert ans["amount_kop"] == amount and ans["state"] == "authorized"
        txn = ans["txn_id"]
        assert s.card.state.txn_counter == 1 and s.card.state.reservation_open  # reserved on the card
        assert s.pump.state.value == "authorized"
        s.pump.lift_nozzle("AI95")
        v = await s.wait_state("card_read")  # completed; a new session on the card still in
        s.pump.hang_up()
        assert s.kinds(txn) == ["fuel.preauth", "fuel.reserved", "fuel.preset", "fuel.completed",
                                "fuel.card_committed"]
        done = s.record(txn, "fuel.completed")
        assert done["delivered_volume_ml"] == volume_ml and done["amount_kop"] == amount
        committed = s.record(txn, "fuel.card_committed")
        assert s.card_counters() == committed["counters"]  # the card holds what the journal says
        assert committed["counters"][0][1:] == [volume_ml, today()]  # litres today
        assert committed["counters"][1][1] == amount  # rubles this month
        assert s.card.state.txn_counter == 2 and not s.card.state.reservation_open
        assert s.balance() == opening - amount
        assert v["last_delivery"]["volume_ml"] == volume_ml and v["last_delivery"]["reason"] == "preset_reached"
        # every state change was published, with the card masked
        seen = []
        while True:
            try:
                seen.append(await events.get(timeout=0.05))
            except TimeoutError:
                break
        states = [e.data["state"] for e in seen if e.type == "pump.state"]
        for st_ in ("card_read", "pin_ok", "authorized", "dispensing", "completing"):
            assert st_ in states
        assert GOOD not in json.dumps([e.data for e in seen])
        assert any(e.data["card"] == "70**********0017" for e in seen if e.type == "pump.state")
    run(pcscd, tmp_path, keys, test)


def test_sale_without_preset_ends_when_the_nozzle_is_hung_up(pcscd, tmp_path, keys):
    async def test(s: Site):
        opening = s.balance()
        await s.insert()
        await s.pin_ok()
        st, ans, _ = await s.post("/v1/pumps/1/authorize", {"product": "AI95"})
        # 1,000 L station fill > 100 L day limit, and the 10,000 RUB balance buys 166 L: the limit binds
        assert (st, ans["reason"], ans["volume_ml"], ans["binding_limit_id"]) == (200, "LIMIT", 100_000, 1)
        s.pump.lift_nozzle("AI95")
        await s.wait(lambda v: v["txn"] and v["txn"]["delivered_volume_ml"] >= 3_000, "3 L dispensed")
        s.pump.hang_up()
        await s.wait_state("card_read")
        txn = ans["txn_id"]
        done = s.record(txn, "fuel.completed")
        got = done["delivered_volume_ml"]
        assert 3_000 <= got < 100_000 and done["delivery_reason"] == "nozzle_hung_up"
        assert s.pump.last_delivery.volume_ml == got
        assert s.card_counters() == s.record(txn, "fuel.card_committed")["counters"]
        assert s.balance() == opening - amount_for_volume(got, PRICE)
    run(pcscd, tmp_path, keys, test, time_scale=50)


def test_wrong_pin_then_right(pcscd, tmp_path, keys):
    async def test(s: Site):
        v = await s.insert()
        assert v["pin_tries_left"] == 3 and v["card"] == "70**********0017"
        st, err, _ = await s.post("/v1/pumps/1/pin", {"pin": "0000"})
        assert st == 403 and err["error"]["code"] == "wrong_pin" and err["error"]["tries_left"] == 2
        assert "0000" not in json.dumps(err)
        st, err, _ = await s.post("/v1/pumps/1/authorize", {"product": "AI95"})
        assert st == 409 and "PIN" in err["error"]["message"]
        await s.pin_ok()
        assert s.card.state.pin_tries_left == 3
        assert (await s.view())["state"] == "pin_ok"
        outcomes = [(r.kind, r.body["outcome"], r.body["tries_left"]) for r in s.daemon.journal.tail(10)]
        assert outcomes == [("fuel.pin_checked", "wrong_pin", 2), ("fuel.pin_checked", "verified", 3)]
        assert_no_pin_on_disk(s, ("0000", PIN))
    run(pcscd, tmp_path, keys, test)


def assert_no_pin_on_disk(s: Site, pins) -> None:
    """Neither a PIN nor a SHA-256 of a PIN request's body is in the journal's files."""
    import hashlib
    data = b"".join(p.read_bytes() for p in s.daemon.journal_path.parent.glob("journal.sqlite*"))
    for pin in pins:
        body = json.dumps({"pin": pin}).encode()
        assert hashlib.sha256(b"pin:pump-1\0" + body).hexdigest().encode() not in data
        assert f'"pin": "{pin}"'.encode() not in data and f'"pin":"{pin}"'.encode() not in data


def test_pin_step_is_journaled_and_a_reused_key_is_refused(pcscd, tmp_path, keys):
    """The PIN step was not journaled: ``/v1/requests/{key}`` said it had no effect. Now its
    outcome is, under the key; a replay gets the first answer (no try spent again) and the
    same key with another PIN is refused and changes nothing."""
    async def test(s: Site):
        await s.insert()
        st, first, _ = await s.post("/v1/pumps/1/pin", {"pin": "0000"}, key="pin-key-0001")
        assert st == 403 and first["error"]["tries_left"] == 2
        st, again, h = await s.post("/v1/pumps/1/pin", {"pin": "0000"}, key="pin-key-0001")
        assert (st, again) == (403, first) and h.get("Idempotent-Replayed") == "true"
        assert s.card.state.pin_tries_left == 2  # the replay did not try again
        st, err, _ = await s.post("/v1/pumps/1/pin", {"pin": PIN}, key="pin-key-0001")
        assert st == 422 and err["error"]["code"] == "idempotency_key_reused", err
        assert (await s.view())["state"] == "card_read"  # the right PIN under a used key changed nothing
        st, status = await s.get("/v1/requests/pin-key-0001")
        assert st == 200 and status["status"] == 403 and status["response"] == first
        assert [r.kind for r in s.daemon.journal.tail(10)] == ["fuel.pin_checked"]
        assert_no_pin_on_disk(s, ("0000", PIN))
    run(pcscd, tmp_path, keys, test)


def test_pin_blocked_after_three_wrong_tries(pcscd, tmp_path, keys):
    async def test(s: Site):
        await s.insert()
        answers = [await s.post("/v1/pumps/1/pin", {"pin": "9999"}) for _ in range(3)]
        assert [a[1]["error"]["code"] for a in answers] == ["wrong_pin", "wrong_pin", "pin_blocked"]
        st, err, _ = await s.post("/v1/pumps/1/pin", {"pin": PIN})  # right, too late
        assert st == 403 and err["error"]["code"] == "pin_blocked"
        st, err, _ = await s.post("/v1/pumps/1/authorize", {"product": "AI95"})
        assert st == 409
        assert s.card.state.pin_tries_left == 0 and s.card.state.txn_counter == 0
        assert [r.body["outcome"] for r in s.daemon.journal.tail(10)] == ["wrong_pin", "wrong_pin", "pin_blocked",
                                                                         "pin_blocked"]
    run(pcscd, tmp_path, keys, test)


def test_pin_not_entered_in_time_ends_the_session(pcscd, tmp_path, keys):
    async def test(s: Site):
        s.card.insert()
        # idle with the card present is also the moment before the card is read: wait for the notice
        v = await s.wait(lambda v: v["state"] == "idle" and v["card_present"] and v["notice"],
                         "the session timed out")
        assert "timed out" in v["notice"] and v["card"] is None
        st, err, _ = await s.post("/v1/pumps/1/pin", {"pin": PIN})
        assert st == 409
    run(pcscd, tmp_path, keys, test, timeouts=FuelTimeouts(pin_s=0.3))


def test_a_card_of_another_issuer_is_refused_and_journaled(pcscd, tmp_path, keys):
    from hw.card.keys import SoftwareKeyStore, generate_master_key

    async def test(s: Site):
        s.card.insert()
        v = await s.wait(lambda v: v["card_present"] and v["notice"] and "refused" in v["notice"], "a refusal")
        assert v["state"] == "idle" and "genuine" in v["notice"]
        refused = [r for r in s.daemon.journal.tail(10) if r.kind == "fuel.card_refused"]
        assert len(refused) == 1 and "genuine" in refused[0].body["reason"]
        assert GOOD not in refused[0].body["reason"]
    run(pcscd, tmp_path, keys, test, card_keys=SoftwareKeyStore(generate_master_key()))


def test_card_pulled_before_authorize(pcscd, tmp_path, keys):
    async def test(s: Site):
        await s.insert()
        await s.pin_ok()
        await s.pull()
        assert (await s.wait_state("idle"))["card"] is None
        st, err, _ = await s.post("/v1/pumps/1/authorize", {"product": "AI95"})
        assert st == 409 and "no card" in err["error"]["message"]
        assert [r.kind for r in s.daemon.journal.tail(10)] == ["fuel.pin_checked"]  # only the PIN step
        assert s.pump.state.value == "idle"
    run(pcscd, tmp_path, keys, test)


def test_card_pulled_during_dispensing_completes_with_a_correction(pcscd, tmp_path, keys):
    async def test(s: Site):
        opening = s.balance()
        await s.insert()
        await s.pin_ok()
        st, ans, _ = await s.post("/v1/pumps/1/authorize", {"product": "AI95", "preset_volume_ml": 10_000})
        txn = ans["txn_id"]
        reserved = s.card_counters()
        await s.pull()  # the customer takes the card; the sale goes on
        assert (await s.view())["state"] == "authorized"
        s.pump.lift_nozzle("AI95")
        await s.wait_state("idle")
        s.pump.hang_up()
        assert s.kinds(txn) == ["fuel.preauth", "fuel.reserved", "fuel.preset", "fuel.completed",
                                "fuel.correction"]
        corr = s.record(txn, "fuel.correction")
        assert corr["why"] == "absent" and corr["delivered_volume_ml"] == 10_000
        assert corr["counters_reserved"] == reserved  # what the card still holds
        assert corr["counters_final"] == s.record(txn, "fuel.completed")["card_commit"]["counters"]
        assert s.card.state.reservation_open and s.card.state.txn_counter == 1  # the card was not touched again
        assert s.balance() == opening - amount_for_volume(10_000, PRICE)  # charged once
    run(pcscd, tmp_path, keys, test, time_scale=20)


def test_pump_stops_early(pcscd, tmp_path, keys):
    async def test(s: Site):
        await s.insert()
        await s.pin_ok()
        st, ans, _ = await s.post("/v1/pumps/1/authorize", {"product": "AI95", "preset_volume_ml": 20_000})
        s.pump.stop_early_at_ml = 5_000
        s.pump.lift_nozzle("AI95")
        await s.wait_state("card_read")
        done = s.record(ans["txn_id"], "fuel.completed")
        assert (done["delivered_volume_ml"], done["delivery_reason"]) == (5_000, "fault")
        committed = s.record(ans["txn_id"], "fuel.card_committed")
        assert committed["counters"][0][1] == 5_000 and s.card_counters() == committed["counters"]
    run(pcscd, tmp_path, keys, test)


def test_pump_offline_mid_delivery_then_back(pcscd, tmp_path, keys):
    async def test(s: Site):
        opening = s.balance()
        await s.insert()
        await s.pin_ok()
        st, ans, _ = await s.post("/v1/pumps/1/authorize", {"product": "AI95", "preset_volume_ml": 20_000})
        s.pump.go_offline_at_ml = 7_000
        s.pump.lift_nozzle("AI95")
        v = await s.wait(lambda v: v["pump_offline"], "the pump offline")
        assert v["state"] == "dispensing" and v["last_delivery"] is None
        assert s.kinds(ans["txn_id"])[-1] == "fuel.preset"  # nothing completed while it cannot say
        s.pump.come_back_online()
        v = await s.wait_state("card_read")
        assert v["last_delivery"]["volume_ml"] == 7_000  # the dispenser's own totals
        done = s.record(ans["txn_id"], "fuel.completed")
        assert done["delivered_volume_ml"] == 7_000
        assert s.balance() == opening - amount_for_volume(7_000, PRICE)
        assert s.card_counters() == s.record(ans["txn_id"], "fuel.card_committed")["counters"]
    run(pcscd, tmp_path, keys, test)


@pytest.mark.parametrize("card_no, reason", [(STOPPED, "STOP_LIST"), (EXHAUSTED, "LIMIT_EXHAUSTED")])
def test_declines_reserve_nothing_and_preset_nothing(pcscd, tmp_path, keys, card_no, reason):
    async def test(s: Site):
        await s.insert()
        await s.pin_ok()
        st, ans, _ = await s.post("/v1/pumps/1/authorize", {"product": "AI95"})
        assert st == 200 and not ans["approved"] and ans["reason"] == reason and ans["volume_ml"] == 0
        assert s.kinds(ans["txn_id"]) == ["fuel.declined"]
        assert s.card.state.txn_counter == 0 and not s.card.state.reservation_open
        assert s.pump.state.value == "idle" and s.pump.last_delivery is None
        assert (await s.view())["state"] == "pin_ok"  # the driver may choose again
    run(pcscd, tmp_path, keys, test, card_no=card_no)


def test_the_cards_own_counters_bind_when_newer(pcscd, tmp_path, keys):
    """The site knows nothing spent on this card; the card says 20 of its 30 L are gone today."""
    async def test(s: Site):
        await s.insert()
        await s.pin_ok()
        st, ans, _ = await s.post("/v1/pumps/1/authorize", {"product": "AI95", "preset_volume_ml": 25_000})
        assert (ans["reason"], ans["volume_ml"], ans["binding_limit_id"]) == ("LIMIT", 10_000, 1)
        assert s.record(ans["txn_id"], "fuel.preauth")["card"]["reserve_counters"] == [[1, 30_000, today()]]
    run(pcscd, tmp_path, keys, test, card_no=LIMITED)


def test_authorize_retry_returns_the_first_answer_and_reserves_once(pcscd, tmp_path, keys):
    async def test(s: Site):
        await s.insert()
        await s.pin_ok()
        body = {"product": "AI95", "preset_volume_ml": 15_000}
        first = await s.post("/v1/pumps/1/authorize", body, key="authorize-0001")
        again = await s.post("/v1/pumps/1/authorize", body, key="authorize-0001")
        assert first[0] == again[0] == 200 and first[1] == again[1]
        assert again[2].get("Idempotent-Replayed") == "true"
        st, err, _ = await s.post("/v1/pumps/1/authorize", {"product": "AI92"}, key="authorize-0001")
        assert st == 422 and err["error"]["code"] == "idempotency_key_reused"
        st, status = await s.get("/v1/requests/authorize-0001")
        assert st == 200 and status["response"] == first[1]
        assert s.card.state.txn_counter == 1  # reserved once
        kinds = [r.kind for r in s.daemon.journal.tail(100)]
        assert kinds.count("fuel.preauth") == 1 and kinds.count("fuel.preset") == 1
        # a second authorization with a new key is refused: the pump is taken
        st, err, _ = await s.post("/v1/pumps/1/authorize", body, key="authorize-0002")
        assert st == 409
    run(pcscd, tmp_path, keys, test)


def test_bad_input_is_a_clear_error_and_changes_nothing(pcscd, tmp_path, keys):
    bad = [
        ("/v1/pumps/1/authorize", {"product": "AI98"}, None, 422, "no nozzle"),
        ("/v1/pumps/1/authorize", {"product": 95}, None, 422, "product"),
        ("/v1/pumps/1/authorize", {}, None, 422, "missing field"),
        ("/v1/pumps/1/authorize", {"product": "AI95", "preset_volume_ml": 0}, None, 422, "preset_volume_ml"),
        ("/v1/pumps/1/authorize", {"product": "AI95", "preset_volume_ml": 1.5}, None, 422, "preset_volume_ml"),
        ("/v1/pumps/1/authorize", {"product": "AI95", "preset_volume_ml": True}, None, 422, "preset_volume_ml"),
        ("/v1/pumps/1/authorize", {"product": "AI95", "preset_amount_kop": -5}, None, 422, "preset_amount_kop"),
        ("/v1/pumps/1/authorize", {"product": "AI95", "preset_volume_ml": 10**12}, None, 422, "preset_volume_ml"),
        ("/v1/pumps/1/authorize", {"product": "AI95", "preset_volume_ml": 5, "preset_amount_kop": 5}, None, 422,
         "not both"),
        ("/v1/pumps/1/authorize", {"product": "AI95", "extra": 1}, None, 422, "unknown field"),
        ("/v1/pumps/1/authorize", None, b"{not json", 400, "not valid JSON"),
        ("/v1/pumps/1/authorize", None, b"[1, 2]", 422, "JSON object"),
        ("/v1/pumps/7/authorize", {"product": "AI95"}, None, 404, "no pump"),
        ("/v1/pumps/x/authorize", {"product": "AI95"}, None, 404, "no pump"),
        ("/v1/pumps/1/pin", {"pin": 1234}, None, 422, "pin must be"),
        ("/v1/pumps/1/void", {}, None, 409, "no authorization"),
    ]

    async def test(s: Site):
        await s.insert()
        await s.pin_ok()
        before = s.daemon.journal.counts()
        for path, body, raw, status, fragment in bad:
            st, err, _ = await s.post(path, body, raw=raw)
            assert st == status and fragment in err["error"]["message"], (path, body, raw, err)
        st, err, _ = await s.post("/v1/pumps/1/pin", {"pin": "12ab"})  # not counted as a try
        assert st == 422
        async with s.http.post(s.base + "/v1/pumps/1/authorize", json={"product": "AI95"},
                               headers=auth("/v1/pumps/1/authorize")) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "idempotency_key_required"
        assert s.daemon.journal.counts() == before
        assert s.card.state.txn_counter == 0 and s.card.state.pin_tries_left == 3
        assert (await s.view())["state"] == "pin_ok" and s.pump.state.value == "idle"
    run(pcscd, tmp_path, keys, test)


def test_void_gives_the_reservation_back(pcscd, tmp_path, keys):
    async def test(s: Site):
        opening = s.balance()
        before = s.card_counters()
        await s.insert()
        await s.pin_ok()
        st, ans, _ = await s.post("/v1/pumps/1/authorize", {"product": "DT", "preset_volume_ml": 30_000})
        st, voided, _ = await s.post("/v1/pumps/1/void", {})
        assert st == 200 and voided["state"] == "voided" and voided["card_release"] == "released"
        assert s.kinds(ans["txn_id"]) == ["fuel.preauth", "fuel.reserved", "fuel.preset", "fuel.voided"]
        assert s.card.state.txn_counter == 2 and not s.card.state.reservation_open
        assert [c[1] for c in s.card_counters()] == [c[1] for c in before] == [0, 0]
        assert s.balance() == opening and s.pump.state.value == "idle"
        assert (await s.view())["state"] == "card_read"
    run(pcscd, tmp_path, keys, test)


def test_nozzle_never_lifted_times_out_and_voids(pcscd, tmp_path, keys):
    async def test(s: Site):
        await s.insert()
        await s.pin_ok()
        st, ans, _ = await s.post("/v1/pumps/1/authorize", {"product": "AI95", "preset_volume_ml": 5_000})
        await s.wait_state("card_read")
        assert "nozzle was not lifted" in s.record(ans["txn_id"], "fuel.voided")["reason"]
        assert s.pump.state.value == "idle" and s.card.state.txn_counter == 2
        assert "fuel.completed" not in s.kinds(ans["txn_id"])
    run(pcscd, tmp_path, keys, test, timeouts=FuelTimeouts(nozzle_s=0.3))


def test_emergency_stop_completes_what_was_dispensed(pcscd, tmp_path, keys):
    async def test(s: Site):
        opening = s.balance()
        await s.insert()
        await s.pin_ok()
        st, ans, _ = await s.post("/v1/pumps/1/authorize", {"product": "AI95", "preset_volume_ml": 40_000})
        s.pump.lift_nozzle("AI95")
        await s.wait(lambda v: v["txn"] and v["txn"]["delivered_volume_ml"] >= 2_000, "2 L dispensed")
        st, stopped, _ = await s.post("/v1/pumps/1/stop", {})
        assert st == 200 and stopped["stopped"] and stopped["txn_id"] == ans["txn_id"]
        await s.wait_state("card_read")
        done = s.record(ans["txn_id"], "fuel.completed")
        assert done["delivery_reason"] == "stopped" and 2_000 <= done["delivered_volume_ml"] < 40_000
        assert s.balance() == opening - done["amount_kop"]
        assert s.pump.state.value == "stopped"
        st, err, _ = await s.post("/v1/pumps/1/pin", {"pin": PIN})
        assert st == 200
        st, err, _ = await s.post("/v1/pumps/1/authorize", {"product": "AI95"})
        assert st == 409 and "stopped" in err["error"]["message"]  # nothing journaled for it
        s.pump.hang_up()
        st, reset, _ = await s.post("/v1/pumps/1/reset", {})
        assert st == 200 and reset["pump_state"] == "idle"
    run(pcscd, tmp_path, keys, test, time_scale=50)


async def started(cfg, keys, pump) -> Daemon:
    """A daemon of ``cfg`` driving ``pump``, started."""
    d = Daemon(cfg, Replica(fuel_model(), None), keys=keys, pumps={1: pump})
    await asyncio.wait_for(d.start(), T)
    return d


def restart_parts(data_dir, tmp_path, keys, **pump_kw):
    """For a test that restarts the daemon: the site's configuration, the virtual card
    ``GOOD``, and a simulated dispenser that outlives each daemon."""
    cfg = load_config(None)
    cfg = with_clients(replace(cfg, data_dir=data_dir, tills=(), api=replace(cfg.api, port=0),
                               pumps=(PumpConfig(1, READER, "sim", PRODUCTS),)))
    card, = (c for c in fuel_model().cards if c.card_no == GOOD)
    path = tmp_path / "card.json"
    personalise(card, PIN, keys).save(path)
    return cfg, VirtualCard(path), SimulatedPump(1, products=PRODUCTS, time_scale=1000, **pump_kw)


def test_restart_with_the_pump_offline_waits_for_it_then_completes(pcscd, tmp_path, keys):
    """The daemon stops mid-delivery while the pump is offline; the next start cannot tell
    what was dispensed, so the lane waits (refusing new sales) until the pump answers."""
    async def main():
        cfg, vcard, pump = restart_parts(tmp_path, tmp_path, keys)
        await asyncio.to_thread(settle_empty_reader)
        d = None
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as http:
                d = await started(cfg, keys, pump)
                s = Site(d, pump, vcard, http)
                opening = s.balance()
                await s.insert()
                await s.pin_ok()
                st, ans, _ = await s.post("/v1/pumps/1/authorize", {"product": "AI95", "preset_volume_ml": 20_000})
                pump.go_offline_at_ml = 6_000
                pump.lift_nozzle("AI95")
                await s.wait(lambda v: v["pump_offline"], "the pump offline")
                await asyncio.wait_for(d.stop(), T)

                d = await started(cfg, keys, pump)
                s = Site(d, pump, vcard, http, n=s.n)  # new keys: the old ones are journaled
                v = await s.view()
                assert v["state"] == "recovering" and v["recovery_pending"] == 1
                assert s.kinds(ans["txn_id"])[-1] == "fuel.preset"  # nothing guessed
                st, err, _ = await s.post("/v1/pumps/1/pin", {"pin": PIN})
                assert st == 409 and "last run" in err["error"]["message"]
                pump.come_back_online()
                await s.wait_state("card_read")
                pump.hang_up()
                assert s.kinds(ans["txn_id"])[-2:] == ["fuel.completed", "fuel.card_committed"]
                assert s.record(ans["txn_id"], "fuel.completed")["delivered_volume_ml"] == 6_000
                assert s.balance() == opening - amount_for_volume(6_000, PRICE)
                assert s.card_counters() == s.record(ans["txn_id"], "fuel.card_committed")["counters"]
        finally:
            vcard.pull()
            if d is not None:
                await asyncio.wait_for(d.stop(), T)
            await asyncio.to_thread(settle_empty_reader)
    asyncio.run(asyncio.wait_for(main(), 60))


def test_fuel_metered_outside_the_sale_is_journaled_as_a_totals_mismatch(pcscd, tmp_path, keys):
    """Totals are read at authorization and after completion; 3 L through the meter that no
    sale accounts for (the dispenser in manual mode while the link was down) show up as a
    fuel.totals_mismatch record after the sale's completion, and the sale itself is charged
    as delivered."""
    async def test(s: Site):
        before = (await s.pump.read_totals()).for_product("AI95")
        await s.insert()
        await s.pin_ok()
        st, ans, _ = await s.post("/v1/pumps/1/authorize", {"product": "AI95", "preset_volume_ml": 10_000})
        assert st == 200 and ans["approved"], ans
        s.pump.meter_untracked("AI95", 3_000, PRICE)
        s.pump.lift_nozzle("AI95")
        await s.wait_state("card_read")
        s.pump.hang_up()
        txn = ans["txn_id"]
        assert s.kinds(txn)[-3:] == ["fuel.completed", "fuel.totals_mismatch", "fuel.card_committed"]
        assert s.record(txn, "fuel.completed")["delivered_volume_ml"] == 10_000
        assert s.record(txn, "fuel.preauth")["pump"]["totals_before"] == [before.nozzle, before.volume_ml,
                                                                          before.amount_kop]
        alerts = [r for r in s.daemon.journal.tail(50) if r.kind == "fuel.totals_mismatch"]
        assert len(alerts) == 1 and alerts[0].txn_id == txn and alerts[0].lane == "pump-1"
        b = alerts[0].body
        assert b["sale_txn_id"] == txn and b["unexplained_ml"] == 3_000
        assert b["before"][1] == before.volume_ml and b["after"][1] == before.volume_ml + 13_000
        assert await s.pump.unconfirmed_sale() is None  # confirmed once journaled
    run(pcscd, tmp_path, keys, test)


def test_a_dispenser_holding_its_sale_until_confirmed_takes_the_next_sale(pcscd, tmp_path, keys):
    """A dispenser that refuses a new authorization while its last sale is unconfirmed (as
    protocol 2.0 dispensers do): the lane confirms each sale once it is journaled."""
    async def test(s: Site):
        await s.insert()
        for n in range(2):
            await s.pin_ok()
            st, ans, _ = await s.post("/v1/pumps/1/authorize", {"product": "AI95", "preset_volume_ml": 5_000})
            assert st == 200 and ans["approved"], (n, ans)
            s.pump.lift_nozzle("AI95")
            await s.wait(lambda v: v["state"] == "card_read" and v["txn"] is None, "the sale's end")
            s.pump.hang_up()
            assert s.kinds(ans["txn_id"])[-1] == "fuel.card_committed"
            assert await s.pump.unconfirmed_sale() is None
        assert not [r for r in s.daemon.journal.tail(50) if r.kind == "fuel.totals_mismatch"]
    run(pcscd, tmp_path, keys, test, hold_until_confirmed=True)


def test_an_operator_suspends_and_resumes_a_delivery_and_each_step_is_journaled(pcscd, tmp_path, keys):
    async def test(s: Site):
        st, err, _ = await s.post("/v1/pumps/1/suspend", {})
        assert st == 409 and "no sale is flowing" in err["error"]["message"], err  # nothing to suspend
        await s.insert()
        await s.pin_ok()
        st, ans, _ = await s.post("/v1/pumps/1/authorize", {"product": "AI95", "preset_volume_ml": 20_000})
        s.pump.lift_nozzle("AI95")
        await s.wait(lambda v: v["txn"] and v["txn"]["delivered_volume_ml"] >= 1_000, "1 L dispensed")
        st, got, _ = await s.post("/v1/pumps/1/suspend", {}, key="suspend-0001")
        assert st == 200 and got == {"pump": 1, "action": "suspend", "txn_id": ans["txn_id"],
                                     "pump_state": "suspended"}, got
        assert s.pump.state.value == "suspended"
        st, again, h = await s.post("/v1/pumps/1/suspend", {}, key="suspend-0001")
        assert st == 200 and again == got and h.get("Idempotent-Replayed") == "true"  # journaled once
        actions = [r for r in s.daemon.journal.tail(50) if r.kind == "fuel.pump_action"]
        assert [(r.body, r.lane) for r in actions] == [({"action": "suspend", "sale_txn_id": ans["txn_id"]},
                                                         "pump-1")]
        assert (await s.view())["state"] == "dispensing"  # the sale stays open
        st, got, _ = await s.post("/v1/pumps/1/resume", {})
        assert st == 200 and got["action"] == "resume" and got["pump_state"] in ("dispensing", "completed"), got
        await s.wait_state("card_read")
        s.pump.hang_up()
        assert s.record(ans["txn_id"], "fuel.completed")["delivered_volume_ml"] == 20_000
        assert [r.body["action"] for r in s.daemon.journal.tail(50) if r.kind == "fuel.pump_action"] == [
            "suspend", "resume"]
        st, err, _ = await s.post("/v1/pumps/1/resume", {})
        assert st == 409, err
    run(pcscd, tmp_path, keys, test, time_scale=20)


def test_a_sale_whose_confirm_was_lost_is_confirmed_at_the_next_start(pcscd, tmp_path, keys):
    """The dispenser did not get the confirm of a finished, journaled sale (the link dropped
    just then): the sale ends on the site, the dispenser keeps it unconfirmed, and the next
    start confirms it from the journal, journaling nothing again. A dispenser holding a sale
    that the journal does not know is left unconfirmed."""
    async def main():
        cfg, vcard, pump = restart_parts(tmp_path / "data", tmp_path, keys, hold_until_confirmed=True)
        await asyncio.to_thread(settle_empty_reader)
        d = None
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as http:
                d = await started(cfg, keys, pump)
                s = Site(d, pump, vcard, http)
                await s.insert()
                await s.pin_ok()
                st, ans, _ = await s.post("/v1/pumps/1/authorize", {"product": "AI95", "preset_volume_ml": 5_000})
                pump.lose_confirms = 1
                pump.lift_nozzle("AI95")
                await s.wait(lambda v: v["state"] == "card_read" and v["txn"] is None, "the sale's end")
                pump.hang_up()
                assert s.kinds(ans["txn_id"])[-1] == "fuel.card_committed"
                held = await pump.unconfirmed_sale()
                assert held is not None and s.record(ans["txn_id"], "fuel.completed")["sale_id"] == held.sale_id
                vcard.pull()
                await asyncio.wait_for(d.stop(), T)

                d = await started(cfg, keys, pump)
                assert await pump.unconfirmed_sale() is None  # confirmed at start
                assert [r.kind for r in d.journal.tail(100)].count("fuel.completed") == 1  # not journaled again
                await asyncio.wait_for(d.stop(), T)

                # a dispenser holding a sale this journal never saw: left for the operator
                pump.lose_confirms = 1
                await pump.__aenter__()
                sale_no = await pump.authorize("AI95", PRICE, Preset.by_volume(1_000))
                pump.lift_nozzle("AI95")
                while pump.last_delivery is None or pump.last_delivery.sale_no != sale_no:
                    await asyncio.sleep(0.01)
                pump.hang_up()
                with pytest.raises(PumpOffline):
                    await pump.confirm_sale(pump.last_delivery.sale_id)
                await pump.__aexit__(None, None, None)
                d = await started(cfg, keys, pump)
                s = Site(d, pump, vcard, http, n=100)
                held = await pump.unconfirmed_sale()
                assert held is not None and held.sale_no == sale_no
                assert f"sale {sale_no}" in (await s.view())["notice"]
        finally:
            vcard.pull()
            if d is not None:
                await asyncio.wait_for(d.stop(), T)
            await asyncio.to_thread(settle_empty_reader)
    asyncio.run(asyncio.wait_for(main(), 60))
