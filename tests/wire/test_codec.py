"""Round trips of every message type and every refusal of :func:`wire.decode`."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import replace

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authz import sample
from authz.club_model import ClubModel, ClubRules
from authz.fuel_model import FuelModel, Tariff
from wire.rows_bulk import PackedRows
from wire import (CLUB_RULES_KEY, Ack, Batch, ClubAccountRow, FuelCardRow, Limits, Presence, Rejection,
                  ReplicaDelta, ReplicaSnapshot, SiteKeys, SnapshotRequest, StopListEntry, Table, TariffRow,
                  WireError, WireFormatError, WireRecord, WireSignatureError, WireTooLarge, WireTopicError,
                  WireVersionError, acks_topic, batches_topic, decode, deltas_topic, encode, presence_topic,
                  records_that_fit, row_key, rows_that_fit, snapshot_requests_topic, snapshot_topic, topic_of)

SITE = "SIM-077-001"
OTHER = "SIM-078-002"
SITE_KEY = bytes(range(32))
OTHER_KEY = bytes(range(32, 64))
HOST_SEED = bytes(range(64, 96))
HOST_KEY = Ed25519PrivateKey.from_private_bytes(HOST_SEED)  # the host's replica signing key
ULIDS = [f"01HZX3M2Q5T7V8W9XAYBZC{i:04d}" for i in range(10_000)]


@pytest.fixture
def keys() -> SiteKeys:
    return SiteKeys({SITE: SITE_KEY, OTHER: OTHER_KEY}, replica_signing=HOST_KEY)


@pytest.fixture
def site_keys() -> SiteKeys:
    """What a site holds: its own key and the host's public key, never the signing key."""
    return SiteKeys({SITE: SITE_KEY}, replica_verify=HOST_KEY.public_key())


def record(i: int, site: str = SITE, body: dict | None = None, lane: str = "pump-3") -> WireRecord:
    return WireRecord(f"{site}-{ULIDS[i]}", site, lane, f"{site}:{lane}-{ULIDS[i // 3]}", "fuel.completed",
                      1_790_000_000 + i,
                      body if body is not None else {"request": {"card_no": "7005830000000001", "station_id": 1001,
                                                                 "preset_volume_ml": None},
                                                     "delivered_volume_ml": 40_000 + i, "amount_kop": -5,
                                                     "lines": [1, "two", True, None, [], {}],
                                                     "big": (1 << 63) - 1, "small": -(1 << 63)})


def batch(n: int = 3, seq: int = 1, site: str = SITE) -> Batch:
    return Batch(site, seq, tuple(record(i, site) for i in range(n)), 1_790_000_100)


# --- replica rows from the sample models: every table -----------------------------------------

def table_rows(fuel: FuelModel, club: ClubModel) -> dict[Table, tuple]:
    """The rows of every table that together make ``fuel`` and ``club``."""
    by_tariff: dict[Tariff, list] = {}
    for d in fuel.discounts:
        by_tariff.setdefault(d.tariff, []).append(d)
    cards_of: dict[int, list] = {}
    for c in club.cards:
        cards_of.setdefault(c.account_id, []).append(c)
    return {
        Table.STOP_LIST: tuple(StopListEntry(no, 1_790_000_000) for no in sorted(fuel.stop_list)),
        Table.PRODUCTS: fuel.products,
        Table.STATIONS: fuel.stations,
        Table.TARIFFS: tuple(TariffRow(t, tuple(rules)) for t, rules in by_tariff.items()),
        Table.CONTRACTS: fuel.contracts,
        Table.FUEL_CARDS: tuple(
            FuelCardRow(card, tuple(sorted((lid, ctr) for (no, lid), ctr in fuel.counters.items()
                                           if no == card.card_no)))
            for card in fuel.cards),
        Table.CLUB_RULES: (club.rules,),
        Table.CLUB_ACCOUNTS: tuple(ClubAccountRow(a, tuple(cards_of.get(a.account_id, ()))) for a in club.accounts),
    }


