"""The codec's fast paths give the answers of its careful ones.

- The edge's batch path (:func:`wire.codec.pack_records`, :func:`~wire.codec.packed_that_fit`,
  :func:`~wire.codec.encode_packed_batch`) makes byte for byte the frame :func:`wire.encode`
  makes, cuts batches that fit, and still refuses a record's bad own fields.
- :func:`wire.decode` reads a well-formed frame in one native pass that refuses a key twice
  as each map is built (``wire._wirecheck.read_frame``); every other frame goes to the strict
  reader, whose answer (and words) it gives (tests/wire/test_native_frame.py goes further).
"""

from __future__ import annotations

import hmac

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire import (
    Batch,
    Limits,
    SiteKeys,
    WireFormatError,
    WireRecord,
    WireSignatureError,
    WireTooLarge,
    batches_topic,
    decode,
    encode,
)
from wire.codec import (
    _unpack_fast,
    _unpack_fast_py,
    _unpack_strict,
    encode_packed_batch,
    pack_records,
    packed_that_fit,
)

from .test_properties import FAST, batches

SITE = "SIM-077-001"
KEY = bytes(range(32))
KEYS = SiteKeys({SITE: KEY, "SIM-077-002": KEY})
ULIDS = [f"01HZX3M2Q5T7V8W9XAYBZC{i:04d}" for i in range(10_000)]


def record(i: int, body: dict | None = None) -> WireRecord:
    return WireRecord(f"{SITE}-{ULIDS[i]}", SITE, "pump-1", f"{SITE}:pump-1-{ULIDS[i]}", "fuel.completed",
                      1_790_000_000 + i, body if body is not None else {"amount_kop": i, "card_no": "7005",
                                                                        "request": {"product": "AI95"}})


def packed_frame(b: Batch, keys: SiteKeys = KEYS, **kw) -> bytes:
    return encode_packed_batch(b.site_id, b.batch_seq, b.created_utc_s, pack_records(b.site_id, b.records, **kw),
                               keys)


@FAST
@given(batches(), st.booleans())
def test_the_packed_frame_is_the_frame_encode_makes(b: Batch, checked: bool) -> None:
    keys = SiteKeys({b.site_id: KEY})
    frame = packed_frame(b, keys, bodies_checked=checked)
    assert frame == encode(b, keys)
    assert decode(frame, keys, topic=batches_topic(b.site_id)) == b


@pytest.mark.parametrize("limit", [2_000, 5_000, 20_000])
def test_packed_that_fit_cuts_the_largest_batch_under_the_limit(limit: int) -> None:
    lim = Limits(max_message_bytes=limit, max_records=500)
    recs = [record(i, {"pad": "x" * (i % 97)}) for i in range(400)]
    packed = pack_records(SITE, recs, limits=lim)
    at, cuts = 0, 0
    while at < len(recs):
        k = packed_that_fit(SITE, cuts + 1, 1_790_000_100, packed[at:], limits=lim)
        frame = encode_packed_batch(SITE, cuts + 1, 1_790_000_100, packed[at:at + k], KEYS, limits=lim)
        assert len(frame) <= limit
        if at + k < len(recs):  # one more would not have fitted
            with pytest.raises(WireTooLarge, match="over the limit"):
                encode_packed_batch(SITE, cuts + 1, 1_790_000_100, packed[at:at + k + 1], KEYS, limits=lim)
        assert decode(frame, KEYS, topic=batches_topic(SITE), limits=lim).records == tuple(recs[at:at + k])
        at, cuts = at + k, cuts + 1
    assert cuts > 1
    assert packed_that_fit(SITE, 1, 0, []) == 0


def test_packed_that_fit_keeps_to_the_record_count_limit() -> None:
    lim = Limits(max_records=7)
    assert packed_that_fit(SITE, 1, 0, pack_records(SITE, [record(i) for i in range(20)]), limits=lim) == 7
    with pytest.raises(WireTooLarge, match="more than the limit of 7"):
        encode_packed_batch(SITE, 1, 0, pack_records(SITE, [record(i) for i in range(8)]), KEYS, limits=lim)


