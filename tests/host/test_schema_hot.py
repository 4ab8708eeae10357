"""Schema v10: the rows ingest rewrites are updated in place (HOT) on PostgreSQL.

- Every table of :data:`host.schema.HOT_TABLES` carries its ``fillfactor`` after migrating,
  from empty and from a v9 ledger; on SQLite v10 changes nothing but the version.
- Updates of the columns ingest rewrites (a contract's balance, a dirty mark's generation
  through :func:`host.versions.mark_dirty`) stay on their page: counted by PostgreSQL's
  statistics of the transaction itself (``pg_stat_xact_user_tables``), which a full page
  (the default fillfactor of 100) would send to other pages, with new index entries.
"""

from __future__ import annotations

import pytest

from host import schema
from host.db import Database, connect
from host.ledger import Ledger
from host.schema import HOT_TABLES, SCHEMA_VERSION
from host.versions import mark_dirty
from wire import Table


def _fillfactors(db: Database) -> dict[str, int]:
    rows = db.fetchall("SELECT c.relname, opt FROM pg_class c CROSS JOIN unnest(c.reloptions) AS opt "
                       "WHERE c.relnamespace = current_schema()::regnamespace AND opt LIKE 'fillfactor=%'")
    return {name: int(opt.split("=", 1)[1]) for name, opt in rows}


def _hot_share(db: Database, table: str) -> tuple[int, int]:
    """(updates, of which HOT) of ``table`` in the current transaction."""
    row = db.fetchone("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relid = ?::regclass",
                      (table,))
    assert row is not None, table
    return row[0], row[1]


def test_v10_sets_the_fillfactor_of_the_rewritten_tables(ledger_url: str):
    with Ledger.open(ledger_url) as led:
        db = led.db
        assert db.scalar("SELECT value FROM meta WHERE key = 'schema_version'") == str(SCHEMA_VERSION)
        assert SCHEMA_VERSION >= 10
        if db.is_pg:
            assert _fillfactors(db) == HOT_TABLES
        else:
            assert schema.MIGRATIONS[9](db) == []  # SQLite: no fillfactor, nothing to run


def test_a_v9_postgresql_ledger_moves_to_v10_with_its_rows(pg_schema_url: str):
    db = connect(pg_schema_url)
    try:
        with db.transaction():
            for step in schema.MIGRATIONS[:9]:
                for stmt in step(db):
                    db.execute(stmt)
            db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '9')")
            db.execute("INSERT INTO contracts (contract_id, tz, home_region, tariff, balance_kop) "
                       "VALUES (7, 'UTC', 1, 0, 12345)")
        assert _fillfactors(db) == {}
    finally:
        db.close()
    with Ledger.open(pg_schema_url) as led:
        assert _fillfactors(led.db) == HOT_TABLES
        assert led.db.scalar("SELECT balance_kop FROM contracts WHERE contract_id = 7") == 12345


@pytest.mark.parametrize("rows", [400])
def test_balance_and_dirty_mark_updates_stay_on_their_page(pg_schema_url: str, rows: int):
    with Ledger.open(pg_schema_url) as led:
        db = led.db
        with db.transaction():
            db.execute("INSERT INTO contracts (contract_id, tz, home_region, tariff, balance_kop) "
                       "SELECT g, 'Europe/Moscow', 1, 0, 0 FROM generate_series(1, ?) AS g", (rows,))
            db.update_many("contracts", [("balance_kop", "balance_kop + {}")], "contract_id", ("bigint", "bigint"),
                           [(-100, cid) for cid in range(1, rows + 1)])
            upd, hot = _hot_share(db, "contracts")
            assert upd == rows
            assert hot >= 0.9 * rows, f"{hot} of {upd} balance updates were HOT"
            keys = [(Table.CONTRACTS, cid) for cid in range(1, rows + 1)]
            mark_dirty(db, keys, "S-1")
            mark_dirty(db, keys, "S-1")  # the second marks bump each row's generation: updates
            upd, hot = _hot_share(db, "replica_dirty")
            assert upd == rows
            assert hot >= 0.9 * rows, f"{hot} of {upd} dirty mark updates were HOT"
            assert db.scalar("SELECT min(gen) FROM replica_dirty") == 1
