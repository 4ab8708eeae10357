"""Following the host's replica tables: the logic, without I/O (the h11 pattern).

The host publishes each table as versioned deltas (``from_version -> to_version``) and, now
and then, a snapshot cut into parts. A site holds one version of each table and must apply
exactly the updates that follow it, in order, whatever the broker does: deliver twice, out of
order, lose a message, or reconnect after hours. :class:`ReplicaFollower` takes what arrives
(:meth:`~ReplicaFollower.delta`, :meth:`~ReplicaFollower.part`), what the driver did
(:meth:`~ReplicaFollower.applied`), the connection's comings (:meth:`~ReplicaFollower.connected`)
and the clock (:meth:`~ReplicaFollower.tick`), and answers with commands for the driver to
perform in order: :class:`StagePart` (write a snapshot part aside, as it arrives),
:class:`Apply` an update, :class:`RequestSnapshot`, :class:`WatchSnapshots` (subscribe to a
table's retained snapshot parts, or stop).

Snapshots stream: the follower keeps no row of a snapshot, only which parts of which version
it had the driver stage. A big table (a million fuel cards) is written to the replica store
part by part as it arrives, and applied, once every part is staged, as a
:class:`StagedSnapshot` that names the staged version and the number of parts.

Rules, per table:

- a delta from the version held is applied; one behind it is a duplicate and dropped; one
  ahead of it (a gap) is kept (at most ``max_pending``) and a snapshot is asked for;
- each snapshot part newer than the version held is staged (:class:`StagePart`; ``fresh``
  when it starts another version, or another cut of one, and what was staged is dropped);
  once every part of a version is staged, that snapshot replaces the table
  (``Apply(StagedSnapshot)``); never an older one;
- at most one :class:`Apply` is outstanding: the next command waits for :meth:`applied`, so
  the driver may apply asynchronously and the follower's version is always what was applied;
- an update the driver could not apply (its consistency checks refused it) leaves the version
  as it was and asks for a snapshot;
- after a snapshot or a delta, the kept deltas that now follow are applied, the stale dropped;
- a snapshot asked for and not received within ``retry_s`` is asked for again.

The driver (:class:`terminal.sync.SyncClient`) owns the MQTT client and the daemon's
callback; ``tests/terminal/test_follower.py`` checks with hypothesis that any interleaving,
duplication, loss and restart converges to the host's state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from wire import ReplicaDelta, ReplicaSnapshot, Table

__all__ = [
    "MAX_PENDING_DELTAS",
    "Apply",
    "Command",
    "FollowerUpdate",
    "FullSnapshot",
    "ReplicaFollower",
    "ReplicaUpdate",
    "RequestSnapshot",
    "StagePart",
    "StagedSnapshot",
    "WatchSnapshots",
]

#: Deltas kept per table past a gap, while a snapshot is awaited.
MAX_PENDING_DELTAS = 1_000


@dataclass(frozen=True, slots=True)
class FullSnapshot:
    """Every row of ``table`` at ``version``, given at once (tests, small tables, and what
    :meth:`terminal.replica.Replica.apply_update` takes). The daemon replaces the table with
    ``rows`` atomically. The follower itself streams: it hands out :class:`StagedSnapshot`."""

    table: Table
    version: int
    rows: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class StagedSnapshot:
    """Every part of ``table``'s snapshot ``version`` (``parts`` of them) was staged by
    :class:`StagePart` commands: the daemon replaces the table with what was staged."""

    table: Table
    version: int
    parts: int


#: What the evaluators apply (:meth:`terminal.replica.Replica.apply_update`): a delta that
#: follows the version held, or a whole table.
ReplicaUpdate = ReplicaDelta | FullSnapshot
#: What the follower hands out and the replica store applies: those, or a whole table staged
#: part by part.
FollowerUpdate = ReplicaDelta | FullSnapshot | StagedSnapshot


@dataclass(frozen=True, slots=True)
class StagePart:
    """Write snapshot part ``part`` aside (``fresh``: drop what is staged of its table first).
    A part the driver could not write is reported with :meth:`ReplicaFollower.stage_failed`
    (it is taken again when it comes again); one lost unreported makes the snapshot's
    :class:`Apply` fail, and the follower then asks for a snapshot again. The part is handed
    through as decoded (its rows may be :class:`wire.rows_bulk.PackedRows`, the bytes received:
    the follower never reads them)."""

    part: ReplicaSnapshot
    fresh: bool


@dataclass(frozen=True, slots=True)
class Apply:
    """Apply ``update`` to the replica, then tell :meth:`ReplicaFollower.applied` how it went."""

    update: FollowerUpdate


@dataclass(frozen=True, slots=True)
class RequestSnapshot:
    """Publish a :class:`wire.SnapshotRequest` for ``table``, saying the site holds ``have_version``."""

    table: Table
    have_version: int


@dataclass(frozen=True, slots=True)
class WatchSnapshots:
    """Subscribe to (``on``) or unsubscribe from ``table``'s snapshot part topics."""

    table: Table
    on: bool


