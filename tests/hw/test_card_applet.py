"""The virtual card's application in process (no pcscd): the status words of
docs/card-application.md, command by command, and the terminal side against it."""

from __future__ import annotations

import asyncio
import json

import pytest

from authz.fuel_model import LimitCounter
from hw.card.apdu import SW, Command, parse_response
from hw.card.application import AID, INS, FuelCardApplication, WriteOutcome, pin_block
from hw.card.records import CounterWrite, decode_counter_state, encode_counter_write
from hw.errors import CardDataError, CardStatusError, CounterMismatchError, PinFormatError
from hw.sim.card import ATR, CardApplet, CardState, DirectChannel, atr
from hw.sim.personalise import personalise
from tests.hw.pcsc import card_file, keys, sample_card  # noqa: F401  (fixtures)


@pytest.fixture
def applet(card_file):
    return CardApplet(CardState.load(card_file), card_file)


def send(applet, cmd: Command):
    return parse_response(applet.process(cmd.to_bytes()))


def select(applet):
    return send(applet, Command(0, INS.SELECT, 4, 0, AID, 256))


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_atr_is_well_formed():
    tck = 0
    for b in ATR[1:]:
        tck ^= b
    assert ATR[0] == 0x3B and tck == 0
    with pytest.raises(ValueError):
        atr(bytes(16))


def test_select(applet):
    r = select(applet)
    assert r.ok and r.data == bytes((1, 1, 3))
    assert send(applet, Command(0, INS.SELECT, 4, 0, b"\xa0\x00\x00\x00\x03", 256)).sw == SW.FILE_NOT_FOUND
    assert send(applet, Command(0, INS.SELECT, 0, 0, AID)).sw == SW.WRONG_P1P2


@pytest.mark.parametrize("cmd", [Command(0, INS.READ_RECORD, 1, 0x0C, le=256), Command(0, INS.VERIFY, 0, 0x80),
                                 Command(0x80, INS.GET_COUNTERS, 0, 0, bytes(8), 256)])
def test_commands_before_select_are_not_allowed(applet, cmd):
    assert send(applet, cmd).sw == SW.NOT_ALLOWED


def test_status_words(applet):
    select(applet)
    assert send(applet, Command(0, INS.READ_RECORD, 3, 0x0C, le=256)).sw == SW.RECORD_NOT_FOUND
    assert send(applet, Command(0, INS.READ_RECORD, 1, 0x14, le=256)).ok  # limit 1
    assert send(applet, Command(0, INS.READ_RECORD, 4, 0x14, le=256)).sw == SW.RECORD_NOT_FOUND
    assert send(applet, Command(0, INS.READ_RECORD, 1, 0x3C, le=256)).sw == SW.FILE_NOT_FOUND
    assert send(applet, Command(0, INS.READ_RECORD, 1, 0x08, le=256)).sw == SW.WRONG_P1P2
    assert send(applet, Command(0x80, INS.GET_COUNTERS, 0, 0, bytes(4), 256)).sw == SW.WRONG_LENGTH
    assert send(applet, Command(0x80, INS.READ_RECORD, 1, 0x0C)).sw == SW.CLA_NOT_SUPPORTED
    assert send(applet, Command(0x00, INS.GET_COUNTERS, 0, 0, bytes(8))).sw == SW.CLA_NOT_SUPPORTED
    assert send(applet, Command(0x00, 0x99, 0, 0)).sw == SW.INS_NOT_SUPPORTED
    assert send(applet, Command(0x84, INS.SELECT, 4, 0, AID)).sw == SW.CLA_NOT_SUPPORTED
    assert parse_response(applet.process(b"\x00\xa4")).sw == SW.WRONG_LENGTH
    assert send(applet, Command(0, INS.VERIFY, 0, 0x80, b"\x24\x12")).sw == SW.WRONG_LENGTH
    assert send(applet, Command(0, INS.VERIFY, 0, 0x80, bytes.fromhex("2412AFFFFFFFFFFF"))).sw == SW.WRONG_DATA
    assert send(applet, Command(0, INS.VERIFY, 0, 0x80)).sw == 0x63C3  # malformed blocks cost no try
    assert send(applet, Command(0, INS.VERIFY, 0, 0x81)).sw == SW.WRONG_P1P2