def models_from(rows: dict[Table, Iterable]) -> tuple[FuelModel, ClubModel]:
    """The models an edge builds from decoded rows."""
    cards = list(rows[Table.FUEL_CARDS])
    fuel = FuelModel(products=rows[Table.PRODUCTS], stations=rows[Table.STATIONS], contracts=rows[Table.CONTRACTS],
                     cards=[r.card for r in cards],
                     discounts=[d for t in rows[Table.TARIFFS] for d in t.discounts],
                     stop_list=[e.card_no for e in rows[Table.STOP_LIST]],
                     counters={(r.card.card_no, lid): ctr for r in cards for lid, ctr in r.counters})
    (rules,) = rows[Table.CLUB_RULES]
    accounts = list(rows[Table.CLUB_ACCOUNTS])
    club = ClubModel(rules=rules, accounts=[r.account for r in accounts], cards=[c for r in accounts for c in r.cards])
    return fuel, club


@pytest.fixture(scope="module")
def rows() -> dict[Table, tuple]:
    return table_rows(sample.fuel_model(n_cards=600, n_stations=20, seed=3), sample.club_model(n_accounts=300, seed=4))


# --- round trips ----------------------------------------------------------------------------

def roundtrip(msg, keys: SiteKeys):
    data = encode(msg, keys)
    assert isinstance(data, bytes)
    back = decode(data, keys, topic=topic_of(msg))
    assert back == msg and type(back) is type(msg)
    return back


def test_batch_round_trips(keys):
    back = roundtrip(batch(50), keys)
    assert back.records[0].body["big"] == (1 << 63) - 1
    assert isinstance(back.records, tuple)


def test_empty_batch_round_trips(keys):
    roundtrip(Batch(SITE, 7, (), 0), keys)


def test_wire_record_from_a_journal_record():
    from terminal.journal import Record
    r = record(1)
    jr = Record(r.record_id, r.site_id, r.lane, r.txn_id, r.kind, r.at_utc_s, r.body, seq=9, acked=False)
    assert WireRecord.from_record(jr) == r


def test_presence_round_trips(keys):
    roundtrip(Presence(SITE, True, 1_790_000_000, "0.1.0+g1a2b", {Table.STOP_LIST: 12, Table.FUEL_CARDS: 0}), keys)
    roundtrip(Presence(SITE, False, 0, "1", {}), keys)


def test_snapshot_request_round_trips(keys):
    roundtrip(SnapshotRequest(SITE, Table.CLUB_ACCOUNTS, 0), keys)
    roundtrip(SnapshotRequest(SITE, Table.STOP_LIST, 41), keys)


def test_ack_round_trips(keys):
    roundtrip(Ack(SITE, 0), keys)
    roundtrip(Ack(SITE, 17, (Rejection(3, "record body: unknown kind 'x'"), Rejection(17, "late"))), keys)


@pytest.mark.parametrize("table", list(Table))
def test_snapshot_of_every_table_round_trips(keys, rows, table):
    roundtrip(ReplicaSnapshot(table, 5, 0, 1, rows[table]), keys)
    roundtrip(ReplicaSnapshot(table, 6, 2, 3, ()), keys)


@pytest.mark.parametrize("table", list(Table))
def test_delta_of_every_table_round_trips(keys, rows, table):
    ups = rows[table][:5]
    gone = tuple(row_key(table, r) for r in rows[table][5:8])
    roundtrip(ReplicaDelta(table, 4, 5, ups, gone), keys)
    roundtrip(ReplicaDelta(table, 0, 9, (), ()), keys)


def test_the_edge_rebuilds_its_models_from_decoded_snapshots(keys, rows):
    decoded = {t: decode(encode(ReplicaSnapshot(t, 1, 0, 1, rows[t]), keys), keys,
                         topic=snapshot_topic(t, 0)).rows for t in Table}
    fuel, club = models_from(decoded)
    orig_fuel, orig_club = models_from(rows)
    for name in ("products", "stations", "contracts", "cards", "discounts", "stop_list", "counters"):
        assert getattr(fuel, name) == getattr(orig_fuel, name), name
    assert (club.rules, club.accounts, club.cards) == (orig_club.rules, orig_club.accounts, orig_club.cards)


def test_rows_keep_authz_types(keys, rows):
    snap = decode(encode(ReplicaSnapshot(Table.FUEL_CARDS, 1, 0, 1, rows[Table.FUEL_CARDS]), keys), keys,
                  topic=snapshot_topic(Table.FUEL_CARDS, 0))
    card = snap.rows[0].card
    assert type(card.expires_on).__name__ == "date" and isinstance(card.groups, frozenset)
    assert row_key(Table.CLUB_RULES, ClubRules()) == CLUB_RULES_KEY


