"""A host worker: the thin MQTT layer over ingest and the publisher (aiomqtt).

One worker subscribes with :func:`wire.host_subscriptions` (shared subscriptions: the broker
gives each batch to exactly one worker of the group, so several workers, in one process or
on several machines, share the sites' traffic), decodes every message with
:func:`wire.decode` (signature, topic and every field checked before anything is applied:
a forged or malformed frame is logged and dropped, never acked), ingests batches
(:func:`host.ingest.ingest_batch`, in a thread: the database call blocks) and publishes the
:class:`wire.Ack` at QoS 1 once the ledger has committed. Presence is kept; a snapshot
request is answered by the publisher.

With ``publish_replica`` (the default; run it on one worker, or on all: deltas are idempotent
at the sites, by version) a publisher task folds ingest's changes into deltas every
``fold_interval_s`` (2 s; every ``backlog_fold_interval_s``, 6 s, while a backlog flushes:
:meth:`Worker.fold_interval`) and publishes pending deltas every ``poll_interval_s`` (a block
reaches the broker within that). ``allowances`` (``--default-offline-exposure-rub``) is the offline
exposure of contracts that set none of their own (:class:`host.watermarks.AllowancePolicy`).
With ``ingest=False`` (``--no-ingest``) the worker subscribes to no site topic and only
publishes: the replica publisher in a process of its own, beside ingest workers that all run
``--no-publish`` (the broker shares the batches round-robin, so an ingest worker that also
publishes would fall behind the others in a backlog). It folds every ``fold_interval_s``.
At every fold the publisher also does one bounded slice of housekeeping: the
``replica_spenders`` rows no watermark needs any more (:func:`host.watermarks.prune_spenders`).

aiomqtt does not reconnect by itself: :meth:`Worker.run` reconnects with a backoff until
stopped. QoS 1 messages the broker handed to a worker that died before acking them
downstream are resent by the sites (an edge resends every batch until it is acked).

Run: ``python -m host.worker --db URL --broker 127.0.0.1:1883 --keys-dir DIR``. The keys
directory holds ``replica-signing.key`` (and ``.pub``; ``python -m host.keys`` makes them)
and ``sites/<site_id>.key`` (:func:`load_keys`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from wire import (
    DEFAULT_LIMITS,
    REPLICA_SIGNING_KEY_FILE,
    REPLICA_VERIFY_KEY_FILE,
    Ack,
    Batch,
    Limits,
    Presence,
    ReplicaDelta,
    ReplicaSnapshot,
    SiteKeys,
    SnapshotRequest,
    Table,
    WireError,
    WireKeyError,
    acks_topic,
    decode,
    encode,
    host_subscriptions,
    load_key,
    load_replica_signing_key,
    load_replica_verify_key,
)

from .checks import parse_rub
from .db import redact_url
from .errors import InvalidInput
from .ingest import IngestStats, ingest_batch, ingest_site_batches, record_presence
from .ledger import Ledger
from .ledger_thread import LedgerThread, LedgerThreadClosed
from .publisher import NO_DEFAULT_EXPOSURE, Publication, Publisher, delta_publication
from .watermarks import PRUNE_SCAN, AllowancePolicy, prune_spenders

__all__ = ["DEFAULT_EXPOSURE_ENV", "WORKER_GC_GEN0", "Worker", "WorkerStats", "default_exposure_policy",
           "load_keys", "main", "tune_gc"]

log = logging.getLogger("edgepos.host.worker")


#: the environment variable of ``--default-offline-exposure-rub``
DEFAULT_EXPOSURE_ENV = "EDGEPOS_HOST_DEFAULT_OFFLINE_EXPOSURE_RUB"


def default_exposure_policy(rub: str | None) -> AllowancePolicy:
    """The worker's :class:`AllowancePolicy` from its setting (rubles as typed, ``1500.50``;
    None or blank: no default). Raises :class:`host.errors.InvalidInput` naming the value."""
    if rub is None or not rub.strip():
        return AllowancePolicy()
    return AllowancePolicy(parse_rub(rub))


def load_keys(keys_dir: str | os.PathLike[str]) -> SiteKeys:
    """The host's keys in ``keys_dir``: every ``sites/<site_id>.key`` (HMAC) and, when there,
    the replica signing key ``replica-signing.key`` (Ed25519, PEM; ``python -m host.keys``
    makes it), checked against ``replica-signing.pub`` if that is there too. Without the
    signing key the worker can ingest but not publish the replica. Raises
    :class:`wire.WireKeyError` for an unreadable or malformed key file, or a public key that
    is not the signing key's (naming the file, never the key)."""
    d = Path(keys_dir)
    sites = {p.stem: load_key(p) for p in sorted((d / "sites").glob("*.key"))} if (d / "sites").is_dir() else {}
    private, public = d / REPLICA_SIGNING_KEY_FILE, d / REPLICA_VERIFY_KEY_FILE
    signing = load_replica_signing_key(private) if private.exists() else None
    verify = load_replica_verify_key(public) if signing is not None and public.exists() else None
    if signing is None and (d / "host.key").exists():
        log.warning("%s holds host.key (the HMAC host key of earlier versions) but no %s: replica messages "
                    "are signed with Ed25519 now; make the pair with `python -m host.keys --keys-dir %s`, "
                    "give %s to the sites and remove host.key", d, REPLICA_SIGNING_KEY_FILE, d,
                    REPLICA_VERIFY_KEY_FILE)
    return SiteKeys(sites, replica_signing=signing, replica_verify=verify)


