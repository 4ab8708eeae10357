"""The journal's side of acks: ``mark_acked`` with its meta in one transaction, seqs marked by
runs, and the fsync rule (only a group of marks alone commits without an fsync).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from terminal.ids import new_id, new_txn_id
from terminal.journal import Journal, JournalError, Record, _runs

SITE = "SIM-077-001"


def rec(i: int) -> Record:
    return Record(new_id(SITE), SITE, "pump-1", new_txn_id(SITE, "pump-1"), "fuel.completed", 1_790_000_000 + i,
                  {"i": i})


def acked(journal: Journal) -> list[int]:
    return [r.seq for r in journal.after(0, 1000) if r.acked and r.seq is not None]


class Recording(Journal):
    """A journal that notes, for every group it commits, whether any write needed an fsync
    and the synchronous level the commit ran with (2 FULL, 1 NORMAL)."""

    groups: list[tuple[tuple[bool, ...], int]]

    def _commit_group(self, conn: sqlite3.Connection, group: list) -> None:  # type: ignore[override]
        super()._commit_group(conn, group)
        level = conn.execute("PRAGMA synchronous").fetchone()[0]
        self.groups.append((tuple(op.durable for op in group), level))


def test_runs() -> None:
    assert _runs([]) == []
    assert _runs([1]) == [(1, 1)]
    assert _runs([1, 2, 3, 5, 7, 8]) == [(1, 3), (5, 5), (7, 8)]


def test_marks_and_their_meta_in_one_transaction(tmp_path: Path) -> None:
    async def go() -> None:
        with Journal.open(tmp_path / "j.sqlite", SITE) as journal:
            await journal.append([rec(i) for i in range(10)])
            await journal.set_meta("sync.other", "x")
            assert await journal.mark_acked(4, meta={"sync.acked_batch": "1", "sync.other": None}) == 4
            assert acked(journal) == [1, 2, 3, 4]
            assert journal.get_meta("sync.acked_batch") == "1" and journal.get_meta("sync.other") is None
            # seqs: runs of consecutive seqs, duplicates and seqs past the end change nothing more
            assert await journal.mark_acked(seqs=[9, 6, 7, 8, 8, 99, 2], meta={"sync.acked_batch": "3"}) == 4
            assert acked(journal) == [1, 2, 3, 4, 6, 7, 8, 9]
            assert journal.get_meta("sync.acked_batch") == "3"
            assert await journal.mark_acked(seqs=[], meta={"sync.acked_batch": "4"}) == 0
            assert journal.get_meta("sync.acked_batch") == "4"
            # a bad meta is refused before anything is written: no mark, no meta
            for bad in ({"": "1"}, {"sync.acked_batch": 5}, ["sync.acked_batch"]):
                with pytest.raises(JournalError):
                    await journal.mark_acked(10, meta=bad)  # type: ignore[arg-type]
            assert acked(journal) == [1, 2, 3, 4, 6, 7, 8, 9] and journal.get_meta("sync.acked_batch") == "4"
    asyncio.run(asyncio.wait_for(go(), 30))


def test_only_a_group_of_marks_alone_skips_the_fsync(tmp_path: Path) -> None:
    async def go() -> None:
        Recording.groups = []
        with Recording.open(tmp_path / "j.sqlite", SITE) as journal:
            await journal.append([rec(i) for i in range(6)])
            await journal.mark_acked(2, meta={"sync.acked_batch": "1"})
            await journal.set_meta("sync.batch.2", "{}")
            await journal.mark_acked(seqs=[3, 4])
            # hold the writer in a write of its own while an append and a mark queue up: they
            # then commit as one group, which must be fsync'd
            started, release = threading.Event(), threading.Event()

            def hold(conn: sqlite3.Connection) -> None:
                started.set()
                release.wait(10)

            held = asyncio.ensure_future(journal._submit(hold, durable=False))
            await asyncio.to_thread(started.wait, 10)
            mixed = asyncio.gather(journal.mark_acked(5), journal.append([rec(6)]), journal.mark_acked(seqs=[6]))
            await asyncio.sleep(0.05)
            release.set()
            await held
            await mixed
            assert acked(journal) == [1, 2, 3, 4, 5, 6]
        groups = Recording.groups
        assert all(level == (2 if any(flags) else 1) for flags, level in groups), groups
        assert ((True,), 2) in groups and ((False,), 1) in groups
        assert any(len(flags) == 3 and not all(flags) and level == 2 for flags, level in groups), groups
    asyncio.run(asyncio.wait_for(go(), 30))
