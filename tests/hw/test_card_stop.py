"""Card devices stopped while their threads are busy (issue 14's shape at the edge).

A :class:`CardReader` runs its exchanges on its own I/O thread and watches the reader on a
monitor thread; a :class:`VirtualCard` serves vpcd from a thread per insertion. Each must
close its handles only from the thread that uses them: the virtual card pulled in the middle
of a read, and the reader closed with reads still queued, round after round, must end every
read with a card error (never a crash, never a hang), and the next round must work."""

from __future__ import annotations

import asyncio

from hw.card.application import FuelCardApplication
from hw.card.reader import CardReader, CardRemoved
from hw.errors import CardError
from tests.hw.pcsc import (  # noqa: F401  (fixtures)
    READER,
    card_file,
    keys,
    pcscd,
    sample_card,
    settle_empty_reader,
    virtual_card,
)

from .test_card_pcsc import insert, next_event, run

ROUNDS = 8


def test_pulled_mid_read_and_closed_mid_read_many_times(virtual_card, keys):
    async def round_(n: int) -> tuple[int, int]:
        async with CardReader(READER) as r:
            it = r.events()
            await insert(virtual_card, it)
            app = FuelCardApplication(r, keys)
            assert (await app.read_card()).card == sample_card()  # the round starts on a working card
            reads = [asyncio.create_task(app.read_card()) for _ in range(4)]
            await asyncio.sleep(0.002 * n)
            if n % 2 == 0:
                virtual_card.pull()  # the card's thread is mid-exchange: it closes its own socket
                await next_event(it, CardRemoved)
            # odd rounds: the reader closes (async with) with reads still queued on its I/O thread
        outcomes = await asyncio.gather(*reads, return_exceptions=True)
        bad = [o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, (CardError, asyncio.CancelledError))]
        assert not bad, bad
        virtual_card.pull()
        await asyncio.to_thread(settle_empty_reader)  # pcscd has seen the card go before the next round
        return sum(1 for o in outcomes if not isinstance(o, BaseException)), len(outcomes)

    async def main():
        done = 0
        for n in range(ROUNDS):
            ok, _ = await round_(n)
            done += ok
        return done
    run(main())
