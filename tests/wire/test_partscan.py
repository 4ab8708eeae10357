"""``wire.decode(..., raw_rows=True)`` (a snapshot part's rows kept as the bytes received,
checked by wire._partscan) against the general path: the same accept or refuse, the same
error word for word, the same rows as objects and the same bytes for the replica store, on
well-formed parts, on parts broken field by field, byte by byte and re-signed, on values
written another way than MessagePack's packer writes them, and on bad topics and ranges."""

from __future__ import annotations

import copy

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import event, given, settings
from hypothesis import strategies as st

from authz import sample
from tests.wire.test_rows_bulk import _FUEL, CARD_MAPS, CONTRACT_MAPS, CONTROLLED_MAPS, ODD, STOP_MAPS, paths, put
from wire import ClubAccountRow, Limits, ReplicaSnapshot, SiteKeys, Table, WireError, WireSignatureError, decode, snapshot_topic
from wire import codec
from wire.rows_bulk import PackedRows, pack_rows
from wire.signing import replica_sign

_CLUB = sample.club_model(n_accounts=40, seed=5)
_CARDS_OF = {a.account_id: tuple(c for c in _CLUB.cards if c.account_id == a.account_id) for a in _CLUB.accounts}
ACCOUNT_MAPS = [codec._account_to(ClubAccountRow(a, _CARDS_OF[a.account_id])) for a in _CLUB.accounts]
ACCOUNT_MAPS[3]["cards"].append({"card_no": "2990000099991", "status": 1})  # a replaced plastic, blocked
ACCOUNT_MAPS[4]["cards"] = []
ACCOUNT_MAPS[5]["activated"] = False
assert any(m["lots"] for m in ACCOUNT_MAPS) and any(not m["lots"] for m in ACCOUNT_MAPS)
HOST_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(64, 96)))
OTHER_HOST = Ed25519PrivateKey.from_private_bytes(bytes(range(96, 128)))
SITE = SiteKeys({}, replica_verify=HOST_KEY.public_key())
PACKED, OBJ, REFUSED = "packed", "objects", "refused"
MAPS = {Table.FUEL_CARDS: CARD_MAPS, Table.STOP_LIST: STOP_MAPS, Table.CONTRACTS: CONTRACT_MAPS,
        Table.CLUB_ACCOUNTS: ACCOUNT_MAPS}


def signed(body: bytes, key: Ed25519PrivateKey = HOST_KEY) -> bytes:
    """A replica frame of the frame bytes ``body`` (array header to payload), signed."""
    return body + b"\xc4\x40" + replica_sign(key, body)


def frame(payload: object, key: Ed25519PrivateKey = HOST_KEY, *, mtype: object = "snapshot",
          version: object = 1) -> bytes:
    """A snapshot frame of any payload, packed by msgpack, signed."""
    p = msgpack.Packer(use_bin_type=True)
    return signed(p.pack_array_header(5) + p.pack(version) + p.pack(mtype) + p.pack(None) + p.pack(payload), key)


def payload(table: Table, rows: list, version: int = 3, part: int = 0, parts: int = 1) -> dict:
    return {"table": table.value, "version": version, "part": part, "parts": parts, "rows": rows}


def outcome(data: bytes, topic: str | None, raw: bool, limits: Limits | None = None) -> tuple:
    """What decode says: ("ok", message) or (the error's type, its words)."""
    try:
        return "ok", decode(data, SITE, topic=topic, raw_rows=raw, **({"limits": limits} if limits else {}))
    except WireError as e:
        return type(e).__name__, str(e)


def same(data: bytes, topic: str | None = snapshot_topic(Table.FUEL_CARDS, 0), limits: Limits | None = None) -> str:
    """Both paths agree on ``data``; returns "packed" (the fast path kept the rows as bytes),
    "objects" (both decoded them into objects) or "refused"."""
    general, raw = outcome(data, topic, False, limits), outcome(data, topic, True, limits)
    if general[0] != "ok" or raw[0] != "ok":
        assert raw == general
        return "refused"
    g, r = general[1], raw[1]
    assert isinstance(g, ReplicaSnapshot) and isinstance(r, ReplicaSnapshot)
    assert (r.table, r.version, r.part, r.parts) == (g.table, g.version, g.part, g.parts)
    assert not isinstance(g.rows, PackedRows)
    assert tuple(r.rows) == g.rows  # the same rows as objects
    assert list(pack_rows(r.table, r.rows)) == list(pack_rows(g.table, g.rows))  # the same bytes stored
    if isinstance(r.rows, PackedRows):
        assert list(r.rows.items()) == list(pack_rows(g.table, g.rows))
        assert len(r.rows) == len(g.rows)
        return "packed"
    return "objects"


@pytest.mark.parametrize("table", list(MAPS))
def test_well_formed_parts_keep_their_rows_as_received(table):
    data = frame(payload(table, MAPS[table], part=2, parts=4))
    assert PACKED == same(data, snapshot_topic(table, 2))
    part = decode(data, SITE, topic=snapshot_topic(table, 2), raw_rows=True)
    assert isinstance(part.rows, PackedRows) and part.rows.table is table
    rows = list(part.rows.items())
    assert all(data.find(b) > 0 for _, b in rows)  # the bytes are the frame's
    assert len({k for k, _ in rows}) == len(rows) == len(MAPS[table])
    assert part.rows[1] == decode(data, SITE, topic=None).rows[1]
    assert "7" not in repr(part.rows) and repr(part.rows) == f"PackedRows({table.value}, {len(rows)} rows)"


