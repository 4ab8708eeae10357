"""Batches through a real mosquitto to the stand-in host (which stands in for host/, landing
separately) and acks back: records marked only up to what the host acknowledged."""

from __future__ import annotations

import asyncio

from terminal.journal import Journal
from terminal.sync import SyncClient, SyncSettings, SyncState
from wire import Ack, encode, topic_of

from .conftest import PASSWORDS, SITE_A, fill, run
from .standin import StandInHost


def settings(broker, site=SITE_A, **kw) -> SyncSettings:
    base = dict(username=site, password=PASSWORDS[site], ack_timeout_s=3.0, backoff_initial_s=0.1,
                backoff_max_s=1.0, poll_interval_s=0.05, publish_timeout_s=5.0)
    base.update(kw)
    return SyncSettings.from_url(broker.url, **base)


def host_for(broker, keys, **kw) -> StandInHost:
    return StandInHost(broker.host, broker.port, keys.host_side(), username="host", password=PASSWORDS["host"], **kw)


def test_batches_flow_to_the_host_and_acks_mark_records(broker, keys, journal_path):
    async def scenario():
        with Journal.open(journal_path, SITE_A) as journal:
            await fill(journal, 2500)
            async with host_for(broker, keys) as host:
                async with SyncClient(journal, keys.site(), settings(broker, max_batch_records=1000)) as sync:
                    st = await sync.wait_flushed(20)
                    assert st.state is SyncState.ONLINE and st.connected
                    assert st.backlog_records == 0 and st.acked_batch == st.last_batch == 3
                    assert journal.counts().unacked == 0
                    # more records while online: sent without a restart
                    await fill(journal, 10, start=2500)
                    sync.kick()
                    st = await sync.wait_flushed(20)
                    assert st.last_batch == 4 and journal.counts().unacked == 0
                    assert st.last_ack_utc_s is not None and st.publishes >= 4
                assert len(host.ledger) == 2510
                assert sorted(host.batches_of(SITE_A)) == [1, 2, 3, 4]
                assert [len(host.batches_of(SITE_A)[n]) for n in (1, 2, 3, 4)] == [1, 1, 1, 1]
                ids = [r.record_id for r in journal.after(0, 10_000)]
                assert set(ids) == set(host.ledger)
    run(scenario())


def test_nothing_is_marked_before_the_ack_and_only_up_to_it(broker, keys, journal_path):
    async def scenario():
        with Journal.open(journal_path, SITE_A) as journal:
            await fill(journal, 300)
            async with host_for(broker, keys, acking=False) as host:
                async with SyncClient(journal, keys.site(), settings(broker, max_batch_records=100,
                                                                     ack_timeout_s=30)) as sync:
                    await host.wait_until(lambda: len(host.settled[SITE_A]) == 3, 10, "three batches")
                    await asyncio.sleep(0.3)
                    assert journal.counts().unacked == 300  # received is not acknowledged
                    st = sync.status()
                    assert st.in_flight_batches == 3 and st.backlog_records == 300
                    # the host settles batch 1 only: exactly its 100 records get marked
                    ack = Ack(SITE_A, 1)
                    await host.publish_raw(topic_of(ack), encode(ack, keys.host_side()))
                    await sync.wait_until(lambda s: s.acked_batch == 1, 10)
                    unacked = journal.unacked(1000)
                    assert len(unacked) == 200 and unacked[0].seq == 101
                    # a stale ack changes nothing
                    await host.publish_raw(topic_of(Ack(SITE_A, 0)), encode(Ack(SITE_A, 0), keys.host_side()))
                    await asyncio.sleep(0.3)
                    assert journal.counts().unacked == 200 and sync.status().acked_batch == 1
                    host.acking = True
                    await host.ack_now(SITE_A)
                    await sync.wait_flushed(10)
                    assert journal.counts().unacked == 0
    run(scenario())
