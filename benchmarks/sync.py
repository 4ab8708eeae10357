"""End-to-end sync benchmark: an edge journal backlog -> SyncClient -> Mosquitto -> host
worker process(es) -> ledger, on SQLite and on PostgreSQL; ``key: value`` lines.

    python -m benchmarks.sync                          # 200,000 records with 1 and 2 workers on SQLite and
                                                       # on PostgreSQL, then 1 M records on PostgreSQL
    python -m benchmarks.sync --backlog-db both        # the 1 M backlog on both ledgers
    python -m benchmarks.sync --backlog 0 --sites 4    # no 1 M run; 4 sites share the 200,000 records
    python -m benchmarks.sync --profile DIR            # py-spy the edge and the workers (top functions)
    python -m benchmarks.sync --txn-batches 1,8        # each e2e run with each batch alone, then in runs of
                                                       # up to 8 per transaction; prints the CPU ratio
    python -m benchmarks.sync --settle 30              # the workers' CPU read once the publisher has folded
                                                       # and published every change of the run
    python -m benchmarks.sync --sqlite-workers '' --pg-workers '' --backlog 0 --drain-sites 1,8
                                                       # the drain mode: the host's side alone (below)

What is timed, per run: from the moment the site's :class:`terminal.sync.SyncClient` enters,
with the whole backlog already journaled (an offline site coming back), until the last ack
has marked the last record in the journal. An ack is sent only after the ledger committed,
so by then the ledger holds every record; the run checks it does (the site's counter and the
watermark). The path is the production one: journal read, ``wire.codec.pack_records`` (each record packed
once, bodies not walked again), the cut, ``encode_packed_batch``, the durable
batch range, QoS 1 publish to a Mosquitto with the no-drop configuration, ``python -m
host.worker`` process(es) in one shared-subscription group (``wire.decode`` with every check,
``host.ingest.ingest_batch`` with every ledger effect, the ack at QoS 1 after the commit), the
ack back, ``mark_acked``. Workers start (and subscribe) before the clock starts.

The records are those of ``benchmarks.host_ingest`` (so the figures compare): pump sales of
5 records (preauth, reserved, preset, completed, card_committed) with every ledger effect
(contract charged, limit counters, card transaction counters) against the sample network of
10,000 cards, and till sales opened and voided (2 records), 70/30 by sale.

Also printed: the CPU seconds each part used during the run (the edge process, each worker
process, each worker's PostgreSQL backend, mosquitto), which is what bounds the figure on a
machine with few cores, and the same per record in microseconds (``e2e_cpu_us_per_record_*``;
``cpu_us_per_record_edge``, ``cpu_us_per_record_workers`` and ``cpu_us_per_record_db`` of
the fastest PostgreSQL run). ``python -m benchmarks.sync_stages`` splits the CPU by stage.

The drain mode (``--drain-sites 1,8``, ``--drain-workers 1,2``, ``--drain-db``) measures the
host's side alone, as after a broker outage: the workers start, subscribe and are stopped
(SIGSTOP); each site's SyncClient publishes its whole journal (the same records, the same
path, an in-flight window wide enough that no batch waits for an ack) and goes offline, so
the broker holds every batch queued for the stopped workers of the shared subscription
(mosquitto's no-drop configuration: no queue limit). The workers are let go (SIGCONT) and
the clock runs until every site's last batch is acked. Then the ledger must hold exactly the
records published (counted), each watermark at its site's last batch, and its totals must
match the journals' (:func:`host.reconcile`); anything short fails the run (:class:`DrainError`).
Printed per ledger, worker count and site count: ``drain_records_per_s_<ledger>_<n>w_<sites>``,
the CPU of each part (workers, PostgreSQL backends, mosquitto, and what the rest of the
machine used meanwhile), each worker's share and when it was last busy, what the
PostgreSQL backends waited for (sampled), and ``drain_2w_over_1w_<ledger>_<sites>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from authz import sample
from authz.money import amount_for_volume
from host import master
from host.ledger import Ledger
from terminal.broker import embedded_broker
from terminal.ids import new_id, new_txn_id
from terminal.journal import Journal, Record
from terminal.sync import SyncClient, SyncSettings, SyncStatus, batch_last_seq
from wire import (
    Ack,
    Table,
    REPLICA_SIGNING_KEY_FILE,
    REPLICA_VERIFY_KEY_FILE,
    SiteKeys,
    new_replica_signing_key,
    write_key,
    write_replica_keys,
)

ROOT = Path(__file__).resolve().parents[1]
PG = "postgresql://postgres@127.0.0.1:5432/test"
_TICK = os.sysconf("SC_CLK_TCK")


def progress(msg: str) -> None:
    """Progress on stderr, so stdout stays ``key: value`` lines."""
    print(f"[sync e2e bench] {msg}", file=sys.stderr, flush=True)


def site_id(i: int) -> str:
    return f"BENCH-E2E-{i + 1:03d}"


# -- the backlog -------------------------------------------------------------------------------

def site_cards(model, site_index: int, sites: int, mode: str) -> list:
    """The cards a site's pump sales draw from. ``shared`` (the default): every card of the
    network, at every site (a fleet's cards fill up wherever the truck is), every site
    charging the same contracts; a card's transaction counter rises with time across the
    sites (:func:`records`), so the host's clone checks see what real traffic gives them.
    ``own``: the cards of the contracts ``i``, ``i + sites``, ... only, so no two sites touch
    one card or contract (no ledger row but their own sites' is shared)."""
    if mode == "shared":
        return list(model.cards)
    contracts = sorted({c.contract_id for c in model.cards})
    mine = set(contracts[site_index::sites])
    cards = [c for c in model.cards if c.contract_id in mine]
    if not cards:
        raise ValueError(f"--site-cards own: {sites} sites but only {len(contracts)} contracts")
    return cards


def card_counter(site_index: int, sites: int, at_utc_s: int) -> int:
    """The transaction counter a card holds when a sale at site ``site_index`` of ``sites``
    reads it at ``at_utc_s``, at the latest (a card used again at the same site reads at
    least its own last commit): 3 counter values a second a site, the sites' slots
    interleaved, so a card's counters rise with time whichever site it fills up at (a sale
    reads ``c``, reserves ``c + 1``, commits ``c + 2``; the next site's slot starts at
    ``c + 3``). A card moving between sites is what the host's clone checks take as normal;
    counters that went back in time, or two writes at one value, would be alerts (two
    plastics), which real traffic almost never holds."""
    return 3 * (sites * (at_utc_s - sample.DAY_START_UTC) + site_index)


def records(site: str, n: int, model, seed: int = 1, chunk: int = 5_000, cards: list | None = None,
            site_index: int = 0, sites: int = 1) -> Iterator[list[Record]]:
    """``n`` journal records in chunks, the mix of ``benchmarks.host_ingest.make_records``
    (pump sales drawing from ``cards``, default every card of ``model``), for site
    ``site_index`` of ``sites`` (the cards' counters: :func:`card_counter`)."""
    rnd = random.Random(seed)
    pool = list(model.cards) if cards is None else cards
    t = sample.DAY_START_UTC
    tcs: dict[str, int] = {}
    out: list[Record] = []
    made = 0

    def rec(lane: str, txn: str, kind: str, body: dict, rid: str | None = None) -> None:
        out.append(Record(rid or new_id(site), site, lane, txn, kind, t, body))

    while made < n:
        t += rnd.randrange(1, 5)
        if rnd.random() < 0.7:
            card = pool[rnd.randrange(len(pool))]
            lane = f"pump-{rnd.randrange(1, 9)}"
            txn = new_txn_id(site, lane)
            tc = max(tcs.get(card.card_no, 0), card_counter(site_index, sites, t))
            tcs[card.card_no] = tc + 2
            price, auth = 6_150, 50_000
            delivered = rnd.randrange(5_000, auth)
            amount = amount_for_volume(delivered, price)
            req = {"card_no": card.card_no, "station_id": 1000, "product": "AI95", "now_utc_s": t,
                   "preset_volume_ml": auth, "preset_amount_kop": None}
            dec = {"reason": "OK", "volume_ml": auth, "amount_kop": amount_for_volume(auth, price),
                   "unit_price_kop_per_l": price, "list_price_kop_per_l": price, "binding_limit_id": None}
            w1, w2 = secrets.token_hex(16), secrets.token_hex(16)
            rec(lane, txn, "fuel.preauth", {"request": req, "decision": dec, "card": {
                "card_no": card.card_no, "contract_id": card.contract_id, "expected_txn": tc, "reserve_write_id": w1,
                "release_write_id": secrets.token_hex(16), "counting": [[1, 1, 1, 20_777]],
                "base_counters": [[1, 0, 20_777]], "reserve_counters": [[1, auth, 20_777]]},
                "pump": {"product": "AI95", "price_kop_per_l": price, "preset_volume_ml": auth,
                         "last_sale_no_before": 0}})
            rec(lane, txn, "fuel.reserved", {"card_no": card.card_no, "txn_counter": tc + 1, "write_id": w1})
            rec(lane, txn, "fuel.preset", {"sale_no": made, "product": "AI95", "price_kop_per_l": price,
                                           "preset_volume_ml": auth})
            rec(lane, txn, "fuel.completed", {"request": req, "decision": dec, "delivered_volume_ml": delivered,
                                              "amount_kop": amount, "delivery_reason": "nozzle_hung_up",
                                              "overrun_ml": 0, "sale_no": made, "card_no": card.card_no,
                                              "contract_id": card.contract_id,
                                              "card_commit": {"write_id": w2, "expected_txn": tc + 1,
                                                              "counters": [[1, delivered, 20_777]]}})
            rec(lane, txn, "fuel.card_committed", {"card_no": card.card_no, "txn_counter": tc + 2, "write_id": w2,
                                                   "counters": [[1, delivered, 20_777]]})
        else:
            lane = f"till-{rnd.randrange(1, 4)}"
            txn = new_txn_id(site, lane)
            lines = [{"sku": f"SKU{rnd.randrange(10**6):06d}", "category": "shoes", "amount_kop": 349_900}]
            rec(lane, txn, "till.sale_opened", {"lines": lines})
            rec(lane, txn, "till.sale_voided", {"reason": "voided by the till"})
        if len(out) >= chunk or made + len(out) >= n:
            take = min(len(out), n - made)
            yield out[:take]
            made += take
            out = out[take:]


def journal_backlog(path: Path, site: str, n: int, model, seed: int, cards: list | None = None,
                    site_index: int = 0, sites: int = 1) -> None:
    """A journal holding ``n`` unacked records of site ``site_index`` of ``sites`` (reused if
    ``path`` already holds them)."""
    if path.exists():
        c = sqlite3.connect(path)
        try:
            have = c.execute("SELECT count(*) FROM records").fetchone()[0]
        finally:
            c.close()
        if have == n:  # a journal of an earlier run (reset before each run)
            return
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{path}{suffix}")
    t0 = time.perf_counter()

    async def fill() -> None:
        with Journal.open(path, site) as j:
            for chunk in records(site, n, model, seed, cards=cards, site_index=site_index, sites=sites):
                await j.append(chunk)
    asyncio.run(fill())
    progress(f"{site}: journaled {n} records in {time.perf_counter() - t0:.1f} s")


def reset_journal(path: Path) -> None:
    c = sqlite3.connect(path)
    try:
        c.execute("DELETE FROM acked")  # every record unacked (terminal.journal, schema 2)
        c.execute("DELETE FROM meta WHERE key LIKE 'sync.%'")
        c.commit()
    finally:
        c.close()


# -- processes and their CPU -------------------------------------------------------------------

def cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a live process (0 if it is gone)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


class WorkerProc:
    def __init__(self, name: str, url: str, broker: str, keys_dir: Path, log: Path, publish: bool,
                 txn_batches: int = 8, gc_gen0: int | None = None, backlog_fold_s: float | None = None,
                 ingest: bool = True, fold_s: float | None = None) -> None:
        self.name, self.log, self.publish = name, log, publish
        self.ready_text = b"consuming from" if ingest else b"publishing the replica"
        argv = [sys.executable, "-m", "host.worker", "--db", url, "--broker", broker, "--keys-dir", str(keys_dir),
                "--max-batches-per-txn", str(txn_batches)]
        if gc_gen0 is not None:
            argv += ["--gc-gen0", str(gc_gen0)]
        if backlog_fold_s is not None:
            argv += ["--backlog-fold-interval-s", str(backlog_fold_s)]
        if not publish:
            argv.append("--no-publish")
        if not ingest:
            argv.append("--no-ingest")
        if fold_s is not None:
            argv += ["--fold-interval-s", str(fold_s)]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the worker consumes (or, ``--no-ingest``, publishes) and, if it publishes the
        replica, has published the host's first state: the master import's deltas and a
        snapshot of every table, a host's work at its first start, which no sync waits for
        (a run timed with it would count it as the backlog's)."""
        deadline = time.monotonic() + timeout
        while not self._ready(self.log.read_bytes()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.name} did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def _ready(self, log: bytes) -> bool:
        if self.ready_text not in log:
            return False
        return not self.publish or log.count(b": snapshot version ") >= len(Table)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Profiler:
    """``py-spy record`` of one process (raw collapsed stacks), stopped with SIGINT."""

    def __init__(self, pid: int, out: Path, rate: int = 97) -> None:
        self.out = out
        self.proc = subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate),
                                      "--output", str(out), "--nonblocking"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def summary(self, top: int = 12) -> str:
        """The functions most samples were in (inclusive) and ended in (self), as shares."""
        if not self.out.exists():
            return f"{self.out.name}: no profile"
        incl: Counter[str] = Counter()
        self_: Counter[str] = Counter()
        total = 0
        for line in self.out.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if not stack or not n.isdigit():
                continue
            count = int(n)
            total += count
            frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1] + ")"
                      if " (" in f else f for f in stack.split(";")]
            for f in set(frames):
                incl[f] += count
            self_[frames[-1]] += count
        if not total:
            return f"{self.out.name}: no samples"
        lines = [f"{self.out.name}: {total} samples"]
        plumbing = ("<module>", "_run_module", "_run_code", "run (", "_run (", "main (", "go (", "select (",
                    "run_forever", "_run_once", "run_until_complete", "Thread.", "_worker (thread", "_WorkItem.run",
                    "Handle._run", "BaseEventLoop.", "Runner.run", "_flush (", "run_once (")
        lines += [f"  incl {100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(top * 4)
                  if not f.startswith(plumbing)][:top]
        lines += [f"  self {100 * c / total:5.1f}%  {f}" for f, c in self_.most_common(top)]
        return "\n".join(lines)


