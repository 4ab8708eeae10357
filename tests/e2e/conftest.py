"""The end-to-end harness: edge journals -> SyncClient -> Mosquitto -> host Worker -> ledger.

Everything is real: each site's :class:`terminal.journal.Journal` file (realistic records,
``tests/e2e/fleet.py``), a :class:`terminal.sync.SyncClient` per site (in this process, or
in its own process so a test can SIGKILL it: ``tests/e2e/edge_proc.py``), a Mosquitto with
the no-drop configuration, per-site credentials and the ACL (``terminal.broker``) on a free
port, and host :class:`host.worker.Worker` s (in this process, or ``python -m host.worker``
subprocesses so a test can SIGKILL one) on a SQLite or PostgreSQL ledger with the master
data the records refer to.

:meth:`Harness.check_exact` is the verdict after each fault: the ledger holds exactly the
journals (``host.reconcile`` ok; per site the same record ids; per site and kind the same
counts and sums), every record is acked at the edge, each record was applied once (the
site's and the batches' ``new_records`` counters), the watermark is the edge's last batch,
contract balances and club accounts are charged once, and nothing else is in the ledger.

Every wait is bounded: :func:`until` and :func:`run` fail the test instead of hanging it,
and every child process is killed at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from host import reconcile
from host.ledger import Ledger
from host.worker import Worker
from terminal.broker import (
    HOST_USER,
    MosquittoBroker,
    MosquittoSettings,
    free_port,
    write_acl_file,
    write_password_file,
)
from terminal.journal import Journal
from terminal.sync import SyncClient, SyncSettings
from tests.host.conftest import pg_schema_url, postgres  # noqa: F401 - fixtures used by ledger_url
from wire import (
    REPLICA_VERIFY_KEY_FILE,
    SiteKeys,
    new_key,
    new_replica_signing_key,
    write_key,
    write_replica_keys,
)

from .fleet import (
    CONTRACTS,
    SitePlan,
    amount_volume,
    build_templates,
    charged,
    copy_journal,
    journal_figures,
    journal_groups,
    journal_ids,
    setup_ledger,
)

ROOT = Path(__file__).resolve().parents[2]
SITES = ["E2E-S1", "E2E-S2", "E2E-S3"]
HOST_PASSWORD = "host-e2e-secret"
#: Pump and till operations per site in the offline backlog (about 5,000 records a site),
#: and the records journaled later (while the broker is down, ...).
FUEL_SALES, TILL_OPS, LATER_SALES, LATER_CHUNKS = 1000, 120, 40, 4


def run(coro, timeout: float = 90.0):
    """Run ``coro``, bounded: a hang fails the test instead of the suite."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` (sync or async) until it is truthy; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if inspect.isawaitable(v):
            v = await v
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


# -- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def plans(tmp_path_factory) -> list[SitePlan]:
    """Each site's journal template (built once per session, copied per test)."""
    return build_templates(tmp_path_factory.mktemp("e2e-journals"), SITES, fuel_sales=FUEL_SALES, till_ops=TILL_OPS,
                           later_sales=LATER_SALES, later_chunks=LATER_CHUNKS)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path: Path) -> str:
    """An empty ledger: a SQLite file, or a fresh PostgreSQL schema on 127.0.0.1:5432 (db ``test``)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    return request.getfixturevalue("pg_schema_url")


def _passwords() -> dict[str, str]:
    return {HOST_USER: HOST_PASSWORD, **{s: f"pw-{s.lower()}" for s in SITES}}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """Mosquitto with the no-drop settings, persistence, per-site passwords and the ACL."""
    work = tmp_path / "broker"
    settings = MosquittoSettings(port=free_port(), data_dir=work / "data",
                                 password_file=write_password_file(work / "passwd", _passwords()),
                                 acl_file=write_acl_file(work / "acl", SITES))
    b = MosquittoBroker(settings, work)
    b.start()
    try:
        yield b
    finally:
        b.kill()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed e2e test's report carries the harness's diagnostics (edge, host, broker, logs)."""
    rep = yield
    h = getattr(item, "funcargs", {}).get("e2e")
    if rep.when == "call" and rep.failed and isinstance(h, Harness):
        try:
            rep.sections.append(("e2e diagnostics", h.diagnostics()))
        except Exception as e:  # noqa: BLE001 - diagnostics must not hide the failure
            rep.sections.append(("e2e diagnostics", f"(could not collect: {e!r})"))
    return rep