def test_pin_block_format():
    assert pin_block("1234") == bytes.fromhex("241234FFFFFFFFFF")
    assert pin_block("123456789012") == bytes.fromhex("2C123456789012FF")
    for bad in ("123", "1234567890123", "12a4", "", None):
        with pytest.raises(PinFormatError):
            pin_block(bad)


def test_pin_tries_persist(applet, card_file):
    select(applet)
    assert send(applet, Command(0, INS.VERIFY, 0, 0x80, pin_block("0000"))).sw == 0x63C2
    assert json.loads(card_file.read_text())["pin_tries_left"] == 2
    again = CardApplet(CardState.load(card_file), card_file)
    assert select(again).data[2] == 2


def test_session_ends_at_power_off(applet, keys):
    app = FuelCardApplication(DirectChannel(applet), keys)

    async def main():
        data = await app.read_card()
        await app.verify_pin("1234")
        applet.power(0)
        await app.select()
        with pytest.raises(CardStatusError) as exc:
            await app.reserve(data.state, b"x" * 16, tuple((i, LimitCounter(0, 0)) for i in (1, 2, 3)))
        assert exc.value.sw == SW.SECURITY_STATUS
    run(main())


def test_write_rules(applet, keys):
    app = FuelCardApplication(DirectChannel(applet), keys)
    zero = tuple((i, LimitCounter(0, 0)) for i in (1, 2, 3))

    async def main():
        data = await app.read_card()
        await app.verify_pin("1234")
        with pytest.raises(CardStatusError) as exc:  # commit with no open reservation
            await app.commit(data.state, b"c" * 16, zero)
        assert exc.value.sw == SW.NOT_ALLOWED
        with pytest.raises(CardStatusError) as exc:  # counters must match the limits
            await app.reserve(data.state, b"r" * 16, zero[:2])
        assert exc.value.sw == SW.WRONG_DATA
        s = await app.reserve(data.state, b"r" * 16, zero)
        assert await app.write_outcome(0, b"r" * 16) is WriteOutcome.APPLIED
        assert await app.write_outcome(1, b"q" * 16) is WriteOutcome.NOT_APPLIED
        await app.commit(s, b"c" * 16, zero)
        assert await app.write_outcome(0, b"r" * 16) is WriteOutcome.OVERTAKEN
        with pytest.raises(CounterMismatchError):
            await app.reserve(s, b"z" * 16, zero)
    run(main())


def test_forged_write_mac_is_refused(applet, keys):
    select(applet)
    send(applet, Command(0, INS.VERIFY, 0, 0x80, pin_block("1234")))
    body = encode_counter_write(CounterWrite(0, b"f" * 16, tuple((i, LimitCounter(0, 0)) for i in (1, 2, 3))))
    r = send(applet, Command(0x80, INS.RESERVE, 0, 0, body + bytes(16), 256))
    assert r.sw == SW.BAD_MAC
    r = send(applet, Command(0x80, INS.GET_COUNTERS, 0, 0, bytes(8), 256))
    assert decode_counter_state(r.data[:-16]).txn_counter == 0


def test_read_card_needs_read_before_counters(keys, applet):
    app = FuelCardApplication(DirectChannel(applet), keys)
    with pytest.raises(CardDataError):
        run(app.read_counters())


def test_state_file_hides_nothing_it_must_not_show(card_file):
    state = CardState.load(card_file)
    assert "1234" not in repr(state) and state.card_key.hex() not in repr(state)


def test_personalise_counters(keys):
    s = personalise(sample_card(), "4321", keys, counters=[(2, LimitCounter(77, 5))])
    assert s.counters == [[1, 0, 0], [2, 77, 5], [3, 0, 0]]