# -- one run -----------------------------------------------------------------------------------

async def _open_clients(stack: contextlib.AsyncExitStack, journals: dict[str, Path], keys: dict[str, bytes],
                        replica_verify: Ed25519PublicKey, url: str, settings: dict) -> list[SyncClient]:
    """A running SyncClient on each site's journal, closed with ``stack``."""
    clients = []
    for site, path in journals.items():
        j = stack.enter_context(Journal.open(path, site))
        clients.append(await stack.enter_async_context(
            SyncClient(j, SiteKeys({site: keys[site]}, replica_verify=replica_verify),
                       SyncSettings.from_url(url, **settings))))
    return clients


async def _flush(journals: dict[str, Path], keys: dict[str, bytes], replica_verify: Ed25519PublicKey, url: str,
                 args: argparse.Namespace) -> tuple[float, float, list]:
    settings = {"max_in_flight": args.in_flight, "poll_interval_s": 0.05, "max_batch_records": args.batch_records,
                "ack_timeout_s": args.ack_timeout}
    cpu0, t0 = time.process_time(), time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        clients = await _open_clients(stack, journals, keys, replica_verify, url, settings)
        statuses = await asyncio.gather(*(c.wait_flushed(args.timeout) for c in clients))
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        for c in clients:
            assert c.journal.counts().unacked == 0, "records left unacked"
    return elapsed, cpu, statuses


