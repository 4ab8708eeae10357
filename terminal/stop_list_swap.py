"""A whole stop list from the host, compared off the event loop and applied on it at once.

A stop-list snapshot (up to a million numbers, more) used to be applied on the event loop as
the evaluator's new list, and announced as one bus event per number: seconds during which
no lane decided. Here the work is split like :mod:`terminal.snapshot_swap`:

1. :func:`plan` (in a worker thread): the snapshot's numbers compared with the list the
   evaluator holds now (``stop_list_numbers``: every number on it, the deltas' changes
   included), giving the numbers to put on and to take off;
2. :func:`apply_plan` (on the loop, one synchronous step): that difference applied as one
   update, as a delta would be (microseconds for the few numbers a snapshot usually
   changes). A difference larger than :data:`DIFF_MAX` replaces the whole list instead
   (the evaluator's ``replace_stop_list``, about 0.15 s per million numbers on the loop);
   so does one once the numbers changed at run time since the last whole list
   (``Replica.stop_touched``, which the evaluator keeps beside its packed list) pass it,
   so that those changes do not pile up.

Either way a decision sees the old list or the new one, never half of each: one in flight
finishes on the version it started with, the next one sees the new list. The caller holds
the daemon's replica lock from :func:`plan` to :func:`apply_plan`, so no other stop-list
update lands between them (a plan made against another generation is refused).
:class:`StopListChange` is what was applied, for one coalesced bus event per version
(:func:`terminal.events.stop_list_event`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from authz.errors import ModelError
from authz.update import FuelUpdate
from wire.messages import Table

from .follower import FullSnapshot
from .replica import Replica, ReplicaUpdateError

log = logging.getLogger("edgepos.replica")

__all__ = ["DIFF_MAX", "SHARDS", "StopListChange", "StopListPlan", "apply_plan", "apply_stop_list_snapshot", "plan", "release"]

#: A whole list differing from the one held by at most this many numbers (counting those the
#: deltas since the last whole list changed) is applied as the difference; a larger one
#: replaces the list.
DIFF_MAX = 100_000
#: The new list is held in this many sets while it is compared (a power of two).
SHARDS = 1024


@dataclass(frozen=True, slots=True)
class StopListPlan:
    """What a whole stop list at ``version`` changes, computed against the replica's
    stop-list ``generation``: the numbers to put on (``listed``) and take off
    (``unlisted``), or, when they are too many, ``numbers`` (the whole list, in shards:
    see :func:`release`)."""

    version: int
    generation: int
    listed: tuple[str, ...]
    unlisted: tuple[str, ...]
    numbers: list[set[str]] | None
    size: int  #: numbers on the new list

    def whole(self) -> Iterator[str]:
        """Every number of the new list (for a plan that replaces the list)."""
        return (no for shard in self.numbers or () for no in shard)


@dataclass(frozen=True, slots=True)
class StopListChange:
    """A whole stop list applied: its version and size, the numbers it put on and took off
    (empty when it replaced the list: ``replaced``)."""

    version: int
    size: int
    listed: tuple[str, ...]
    unlisted: tuple[str, ...]
    replaced: bool


def plan(replica: Replica, version: int, numbers: Iterable[str]) -> StopListPlan:
    """Compare the whole list ``numbers`` with the replica's now. Run it in a worker thread:
    it reads the evaluator and never changes it. Everything here is a Python loop over small
    containers (the new list in :data:`SHARDS` sets), so the thread gives the event loop its
    turn every few milliseconds: no million-entry set is resized or freed in one C call
    (that alone held the interpreter lock for 0.1 to 0.2 s). Raises
    :class:`ReplicaUpdateError` for a number that is not text."""
    generation = replica.stop_generation
    shards: list[set[str]] = [set() for _ in range(SHARDS)]
    mask = SHARDS - 1
    for no in numbers:
        if type(no) is not str or not no:
            release(shards)
            raise ReplicaUpdateError(f"stop_list snapshot version {version} refused: a stop-list number must be "
                                     f"text, got {no!r}")
        shards[hash(no) & mask].add(no)
    size = sum(len(sh) for sh in shards)
    ev = replica.fuel
    if ev is None:  # a till-only site holds the version only
        release(shards)
        return StopListPlan(version, generation, (), (), None, size)
    listed = [no for sh in shards for no in sh if not ev.on_stop_list(no)]
    unlisted = [no for no in ev.stop_list_numbers() if no not in shards[hash(no) & mask]]
    if len(listed) + len(unlisted) + len(replica.stop_touched) > DIFF_MAX:
        return StopListPlan(version, generation, (), (), shards, size)
    release(shards)
    return StopListPlan(version, generation, tuple(sorted(listed)), tuple(sorted(unlisted)), None, size)


def release(shards: list[set[str]] | None) -> None:
    """Free a plan's shards one by one (in the worker thread: freeing a million numbers at
    once holds the interpreter lock as long as building them did)."""
    while shards:
        shards.pop()


def apply_plan(replica: Replica, p: StopListPlan) -> StopListChange:
    """On the loop: apply ``p`` to the replica at once and hold its version. Raises
    :class:`ReplicaUpdateError` (nothing changed) for a plan made against another stop-list
    generation, or a difference the evaluator refuses."""
    if p.generation != replica.stop_generation:
        raise ReplicaUpdateError(f"stop_list snapshot version {p.version}: the list changed while it was compared")
    ev = replica.fuel
    try:
        if ev is not None and p.numbers is not None:
            ev.replace_stop_list(p.whole())
        elif ev is not None and (p.listed or p.unlisted):
            ev.apply(FuelUpdate(stop_listed=p.listed, stop_unlisted=p.unlisted))
    except ModelError as exc:
        raise ReplicaUpdateError(f"stop_list update to version {p.version} refused: {exc}") from None
    replica.table_versions[Table.STOP_LIST] = p.version
    replica._fuel_model = None
    if p.numbers is not None or ev is None:
        replica.note_stop_list(FullSnapshot(Table.STOP_LIST, p.version, ()))
    else:
        replica.stop_generation += 1
        replica.stop_touched.update(p.listed)
        replica.stop_touched.update(p.unlisted)
    return StopListChange(p.version, p.size, p.listed, p.unlisted, p.numbers is not None)


async def apply_stop_list_snapshot(replica: Replica, version: int,
                                   numbers: Callable[[], Iterable[str]]) -> StopListChange:
    """:func:`plan` in a worker thread (``numbers()`` read there too: the store's staged
    rows), then :func:`apply_plan` on the loop."""
    t0 = time.perf_counter()
    p = await asyncio.to_thread(lambda: plan(replica, version, numbers()))
    try:
        change = apply_plan(replica, p)
    finally:
        await asyncio.to_thread(release, p.numbers)
    log.info("replica stop_list at version %d (%d numbers): compared off the loop in %.2f s, %s", version, p.size,
             time.perf_counter() - t0, "replaced whole" if change.replaced
             else f"{len(change.listed)} put on, {len(change.unlisted)} taken off")
    return change
