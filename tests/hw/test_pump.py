"""Tests of the pump interface (``hw.pump``) through the simulated dispenser
(``hw.sim.pump``): the sale cycle, preset arithmetic, the fault knobs and the error contract.

Plain functions around ``asyncio.run``; every wait is bounded by ``asyncio.wait_for`` so a bug
fails the test instead of hanging it. Timeouts guard against hangs, they never assert speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from hw.errors import HwError
from hw.pump import (
    Delivery,
    DeliveryComplete,
    DeliveryProgress,
    DeliveryReason,
    NozzleHungUp,
    NozzleLifted,
    Preset,
    Pump,
    PumpBackOnline,
    PumpBusy,
    PumpError,
    PumpEvent,
    PumpOffline,
    PumpState,
    PumpStateError,
    PumpValueError,
    PumpWentOffline,
    StateChanged,
    amount_for_volume,
    max_volume_for_amount,
)
from hw.sim.pump import SimulatedPump

TIMEOUT_S = 5.0  # hang guard only
FAST = 1000  # time_scale: one simulated second takes 1 ms
PRICE = 5_499  # kop/L
AI95 = "AI-95"
S = PumpState


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run one async scenario with an overall hang guard."""
    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT_S * 2))


async def next_event(events: AsyncIterator[PumpEvent]) -> PumpEvent:
    """The next event, or fail after ``TIMEOUT_S``."""
    return await asyncio.wait_for(anext(events), TIMEOUT_S)


async def events_until(
    events: AsyncIterator[PumpEvent], last: Callable[[PumpEvent], bool]
) -> list[PumpEvent]:
    """Events up to and including the first one for which ``last`` is true."""
    seen: list[PumpEvent] = []
    while True:
        seen.append(await next_event(events))
        if last(seen[-1]):
            return seen


def is_complete(event: PumpEvent) -> bool:
    return isinstance(event, DeliveryComplete)


def progress_of(events: list[PumpEvent]) -> list[DeliveryProgress]:
    return [e for e in events if isinstance(e, DeliveryProgress)]


def states_of(events: list[PumpEvent]) -> list[tuple[PumpState, PumpState]]:
    return [(e.old, e.new) for e in events if isinstance(e, StateChanged)]


def pump(**knobs: Any) -> SimulatedPump:
    knobs.setdefault("time_scale", FAST)
    return SimulatedPump(1, products=(AI95, "DT"), **knobs)


# --- the sale cycle -------------------------------------------------------------------------
def test_simulated_pump_is_a_pump() -> None:
    assert isinstance(pump(), Pump)
    assert pump().pump_id == 1


def test_full_flow_volume_preset_stops_exactly_at_preset() -> None:
    async def scenario() -> None:
        async with pump() as p:
            events = p.events()
            assert p.state is S.IDLE
            p.lift_nozzle(AI95)
            assert await next_event(events) == NozzleLifted(AI95)
            assert await next_event(events) == StateChanged(S.IDLE, S.CALLING)
            sale_no = await p.authorize(AI95, PRICE, Preset.by_volume(5_000))
            seen = await events_until(events, is_complete)
            assert states_of(seen) == [
                (S.CALLING, S.AUTHORIZED),
                (S.AUTHORIZED, S.DISPENSING),
                (S.DISPENSING, S.COMPLETED),
            ]
            progress = progress_of(seen)
            volumes = [e.volume_ml for e in progress]
            assert len(volumes) >= 2
            assert volumes == sorted(set(volumes)), "progress must strictly increase"
            assert volumes[-1] == 5_000
            assert all(e.amount_kop == amount_for_volume(e.volume_ml, PRICE) for e in progress)
            assert seen[-1] == DeliveryComplete(
                5_000, amount_for_volume(5_000, PRICE), DeliveryReason.PRESET_REACHED
            )
            assert seen[-1].reason == "preset_reached"
            assert p.state is S.COMPLETED
            assert p.last_delivery == Delivery(
                sale_no, AI95, PRICE, Preset(volume_ml=5_000), 5_000, 27_495,
                DeliveryReason.PRESET_REACHED,
            )
            p.hang_up()
            assert await next_event(events) == NozzleHungUp(AI95)
            assert await next_event(events) == StateChanged(S.COMPLETED, S.IDLE)

    run(scenario)


