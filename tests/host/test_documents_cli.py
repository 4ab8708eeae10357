"""``edgepos host document`` / ``set-requisites`` / ``set-station-address``: each document
written to a file (or stdout) and read back; bad input is one line, exit 1, nothing changed.

The command line runs on the real clock (it is past November 2026, the world's month)."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pypdf import PdfReader

from host import documents as D
from host.admin import main
from host.ledger import Ledger

from .edge import CARD2, CONTRACT, STATION
from .test_documents import BUYER, SELLER, world  # noqa: F401 - the fixture


def run(url: str, capsys, *args: str) -> tuple[int, str, str]:
    code = main(["--db", url, *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_document_is_written_to_a_file(world: Ledger, ledger_url: str, tmp_path: Path, capsys):  # noqa: F811
    assert run(ledger_url, capsys, "set-requisites", "--operator", "--name", SELLER.name, "--inn", SELLER.inn,
               "--kpp", SELLER.kpp, "--address", SELLER.address)[0] == 0
    code, out, _ = run(ledger_url, capsys, "set-requisites", "--contract", str(CONTRACT), "--name", BUYER.name,
                       "--inn", BUYER.inn, "--kpp", BUYER.kpp, "--address", BUYER.address)
    assert code == 0 and "client requisites set" in out
    assert D.client_requisites(world.db, CONTRACT) == BUYER
    for kind in ("statement", "report", "invoice", "act"):
        for fmt in ("csv", "pdf"):
            path = tmp_path / f"{kind}.{fmt}"
            code, out, err = run(ledger_url, capsys, "document", kind, "--contract", str(CONTRACT), "--month", "2026-11",
                                 "--format", fmt, "--out", str(path))
            assert code == 0, err
            assert f"written {path}" in out
            data = path.read_bytes()
            text = data.decode("utf-8-sig") if fmt == "csv" else \
                "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(data)).pages)
            assert "4700,06" in text or kind == "statement" and "10299,94" in text, (kind, fmt)
            if kind in ("invoice", "act", "report"):
                assert SELLER.inn in text and BUYER.name in text
    path = tmp_path / "detail.csv"
    assert run(ledger_url, capsys, "document", "detail", "--contract", str(CONTRACT), "--from", "2026-11-01",
               "--to", "2026-11-30", "--card", CARD2, "--format", "csv", "--out", str(path))[0] == 0
    rows = list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8-sig")), delimiter=";"))
    assert [r[1] for r in rows if len(r) == 10 and r[1] == CARD2] == [CARD2]
    assert ["Итого сумма, руб.", "600,06"] in rows


def test_a_document_to_stdout(world: Ledger, ledger_url: str, capsysbinary):  # noqa: F811
    code = main(["--db", ledger_url, "document", "invoice", "--contract", str(CONTRACT), "--month", "2026-11",
                 "--format", "csv", "--out", "-"])
    out = capsysbinary.readouterr().out
    assert code == 0 and out.startswith(b"\xef\xbb\xbf") and "Всего с НДС, руб.;4700,06".encode() in out


def test_bad_input_is_refused_with_one_line(world: Ledger, ledger_url: str, tmp_path: Path, capsys):  # noqa: F811
    now = datetime.now(ZoneInfo("Europe/Moscow"))  # the contract's zone
    running = f"{now.year:04d}-{now.month:02d}"
    out = str(tmp_path / "x.pdf")
    for args, why in (
            (["document", "invoice", "--contract", "1", "--month", "2026-13", "--format", "pdf", "--out", out], "month"),
            (["document", "invoice", "--contract", "999", "--month", "2026-11", "--format", "pdf", "--out", out],
             "no contract 999"),
            (["document", "act", "--contract", "1", "--month", "2099-01", "--format", "pdf", "--out", out],
             "has not begun"),
            (["document", "detail", "--contract", "1", "--month", "2026-11", "--format", "csv", "--out", out],
             "--from and --to"),
            (["document", "invoice", "--contract", "1", "--from", "2026-11-01", "--format", "csv", "--out", out],
             "--month"),
            (["set-requisites", "--contract", "1", "--name", "X", "--inn", "7701000018", "--kpp", "770101001",
              "--address", "a"], "check digit"),
            (["set-requisites", "--name", "X", "--inn", "7701000019", "--kpp", "770101001", "--address", "a"],
             "--operator or --contract"),
            (["set-station-address", "4242", "--name", "x", "--address", "y"], "no station 4242")):
        code, _, err = run(ledger_url, capsys, *args)
        assert code == 1 and why in err and err.count("\n") == 1, (args, err)
    if running > "2026-11":  # the month the real clock is in is not closed
        code, _, err = run(ledger_url, capsys, "document", "invoice", "--contract", "1", "--month", running,
                           "--format", "csv", "--out", out)
        assert code == 1 and "not closed" in err
    assert not Path(out).exists() and D.client_requisites(world.db, CONTRACT).name == ""
    code, out_text, _ = run(ledger_url, capsys, "set-station-address", str(STATION), "--name", "АЗС №3",
                            "--address", "Тара, ул. Мира, 1")
    assert code == 0 and "АЗС №3" in out_text


@pytest.mark.parametrize("fmt", ["xlsx"])
def test_an_unknown_format_is_a_usage_error(ledger_url: str, fmt: str, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--db", ledger_url, "document", "invoice", "--contract", "1", "--month", "2026-11", "--format", fmt,
              "--out", "-"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
