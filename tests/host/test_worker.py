"""The MQTT worker against the Mosquitto on 127.0.0.1:1883 (started if it is not running; the
test fails if it cannot be reached): a published batch is ingested and acked; a forged one is
refused by wire.decode and never reaches the ledger; a block reaches a site as a delta."""

from __future__ import annotations

import asyncio
import time
import uuid

import aiomqtt
import pytest

from authz import sample
from host import master
from host.keys import ensure_replica_keys
from host.ledger import Ledger
from host.worker import Worker, load_keys
from wire import (Ack, Batch, SiteKeys, Table, WireError, acks_topic, batches_topic, decode, deltas_topic,
                  encode, load_replica_verify_key, write_key)

from .edge import CARD, T0, Site, contract, fuel_card

@pytest.fixture
def keyring(tmp_path) -> tuple[SiteKeys, SiteKeys, str]:
    """(host keys, the site's keys, site id); the host's are loaded from a keys directory."""
    site = f"T{uuid.uuid4().hex[:8]}"
    (tmp_path / "keys" / "sites").mkdir(parents=True)
    replica = ensure_replica_keys(tmp_path / "keys")
    write_key(tmp_path / "keys" / "sites" / f"{site}.key", bytes(range(32, 64)))
    host = load_keys(tmp_path / "keys")
    assert host.can_sign_replica
    return host, SiteKeys({site: bytes(range(32, 64))},
                          replica_verify=load_replica_verify_key(replica.verify_key_file)), site


async def _with_worker(url: str, keys: SiteKeys, body, **kw):
    # A group of our own, so workers of other test runs on the same broker do not take our messages.
    worker = Worker(url, keys, group=f"g{uuid.uuid4().hex[:8]}", poll_interval_s=0.05, **kw)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(worker.ready.wait(), 10)
        return await body(worker)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def test_a_published_batch_is_ingested_and_acked(mosquitto, ledger_url: str, ledger: Ledger, keyring):
    host_keys, site_keys, site = keyring
    master.put_products(ledger, sample.PRODUCTS)
    master.create_contract(ledger, contract())
    master.issue_fuel_card(ledger, fuel_card())
    s = Site(site)
    s.fuel_sale()
    s.fuel_sale(tc=12)
    batches = s.batches(5)

    async def body(worker: Worker):
        async with aiomqtt.Client(*mosquitto, identifier=f"site-{site}") as c:
            await c.subscribe(acks_topic(site), 1)
            forged = encode(batches[0], SiteKeys({site: bytes(32)}))  # signed with the wrong key
            await c.publish(batches_topic(site), forged, qos=1)
            for b in batches:
                await c.publish(batches_topic(site), encode(b, site_keys), qos=1)
            acks = []
            async with asyncio.timeout(15):
                async for m in c.messages:
                    ack = decode(m.payload, site_keys, topic=m.topic.value)
                    acks.append(ack)
                    if ack.up_to_seq == len(batches):
                        break
            return acks
    acks = asyncio.run(_with_worker(ledger_url, host_keys, body, publish_replica=False))
    assert acks[-1] == Ack(site, 2, ())
    assert ledger.record_count(site) == 10 and ledger.site(site).up_to_seq == 2
    assert ledger.balance_kop(1) == 10_000_000 - 480_000


def test_a_forged_batch_is_refused_before_ingest(mosquitto, ledger_url: str, ledger: Ledger, keyring):
    host_keys, site_keys, site = keyring
    s = Site(site)
    s.fuel_sale()
    (b,) = s.batches(10)
    good = encode(b, site_keys)
    tampered = bytearray(good)
    tampered[40] ^= 1  # one byte of the payload changed: the MAC no longer verifies

    async def body(worker: Worker):
        async with aiomqtt.Client(*mosquitto, identifier=f"site-{site}") as c:
            await c.subscribe(acks_topic(site), 1)
            await c.publish(batches_topic(site), bytes(tampered), qos=1)
            await c.publish(batches_topic(site), b"\x93garbage", qos=1)
            other = Batch(site, 2, (), T0)
            await c.publish(batches_topic("SOMEONE-ELSE"), encode(other, site_keys), qos=1)  # another site's topic
            deadline = time.monotonic() + 10
            while worker.stats.refused < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return worker.stats
    stats = asyncio.run(_with_worker(ledger_url, host_keys, body, publish_replica=False))
    assert stats.refused == 3 and stats.batches == 0 and stats.acks == 0
    assert ledger.record_count() == 0 and ledger.site(site) is None


