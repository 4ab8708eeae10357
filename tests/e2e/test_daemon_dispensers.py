"""The edge daemon on real dispenser drivers, end to end: ``edgepos run`` (a subprocess, as
on a site) with ``dispenser = "pts2"`` against the PTS-2 controller simulator over loopback
HTTP (Digest authentication), and with ``dispenser = "azt2"`` against the АЗТ 2.0
simulator at the other end of a pty. A virtual fuel card in a real pcscd reader, the PIN,
the console's authorize through the local API, the delivery, and the checks: the sale's
records in the journal, the sale confirmed (closed) at the dispenser only after its
completion is journaled, the card holding the committed counters, and the dispenser's
totals agreeing with the sale (no ``fuel.totals_mismatch``).

The simulators run on an event loop of their own in a thread (the daemon is another
process); every wait is bounded. A pty cannot carry 7E2 framing, so the АЗТ line runs 8N1
(docs/dispensers.md).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hw.sim.azt2 import Azt2Simulator
from hw.sim.pts2 import Pts2Simulator
from tests.hw.conftest import PtyPair, pty_pair  # noqa: F401  (fixture)
from tests.hw.pcsc import READER, pcscd, settle_empty_reader  # noqa: F401  (fixture)
from tests.terminal.test_crash_fuel import PIN, DaemonProcess, Journal, pick_card, replica_of, site_toml

from hw.card.keys import SoftwareKeyStore
from hw.sim.card import VirtualCard
from hw.sim.personalise import personalise

T = TypeVar("T")
PRESET_ML = 5_000
DONE = ["fuel.preauth", "fuel.reserved", "fuel.preset", "fuel.completed", "fuel.card_committed"]


class SimLoop:
    """An event loop in a thread, for the dispenser simulators while the test waits on the
    daemon with blocking calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="dispenser simulator", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        """Run ``coro`` on the simulators' loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(*args)`` on the simulators' loop (they are not thread-safe)."""
        async def call() -> T:
            return fn(*args)
        return self.run(call())

    def close(self) -> None:
        """Stop the loop and its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def sims() -> Iterator[SimLoop]:
    """A loop for the test's dispenser simulator, stopped afterwards."""
    s = SimLoop()
    try:
        yield s
    finally:
        s.close()


def card_for(tmp_path: Path, cfg: Path) -> VirtualCard:
    """A virtual card of the daemon's generated replica, personalised with the site's key."""
    card = pick_card(replica_of(cfg), 1001)
    keys = SoftwareKeyStore(bytes.fromhex((tmp_path / "issuer.key").read_text().strip()))
    path = tmp_path / "card.json"
    personalise(card, PIN, keys).save(path)
    return VirtualCard(path)


def sell(d: DaemonProcess, vcard: VirtualCard, lift: Callable[[], None], hang_up: Callable[[], None],
         during: Callable[[DaemonProcess, dict], None] | None = None) -> dict:
    """One sale through the local API: card in, PIN, authorize 5 L of AI95, the nozzle
    lifted at the dispenser (then ``during(daemon, answer)``), the sale's end; returns the
    authorize answer."""
    assert d.port is not None, d.log()
    d.wait_pump(lambda v: v["pump_state"] == "idle" and not v["pump_offline"], "the dispenser online")
    vcard.insert()
    d.wait_pump(lambda v: v["state"] == "card_read", "a card session")
    st, body = d.call("POST", "/v1/pumps/1/pin", {"pin": PIN}, key="e2e-pin-0001")
    assert st == 200 and body["verified"], body
    st, ans = d.call("POST", "/v1/pumps/1/authorize", {"product": "AI95", "preset_volume_ml": PRESET_ML},
                     key="e2e-authorize-0001")
    assert st == 200 and ans["approved"] and ans["volume_ml"] == PRESET_ML, ans
    lift()
    if during is not None:
        during(d, ans)
    d.wait_pump(lambda v: v["state"] == "card_read" and v["txn"] is None, "the sale's end", timeout=30)
    hang_up()
    return ans


def check_sale(tmp_path: Path, ans: dict, vcard: VirtualCard, totals_before: int, totals_after: int) -> dict:
    """The sale's journal, the card, and the dispenser's totals agree; the completion body."""
    j = Journal(tmp_path)
    recs = j.txn(ans["txn_id"])
    assert [r.kind for r in recs] == DONE, [r.kind for r in recs]
    kinds = [r.kind for r in j.rows()]
    assert "fuel.totals_mismatch" not in kinds and kinds.count("fuel.completed") == 1
    done = next(r.body for r in recs if r.kind == "fuel.completed")
    pre = next(r.body for r in recs if r.kind == "fuel.preauth")
    committed = next(r.body for r in recs if r.kind == "fuel.card_committed")
    assert done["delivered_volume_ml"] == PRESET_ML and done["sale_id"], done
    assert done["amount_kop"] == ans["amount_kop"]
    assert pre["pump"]["totals_before"][1] == totals_before  # read at authorization
    assert totals_after == totals_before + PRESET_ML  # read after completion: they agree
    st = vcard.state
    assert not st.reservation_open and st.txn_counter == pre["card"]["expected_txn"] + 2 == committed["txn_counter"]
    assert st.counters == committed["counters"] == done["card_commit"]["counters"]
    return done


