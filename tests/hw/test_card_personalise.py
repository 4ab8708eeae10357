"""The personalisation command: issue virtual cards from records and the issuer key."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from hw.card.application import FuelCardApplication
from hw.card.keys import SoftwareKeyStore
from hw.sim.card import CardApplet, CardState, DirectChannel
from hw.sim.personalise import main

ROOT = Path(__file__).resolve().parents[2]
RECORDS = [{"card_no": "7005830000000017", "contract_id": 42, "expires_on": "2027-12-31",
            "groups": ["FUEL", "CAR_WASH"], "pin": "1234",
            "limits": [{"limit_id": 1, "unit": "MILLILITRES", "period": "DAY", "amount": 200000},
                       {"limit_id": 2, "unit": "KOPECKS", "period": "MONTH", "amount": 5000000,
                        "scope": "GROUP", "group": "FUEL"}]}]


def test_help_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "hw.sim.personalise", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "issuer master key" in out.stdout


def test_generate_key_and_issue(tmp_path, capsys):
    key, recs, out = tmp_path / "issuer.key", tmp_path / "cards.json", tmp_path / "cards"
    recs.write_text(json.dumps(RECORDS))
    assert main([str(recs), "--key", str(key), "--generate-key", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "7005830000000017" not in printed and "1234" not in printed
    assert key.read_text().strip() not in printed
    path = out / "7005830000000017.json"
    keys = SoftwareKeyStore.from_file(key)
    app = FuelCardApplication(DirectChannel(CardApplet(CardState.load(path))), keys)
    data = asyncio.run(asyncio.wait_for(app.read_card(), 10))
    assert data.card.contract_id == 42 and len(data.card.limits) == 2
    # Issuing again needs --overwrite.
    assert main([str(recs), "--key", str(key), "--out", str(out)]) == 1
    assert "already issued" in capsys.readouterr().err
    assert main([str(recs), "--key", str(key), "--out", str(out), "--overwrite"]) == 0


def test_bad_records_are_reported(tmp_path, capsys):
    key, recs = tmp_path / "issuer.key", tmp_path / "cards.json"
    recs.write_text(json.dumps([{**RECORDS[0], "pin": "12"}]))
    assert main([str(recs), "--key", str(key), "--generate-key", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "PIN" in err and "12\"" not in err
    assert main([str(tmp_path / "missing.json"), "--key", str(key)]) == 1