def test_a_block_reaches_a_site_as_a_delta(mosquitto, ledger_url: str, ledger: Ledger, keyring):
    host_keys, site_keys, site = keyring
    master.put_products(ledger, sample.PRODUCTS)
    master.create_contract(ledger, contract())
    master.issue_fuel_card(ledger, fuel_card())

    async def body(worker: Worker):
        async with aiomqtt.Client(*mosquitto, identifier=f"site-{site}") as c:
            await c.subscribe(deltas_topic(Table.STOP_LIST), 1)
            while worker.stats.deltas < 3:  # the set-up's own deltas go out first
                await asyncio.sleep(0.05)
            t0 = time.monotonic()
            await asyncio.to_thread(master.block_card, ledger, CARD)
            async with asyncio.timeout(10):
                async for m in c.messages:
                    if m.retain:  # the latest delta kept on the broker, from before the block
                        continue
                    try:
                        d = decode(m.payload, site_keys, topic=m.topic.value)
                    except WireError:  # another run's host on the shared broker: not ours, refused
                        continue
                    if any(e.card_no == CARD for e in d.upserts):
                        return time.monotonic() - t0
    took = asyncio.run(_with_worker(ledger_url, host_keys, body))
    assert took < 3


def test_a_publish_only_worker_takes_no_batch_and_publishes_deltas(mosquitto, ledger_url: str, ledger: Ledger,
                                                                   keyring):
    """``ingest=False`` (``--no-ingest``): the worker subscribes to no site topic, so a batch
    sent to its group is neither ingested nor acked, and it still publishes the replica."""
    host_keys, site_keys, site = keyring
    master.put_products(ledger, sample.PRODUCTS)
    master.create_contract(ledger, contract())
    master.issue_fuel_card(ledger, fuel_card())
    s = Site(site)
    s.fuel_sale()
    (batch,) = s.batches(10)

    async def body(worker: Worker):
        async with aiomqtt.Client(*mosquitto, identifier=f"site-{site}") as c:
            await c.subscribe(acks_topic(site), 1)
            await c.subscribe(deltas_topic(Table.STOP_LIST), 1)
            await c.publish(batches_topic(site), encode(batch, site_keys), qos=1)
            await asyncio.to_thread(master.block_card, ledger, CARD)
            async with asyncio.timeout(10):
                async for m in c.messages:
                    if m.topic.value == acks_topic(site):
                        raise AssertionError("a publish-only worker acked a batch")
                    if m.retain:
                        continue
                    try:
                        d = decode(m.payload, site_keys, topic=m.topic.value)
                    except WireError:  # another run's host on the shared broker
                        continue
                    if any(e.card_no == CARD for e in d.upserts):
                        break
            return worker.stats
    stats = asyncio.run(_with_worker(ledger_url, host_keys, body, ingest=False, fold_interval_s=0.2))
    assert stats.batches == 0 and stats.acks == 0 and stats.deltas >= 1
    assert ledger.record_count() == 0 and ledger.site(site) is None


def test_a_worker_must_ingest_or_publish(ledger_url: str, keyring, tmp_path):
    host_keys, _, _ = keyring
    with pytest.raises(ValueError, match="neither ingests nor publishes"):
        Worker(ledger_url, host_keys, ingest=False, publish_replica=False)
    from host.worker import main
    with pytest.raises(SystemExit):
        main(["--keys-dir", str(tmp_path), "--no-ingest", "--no-publish"])
    with pytest.raises(SystemExit):
        main(["--keys-dir", str(tmp_path), "--fold-interval-s", "0"])
