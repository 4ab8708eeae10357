"""``club_snapshot_stall_ms`` of benchmarks/replica_stall.py: the longest event-loop stall
while a whole club-accounts table is applied to a running site, before (on the loop) and
after (:mod:`terminal.club_swap`: built off the loop, swapped on it)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from native.compact import sample_club_columns
from terminal.club_swap import apply_club_snapshot
from terminal.follower import FullSnapshot
from terminal.replica import Replica
from terminal.replica_store import ReplicaStore
from wire.messages import ClubAccountRow, Table

from .replica_stall import _put, _stage, _stall


def club_figures(n_accounts: int = 100_000) -> dict[str, float]:
    """``club_snapshot_*`` before and after, on a generated replica of ``n_accounts``."""
    replica = Replica(None, sample_club_columns(n_accounts=n_accounts, seed=2))
    replica.table_versions = {t: 1 for t in Table}
    cm = replica.club_model
    assert cm is not None
    cards: dict[int, list] = {}
    for i in range(len(cm.cards)):
        c = cm.cards[i]
        cards.setdefault(c.account_id, []).append(c)
    rows = tuple(ClubAccountRow(cm.accounts[i], tuple(cards.get(cm.accounts[i].account_id, ())))
                 for i in range(len(cm.accounts)))
    del cards, cm
    out: dict[str, float] = {}

    async def before() -> None:
        replica.apply_update(FullSnapshot(Table.CLUB_ACCOUNTS, 2, rows))

    _put(out, "club_snapshot", asyncio.run(_stall(before)), "_before")
    with tempfile.TemporaryDirectory(prefix="edgepos-stall-") as tmp, ReplicaStore.open(Path(tmp) / "r.sqlite") as store:
        staged = _stage(store, Table.CLUB_ACCOUNTS, 3, rows)

        async def after() -> None:
            await apply_club_snapshot(replica, 3, staged.iter_rows)

        _put(out, "club_snapshot", asyncio.run(_stall(after)))
        staged.commit()
    assert replica.club is not None
    assert replica.table_versions[Table.CLUB_ACCOUNTS] == 3 and replica.club.account_count == n_accounts
    out["club_snapshot_stall_ratio"] = round(out["club_snapshot_stall_ms"]
                                             / max(out["club_snapshot_stall_ms_before"], 0.1), 4)
    return out