def test_authorize_first_then_lift_starts_flow() -> None:
    async def scenario() -> None:
        async with pump() as p:
            events = p.events()
            await p.authorize(AI95, PRICE, Preset.by_volume(1_000))
            assert p.state is S.AUTHORIZED
            assert await next_event(events) == StateChanged(S.IDLE, S.AUTHORIZED)
            p.lift_nozzle(AI95)
            seen = await events_until(events, is_complete)
            assert seen[0] == NozzleLifted(AI95)
            assert seen[1] == StateChanged(S.AUTHORIZED, S.DISPENSING)
            assert seen[-1].volume_ml == 1_000  # type: ignore[union-attr]

    run(scenario)


def test_wrong_grade_nozzle_does_not_flow() -> None:
    async def scenario() -> None:
        async with pump() as p:
            events = p.events()
            await p.authorize(AI95, PRICE, Preset.by_volume(1_000))
            p.lift_nozzle("DT")
            await asyncio.sleep(0.02)  # would be 20 simulated seconds of flow
            assert p.state is S.AUTHORIZED
            p.hang_up()
            p.lift_nozzle(AI95)
            seen = await events_until(events, is_complete)
            assert seen[:4] == [
                StateChanged(S.IDLE, S.AUTHORIZED),
                NozzleLifted("DT"),
                NozzleHungUp("DT"),
                NozzleLifted(AI95),
            ]
            assert seen[-1].volume_ml == 1_000  # type: ignore[union-attr]

    run(scenario)


# --- preset arithmetic --------------------------------------------------------------------
def test_amount_preset_rounding_example() -> None:
    async def scenario() -> None:
        async with pump() as p:
            events = p.events()
            p.lift_nozzle(AI95)
            await p.authorize(AI95, PRICE, Preset.by_amount(100_000))
            done = (await events_until(events, is_complete))[-1]
            assert isinstance(done, DeliveryComplete)
            assert done.reason is DeliveryReason.PRESET_REACHED
            assert done.volume_ml == 18_185
            assert done.amount_kop == amount_for_volume(18_185, PRICE) == 99_999
            assert amount_for_volume(done.volume_ml, PRICE) <= 100_000
            assert amount_for_volume(done.volume_ml + 1, PRICE) > 100_000

    run(scenario)


def test_amount_rounds_half_up() -> None:
    assert amount_for_volume(1, 500) == 1  # 0.5 kop -> 1
    assert amount_for_volume(1, 499) == 0  # 0.499 kop -> 0
    assert amount_for_volume(1_000, 5_499) == 5_499


@pytest.mark.parametrize("price", [1, 7, 999, 1_000, 4_321, 5_499, 6_000, 12_345])
def test_max_volume_for_amount_is_the_largest_that_fits(price: int) -> None:
    for amount in range(0, 3_000):
        volume = max_volume_for_amount(amount, price)
        assert amount_for_volume(volume, price) <= amount < amount_for_volume(volume + 1, price)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"volume_ml": 1_000, "amount_kop": 1_000},
        {"volume_ml": 0},
        {"amount_kop": 0},
        {"volume_ml": -5},
        {"amount_kop": -1},
        {"volume_ml": 1.5},
        {"volume_ml": True},
        {"amount_kop": "100"},
    ],
)
def test_bad_presets_are_rejected_clearly(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="preset") as info:
        Preset(**kwargs)
    assert isinstance(info.value, PumpValueError)
    assert isinstance(info.value, PumpError)
    assert isinstance(info.value, HwError)


def test_bad_authorize_arguments() -> None:
    async def scenario() -> None:
        async with pump() as p:
            with pytest.raises(PumpValueError, match="price_kop_per_l"):
                await p.authorize(AI95, 0, Preset.by_volume(1_000))
            with pytest.raises(PumpValueError, match="no nozzle for 'AI-100'"):
                await p.authorize("AI-100", PRICE, Preset.by_volume(1_000))
            with pytest.raises(PumpValueError, match="buys no fuel"):
                await p.authorize(AI95, PRICE, Preset.by_amount(1))  # 1 kop < 1 ml of fuel
            with pytest.raises(PumpValueError, match="preset"):
                await p.authorize(AI95, PRICE, 1_000)  # type: ignore[arg-type]
            assert p.state is S.IDLE
            assert p.last_delivery is None

    run(scenario)


