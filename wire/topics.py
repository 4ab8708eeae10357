"""The MQTT topic tree: names to publish on, filters to subscribe to, and the parse back.

Every topic starts with ``edgepos/v1``; a protocol version that changes the tree gets a new
prefix, so old and new sites can share a broker during an upgrade::

    edgepos/v1/sites/{site_id}/batches              up    QoS 1            Batch
    edgepos/v1/sites/{site_id}/presence             up    QoS 1, retained  Presence (and the last will)
    edgepos/v1/sites/{site_id}/snapshot-requests    up    QoS 1            SnapshotRequest
    edgepos/v1/sites/{site_id}/acks                 down  QoS 1            Ack
    edgepos/v1/replica/{table}/snapshot/{part}      down  QoS 1, retained  ReplicaSnapshot
    edgepos/v1/replica/{table}/deltas               down  QoS 1            ReplicaDelta

A site id follows the rule of :func:`terminal.ids.check_name` (copied here: ``wire`` does not
import ``terminal``), which also keeps MQTT's ``+``, ``#``, ``/`` and ``$`` out of topics.
The host's workers share the up topics with MQTT shared subscriptions
(``$share/host/edgepos/v1/sites/+/batches``): the broker hands each message to one worker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Iterable

from .errors import WireTopicError
from .messages import (Ack, Batch, Message, Presence, ReplicaDelta, ReplicaSnapshot,
                       SnapshotRequest, Table)

__all__ = [
    "PREFIX", "SITE_ID_RE", "MAX_SNAPSHOT_PARTS", "HOST_GROUP", "TopicKind", "Topic",
    "is_site_id", "batches_topic", "presence_topic", "snapshot_requests_topic", "acks_topic",
    "snapshot_topic", "snapshot_filter", "deltas_topic", "topic_of", "parse_topic", "shared",
    "host_subscriptions", "site_subscriptions", "site_publish_topics",
]

PREFIX = "edgepos/v1"
#: A site id: letters, digits, ``.``, ``_``, ``-``, 1 to 64 characters, starting with a letter
#: or digit (:func:`terminal.ids.check_name`).
SITE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: Most parts a snapshot may have (part numbers are 0 .. MAX_SNAPSHOT_PARTS - 1).
MAX_SNAPSHOT_PARTS = 100_000
#: The shared-subscription group of the host's workers.
HOST_GROUP = "host"

_GROUP_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PART_RE = re.compile(r"0|[1-9][0-9]{0,5}")


class TopicKind(StrEnum):
    """What a topic carries; the value is the topic's last level (before a snapshot part)."""

    BATCHES = "batches"
    PRESENCE = "presence"
    SNAPSHOT_REQUESTS = "snapshot-requests"
    ACKS = "acks"
    SNAPSHOT = "snapshot"
    DELTAS = "deltas"

    @property
    def qos(self) -> int:
        """The QoS to publish and subscribe with: 1 everywhere (at least once; the receivers
        are idempotent)."""
        return 1

    @property
    def retain(self) -> bool:
        """Whether messages on this topic are published retained: presence and snapshots."""
        return self in (TopicKind.PRESENCE, TopicKind.SNAPSHOT)

    @property
    def per_site(self) -> bool:
        """True for ``sites/{site_id}/...`` topics, False for ``replica/{table}/...`` ones."""
        return self not in (TopicKind.SNAPSHOT, TopicKind.DELTAS)


_SITE_KINDS = {k.value: k for k in TopicKind if k.per_site}
_TABLES = {t.value: t for t in Table}


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic: its kind and the site, or the table (and snapshot part), it names."""

    kind: TopicKind
    site_id: str | None = None
    table: Table | None = None
    part: int | None = None

    def __str__(self) -> str:
        if self.kind.per_site:
            return f"{PREFIX}/sites/{self.site_id}/{self.kind.value}"
        assert self.table is not None, "a replica topic names its table"
        if self.kind is TopicKind.SNAPSHOT:
            return f"{PREFIX}/replica/{self.table.value}/snapshot/{self.part}"
        return f"{PREFIX}/replica/{self.table.value}/deltas"


def is_site_id(value: object) -> bool:
    """Is ``value`` a well-formed site id (a str matching :data:`SITE_ID_RE`)?"""
    return isinstance(value, str) and SITE_ID_RE.fullmatch(value) is not None


def _site(site_id: object) -> str:
    if not is_site_id(site_id):
        raise WireTopicError(f"site id: letters, digits, '.', '_', '-' only, 1 to 64 characters, "
                             f"starting with a letter or digit; got {site_id!r}")
    return site_id  # type: ignore[return-value]


def _table(table: object) -> Table:
    if isinstance(table, str) and table in _TABLES:
        return _TABLES[table]
    raise WireTopicError(f"unknown replica table {table!r}; the tables are {', '.join(_TABLES)}")


def batches_topic(site_id: str) -> str:
    """Where ``site_id`` publishes its batches. Raises :class:`WireTopicError`."""
    return f"{PREFIX}/sites/{_site(site_id)}/batches"


def presence_topic(site_id: str) -> str:
    """Where ``site_id``'s presence (and its last will) is retained."""
    return f"{PREFIX}/sites/{_site(site_id)}/presence"


def snapshot_requests_topic(site_id: str) -> str:
    """Where ``site_id`` asks for snapshots."""
    return f"{PREFIX}/sites/{_site(site_id)}/snapshot-requests"


def acks_topic(site_id: str) -> str:
    """Where the host acknowledges ``site_id``'s batches."""
    return f"{PREFIX}/sites/{_site(site_id)}/acks"


