"""The card driver and application against the real PC/SC stack: pyscard -> pcscd -> vpcd ->
our virtual card over TCP. Every wait is bounded; pcscd polls vpcd every 0.4 s, so event
waits allow a few seconds."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess

import pytest

from authz.fuel_model import LimitCounter
from hw.card.apdu import SW, Command
from hw.card.application import INS, FuelCardApplication, WriteOutcome
from hw.card.reader import CardInserted, CardReader, CardRemoved, list_readers
from hw.errors import (
    CardNotGenuineError,
    CardRemovedError,
    CardResponseError,
    CardTimeoutError,
    CloneSuspectedError,
    CounterMismatchError,
    NoReaderError,
    PinBlockedError,
    WrongPinError,
)
from hw.sim.card import Fault, VirtualCard
from tests.hw.pcsc import (  # noqa: F401  (fixtures)
    READER,
    card_file,
    keys,
    pcscd,
    sample_card,
    virtual_card,
    wait_reader,
)

TEST_S = 20.0  # a whole test never takes longer
EVENT_S = 3.0  # pcscd notices insertion/removal within its 0.4 s poll


def run(coro):
    """Run a test coroutine with an overall timeout, so nothing can hang."""
    async def bounded():
        return await asyncio.wait_for(coro, TEST_S)
    return asyncio.run(bounded())


async def next_event(it, kind):
    ev = await asyncio.wait_for(anext(it), EVENT_S)
    assert isinstance(ev, kind), ev
    return ev


async def insert(card: VirtualCard, it) -> CardInserted:
    card.insert()
    return await next_event(it, CardInserted)


def counters(*spent: int, start: int = 20_000):
    return tuple((i + 1, LimitCounter(s, start)) for i, s in enumerate(spent))


def test_whole_card_session(virtual_card, keys):
    async def main():
        async with CardReader(READER) as r:
            it = r.events()
            ev = await insert(virtual_card, it)
            assert ev.atr.startswith(b"\x3b")
            app = FuelCardApplication(r, keys)
            data = await app.read_card()
            assert data.card == sample_card()
            assert data.state.txn_counter == 0 and not data.state.reservation_open
            assert await app.pin_tries_left() == 3
            await app.verify_pin("1234")
            after_reserve = await app.reserve(data.state, b"R" * 16, counters(50_000, 250_000, 0))
            assert after_reserve.txn_counter == 1 and after_reserve.reservation_open
            after_commit = await app.commit(after_reserve, b"C" * 16, counters(31_000, 155_000, 0))
            assert after_commit.txn_counter == 2
            back = await app.read_counters()
            assert back == after_commit
            assert not back.reservation_open
            virtual_card.pull()
            await next_event(it, CardRemoved)
    run(main())
    # The state file is the card's memory: a new VirtualCard of it has the counters.
    again = VirtualCard(virtual_card.path)
    assert again.state.txn_counter == 2
    assert again.state.counters[0] == [1, 31_000, 20_000]


def test_counters_survive_pull_and_reinsert(virtual_card, keys):
    async def main():
        async with CardReader(READER) as r:
            it = r.events()
            await insert(virtual_card, it)
            app = FuelCardApplication(r, keys)
            data = await app.read_card()
            await app.verify_pin("1234")
            await app.reserve(data.state, b"1" * 16, counters(1_000, 0, 0))
            virtual_card.pull()
            await next_event(it, CardRemoved)
            await insert(virtual_card, it)
            data2 = await FuelCardApplication(r, keys).read_card()
            assert data2.state.txn_counter == 1
            assert data2.state.counters[0][1].spent == 1_000
            assert data2.state.last_write_id == b"1" * 16
    run(main())


def test_card_already_in_reader_is_reported_first(virtual_card, keys):
    virtual_card.insert()
    wait_reader(READER, present=True, timeout_s=EVENT_S)

    async def main():
        async with CardReader(READER) as r:
            assert r.card_present
            await next_event(r.events(), CardInserted)
    run(main())


def test_pin_blocked_after_three_wrong_tries(virtual_card, keys):
    async def main():
        async with CardReader(READER) as r:
            it = r.events()
            await insert(virtual_card, it)
            app = FuelCardApplication(r, keys)
            data = await app.read_card()
            for left in (2, 1):
                with pytest.raises(WrongPinError) as exc:
                    await app.verify_pin("0000")
                assert exc.value.tries_left == left and exc.value.sw == 0x63C0 | left
                assert "0000" not in str(exc.value)
            with pytest.raises(PinBlockedError) as exc:
                await app.verify_pin("0000")
            assert exc.value.sw == SW.PIN_BLOCKED
            # Blocked for good: the right PIN, a new session, reserve: all refused.
            with pytest.raises(PinBlockedError):
                await app.verify_pin("1234")
            assert await app.pin_tries_left() == 0
            virtual_card.pull()
            await next_event(it, CardRemoved)
            await insert(virtual_card, it)
            app2 = FuelCardApplication(r, keys)
            info = await app2.select()
            assert info.pin_tries_left == 0
            with pytest.raises(PinBlockedError):
                await app2.verify_pin("1234")
            data = await app2.read_card()
            with pytest.raises(PinBlockedError):
                await app2.reserve(data.state, b"x" * 16, counters(1, 1, 1))
    run(main())


def test_right_pin_resets_the_tries_counter(virtual_card, keys):
    async def main():
        async with CardReader(READER) as r:
            it = r.events()
            await insert(virtual_card, it)
            app = FuelCardApplication(r, keys)
            await app.read_card()
            with pytest.raises(WrongPinError):
                await app.verify_pin("9999")
            await app.verify_pin("1234")
            assert await app.pin_tries_left() == 3
    run(main())


def test_reserve_needs_the_pin(virtual_card, keys):
    async def main():
        async with CardReader(READER) as r:
            await insert(virtual_card, r.events())
            app = FuelCardApplication(r, keys)
            data = await app.read_card()
            with pytest.raises(Exception) as exc:
                await app.reserve(data.state, b"x" * 16, counters(1, 1, 1))
            assert getattr(exc.value, "sw", None) == SW.SECURITY_STATUS
    run(main())


@pytest.mark.parametrize("fault", [Fault.GARBAGE, Fault.SHORT])
def test_garbage_and_short_responses_raise_card_response_error(virtual_card, keys, fault):
    async def main():
        async with CardReader(READER) as r:
            await insert(virtual_card, r.events())
            app = FuelCardApplication(r, keys)
            virtual_card.inject(fault, ins=INS.READ_RECORD)
            with pytest.raises(CardResponseError):
                await app.read_card()
            # The card is still usable afterwards.
            assert (await app.read_card()).card == sample_card()
    run(main())


@pytest.mark.parametrize("ins", [INS.READ_RECORD, INS.GET_COUNTERS])
def test_wrong_mac_is_refused(virtual_card, keys, ins):
    async def main():
        async with CardReader(READER) as r:
            await insert(virtual_card, r.events())
            app = FuelCardApplication(r, keys)
            virtual_card.inject(Fault.WRONG_MAC, ins=ins)
            with pytest.raises(CardNotGenuineError):
                await app.read_card()
    run(main())


def test_wrong_receipt_mac_is_refused(virtual_card, keys):
    async def main():
        async with CardReader(READER) as r:
            await insert(virtual_card, r.events())
            app = FuelCardApplication(r, keys)
            data = await app.read_card()
            await app.verify_pin("1234")
            virtual_card.inject(Fault.WRONG_MAC, ins=INS.RESERVE)
            with pytest.raises(CardNotGenuineError):
                await app.reserve(data.state, b"w" * 16, counters(5, 5, 5))
    run(main())


def test_card_from_another_issuer_is_refused(virtual_card):
    from hw.card.keys import SoftwareKeyStore

    async def main():
        async with CardReader(READER) as r:
            await insert(virtual_card, r.events())
            with pytest.raises(CardNotGenuineError) as exc:
                await FuelCardApplication(r, SoftwareKeyStore(os.urandom(16))).read_card()
            assert "7005830000000017" not in str(exc.value)
    run(main())


def test_slow_card_times_out_then_recovers(virtual_card, keys):
    async def main():
        async with CardReader(READER) as r:
            await insert(virtual_card, r.events())
            app = FuelCardApplication(r, keys, timeout_s=0.3)
            virtual_card.inject(Fault.SLOW, ins=INS.SELECT, delay_s=1.0)
            with pytest.raises(CardTimeoutError):
                await app.select()
            app.timeout_s = 3.0
            assert (await app.read_card()).card == sample_card()
    run(main())


def test_replayed_write_is_refused_by_the_card(virtual_card, keys):
    async def main():
        async with CardReader(READER) as r:
            await insert(virtual_card, r.events())
            app = FuelCardApplication(r, keys)
            data = await app.read_card()
            await app.verify_pin("1234")
            after = await app.reserve(data.state, b"a" * 16, counters(100, 0, 0))
            with pytest.raises(CounterMismatchError):  # the same write again: stale counter
                await app.reserve(data.state, b"a" * 16, counters(100, 0, 0))
            with pytest.raises(CounterMismatchError):
                await app.commit(data.state, b"b" * 16, counters(0, 0, 0))
            assert (await app.read_counters()) == after
    run(main())


def test_cloned_card_with_replayed_counter_is_refused(virtual_card, keys, tmp_path):
    snapshot = tmp_path / "clone.json"
    snapshot.write_bytes(virtual_card.path.read_bytes())  # a full copy, key included

    async def main():
        async with CardReader(READER) as r:
            it = r.events()
            await insert(virtual_card, it)
            app = FuelCardApplication(r, keys)
            data = await app.read_card()
            await app.verify_pin("1234")
            s = await app.reserve(data.state, b"r" * 16, counters(40_000, 0, 0))
            s = await app.commit(s, b"c" * 16, counters(40_000, 0, 0))
            seen = s.txn_counter  # what the terminal's journal remembers for this card
            virtual_card.pull()
            await next_event(it, CardRemoved)
            clone = VirtualCard(snapshot)
            try:
                await insert(clone, it)
                with pytest.raises(CloneSuspectedError):
                    await FuelCardApplication(r, keys).read_card(known_txn_counter=seen)
            finally:
                clone.pull()
            await next_event(it, CardRemoved)
    run(main())


@pytest.mark.parametrize("fault,outcome", [(Fault.PULL_BEFORE_APPLY, WriteOutcome.NOT_APPLIED),
                                           (Fault.PULL_AFTER_APPLY, WriteOutcome.APPLIED)])
def test_card_pulled_mid_write_then_read_back(virtual_card, keys, fault, outcome):
    async def main():
        async with CardReader(READER) as r:
            it = r.events()
            await insert(virtual_card, it)
            app = FuelCardApplication(r, keys, timeout_s=3.0)
            data = await app.read_card()
            await app.verify_pin("1234")
            virtual_card.inject(fault, ins=INS.RESERVE)
            with pytest.raises(CardRemovedError):
                await app.reserve(data.state, b"t" * 16, counters(7_000, 0, 0))
            await next_event(it, CardRemoved)
            with pytest.raises(CardRemovedError):  # nothing in the reader now
                await r.transmit(Command(0, 0xA4, 4, 0), timeout=2.0)
            await insert(virtual_card, it)
            app2 = FuelCardApplication(r, keys, timeout_s=3.0)
            assert await app2.write_outcome(data.state.txn_counter, b"t" * 16) is outcome
            spent = (await app2.read_counters()).counters[0][1].spent
            assert spent == (7_000 if outcome is WriteOutcome.APPLIED else 0)
    run(main())


def test_unknown_reader_raises_no_reader_error(pcscd):
    async def main():
        with pytest.raises(NoReaderError) as exc:
            async with CardReader("No Such Reader 99"):
                pass
        assert "Virtual PCD" in str(exc.value)
    run(main())
    assert READER in list_readers()


def test_transmit_without_card_raises_card_removed(virtual_card):
    async def main():
        async with CardReader(READER) as r:
            assert not r.card_present
            with pytest.raises(CardRemovedError):
                await r.transmit(Command(0, 0xA4, 4, 0), timeout=2.0)
    run(main())


def test_pcsc_scan_sees_the_virtual_reader_and_card(virtual_card):
    exe = shutil.which("pcsc_scan")
    assert exe, "pcsc_scan missing: apt-get install pcsc-tools"
    virtual_card.insert()
    wait_reader(READER, present=True, timeout_s=EVENT_S)
    out = subprocess.run([exe, "-c", "-n"], capture_output=True, text=True, timeout=15).stdout
    assert READER in out
    block = out[out.index(READER):]
    assert "Card inserted" in block.splitlines()[2] or "Card inserted" in block[:200]
    assert "3B 87 80 01 45 44 47 45 50 4F 53" in block
