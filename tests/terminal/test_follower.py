"""The replica follower without I/O (terminal/follower.py): unit cases, and a hypothesis
model of the host, the broker and a site under any interleaving, duplication, loss,
disconnection, restart and refused update, which must converge to the host's state."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from terminal.follower import (
    Apply,
    ReplicaFollower,
    RequestSnapshot,
    StagedSnapshot,
    StagePart,
    WatchSnapshots,
    commands_text,
)
from wire import ReplicaDelta, ReplicaSnapshot, StopListEntry, Table

T = Table.STOP_LIST


def entry(n: int, at: int = 1) -> StopListEntry:
    return StopListEntry(f"70058300000{n:05d}", at)


def delta(a: int, b: int, *ups: int, gone: tuple[int, ...] = ()) -> ReplicaDelta:
    return ReplicaDelta(T, a, b, tuple(entry(n, b) for n in ups), tuple(entry(n).card_no for n in gone))


def snap(version: int, *rows: int, parts: int = 1) -> list[ReplicaSnapshot]:
    es = [entry(n, version) for n in rows]
    return [ReplicaSnapshot(T, version, i, parts, tuple(es[i::parts])) for i in range(parts)]


# -- unit cases --

def test_a_delta_that_follows_is_applied_and_a_duplicate_dropped():
    f = ReplicaFollower({T: 3})
    f.connected(0.0)
    (cmd,) = f.delta(delta(3, 4, 1), 0.0)
    assert isinstance(cmd, Apply) and cmd.update.to_version == 4
    assert f.delta(delta(4, 5, 2), 0.0) == []  # one update in flight at a time: kept
    nxt = f.applied(True, 0.0)
    assert [type(c) for c in nxt] == [Apply] and nxt[0].update.from_version == 4
    assert f.applied(True, 0.0) == [] and f.version(T) == 5
    assert f.delta(delta(4, 5, 2), 0.0) == [] and f.delta(delta(2, 3), 0.0) == []


def test_a_gap_asks_for_a_snapshot_and_the_missing_delta_closes_it():
    f = ReplicaFollower({T: 3})
    f.connected(0.0)
    cmds = f.delta(delta(4, 5, 2), 1.0)
    assert cmds == [WatchSnapshots(T, True), RequestSnapshot(T, 3)], commands_text(cmds)
    assert f.delta(delta(3, 4, 1), 1.0) == [Apply(delta(3, 4, 1))]
    assert f.applied(True, 1.0) == [Apply(delta(4, 5, 2))]
    assert f.applied(True, 1.0) == [WatchSnapshots(T, False)] and not f.wanting(T) and f.version(T) == 5


def test_a_snapshot_never_takes_the_table_back_and_parts_are_collected():
    f = ReplicaFollower({T: 0}, retry_s=10)
    assert f.connected(0.0) == []  # nothing held: the retained snapshot comes on subscribing
    assert f.watched() == [T]
    assert f.tick(5.0) == [] and f.tick(10.0) == [RequestSnapshot(T, 0)]
    p0, p1 = snap(7, 1, 2, 3, parts=2)
    assert f.part(p1, 11.0) == [StagePart(p1, True)]  # written aside as it comes, no row kept
    assert f.collecting(T) == (7, 1, 2)
    assert f.part(p1, 11.0) == []  # a duplicate
    stage, a = f.part(p0, 11.0)
    assert stage == StagePart(p0, False) and a == Apply(StagedSnapshot(T, 7, 2))
    assert f.applied(True, 11.0) == [WatchSnapshots(T, False)]
    assert f.part(snap(6, 1)[0], 12.0) == [] and f.part(snap(7, 1)[0], 12.0) == []
    assert f.version(T) == 7


def test_a_refused_update_keeps_the_version_and_waits_for_a_snapshot():
    f = ReplicaFollower({T: 3})
    f.connected(0.0)
    f.delta(delta(3, 4, 1), 0.0)
    assert f.applied(False, 0.0) == [WatchSnapshots(T, True), RequestSnapshot(T, 3)]
    assert f.version(T) == 3 and f.wanting(T)
    assert f.delta(delta(4, 5), 0.0) == []  # not applied over a refused one
    assert [type(c) for c in f.part(snap(5, 9)[0], 1.0)] == [StagePart, Apply]
    assert f.applied(True, 1.0) == [WatchSnapshots(T, False)] and f.version(T) == 5


def test_a_newer_snapshot_or_another_cut_starts_the_staging_afresh():
    f = ReplicaFollower({T: 2})
    f.connected(0.0)
    a0, _, _ = snap(5, 1, 2, 3, parts=3)
    assert f.part(a0, 0.0) == [StagePart(a0, True)]
    b0, b1 = snap(5, 1, 2, 3, parts=2)  # the same version cut otherwise: what was staged is dropped
    assert f.part(b0, 0.0) == [StagePart(b0, True)] and f.collecting(T) == (5, 1, 2)
    c1 = snap(6, 4, 5, parts=2)[1]
    assert f.part(c1, 0.0) == [StagePart(c1, True)] and f.collecting(T) == (6, 1, 2)
    assert f.part(b1, 0.0) == []  # older than the one staged
    assert f.part(snap(2, 1)[0], 0.0) == []  # not newer than the version held


def test_applied_without_an_update_is_a_bug_of_the_driver():
    import pytest
    with pytest.raises(RuntimeError):
        ReplicaFollower({T: 1}).applied(True, 0.0)


# -- the model --

@dataclass
class Host:
    """The host's table, its deltas, and the broker's retained messages for it."""

    version: int = 0
    rows: dict[str, StopListEntry] = field(default_factory=dict)
    retained_delta: ReplicaDelta | None = None
    retained_snapshot: list[ReplicaSnapshot] = field(default_factory=list)

    def change(self, ups: list[int], gone: list[int]) -> ReplicaDelta:
        v = self.version + 1
        up = {e.card_no: e for e in (entry(n, v) for n in ups)}
        dels = tuple(sorted({entry(n).card_no for n in gone} - set(up)))
        for k in dels:
            self.rows.pop(k, None)
        self.rows.update(up)
        d = ReplicaDelta(T, self.version, v, tuple(up.values()), dels)
        self.version = v
        self.retained_delta = d
        return d

    def snapshot(self, parts: int) -> list[ReplicaSnapshot]:
        rows = sorted(self.rows.values(), key=lambda e: e.card_no)
        parts = max(1, min(parts, len(rows) or 1))
        self.retained_snapshot = [ReplicaSnapshot(T, self.version, i, parts, tuple(rows[i::parts]))
                                  for i in range(parts)]
        return self.retained_snapshot


@dataclass
class Site:
    """A daemon: the replica it applied (persisted), its follower, and its link."""

    host: Host
    version: int = 0
    rows: dict[str, StopListEntry] = field(default_factory=dict)
    online: bool = False
    watching: bool = False
    refuse_next: int = 0
    now: float = 0.0
    requests: list[int] = field(default_factory=list)
    #: the replica store's staged snapshot: (version, parts) -> {part: rows}; lost on restart
    staged: dict[int, tuple] = field(default_factory=dict)
    staged_as: tuple[int, int] | None = None
    lose_next_part: int = 0  # the driver fails to stage that many parts
    pool: list = field(default_factory=list)  # delivered by the broker, not yet read by the site
    follower: ReplicaFollower = field(init=False)

    def __post_init__(self) -> None:
        self.follower = ReplicaFollower({T: self.version}, retry_s=5.0)

    def perform(self, cmds: list) -> None:
        queue = deque(cmds)
        while queue:
            c = queue.popleft()
            if isinstance(c, StagePart):
                p = c.part
                if c.fresh or self.staged_as != (p.version, p.parts):
                    self.staged, self.staged_as = {}, (p.version, p.parts)
                if self.lose_next_part:
                    self.lose_next_part -= 1  # a write that failed, and is reported
                    self.follower.stage_failed(p)
                else:
                    self.staged[p.part] = p.rows
            elif isinstance(c, Apply):
                u = c.update
                ok = self.refuse_next == 0
                if not ok:
                    self.refuse_next -= 1
                elif isinstance(u, StagedSnapshot) and (self.staged_as != (u.version, u.parts)
                                                        or len(self.staged) != u.parts):
                    ok = False  # the store refuses a snapshot not wholly staged, as ReplicaStore.stage does
                elif isinstance(u, ReplicaDelta):
                    assert u.from_version == self.version, f"applied {u.from_version}->{u.to_version} at {self.version}"
                    for k in u.deletes:
                        self.rows.pop(k, None)
                    self.rows.update({e.card_no: e for e in u.upserts})
                    self.version = u.to_version
                else:
                    assert isinstance(u, StagedSnapshot), u
                    assert u.version > self.version, f"snapshot {u.version} over {self.version}"
                    self.rows = {e.card_no: e for rows in self.staged.values() for e in rows}
                    self.version = u.version
                    self.staged, self.staged_as = {}, None
                queue.extend(self.follower.applied(ok, self.now))
            elif isinstance(c, RequestSnapshot):
                assert self.online
                self.requests.append(c.have_version)
            else:
                assert isinstance(c, WatchSnapshots) and self.online
                self.watching = c.on
                if c.on:  # the broker sends the retained parts on subscribing
                    self.pool.extend(self.host.retained_snapshot)
        assert self.follower.version(T) == self.version

    def connect(self) -> None:
        self.online = True
        self.watching = T in self.follower.watched()
        if self.host.retained_delta is not None:
            self.pool.append(self.host.retained_delta)
        if self.watching:
            self.pool.extend(self.host.retained_snapshot)
        self.perform(self.follower.connected(self.now))

    def disconnect(self) -> None:
        self.online = False
        self.watching = False
        self.pool.clear()  # what was on its way is lost with the session
        self.follower.disconnected()

    def restart(self) -> None:
        self.disconnect()
        self.follower = ReplicaFollower({T: self.version}, retry_s=5.0)
        self.requests.clear()
        self.staged, self.staged_as = {}, None  # ReplicaStore.open drops what was staged
        self.connect()

    def deliver(self, msg) -> None:
        if isinstance(msg, ReplicaDelta):
            self.perform(self.follower.delta(msg, self.now))
        else:
            self.perform(self.follower.part(msg, self.now))

    def answer(self, parts: int) -> None:
        """The host answers the requests (host.publisher.Publisher.on_request's rule)."""
        while self.requests:
            have = self.requests.pop(0)
            retained = self.host.retained_snapshot[0].version if self.host.retained_snapshot else 0
            if retained > have:
                continue
            new = self.host.snapshot(parts)
            if self.watching:
                self.pool.extend(new)


OPS = st.one_of(
    st.tuples(st.just("change"), st.lists(st.integers(0, 12), max_size=4), st.lists(st.integers(0, 12), max_size=3)),
    st.tuples(st.just("deliver"), st.integers(0, 50)),
    st.tuples(st.just("duplicate"), st.integers(0, 50)),
    st.tuples(st.just("drop"), st.integers(0, 50)),
    st.tuples(st.just("answer"), st.integers(1, 3)),
    st.tuples(st.just("tick"), st.floats(0.5, 8.0)),
    st.just(("disconnect",)),
    st.just(("connect",)),
    st.just(("restart",)),
    st.just(("refuse",)),
    st.just(("lose_part",)),
)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 3), st.lists(OPS, max_size=60))
def test_any_interleaving_duplication_loss_and_restart_converges(start_changes, ops):
    host = Host()
    for i in range(start_changes + 1):  # a table's first version at the host is 1
        host.change([i], [])
    host.snapshot(2)
    site = Site(host)
    site.connect()
    for op in ops:
        kind = op[0]
        if kind == "change":
            d = host.change(op[1], op[2])
            if site.online:
                site.pool.append(d)
        elif kind in ("deliver", "duplicate", "drop") and site.pool:
            i = op[1] % len(site.pool)
            msg = site.pool[i] if kind == "duplicate" else site.pool.pop(i)
            if kind != "drop":
                site.deliver(msg)
        elif kind == "answer" and site.online:
            site.answer(op[1])
        elif kind == "tick":
            site.now += op[1]
            site.perform(site.follower.tick(site.now))
        elif kind == "disconnect" and site.online:
            site.disconnect()
        elif kind == "connect" and not site.online:
            site.connect()
        elif kind == "restart":
            site.restart()
        elif kind == "refuse":
            site.refuse_next = min(site.refuse_next + 1, 2)
        elif kind == "lose_part":
            site.lose_next_part = min(site.lose_next_part + 1, 2)
    # then the link behaves: the site reconnects (the retained delta says how far the host is),
    # everything on its way arrives in order, the host answers, time passes
    site.refuse_next = site.lose_next_part = 0
    if site.online:
        site.disconnect()
    site.connect()
    for _ in range(50):
        while site.pool:
            site.deliver(site.pool.pop(0))
        site.answer(2)
        if not site.pool:
            site.now += 5.0
            site.perform(site.follower.tick(site.now))
            site.answer(2)
            if not site.pool and not site.follower.wanting(T):
                break
    assert site.version == host.version, (site.version, host.version)
    assert site.rows == host.rows
    assert not site.follower.wanting(T) and site.follower.applying is None


def test_an_apply_never_started_before_a_disconnect_is_taken_back():
    f = ReplicaFollower({T: 3})
    f.connected(0.0)
    assert f.delta(delta(3, 4, 1), 0.0) == [Apply(delta(3, 4, 1))]
    f.disconnected()  # the driver stopped before it applied
    assert f.applying is None and f.version(T) == 3
    assert f.connected(1.0) == [Apply(delta(3, 4, 1))]
