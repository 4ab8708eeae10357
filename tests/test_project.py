"""The project's own promises: the README's commands, CI running the same test command,
and the main job's command line."""

import re
import subprocess
import sys
from pathlib import Path

from terminal.dayrun import run_day

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    """The commands of the README's first code block, comments stripped."""
    block = re.search(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_readme_opens_with_the_main_job_and_the_tests():
    main_job, tests = readme_commands()[:2]
    assert main_job.startswith("bash scripts/bootstrap.sh && ") and "edgepos simulate" in main_job
    assert tests.startswith("bash scripts/bootstrap.sh && ") and "pytest" in tests


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in [line.strip() for line in ci]


def test_simulated_day_adds_up():
    """Every request gets exactly one decision; litres and points are consistent."""
    day = run_day(fuel_cards=500, fuel_requests=2_000, club_accounts=300, club_sales=1_000, seed=5)
    assert sum(day.fuel_reasons.values()) == 2_000
    assert sum(day.club_reasons.values()) == 1_000
    assert day.fuel_volume_ml > 0 and day.fuel_amount_kop > 0
    assert day.points_accrued > 0 and day.points_redeemed > 0
    assert len(day.fuel_reasons) >= 6  # the generated day reaches most fuel reasons


def test_simulated_day_is_the_same_on_both_evaluators():
    kwargs = dict(fuel_cards=300, fuel_requests=1_000, club_accounts=200, club_sales=500, seed=9)
    a, b = run_day(impl="native", **kwargs), run_day(impl="reference", **kwargs)
    a.seconds = b.seconds = 0
    a.evaluator = b.evaluator = ""
    assert a == b


def test_cli_simulate_runs_a_site_and_checks_its_journal():
    """The main job: a site provisioned from the host, changes made at the host during the
    run, each followed by a decision at the site under it, and the ledger reconciled exactly
    (pcscd is shared: run under flock /tmp/edgepos-pcscd.lock)."""
    out = subprocess.run([sys.executable, "-m", "terminal.cli", "simulate", "--minutes", "60", "--speed", "300",
                          "--club-accounts", "300", "--fuel-cards", "300"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "edgepos simulated site: 3 600 simulated seconds" in out.stdout
    assert "match: OK" in out.stdout and "MISMATCH" not in out.stdout
    assert out.stdout.rstrip().endswith("host ledger == journal: OK")  # synced through the broker, reconciled exactly
    # the cabinets ran on the host's ledger: their address and demo sign-ins come first
    assert re.match(r"cabinets: http://127\.0\.0\.1:\d+/fleet ", out.stdout), out.stdout[:300]
    assert "fleet sign-in: login demo-fleet" in out.stdout and "club sign-in: phone 79000000001" in out.stdout
    assert "t=" in out.stderr  # live progress on stderr
    # the site has no replica of its own: it waits for the host's snapshots, then serves
    assert "no replica; waiting for the host's snapshots" in out.stderr
    assert re.search(r"provisioned from the host in [\d.]+ s \(300 fuel cards\): serving", out.stderr)
    # each change at the host, then the first decision at the site made under it
    section = out.stdout.split("each with the first decision at the site under it:\n")[1].split("Host ledger")[0]
    rows = section.rstrip("\n").split("\n")
    changes = dict(zip([r.split(" s  ", 1)[1] for r in rows[0::2]], rows[1::2]))
    assert len(changes) == 7, section

    def decision(what: str) -> str:
        line = next(v for k, v in changes.items() if re.search(what, k))
        assert re.search(r"held at the site [\d.]+ s real later; first decision \d+ simulated s "
                         r"\([\d.]+ s real\) after the change: ", line), line
        return line.split(" -> ", 1)[1]
    assert decision(r"^fuel card \S+ blocked") == "declined: STOP_LIST"
    lowered = decision(r"litre limit \d+ of fuel card \S+ lowered .*to 15 L/day")
    assert lowered.startswith("LIMIT, ") and float(lowered.split()[1]) <= 15.0, lowered  # 40 L asked
    assert decision(r"contract \d+ topped up").startswith("OK, ")
    price = re.search(r"price of \S+ at station \d+ changed from [\d.]+ to ([\d.]+) RUB/L", section).group(1)
    assert decision("price of").endswith(f"RUB/L (list {price})")  # decided on the new list price
    assert decision(r"new fuel card \S+ issued").startswith("OK, 30.000 L")  # the new card filled up
    assert decision(r"^club card \S+ blocked") == "refused: CARD_BLOCKED"
    carried = re.search(r"replaced by \S+, the account's balance \(([\d.]+ RUB)\) carried over", section).group(1)
    assert decision(r"club card \S+ replaced by").startswith(f"OK: balance {carried}")  # the new card pays from it
    assert "7005839000000010" not in out.stdout + out.stderr  # card numbers are masked


def test_cli_evaluate_day_prints_a_summary():
    out = subprocess.run([sys.executable, "-m", "terminal.cli", "evaluate-day", "--fuel-cards", "200",
                          "--fuel-requests", "500", "--club-accounts", "100", "--club-sales", "300"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "Fuel: 500 pump requests" in out.stdout and "Club: 300 till sales" in out.stdout
    assert "points accrued" in out.stdout and "fuel: " not in out.stdout  # progress stays on stderr


def test_cli_rejects_bad_sizes_clearly():
    out = subprocess.run([sys.executable, "-m", "terminal.cli", "evaluate-day", "--fuel-cards", "-3"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2 and "must be positive" in out.stderr


def test_cli_help_lists_simulate():
    out = subprocess.run([sys.executable, "-m", "terminal.cli", "--help"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0 and "simulate" in out.stdout


def test_a_crash_in_the_test_run_names_its_thread():
    """faulthandler is on in this process (pytest's plugin) and in every child it starts."""
    import faulthandler
    import os
    import subprocess
    import sys
    assert faulthandler.is_enabled()
    child = subprocess.run([sys.executable, "-c", "import faulthandler; print(faulthandler.is_enabled())"],
                           capture_output=True, text=True, env=os.environ, check=True)
    assert child.stdout.strip() == "True"