class WorkerStats:
    """Counters of one worker, for logs, tests and benchmarks."""

    def __init__(self) -> None:
        self.batches = 0
        self.records = 0
        self.new_records = 0
        self.acks = 0
        self.refused = 0  #: frames wire.decode refused (dropped, not acked)
        self.errors = 0  #: batches whose ingest failed (not acked: the site resends)
        self.presence = 0
        self.deltas = 0
        self.snapshots = 0
        self.spenders_pruned = 0  #: replica_spenders rows housekeeping dropped
        self.grouped = 0  #: batches applied together with others of their site in one transaction

    def __repr__(self) -> str:
        return "WorkerStats(" + ", ".join(f"{k}={v}" for k, v in vars(self).items()) + ")"


class Worker:
    """One host worker: a broker connection, and a ledger connection for ingest (one more for
    the publisher), each owned by its own thread (:class:`host.ledger_thread.LedgerThread`).

    Stopping is bounded by ``stop_grace_s``: the tasks stop at once, a ledger call in flight
    gets that long to finish (an ingest commits whole or not at all; an ack not sent is a
    batch the site resends), then is interrupted (rolled back), and the connections are
    closed by their own threads, never under a call still running."""

    def __init__(self, ledger_url: str, keys: SiteKeys, *, hostname: str = "127.0.0.1", port: int = 1883,
                 username: str | None = None, password: str | None = None, group: str = "host",
                 identifier: str | None = None, publish_replica: bool = True, limits: Limits = DEFAULT_LIMITS,
                 poll_interval_s: float = 0.2, fold_interval_s: float = 2.0, tls_context=None,
                 stop_grace_s: float = 3.0, allowances: AllowancePolicy = NO_DEFAULT_EXPOSURE,
                 max_batches_per_txn: int = 8, max_txn_bytes: int = 16 << 20,
                 backlog_fold_interval_s: float = 6.0, ingest: bool = True) -> None:
        if not ingest and not publish_replica:
            raise ValueError("a worker that neither ingests nor publishes the replica has nothing to do")
        if publish_replica and not keys.can_sign_replica:
            raise WireKeyError(f"publishing the replica needs the host's signing key ({REPLICA_SIGNING_KEY_FILE} in "
                               "the keys directory); "
                               "give it, or run this worker without publishing")
        self.ledger_url = ledger_url
        self.keys = keys
        self.hostname, self.port = hostname, port
        self.username, self.password = username, password
        self.group = group
        self.identifier = identifier or f"edgepos-host-{os.getpid()}-{id(self) & 0xffff:x}"
        self.publish_replica = publish_replica
        #: subscribe to the sites' topics and ingest (False: a replica publisher only, beside
        #: ingest workers run without publishing, so that every ingest worker does the same work)
        self.ingest = ingest
        self.limits = limits
        self.poll_interval_s = poll_interval_s
        self.fold_interval_s = fold_interval_s
        if backlog_fold_interval_s < fold_interval_s:
            raise ValueError(f"backlog_fold_interval_s ({backlog_fold_interval_s}) must be at least "
                             f"fold_interval_s ({fold_interval_s})")
        #: the folds' interval while a backlog flushes (batches already waiting when one is taken)
        self.backlog_fold_interval_s = backlog_fold_interval_s
        #: a backlog was seen flushing since the last fold: the next one waits the longer interval
        self.backlog_seen = False
        self.tls_context = tls_context
        self.stop_grace_s = stop_grace_s
        #: the default offline exposure of contracts that set none (host.watermarks)
        self.allowances = allowances
        #: replica_spenders rows housekeeping looks at per fold, and where it goes on
        self.prune_scan = PRUNE_SCAN
        self._prune_after: tuple[str, str, str] | None = None
        if max_batches_per_txn < 1 or max_txn_bytes < 1:
            raise ValueError("max_batches_per_txn and max_txn_bytes must be at least 1")
        #: batches already delivered that one ingest transaction takes together (a backlog)
        self.max_batches_per_txn = max_batches_per_txn
        #: and their payloads' bytes at most (a message larger than this still goes alone)
        self.max_txn_bytes = max_txn_bytes
        self.stats = WorkerStats()
        self.ready = asyncio.Event()
        self._ingest: LedgerThread | None = None
        self._pub: LedgerThread | None = None

    def busy(self) -> bool:
        """True while a ledger call of this worker is running (for tests and logs)."""
        return any(t is not None and t.busy for t in (self._ingest, self._pub))

    # -- message handling (in the ingest thread) --

    def handle(self, topic: str, payload: bytes) -> list[Publication]:
        """Decode and apply one message; returns what to publish (an ack, snapshot parts).
        Blocking (database): runs in the ingest ledger's own thread (``run`` puts it there).
        A refused frame returns nothing."""
        return self.handle_many([(topic, payload)])

    def handle_many(self, messages: Sequence[tuple[str, bytes]]) -> list[Publication]:
        """Decode and apply several messages (those the broker had already delivered when the
        first was taken: a backlog flushing); returns what to publish. The batches of one
        site are applied in one transaction (:func:`host.ingest.ingest_site_batches`) and
        acked by one Ack once it has committed; if that transaction fails, each batch is
        tried alone, so one batch the ledger cannot take holds back no other. Refused frames
        return nothing. Blocking: runs in the ingest ledger's own thread."""
        decoded = []
        for topic, payload in messages:
            try:
                decoded.append((topic, decode(payload, self.keys, topic=topic, limits=self.limits)))
            except WireError as exc:
                self.stats.refused += 1
                log.warning("refused a message on %s: %s", topic, exc)
        if not decoded:
            return []
        lt = self._ingest
        if lt is None:
            raise LedgerThreadClosed("the worker is not running")
        try:
            led = lt.ledger()
        except LedgerThreadClosed:
            return []
        except Exception as exc:  # noqa: BLE001 - unreachable now: not acked, the site resends
            self.stats.errors += 1
            log.warning("ledger %s unreachable: %s", redact_url(self.ledger_url), exc)
            return []
        out: list[Publication] = []
        by_site: dict[str, list[Batch]] = {}
        for topic, msg in decoded:
            if isinstance(msg, Batch):
                by_site.setdefault(msg.site_id, []).append(msg)
            else:
                out += self._handle_other(lt, led, topic, msg)
        for site in sorted(by_site):  # one fixed order of the sites' locks
            out += self._ingest_site(lt, sorted(by_site[site], key=lambda b: b.batch_seq))
        return out

    def _ingest_site(self, lt: LedgerThread, batches: list[Batch]) -> list[Publication]:
        """The batches of one site in one transaction, then the ack; alone if that fails."""
        if len(batches) > 1:
            stats = [IngestStats() for _ in batches]
            try:
                ack = ingest_site_batches(lt.ledger(), batches, limits=self.limits, stats=stats)
            except Exception:  # noqa: BLE001 - nothing committed: try each batch alone
                log.warning("batches %s of site %s not applied together: trying each alone",
                            ", ".join(str(b.batch_seq) for b in batches), batches[0].site_id, exc_info=True)
                lt.reopen()
                return [p for b in batches for p in self._ingest_site(lt, [b])]
            return [self._acked(batches, stats, ack)]
        msg = batches[0]
        st = IngestStats()
        try:
            ack = ingest_batch(lt.ledger(), msg, limits=self.limits, stats=st)
        except Exception:  # noqa: BLE001 - nothing committed: no ack, the site resends
            self.stats.errors += 1
            log.exception("batch %d of site %s not applied", msg.batch_seq, msg.site_id)
            # the connection may be what failed (a database restart, a failover): the next
            # resend must find a fresh one, or every later batch fails the same way
            lt.reopen()
            return []
        return [self._acked(batches, [st], ack)]

    def _acked(self, batches: list[Batch], stats: list[IngestStats], ack: Ack) -> Publication:
        self.stats.batches += len(batches)
        self.stats.records += sum(st.records for st in stats)
        self.stats.new_records += sum(st.new_records for st in stats)
        self.stats.grouped += len(batches) if len(batches) > 1 else 0
        return Publication(acks_topic(ack.site_id), encode(ack, self.keys, limits=self.limits), 1, False)

    def _handle_other(self, lt: LedgerThread, led: Ledger, topic: str, msg: object) -> list[Publication]:
        try:
            if isinstance(msg, Presence):
                self.stats.presence += 1
                record_presence(led, msg)
                return []
            if isinstance(msg, SnapshotRequest):
                pub = Publisher(led, limits=self.limits, allowances=self.allowances)
                parts = pub.on_request(msg)
                if not parts:
                    return []
                pubs = pub.snapshot_publications(parts, self.keys)
                pub.mark_snapshot(parts)
                self.stats.snapshots += 1
                return pubs
        except Exception:  # noqa: BLE001 - a presence or a request is not worth the worker's life
            self.stats.errors += 1
            log.exception("%s of site %s not handled", type(msg).__name__, getattr(msg, "site_id", "?"))
            lt.reopen()
            return []
        self.stats.refused += 1
        log.warning("a %s on %s is not for the host: dropped", type(msg).__name__, topic)
        return []

    # -- the broker side --

    def _client(self):
        import aiomqtt
        return aiomqtt.Client(self.hostname, self.port, username=self.username, password=self.password,
                              identifier=self.identifier, clean_session=True, tls_context=self.tls_context,
                              max_inflight_messages=20, max_concurrent_outgoing_calls=64, timeout=30)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until ``stop`` is set, reconnecting after broker failures. Raises what
        :meth:`Ledger.open` raises if the ledger cannot be opened at the start."""
        import aiomqtt
        stop = stop or asyncio.Event()
        if self.ingest:
            self._ingest = LedgerThread(self.ledger_url, name=f"ledger-ingest:{self.identifier}")
        if self.publish_replica:
            self._pub = LedgerThread(self.ledger_url, name=f"ledger-publisher:{self.identifier}")
        backoff = 0.5
        try:
            if self._ingest is not None:
                await self._ingest.call(lambda: self._ingest.ledger())  # type: ignore[union-attr]
            if self._pub is not None:
                await self._pub.call(lambda: self._pub.ledger())  # type: ignore[union-attr]
            while not stop.is_set():
                try:
                    async with self._client() as client:
                        tasks = []
                        if self.ingest:
                            for topic, qos in host_subscriptions(self.group):
                                await client.subscribe(topic, qos)
                            log.info("worker %s consuming from %s:%d", self.identifier, self.hostname, self.port)
                            tasks.append(asyncio.create_task(self._consume(client), name=f"{self.identifier}:consume"))
                        else:
                            log.info("worker %s publishing the replica through %s:%d (no ingest)", self.identifier,
                                     self.hostname, self.port)
                        backoff = 0.5
                        self.ready.set()
                        if self.publish_replica:
                            tasks.append(asyncio.create_task(self._publish_loop(client),
                                                             name=f"{self.identifier}:publish"))
                        stopper = asyncio.create_task(stop.wait(), name=f"{self.identifier}:stop")
                        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
                        await _cancel_all([*tasks, stopper])
                        log.debug("worker %s: tasks stopped", self.identifier)
                        for t in done:
                            if t is not stopper and not t.cancelled() and t.exception() is not None:
                                raise t.exception()  # type: ignore[misc]
                except aiomqtt.MqttError as exc:
                    self.ready.clear()
                    if stop.is_set():
                        break
                    log.warning("broker %s:%d: %s; reconnecting in %.1f s", self.hostname, self.port, exc, backoff)
                    try:
                        await asyncio.wait_for(stop.wait(), backoff)
                    except asyncio.TimeoutError:
                        pass
                    backoff = min(backoff * 2, 10.0)
        finally:
            self.ready.clear()
            # each connection is closed by its own thread, after the call in flight
            closing = [t.close(self.stop_grace_s) for t in (self._ingest, self._pub) if t is not None]
            await asyncio.shield(asyncio.gather(*closing))
            log.info("worker %s stopped: %r", self.identifier, self.stats)

    async def _consume(self, client) -> None:
        lt = self._ingest
        assert lt is not None
        messages = client.messages
        async for message in messages:
            taken = [_item(message)]
            size = len(taken[0][1])
            # a backlog flushing: take what the broker already delivered, up to the bounds
            while len(taken) < self.max_batches_per_txn and size < self.max_txn_bytes and len(messages):
                taken.append(_item(await messages.__anext__()))
                size += len(taken[-1][1])
            if len(taken) > 1 or len(messages):
                self.backlog_seen = True  # the publisher folds less often while this lasts
            pubs = await lt.call(self.handle_many, taken)
            for p in pubs:
                await client.publish(p.topic, p.payload, qos=p.qos, retain=p.retain)
                if p.topic.endswith("/acks"):
                    self.stats.acks += 1

    async def _publish_loop(self, client) -> None:
        import aiomqtt
        lt = self._pub
        assert lt is not None

        def publisher() -> Publisher:
            return Publisher(lt.ledger(), limits=self.limits, allowances=self.allowances)

        last_fold = 0.0
        while True:
            try:
                folding = time.monotonic() - last_fold >= self.fold_interval()
                if folding:
                    self.backlog_seen = False
                    await lt.call(lambda: publisher().flush_dirty())
                    last_fold = time.monotonic()
                    await self._housekeeping(lt)
                sent: dict[Table, ReplicaDelta] = {}
                for delta in await lt.call(lambda: publisher().pending()):
                    p = delta_publication(delta, self.keys, limits=self.limits)
                    await client.publish(p.topic, p.payload, qos=p.qos, retain=p.retain)
                    sent[delta.table] = delta
                    self.stats.deltas += 1
                # one write a table, after its deltas of this cycle are on the broker (a fold of
                # 10,000 cards is 20 deltas: 20 commits, on SQLite 20 turns of the write lock);
                # a crash before it only sends them again, and sites skip a version they hold
                for delta in sent.values():
                    await lt.call(lambda d=delta: publisher().mark_sent(d))
                if folding:  # snapshots are due after minutes, not within a 0.2 s cycle: checked as often as folds
                    for table in await lt.call(lambda: publisher().due_snapshots()):
                        await self._publish_snapshot(client, lt, table)
            except (aiomqtt.MqttError, LedgerThreadClosed):
                raise  # the broker: run() reconnects; or the worker is stopping
            except WireError:  # not the ledger's fault: do not reopen it
                log.exception("replica publisher: a delta cannot be encoded")
            except Exception:  # noqa: BLE001 - the ledger: reconnect and go on publishing
                log.exception("replica publisher: ledger error, reconnecting")
                await lt.call(lt.reopen)
            await asyncio.sleep(self.poll_interval_s)

    def fold_interval(self) -> float:
        """Seconds from one fold of ingest's changes to the next: ``fold_interval_s``, or
        ``backlog_fold_interval_s`` if a backlog was flushing since the last fold. Every
        fold reads each touched card and contract again, and a backlog touches the same
        ones over and over: folding a third as often reads them a third as often. Operator
        changes (a block) do not wait for a fold: pending deltas go out every
        ``poll_interval_s`` whatever this says."""
        return self.backlog_fold_interval_s if self.backlog_seen else self.fold_interval_s

    async def _housekeeping(self, lt: LedgerThread) -> None:
        """One bounded slice of the ledger's housekeeping, at every fold: the
        ``replica_spenders`` rows no watermark needs any more (:func:`host.watermarks.prune_spenders`,
        ``prune_scan`` rows a call, going on where the last call stopped)."""
        res = await lt.call(lambda: prune_spenders(lt.ledger(), self._prune_after, scan=self.prune_scan))
        self._prune_after = res.after
        self.stats.spenders_pruned += res.pruned
        if res.pruned:
            log.info("housekeeping: %d replica_spenders row(s) no watermark needs dropped", res.pruned)

    async def _publish_snapshot(self, client, lt: LedgerThread, table: Table) -> None:
        """Cut, publish (retained) and note a new snapshot of ``table`` (read and signed in the
        publisher's thread; a million-row table takes a few seconds there)."""
        def cut() -> tuple[list[ReplicaSnapshot], list[Publication]]:
            pub = Publisher(lt.ledger(), limits=self.limits, allowances=self.allowances)
            parts = pub.snapshot(table)
            return parts, pub.snapshot_publications(parts, self.keys)
        parts, pubs = await lt.call(cut)
        for p in pubs:
            await client.publish(p.topic, p.payload, qos=p.qos, retain=p.retain)
        await lt.call(lambda: Publisher(lt.ledger(), limits=self.limits, allowances=self.allowances).mark_snapshot(parts))
        self.stats.snapshots += 1
        log.info("replica %s: snapshot version %d published (%d parts, %d rows)", table.value, parts[0].version,
                 len(parts), sum(len(x.rows) for x in parts))


def _item(message) -> tuple[str, bytes]:
    payload = message.payload if isinstance(message.payload, (bytes, bytearray)) else b""
    return message.topic.value, bytes(payload)


async def _cancel_all(tasks: list[asyncio.Task], bound_s: float = 5.0) -> None:
    """Cancel ``tasks`` and wait until they have ended (at most ``bound_s``). A task is
    cancelled again while it runs on: Python 3.11's ``asyncio.wait_for`` (aiomqtt's publish
    uses it) swallows a cancellation that arrives as its future completes."""
    pending = set(tasks)
    deadline = time.monotonic() + bound_s
    while pending and time.monotonic() < deadline:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.05)
    for t in tasks:  # an error of a task that ended while stopping: said, not "never retrieved"
        if t.done() and not t.cancelled() and t.exception() is not None:
            log.debug("%s ended with %r while stopping", t.get_name(), t.exception())
    if pending:
        log.warning("worker tasks still running %.0f s after the stop: %s", bound_s,
                    ", ".join(t.get_name() for t in pending))


