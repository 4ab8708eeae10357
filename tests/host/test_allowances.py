"""What balance rows carry (host.watermarks): each site's watermark in the rows holding its
spend (a gap or a refused batch keeps it low), and a contract's offline allowances shared out
of its exposure; on SQLite and PostgreSQL. And the wire form of both, with bad input refused."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from authz import sample
from authz.balance import Allowance, Watermark
from host import master
from host.errors import InvalidInput, NotFound
from host.ingest import ingest_batch
from host.ledger import Ledger
from host.publisher import Publisher
from host.watermarks import AllowancePolicy, set_offline_exposure
from wire import Batch, SiteKeys, Table, WireFormatError, decode
from wire.codec import pack_row, unpack_row

from .edge import CARD, CARD2, CONTRACT, T0, Site, contract, fuel_card

KEYS = SiteKeys({"S1": bytes(32)}, replica_signing=Ed25519PrivateKey.from_private_bytes(bytes(range(32))))


def world(ledger: Ledger) -> Publisher:
    master.put_products(ledger, sample.PRODUCTS)
    master.create_contract(ledger, contract())
    master.issue_fuel_card(ledger, fuel_card(CARD))
    master.issue_fuel_card(ledger, fuel_card(CARD2))
    for s in ("S1", "S2", "S3"):
        master.add_site(ledger, s)
    pub = Publisher(ledger)
    for d in pub.pending():
        pub.mark_sent(d)
    return pub


def one_sale_batch(site: Site, n: int, card_no: str = CARD) -> Batch:
    recs = site.fuel_sale(card_no=card_no, delivered_ml=1_000, tc=10 + 2 * n)
    return Batch(site.site_id, n, tuple(recs), T0)


def rows_now(pub: Publisher) -> dict:
    pub.flush_dirty()
    out = {}
    for d in pub.pending():
        out.update({(d.table, r.contract_id if d.table is Table.CONTRACTS else r.card.card_no): r for r in d.upserts
                    if d.table in (Table.CONTRACTS, Table.FUEL_CARDS)})
        pub.mark_sent(d)
    return out


def test_a_row_names_the_watermark_of_each_site_whose_spend_it_holds(ledger: Ledger):
    pub = world(ledger)
    s1, s2 = Site("S1"), Site("S2")
    for n in (1, 2):
        ingest_batch(ledger, one_sale_batch(s1, n))
    ingest_batch(ledger, one_sale_batch(s2, 1, CARD2))
    rows = rows_now(pub)
    assert rows[(Table.CONTRACTS, CONTRACT)].watermarks == (Watermark("S1", 2), Watermark("S2", 1))
    assert rows[(Table.FUEL_CARDS, CARD)].watermarks == (Watermark("S1", 2),)  # S2 never spent on it
    assert rows[(Table.FUEL_CARDS, CARD2)].watermarks == (Watermark("S2", 1),)
    # batch 4 before 3: applied, but the watermark waits for the gap (its spend is counted again, safely)
    ingest_batch(ledger, one_sale_batch(s1, 4))
    assert rows_now(pub)[(Table.CONTRACTS, CONTRACT)].watermarks[0] == Watermark("S1", 2)
    ingest_batch(ledger, one_sale_batch(s1, 3))
    assert rows_now(pub)[(Table.CONTRACTS, CONTRACT)].watermarks[0] == Watermark("S1", 4)
    # a refused batch is not in the figures: the watermark stays below it
    master.set_site_status(ledger, "S1", "disabled")
    ingest_batch(ledger, one_sale_batch(s1, 5))
    ingest_batch(ledger, one_sale_batch(s2, 2))  # another site's spend makes a new row
    assert rows_now(pub)[(Table.CONTRACTS, CONTRACT)].watermarks == (Watermark("S1", 4), Watermark("S2", 2))
    # a snapshot carries the same
    (part,) = pub.snapshot(Table.CONTRACTS)
    assert part.rows[0].watermarks == (Watermark("S1", 4), Watermark("S2", 2))


def test_a_contracts_exposure_is_shared_as_allowances(ledger: Ledger):
    pub = world(ledger)
    (part,) = pub.snapshot(Table.CONTRACTS)
    assert part.rows[0].allowances == ()  # no exposure set, no default: sites are not capped
    ingest_batch(ledger, one_sale_batch(Site("S1"), 1))  # S1's spend: a station the cards buy at
    set_offline_exposure(ledger, CONTRACT, 300_000)
    row = rows_now(pub)[(Table.CONTRACTS, CONTRACT)]
    # weights: S1 3, S2 and S3 1 each, one share kept for a site not yet known: 6 shares of 50,000
    assert row.allowances == (Allowance("S1", 150_000), Allowance("*", 50_000))
    known = ["S1", "S2", "S3"]
    total = sum(next((a.amount_kop for a in row.allowances if a.site_id == s), 50_000) for s in known)
    assert total + 50_000 <= 300_000
    # the host's default exposure applies to a contract that sets none
    set_offline_exposure(ledger, CONTRACT, None)
    assert rows_now(pub)[(Table.CONTRACTS, CONTRACT)].allowances == ()
    pub.allowances = AllowancePolicy(default_exposure_kop=60_000)  # equal shares: 3 sites and one kept
    (part,) = pub.snapshot(Table.CONTRACTS)
    assert part.rows[0].allowances == (Allowance("*", 15_000),)
    # the shares stay as set: more spenders later do not move them until the exposure is set again
    set_offline_exposure(ledger, CONTRACT, 300_000, priority_weight=1)
    ingest_batch(ledger, one_sale_batch(Site("S2"), 1))
    assert rows_now(pub)[(Table.CONTRACTS, CONTRACT)].allowances == (Allowance("S1", 75_000), Allowance("*", 75_000))


def test_bad_exposures_are_refused_and_change_nothing(ledger: Ledger):
    pub = world(ledger)
    v = pub.version(Table.CONTRACTS)
    for bad in (-1, 1.5, "10", 10**13):
        with pytest.raises(InvalidInput, match="offline exposure"):
            set_offline_exposure(ledger, CONTRACT, bad)
    with pytest.raises(NotFound, match="no contract 99"):
        set_offline_exposure(ledger, 99, 100)
    assert pub.version(Table.CONTRACTS) == v
    with pytest.raises(InvalidInput, match="priority_weight"):
        set_offline_exposure(ledger, CONTRACT, 100, priority_weight=0)
    with pytest.raises(ValueError, match="default_exposure_kop"):
        AllowancePolicy(default_exposure_kop=-1)


def test_watermarks_and_allowances_cross_the_wire(ledger: Ledger):
    pub = world(ledger)
    ingest_batch(ledger, one_sale_batch(Site("S1"), 1))
    set_offline_exposure(ledger, CONTRACT, 90_000)
    pub.flush_dirty()
    for d in pub.pending():
        publ = pub.delta_publication(d, KEYS)
        assert decode(publ.payload, KEYS, topic=publ.topic) == d
    c = ledger.contract(CONTRACT)
    assert unpack_row(Table.CONTRACTS, pack_row(Table.CONTRACTS, c)) == c  # none: the row as before


_base = pack_row(Table.CONTRACTS, contract())


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["watermarks", "allowances"]),
       st.one_of(st.none(), st.integers(-2**63, 2**63 - 1), st.text(max_size=5), st.lists(st.one_of(
           st.integers(-2**63, 2**63 - 1), st.text(max_size=70),
           st.lists(st.one_of(st.integers(-5, 10**13), st.text(max_size=70)), max_size=3)), max_size=4)))
def test_malformed_balance_fields_are_refused_with_a_clear_error(name, value):
    import msgpack
    d = msgpack.unpackb(_base)
    d[name] = value
    try:
        row = unpack_row(Table.CONTRACTS, msgpack.packb(d))
    except WireFormatError as exc:
        assert name in str(exc) or "site_id" in str(exc)
        return
    # what was accepted is well formed
    for w in row.watermarks:
        assert isinstance(w, Watermark) and w.batch_seq >= 0 and w.site_id
    for a in row.allowances:
        assert isinstance(a, Allowance) and a.amount_kop >= 0
    assert len({w.site_id for w in row.watermarks}) == len(row.watermarks)