def settle(url: str, timeout_s: float) -> None:
    """Wait until the replica publisher has folded every change of the run and published
    every delta (``replica_dirty`` empty, no delta after a table's last one sent), at most ``timeout_s``:
    the workers' CPU then counts the folds a worker left for after the flush."""
    deadline = time.monotonic() + timeout_s
    with Ledger.open(url) as led:
        while time.monotonic() < deadline:
            with led.db.transaction(write=False):
                dirty = led.db.scalar("SELECT COUNT(*) FROM replica_dirty", default=0)
                unsent = led.db.scalar("SELECT COUNT(*) FROM replica_deltas d LEFT JOIN replica_published p "
                                       "ON p.tbl = d.tbl WHERE d.to_version > COALESCE(p.delta_version, 0)", default=0)
            if dirty == 0 and unsent == 0:
                return
            time.sleep(0.1)
    progress(f"settle: the publisher had not published everything after {timeout_s} s")


class HostRun:
    """One run's host: a fresh ledger (SQLite file or PostgreSQL schema) with the sample
    network, its keys folder, a Mosquitto with the no-drop configuration and the worker
    processes in one shared-subscription group (worker 0 publishes the replica), started
    and ready (subscribed). Made and torn down by :func:`host_run`."""

    def __init__(self, tag: str, db: str, url: str, run_dir: Path, keys: dict[str, bytes], replica_key,
                 broker, procs: list[WorkerProc], publisher: WorkerProc | None) -> None:
        self.tag, self.db, self.url, self.run_dir = tag, db, url, run_dir
        self.keys, self.replica_key, self.broker, self.procs = keys, replica_key, broker, procs
        #: the replica publisher's own process (``--publisher own``; None: worker 0 publishes)
        self.publisher = publisher

    def publisher_cpu(self) -> float:
        """CPU seconds of the publisher's own process so far (0 without one)."""
        return cpu_s(self.publisher.proc.pid) if self.publisher is not None else 0.0

    def every_proc(self) -> list[WorkerProc]:
        """The worker processes and the publisher's own, if any."""
        return self.procs + ([self.publisher] if self.publisher is not None else [])

    def pg_backend_cpu(self) -> float:
        """CPU seconds of the workers' PostgreSQL backends over their whole life (0 on SQLite)."""
        if self.db != "postgresql":
            return 0.0
        total = 0.0
        with Ledger.open(self.url) as led:
            for (pid,) in led.db.fetchall("SELECT pid FROM pg_stat_activity WHERE application_name LIKE ? "
                                          "OR application_name = ?", (f"bench-{self.tag}-w%", f"bench-{self.tag}-pub")):
                total += cpu_s(pid)  # the backends' whole life: they did nothing before the run
        return total


