"""The journal (``terminal.journal``) and its ids (``terminal.ids``), on real SQLite files.

Every await is bounded by ``asyncio.wait_for`` so a bug fails a test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from terminal.ids import IdError, new_id, new_txn_id, parse_id, ulid_time_ms
from terminal.journal import (
    SCHEMA_VERSION, BodyError, DuplicateRecordError, DuplicateRequestError, IdemEntry, Journal,
    JournalClosedError, JournalDiskError, JournalError, Record, canonical_json,
)

SITE = "SIM-077-001"
TERMINAL = frozenset({"completed", "voided", "declined"})
T = 10.0  # seconds any single await may take before the test fails


def w(aw, timeout: float = T):
    """Bound an await."""
    return asyncio.wait_for(aw, timeout)


def run(coro, timeout: float = 30.0):
    """Run a test coroutine, bounded as a whole too."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def rec(lane: str = "pump1", txn_id: str | None = None, kind: str = "preauth",
        body: dict | None = None, record_id: str | None = None, at_utc_s: int = 1_700_000_000) -> Record:
    return Record(record_id or new_id(SITE), SITE, lane, txn_id or new_txn_id(SITE, lane), kind,
                  at_utc_s, {"amount_kop": 150_000} if body is None else body)


def idem(key: str, response: dict | None = None, status: int = 201) -> IdemEntry:
    return IdemEntry(key, "/v1/fuel/preauth", "sha256:" + key, status,
                     {"decision": "approved"} if response is None else response)


@pytest.fixture
def jpath(tmp_path: Path) -> Path:
    return tmp_path / "var" / "journal.sqlite"


