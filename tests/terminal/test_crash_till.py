"""The daemon killed with SIGKILL at every step of the till flows, restarted, and checked:
nothing lost, nothing counted twice, every retried request answered as the first time.

The daemon runs as a real subprocess (``edgepos run``); ``EDGEPOS_CRASH_AT`` makes it kill
itself at a named step (terminal/crashpoints.py), so each step is hit exactly.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from authz.club_model import ClubCardKind
from terminal.config import DEFAULT_SITE_TOML, parse_config
from terminal.journal import Journal
from terminal.replica import Replica
from terminal.till import TERMINAL_KINDS

from .apitokens import call, clients_toml

ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS = 300
LINES = [{"sku": "S1", "category": "shoes", "amount_kop": 400_000}]


def site_toml(tmp_path: Path) -> Path:
    text = DEFAULT_SITE_TOML.split("[[pumps]]")[0]  # tills only: no pcscd needed here
    text += '\n[[tills]]\nid = "till-1"\n\n[api]\nhost = "127.0.0.1"\nport = 0\n' + clients_toml(("till-1",))
    text = text.replace('data_dir = "var/sim"', f'data_dir = "{tmp_path / "data"}"')
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


class DaemonProcess:
    """``edgepos run`` in a subprocess, its port read from its start-up line."""

    def __init__(self, config: Path, crash_at: str | None = None) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("EDGEPOS_CRASH_AT", None)
        if crash_at:
            env["EDGEPOS_CRASH_AT"] = crash_at
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "terminal.cli", "run", "--simulated-replica", "--config", str(config),
             "--club-accounts", str(ACCOUNTS), "--fuel-cards", "10"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
        deadline = time.monotonic() + 30
        self.port = None
        lines = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            self.proc.kill()
            raise AssertionError("the daemon did not start:\n" + "".join(lines))
        # keep draining its log, or a full pipe would block the daemon
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()

    def call(self, method: str, path: str, body=None, key: str | None = None):
        return call(self.port, method, path, body, key)

    def wait_killed(self) -> int:
        return self.proc.wait(timeout=20)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def card_no() -> str:
    """An identified, activated, active card with money on it, in the daemon's replica."""
    cfg = parse_config(DEFAULT_SITE_TOML)
    replica = Replica.simulated(cfg, fuel_cards=10, club_accounts=ACCOUNTS, seed=1)
    m = replica.club_model
    for card in m.cards:
        acc = m.accounts[m.account_index[card.account_id]]
        if card.status == 0 and acc.status == 0 and acc.activated and acc.kind is ClubCardKind.IDENTIFIED \
                and acc.balance_kop >= 200_000:
            return card.card_no
    raise AssertionError("no suitable card")


def balance(d: DaemonProcess, card: str, tag: str) -> int:
    """The card's balance now, through a quote on a fresh sale (then voided)."""
    st, sale = d.call("POST", "/v1/tills/till-1/sales", {"lines": LINES}, key=f"probe-open-{tag}")
    assert st == 201, sale
    sid = sale["sale_id"]
    d.call("POST", f"/v1/tills/till-1/sales/{sid}/card", {"card_no": card}, key=f"probe-card-{tag}")
    st, q = d.call("GET", f"/v1/tills/till-1/sales/{sid}/quote")
    assert st == 200, q
    d.call("POST", f"/v1/tills/till-1/sales/{sid}/void", {}, key=f"probe-void-{tag}")
    return q["balance_kop"]


def journal_kinds(tmp_path: Path, txn_id: str) -> list[str]:
    with Journal.open(tmp_path / "data" / "journal.sqlite", "SIM-077-001", terminal_kinds=TERMINAL_KINDS) as j:
        return [r.kind for r in j.records_for_txn(txn_id)]


PAY = {"payment": {"card_balance_kop": 100_000, "money_kop": 300_000}}


@pytest.mark.parametrize("crash_at", ["till.sale_opened", "till.card_attached", "till.before_commit",
                                      "till.sale_committed"])
