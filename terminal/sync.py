"""The edge sync client: the site's journal to the central host over MQTT, acks back, and
replica updates down (``docs/sync.md``, ``docs/wire-protocol.md``).

:class:`SyncClient` is an async context manager that owns one MQTT connection at a time
(aiomqtt, MQTT 5, a persistent session) and reconnects with jittered, capped backoff, since
aiomqtt does not. It never stops the site from working: lanes journal offline, and the
client sends what the journal holds whenever it can.

**Up.** Journal records, in seq order from a cursor, are packed once each, from the rows
and the bodies' JSON text as stored (:meth:`~terminal.journal.Journal.after_stored`,
:func:`wire.codec.pack_record_rows`: their own fields checked, each body's text packed to
MessagePack in C), cut into batches by exact size
(:func:`wire.codec.packed_that_fit`) and numbered 1, 2, 3, ... per site. A batch's seq range is
written to the journal's meta *before* its first publish, so every resend (after an ack
timeout, a reconnect or a crash) carries exactly the same records, byte for byte. At most
``max_in_flight`` batches are published and not yet acknowledged; each publish is QoS 1 and
waits for its PUBACK. A batch not acknowledged within ``ack_timeout_s`` is sent again, and
so is everything unacknowledged after a reconnect.

**Acks.** ``Ack(up_to_seq=n)`` marks the records of batches up to n as acked in the journal
and stores n, in one transaction (``mark_acked(..., meta=...)``). Nothing is marked before an ack says so, and a stale ack
changes nothing. Batches the host refused for good (``rejected``) keep their records
unacked and are listed in :attr:`SyncStatus.rejected_batches` for the operator.

**Down.** Replica deltas are handed to the daemon's ``on_replica`` callback in version
order; a gap makes the client publish a :class:`wire.SnapshotRequest` and stage the
snapshot's parts as they arrive (the daemon's ``stage_part`` callback writes each to its
replica store, its rows as the bytes received: ``wire.decode(..., raw_rows=True)``; without
one the client keeps them), then hand over a
:class:`~terminal.follower.StagedSnapshot` (or, parts kept here, a :class:`FullSnapshot`)
once all are there. What to apply and what to ask for is decided by
:class:`terminal.follower.ReplicaFollower` (no I/O); the client's replica task performs its
commands.

**Presence.** The last will is ``Presence(online=False)``, retained; on connect the client
publishes ``Presence(online=True)`` retained, and offline again on a clean stop.

Every payload from the broker goes through :func:`wire.decode`; one that fails is counted in
:attr:`SyncStatus.rejected_messages`, logged, and changes nothing.

**Flow control.** A new site takes hundreds of retained snapshot parts of about 1 MB; the
broker would send them all at once and the MQTT client queue them while the store stages
them. Instead the client says in CONNECT that it takes one unacknowledged message at a time
(MQTT 5 receive maximum :data:`RECEIVE_MAXIMUM`), and acknowledges (PUBACK) a message only
once it is handled: a snapshot part or a delta once it is in the replica task's queue, which
holds at most :data:`REPLICA_QUEUE` of them (the receiving waits while it is full). So a
site holds at most about ``REPLICA_QUEUE + 2`` parts at once (docs/sync.md, "Fourth pass:
memory"); a message not acknowledged when the connection drops is sent again on the next
(the session persists) and the follower ignores what it already holds. A window of one is
what mosquitto 2.0 keeps to: with a larger receive maximum it sends a whole window more on
every PUBACK, not one message more. The price is one round trip to the broker per message
not overlapped with staging, which the queue hides while the store is the slower side.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import inspect
import json
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from wire import (DEFAULT_LIMITS, Ack, Limits, Presence, ReplicaDelta, ReplicaSnapshot, SiteKeys,
                  SnapshotRequest, Table, WireError, WireTooLarge, decode, encode)
from wire.codec import JournalRow, encode_packed_batch, pack_record_rows, packed_that_fit
from wire.signing import load_key, load_replica_verify_key
from wire.topics import (acks_topic, batches_topic, presence_topic, site_subscriptions, snapshot_filter,
                         snapshot_requests_topic)

from .follower import (Apply, Command, FollowerUpdate, FullSnapshot, ReplicaFollower, ReplicaUpdate, RequestSnapshot,
                       StagedSnapshot, StagePart)
from .journal import MAX_DEPTH as JOURNAL_MAX_DEPTH
from .journal import Journal, JournalError

__all__ = [
    "SyncError", "SyncState", "SyncSettings", "SyncStatus", "FullSnapshot", "ReplicaUpdate", "SyncClient",
    "settings_from_config", "load_site_keys", "META_PREFIX",
]

log = logging.getLogger("edgepos.sync")
_mqtt_log = logging.getLogger("edgepos.sync.mqtt")

#: Journal meta keys of the sync client start with this.
META_PREFIX = "sync."
_ACKED_KEY = "sync.acked_batch"
_REJECTED_KEY = "sync.rejected_batches"
_BIG_FRAME = 64 << 10  # decode frames larger than this in a thread, off the event loop


def _software_version() -> str:
    try:
        from importlib.metadata import version
        return version("edgepos")
    except Exception:  # noqa: BLE001 - not installed (running from a checkout)
        return "0.1.0"


#: QoS 1 messages the broker may send this client before it acknowledges one (see the module
#: docstring, "Flow control").
RECEIVE_MAXIMUM = 1
#: Replica messages (snapshot parts, deltas) received and not yet performed, at most.
REPLICA_QUEUE = 16
#: Journal rows a cut reads and packs at a time on the event loop (about a millisecond).
CUT_STEP = 512


class SyncError(Exception):
    """The sync client's one error type: a bad setting, a journal failure under the client,
    a batch that cannot be made; the message says what and with which value."""


class SyncState(StrEnum):
    """Where the client's connection loop is."""

    STARTING = "starting"  #: entered, first connect not yet tried
    CONNECTING = "connecting"  #: a CONNECT is under way
    ONLINE = "online"  #: connected, subscribed, presence published
    BACKOFF = "backoff"  #: the connection failed or dropped; waiting before the next try
    STOPPING = "stopping"  #: a clean stop: offline presence, then DISCONNECT
    STOPPED = "stopped"  #: left the ``async with`` block
    FAILED = "failed"  #: the journal failed under the client; nothing more is sent


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """How the client connects and paces itself. Make one with :meth:`from_url` or
    :func:`settings_from_config`; every time is in seconds."""

    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    tls_ca_file: str | None = None  #: the CA that signed the broker's certificate (mqtts)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str | None = None  #: None: ``edgepos-site-{site_id}`` (the persistent session's name)
    keepalive_s: int = 30
    session_expiry_s: int = 14 * 24 * 3600  #: how long the broker keeps the session while offline
    max_in_flight: int = 8  #: batches published and not yet acknowledged by the host
    publish_timeout_s: float = 20.0  #: wait this long for a PUBACK (and for CONNACK)
    ack_timeout_s: float = 30.0  #: resend unacknowledged batches after this long without an ack
    poll_interval_s: float = 0.25  #: how often to look for new journal records when idle
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    snapshot_retry_s: float = 30.0  #: ask again for a snapshot that has not arrived
    max_batch_records: int = DEFAULT_LIMITS.max_records
    limits: Limits = DEFAULT_LIMITS
    software_version: str = field(default_factory=_software_version)

    def __post_init__(self) -> None:
        if not self.host or not 1 <= self.port <= 65535:
            raise SyncError(f"broker address: expected a host and a port in 1..65535, got {self.host!r}:{self.port!r}")
        if not 1 <= self.max_in_flight <= 1000:
            raise SyncError(f"max_in_flight must be 1..1000, got {self.max_in_flight}")
        if not 1 <= self.max_batch_records <= self.limits.max_records:
            raise SyncError(f"max_batch_records must be 1..{self.limits.max_records}, got {self.max_batch_records}")
        for name in ("publish_timeout_s", "ack_timeout_s", "poll_interval_s", "backoff_initial_s",
                     "backoff_max_s", "snapshot_retry_s"):
            if not getattr(self, name) > 0:
                raise SyncError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.backoff_max_s < self.backoff_initial_s:
            raise SyncError("backoff_max_s must be at least backoff_initial_s")
        if self.tls_ca_file is not None and not self.tls:
            raise SyncError("tls_ca_file is set but the broker URL is mqtt://, not mqtts://")

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> "SyncSettings":
        """Settings for ``mqtt://host[:port]`` (1883 by default) or ``mqtts://host[:port]``
        (TLS, 8883 by default); ``kw`` sets the other fields. Raises :class:`SyncError`."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except (ValueError, TypeError) as e:
            raise SyncError(f"broker url {url!r}: {e}") from None
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or parts.path not in ("", "/") \
                or parts.query or parts.username or parts.password:
            raise SyncError(f"broker url: expected mqtt://host:port or mqtts://host:port (credentials go "
                            f"in broker.username and broker.password_file), got {url!r}")
        tls = parts.scheme == "mqtts"
        return cls(host=parts.hostname, port=port or (8883 if tls else 1883), tls=tls, **kw)

    def tls_context(self) -> ssl.SSLContext | None:
        """The TLS context for an mqtts broker (verifying its certificate and host name), or None."""
        if not self.tls:
            return None
        try:
            return ssl.create_default_context(cafile=self.tls_ca_file)
        except (OSError, ssl.SSLError) as e:
            raise SyncError(f"broker TLS CA file {self.tls_ca_file!r} cannot be used: {e}") from None


def settings_from_config(broker: Any, **kw: Any) -> SyncSettings:
    """:class:`SyncSettings` from the site configuration's ``broker`` section
    (:class:`terminal.config.BrokerConfig`: ``url``, ``username``, ``password_file``,
    ``tls_ca_file``); ``kw`` overrides pacing fields. The password is read from its file
    (one line; the final newline is dropped). Raises :class:`SyncError` if there is no URL
    or the file is unreadable."""
    if broker.url is None:
        raise SyncError("broker.url is not set: name the broker the site syncs through "
                        "(mqtt://host:1883 or mqtts://host:8883)")
    password = None
    if broker.password_file:
        try:
            password = Path(broker.password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as e:
            raise SyncError(f"broker.password_file {broker.password_file!r} cannot be read: "
                            f"{e.strerror or e}") from None
    return SyncSettings.from_url(broker.url, username=broker.username, password=password,
                                 tls_ca_file=broker.tls_ca_file, **kw)


def load_site_keys(site_id: str, site_key_file: str | None, host_key_file: str | None = None) -> SiteKeys:
    """The keys a site signs and verifies with: its own HMAC key (``keys.site_key_file``)
    and, when given, the host's replica verify key (``keys.host_key_file``: the host's
    ``replica-signing.pub``, an Ed25519 public key in PEM). Without it, replica messages
    cannot be verified and are refused; batches and acks still work. A site never holds the
    host's signing key: a private key in ``host_key_file`` is refused. Raises
    :class:`SyncError` (never showing a key)."""
    if not site_key_file:
        raise SyncError("keys.site_key_file is not set: a site signs its batches with its own key")
    try:
        site_key = load_key(site_key_file)
        verify = load_replica_verify_key(host_key_file) if host_key_file else None
    except WireError as e:
        raise SyncError(str(e)) from None
    return SiteKeys({site_id: site_key}, replica_verify=verify)


@dataclass(frozen=True, slots=True)
class SyncStatus:
    """Progress and health of the client, for the daemon's health view and for tests."""

    state: SyncState
    connected: bool
    backlog_records: int  #: records not yet settled by the host (sent and unacked, or unsent)
    in_flight_batches: int  #: batches numbered and not yet acknowledged
    last_batch: int  #: the highest batch number assigned
    acked_batch: int  #: the host's last ``up_to_seq``
    last_ack_utc_s: int | None  #: when an ack last moved ``acked_batch`` (this run)
    connects: int
    publishes: int  #: batch publishes that got their PUBACK (resends included)
    resends: int  #: batch publishes that were resends
    rejected_messages: int  #: payloads from the broker that wire.decode refused
    rejected_batches: tuple[int, ...]  #: batches the host refused for good (records kept, unacked)
    replica_versions: Mapping[Table, int]
    replica_errors: int  #: updates the on_replica callback failed to apply
    last_error: str | None