#: The collector's first threshold in a worker process: a decoded batch is tens of thousands
#: of small dicts and records that live until its transaction ends, so Python's default (700)
#: ran the collector over them again and again (about a sixth of ingest's CPU).
WORKER_GC_GEN0 = 50_000


def tune_gc(gen0: int = WORKER_GC_GEN0) -> None:
    """Set up the garbage collector for a long-running worker: what was loaded at start is
    moved out of its sight (``gc.freeze``) and it runs every ``gen0`` allocations instead of
    every 700 (0: leave Python's defaults). Reference counting still frees almost everything
    at once; only cycles wait longer."""
    if gen0 < 0:
        raise ValueError(f"gen0 must be 0 (Python's default) or more, got {gen0}")
    if gen0 == 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a worker until SIGTERM or Ctrl-C; returns its exit code (:class:`host.admin.ExitCode`).

    Everything an operator can get wrong is checked before the broker is touched, each as one
    line on stderr naming the option to fix: the keys directory and its key files, the host
    key when this worker publishes the replica (it signs every delta and snapshot with it),
    the ledger URL and its schema."""
    from wire import WireError

    from .admin import ExitCode, LedgerOpenError, exit_codes_epilog, open_ledger

    p = argparse.ArgumentParser(
        prog="python -m host.worker", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="edgepos host worker: consumes the sites' batches from the broker into the ledger, "
                    "acks them, and (unless --no-publish) publishes the replica's deltas and snapshots.",
        epilog="The broker password is read from $EDGEPOS_HOST_MQTT_PASSWORD.\n\n"
               + exit_codes_epilog(ExitCode.OK, ExitCode.USAGE, ExitCode.LEDGER_UNREACHABLE,
                                   ExitCode.LEDGER_SCHEMA, ExitCode.KEY_FILE, ExitCode.HOST_KEY_MISSING))
    p.add_argument("--db", default=os.environ.get("EDGEPOS_HOST_DB", "sqlite:///edgepos-host.sqlite"),
                   help="ledger URL, as for host.admin (default $EDGEPOS_HOST_DB or %(default)s)")
    p.add_argument("--broker", default="127.0.0.1:1883", help="host:port (default %(default)s)")
    p.add_argument("--keys-dir", required=True,
                   help=f"holds {REPLICA_SIGNING_KEY_FILE} (python -m host.keys makes it) and sites/<site_id>.key")
    p.add_argument("--group", default="host", help="shared-subscription group (default %(default)s)")
    p.add_argument("--no-publish", action="store_true",
                   help="do not publish replica deltas from this worker (then no signing key is needed)")
    p.add_argument("--no-ingest", action="store_true",
                   help="publish the replica only: subscribe to none of the sites' topics (run the ingest workers "
                        "with --no-publish); its folds come every --fold-interval-s")
    p.add_argument("--fold-interval-s", type=float, default=2.0, metavar="S",
                   help="seconds between the publisher's folds of ingest's changes (at least 0.1; default "
                        "%(default)s; a worker that ingests folds every --backlog-fold-interval-s while a "
                        "backlog flushes)")
    p.add_argument("--username", help="the broker user (default: none)")
    p.add_argument("--default-offline-exposure-rub", metavar="RUB",
                   default=os.environ.get(DEFAULT_EXPOSURE_ENV) or None,
                   help="the offline exposure of a contract that sets none of its own (edgepos host "
                        "set-offline-exposure), in rubles, shared equally among the active sites plus one "
                        f"(default ${DEFAULT_EXPOSURE_ENV}; none: such contracts' sites are not capped)")
    p.add_argument("--gc-gen0", type=int, default=WORKER_GC_GEN0, metavar="N",
                   help="the garbage collector's first threshold (0: Python's default, 700; default %(default)s)")
    p.add_argument("--backlog-fold-interval-s", type=float, default=6.0, metavar="S",
                   help="seconds between the publisher's folds of ingest's changes while a backlog flushes "
                        "(2 s otherwise; at least 2; default %(default)s)")
    p.add_argument("--max-batches-per-txn", type=int, default=8, metavar="N",
                   help="batches of one site the broker already delivered that one ingest transaction takes "
                        "together while a backlog flushes (1: each batch alone; default %(default)s)")
    args = p.parse_args(argv)
    try:
        policy = default_exposure_policy(args.default_offline_exposure_rub)
    except InvalidInput as exc:
        p.error(f"--default-offline-exposure-rub: {exc}")
    host, _, port_text = args.broker.rpartition(":")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        p.error(f"--broker: expected host:port, got {args.broker!r}")
    if args.max_batches_per_txn < 1:
        p.error(f"--max-batches-per-txn: at least 1, got {args.max_batches_per_txn}")
    if args.gc_gen0 < 0:
        p.error(f"--gc-gen0: 0 or more, got {args.gc_gen0}")
    if not 2.0 <= args.backlog_fold_interval_s <= 3600:
        p.error(f"--backlog-fold-interval-s: 2 to 3600 seconds, got {args.backlog_fold_interval_s}")
    if not 0.1 <= args.fold_interval_s <= 3600:
        p.error(f"--fold-interval-s: 0.1 to 3600 seconds, got {args.fold_interval_s}")
    if args.no_ingest and args.no_publish:
        p.error("--no-ingest and --no-publish: a worker must ingest, publish the replica, or both")

    def refuse(code: ExitCode, message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return code

    if not Path(args.keys_dir).is_dir():
        return refuse(ExitCode.KEY_FILE, f"--keys-dir: {args.keys_dir!r} is not a directory")
    try:
        keys = load_keys(args.keys_dir)
    except WireError as exc:
        return refuse(ExitCode.KEY_FILE, f"--keys-dir: {exc}")
    if not args.no_publish and not keys.can_sign_replica:
        return refuse(ExitCode.HOST_KEY_MISSING,
                      f"--keys-dir: {str(Path(args.keys_dir) / REPLICA_SIGNING_KEY_FILE)!r} does not exist, and this "
                      "worker publishes the replica (signed by the host): make it with python -m host.keys "
                      f"--keys-dir {args.keys_dir}, or run with --no-publish")
    try:
        open_ledger(args.db).close()  # the schema exists and is migrated before any batch is taken
    except LedgerOpenError as exc:
        return refuse(exc.code, str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    tune_gc(args.gc_gen0)
    worker = Worker(args.db, keys, hostname=host or "127.0.0.1", port=int(port_text), group=args.group,
                    publish_replica=not args.no_publish, username=args.username,
                    max_batches_per_txn=args.max_batches_per_txn,
                    backlog_fold_interval_s=max(args.backlog_fold_interval_s, args.fold_interval_s),
                    fold_interval_s=args.fold_interval_s, ingest=not args.no_ingest,
                    password=os.environ.get("EDGEPOS_HOST_MQTT_PASSWORD"), allowances=policy)

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await worker.run(stop)
    asyncio.run(go())
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
