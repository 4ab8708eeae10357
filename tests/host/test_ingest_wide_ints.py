"""A body integer beyond the ledger's 64-bit columns (the wire carries up to 2^64 - 1) must not
make a poison batch: the record is stored flagged ``bad_body`` with a clear detail, nothing of it
is applied, the rest of the batch is, and the batch is acked. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import re
import dataclasses
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz import sample
from host import master
from host.ingest import INT64_MAX, INT64_MIN, ingest_batch, ingest_site_batches, wide_int_path
from host.ledger import Ledger
from wire import Batch, WireRecord

from .edge import CONTRACT, T0, Site, contract, fuel_card

BALANCE = 10_000_000


@pytest.fixture
def world(ledger: Ledger) -> Ledger:
    master.put_products(ledger, sample.PRODUCTS)
    master.create_contract(ledger, contract(balance_kop=BALANCE))
    master.issue_fuel_card(ledger, fuel_card())
    return ledger


def with_body(rec: WireRecord, edit) -> WireRecord:
    body = copy.deepcopy(rec.body)
    edit(body)
    return dataclasses.replace(rec, body=body)


def completed(records: list[WireRecord]) -> WireRecord:
    return next(r for r in records if r.kind == "fuel.completed")


@pytest.mark.parametrize("value", [1 << 63, (1 << 64) - 1, INT64_MIN - 1])
def test_a_wide_contract_id_is_stored_flagged_and_the_batch_acked(world: Ledger, value: int, caplog):
    s = Site("S1")
    good = s.fuel_sale(tc=10)
    other = s.fuel_sale(tc=12, at=T0 + 600)
    bad = with_body(completed(other), lambda b: b.__setitem__("contract_id", value))
    recs = tuple(good) + tuple(r if r.kind != "fuel.completed" else bad for r in other)
    with caplog.at_level(logging.WARNING, logger="edgepos.host.ingest"):
        ack = ingest_batch(world, Batch("S1", 1, recs, T0))
    assert ack.up_to_seq == 1 and not ack.rejected
    stored = world.record(bad.record_id)
    assert stored is not None and stored["flag"] == "bad_body"
    assert stored["body"]["contract_id"] == value  # the body is kept as received
    row = world.db.fetchone("SELECT contract_id, amount_kop FROM records WHERE record_id = ?", (bad.record_id,))
    assert tuple(row) == (None, None)
    # only the good sale is charged; every other record of the batch is stored
    assert world.balance_kop(CONTRACT) == BALANCE - completed(good).body["amount_kop"]
    for r in recs:
        assert world.record(r.record_id) is not None
    issues = [i for i in world.issues() if i.record_id == bad.record_id]
    assert [i.kind for i in issues] == ["bad_body"]
    assert "body.contract_id" in issues[0].detail and "64-bit" in issues[0].detail
    assert any("body.contract_id" in m and bad.record_id in m for m in caplog.messages)
    # sent again, nothing changes
    assert ingest_batch(world, Batch("S1", 1, recs, T0)).up_to_seq == 1
    assert world.balance_kop(CONTRACT) == BALANCE - completed(good).body["amount_kop"]


def test_a_wide_int_deep_in_a_body_is_flagged(world: Ledger):
    s = Site("S1")
    sale = s.fuel_sale(tc=10)
    pre = next(r for r in sale if r.kind == "fuel.preauth")
    bad = with_body(pre, lambda b: b["card"].__setitem__("expected_txn", (1 << 64) - 1))
    recs = tuple(bad if r is pre else r for r in sale)
    assert ingest_batch(world, Batch("S1", 1, recs, T0)).up_to_seq == 1
    assert world.record(bad.record_id)["flag"] == "bad_body"
    assert "body.card.expected_txn" in next(i.detail for i in world.issues() if i.record_id == bad.record_id)
    assert world.balance_kop(CONTRACT) == BALANCE - completed(sale).body["amount_kop"]


def test_a_run_of_batches_with_a_wide_int_is_applied_and_acked(world: Ledger):
    s = Site("S1")
    sales = [s.fuel_sale(tc=10 + 2 * i, at=T0 + 600 * i) for i in range(3)]
    bad = with_body(completed(sales[1]), lambda b: b.__setitem__("amount_kop", 1 << 63))
    batches = [Batch("S1", i + 1, tuple(bad if r.record_id == bad.record_id else r for r in sale), T0)
               for i, sale in enumerate(sales)]
    ack = ingest_site_batches(world, batches)
    assert ack.up_to_seq == 3 and not ack.rejected
    assert world.record(bad.record_id)["flag"] == "bad_body"
    assert world.balance_kop(CONTRACT) == BALANCE - sum(completed(x).body["amount_kop"] for x in (sales[0], sales[2]))
    assert world.db.scalar("SELECT COUNT(*) FROM records") == sum(len(x) for x in sales)


def test_the_largest_64_bit_values_are_not_wide(world: Ledger):
    s = Site("S1")
    sale = s.fuel_sale(tc=10)
    rec = with_body(completed(sale), lambda b: b.__setitem__("contract_id", INT64_MAX))
    ingest_batch(world, Batch("S1", 1, (rec,), T0))
    stored = world.db.fetchone("SELECT flag, contract_id FROM records WHERE record_id = ?", (rec.record_id,))
    assert tuple(stored) == ("unknown_contract", INT64_MAX)  # applied the usual way: no such contract


def test_wide_int_path_names_the_first_wide_value():
    assert wide_int_path({"a": 1, "b": [INT64_MIN, INT64_MAX, {"c": True}], "d": None, "e": "x"}) is None
    assert wide_int_path({"a": {"b": [0, 1 << 63]}}) == "body.a.b[1]"
    assert wide_int_path([INT64_MIN - 1]) == "body[0]"


def test_a_failure_without_wide_ints_is_raised_and_applies_nothing(world: Ledger, monkeypatch):
    from host import effects

    def boom(self):
        raise RuntimeError("the database went away")
    monkeypatch.setattr(effects.BatchEffects, "apply", boom)
    s = Site("S1")
    sale = s.fuel_sale(tc=10)
    with pytest.raises(RuntimeError, match="went away"):
        ingest_batch(world, Batch("S1", 1, tuple(sale), T0))
    assert world.db.scalar("SELECT COUNT(*) FROM records") == 0


_values = st.recursive(
    st.none() | st.booleans() | st.text(max_size=4) | st.integers(min_value=-(1 << 64), max_value=1 << 64)
    | st.sampled_from([INT64_MIN, INT64_MAX, INT64_MIN - 1, INT64_MAX + 1]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text("abc", min_size=1, max_size=3), inner,
                                                                  max_size=4),
    max_leaves=20)


def _ints(v: object) -> list[int]:
    if type(v) is int:
        return [v]
    if isinstance(v, dict):
        return [i for x in v.values() for i in _ints(x)]
    if isinstance(v, list):
        return [i for x in v for i in _ints(x)]
    return []


def _at(v: object, path: str) -> object:
    for part in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path[len("body"):]):
        v = v[part[0]] if part[0] else v[int(part[1])]  # type: ignore[index]
    return v


@given(_values)
@settings(max_examples=300, deadline=None)
def test_wide_int_path_finds_a_wide_int_exactly_when_there_is_one(body: object):
    path = wide_int_path(body)
    wide = [i for i in _ints(body) if not INT64_MIN <= i <= INT64_MAX]
    assert (path is None) == (not wide)
    if path is not None:
        found = _at(body, path)
        assert type(found) is int and not INT64_MIN <= found <= INT64_MAX
