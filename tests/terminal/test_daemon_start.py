"""Starting ``edgepos run``: one daemon per journal, and every start-up mistake an operator
can make answered with one line naming the setting, a distinct exit code, no traceback, and
nothing touched.

Every test runs the real command in subprocesses (tills only: no pcscd), on real journals
and real sockets on loopback.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from terminal.cli import EXIT_MEANINGS, ExitCode, build_parser
from terminal.config import DEFAULT_SITE_TOML, parse_config
from terminal.daemon import AlreadyRunning, Daemon
from terminal.journal import Journal
from terminal.replica import Replica
from terminal.till import TERMINAL_KINDS

from .apitokens import call, clients_toml

ROOT = Path(__file__).resolve().parents[2]
SITE = "SIM-077-001"
LINES = [{"sku": "S1", "category": "shoes", "amount_kop": 400_000}]
RUN = [sys.executable, "-m", "terminal.cli", "run", "--simulated-replica", "--club-accounts", "50", "--fuel-cards", "10"]


def site_toml(tmp_path: Path, *, port: int = 0, extra: str = "", name: str = "site.toml") -> Path:
    """A tills-only site (no pcscd) with its journal in ``tmp_path/data``."""
    text = DEFAULT_SITE_TOML.split("[[pumps]]")[0]
    text = text.replace("station_id = 1001\n", "")
    text += f'\n[[tills]]\nid = "till-1"\n\n[api]\nhost = "127.0.0.1"\nport = {port}\n' + extra
    text += clients_toml(("till-1",))
    text = text.replace('data_dir = "var/sim"', f'data_dir = "{tmp_path / "data"}"')
    path = tmp_path / name
    path.write_text(text)
    return path


def env() -> dict[str, str]:
    e = dict(os.environ, PYTHONPATH=str(ROOT))
    e.pop("EDGEPOS_CRASH_AT", None)
    return e


class Running:
    """``edgepos run`` in a subprocess, up (its port read from its start-up line)."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen([*RUN, "--config", str(config)], stderr=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, text=True, env=env(), cwd=ROOT)
        lines: list[str] = []
        self.port = None
        while True:
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
        self.log = lines
        self._drain = threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True)
        self._drain.start()

    def call(self, method: str, path: str, body=None, key: str | None = None):
        return call(self.port, method, path, body, key)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=30)


def refused(config: Path, *extra: str) -> tuple[int, str]:
    """Run ``edgepos run`` expecting it to refuse: its exit code and its stderr."""
    done = subprocess.run([*RUN, "--config", str(config), *extra], check=False, capture_output=True, text=True, env=env(),
                          cwd=ROOT, timeout=120)
    return done.returncode, done.stderr


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def club_card(config: Path) -> str:
    """An activated, active club card in the daemon's generated replica."""
    replica = Replica.simulated(parse_config(config.read_text()), fuel_cards=10, club_accounts=50, seed=1)
    m = replica.club_model
    for card in m.cards:
        acc = m.accounts[m.account_index[card.account_id]]
        if card.status == 0 and acc.status == 0 and acc.activated:
            return card.card_no
    raise AssertionError("no suitable card")


def journal_kinds(data: Path, txn_id: str) -> list[str]:
    with Journal.open(data / "journal.sqlite", SITE, terminal_kinds=TERMINAL_KINDS) as j:
        return [r.kind for r in j.records_for_txn(txn_id)]


# -- one daemon per journal ---------------------------------------------------------------------

def test_a_second_daemon_on_the_same_journal_stops_before_touching_it(tmp_path):
    cfg = site_toml(tmp_path)
    first = Running(cfg)
    try:
        st, sale = first.call("POST", "/v1/tills/till-1/sales", {"lines": LINES}, key="sale-open-1")
        assert st == 201
        sid = sale["sale_id"]
        journal = tmp_path / "data" / "journal.sqlite"
        before = journal.stat().st_mtime_ns, journal.stat().st_size

        code, err = refused(cfg)
        line = one_line(err)
        assert code == ExitCode.ALREADY_RUNNING == 9
        assert f"pid {first.proc.pid}" in line and str(cfg.resolve()) in line and "site.data_dir" in line
        assert re.search(r"started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", line)

        # the first one is undisturbed: its open sale was not voided by a second recovery
        assert (journal.stat().st_mtime_ns, journal.stat().st_size) == before
        assert first.proc.poll() is None
        st, view = first.call("GET", f"/v1/tills/till-1/sales/{sid}")
        assert st == 200 and view["state"] == "open"
        st, _ = first.call("POST", f"/v1/tills/till-1/sales/{sid}/card", {"card_no": club_card(cfg)},
                           key="sale-card-1")
        assert st == 200
        st, done = first.call("POST", f"/v1/tills/till-1/sales/{sid}/commit",
                              {"payment": {"money_kop": 400_000}}, key="sale-commit-1")
        assert st == 200 and done["state"] == "committed", done
        assert first.call("GET", "/v1/health")[1]["status"] == "ok"
    finally:
        assert first.stop() == ExitCode.OK
    assert journal_kinds(tmp_path / "data", sid)[-1] == "till.sale_committed"
    assert "till.sale_voided" not in journal_kinds(tmp_path / "data", sid)