def run_sale(tmp_path: Path, pump_table: str, totals: Callable[[], int], lift: Callable[[], None],
             hang_up: Callable[[], None], during: Callable[[DaemonProcess, dict], None] | None = None,
             ) -> tuple[dict, DaemonProcess]:
    """Start ``edgepos run`` on a site whose pump is ``pump_table``, sell once, check the
    sale against the journal, the card and the dispenser's ``totals`` (ml of AI95); the
    completion body and the daemon (stopped)."""
    cfg = site_toml(tmp_path, pump_table, simulation=False)
    vcard = card_for(tmp_path, cfg)
    settle_empty_reader()
    d = DaemonProcess(cfg)
    try:
        before = totals()
        ans = sell(d, vcard, lift, hang_up, during)
        return check_sale(tmp_path, ans, vcard, before, totals()), d
    finally:
        vcard.pull()
        d.stop()
        settle_empty_reader()


def suspend_and_resume(d: DaemonProcess, ans: dict) -> None:
    """Mid-delivery, the pump console suspends it (PumpSuspend at the controller), then
    resumes it; both journaled, the sale open throughout."""
    d.wait_pump(lambda v: v["txn"] is not None and v["txn"]["delivered_volume_ml"] > 0, "fuel flowing")
    st, got = d.call("POST", "/v1/pumps/1/suspend", {}, key="e2e-suspend-0001")
    assert st == 200 and got["action"] == "suspend" and got["txn_id"] == ans["txn_id"], got
    v = d.wait_pump(lambda v: v["pump_state"] == "suspended", "the delivery suspended")
    assert v["state"] == "dispensing" and v["txn"]["delivered_volume_ml"] < PRESET_ML, v
    st, got = d.call("POST", "/v1/pumps/1/resume", {}, key="e2e-resume-0001")
    assert st == 200 and got["action"] == "resume", got


def test_a_sale_through_the_daemon_on_a_pts2_controller(tmp_path, pcscd, sims):
    # 2x: 5 L take ~4 s, time for the console to suspend and resume the delivery midway
    ctl = Pts2Simulator({1: {1: "AI95", 2: "DT"}}, tmp_path / "pts2.json", username="edge", password="s3cret-pts",
                        auth="digest", time_scale=2)
    url = sims.run(ctl.start())
    (tmp_path / "pts2.cred").write_text("edge:s3cret-pts\n")
    try:
        done, d = run_sale(tmp_path, f'dispenser = "pts2"\n[pumps.pts2]\nurl = "{url}"\n'
                                     'credentials_file = "pts2.cred"\nauth = "digest"\n'
                                     'nozzles = { 1 = "AI95", 2 = "DT" }\npoll_interval_ms = 50\n',
                           lambda: sims.call(ctl.totals, 1, 1)[0], lambda: sims.call(ctl.lift_nozzle, 1, 1),
                           lambda: sims.call(ctl.hang_up, 1), suspend_and_resume)
        txn = sims.call(ctl.transaction, int(done["sale_id"]))
        assert txn["state"] == "Finished" and txn["volume_ml"] == PRESET_ML  # closed at the controller
        assert "s3cret-pts" not in d.log()  # the controller's password is never logged
        actions = [r.body for r in Journal(tmp_path).rows() if r.kind == "fuel.pump_action"]
        assert [a["action"] for a in actions] == ["suspend", "resume"], actions
    finally:
        sims.run(ctl.close())


def test_a_sale_through_the_daemon_on_an_azt2_line(tmp_path, pcscd, sims, pty_pair):  # noqa: F811
    line = Azt2Simulator(pty_pair.master, [1, 2], time_scale=50)
    sims.call(line.start)
    try:
        run_sale(tmp_path, f'dispenser = "azt2"\n[pumps.azt2]\nport = "{pty_pair.path}"\nbaudrate = 4800\n'
                           'line_format = "8N1"\nchannels = { 1 = "AI95", 2 = "DT" }\npoll_interval_ms = 50\n',
                 lambda: sims.call(lambda: line.hoses[1].total_cl) * 10, lambda: sims.call(line.lift_nozzle, 1),
                 lambda: sims.call(line.hang_up, 1))
        # 0: idle with the nozzle down. A sale not confirmed stays in state 4 (finished, waiting
        # for confirmation) whatever the nozzle does; confirmed, the hose went 4 -> 1 (nozzle up) -> 0
        assert sims.call(lambda: line.hoses[1].state) == 0
    finally:
        sims.call(line.close)
