"""Two pumps authorizing at the same moment on one contract: real HTTP on loopback, a real
SQLite journal, two virtual cards in the two vpcd readers of the real pcscd, simulated
dispensers. Run under ``flock /tmp/edgepos-pcscd.lock`` (pcscd is shared).

Each lane used to decide on the contract's balance less the open authorizations' holds,
then await the journal, then take its own hold: two pumps deciding in that window both
got the whole balance. The decision and the hold are now one synchronous step.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import date

import aiohttp

from authz import sample
from authz.fuel_model import (
    Contract,
    FuelCard,
    FuelModel,
    Limit,
    LimitUnit,
    Period,
    ProductGroup,
    Station,
    Tariff,
)
from hw.sim.card import VirtualCard
from hw.sim.personalise import personalise
from hw.sim.pump import SimulatedPump
from terminal.config import PumpConfig, load_config
from terminal.daemon import Daemon
from terminal.replica import Replica
from tests.hw.pcsc import READER, keys, pcscd, settle_empty_reader  # noqa: F401  (fixtures)
from tests.terminal.apitokens import auth, with_clients

T = 10
PIN = "1234"
READER_2 = "Virtual PCD 00 01"
PORTS = {READER: 35963, READER_2: 35964}
CARDS = ("7005830000000017", "7005830000000025")
BALANCE_KOP = 1_000_000  # the contract's: each authorization below fits alone, not both


def fuel_model() -> FuelModel:
    fuel = frozenset({ProductGroup.FUEL})
    day = (Limit(1, LimitUnit.MILLILITRES, Period.DAY, 200_000),)
    return FuelModel(
        products=sample.PRODUCTS,
        stations=[Station(1001, 1, fuel, {"AI92": 5_590, "AI95": 6_150, "DT": 6_890})],
        contracts=[Contract(42, "Europe/Moscow", 1, Tariff.REGIONAL, BALANCE_KOP)],
        cards=[FuelCard(no, 42, date(2030, 12, 31), fuel, day) for no in CARDS],
        discounts=sample.tariff_table(), stop_list=[])


async def _two_pumps(tmp_path, keys, test, *, one_card_twice: bool = False) -> None:
    """A daemon with two pumps, a virtual card in each reader (the same card personalised
    twice, a clone, if ``one_card_twice``), both PINs checked; then ``test(post)``."""
    cfg = load_config(None)
    readers = (READER, READER_2)
    cfg = with_clients(replace(cfg, data_dir=tmp_path, tills=(), api=replace(cfg.api, port=0),
                               pumps=tuple(PumpConfig(i + 1, r, "sim", ("AI95",)) for i, r in enumerate(readers))))
    cards = fuel_model().cards
    vcards = []
    for n, reader in enumerate(readers):
        card = cards[0] if one_card_twice else cards[n]
        path = tmp_path / f"{card.card_no}-{n}.json"
        personalise(card, PIN, keys).save(path)
        vcards.append(VirtualCard(path, port=PORTS[reader]))
    pumps = {i + 1: SimulatedPump(i + 1, products=("AI95",), time_scale=1000) for i in range(2)}
    for r in readers:
        await asyncio.to_thread(settle_empty_reader, r)
    d = Daemon(cfg, Replica(fuel_model(), None), keys=keys, pumps=pumps)
    await asyncio.wait_for(d.start(), T)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as http:
            base = f"http://127.0.0.1:{d.port}"

            async def post(path, body, key):
                async with http.post(base + path, json=body, headers={"Idempotency-Key": key} | auth(path)) as r:
                    return r.status, await r.json()

            async def state(pump):
                async with http.get(f"{base}/v1/pumps/{pump}", headers=auth("/v1/pumps")) as r:
                    return (await r.json())["state"]

            async def until(pump, want):
                for _ in range(1000):
                    if await state(pump) == want:
                        return
                    await asyncio.sleep(0.01)
                raise AssertionError(f"pump {pump} never got to {want}: {await state(pump)}")

            for i, v in enumerate(vcards, 1):
                v.insert()
                await until(i, "card_read")
                st, body = await post(f"/v1/pumps/{i}/pin", {"pin": PIN}, f"pin-key-{i:04d}")
                assert st == 200, body
            await asyncio.gather(*(http.get(f"{base}/v1/health", headers=auth("/v1/health"))
                                   for _ in range(2)))  # warm connections
            await test(post)
            for i in (1, 2):
                await post(f"/v1/pumps/{i}/void", {}, f"void-key-{i:04d}")
    finally:
        for v in vcards:
            v.pull()
        await asyncio.wait_for(d.stop(), T)
        for r in readers:
            await asyncio.to_thread(settle_empty_reader, r)


def test_two_pumps_at_once_cannot_authorize_one_contract_balance_twice(pcscd, tmp_path, keys):
    async def test(post):
        ask = {"product": "AI95", "preset_amount_kop": 700_000}
        results = await asyncio.gather(*(post(f"/v1/pumps/{i}/authorize", ask, f"auth-key-{i:04d}") for i in (1, 2)))
        assert all(st == 200 for st, _ in results), results
        held = sum(b["amount_kop"] for _, b in results if b["approved"])
        assert held <= BALANCE_KOP, results
        assert max(b["amount_kop"] for _, b in results) > 690_000  # one got what it asked (to the litre)
        assert min(b["amount_kop"] for _, b in results) <= BALANCE_KOP - 690_000  # the other the rest
    asyncio.run(asyncio.wait_for(_two_pumps(tmp_path, keys, test), 60))


def test_one_card_cannot_hold_two_open_authorizations(pcscd, tmp_path, keys):
    """A clone of a card in the other reader, both authorized at once: the site keeps one
    open authorization per card, the other pump is refused (409) and nothing is reserved."""
    async def test(post):
        ask = {"product": "AI95", "preset_volume_ml": 20_000}
        results = await asyncio.gather(*(post(f"/v1/pumps/{i}/authorize", ask, f"auth-key-{i:04d}") for i in (1, 2)))
        assert sorted(st for st, _ in results) == [200, 409], results
        refused = next(b for st, b in results if st == 409)
        assert "open authorization" in refused["error"]["message"]
    asyncio.run(asyncio.wait_for(_two_pumps(tmp_path, keys, test, one_card_twice=True), 60))
