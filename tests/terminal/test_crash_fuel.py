"""The daemon killed (SIGKILL) at every step of the fuel flow, restarted, and checked: no fuel
dispensed and unrecorded, nothing recorded twice, the card and the journal agreeing.

The daemon is a real subprocess (``edgepos run``) with a simulated dispenser that keeps its
memory in a file (terminal.fuel.RecordedSimPump, as a real dispenser keeps its totals when
its controller dies). ``EDGEPOS_CRASH_AT`` makes the daemon kill itself at a named step
(terminal/crashpoints.py). The virtual card stays in the reader (real pcscd) throughout; the
test personalises it from the daemon's own generated replica with the configured issuer key.

One chain of runs covers every step: each run recovers the sale the run before it killed,
the test checks that sale, then starts the next sale, which dies at the next step. Each test
runs with a card of format 01, and with a card of format 02 that also carries a purchase
count (issue 11): after every recovery the count on the card is the number of sales
completed with fuel, never one more or one less.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from authz.fuel_model import (
    CardStatus,
    FuelRequest,
    Limit,
    LimitUnit,
    Period,
    ProductGroup,
)
from hw.card.keys import SoftwareKeyStore, generate_master_key, save_master_key
from hw.sim.card import VirtualCard
from hw.sim.personalise import personalise
from terminal.config import DEFAULT_SITE_TOML, parse_config
from terminal.replica import Replica
from tests.hw.pcsc import READER, pcscd, settle_empty_reader  # noqa: F401  (fixture)

from .apitokens import call, clients_toml

ROOT = Path(__file__).resolve().parents[2]
CARDS = 300
SEED = 5
PIN = "4321"
PRESET_ML = 5_000
LOST = (urllib.error.URLError, ConnectionError, OSError)
#: The purchase-count limit the count card carries (its records only: the replica decides).
COUNT_LIMIT = Limit(999_999, LimitUnit.PURCHASES, Period.LIFETIME, 1_000)


def site_toml(tmp_path: Path, pump: str = 'products = ["AI92", "AI95", "DT"]\n', simulation: bool = True) -> Path:
    """The embedded site with one pump (``pump``: the rest of its ``[[pumps]]`` entry), the
    test clients and an issuer key of its own."""
    key = tmp_path / "issuer.key"
    save_master_key(key, generate_master_key())
    text = DEFAULT_SITE_TOML.split("[[pumps]]")[0]
    text = text.replace('data_dir = "var/sim"', f'data_dir = "{tmp_path / "data"}"')
    text += (f'\n[[pumps]]\nid = 1\nreader = "{READER}"\n{pump}'
             f'\n[api]\nhost = "127.0.0.1"\nport = 0\nsimulation = {str(simulation).lower()}\n'
             f'{clients_toml(pumps=True)}\n[keys]\nissuer_key_file = "{key}"\n')
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def replica_of(cfg_path: Path) -> Replica:
    """The replica the daemon builds (same generator, same seed)."""
    cfg = parse_config(cfg_path.read_text(), base_dir=cfg_path.parent)
    return Replica.simulated(cfg, fuel_cards=CARDS, club_accounts=10, seed=SEED)


def pick_card(replica: Replica, station_id: int):
    """An active fuel card with room for every sale of the chain."""
    m, ev = replica.fuel_model, replica.fuel
    for card in m.cards:
        if card.status is not CardStatus.ACTIVE or card.card_no in m.stop_list or ProductGroup.FUEL not in card.groups:
            continue
        d = ev.authorize(FuelRequest(card.card_no, station_id, "AI95", int(time.time()), preset_volume_ml=40_000))
        if d.approved and d.volume_ml == 40_000:
            return card
    raise AssertionError("no suitable card in the generated replica")


class DaemonProcess:
    """``edgepos run`` in a subprocess, its port read from its start-up line."""

    def __init__(self, config: Path, crash_at: str | None = None) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("EDGEPOS_CRASH_AT", None)
        if crash_at:
            env["EDGEPOS_CRASH_AT"] = crash_at
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "terminal.cli", "run", "--simulated-replica", "--config", str(config),
             "--fuel-cards", str(CARDS), "--club-accounts", "10", "--seed", str(SEED)],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
        self.lines: list[str] = []
        self.port = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        threading.Thread(target=lambda: [self.lines.append(x) for x in self.proc.stderr], daemon=True).start()

    def log(self) -> str:
        return "".join(self.lines[-40:])

    def call(self, method: str, path: str, body=None, key: str | None = None):
        return call(self.port, method, path, body, key)

    def pump(self) -> dict:
        return self.call("GET", "/v1/pumps/1")[1]

    def wait_pump(self, cond, what: str, timeout: float = 15) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = self.pump()
            if cond(v):
                return v
            time.sleep(0.02)
        raise AssertionError(f"pump never got to {what}: {self.pump()}\n{self.log()}")

    def wait_killed(self) -> int:
        return self.proc.wait(timeout=20)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class Journal:
    """The daemon's journal, read with plain SQLite (read-only) while it runs."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "data" / "journal.sqlite"

    def rows(self) -> list[SimpleNamespace]:
        con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return [SimpleNamespace(txn_id=t, kind=k, body=json.loads(b))
                    for t, k, b in con.execute("SELECT txn_id, kind, body FROM records ORDER BY seq")]
        finally:
            con.close()

    def sales(self) -> list[str]:
        """The fuel transactions, oldest first."""
        return [r.txn_id for r in self.rows() if r.kind == "fuel.preauth"]

    def txn(self, txn_id: str) -> list[SimpleNamespace]:
        return [r for r in self.rows() if r.txn_id == txn_id]


