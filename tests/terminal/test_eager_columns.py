"""The fuel columns a new site fills while its snapshots' parts are staged
(terminal.provision.EagerColumns) against the columns built from the replica store once
every table is stored (what a restart builds): with hypothesis over the order parts come
in, parts twice, snapshots abandoned half way and replaced by a newer version, tables in
any order and a delta after a snapshot, the columns the build gets are the store's, to the
last field, and so are the balance rule's marks; and when the parts came plainly (in order,
kept as received) the build really takes the filled columns, not the store's rows."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from authz import sample
from authz.balance import Watermark
from native.compact import ContractColumns, FilledCards, FilledStopList
from terminal.follower import StagedSnapshot
from terminal.provision import EagerColumns
from terminal.replica import _fuel_source, _noting_balance_fields
from terminal.replica_store import ReplicaStore
from wire import ReplicaDelta, ReplicaSnapshot, SiteKeys, StopListEntry, Table, decode, encode, snapshot_topic
from wire.messages import FuelCardRow

_FUEL = sample.fuel_model(n_cards=80, seed=5)
_COUNTERS: dict[str, list] = {}
for (_no, _lid), _ctr in sorted(_FUEL.counters.items()):
    _COUNTERS.setdefault(_no, []).append((_lid, _ctr))
_CARDS = sorted((FuelCardRow(c, tuple(_COUNTERS.get(c.card_no, ()))) for c in _FUEL.cards), key=lambda r: r.card.card_no)
_CONTRACTS = sorted(_FUEL.contracts, key=lambda c: c.contract_id)
_STOPS = [StopListEntry(r.card.card_no, 1_700_000_000 + i) for i, r in enumerate(_CARDS[::3])] + \
    [StopListEntry("A7B", 5), StopListEntry("1" * 20, 6)]
_STOPS.sort(key=lambda e: e.card_no)

#: version 2 (the one that ends up stored) and version 1 (abandoned half way, or replaced);
#: MARKED: version 2 with the balance rule's watermark on a contract (its part is decoded
#: into objects: the contracts, and so the cards, are built from the store)
V2 = {
    Table.CONTRACTS: _CONTRACTS,
    Table.FUEL_CARDS: _CARDS,
    Table.STOP_LIST: _STOPS,
}
V1 = {
    Table.CONTRACTS: [replace(c, balance_kop=c.balance_kop + 100) for c in _CONTRACTS],
    Table.FUEL_CARDS: [replace(r, card=replace(r.card, contract_id=_CONTRACTS[0].contract_id)) for r in _CARDS[5:]],
    Table.STOP_LIST: _STOPS[2:],
}
MARKED = {**V2, Table.CONTRACTS: [replace(_CONTRACTS[0], watermarks=(Watermark("S1", 9),))] + _CONTRACTS[1:]}
SMALL = {Table.PRODUCTS: tuple(_FUEL.products), Table.STATIONS: tuple(_FUEL.stations), Table.TARIFFS: ()}
BIG = (Table.CONTRACTS, Table.FUEL_CARDS, Table.STOP_LIST)
NEEDED = (*SMALL, *BIG)


def _keys(tmp: Path) -> tuple[SiteKeys, SiteKeys]:
    from host.keys import ensure_replica_keys
    from wire import load_replica_signing_key, load_replica_verify_key
    k = ensure_replica_keys(tmp / "host-keys")
    return (SiteKeys(replica_signing=load_replica_signing_key(k.signing_key_file)),
            SiteKeys({}, replica_verify=load_replica_verify_key(k.verify_key_file)))


def _parts(table: Table, rows: list, version: int, n: int, sign: SiteKeys, verify: SiteKeys) -> list[Any]:
    """``rows`` cut into ``n`` signed parts, each decoded as the site decodes it."""
    size = -(-len(rows) // n)
    chunks = [tuple(rows[i * size:(i + 1) * size]) for i in range(n)]
    return [decode(encode(ReplicaSnapshot(table, version, k, n, c), sign), verify, topic=snapshot_topic(table, k),
                   raw_rows=True) for k, c in enumerate(chunks)]


class Site:
    """A site's staging as the daemon does it: plan, the store's write, fill, written; a
    snapshot applied once the store has all its parts (as the follower says)."""

    def __init__(self, store: ReplicaStore) -> None:
        self.store, self.eager = store, EagerColumns()
        self.last: dict[Table, int] = {}

    def part(self, p: Any) -> None:
        fresh = self.last.get(p.table) != p.version
        self.last[p.table] = p.version
        f = self.eager.plan(p, fresh, self.store)
        ok = self.store.stage_part(p, fresh=fresh)
        if f is not None:
            self.eager.fill(f, p)
            self.eager.written(f, ok, self.store.staging_generation(p.table))
        staged = self.store.staged(p.table)
        if staged is not None and staged[1] == staged[2]:
            self.store.apply(StagedSnapshot(p.table, staged[0], staged[2]))


def _firsts(seq: list[int]) -> list[int]:
    """The parts in the order they first came (a part twice is ignored, by the store too)."""
    return list(dict.fromkeys(seq))


def _columns(rows: dict[Table, Any]) -> tuple[Any, dict, dict]:
    marks: dict = {}
    allowances: dict = {}
    return _fuel_source(_noting_balance_fields(rows, "S1", marks, allowances)), marks, allowances


def _fed(store: ReplicaStore, cards: list, n: int, sign: Any, verify: Any) -> Site:
    """A site on ``store`` given every table's version 2 in order: the small tables in one
    part, the big ones (the fuel cards ``cards``) in ``n`` parts each."""
    site = Site(store)
    for table, rows in SMALL.items():
        site.part(_parts(table, list(rows), 2, 1, sign, verify)[0])
    for table in BIG:
        for p in _parts(table, cards if table is Table.FUEL_CARDS else V2[table], 2, n, sign, verify):
            site.part(p)
    return site


@st.composite
def deliveries(draw: Any) -> tuple[list[tuple[Table, int, int, int]], bool, bool]:
    """Events (table, version, parts, part) in the order they come, whether a stop-list
    delta follows and whether version 2 is MARKED. Every table ends with version 2 whole;
    some see version 1 first."""
    order = draw(st.permutations(BIG))
    events: list[tuple[Table, int, int, int]] = []
    for table in order:
        if draw(st.booleans()):  # version 1 first: abandoned half way, or whole and then replaced
            n1 = draw(st.integers(1, 3))
            got = draw(st.lists(st.integers(0, n1 - 1), max_size=n1 + 1))
            events += [(table, 1, n1, k) for k in got]
        n = draw(st.integers(1, 4))
        seq = draw(st.permutations(range(n))) if draw(st.booleans()) else list(range(n))
        extra = draw(st.lists(st.integers(0, n - 1), max_size=2))  # parts twice
        seq = list(seq)
        for k in extra:
            seq.insert(draw(st.integers(0, len(seq))), k)
        events += [(table, 2, n, k) for k in seq]
    return events, draw(st.booleans()), draw(st.booleans())


@settings(max_examples=60, deadline=None)
@given(deliveries())
def test_the_columns_filled_while_staging_are_the_columns_built_from_the_store(plan):
    events, delta, marked = plan
    v2 = MARKED if marked else V2
    with tempfile.TemporaryDirectory(prefix="eager-") as d:
        tmp = Path(d)
        sign, verify = _keys(tmp)
        parts = {(t, v, n): _parts(t, (v2 if v == 2 else V1)[t], v, n, sign, verify)
                 for t, v, n, _ in events}
        with ReplicaStore.open(tmp / "replica.sqlite") as store:
            site = Site(store)
            for table, rows in SMALL.items():
                site.part(_parts(table, list(rows), 2, 1, sign, verify)[0])
            for t, v, n, k in events:
                site.part(parts[(t, v, n)][k])
            if delta:  # the stop list moves on after its snapshot: what was filled is not it any more
                store.apply(ReplicaDelta(Table.STOP_LIST, 2, 3, (StopListEntry("A9", 1),), (_STOPS[0].card_no,)))
            assert store.versions()[Table.FUEL_CARDS] == 2
            eager_rows = site.eager.rows(store, NEEDED)
            got = _columns(eager_rows)
            want = _columns({t: store.iter_rows(t) for t in NEEDED})
    assert got == want
    assert got[1] == ({(Table.CONTRACTS, _CONTRACTS[0].contract_id): 9} if marked else {})
    assert got[0].n_cards == len(_CARDS) and got[0].stop_list_size == len(_STOPS)
    # the filled columns were taken whenever the version-2 parts came plainly
    for table, cls in ((Table.CONTRACTS, ContractColumns), (Table.STOP_LIST, FilledStopList)):
        seq = [k for t, v, _, k in events if t is table and v == 2]
        plain = _firsts(seq) == sorted(set(seq)) and not (table is Table.STOP_LIST and delta) and not (
            table is Table.CONTRACTS and marked)
        assert isinstance(eager_rows[table], cls) == plain, (table, seq)
    t_order = [t for t, _, _, _ in events]
    cards = [k for t, v, _, k in events if t is Table.FUEL_CARDS and v == 2]
    cards_plain = (_firsts(cards) == sorted(set(cards))
                   and isinstance(eager_rows[Table.CONTRACTS], ContractColumns)
                   and max(i for i, t in enumerate(t_order) if t is Table.CONTRACTS)
                   < min(i for i, t in enumerate(t_order) if t is Table.FUEL_CARDS))
    assert isinstance(eager_rows[Table.FUEL_CARDS], FilledCards) == cards_plain


def test_a_part_the_scanner_does_not_take_leaves_the_table_to_the_store(tmp_path):
    """Cards with the fleet controls come decoded into objects: those columns are built from
    the store, and equal what the store gives."""
    from authz.fuel_model import OnBreach
    sign, verify = _keys(tmp_path)
    cards = list(_CARDS)
    cards[3] = replace(cards[3], card=replace(cards[3].card, on_breach=OnBreach.ALERT))
    with ReplicaStore.open(tmp_path / "replica.sqlite") as store:
        eager_rows = _fed(store, cards, 2, sign, verify).eager.rows(store, NEEDED)
        assert not isinstance(eager_rows[Table.FUEL_CARDS], FilledCards)
        assert isinstance(eager_rows[Table.STOP_LIST], FilledStopList)
        got = _columns(eager_rows)
        want = _columns({t: store.iter_rows(t) for t in NEEDED})
    assert got == want and got[0].card_on_breach[3] == int(OnBreach.ALERT)


def test_a_card_of_an_unknown_contract_is_refused_by_the_build_in_the_store_s_words(tmp_path):
    """The filled cards meet a card whose contract is not held: the fill is off, and the build
    (from the store) refuses the tables exactly as it would have."""
    import pytest

    from authz.errors import ModelError
    sign, verify = _keys(tmp_path)
    cards = list(_CARDS)
    cards[7] = replace(cards[7], card=replace(cards[7].card, contract_id=10 ** 9))
    with ReplicaStore.open(tmp_path / "replica.sqlite") as store:
        eager_rows = _fed(store, cards, 3, sign, verify).eager.rows(store, NEEDED)
        assert not isinstance(eager_rows[Table.FUEL_CARDS], FilledCards)
        with pytest.raises(ModelError) as got:
            _columns(eager_rows)
        with pytest.raises(ModelError) as want:
            _columns({t: store.iter_rows(t) for t in NEEDED})
    assert str(got.value) == str(want.value) and "unknown contract 1000000000" in str(got.value)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, len(_CARDS) - 1), min_size=1, max_size=4), st.integers(1, 4), st.booleans())
def test_a_part_written_in_one_statement_is_the_part_written_row_by_row(picks, n, twice):
    """ReplicaStore.stage_part's one INSERT ... SELECT FROM json_each against executemany:
    the same keys (of the same SQLite type), the same bytes, and a key in two parts marks
    the snapshot broken either way."""
    import sqlite3

    from terminal.replica_store import ReplicaStoreError
    tables = {Table.FUEL_CARDS: sorted({_CARDS[i].card.card_no: _CARDS[i] for i in picks}.values(),
                                       key=lambda r: r.card.card_no),
              Table.CONTRACTS: _CONTRACTS[:n * 3], Table.STOP_LIST: _STOPS[:n * 5]}
    with tempfile.TemporaryDirectory(prefix="eager-json-") as d:
        tmp = Path(d)
        sign, verify = _keys(tmp)
        got = []
        for one_statement in (True, False):
            path = tmp / f"r{one_statement}.sqlite"
            with ReplicaStore.open(path) as store:
                store._json = one_statement
                outcome = []
                for table, rows in tables.items():
                    parts = _parts(table, list(rows), 2, min(n, len(rows)), sign, verify)
                    if twice and len(parts) > 1:  # the first part's rows again as the last part
                        parts[-1] = _parts(table, list(rows[:1]) + list(rows[-1:]), 2, 1, sign, verify)[0]
                        parts[-1] = decode(encode(ReplicaSnapshot(table, 2, len(parts) - 1, len(parts),
                                                                  tuple(parts[-1].rows)), sign), verify,
                                           topic=snapshot_topic(table, len(parts) - 1), raw_rows=True)
                    for k, p in enumerate(parts):
                        store.stage_part(p, fresh=k == 0)
                    try:
                        store.apply(StagedSnapshot(table, 2, len(parts)))
                        outcome.append("stored")
                    except ReplicaStoreError as exc:
                        outcome.append(str(exc))
                phys = {t: store.generation(t) for t in tables}
            conn = sqlite3.connect(path)
            rows_in = {t: conn.execute(f"SELECT key, typeof(key), data FROM {p} ORDER BY key").fetchall()
                       for t, p in phys.items() if p}
            conn.close()
            got.append((outcome, rows_in))
    assert got[0] == got[1]
    assert got[0][1] or twice


_CONTRACT = st.builds(
    lambda tz, home, tariff, bal, credit, chosen: (tz, home, tariff, bal, credit, tuple(chosen)),
    st.sampled_from(["Europe/Moscow", "Asia/Yekaterinburg", "UTC", "America/Argentina/Buenos_Aires", "Etc/GMT+3"]),
    st.one_of(st.integers(0, 300), st.integers(0, 2 ** 63 - 1)), st.sampled_from(list(range(6))),
    st.integers(-10 ** 12, 10 ** 12), st.integers(0, 10 ** 12), st.lists(st.integers(0, 2 ** 40), max_size=3))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), _CONTRACT), min_size=1, max_size=30), st.integers(-1, 3))
def test_the_native_contract_loader_fills_what_the_objects_fill(rows, start):
    """native._rowload.load_packed_contracts on a part kept as received against
    ContractColumns.add of the part's objects: equal columns and time zones where it takes
    the part; where it does not (a region its column cannot hold, ids not rising after
    ``start``) it appends nothing and says so."""
    from authz.fuel_model import Contract, Tariff
    from native import _rowload
    with tempfile.TemporaryDirectory(prefix="eager-ct-") as d:
        sign, verify = _keys(Path(d))
    cid, contracts = 0, []
    for step, (tz, home, tariff, bal, credit, chosen) in rows:
        cid += step
        contracts.append(Contract(cid, tz, home, Tariff(tariff), bal, credit, chosen))
    part = _parts(Table.CONTRACTS, contracts, 2, 1, sign, verify)[0]
    want = ContractColumns(rising=True)
    ok = all(c.home_region < 2 ** 31 for c in contracts) and contracts[0].contract_id > start
    if ok:
        want.add(list(part.rows))
    got = ContractColumns(rising=True)
    last = _rowload.load_packed_contracts(part.rows.data, part.rows.bounds, got.arrays, got.tz_pos, start)
    assert (last is not None) == ok
    assert got.arrays == want.arrays and got.tz_pos == want.tz_pos
    assert last is None or last == contracts[-1].contract_id
