"""Issue 12's fourth pass on ingest: the one pass per record, the binary array parameters
and COPY on PostgreSQL, and the cabinet's club history index (schema v9).

- :meth:`host.effects.BatchEffects.read` (the one pass) is checked against the reference way
  it replaced (``host.records.facts``, then ``BatchEffects.add``, as ``host.ingest`` did before)
  on the benchmark's well-formed bodies and on random damage to them: the same ``records``
  columns, the same effects kept, the same flags and the same messages.
- :func:`host.db.pg_array` round-trips any list of text or 64-bit integers through a real
  PostgreSQL and declines what it cannot pack.
- A ledger migrated to v9 keeps answering the cabinet's history from the partial index.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authz import sample
from benchmarks.host_ingest import make_records
from host import records as K
from host.db import PgInt8Array, PgTextArray, connect, pg_array
from host.effects import BatchEffects
from host.ledger import Ledger
from host.schema import CLUB_HISTORY_KINDS_SQL, SCHEMA_VERSION
from wire import Batch, SiteKeys, WireError, WireRecord, batches_topic, decode, encode

MODEL = sample.fuel_model(n_cards=50, n_stations=5, seed=3)
RECORDS = make_records(400, MODEL, seed=5)
#: One record of each kind the benchmark writes (the hot kinds of the one pass).
BY_KIND = {r.kind: r for r in RECORDS}
HEX32 = "0123456789abcdef" * 2


def reference(fx: BatchEffects, rec: WireRecord) -> tuple:
    """What ``host.ingest`` did per record before the one pass."""
    if rec.kind not in K.KNOWN_KINDS:
        fx.flag(rec, "unknown_kind", f"record kind {rec.kind!r} is not known to this host: stored, not applied")
        return K.NO_FACTS
    try:
        cols = K.facts(rec.kind, rec.body).columns()
        fx.add(rec)
    except K.BodyError as exc:
        fx.flag(rec, "bad_body", f"{rec.kind}: {exc}")
        return K.NO_FACTS
    return cols


def kept(fx: BatchEffects) -> tuple:
    """Everything a BatchEffects holds after reading (before applying), comparable."""
    return ([(c.rec.record_id, c.contract_id, c.card_no, c.product, c.amount_kop, c.volume_ml, c.auth_at_utc_s)
             for c in fx.charges],
            [(o.card_no, o.tc, o.write_id, o.rec.record_id) for o in fx.obs],
            fx.corrections, [(k, c, r.record_id) for k, c, r in fx.club],
            [(c, r.record_id, why) for c, r, why in fx.refusals], fx.flags, fx.issues)


def both(recs: list[WireRecord]) -> tuple[list, tuple, list, tuple]:
    fast, slow = BatchEffects(None, "S-1", 0, 600), BatchEffects(None, "S-1", 0, 600)  # type: ignore[arg-type]
    got = [fast.read(r) for r in recs]
    want = [reference(slow, r) for r in recs]
    return got, kept(fast), want, kept(slow)


def test_the_one_pass_reads_the_benchmark_records_as_the_reference_does():
    got, fast, want, slow = both(RECORDS)
    assert got == want and fast == slow
    assert set(BY_KIND) >= {K.FUEL_PREAUTH, K.FUEL_RESERVED, K.FUEL_PRESET, K.FUEL_COMPLETED, K.FUEL_CARD_COMMITTED}
    charges, obs = fast[0], fast[1]
    assert len(charges) == sum(r.kind == K.FUEL_COMPLETED for r in RECORDS) > 0
    assert len(obs) == sum(r.kind in (K.FUEL_PREAUTH, K.FUEL_RESERVED, K.FUEL_CARD_COMMITTED) for r in RECORDS)
    assert not fast[5], "well-formed records raise no flag"
    done = next(r for r in RECORDS if r.kind == K.FUEL_COMPLETED)
    assert got[RECORDS.index(done)] == (done.body["contract_id"], done.body["card_no"], "AI95",
                                        done.body["amount_kop"], done.body["delivered_volume_ml"])


#: Values a damaged field may take: other types, bools for numbers, out-of-range numbers,
#: text that is nearly a write id, nested containers.
BOUNDARY = [-1, 0, 10**9, 10**9 + 1, 10**12, 10**12 + 1, 7_258_118_400, 7_258_118_401, 2**64, True, False, None,
            1.0, HEX32, HEX32.upper(), HEX32[:-1], HEX32 + "0", " " + HEX32[1:], "g" + HEX32[1:], "AI95", "", [], {}]
ODD = st.one_of(
    st.sampled_from(BOUNDARY), st.integers(min_value=-2**70, max_value=2**70),
    st.text(max_size=5), st.floats(allow_nan=False), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["card_no", "product", "amount_kop"]), st.integers(), max_size=2))


#: The fields the one pass reads of each hot kind: damaged more often than the others.
HOT_PATHS = {
    K.FUEL_COMPLETED: [("request",), ("request", "product"), ("request", "now_utc_s"), ("contract_id",),
                       ("card_no",), ("amount_kop",), ("delivered_volume_ml",)],
    K.FUEL_RESERVED: [("card_no",), ("txn_counter",), ("write_id",)],
    K.FUEL_CARD_COMMITTED: [("card_no",), ("txn_counter",), ("write_id",)],
    K.FUEL_PREAUTH: [("card",), ("card", "contract_id"), ("card", "card_no"), ("card", "expected_txn"),
                     ("request",), ("request", "product"), ("decision",), ("decision", "amount_kop"),
                     ("decision", "volume_ml")],
}


def paths(body: Any, prefix: tuple = ()) -> list[tuple]:
    out = []
    if isinstance(body, dict):
        for k, v in body.items():
            out.append(prefix + (k,))
            out += paths(v, prefix + (k,))
    return out


@st.composite
def damaged(draw: st.DrawFn) -> WireRecord:
    rec = BY_KIND[draw(st.sampled_from(sorted(BY_KIND)))]
    body = copy.deepcopy(rec.body)
    for _ in range(draw(st.integers(1, 3))):
        ps = paths(body)
        if not ps:
            break
        hot = [p for p in HOT_PATHS.get(rec.kind, []) if p in ps]
        path = draw(st.sampled_from(hot if hot and draw(st.integers(0, 3)) else ps))
        parent = body
        for k in path[:-1]:
            parent = parent[k]
        if draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(ODD)
    if draw(st.integers(0, 9)) == 0:
        body = draw(st.sampled_from([[], "x", None, 5]))  # not an object at all
    return WireRecord(rec.record_id, rec.site_id, rec.lane, rec.txn_id, rec.kind, rec.at_utc_s, body)


@pytest.mark.parametrize("kind", sorted(HOT_PATHS))
def test_every_field_the_one_pass_reads_damaged_every_way_is_read_as_the_reference_does(kind: str):
    rec = BY_KIND[kind]
    cases = 0
    for path in HOT_PATHS[kind]:
        for value in [_DELETE, *BOUNDARY]:
            body = copy.deepcopy(rec.body)
            parent = body
            for k in path[:-1]:
                parent = parent[k]
            if value is _DELETE:
                del parent[path[-1]]
            else:
                parent[path[-1]] = copy.deepcopy(value)
            r = WireRecord(rec.record_id, rec.site_id, rec.lane, rec.txn_id, kind, rec.at_utc_s, body)
            got, fast, want, slow = both([r])
            assert (got, fast) == (want, slow), (path, value)
            cases += 1
    assert cases == len(HOT_PATHS[kind]) * (len(BOUNDARY) + 1)


_DELETE = object()


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(damaged(), min_size=1, max_size=4))
def test_a_damaged_body_is_read_and_refused_as_the_reference_does(recs: list[WireRecord]):
    got, fast, want, slow = both(recs)
    assert got == want
    assert fast == slow  # the same effects kept, the same flags, the same messages


def test_a_bad_body_of_each_hot_kind_is_flagged_with_no_columns_and_no_effect():
    bad = {K.FUEL_COMPLETED: ("amount_kop", -5), K.FUEL_RESERVED: ("write_id", HEX32.upper()),
           K.FUEL_CARD_COMMITTED: ("txn_counter", True), K.FUEL_PREAUTH: ("card", None)}
    for kind, (field, value) in bad.items():
        rec = BY_KIND[kind]
        body = dict(rec.body, **{field: value})
        fx = BatchEffects(None, "S-1", 0, 600)  # type: ignore[arg-type]
        r = WireRecord(rec.record_id, rec.site_id, rec.lane, rec.txn_id, kind, rec.at_utc_s, body)
        assert fx.read(r) == K.NO_FACTS, kind
        assert fx.flags == {rec.record_id: "bad_body"} and not fx.charges and not fx.obs, kind
        assert fx.issues[0][2].startswith(f"{kind}: ") and field.split(".")[0] in fx.issues[0][2], fx.issues


def test_an_unknown_kind_is_flagged_and_a_stored_only_kind_reads_nothing():
    fx = BatchEffects(None, "S-1", 0, 600)  # type: ignore[arg-type]
    rec = BY_KIND[K.FUEL_PRESET]
    assert fx.read(WireRecord(rec.record_id, rec.site_id, rec.lane, rec.txn_id, "fuel.teleport", 1, {})) == K.NO_FACTS
    assert fx.flags == {rec.record_id: "unknown_kind"}
    fx = BatchEffects(None, "S-1", 0, 600)  # type: ignore[arg-type]
    assert fx.read(WireRecord("S-1-x", "S-1", "pump-1", "t", K.FUEL_PRESET, 1, "not even a map")) == K.NO_FACTS
    assert not fx.flags, "a stored-only kind's body is the edge's business: stored as it is, as before"


# -- PostgreSQL arrays in binary ---------------------------------------------------------------

TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


@pytest.fixture(scope="module")
def pg(postgres: str):
    db = connect(postgres)
    yield db
    db.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXT, min_size=1, max_size=30),
       ints=st.lists(st.integers(min_value=-2**63, max_value=2**63 - 1), min_size=1, max_size=30))
def test_binary_arrays_round_trip_through_postgresql(pg, texts: list[str], ints: list[int]):
    assert isinstance(pg_array(texts), PgTextArray) and isinstance(pg_array(ints), PgInt8Array)
    assert pg.fetchone("SELECT ?::text[], ?::bigint[]", (texts, ints)) == (texts, ints)
    assert pg.fetchall("SELECT * FROM unnest(?::text[], ?::bigint[]) WITH ORDINALITY ORDER BY ordinality",
                       (texts[:1] * len(ints), ints)) == [(texts[0], v, i + 1) for i, v in enumerate(ints)]
    probe = texts[0]
    assert pg.scalar("SELECT ? = ANY(?)", (probe, texts)) is True


def test_lists_binary_cannot_hold_go_to_psycopg_as_before(pg):
    for values in ([], [None, "a"], [True, False], [1, "a"], [2**63], [1.5]):
        assert pg_array(values) is None, values
    assert pg.fetchone("SELECT ?::text[]", ([None, "a"],)) == ([None, "a"],)
    assert pg.fetchone("SELECT ?::bigint[], ?::numeric[]", ([], [2**63])) == ([], [2**63])
    with pytest.raises(Exception, match="boolean"):
        pg.fetchone("SELECT ?::bigint[]", ([True],))


# -- the cabinet's club history index ------------------------------------------------------------

def test_v9_indexes_the_club_history_with_the_predicate_the_cabinet_asks_with(ledger_url: str):
    assert SCHEMA_VERSION >= 8
    with Ledger.open(ledger_url) as led:
        db = led.db
        sql = ("SELECT at_utc_s, kind, card_no, amount_kop, record_id, body FROM records WHERE card_no IN (?, ?) "
               f"AND {CLUB_HISTORY_KINDS_SQL} ORDER BY at_utc_s DESC")
        if db.is_pg:
            db.execute("SET enable_seqscan = off")
            plan = " ".join(r[0] for r in db.fetchall("EXPLAIN " + sql, ("a", "b")))
            db.execute("RESET enable_seqscan")
        else:
            plan = " ".join(str(r[-1]) for r in db.fetchall("EXPLAIN QUERY PLAN " + sql, ("a", "b")))
            text = db.scalar("SELECT sql FROM sqlite_master WHERE name = 'web_records_club_card'")
            assert " IN " not in text.upper() and "OR kind = 'till.topup'" in text
        assert "web_records_club_card" in plan, plan
        sql = ("SELECT product, count(*), sum(volume_ml), sum(amount_kop) FROM records WHERE contract_id = ? "
               "AND at_utc_s >= ? AND at_utc_s < ? AND kind = 'fuel.completed' GROUP BY product")  # host.reports
        if db.is_pg:
            db.execute("SET enable_seqscan = off")
            plan = " ".join(r[0] for r in db.fetchall("EXPLAIN " + sql, (1, 0, 10)))
            db.execute("RESET enable_seqscan")
        else:
            plan = " ".join(str(r[-1]) for r in db.fetchall("EXPLAIN QUERY PLAN " + sql, (1, 0, 10)))
        assert "records_contract" in plan, plan
        gone = ("SELECT count(*) FROM pg_indexes WHERE indexname = 'contract_entries_at' AND schemaname = current_schema()"
                if db.is_pg else "SELECT count(*) FROM sqlite_master WHERE name = 'contract_entries_at'")
        assert db.scalar(gone) == 0, "contract_entries_month serves what contract_entries_at did"


def test_a_v7_ledger_moves_to_the_latest_with_its_club_history_intact(tmp_path):
    from host import schema
    url = f"sqlite:///{tmp_path / 'v7.sqlite'}"
    db = connect(url)
    try:
        with db.transaction():
            for step in schema.MIGRATIONS[:7]:
                for stmt in step(db):
                    db.execute(stmt)
            db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '7') "
                       "ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            for i, kind in enumerate(["till.sale_committed", "till.return", "fuel.completed", "till.topup"]):
                db.execute("INSERT INTO records (record_id, site_id, batch_seq, lane, txn_id, kind, at_utc_s, body, "
                           "card_no, ingested_at_utc_s) VALUES (?, 'S-1', 1, 'till-1', 't', ?, ?, '{}', 'C1', 0)",
                           (f"S-1-{i}", kind, 100 + i))
    finally:
        db.close()
    with Ledger.open(url) as led:
        assert led.db.scalar("SELECT value FROM meta WHERE key = 'schema_version'") == str(SCHEMA_VERSION)
        rows = led.db.fetchall("SELECT record_id FROM records INDEXED BY web_records_club_card WHERE card_no = 'C1' "
                               f"AND {CLUB_HISTORY_KINDS_SQL} ORDER BY at_utc_s")
        assert [r[0] for r in rows] == ["S-1-0", "S-1-1", "S-1-3"]



def decoded(recs: list[WireRecord]) -> list[WireRecord] | None:
    """``recs`` sent through a signed batch frame and decoded (their bodies kept as bytes, JSON
    text and ``body_fields`` by the native batch reader); None when encode refuses them (a float,
    an integer beyond 64 bits)."""
    site = recs[0].site_id
    keys = SiteKeys({site: bytes(32)})
    unique = list({r.record_id: r for r in recs}.values())
    try:
        frame = encode(Batch(site, 1, tuple(unique), 0), keys)
    except WireError:
        return None
    out = list(decode(frame, keys, topic=batches_topic(site)).records)  # type: ignore[union-attr]
    assert all(r.body_packed is not None for r in out), "the native batch reader read the frame"
    return out


def test_decoded_records_read_from_their_picked_fields_as_the_reference_does():
    recs = decoded(RECORDS)
    assert recs is not None and all(r.body_fields is not None for r in recs if r.kind in HOT_PATHS)
    got, fast, want, slow = both(recs)
    assert got == want and fast == slow
    fresh = decoded(RECORDS)
    assert fresh is not None
    fx = BatchEffects(None, "S-1", 0, 600)  # type: ignore[arg-type]
    for r in fresh:
        fx.read(r)
    # the hot and the stored-only kinds were read without building their bodies
    assert all(r.body_packed is not None for r in fresh)
    assert not any(_built(r) for r in fresh if r.kind in HOT_PATHS or r.kind == K.FUEL_PRESET)


def _built(rec: WireRecord) -> bool:
    """Whether ``rec``'s body dict was built by anything read so far."""
    return bool(vars(WireRecord)["body"].built(rec))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(damaged(), min_size=1, max_size=4))
def test_a_damaged_body_decoded_is_read_and_refused_as_the_reference_does(recs: list[WireRecord]):
    got_recs = decoded([r for r in recs if isinstance(r.body, dict)] or recs[:0]) if any(
        isinstance(r.body, dict) for r in recs) else None
    if got_recs is None:
        return
    got, fast, want, slow = both(got_recs)
    assert got == want
    assert fast == slow
