"""Crash-test helper: apply replica updates to a store until killed.

    python tests/terminal/replica_store_crash_writer.py STORE_PATH FIRST_VERSION LAST_VERSION

For each version v from FIRST_VERSION to LAST_VERSION it applies to the stop list either a
whole snapshot (:func:`snapshot_rows` of v) or, for odd v, a delta from v - 1 that turns
snapshot v - 1 into snapshot v, and prints ``v`` (flushed) once the apply returned: every
printed line is a promise that version v is on disk. ``test_replica_store`` kills this
process (SIGKILL, or a crash point through ``EDGEPOS_CRASH_AT``) and checks that the store
reopens on one whole version, at least the last one promised.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from terminal.follower import FullSnapshot
from terminal.replica_store import ReplicaStore
from wire import ReplicaDelta, StopListEntry, Table

ROWS = 20_000


def snapshot_rows(v: int) -> tuple[StopListEntry, ...]:
    """The stop list at version ``v``: a window of card numbers that slides with v, each
    stamped with v (so a row of another version shows)."""
    return tuple(StopListEntry(f"7005{i:012d}", v) for i in range(v * 1000, v * 1000 + ROWS))


def update_for(v: int) -> FullSnapshot | ReplicaDelta:
    """Version ``v`` as a snapshot (even v, or v == 1) or as a delta from v - 1 (odd v)."""
    if v % 2 == 0 or v == 1:
        return FullSnapshot(Table.STOP_LIST, v, snapshot_rows(v))
    old = {r.card_no for r in snapshot_rows(v - 1)}
    new = snapshot_rows(v)
    return ReplicaDelta(Table.STOP_LIST, v - 1, v, new, tuple(sorted(old - {r.card_no for r in new})))


def main(path: str, first: int, last: int) -> None:
    store = ReplicaStore.open(path)
    for v in range(first, last + 1):
        store.apply(update_for(v))
        print(v, flush=True)
    store.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