# --- ways a delivery ends -----------------------------------------------------------------
def test_hang_up_mid_delivery_ends_with_partial_volume() -> None:
    async def scenario() -> None:
        async with pump() as p:
            events = p.events()
            p.lift_nozzle(AI95)
            await p.authorize(AI95, PRICE, Preset.by_volume(50_000))
            before = await events_until(events, lambda e: isinstance(e, DeliveryProgress))
            p.hang_up()
            seen = await events_until(events, lambda e: e == StateChanged(S.COMPLETED, S.IDLE))
            done = next(e for e in seen if isinstance(e, DeliveryComplete))
            # progress already queued before the hang-up may still arrive; none after it
            after = seen[seen.index(NozzleHungUp(AI95)) :]
            assert progress_of(after) == []
            reported = progress_of(before + seen)[-1].volume_ml
            assert 0 < reported == done.volume_ml < 50_000
            assert done.reason is DeliveryReason.NOZZLE_HUNG_UP
            assert done.amount_kop == amount_for_volume(done.volume_ml, PRICE)
            assert states_of(seen) == [(S.DISPENSING, S.COMPLETED), (S.COMPLETED, S.IDLE)]
            assert p.last_delivery is not None
            assert p.last_delivery.volume_ml == done.volume_ml

    run(scenario)


def test_emergency_stop_during_dispensing() -> None:
    async def scenario() -> None:
        async with pump() as p:
            events = p.events()
            p.lift_nozzle(AI95)
            await p.authorize(AI95, PRICE, Preset.by_volume(50_000))
            last = await events_until(events, lambda e: isinstance(e, DeliveryProgress))
            await p.stop()
            assert p.state is S.STOPPED
            seen = await events_until(events, is_complete)
            assert states_of(seen) == [(S.DISPENSING, S.STOPPED)]
            done = seen[-1]
            assert isinstance(done, DeliveryComplete)
            assert done.reason == "stopped"
            assert last[-1].volume_ml <= done.volume_ml < 50_000  # type: ignore[union-attr]
            assert p.last_delivery is not None
            assert p.last_delivery.volume_ml == done.volume_ml
            await p.stop()  # idempotent
            p.go_offline()
            p.come_back_online()
            assert p.state is S.STOPPED, "the emergency stop latch survives an offline episode"
            with pytest.raises(PumpStateError, match="stopped"):
                await p.authorize(AI95, PRICE, Preset.by_volume(1_000))
            p.hang_up()  # the latch holds while the nozzle goes back
            assert p.state is S.STOPPED
            await p.reset()
            assert p.state is S.IDLE
            await p.authorize(AI95, PRICE, Preset.by_volume(1_000))

    run(scenario)


def test_emergency_stop_of_an_authorization_reports_zero_delivery() -> None:
    async def scenario() -> None:
        async with pump() as p:
            events = p.events()
            await p.authorize(AI95, PRICE, Preset.by_volume(1_000))
            await p.stop()
            seen = await events_until(events, is_complete)
            assert seen[-1] == DeliveryComplete(0, 0, DeliveryReason.STOPPED)
            await p.reset()
            assert p.state is S.IDLE

    run(scenario)


def test_stop_early_fault() -> None:
    async def scenario() -> None:
        async with pump(stop_early_at_ml=3_000) as p:
            events = p.events()
            p.lift_nozzle(AI95)
            await p.authorize(AI95, PRICE, Preset.by_volume(10_000))
            seen = await events_until(events, is_complete)
            assert progress_of(seen)[-1].volume_ml == 3_000
            assert seen[-1] == DeliveryComplete(
                3_000, amount_for_volume(3_000, PRICE), DeliveryReason.FAULT
            )
            assert p.state is S.COMPLETED
            assert p.stop_early_at_ml is None  # one-shot
            p.hang_up()
            await p.authorize(AI95, PRICE, Preset.by_volume(4_000))
            p.lift_nozzle(AI95)
            done = (await events_until(events, is_complete))[-1]
            assert done == DeliveryComplete(
                4_000, amount_for_volume(4_000, PRICE), DeliveryReason.PRESET_REACHED
            )

    run(scenario)


def test_fault_knob_above_preset_does_not_fire() -> None:
    async def scenario() -> None:
        async with pump(stop_early_at_ml=2_000) as p:
            events = p.events()
            p.lift_nozzle(AI95)
            await p.authorize(AI95, PRICE, Preset.by_volume(2_000))
            done = (await events_until(events, is_complete))[-1]
            assert done.reason is DeliveryReason.PRESET_REACHED  # type: ignore[union-attr]
            assert p.stop_early_at_ml == 2_000  # still armed

    run(scenario)


