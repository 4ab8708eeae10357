"""A host worker stopped while it is busy must stop cleanly: issue 14.

The worker used to segfault when it stopped with a ledger call still running in a thread
(``run``'s ``finally`` closed the connection under ``Publisher.mark_sent``). The scenario
(``tests/host/worker_churn.py``) starts and stops a worker many times while a site publishes
batches without pause and an operator changes cards at the host, with two busy loops taking
both cores; it runs in a child process with ``faulthandler`` on, so a crash fails this test
with the crashing thread's stack instead of killing the test run. Before the fix it died
with SIGSEGV within a few rounds on SQLite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cpu_load() -> Iterator[None]:
    """Two busy loops, one per core, for the length of the test."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for h in hogs:
            h.kill()
            h.wait()


def test_a_worker_stopped_while_busy_stops_cleanly_every_time(mosquitto, ledger_url: str, cpu_load):
    rounds = "25" if ledger_url.startswith("sqlite") else "15"  # a PostgreSQL round takes longer under the load
    out = subprocess.run([sys.executable, "-X", "faulthandler", "-m", "tests.host.worker_churn", "--db", ledger_url,
                          "--broker", f"{mosquitto[0]}:{mosquitto[1]}", "--rounds", rounds],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout}\n{out.stderr[-6000:]}"
    figures = dict(line.split(": ", 1) for line in out.stdout.splitlines() if ": " in line)
    assert figures["records_stored"] == "2000 of 2000"
    assert int(figures["stops_while_busy"]) > 0, out.stdout  # the stops did land on work in flight
    assert "Fatal Python error" not in out.stderr and "never retrieved" not in out.stderr, out.stderr[-6000:]
