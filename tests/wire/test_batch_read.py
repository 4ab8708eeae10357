"""The native batch reader (``wire._wirecheck.read_batch``, behind ``wire.codec._batch_fast``)
answers as decode's general path (the frame reader, then the record check), and what it keeps
of each body is what ingest would have made of the dict.

Held here: on batches drawn with any JSON body (every character class in the strings: quotes,
backslashes, control characters, non-ASCII; ints across the signed 64-bit range; nesting),
decode takes the native path, returns the message the general path returns, and each record's
``body_json`` is ``msgspec.json.encode(body)`` byte for byte, its ``body_fields`` is
``wire.bodies.hot_fields(kind, body)``, its body (built on first read) the dict. Any bytes:
the native reader returns None or the general path's answer (never a frame the general path
refuses). Written out: the bodies the record check refuses (a float, binary, an integer over
64 signed bits, a key twice, a key that is not a str, bytes that are not UTF-8, nesting at
the depth limit) go the general path and are refused in its words; a record's fields in
another order, a body of more keys than the reader's duplicate check takes.
"""

from __future__ import annotations

import msgpack
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import wire.codec as C
from wire import Batch, Limits, WireError, WireRecord, batches_topic, decode, encode
from wire._wirecheck import read_batch
from wire.bodies import HOT_FIELDS, hot_fields

from .test_properties import KEYS, _signed, batches, i64

SETTINGS = settings(max_examples=150, deadline=None)
SITE = "SIM-077-001"
ULID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
_encode_json = msgspec.json.Encoder().encode

#: strings of every kind of character msgspec's JSON encoder treats apart
texts = st.text(st.characters(codec="utf-8") | st.sampled_from('"\\/\x00\x01\x08\t\n\x0c\r\x1f\x7f\u2028é€😀'),
                max_size=24)
json_values = st.recursive(
    st.none() | st.booleans() | i64 | st.sampled_from([0, -1, 127, 128, -32, -33, 255, 256, 65535, 65536,
                                                       2**31, -2**31 - 1, 2**32, 2**63 - 1, -2**63]) | texts,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(texts, inner, max_size=5), max_leaves=25)
bodies = st.dictionaries(texts, json_values, max_size=6)


def hot_body(kind: str, draw_value: st.SearchStrategy) -> st.SearchStrategy[dict]:
    """A body of ``kind`` holding its HOT_FIELDS paths (each an int, a str or something else),
    among other keys."""
    def build(values: list, extra: dict) -> dict:
        body: dict = dict(extra)
        for path, v in zip(HOT_FIELDS[kind], values):
            keys = path.split(".")
            d = body
            for k in keys[:-1]:
                if type(d.get(k)) is not dict:
                    d[k] = {}
                d = d[k]
            d[keys[-1]] = v
        return body
    return st.builds(build, st.lists(draw_value, min_size=len(HOT_FIELDS[kind]), max_size=len(HOT_FIELDS[kind])),
                     st.dictionaries(st.sampled_from(["request", "x", "card", "decision"]), json_values, max_size=2))


hot_values = st.integers(-5, 10**12) | st.text(max_size=34) | st.none() | st.booleans() | st.lists(i64,
                                                                                                max_size=2)
hot_records = st.sampled_from(sorted(HOT_FIELDS)).flatmap(lambda kind: st.tuples(st.just(kind),
                                                                                 hot_body(kind, hot_values)))


def general(frame: bytes, limits: Limits = C.DEFAULT_LIMITS) -> object:
    """decode's answer without the native batch reader (the message, or the error's type and words)."""
    saved = C._batch_fast
    C._batch_fast = lambda *a: None  # type: ignore[assignment]
    try:
        return decode(frame, KEYS, topic=batches_topic(SITE), limits=limits)
    except WireError as e:
        return (type(e), str(e))
    finally:
        C._batch_fast = saved  # type: ignore[assignment]


def answer(frame: bytes, limits: Limits = C.DEFAULT_LIMITS) -> object:
    try:
        return decode(frame, KEYS, topic=batches_topic(SITE), limits=limits)
    except WireError as e:
        return (type(e), str(e))


def batch_of(*items: tuple[str, dict]) -> Batch:
    recs = tuple(WireRecord(f"{SITE}-{ULID[:-2]}{i:02d}", SITE, "pump-1", f"{SITE}:pump-1-{ULID}", kind, 1_700_000_000,
                            body) for i, (kind, body) in enumerate(items))
    return Batch(SITE, 1, recs, 1_700_000_000)