def test_offline_mid_delivery_then_back_online() -> None:
    async def scenario() -> None:
        async with pump(go_offline_at_ml=3_000) as p:
            events = p.events()
            p.lift_nozzle(AI95)
            sale_no = await p.authorize(AI95, PRICE, Preset.by_volume(10_000))
            seen = await events_until(events, lambda e: isinstance(e, PumpWentOffline))
            assert all(e.volume_ml < 3_000 for e in progress_of(seen))
            assert await next_event(events) == StateChanged(S.DISPENSING, S.OFFLINE)
            assert p.state is S.OFFLINE
            with pytest.raises(PumpOffline):
                await p.authorize(AI95, PRICE, Preset.by_volume(1_000))
            with pytest.raises(PumpOffline):
                await p.stop()
            with pytest.raises(PumpOffline):
                await p.cancel()
            with pytest.raises(PumpOffline):
                p.last_delivery  # noqa: B018 -- the dispenser cannot be read
            await asyncio.sleep(0.02)  # a buggy flow would keep emitting here
            p.come_back_online()
            # nothing was emitted while offline: the next event is the return
            assert await next_event(events) == PumpBackOnline()
            seen = await events_until(events, is_complete)
            assert states_of(seen) == [(S.OFFLINE, S.COMPLETED)]
            assert seen[-1] == DeliveryComplete(
                3_000, amount_for_volume(3_000, PRICE), DeliveryReason.FAULT
            )
            last = p.last_delivery
            assert last is not None
            assert (last.sale_no, last.volume_ml, last.amount_kop) == (
                sale_no, 3_000, amount_for_volume(3_000, PRICE)
            )
            p.hang_up()
            assert p.state is S.IDLE

    run(scenario)


def test_nozzle_hung_up_while_offline_is_seen_on_return() -> None:
    async def scenario() -> None:
        async with pump() as p:
            events = p.events()
            p.lift_nozzle(AI95)
            await p.authorize(AI95, PRICE, Preset.by_volume(50_000))
            before = await events_until(events, lambda e: isinstance(e, DeliveryProgress))
            p.go_offline()
            await asyncio.sleep(0.02)  # the flow must have halted: 20 simulated seconds pass
            p.hang_up()
            p.come_back_online()
            before += await events_until(events, lambda e: isinstance(e, PumpWentOffline))
            assert await next_event(events) == StateChanged(S.DISPENSING, S.OFFLINE)
            assert await next_event(events) == PumpBackOnline()
            seen = await events_until(events, is_complete)
            assert states_of(seen) == [(S.OFFLINE, S.IDLE)]
            done = seen[-1]
            assert isinstance(done, DeliveryComplete)
            assert done.reason is DeliveryReason.FAULT
            assert done.volume_ml == progress_of(before)[-1].volume_ml  # nothing flowed offline
            assert p.last_delivery is not None
            assert p.last_delivery.volume_ml == done.volume_ml

    run(scenario)


def test_offline_while_authorized_drops_the_authorization() -> None:
    async def scenario() -> None:
        async with pump() as p:
            events = p.events()
            sale_no = await p.authorize(AI95, PRICE, Preset.by_volume(1_000))
            p.lift_nozzle("DT")  # wrong grade: no flow
            p.go_offline()
            p.come_back_online()
            seen = await events_until(events, is_complete)
            assert states_of(seen)[-1] == (S.OFFLINE, S.CALLING)
            assert seen[-1] == DeliveryComplete(0, 0, DeliveryReason.FAULT)
            last = p.last_delivery
            assert last is not None and (last.sale_no, last.volume_ml) == (sale_no, 0)
            await p.authorize("DT", PRICE, Preset.by_volume(1_000))  # a new sale starts at once
            assert p.state is S.DISPENSING
            await p.stop()

    run(scenario)


def test_closing_mid_delivery_stops_and_totals_survive_reopen() -> None:
    async def scenario() -> None:
        p = pump()
        async with p:
            events = p.events()
            p.lift_nozzle(AI95)
            sale_no = await p.authorize(AI95, PRICE, Preset.by_volume(50_000))
            await events_until(events, lambda e: isinstance(e, DeliveryProgress))
        # the daemon is gone; a new one opens the pump and reads the sale back
        async with p:
            assert p.state is S.STOPPED
            last = p.last_delivery
            assert last is not None
            assert last.sale_no == sale_no and last.reason is DeliveryReason.STOPPED
            assert 0 < last.volume_ml < 50_000

    run(scenario)