def test_a_second_daemon_never_reaches_the_broker_to_take_over_the_session(tmp_path):
    """With a broker: the first daemon's MQTT session survives the second one's attempt (the
    same site id is the same client id, and a second CONNECT with it would kick the first)."""
    from terminal.broker import embedded_broker
    from wire import new_key, write_key

    write_key(tmp_path / "site.key", new_key())
    with embedded_broker(tmp_path / "broker") as broker:
        cfg = site_toml(tmp_path, extra=f'\n[broker]\nurl = "{broker.url}"\n\n'
                                        f'[keys]\nsite_key_file = "{tmp_path / "site.key"}"\n')
        first = Running(cfg)
        try:
            deadline = time.monotonic() + 60  # a guard against hanging, not a measurement
            while not (sync := first.call("GET", "/v1/health")[1]["sync"])["connected"]:
                assert time.monotonic() < deadline, f"the first daemon never connected: {sync}"
                time.sleep(0.05)
            assert sync["connects"] == 1
            code, err = refused(cfg)
            assert code == ExitCode.ALREADY_RUNNING and f"pid {first.proc.pid}" in one_line(err)
            sync = first.call("GET", "/v1/health")[1]["sync"]
            assert sync["connected"] and sync["connects"] == 1 and sync["last_error"] is None, sync
        finally:
            assert first.stop() == ExitCode.OK


def test_another_config_file_on_the_same_data_dir_is_refused_too(tmp_path):
    first = Running(site_toml(tmp_path))
    try:
        other = site_toml(tmp_path, name="other.toml")
        code, err = refused(other)
        assert code == ExitCode.ALREADY_RUNNING
        assert str((tmp_path / "site.toml").resolve()) in one_line(err)  # names the running one's file
    finally:
        first.stop()


def test_after_kill_9_of_the_first_a_new_daemon_starts_and_recovers(tmp_path):
    cfg = site_toml(tmp_path)
    first = Running(cfg)
    st, sale = first.call("POST", "/v1/tills/till-1/sales", {"lines": LINES}, key="sale-open-1")
    assert st == 201
    first.proc.send_signal(signal.SIGKILL)
    assert first.proc.wait(timeout=30) == -signal.SIGKILL
    second = Running(cfg)  # no stale lock: the OS released it with the process
    try:
        st, view = second.call("GET", f"/v1/tills/till-1/sales/{sale['sale_id']}")
        assert st == 200 and view["state"] == "voided"  # recovered by the one daemon that owns the journal
        code, err = refused(cfg)
        assert code == ExitCode.ALREADY_RUNNING and f"pid {second.proc.pid}" in one_line(err)
    finally:
        assert second.stop() == ExitCode.OK
    third = Running(cfg)  # and after a clean stop
    third.stop()


def test_two_daemons_in_one_process_cannot_share_a_journal(tmp_path):
    cfg = parse_config(site_toml(tmp_path).read_text())

    async def main():
        replica = Replica.simulated(cfg, fuel_cards=10, club_accounts=50, seed=1)
        async with Daemon(cfg, replica, listen=False, config_source="first"):
            with pytest.raises(AlreadyRunning) as caught:
                await Daemon(cfg, replica, listen=False).start()
            assert f"pid {os.getpid()}" in str(caught.value) and "with first" in str(caught.value)
            assert caught.value.holder["site_id"] == SITE
        async with Daemon(cfg, replica, listen=False):  # released on stop
            pass

    asyncio.run(asyncio.wait_for(main(), 60))


# -- start-up mistakes ---------------------------------------------------------------------------

