"""Processes die: a host worker SIGKILLed inside an ingest transaction and restarted (alone,
or one of two workers sharing the sites' traffic), an edge sync client SIGKILLed with
batches in flight and restarted, and two workers in one group on PostgreSQL. The ledger
must end holding exactly the journals, every record acked, each applied once."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from wire import Presence, encode, presence_topic

from .conftest import SITES, run, until
from .test_delivery_faults import site_client


@pytest.mark.parametrize("ledger_url,workers", [("sqlite", 1), ("postgresql", 1), ("postgresql", 2)],
                         indirect=["ledger_url"], ids=["sqlite-1worker", "postgresql-1worker", "postgresql-2workers"])
def test_host_worker_killed_mid_ingest_and_restarted(e2e, workers):
    """``python -m host.worker`` is SIGKILLed while it is inside a write transaction (seen in
    pg_stat_activity, or as SQLite's write lock held), twice. The transaction rolls back:
    no batch is half applied; the batches it had taken from the broker (QoS 1, clean
    session) are gone with it, and the sites send them again after ``ack_timeout_s``."""
    async def scenario():
        total = e2e.total_records()
        victim = await e2e.worker_proc("victim", publish=False).start()
        others = [await e2e.worker_proc(f"other{i}").start() for i in range(workers - 1)]
        async with e2e.clients() as clients:
            for kill, share in enumerate((0.2, 0.5)):
                await until(lambda share=share: e2e.ingested() > total * share, 60, f"{share:.0%} of the backlog ingested")
                await until(lambda: e2e.writing(victim.name), 20, "the victim inside a write transaction",
                            interval=0.001)
                victim.sigkill()
                mid = e2e.ingested()
                e2e.consistent_so_far()  # nothing half applied, nothing twice
                assert mid < total
                if not others:  # nobody ingests while the only worker is down; the sites keep their records
                    await asyncio.sleep(0.5)
                    assert e2e.ingested() == mid and e2e.unacked() > 0
                await e2e.journal_later(clients, kill)
                await victim.start()
            await until(e2e.all_synced, 90, "the backlog after the worker restarts")
            assert sum(c.status().resends for c in clients.values()) > 0  # what died with the worker was resent
            e2e.check_exact()
        for w in [victim, *others]:
            assert await w.terminate() == 0, w.log_text()[-2000:]
    run(scenario(), 150)


@pytest.mark.parametrize("ledger_url", ["sqlite", "postgresql"], indirect=True)
def test_host_worker_sigterm_mid_ingest_stops_cleanly_and_nothing_is_half_applied(e2e):
    """SIGTERM to ``python -m host.worker`` while it is inside a write transaction (issue 14):
    it finishes or abandons the batch in flight, closes its connections in the threads that
    use them and exits 0 within a few seconds, saying it stopped; the ledger holds whole
    batches only, and what was not acked is resent to the next worker."""
    async def scenario():
        total = e2e.total_records()
        async with e2e.clients():
            for round_ in range(2):
                w = await e2e.worker_proc(f"termed{round_}").start()
                await until(lambda r=round_: e2e.ingested() > total * (0.2 + 0.3 * r), 60, "part of the backlog ingested")
                await until(lambda w=w: e2e.writing(w.name), 20, "the worker inside a write transaction",
                            interval=0.001)
                t0 = time.monotonic()
                rc = await w.terminate(timeout=10)
                took = time.monotonic() - t0
                log = w.log_text()
                assert rc == 0, log[-3000:]
                assert "stopped" in log and "Traceback" not in log, log[-3000:]
                print(f"sigterm_to_exit_s[{e2e.dialect}]: {took:.2f}")
                e2e.consistent_so_far()  # nothing half applied, nothing twice
            last = await e2e.worker_proc("after").start()
            await until(e2e.all_synced, 90, "the backlog after the stops")
            e2e.check_exact()
            assert await last.terminate() == 0
    run(scenario(), 150)


def _numbered_unacked(path) -> int:
    """Batches the client numbered (stored ranges) beyond the last one acked: in flight."""
    c = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        acked = int((c.execute("SELECT value FROM meta WHERE key = 'sync.acked_batch'").fetchone() or ("0",))[0])
        nums = [int(k.rsplit(".", 1)[1]) for (k,) in c.execute("SELECT key FROM meta WHERE key LIKE 'sync.batch.%'")]
    finally:
        c.close()
    return sum(1 for n in nums if n > acked)


def test_edge_sync_client_killed_mid_publish_and_restarted(e2e):
    """Two sites run their SyncClient in their own process, the third in this one. The first
    site's client is SIGKILLed with batches numbered, published and not acked, and started
    again: it sends the same batches again, the host drops the records it has by id."""
    async def scenario():
        victim_id, other_id, local_id = SITES
        # each batch in its own transaction and ack: with runs of batches (the default) the
        # backlog goes in a few large steps, and the kill seldom finds one applied, not acked
        async with e2e.workers(1, max_batches_per_txn=1) as (worker,):
            victim = await e2e.client_proc(victim_id).start()
            other = await e2e.client_proc(other_id).start()
            async with e2e.clients([local_id]):
                await until(lambda: e2e.ingested(victim_id) > 0, 60, "the victim's first batches ingested")
                path = e2e.by_id[victim_id].journal_path
                # Catch the client with batches numbered and not acked: frozen, its journal
                # stands still while the worker applies (and acks, unheard) what is in flight.
                # Polling the host and then killing raced a fast ingest that acked it all.
                deadline = time.monotonic() + 60
                while True:
                    victim.freeze()
                    if (in_flight := _numbered_unacked(path)) > 0:
                        break
                    victim.thaw()
                    assert time.monotonic() < deadline, "the victim never had batches in flight"
                    await asyncio.sleep(0.002)
                await asyncio.sleep(0.5)  # the worker applies the batches in flight
                victim.sigkill()
                assert in_flight == _numbered_unacked(path) > 0  # numbered, not acked: resent
                await victim.start()
                await until(e2e.all_synced, 60, "every site synced after the client restart")
                assert worker.stats.records > worker.stats.new_records  # resent records, dropped by id
                e2e.check_exact()
            for p in (victim, other):
                assert await p.terminate() == 0, p.log_text()[-2000:]
            assert worker.stats.new_records == e2e.total_records() and worker.stats.errors == 0
    run(scenario(), 120)


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_two_workers_share_the_traffic_of_every_site(e2e):
    """Two workers of one shared-subscription group on PostgreSQL: each gets some of the
    batches (of one site too: they serialize on the site's row), the watermarks and the
    balances of the contracts two sites charge come out exact."""
    async def scenario():
        async with e2e.workers(2) as ws, e2e.clients() as clients:
            await until(e2e.all_synced, 60, "the backlog through two workers")
            await e2e.journal_later(clients, 0)
            await until(e2e.all_synced, 30, "the later records")
            assert all(w.stats.batches > 0 for w in ws), [w.stats for w in ws]
            assert sum(w.stats.new_records for w in ws) == e2e.total_records()
            e2e.check_exact()
    run(scenario(), 90)


@pytest.mark.parametrize("publish", [False, True], ids=["no-publish", "publishing"])
@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_ledger_connection_lost_mid_ingest_the_worker_recovers(e2e, publish):
    """The worker's PostgreSQL connection is cut while it is inside an ingest transaction
    (``pg_terminate_backend``: what a database restart, a failover or a network cut does to
    it). The transaction rolls back; the worker must get a new connection and go on, as it
    does after a broker failure.

    Found by this test: the worker used to keep the dead connection forever (no ack again, the
    sites resending in vain) and a publishing worker's run() died; now a failed ingest and a
    failed publisher step reopen the ledger."""
    async def scenario():
        total = e2e.total_records()
        app = "e2e-conn-victim"
        async with e2e.workers(1, url=e2e.proc_ledger_url(app), publish_replica=publish), e2e.clients():
            await until(lambda: e2e.ingested() > total // 4, 60, "a quarter of the backlog ingested")
            await until(lambda: e2e.writing(app), 20, "the worker inside a write transaction", interval=0.001)
            cut = e2e.ledger.db.scalar("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                       "WHERE application_name = ?", (app,))
            assert cut >= 1  # its ingest connection (and the publisher's)
            e2e.consistent_so_far()  # the cut transaction left nothing behind
            await until(e2e.all_synced, 10, "the backlog after the ledger connection was lost")
            e2e.check_exact()
    run(scenario(), 90)


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
def test_ledger_connection_lost_while_idle_then_a_presence_comes_first(e2e):
    """The worker's PostgreSQL connection is cut while it is idle, and the next message is a
    site's presence (a site coming online), not a batch: the worker must record it on a new
    connection, or drop it, and go on ingesting."""
    async def scenario():
        app = "e2e-conn-idle"
        sid = SITES[0]
        async with e2e.workers(1, url=e2e.proc_ledger_url(app), publish_replica=False), e2e.clients() as clients:
            await until(e2e.all_synced, 60, "the backlog synced")
            cut = e2e.ledger.db.scalar("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                       "WHERE application_name = ?", (app,))
            assert cut == 1
            async with site_client(e2e, sid, f"presence-{sid}") as c:
                await c.publish(presence_topic(sid), encode(Presence(sid, True, int(time.time()), "e2e", {}),
                                                            e2e.site_keys(sid)), qos=1)
            await asyncio.sleep(0.5)
            await e2e.journal_later(clients, 0)
            await until(e2e.all_synced, 10, "records journaled after the presence")
            e2e.check_exact()
    run(scenario(), 90)
