"""``wire._jsonpack``: the journal's stored JSON bodies packed straight to MessagePack.

The native packer must answer what decoding the text and packing the dict answers, byte for
byte, or say None (then the codec takes its careful path): for canonical bodies (hypothesis),
for texts one character off canonical (hypothesis: whatever it packs equals the
decode-then-pack answer and passes the record check), and at the edges (int64, depth,
container and string sizes where the MessagePack header grows, escapes). The record's own
fields get the answer of ``wire._wirecheck`` (hypothesis: one field changed; every character
at every position of each id). Through ``pack_record_rows``, stored rows give the bytes or
the refusal of the decoded rows.
"""

from __future__ import annotations

import json

import msgpack
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from terminal.ids import new_id, new_txn_id
from terminal.journal import canonical_json
from wire import Batch, WireError, WireRecord
from wire import codec as C
from wire._jsonpack import body_to_msgpack, pack_rows
from wire._wirecheck import records_fast

from .test_native_records import EVERY_CHAR
from .test_properties import batches

SITE = "SIM-077-001"
DEPTH = C.DEFAULT_LIMITS.max_body_depth
INT64 = (-(1 << 63), (1 << 63) - 1)


def reference(text: str, depth: int = DEPTH) -> bytes | None:
    """The careful answer: decode, check the body as the record check does, pack."""
    try:
        body = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return None
    if type(body) is not dict:
        return None
    head = {"record_id": new_id(SITE), "lane": "p", "txn_id": new_txn_id(SITE, "p"), "kind": "k", "at_utc_s": 0,
            "body": body}
    if records_fast([head], SITE, depth, C._RECORD[1], None) is None:
        return None
    return msgpack.packb(body, use_bin_type=True)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(*INT64) | st.integers(-300, 300) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=20) | st.dictionaries(st.text(max_size=12), inner, max_size=20),
    max_leaves=60)
bodies = st.dictionaries(st.text(max_size=12), json_values, max_size=20)


@settings(max_examples=150, deadline=None)
@given(bodies)
def test_canonical_bodies_pack_as_decoded_and_packed(body: dict) -> None:
    text = canonical_json(body)  # sorted keys: the decoded dict's order
    assert body_to_msgpack(text, DEPTH) == msgpack.packb(msgspec.json.decode(text), use_bin_type=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies, st.data())
def test_a_text_off_canonical_is_packed_right_or_left_to_the_careful_path(body: dict, data: st.DataObject) -> None:
    text = canonical_json(body)
    i = data.draw(st.integers(0, len(text)))
    op = data.draw(st.sampled_from(["insert", "replace", "delete"]))
    ch = data.draw(st.sampled_from(list('{}[]",:0123456789-.eE tfnul\\/') + ["é", "\x01", "a", "\u2028"]))
    if op == "insert":
        text = text[:i] + ch + text[i:]
    elif op == "replace":
        text = text[:i] + ch + text[i + 1:]
    else:
        text = text[:i] + text[i + 1:]
    got = body_to_msgpack(text, DEPTH)
    if got is not None:  # never a different answer: only the same one, or none
        assert got == reference(text)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1,
                                   -1, -32, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1, -2**63])
def test_integers_at_every_msgpack_width(value: int) -> None:
    text = json.dumps({"v": value})
    assert body_to_msgpack(text.replace(" ", ""), DEPTH) == msgpack.packb({"v": value}, use_bin_type=True)


@pytest.mark.parametrize("n", [0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536])
def test_sizes_where_the_header_grows(n: int) -> None:
    body = {"l": list(range(n)), "m": {f"k{i:06d}": i for i in range(min(n, 70_000))}, "s": "x" * n, "u": "é" * n}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)  # over the journal's 1 MiB
    assert body_to_msgpack(text, DEPTH) == msgpack.packb(body, use_bin_type=True)


def nested(levels: int) -> dict:
    body: dict = {}
    for _ in range(levels - 1):
        body = {"a": body}
    return body


@pytest.mark.parametrize("levels", [DEPTH - 1, DEPTH, DEPTH + 1, DEPTH + 5])
def test_depth_as_the_record_check_counts_it(levels: int) -> None:
    text = canonical_json(nested(min(levels, 32))) if levels <= 32 else json.dumps(
        nested(levels), separators=(",", ":"))
    assert body_to_msgpack(text, DEPTH) == reference(text)
    assert (body_to_msgpack(text, DEPTH) is None) == (levels > DEPTH)


