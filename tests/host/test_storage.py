"""The storage layer: URLs, versioned migrations, refusals, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3

import pytest

from host import LedgerUnavailable, SchemaError
from host.db import connect, redact_url
from host.ledger import Ledger
from host.schema import SCHEMA_VERSION, migrate, schema_version


def test_a_new_database_is_migrated_once(ledger_url: str):
    with Ledger.open(ledger_url) as a:
        assert schema_version(a.db) == SCHEMA_VERSION
    with Ledger.open(ledger_url) as b:  # reopening changes nothing
        assert migrate(b.db) == SCHEMA_VERSION
        assert b.record_count() == 0


def test_a_newer_schema_is_refused(ledger_url: str):
    with Ledger.open(ledger_url) as led:
        led.db.run(lambda db: db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                                         (str(SCHEMA_VERSION + 1),)))
    with pytest.raises(SchemaError, match="upgrade edgepos"):
        Ledger.open(ledger_url)


def test_a_database_that_is_not_a_ledger_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    sqlite3.connect(path).execute("CREATE TABLE customers (id INTEGER)").connection.commit()
    with pytest.raises(SchemaError, match="not an edgepos ledger"):
        Ledger.open(f"sqlite:///{path}")


def test_bad_urls_are_named():
    with pytest.raises(LedgerUnavailable, match="unknown ledger URL scheme 'mysql'"):
        connect("mysql://u:secret@h/db")
    with pytest.raises(LedgerUnavailable, match="sqlite:///relative/path"):
        connect("sqlite://host/file")
    with pytest.raises(LedgerUnavailable) as exc:
        connect("postgresql://user:hunter2@127.0.0.1:1/db")
    assert "hunter2" not in str(exc.value) and "user:***@" in str(exc.value)
    assert redact_url("postgresql://a:b@h/d") == "postgresql://a:***@h/d"


def test_sqlite_is_durable_and_wal(tmp_path):
    db = connect(f"sqlite:///{tmp_path / 'l.sqlite'}")
    assert db.scalar("PRAGMA journal_mode") == "wal"
    assert db.scalar("PRAGMA synchronous") == 2  # FULL
    db.close()


def test_a_failed_transaction_leaves_nothing(ledger: Ledger):
    def step(db):
        db.execute("INSERT INTO sites (site_id, created_at_utc_s) VALUES ('X', 1)")
        raise RuntimeError("stop")
    with pytest.raises(RuntimeError):
        ledger.db.run(step)
    assert ledger.sites() == []
