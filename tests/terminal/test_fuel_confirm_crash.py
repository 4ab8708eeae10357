"""A sale whose confirm never reached the dispenser, across SIGKILLs: the daemon (``edgepos
run``, a subprocess with a dispenser that keeps its memory in a file) finishes a sale whose
confirm is lost on the line, is killed; the next start confirms the sale from the journal
and is killed right there (``EDGEPOS_CRASH_AT=pump.confirmed``, before the API listens); the
start after it finds nothing left to confirm. Nothing is journaled again on the way.
"""

from __future__ import annotations

import json
import os
import signal

from tests.hw.pcsc import pcscd, settle_empty_reader  # noqa: F401  (fixtures)

from .test_crash_fuel import DONE, DaemonProcess, Journal, sale, site  # noqa: F401  (fixture)


def test_a_lost_confirm_is_sent_at_the_next_start_across_kills(tmp_path, site):  # noqa: F811
    cfg, _, _, _ = site
    j = Journal(tmp_path)
    state = tmp_path / "data" / "pumps" / "pump-1.json"
    d = DaemonProcess(cfg)
    try:
        assert d.port is not None, d.log()
        d.wait_pump(lambda v: v["state"] == "card_read", "a card session")
        st, knobs = d.call("POST", "/v1/sim/pumps/1/knobs", {"lose_confirms": 1})
        assert st == 200 and knobs["lose_confirms"] == 1, knobs
        ans = sale(d, "fuel-sale-0000", None)
        assert [r.kind for r in j.txn(ans["txn_id"])] == DONE
        done = next(r.body for r in j.txn(ans["txn_id"]) if r.kind == "fuel.completed")
        held = json.loads(state.read_text())
        assert held["unconfirmed"] is True and held["confirmed_id"] != done["sale_id"], held
        os.kill(d.proc.pid, signal.SIGKILL)
        assert d.wait_killed() == -signal.SIGKILL
    finally:
        d.stop()
    rows = len(j.rows())

    d = DaemonProcess(cfg, crash_at="pump.confirmed")  # dies right after the left-over confirm
    try:
        assert d.port is None and d.wait_killed() == -signal.SIGKILL, d.log()
    finally:
        d.stop()
    held = json.loads(state.read_text())
    assert held["unconfirmed"] is False and held["confirmed_id"] == done["sale_id"], held
    assert len(j.rows()) == rows  # confirming journals nothing

    d = DaemonProcess(cfg)
    try:
        assert d.port is not None, d.log()
        d.wait_pump(lambda v: v["state"] == "card_read", "a new card session")
        assert "unconfirmed" not in (d.pump()["notice"] or "")
        kinds = [r.kind for r in j.rows()]
        assert len(kinds) == rows and kinds.count("fuel.completed") == 1
        nxt = sale(d, "fuel-sale-0001", None)  # the dispenser takes the next sale
        assert [r.kind for r in j.txn(nxt["txn_id"])] == DONE
    finally:
        d.stop()