def snapshot_topic(table: Table | str, part: int) -> str:
    """Where part ``part`` of ``table``'s snapshot is retained."""
    if type(part) is not int or not 0 <= part < MAX_SNAPSHOT_PARTS:
        raise WireTopicError(f"snapshot part must be an int in 0..{MAX_SNAPSHOT_PARTS - 1}, got {part!r}")
    return f"{PREFIX}/replica/{_table(table).value}/snapshot/{part}"


def snapshot_filter(table: Table | str | None = None) -> str:
    """The filter for every part of ``table``'s snapshot (of every table when None)."""
    return f"{PREFIX}/replica/{'+' if table is None else _table(table).value}/snapshot/+"


def deltas_topic(table: Table | str) -> str:
    """Where ``table``'s deltas are published."""
    return f"{PREFIX}/replica/{_table(table).value}/deltas"


def topic_of(msg: Message) -> str:
    """The topic ``msg`` is published on. Raises :class:`WireTopicError` for a malformed site
    id, table or part."""
    if isinstance(msg, Batch):
        return batches_topic(msg.site_id)
    if isinstance(msg, Presence):
        return presence_topic(msg.site_id)
    if isinstance(msg, SnapshotRequest):
        return snapshot_requests_topic(msg.site_id)
    if isinstance(msg, Ack):
        return acks_topic(msg.site_id)
    if isinstance(msg, ReplicaSnapshot):
        return snapshot_topic(msg.table, msg.part)
    if isinstance(msg, ReplicaDelta):
        return deltas_topic(msg.table)
    raise WireTopicError(f"not a wire message: {type(msg).__name__}")


def parse_topic(topic: str) -> Topic:
    """The kind and the site or table of a topic a message arrived on.

    Raises :class:`WireTopicError` saying what is wrong: another prefix or version, an
    unknown kind or table, a malformed site id or part, a wildcard.
    """
    if not isinstance(topic, str):
        raise WireTopicError(f"a topic is a str, got {type(topic).__name__}")
    if len(topic) > 256:
        raise WireTopicError(f"topic of {len(topic)} characters is not an edgepos topic")
    levels = topic.split("/")
    if len(levels) < 2 or levels[0] != "edgepos":
        raise WireTopicError(f"not an edgepos topic: {topic!r}")
    if levels[1] != "v1":
        raise WireTopicError(f"topic {topic!r} is of protocol {levels[1]!r}; this code speaks v1")
    rest = levels[2:]
    if len(rest) == 3 and rest[0] == "sites":
        site_id, kind = rest[1], rest[2]
        if kind not in _SITE_KINDS:
            raise WireTopicError(f"topic {topic!r}: unknown site topic {kind!r}; "
                                 f"expected one of {', '.join(_SITE_KINDS)}")
        if not is_site_id(site_id):
            raise WireTopicError(f"topic {topic!r}: malformed site id {site_id!r}")
        return Topic(_SITE_KINDS[kind], site_id=site_id)
    if rest[:1] == ["replica"] and len(rest) in (3, 4):
        try:
            table = _table(rest[1])
        except WireTopicError as e:
            raise WireTopicError(f"topic {topic!r}: {e}") from None
        if len(rest) == 3 and rest[2] == "deltas":
            return Topic(TopicKind.DELTAS, table=table)
        if len(rest) == 4 and rest[2] == "snapshot":
            if not _PART_RE.fullmatch(rest[3]) or int(rest[3]) >= MAX_SNAPSHOT_PARTS:
                raise WireTopicError(f"topic {topic!r}: snapshot part must be a decimal number in "
                                     f"0..{MAX_SNAPSHOT_PARTS - 1} without leading zeros, got {rest[3]!r}")
            return Topic(TopicKind.SNAPSHOT, table=table, part=int(rest[3]))
    raise WireTopicError(f"unknown edgepos topic {topic!r}: expected {PREFIX}/sites/<site>/<kind>, "
                         f"{PREFIX}/replica/<table>/deltas or {PREFIX}/replica/<table>/snapshot/<part>")


def shared(topic_filter: str, group: str = HOST_GROUP) -> str:
    """The shared-subscription form of ``topic_filter``: ``$share/{group}/{topic_filter}``."""
    if not _GROUP_RE.fullmatch(group):
        raise WireTopicError(f"shared subscription group: letters, digits, '_', '-', got {group!r}")
    return f"$share/{group}/{topic_filter}"


def host_subscriptions(group: str = HOST_GROUP) -> tuple[tuple[str, int], ...]:
    """(filter, qos) pairs a host worker subscribes with: every site's batches, presence and
    snapshot requests, shared among the workers of ``group`` so each message goes to one."""
    return tuple((shared(f"{PREFIX}/sites/+/{kind.value}", group), kind.qos)
                 for kind in (TopicKind.BATCHES, TopicKind.PRESENCE, TopicKind.SNAPSHOT_REQUESTS))


def site_subscriptions(site_id: str, tables: Iterable[Table] | None = None) -> tuple[tuple[str, int], ...]:
    """(filter, qos) pairs a site subscribes with: its acks and the deltas of ``tables`` (all
    when None). Snapshots are subscribed separately (:func:`snapshot_filter`), only while the
    site needs one: on subscribing, the broker sends every retained part."""
    subs = [(acks_topic(site_id), TopicKind.ACKS.qos)]
    if tables is None:
        subs.append((f"{PREFIX}/replica/+/deltas", TopicKind.DELTAS.qos))
    else:
        subs += [(deltas_topic(t), TopicKind.DELTAS.qos) for t in tables]
    return tuple(subs)


def site_publish_topics(site_id: str) -> tuple[str, ...]:
    """The only topics ``site_id``'s broker credentials may publish on (for the broker's ACL)."""
    return (batches_topic(site_id), presence_topic(site_id), snapshot_requests_topic(site_id))
