"""How long a whole stop list (or club table) applied at a running site stalls its event loop,
before and after moving the work off the loop; ``key: value`` lines.

``python -m benchmarks.replica_stall`` (or ``python -m benchmarks.replica --stop-list-stall``):

* ``stop_list_snapshot_stall_ms``: the longest the event loop went without turning (a task
  that sleeps 1 ms, the lanes' stand-in) while a whole stop list of 1,000,000 numbers (half
  of them cards of the replica's 1,000,000, half of another network; 1,000 of them new
  since the list held) is applied to a running site's replica, as the daemon does it now
  (:func:`terminal.stop_list_swap.apply_stop_list_snapshot`: the rows read from the store's
  staged snapshot and compared in a thread, the difference applied on the loop, one bus
  event); ``_before``: as it was (``Replica.apply_update`` of the whole list on the loop and
  one bus event per number, to one subscriber); ``_ratio``: now / before, in one run.
  ``stop_list_snapshot_apply_s`` (``_before``): the wall time of each apply, and
  ``..._cpu_s``: the process's CPU time for it (the figure to trust on a loaded machine).
* ``club_snapshot_stall_ms`` (``_before``, ``_ratio``, ``club_snapshot_apply_s``...): the same
  for a whole club-accounts table of 100,000 accounts (``--accounts``) on a generated
  replica: now built off the loop and swapped in (:mod:`terminal.club_swap`,
  benchmarks/replica_club_stall.py), before ``Replica.apply_update`` on the loop.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from authz.fuel_model import mask_card_no
from native.compact import sample_fuel_columns
from terminal.events import EventBus, stop_list_event
from terminal.follower import FullSnapshot, StagedSnapshot
from terminal.replica import Replica
from terminal.replica_store import ReplicaStore
from terminal.stop_list_swap import apply_stop_list_snapshot
from wire import ReplicaSnapshot
from wire.messages import StopListEntry, Table

PART = 10_000


async def _stall(work: Callable[[], Awaitable[None]]) -> tuple[float, float, float]:
    """(longest loop stall in ms, wall s, CPU s) while ``work()`` runs."""
    worst = [0.0]
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            worst[0] = max(worst[0], time.perf_counter() - t - 0.001)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    t0, c0 = time.perf_counter(), time.process_time()
    await work()
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    done.set()
    await tick
    return worst[0] * 1000, took, cpu


def _stage(store: ReplicaStore, table: Table, version: int, rows: tuple) -> Any:
    parts = (len(rows) + PART - 1) // PART
    for k in range(parts):
        store.stage_part(ReplicaSnapshot(table, version, k, parts, rows[k * PART:(k + 1) * PART]))
    return store.stage(StagedSnapshot(table, version, parts))


def _put(out: dict[str, float], key: str, got: tuple[float, float, float], suffix: str = "") -> None:
    out[f"{key}_stall_ms{suffix}"] = round(got[0], 1)
    out[f"{key}_apply_s{suffix}"] = round(got[1], 3)
    out[f"{key}_apply_cpu_s{suffix}"] = round(got[2], 3)


def stop_list_figures(n_cards: int = 1_000_000, n_stop: int = 1_000_000) -> dict[str, float]:
    """``stop_list_snapshot_*`` before and after (module docstring)."""
    replica = Replica(sample_fuel_columns(n_cards=n_cards, seed=1), None)
    replica.table_versions = {t: 1 for t in Table}
    ev = replica.fuel
    assert ev is not None
    own = [ev.card_number(i) for i in range(0, n_cards, max(n_cards // (n_stop // 2), 1))][:n_stop // 2]
    foreign = [f"9{i:015d}" for i in range(n_stop - len(own))]
    held = own[:-500] + foreign[:-500]  # what the site holds; the snapshot adds 1,000 numbers
    replica.apply_update(FullSnapshot(Table.STOP_LIST, 2, tuple(StopListEntry(n, 1) for n in held)))
    rows = tuple(StopListEntry(n, 1) for n in sorted(own + foreign))
    bus = EventBus()
    sub = bus.subscribe(maxsize=1000)
    out: dict[str, float] = {}

    async def before() -> None:
        replica.apply_update(FullSnapshot(Table.STOP_LIST, 3, rows))
        for r in rows:  # as the daemon announced a whole list: an event per number
            bus.publish("replica.stop_list", "site", card=mask_card_no(r.card_no), listed=True, version=3)

    _put(out, "stop_list_snapshot", asyncio.run(_stall(before)), "_before")
    replica.apply_update(FullSnapshot(Table.STOP_LIST, 4, tuple(StopListEntry(n, 1) for n in held)))
    with tempfile.TemporaryDirectory(prefix="edgepos-stall-") as tmp, ReplicaStore.open(Path(tmp) / "r.sqlite") as store:
        staged = _stage(store, Table.STOP_LIST, 5, rows)

        async def after() -> None:
            change = await apply_stop_list_snapshot(replica, 5, lambda: (r.card_no for r in staged.iter_rows()))
            bus.publish("replica.stop_list", "site", **stop_list_event(change.version, change.listed, change.unlisted,
                                                                       size=change.size))

        _put(out, "stop_list_snapshot", asyncio.run(_stall(after)))
        staged.commit()
    assert replica.table_versions[Table.STOP_LIST] == 5 and all(ev.on_stop_list(n) for n in (own[-1], foreign[-1]))
    assert sub.dropped > 0  # the per-number events overflowed the subscriber's queue before
    out["stop_list_snapshot_stall_ratio"] = round(out["stop_list_snapshot_stall_ms"]
                                                  / max(out["stop_list_snapshot_stall_ms_before"], 0.1), 4)
    return out


def add_size_arguments(p: argparse.ArgumentParser) -> None:
    """``--cards``, ``--stop-list`` and ``--accounts``: the replica's sizes (this module's and
    benchmarks.replica's)."""
    p.add_argument("--cards", type=int, default=1_000_000)
    p.add_argument("--stop-list", type=int, default=1_000_000)
    p.add_argument("--accounts", type=int, default=100_000)


def main(argv: list[str] | None = None) -> int:
    """Print the figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_arguments(p)
    p.add_argument("--only", choices=["stop_list", "club"])
    args = p.parse_args(argv)
    figures: dict[str, float] = {}
    if args.only in (None, "stop_list"):
        figures.update(stop_list_figures(args.cards, args.stop_list))
    if args.only in (None, "club"):
        from .replica_club_stall import club_figures
        figures.update(club_figures(args.accounts))
    for k, v in figures.items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
