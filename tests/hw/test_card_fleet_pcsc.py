"""Cards of format 02 (the fleet controls, issue 11) against the real PC/SC stack: pyscard ->
pcscd -> vpcd -> the virtual card. The terminal reads the controls record (SFI 3) under the
data MAC, keeps count limits' counters on the card, and refuses a card whose stored rules
fail their MAC or their format; a card of format 01 reads exactly as before."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from authz.fuel_model import (
    Limit,
    LimitCounter,
    LimitUnit,
    OnBreach,
    Period,
    StationScope,
    TimeWindow,
)
from hw.card.apdu import SW, Command
from hw.card.application import (
    INS,
    REC_CONTROLS,
    SFI_CONTROLS,
    FuelCardApplication,
    read_record_p2,
)
from hw.card.reader import CardReader
from hw.card.records import FORMAT_V1, FORMAT_V2, static_mac_input
from hw.errors import CardFormatError, CardNotGenuineError
from hw.sim.card import CardState, Fault, VirtualCard
from hw.sim.personalise import personalise
from tests.hw.pcsc import READER, keys, pcscd, sample_card, settle_empty_reader  # noqa: F401  (fixtures)

from .test_card_pcsc import EVENT_S, insert, run

FLEET = replace(sample_card(), limits=sample_card().limits + (
    Limit(4, LimitUnit.PURCHASES, Period.WEEK, 10, on_breach=OnBreach.ALERT),
    Limit(5, LimitUnit.KOPECKS, Period.YEAR, 10**8)),
    products=frozenset({"AI95", "DT"}), windows=(TimeWindow(frozenset({5, 6}), 22 * 60, 6 * 60),),
    station_scope=StationScope.LISTED, station_ids=frozenset({1001, 1002}), on_breach=OnBreach.ALERT)


@pytest.fixture
def card_at(pcscd, tmp_path: Path):  # noqa: F811
    """``card_at(state)``: the virtual card of ``state`` (not yet inserted); pulled and its
    removal seen by pcscd at teardown."""
    made: list[VirtualCard] = []

    def make(state: CardState) -> VirtualCard:
        path = tmp_path / f"card-{len(made)}.json"
        state.save(path)
        made.append(VirtualCard(path))
        return made[-1]
    settle_empty_reader()
    try:
        yield make
    finally:
        for c in made:
            c.pull()
        settle_empty_reader()


async def _read(card: VirtualCard, keys):  # noqa: F811
    async with CardReader(READER) as r:
        await insert(card, r.events())
        return await asyncio.wait_for(FuelCardApplication(r, keys).read_card(), EVENT_S)


def test_a_fleet_card_reads_with_its_controls_and_keeps_its_count(card_at, keys):  # noqa: F811
    card = card_at(personalise(FLEET, "1234", keys))
    assert card.state.identity[0] == FORMAT_V2

    async def main():
        async with CardReader(READER) as r:
            await insert(card, r.events())
            app = FuelCardApplication(r, keys)
            data = await app.read_card()
            assert data.card == FLEET
            await app.verify_pin("1234")
            counts = tuple((lim.limit_id, LimitCounter(1 if lim.limit_id == 4 else 0, 20_000))
                           for lim in FLEET.limits)
            after = await app.reserve(data.state, b"R" * 16, counts)
            await app.commit(after, b"C" * 16, counts)
            again = await FuelCardApplication(r, keys).read_card()
            assert dict(again.state.counters)[4] == LimitCounter(1, 20_000)  # one purchase, on the card
    run(main())


def test_a_format_01_card_has_no_controls_record_and_reads_as_before(card_at, keys):  # noqa: F811
    card = card_at(personalise(sample_card(), "1234", keys))
    assert card.state.identity[0] == FORMAT_V1 and card.state.controls is None

    async def main():
        async with CardReader(READER) as r:
            await insert(card, r.events())
            app = FuelCardApplication(r, keys)
            assert (await app.read_card()).card == sample_card()
            resp = await r.transmit(Command(0x00, INS.READ_RECORD, REC_CONTROLS, read_record_p2(SFI_CONTROLS), b"", 256),
                                    timeout=EVENT_S)
            assert resp.sw == SW.FILE_NOT_FOUND
    run(main())


def test_controls_changed_after_personalisation_fail_the_data_mac(card_at, keys):  # noqa: F811
    state = personalise(FLEET, "1234", keys)
    state.controls = bytes((state.controls[0] & ~1,)) + state.controls[1:]  # alert -> decline
    card = card_at(state)
    with pytest.raises(CardNotGenuineError, match="MAC over its data"):
        run(_read(card, keys))


def test_a_controls_record_dropped_from_a_format_02_card_fails(card_at, keys):  # noqa: F811
    """A card that says format 02 but serves no controls record is refused; served as format
    01 instead, its data MAC fails (the version byte is under it)."""
    state = personalise(FLEET, "1234", keys)
    state.controls = None
    card = card_at(state)
    with pytest.raises(CardFormatError, match="no controls record"):  # SFI 3 answers 6A82
        run(_read(card, keys))
    card.pull()
    settle_empty_reader()
    state.identity = bytes((FORMAT_V1,)) + state.identity[1:]
    state.limits = [r[:-1] for r in state.limits]  # without the flags bytes
    with pytest.raises(CardNotGenuineError):
        run(_read(card_at(state), keys))


def test_a_wrong_mac_on_the_data_mac_record_of_a_fleet_card_is_refused(card_at, keys):  # noqa: F811
    card = card_at(personalise(FLEET, "1234", keys))

    async def main():
        async with CardReader(READER) as r:
            await insert(card, r.events())
            card.inject(Fault.WRONG_MAC, ins=INS.READ_RECORD)
            with pytest.raises(CardNotGenuineError):
                await FuelCardApplication(r, keys).read_card()
    run(main())


@pytest.mark.parametrize("damage", ["unknown_format", "zero_window", "empty_products"])
def test_genuine_records_in_a_bad_format_are_refused(card_at, keys, damage):  # noqa: F811
    state = personalise(FLEET, "1234", keys)
    if damage == "unknown_format":
        state.identity = b"\x03" + state.identity[1:]
    elif damage == "zero_window":
        state.controls = state.controls.replace(bytes.fromhex("60" "0528" "0168"), bytes.fromhex("60" "0528" "0528"))
    else:
        at = len(state.controls) - sum(1 + len(code) for code in ("AI95", "DT")) - 1  # the product count
        state.controls = state.controls[:at] + b"\x00"  # a list of no products
    # The issuer's MAC over the damaged records: only the format is wrong.
    state.data_mac = keys.mac(FLEET.card_no, static_mac_input(state.identity, state.limits, state.controls))
    card = card_at(state)
    with pytest.raises(CardFormatError) as exc:
        run(_read(card, keys))
    assert FLEET.card_no not in str(exc.value)
