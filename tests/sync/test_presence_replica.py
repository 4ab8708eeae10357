"""Presence and the last will (a killed client's retained presence turns offline; a clean
stop says offline itself), and replica updates: deltas applied in version order,
duplicates ignored, a gap answered by a snapshot request and a snapshot collected from its
parts. The stand-in host stands in for host/, which lands separately."""

from __future__ import annotations

import asyncio
import signal

import aiomqtt

from terminal.journal import Journal
from terminal.sync import FullSnapshot, SyncClient
from wire import Presence, ReplicaDelta, StopListEntry, Table, decode, presence_topic

from .conftest import PASSWORDS, SITE_A, run
from .test_faults import _start_client, client_cfg
from .test_flow import host_for, settings


async def retained_presence(broker, keys) -> Presence:
    """What a newcomer reads on the site's presence topic: the retained message."""
    async with aiomqtt.Client(broker.host, broker.port, username="host", password=PASSWORDS["host"],
                              identifier="presence-reader", timeout=10) as c:
        await c.subscribe(presence_topic(SITE_A), qos=1)
        async with asyncio.timeout(5):
            async for m in c.messages:
                assert m.retain
                return decode(bytes(m.payload), keys.host_side(), topic=m.topic.value)


def test_presence_online_then_last_will_when_killed_then_offline_on_clean_stop(broker, keys, journal_path):
    async def scenario():
        Journal.open(journal_path, SITE_A).close()
        cfg = client_cfg(broker, keys, journal_path, keepalive_s=5)
        async with host_for(broker, keys) as host:
            proc = _start_client(cfg)
            try:
                await host.wait_until(lambda: SITE_A in host.presence and host.presence[SITE_A].online, 10, "online")
                online = host.presence[SITE_A]
                assert (await retained_presence(broker, keys)).online
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            finally:
                proc.kill()
                proc.wait(10)
            # the broker sees the socket close and publishes the will, retained
            await host.wait_until(lambda: not host.presence[SITE_A].online, 10, "the last will")
            will = host.presence[SITE_A]
            assert will.at_utc_s == online.at_utc_s  # the will was made at connect
            retained = await retained_presence(broker, keys)
            assert not retained.online and retained.at_utc_s == online.at_utc_s
            # a clean stop publishes offline itself (a clean DISCONNECT fires no will)
            proc = _start_client(cfg)
            try:
                await host.wait_until(lambda: host.presence[SITE_A].online, 10, "online again")
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(20) == 0
            finally:
                proc.kill()
                proc.wait(10)
            await host.wait_until(lambda: not host.presence[SITE_A].online, 10, "offline on a clean stop")
            assert not (await retained_presence(broker, keys)).online
    run(scenario())


def _stop(card: str, at: int = 1) -> StopListEntry:
    return StopListEntry(card, at)


def test_replica_deltas_in_order_and_a_gap_is_filled_by_a_snapshot(broker, keys, journal_path):
    applied: list = []

    async def on_replica(update):
        await asyncio.sleep(0)  # an async callback, as the daemon's would be
        applied.append(update)

    async def scenario():
        with Journal.open(journal_path, SITE_A) as journal:
            async with host_for(broker, keys) as host:
                sync = SyncClient(journal, keys.site(), settings(broker, snapshot_retry_s=30),
                                  on_replica=on_replica, replica_versions={Table.STOP_LIST: 3},
                                  tables=[Table.STOP_LIST])
                async with sync:
                    await sync.wait_until(lambda s: s.connected, 10)
                    d = [ReplicaDelta(Table.STOP_LIST, v, v + 1, (_stop(f"C{v}"),)) for v in range(3, 6)]
                    for delta in (d[0], d[1], d[0], d[2]):  # a duplicate in between
                        await host.publish(delta)
                    await sync.wait_until(lambda s: s.replica_versions[Table.STOP_LIST] == 6, 10)
                    assert [(u.from_version, u.to_version) for u in applied] == [(3, 4), (4, 5), (5, 6)]
                    assert host.snapshot_requests == []
                    # a gap: 8 -> 9 while holding 6; kept, and a snapshot asked for
                    await host.publish(ReplicaDelta(Table.STOP_LIST, 8, 9, (_stop("C8"),)))
                    await host.wait_until(lambda: len(host.snapshot_requests) == 1, 10, "a snapshot request")
                    req = host.snapshot_requests[0]
                    assert (req.site_id, req.table, req.have_version) == (SITE_A, Table.STOP_LIST, 6)
                    assert len(applied) == 3
                    # the host answers with snapshot version 8 in three retained parts
                    rows = tuple(_stop(f"S{i:03d}") for i in range(10))
                    await host.publish_snapshot(Table.STOP_LIST, 8, rows, parts=3)
                    st = await sync.wait_until(lambda s: s.replica_versions[Table.STOP_LIST] == 9, 10)
                    snap, after = applied[3], applied[4]
                    assert isinstance(snap, FullSnapshot) and snap.version == 8 and snap.rows == rows
                    assert (after.from_version, after.to_version) == (8, 9)  # the kept delta, after the snapshot
                    assert st.replica_errors == 0 and len(applied) == 5
                    # an old snapshot part (replayed) changes nothing
                    await host.publish_snapshot(Table.STOP_LIST, 7, rows[:2], parts=1)
                    await host.publish(ReplicaDelta(Table.STOP_LIST, 9, 10, deletes=("S000",)))
                    await sync.wait_until(lambda s: s.replica_versions[Table.STOP_LIST] == 10, 10)
                    assert len(applied) == 6 and len(host.snapshot_requests) == 1
    run(scenario())


def test_a_site_holding_nothing_takes_the_retained_snapshot(broker, keys, journal_path):
    applied: list = []

    async def scenario():
        with Journal.open(journal_path, SITE_A) as journal:
            async with host_for(broker, keys) as host:
                rows = tuple(_stop(f"R{i}") for i in range(5))
                await host.publish_snapshot(Table.STOP_LIST, 4, rows, parts=2)  # retained before the site comes
                sync = SyncClient(journal, keys.site(), settings(broker), on_replica=applied.append,
                                  tables=[Table.STOP_LIST])
                async with sync:
                    await sync.wait_until(lambda s: s.replica_versions[Table.STOP_LIST] == 4, 10)
                assert applied == [FullSnapshot(Table.STOP_LIST, 4, rows)]
                assert host.presence[SITE_A].replica_versions == {Table.STOP_LIST: 4}  # the offline one, at stop
    run(scenario())
