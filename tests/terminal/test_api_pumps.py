"""The pump console's part of the local API: a console's token reaches only its pumps, a pump
is named in ASCII digits only, the simulation's hands exist only in a simulation, and a PIN in
Unicode digits is refused before the card counts a try. Real daemon, real pcscd (run under
``flock /tmp/edgepos-pcscd.lock``), simulated dispensers, HTTP on loopback."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import aiohttp
import pytest

from hw.sim.pump import SimulatedPump
from terminal.apiauth import new_token, token_sha256
from terminal.config import ApiClient, ApiRole, PumpConfig, load_config
from terminal.daemon import Daemon
from terminal.replica import Replica
from tests.hw.pcsc import READER, keys, pcscd, settle_empty_reader  # noqa: F401  (fixtures)

from .test_fuel_lane import PIN, PRODUCTS, Site, fuel_model, run

T = 10
READER_2 = "Virtual PCD 00 01"
TOKENS = {"forecourt-2": new_token(), "office": new_token()}


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


def two_pumps(tmp_path, *, simulation: bool):
    cfg = load_config(None)
    clients = (ApiClient("forecourt-2", ApiRole.PUMP_CONSOLE, token_sha256(TOKENS["forecourt-2"]), pumps=(2,)),
               ApiClient("office", ApiRole.OPERATOR, token_sha256(TOKENS["office"])))
    return replace(cfg, data_dir=tmp_path, tills=(),
                   pumps=(PumpConfig(1, READER, "sim", PRODUCTS), PumpConfig(2, READER_2, "sim", PRODUCTS)),
                   api=replace(cfg.api, port=0, clients=clients, simulation=simulation))


def serve(pcscd, tmp_path, keys, test, *, simulation: bool):  # noqa: F811
    async def main():
        cfg = two_pumps(tmp_path, simulation=simulation)
        pumps = {n: SimulatedPump(n, products=PRODUCTS, time_scale=1000) for n in (1, 2)}
        await asyncio.to_thread(settle_empty_reader)
        d = Daemon(cfg, Replica(fuel_model(), None), keys=keys, pumps=pumps)
        await asyncio.wait_for(d.start(), T)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as http:
                await test(d, http, f"http://127.0.0.1:{d.port}")
        finally:
            await asyncio.wait_for(d.stop(), T)
    asyncio.run(asyncio.wait_for(main(), 60))


async def call(http, method, url, headers, body=None):
    async with http.request(method, url, headers=headers, json=body) as r:
        return r.status, await r.json()


def test_a_console_reaches_only_its_pumps_and_a_pump_has_one_spelling(pcscd, tmp_path, keys):  # noqa: F811
    async def test(d, http, base):
        st, got = await call(http, "GET", base + "/v1/pumps", bearer("forecourt-2"))
        assert st == 200 and [p["pump"] for p in got["pumps"]] == [2]
        st, got = await call(http, "GET", base + "/v1/pumps", bearer("office"))
        assert [p["pump"] for p in got["pumps"]] == [1, 2]
        st, err = await call(http, "POST", base + "/v1/pumps/1/stop", bearer("forecourt-2") | {"Idempotency-Key": "stop-1-0001"})
        assert st == 403 and err["error"]["code"] == "forbidden"
        assert (await call(http, "GET", base + "/v1/pumps/1", bearer("forecourt-2")))[0] == 403
        assert d.pumps[1].pump.state.value == "idle"
        st, err = await call(http, "POST", base + "/v1/pumps/2/stop", bearer("office") | {"Idempotency-Key": "stop-2-0000"})
        assert st == 403  # an operator reads; the console drives
        st, got = await call(http, "POST", base + "/v1/pumps/2/stop", bearer("forecourt-2") | {"Idempotency-Key": "stop-2-0001"})
        assert st == 200
        st, got = await call(http, "POST", base + "/v1/pumps/2/reset",
                             bearer("forecourt-2") | {"Idempotency-Key": "reset-2-0001"})
        assert st == 200 and got["pump_state"] == "idle"
        # int() takes Arabic-Indic and full-width digits and a leading zero: each named pump 2
        for spelling in ("%D9%A2", "%EF%BC%92", "02", "2%20", "+2"):
            st, err = await call(http, "GET", base + f"/v1/pumps/{spelling}", bearer("forecourt-2"))
            assert st == 404 and "no pump" in err["error"]["message"], (spelling, err)
            st, err = await call(http, "POST", base + f"/v1/pumps/{spelling}/stop",
                                 bearer("forecourt-2") | {"Idempotency-Key": f"alias-{spelling[-2:]}-01"})
            assert st == 404, (spelling, err)
        assert d.pumps[2].pump.state.value == "idle"
        # not a simulation: the simulation's hands are not there at all
        st, err = await call(http, "POST", base + "/v1/sim/pumps/2/nozzle", bearer("office"),
                             {"action": "lift", "product": "AI95"})
        assert st == 404
        assert d.pumps[2].pump.state.value == "idle"
    serve(pcscd, tmp_path, keys, test, simulation=False)


def test_the_simulation_hands_exist_only_in_a_simulation(pcscd, tmp_path, keys):  # noqa: F811
    async def test(d, http, base):
        st, got = await call(http, "POST", base + "/v1/sim/pumps/2/knobs", bearer("office"), {"time_scale": 50})
        assert st == 200 and got["time_scale"] == 50  # no Idempotency-Key: not journaled
        st, _ = await call(http, "POST", base + "/v1/sim/pumps/1/knobs", bearer("forecourt-2"), {"time_scale": 50})
        assert st == 403
        st, got = await call(http, "POST", base + "/v1/sim/pumps/2/link", bearer("forecourt-2"), {"online": False})
        assert st == 200 and d.pumps[2].pump.state.value == "offline"
        await call(http, "POST", base + "/v1/sim/pumps/2/link", bearer("forecourt-2"), {"online": True})
    serve(pcscd, tmp_path, keys, test, simulation=True)


@pytest.mark.parametrize("pin", ["\u0661\u0662\u0663\u0664", "\uff11\uff12\uff13\uff14", "123\u0664"])
def test_a_pin_in_unicode_digits_is_refused_and_no_try_counted(pcscd, tmp_path, keys, pin):  # noqa: F811
    async def test(s: Site):
        await s.insert()
        st, err, _ = await s.post("/v1/pumps/1/pin", {"pin": pin})
        assert st == 422 and "ASCII digits" in err["error"]["message"], err
        assert s.card.state.pin_tries_left == 3
        st, ok, _ = await s.post("/v1/pumps/1/pin", {"pin": PIN})
        assert st == 200 and ok["verified"]
    run(pcscd, tmp_path, keys, test)