@pytest.fixture
def e2e(tmp_path: Path, ledger_url: str, broker: MosquittoBroker, plans: list[SitePlan]) -> Iterator[Harness]:
    h = Harness(tmp_path, ledger_url, broker, plans)
    try:
        yield h
    finally:
        h.close()


# -- the harness -------------------------------------------------------------------------------

@dataclass
class EdgeSite:
    """One site of the run: its journal file (a copy of its template), key and password."""

    plan: SitePlan
    journal_path: Path
    key: bytes
    password: str

    @property
    def site_id(self) -> str:
        return self.plan.site_id


class Harness:
    """One e2e run: the sites, the broker, the ledger and its workers (module docstring)."""

    def __init__(self, tmp: Path, ledger_url: str, broker: MosquittoBroker, plans: list[SitePlan]) -> None:
        self.tmp, self.ledger_url, self.broker = tmp, ledger_url, broker
        self.replica_key = new_replica_signing_key()  # the host's; the sites get its public key
        pw = _passwords()
        self.sites = [EdgeSite(p, copy_journal(p.template, tmp / "edge" / f"{p.site_id}.sqlite"), new_key(),
                               pw[p.site_id]) for p in plans]
        self.by_id = {s.site_id: s for s in self.sites}
        self.keys_dir = tmp / "host-keys"
        (self.keys_dir / "sites").mkdir(parents=True)
        write_replica_keys(self.keys_dir, self.replica_key)
        for s in self.sites:
            write_key(self.keys_dir / "sites" / f"{s.site_id}.key", s.key)
        self.ledger = Ledger.open(ledger_url)  # the test's own connection (set-up, polling, checks)
        setup_ledger(self.ledger, len(self.sites))
        self.procs: list[_Proc] = []
        self.last_workers: list[Worker] = []
        self.last_clients: dict[str, SyncClient] = {}

    @property
    def dialect(self) -> str:
        return self.ledger.dialect

    def diagnostics(self) -> str:
        """What a failed run looked like: the edge, the host, the broker and the processes."""
        out = ["--- e2e diagnostics ---"]
        for s in self.sites:
            with contextlib.suppress(Exception):
                out.append(f"{s.site_id}: journal {journal_figures(s.journal_path)}; host {self.ledger.site(s.site_id)}")
        for sid, c in self.last_clients.items():
            out.append(f"client {sid}: {c.status()}")
        for w in self.last_workers:
            out.append(f"worker {w.identifier}: {w.stats}")
        out.append(f"broker {self.broker!r}:\n{self.broker.log_tail(40)}")
        for p in self.procs:
            out.append(f"--- {p.name} (start {p.starts}, running {p.running}):\n{p.log_text()[-3000:]}")
        return "\n".join(out)

    def close(self) -> None:
        for p in self.procs:
            p.kill()
        self.ledger.close()

    # -- keys and settings --

    def host_keys(self) -> SiteKeys:
        return SiteKeys({s.site_id: s.key for s in self.sites}, replica_signing=self.replica_key)

    def site_keys(self, site_id: str) -> SiteKeys:
        return SiteKeys({site_id: self.by_id[site_id].key}, replica_verify=self.replica_key.public_key())

    def settings_kw(self, **kw) -> dict:
        base = {"ack_timeout_s": 3.0, "publish_timeout_s": 5.0, "backoff_initial_s": 0.1, "backoff_max_s": 1.0,
                "poll_interval_s": 0.05, "max_batch_records": 250, "max_in_flight": 8, "keepalive_s": 10}
        base.update(kw)
        return base

    def settings(self, site_id: str, **kw) -> SyncSettings:
        return SyncSettings.from_url(self.broker.url, username=site_id, password=self.by_id[site_id].password,
                                     **self.settings_kw(**kw))

    # -- the edge in this process --

    @contextlib.asynccontextmanager
    async def clients(self, site_ids: list[str] | None = None, **kw) -> AsyncIterator[dict[str, SyncClient]]:
        """A journal and a running SyncClient per site (all sites by default)."""
        async with contextlib.AsyncExitStack() as stack:
            out = {}
            for sid in site_ids or [s.site_id for s in self.sites]:
                journal = stack.enter_context(Journal.open(self.by_id[sid].journal_path, sid))
                out[sid] = await stack.enter_async_context(SyncClient(journal, self.site_keys(sid),
                                                                      self.settings(sid, **kw)))
            self.last_clients = out
            yield out

    async def journal_later(self, clients: dict[str, SyncClient], chunk: int) -> int:
        """Journal each site's ``chunk``-th later records (as its lanes would); how many in all."""
        n = 0
        for sid, c in clients.items():
            recs = self.by_id[sid].plan.later[chunk]
            await c.journal.append(recs)
            c.kick()
            n += len(recs)
        return n

    # -- the host in this process --

    @contextlib.asynccontextmanager
    async def workers(self, n: int = 1, *, url: str | None = None, **kw) -> AsyncIterator[list[Worker]]:
        """``n`` host workers in this process (one group: shared subscriptions); the first one
        also publishes the replica. ``url``: another URL of the same ledger."""
        stop = asyncio.Event()
        publish = kw.pop("publish_replica", True)
        ws = [Worker(url or self.ledger_url, self.host_keys(), hostname=self.broker.host, port=self.broker.port,
                     username=HOST_USER, password=HOST_PASSWORD, identifier=f"e2e-worker-{i}",
                     publish_replica=publish and i == 0, **kw) for i in range(n)]
        self.last_workers = ws
        tasks = [asyncio.create_task(w.run(stop)) for w in ws]
        try:
            await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in ws)), 15)
            yield ws
        finally:
            stop.set()
            done, pending = await asyncio.wait(tasks, timeout=15)
            for t in pending:
                t.cancel()
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    raise t.exception()

    # -- processes --

    def proc_ledger_url(self, app: str) -> str:
        """The ledger URL for a worker process, named ``app`` to PostgreSQL (pg_stat_activity)."""
        if self.dialect != "postgresql":
            return self.ledger_url
        return self.ledger_url + ("&" if "?" in self.ledger_url else "?") + f"application_name={app}"

    def writing(self, app: str) -> bool:
        """True while the worker process ``app`` is inside a write transaction: PostgreSQL shows
        a backend of that application with a transaction id; in SQLite someone holds the write
        lock (only the worker writes during a run; this probe takes the lock for an instant)."""
        if self.dialect == "postgresql":
            return bool(self.ledger.db.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = ? AND backend_xid IS NOT NULL",
                (app,), 0))
        import sqlite3
        path = self.ledger_url[len("sqlite:///"):]
        c = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            c.execute("BEGIN IMMEDIATE")
            c.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                return True
            raise
        finally:
            c.close()

    def worker_proc(self, name: str = "worker", *, publish: bool = True) -> WorkerProc:
        p = WorkerProc(self, name, publish)
        self.procs.append(p)
        return p

    def client_proc(self, site_id: str, **settings) -> ClientProc:
        p = ClientProc(self, site_id, settings)
        self.procs.append(p)
        return p

    # -- the ledger --

    def ingested(self, site_id: str | None = None) -> int:
        return self.ledger.record_count(site_id)

    def total_records(self) -> int:
        return sum(journal_figures(s.journal_path).records for s in self.sites)

    def unacked(self) -> int:
        return sum(journal_figures(s.journal_path).unacked for s in self.sites)

    def all_synced(self) -> bool:
        """Every record of every journal acked (and the ack stored) and in the ledger."""
        for s in self.sites:
            f = journal_figures(s.journal_path)
            info = self.ledger.site(s.site_id)
            if f.unacked or info is None or info.records != f.records or info.up_to_seq != f.acked_batch:
                return False
        return True

    def consistent_so_far(self) -> None:
        """What any moment must show, even mid-run: nothing applied twice or half (each site's
        records = its batches' new records), no record the journals do not hold."""
        led = self.ledger
        with led.db.transaction(write=False, snapshot=True):  # one view: other workers may be committing
            for s in self.sites:
                n = led.record_count(s.site_id)
                new = led.db.scalar("SELECT sum(new_records) FROM batches WHERE site_id = ?", (s.site_id,), 0)
                info = led.site(s.site_id)
                assert n == new == (info.records if info else 0), (s.site_id, n, new, info)
            assert led.record_count() <= self.total_records()

    def check_exact(self) -> None:
        """The verdict: the ledger holds exactly the journals, each record once, all acked."""
        led = self.ledger
        paths = [s.journal_path for s in self.sites]
        rec = reconcile(led, paths)
        assert rec.ok, rec.summary()
        total = 0
        for s in self.sites:
            sid = s.site_id
            f = journal_figures(s.journal_path)
            assert f.unacked == 0, f"{sid}: {f.unacked} of {f.records} records not acked at the edge"
            mine = journal_ids(s.journal_path)
            rows = led.db.fetchall("SELECT record_id, kind, body FROM records WHERE site_id = ?", (sid,))
            held = [r[0] for r in rows]
            assert len(held) == len(set(held))
            assert set(held) == mine, (f"{sid}: {len(mine - set(held))} journal records missing on the host, "
                                       f"{len(set(held) - mine)} host records not in the journal")
            groups: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
            for _, kind, body in rows:
                a, v = amount_volume(kind, json.loads(body))
                g = groups[(sid, kind)]
                g[0], g[1], g[2] = g[0] + 1, g[1] + a, g[2] + v
            assert {k: tuple(v) for k, v in groups.items()} == journal_groups(s.journal_path), sid
            info = led.site(sid)
            new = led.db.scalar("SELECT sum(new_records) FROM batches WHERE site_id = ?", (sid,), 0)
            assert info.records == new == f.records, (sid, info.records, new, f.records)  # applied once each
            assert info.up_to_seq == info.max_seq == f.acked_batch, (sid, info, f)  # the edge's last batch
            statuses = led.db.fetchall("SELECT status, count(*) FROM batches WHERE site_id = ? GROUP BY status",
                                       (sid,))
            assert dict(statuses) == {"applied": f.acked_batch}, (sid, statuses)
            total += f.records
        assert led.record_count() == total, "the ledger holds records no journal holds"
        spent = charged(paths)
        for cid, opening in CONTRACTS.items():
            assert led.balance_kop(cid) == opening - spent[cid], f"contract {cid} not charged exactly once"
        for s in self.sites:
            for aid, view in s.plan.accounts.items():
                acc = led.club_account(aid)
                got = (acc.balance_kop, acc.turnover_kop, sum(lot.points for lot in acc.lots) - acc.points_debt)
                assert got == (view.balance_kop, view.turnover_kop, view.points), (s.site_id, aid, got, view)
        assert led.clone_alerts() == [] and led.flagged() == []