def test_sale_killed_at_each_step(tmp_path, card_no, crash_at):
    cfg = site_toml(tmp_path)
    d = DaemonProcess(cfg)
    opening = balance(d, card_no, "before")
    d.stop()

    d = DaemonProcess(cfg, crash_at=crash_at)
    st, sale = d.call("POST", "/v1/tills/till-1/sales", {"lines": LINES}, key="sale-open-1") \
        if crash_at != "till.sale_opened" else (None, None)
    sid = None
    try:
        if crash_at == "till.sale_opened":
            with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
                d.call("POST", "/v1/tills/till-1/sales", {"lines": LINES}, key="sale-open-1")
        elif crash_at == "till.card_attached":
            sid = sale["sale_id"]
            with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
                d.call("POST", f"/v1/tills/till-1/sales/{sid}/card", {"card_no": card_no}, key="sale-card-1")
        else:
            assert st == 201
            sid = sale["sale_id"]
            assert d.call("POST", f"/v1/tills/till-1/sales/{sid}/card", {"card_no": card_no}, key="sale-card-1")[0] == 200
            with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
                d.call("POST", f"/v1/tills/till-1/sales/{sid}/commit", PAY, key="sale-commit-1")
        assert d.wait_killed() == -signal.SIGKILL
    finally:
        d.stop()

    d = DaemonProcess(cfg)  # restart, no crash point
    try:
        if crash_at == "till.sale_opened":
            st, first = d.call("GET", "/v1/requests/sale-open-1")
            assert st == 200 and first["status"] == 201  # the open was journaled with its answer
            sid = first["response"]["sale_id"]
            st, again = d.call("POST", "/v1/tills/till-1/sales", {"lines": LINES}, key="sale-open-1")
            assert (st, again) == (201, first["response"])  # a retry gets the first answer
            assert d.call("GET", f"/v1/tills/till-1/sales/{sid}")[1]["state"] == "voided"
            assert journal_kinds(tmp_path, sid) == ["till.sale_opened", "till.sale_voided"]
            assert balance(d, card_no, "after") == opening
        elif crash_at == "till.card_attached":
            st, status = d.call("GET", "/v1/requests/sale-card-1")
            assert st == 200 and status["response"]["card"].endswith(card_no[-4:])  # journaled with its answer
            st, again = d.call("POST", f"/v1/tills/till-1/sales/{sid}/card", {"card_no": card_no}, key="sale-card-1")
            assert (st, again) == (200, status["response"])
            assert journal_kinds(tmp_path, sid) == ["till.sale_opened", "till.card_attached", "till.sale_voided"]
            assert balance(d, card_no, "after") == opening
        elif crash_at == "till.before_commit":
            st, status = d.call("GET", "/v1/requests/sale-commit-1")
            assert st == 404  # never journaled: no effect
            st, again = d.call("POST", f"/v1/tills/till-1/sales/{sid}/commit", PAY, key="sale-commit-1")
            assert st == 409 and "voided" in again["error"]["message"]
            assert journal_kinds(tmp_path, sid) == ["till.sale_opened", "till.card_attached", "till.sale_voided"]
            assert balance(d, card_no, "after") == opening  # nothing charged
        else:
            st, status = d.call("GET", "/v1/requests/sale-commit-1")
            assert st == 200 and status["response"]["state"] == "committed"
            st, again = d.call("POST", f"/v1/tills/till-1/sales/{sid}/commit", PAY, key="sale-commit-1")
            assert (st, again) == (200, status["response"])
            assert journal_kinds(tmp_path, sid) == ["till.sale_opened", "till.card_attached", "till.sale_committed"]
            assert balance(d, card_no, "after") == opening - 100_000  # charged exactly once
            # and once more after another restart (the replay does not double it)
            d.stop()
            d = DaemonProcess(cfg)
            assert balance(d, card_no, "after2") == opening - 100_000
    finally:
        d.stop()


@pytest.mark.parametrize("crash_at", ["till.topup", "till.return"])
def test_topup_and_return_killed_after_journal(tmp_path, card_no, crash_at):
    cfg = site_toml(tmp_path)
    d = DaemonProcess(cfg, crash_at=crash_at if crash_at == "till.topup" else None)
    opening = None
    try:
        if crash_at == "till.topup":
            with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
                d.call("POST", "/v1/tills/till-1/topups", {"card_no": card_no, "amount_kop": 50_000}, key="topup-0001")
            assert d.wait_killed() == -signal.SIGKILL
        else:
            opening = balance(d, card_no, "before")
            st, sale = d.call("POST", "/v1/tills/till-1/sales", {"lines": LINES}, key="ret-open-1")
            sid = sale["sale_id"]
            d.call("POST", f"/v1/tills/till-1/sales/{sid}/card", {"card_no": card_no}, key="ret-card-1")
            assert d.call("POST", f"/v1/tills/till-1/sales/{sid}/commit", PAY, key="ret-commit-1")[0] == 200
            d.stop()
            d = DaemonProcess(cfg, crash_at=crash_at)
            with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
                d.call("POST", "/v1/tills/till-1/returns", {"sale_id": sid, "returned_kop": 400_000}, key="ret-0001")
            assert d.wait_killed() == -signal.SIGKILL
    finally:
        d.stop()

    d = DaemonProcess(cfg)
    try:
        key = "topup-0001" if crash_at == "till.topup" else "ret-0001"
        st, status = d.call("GET", f"/v1/requests/{key}")
        assert st == 200
        if crash_at == "till.topup":
            assert status["response"]["approved"]
            after = status["response"]["balance_after_kop"]
            st, again = d.call("POST", "/v1/tills/till-1/topups", {"card_no": card_no, "amount_kop": 50_000}, key=key)
            assert again == status["response"]  # not topped up twice
            assert balance(d, card_no, "after") == after
        else:
            assert status["response"]["refund_card_balance_kop"] == 100_000
            assert balance(d, card_no, "after") == opening  # the card part came back, once
    finally:
        d.stop()