@contextlib.contextmanager
def host_run(tag: str, db: str, workers: int, journals: dict[str, Path], model, work: Path,
             args: argparse.Namespace, txn_batches: int) -> Iterator[HostRun]:
    """The host of one run (:class:`HostRun`), the sites' journals reset to unsent; on the
    way out the workers and the broker are stopped and a PostgreSQL schema is dropped. With
    ``--publisher own`` every worker runs ``--no-publish`` and one more process publishes the
    replica only (``--no-ingest``, folding every ``--worker-backlog-fold-s``, 6 s by default:
    as worker 0 does while a backlog flushes)."""
    run_dir = work / tag
    run_dir.mkdir(parents=True, exist_ok=True)
    for p in journals.values():
        reset_journal(p)
    keys = {s: secrets.token_bytes(32) for s in journals}
    replica_key = new_replica_signing_key()
    keys_dir = run_dir / "keys"
    (keys_dir / "sites").mkdir(parents=True, exist_ok=True)
    for f in (keys_dir / "sites").glob("*.key"):
        f.unlink()
    for f in (keys_dir / REPLICA_SIGNING_KEY_FILE, keys_dir / REPLICA_VERIFY_KEY_FILE):
        with contextlib.suppress(FileNotFoundError):
            f.unlink()
    write_replica_keys(keys_dir, replica_key)
    for s, k in keys.items():
        write_key(keys_dir / "sites" / f"{s}.key", k)
    schema = None
    if db == "sqlite":
        ledger_path = run_dir / "ledger.sqlite"
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{ledger_path}{suffix}")
        url = f"sqlite:///{ledger_path}"
    else:
        import psycopg
        schema = f"bench_e2e_{secrets.token_hex(4)}"
        with psycopg.connect(PG, autocommit=True) as c:
            c.execute(f"CREATE SCHEMA {schema}")
        url = f"{PG}?options=-csearch_path%3D{schema}"
    procs: list[WorkerProc] = []
    publisher: WorkerProc | None = None
    broker = embedded_broker(run_dir)
    own = args.publisher == "own"
    try:
        with Ledger.open(url) as led:
            master.import_fuel_model(led, model)
        broker.start()
        for i in range(workers):
            app = f"bench-{tag}-w{i}"
            wurl = url if db == "sqlite" else f"{url}&application_name={app}"
            procs.append(WorkerProc(app, wurl, f"{broker.host}:{broker.port}", keys_dir, run_dir / f"{app}.log",
                                    publish=(i == 0 and not own), txn_batches=txn_batches,
                                    gc_gen0=args.worker_gc_gen0, backlog_fold_s=args.worker_backlog_fold_s))
        if own:
            app = f"bench-{tag}-pub"
            publisher = WorkerProc(app, url if db == "sqlite" else f"{url}&application_name={app}",
                                   f"{broker.host}:{broker.port}", keys_dir, run_dir / f"{app}.log", publish=True,
                                   gc_gen0=args.worker_gc_gen0, ingest=False,
                                   fold_s=args.worker_backlog_fold_s or 6.0)
        for p in procs + ([publisher] if publisher else []):
            p.wait_ready()
        yield HostRun(tag, db, url, run_dir, keys, replica_key, broker, procs, publisher)
    finally:
        for p in procs + ([publisher] if publisher else []):
            p.stop()
        broker.stop()
        if schema is not None:
            import psycopg
            with psycopg.connect(PG, autocommit=True) as c:
                c.execute(f"DROP SCHEMA {schema} CASCADE")


def run_once(tag: str, db: str, workers: int, journals: dict[str, Path], n_records: int, model, work: Path,
             args: argparse.Namespace, txn_batches: int = 8) -> dict[str, object]:
    profilers: list[Profiler] = []
    with host_run(tag, db, workers, journals, model, work, args, txn_batches) as h:
        procs, broker, url = h.procs, h.broker, h.url
        try:
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
                profilers = [Profiler(p.proc.pid, args.profile / f"{tag}-{p.name}.txt") for p in procs]
                profilers.append(Profiler(os.getpid(), args.profile / f"{tag}-edge.txt"))
                time.sleep(1.0)
            wcpu0 = [cpu_s(p.proc.pid) for p in procs]
            pcpu0 = h.publisher_cpu()
            bcpu0 = cpu_s(broker.pid)
            progress(f"{tag}: {n_records} records, {len(journals)} site(s) -> {workers} worker(s) on {db}, "
                     f"up to {txn_batches} batch(es) per transaction")
            elapsed, edge_cpu, statuses = asyncio.run(
                _flush(journals, h.keys, h.replica_key.public_key(), broker.url, args))
            if args.settle:
                settle(url, args.settle)
            wcpu = [cpu_s(p.proc.pid) - c0 for p, c0 in zip(procs, wcpu0)]
            pcpu = h.publisher_cpu() - pcpu0
            bcpu = cpu_s(broker.pid) - bcpu0
            pg_cpu = h.pg_backend_cpu()
            with Ledger.open(url) as led:
                for s in journals:
                    info = led.site(s)
                    assert info is not None and info.up_to_seq == info.max_seq, info
                held = sum(led.site(s).records for s in journals)
            assert held == n_records, f"the ledger holds {held} of {n_records} records"
            for pr in profilers:
                pr.stop()
            for pr in profilers:
                progress(pr.summary())
        finally:
            for pr in profilers:
                pr.stop()
        per = 1e6 / n_records
        out: dict[str, object] = {
            "flush_s": round(elapsed, 2), "records_per_s": round(n_records / elapsed),
            "cpu_us_edge": round(edge_cpu * per, 1), "cpu_us_workers": round((sum(wcpu) + pcpu) * per, 1),
            "cpu_us_db": round(pg_cpu * per, 1) if db == "postgresql" else None,
            "workers": workers, "batches": sum(s.last_batch for s in statuses),
            "resends": sum(s.resends for s in statuses),
            "cpu_s": (f"edge {edge_cpu:.1f}, workers {'+'.join(f'{c:.1f}' for c in wcpu)}"
                      + (f", publisher {pcpu:.1f}" if h.publisher is not None else "")
                      + (f", postgres backends {pg_cpu:.1f}" if db == "postgresql" else "")
                      + f", mosquitto {bcpu:.1f} (wall {elapsed:.1f} s, 2 cores)"),
        }
        progress(f"{tag}: {out}")
        return out


# -- the drain mode: the host's side alone --------------------------------------------------------

class DrainError(RuntimeError):
    """A drain run lost or mis-applied something: the ledger does not hold exactly the
    records published (a queue limit of the broker dropped some, a worker lost some), a
    watermark is short, or the ledger's totals differ from the journals'."""


#: the most batches a site's SyncClient may have unacked (terminal.sync.SyncSettings): in the
#: drain mode every batch of a site is published before any is acked, so a site's share of
#: the records must fit in this many batches
DRAIN_MAX_IN_FLIGHT = 1000


