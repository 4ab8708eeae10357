"""A small host-side responder the sync tests talk to. It STANDS IN for ``host/`` (ingest,
ledger, acks), which another engineer builds and which lands separately: it decodes what
sites publish with :func:`wire.decode`, keeps a record-id-deduplicated "ledger" in memory,
and acknowledges batches the way docs/wire-protocol.md says the host does (``up_to_seq`` =
the highest n such that 1..n are all settled; refused batches listed in ``rejected``). It
also publishes replica deltas and snapshots, signed with the host key.

It subscribes with the host's shared subscriptions (:func:`wire.host_subscriptions`) as
the broker user ``host``. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from wire import (Ack, Batch, Presence, Rejection, ReplicaSnapshot, SiteKeys, SnapshotRequest,
                  Table, WireError, WireRecord, decode, encode, host_subscriptions, topic_of)


@dataclass(frozen=True, slots=True)
class Received:
    """One batch as it arrived: its topic, its exact bytes and the decoded batch."""

    topic: str
    payload: bytes
    batch: Batch


class StandInHost:
    """Stands in for host/: acks batches it receives (see the module docstring)."""

    def __init__(self, host: str, port: int, keys: SiteKeys, *, username: str | None = None,
                 password: str | None = None, tls_context: ssl.SSLContext | None = None,
                 acking: bool = True, client_id: str = "standin-host") -> None:
        self.host, self.port, self.keys = host, port, keys
        self.username, self.password, self.tls_context = username, password, tls_context
        self.client_id = client_id
        self.acking = acking
        self.received: list[Received] = []
        self.ledger: dict[str, WireRecord] = {}  # record_id -> record, the idempotent ingest
        self.duplicates = 0  # records that arrived again (dropped by record id)
        self.settled: dict[str, set[int]] = defaultdict(set)
        self.reject: dict[tuple[str, int], str] = {}  # (site, batch) -> reason, to refuse for good
        self.presence: dict[str, Presence] = {}
        self.presence_raw: list[tuple[str, bytes, bool]] = []  # (topic, payload, retained flag)
        self.snapshot_requests: list[SnapshotRequest] = []
        self.refused: list[tuple[str, str]] = []  # (topic, error) of payloads decode refused
        self.other: list[tuple[str, bytes]] = []  # anything else that arrived
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> "StandInHost":
        """Connect (again: the ledger and acks kept so far stay, as a real host's ledger does),
        with a persistent session like a host worker's."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self._client = aiomqtt.Client(self.host, self.port, username=self.username, password=self.password,
                                      identifier=self.client_id, protocol=aiomqtt.ProtocolVersion.V5,
                                      clean_start=False, properties=props, tls_context=self.tls_context,
                                      timeout=10)
        await self._client.__aenter__()
        await self._client.subscribe(list(host_subscriptions()), timeout=10)
        self._task = asyncio.create_task(self._consume())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client.__aexit__(None, None, None)

    # --- what the tests look at ---

    def batches_of(self, site_id: str) -> dict[int, list[bytes]]:
        """Every payload received per batch number (a resend appends another)."""
        out: dict[int, list[bytes]] = defaultdict(list)
        for r in self.received:
            if r.batch.site_id == site_id:
                out[r.batch.batch_seq].append(r.payload)
        return out

    def up_to(self, site_id: str) -> int:
        """The highest n such that batches 1..n of ``site_id`` are all settled."""
        done, n = self.settled[site_id], 0
        while n + 1 in done:
            n += 1
        return n

    async def wait_until(self, predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
        """Wait until ``predicate()`` holds; AssertionError naming ``what`` after ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    changed = self._changed
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.2):
                            await changed.wait()
        except TimeoutError:
            raise AssertionError(f"stand-in host: timed out after {timeout} s waiting for {what}") from None

    # --- what the tests make it do ---

    async def ack_now(self, site_id: str) -> None:
        """Publish the current ack for ``site_id`` (as after each batch when acking)."""
        up = self.up_to(site_id)
        rejected = tuple(Rejection(b, reason) for (s, b), reason in sorted(self.reject.items())
                         if s == site_id and b <= up and b in self.settled[site_id])
        ack = Ack(site_id, up, rejected)
        await self._client.publish(topic_of(ack), encode(ack, self.keys), qos=1, timeout=10)

    async def publish(self, msg: Any, *, retain: bool | None = None) -> None:
        """Publish a replica message (or anything) signed with the keys, on its own topic."""
        topic = topic_of(msg)
        if retain is None:
            retain = isinstance(msg, ReplicaSnapshot)
        await self._client.publish(topic, encode(msg, self.keys), qos=1, retain=retain, timeout=10)

    async def publish_raw(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish arbitrary bytes on ``topic`` (forged and malformed payloads)."""
        await self._client.publish(topic, payload, qos=1, retain=retain, timeout=10)

    async def publish_snapshot(self, table: Table, version: int, rows: tuple, parts: int) -> None:
        """Publish ``rows`` as snapshot ``version`` of ``table`` in ``parts`` retained parts."""
        size = -(-len(rows) // parts) if rows else 0
        for i in range(parts):
            await self.publish(ReplicaSnapshot(table, version, i, parts, tuple(rows[i * size:(i + 1) * size])))

    # --- ingest ---

    def _mark(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _consume(self) -> None:
        async for m in self._client.messages:
            topic = m.topic.value
            payload = bytes(m.payload) if isinstance(m.payload, (bytes, bytearray)) else b""
            try:
                msg = decode(payload, self.keys, topic=topic)
            except WireError as e:
                self.refused.append((topic, str(e)))
                self._mark()
                continue
            if isinstance(msg, Batch):
                self.received.append(Received(topic, payload, msg))
                for rec in msg.records:
                    if rec.record_id in self.ledger:
                        self.duplicates += 1
                    else:
                        self.ledger[rec.record_id] = rec
                self.settled[msg.site_id].add(msg.batch_seq)
                if self.acking:
                    await self.ack_now(msg.site_id)
            elif isinstance(msg, Presence):
                self.presence_raw.append((topic, payload, bool(m.retain)))
                old = self.presence.get(msg.site_id)
                if old is None or msg.at_utc_s >= old.at_utc_s:
                    self.presence[msg.site_id] = msg
            elif isinstance(msg, SnapshotRequest):
                self.snapshot_requests.append(msg)
            else:
                self.other.append((topic, payload))
            self._mark()
