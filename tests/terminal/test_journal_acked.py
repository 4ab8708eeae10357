"""The journal's acknowledged ranges (schema version 2): ``mark_acked`` writes ranges of seqs,
not a flag in every record, and every reader (``Record.acked``, ``unacked``, ``counts``,
``open_transactions``) sees what the flags showed; a version-1 file migrates with nothing lost.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from terminal.ids import new_id, new_txn_id
from terminal.journal import (SCHEMA_VERSION, Journal, Record, _gaps, _merged, _migrate_to_1,
                              _uncovered, canonical_json)

SITE = "SIM-077-001"


def rec(i: int, kind: str = "fuel.completed") -> Record:
    return Record(new_id(SITE), SITE, "pump-1", new_txn_id(SITE, "pump-1"), kind, 1_790_000_000 + i, {"i": i})


def ranges(path: Path) -> list[tuple[int, int]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT first_seq, last_seq FROM acked ORDER BY first_seq").fetchall()


def test_range_helpers() -> None:
    assert _merged([(5, 6), (1, 2), (3, 3), (9, 9), (8, 8), (20, 30), (25, 26), (4, 4)]) == [(1, 6), (8, 9), (20, 30)]
    assert _uncovered([(1, 10)], []) == [(1, 10)]
    assert _uncovered([(1, 10)], [(1, 10)]) == []
    assert _uncovered([(1, 10), (12, 20)], [(3, 4), (8, 13), (19, 25)]) == [(1, 2), (5, 7), (14, 18)]
    assert _uncovered([(5, 5)], [(1, 4), (6, 9)]) == [(5, 5)]
    assert list(_gaps([])) == [(1, None)]
    assert list(_gaps([(1, 4), (7, 7)])) == [(5, 6), (8, None)]
    assert list(_gaps([(3, 4)])) == [(1, 2), (5, None)]


def test_contiguous_acks_keep_one_range_and_stop_at_the_last_record(tmp_path: Path) -> None:
    async def go() -> None:
        with Journal.open(tmp_path / "j.sqlite", SITE) as journal:
            await journal.append([rec(i) for i in range(50)])
            for up in range(5, 51, 5):
                assert await journal.mark_acked(up) == 5
            assert ranges(journal.path) == [(1, 50)]  # merged: one row, whatever the number of acks
            # an ack past the end covers the records there are, not the seqs appended later
            assert await journal.mark_acked(1000) == 0
            assert ranges(journal.path) == [(1, 50)]
            assert await journal.append([rec(50)]) == [51]
            assert [r.seq for r in journal.unacked(10)] == [51]
            assert journal.counts().unacked == 1 and journal.counts().oldest_unacked_seq == 51
    asyncio.run(asyncio.wait_for(go(), 30))


def test_every_reader_sees_the_ranges(tmp_path: Path) -> None:
    async def go() -> None:
        with Journal.open(tmp_path / "j.sqlite", SITE, terminal_kinds={"fuel.completed"}) as journal:
            await journal.append([rec(i, "fuel.preauth") for i in range(6)])
            await journal.mark_acked(seqs=[2, 3, 5])
            want = [False, True, True, False, True, False]
            assert [r.acked for r in journal.after(0, 10)] == want
            assert [r.acked for r in journal.tail(10)] == want
            assert [r.acked for r in journal.tail(10, lane="pump-1")] == want
            assert [r.acked for t in journal.open_transactions() for r in t.records] == want
            assert [journal.records_for_txn(r.txn_id)[0].acked for r in journal.after(0, 10)] == want
            assert [r.seq for r in journal.unacked(10)] == [1, 4, 6]
            assert [r.seq for r in journal.unacked(2)] == [1, 4]
            assert all(not r.acked for r in journal.unacked(10))
            c = journal.counts()
            assert (c.records, c.unacked, c.oldest_unacked_seq, c.oldest_unacked_at_utc_s) == (6, 3, 1, 1_790_000_000)
    asyncio.run(asyncio.wait_for(go(), 30))


_marks = st.lists(st.one_of(st.integers(0, 45).map(lambda n: ("up", n)),
                            st.lists(st.integers(1, 45), max_size=12).map(lambda s: ("seqs", s))),
                  min_size=1, max_size=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 40), marks=_marks, extra=st.integers(0, 3))
def test_marks_match_a_flag_per_record(n: int, marks: list, extra: int) -> None:
    """Any marks, in any order: what every reader says is what a flag per record would say,
    each mark returns how many flags it set, and the ranges stay sorted, disjoint, merged and
    within the records."""
    async def go(path: Path) -> None:
        with Journal.open(path, SITE) as journal:
            if n:
                await journal.append([rec(i) for i in range(n)])
            flags: set[int] = set()
            for how, arg in marks:
                chosen = set(range(1, min(arg, n) + 1)) if how == "up" else {s for s in arg if s <= n}
                got = await (journal.mark_acked(arg) if how == "up" else journal.mark_acked(seqs=arg))
                assert got == len(chosen - flags)
                flags |= chosen
            # records appended after the marks start unacked
            if extra:
                await journal.append([rec(n + i) for i in range(extra)])
            total = n + extra
            assert [r.seq for r in journal.after(0, 100) if r.acked] == sorted(flags)
            unacked = [s for s in range(1, total + 1) if s not in flags]
            assert [r.seq for r in journal.unacked(100)] == unacked
            assert [r.seq for r in journal.unacked(3)] == unacked[:3]
            c = journal.counts()
            assert (c.records, c.unacked, c.oldest_unacked_seq) == (total, len(unacked), unacked[0] if unacked else None)
            rs = ranges(path)
            assert all(a <= b <= n for a, b in rs)
            assert all(b + 1 < a2 for (_, b), (a2, _) in zip(rs, rs[1:]))  # disjoint and never adjacent
    with tempfile.TemporaryDirectory() as d:
        asyncio.run(asyncio.wait_for(go(Path(d) / "j.sqlite"), 60))


def _version_1_file(path: Path, acked: list[bool]) -> list[tuple]:
    """A journal as version 1 of the schema made it: ``len(acked)`` records with those flags,
    a request answer and meta. Returns its records' rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN")
        _migrate_to_1(conn)
        conn.execute("PRAGMA user_version = 1")
        for i, flag in enumerate(acked):
            r = rec(i)
            conn.execute("INSERT INTO records (record_id, site_id, lane, txn_id, kind, at_utc_s, body, acked) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (r.record_id, r.site_id, r.lane, r.txn_id, r.kind, r.at_utc_s, canonical_json(r.body),
                          int(flag)))
        conn.execute("INSERT INTO requests VALUES ('k1', '/v1/fuel/preauth', 'sha256:x', 201, '{}', ?, 1)",
                     (3 if len(acked) >= 3 else None,))
        conn.execute("INSERT INTO meta VALUES ('site_id', ?), ('sync.acked_batch', '4')", (SITE,))
        conn.execute("COMMIT")
        return conn.execute("SELECT seq, record_id, site_id, lane, txn_id, kind, at_utc_s, body FROM records "
                            "ORDER BY seq").fetchall()
    finally:
        conn.close()


