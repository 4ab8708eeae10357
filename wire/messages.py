"""The messages that cross the broker, and the rows of the replica tables they carry.

Every message is a frozen dataclass; :mod:`wire.codec` turns them into signed MessagePack
and back. Up (site -> host): :class:`Batch`, :class:`Presence`, :class:`SnapshotRequest`.
Down (host -> sites): :class:`Ack` (to one site), :class:`ReplicaSnapshot` and
:class:`ReplicaDelta` (to every site).

Replica rows are the evaluator's own model types from :mod:`authz` wherever one fits
(:class:`~authz.fuel_model.Product`, :class:`~authz.fuel_model.Station`,
:class:`~authz.fuel_model.Contract`, :class:`~authz.club_model.ClubRules`), and a small
wrapper where the replica needs more than the model type holds (a fuel card with its limit
counters, a club account with its cards, a tariff with its discount rows). So the edge
builds a :class:`~authz.fuel_model.FuelModel` or :class:`~authz.club_model.ClubModel`
from decoded rows without another translation layer. Each table's rows have a key
(:func:`row_key`): what a delta's ``deletes`` name.

The codec checks each row's shape, types and ranges; whether rows agree with each other
(a card of an unknown contract) is the model's check (:class:`authz.errors.ModelError`)
when the edge loads them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Union

from authz.balance import Watermark
from authz.club_model import ClubAccount, ClubCard, ClubRules
from authz.fuel_model import Contract, DiscountRule, FuelCard, LimitCounter, Product, Station, Tariff

from ._wirecheck import LazyBody

__all__ = [
    "Table", "WireRecord", "Batch", "Ack", "Rejection", "Presence", "SnapshotRequest",
    "ReplicaSnapshot", "ReplicaDelta", "Message", "SiteMessage", "HostMessage",
    "StopListEntry", "TariffRow", "FuelCardRow", "ClubAccountRow", "Row", "RowKey",
    "CLUB_RULES_KEY", "row_key",
]


class Table(StrEnum):
    """A replica table the host publishes; the value is the topic level and the wire name."""

    STOP_LIST = "stop_list"  #: :class:`StopListEntry`, key ``card_no``
    PRODUCTS = "products"  #: :class:`authz.fuel_model.Product`, key ``code``
    STATIONS = "stations"  #: :class:`authz.fuel_model.Station` with its prices, key ``station_id``
    TARIFFS = "tariffs"  #: :class:`TariffRow` (discount rows of one tariff), key ``tariff``
    CONTRACTS = "contracts"  #: :class:`authz.fuel_model.Contract`, key ``contract_id``
    FUEL_CARDS = "fuel_cards"  #: :class:`FuelCardRow`, key ``card.card_no``
    CLUB_RULES = "club_rules"  #: :class:`authz.club_model.ClubRules`, one row, key ``"club"``
    CLUB_ACCOUNTS = "club_accounts"  #: :class:`ClubAccountRow`, key ``account.account_id``


# --- replica rows ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StopListEntry:
    """A card number on the stop list (fuel or club): refused everywhere from ``listed_at_utc_s``
    (the host's time, so a site can tell how long the block took to reach it)."""

    card_no: str
    listed_at_utc_s: int


@dataclass(frozen=True, slots=True)
class TariffRow:
    """Every discount row of one tariff; each rule's ``tariff`` is the row's."""

    tariff: Tariff
    discounts: tuple[DiscountRule, ...]


@dataclass(frozen=True, slots=True)
class FuelCardRow:
    """A fuel card and the host's counters of its limits, as (limit_id, counter) pairs in
    limit id order; a limit without a counter has spent nothing yet."""

    card: FuelCard
    counters: tuple[tuple[int, LimitCounter], ...] = ()
    #: how far the host had counted each site's spend in ``counters`` (:mod:`authz.balance`)
    watermarks: tuple[Watermark, ...] = ()


@dataclass(frozen=True, slots=True)
class ClubAccountRow:
    """A club account and the cards that point to it (a replaced plastic adds a card). A card
    belongs to the account row that lists it: moving a card upserts both accounts."""

    account: ClubAccount
    cards: tuple[ClubCard, ...] = ()
    #: how far the host had counted each site's spend in the account's balance, turnover and
    #: lots (:mod:`authz.balance`)
    watermarks: tuple[Watermark, ...] = ()


#: The key of the one row of :attr:`Table.CLUB_RULES`.
CLUB_RULES_KEY = "club"

Row = Union[StopListEntry, Product, Station, TariffRow, Contract, FuelCardRow, ClubRules, ClubAccountRow]
RowKey = Union[str, int]


def row_key(table: Table, row: Any) -> RowKey:
    """The key of ``row`` in ``table``: a card number, product code, or integer id."""
    if table is Table.STOP_LIST:
        return row.card_no
    if table is Table.PRODUCTS:
        return row.code
    if table is Table.STATIONS:
        return row.station_id
    if table is Table.TARIFFS:
        return int(row.tariff)
    if table is Table.CONTRACTS:
        return row.contract_id
    if table is Table.FUEL_CARDS:
        return row.card.card_no
    if table is Table.CLUB_RULES:
        return CLUB_RULES_KEY
    if table is Table.CLUB_ACCOUNTS:
        return row.account.account_id
    raise ValueError(f"unknown table {table!r}")


# --- up: site -> host -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class WireRecord:
    """A journal record as it travels: the fields of :class:`terminal.journal.Record` without
    the site-local ``seq`` and ``acked``. ``record_id`` is ``"{site_id}-{ULID}"``, ``txn_id``
    ``"{site_id}:{lane}-{ULID}"``; ``body`` holds JSON values (ints, strings, bools, None,
    lists, dicts with string keys), never floats.

    A record that :func:`wire.decode` read from a batch frame also carries what the host's
    ingest needs of its body without building it (the body is built from ``body_packed`` on
    its first read, as the dict decode would have built): ``body_json``, the body as the
    ledger stores it (compact JSON, keys in the order received, as ``msgspec.json.encode``
    writes the dict), and ``body_fields``, for the kinds of :data:`wire.bodies.HOT_FIELDS`,
    the values at those paths (an int or a str; None where the body holds something else or
    nothing). None for a record built any other way. They take no part in ``==``."""

    record_id: str
    site_id: str
    lane: str
    txn_id: str
    kind: str
    at_utc_s: int
    body: Mapping[str, Any]
    body_json: str | None = field(default=None, init=False, compare=False, repr=False)
    body_fields: tuple[Any, ...] | None = field(default=None, init=False, compare=False, repr=False)
    body_packed: bytes | None = field(default=None, init=False, compare=False, repr=False)

    @classmethod
    def from_record(cls, record: Any) -> "WireRecord":
        """The wire form of a journal record (any object with the journal ``Record``'s fields)."""
        return cls(record.record_id, record.site_id, record.lane, record.txn_id, record.kind,
                   record.at_utc_s, record.body)


# the body built on its first read when decode kept it as bytes (the slot keeps it after)
WireRecord.body = LazyBody(WireRecord.__dict__["body"], WireRecord.__dict__["body_packed"])  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class Batch:
    """Journal records of one site, numbered per site: ``batch_seq`` starts at 1 and has no
    gaps; a resend of batch n carries the same records as the first send."""

    site_id: str
    batch_seq: int
    records: tuple[WireRecord, ...]
    created_utc_s: int


@dataclass(frozen=True, slots=True)
class Presence:
    """A site is online (published retained at connect) or offline (its last will, or a clean
    shutdown). ``at_utc_s`` of a last will is when the session began: the broker publishes it
    later. ``replica_versions`` is the version of each table the site holds (0: none)."""

    site_id: str
    online: bool
    at_utc_s: int
    software_version: str
    replica_versions: Mapping[Table, int]


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """A site saw a gap in ``table``'s deltas (or holds nothing): it asks for a snapshot.
    ``have_version`` is what it holds (0: nothing)."""

    site_id: str
    table: Table
    have_version: int


# --- down: host -> sites --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Rejection:
    """A batch the host refuses for good, and why (the edge keeps its records and alerts)."""

    batch_seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class Ack:
    """The host to one site: every batch 1..``up_to_seq`` is settled, that is durably applied
    or refused for good; the refused ones are in ``rejected`` (batch_seq order, each
    <= ``up_to_seq``). ``up_to_seq`` 0 means nothing yet."""

    site_id: str
    up_to_seq: int
    rejected: tuple[Rejection, ...] = ()


@dataclass(frozen=True, slots=True)
class ReplicaSnapshot:
    """Part ``part`` (0-based) of ``parts`` of the whole of ``table`` at ``version``. The rows
    of all parts of one version, together, are the table; no key is in two parts. ``rows``
    is a tuple of row objects, or, decoded with ``raw_rows=True``, a
    :class:`wire.rows_bulk.PackedRows` (the same rows as the bytes received)."""

    table: Table
    version: int
    part: int
    parts: int
    rows: Sequence[Any]


@dataclass(frozen=True, slots=True)
class ReplicaDelta:
    """What changed in ``table`` from ``from_version`` to ``to_version``: rows to insert or
    replace (whole rows), keys to delete. Applies only to a replica at ``from_version``."""

    table: Table
    from_version: int
    to_version: int
    upserts: tuple[Any, ...] = ()
    deletes: tuple[RowKey, ...] = ()


SiteMessage = Union[Batch, Presence, SnapshotRequest]
HostMessage = Union[Ack, ReplicaSnapshot, ReplicaDelta]
Message = Union[Batch, Presence, SnapshotRequest, Ack, ReplicaSnapshot, ReplicaDelta]