# --- what a site may and may not send -------------------------------------------------------

def refused(data: bytes, keys: SiteKeys, error: type[WireError], *words: str, topic: str | None = None,
            limits: Limits = Limits()) -> str:
    with pytest.raises(error) as info:
        decode(data, keys, topic=topic, limits=limits)
    text = str(info.value)
    for w in words:
        assert w in text, text
    return text


def frame(obj: list, key: bytes | Ed25519PrivateKey = SITE_KEY) -> bytes:
    """A correctly signed frame of any content (to reach the payload checks): an HMAC under
    a site key, or an Ed25519 signature under a replica signing key."""
    signed = msgpack.Packer().pack_array_header(5) + b"".join(msgpack.packb(x) for x in obj[:4])
    if isinstance(key, Ed25519PrivateKey):
        return signed + b"\xc4\x40" + key.sign(signed)
    return signed + b"\xc4\x20" + hmac.digest(key, signed, "sha256")


def batch_frame(records: list, seq: int = 1, site: str = SITE, key: bytes = SITE_KEY) -> bytes:
    return frame([1, "batch", site, {"batch_seq": seq, "created_utc_s": 5, "records": records}], key)


def rec_map(i: int = 0, **changes) -> dict:
    r = record(i)
    out = {"record_id": r.record_id, "lane": r.lane, "txn_id": r.txn_id, "kind": r.kind, "at_utc_s": r.at_utc_s,
           "body": dict(r.body)}
    out.update(changes)
    return out


def test_the_hand_built_frame_is_what_encode_makes(keys):
    b = batch(2)
    assert batch_frame([rec_map(0), rec_map(1)]) != encode(b, keys)  # field order differs...
    assert decode(batch_frame([rec_map(0), rec_map(1)]), keys, topic=None) == replace(b, created_utc_s=5)


def test_oversized_frame(keys):
    data = encode(batch(200), keys)
    refused(data, keys, WireTooLarge, f"{len(data)} bytes", "limit of 1000", limits=Limits(max_message_bytes=1000))


def test_too_many_records(keys):
    refused(encode(batch(11), keys), keys, WireTooLarge, "records", "11 items", "limit of 10",
            limits=Limits(max_records=10))


def test_encode_refuses_an_oversized_batch(keys):
    with pytest.raises(WireTooLarge, match="send fewer records"):
        encode(batch(200), keys, limits=Limits(max_message_bytes=4096))


def test_records_that_fit_cuts_batches_under_the_limit(keys):
    recs = tuple(record(i) for i in range(2_000))
    for lim in (Limits(max_message_bytes=20_000), Limits(max_records=77), Limits()):
        n = records_that_fit(SITE, recs, limits=lim)
        assert 1 <= n <= lim.max_records
        assert len(encode(Batch(SITE, 1, recs[:n], 1_790_000_000), keys, limits=lim)) <= lim.max_message_bytes
        if n < len(recs) and n < lim.max_records:
            with pytest.raises(WireTooLarge):
                encode(Batch(SITE, 1, recs[:n + 3], 1_790_000_000), keys, limits=lim)
    assert records_that_fit(SITE, ()) == 0


@pytest.mark.parametrize("table", list(Table))
def test_rows_that_fit_cuts_snapshots_into_parts(keys, rows, table):
    many = rows[table]
    lim = Limits(max_message_bytes=3_000)
    parts, i = [], 0
    while i < len(many):
        n = rows_that_fit(table, many[i:], limits=lim)
        parts.append(many[i:i + n])
        i += n
    for k, part in enumerate(parts):
        snap = ReplicaSnapshot(table, 1, k, len(parts), part)
        assert decode(encode(snap, keys, limits=lim), keys, topic=topic_of(snap), limits=lim) == snap
    assert sum(len(p) for p in parts) == len(many)
    assert rows_that_fit(table, ()) == 0


@pytest.mark.parametrize("cut", [1, 2, 10, 100, -1, -33, -34, -35])
def test_truncated_frame(keys, cut):
    data = encode(batch(3), keys)
    refused(data[:cut], keys, WireFormatError)


def test_truncated_frame_says_so(keys):
    refused(encode(batch(3), keys)[:-10], keys, WireFormatError, "truncated")