Command = StagePart | Apply | RequestSnapshot | WatchSnapshots


class _Table:
    """What the follower knows of one table."""

    __slots__ = (
        "parts",
        "parts_total",
        "parts_version",
        "pending",
        "refused",
        "requested_at",
        "version",
        "wanting",
        "watching",
    )

    def __init__(self, version: int) -> None:
        self.version = version
        self.wanting = version == 0  # a snapshot is needed: nothing held, a gap, or a refused update
        self.refused = False  # an update was refused: only a snapshot ends the wait
        self.watching = False
        self.pending: dict[int, ReplicaDelta] = {}  # deltas past a gap, by from_version
        self.parts: set[int] = set()  # the parts of parts_version staged
        self.parts_total = 0  # how many parts that snapshot has
        self.parts_version = 0
        self.requested_at: float | None = None


class ReplicaFollower:
    """The versions a site holds and what to do with what arrives (module docstring)."""

    def __init__(self, versions: Mapping[Table, int], *, retry_s: float = 30.0,
                 max_pending: int = MAX_PENDING_DELTAS) -> None:
        self._tables = {Table(t): _Table(int(v)) for t, v in versions.items()}
        self.retry_s = retry_s
        self.max_pending = max_pending
        self._applying: FollowerUpdate | None = None
        self._online = False

    # -- what the driver reads --

    @property
    def tables(self) -> tuple[Table, ...]:
        """The tables followed."""
        return tuple(self._tables)

    def version(self, table: Table) -> int:
        """The version of ``table`` applied (0: nothing yet)."""
        return self._tables[table].version

    def versions(self) -> dict[Table, int]:
        """Every followed table's version applied."""
        return {t: s.version for t, s in self._tables.items()}

    def wanting(self, table: Table) -> bool:
        """True while ``table`` waits for a snapshot."""
        return self._tables[table].wanting

    def watched(self) -> list[Table]:
        """The tables whose snapshot topics the driver should subscribe to on a new session."""
        return [t for t, s in self._tables.items() if s.wanting]

    def collecting(self, table: Table) -> tuple[int, int, int] | None:
        """The snapshot of ``table`` being collected: (its version, parts staged, parts in all);
        None when no part is staged."""
        st = self._tables[table]
        if not st.parts:
            return None
        return st.parts_version, len(st.parts), st.parts_total

    @property
    def applying(self) -> FollowerUpdate | None:
        """The update handed out and not yet reported back."""
        return self._applying

    # -- events --

    def connected(self, now: float) -> list[Command]:
        """A session began (its subscriptions include :meth:`watched`): ask for what is wanted.
        A table that holds nothing waits ``retry_s`` for the retained snapshot first."""
        self._online = True
        out: list[Command] = []
        for table, st in self._tables.items():
            st.watching = st.wanting
            if st.wanting:
                if st.version > 0 or st.pending:
                    out += self._request(table, st, now)
                else:
                    st.requested_at = now
        return out + (self._next(now) if self._applying is None else [])

    def disconnected(self) -> None:
        """The session ended, and with it the driver's work: subscriptions are gone (the next
        :meth:`connected` redoes them), and an :class:`Apply` handed out and never started is
        taken back (a delta is kept for later; a snapshot is asked for again if still wanted)."""
        self._online = False
        for st in self._tables.values():
            st.watching = False
        update, self._applying = self._applying, None
        if isinstance(update, ReplicaDelta):
            self._tables[update.table].pending.setdefault(update.from_version, update)

    def delta(self, d: ReplicaDelta, now: float) -> list[Command]:
        """A delta arrived (verified by wire.decode)."""
        st = self._tables.get(d.table)
        if st is None or d.to_version <= st.version:
            return []  # not followed, or a duplicate
        if d.from_version != st.version or self._applying is not None or st.refused:
            if d.from_version >= st.version and len(st.pending) < self.max_pending:
                st.pending.setdefault(d.from_version, d)
            if self._applying is not None:
                return []  # taken up when the update in flight is reported back
            return self._want(d.table, st, now)
        return self._apply(d)

    def part(self, p: ReplicaSnapshot, now: float) -> list[Command]:
        """A snapshot part arrived (verified by wire.decode): staged, and the snapshot applied
        once every part of it is."""
        st = self._tables.get(p.table)
        if st is None or p.version <= st.version or p.version < st.parts_version:
            return []
        a = self._applying
        if isinstance(a, StagedSnapshot) and a.table == p.table and p.version <= a.version:
            return []  # the snapshot being applied, or an older one
        out: list[Command] = []
        if p.version > st.parts_version or p.parts != st.parts_total:
            st.parts, st.parts_total, st.parts_version = set(), p.parts, p.version
            out.append(StagePart(p, True))
        elif p.part in st.parts:
            return []  # a duplicate
        else:
            out.append(StagePart(p, False))
        st.parts.add(p.part)
        if len(st.parts) < p.parts or self._applying is not None:
            return out
        return out + self._whole(p.table, st)

    def stage_failed(self, p: ReplicaSnapshot) -> None:
        """The driver could not write part ``p`` of a :class:`StagePart`: it is not staged."""
        st = self._tables.get(p.table)
        if st is not None and st.parts_version == p.version and st.parts_total == p.parts:
            st.parts.discard(p.part)

    def applied(self, ok: bool, now: float) -> list[Command]:
        """The driver applied (``ok``) or could not apply the update of the last :class:`Apply`."""
        update = self._applying
        if update is None:
            raise RuntimeError("applied() without an update in flight")
        self._applying = None
        st = self._tables[update.table]
        if not ok:
            st.refused = True
            if isinstance(update, ReplicaDelta):
                st.pending.pop(update.from_version, None)
            out = self._watch(update.table, st) + self._request(update.table, st, now)
            st.wanting = True
            return out + self._next(now)
        if isinstance(update, ReplicaDelta):
            st.version = update.to_version
        else:
            st.version = update.version
            st.refused = False
        if st.parts_version and st.parts_version <= st.version:
            st.parts, st.parts_total, st.parts_version = set(), 0, 0
        for k in [k for k in st.pending if k < st.version]:  # behind, or straddling the version held
            del st.pending[k]
        return self._next(now)

    def tick(self, now: float) -> list[Command]:
        """Time passed: ask again for snapshots not received within ``retry_s``."""
        out: list[Command] = []
        if not self._online:
            return out
        for table, st in self._tables.items():
            if st.wanting and st.requested_at is not None and now - st.requested_at >= self.retry_s:
                out += self._request(table, st, now)
        return out

    # -- inside --

    def _apply(self, update: FollowerUpdate) -> list[Command]:
        self._applying = update
        return [Apply(update)]

    def _whole(self, table: Table, st: _Table) -> list[Command]:
        snap = StagedSnapshot(table, st.parts_version, st.parts_total)
        st.parts, st.parts_total, st.parts_version = set(), 0, 0
        return self._apply(snap)

    def _next(self, now: float) -> list[Command]:
        """After an update settled: the next thing to apply (a kept delta that follows, a
        snapshot whose parts are all in), or end a wait that is over."""
        out: list[Command] = []
        for table, st in self._tables.items():
            if st.version in st.pending and not st.refused:
                return out + self._apply(st.pending.pop(st.version))
            if st.parts and len(st.parts) == st.parts_total and st.parts_version > st.version:
                return out + self._whole(table, st)
            if st.wanting and not st.pending and st.version > 0 and not st.refused:
                out += self._done(table, st)
            elif st.pending and not st.wanting:
                out += self._want(table, st, now)
        return out

    def _want(self, table: Table, st: _Table, now: float) -> list[Command]:
        if st.wanting:
            return []
        st.wanting = True
        return self._watch(table, st) + self._request(table, st, now)

    def _watch(self, table: Table, st: _Table) -> list[Command]:
        if st.watching or not self._online:
            return []
        st.watching = True
        return [WatchSnapshots(table, True)]

    def _request(self, table: Table, st: _Table, now: float) -> list[Command]:
        st.requested_at = now
        return [RequestSnapshot(table, st.version)] if self._online else []

    def _done(self, table: Table, st: _Table) -> list[Command]:
        st.wanting = False
        st.requested_at = None
        st.parts, st.parts_total, st.parts_version = set(), 0, 0
        if not st.watching:
            return []
        st.watching = False
        return [WatchSnapshots(table, False)]


def commands_text(commands: Iterable[Command]) -> str:
    """A short text of ``commands`` for logs and test failures."""
    parts = []
    for c in commands:
        if isinstance(c, StagePart):
            parts.append(f"stage {c.part.table.value} snapshot@{c.part.version} part {c.part.part}/{c.part.parts}"
                         + (" fresh" if c.fresh else ""))
        elif isinstance(c, Apply):
            u = c.update
            parts.append(f"apply {u.table.value} " + (f"{u.from_version}->{u.to_version}" if isinstance(u, ReplicaDelta)
                                                        else f"snapshot@{u.version}"))
        elif isinstance(c, RequestSnapshot):
            parts.append(f"request {c.table.value} have {c.have_version}")
        else:
            parts.append(f"{'watch' if c.on else 'unwatch'} {c.table.value}")
    return ", ".join(parts) or "nothing"
