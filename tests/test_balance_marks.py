"""The kept watermarks of rows that name the site no more, written beside the journal
(terminal.own_spend.JournalSpend.save_marks / load_marks): what is written is read back, for
every table that carries watermarks (integer and text keys), after the journal is reopened;
meta entries that are not kept marks are left out with a log line, never a crash at start."""

from __future__ import annotations

import asyncio
import logging

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from terminal.journal import Journal
from terminal.own_spend import MARK_PREFIX, JournalSpend
from wire import Table

marks = st.dictionaries(
    st.one_of(st.tuples(st.just(Table.CONTRACTS), st.integers(-2**40, 2**40)),
              st.tuples(st.just(Table.CLUB_ACCOUNTS), st.integers(0, 2**40)),
              st.tuples(st.just(Table.FUEL_CARDS), st.text("0123456789AB:-", min_size=1, max_size=20))),
    st.integers(1, 2**40), max_size=8)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(marks)
def test_kept_marks_written_are_read_back_after_a_reopen(tmp_path_factory, kept):
    path = tmp_path_factory.mktemp("marks") / "journal.sqlite"

    async def write() -> None:
        with Journal.open(path, "S1") as j:
            await JournalSpend("S1", j).save_marks(kept)
    asyncio.run(write())
    with Journal.open(path, "S1") as j:
        assert JournalSpend("S1", j).load_marks() == kept


def test_meta_that_is_not_a_kept_mark_is_left_out(tmp_path, caplog):
    path = tmp_path / "journal.sqlite"

    async def write() -> None:
        with Journal.open(path, "S1") as j:
            await JournalSpend("S1", j).save_marks({(Table.FUEL_CARDS, "7005830000000001"): 7})
            for key, value in ((f"{MARK_PREFIX}bogus:1", "3"), (f"{MARK_PREFIX}contracts:x", "3"),
                               (f"{MARK_PREFIX}fuel_cards:7005830000000002", "seven"),
                               (f"{MARK_PREFIX}stop_list:7005830000000003", "3"),
                               (f"{MARK_PREFIX}club_accounts:5", "-1"), ("balance.other", "1")):
                await j.set_meta(key, value)
    asyncio.run(write())
    with Journal.open(path, "S1") as j, caplog.at_level(logging.ERROR, "edgepos.replica"):
        assert JournalSpend("S1", j).load_marks() == {(Table.FUEL_CARDS, "7005830000000001"): 7}
    assert sum("is not a kept watermark" in r.getMessage() for r in caplog.records) == 5