@pytest.mark.parametrize("text", [
    '{"a":1.0}', '{"a":1e3}', '{"a":-0}', '{"a":01}', '{"a": 1}', ' {"a":1}', '{"a":1} ', '{"a":1}x',
    '{"a":9223372036854775808}', '{"a":-9223372036854775809}', '{"a":99999999999999999999}', '[1]', '"a"', '1',
    '{"b":1,"a":2}', '{"a":1,"a":2}', '{"b":1,"\\u0061":2}', '{"a":1,"\\u0061":2}',
    '{"a":"\\ud83d\\ude00"}', '{"a":"\\ud83d"}', '{"a":"\x01"}',
    '{"a":"\\x"}', '{"a":"\\u12"}', '{"a":tru}', '{"a":nul}', '{"a":[1,]}', '{"a":1,}', '{,}', '{"a"}', '{"a":}',
    '{', '', '{"a":[1 2]}', '{"a":"unterminated}'])
def test_what_it_leaves_to_the_careful_path(text: str) -> None:
    assert body_to_msgpack(text, DEPTH) is None


@pytest.mark.parametrize("text", ['{"a":"\\"\\\\\\/\\b\\f\\n\\r\\t\\u0001\\u00e9\\u20ac\\u2028x"}',
                                  '{"\\u0061":1,"b":2}', '{"\\n":1,"\\u001f":2," ":3}'])
def test_escapes_decode_as_json_does(text: str) -> None:
    assert body_to_msgpack(text, DEPTH) == msgpack.packb(msgspec.json.decode(text), use_bin_type=True)


def row(i: int, body: object, site: str = SITE) -> tuple:
    return (i, new_id(site), site, "pump-1", new_txn_id(site, "pump-1"), "fuel.completed", 1_790_000_000 + i, body)


def answer(rows: list, checked: bool) -> tuple[str, object]:
    try:
        return "ok", C.pack_record_rows(SITE, rows, bodies_checked=checked)
    except WireError as e:
        return type(e).__name__, str(e)


@settings(max_examples=50, deadline=None)
@given(st.lists(bodies, min_size=1, max_size=8))
def test_stored_rows_pack_to_the_bytes_of_the_records(body_list: list[dict]) -> None:
    rows = [row(i, canonical_json(b)) for i, b in enumerate(body_list)]
    decoded = [(*r[:7], msgspec.json.decode(r[7])) for r in rows]
    packed = C.pack_record_rows(SITE, rows, bodies_checked=True)
    assert packed == C.pack_records(SITE, [WireRecord(*r[1:]) for r in decoded], bodies_checked=True)
    assert pack_rows(rows, SITE, DEPTH) == packed


@pytest.mark.parametrize("bad", ["site", "record_id", "lane", "txn_id", "kind", "at", "float", "deep", "not json",
                                 "duplicate id"])
def test_stored_rows_are_refused_in_the_words_of_the_decoded_rows(bad: str) -> None:
    good = [row(i, canonical_json({"amount_kop": i})) for i in range(3)]
    r = list(good[1])
    if bad == "site":
        r = list(row(1, r[7], "SIM-077-002"))
    elif bad == "record_id":
        r[1] = r[1][:-1] + "I"
    elif bad == "lane":
        r[3] = "pump 1"
    elif bad == "txn_id":
        r[4] = "x"
    elif bad == "kind":
        r[5] = ""
    elif bad == "at":
        r[6] = -1
    elif bad == "float":
        r[7] = '{"amount_kop":1.5}'
    elif bad == "deep":
        r[7] = json.dumps(nested(DEPTH + 1), separators=(",", ":"))
    elif bad == "not json":
        r[7] = '{"amount_kop":'
    else:
        r[1] = good[0][1]
    rows = [good[0], tuple(r), good[2]]
    assert pack_rows(rows, SITE, DEPTH) is None or bad in ("record_id", "lane", "txn_id", "kind", "duplicate id")
    for checked in (False, True):
        got = answer(rows, checked)
        if bad == "not json":
            assert got[0] == "WireFormatError" and "record 1" in str(got[1]) and "not JSON" in str(got[1])
            continue
        decoded = [(*good[0][:7], {"amount_kop": 0}), (*r[:7], msgspec.json.decode(r[7])),
                   (*good[2][:7], {"amount_kop": 2})]
        assert got == answer(decoded, checked)
        # bodies_checked vouches for the bodies (the journal checked them): then only the
        # record's own fields are refused, as before (a duplicate id is the host's to drop)
        assert (got[0] == "ok") == ((checked and bad in ("float", "deep")) or bad == "duplicate id")


