"""The native check of a batch's records (``wire._wirecheck``) answers as the Python one.

``wire.codec._records_fast`` (native) and ``wire.codec._records_fast_py`` (the Python
reference) must accept the same records, as equal ``WireRecord`` objects, and say no (None:
the careful path then names what is wrong) to the same ones. Hypothesis draws valid batches
and batches with one value replaced anywhere, one character of an id changed, or bodies at
and past the depth limit; ``wire.decode`` through either gives the same message or the same
error, and random bytes or a single-byte change still raise only ``WireError``.
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import wire.codec as C
from wire import Batch, Limits, WireError, WireRecord, batches_topic, decode, encode

from .test_properties import FAST, KEYS, _paths, _signed, batches, msgpack_values

SETTINGS = settings(max_examples=300, deadline=None)


def _payload_records(b: Batch) -> list:
    """The batch's records as decode's fast reader hands them over (plain dicts)."""
    _, _, _, payload, _ = msgpack.unpackb(encode(b, KEYS), raw=False)
    return payload["records"]


def _same(records: list, site: str, limits: Limits = C.DEFAULT_LIMITS):
    native = C._records_fast(records, site, limits)
    python = C._records_fast_py(records, site, limits)
    assert native == python
    if native is not None:
        assert all(type(w) is WireRecord for w in native)
        assert [tuple(map(type, (w.record_id, w.at_utc_s, w.body))) for w in native] == \
            [tuple(map(type, (w.record_id, w.at_utc_s, w.body))) for w in python]  # type: ignore[union-attr]
    return native


@FAST
@given(batches())
def test_valid_batches_give_the_same_records(b: Batch) -> None:
    assert _same(_payload_records(b), b.site_id) == b.records


@SETTINGS
@given(batches(), msgpack_values, st.data())
def test_one_value_replaced_anywhere_gives_the_same_answer(b: Batch, new_value, data) -> None:
    records = _payload_records(b)
    paths = list(_paths(records))[1:]
    if paths:
        path = data.draw(st.sampled_from(paths), label="path")
        target = records
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = new_value
    _same(records, b.site_id)


ID_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_.:-/ \x00é\u0660\U0001f600"


@SETTINGS
@given(batches().filter(lambda b: b.records), st.sampled_from(["record_id", "lane", "txn_id", "kind"]),
       st.data())
def test_one_character_of_an_id_changed_gives_the_same_answer(b: Batch, field: str, data) -> None:
    records = _payload_records(b)
    r = data.draw(st.sampled_from(records), label="record")
    s = r[field]
    how = data.draw(st.sampled_from(["replace", "insert", "delete"]), label="how")
    i = data.draw(st.integers(0, len(s) - (how != "insert")), label="at")
    ch = data.draw(st.sampled_from(ID_CHARS), label="char")
    r[field] = {"replace": s[:i] + ch + s[i + 1:], "insert": s[:i] + ch + s[i:],
                "delete": s[:i] + s[i + 1:]}[how]
    _same(records, b.site_id)


EVERY_CHAR = [chr(c) for c in range(128)] + ["é", "\u0660", "\U0001f600", "\udc80"]


@pytest.mark.parametrize("field", ["record_id", "lane", "txn_id", "kind"])
def test_every_character_at_every_position_of_an_id_gives_the_same_answer(field: str) -> None:
    """Each id with each ASCII character (and a few others) in each place, inserted and
    replacing: every character class of the patterns, at every position, both ways."""
    site = "SIM-077-001"
    rec = {"record_id": f"{site}-01HZX3M2Q5T7V8W9XAYBZC0001", "lane": "pump-1",
           "txn_id": f"{site}:pump-1-01HZX3M2Q5T7V8W9XAYBZC0001", "kind": "fuel.completed",
           "at_utc_s": 1_790_000_000, "body": {"amount_kop": 1}}
    s = rec[field]
    accepted = 0
    for i in range(len(s) + 1):
        for ch in EVERY_CHAR:
            for value in (s[:i] + ch + s[i + 1:], s[:i] + ch + s[i:]):
                accepted += _same([{**rec, field: value}], site) is not None
    assert accepted > len(s)  # some changes are valid ids (a lane letter for another): both paths were run


class S(str):
    """A str subclass: the fast checks take exact types only."""


class I(int):  # noqa: E742 - a name as short as the others
    """An int subclass."""


@pytest.mark.parametrize("field,value", [
    ("record_id", None), ("lane", S("pump-1")), ("kind", S("fuel.completed")), ("txn_id", b"x"),
    ("at_utc_s", True), ("at_utc_s", I(5)), ("at_utc_s", -1), ("at_utc_s", 2**63), ("at_utc_s", 2**63 - 1),
    ("at_utc_s", 0), ("at_utc_s", 1.0), ("body", []), ("body", {1: 2}), ("body", {"a": 2**63}),
    ("body", {"a": -2**63}), ("body", {"a": -2**63 - 1}), ("body", {"a": (1,)}), ("body", {"a": 1.5}),
    ("body", {S("a"): 1}), ("body", {"a": S("b")}), ("body", {"a": I(1)}), ("body", {"a": [b"x"]}),
    ("body", {"a": [{"b": [None, True, False, "", 0]}]}),
])
def test_odd_values_give_the_same_answer(field: str, value) -> None:
    site = "SIM-077-001"
    rec = {"record_id": f"{site}-01HZX3M2Q5T7V8W9XAYBZC0001", "lane": "pump-1",
           "txn_id": f"{site}:pump-1-01HZX3M2Q5T7V8W9XAYBZC0001", "kind": "fuel.completed",
           "at_utc_s": 1_790_000_000, "body": {"amount_kop": 1}}
    rec[field] = value
    _same([rec], site)


@pytest.mark.parametrize("change", ["twice", "extra key", "missing key", "not a map", "other site",
                                    "long lane", "lane of 64", "empty lane", "self reference"])
def test_batch_shapes_give_the_same_answer(change: str) -> None:
    site = "SIM-077-001"

    def rec(i: int) -> dict:
        return {"record_id": f"{site}-01HZX3M2Q5T7V8W9XAYBZC{i:04d}", "lane": "pump-1",
                "txn_id": f"{site}:pump-1-01HZX3M2Q5T7V8W9XAYBZC{i:04d}", "kind": "fuel.completed",
                "at_utc_s": 1_790_000_000, "body": {"amount_kop": i}}
    records: list = [rec(i) for i in range(3)]
    if change == "twice":
        records.append(rec(1))
    elif change == "extra key":
        records[1]["x"] = 1
    elif change == "missing key":
        del records[2]["kind"]
    elif change == "not a map":
        records[0] = [1, 2]
    elif change == "other site":
        records[0]["record_id"] = records[0]["record_id"].replace(site, "SIM-077-002")
    elif change in ("long lane", "lane of 64", "empty lane"):
        lane = {"long lane": "p" * 65, "lane of 64": "p" * 64, "empty lane": ""}[change]
        records[0]["txn_id"] = f"{site}:{lane}-01HZX3M2Q5T7V8W9XAYBZC0000"
        records[0]["lane"] = lane
    elif change == "self reference":
        loop: list = []
        loop.append(loop)
        records[0]["body"] = {"loop": loop}
    expected_ok = change in ("lane of 64",)
    assert (_same(records, site) is not None) == expected_ok


@pytest.mark.parametrize("max_depth", [1, 2, 3, 31, 32, 33, 300])
@pytest.mark.parametrize("depth", [0, 1, 2, 3, 31, 32, 33])
def test_the_depth_limit_is_the_same(max_depth: int, depth: int) -> None:
    site = "a"
    body: dict = {"v": 1}
    for i in range(depth):
        body = {"n": body} if i % 2 else {"l": [body]}
    rec = {"record_id": f"{site}-01HZX3M2Q5T7V8W9XAYBZC0001", "lane": "L", "txn_id": f"{site}:L-01HZX3M2Q5T7V8W9XAYBZC0001",
           "kind": "k", "at_utc_s": 0, "body": body}
    _same([rec], site, Limits(max_body_depth=max_depth))


@SETTINGS
@given(batches(), msgpack_values, st.data())
def test_decode_through_either_check_gives_the_same_message_or_error(b: Batch, new_value, data) -> None:
    """The whole of ``decode``: a signed frame with one value of a record replaced."""
    _, mtype, site, payload, _ = msgpack.unpackb(encode(b, KEYS), raw=False)
    paths = list(_paths(payload["records"]))[1:]
    if paths:
        path = data.draw(st.sampled_from(paths), label="path")
        target = payload["records"]
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = new_value
    try:
        signed = msgpack.Packer().pack_array_header(5) + b"".join(msgpack.packb(x) for x in (1, mtype, site, payload))
    except (OverflowError, ValueError):
        return
    frame = _signed(signed, site)

    def answer() -> object:
        try:
            return decode(frame, KEYS, topic=batches_topic(b.site_id))
        except WireError as e:
            return (type(e), str(e))
    native = answer()
    fast = C._records_fast
    C._records_fast = C._records_fast_py  # type: ignore[assignment]
    try:
        python = answer()
    finally:
        C._records_fast = fast  # type: ignore[assignment]
    assert native == python


def _pack_answer(fn, site: str, recs) -> object:
    try:
        return fn(site, recs, bodies_checked=True)
    except WireError as e:
        return (type(e), str(e))


@SETTINGS
@given(batches(), st.sampled_from(["record_id", "site_id", "lane", "txn_id", "kind", "at_utc_s", "body", None]),
       msgpack_values, st.data())
def test_the_edge_packs_journal_rows_as_it_packs_records(b: Batch, field, new_value, data) -> None:
    """``pack_record_rows`` (the sync client's rows, checked in C) gives the bytes or the
    refusal of ``pack_records`` (WireRecords, checked in Python), a field replaced or not."""
    # a str body is the journal's stored JSON text, the other form pack_record_rows takes
    # (tests/wire/test_jsonpack.py): here the bodies are the decoded ones
    assume(not (field == "body" and isinstance(new_value, str)))
    fields = ["record_id", "site_id", "lane", "txn_id", "kind", "at_utc_s", "body"]
    rows = [(i + 1, *(getattr(r, f) for f in fields)) for i, r in enumerate(b.records)]
    if field is not None and rows:
        i = data.draw(st.integers(0, len(rows) - 1), label="row")
        row = list(rows[i])
        row[1 + fields.index(field)] = new_value
        rows[i] = tuple(row)
    native = _pack_answer(C.pack_record_rows, b.site_id, rows)
    python = _pack_answer(C.pack_records, b.site_id, [WireRecord(*r[1:]) for r in rows])
    assert native == python
    if field is None:
        assert C.encode_packed_batch(b.site_id, b.batch_seq, b.created_utc_s, native, KEYS) == encode(b, KEYS)  # type: ignore[arg-type]