def sale(d: DaemonProcess, key: str, crash_at: str | None) -> dict | None:
    """One fuel sale through the console API and the simulation's hands; returns the
    authorize answer (None when the daemon died before answering it)."""
    d.wait_pump(lambda v: v["state"] == "card_read", "a card session")
    assert d.call("POST", "/v1/sim/pumps/1/knobs", {"time_scale": 50})[0] == 200
    st, body = d.call("POST", "/v1/pumps/1/pin", {"pin": PIN}, key=f"{key}-pin")
    assert st == 200, body
    if crash_at in ("fuel.preauth", "card.reserved", "fuel.reserved", "pump.preset", "fuel.preset"):
        with pytest.raises(LOST):
            d.call("POST", "/v1/pumps/1/authorize", {"product": "AI95", "preset_volume_ml": PRESET_ML}, key=key)
        return None
    st, ans = d.call("POST", "/v1/pumps/1/authorize", {"product": "AI95", "preset_volume_ml": PRESET_ML}, key=key)
    assert st == 200 and ans["approved"], ans
    if crash_at == "fuel.totals_mismatch":  # fuel through the meter outside the sale
        untracked = {"product": "AI95", "volume_ml": 700, "price_kop_per_l": 6_000}
        assert d.call("POST", "/v1/sim/pumps/1/knobs", {"meter_untracked": untracked})[0] == 200
    try:
        d.call("POST", "/v1/sim/pumps/1/nozzle", {"action": "lift", "product": "AI95"})
    except LOST:
        assert crash_at == "fuel.dispensing"
    if crash_at is None:
        d.wait_pump(lambda v: v["state"] == "card_read" and v["txn"] is None, "the sale's end")
        d.call("POST", "/v1/sim/pumps/1/nozzle", {"action": "hang_up"})
    return ans


#: Each step, what the recovered sale's journal must read, and whether fuel was dispensed.
VOID_R = ["fuel.preauth", "fuel.reserved", "fuel.voided"]
DONE = ["fuel.preauth", "fuel.reserved", "fuel.preset", "fuel.completed", "fuel.card_committed"]
CHAIN = [  # ordered so that no run's crash point is reached while it recovers the run before
    ("fuel.dispensing", DONE, True),
    ("fuel.preauth", ["fuel.preauth", "fuel.voided"], False),
    ("pump.confirmed", DONE, True),  # the dispenser told the sale is journaled, the card not yet
    ("fuel.completed", DONE, True),
    ("card.reserved", ["fuel.preauth", "fuel.voided"], False),
    ("card.committed", DONE, True),
    ("fuel.reserved", VOID_R, False),
    ("fuel.card_committed", DONE, True),
    ("fuel.totals_mismatch", DONE[:4] + ["fuel.totals_mismatch", "fuel.card_committed"], True),
    ("pump.preset", VOID_R, False),
    ("fuel.preset", ["fuel.preauth", "fuel.reserved", "fuel.preset", "fuel.voided"], False),
]


def check_sale(j: Journal, txn_id: str, kinds: list[str], dispensed: bool, card: VirtualCard, d: DaemonProcess,
               step: str) -> None:
    recs = j.txn(txn_id)
    assert [r.kind for r in recs] == kinds, (step, [r.kind for r in recs])
    pre = recs[0].body["card"]
    st = card.state
    assert not st.reservation_open, step
    if dispensed:
        done = next(r.body for r in recs if r.kind == "fuel.completed")
        committed = next(r.body for r in recs if r.kind == "fuel.card_committed")
        assert st.txn_counter == pre["expected_txn"] + 2 == committed["txn_counter"], step
        assert st.counters == committed["counters"] == done["card_commit"]["counters"], step
        if pre["counting"][-1][0] == COUNT_LIMIT.limit_id:
            assert pre["counting"][-1] == [COUNT_LIMIT.limit_id, 1, int(LimitUnit.PURCHASES), 0], step
        last = d.pump()["last_delivery"]
        assert last["volume_ml"] == done["delivered_volume_ml"] and last["sale_no"] == done["sale_no"], step
        if step == "fuel.dispensing":
            assert 0 < done["delivered_volume_ml"] < PRESET_ML and last["reason"] == "fault"
        else:
            assert done["delivered_volume_ml"] == PRESET_ML
    else:
        voided = recs[-1].body
        if voided["card_release"] == "released":
            assert st.txn_counter == pre["expected_txn"] + 2, step
            assert st.counters == pre["base_counters"], step  # the reservation given back
        else:
            assert voided["card_release"] == "not_reserved" and st.txn_counter == pre["expected_txn"], step
    if st.counters[-1][0] == COUNT_LIMIT.limit_id:  # one purchase per sale with fuel, whatever the crash
        completed = sum(1 for r in j.rows() if r.kind == "fuel.completed")
        assert st.counters[-1] == [COUNT_LIMIT.limit_id, completed, 0], (step, st.counters)