def test_empty_frame(keys):
    refused(b"", keys, WireFormatError, "empty")


def test_trailing_bytes(keys):
    refused(encode(batch(1), keys) + b"\x00", keys, WireFormatError, "1 bytes after the end")


@pytest.mark.parametrize("data, words", [
    (b"\xc1", ["does not start with a MessagePack array"]),
    (b"\x01", ["does not start with a MessagePack array"]),
    (b"\x90", ["empty array"]),
    (b"\x95\xa1x", ["protocol version", "str"]),
    (b"\x95\x01\xc1", ["malformed MessagePack"]),
    (b"\x95\x01\xa2\xff\xfe", ["malformed MessagePack", "utf-8"]),
    (b"\x95\x01" + b"\x91" * 3000, ["nested too deeply"]),
    (b"\x95\x01\xd4\x01\x00", ["malformed MessagePack", "extension types are not allowed"]),
    (b"\x95\x01\xc7\x00\x05", ["extension type 5 is not allowed"]),
    (b"\x95\x01\xd6\xff\x00\x00\x00\x00", ["malformed MessagePack"]),  # a timestamp
    (b"\x95\x01\xdd\xff\xff\xff\xff", ["malformed MessagePack"]),  # a 4-billion-element array
])
def test_bad_msgpack(keys, data, words):
    refused(data, keys, WireFormatError, *words)


def test_duplicate_map_keys(keys):
    payload = b"\x83\xa9batch_seq\x01\xa9batch_seq\x02\xa7records\x90"
    signed = b"\x95\x01\xa5batch" + msgpack.packb(SITE) + payload
    data = signed + b"\xc4\x20" + hmac.digest(SITE_KEY, signed, "sha256")
    refused(data, keys, WireFormatError, "'batch_seq' appears twice")


def test_binary_map_keys(keys):
    refused(frame([1, "batch", SITE, {b"batch_seq": 1}]), keys, WireFormatError, "unknown field b'batch_seq'")
    refused(batch_frame([rec_map(0, body={"a": {b"k": 1}})]), keys, WireFormatError, "body.a", "keys are strings")


def test_unknown_version(keys):
    data = encode(batch(1), keys)
    assert data[1] == 1
    text = refused(data[:1] + b"\x02" + data[2:], keys, WireVersionError, "protocol version 2", "version 1")
    assert "not supported" in text
    refused(b"\x93\xcd\x01\x00\xc0\xc0", keys, WireVersionError, "protocol version 256")  # another layout too


def test_unknown_type(keys):
    refused(frame([1, "bach", SITE, {}]), keys, WireFormatError, "unknown message type (str 'bach')", "batch")
    refused(frame([1, 7, SITE, {}]), keys, WireFormatError, "unknown message type")


def test_envelope_fields(keys):
    refused(msgpack.packb([1, "batch", SITE, {}]), keys, WireFormatError, "array of 5 elements")
    refused(frame([1, "batch", "bad/site", {}]), keys, WireFormatError, "site id", "bad/site")
    refused(frame([1, "batch", None, {}]), keys, WireFormatError, "site id")
    refused(frame([1, "delta", SITE, {}], HOST_KEY), keys, WireFormatError, "names no site")
    refused(frame([1, "batch", SITE, [1]]), keys, WireFormatError, "payload must be a map")
    good = encode(batch(1), keys)
    bin16 = good[:-34] + b"\xc5\x00\x20" + good[-32:]
    refused(bin16, keys, WireFormatError, "bin 8")
    refused(good[:-34] + b"\xc4\x1f" + good[-31:], keys, WireFormatError, "mac")


def test_bad_signature(keys):
    data = bytearray(encode(batch(2), keys))
    data[-1] ^= 1
    text = refused(bytes(data), keys, WireSignatureError, "does not verify", f"site {SITE!r}")
    assert SITE_KEY.hex() not in text and HOST_SEED.hex() not in text


def test_signed_with_another_sites_key(keys):
    data = encode(batch(2, site=OTHER), SiteKeys({OTHER: SITE_KEY}))
    refused(data, keys, WireSignatureError, "does not verify", repr(OTHER))


