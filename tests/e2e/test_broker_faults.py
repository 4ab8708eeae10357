"""The broker goes away: stopped for a while as the sites keep journaling, and restarted
(cleanly, or killed) with batches and acks in flight. Sites, broker and host are real; the
ledger must end holding exactly the journals, every record acked, each applied once."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import run, until


def test_broker_down_for_a_while_sites_keep_journaling_then_flush(e2e):
    async def scenario():
        async with e2e.workers(1), e2e.clients() as clients:
            await until(e2e.all_synced, 60, "the offline backlog synced")
            e2e.check_exact()
            before = e2e.ingested()
            await asyncio.to_thread(e2e.broker.stop)
            await until(lambda: not any(c.status().connected for c in clients.values()), 15,
                        "every site to notice the broker is gone")
            # the lanes go on journaling while the broker is down
            journaled = 0
            for chunk in range(3):
                journaled += await e2e.journal_later(clients, chunk)
                await asyncio.sleep(0.4)
            assert e2e.unacked() == journaled and e2e.ingested() == before
            assert sum(c.status().backlog_records for c in clients.values()) == journaled
            await asyncio.to_thread(e2e.broker.start)  # same port, same persistence
            journaled += await e2e.journal_later(clients, 3)  # and once it is back
            await until(e2e.all_synced, 60, "the records journaled while the broker was down")
            assert all(c.status().connects >= 2 and c.status().connected for c in clients.values())
            e2e.check_exact()
    run(scenario(), 120)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_broker_restarted_with_messages_in_flight(e2e, how):
    """SIGTERM: mosquitto saves its sessions and queued acks; SIGKILL: it loses what it had
    not saved (the sessions too). Either way the sites resend what is not acked."""
    async def scenario():
        total = e2e.total_records()
        async with e2e.workers(1) as (worker,), e2e.clients() as clients:
            await until(lambda: e2e.ingested() > total // 4, 60, "a quarter of the backlog ingested")
            in_flight = sum(c.status().in_flight_batches for c in clients.values())
            await asyncio.to_thread(e2e.broker.stop if how == "sigterm" else e2e.broker.kill)
            mid = e2e.ingested()
            await asyncio.to_thread(e2e.broker.start)
            assert in_flight > 0 and mid < total, (in_flight, mid, total)
            e2e.consistent_so_far()
            await until(e2e.all_synced, 60, "the backlog after the broker restart")
            assert all(c.status().connects >= 2 for c in clients.values())
            assert worker.stats.new_records == total and worker.stats.refused == 0
            e2e.check_exact()
    run(scenario(), 120)