@pytest.fixture(params=["format-01", "count-card"])
def site(tmp_path, pcscd, request):
    cfg = site_toml(tmp_path)
    replica = replica_of(cfg)
    card = pick_card(replica, 1001)
    keys = SoftwareKeyStore(bytes.fromhex((tmp_path / "issuer.key").read_text().strip()))
    path = tmp_path / "card.json"
    on_card = replace(card, limits=card.limits + (COUNT_LIMIT,)) if request.param == "count-card" else card
    state = personalise(on_card, PIN, keys)
    assert state.identity[0] == (2 if request.param == "count-card" else 1)
    state.save(path)
    settle_empty_reader()
    vcard = VirtualCard(path)
    vcard.insert()
    try:
        yield cfg, replica, card, vcard
    finally:
        vcard.pull()
        settle_empty_reader()


def replayed_balance(cfg: Path, j: Journal, contract_id: int) -> tuple[int, int]:
    """The contract's balance as a fresh replica has it after replaying the journal, and the
    sum of the amounts completed on it."""
    r = replica_of(cfg)
    rows = j.rows()
    r.replay(rows)
    spent = sum(x.body["amount_kop"] for x in rows if x.kind == "fuel.completed")
    return r.fuel.balance_kop(contract_id), spent


def test_killed_at_every_step_of_the_fuel_flow(tmp_path, site):
    cfg, replica, card, vcard = site
    opening = replica.fuel.balance_kop(card.contract_id)
    j = Journal(tmp_path)
    prev = None
    for n, (crash_at, _, _) in enumerate(CHAIN + [(None, None, None)]):
        d = DaemonProcess(cfg, crash_at=crash_at)
        try:
            assert d.port is not None, f"run {n} ({crash_at}) did not start:\n{d.log()}"
            if prev is not None:  # this run's start recovered the sale the last run killed
                step, kinds, dispensed = prev
                txn_id = j.sales()[-1]
                check_sale(j, txn_id, kinds, dispensed, vcard, d, step)
                st, first = d.call("GET", f"/v1/requests/fuel-sale-{n - 1:04d}")
                after_preset = kinds[2:3] == ["fuel.preset"]
                assert st == (200 if after_preset else 404), (step, first)  # answered only once preset
            if crash_at is None:
                break
            sale(d, f"fuel-sale-{n:04d}", crash_at)
            assert d.wait_killed() == -signal.SIGKILL, d.log()
            prev = CHAIN[n]
        finally:
            d.stop()
    rows = j.rows()
    sales = j.sales()
    assert len(sales) == len(CHAIN)
    completions = [r.txn_id for r in rows if r.kind == "fuel.completed"]
    assert len(completions) == len(set(completions)) == sum(1 for _, _, x in CHAIN if x)  # once each, no more
    assert not [r for r in rows if r.kind == "fuel.correction"]  # the card was there for every step
    balance, spent = replayed_balance(cfg, j, card.contract_id)
    assert spent > 0 and balance == opening - spent


def test_repeated_crashes_while_recovering_record_the_delivery_once(tmp_path, site):
    """Killed mid-delivery, then killed again inside recovery, twice: one completion."""
    cfg, replica, card, vcard = site
    opening = replica.fuel.balance_kop(card.contract_id)
    j = Journal(tmp_path)
    d = DaemonProcess(cfg, crash_at="fuel.dispensing")
    try:
        sale(d, "fuel-sale-0000", "fuel.dispensing")
        assert d.wait_killed() == -signal.SIGKILL
    finally:
        d.stop()
    for point in ("fuel.completed", "card.committed"):  # both reached during recovery, before the API
        d = DaemonProcess(cfg, crash_at=point)
        try:
            assert d.port is None and d.wait_killed() == -signal.SIGKILL, d.log()
        finally:
            d.stop()
    txn_id = j.sales()[0]
    assert [r.kind for r in j.txn(txn_id)][-1] == "fuel.completed"
    assert vcard.state.txn_counter == 2  # the card committed, the journal not told yet
    d = DaemonProcess(cfg)
    try:
        check_sale(j, txn_id, DONE, True, vcard, d, "fuel.dispensing")
        assert [r.kind for r in j.rows()].count("fuel.completed") == 1
        balance, spent = replayed_balance(cfg, j, card.contract_id)
        assert balance == opening - spent and spent > 0
        d.wait_pump(lambda v: v["state"] == "card_read", "a new card session")
    finally:
        d.stop()
