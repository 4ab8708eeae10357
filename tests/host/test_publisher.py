"""The replica publisher: versions, deltas (a block at once, ledger changes folded), snapshots
cut into parts, and what an edge rebuilds from them; on SQLite and PostgreSQL."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authz import sample
from authz.fuel_model import FuelModel, Tariff
from host import master
from host.ingest import ingest_batch
from host.ledger import Ledger
from host.publisher import NO_DEFAULT_EXPOSURE, Publisher
from wire import Limits, SiteKeys, SnapshotRequest, Table, decode

from .edge import CARD, CONTRACT, Site, club_world, contract, fuel_card

KEYS = SiteKeys({"S1": bytes(32)}, replica_signing=Ed25519PrivateKey.from_private_bytes(bytes(range(32))))


def small_world(ledger: Ledger) -> FuelModel:
    model = sample.fuel_model(n_cards=40, n_stations=5, seed=3)
    master.import_fuel_model(ledger, model)
    master.import_club_model(ledger, club_world(6))
    return model


def test_a_block_is_a_stop_list_delta_at_once(ledger: Ledger):
    small_world(ledger)
    pub = Publisher(ledger)
    for d in pub.pending():
        pub.mark_sent(d)
    v = pub.version(Table.STOP_LIST)
    card = sample.card_number(7)
    master.block_card(ledger, card, reason="stolen")
    (delta,) = pub.pending(Table.STOP_LIST)
    assert (delta.from_version, delta.to_version) == (v, v + 1)
    assert [e.card_no for e in delta.upserts] == [card] and delta.deletes == ()
    (cards,) = pub.pending(Table.FUEL_CARDS)
    assert cards.upserts[0].card.status.name == "BLOCKED"
    pub.mark_sent(delta)
    pub.mark_sent(cards)
    assert pub.pending() == []
    master.unblock_card(ledger, card)
    (delta,) = pub.pending(Table.STOP_LIST)
    assert delta.deletes == (card,) and delta.from_version == v + 1
    # the signed message decodes on the edge side
    publ = pub.delta_publication(delta, KEYS)
    assert decode(publ.payload, KEYS, topic=publ.topic) == delta
    assert publ.retain  # the latest delta stays on the broker: a site coming back learns the version


def test_snapshots_are_cut_on_their_own_when_missing_old_or_far_behind(ledger: Ledger, clock):
    small_world(ledger)
    pub = Publisher(ledger, snapshot_max_age_s=600, snapshot_max_deltas=3)
    assert set(pub.due_snapshots()) == set(Table)  # none published yet: every table is due
    for t in Table:
        pub.mark_snapshot(pub.snapshot(t))
    assert pub.due_snapshots() == []
    master.block_card(ledger, sample.card_number(1))
    assert pub.due_snapshots() == []  # changed, but the snapshot is fresh and one version behind
    clock.now += 600
    assert Table.STOP_LIST in pub.due_snapshots() and Table.PRODUCTS not in pub.due_snapshots()
    pub.mark_snapshot(pub.snapshot(Table.STOP_LIST))
    for i in range(2, 5):
        master.block_card(ledger, sample.card_number(i))
    assert Table.STOP_LIST in pub.due_snapshots()  # three versions behind


def test_a_request_from_a_site_holding_the_current_version_is_not_answered(ledger: Ledger, clock):
    small_world(ledger)
    pub = Publisher(ledger, snapshot_interval_s=5)
    parts = pub.snapshot(Table.STOP_LIST)
    pub.mark_snapshot(parts)
    v = pub.version(Table.STOP_LIST)
    clock.now += 10
    assert pub.on_request(SnapshotRequest("S1", Table.STOP_LIST, v)) == []
    master.block_card(ledger, sample.card_number(2))
    assert pub.on_request(SnapshotRequest("S1", Table.STOP_LIST, v))[0].version == v + 1


def test_ingest_changes_are_folded_into_deltas(ledger: Ledger):
    master.put_products(ledger, sample.PRODUCTS)
    master.create_contract(ledger, contract())
    master.issue_fuel_card(ledger, fuel_card())
    pub = Publisher(ledger)
    for d in pub.pending():
        pub.mark_sent(d)
    s = Site("S1")
    s.fuel_sale(delivered_ml=10_000)
    s.fuel_sale(delivered_ml=20_000, tc=12)
    for b in s.batches(3):
        ingest_batch(ledger, b)
    assert pub.pending() == []  # nothing until the fold
    versions = pub.flush_dirty()
    assert set(versions) == {Table.CONTRACTS, Table.FUEL_CARDS}
    deltas = {d.table: d for d in pub.pending()}
    assert deltas[Table.CONTRACTS].upserts[0].balance_kop == ledger.balance_kop(CONTRACT)
    row = deltas[Table.FUEL_CARDS].upserts[0]
    assert row.card.card_no == CARD and dict(row.counters)[1].spent == 30_000
    assert pub.flush_dirty() == {}


def test_a_snapshot_rebuilds_the_models(ledger: Ledger):
    model = small_world(ledger)
    master.set_tariff(ledger, model.contracts[0].contract_id, Tariff.TRANSIT)
    pub = Publisher(ledger)
    rows = {}
    for table in Table:
        parts = pub.snapshot(table)
        assert len({p.version for p in parts}) == 1 and parts[0].version >= 1
        pubs = pub.snapshot_publications(parts, KEYS)
        rows[table] = [r for p in pubs for r in decode(p.payload, KEYS, topic=p.topic).rows]
    fuel = FuelModel(products=rows[Table.PRODUCTS], stations=rows[Table.STATIONS], contracts=rows[Table.CONTRACTS],
                     cards=[r.card for r in rows[Table.FUEL_CARDS]],
                     discounts=[d for t in rows[Table.TARIFFS] for d in t.discounts],
                     stop_list=[e.card_no for e in rows[Table.STOP_LIST]],
                     counters={(r.card.card_no, lid): c for r in rows[Table.FUEL_CARDS] for lid, c in r.counters})
    assert sorted(c.card_no for c in fuel.cards) == sorted(c.card_no for c in model.cards)
    assert fuel.stop_list == model.stop_list
    assert fuel.counters == model.counters
    assert fuel.contracts[0].tariff is Tariff.TRANSIT
    assert len(rows[Table.CLUB_ACCOUNTS]) == 6 and rows[Table.CLUB_RULES][0] == club_world(6).rules


def test_snapshots_are_cut_into_parts_and_stale_parts_cleared(ledger: Ledger):
    small_world(ledger)
    pub = Publisher(ledger, limits=Limits(max_message_bytes=4_096))
    parts = pub.snapshot(Table.FUEL_CARDS)
    assert len(parts) >= 3 and all(p.parts == len(parts) for p in parts)
    pub.mark_snapshot(parts)
    for i in range(30):
        master.block_card(ledger, sample.card_number(i))
    big = Publisher(ledger)  # 1 MiB parts: one part
    pubs = big.snapshot_publications(big.snapshot(Table.FUEL_CARDS), KEYS)
    assert [p.payload == b"" for p in pubs] == [False] + [True] * (len(parts) - 1)
    assert all(p.retain for p in pubs)


def test_snapshot_requests_are_answered_once(ledger: Ledger, clock):
    small_world(ledger)
    pub = Publisher(ledger, snapshot_interval_s=5)
    req = SnapshotRequest("S1", Table.STOP_LIST, 0)
    parts = pub.on_request(req)
    assert parts
    pub.mark_snapshot(parts)
    assert pub.on_request(req) == []  # the retained one is newer than what the site has
    v = parts[0].version
    assert pub.on_request(SnapshotRequest("S1", Table.STOP_LIST, v)) == []  # made just now
    master.block_card(ledger, sample.card_number(3))
    clock.now += 10
    again = pub.on_request(SnapshotRequest("S1", Table.STOP_LIST, v))
    assert again and again[0].version == v + 1


def test_an_empty_table_snapshot_starts_at_version_one(ledger: Ledger):
    pub = Publisher(ledger)
    (part,) = pub.snapshot(Table.STOP_LIST)
    assert part.version == 1 and part.rows == ()
    master.put_products(ledger, sample.PRODUCTS)
    master.create_contract(ledger, contract())
    master.issue_fuel_card(ledger, fuel_card())
    master.block_card(ledger, CARD)
    (delta,) = pub.pending(Table.STOP_LIST)
    assert delta.from_version == 1 and delta.to_version == 2


def test_what_the_publisher_encodes_unchecked_decodes_at_a_site(ledger: Ledger):
    """The publisher encodes its rows without decode's row checks (``rows_checked``); a site,
    which holds only the verify key, still decodes every delta and snapshot part to the very
    message, and the frames are the ones the fully checked encode makes."""
    from wire import encode
    small_world(ledger)
    pub = Publisher(ledger)
    for d in pub.pending():
        pub.mark_sent(d)
    s = Site("S1")
    s.fuel_sale(delivered_ml=10_000)
    s.fuel_sale(delivered_ml=20_000, tc=12)
    for b in s.batches(3):
        ingest_batch(ledger, b)
    master.block_card(ledger, sample.card_number(3))
    pub.flush_dirty()
    site_keys = SiteKeys({"S1": bytes(32)}, replica_verify=KEYS.replica_signing.public_key())  # type: ignore[union-attr]
    deltas = pub.pending()
    assert {d.table for d in deltas} >= {Table.CONTRACTS, Table.FUEL_CARDS, Table.STOP_LIST}
    for delta in deltas:
        publ = pub.delta_publication(delta, KEYS)
        assert decode(publ.payload, site_keys, topic=publ.topic) == delta
        assert publ.payload[:-66] == encode(delta, KEYS)[:-66]  # the same signed bytes as the checked encode
    for table in Table:
        parts = pub.snapshot(table)
        for part, publ in zip(parts, pub.snapshot_publications(parts, KEYS)):
            assert decode(publ.payload, site_keys, topic=publ.topic) == part


# -- the fold's rows read the cheap way are the rows read the reference way, byte for byte --

def _reference_card(row) -> object:
    """A fuel_cards row as host.rows read it before the publisher's fold got cheaper
    (Enum calls, date.fromisoformat, json per card, no caches)."""
    import json
    from datetime import date

    from authz.fuel_model import CardKind, CardStatus, FuelCard, ProductGroup
    from host import rows as R
    no, cid, expires, groups, limits, kind, status, controls = row
    return FuelCard(no, cid, date.fromisoformat(expires), frozenset(ProductGroup(g) for g in json.loads(groups)),
                    R.limits_from_json.__wrapped__(limits), CardKind(kind), CardStatus(status),
                    **({} if controls is None else R.card_controls_from_map(json.loads(controls))))


def _reference_rows(ledger: Ledger, table: Table, keys: list) -> list:
    """The rows of ``keys`` built the reference way: whole dataclasses.replace for contracts,
    every counter looked up per card and limit."""
    import json
    from dataclasses import replace

    from authz.fuel_model import Contract, LimitCounter
    from host import rows as R
    from host.watermarks import contract_allowances, row_watermarks, site_watermarks
    from wire import FuelCardRow
    db = ledger.db
    marks = site_watermarks(db)
    wm = row_watermarks(db, table, keys, marks)
    if table is Table.CONTRACTS:
        got = db.select_in(f"SELECT {R.CONTRACT_COLUMNS} FROM contracts WHERE contract_id IN ({{in}})", keys)
        contracts = sorted((Contract(cid, tz, region, Tariff(t), bal, credit, tuple(json.loads(chosen)))
                            for cid, tz, region, t, bal, credit, chosen in got), key=lambda c: c.contract_id)
        exposures = db.select_in("SELECT contract_id, offline_exposure_kop FROM contracts WHERE contract_id IN ({in})",
                                 keys)
        active = [s for (s,) in db.fetchall("SELECT site_id FROM sites WHERE status = 'active' ORDER BY site_id")]
        allowed = contract_allowances(db, exposures, NO_DEFAULT_EXPOSURE, active)
        return [replace(c, watermarks=wm.get(str(c.contract_id), ()), allowances=allowed.get(c.contract_id, ()))
                for c in contracts]
    assert table is Table.FUEL_CARDS
    cards = sorted((_reference_card(r) for r in db.select_in(
        f"SELECT {R.CARD_COLUMNS} FROM fuel_cards WHERE card_no IN ({{in}})", keys)), key=lambda c: c.card_no)
    counters = db.select_in("SELECT card_no, limit_id, period_start, spent FROM fuel_counters "
                            "WHERE card_no IN ({in})", keys)
    out = []
    for c in cards:
        pairs = []
        for lid in sorted(lim.limit_id for lim in c.limits):
            mine = [(start, spent) for no, i, start, spent in counters if no == c.card_no and i == lid]
            if mine:
                start, spent = max(mine)
                pairs.append((lid, LimitCounter(spent, start)))
        out.append(replace(FuelCardRow(c, tuple(pairs)), watermarks=wm.get(c.card_no, ())))
    return out


def _reference_card_map(r) -> dict:
    """A fuel-card row's wire map as wire.codec built it before (groups sorted per card)."""
    from wire import codec
    c = r.card
    d = {"card_no": c.card_no, "contract_id": c.contract_id, "expires_on": c.expires_on.isoformat(),
         "groups": sorted(int(g) for g in c.groups), "limits": [codec._limit_to(lim) for lim in c.limits],
         "kind": int(c.kind), "status": int(c.status),
         "counters": [{"limit_id": lid, "spent": ctr.spent, "period_start": ctr.period_start}
                      for lid, ctr in r.counters]}
    if c.products is not None or c.windows or c.station_scope or c.station_ids or c.on_breach:
        codec._with_card_controls(d, c)
    if r.watermarks:
        codec._with_balance_fields(d, r.watermarks)
    return d


