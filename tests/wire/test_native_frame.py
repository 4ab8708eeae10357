"""The native frame reader (``wire._wirecheck.read_frame``, behind ``wire.codec._unpack_fast``)
answers as the strict reader (``wire.codec._unpack_strict``).

The rule it is held to, on any bytes: it returns None (the strict reader then decides and
names what is wrong) or exactly what the strict reader returns, with the same types at every
leaf (``True`` is not ``1``); and where the strict reader refuses, it returns None. On the
frames the codec makes (every message type) it must read them itself, not fall back. Drawn:
valid frames of every message type, any MessagePack value in a signed frame, single-byte
changes and cuts of valid frames, random bytes; written out: every integer, string, binary,
array and map width (shortest or not), a key twice at each depth, keys that are not str,
floats, extension types, bytes that are not UTF-8, lengths past the end, deep nesting, and
more distinct short strings than the reader's cache holds.
"""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import wire.codec as C
from wire import WireError, decode, encode

from .test_properties import FAST, KEYS, batches, messages, msgpack_values, topic_of

SETTINGS = settings(max_examples=300, deadline=None)


def typed(v: object) -> object:
    """``v`` with the type of every value spelled out (so ``True`` differs from ``1``)."""
    if type(v) is dict:
        return ("map", tuple((typed(k), typed(x)) for k, x in v.items()))
    if type(v) is list:
        return ("array", tuple(typed(x) for x in v))
    if type(v) is tuple:
        return ("tuple", tuple(typed(x) for x in v))
    return (type(v).__name__, repr(v))


def strict(data: bytes) -> object:
    try:
        return typed(C._unpack_strict(data))
    except WireError:
        return None


def agrees(data: bytes) -> object:
    """The native answer, after checking it against the strict reader's."""
    native = C._unpack_fast(data)
    want = strict(data)
    if native is not None:
        assert want is not None, "the native reader read a frame the strict reader refuses"
        assert typed(native) == want
    return native


def frame(*elements: bytes, header: bytes = b"\x95") -> bytes:
    return header + b"".join(elements)


ENVELOPE = (msgpack.packb(1), msgpack.packb("batch"), msgpack.packb("SIM-077-001"))
TAG = b"\xc4\x20" + bytes(32)


def with_payload(payload: bytes) -> bytes:
    return frame(*ENVELOPE, payload, TAG)


# --- drawn -----------------------------------------------------------------------------------

@FAST
@given(messages)
def test_every_frame_the_codec_makes_is_read_natively_as_strictly(msg) -> None:
    data = encode(msg, KEYS)
    assert agrees(data) is not None
    assert decode(data, KEYS, topic=topic_of(msg)) == msg


def _native_domain(v: object) -> bool:
    """Whether ``v`` holds only what the native reader reads itself (no float, str keys)."""
    if type(v) is float:
        return False
    if type(v) is dict:
        return all(type(k) is str and _native_domain(x) for k, x in v.items())
    if type(v) is list:
        return all(_native_domain(x) for x in v)
    return True


@SETTINGS
@given(msgpack_values)
def test_any_value_in_a_frame_is_read_as_strictly(value) -> None:
    try:
        payload = msgpack.packb(value, use_bin_type=True)
    except (OverflowError, ValueError):
        return
    got = agrees(with_payload(payload))
    assert (got is not None) == _native_domain(value)


@SETTINGS
@given(messages, st.data())
def test_single_byte_changes_and_cuts_are_read_as_strictly(msg, data) -> None:
    raw = encode(msg, KEYS)
    i = data.draw(st.integers(0, len(raw) - 1), label="index")
    new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[i]), label="byte")
    agrees(raw[:i] + bytes([new]) + raw[i + 1:])
    agrees(raw[:i])
    agrees(raw + bytes([new]))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_are_read_as_strictly(data: bytes) -> None:
    agrees(data)
    agrees(b"\x95\x01" + data)


# --- written out -------------------------------------------------------------------------------

INTS = [
    (b"\x05", 5), (b"\xcc\x05", 5), (b"\xcd\x00\x05", 5), (b"\xce\x00\x00\x00\x05", 5),
    (b"\xcf" + struct.pack(">Q", 5), 5), (b"\xcf" + struct.pack(">Q", 2**64 - 1), 2**64 - 1),
    (b"\xff", -1), (b"\xe0", -32), (b"\xd0\xff", -1), (b"\xd0\x80", -128), (b"\xd1\x80\x00", -32768),
    (b"\xd2\x80\x00\x00\x00", -2**31), (b"\xd3" + struct.pack(">q", -2**63), -2**63),
    (b"\xd3" + struct.pack(">q", 2**63 - 1), 2**63 - 1), (b"\xd0\x05", 5), (b"\xcc\xff", 255),
    (b"\xcd\xff\xff", 65535), (b"\xce\xff\xff\xff\xff", 2**32 - 1),
]


@pytest.mark.parametrize(("packed", "value"), INTS)
def test_every_integer_width_is_read_with_its_value(packed: bytes, value: int) -> None:
    got = agrees(with_payload(b"\x81\xa1x" + packed))
    assert got is not None and got[2] == {"x": value} and type(got[2]["x"]) is int


@pytest.mark.parametrize("packed", [b"\xa3abc", b"\xd9\x03abc", b"\xda\x00\x03abc", b"\xdb\x00\x00\x00\x03abc"])
def test_every_string_width_is_read(packed: bytes) -> None:
    got = agrees(with_payload(b"\x81" + packed + packed))
    assert got is not None and got[2] == {"abc": "abc"}