async def _publish_all(journals: dict[str, Path], keys: dict[str, bytes], replica_verify: Ed25519PublicKey,
                       url: str, args: argparse.Namespace) -> tuple[float, float, dict[str, int], int]:
    """Each site's SyncClient publishes its whole journal (the production path: the read, the
    pack, the cut, the durable range, the QoS 1 publish), with an in-flight window wide
    enough that no batch waits for an ack, and goes offline once every batch has its
    PUBACK: the broker then holds them all. Returns (wall s, CPU s, each site's last batch,
    resends)."""
    settings = {"max_in_flight": DRAIN_MAX_IN_FLIGHT, "poll_interval_s": 0.05,
                "max_batch_records": args.batch_records, "ack_timeout_s": 3600.0}
    cpu0, t0 = time.process_time(), time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        clients = await _open_clients(stack, journals, keys, replica_verify, url, settings)

        def all_published(c: SyncClient, st: SyncStatus) -> bool:
            tail = c.journal.tail(1)
            last = tail[0].seq if tail else 0
            cut = batch_last_seq(c.journal, st.last_batch) if st.last_batch else 0
            if st.acked_batch:
                raise RuntimeError(f"drain: site {c.site_id} got an ack while the workers are stopped")
            if cut != last and st.in_flight_batches >= DRAIN_MAX_IN_FLIGHT:
                raise RuntimeError(f"drain: site {c.site_id} needs more than {DRAIN_MAX_IN_FLIGHT} batches: "
                                   "use fewer --records per site (more --drain-sites)")
            return cut == last and st.publishes >= st.last_batch

        statuses = await asyncio.gather(*(c.wait_until(lambda st, c=c: all_published(c, st), args.timeout)
                                          for c in clients))
        last = {c.site_id: st.last_batch for c, st in zip(clients, statuses)}
        resends = sum(st.resends for st in statuses)
    return time.perf_counter() - t0, time.process_time() - cpu0, last, resends


def machine_busy_s() -> float:
    """CPU seconds all of this machine's cores have been busy since boot (``/proc/stat``:
    everything but idle and iowait), to tell the run's share from other users' load."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICK


class _Sampler:
    """Samples, every ``interval_s`` in a thread while the workers drain: each worker's CPU
    (so the time each was last busy: a worker whose share of the queue ran out early idles
    while the other finishes), and on PostgreSQL what the workers' backends are doing
    (``pg_stat_activity``): per worker, the share of samples in which one of its backends
    waited for a lock another transaction holds (a row both touch) or ran a statement, and
    the statements that waited (their first words: which rows)."""

    def __init__(self, h: "HostRun", interval_s: float = 0.02) -> None:
        import threading
        self.h, self.interval_s = h, interval_s
        n = len(h.procs)
        self.samples = 0
        self.lock = [0] * n
        self.active = [0] * n
        self.lock_events: Counter[str] = Counter()
        self.lock_statements: Counter[str] = Counter()
        self.busy_until = [0.0] * n  #: seconds after the start of a worker's last sample with CPU growing
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drain-sampler", daemon=True)
        self.t0 = 0.0

    def start(self, t0: float) -> "_Sampler":
        self.t0 = t0
        self._thread.start()
        return self

    def _run(self) -> None:
        conn = None
        if self.h.db == "postgresql":
            import psycopg
            conn = psycopg.connect(PG, autocommit=True)
        prefix = f"bench-{self.h.tag}-w"
        pids = [p.proc.pid for p in self.h.procs]
        window = max(1, round(0.1 / self.interval_s))  # the samples of the last 100 ms
        history = [[cpu_s(pid)] for pid in pids]
        try:
            while not self._stop.wait(self.interval_s):
                now = time.perf_counter() - self.t0
                for i, pid in enumerate(pids):
                    history[i].append(cpu_s(pid))
                    del history[i][:-window - 1]
                    if history[i][-1] - history[i][0] >= 0.03:  # 30% of a core over 100 ms: working
                        self.busy_until[i] = now
                self.samples += 1
                if conn is None:
                    continue
                rows = conn.execute("SELECT application_name, state, wait_event_type, wait_event, left(query, 300) "
                                    "FROM pg_stat_activity WHERE application_name LIKE %s",
                                    (prefix + "%",)).fetchall()
                locked, active = set(), set()
                for app, state, wtype, wevent, query in rows:
                    i = int(app[len(prefix):])
                    if wtype == "Lock":
                        locked.add(i)
                        self.lock_events[str(wevent)] += 1
                        self.lock_statements[" ".join(str(query).split())[:90]] += 1
                    elif state == "active":
                        active.add(i)
                for i in locked:
                    self.lock[i] += 1
                for i in active:
                    self.active[i] += 1
        finally:
            if conn is not None:
                conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def busy(self) -> str:
        return ", ".join(f"w{i} {t:.1f} s" for i, t in enumerate(self.busy_until))

    def pg_summary(self) -> str | None:
        if self.h.db != "postgresql":
            return None
        n, w = max(self.samples, 1), len(self.lock)
        waits = ", ".join(f"{e} {k}" for e, k in self.lock_events.most_common(3)) or "none"
        total = sum(self.lock_statements.values()) or 1
        statements = "; ".join(f"{100 * k / total:.0f}% {q!r}" for q, k in self.lock_statements.most_common(3))
        return (f"waiting on a lock: {', '.join(f'w{i} {100 * self.lock[i] / n:.0f}%' for i in range(w))}; "
                f"running a statement: {', '.join(f'w{i} {100 * self.active[i] / n:.0f}%' for i in range(w))}"
                f" (of {self.samples} samples every {self.interval_s * 1000:.0f} ms; lock waits by event: {waits}"
                + (f"; waiting in: {statements}" if statements else "") + ")")


async def _drain(h: HostRun, last_batch: dict[str, int], timeout: float, stall_s: float, sampler: _Sampler
                 ) -> tuple[float, float, int, bool]:
    """Let the stopped workers go (SIGCONT) and wait until every site's last batch is acked
    (the ack is published after the commit), at most ``timeout`` seconds and at most
    ``stall_s`` seconds without an ack. Returns (wall s from the SIGCONT, this process's CPU s
    meanwhile, acks seen, whether every last batch was acked)."""
    import aiomqtt

    from wire import decode
    from wire.topics import PREFIX

    keys = SiteKeys(h.keys)
    acked = dict.fromkeys(last_batch, 0)
    seen = 0
    done = False
    async with aiomqtt.Client(h.broker.host, h.broker.port, identifier=f"bench-drain-acks-{os.getpid()}",
                              clean_session=True) as client:
        await client.subscribe(f"{PREFIX}/sites/+/acks", 1)
        cpu0, t0 = time.process_time(), time.perf_counter()
        for p in h.every_proc():
            os.kill(p.proc.pid, signal.SIGCONT)
        sampler.start(t0)
        messages = aiter(client.messages)
        while not done:
            left = min(stall_s, t0 + timeout - time.perf_counter())
            try:
                async with asyncio.timeout(max(0.0, left)):
                    m = await anext(messages)
            except TimeoutError:
                break
            ack = decode(bytes(m.payload), keys, topic=m.topic.value)  # type: ignore[arg-type]
            if not isinstance(ack, Ack):
                raise RuntimeError(f"drain: a {type(ack).__name__} on {m.topic.value}")
            seen += 1
            acked[ack.site_id] = max(acked[ack.site_id], ack.up_to_seq)
            if ack.rejected:
                raise RuntimeError(f"drain: site {ack.site_id}: batches refused {ack.rejected}")
            done = all(acked[s] >= n for s, n in last_batch.items())
        return time.perf_counter() - t0, time.process_time() - cpu0, seen, done


def _worker_split(procs: list[WorkerProc]) -> str:
    """Each stopped worker's batches and records, from the WorkerStats line it logs at its stop."""
    import re
    parts = []
    for i, p in enumerate(procs):
        m = re.search(rb"stopped: WorkerStats\(batches=(\d+), records=(\d+)", p.log.read_bytes())
        parts.append(f"w{i} {int(m[1])} batches / {int(m[2])} records" if m else f"w{i} ?")
    return ", ".join(parts)