def test_port_in_use_is_one_line_naming_api_port(tmp_path):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        code, err = refused(site_toml(tmp_path, port=port))
    line = one_line(err)
    assert code == ExitCode.PORT_IN_USE == 8
    assert line.startswith("edgepos: api.port:") and f"127.0.0.1:{port}" in line
    assert not (tmp_path / "data" / "journal.sqlite").exists()  # checked before the journal was opened


def test_missing_issuer_key_file_is_one_line_naming_the_setting(tmp_path):
    missing = tmp_path / "no-such-issuer.key"
    code, err = refused(site_toml(tmp_path, extra=f'\n[keys]\nissuer_key_file = "{missing}"\n'))
    line = one_line(err)
    assert code == ExitCode.KEY_FILE == 5
    assert line.startswith("edgepos: keys.issuer_key_file:") and str(missing) in line
    assert not (tmp_path / "data" / "journal.sqlite").exists()


def test_a_pump_site_without_an_issuer_key_is_refused_unless_it_is_a_simulation(tmp_path):
    """The simulation's issuer key is public: a site with pumps needs keys.issuer_key_file, or
    api.simulation = true. Refused in claim(), before the readers (pcscd) or the journal."""
    text = DEFAULT_SITE_TOML.replace("port = 8780", "port = 0") + clients_toml(("till-1", "till-2"), pumps=True)
    path = tmp_path / "pumps.toml"
    path.write_text(text.replace('data_dir = "var/sim"', f'data_dir = "{tmp_path / "data"}"'))
    code, err = refused(path)
    line = one_line(err)
    assert code == ExitCode.KEY_FILE == 5
    assert line.startswith("edgepos: keys.issuer_key_file:") and "api.simulation" in line
    assert not (tmp_path / "data" / "journal.sqlite").exists()
    cfg = parse_config(path.read_text().replace("port = 0", "port = 0\nsimulation = true"))
    d = Daemon(cfg, Replica.simulated(cfg, fuel_cards=10, club_accounts=10, seed=1))
    d.claim()  # a simulation may use the public test key
    asyncio.run(d.stop())  # lets go of the lock and the port


def test_missing_site_key_file_stops_before_the_broker(tmp_path):
    missing = tmp_path / "site.key"
    extra = f'\n[broker]\nurl = "mqtt://127.0.0.1:1883"\n\n[keys]\nsite_key_file = "{missing}"\n'
    code, err = refused(site_toml(tmp_path, extra=extra))
    line = one_line(err)
    assert code == ExitCode.KEY_FILE
    assert line.startswith("edgepos: keys.site_key_file:") and "does not exist" in line
    assert not (tmp_path / "data" / "journal.sqlite").exists()


def test_missing_broker_password_file_is_one_line_naming_the_setting(tmp_path):
    from wire import new_key, write_key
    write_key(tmp_path / "site.key", new_key())
    missing = tmp_path / "broker.password"
    extra = (f'\n[broker]\nurl = "mqtt://127.0.0.1:1883"\npassword_file = "{missing}"\n\n'
             f'[keys]\nsite_key_file = "{tmp_path / "site.key"}"\n')
    code, err = refused(site_toml(tmp_path, extra=extra))
    line = one_line(err)
    assert code == ExitCode.KEY_FILE and line.startswith("edgepos: broker.password_file:") and str(missing) in line
    assert not (tmp_path / "data" / "journal.sqlite").exists()


def test_bad_configuration_is_one_line_with_its_own_code(tmp_path):
    code, err = refused(site_toml(tmp_path, extra="\n[api]\n", name="twice.toml"))  # not valid TOML
    assert code == ExitCode.CONFIG == 7 and one_line(err).startswith("edgepos: not valid TOML")
    path = site_toml(tmp_path, name="lan.toml")
    path.write_text(path.read_text().replace('host = "127.0.0.1"', 'host = "10.0.0.1"'))
    code, err = refused(path)
    line = one_line(err)  # a LAN address without mutual TLS (terminal/config.py)
    assert code == ExitCode.CONFIG and line.startswith("edgepos: api.tls_cert_file:") and "api.host" in line
    code, err = refused(tmp_path / "absent.toml")
    assert code == ExitCode.CONFIG and "absent.toml" in one_line(err)


def test_a_data_dir_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "data").write_text("a file where the directory should be")
    code, err = refused(site_toml(tmp_path))
    assert code == ExitCode.CONFIG and one_line(err).startswith("edgepos: site.data_dir: cannot create")


