"""Tests of the device-side members of the pump interface (``hw.pump``) through the simulated
dispenser: totalizers, the unconfirmed sale a dispenser keeps until it is confirmed,
suspend/resume and the emergency stop under its own name.

Plain functions around ``asyncio.run``; every wait is bounded (hang guard, never speed).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hw.pump import (
    Delivery,
    DeliveryComplete,
    DeliveryProgress,
    DeliveryReason,
    NozzleTotals,
    Preset,
    PumpBusy,
    PumpOffline,
    PumpState,
    PumpStateError,
    PumpTotals,
    PumpValueError,
    StateChanged,
    amount_for_volume,
)
from hw.sim.pump import SimulatedPump
from tests.hw.test_pump import AI95, FAST, PRICE, events_until, is_complete, run, states_of

S = PumpState


def pump(**knobs: Any) -> SimulatedPump:
    knobs.setdefault("time_scale", FAST)
    return SimulatedPump(3, products=(AI95, "DT"), **knobs)


async def deliver(p: SimulatedPump, volume_ml: int, product: str = AI95) -> Delivery:
    """One whole sale to a volume preset, nozzle hung up afterwards."""
    events = p.events()
    p.lift_nozzle(product)
    await p.authorize(product, PRICE, Preset.by_volume(volume_ml))
    await events_until(events, is_complete)
    p.hang_up()
    last = p.last_delivery
    assert last is not None
    return last


def test_totals_before_plus_delivered_equals_totals_after() -> None:
    async def scenario() -> None:
        async with pump() as p:
            before = await p.read_totals()
            assert before == PumpTotals(3, (NozzleTotals(1, AI95, 0, 0), NozzleTotals(2, "DT", 0, 0)))
            sale = await deliver(p, 4_321)
            after = await p.read_totals()
            assert after.for_product(AI95).volume_ml == before.for_product(AI95).volume_ml + 4_321
            assert after.for_product(AI95).amount_kop == sale.amount_kop == amount_for_volume(4_321, PRICE)
            assert after.for_product("DT") == before.for_product("DT")
            await deliver(p, 1_000, "DT")
            last = await p.read_totals()
            assert (last.volume_ml, last.amount_kop) == (
                5_321, sale.amount_kop + amount_for_volume(1_000, PRICE))

    run(scenario)


def test_totals_count_the_open_sale_and_only_go_up() -> None:
    async def scenario() -> None:
        async with pump() as p:
            events = p.events()
            p.lift_nozzle(AI95)
            await p.authorize(AI95, PRICE, Preset.by_volume(3_000))
            seen: list[int] = []
            while True:
                event = await asyncio.wait_for(anext(events), 5)
                seen.append((await p.read_totals()).volume_ml)
                if is_complete(event):
                    break
            assert seen == sorted(seen) and seen[-1] == 3_000

    run(scenario)


def test_untracked_fuel_shows_as_a_totals_mismatch() -> None:
    async def scenario() -> None:
        async with pump() as p:
            before = await p.read_totals()
            p.meter_untracked(AI95, 700, PRICE)
            sale = await deliver(p, 2_000)
            after = await p.read_totals()
            assert after.volume_ml - before.volume_ml - sale.volume_ml == 700

    run(scenario)


def test_a_finished_sale_stays_unconfirmed_until_confirmed_even_across_reopen() -> None:
    async def scenario() -> None:
        p = pump()
        async with p:
            assert await p.unconfirmed_sale() is None
            sale = await deliver(p, 1_500)
            assert sale.sale_id == str(sale.sale_no)
            assert await p.unconfirmed_sale() == sale
        async with p:  # the daemon restarted: the dispenser still holds it
            assert await p.unconfirmed_sale() == sale
            with pytest.raises(PumpValueError, match="unconfirmed: '1'"):
                await p.confirm_sale("99")
            assert await p.unconfirmed_sale() == sale  # a bad confirm changes nothing
            await p.confirm_sale(sale.sale_id)
            assert await p.unconfirmed_sale() is None
            await p.confirm_sale(sale.sale_id)  # a retry is a no-op
            with pytest.raises(PumpValueError):
                await p.confirm_sale(1)  # type: ignore[arg-type]
            assert p.last_delivery == sale  # confirming does not erase the last delivery

    run(scenario)


def test_a_cancelled_authorization_leaves_nothing_to_confirm() -> None:
    async def scenario() -> None:
        async with pump() as p:
            await p.authorize(AI95, PRICE, Preset.by_volume(1_000))
            await p.cancel()
            assert await p.unconfirmed_sale() is None

    run(scenario)


def test_hold_until_confirmed_refuses_the_next_sale() -> None:
    async def scenario() -> None:
        async with pump(hold_until_confirmed=True) as p:
            sale = await deliver(p, 1_000)
            with pytest.raises(PumpBusy, match="unconfirmed sale 1"):
                await p.authorize(AI95, PRICE, Preset.by_volume(1_000))
            assert p.state is S.IDLE
            await p.confirm_sale(sale.sale_id)
            assert await p.authorize(AI95, PRICE, Preset.by_volume(1_000)) == 2

    run(scenario)


def test_without_hold_a_new_sale_supersedes_the_unconfirmed_one() -> None:
    async def scenario() -> None:
        async with pump() as p:
            await deliver(p, 1_000)
            second = await deliver(p, 2_000)
            assert await p.unconfirmed_sale() == second

    run(scenario)


def test_suspend_pauses_and_resume_finishes_at_the_preset() -> None:
    async def scenario() -> None:
        async with pump() as p:
            events = p.events()
            p.lift_nozzle(AI95)
            await p.authorize(AI95, PRICE, Preset.by_volume(10_000))
            await events_until(events, lambda e: isinstance(e, DeliveryProgress))
            await p.suspend()
            assert p.state is S.SUSPENDED
            paused = (await p.read_totals()).volume_ml
            for _ in range(20):  # many flow ticks' worth of event-loop turns
                await asyncio.sleep(0.002)
            assert (await p.read_totals()).volume_ml == paused
            with pytest.raises(PumpBusy):
                await p.authorize(AI95, PRICE, Preset.by_volume(1_000))
            with pytest.raises(PumpStateError, match="suspended"):
                await p.cancel()
            await p.resume()
            seen = await events_until(events, is_complete)
            assert seen[-1] == DeliveryComplete(
                10_000, amount_for_volume(10_000, PRICE), DeliveryReason.PRESET_REACHED)
            assert (S.SUSPENDED, S.DISPENSING) in states_of(seen)

    run(scenario)


def test_hang_up_while_suspended_ends_the_sale() -> None:
    async def scenario() -> None:
        async with pump() as p:
            events = p.events()
            p.lift_nozzle(AI95)
            await p.authorize(AI95, PRICE, Preset.by_volume(10_000))
            await events_until(events, lambda e: isinstance(e, DeliveryProgress))
            await p.suspend()
            p.hang_up()
            seen = await events_until(events, is_complete)
            assert seen[-1].reason is DeliveryReason.NOZZLE_HUNG_UP  # type: ignore[union-attr]
            assert p.state is S.IDLE

    run(scenario)


def test_suspend_and_resume_outside_their_states() -> None:
    async def scenario() -> None:
        async with pump() as p:
            with pytest.raises(PumpStateError, match="idle"):
                await p.suspend()
            with pytest.raises(PumpStateError, match="idle"):
                await p.resume()

    run(scenario)


def test_emergency_stop_latches_like_stop() -> None:
    async def scenario() -> None:
        async with pump() as p:
            events = p.events()
            p.lift_nozzle(AI95)
            await p.authorize(AI95, PRICE, Preset.by_volume(10_000))
            await events_until(events, lambda e: isinstance(e, DeliveryProgress))
            await p.emergency_stop()
            seen = await events_until(events, is_complete)
            assert seen[-1].reason is DeliveryReason.STOPPED  # type: ignore[union-attr]
            assert p.state is S.STOPPED
            assert await p.unconfirmed_sale() == p.last_delivery
            await p.reset()
            assert p.state is S.COMPLETED

    run(scenario)


def test_device_reads_raise_offline() -> None:
    async def scenario() -> None:
        async with pump() as p:
            p.go_offline()
            for call in (p.read_totals(), p.unconfirmed_sale(), p.confirm_sale("1"),
                         p.suspend(), p.resume()):
                with pytest.raises(PumpOffline):
                    await call
            p.come_back_online()
            assert p.state is S.IDLE and isinstance(await p.read_totals(), PumpTotals)

    run(scenario)


def test_sale_id_defaults_to_the_sale_number_and_can_be_the_devices() -> None:
    args = (7, AI95, PRICE, Preset.by_volume(1), 1, 5, DeliveryReason.FAULT)
    assert Delivery(*args).sale_id == "7"
    assert Delivery(*args, sale_id="T-00042").sale_id == "T-00042"
    assert StateChanged(S.IDLE, S.SUSPENDED).new == "suspended"


@pytest.mark.parametrize("bad", [
    dict(nozzle=1, product=AI95, volume_ml=-1, amount_kop=0),
    dict(nozzle=1, product=AI95, volume_ml=0, amount_kop=1.5),
    dict(nozzle=0, product=AI95, volume_ml=0, amount_kop=0),
    dict(nozzle=1, product=AI95, volume_ml=True, amount_kop=0),
])
def test_bad_nozzle_totals_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(PumpValueError):
        NozzleTotals(**bad)


def test_pump_totals_need_ordered_distinct_nozzles_and_known_products() -> None:
    a, b = NozzleTotals(1, AI95, 1, 1), NozzleTotals(2, "DT", 2, 2)
    with pytest.raises(PumpValueError, match="distinct"):
        PumpTotals(1, (b, a))
    with pytest.raises(PumpValueError, match="distinct"):
        PumpTotals(1, (a, a))
    with pytest.raises(PumpValueError, match="no totals for 'A-80'"):
        PumpTotals(1, (a, b)).for_product("A-80")
    with pytest.raises(PumpValueError):
        pump().meter_untracked("A-80", 1, PRICE)