@pytest.mark.parametrize("table", list(MAPS))
def test_keys_in_any_order_are_taken_and_a_key_twice_is_refused(table):
    """Rows in ascending key order are proven unique without an object per key; in any
    other order they are checked with a set; a key twice is refused as the general path does."""
    rows = sorted(MAPS[table], key=lambda m: str(m.get("card_no", m.get("contract_id", m.get("account_id")))))
    assert PACKED == same(frame(payload(table, rows[::-1])), snapshot_topic(table, 0))
    assert PACKED == same(frame(payload(table, rows[:1] + rows[2:] + rows[1:2])), snapshot_topic(table, 0))
    assert REFUSED == same(frame(payload(table, rows[:2] + rows[1:])), snapshot_topic(table, 0))  # adjacent
    assert REFUSED == same(frame(payload(table, rows + rows[:1])), snapshot_topic(table, 0))
    assert REFUSED == same(frame(payload(table, rows[::-1] + rows[-1:])), snapshot_topic(table, 0))


def test_other_tables_and_cards_with_fleet_controls_take_the_general_path():
    assert OBJ == same(frame(payload(Table.FUEL_CARDS, CARD_MAPS + CONTROLLED_MAPS)))
    products = [codec._product_to(p) for p in _FUEL.products]
    assert OBJ == same(frame(payload(Table.PRODUCTS, products)), snapshot_topic(Table.PRODUCTS, 0))
    watermarked = [dict(CONTRACT_MAPS[0], watermarks=[["SIM-077-001", 5]])]
    assert OBJ == same(frame(payload(Table.CONTRACTS, watermarked)), snapshot_topic(Table.CONTRACTS, 0))


def test_values_written_another_way_are_stored_as_the_store_writes_them():
    """A card's groups out of order, an integer or a string in a longer form than needed, a
    longer array header: the general path takes them and the store writes the canonical
    bytes; the fast path must not keep such bytes."""
    card = copy.deepcopy(CARD_MAPS[0])
    card["groups"] = sorted(card["groups"], reverse=True) if len(card["groups"]) > 1 else [1, 0]
    assert OBJ == same(frame(payload(Table.FUEL_CARDS, [card] + CARD_MAPS[1:])))
    good = frame(payload(Table.STOP_LIST, STOP_MAPS[:1]))
    body = good[:-66]
    at = body.index(b"\xaflisted_at_utc_s") + 16
    assert body[at] == 0xce  # uint32
    wide = body[:at] + b"\xcf\x00\x00\x00\x00" + body[at + 1:]  # the same number as uint64
    assert OBJ == same(signed(wide), snapshot_topic(Table.STOP_LIST, 0))
    at = body.index(b"\xa7card_no") + 8
    n = body[at] - 0xa0
    long_str = body[:at] + bytes([0xd9, n]) + body[at + 1:]  # str 8 for a short string
    assert OBJ == same(signed(long_str), snapshot_topic(Table.STOP_LIST, 0))
    at = body.index(b"\xa4rows") + 5
    assert body[at] == 0x91
    long_arr = body[:at] + b"\xdc\x00\x01" + body[at + 1:]
    assert OBJ == same(signed(long_arr), snapshot_topic(Table.STOP_LIST, 0))
    neg = frame(payload(Table.CONTRACTS, [dict(CONTRACT_MAPS[0], balance_kop=-5)]))
    assert PACKED == same(neg, snapshot_topic(Table.CONTRACTS, 0))
    body = neg[:-66]
    at = body.index(b"\xabbalance_kop") + 12
    assert body[at] == 0xfb  # -5, a negative fixint
    assert OBJ == same(signed(body[:at] + b"\xd0\xfb" + body[at + 1:]), snapshot_topic(Table.CONTRACTS, 0))


def test_refusals_have_the_same_words():
    t = snapshot_topic(Table.FUEL_CARDS, 0)
    good = frame(payload(Table.FUEL_CARDS, CARD_MAPS))
    assert outcome(good[:-1] + bytes([good[-1] ^ 1]), t, True)[0] == "WireSignatureError"
    assert REFUSED == same(good[:-1] + bytes([good[-1] ^ 1]))
    assert REFUSED == same(frame(payload(Table.FUEL_CARDS, CARD_MAPS), OTHER_HOST))
    assert REFUSED == same(good, snapshot_topic(Table.FUEL_CARDS, 1))  # another part's topic
    assert REFUSED == same(good, snapshot_topic(Table.STOP_LIST, 0))  # another table's
    assert REFUSED == same(good, "edgepos/v1/replica/fuel_cards/delta")
    assert PACKED == same(good, None)
    assert REFUSED == same(frame(payload(Table.FUEL_CARDS, CARD_MAPS + CARD_MAPS[:1])))  # a key twice
    for bad in (dict(version=0), dict(part=1, parts=1), dict(parts=0), dict(parts=10 ** 9), dict(part=-1)):
        assert REFUSED == same(frame(payload(Table.FUEL_CARDS, CARD_MAPS) | bad), None)
    assert REFUSED == same(frame(payload(Table.FUEL_CARDS, CARD_MAPS), version=2))
    assert REFUSED == same(frame(payload(Table.FUEL_CARDS, CARD_MAPS), mtype="delta"))
    assert REFUSED == same(good, limits=Limits(max_rows=len(CARD_MAPS) - 1))
    assert PACKED == same(good, limits=Limits(max_rows=len(CARD_MAPS)))
    with pytest.raises(WireSignatureError):
        decode(good, SiteKeys({}, replica_verify=OTHER_HOST.public_key()), topic=t, raw_rows=True)