def test_unknown_site(keys):
    data = encode(batch(1, site="SIM-999"), SiteKeys({"SIM-999": OTHER_KEY}))
    refused(data, keys, WireSignatureError, "no key for site 'SIM-999'")


def test_replica_messages_need_the_host_key(keys):
    delta = ReplicaDelta(Table.STOP_LIST, 1, 2, (StopListEntry("7005830000000001", 5),))
    other_host = Ed25519PrivateKey.from_private_bytes(OTHER_KEY)
    forged = encode(delta, SiteKeys(replica_signing=other_host))  # signed, but not by our host
    text = refused(forged, keys, WireSignatureError, "does not verify", "replica verify key")
    assert OTHER_KEY.hex() not in text
    with pytest.raises(WireSignatureError, match="no replica signing key"):
        encode(delta, SiteKeys({SITE: SITE_KEY}))


def test_a_site_verifies_replica_messages_but_cannot_sign_them(keys, site_keys):
    delta = ReplicaDelta(Table.STOP_LIST, 1, 2, (StopListEntry("7005830000000001", 5),))
    snap = ReplicaSnapshot(Table.STOP_LIST, 2, 0, 1, (StopListEntry("7005830000000001", 5),))
    for msg in (delta, snap):
        data = encode(msg, keys)
        assert data[-66:-64] == b"\xc4\x40"  # a 64-byte Ed25519 signature, the last 66 bytes
        assert decode(data, site_keys, topic=topic_of(msg)) == msg
        with pytest.raises(WireSignatureError, match="only the host signs"):
            encode(msg, site_keys)
        refused(data, SiteKeys({SITE: SITE_KEY}), WireSignatureError, "no replica verify key")
        bad = bytearray(data)
        bad[-1] ^= 1
        refused(bytes(bad), site_keys, WireSignatureError, "does not verify")
    assert decode(encode(Ack(SITE, 1), keys), site_keys, topic=acks_topic(SITE)) == Ack(SITE, 1)


def test_a_replica_message_carrying_an_hmac_is_refused(keys, site_keys):
    """What every site could make under the old scheme (an HMAC under a key it holds, here its
    own) is refused whichever key the HMAC is under."""
    payload = {"table": "stop_list", "from_version": 1, "to_version": 2,
               "upserts": [{"card_no": "7005830000000001", "listed_at_utc_s": 5}], "deletes": []}
    for key in (SITE_KEY, OTHER_KEY):
        refused(frame([1, "delta", None, payload], key), site_keys, WireSignatureError, "32-byte MAC",
                "Ed25519", topic=deltas_topic(Table.STOP_LIST))
    good = frame([1, "delta", None, payload], HOST_KEY)
    assert decode(good, site_keys, topic=deltas_topic(Table.STOP_LIST)).to_version == 2
    refused(good[:-66] + b"\xc5\x00\x40" + good[-64:], site_keys, WireFormatError, "64 bytes", "bin 8")
    refused(good[:-66] + b"\xc4\x3f" + good[-63:], site_keys, WireFormatError, "signature")


def test_an_ack_carrying_an_ed25519_signature_is_refused(keys, site_keys):
    """The kind of signature follows from the type: an ack carries its site's HMAC, so even
    the host's valid Ed25519 signature over an ack is refused."""
    forged = frame([1, "ack", SITE, {"up_to_seq": 3, "rejected": []}], HOST_KEY)
    refused(forged, site_keys, WireFormatError, "mac", "32 bytes")
    forged = encode(Ack(SITE, 3), SiteKeys({SITE: OTHER_KEY}))  # whoever holds another key
    refused(forged, site_keys, WireSignatureError)


def test_a_site_publishing_on_another_sites_topic(keys):
    data = encode(batch(1, site=OTHER), keys)
    refused(data, keys, WireTopicError, f"of site {SITE!r}", "own topics", topic=batches_topic(SITE))
    assert decode(data, keys, topic=batches_topic(OTHER)).site_id == OTHER


def test_a_message_on_the_wrong_kind_of_topic(keys):
    refused(encode(batch(1), keys), keys, WireTopicError, "carries presence", topic=presence_topic(SITE))
    refused(encode(Ack(SITE, 1), keys), keys, WireTopicError, topic=batches_topic(SITE))
    refused(encode(SnapshotRequest(SITE, Table.STOP_LIST, 0), keys), keys, WireTopicError,
            topic=deltas_topic(Table.STOP_LIST))


