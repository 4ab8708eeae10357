"""A host worker started and stopped many times while it is busy: the scenario of
``tests/host/test_worker_stop.py``, run in its own process so that a crash (a segfault in the
database driver) fails that test instead of killing the test run.

While the rounds go on, a site publishes signed batches without pause (so the worker is
often inside an ingest when it is told to stop) and an operator blocks and unblocks cards at
the host (so its replica publisher is often inside ``pending`` or ``mark_sent``). Each round
starts a :class:`host.worker.Worker`, waits for it to consume, lets it work a random few
milliseconds and stops it. At the end one more worker drains what is left, and the ledger
must hold every record exactly once.

Run: ``python -X faulthandler -m tests.host.worker_churn --db URL --broker 127.0.0.1:1883
--rounds 30``. Exits 0 when every round stopped cleanly and the ledger is whole; prints one
``key: value`` line per figure.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import random
import sys
import threading
import time
import uuid

import aiomqtt

from authz import sample
from host import master
from host.ledger import Ledger
from host.worker import Worker
from wire import SiteKeys, batches_topic, encode

from .edge import CARD, CARD2, Site, contract, fuel_card

HOST_KEY = bytes(range(32))
SITE_KEY = bytes(range(32, 64))


def _prepare(url: str) -> None:
    with Ledger.open(url) as led:
        master.put_products(led, sample.PRODUCTS)
        master.create_contract(led, contract(balance_kop=10**12))
        master.issue_fuel_card(led, fuel_card())
        master.issue_fuel_card(led, fuel_card(CARD2))


def _operator(url: str, stop: threading.Event) -> int:
    """Block and unblock cards at the host until ``stop``: a stream of replica deltas."""
    changes = 0
    with Ledger.open(url) as led:
        while not stop.is_set():
            for card in (CARD, CARD2):
                master.block_card(led, card, reason="churn")
                master.unblock_card(led, card)
                changes += 2
            time.sleep(0.002)
    return changes


async def _site(broker: tuple[str, int], site_id: str, keys: SiteKeys, frames: list[bytes],
                stop: asyncio.Event) -> None:
    """Publish every batch, then publish them again (resends, as a site does until acked),
    until ``stop``."""
    async with aiomqtt.Client(*broker, identifier=f"churn-{site_id}") as c:
        while not stop.is_set():
            for frame in frames:
                await c.publish(batches_topic(site_id), frame, qos=1)
                if stop.is_set():
                    return
                await asyncio.sleep(0.001)


async def scenario(url: str, broker: tuple[str, int], rounds: int, seed: int) -> int:
    rnd = random.Random(seed)
    site_id = f"C{uuid.uuid4().hex[:8]}"
    host_keys = SiteKeys({site_id: SITE_KEY}, host=HOST_KEY)
    site_keys = SiteKeys({site_id: SITE_KEY}, host=HOST_KEY)
    s = Site(site_id)
    for i in range(400):
        s.fuel_sale(card_no=CARD if i % 2 else CARD2, tc=10 + i // 2)
    frames = [encode(b, site_keys) for b in s.batches(8)]
    group = f"churn{uuid.uuid4().hex[:6]}"

    stop_site = asyncio.Event()
    site_task = asyncio.create_task(_site(broker, site_id, site_keys, frames, stop_site))
    stop_operator = threading.Event()
    operator = asyncio.create_task(asyncio.to_thread(_operator, url, stop_operator))
    worst_stop_s = 0.0
    busy_stops = 0
    try:
        for n in range(rounds):
            w = Worker(url, host_keys, hostname=broker[0], port=broker[1], group=group,
                       poll_interval_s=0.001, fold_interval_s=0.01, identifier=f"{group}-{n}")
            stop = asyncio.Event()
            task = asyncio.create_task(w.run(stop))
            await asyncio.wait_for(w.ready.wait(), 20)
            await asyncio.sleep(rnd.uniform(0.0, 0.15))
            busy_stops += w.busy()
            t0 = time.monotonic()
            stop.set()
            await asyncio.wait_for(task, 30)
            worst_stop_s = max(worst_stop_s, time.monotonic() - t0)
    finally:
        stop_site.set()
        stop_operator.set()
        await site_task
        changes = await operator
    # one last worker takes what is left: every batch, exactly once
    w = Worker(url, host_keys, hostname=broker[0], port=broker[1], group=group, publish_replica=False,
               identifier=f"{group}-drain")
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    await asyncio.wait_for(w.ready.wait(), 20)
    async with aiomqtt.Client(*broker, identifier=f"churn-{site_id}-last") as c:
        for frame in frames:
            await c.publish(batches_topic(site_id), frame, qos=1)
    with Ledger.open(url) as led:
        deadline = time.monotonic() + 60
        while led.record_count(site_id) < len(s.records) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stored = led.record_count(site_id)
    stop.set()
    await asyncio.wait_for(task, 30)
    print(f"rounds: {rounds}")
    print(f"stops_while_busy: {busy_stops}")
    print(f"operator_changes: {changes}")
    print(f"worst_stop_s: {worst_stop_s:.3f}")
    print(f"records_stored: {stored} of {len(s.records)}")
    return 0 if stored == len(s.records) else 1


def main(argv: list[str] | None = None) -> int:
    faulthandler.enable(all_threads=True)
    p = argparse.ArgumentParser(prog="python -m tests.host.worker_churn", description=__doc__.splitlines()[0])
    p.add_argument("--db", required=True, help="ledger URL (sqlite:///... or postgresql://...)")
    p.add_argument("--broker", default="127.0.0.1:1883", help="host:port of the MQTT broker")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    host, _, port = args.broker.rpartition(":")
    _prepare(args.db)
    return asyncio.run(scenario(args.db, (host, int(port)), args.rounds, args.seed))


if __name__ == "__main__":
    sys.exit(main())
