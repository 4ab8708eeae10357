"""АЗТ 2.0 framing without I/O (``hw.dispensers.azt2_codec``): frames byte by byte, channel
addressing, and for any bytes on the line (garbage, truncated, wrong checksum or
complement, duplicated frames) only frames, short answers or ``FrameError`` — fuzzed with
hypothesis; the decoder never raises and always resynchronizes on the next frame.
"""

from __future__ import annotations

from typing import Self

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw.dispensers.azt2_codec import (
    ACK,
    CAN,
    DEL,
    ETX,
    NAK,
    STX,
    Cmd,
    Frame,
    FrameDecoder,
    FrameError,
    Short,
    address_bytes,
    checksum,
    digits,
    encode_reply,
    encode_request,
    encode_short,
    parse_digits,
    parse_status,
    split_halves,
)
from hw.pump import PumpProtocolError


def test_a_status_request_byte_by_byte() -> None:
    # channel 1: address 0x21; command '1' (0x31); CRC = 0x21 ^ 0x31 ^ ETX | 0x40
    frame = encode_request(1, Cmd.STATUS)
    assert frame == bytes([DEL, STX, 0x21, 0x5E, 0x31, 0x4E, ETX, ETX, (0x21 ^ 0x31 ^ ETX) | 0x40])
    assert FrameDecoder(requests=True).feed(frame) == [Frame(b"1", 1)]


def test_answers_and_short_answers() -> None:
    reply = encode_reply(b"40")
    assert reply == bytes([DEL, STX, 0x34, 0x4B, 0x30, 0x4F, ETX, ETX, checksum(b"40")])
    d = FrameDecoder()
    assert d.feed(reply + encode_short(ACK) + encode_short(NAK) + encode_short(CAN)) == [
        Frame(b"40"), Short(ACK), Short(NAK), Short(CAN)]


@pytest.mark.parametrize("channel, start, address", [(1, STX, 0x21), (15, STX, 0x2F), (16, 0x07, 0x21), (225, 0x14, 0x2F)])
def test_channel_addressing(channel: int, start: int, address: int) -> None:
    assert address_bytes(channel) == (start, address)
    assert FrameDecoder(requests=True).feed(encode_request(channel, Cmd.TOTALS)) == [Frame(b"6", channel)]


@pytest.mark.parametrize("bad", [0, 226, -1, True, "1"])
def test_bad_channels_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        encode_request(bad, Cmd.STATUS)  # type: ignore[arg-type]


def test_bad_frames_are_errors_and_the_next_frame_still_decodes() -> None:
    good = encode_reply(b"3")
    wrong_crc = good[:-1] + bytes([good[-1] ^ 0x01])
    wrong_complement = good[:3] + bytes([good[3] ^ 0x02]) + good[4:]
    cut = good[:4]
    for bad, why in [(wrong_crc, "checksum"), (wrong_complement, "complement"), (cut, "cut short"),
                     (b"\x10", "noise"), (bytes([DEL, 0x41]), "not a frame start"),
                     (bytes([DEL, STX, ETX]), "empty frame"), (bytes([DEL, STX, 0x33, 0x4C, ETX, 0x01]), "second ETX")]:
        d = FrameDecoder()
        out = d.feed(bad + good)
        assert out[-1] == Frame(b"3"), bad
        assert any(isinstance(e, FrameError) and why in e.reason for e in out[:-1]), (bad, out)


def test_a_duplicated_answer_decodes_twice() -> None:
    good = encode_reply(b"1")
    assert FrameDecoder().feed(good + good) == [Frame(b"1"), Frame(b"1")]


def test_messages() -> None:
    assert digits(5_499, 4) == b"5499" and digits(7, 3) == b"007"
    with pytest.raises(ValueError):
        digits(10_000, 4)
    assert parse_status(b"41") == (4, 1) and parse_status(b"0") == (0, 0)
    assert split_halves(b"00012000000345", "totals") == (1200, 345)
    for bad in (b"", b"9", b"x", b"1234"):
        with pytest.raises(PumpProtocolError):
            parse_status(bad)
    for bad in (b"", b"12a", b"-1"):
        with pytest.raises(PumpProtocolError):
            parse_digits(bad, "volume")
    with pytest.raises(PumpProtocolError):
        split_halves(b"123", "totals")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120))
def test_fuzz_any_bytes_give_only_frames_shorts_or_errors(noise: bytes) -> None:
    d = FrameDecoder()
    out = d.feed(noise)
    assert all(isinstance(x, Frame | Short | FrameError) for x in out)
    # after any noise, a DEL-led frame is decoded again (DEL resynchronizes the decoder)
    assert d.feed(encode_reply(b"2"))[-1] == Frame(b"2")


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=20).map(lambda b: bytes(0x30 + x % 10 for x in b)),
       st.integers(0, 40), st.integers(0, 255))
def test_fuzz_one_corrupted_byte_never_passes_as_another_frame(data: bytes, pos: int, value: int) -> None:
    frame = bytearray(encode_reply(data))
    pos %= len(frame)
    if frame[pos] == value:
        return
    frame[pos] = value
    out = FrameDecoder().feed(bytes(frame))
    assert not any(isinstance(x, Frame) for x in out), out  # checksum and complements catch it


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=8).map(lambda b: bytes(0x30 + x % 10 for x in b)), max_size=5),
       st.lists(st.integers(1, 30), max_size=6))
def test_fuzz_frames_split_anywhere_decode_the_same(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_reply(p) for p in payloads)
    d, out, at = FrameDecoder(), [], 0
    for c in cuts:
        out += d.feed(stream[at:at + c])
        at += c
    out += d.feed(stream[at:])
    assert out == [Frame(p) for p in payloads]


class _CannedBus:
    """A bus that answers every exchange from a list (the driver's reading of answers,
    without the line: this test is about the answers' meaning; the serial path is
    tests/hw/test_azt2.py)."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def ask(self, channel: int, command: int, parse, args: bytes = b""):  # type: ignore[no-untyped-def]
        return parse(self.answers.pop(0) if self.answers else b"")

    async def exchange(self, channel: int, command: int, args: bytes = b"") -> bytes:
        return await self.ask(channel, command, lambda d: d, args)


digit_answers = st.lists(st.one_of(st.sampled_from([b"0", b"1", b"2", b"3", b"40", b"41", b"8", b"9"]),
                                   st.binary(max_size=22).map(lambda b: bytes(0x30 + x % 11 for x in b))),
                         max_size=8)


@settings(max_examples=300, deadline=None)
@given(digit_answers, st.booleans())
def test_fuzz_dispenser_answers_give_a_status_or_a_pump_error(answers: list[bytes], open_sale: bool) -> None:
    import asyncio

    from hw.dispensers.azt2 import Azt2Pump
    from hw.dispensers.polled import _OpenSale
    from hw.pump import Preset, PumpError

    pump = Azt2Pump(_CannedBus(answers), 1, {1: "AI-95", 2: "DT"})  # type: ignore[arg-type]
    if open_sale:
        pump._open = _OpenSale(1, "1-0", "AI-95", 5_499, Preset.by_volume(1_000))
        pump._active = pump.channels[0]
    try:
        status = asyncio.run(pump._dev_status())
    except PumpError:
        return
    assert status.volume_ml >= 0 and status.nozzle in (None, "AI-95", "DT")
    if status.finished is not None:
        assert status.finished.volume_ml % 10 == 0 and status.finished.product in ("AI-95", "DT")
