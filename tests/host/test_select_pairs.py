"""``Database.select_pairs``: rows by a two-column key, looked up by the key's index.

The ingest's card counter check (``host.effects``) reads the ``card_tc`` rows of every
(card, counter) pair a transaction writes. On SQLite that read was a row-value
``IN (VALUES ...)``, which scanned the whole table once per chunk of pairs, so the ingest
slowed as ``card_tc`` grew; now each pair is a search of the primary key. Checked on both
ledgers: the rows found are exactly those a filter in Python finds (pairs found, missing,
more than one chunk), and on SQLite the plan searches the index and scans no table.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from host.db import CHUNK
from host.ledger import Ledger

_COLS = ("card_no", "txn_counter", "write_id", "record_id", "site_id")


def _fill(led: Ledger, cards: int, counters: int) -> list[Sequence[Any]]:
    rows: list[Sequence[Any]] = [
        (f"70058300{c:08d}", tc, f"{c:016x}{tc:016x}", "S-1", f"S-1:t-{c}-{tc}", f"S-1-{c}-{tc}", 1000 + tc)
        for c in range(cards) for tc in range(counters)]
    with led.db.transaction():
        led.db.copy_rows("card_tc", ("card_no", "txn_counter", "write_id", "site_id", "txn_id", "record_id", "at_utc_s"),
                         rows, ("text", "int8", "text", "text", "text", "text", "int8"))
    return rows


def test_select_pairs_finds_exactly_the_rows_of_the_pairs(ledger_url: str):
    with Ledger.open(ledger_url) as led:
        rows = _fill(led, 300, 8)
        rnd = random.Random(7)
        held = {(r[0], r[1]): (r[2], r[5], r[3]) for r in rows}
        wanted = set(rnd.sample(sorted(held), CHUNK))  # more than one chunk on SQLite
        wanted |= {("70058300" + "9" * 8, 1), (rows[0][0], 99), (rows[5][0], -1)}  # no such rows
        got = led.db.select_pairs("card_tc", _COLS, ("card_no", "txn_counter"), sorted(wanted))
        assert sorted(got) == sorted((c, tc, *held[(c, tc)]) for c, tc in wanted if (c, tc) in held)
        assert len(got) == len(wanted) - 3
        assert led.db.select_pairs("card_tc", _COLS, ("card_no", "txn_counter"), []) == []


def test_select_pairs_on_sqlite_searches_the_key_and_scans_no_table(tmp_path):
    with Ledger.open(f"sqlite:///{tmp_path / 'pairs.sqlite'}") as led:
        _fill(led, 50, 4)
        db, seen = led.db, []
        real = db.fetchall

        def explain(sql: str, params=()):
            seen.append(" | ".join(str(r[-1]) for r in real("EXPLAIN QUERY PLAN " + sql, params)))
            return real(sql, params)

        db.fetchall = explain  # type: ignore[method-assign]
        db.select_pairs("card_tc", _COLS, ("card_no", "txn_counter"), [("7005830000000001", 1), ("x", 2)])
        assert len(seen) == 1, seen
        assert "SEARCH t USING" in seen[0] and "(card_no=? AND txn_counter=?)" in seen[0], seen[0]
        assert "SCAN card_tc" not in seen[0] and "SCAN t" not in seen[0], seen[0]