def run_drain(tag: str, db: str, workers: int, journals: dict[str, Path], n_records: int, model, work: Path,
              args: argparse.Namespace, txn_batches: int = 8) -> dict[str, object]:
    """One drain run: the workers start and subscribe, are stopped (SIGSTOP), the sites
    publish their whole backlog into the broker (QoS 1, queued for the stopped workers by the
    shared subscription), the sites go offline, and the workers are let go (SIGCONT): timed
    from there until every site's last batch is acked. Then the ledger must hold exactly the
    published records (counted), every watermark at its last batch, and its totals must
    match the journals' (:func:`host.reconcile`); anything else fails the run."""
    from host import reconcile
    with host_run(tag, db, workers, journals, model, work, args, txn_batches) as h:
        for p in h.every_proc():
            os.kill(p.proc.pid, signal.SIGSTOP)
        progress(f"{tag}: {len(journals)} site(s) publish {n_records} records into the broker, "
                 f"{workers} worker(s) stopped, on {db}")
        pub_s, pub_cpu, last_batch, resends = asyncio.run(
            _publish_all(journals, h.keys, h.replica_key.public_key(), h.broker.url, args))
        batches = sum(last_batch.values())
        progress(f"{tag}: {batches} batches queued in {pub_s:.1f} s; draining with {workers} worker(s)")
        wcpu0 = [cpu_s(p.proc.pid) for p in h.procs]
        pcpu0 = h.publisher_cpu()
        bcpu0 = cpu_s(h.broker.pid)
        sampler = _Sampler(h)
        busy0 = machine_busy_s()
        try:
            elapsed, own_cpu, acks, complete = asyncio.run(
                _drain(h, last_batch, args.timeout, args.ack_timeout, sampler))
        finally:
            sampler.stop()
        busy = machine_busy_s() - busy0
        wcpu = [cpu_s(p.proc.pid) - c0 for p, c0 in zip(h.procs, wcpu0)]
        pcpu = h.publisher_cpu() - pcpu0
        bcpu = cpu_s(h.broker.pid) - bcpu0
        pg_cpu = h.pg_backend_cpu()
        dropped = [ln for ln in h.broker.log_tail(10_000).splitlines() if "dropped" in ln.lower()]
        with Ledger.open(h.url) as led:
            with led.db.transaction(write=False):
                rows = led.db.scalar("SELECT COUNT(*) FROM records", default=0)
            if rows != n_records or not complete:
                raise DrainError(f"drain: {n_records} records published in {batches} batches, the ledger holds "
                                 f"{rows}" + ("" if complete else f" (no ack for {args.ack_timeout} s or "
                                                                   f"{args.timeout} s in all)")
                                 + (f"; mosquitto: {dropped[0]}" if dropped else ""))
            for s, n in last_batch.items():
                info = led.site(s)
                if info is None or not info.up_to_seq == info.max_seq == n:
                    raise DrainError(f"drain: site {s}: the ledger's watermark {info} is not at its last batch {n}")
            held = sum(led.site(s).records for s in journals)  # type: ignore[union-attr]
            rec = reconcile(led, list(journals.values()))
            with led.db.transaction(write=False):
                clones = dict(led.db.fetchall("SELECT kind, COUNT(*) FROM clone_alerts GROUP BY kind ORDER BY kind"))
        if held != n_records:
            raise DrainError(f"drain: the ledger's sites count {held} records, {n_records} were published")
        if not rec.ok:
            raise DrainError(f"drain: the ledger does not match the journals:\n{rec.summary()}")
        if dropped:
            raise DrainError(f"drain: mosquitto dropped messages: {dropped[:3]}")
        for p in h.every_proc():
            p.stop()
        split = _worker_split(h.procs)
        publisher = h.publisher is not None
    per = 1e6 / n_records
    host_us = (sum(wcpu) + pcpu + pg_cpu + bcpu) * per
    out: dict[str, object] = {
        "drain_s": round(elapsed, 2), "records_per_s": round(n_records / elapsed),
        "publish_s": round(pub_s, 2), "publish_cpu_s": round(pub_cpu, 1),
        "batches": f"{batches} (resends {resends}, acks {acks})",
        "host_cpu_us": round(host_us, 1),
        "cpu_us": (f"workers {(sum(wcpu) + pcpu) * per:.1f}" + (f" (publisher {pcpu * per:.1f})" if publisher else "")
                   + (f", postgres {pg_cpu * per:.1f}" if db == "postgresql" else " (SQLite inside)")
                   + f", mosquitto {bcpu * per:.1f}: {host_us:.1f} in all"),
        "cpu_s": (f"workers {'+'.join(f'{c:.1f}' for c in wcpu)}" + (f", publisher {pcpu:.1f}" if publisher else "")
                  + (f", postgres backends {pg_cpu:.1f}" if db == "postgresql" else "")
                  + f", mosquitto {bcpu:.1f}, ack listener {own_cpu:.1f}; the machine busy {busy:.1f} s, the rest "
                    f"{max(0.0, busy - sum(wcpu) - pcpu - pg_cpu - bcpu - own_cpu):.1f} s (wall {elapsed:.1f} s, "
                    f"{os.cpu_count()} cores: {(os.cpu_count() or 1) * elapsed:.1f} s)"),
        "split": f"{split}; busy until {sampler.busy()} of {elapsed:.1f} s", "pg_waits": sampler.pg_summary(),
        "checked": rec.summary(),
        "clone_alerts": ", ".join(f"{k} {n}" for k, n in clones.items()) or "none",
    }
    progress(f"{tag}: {out}")
    return out