def native(frame: bytes) -> object:
    return read_batch(frame, C.DEFAULT_LIMITS.max_body_depth, C.DEFAULT_LIMITS.max_records, C._HOT_PATHS, WireRecord)


def assert_kept(msg: object, sent: Batch) -> None:
    """``msg`` came the native way and each record keeps what ingest would have made."""
    assert isinstance(msg, Batch) and msg == sent
    for got, want in zip(msg.records, sent.records):
        assert got.body_json == _encode_json(want.body).decode()
        assert got.body_fields == hot_fields(want.kind, want.body)
        assert got.body_packed is not None
        assert got.body == want.body


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["fuel.preset", "till.sale_opened", "x.y"]), bodies), max_size=5))
def test_any_body_is_kept_as_its_json_and_dict(items):
    sent = batch_of(*items)
    frame = encode(sent, KEYS)
    assert native(frame) is not None
    assert_kept(answer(frame), sent)
    assert general(frame) == sent


@SETTINGS
@given(st.lists(hot_records, min_size=1, max_size=4))
def test_hot_fields_are_picked_as_the_python_reader_picks_them(items):
    sent = batch_of(*items)
    msg = answer(encode(sent, KEYS))
    assert_kept(msg, sent)


@SETTINGS
@given(batches())
def test_drawn_batches_decode_alike(batch):
    frame = encode(batch, KEYS)
    got = native(frame)
    if batch.site_id == SITE:
        assert got is not None
    msg = decode(frame, KEYS, topic=batches_topic(batch.site_id))
    assert msg == batch
    for r, w in zip(msg.records, batch.records):
        assert r.body_json == _encode_json(w.body).decode()


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_changed_bytes_never_read_what_the_general_path_refuses(data):
    """Single-byte changes and cuts of a valid batch, re-signed so the change reaches the reader."""
    sent = batch_of(*data.draw(st.lists(hot_records, min_size=1, max_size=3)))
    signed = encode(sent, KEYS)[:-34]
    i = data.draw(st.integers(0, len(signed) - 1))
    if data.draw(st.booleans()):
        changed = signed[:i] + bytes([data.draw(st.integers(0, 255))]) + signed[i + 1:]
    else:
        changed = signed[:i]
    frame = _signed(changed, SITE)
    want = general(frame)
    got = native(frame)
    if got is not None and got[0] == 1:  # the version is checked after the reader, as decode checks it
        assert isinstance(want, Batch), want
    assert answer(frame) == want


def raw_frame(records: list[dict], seq: object = 1, created: object = 5) -> bytes:
    """A signed batch frame of ``records`` packed as given (so bodies may hold what encode refuses)."""
    p = msgpack.Packer(use_bin_type=True)
    payload = p.pack_map_header(3) + p.pack("batch_seq") + p.pack(seq) + p.pack("created_utc_s") + p.pack(created) \
        + p.pack("records") + p.pack_array_header(len(records)) + b"".join(records)
    signed = p.pack_array_header(5) + p.pack(1) + p.pack("batch") + p.pack(SITE) + payload
    return _signed(signed, SITE)


def rec(body: bytes, i: int = 0, order: tuple[str, ...] = ("record_id", "lane", "txn_id", "kind", "at_utc_s", "body"),
        kind: str = "fuel.completed") -> bytes:
    p = msgpack.Packer(use_bin_type=True)
    values = {"record_id": p.pack(f"{SITE}-{ULID[:-2]}{i:02d}"), "lane": p.pack("pump-1"),
              "txn_id": p.pack(f"{SITE}:pump-1-{ULID}"), "kind": p.pack(kind), "at_utc_s": p.pack(7), "body": body}
    return p.pack_map_header(6) + b"".join(p.pack(k) + values[k] for k in order)


def pack(v: object) -> bytes:
    return msgpack.packb(v, use_bin_type=True)


def nested(levels: int) -> dict:
    """A body with ``levels`` containers nested under it (the body itself is level 0)."""
    v: object = 1
    for _ in range(levels):
        v = [v]
    return {"a": v}


REFUSED = {
    "float": b"\x81\xa1a\xcb" + b"\x00" * 8,
    "binary": b"\x81\xa1a\xc4\x01x",
    "uint64 over int64": b"\x81\xa1a\xcf" + (2**63).to_bytes(8, "big"),
    "a key twice": b"\x82\xa1a\x01\xa1a\x02",
    "a key twice, nested": b"\x81\xa1a\x82\xa1b\x01\xa1b\x02",
    "an int key": b"\x81\x01\x01",
    "not UTF-8": b"\x81\xa1a\xa2\xc3\x28",
    "a surrogate": b"\x81\xa1a\xa3\xed\xa0\x80",
    "an extension": b"\x81\xa1a\xd4\x01\x00",
    "too deep": pack(nested(32)),
    "not a map": pack([1]),
}


