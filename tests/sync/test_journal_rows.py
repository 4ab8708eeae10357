"""The sync client's read of the journal (``Journal.after_rows``, ``Journal.after_stored``)
and its packing.

``after_rows`` holds what ``after`` holds, as plain tuples (no ``Record`` per row), and
``after_stored`` the same with each body's stored JSON text; both refuse the same bad
arguments; the rows pack to the bytes the records packed to before
(``wire.codec.pack_record_rows`` against ``pack_records``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from terminal.ids import new_id, new_txn_id
from terminal.journal import Journal, JournalError, Record, canonical_json
from wire import WireRecord
from wire.codec import pack_record_rows, pack_records

SITE = "SIM-077-001"


def test_after_rows_hold_what_after_holds_and_pack_the_same(tmp_path: Path) -> None:
    bodies = [{"amount_kop": i, "nested": {"list": [i, "x", None, True, {"deep": -i}]}, "s": "é\u2028"}
              for i in range(50)]
    with Journal.open(tmp_path / "j.sqlite", SITE) as journal:
        recs = [Record(new_id(SITE), SITE, f"pump-{i % 3}", new_txn_id(SITE, f"pump-{i % 3}"), "fuel.completed",
                       1_790_000_000 + i, b) for i, b in enumerate(bodies)]
        asyncio.run(asyncio.wait_for(journal.append(recs), 10))
        for seq, limit in ((0, 100), (0, 7), (10, 5), (49, 10), (50, 10), (3, 0)):
            full = journal.after(seq, limit)
            rows = journal.after_rows(seq, limit)
            assert rows == [(r.seq, r.record_id, r.site_id, r.lane, r.txn_id, r.kind, r.at_utc_s, r.body)
                            for r in full]
            stored = journal.after_stored(seq, limit)
            assert stored == [(*r[:7], canonical_json(r[7])) for r in rows]  # the text as stored
            assert pack_record_rows(SITE, rows, bodies_checked=True) == \
                pack_records(SITE, [WireRecord.from_record(r) for r in full], bodies_checked=True) == \
                pack_record_rows(SITE, stored, bodies_checked=True)
        assert len(journal.after_rows(0, 100)) == 50
        for bad in ((-1, 5), (0, -1), ("0", 5), (0, True)):
            with pytest.raises(JournalError):
                journal.after_rows(*bad)  # type: ignore[arg-type]
            with pytest.raises(JournalError):
                journal.after_stored(*bad)  # type: ignore[arg-type]


def test_rows_of_another_site_are_refused_with_the_words_of_pack_records(tmp_path: Path) -> None:
    row = (1, new_id("SIM-077-002"), "SIM-077-002", "pump-1", new_txn_id("SIM-077-002", "pump-1"), "k", 0, {})
    with pytest.raises(Exception) as one:
        pack_record_rows(SITE, [row])
    with pytest.raises(Exception) as other:
        pack_records(SITE, [WireRecord(*row[1:])])
    assert type(one.value) is type(other.value) and str(one.value) == str(other.value)
    assert "a record of site 'SIM-077-002' in a batch of site 'SIM-077-001'" in str(one.value)