@pytest.fixture
def journal(jpath: Path):
    j = Journal.open(jpath, SITE, terminal_kinds=TERMINAL)
    yield j
    j.close()


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another connection holding the database's write lock: the writer thread will block
    in BEGIN IMMEDIATE (its busy timeout) until ``ROLLBACK`` releases it."""
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    return blocker


# --- round trips ------------------------------------------------------------------------------

def test_append_and_read_round_trip(journal: Journal):
    txn = new_txn_id(SITE, "pump1")
    records = [rec(txn_id=txn, kind="preauth", body={"volume_ml": 40_000, "amount_kop": 246_000}),
               rec(txn_id=txn, kind="dispensed", body={"volume_ml": 31_250, "nozzle": 2,
                                                      "lines": [{"sku": "AI95", "ok": True}]}),
               rec(txn_id=txn, kind="completed", body={"amount_kop": 192_188, "note": "Ёлка ✓"})]

    async def go():
        return await w(journal.append(records))

    seqs = run(go())
    assert seqs == [1, 2, 3]
    got = journal.records_for_txn(txn)
    assert [r.seq for r in got] == seqs
    for r, g in zip(records, got):
        assert (g.record_id, g.site_id, g.lane, g.txn_id, g.kind, g.at_utc_s, g.body, g.acked) == \
               (r.record_id, r.site_id, r.lane, r.txn_id, r.kind, r.at_utc_s, r.body, False)
    assert journal.tail(2) == got[1:]
    assert journal.after(1, 10) == got[1:]
    assert journal.records_for_txn("nope") == []
    # the body is stored as canonical JSON: sorted keys, compact, UTF-8
    with sqlite3.connect(journal.path) as conn:
        stored = conn.execute("SELECT body FROM records WHERE seq = 3").fetchone()[0]
    assert stored == '{"amount_kop":192188,"note":"Ёлка ✓"}'
    assert journal.commits == 1


def test_tail_per_lane_and_empty_append(journal: Journal):
    async def go():
        for i in range(6):
            await w(journal.append([rec(lane=f"till{i % 2}", body={"i": i})]))
        assert await w(journal.append([])) == []

    run(go())
    assert [r.body["i"] for r in journal.tail(2, lane="till1")] == [3, 5]
    assert [r.body["i"] for r in journal.tail(3)] == [3, 4, 5]
    assert journal.tail(0) == []
    assert journal.commits == 6


# --- idempotency ------------------------------------------------------------------------------

def test_idempotency_entry_commits_with_its_records(journal: Journal):
    dup = rec()

    async def go():
        seqs = await w(journal.append([dup, rec(txn_id=dup.txn_id)],
                                      idem=idem("k1", {"decision": "approved", "amount_kop": 5})))
        entry = await w(journal.lookup_request("k1"))
        assert entry is not None
        assert (entry.idem_key, entry.endpoint, entry.request_digest, entry.status) == \
               ("k1", "/v1/fuel/preauth", "sha256:k1", 201)
        assert entry.response == {"decision": "approved", "amount_kop": 5}
        assert entry.record_seq == seqs[0]
        assert abs(entry.created_utc_s - time.time()) < 60
        assert await w(journal.lookup_request("k2")) is None

        # A request whose records cannot be written leaves no answer behind either.
        other = rec()
        with pytest.raises(DuplicateRecordError, match=dup.record_id):
            await w(journal.append([other, Record(dup.record_id, SITE, "pump1", other.txn_id,
                                                  "preauth", 1, {})], idem=idem("k2")))
        assert await w(journal.lookup_request("k2")) is None
        assert journal.records_for_txn(other.txn_id) == []

        # An answer with no records (a declined request) is stored on its own.
        assert await w(journal.append([], idem=idem("k3", {"decision": "declined"}, 402))) == []
        assert (await w(journal.lookup_request("k3"))).record_seq is None

        with pytest.raises(DuplicateRequestError, match="k1"):
            await w(journal.append([rec()], idem=idem("k1")))

    run(go())
    assert journal.counts().records == 2 and journal.counts().requests == 2


def test_duplicate_record_fails_only_its_caller_in_a_group(journal: Journal):
    first = rec()

    async def go():
        await w(journal.append([first]))
        base = journal.commits
        blocker = hold_write_lock(journal.path)
        try:
            warmup = asyncio.create_task(w(journal.append([rec(body={"who": "warmup"})])))
            await asyncio.sleep(0.05)  # the writer took it and waits for the lock
            a = asyncio.create_task(w(journal.append([rec(body={"who": "a"})], idem=idem("a"))))
            dup = asyncio.create_task(w(journal.append(
                [rec(body={"who": "dup"}), Record(first.record_id, SITE, "till1", "t", "sale", 1, {})],
                idem=idem("dup"))))
            b = asyncio.create_task(w(journal.append([rec(body={"who": "b"})], idem=idem("b"))))
            await asyncio.sleep(0.02)  # all three are queued behind the blocked warm-up
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await w(warmup)
        seq_a, seq_b = await w(a), await w(b)
        with pytest.raises(DuplicateRecordError, match=first.record_id):
            await w(dup)
        assert journal.commits == base + 2  # warm-up alone, then a + dup + b in ONE transaction
        assert seq_b[0] == seq_a[0] + 1  # dup's savepoint was rolled back: no gap in between
        assert await w(journal.lookup_request("a")) is not None
        assert await w(journal.lookup_request("dup")) is None
        assert await w(journal.lookup_request("b")) is not None

    run(go())
    assert [r.body.get("who") for r in journal.tail(10)] == [None, "warmup", "a", "b"]


def test_duplicate_idempotency_key_fails_only_its_caller_in_a_group(journal: Journal):
    async def go():
        blocker = hold_write_lock(journal.path)
        try:
            warmup = asyncio.create_task(w(journal.append([rec()])))
            await asyncio.sleep(0.05)
            calls = [asyncio.create_task(w(journal.append([rec(body={"n": n})], idem=idem(key))))
                     for n, key in enumerate(["x", "y", "x", "z"])]
            await asyncio.sleep(0.02)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await w(warmup)
        results = await w(asyncio.gather(*calls, return_exceptions=True))
        assert isinstance(results[2], DuplicateRequestError)
        assert all(isinstance(r, list) for i, r in enumerate(results) if i != 2)
        assert journal.commits == 2
        assert (await w(journal.lookup_request("x"))).record_seq == results[0][0]

    run(go())
    assert sorted(r.body["n"] for r in journal.tail(10) if "n" in r.body) == [0, 1, 3]


def test_duplicate_record_id_within_one_append(journal: Journal):
    r = rec()
    with pytest.raises(DuplicateRecordError, match="twice"):
        run(w(journal.append([r, r])))
    assert journal.counts().records == 0


# --- bodies -----------------------------------------------------------------------------------

@pytest.mark.parametrize("body, message", [
    ({"amount": 1.5}, r"\.amount: float 1\.5"),
    ({"lines": [{"qty": 1}, {"qty": float("nan")}]}, r"\.lines\[1\]\.qty: float nan"),
    ({"x": float("inf")}, "float inf"),
    ({1: "a"}, "key 1 is a int"),
    ({"t": (1, 2)}, "tuple"),
    ({"b": b"raw"}, "bytes is not JSON"),
    ({"s": {1, 2}}, "set is not JSON"),
    ({"big": 1 << 63}, "64-bit"),
    ({"bad": "\ud800"}, "surrogate"),
    ([1, 2], "must be a mapping"),
])
def test_non_json_bodies_are_rejected_before_writing(journal: Journal, body, message):
    with pytest.raises(BodyError, match=message):
        run(w(journal.append([rec(), rec(body=body)])))
    with pytest.raises(BodyError, match=message):
        run(w(journal.append([rec()], idem=idem("k", response=body))))
    assert journal.counts().records == 0 and journal.counts().requests == 0
    assert journal.commits == 0


def test_deep_or_self_referencing_bodies_are_rejected(journal: Journal):
    loop_body: dict = {}
    loop_body["self"] = loop_body
    deep: dict = {}
    node = deep
    for _ in range(100):
        node["n"] = {}
        node = node["n"]
    for body in (loop_body, deep):
        with pytest.raises(BodyError, match="nested deeper"):
            run(w(journal.append([rec(body=body)])))


def test_record_fields_are_checked(journal: Journal):
    good = rec()
    bad = [
        (Record(good.record_id, "OTHER-SITE", "pump1", "t", "k", 1, {}), "site 'OTHER-SITE'"),
        (Record(good.record_id, SITE, "pump1", "t", "k", 1, {}, seq=5), "set by the journal"),
        (Record(good.record_id, SITE, "", "t", "k", 1, {}), "lane must be"),
        (Record(good.record_id, SITE, "pump1", "t", "k", 1.0, {}), "at_utc_s"),
        (Record(good.record_id, SITE, "pump1", "t", None, 1, {}), "kind"),
    ]
    for record, message in bad:
        with pytest.raises(JournalError, match=message):
            run(w(journal.append([record])))
    with pytest.raises(JournalError, match="sequence of Records"):
        run(w(journal.append(good)))  # type: ignore[arg-type]
    with pytest.raises(JournalError, match="status"):
        run(w(journal.append([good], idem=IdemEntry("k", "/e", "d", 1000, {}))))
    assert journal.counts().records == 0


def test_canonical_json():
    assert canonical_json({"b": [1, {"z": None, "a": True}], "a": "é"}) == \
        '{"a":"é","b":[1,{"a":true,"z":null}]}'


JSON_LEAVES = (st.none() | st.booleans() | st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
               | st.text(max_size=20))
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                       max_size=4),
    max_leaves=25)
JSON_BODIES = st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=6)

BAD_LEAVES = (st.floats(allow_nan=True, allow_infinity=True)
              | st.tuples(st.integers())
              | st.binary(max_size=4)
              | st.frozensets(st.integers(), max_size=2)
              | st.integers(min_value=1 << 63)
              | st.integers(max_value=-(1 << 63) - 1)
              | st.complex_numbers()
              | st.decimals(allow_nan=False)
              | st.dictionaries(st.integers(), JSON_LEAVES, min_size=1, max_size=2)
              | st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3)
              | st.builds(object))
PLACEMENTS = st.sampled_from([
    lambda bad: bad,
    lambda bad: [bad],
    lambda bad: {"x": bad},
    lambda bad: [1, {"y": ["a", bad]}],
])


def test_json_bodies_round_trip_exactly(tmp_path: Path):
    with Journal.open(tmp_path / "j.sqlite", SITE) as journal:
        @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(body=JSON_BODIES)
        def check(body):
            record = rec(body=body)
            seqs = run(w(journal.append([record], idem=idem(record.record_id, response=body))))
            (got,) = journal.records_for_txn(record.txn_id)
            assert got.seq == seqs[0]
            assert got.body == body
            # == says True == 1; the JSON text tells a bool from an int
            assert json.dumps(got.body, sort_keys=True) == json.dumps(body, sort_keys=True)
            entry = run(w(journal.lookup_request(record.record_id)))
            assert json.dumps(entry.response, sort_keys=True) == json.dumps(body, sort_keys=True)

        check()


def test_non_json_values_are_rejected_without_writing(tmp_path: Path):
    with Journal.open(tmp_path / "j.sqlite", SITE) as journal:
        @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(body=JSON_BODIES, key=st.text(max_size=8), bad=BAD_LEAVES, place=PLACEMENTS)
        def check(body, key, bad, place):
            body = dict(body)
            body[key] = place(bad)
            with pytest.raises(BodyError):
                run(w(journal.append([rec(), rec(body=body)], idem=idem(new_id(SITE)))))
            with pytest.raises(BodyError):
                run(w(journal.append([rec()], idem=idem(new_id(SITE), response=body))))

        check()
        assert journal.commits == 0
        counts = journal.counts()
        assert counts.records == 0 and counts.requests == 0


# --- group commit and backpressure ------------------------------------------------------------

def test_group_commit_groups_concurrent_appends(journal: Journal):
    async def go():
        calls = [journal.append([rec(lane=f"pump{i % 8}", body={"i": i})]) for i in range(200)]
        return await w(asyncio.gather(*calls))

    results = run(go())
    seqs = sorted(s for r in results for s in r)
    assert seqs == list(range(1, 201))
    assert journal.counts().records == 200
    assert journal.commits <= 50, f"{journal.commits} transactions for 200 concurrent appends"


def test_group_size_is_capped_and_queue_is_bounded(jpath: Path):
    with Journal.open(jpath, SITE, max_group=3, max_pending=5) as journal:
        async def go():
            blocker = hold_write_lock(journal.path)
            try:
                calls = [asyncio.create_task(w(journal.append([rec(body={"i": i})])))
                         for i in range(30)]
                await asyncio.sleep(0.05)
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            return await w(asyncio.gather(*calls))

        results = run(go())
        assert sorted(s for r in results for s in r) == list(range(1, 31))
        assert journal.commits >= 10  # never more than 3 appends in one transaction


def test_appends_from_threads_with_their_own_loops(journal: Journal):
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        async def go():
            for i in range(20):
                await w(journal.append([rec(lane=f"lane{n}", body={"i": i})]))
        try:
            run(go())
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(T)
    assert not errors
    assert journal.counts().records == 80
    for n in range(4):
        assert [r.body["i"] for r in journal.tail(100, lane=f"lane{n}")] == list(range(20))


# --- transactions, sync cursor, meta ---------------------------------------------------------

def test_open_transactions_by_terminal_kinds(journal: Journal):
    done, open1, open2, declined = (new_txn_id(SITE, lane) for lane in ("pump1", "pump2", "till1", "pump3"))

    async def go():
        await w(journal.append([rec("pump1", done, "preauth"), rec("pump2", open1, "preauth")]))
        await w(journal.append([rec("pump1", done, "dispensed"), rec("till1", open2, "quote")]))
        await w(journal.append([rec("pump1", done, "completed"), rec("pump3", declined, "declined")]))
        await w(journal.append([rec("pump2", open1, "reserved")]))

    run(go())
    txns = journal.open_transactions()
    assert [t.txn_id for t in txns] == [open1, open2]
    assert [t.lane for t in txns] == ["pump2", "till1"]
    assert [r.kind for r in txns[0].records] == ["preauth", "reserved"]
    assert [r.kind for r in txns[1].records] == ["quote"]

    async def finish():
        await w(journal.append([rec("pump2", open1, "voided"), rec("till1", open2, "completed")]))

    run(finish())
    assert journal.open_transactions() == []


def test_no_terminal_kinds_means_every_transaction_is_open(jpath: Path):
    with Journal.open(jpath, SITE) as journal:
        run(w(journal.append([rec(kind="completed")])))
        assert len(journal.open_transactions()) == 1


def test_after_unacked_and_mark_acked(journal: Journal):
    async def go():
        for i in range(10):
            await w(journal.append([rec(body={"i": i})]))
        assert [r.seq for r in journal.after(0, 4)] == [1, 2, 3, 4]
        assert [r.seq for r in journal.after(8, 100)] == [9, 10]
        assert journal.after(10, 5) == []
        assert [r.seq for r in journal.unacked(3)] == [1, 2, 3]

        assert await w(journal.mark_acked(4)) == 4
        assert await w(journal.mark_acked(4)) == 0  # acknowledging again changes nothing
        assert await w(journal.mark_acked(seqs=[6, 8, 8, 99])) == 2
        assert [r.seq for r in journal.unacked(100)] == [5, 7, 9, 10]
        assert [r.acked for r in journal.after(3, 3)] == [True, False, True]
        counts = journal.counts()
        assert (counts.records, counts.unacked, counts.last_seq, counts.oldest_unacked_seq) == \
               (10, 4, 10, 5)
        assert counts.oldest_unacked_at_utc_s == 1_700_000_000
        assert await w(journal.mark_acked(seqs=[])) == 0
        with pytest.raises(JournalError, match="either"):
            await w(journal.mark_acked(3, seqs=[1]))
        with pytest.raises(JournalError, match="either"):
            await w(journal.mark_acked())
        assert await w(journal.mark_acked(100)) == 4
        assert journal.unacked(10) == []
        assert journal.counts().records == 10  # acknowledged records are kept

    run(go())


def test_meta_values(journal: Journal):
    async def go():
        assert journal.get_meta("replica_version") is None
        await w(journal.set_meta("replica_version", "41"))
        await w(journal.set_meta("replica_version", "42"))
        await w(journal.set_meta("next_batch", "7"))
        assert journal.get_meta("replica_version") == "42"
        await w(journal.set_meta("next_batch", None))
        assert journal.get_meta("next_batch") is None
        with pytest.raises(JournalError, match="string"):
            await w(journal.set_meta("next_batch", 8))  # type: ignore[arg-type]

    run(go())
    assert journal.get_meta("site_id") == SITE


# --- files, lifecycle -------------------------------------------------------------------------

def test_reopen_after_close_keeps_everything(jpath: Path):
    async def write():
        async with Journal.open(jpath, SITE, terminal_kinds=TERMINAL) as journal:
            await w(journal.append([rec(body={"i": i}) for i in range(5)], idem=idem("k")))
            await w(journal.append([rec(kind="completed")]))
            await w(journal.mark_acked(2))
            await w(journal.set_meta("replica_version", "9"))
        assert journal.closed

    run(write())

    async def more():
        async with Journal.open(jpath, SITE, terminal_kinds=TERMINAL) as journal:
            assert [r.body.get("i") for r in journal.tail(10)] == [0, 1, 2, 3, 4, None]
            assert [r.acked for r in journal.tail(10)] == [True, True, False, False, False, False]
            assert (await w(journal.lookup_request("k"))).record_seq == 1
            assert journal.get_meta("replica_version") == "9"
            assert len(journal.open_transactions()) == 5
            assert await w(journal.append([rec()])) == [7]

    run(more())


def test_migration_of_an_empty_file(tmp_path: Path):
    path = tmp_path / "empty.sqlite"
    path.touch()
    Journal.open(path, SITE).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"records", "requests", "meta", "acked"} <= tables
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"records_txn", "records_lane"} <= indexes and "records_acked" not in indexes
        assert "acked" not in {r[1] for r in conn.execute("PRAGMA table_info(records)")}
    Journal.open(path, SITE).close()  # a second open migrates nothing
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2


def test_open_refuses_wrong_files(tmp_path: Path):
    newer = tmp_path / "newer.sqlite"
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(JournalError, match="version 99 is newer"):
        Journal.open(newer, SITE)

    theirs = tmp_path / "theirs.sqlite"
    Journal.open(theirs, "SIM-077-002").close()
    with pytest.raises(JournalError, match="belongs to site 'SIM-077-002'"):
        Journal.open(theirs, SITE)

    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(JournalDiskError, match="cannot open journal"):
        Journal.open(garbage, SITE)

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(JournalDiskError, match="folder"):
        Journal.open(blocked / "journal.sqlite", SITE)

    with pytest.raises(JournalError, match="site id"):
        Journal.open(tmp_path / "x.sqlite", "bad site:id")


def test_closed_journal_refuses_everything(jpath: Path):
    journal = Journal.open(jpath, SITE)
    journal.close()
    journal.close()  # idempotent
    with pytest.raises(JournalClosedError):
        run(w(journal.append([rec()])))
    with pytest.raises(JournalClosedError):
        run(w(journal.set_meta("a", "b")))
    with pytest.raises(JournalClosedError):
        journal.tail(1)
    with pytest.raises(JournalClosedError):
        run(w(journal.lookup_request("k")))


def test_close_commits_what_is_queued(jpath: Path):
    journal = Journal.open(jpath, SITE)

    async def go():
        blocker = sqlite3.connect(jpath, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")
        calls = [asyncio.create_task(w(journal.append([rec(body={"i": i})]))) for i in range(50)]
        await asyncio.sleep(0.05)  # every call is queued, the writer waits for the lock
        release = threading.Timer(0.1, lambda: (blocker.execute("ROLLBACK"), blocker.close()))
        release.start()
        journal.close()  # blocks until the queue is drained, after the release
        release.join()
        return await w(asyncio.gather(*calls))

    assert len(run(go())) == 50
    with Journal.open(jpath, SITE) as again:
        assert again.counts().records == 50


# --- disk faults (injected into the writer's connection) ------------------------------------

class FaultyConnection:
    """The writer's sqlite3 connection with faults on demand: ``fail_commit`` makes COMMIT
    raise as a failed fsync would (without committing); ``disk_full`` makes record INSERTs
    raise as a full disk would."""

    fail_commit = False
    disk_full = False

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args):
        if FaultyConnection.fail_commit and sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")
        if FaultyConnection.disk_full and sql.startswith("INSERT INTO records"):
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


@pytest.fixture
def faulty(monkeypatch) -> type[FaultyConnection]:
    import terminal.journal as module
    real = module._connect

    def connect(path, busy_timeout_ms, *, check_same_thread):
        conn = real(path, busy_timeout_ms, check_same_thread=check_same_thread)
        return FaultyConnection(conn) if check_same_thread else conn  # the writer's only

    monkeypatch.setattr(module, "_connect", connect)
    FaultyConnection.fail_commit = FaultyConnection.disk_full = False
    yield FaultyConnection
    FaultyConnection.fail_commit = FaultyConnection.disk_full = False


def test_a_full_disk_fails_the_group_and_the_journal_goes_on(jpath: Path, faulty):
    with Journal.open(jpath, SITE) as journal:
        async def go():
            await w(journal.append([rec()]))
            faulty.disk_full = True
            results = await w(asyncio.gather(*(journal.append([rec()], idem=idem(f"k{i}"))
                                               for i in range(5)), return_exceptions=True))
            assert all(isinstance(r, JournalDiskError) for r in results), results
            assert "nothing of it was committed" in str(results[0])
            assert await w(journal.lookup_request("k0")) is None
            faulty.disk_full = False
            assert await w(journal.append([rec()])) == [2]

        run(go())
        assert journal.counts().records == 2


def test_a_failed_commit_stops_writes_until_reopened(jpath: Path, faulty):
    journal = Journal.open(jpath, SITE)

    async def go():
        await w(journal.append([rec()]))
        faulty.fail_commit = True
        with pytest.raises(JournalDiskError, match="outcome is unknown"):
            await w(journal.append([rec()]))
        faulty.fail_commit = False
        with pytest.raises(JournalDiskError, match="reopen"):
            await w(journal.append([rec()]))
        with pytest.raises(JournalDiskError, match="reopen"):
            await w(journal.set_meta("a", "b"))
        assert journal.counts().records == 1  # reads still work

    run(go())
    assert "failed" in repr(journal)
    journal.close()
    with Journal.open(jpath, SITE) as again:
        assert run(w(again.append([rec()]))) == [2]


# --- crash durability -------------------------------------------------------------------------

WRITER = Path(__file__).with_name("journal_crash_writer.py")


def test_acknowledged_appends_survive_sigkill(tmp_path: Path):
    path = tmp_path / "crash.sqlite"
    promised: list[dict] = []
    for round_no, wanted in enumerate([40, 150, 400, 90]):
        proc = subprocess.Popen([sys.executable, str(WRITER), str(path), SITE, str(round_no)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            lines = []
            deadline = time.monotonic() + 20
            while len(lines) < wanted:
                assert time.monotonic() < deadline, "crash writer too slow"
                line = proc.stdout.readline()
                assert line, f"crash writer died: {proc.stderr.read().decode()[-2000:]}"
                lines.append(line)
            os.kill(proc.pid, signal.SIGKILL)  # mid-stream: appends are in flight
            rest, _ = proc.communicate(timeout=T)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == -signal.SIGKILL
        # Lines already in the pipe were acknowledged too; a torn last line was not.
        lines += [ln for ln in rest.splitlines(keepends=True) if ln.endswith(b"\n")]
        promised += [json.loads(ln) for ln in lines]

        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        with Journal.open(path, SITE) as journal:
            stored = {r.seq: r for r in journal.after(0, 10_000_000)}
            for p in promised:
                for seq, rid, body in zip(p["seqs"], p["ids"], p["bodies"]):
                    assert stored[seq].record_id == rid
                    assert stored[seq].body == body
                entry = run(w(journal.lookup_request(p["idem_key"])))
                assert entry is not None and entry.record_seq == p["seqs"][0]
                assert entry.response["record_ids"] == p["ids"]
            # All or nothing even for unacknowledged appends: every answer has its records,
            # every record its answer.
            with sqlite3.connect(path) as conn:
                answers = [json.loads(r[0]) for r in conn.execute("SELECT response FROM requests")]
            ids_answered = {rid for a in answers for rid in a["record_ids"]}
            assert ids_answered == {r.record_id for r in stored.values()}
            assert len(stored) >= sum(len(p["seqs"]) for p in promised)
    assert len(promised) >= 680


# --- ids --------------------------------------------------------------------------------------

def test_ids_are_unique_and_ordered():
    ids = [new_id(SITE) for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    parsed = parse_id(ids[-1])
    assert (parsed.site_id, parsed.lane) == (SITE, None)
    assert abs(parsed.time_ms - time.time() * 1000) < 60_000
    assert parse_id(ids[0]).time_ms <= parsed.time_ms


def test_ids_are_unique_across_threads():
    per_thread: list[list[str]] = [[] for _ in range(4)]

    def make(out: list[str]) -> None:
        for _ in range(25_000):
            out.append(new_txn_id(SITE, "pump-1"))

    threads = [threading.Thread(target=make, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join(T)
    all_ids = [i for out in per_thread for i in out]
    assert len(set(all_ids)) == 100_000
    for out in per_thread:
        assert out == sorted(out)  # each thread sees its own ids increase


def test_txn_ids_parse_with_dashes_in_site_and_lane():
    txn = new_txn_id("SIM-077-001", "pump-3")
    assert txn.startswith("SIM-077-001:pump-3-")
    parsed = parse_id(txn)
    assert (parsed.site_id, parsed.lane, len(parsed.ulid)) == ("SIM-077-001", "pump-3", 26)
    assert ulid_time_ms(parsed.ulid) == parsed.time_ms


@pytest.mark.parametrize("bad", [
    "", "SITE", "SITE-", "-01HZX3M2Q5T7V8W9XAYBZC0D1E", "SITE-01HZX3M2Q5T7V8W9XAYBZC0D1",
    "SITE-81HZX3M2Q5T7V8W9XAYBZC0D1E", "SITE-01HZX3M2Q5T7V8W9XAYBZC0D1I", "SI TE-01HZX3M2Q5T7V8W9XAYBZC0D1E",
    "SITE:-01HZX3M2Q5T7V8W9XAYBZC0D1E", 42,
])
def test_parse_id_rejects_malformed_ids(bad):
    with pytest.raises(IdError):
        parse_id(bad)


def test_bad_site_or_lane_names_are_refused():
    for site, lane in [("", "p1"), ("a:b", "p1"), ("S", "p 1"), ("S", ""), ("S" * 65, "p1")]:
        with pytest.raises(IdError):
            new_txn_id(site, lane)
    with pytest.raises(IdError, match="site id"):
        new_id("bad/site")
