"""The daemon's event bus: lanes publish ("card scanned", "pump state changed"...), the
local API's event stream subscribes. A slow subscriber never blocks a lane: its queue is
bounded, and when it is full the oldest events are dropped and counted."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from authz.fuel_model import mask_card_no

#: The most card numbers one ``replica.stop_list`` event names (the counts say the rest).
STOP_LIST_EVENT_CARDS = 20


@dataclass(frozen=True, slots=True)
class Event:
    """One event: a type (``till.card_scanned``, ``pump.state``...), its lane and its data."""

    event_id: int
    type: str
    lane: str
    data: dict[str, Any]
    at_utc_s: int = field(default_factory=lambda: int(time.time()))


class Subscription:
    """A subscriber's bounded queue; iterate it to receive events."""

    def __init__(self, bus: EventBus, maxsize: int, lanes: frozenset[str] | None) -> None:
        self._bus = bus
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.lanes = lanes
        self.dropped = 0

    def _offer(self, event: Event) -> None:
        if self.lanes is not None and event.lane not in self.lanes:
            return
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(event)

    async def get(self, timeout: float | None = None) -> Event:
        """The next event; ``TimeoutError`` after ``timeout`` seconds without one."""
        return await asyncio.wait_for(self._queue.get(), timeout)

    def close(self) -> None:
        """Stop receiving."""
        self._bus._subs.discard(self)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Event]:
        while True:
            yield await self._queue.get()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Publish/subscribe inside one event loop."""

    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self._ids = itertools.count(1)

    def publish(self, type_: str, lane: str, **data: Any) -> Event:
        """Deliver an event to every subscriber now (never waits)."""
        event = Event(next(self._ids), type_, lane, data)
        for sub in list(self._subs):
            sub._offer(event)
        return event

    def subscribe(self, lanes: frozenset[str] | None = None, maxsize: int = 1000) -> Subscription:
        """A new subscription to every event (or only those of ``lanes``)."""
        sub = Subscription(self, maxsize, lanes)
        self._subs.add(sub)
        return sub


def stop_list_event(version: int, listed: Sequence[str], unlisted: Sequence[str], *,
                    size: int | None = None) -> dict[str, Any]:
    """The data of the one ``replica.stop_list`` event of a stop-list version applied: its
    ``version``, how many numbers it put on and took off, the first
    :data:`STOP_LIST_EVENT_CARDS` of them masked (``cards``: ``{"card", "listed"}``), and for
    a whole list its ``size``. A version that changes one number also says ``card`` and
    ``listed`` as the events of one block always did. One event per version, not per
    number: a whole list of a million numbers must not flood the bus (nor stall the lanes
    while it is published)."""
    changes = [(no, True) for no in listed[:STOP_LIST_EVENT_CARDS]]
    changes += [(no, False) for no in unlisted[:max(STOP_LIST_EVENT_CARDS - len(changes), 0)]]
    data: dict[str, Any] = {"version": version, "listed_count": len(listed), "unlisted_count": len(unlisted),
                            "cards": [{"card": mask_card_no(str(no)), "listed": on} for no, on in changes]}
    if size is not None:
        data["size"] = size
    if len(listed) + len(unlisted) == 1:
        data["card"], data["listed"] = data["cards"][0]["card"], data["cards"][0]["listed"]
    return data