class _Proc:
    """A child process whose output goes to a log file; always killed at teardown."""

    def __init__(self, h: Harness, name: str) -> None:
        self.h, self.name = h, name
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.log: Path | None = None

    def _spawn(self, argv: list[str], env: dict[str, str]) -> None:
        self.starts += 1
        self.log = self.h.tmp / f"{self.name}.{self.starts}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    async def _wait_for_line(self, needle: str, timeout: float) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            return needle in self.log_text()
        try:
            await until(seen, timeout, f"{self.name} to say {needle!r}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.log_text()[-3000:]}") from None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sigkill(self) -> None:
        """SIGKILL: a crash, no clean-up of any kind."""
        assert self.running, f"{self.name} is not running"
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def freeze(self) -> None:
        """SIGSTOP: the process stands still (its journal too) until :meth:`thaw`."""
        assert self.running, f"{self.name} is not running"
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        os.kill(self.proc.pid, signal.SIGCONT)

    async def terminate(self, timeout: float = 15) -> int:
        """SIGTERM (a clean stop) and wait; returns the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, timeout)

    def kill(self) -> None:
        if self.running:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)


class WorkerProc(_Proc):
    """``python -m host.worker`` on the harness's ledger and broker."""

    def __init__(self, h: Harness, name: str, publish: bool) -> None:
        super().__init__(h, name)
        self.publish = publish

    async def start(self, timeout: float = 20) -> WorkerProc:
        h = self.h
        argv = [sys.executable, "-m", "host.worker", "--db", h.proc_ledger_url(self.name), "--broker",
                f"{h.broker.host}:{h.broker.port}", "--keys-dir", str(h.keys_dir), "--username", HOST_USER]
        if not self.publish:
            argv.append("--no-publish")
        self._spawn(argv, {"EDGEPOS_HOST_MQTT_PASSWORD": HOST_PASSWORD})
        await self._wait_for_line("consuming from", timeout)
        return self


class ClientProc(_Proc):
    """``tests/e2e/edge_proc.py``: one site's SyncClient in its own process."""

    def __init__(self, h: Harness, site_id: str, settings: dict) -> None:
        super().__init__(h, f"edge-{site_id}")
        self.site_id, self.settings = site_id, settings

    async def start(self, timeout: float = 20) -> ClientProc:
        h, s = self.h, self.h.by_id[self.site_id]
        cfg = {"journal": str(s.journal_path), "site_id": self.site_id, "site_key": s.key.hex(),
               "replica_verify_key_file": str(h.keys_dir / REPLICA_VERIFY_KEY_FILE), "url": h.broker.url,
               "username": self.site_id, "password": s.password,
               "settings": h.settings_kw(**self.settings)}
        self._spawn([sys.executable, "-m", "tests.e2e.edge_proc"], {"E2E_EDGE_CONFIG": json.dumps(cfg)})
        await self._wait_for_line("ready", timeout)
        return self