def test_replica_messages_on_another_tables_topic(keys):
    delta = encode(ReplicaDelta(Table.STOP_LIST, 1, 2), keys)
    refused(delta, keys, WireTopicError, "table 'stop_list'", topic=deltas_topic(Table.FUEL_CARDS))
    snap = encode(ReplicaSnapshot(Table.PRODUCTS, 1, 1, 3, ()), keys)
    refused(snap, keys, WireTopicError, "part 1", topic=snapshot_topic(Table.PRODUCTS, 2))
    refused(snap, keys, WireTopicError, topic=snapshot_topic(Table.STATIONS, 1))
    refused(snap, keys, WireTopicError, "not an edgepos topic", topic="other/v1/x")


def test_a_record_of_another_site(keys):
    other = record(0, site=OTHER)
    refused(batch_frame([rec_map(0, record_id=other.record_id)]), keys, WireFormatError,
            "record_id", f"'{SITE}-<ULID>'")
    refused(batch_frame([rec_map(0, txn_id=other.txn_id)]), keys, WireFormatError, "txn_id")
    with pytest.raises(WireFormatError, match="a record of site"):
        encode(Batch(SITE, 1, (other,), 0), keys)


def test_duplicate_record_ids(keys):
    refused(batch_frame([rec_map(0), rec_map(1), rec_map(0)]), keys, WireFormatError,
            "record 2", "appears twice")
    with pytest.raises(WireFormatError, match="appears twice"):
        encode(Batch(SITE, 1, (record(0), record(0)), 0), keys)


@pytest.mark.parametrize("body, words", [
    ({"amount": 1.5}, ["body.amount", "float 1.5"]),
    ({"lines": [{"qty": 1}, {"qty": float("nan")}]}, ["body.lines[1].qty", "float nan"]),
    ({"x": 1 << 63}, ["body.x", "signed 64-bit"]),
    ({"x": b"\x00"}, ["body.x", "binary"]),
    ({"a": [[[[[[]]]]]]}, ["nested deeper than 4"]),
])
def test_bad_bodies(keys, body, words):
    data = batch_frame([rec_map(0), rec_map(1, body=body)])
    refused(data, keys, WireFormatError, "batch 1 record 1", *words, limits=Limits(max_body_depth=4))
    with pytest.raises(WireFormatError):
        encode(Batch(SITE, 1, (record(1, body=body),), 0), keys, limits=Limits(max_body_depth=4))


def test_encode_refuses_what_decode_would_turn_into_something_else(keys):
    for body in ({"t": (1, 2)}, {1: "x"}, {"s": {1, 2}}, {"s": "\ud800"}):
        with pytest.raises(WireFormatError):
            encode(Batch(SITE, 1, (record(0, body=body),), 0), keys)


@pytest.mark.parametrize("changes, words", [
    ({"at_utc_s": 1.0}, ["at_utc_s", "must be an integer, got float"]),
    ({"at_utc_s": -1}, ["at_utc_s", "out of range"]),
    ({"at_utc_s": True}, ["at_utc_s", "got bool"]),
    ({"at_utc_s": 1 << 63}, ["at_utc_s", "out of range"]),
    ({"kind": ""}, ["kind", "malformed"]),
    ({"kind": 5}, ["kind", "must be a string"]),
    ({"lane": "x" * 65}, ["lane"]),
    ({"body": []}, ["body", "must be a map"]),
    ({"extra": 1}, ["unknown field 'extra'"]),
])
def test_bad_record_fields(keys, changes, words):
    refused(batch_frame([rec_map(0, **changes)]), keys, WireFormatError, "batch 1 record 0", *words)


def test_missing_fields(keys):
    r = rec_map(0)
    del r["kind"]
    refused(batch_frame([r]), keys, WireFormatError, "missing field 'kind'")
    refused(frame([1, "batch", SITE, {"batch_seq": 1, "records": []}]), keys, WireFormatError, "created_utc_s")


def test_bad_batch_fields(keys):
    refused(batch_frame([], seq=0), keys, WireFormatError, "batch_seq", "out of range 1..")
    refused(batch_frame([], seq=-3), keys, WireFormatError, "batch_seq")
    refused(frame([1, "batch", SITE, {"batch_seq": 1, "created_utc_s": 1, "records": {}}]), keys,
            WireFormatError, "records", "must be an array")


