"""APDU shapes and the strict response parser, including a hypothesis fuzz: random bytes
either parse or raise CardResponseError, never anything else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw.card.apdu import SW, ApduFormatError, Command, Response, parse_command, parse_response
from hw.errors import CardResponseError


def test_command_cases_round_trip():
    cases = [Command(0, 0xA4, 4, 0), Command(0, 0xB2, 1, 0x0C, le=256),
             Command(0x80, 0x32, 0, 0, b"12345678"), Command(0, 0xA4, 4, 0, b"\xf0" * 5, 256),
             Command(0, 0xA4, 4, 0, bytes(255), 1)]
    for cmd in cases:
        assert parse_command(cmd.to_bytes()) == cmd
    assert Command(0, 0xB2, 1, 0x0C, le=256).to_bytes() == bytes.fromhex("00B2010C00")


@pytest.mark.parametrize("kwargs", [dict(cla=256), dict(ins=-1), dict(data=bytes(256)), dict(le=0),
                                    dict(le=257), dict(data="text")])
def test_bad_commands_are_refused(kwargs):
    base = dict(cla=0, ins=0xA4, p1=4, p2=0)
    with pytest.raises(ApduFormatError):
        Command(**{**base, **kwargs})


@pytest.mark.parametrize("raw", [b"", b"\x00\xa4\x04", b"\x00\xa4\x04\x00\x00\x01\x02",
                                 b"\x00\xa4\x04\x00\x05\x01"])
def test_malformed_command_bytes(raw):
    with pytest.raises(ApduFormatError):
        parse_command(raw)


def test_command_repr_hides_data():
    assert "1234" not in repr(Command(0, 0x20, 0, 0x80, bytes.fromhex("241234FFFFFFFFFF")))


def test_parse_response():
    r = parse_response(b"\x01\x02\x90\x00")
    assert r == Response(b"\x01\x02", SW.OK) and r.ok and r.sw1 == 0x90 and r.sw2 == 0
    assert parse_response([0x63, 0xC2]).sw == 0x63C2
    assert parse_response(r.to_bytes()) == r


@pytest.mark.parametrize("raw", [b"", b"\x90", b"\x12\x34", b"\x00\x00", b"\x60\x00",
                                 b"\xa0\x00", bytes(257) + b"\x90\x00", [300, 1], [-1, 0], None, 5])
def test_parse_response_refuses(raw):
    with pytest.raises(CardResponseError):
        parse_response(raw)


@settings(max_examples=2000)
@given(st.binary(max_size=300))
def test_fuzz_parse_response_only_raises_card_response_error(raw):
    try:
        r = parse_response(raw)
    except CardResponseError:
        return
    assert r.to_bytes() == raw
    assert len(r.data) <= 256
    assert 0x61 <= r.sw1 <= 0x6F or 0x90 <= r.sw1 <= 0x9F


@settings(max_examples=500)
@given(st.lists(st.integers(min_value=-5, max_value=300), max_size=20))
def test_fuzz_parse_response_int_lists(raw):
    try:
        parse_response(raw)
    except CardResponseError:
        pass


@settings(max_examples=1000)
@given(st.binary(max_size=270))
def test_fuzz_parse_command_only_raises_apdu_format_error(raw):
    try:
        cmd = parse_command(raw)
    except ApduFormatError:
        return
    assert cmd.to_bytes() == raw or raw[4:5] == b"\x00"  # Le=00 re-encodes the same