def median_run(runs: list[dict[str, object]]) -> dict[str, object]:
    """The run of median records/s (of an even count, the lower of the middle two)."""
    ordered = sorted(runs, key=lambda r: float(r["records_per_s"]))  # type: ignore[arg-type]
    return ordered[(len(ordered) - 1) // 2]


def cpu_total(r: dict[str, object]) -> float:
    """A run's CPU per record, every part (edge, workers, PostgreSQL backends), in microseconds."""
    return float(r["cpu_us_edge"]) + float(r["cpu_us_workers"]) + float(r["cpu_us_db"] or 0.0)  # type: ignore[arg-type]


def cpu_split(r: dict[str, object]) -> str:
    """A run's CPU per record by part, in microseconds."""
    db = r["cpu_us_db"]
    return (f"edge {r['cpu_us_edge']}, workers {r['cpu_us_workers']}"
            + (f", postgres {db}" if db is not None else " (SQLite inside)"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=200_000, help="backlog of the e2e runs (split over --sites)")
    p.add_argument("--sites", type=int, default=1, help="sites (journals, one SyncClient each) sharing it")
    p.add_argument("--sqlite-workers", default="1,2", help="comma-separated worker counts for SQLite ('' skips)")
    p.add_argument("--pg-workers", default="1,2", help="comma-separated worker counts for PostgreSQL ('' skips)")
    p.add_argument("--backlog", type=int, default=1_000_000, help="the offline-backlog run (0 skips it)")
    p.add_argument("--backlog-db", choices=("sqlite", "postgresql", "both"), default="postgresql",
                   help="the ledger of the backlog run (default: PostgreSQL, the faster here)")
    p.add_argument("--backlog-workers", type=int, default=0,
                   help="workers for the backlog run (0: the count of that ledger's fastest e2e run, else 2)")
    p.add_argument("--in-flight", type=int, default=8)
    p.add_argument("--batch-records", type=int, default=10_000)
    p.add_argument("--ack-timeout", type=float, default=30.0)
    p.add_argument("--cards", type=int, default=10_000)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--profile", type=Path, help="py-spy each worker and the edge into this folder")
    p.add_argument("--settle", type=float, default=0.0, metavar="S",
                   help="after the flush, wait (up to S s) until the replica publisher has folded and published "
                        "every change before the workers' CPU is read, so folds left for after the flush "
                        "count (default 0: read it at once)")
    p.add_argument("--worker-gc-gen0", type=int, help="the workers' --gc-gen0 (default: theirs)")
    p.add_argument("--worker-backlog-fold-s", type=float, metavar="S",
                   help="the workers' --backlog-fold-interval-s (2: fold every 2 s as before; default: theirs)")
    p.add_argument("--txn-batches", default="8",
                   help="the workers' --max-batches-per-txn; a comma-separated list runs each e2e run once per "
                        "value, interleaved, and prints a ratio against the first (default %(default)s)")
    p.add_argument("--drain-sites", default="",
                   help="comma-separated site counts of the drain mode ('' skips it, the default): the "
                        "--records are published into the broker with the workers stopped, then the workers "
                        "drain them (the host's side alone); e.g. 1,8")
    p.add_argument("--drain-workers", default="1,2", help="comma-separated worker counts of the drain runs")
    p.add_argument("--drain-rounds", type=int, default=1, metavar="N",
                   help="each drain run N times, the worker counts alternating (1w, 2w, 1w, 2w, ...); the "
                        "figures are the median run's, the ratio the medians', and each round's is listed too")
    p.add_argument("--drain-db", choices=("sqlite", "postgresql", "both"), default="both",
                   help="the ledger(s) of the drain runs (default %(default)s)")
    p.add_argument("--publisher", choices=("w0", "own"), default="w0",
                   help="who publishes the replica: worker 0 (the default) or a process of its own "
                        "(python -m host.worker --no-ingest) beside workers that all run --no-publish")
    p.add_argument("--site-cards", choices=("shared", "own"), default="shared",
                   help="with several sites, the cards their pump sales use: shared (every site every card, "
                        "the default) or own (each site the cards of its own contracts: no ledger row shared)")
    p.add_argument("--dir", type=Path, help="work folder (journals are kept and reused); default: temporary")
    args = p.parse_args(argv)
    txn_list = [int(x) for x in args.txn_batches.split(",") if x.strip()]
    if not txn_list or min(txn_list) < 1:
        p.error(f"--txn-batches: one or more counts of at least 1, got {args.txn_batches!r}")
    try:
        drain_sites = [int(x) for x in args.drain_sites.split(",") if x.strip()]
        drain_workers = [int(x) for x in args.drain_workers.split(",") if x.strip()]
    except ValueError:
        p.error(f"--drain-sites, --drain-workers: comma-separated counts, got {args.drain_sites!r}, "
                f"{args.drain_workers!r}")
    if drain_sites and (min(drain_sites) < 1 or not drain_workers or min(drain_workers) < 1):
        p.error("--drain-sites and --drain-workers: counts of at least 1")
    if args.drain_rounds < 1:
        p.error(f"--drain-rounds: at least 1, got {args.drain_rounds}")
    model = sample.fuel_model(n_cards=args.cards, n_stations=50, seed=1)
    with contextlib.ExitStack() as stack:
        work = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sync-e2e-bench-")))
        work.mkdir(parents=True, exist_ok=True)
        out: dict[str, object] = {"records": args.records, "sites": args.sites}
        if args.site_cards != "shared":
            out["site_cards"] = args.site_cards
        if args.publisher != "w0":
            out["publisher"] = "a process of its own (workers --no-publish)"

        def journals_for(total: int, tag: str, sites: int = args.sites) -> dict[str, Path]:
            per = [total // sites + (1 if i < total % sites else 0) for i in range(sites)]
            js = {}
            for i, n in enumerate(per):
                own = "" if args.site_cards == "shared" else "-own"
                path = work / f"journal-{tag}{own}-{i}-g2.sqlite"  # g2: counters of card_counter
                journal_backlog(path, site_id(i), n, model, seed=1 + i,
                                cards=site_cards(model, i, sites, args.site_cards), site_index=i, sites=sites)
                js[site_id(i)] = path
            return js

        run_e2e = any(x.strip() for x in f"{args.sqlite_workers},{args.pg_workers}".split(","))
        js = journals_for(args.records, f"{args.records}x{args.sites}") if run_e2e else {}
        best: dict[str, tuple[int, int, dict]] = {}  # db -> (records/s, workers, run) of its fastest run
        for db, counts in (("sqlite", args.sqlite_workers), ("postgresql", args.pg_workers)):
            key = "sqlite" if db == "sqlite" else "postgres"
            for w in [int(x) for x in counts.split(",") if x.strip()]:
                by_g: dict[int, dict] = {}
                for g in txn_list:
                    suffix = "" if len(txn_list) == 1 else f"_txn{g}"
                    r = run_once(f"{db}-{w}w-txn{g}", db, w, js, args.records, model, work, args, g)
                    by_g[g] = r
                    out[f"e2e_records_per_s_{key}_{w}w{suffix}"] = r["records_per_s"]
                    out[f"e2e_flush_s_{key}_{w}w{suffix}"] = r["flush_s"]
                    out[f"e2e_cpu_s_{key}_{w}w{suffix}"] = r["cpu_s"]
                    out[f"e2e_batches_{key}_{w}w{suffix}"] = f"{r['batches']} (resends {r['resends']})"
                    out[f"e2e_cpu_us_per_record_{key}_{w}w{suffix}"] = cpu_split(r)
                    rate = int(r["records_per_s"])  # type: ignore[call-overload]
                    if db not in best or rate > best[db][0]:
                        best[db] = (rate, w, r)
                for g in txn_list[1:]:
                    first, other = by_g[txn_list[0]], by_g[g]
                    out[f"e2e_cpu_ratio_{key}_{w}w_txn{txn_list[0]}_vs_txn{g}"] = round(
                        cpu_total(first) / cpu_total(other), 2)
            if db in best:
                out[f"e2e_records_per_s_{key}"], out[f"e2e_workers_{key}"] = best[db][:2]
                if db == "postgresql" or "postgresql" not in best:
                    r = best[db][2]
                    out["cpu_us_per_record_edge"] = r["cpu_us_edge"]
                    out["cpu_us_per_record_workers"] = r["cpu_us_workers"]
                    out["cpu_us_per_record_db"] = r["cpu_us_db"] if r["cpu_us_db"] is not None else "in workers (SQLite)"
                    out["cpu_us_per_record_of"] = f"e2e {key} {best[db][1]}w"
        if args.backlog:
            jb = journals_for(args.backlog, f"{args.backlog}x{args.sites}")
            dbs = ["sqlite", "postgresql"] if args.backlog_db == "both" else [args.backlog_db]
            fastest: tuple[float, str, int] | None = None
            for db in dbs:
                key = "sqlite" if db == "sqlite" else "postgres"
                w = args.backlog_workers or (best[db][1] if db in best else 2)
                r = run_once(f"backlog-{db}-{w}w", db, w, jb, args.backlog, model, work, args, txn_list[-1])
                out[f"backlog_1m_flush_s_{key}_{w}w"] = r["flush_s"]
                out[f"backlog_1m_records_per_s_{key}_{w}w"] = r["records_per_s"]
                out[f"backlog_1m_cpu_s_{key}_{w}w"] = r["cpu_s"]
                out[f"backlog_1m_cpu_us_per_record_{key}_{w}w"] = cpu_split(r)
                if fastest is None or r["flush_s"] < fastest[0]:
                    fastest = (r["flush_s"], db, w)
            assert fastest is not None
            out["backlog_records"] = args.backlog
            out["backlog_1m_flush_s"], out["backlog_1m_ledger"], out["backlog_1m_workers"] = fastest
        drain_dbs = ["sqlite", "postgresql"] if args.drain_db == "both" else [args.drain_db]
        for n_sites in drain_sites:
            jd = journals_for(args.records, f"{args.records}x{n_sites}", n_sites)
            sfx = (("1site" if n_sites == 1 else f"{n_sites}sites")
                   + ("" if args.site_cards == "shared" or n_sites == 1 else "_own_cards")
                   + ("" if args.publisher == "w0" else "_own_publisher"))
            for db in drain_dbs:
                key = "sqlite" if db == "sqlite" else "postgres"
                rounds: dict[int, list[dict[str, object]]] = {w: [] for w in drain_workers}
                for rnd in range(args.drain_rounds):  # 1w, 2w, 1w, 2w, ...: the machine's load shared alike
                    for w in drain_workers:
                        tag = f"drain-{db}-{w}w-{sfx}" + (f"-r{rnd + 1}" if args.drain_rounds > 1 else "")
                        rounds[w].append(run_drain(tag, db, w, jd, args.records, model, work, args, txn_list[-1]))
                runs: dict[int, dict[str, object]] = {}
                for w in drain_workers:
                    r = runs[w] = median_run(rounds[w])
                    name = f"{key}_{w}w_{sfx}"
                    out[f"drain_records_per_s_{name}"] = r["records_per_s"]
                    if args.drain_rounds > 1:
                        out[f"drain_records_per_s_{name}_rounds"] = ", ".join(str(x["records_per_s"]) for x in rounds[w])
                    out[f"drain_s_{name}"] = r["drain_s"]
                    out[f"drain_cpu_s_{name}"] = r["cpu_s"]
                    out[f"drain_cpu_us_per_record_{name}"] = r["cpu_us"]
                    out[f"drain_worker_split_{name}"] = r["split"]
                    if r["pg_waits"] is not None:
                        out[f"drain_pg_backends_{name}"] = r["pg_waits"]
                    out[f"drain_published_{name}"] = (f"{r['batches']} in {r['publish_s']} s "
                                                      f"(edge CPU {r['publish_cpu_s']} s, not in the drain)")
                    out[f"drain_checked_{name}"] = r["checked"]
                    out[f"drain_clone_alerts_{name}"] = r["clone_alerts"]
                if 1 in runs:
                    one = float(runs[1]["records_per_s"])  # type: ignore[arg-type]
                    for w, r in runs.items():
                        if w > 1:
                            out[f"drain_{w}w_over_1w_{key}_{sfx}"] = round(float(r["records_per_s"]) / one, 2)  # type: ignore[arg-type]
                            if args.drain_rounds > 1:
                                out[f"drain_{w}w_over_1w_{key}_{sfx}_rounds"] = ", ".join(
                                    f"{float(b['records_per_s']) / float(a['records_per_s']):.2f}"  # type: ignore[arg-type]
                                    for a, b in zip(rounds[1], rounds[w]))
                            # what the cores allow: all of them busy at this run's host CPU per record
                            cap = (os.cpu_count() or 1) * 1e6 / float(r["host_cpu_us"])  # type: ignore[arg-type]
                            out[f"drain_cores_allow_{key}_{w}w_{sfx}"] = (
                                f"{round(cap)} records/s ({os.cpu_count()} cores at {r['host_cpu_us']} us "
                                f"a record): at most {cap / one:.2f}x one worker")
    for k, v in out.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