def test_a_version_1_file_migrates_with_nothing_lost(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    flags = [True] * 7 + [False] * 2 + [True] * 3 + [False] + [True] + [False] * 4
    rows = _version_1_file(path, flags)

    async def go() -> None:
        with Journal.open(path, SITE) as journal:
            got = journal.after(0, 100)
            assert [(r.seq, r.record_id, r.site_id, r.lane, r.txn_id, r.kind, r.at_utc_s, canonical_json(r.body))
                    for r in got] == rows
            assert [r.acked for r in got] == flags
            assert [r.seq for r in journal.unacked(100)] == [s for s, f in enumerate(flags, 1) if not f]
            c = journal.counts()
            assert (c.records, c.unacked, c.requests, c.oldest_unacked_seq) == (18, 7, 1, 8)
            assert (await journal.lookup_request("k1")).record_seq == 3  # type: ignore[union-attr]
            assert journal.get_meta("sync.acked_batch") == "4"
            # and it goes on: marks, appends
            assert await journal.mark_acked(seqs=[8, 9, 13]) == 3
            assert await journal.append([rec(99)]) == [19]
            assert [r.seq for r in journal.unacked(100)] == [15, 16, 17, 18, 19]
    asyncio.run(asyncio.wait_for(go(), 30))
    assert ranges(path) == [(1, 14)]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert "acked" not in {r[1] for r in conn.execute("PRAGMA table_info(records)")}  # renamed acked_v1
        assert "records_acked" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}


def test_a_version_1_file_with_nothing_acked_or_all_acked(tmp_path: Path) -> None:
    for name, flags in (("none", [False] * 5), ("all", [True] * 5), ("empty", [])):
        path = tmp_path / f"{name}.sqlite"
        _version_1_file(path, flags)
        with Journal.open(path, SITE) as journal:
            assert [r.acked for r in journal.after(0, 10)] == flags
            assert journal.counts().unacked == flags.count(False)
            seqs = asyncio.run(journal.append([rec(9)]))
            assert seqs == [len(flags) + 1]  # the seqs go on from the old table's
        assert ranges(path) == ([(1, 5)] if name == "all" else [])
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


def test_the_migration_keeps_the_seq_high_water_mark(tmp_path: Path) -> None:
    """Seqs of records a version-1 file once held (its AUTOINCREMENT mark) are not used again."""
    path = tmp_path / "v1.sqlite"
    _version_1_file(path, [True, False, False])
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE sqlite_sequence SET seq = 40 WHERE name = 'records'")
    with Journal.open(path, SITE) as journal:
        assert asyncio.run(journal.append([rec(9)])) == [41]
        assert [r.seq for r in journal.unacked(10)] == [2, 3, 41]


def test_marks_without_their_count(tmp_path: Path) -> None:
    """``count=False`` (the sync client's) marks the same records and returns None."""
    async def go() -> None:
        with Journal.open(tmp_path / "j.sqlite", SITE) as journal:
            await journal.append([rec(i) for i in range(8)])
            assert await journal.mark_acked(3, meta={"sync.acked_batch": "1"}, count=False) is None
            assert await journal.mark_acked(seqs=[5, 6], count=False) is None
            assert await journal.mark_acked(seqs=[], count=False) is None
            assert await journal.mark_acked(6, count=False) is None
            assert [r.seq for r in journal.unacked(10)] == [7, 8]
            assert journal.get_meta("sync.acked_batch") == "1"
            assert await journal.mark_acked(8) == 2  # counted: 7 and 8
    asyncio.run(asyncio.wait_for(go(), 30))
