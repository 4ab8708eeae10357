"""Forged and malformed payloads reach the host worker and are refused, and a site's
credentials cannot publish on another site's topics (the broker's ACL): the ledger does
not change, no ack goes out, and the real sites go on syncing."""

from __future__ import annotations

import asyncio
import contextlib
import os

import aiomqtt
import pytest

from terminal.ids import new_id, new_txn_id
from terminal.journal import Journal
from wire import (
    Ack,
    Batch,
    ReplicaDelta,
    SiteKeys,
    Table,
    WireRecord,
    acks_topic,
    batches_topic,
    deltas_topic,
    encode,
    new_key,
    presence_topic,
    snapshot_requests_topic,
)

from .conftest import SITES, run, until
from .test_delivery_faults import cut, site_client


def forged_records(site_id: str, n: int = 3) -> tuple[WireRecord, ...]:
    """Records no journal holds: a completion charging contract 1 a lot, were it applied."""
    out = []
    for i in range(n):
        txn = new_txn_id(site_id, "pump-1")
        out.append(WireRecord(new_id(site_id), site_id, "pump-1", txn, "fuel.completed", 1_795_000_000 + i,
                              {"contract_id": 1, "card_no": "7005830000000001", "amount_kop": 99_999_999,
                               "delivered_volume_ml": 1_000, "request": {"product": "AI95"}}))
    return tuple(out)


def ledger_state(e2e) -> tuple:
    led = e2e.ledger
    sites = [(s.site_id, s.up_to_seq, s.max_seq, s.records) for s in led.sites()]
    batches = led.db.fetchall("SELECT site_id, batch_seq, status, records, new_records FROM batches "
                              "ORDER BY site_id, batch_seq")
    return (led.record_count(), sites, batches, led.balance_kop(1), led.balance_kop(2), led.issues(),
            led.clone_alerts())