def _packable(v: object) -> bool:
    """A value a frame can carry: MessagePack has no integer below -2**63."""
    try:
        msgpack.packb(v)
    except (OverflowError, TypeError, ValueError):
        return False
    return True


WIRE_ODD = ODD.filter(_packable)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(list(MAPS)), st.data())
def test_rows_broken_field_by_field_agree(table, data):
    maps = MAPS[table]
    rows = [copy.deepcopy(maps[i]) for i in data.draw(st.lists(st.sampled_from(range(len(maps))), min_size=1,
                                                               max_size=4))]
    for _ in range(data.draw(st.integers(0, 3))):
        row = rows[data.draw(st.integers(0, len(rows) - 1))]
        how = data.draw(st.sampled_from(["set", "drop", "add", "dup_limit", "swap"]))
        if how == "set" and row:
            put(row, data.draw(st.sampled_from(paths(row))), data.draw(WIRE_ODD))
        elif how == "drop" and row:
            del row[data.draw(st.sampled_from(sorted(row)))]
        elif how == "add":
            row[data.draw(st.sampled_from(["extra", "products", "on_breach", "watermarks"]))] = data.draw(WIRE_ODD)
        elif how == "dup_limit" and isinstance(row.get("limits"), list) and row["limits"]:
            row["limits"].append(copy.deepcopy(row["limits"][0]))
        elif how == "swap" and len(row) > 1:  # the same fields in another order
            keys = list(row)
            i = data.draw(st.integers(0, len(keys) - 2))
            keys[i], keys[i + 1] = keys[i + 1], keys[i]
            rows[rows.index(row)] = {k: row[k] for k in keys}
    event(same(frame(payload(table, rows)), snapshot_topic(table, 0)))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(list(MAPS)), st.data())
def test_every_byte_changed_and_signed_again_agrees(table, data):
    """A byte of the frame's body changed (or dropped, or one inserted), then signed again
    (so the row checks, not the signature, decide): both paths say the same."""
    body = frame(payload(table, MAPS[table][:3]))[:-66]
    i = data.draw(st.integers(0, len(body) - 1))
    how = data.draw(st.sampled_from(["set", "drop", "insert"]))
    b = data.draw(st.integers(0, 255))
    changed = (body[:i] + bytes([b]) + body[i + 1:] if how == "set" else body[:i] + body[i + 1:] if how == "drop"
               else body[:i] + bytes([b]) + body[i:])
    event(same(signed(changed), snapshot_topic(table, 0)))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(MAPS)), st.integers(0, 10 ** 6), st.integers(1, 255))
def test_every_single_byte_change_of_a_signed_part_is_refused(table, at, flip):
    good = frame(payload(table, MAPS[table][:3]))
    i = at % len(good)
    bad = good[:i] + bytes([good[i] ^ flip]) + good[i + 1:]
    kind, _ = outcome(bad, snapshot_topic(table, 0), True)
    assert kind != "ok"
    same(bad, snapshot_topic(table, 0))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_ever_raise_wire_errors(blob):
    for data in (blob, signed(blob)):
        same(data) if data else None


def test_the_longest_card_numbers_and_the_widest_integers_are_taken():
    """A 32-character card number (str 8), integers of every width and sign."""
    stop = [{"card_no": "A" * 31, "listed_at_utc_s": 0}, {"card_no": "B" * 32, "listed_at_utc_s": 2 ** 63 - 1},
            {"card_no": "C" * 32, "listed_at_utc_s": 2 ** 32}, {"card_no": "D", "listed_at_utc_s": 65535}]
    assert PACKED == same(frame(payload(Table.STOP_LIST, stop)), snapshot_topic(Table.STOP_LIST, 0))
    card = copy.deepcopy(next(m for m in CARD_MAPS if m["counters"]))
    for spent in (-1, -32, -33, -128, -129, -32768, -32769, -2 ** 31, -2 ** 31 - 1, -2 ** 63, 2 ** 63 - 1):
        card["counters"][0]["spent"] = spent
        card["card_no"] = "9" * 32
        assert PACKED == same(frame(payload(Table.FUEL_CARDS, [card])))
    card["counters"][0]["spent"] = 2 ** 63  # beyond int64: refused
    assert REFUSED == same(frame(payload(Table.FUEL_CARDS, [card])))