def test_bad_acks(keys):
    def ack(p):
        return frame([1, "ack", SITE, p])
    refused(ack({"up_to_seq": 3, "rejected": [{"batch_seq": 4, "reason": "x"}]}), keys, WireFormatError,
            "rejected[0]", "batch_seq")
    refused(ack({"up_to_seq": 3, "rejected": [{"batch_seq": 2, "reason": "x"}, {"batch_seq": 2, "reason": "y"}]}),
            keys, WireFormatError, "must increase")
    refused(ack({"up_to_seq": 3, "rejected": [{"batch_seq": 2, "reason": ""}]}), keys, WireFormatError, "empty")
    refused(ack({"up_to_seq": -1, "rejected": []}), keys, WireFormatError, "up_to_seq")


def test_bad_presence_and_requests(keys):
    p = {"online": 1, "at_utc_s": 0, "software_version": "1", "replica_versions": {}}
    refused(frame([1, "presence", SITE, p]), keys, WireFormatError, "online", "true or false")
    p.update(online=True, replica_versions={"nope": 1})
    refused(frame([1, "presence", SITE, p]), keys, WireFormatError, "unknown table 'nope'")
    refused(frame([1, "snapshot_request", SITE, {"table": "stop_list", "have_version": -1}]), keys,
            WireFormatError, "have_version")


def host_frame(mtype: str, payload: dict) -> bytes:
    return frame([1, mtype, None, payload], HOST_KEY)


def test_bad_replica_messages(keys, rows):
    snap = {"table": "stop_list", "version": 1, "part": 0, "parts": 1,
            "rows": [{"card_no": "7005830000000001", "listed_at_utc_s": 3}] * 2}
    text = refused(host_frame("snapshot", snap), keys, WireFormatError, "rows: key", "70**********0001 appears twice")
    assert "7005830000000001" not in text  # card numbers are masked in messages
    snap.update(rows=[], part=1)
    refused(host_frame("snapshot", snap), keys, WireFormatError, "part", "0..0")
    snap.update(part=0, version=0)
    refused(host_frame("snapshot", snap), keys, WireFormatError, "version")
    snap.update(version=1, table="cards")
    refused(host_frame("snapshot", snap), keys, WireFormatError, "unknown table 'cards'")
    delta = {"table": "stations", "from_version": 3, "to_version": 3, "upserts": [], "deletes": []}
    refused(host_frame("delta", delta), keys, WireFormatError, "to_version")
    delta.update(to_version=4, deletes=[1001, 1001])
    refused(host_frame("delta", delta), keys, WireFormatError, "deletes", "appears twice")
    delta.update(deletes=["1001"])
    refused(host_frame("delta", delta), keys, WireFormatError, "deletes[0]", "integer")
    with pytest.raises(WireFormatError, match="both upserted and deleted"):
        st = rows[Table.STATIONS][0]
        encode(ReplicaDelta(Table.STATIONS, 1, 2, (st,), (st.station_id,)), keys)
    with pytest.raises(WireTooLarge):
        decode(encode(ReplicaDelta(Table.STATIONS, 1, 2, rows[Table.STATIONS][:3], (1, 2)), keys), keys,
               topic=None, limits=Limits(max_rows=4))