def test_forged_and_malformed_payloads_are_refused_and_change_nothing(e2e):
    async def scenario():
        a, b = SITES[0], SITES[1]
        a_keys, b_keys = e2e.site_keys(a), e2e.site_keys(b)
        bad = forged_records(a)
        good = encode(Batch(a, 999, bad, 1_795_000_000), a_keys)  # well made: its mutations below are not
        flipped = bytearray(good)
        flipped[len(good) // 2] ^= 0x01
        version2 = bytearray(good)
        assert version2[1] == 1
        version2[1] = 2
        on_a_topic = [
            ("signed with another key", encode(Batch(a, 999, bad, 0), SiteKeys({a: new_key()}))),
            ("signed by the host's replica key", good[:-34] + b"\xc4\x40" + e2e.replica_key.sign(good[:-34])),
            ("one bit flipped", bytes(flipped)),
            ("truncated", good[:-7]),
            ("trailing bytes", good + b"\x00"),
            ("protocol version 2", bytes(version2)),
            ("not MessagePack", b"\xc1\xc1garbage\xff"),
            ("empty", b""),
            ("oversized (1.5 MiB)", b"\x95\x01" + os.urandom(3 << 19)),
            ("site B's batch, B's key, on A's topic", encode(Batch(b, 1, forged_records(b), 0), b_keys)),
            ("an ack on the batches topic", encode(Ack(a, 999), a_keys)),
        ]
        elsewhere = [
            (presence_topic(a), b"\x92not a presence"),
            (snapshot_requests_topic(a), good),  # a batch on the snapshot-requests topic
        ]
        async with e2e.workers(1) as (worker,), e2e.clients() as clients:
            await until(e2e.all_synced, 60, "the backlog synced")
            for c in clients.values():  # the client's own figures too (it stores the ack, then takes it)
                await c.wait_flushed(10)
            e2e.check_exact()
            before, acked = ledger_state(e2e), {s: c.status().acked_batch for s, c in clients.items()}
            refused0, batches0, acks0 = worker.stats.refused, worker.stats.batches, worker.stats.acks
            async with site_client(e2e, a, "intruder-a") as c:
                for _, payload in on_a_topic:
                    await c.publish(batches_topic(a), payload, qos=1)
                for topic, payload in elsewhere:
                    await c.publish(topic, payload, qos=1)
            n = len(on_a_topic) + len(elsewhere)
            await until(lambda: worker.stats.refused >= refused0 + n, 20, f"{n} payloads refused")
            # over the broker's max_packet_size (4 MiB): mosquitto refuses it and hangs up
            with contextlib.suppress(aiomqtt.MqttError):
                async with site_client(e2e, a, "intruder-big", timeout=2) as c:
                    await c.publish(batches_topic(a), b"\x95" + bytes(5 << 20), qos=1)
                    await asyncio.sleep(0.3)
            await asyncio.sleep(0.3)
            assert worker.stats.refused == refused0 + n and worker.stats.batches == batches0
            assert worker.stats.acks == acks0 and worker.stats.errors == 0
            assert ledger_state(e2e) == before
            assert all(e2e.ledger.record(r.record_id) is None for r in bad)
            for s, c in clients.items():
                st = c.status()
                assert st.acked_batch == acked[s] and st.rejected_messages == 0 and st.connected
            # the worker and the sites go on as if nothing happened
            await e2e.journal_later(clients, 0)
            await until(e2e.all_synced, 30, "records journaled after the forgeries")
            e2e.check_exact()
    run(scenario(), 90)


@pytest.mark.parametrize("ledger_url", ["sqlite"], indirect=True)
def test_a_site_cannot_publish_on_another_sites_topics(e2e):
    """Site A's broker credentials on site B's topics (with B's key, as if stolen) and on
    host-only topics: Mosquitto's ACL drops each publish (and hangs up); the worker never
    sees one. A's control batch on its own topic does reach the worker."""
    async def scenario():
        a, b = SITES[0], SITES[1]
        b_keys = e2e.site_keys(b)
        forbidden = [
            (batches_topic(b), encode(Batch(b, 1, forged_records(b), 0), b_keys)),
            (batches_topic(b), encode(Batch(b, 10_000, forged_records(b), 0), b_keys)),
            (presence_topic(b), b"x"),
            (snapshot_requests_topic(b), b"x"),
            (acks_topic(a), encode(Ack(a, 10_000), e2e.site_keys(a))),  # its own acks: host-only
            (acks_topic(b), encode(Ack(b, 10_000), b_keys)),
            (deltas_topic(Table.STOP_LIST), encode(ReplicaDelta(Table.STOP_LIST, 7, 8, (), ()),
                                                   SiteKeys({}, replica_signing=e2e.replica_key))),
            ("edgepos/v1/sites/E2E-S2/other", b"x"),
        ]
        async with e2e.workers(1) as (worker,), e2e.clients() as clients:
            await until(e2e.all_synced, 60, "the backlog synced")
            e2e.check_exact()
            before = ledger_state(e2e)
            seen0 = (worker.stats.batches, worker.stats.refused, worker.stats.presence, worker.stats.snapshots)
            refused = 0
            for i, (topic, payload) in enumerate(forbidden):
                try:
                    async with site_client(e2e, a, f"intruder-{i}") as c:
                        await c.publish(topic, payload, qos=1)
                        await asyncio.sleep(0.2)
                        await c.publish(topic, payload, qos=1)  # the broker has hung up by now
                except aiomqtt.MqttError:
                    refused += 1
            assert refused == len(forbidden)
            await asyncio.sleep(0.5)
            assert (worker.stats.batches, worker.stats.refused, worker.stats.presence,
                    worker.stats.snapshots) == seen0
            assert ledger_state(e2e) == before
            # the control: A's own topic works (a batch it sent before, again: a duplicate)
            with Journal.open(e2e.by_id[a].journal_path, a) as j:
                recs = [WireRecord.from_record(r) for r in j.after(0, 250)]
            first = cut(a, recs, 250)[0]
            async with site_client(e2e, a, "site-a-control") as c:
                await c.publish(batches_topic(a), encode(Batch(a, 1, first, 0), e2e.site_keys(a)), qos=1)
            await until(lambda: worker.stats.batches == seen0[0] + 1, 10, "the control batch")
            assert e2e.ledger.record_count() == before[0]
            assert all(c.status().connected for c in clients.values())
            e2e.check_exact()
    run(scenario(), 90)
