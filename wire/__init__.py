"""The MQTT contract shared by the edge daemon and the central host: topics, messages, the
signed MessagePack codec and the keys it signs with (``docs/wire-protocol.md``).

- Topics (:mod:`wire.topics`): ``edgepos/v1/sites/{site}/batches|presence|snapshot-requests|acks``,
  ``edgepos/v1/replica/{table}/snapshot/{part}`` and ``.../deltas``; :func:`topic_of`,
  :func:`parse_topic`, :func:`host_subscriptions`, :func:`site_subscriptions`.
- Messages (:mod:`wire.messages`): :class:`Batch` of :class:`WireRecord`, :class:`Presence`,
  :class:`SnapshotRequest` up; :class:`Ack`, :class:`ReplicaSnapshot`, :class:`ReplicaDelta`
  down; the replica's tables (:class:`Table`) and rows.
- Codec (:mod:`wire.codec`): :func:`encode` and :func:`decode` (checks everything or raises),
  :class:`Limits`, :func:`records_that_fit`, :func:`rows_that_fit`.
- Keys (:mod:`wire.signing`): :class:`SiteKeys`, :func:`load_key`, :func:`write_key`,
  :func:`new_key`, :func:`key_id` (the sites' HMAC keys); :func:`new_replica_signing_key`,
  :func:`write_replica_keys`, :func:`load_replica_signing_key`, :func:`load_replica_verify_key`,
  :func:`replica_key_id` (the host's Ed25519 replica key pair).
- Errors (:mod:`wire.errors`): :class:`WireError` and its subclasses; the only exceptions
  the codec raises.

``wire`` imports the standard library, ``msgpack``, ``cryptography`` (Ed25519) and :mod:`authz`
model types only.
"""

from .codec import (DEFAULT_LIMITS, PROTOCOL_VERSION, SUPPORTED_VERSIONS, Limits, MessageType,
                    card_controls_from_map, card_controls_to_map, decode, encode, pack_row, records_that_fit,
                    rows_that_fit, unpack_row)
from .errors import (WireError, WireFormatError, WireKeyError, WireSignatureError, WireTooLarge,
                     WireTopicError, WireVersionError)
from .messages import (CLUB_RULES_KEY, Ack, Batch, ClubAccountRow, FuelCardRow, HostMessage, Message,
                       Presence, Rejection, ReplicaDelta, ReplicaSnapshot, Row, RowKey, SiteMessage,
                       SnapshotRequest, StopListEntry, Table, TariffRow, WireRecord, row_key)
from .signing import (KEY_BYTES, REPLICA_SIGNING_KEY_FILE, REPLICA_VERIFY_KEY_FILE, SIGNATURE_BYTES, SiteKeys, key_id,
                      load_key, load_replica_signing_key, load_replica_verify_key, new_key, new_replica_signing_key,
                      replica_key_id, write_key, write_replica_keys)
from .topics import (HOST_GROUP, PREFIX, Topic, TopicKind, acks_topic, batches_topic, deltas_topic,
                     host_subscriptions, is_site_id, parse_topic, presence_topic, shared,
                     site_publish_topics, site_subscriptions, snapshot_filter, snapshot_requests_topic,
                     snapshot_topic, topic_of)

__all__ = [
    # codec
    "PROTOCOL_VERSION", "SUPPORTED_VERSIONS", "Limits", "DEFAULT_LIMITS", "MessageType", "encode", "decode",
    "records_that_fit", "rows_that_fit", "pack_row", "unpack_row", "card_controls_to_map",
    "card_controls_from_map",
    # errors
    "WireError", "WireFormatError", "WireTooLarge", "WireVersionError", "WireSignatureError",
    "WireTopicError", "WireKeyError",
    # messages
    "Message", "SiteMessage", "HostMessage", "WireRecord", "Batch", "Presence", "SnapshotRequest", "Ack",
    "Rejection", "ReplicaSnapshot", "ReplicaDelta", "Table", "Row", "RowKey", "StopListEntry", "TariffRow",
    "FuelCardRow", "ClubAccountRow", "CLUB_RULES_KEY", "row_key",
    # keys
    "KEY_BYTES", "SiteKeys", "new_key", "key_id", "load_key", "write_key", "SIGNATURE_BYTES",
    "REPLICA_SIGNING_KEY_FILE", "REPLICA_VERIFY_KEY_FILE", "new_replica_signing_key", "replica_key_id",
    "load_replica_signing_key", "load_replica_verify_key", "write_replica_keys",
    # topics
    "PREFIX", "HOST_GROUP", "TopicKind", "Topic", "is_site_id", "batches_topic", "presence_topic",
    "snapshot_requests_topic", "acks_topic", "snapshot_topic", "snapshot_filter", "deltas_topic",
    "topic_of", "parse_topic", "shared", "host_subscriptions", "site_subscriptions", "site_publish_topics",
]