def test_a_folds_signed_deltas_are_those_of_rows_read_the_reference_way(ledger: Ledger):
    """The fold's cheaper row reads (cached groups, days and enum look-ups, the contract's
    constructor for its balance fields, the groups' wire form cached) change no byte: every
    contract and fuel-card delta of a fold is signed over the same payload as the delta of the
    rows read the reference way, and the card rows' wire maps pack alike."""
    import msgpack

    from wire import ReplicaDelta, codec, encode
    small_world(ledger)
    pub = Publisher(ledger)
    for d in pub.pending():
        pub.mark_sent(d)
    s = Site("S1")
    s.fuel_sale(delivered_ml=10_000)
    s.fuel_sale(delivered_ml=20_000, tc=12)
    for b in s.batches(3):
        ingest_batch(ledger, b)
    master.block_card(ledger, CARD)  # a card of another status among the rows
    assert set(pub.flush_dirty()) >= {Table.CONTRACTS, Table.FUEL_CARDS}
    deltas = [d for d in pub.pending() if d.table in (Table.CONTRACTS, Table.FUEL_CARDS)]
    assert {d.table for d in deltas} == {Table.CONTRACTS, Table.FUEL_CARDS}
    for delta in deltas:
        keys = [codec.row_key(delta.table, r) for r in delta.upserts]
        with ledger.db.transaction(write=False, snapshot=True):
            ref = _reference_rows(ledger, delta.table, keys)
        assert ref and list(delta.upserts) == ref
        ref_delta = ReplicaDelta(delta.table, delta.from_version, delta.to_version, tuple(ref), delta.deletes)
        assert pub.delta_publication(delta, KEYS).payload == encode(ref_delta, KEYS)  # Ed25519: deterministic
        if delta.table is Table.FUEL_CARDS:
            for row in delta.upserts:
                assert msgpack.packb(codec._fuel_card_to(row), use_bin_type=True) == \
                    msgpack.packb(_reference_card_map(row), use_bin_type=True)


def test_a_stored_card_of_an_unknown_kind_or_status_is_refused_as_before():
    """The enum look-ups fall back to the Enum itself: a value it does not know raises its
    ValueError, as the Enum call did."""
    import pytest

    from host import rows as R
    row = [CARD, 1, "2030-01-31", "[1]", "[]", 0, 0, None]
    assert R.card_from_row(row).kind.value == 0
    for i in (5, 6):
        bad = list(row)
        bad[i] = 99
        with pytest.raises(ValueError, match="99"):
            R.card_from_row(bad)
