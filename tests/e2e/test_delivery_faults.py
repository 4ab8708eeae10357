"""Duplicate and reordered delivery: every batch frame the sites sent, published again with
the site's credentials, twice over, backwards and shuffled; and a site's batches arriving
out of order with a gap, published raw (signed with the site's key) before its sync client
ever runs. Ingest is idempotent by record id and the watermark waits at the gap."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import aiomqtt

from terminal.journal import Journal
from wire import Ack, Batch, WireRecord, acks_topic, batches_topic, decode, encode, records_that_fit

from .conftest import SITES, run, until


def site_client(e2e, site_id: str, name: str, timeout: float = 10) -> aiomqtt.Client:
    """An MQTT connection with ``site_id``'s own broker credentials."""
    return aiomqtt.Client(e2e.broker.host, e2e.broker.port, username=site_id, password=e2e.by_id[site_id].password,
                          identifier=name, protocol=aiomqtt.ProtocolVersion.V5, timeout=timeout)


def host_tap(e2e) -> aiomqtt.Client:
    """A plain (not shared) subscriber as the host user: sees a copy of every batch frame."""
    return aiomqtt.Client(e2e.broker.host, e2e.broker.port, username="host", password="host-e2e-secret",
                          identifier="e2e-tap", protocol=aiomqtt.ProtocolVersion.V5, timeout=10)


def test_duplicate_and_reordered_batches_change_nothing(e2e):
    async def scenario():
        frames: dict[str, list[bytes]] = defaultdict(list)

        async def tap(c: aiomqtt.Client) -> None:
            async for m in c.messages:
                frames[m.topic.value.split("/")[3]].append(bytes(m.payload))

        async with e2e.workers(1) as (worker,), host_tap(e2e) as t:
            await t.subscribe("edgepos/v1/sites/+/batches", qos=1)
            tapping = asyncio.create_task(tap(t))
            async with e2e.clients() as clients:
                await until(e2e.all_synced, 60, "the backlog synced")
                e2e.check_exact()
                assert all(len(frames[s]) >= 20 for s in SITES), {s: len(f) for s, f in frames.items()}
                before = worker.stats.batches
                rnd = random.Random(3)
                sent = 0
                for sid in SITES:
                    distinct = list(dict.fromkeys(frames[sid]))
                    again = list(reversed(distinct)) + rnd.sample(distinct, len(distinct))
                    async with site_client(e2e, sid, f"replay-{sid}") as c:
                        for payload in again:
                            await c.publish(batches_topic(sid), payload, qos=1)
                    sent += len(again)
                await until(lambda: worker.stats.batches >= before + sent, 60, "every replayed batch handled")
                assert worker.stats.new_records == e2e.total_records()  # not one record applied again
                e2e.check_exact()
                # the sites take the host's repeated acks as stale, and go on syncing
                await e2e.journal_later(clients, 0)
                await until(e2e.all_synced, 30, "records journaled after the replay")
                for c in clients.values():
                    st = c.status()
                    assert st.rejected_messages == 0 and st.rejected_batches == () and st.connected
                e2e.check_exact()
            tapping.cancel()
            await asyncio.gather(tapping, return_exceptions=True)
    run(scenario(), 120)


def cut(site_id: str, records: list[WireRecord], per_batch: int) -> list[tuple[WireRecord, ...]]:
    """The records in batches the way SyncClient cuts them (at most ``per_batch``, and what fits)."""
    out, i = [], 0
    while i < len(records):
        k = records_that_fit(site_id, records[i:i + per_batch])
        out.append(tuple(records[i:i + k]))
        i += k
    return out


def test_reordered_batches_wait_at_the_gap_then_the_site_settles(e2e):
    """Site 1's batches, cut as its client would cut them, arrive 3, 1, 3, 2, then the rest
    backwards with duplicates: the ack after each is the highest contiguous batch (0, 1, 1,
    3, ... 3, then all). Then every site's client runs: the first numbers the same batches,
    which the host already holds, and is acked at once; the ledger is exact."""
    async def scenario():
        sid = SITES[0]
        with Journal.open(e2e.by_id[sid].journal_path, sid) as j:
            records = [WireRecord.from_record(r) for r in j.after(0, 1_000_000)]
        per_batch = e2e.settings_kw()["max_batch_records"]
        batches = cut(sid, records, per_batch)
        keys = e2e.site_keys(sid)
        k = len(batches)
        frames = {n: encode(Batch(sid, n, batches[n - 1], 1_795_000_000), keys) for n in range(1, k + 1)}
        tail = list(range(k, 3, -1))
        order = [3, 1, 3, 2] + [n for n in tail for _ in (0, 1)]
        expect = [0, 1, 1, 3] + [3] * (2 * len(tail) - 2) + [k, k]
        async with e2e.workers(1) as (worker,):
            acks: list[int] = []
            async with site_client(e2e, sid, f"raw-{sid}") as c:
                await c.subscribe(acks_topic(sid), qos=1)
                for n in order:
                    await c.publish(batches_topic(sid), frames[n], qos=1)
                    async with asyncio.timeout(15):
                        async for m in c.messages:
                            ack = decode(m.payload, keys, topic=m.topic.value)
                            assert isinstance(ack, Ack) and ack.rejected == ()
                            acks.append(ack.up_to_seq)
                            break
                    if n == 3 and len(acks) == 1:
                        info = e2e.ledger.site(sid)
                        assert (info.up_to_seq, info.max_seq, info.gap) == (0, 3, True)
            assert acks == expect, acks
            assert worker.stats.new_records == len(records)
            e2e.consistent_so_far()
            async with e2e.clients() as clients:
                await until(e2e.all_synced, 60, "every site synced")
                assert clients[sid].status().last_batch == k
                e2e.check_exact()
    run(scenario(), 120)