@pytest.mark.parametrize("table, mutate, words", [
    (Table.FUEL_CARDS, lambda r: r.update(expires_on="2026-02-30"), ["expires_on", "no such day"]),
    (Table.FUEL_CARDS, lambda r: r.update(expires_on=20261101), ["expires_on", "YYYY-MM-DD"]),
    (Table.FUEL_CARDS, lambda r: r.update(status=9), ["status", "9 is not a CardStatus"]),
    (Table.FUEL_CARDS, lambda r: r.update(card_no="7005-83"), ["card_no"]),
    (Table.FUEL_CARDS, lambda r: r.update(groups=[0, 0]), ["groups", "twice"]),
    (Table.FUEL_CARDS, lambda r: r.update(counters=[{"limit_id": 99, "spent": 1, "period_start": 0}]),
     ["limit 99"]),
    (Table.STATIONS, lambda r: r.update(prices_kop_per_l={"AI95": 6150.0}), ["prices_kop_per_l.AI95", "float"]),
    (Table.STATIONS, lambda r: r.update(max_fill_ml=0), ["max_fill_ml"]),
    (Table.CONTRACTS, lambda r: r.update(chosen_station_ids=[1, 2, 3, 4]), ["chosen_station_ids", "limit of 3"]),
    (Table.CONTRACTS, lambda r: r.update(tz="../etc/passwd"), ["tz", "malformed"]),
    (Table.TARIFFS, lambda r: r["discounts"][0].update(value=10_001, kind=1), ["discounts[0]", "value"]),
    (Table.CLUB_ACCOUNTS, lambda r: r.update(balance_kop=-10**12 - 1), ["balance_kop"]),
    (Table.CLUB_ACCOUNTS, lambda r: r.update(balance_kop=10**12 + 1), ["balance_kop"]),
    (Table.CLUB_ACCOUNTS, lambda r: r.update(cards=[{"card_no": "1", "status": 0}] * 2), ["cards", "twice"]),
    (Table.CLUB_RULES, lambda r: r.update(caps=[]), []),  # empty caps are the model's concern: accepted
    (Table.CLUB_RULES, lambda r: r.update(redemption_cap_bp=10_001), ["redemption_cap_bp"]),
    (Table.PRODUCTS, lambda r: r.update(group=None), ["group", "integer ProductGroup"]),
    (Table.STOP_LIST, lambda r: r.pop("listed_at_utc_s"), ["missing field 'listed_at_utc_s'"]),
])
def test_bad_rows(keys, rows, table, mutate, words):
    good = encode(ReplicaSnapshot(table, 1, 0, 1, rows[table][:1]), keys)
    payload = msgpack.unpackb(good, raw=False)[3]
    mutate(payload["rows"][0])
    data = host_frame("snapshot", payload)
    if not words:
        decode(data, keys, topic=None)
        return
    refused(data, keys, WireFormatError, "snapshot: rows[0]", *words)


@pytest.mark.parametrize("balance_kop", [-1, -10**12, 10**12])
def test_a_club_balance_below_zero_crosses_the_wire_as_it_is(keys, rows, balance_kop):
    """The host keeps a club balance spent below zero offline at two sites as a debt; the
    wire carries it (as a contract's), whichever way the site decodes a part."""
    row = rows[Table.CLUB_ACCOUNTS][0]
    row = replace(row, account=replace(row.account, balance_kop=balance_kop))
    data = encode(ReplicaSnapshot(Table.CLUB_ACCOUNTS, 1, 0, 1, (row,)), keys)
    got, = decode(data, keys, topic=None).rows
    assert got.account.balance_kop == balance_kop
    packed = decode(data, keys, topic=None, raw_rows=True).rows
    assert isinstance(packed, PackedRows)  # taken by the scanner in C, not the general path
    assert packed[0].account.balance_kop == balance_kop


def test_encode_refuses_rows_of_the_wrong_type(keys, rows):
    with pytest.raises(WireFormatError, match="a fuel_cards row is a FuelCardRow, got FuelCard"):
        encode(ReplicaSnapshot(Table.FUEL_CARDS, 1, 0, 1, (rows[Table.FUEL_CARDS][0].card,)), keys)
    with pytest.raises(WireFormatError, match="tariff"):
        t = rows[Table.TARIFFS][0]
        encode(ReplicaSnapshot(Table.TARIFFS, 1, 0, 1, (replace(t, tariff=Tariff((t.tariff + 1) % 6)),)), keys)
    with pytest.raises(WireFormatError, match="not a wire message"):
        encode(object(), keys)  # type: ignore[arg-type]


def test_frames_that_are_not_bytes(keys):
    for data in ("text", None, 5, [1]):
        refused(data, keys, WireFormatError, "bytes")  # type: ignore[arg-type]
    assert decode(bytearray(encode(Ack(SITE, 1), keys)), keys, topic=None) == Ack(SITE, 1)


def test_all_topic_helpers_agree_with_decode(keys):
    for msg, t in [(batch(1), batches_topic(SITE)), (Ack(SITE, 1), acks_topic(SITE)),
                   (SnapshotRequest(SITE, Table.TARIFFS, 1), snapshot_requests_topic(SITE))]:
        assert topic_of(msg) == t
        assert decode(encode(msg, keys), keys, topic=t) == msg