@pytest.mark.parametrize("change, words", [
    (lambda r: WireRecord("SIM-077-002-" + ULIDS[1], r.site_id, r.lane, r.txn_id, r.kind, r.at_utc_s, r.body),
     "record_id: must be 'SIM-077-001-<ULID>'"),
    (lambda r: WireRecord(r.record_id, r.site_id, "pump 1", r.txn_id, r.kind, r.at_utc_s, r.body), "lane: malformed"),
    (lambda r: WireRecord(r.record_id, r.site_id, r.lane, "SIM-077-001:pump-1-xyz", r.kind, r.at_utc_s, r.body),
     "txn_id: must be"),
    (lambda r: WireRecord(r.record_id, r.site_id, r.lane, r.txn_id, "", r.at_utc_s, r.body), "kind: malformed"),
    (lambda r: WireRecord(r.record_id, r.site_id, r.lane, r.txn_id, r.kind, -1, r.body), "at_utc_s: -1 is out of range"),
    (lambda r: WireRecord(r.record_id, "SIM-077-002", r.lane, r.txn_id, r.kind, r.at_utc_s, r.body),
     "a record of site 'SIM-077-002'"),
])
def test_pack_records_checks_each_records_own_fields(change, words: str) -> None:
    recs = [record(0), change(record(1))]
    with pytest.raises(WireFormatError, match="record 1") as e:
        pack_records(SITE, recs, bodies_checked=True)
    assert words in str(e.value)


def test_an_unchecked_body_is_walked_and_a_checked_one_is_not() -> None:
    bad = [record(0, {"amount": 1.5})]
    with pytest.raises(WireFormatError, match=r"record 0 .*body.amount: float 1.5 is not allowed"):
        pack_records(SITE, bad)
    # the caller vouched (the journal refuses floats): packed as given, and the host still refuses it
    frame = encode_packed_batch(SITE, 1, 0, pack_records(SITE, bad, bodies_checked=True), KEYS)
    with pytest.raises(WireFormatError, match="float 1.5 is not allowed"):
        decode(frame, KEYS, topic=batches_topic(SITE))


def test_encode_packed_batch_refuses_bad_batch_fields() -> None:
    packed = pack_records(SITE, [record(0)])
    with pytest.raises(WireFormatError, match="batch_seq: 0 is out of range"):
        encode_packed_batch(SITE, 0, 0, packed, KEYS)
    with pytest.raises(WireFormatError, match="malformed site id"):
        encode_packed_batch("no site", 1, 0, packed, KEYS)
    with pytest.raises(WireSignatureError):
        encode_packed_batch(SITE, 1, 0, packed, SiteKeys({}))


# --- decode: the fast reader and the strict one -------------------------------------------------

@FAST
@given(batches())
def test_the_fast_reader_reads_what_the_strict_one_reads(b: Batch) -> None:
    frame = encode(b, SiteKeys({b.site_id: KEY}))
    assert _unpack_fast(frame) == _unpack_strict(frame) == _unpack_fast_py(frame)


def _frame(payload_bytes: bytes) -> bytes:
    p = msgpack.Packer(use_bin_type=True)
    signed = p.pack_array_header(5) + p.pack(1) + p.pack("batch") + p.pack(SITE) + payload_bytes
    return signed + b"\xc4\x20" + hmac.digest(KEY, signed, "sha256")


def test_a_key_twice_deep_in_a_body_goes_to_the_strict_reader_and_is_refused() -> None:
    r = record(0)
    fields = {"record_id": r.record_id, "lane": r.lane, "txn_id": r.txn_id, "kind": r.kind, "at_utc_s": r.at_utc_s}
    body = b"\x82\xa1a\x01\xa1a\x02"  # {"a": 1, "a": 2}
    rec = b"\x86" + b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in fields.items()) + msgpack.packb("body") + body
    payload = (b"\x83" + msgpack.packb("batch_seq") + b"\x01" + msgpack.packb("created_utc_s") + b"\x00"
               + msgpack.packb("records") + b"\x91" + rec)
    frame = _frame(payload)
    assert _unpack_fast(frame) is None and _unpack_fast_py(frame) is None
    with pytest.raises(WireFormatError, match="map key 'a' appears twice"):
        decode(frame, KEYS, topic=batches_topic(SITE))


def test_a_value_not_packed_the_shortest_way_is_read_as_the_strict_reader_reads_it() -> None:
    b = Batch(SITE, 1, (record(0),), 0)
    payload = (b"\x83" + msgpack.packb("batch_seq") + b"\xd3" + (1).to_bytes(8, "big")  # int 64 for 1
               + msgpack.packb("created_utc_s") + b"\x00" + msgpack.packb("records") + b"\x91"
               + msgpack.packb({"record_id": b.records[0].record_id, "lane": "pump-1", "txn_id": b.records[0].txn_id,
                                "kind": "fuel.completed", "at_utc_s": b.records[0].at_utc_s,
                                "body": b.records[0].body}, use_bin_type=True))
    frame = _frame(payload)
    assert _unpack_fast_py(frame) is None  # the repack check could not read it
    assert _unpack_fast(frame) == _unpack_strict(frame)  # the native reader reads it as the strict one
    assert decode(frame, KEYS, topic=batches_topic(SITE)) == b