# --- invalid transitions and ownership ----------------------------------------------------
def test_authorize_while_dispensing_is_refused() -> None:
    async def scenario() -> None:
        async with pump() as p:
            p.lift_nozzle(AI95)
            await p.authorize(AI95, PRICE, Preset.by_volume(50_000))
            assert p.state is S.DISPENSING
            with pytest.raises(PumpStateError, match="dispensing") as info:
                await p.authorize(AI95, PRICE, Preset.by_volume(1_000))
            assert isinstance(info.value, PumpBusy)
            with pytest.raises(PumpStateError, match="dispensing"):
                await p.cancel()
            with pytest.raises(PumpStateError, match="dispensing"):
                await p.reset()
            await p.stop()

    run(scenario)


def test_authorize_twice_and_cancel() -> None:
    async def scenario() -> None:
        async with pump() as p:
            events = p.events()
            with pytest.raises(PumpStateError, match="idle"):
                await p.cancel()
            await p.authorize(AI95, PRICE, Preset.by_volume(1_000))
            with pytest.raises(PumpBusy, match="authorized"):
                await p.authorize(AI95, PRICE, Preset.by_volume(1_000))
            await p.cancel()
            assert p.state is S.IDLE
            assert p.last_delivery is None  # a cancelled authorization is no sale
            seen = [await next_event(events), await next_event(events)]
            assert states_of(seen) == [(S.IDLE, S.AUTHORIZED), (S.AUTHORIZED, S.IDLE)]

    run(scenario)


def test_authorize_before_hang_up_after_completion_is_refused() -> None:
    async def scenario() -> None:
        async with pump() as p:
            events = p.events()
            p.lift_nozzle(AI95)
            await p.authorize(AI95, PRICE, Preset.by_volume(500))
            await events_until(events, is_complete)
            with pytest.raises(PumpBusy, match="completed"):
                await p.authorize(AI95, PRICE, Preset.by_volume(500))

    run(scenario)


def test_nozzle_misuse_and_online_misuse() -> None:
    async def scenario() -> None:
        async with pump() as p:
            with pytest.raises(PumpStateError, match="no nozzle up"):
                p.hang_up()
            p.lift_nozzle(AI95)
            with pytest.raises(PumpStateError, match="already has"):
                p.lift_nozzle("DT")
            with pytest.raises(PumpStateError, match="not offline"):
                p.come_back_online()
            with pytest.raises(PumpValueError):
                p.lift_nozzle("")

    run(scenario)


def test_requests_need_an_open_pump_and_one_owner() -> None:
    async def scenario() -> None:
        p = pump()
        with pytest.raises(PumpError, match="not open"):
            await p.authorize(AI95, PRICE, Preset.by_volume(1_000))
        with pytest.raises(PumpError, match="not open"):
            p.events()
        async with p:
            with pytest.raises(PumpBusy, match="already open"):
                async with p:
                    pass
            events = p.events()
        assert [e async for e in events] == []  # closing ends the iterator

    run(scenario)


@pytest.mark.parametrize(
    "knobs",
    [{"time_scale": 0}, {"time_scale": -1}, {"flow_ml_per_min": 0}, {"tick_ms": 0},
     {"stop_early_at_ml": 0}, {"go_offline_at_ml": -3}],
)
def test_bad_simulator_knobs(knobs: dict[str, Any]) -> None:
    with pytest.raises(PumpValueError):
        pump(**knobs)


# --- time -----------------------------------------------------------------------------------
def test_time_scale_runs_a_20_litre_delivery_in_simulated_time() -> None:
    """20 L at 40 L/min is 30 simulated seconds: 30 one-second ticks, whatever the wall clock
    does. At time_scale 1 this would take 30 real seconds and trip the hang guard."""

    async def scenario() -> None:
        async with SimulatedPump(7, time_scale=1_000) as p:
            events = p.events()
            p.lift_nozzle(AI95)
            await p.authorize(AI95, PRICE, Preset.by_volume(20_000))
            seen = await events_until(events, is_complete)
            volumes = [e.volume_ml for e in progress_of(seen)]
            assert len(volumes) == 30
            assert volumes[0] == 666  # 40_000 ml/min for one second, floored
            assert volumes[-1] == 20_000
            assert seen[-1].volume_ml == 20_000  # type: ignore[union-attr]

    run(scenario)
