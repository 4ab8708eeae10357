"""``wire.encode(..., rows_checked=True)``: the host's publisher encodes rows it built from its
ledger without running decode's row checks on them again, and nothing else changes.

For every valid snapshot and delta it makes the very frame the fully checked encode makes;
it still refuses what is wrong outside the rows' contents (versions, parts, deletes, too many
rows, a row of the wrong type, a frame over the size limit); and the rows' contents are still
checked where they arrive: a row a site would refuse goes out, and the site's decode refuses it.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given

from wire import (Limits, ReplicaDelta, ReplicaSnapshot, StopListEntry, Table, WireFormatError, WireTooLarge,
                  decode, encode)

from .test_properties import FAST, KEYS, deltas, snapshots


@FAST
@given(snapshots())
def test_a_valid_snapshot_encodes_to_the_same_frame(msg: ReplicaSnapshot) -> None:
    assert encode(msg, KEYS, rows_checked=True) == encode(msg, KEYS)


@FAST
@given(deltas())
def test_a_valid_delta_encodes_to_the_same_frame(msg: ReplicaDelta) -> None:
    frame = encode(msg, KEYS, rows_checked=True)
    assert frame == encode(msg, KEYS)
    assert decode(frame, KEYS, topic=None) == msg


STOP = (StopListEntry("7005001", 1_790_000_000), StopListEntry("7005002", 1_790_000_001))


@pytest.mark.parametrize(("msg", "words"), [
    (ReplicaDelta(Table.STOP_LIST, 3, 3, STOP, ()), "to_version"),
    (ReplicaDelta(Table.STOP_LIST, -1, 3, STOP, ()), "from_version"),
    (ReplicaDelta(Table.STOP_LIST, 1, 2, STOP, ("bad card!",)), "deletes"),
    (ReplicaDelta(Table.STOP_LIST, 1, 2, STOP, ("7005009", "7005009")), "deletes"),
    (ReplicaSnapshot(Table.STOP_LIST, 0, 0, 1, STOP), "version"),
    (ReplicaSnapshot(Table.STOP_LIST, 1, 2, 2, STOP), "part"),
    (ReplicaDelta(Table.FUEL_CARDS, 1, 2, STOP, ()), "row 0"),  # stop-list rows in a fuel-card delta
])
def test_what_is_wrong_outside_the_rows_contents_is_still_refused(msg, words: str) -> None:
    with pytest.raises(WireFormatError, match=words):
        encode(msg, KEYS)
    with pytest.raises(WireFormatError, match=words):
        encode(msg, KEYS, rows_checked=True)


def test_too_many_rows_and_too_many_bytes_are_still_refused() -> None:
    delta = ReplicaDelta(Table.STOP_LIST, 1, 2, STOP, ("7005009",))
    with pytest.raises(WireTooLarge, match="upserts: 2 items, more than the limit of 1"):
        encode(delta, KEYS, rows_checked=True, limits=Limits(max_rows=2))
    with pytest.raises(WireTooLarge, match="rows: 2 items, more than the limit of 1"):
        encode(ReplicaSnapshot(Table.STOP_LIST, 1, 0, 1, STOP), KEYS, rows_checked=True, limits=Limits(max_rows=1))
    with pytest.raises(WireTooLarge, match="over the limit"):
        encode(delta, KEYS, rows_checked=True, limits=Limits(max_message_bytes=100))


def test_a_row_a_site_would_refuse_is_refused_by_the_sites_decode() -> None:
    bad = ReplicaDelta(Table.STOP_LIST, 1, 2, (dataclasses.replace(STOP[0], card_no="not a card"),), ())
    with pytest.raises(WireFormatError, match="card_no"):
        encode(bad, KEYS)  # the fully checked encode refuses it at the host
    frame = encode(bad, KEYS, rows_checked=True)  # the host vouches for its rows ...
    with pytest.raises(WireFormatError, match="card_no"):
        decode(frame, KEYS, topic=None)  # ... and the site checks them all the same


def test_rows_checked_changes_nothing_for_site_messages() -> None:
    from wire import Ack
    ack = Ack("SIM-077-001", 5, ())
    assert encode(ack, KEYS, rows_checked=True) == encode(ack, KEYS)