@pytest.mark.parametrize("packed", [b"\xc4\x02hi", b"\xc5\x00\x02hi", b"\xc6\x00\x00\x00\x02hi"])
def test_every_binary_width_is_read_as_bytes(packed: bytes) -> None:
    got = agrees(with_payload(b"\x81\xa1x" + packed))
    assert got is not None and got[2] == {"x": b"hi"}


@pytest.mark.parametrize("header", [b"\x92", b"\xdc\x00\x02", b"\xdd\x00\x00\x00\x02"])
def test_every_array_width_is_read(header: bytes) -> None:
    got = agrees(with_payload(b"\x81\xa1x" + header + b"\xc3\xc2"))
    assert got is not None and got[2] == {"x": [True, False]} and type(got[2]["x"][0]) is bool


@pytest.mark.parametrize("header", [b"\x81", b"\xde\x00\x01", b"\xdf\x00\x00\x00\x01"])
def test_every_map_width_is_read(header: bytes) -> None:
    got = agrees(with_payload(header + b"\xa1x\xc0"))
    assert got is not None and got[2] == {"x": None}


@pytest.mark.parametrize("header", [b"\xdc\x00\x05", b"\xdd\x00\x00\x00\x05"])
def test_a_frame_array_of_any_width_is_read(header: bytes) -> None:
    assert agrees(frame(*ENVELOPE, b"\x80", TAG, header=header)) is not None


@pytest.mark.parametrize("payload", [
    b"\x82\xa1a\x01\xa1a\x02",  # a key twice in the payload
    b"\x81\xa1r\x91\x82\xa1a\x01\xa1a\x02",  # in a map in an array
    b"\x81\xa1r\x81\xa1s\x81\xa1t\x82\xa1k\xc0\xa1k\xc0",  # three maps down
    b"\x81\xc4\x01a\x01",  # a bytes key
    b"\x81\x01\x01",  # an int key
    b"\x81\xc0\x01",  # a nil key
    b"\x81\xa1x\xcb" + struct.pack(">d", 1.5),  # float 64
    b"\x81\xa1x\xca" + struct.pack(">f", 1.5),  # float 32
    b"\x81\xa1x\xd4\x01\x00",  # fixext 1
    b"\x81\xa1x\xc7\x01\x01\x00",  # ext 8
    b"\x81\xa1x\xc1",  # the byte never used
    b"\x81\xa1x\xa2\xff\xfe",  # not UTF-8
    b"\x81\xa1x\xa3\xed\xa0\x80",  # a surrogate, UTF-8 encoded
    b"\x81\xa2\xc3\x28\x01",  # a key that is not UTF-8
    b"\x81\xa1x\xdb\xff\xff\xff\xff",  # a length past the end
    b"\x81\xa1x\xdd\xff\xff\xff\xff",  # an array longer than the frame
    b"\xdf\xff\xff\xff\xff",  # a map longer than the frame
    b"\x81\xa1x\xc6\x00\x00\x00\x09ab",  # binary past the end
])
def test_what_the_native_reader_does_not_read_goes_to_the_strict_one(payload: bytes) -> None:
    data = with_payload(payload)
    assert C._unpack_fast(data) is None
    agrees(data)
    with pytest.raises(WireError):  # refused: by the strict reader or by decode's checks
        decode(data, KEYS, topic=None)


def test_a_key_twice_is_refused_in_the_strict_readers_words() -> None:
    with pytest.raises(WireError, match="map key 'a' appears twice"):
        decode(with_payload(b"\x82\xa1a\x01\xa1a\x02"), KEYS, topic=None)


@pytest.mark.parametrize("data", [
    b"", b"\x94\x01\xc0\xc0\xc0", b"\x96\x01\xc0\xc0\xc0\xc0\xc0", b"\x80", b"\x01",
    frame(*ENVELOPE, b"\x80", TAG) + b"\x00",  # a byte after the frame
    frame(*ENVELOPE, b"\x80", TAG)[:-1],  # cut
    frame(*ENVELOPE, b"\x80"),  # four elements of five
    b"\xdc\x00", b"\xdd\x00\x00",
])
def test_frames_of_another_shape_go_to_the_strict_reader(data: bytes) -> None:
    assert C._unpack_fast(data) is None
    assert strict(data) is None


def test_another_version_goes_to_the_strict_reader() -> None:
    data = frame(msgpack.packb(2), *ENVELOPE[1:], b"\x80", TAG)
    assert C._unpack_fast(data) is None
    with pytest.raises(WireError, match="protocol version 2 is not supported"):
        decode(data, KEYS, topic=None)


@pytest.mark.parametrize("depth", [1, 50, 198, 199, 200, 201, 300, 1100])
def test_deep_nesting_is_read_as_strictly(depth: int) -> None:
    payload = b"\x81\xa1x" + b"\x91" * depth + b"\x01"
    got = agrees(with_payload(payload))
    assert (got is not None) == (depth < 198)  # past its own limit the native reader leaves it to the strict one


def test_more_short_strings_than_the_cache_holds_are_each_read_right() -> None:
    words = [f"k{i}" for i in range(5_000)] + ["é", "ключ", "k1", "K1", "k1 ", ""] + [f"k{i}" for i in range(200)]
    payload = msgpack.packb({w + "|": w for w in words} | {"list": words}, use_bin_type=True)
    for _ in range(2):  # the second read hits the cache
        got = agrees(with_payload(payload))
        assert got is not None and got[2]["list"] == words and all(type(w) is str for w in got[2]["list"])


@FAST
@given(batches())
def test_a_bytes_subclass_and_a_memoryview_frame_decode_the_same(b) -> None:
    data = encode(b, KEYS)

    class Sub(bytes):
        pass
    assert decode(Sub(data), KEYS, topic=None) == decode(memoryview(data), KEYS, topic=None) == b