def test_a_journal_of_another_site_is_refused_in_one_line(tmp_path):
    data = tmp_path / "data"
    Journal.open(data / "journal.sqlite", "OTHER-SITE").close()
    code, err = refused(site_toml(tmp_path))
    assert code == ExitCode.FAILED and one_line(err).startswith("edgepos: site.data_dir:")


def test_exit_codes_are_distinct_documented_and_in_help():
    assert len({int(c) for c in ExitCode}) == len(ExitCode)
    assert set(EXIT_MEANINGS) == set(ExitCode)
    run = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    text = run.format_help()
    for code in ExitCode:
        assert re.search(rf"^\s+{int(code)}\s", text, re.MULTILINE), code
    docs = (ROOT / "docs" / "operations.md").read_text()
    for code in ExitCode:
        assert re.search(rf"^\| `{int(code)}` \|", docs, re.MULTILINE), f"exit code {int(code)} not in docs/operations.md"


def test_edge_and_host_exit_codes_never_mean_two_things():
    from host.admin import ExitCode as HostExitCode
    edge = {c.name: int(c) for c in ExitCode}
    host = {c.name: int(c) for c in HostExitCode}
    for name in edge.keys() & host.keys():
        assert edge[name] == host[name], name
    by_value: dict[int, set[str]] = {}
    for name, value in [*edge.items(), *host.items()]:
        by_value.setdefault(value, set()).add(name)
    shared_meaning = {frozenset({"FAILED", "REFUSED"})}  # 1: the command did not do it
    assert all(len(v) == 1 or frozenset(v) in shared_meaning for v in by_value.values()), by_value


def test_lock_file_is_not_inherited_by_children(tmp_path):
    """A child process (a broker, a helper) must not keep the journal locked after the daemon dies."""
    cfg = parse_config(site_toml(tmp_path).read_text())

    async def main():
        replica = Replica.simulated(cfg, fuel_cards=10, club_accounts=50, seed=1)
        d = Daemon(cfg, replica, listen=False)
        d.claim()
        try:
            fd = d.lock._fd
            assert fd is not None and not os.get_inheritable(fd)
        finally:
            d.lock.release()
        async with Daemon(cfg, replica, listen=False):  # the same journal again, after release
            pass

    asyncio.run(asyncio.wait_for(main(), 60))



def test_port_taken_between_the_check_and_listening_is_port_in_use(tmp_path):
    """Another program that binds with SO_REUSEADDR and listens after claim() but before the
    API listens: the start fails with PortInUse and releases the journal."""
    from terminal.daemon import PortInUse
    cfg = parse_config(site_toml(tmp_path).read_text())

    async def main():
        replica = Replica.simulated(cfg, fuel_cards=10, club_accounts=50, seed=1)
        d = Daemon(cfg, replica)
        d.claim()
        port = d._sock.getsockname()[1]
        with socket.socket() as other:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            other.bind(("127.0.0.1", port))
            other.listen()
            with pytest.raises(PortInUse, match=f"127.0.0.1:{port}"):
                await d.start()
        assert not d.lock.held
        async with Daemon(cfg, replica, listen=False):  # nothing left behind
            pass

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_site_without_any_replica_source_refuses_to_start_naming_what_to_do(tmp_path):
    """No broker, no stored replica, no --simulated-replica: one line, exit 10, the journal
    untouched; a broker without the host's public key: one line, exit 5."""
    plain = [a for a in RUN if a not in ("--simulated-replica",)]
    cfg = site_toml(tmp_path)
    done = subprocess.run([*plain, "--config", str(cfg)], check=False, capture_output=True, text=True, env=env(),
                          cwd=ROOT, timeout=120)
    assert done.returncode == ExitCode.NO_REPLICA
    line = one_line(done.stderr)
    assert "no stored replica" in line and "broker.url" in line and "--simulated-replica" in line
    assert not (tmp_path / "data" / "journal.sqlite").exists()
    from wire import new_key, write_key
    write_key(tmp_path / "site.key", new_key())
    cfg = site_toml(tmp_path, name="broker.toml", extra='\n[broker]\nurl = "mqtt://127.0.0.1:1"\n\n'
                                                      f'[keys]\nsite_key_file = "{tmp_path / "site.key"}"\n')
    done = subprocess.run([*plain, "--config", str(cfg)], check=False, capture_output=True, text=True, env=env(),
                          cwd=ROOT, timeout=120)
    assert done.returncode == ExitCode.KEY_FILE
    assert one_line(done.stderr).startswith("edgepos: keys.host_key_file: required to be provisioned from the host")
    assert not (tmp_path / "data" / "journal.sqlite").exists()