# --- the record's own fields: the same answers as wire._wirecheck ------------------------------

def stored(b: Batch) -> list[tuple]:
    """The batch's records as the journal's stored rows (seq, ..., the body's JSON text)."""
    return [(i + 1, r.record_id, r.site_id, r.lane, r.txn_id, r.kind, r.at_utc_s,
             json.dumps(r.body, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
            for i, r in enumerate(b.records)]


def same_fields(rows: list[tuple], site: str) -> list[bytes] | None:
    """``pack_rows`` and the record check of ``wire._wirecheck`` (on the decoded rows) say
    yes or no together; a yes gives the decoded rows' bytes."""
    maps = [{"record_id": rid, "lane": lane, "txn_id": txn, "kind": kind, "at_utc_s": at,
             "body": msgspec.json.decode(body)} for _, rid, s, lane, txn, kind, at, body in rows if s == site]
    check = len(maps) == len(rows) and records_fast(maps, site, DEPTH, C._RECORD[1], None) is not None
    got = pack_rows(rows, site, DEPTH)
    assert (got is not None) == check, (rows, got)
    if got is not None:
        assert got == [msgpack.packb(m, use_bin_type=True) for m in maps]
    return got


@settings(max_examples=150, deadline=None)
@given(batches(), st.sampled_from(["record_id", "site_id", "lane", "txn_id", "kind", "at_utc_s"]), st.data())
def test_one_field_changed_gives_the_answer_of_the_record_check(b: Batch, field: str, data: st.DataObject) -> None:
    rows = stored(b)
    if rows:
        k = data.draw(st.integers(0, len(rows) - 1), label="row")
        col = ["record_id", "site_id", "lane", "txn_id", "kind", "at_utc_s"].index(field) + 1
        r = list(rows[k])
        if field == "at_utc_s":
            r[col] = data.draw(st.sampled_from([-1, 0, 2**63 - 1, 2**63, True, 1.0, "1"]), label="at")
        else:
            s = r[col]
            how = data.draw(st.sampled_from(["replace", "insert", "delete", "other"]), label="how")
            i = data.draw(st.integers(0, max(0, len(s) - (how != "insert"))), label="at")
            ch = data.draw(st.sampled_from(EVERY_CHAR), label="char")
            r[col] = {"replace": s[:i] + ch + s[i + 1:], "insert": s[:i] + ch + s[i:], "delete": s[:i] + s[i + 1:],
                      "other": data.draw(st.sampled_from([None, 5, b"x", rows[0][1]]), label="other")}[how]
        rows[k] = tuple(r)
    same_fields(rows, b.site_id)


@pytest.mark.parametrize("field", ["record_id", "lane", "txn_id", "kind"])
def test_every_character_at_every_position_of_a_field_gives_the_answer_of_the_record_check(field: str) -> None:
    col = {"record_id": 1, "lane": 3, "txn_id": 4, "kind": 5}[field]
    base = (1, f"{SITE}-01HZX3M2Q5T7V8W9XAYBZC0001", SITE, "pump-1", f"{SITE}:pump-1-01HZX3M2Q5T7V8W9XAYBZC0001",
            "fuel.completed", 1_790_000_000, '{"amount_kop":1}')
    s = base[col]
    assert isinstance(s, str)
    accepted = 0
    for i in range(len(s) + 1):
        for ch in EVERY_CHAR:
            for value in (s[:i] + ch + s[i + 1:], s[:i] + ch + s[i:]):
                row = list(base)
                row[col] = value
                accepted += same_fields([tuple(row)], SITE) is not None
    assert accepted > len(s)  # some changes are still valid: both answers were exercised


def test_a_record_id_twice_and_a_site_not_ascii_are_left_to_the_careful_path() -> None:
    rows = [row(1, '{"a":1}'), row(2, '{"a":2}')]
    assert pack_rows(rows, SITE, DEPTH) is not None
    assert pack_rows([rows[0], (2, *rows[0][1:])], SITE, DEPTH) is None
    assert pack_rows(rows, "SIM-077-00é", DEPTH) is None
