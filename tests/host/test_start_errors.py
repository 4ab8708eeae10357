"""The host's commands refuse what an operator got wrong with one line naming the option, a
distinct exit code and no traceback: ``edgepos host ...`` (host.admin) and ``python -m
host.worker``, run as real subprocesses against real SQLite files, the real PostgreSQL and the
real Mosquitto on loopback."""

from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from host.keys import ensure_replica_keys

from host.admin import EXIT_MEANINGS, ExitCode
from wire import new_key, write_key

ROOT = Path(__file__).resolve().parents[2]
EDGEPOS_HOST = [sys.executable, "-m", "terminal.cli", "host"]
WORKER = [sys.executable, "-m", "host.worker"]


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEPOS_HOST_DB", "EDGEPOS_HOST_MQTT_PASSWORD")}
    return subprocess.run(argv, check=False, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    (d / "sites").mkdir(parents=True)
    write_key(d / "sites" / "S-1.key", new_key())
    return d


# -- help ----------------------------------------------------------------------------------------

def test_edgepos_host_help_names_edgepos_host():
    done = run([*EDGEPOS_HOST, "--help"])
    assert done.returncode == 0 and done.stdout.startswith("usage: edgepos host ")
    assert "python -m host.admin [" not in done.stdout
    for code in (ExitCode.LEDGER_UNREACHABLE, ExitCode.LEDGER_SCHEMA):
        assert f"  {int(code)}  {EXIT_MEANINGS[code]}" in done.stdout
    block = run([*EDGEPOS_HOST, "block", "--help"])
    assert block.returncode == 0 and block.stdout.startswith("usage: edgepos host block ")
    assert "the card number" in block.stdout
    assert run([sys.executable, "-m", "host.admin", "--help"]).stdout.startswith("usage: python -m host.admin ")


def test_every_admin_argument_has_help():
    from host.admin import build_parser
    p = build_parser()
    stack = [p]
    while stack:
        parser = stack.pop()
        for action in parser._actions:
            if action.dest in ("help",):
                continue
            if hasattr(action, "choices") and isinstance(action.choices, dict):
                stack.extend(action.choices.values())
                continue
            assert action.help, f"{parser.prog}: {action.dest} has no help"


def test_worker_help_lists_its_exit_codes():
    done = run([*WORKER, "--help"])
    assert done.returncode == 0
    for code in (ExitCode.KEY_FILE, ExitCode.HOST_KEY_MISSING, ExitCode.LEDGER_SCHEMA):
        assert f"  {int(code)}  {EXIT_MEANINGS[code]}" in done.stdout


# -- the ledger ----------------------------------------------------------------------------------

def test_postgresql_schema_that_does_not_exist(postgres):
    schema = f"no_such_{secrets.token_hex(4)}"
    done = run([*EDGEPOS_HOST, "--db", f"{postgres}?options=-csearch_path%3D{schema}", "init"])
    line = one_line(done)
    assert done.returncode == ExitCode.LEDGER_SCHEMA == 4
    assert line.startswith("error: --db") and schema in line and "CREATE SCHEMA" in line


def test_postgresql_unreachable(postgres):
    done = run([*EDGEPOS_HOST, "--db", "postgresql://postgres@127.0.0.1:1/test", "sites"])
    assert done.returncode == ExitCode.LEDGER_UNREACHABLE == 3
    assert one_line(done).startswith("error: --db")


def test_sqlite_file_that_is_not_a_ledger(tmp_path):
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE something (x)")
    done = run([*EDGEPOS_HOST, "--db", f"sqlite:///{path}", "sites"])
    assert done.returncode == ExitCode.LEDGER_SCHEMA
    assert "not an edgepos ledger" in one_line(done)
    done = run([*EDGEPOS_HOST, "--db", f"sqlite:///{tmp_path / 'no' / 'dir' / 'x.sqlite'}", "sites"])
    assert done.returncode == ExitCode.LEDGER_UNREACHABLE and one_line(done).startswith("error: --db")


# -- the worker ----------------------------------------------------------------------------------

def test_worker_without_host_key_refuses_to_publish(tmp_path, keys_dir):
    done = run([*WORKER, "--db", f"sqlite:///{tmp_path / 'h.sqlite'}", "--keys-dir", str(keys_dir)])
    line = one_line(done)
    assert done.returncode == ExitCode.HOST_KEY_MISSING == 6
    assert line.startswith("error: --keys-dir:") and "replica-signing.key" in line and "--no-publish" in line
    assert not (tmp_path / "h.sqlite").exists()  # refused before the ledger was touched


def test_worker_keys_dir_missing_or_a_key_unreadable(tmp_path, keys_dir):
    db = f"sqlite:///{tmp_path / 'h.sqlite'}"
    done = run([*WORKER, "--db", db, "--keys-dir", str(tmp_path / "absent")])
    assert done.returncode == ExitCode.KEY_FILE == 5 and "--keys-dir" in one_line(done)
    (keys_dir / "sites" / "S-2.key").write_text("not a key")
    done = run([*WORKER, "--db", db, "--keys-dir", str(keys_dir), "--no-publish"])
    line = one_line(done)
    assert done.returncode == ExitCode.KEY_FILE and "S-2.key" in line and "not a key" not in line


def test_worker_ledger_schema_missing(postgres, keys_dir):
    ensure_replica_keys(keys_dir)
    schema = f"no_such_{secrets.token_hex(4)}"
    done = run([*WORKER, "--db", f"{postgres}?options=-csearch_path%3D{schema}", "--keys-dir", str(keys_dir)])
    assert done.returncode == ExitCode.LEDGER_SCHEMA and schema in one_line(done)


def test_worker_bad_broker_option(tmp_path, keys_dir):
    done = run([*WORKER, "--db", f"sqlite:///{tmp_path / 'h.sqlite'}", "--keys-dir", str(keys_dir),
                "--no-publish", "--broker", "127.0.0.1:notaport"])
    assert done.returncode == ExitCode.USAGE and "--broker" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("publish", [True, False])
def test_worker_with_what_it_needs_starts(tmp_path, keys_dir, publish):
    """The control: with a host key (or --no-publish) the worker consumes, and stops with 0."""
    argv = [*WORKER, "--db", f"sqlite:///{tmp_path / 'h.sqlite'}", "--keys-dir", str(keys_dir),
            "--group", f"t{secrets.token_hex(4)}"]
    if publish:
        ensure_replica_keys(keys_dir)
    else:
        argv.append("--no-publish")
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT)
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "consuming from 127.0.0.1:1883" in line:
                break
        else:
            raise AssertionError("the worker did not start:\n" + "".join(seen))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == ExitCode.OK
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
