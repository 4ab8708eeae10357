"""``python -m benchmarks.cabinet --signin-only`` prints the sign-in figures (the issue names
that one command for both the statement and the sign-in figures) without building the
statement ledger; bad flag combinations are usage errors."""

from __future__ import annotations

import pytest

from benchmarks import cabinet


def test_signin_only_prints_the_signin_figures_and_no_ledger(capsys) -> None:
    cabinet.main(["--signin-only", "--signins", "2"])
    out = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert out["cabinet_signins"] == "2" and float(out["cabinet_signin_p95_ms"]) > 0
    assert float(out["argon2id_verify_cpu_p50_ms"]) > 0
    assert "ledger_purchases" not in out and "cabinet_statement_p95_ms" not in out


@pytest.mark.parametrize("argv", [["--signin-only", "--signins", "0"], ["--signins", "-1"]])
def test_bad_signin_flags_are_usage_errors(argv, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        cabinet.main(argv)
    assert e.value.code == 2 and "--signins" in capsys.readouterr().err