@pytest.mark.parametrize("what", sorted(REFUSED))
def test_refused_bodies_go_the_general_way(what):
    frame = raw_frame([rec(pack({"ok": 1}), 0), rec(REFUSED[what], 1)])
    assert native(frame) is None
    got = answer(frame)
    assert not isinstance(got, Batch)
    assert got == general(frame)


def test_the_depth_limit_is_decodes():
    ok = pack(nested(31))  # the deepest the default limit (32) allows
    frame = raw_frame([rec(ok)])
    assert native(frame) is not None and isinstance(answer(frame), Batch)
    deeper = raw_frame([rec(pack(nested(32)))])
    assert native(deeper) is None and not isinstance(answer(deeper), Batch)
    shallow = Limits(max_body_depth=2)
    assert isinstance(answer(raw_frame([rec(pack({"a": {"b": 1}}))]), shallow), Batch)
    refused = answer(raw_frame([rec(pack({"a": {"b": {}}}))]), shallow)
    assert refused == general(raw_frame([rec(pack({"a": {"b": {}}}))]), shallow) and not isinstance(refused, Batch)


def test_fields_in_another_order_and_wide_maps():
    body = {"card_no": "C1", "txn_counter": 3, "write_id": "ab" * 16}
    kind_last = rec(pack(body), 0, ("body", "record_id", "lane", "txn_id", "at_utc_s", "kind"), "fuel.reserved")
    wide = rec(pack({f"k{i}": i for i in range(100)}), 1, kind="fuel.preset")
    frame = raw_frame([kind_last, wide])
    msg = answer(frame)
    assert isinstance(msg, Batch) and msg == general(frame)
    if native(frame) is not None:  # the kind after the body: nothing picked, the body read as a dict
        assert msg.records[0].body_fields is None
    assert msg.records[0].body == body and msg.records[1].body == {f"k{i}": i for i in range(100)}


def test_envelope_and_batch_fields_are_checked_in_decodes_words():
    good = rec(pack({"a": 1}))
    for seq, created in ((0, 5), (-1, 5), ("1", 5), (1, -1), (1, None)):
        frame = raw_frame([good], seq, created)
        got = answer(frame)
        assert not isinstance(got, Batch) and got == general(frame)
    frame = raw_frame([good])
    bad_mac = frame[:-1] + bytes([frame[-1] ^ 1])
    assert answer(bad_mac) == general(bad_mac) and not isinstance(answer(bad_mac), Batch)
    assert native(raw_frame([good] * 3)) is None  # one record id three times
    too_many = raw_frame([rec(pack({}), i) for i in range(3)])
    assert answer(too_many, Limits(max_records=2)) == general(too_many, Limits(max_records=2))


def test_the_body_is_built_once_on_first_read():
    sent = batch_of(("fuel.preset", {"a": [1, {"b": "c"}]}))
    r = answer(encode(sent, KEYS)).records[0]  # type: ignore[union-attr]
    first = r.body
    assert first == {"a": [1, {"b": "c"}]} and r.body is first
    assert WireRecord(r.record_id, r.site_id, r.lane, r.txn_id, r.kind, r.at_utc_s, first) == r
    built = WireRecord("a", "b", "c", "d", "e", 1, {"x": 1})
    assert built.body_json is None and built.body_fields is None and built.body_packed is None


@pytest.mark.parametrize("kind,body,fields", [
    ("fuel.completed", {"contract_id": 1, "card_no": "C", "request": {"product": "AI95", "now_utc_s": 9},
                        "amount_kop": 5, "delivered_volume_ml": 6}, (1, "C", "AI95", 5, 6, 9)),
    ("fuel.completed", {"contract_id": True, "request": [1], "amount_kop": "5"}, (None, None, None, "5", None, None)),
    ("fuel.preauth", {"card": {"contract_id": 2, "card_no": "K", "expected_txn": 4}, "request": {"product": "DT"},
                      "decision": {"amount_kop": 7, "volume_ml": 8}}, (2, "K", 4, "DT", 7, 8)),
    ("fuel.reserved", {"card_no": "K", "txn_counter": -1, "write_id": None}, ("K", -1, None)),
])
def test_hot_fields_examples(kind, body, fields):
    assert hot_fields(kind, body) == fields
    r = answer(encode(batch_of((kind, body)), KEYS)).records[0]  # type: ignore[union-attr]
    assert r.body_fields == fields
    assert hot_fields("fuel.preset", body) is None