@dataclass(frozen=True, slots=True)
class _Range:
    first_seq: int
    last_seq: int
    count: int
    created_utc_s: int

    def to_meta(self) -> str:
        return json.dumps({"first_seq": self.first_seq, "last_seq": self.last_seq, "count": self.count,
                           "created_utc_s": self.created_utc_s}, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_meta(cls, n: int, text: str) -> "_Range":
        try:
            d = json.loads(text)
            r = cls(int(d["first_seq"]), int(d["last_seq"]), int(d["count"]), int(d["created_utc_s"]))
        except (ValueError, KeyError, TypeError):
            raise SyncError(f"journal meta of batch {n} is unreadable: {text[:100]!r}") from None
        if not 1 <= r.first_seq <= r.last_seq or not 1 <= r.count <= r.last_seq - r.first_seq + 1:
            raise SyncError(f"journal meta of batch {n} is inconsistent: {text[:100]!r}")
        return r


def _batch_key(n: int) -> str:
    return f"{META_PREFIX}batch.{n}"


def batch_last_seq(journal: Journal, n: int) -> int | None:
    """The journal seq of the last record of batch ``n`` (None: no range known). Ranges stay
    in the journal's meta after their ack: the replica maps a host row's watermark (a batch
    number) to the journal with them (the balance rule, :mod:`terminal.own_spend`)."""
    text = journal.get_meta(_batch_key(n))
    return None if text is None else _Range.from_meta(n, text).last_seq


class _Stop(Exception):
    """Ends a session for a clean stop."""


class SyncClient:
    """Sends a site's journal to the host and applies what the host sends back.

    ``async with SyncClient(journal, keys, settings, on_replica=...) as sync:`` starts the
    connection loop in the background and returns at once (the site works offline);
    leaving the block publishes an offline presence, disconnects and stops. ``keys`` holds
    the site's key (and the host's replica verify key, to verify replica messages). ``on_replica`` (sync or
    async) receives each :data:`~terminal.follower.FollowerUpdate` in version order and must apply it atomically;
    without it the client does not subscribe to replica topics. ``replica_versions`` is the
    version of each table the daemon holds at start (missing tables: 0, so a snapshot is
    awaited); ``tables`` limits which tables are followed. ``stage_part(part, fresh)`` (sync or
    async) writes a snapshot part aside as it arrives (the daemon's replica store), and the
    whole snapshot then comes to ``on_replica`` as a :class:`~terminal.follower.StagedSnapshot`;
    without it the client keeps the parts and hands over a :class:`FullSnapshot`.
    ``on_fatal`` is called once if the journal fails under the client (the daemon should stop).
    """

    def __init__(self, journal: Journal, keys: SiteKeys, settings: SyncSettings, *,
                 on_replica: Callable[[FollowerUpdate], Awaitable[None] | None] | None = None,
                 replica_versions: Mapping[Table, int] | None = None,
                 tables: Iterable[Table] | None = None,
                 on_fatal: Callable[[BaseException], None] | None = None,
                 stage_part: Callable[[ReplicaSnapshot, bool], Awaitable[None] | None] | None = None) -> None:
        self.journal = journal
        self.site_id = journal.site_id
        if self.site_id not in keys:
            raise SyncError(f"no key for site {self.site_id!r}: a site signs its batches with its own key")
        self.keys = keys
        self.settings = settings
        self._on_replica = on_replica
        self._stage_part = stage_part
        #: without stage_part: the parts staged here, by table: ((version, parts), {part: rows})
        self._kept: dict[Table, tuple[tuple[int, int], dict[int, tuple]]] = {}
        self._on_fatal = on_fatal
        followed = tuple(Table(t) for t in (tables if tables is not None else Table)) if on_replica else ()
        versions = dict(replica_versions or {})
        self._follower = ReplicaFollower({t: int(versions.get(t, 0)) for t in followed},
                                         retry_s=settings.snapshot_retry_s)
        self._client_id = settings.client_id or f"edgepos-site-{self.site_id}"
        self._state = SyncState.STARTING
        self._connected = False
        # durable state, loaded from the journal at __aenter__
        self._acked = 0
        self._last_batch = 0
        self._cursor = 0
        self._ranges: dict[int, _Range] = {}
        self._rejected: list[dict[str, Any]] = []
        # this run
        self._frames: dict[int, bytes] = {}
        # the records read past the cursor, not yet batched: their seqs and packed records
        self._ahead_seqs: list[int] = []
        self._ahead_packed: list[bytes] = []
        self._assigning: asyncio.Future | None = None
        self._next_send = 1
        self._progress_at = time.monotonic()
        self._sent: set[int] = set()
        self._last_ack_utc_s: int | None = None
        self._connects = 0
        self._publishes = 0
        self._resends = 0
        self._rejected_messages = 0
        self._replica_errors = 0
        self._last_error: str | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._replica_queue: asyncio.Queue[ReplicaDelta | ReplicaSnapshot] = asyncio.Queue(REPLICA_QUEUE)
        #: the most messages held at once, received and not yet performed (the MQTT client's
        #: queue and the replica task's): bounded by the flow control (module docstring)
        self.inbound_peak = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.failure: BaseException | None = None
        self._presence_dirty = False
        #: when (time.monotonic) the first snapshot part of a followed table arrived (None: none yet)
        self.first_snapshot_at: float | None = None

    # --- lifecycle ---

    async def __aenter__(self) -> "SyncClient":
        self._load()
        self._task = asyncio.create_task(self._run(), name=f"sync {self.site_id}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self, timeout: float | None = None) -> None:
        """Stop cleanly: publish an offline presence (if connected), disconnect, end the
        loop. Bounded by ``timeout`` (default: ``publish_timeout_s`` + 5 s); idempotent.
        Raises :class:`SyncError` if the client had failed."""
        if self._task is None:
            return
        self._stopping.set()
        self._wake.set()
        limit = timeout if timeout is not None else self.settings.publish_timeout_s + 5
        try:
            await asyncio.wait_for(asyncio.shield(self._task), limit)
        except (TimeoutError, asyncio.TimeoutError):
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._task = None
        if self._state is not SyncState.FAILED:
            self._set_state(SyncState.STOPPED)
        if self.failure is not None:
            raise SyncError(f"sync client of site {self.site_id!r} failed: {self.failure}") from self.failure

    def kick(self) -> None:
        """New records were journaled: look for them now rather than at the next poll."""
        self._wake.set()

    # --- status ---

    def status(self) -> SyncStatus:
        """The figures now (one indexed journal read for the records not yet batched)."""
        unsent = 0
        with contextlib.suppress(JournalError):
            tail = self.journal.tail(1)
            if tail and tail[0].seq is not None:
                unsent = max(0, tail[0].seq - self._cursor)
        in_batches = sum(r.count for n, r in self._ranges.items() if n > self._acked)
        return SyncStatus(
            state=self._state, connected=self._connected, backlog_records=in_batches + unsent,
            in_flight_batches=self._last_batch - self._acked, last_batch=self._last_batch,
            acked_batch=self._acked, last_ack_utc_s=self._last_ack_utc_s, connects=self._connects,
            publishes=self._publishes, resends=self._resends, rejected_messages=self._rejected_messages,
            rejected_batches=tuple(r["batch_seq"] for r in self._rejected),
            replica_versions=self._follower.versions(),
            replica_errors=self._replica_errors, last_error=self._last_error)

    def snapshots_collecting(self) -> dict[Table, tuple[int, int, int]]:
        """The snapshots being collected, by table: (version, parts held, parts in all)."""
        out = {}
        for table in self._follower.tables:
            c = self._follower.collecting(table)
            if c is not None:
                out[table] = c
        return out

    async def updates(self) -> AsyncIterator[SyncStatus]:
        """Yields the status now, then again after each change (a connect, an ack, a
        publish, a rejected message, a replica update). Ends when the client stops."""
        while True:
            changed = self._changed
            yield self.status()
            if self._task is None or self._task.done():
                return
            await changed.wait()

    async def wait_until(self, predicate: Callable[[SyncStatus], bool], timeout: float) -> SyncStatus:
        """The first status for which ``predicate`` holds; raises :class:`TimeoutError` after
        ``timeout`` seconds, :class:`SyncError` if the client failed."""
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                st = self.status()
                if predicate(st):
                    return st
                if self.failure is not None:
                    raise SyncError(f"sync client failed: {self.failure}")
                # records journaled meanwhile notify nothing here: look again now and then
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await changed.wait()

    async def wait_flushed(self, timeout: float) -> SyncStatus:
        """Wait until every record journaled before the call is settled by the host."""
        tail = self.journal.tail(1)
        target = tail[0].seq if tail else 0
        return await self.wait_until(lambda s: self._cursor >= target and s.acked_batch == s.last_batch, timeout)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _set_state(self, state: SyncState, *, connected: bool | None = None) -> None:
        self._state = state
        if connected is not None:
            self._connected = connected
        self._notify()

    # --- durable state ---

    def _load(self) -> None:
        """Read the batch numbers and ranges from the journal's meta."""
        try:
            acked_text = self.journal.get_meta(_ACKED_KEY)
            self._acked = int(acked_text) if acked_text else 0
            rejected = self.journal.get_meta(_REJECTED_KEY)
            self._rejected = json.loads(rejected) if rejected else []
            n = max(self._acked, 1)
            while True:
                text = self.journal.get_meta(_batch_key(n))
                if text is None:
                    break
                self._ranges[n] = _Range.from_meta(n, text)
                n += 1
        except (JournalError, ValueError) as e:
            raise SyncError(f"cannot read the sync state from the journal: {e}") from None
        self._last_batch = max(self._ranges, default=0)
        if self._acked > 0 and self._acked not in self._ranges:
            raise SyncError(f"journal meta says batches up to {self._acked} are acked but holds no range "
                            f"for batch {self._acked}: the sync state is damaged")
        self._last_batch = max(self._last_batch, self._acked)
        self._cursor = self._ranges[self._last_batch].last_seq if self._last_batch else 0
        self._next_send = self._acked + 1
        log.info("sync %s: batches acked up to %d, assigned up to %d, cursor seq %d", self.site_id,
                 self._acked, self._last_batch, self._cursor)

    def _records_of(self, n: int, r: _Range) -> list[bytes]:
        """The records of assigned batch ``n``, read back by its stored range ``r`` and packed
        (in a thread)."""
        recs = [x for x in self.journal.after_stored(r.first_seq - 1, r.count) if x[0] <= r.last_seq]
        if len(recs) != r.count or (recs and (recs[0][0] != r.first_seq or recs[-1][0] != r.last_seq)):
            raise SyncError(f"batch {n}: the journal no longer holds its {r.count} records "
                            f"(seq {r.first_seq}..{r.last_seq}); found {len(recs)}")
        return self._pack(recs)

    def _pack(self, recs: Sequence[JournalRow]) -> list[bytes]:
        """Journal rows with their stored bodies (:meth:`~terminal.journal.Journal.after_stored`)
        packed for the wire, each once, with no object per record or body value
        (:func:`wire.codec.pack_record_rows`: their fields checked in C, each body's JSON text
        packed to MessagePack in C). The journal checked each body (canonical JSON, no floats,
        64-bit ints, depth) before storing it; the host's decode checks everything."""
        limits = self.settings.limits
        return pack_record_rows(self.site_id, recs, limits=limits,
                                bodies_checked=limits.max_body_depth >= JOURNAL_MAX_DEPTH)

    def _encode_batch(self, n: int, packed: list[bytes], created: int) -> bytes:
        return encode_packed_batch(self.site_id, n, created, packed, self.keys, limits=self.settings.limits)

    async def _cut(self, n: int) -> tuple[_Range, bytes] | None:
        """Cut batch ``n`` from the records after the cursor, and encode it.

        Records read past what fits stay in a read-ahead buffer for the next cut, so each
        record is read from the journal and packed once. The cut records leave the buffer
        only once the batch's range is durable (:meth:`_assign_batch`).

        On the event loop, not in a thread: the journal is read in steps of
        :data:`CUT_STEP` rows with the loop's other work run between them (the encode of the
        frame is one step of its own). A thread cost more CPU than the whole read: the sqlite3
        module lets the GIL go around every row it steps, and a reader thread and a busy loop
        then hand the GIL back and forth on every row (docs/sync.md, "Issue 12, eighth pass")."""
        await self._read_ahead(n)
        seqs, packed = self._ahead_seqs, self._ahead_packed
        if not seqs:
            return None
        created = int(time.time())
        k = packed_that_fit(self.site_id, n, created, packed, limits=self.settings.limits)
        try:
            frame = self._encode_batch(n, packed[:k], created)
        except WireTooLarge:
            raise SyncError(f"the record at seq {seqs[0]} alone is over the "
                            f"{self.settings.limits.max_message_bytes}-byte frame limit") from None
        except WireError as e:
            raise SyncError(f"batch {n} cannot be encoded (records from seq {seqs[0]}): {e}") from None
        return _Range(seqs[0], seqs[k - 1], k, created), frame

    async def _read_ahead(self, n: int) -> None:
        """Read and pack records after the buffer until it holds ``max_batch_records`` or a
        whole frame's bytes, or the journal has no more; ``CUT_STEP`` rows a step."""
        seqs, packed = self._ahead_seqs, self._ahead_packed
        if seqs and seqs[0] <= self._cursor:  # defensive: the cursor moved past the buffer
            k = bisect.bisect_right(seqs, self._cursor)
            del seqs[:k], packed[:k]
        want = self.settings.max_batch_records
        room = self.settings.limits.max_message_bytes
        held = sum(map(len, packed))
        while len(seqs) < want and held <= room:
            after = seqs[-1] if seqs else self._cursor
            step = min(CUT_STEP, want - len(seqs))
            rows = self.journal.after_stored(after, step)
            try:
                got = self._pack(rows)
            except WireError as e:
                raise SyncError(f"batch {n} cannot be encoded (records after seq {after}): {e}") from None
            seqs.extend([r[0] for r in rows])
            packed.extend(got)
            held += sum(map(len, got))
            if len(rows) < step:
                return
            await asyncio.sleep(0)  # the loop's other work between two steps

    async def _frame(self, n: int) -> bytes | None:
        """Batch ``n``'s frame (the same bytes on every send); None if it was acked meanwhile."""
        frame = self._frames.get(n)
        if frame is None:
            rng = self._ranges[n]

            def build() -> bytes:
                try:
                    return self._encode_batch(n, self._records_of(n, rng), rng.created_utc_s)
                except WireError as e:
                    raise SyncError(f"batch {n} cannot be encoded again: {e}") from None
            frame = await asyncio.to_thread(build)
            if n <= self._acked:
                return None
            self._frames[n] = frame
        return frame

    async def _assign_batch(self) -> bool:
        """Number the next batch and store its range durably; False if nothing to send."""
        await self._settle_assigning()
        n = self._last_batch + 1
        cut = await self._cut(n)
        if cut is None:
            return False
        rng, frame = cut

        async def persist() -> None:
            await self.journal.set_meta(_batch_key(n), rng.to_meta())  # durable before the first publish
            del self._ahead_seqs[:rng.count], self._ahead_packed[:rng.count]
            self._ranges[n] = rng
            self._frames[n] = frame
            self._last_batch = n
            self._cursor = rng.last_seq

        # Shielded: a session cancelled meanwhile must not leave a stored range without the
        # cursor moved past it (the next batch would reuse the number for other records).
        self._assigning = asyncio.ensure_future(persist())
        await asyncio.shield(self._assigning)
        self._assigning = None
        return True

    async def _settle_assigning(self) -> None:
        """Wait for an assignment a cancelled session left under way."""
        if self._assigning is not None:
            task = self._assigning
            await asyncio.shield(task)
            if self._assigning is task:
                self._assigning = None

    async def _apply_ack(self, ack: Ack) -> None:
        up = ack.up_to_seq
        if up <= self._acked:
            return  # stale or duplicate: acks are cumulative
        if up > self._last_batch:
            log.warning("sync %s: ack up to batch %d, but only %d batches were ever sent; "
                        "taking it as up to %d", self.site_id, up, self._last_batch, self._last_batch)
            up = self._last_batch
            if up <= self._acked:
                return
        old = self._acked
        refused = {r.batch_seq: r.reason for r in ack.rejected if old < r.batch_seq <= up}
        if refused:
            for b, reason in sorted(refused.items()):
                rng = self._ranges[b]
                self._rejected.append({"batch_seq": b, "first_seq": rng.first_seq, "last_seq": rng.last_seq,
                                       "reason": reason})
                log.error("sync %s: the host refused batch %d for good (records seq %d..%d kept unacked): %s",
                          self.site_id, b, rng.first_seq, rng.last_seq, reason)
            await self.journal.set_meta(_REJECTED_KEY, json.dumps(self._rejected, sort_keys=True))
        if self._rejected:
            # records of a refused batch stay unacked: mark the accepted batches' seqs only
            seqs: list[int] = []
            for b in range(old + 1, up + 1):
                if b not in refused:
                    seqs.extend(range(self._ranges[b].first_seq, self._ranges[b].last_seq + 1))
            await self.journal.mark_acked(seqs=seqs, meta={_ACKED_KEY: str(up)}, count=False)
        else:  # the marks and the acked batch number in one transaction
            await self.journal.mark_acked(up_to_seq=self._ranges[up].last_seq, meta={_ACKED_KEY: str(up)},
                                          count=False)
        self._acked = up
        for b in range(max(old, 1), up):
            self._ranges.pop(b, None)
            self._frames.pop(b, None)
        self._frames.pop(up, None)
        self._sent = {b for b in self._sent if b > up}
        self._next_send = max(self._next_send, up + 1)
        self._last_ack_utc_s = int(time.time())
        self._progress_at = time.monotonic()
        self._wake.set()
        self._notify()
        # the ranges of acked batches stay in the meta: a host row's watermark names a batch
        # (terminal.own_spend maps it to the journal with batch_last_seq)

    # --- the connection loop ---

    def _backoff_s(self, attempt: int) -> float:
        cap = min(self.settings.backoff_max_s, self.settings.backoff_initial_s * (2 ** min(attempt, 30)))
        return cap / 2 + random.uniform(0, cap / 2)  # jitter: sites do not reconnect in step

    async def _run(self) -> None:
        attempt = 0
        try:
            while not self._stopping.is_set():
                self._set_state(SyncState.CONNECTING)
                connects = self._connects
                try:
                    await self._session()
                except _Stop:
                    break
                except (aiomqtt.MqttError, OSError, ssl.SSLError) as e:
                    self._last_error = f"{type(e).__name__}: {e}"
                    log.warning("sync %s: broker connection lost or refused (%s); retrying", self.site_id,
                                self._last_error)
                except (JournalError, SyncError):
                    raise
                except Exception as e:  # noqa: BLE001 - a bug must not end the sync for good: log, retry
                    self._last_error = f"{type(e).__name__}: {e}"
                    log.exception("sync %s: unexpected error in the session; retrying", self.site_id)
                if self._connects > connects:
                    attempt = 0  # that session got online: start the backoff over
                self._set_state(SyncState.BACKOFF, connected=False)
                if self._stopping.is_set():
                    break
                delay = self._backoff_s(attempt)
                attempt += 1
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()
        except (JournalError, SyncError) as e:
            self.failure = e
            self._last_error = str(e)
            self._set_state(SyncState.FAILED, connected=False)
            log.error("sync %s: stopped: %s", self.site_id, e)
            if self._on_fatal is not None:
                self._on_fatal(e)
            return
        self._set_state(SyncState.STOPPED, connected=False)

    def _presence(self, online: bool, at_utc_s: int) -> bytes:
        return encode(Presence(self.site_id, online, at_utc_s, self.settings.software_version,
                               self._follower.versions()), self.keys)

    def _make_client(self, session_start: int) -> aiomqtt.Client:
        s = self.settings
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.session_expiry_s
        props.ReceiveMaximum = RECEIVE_MAXIMUM  # flow control: see the module docstring
        will = aiomqtt.Will(presence_topic(self.site_id), self._presence(False, session_start), qos=1, retain=True)
        client = aiomqtt.Client(
            s.host, s.port, username=s.username, password=s.password, logger=_mqtt_log,
            identifier=self._client_id, protocol=aiomqtt.ProtocolVersion.V5, clean_start=False,
            properties=props, will=will, keepalive=s.keepalive_s, timeout=s.publish_timeout_s,
            max_inflight_messages=s.max_in_flight + 8, tls_context=s.tls_context())
        client.pending_calls_threshold = s.max_in_flight + 16
        # paho acknowledges a message when told (aiomqtt has no option for it: aiomqtt issue 345)
        client._client.manual_ack_set(True)
        return client

    async def _session(self) -> None:
        """One connection: subscribe, presence, then send/receive until it drops or we stop."""
        session_start = int(time.time())
        client = self._make_client(session_start)
        async with client:
            self._connects += 1
            tables = self._follower.tables
            subs = list(site_subscriptions(self.site_id, tables) if tables else [(acks_topic(self.site_id), 1)])
            subs += [(snapshot_filter(t), 1) for t in self._follower.watched()]
            await client.subscribe(subs, timeout=self.settings.publish_timeout_s)
            await client.publish(presence_topic(self.site_id), self._presence(True, session_start), qos=1,
                                 retain=True, timeout=self.settings.publish_timeout_s)
            self._last_error = None
            self._set_state(SyncState.ONLINE, connected=True)
            log.info("sync %s: online at %s:%d", self.site_id, self.settings.host, self.settings.port)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._receive(client))
                    tg.create_task(self._send_loop(client, tg))
                    tg.create_task(self._replica_loop(client))
                    tg.create_task(self._stop_watch(client))
            except BaseExceptionGroup as eg:
                self._connected = False
                # the first error of interest decides: a stop, a fatal journal error, a broker error
                for kind in (JournalError, SyncError, _Stop, aiomqtt.MqttError, OSError, Exception):
                    found = eg.subgroup(kind)
                    if found is not None:
                        raise _first(found) from None
                raise

    async def _stop_watch(self, client: aiomqtt.Client) -> None:
        await self._stopping.wait()
        self._set_state(SyncState.STOPPING)
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            await client.publish(presence_topic(self.site_id), self._presence(False, int(time.time())), qos=1,
                                 retain=True, timeout=min(5.0, self.settings.publish_timeout_s))
        raise _Stop()

    async def _publish_batch(self, client: aiomqtt.Client, n: int, frame: bytes) -> None:
        await client.publish(batches_topic(self.site_id), frame, qos=1, timeout=self.settings.publish_timeout_s)
        self._publishes += 1
        self._notify()

    async def _send_loop(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        s = self.settings
        await self._settle_assigning()
        self._next_send = self._acked + 1  # after a (re)connect, everything unacked goes again
        self._progress_at = time.monotonic()
        while True:
            while self._next_send <= self._last_batch and self._next_send <= self._acked + s.max_in_flight:
                n = self._next_send
                frame = await self._frame(n)
                if frame is None or n != self._next_send:
                    continue  # acked (or the window moved) while the frame was built
                if n in self._sent:
                    self._resends += 1
                self._sent.add(n)
                if n == self._acked + 1:
                    self._progress_at = time.monotonic()
                self._next_send = n + 1
                tg.create_task(self._publish_batch(client, n, frame))
            room = self._last_batch < self._acked + s.max_in_flight
            if room and await self._assign_batch():
                continue
            if self._presence_dirty:
                self._presence_dirty = False
                tg.create_task(client.publish(presence_topic(self.site_id), self._presence(True, int(time.time())),
                                              qos=1, retain=True, timeout=s.publish_timeout_s))
            waiting = self._last_batch > self._acked
            deadline = self._progress_at + s.ack_timeout_s - time.monotonic() if waiting else s.poll_interval_s
            timeout = max(0.0, min(deadline, s.poll_interval_s) if room else deadline)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            if self._last_batch > self._acked and time.monotonic() - self._progress_at >= s.ack_timeout_s:
                log.info("sync %s: no ack for batch %d within %.1f s; sending batches %d..%d again", self.site_id,
                         self._acked + 1, s.ack_timeout_s, self._acked + 1,
                         min(self._last_batch, self._acked + s.max_in_flight))
                self._next_send = self._acked + 1
                self._progress_at = time.monotonic()

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for m in client.messages:
            self.inbound_peak = max(self.inbound_peak, len(client.messages) + self._replica_queue.qsize() + 1)
            try:
                await self._take(m)
            finally:
                if m.qos:  # handled: the broker may send the next (flow control, module docstring)
                    with contextlib.suppress(Exception):  # a dropped connection: the broker sends it again
                        client._client.ack(m.mid, m.qos)

    async def _take(self, m: aiomqtt.Message) -> None:
        """Handle message ``m``: an ack applied, a replica message queued for the replica task
        (waiting while the queue is full), anything else refused."""
        topic = m.topic.value
        payload = m.payload if isinstance(m.payload, (bytes, bytearray)) else b""
        if not payload and "/replica/" in topic:
            return  # an empty retained message clears a stale snapshot part or delta
        raw = self._stage_part is not None  # a snapshot part's rows stay bytes, into the store as received
        try:
            if len(payload) > _BIG_FRAME:
                msg = await asyncio.to_thread(decode, payload, self.keys, topic=topic, limits=self.settings.limits,
                                              raw_rows=raw)
            else:
                msg = decode(payload, self.keys, topic=topic, limits=self.settings.limits, raw_rows=raw)
        except WireError as e:
            self._rejected_messages += 1
            log.warning("sync %s: refused a message on %r: %s", self.site_id, topic[:200], e)
            self._notify()
            return
        if isinstance(msg, Ack) and msg.site_id == self.site_id:
            await self._apply_ack(msg)
        elif isinstance(msg, (ReplicaDelta, ReplicaSnapshot)) and msg.table in self._follower.tables:
            if self.first_snapshot_at is None and isinstance(msg, ReplicaSnapshot):
                self.first_snapshot_at = time.monotonic()
            await self._replica_queue.put(msg)
        else:
            self._rejected_messages += 1
            log.warning("sync %s: a %s on %r is not for this site", self.site_id, type(msg).__name__, topic[:200])
            self._notify()

    # --- replica updates ---

    async def _replica_loop(self, client: aiomqtt.Client) -> None:
        """The driver of :class:`terminal.follower.ReplicaFollower`: feeds it what arrives and
        the clock, performs its commands in order."""
        f = self._follower
        try:
            await self._perform(client, f.connected(time.monotonic()))
            while True:
                msg = None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        msg = await self._replica_queue.get()
                now = time.monotonic()
                if isinstance(msg, ReplicaDelta):
                    await self._perform(client, f.delta(msg, now))
                elif isinstance(msg, ReplicaSnapshot):
                    await self._perform(client, f.part(msg, now))
                del msg  # a part's frame is not held past its staging
                await self._perform(client, f.tick(time.monotonic()))
        finally:
            f.disconnected()

    async def _perform(self, client: aiomqtt.Client, commands: list[Command]) -> None:
        queue = collections.deque(commands)
        while queue:
            c = queue.popleft()
            if isinstance(c, StagePart):
                await self._stage(c)
            elif isinstance(c, Apply):
                # a session cancelled mid-apply lets the apply finish and reports its outcome
                # (the replica and the follower's version must agree); what follows is for
                # the next session (ReplicaFollower.disconnected takes back what was not done)
                task = asyncio.ensure_future(self._deliver(c.update))
                try:
                    ok = await asyncio.shield(task)
                except asyncio.CancelledError:
                    ok = await task
                    self._follower.applied(ok, time.monotonic())
                    raise
                queue.extend(self._follower.applied(ok, time.monotonic()))
                if ok:
                    self._applied(c.update)
            elif isinstance(c, RequestSnapshot):
                req = encode(SnapshotRequest(self.site_id, c.table, c.have_version), self.keys)
                await client.publish(snapshot_requests_topic(self.site_id), req, qos=1,
                                     timeout=self.settings.publish_timeout_s)
                log.info("sync %s: asked for a snapshot of %s (holding version %d)", self.site_id, c.table.value,
                         c.have_version)
            elif c.on:
                await client.subscribe(snapshot_filter(c.table), qos=1, timeout=self.settings.publish_timeout_s)
            else:
                await client.unsubscribe(snapshot_filter(c.table), timeout=self.settings.publish_timeout_s)

    async def _stage(self, c: StagePart) -> None:
        """Perform a :class:`StagePart`: the daemon's ``stage_part``, or kept here. A part that
        could not be staged is logged; the snapshot's apply then fails and is asked for again."""
        p = c.part
        if self._stage_part is None:
            held = self._kept.get(p.table)
            if c.fresh or held is None or held[0] != (p.version, p.parts):
                held = self._kept[p.table] = ((p.version, p.parts), {})
            held[1][p.part] = tuple(p.rows)
            return
        try:
            result = self._stage_part(p, c.fresh)
            if inspect.isawaitable(result):
                await result
        except Exception as e:  # noqa: BLE001 - the daemon's error: the part is taken again when it comes again
            self._follower.stage_failed(p)
            self._replica_errors += 1
            log.error("sync %s: staging part %d/%d of %s snapshot version %d failed: %r", self.site_id, p.part,
                      p.parts, p.table.value, p.version, e)
            self._notify()

    def _whole(self, update: StagedSnapshot) -> FollowerUpdate:
        """What ``on_replica`` gets for a staged snapshot: itself (the daemon staged it), or the
        rows kept here (a :class:`FullSnapshot`; a part missing: ValueError)."""
        if self._stage_part is not None:
            return update
        held = self._kept.pop(update.table, None)
        if held is None or held[0] != (update.version, update.parts) or len(held[1]) != update.parts:
            raise ValueError(f"{update.table.value} snapshot version {update.version} is not whole here")
        return FullSnapshot(update.table, update.version,
                            tuple(r for i in range(update.parts) for r in held[1][i]))

    def _applied(self, update: FollowerUpdate) -> None:
        if isinstance(update, (FullSnapshot, StagedSnapshot)):
            n = f"{len(update.rows)} rows" if isinstance(update, FullSnapshot) else f"{update.parts} parts"
            log.info("sync %s: replica %s replaced by snapshot version %d (%s)", self.site_id,
                     update.table.value, update.version, n)
            self._presence_dirty = True  # the host learns the versions held
            self._wake.set()
        self._notify()

    async def _deliver(self, update: FollowerUpdate) -> bool:
        """Hand ``update`` to the daemon; False (logged, counted) if its callback failed."""
        try:
            whole = self._whole(update) if isinstance(update, StagedSnapshot) else update
            result = self._on_replica(whole)  # type: ignore[misc]
            if inspect.isawaitable(result):
                await result
        except Exception as e:  # noqa: BLE001 - the daemon's error: keep the version, ask for a snapshot
            self._replica_errors += 1
            what = (f"delta {update.from_version}->{update.to_version}" if isinstance(update, ReplicaDelta)
                    else f"snapshot version {update.version}")
            log.error("sync %s: applying %s of %s failed: %r", self.site_id, what, update.table.value, e)
            self._notify()
            return False
        return True


def _first(eg: BaseExceptionGroup) -> BaseException:
    """The first leaf exception of a (nested) exception group."""
    e: BaseException = eg
    while isinstance(e, BaseExceptionGroup):
        e = e.exceptions[0]
    return e
