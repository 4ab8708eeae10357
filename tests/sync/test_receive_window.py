"""Flow control of what the broker sends a site (terminal/sync.py, "Flow control"): a message
is acknowledged once handled and the client takes one unacknowledged message at a time (MQTT 5
receive maximum), so a site taking many retained snapshot parts while its store stages them
slowly holds at most about ``REPLICA_QUEUE`` of them at once (not every part, as when the
client acknowledged on receipt); every part still arrives and the snapshot is handed over
whole. A connection dropped while parts are queued and unacknowledged: they come again and
the snapshot is still handed over whole, once."""

from __future__ import annotations

import asyncio

from terminal.follower import StagedSnapshot
from terminal.journal import Journal
from terminal.sync import REPLICA_QUEUE, SyncClient
from wire import ReplicaSnapshot, StopListEntry, Table

from .conftest import SITE_A, run
from .test_flow import host_for, settings

PARTS = 4 * REPLICA_QUEUE


def test_a_slow_store_holds_at_most_the_receive_maximum_of_parts(broker, keys, journal_path):
    applied: list = []
    staged: list[int] = []
    held = {"now": 0, "most": 0}

    async def stage(part: ReplicaSnapshot, fresh: bool) -> None:
        del fresh
        await asyncio.sleep(0.02)  # a store slower than the broker
        staged.append(part.part)

    async def scenario():
        with Journal.open(journal_path, SITE_A) as journal:
            async with host_for(broker, keys) as host:
                rows = tuple(StopListEntry(f"70058{i:011d}", 1) for i in range(2 * PARTS))
                await host.publish_snapshot(Table.STOP_LIST, 3, rows, parts=PARTS)  # retained before the site comes
                sync = SyncClient(journal, keys.site(), settings(broker), on_replica=applied.append,
                                  tables=[Table.STOP_LIST], stage_part=stage)
                async with sync:
                    await sync.wait_until(lambda s: s.replica_versions[Table.STOP_LIST] == 3, 30)
                held["most"] = sync.inbound_peak
    run(scenario())
    assert sorted(staged) == list(range(PARTS))  # every part, each once
    assert applied == [StagedSnapshot(Table.STOP_LIST, 3, PARTS)]
    # the replica queue, the part being staged and the one received: without the window about PARTS
    assert 1 <= held["most"] <= REPLICA_QUEUE + 2


def test_a_connection_dropped_mid_snapshot_still_ends_with_the_whole_snapshot(broker, keys, journal_path):
    applied: list = []
    staged: list[int] = []

    async def write(part: ReplicaSnapshot) -> None:
        await asyncio.sleep(0.02)
        staged.append(part.part)

    async def stage(part: ReplicaSnapshot, fresh: bool) -> None:
        del fresh
        done = asyncio.ensure_future(write(part))
        try:  # as the daemon's store: a write begun completes though the session ends
            await asyncio.shield(done)
        except asyncio.CancelledError:
            await done
            raise

    async def scenario():
        with Journal.open(journal_path, SITE_A) as journal:
            async with host_for(broker, keys) as host:
                rows = tuple(StopListEntry(f"70058{i:011d}", 1) for i in range(2 * PARTS))
                await host.publish_snapshot(Table.STOP_LIST, 3, rows, parts=PARTS)
            sync = SyncClient(journal, keys.site(), settings(broker), on_replica=applied.append,
                              tables=[Table.STOP_LIST], stage_part=stage)
            async with sync:
                await sync.wait_until(lambda s: len(staged) >= REPLICA_QUEUE // 2, 20)
                await asyncio.to_thread(broker.stop)  # parts received, queued and unacknowledged
                await sync.wait_until(lambda s: not s.connected, 10)
                await asyncio.to_thread(broker.start)  # same port, same persistence
                await sync.wait_until(lambda s: s.replica_versions[Table.STOP_LIST] == 3, 60)
                assert sync.status().connects >= 2
    run(scenario())
    assert set(staged) == set(range(PARTS))  # every part staged (some twice: taken again after the drop)
    assert applied == [StagedSnapshot(Table.STOP_LIST, 3, PARTS)]
