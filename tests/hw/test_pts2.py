"""The PTS-2 jsonPTS driver (``hw.dispensers.pts2``) against the simulated controller
(``hw.sim.pts2``) over real HTTP on loopback: sales, presets, the unclosed sale, totals,
several pumps on one controller, restarts of the driver and of the controller, both ways
a real controller behaves when the link is lost, error packets and spoiled answers.

Every wait is bounded (a hang guard, never a speed assertion).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from authz.money import amount_for_volume, max_volume_for_amount
from hw.dispensers.pts2 import Pts2Controller, Pts2Pump
from hw.pump import (
    DeliveryComplete,
    DeliveryProgress,
    DeliveryReason,
    NozzleLifted,
    Preset,
    PumpBackOnline,
    PumpBusy,
    PumpError,
    PumpOffline,
    PumpProtocolError,
    PumpRefused,
    PumpState,
    PumpStateError,
    PumpWentOffline,
    StateChanged,
)
from hw.sim.pts2 import Pts2Simulator

S = PumpState
PRICE = 5_499
NOZZLES = {1: {1: "AI-95", 2: "DT"}, 2: {1: "AI-92"}}
POLL_S = 0.01
from tests.hw.pumpwait import complete, until, wait_for


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))  # type: ignore[arg-type]


def sim(tmp_path: Path, **kw: Any) -> Pts2Simulator:
    kw.setdefault("time_scale", 200)  # a simulated second (one tick, 666 ml) takes 5 ms
    return Pts2Simulator(NOZZLES, tmp_path / "pts2.json", **kw)


def pump(ctl: Pts2Controller, n: int = 1) -> Pts2Pump:
    return Pts2Pump(ctl, n, NOZZLES[n], poll_interval_s=POLL_S)


def test_a_sale_runs_to_its_preset_and_stays_unconfirmed_until_closed(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = sim(tmp_path)
        await s.start()
        try:
            async with Pts2Controller(s.url) as ctl, pump(ctl) as p:
                events = p.events()
                assert p.state is S.IDLE
                before = await p.read_totals()
                s.lift_nozzle(1, 1)
                assert await until(events, lambda e: isinstance(e, StateChanged)) == [
                    NozzleLifted("AI-95"), StateChanged(S.IDLE, S.CALLING)]
                sale_no = await p.authorize("AI-95", PRICE, Preset.by_volume(5_000))
                seen = await until(events, complete)
                volumes = [e.volume_ml for e in seen if isinstance(e, DeliveryProgress)]
                assert volumes == sorted(set(volumes)) and all(0 < v <= 5_000 for v in volumes)
                assert seen[-1] == DeliveryComplete(5_000, amount_for_volume(5_000, PRICE),
                                                    DeliveryReason.PRESET_REACHED)
                assert (S.AUTHORIZED, S.DISPENSING) in [(e.old, e.new) for e in seen if isinstance(e, StateChanged)]
                assert p.state is S.COMPLETED
                sale = await p.unconfirmed_sale()
                assert sale is not None and sale == p.last_delivery
                assert (sale.sale_no, sale.sale_id, sale.volume_ml, sale.product) == (sale_no, str(sale_no), 5_000, "AI-95")
                after = await p.read_totals()
                assert after.for_product("AI-95").volume_ml == before.for_product("AI-95").volume_ml + 5_000
                assert after.amount_kop == before.amount_kop + sale.amount_kop
                s.hang_up(1)
                await wait_for(lambda: p.state is S.IDLE)
                # the controller will not authorize the pump again while the sale is unclosed
                with pytest.raises(PumpRefused, match="not closed") as refused:
                    await p.authorize("AI-95", PRICE, Preset.by_volume(1_000))
                assert refused.value.code == 8 and p.state is S.IDLE
                with pytest.raises(PumpError, match="unconfirmed: '1'"):
                    await p.confirm_sale("7")
                await p.confirm_sale(sale.sale_id)
                assert s.transaction(sale_no)["state"] == "Finished"
                assert await p.unconfirmed_sale() is None
                await p.confirm_sale(sale.sale_id)  # a retry is a no-op
                assert await p.authorize("DT", PRICE, Preset.by_volume(1_000)) == sale_no + 1
                await p.cancel()
                assert p.state is S.IDLE and await p.unconfirmed_sale() is None
        finally:
            await s.close()

    run(scenario)


def test_an_amount_preset_stops_at_the_largest_volume_it_buys(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = sim(tmp_path)
        await s.start()
        try:
            async with Pts2Controller(s.url) as ctl, pump(ctl) as p:
                events = p.events()
                await p.authorize("DT", PRICE, Preset.by_amount(10_000))
                s.lift_nozzle(1, 2)
                seen = await until(events, complete)
                ml = max_volume_for_amount(10_000, PRICE)
                assert seen[-1] == DeliveryComplete(ml, amount_for_volume(ml, PRICE), DeliveryReason.PRESET_REACHED)
        finally:
            await s.close()

    run(scenario)


def test_two_pumps_share_one_controller_and_stay_apart(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = sim(tmp_path)
        await s.start()
        try:
            async with Pts2Controller(s.url) as ctl, pump(ctl, 1) as p1, pump(ctl, 2) as p2:
                e2 = p2.events()
                s.lift_nozzle(2, 1)
                await p2.authorize("AI-92", PRICE, Preset.by_volume(2_000))
                await until(e2, complete)
                assert p1.state is S.IDLE and await p1.unconfirmed_sale() is None
                assert (await p2.unconfirmed_sale()).volume_ml == 2_000  # type: ignore[union-attr]
                with pytest.raises(PumpError, match="no nozzle for 'AI-92'"):
                    await p1.authorize("AI-92", PRICE, Preset.by_volume(1_000))
                assert (await p1.read_totals()).volume_ml == 0
                assert (await p2.read_totals()).volume_ml == 2_000
        finally:
            await s.close()

    run(scenario)


def test_the_unclosed_sale_and_totals_survive_driver_and_controller_restarts(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = sim(tmp_path)
        await s.start()
        async with Pts2Controller(s.url) as ctl, pump(ctl) as p:
            events = p.events()
            s.lift_nozzle(1, 1)
            await p.authorize("AI-95", PRICE, Preset.by_volume(3_000))
            await until(events, complete)
            sale = await p.unconfirmed_sale()
        await s.close()
        s2 = sim(tmp_path)  # the controller restarts on its persisted state
        await s2.start()
        try:
            async with Pts2Controller(s2.url) as ctl, pump(ctl) as p:  # and so does the daemon
                again = await p.unconfirmed_sale()
                assert again is not None and sale is not None
                assert (again.sale_id, again.volume_ml, again.amount_kop, again.product) == (
                    sale.sale_id, 3_000, sale.amount_kop, "AI-95")
                assert p.last_delivery is not None and p.last_delivery.sale_id == sale.sale_id
                assert (await p.read_totals()).for_product("AI-95").volume_ml == 3_000
                await p.confirm_sale(again.sale_id)
                assert await p.authorize("AI-95", PRICE, Preset.by_volume(1_000)) == int(sale.sale_id) + 1
        finally:
            await s2.close()

    run(scenario)


def test_a_delivery_cut_by_a_controller_restart_is_left_unclosed_with_its_volume(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = sim(tmp_path)
        await s.start()
        async with Pts2Controller(s.url) as ctl, pump(ctl) as p:
            events = p.events()
            s.lift_nozzle(1, 1)
            await p.authorize("AI-95", PRICE, Preset.by_volume(50_000))
            await until(events, lambda e: isinstance(e, DeliveryProgress))
            await s.close()  # the controller dies mid-delivery
            await until(events, lambda e: isinstance(e, PumpWentOffline))
            s2 = sim(tmp_path)
            await s2.start(port=int(s.url.rsplit(":", 1)[1]))
            try:
                seen = await until(events, complete)
                assert PumpBackOnline() in seen
                done = seen[-1]
                assert isinstance(done, DeliveryComplete) and 0 < done.volume_ml < 50_000
                assert done.reason is DeliveryReason.FAULT
                held = await p.unconfirmed_sale()
                assert held is not None and held.volume_ml == done.volume_ml
                assert (await p.read_totals()).volume_ml == done.volume_ml
            finally:
                await s2.close()

    run(scenario)


@pytest.mark.parametrize("mode", ["continue", "stop"])
def test_link_lost_mid_delivery_both_ways_a_controller_behaves(tmp_path: Path, mode: str) -> None:
    async def scenario() -> None:
        s = sim(tmp_path, on_link_loss=mode, link_timeout_s=0.05, time_scale=20)
        await s.start()
        try:
            async with Pts2Controller(s.url, timeout_s=0.5) as ctl, pump(ctl) as p:
                events = p.events()
                s.lift_nozzle(1, 1)
                await p.authorize("AI-95", PRICE, Preset.by_volume(20_000))
                await until(events, lambda e: isinstance(e, DeliveryProgress))
                s.drop_link()
                seen = await until(events, lambda e: isinstance(e, StateChanged) and e.new is S.OFFLINE)
                assert PumpWentOffline() in seen
                with pytest.raises(PumpOffline):
                    await p.read_totals()
                # "continue": the controller runs the delivery to its preset on its own;
                # "stop": it stops it once the edge has been silent for link_timeout_s
                await wait_for(lambda: s.transaction(1)["state"] == "EndOfTransaction")
                s.restore_link()
                seen = await until(events, complete)
                assert seen[0] == PumpBackOnline()
                done = seen[-1]
                assert isinstance(done, DeliveryComplete)
                if mode == "continue":
                    assert (done.volume_ml, done.reason) == (20_000, DeliveryReason.PRESET_REACHED)
                else:
                    assert 0 < done.volume_ml < 20_000 and done.reason is DeliveryReason.FAULT
                held = await p.unconfirmed_sale()
                assert held is not None and held.volume_ml == done.volume_ml
        finally:
            await s.close()

    run(scenario)


def test_the_controller_reporting_the_dispenser_offline(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = sim(tmp_path)
        await s.start()
        try:
            async with Pts2Controller(s.url) as ctl, pump(ctl) as p:
                events = p.events()
                s.set_pump_offline(1, True)
                await until(events, lambda e: isinstance(e, StateChanged) and e.new is S.OFFLINE)
                with pytest.raises(PumpOffline):
                    await p.authorize("AI-95", PRICE, Preset.by_volume(1_000))
                s.set_pump_offline(1, False)
                seen = await until(events, lambda e: isinstance(e, StateChanged))
                assert seen == [PumpBackOnline(), StateChanged(S.OFFLINE, S.IDLE)]
        finally:
            await s.close()

    run(scenario)


def test_suspend_resume_and_both_stops(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = sim(tmp_path, time_scale=50)
        await s.start()
        try:
            async with Pts2Controller(s.url) as ctl, pump(ctl) as p:
                events = p.events()
                s.lift_nozzle(1, 1)
                await p.authorize("AI-95", PRICE, Preset.by_volume(6_000))
                await until(events, lambda e: isinstance(e, DeliveryProgress))
                await p.suspend()
                assert p.state is S.SUSPENDED
                held = s.transaction(1)["volume_ml"]
                await asyncio.sleep(0.1)  # several flow ticks: nothing may flow meanwhile
                assert s.transaction(1)["volume_ml"] == held
                with pytest.raises(PumpBusy):
                    await p.authorize("AI-95", PRICE, Preset.by_volume(1_000))
                await p.resume()
                assert (await until(events, complete))[-1].volume_ml == 6_000  # type: ignore[union-attr]
                s.hang_up(1)
                await p.confirm_sale("1")
                await wait_for(lambda: p.state is S.IDLE)
                s.lift_nozzle(1, 1)
                await p.authorize("AI-95", PRICE, Preset.by_volume(50_000))
                await until(events, lambda e: isinstance(e, DeliveryProgress))
                await p.emergency_stop()
                done = (await until(events, complete))[-1]
                assert isinstance(done, DeliveryComplete) and done.reason is DeliveryReason.STOPPED
                assert 0 < done.volume_ml < 50_000 and p.state is S.STOPPED
                with pytest.raises(PumpStateError):
                    await p.authorize("AI-95", PRICE, Preset.by_volume(1_000))
                await p.reset()
                assert p.state is S.COMPLETED
                await p.confirm_sale("2")
                await p.stop()  # no sale open: latches only
                assert p.state is S.STOPPED
        finally:
            await s.close()

    run(scenario)


def test_prices_round_trip_through_the_controller(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = sim(tmp_path)
        await s.start()
        try:
            async with Pts2Controller(s.url) as ctl, pump(ctl) as p:
                await p.set_prices({"AI-95": 5_499, "DT": 6_105})
                assert await p.get_prices() == {"AI-95": 5_499, "DT": 6_105}
                with pytest.raises(PumpError, match="no price for"):
                    await p.set_prices({"AI-95": 5_499})
                with pytest.raises(PumpError, match="positive int"):
                    await p.set_prices({"AI-95": 54.99, "DT": 1})  # type: ignore[dict-item]
                assert await p.get_prices() == {"AI-95": 5_499, "DT": 6_105}
        finally:
            await s.close()

    run(scenario)


def test_error_packets_are_refusals_that_change_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = sim(tmp_path)
        await s.start()
        try:
            async with Pts2Controller(s.url) as ctl, pump(ctl) as p:
                s.fail_next("PumpAuthorize", 5)
                with pytest.raises(PumpRefused, match="busy") as e:
                    await p.authorize("AI-95", PRICE, Preset.by_volume(1_000))
                assert e.value.code == 5 and p.state is S.IDLE
                with pytest.raises(KeyError):
                    s.transaction(1)  # no transaction was opened
                s.fail_next("PumpGetTotals", 2, "Wrong parameters")
                with pytest.raises(PumpRefused, match="Wrong parameters"):
                    await p.read_totals()
                s.fail_next("PumpCloseTransaction", 6)
                assert await p.authorize("AI-95", PRICE, Preset.by_volume(1_000)) == 1
        finally:
            await s.close()

    run(scenario)


@pytest.mark.parametrize("kind", ["garbage", "truncated", "duplicate", "wrong_id", "missing", "http500"])
def test_spoiled_answers_are_protocol_errors_and_polling_survives_them(tmp_path: Path, kind: str) -> None:
    async def scenario() -> None:
        s = sim(tmp_path)
        await s.start()
        try:
            async with Pts2Controller(s.url) as ctl, pump(ctl) as p:
                p.poll_interval_s = 3600  # only this test's requests reach the controller
                await asyncio.sleep(0)
                s.garble_next(kind)
                with pytest.raises(PumpProtocolError):
                    await p.read_totals()
                assert p.state is S.IDLE
                for _ in range(p.offline_after - 1):
                    s.garble_next(kind)
                    await p._poll_once()
                assert p.state is S.IDLE  # fewer bad answers than offline_after: still online
                assert (await p.read_totals()).volume_ml == 0
        finally:
            await s.close()

    run(scenario)


@pytest.mark.parametrize("auth", ["basic", "digest"])
def test_authentication_and_the_password_is_never_shown(tmp_path: Path, auth: str) -> None:
    secret = "s3cret-Pa55"

    async def scenario() -> None:
        s = sim(tmp_path, username="edge", password=secret, auth=auth)
        await s.start()
        try:
            async with Pts2Controller(s.url, username="edge", password=secret, auth=auth) as ctl, pump(ctl) as p:
                assert p.state is S.IDLE
                assert (await p.read_totals()).volume_ml == 0
                assert secret not in repr(ctl)
            bad = Pts2Controller(s.url, username="edge", password="wrong", auth=auth)
            async with bad:
                with pytest.raises(PumpRefused, match="credentials") as e:
                    async with pump(bad):
                        pass
                assert secret not in str(e.value) and "wrong" not in str(e.value)
        finally:
            await s.close()

    run(scenario)


def test_a_controller_that_is_not_there_leaves_the_pump_offline(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with Pts2Controller("http://127.0.0.1:9", timeout_s=0.5) as ctl, pump(ctl) as p:
            assert p.state is S.OFFLINE
            with pytest.raises(PumpOffline):
                await p.authorize("AI-95", PRICE, Preset.by_volume(1_000))

    run(scenario)


@pytest.mark.parametrize("kwargs", [
    {"url": "ftp://x"}, {"url": "http://h", "auth": "ntlm"}, {"url": "http://h", "username": "u"},
])
def test_bad_controller_settings_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(PumpError):
        Pts2Controller(**kwargs)


@pytest.mark.parametrize("nozzles", [{}, {0: "A"}, {9: "A"}, {1: ""}, {1: "A", 2: "A"}])
def test_bad_nozzle_maps_are_refused(nozzles: dict[int, str]) -> None:
    with pytest.raises(PumpError):
        Pts2Pump(Pts2Controller("http://h"), 1, nozzles)


def test_a_refused_status_request_counts_as_a_failed_poll(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = sim(tmp_path)
        await s.start()
        try:
            async with Pts2Controller(s.url) as ctl, pump(ctl) as p:
                p.poll_interval_s = 3600
                await asyncio.sleep(0)
                for _ in range(p.offline_after):
                    s.fail_next("PumpGetStatus", 4)
                    await p._poll_once()
                assert p.state is S.OFFLINE
                await p._poll_once()
                assert p.state is S.IDLE
        finally:
            await s.close()

    run(scenario)
