"""Waiting on a driver in the dispenser tests (tests/hw/test_pts2.py, test_azt2.py): for its
events up to one that ends a step, or for a condition on its state; each wait bounded by
``TIMEOUT_S``, a hang guard only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from hw.pump import DeliveryComplete, PumpEvent

TIMEOUT_S = 5.0


async def until(events: AsyncIterator[PumpEvent], last: Callable[[PumpEvent], bool]) -> list[PumpEvent]:
    """The events read from ``events`` up to and including the first ``last`` accepts."""
    seen: list[PumpEvent] = []
    while True:
        seen.append(await asyncio.wait_for(anext(events), TIMEOUT_S))
        if last(seen[-1]):
            return seen


def complete(e: PumpEvent) -> bool:
    """Does ``e`` end a sale?"""
    return isinstance(e, DeliveryComplete)


async def wait_for(cond: Callable[[], bool]) -> None:
    """Return once ``cond()`` holds."""
    async with asyncio.timeout(TIMEOUT_S):
        while not cond():
            await asyncio.sleep(0.005)
