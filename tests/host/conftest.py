"""Fixtures of the host tests: every ledger test runs on SQLite and on PostgreSQL.

PostgreSQL is the one on 127.0.0.1:5432 (trust auth, database ``test``); if it is not
running the fixture starts it with ``pg_ctlcluster``, and if it still cannot be reached the
test FAILS (it is not skipped: a host that only ever passed on SQLite is not tested). Each
test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import glob
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from host.ledger import Ledger

PG_HOST, PG_PORT, PG_DB = "127.0.0.1", 5432, "test"
PG_ADMIN = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"
PG_URL = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{PG_DB}"
BROKER = ("127.0.0.1", 1883)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres() -> str:
    """The URL of the test database; starts the local cluster if needed, fails if it cannot."""
    import psycopg
    if not _port_open(PG_HOST, PG_PORT):
        versions = sorted(os.path.basename(p) for p in glob.glob("/etc/postgresql/*"))
        if not versions:
            pytest.fail("PostgreSQL is not installed (no /etc/postgresql/<version>): apt-get install postgresql")
        out = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
                             capture_output=True, text=True)
        deadline = time.monotonic() + 30
        while not _port_open(PG_HOST, PG_PORT):
            if time.monotonic() > deadline:
                pytest.fail(f"PostgreSQL did not start on {PG_HOST}:{PG_PORT}: {out.stderr.strip() or out.stdout.strip()}")
            time.sleep(0.2)
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
                if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DB,)).fetchone():
                    conn.execute(f"CREATE DATABASE {PG_DB}")
            return PG_URL
        except psycopg.OperationalError as exc:  # starting up: "the database system is starting up"
            if time.monotonic() > deadline:
                pytest.fail(f"PostgreSQL at {PG_HOST}:{PG_PORT} refuses connections: {exc}")
            time.sleep(0.2)


@pytest.fixture
def pg_schema_url(postgres: str) -> Iterator[str]:
    """A fresh schema in the test database, dropped after the test."""
    import psycopg
    schema = f"host_test_{secrets.token_hex(6)}"
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{postgres}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(postgres, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path) -> str:
    """A ledger URL for an empty database: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    return request.getfixturevalue("pg_schema_url")


class Clock:
    """A settable clock for ledgers under test."""

    def __init__(self, now: int = 1_795_000_000) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def open_ledger(ledger_url: str, clock: Clock) -> Iterator[Callable[..., Ledger]]:
    """Open more ledgers (connections) on the test's database; all closed afterwards."""
    opened: list[Ledger] = []

    def make(**kwargs) -> Ledger:
        kwargs.setdefault("clock", clock)
        led = Ledger.open(ledger_url, **kwargs)
        opened.append(led)
        return led
    yield make
    for led in opened:
        led.close()


@pytest.fixture
def ledger(open_ledger) -> Ledger:
    return open_ledger()


def _broker_open() -> bool:
    try:
        with socket.create_connection(BROKER, timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def mosquitto() -> tuple[str, int]:
    """The Mosquitto on 127.0.0.1:1883, started if it is not running; the test fails if it cannot be."""
    if not _broker_open():
        subprocess.run(["mosquitto", "-d", "-c", "/etc/mosquitto/mosquitto.conf"], capture_output=True)
        deadline = time.monotonic() + 10
        while not _broker_open():
            if time.monotonic() > deadline:
                pytest.fail("Mosquitto is not reachable on 127.0.0.1:1883 and could not be started")
            time.sleep(0.1)
    return BROKER
