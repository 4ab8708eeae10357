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


# -- setting it: the admin command and the worker's default --------------------------------

def admin(url: str, *argv: str) -> tuple[int, str, str]:
    import contextlib
    import io

    from host.admin import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--db", url, *argv])
    return code, out.getvalue(), err.getvalue()


def test_the_admin_sets_and_shows_a_contracts_exposure(ledger_url: str, ledger: Ledger):
    pub = world(ledger)
    ingest_batch(ledger, one_sale_batch(Site("S1"), 1))
    code, out, _ = admin(ledger_url, "offline-exposure", str(CONTRACT))
    assert code == 0 and "the host worker's default" in out
    v = pub.version(Table.CONTRACTS)
    code, out, err = admin(ledger_url, "set-offline-exposure", str(CONTRACT), "3000")
    assert code == 0, err
    # S1 weighs 3, S2 and S3 1 each, one share kept: 6 shares of 500 RUB
    assert "offline exposure 3000.00 RUB" in out and "S1" in out and "1500.00" in out and "every other site" in out
    assert pub.version(Table.CONTRACTS) == v + 1  # published as a contracts delta
    assert rows_now(pub)[(Table.CONTRACTS, CONTRACT)].allowances == (Allowance("S1", 150_000), Allowance("*", 50_000))
    code, out, _ = admin(ledger_url, "offline-exposure", str(CONTRACT))
    assert code == 0 and "3000.00 RUB" in out and "500.00" in out
    code, out, _ = admin(ledger_url, "set-offline-exposure", str(CONTRACT), "default")
    assert code == 0 and "default" in out
    assert rows_now(pub)[(Table.CONTRACTS, CONTRACT)].allowances == ()


@pytest.mark.parametrize("argv, says", [
    (["set-offline-exposure", "1", "-5"], "rubles"),
    (["set-offline-exposure", "1", "1.234"], "rubles"),
    (["set-offline-exposure", "1", "abc"], "rubles"),
    (["set-offline-exposure", "1", "999999999999"], "most allowed"),
    (["set-offline-exposure", "1", "100", "--priority-weight", "0"], "priority_weight"),
    (["set-offline-exposure", "99", "100"], "no contract 99"),
    (["offline-exposure", "99"], "no contract 99"),
])
def test_bad_admin_exposures_are_refused_in_one_line_and_change_nothing(ledger_url: str, ledger: Ledger, argv, says):
    pub = world(ledger)
    set_offline_exposure(ledger, CONTRACT, 90_000)
    v = pub.version(Table.CONTRACTS)
    code, out, err = admin(ledger_url, *argv)
    assert code == 1 and says in err and err.count("\n") == 1 and out == ""
    assert pub.version(Table.CONTRACTS) == v
    assert ledger.db.scalar("SELECT offline_exposure_kop FROM contracts WHERE contract_id = ?", (CONTRACT,)) == 90_000


def test_the_workers_default_exposure_setting_is_validated():
    from host.worker import default_exposure_policy
    assert default_exposure_policy(None) == AllowancePolicy() == default_exposure_policy("  ")
    assert default_exposure_policy("1500.50") == AllowancePolicy(150_050)
    assert default_exposure_policy("1,5") == AllowancePolicy(150)  # a decimal comma, as typed in Russia
    for bad in ("-1", "ten", "1e3", "99999999999999"):
        with pytest.raises(InvalidInput):
            default_exposure_policy(bad)


@pytest.mark.parametrize("value", ["abc", "-3", "0.001"])
def test_a_bad_default_exposure_stops_the_worker_before_anything_starts(tmp_path, capsys, value):
    from host.worker import main
    with pytest.raises(SystemExit) as exc:
        main(["--keys-dir", str(tmp_path), "--db", f"sqlite:///{tmp_path / 'l.sqlite'}",
              "--default-offline-exposure-rub", value])
    assert exc.value.code == 2
    assert "--default-offline-exposure-rub" in capsys.readouterr().err
    assert not (tmp_path / "l.sqlite").exists()


def test_a_worker_publishes_the_default_exposure_of_contracts_without_one(ledger_url: str, ledger: Ledger):
    """The worker's setting reaches what it publishes: a snapshot it cuts for a site's request
    carries the default's equal shares on a contract that sets none, and a contract's own
    exposure wins over it."""
    import asyncio

    from host.ledger_thread import LedgerThread
    from host.worker import Worker
    from wire import SnapshotRequest, encode, snapshot_requests_topic

    world(ledger)
    master.create_contract(ledger, contract(CONTRACT + 1))
    set_offline_exposure(ledger, CONTRACT + 1, 80_000, priority_weight=1)
    host_keys = SiteKeys({"S1": bytes(32)}, replica_signing=KEYS.replica_signing)
    site_keys = SiteKeys({"S1": bytes(32)}, replica_verify=KEYS.replica_signing.public_key())
    worker = Worker(ledger_url, host_keys, allowances=AllowancePolicy(default_exposure_kop=60_000))

    async def ask():
        worker._ingest = LedgerThread(ledger_url, name="test-ingest")
        try:
            req = SnapshotRequest("S1", Table.CONTRACTS, 0)
            return await worker._ingest.call(worker.handle, snapshot_requests_topic("S1"), encode(req, site_keys))
        finally:
            await worker._ingest.close()
    pubs = asyncio.run(ask())
    rows = {r.contract_id: r for p in pubs if p.payload for r in decode(p.payload, site_keys, topic=p.topic).rows}
    assert rows[CONTRACT].allowances == (Allowance("*", 15_000),)  # 3 active sites and one kept: 4 shares
    assert rows[CONTRACT + 1].allowances == (Allowance("*", 20_000),)  # its own, as set


# -- replica_spenders pruned: what no watermark needs goes, the balance rows stay the same --

def _spenders(ledger: Ledger) -> set[tuple[str, str, str]]:
    return set(ledger.db.fetchall("SELECT tbl, key, site_id FROM replica_spenders"))


def test_spenders_no_watermark_needs_are_pruned_a_slice_at_a_time_and_the_rows_stay_the_same(ledger: Ledger):
    from host.watermarks import prune_spenders
    pub = world(ledger)
    s1, s2 = Site("S1"), Site("S2")
    ingest_batch(ledger, one_sale_batch(s1, 1))
    ingest_batch(ledger, one_sale_batch(s2, 1, CARD2))
    needed = _spenders(ledger)
    assert ("contracts", str(CONTRACT), "S1") in needed and ("fuel_cards", CARD2, "S2") in needed
    orphans = {("contracts", "999", "S1"),  # a contract not in the ledger
               ("contracts", "01", "S1"),  # not the text of a contract id
               ("fuel_cards", "7005830000000999", "S2"),  # a card not in the ledger
               ("club_accounts", "5", "S1"),
               ("contracts", str(CONTRACT), "GONE"),  # a site not registered
               ("stop_list", CARD, "S1")}  # a table without watermarks
    ledger.db.run(lambda db: db.executemany("INSERT INTO replica_spenders (tbl, key, site_id) VALUES (?, ?, ?)",
                                            sorted(orphans)))
    def published() -> dict:
        return {(t, r.contract_id if t is Table.CONTRACTS else r.card.card_no): r.watermarks
                for t in (Table.CONTRACTS, Table.FUEL_CARDS) for p in pub.snapshot(t) for r in p.rows}
    before = published()
    after, pruned, calls = None, 0, 0
    while True:  # two rows a call: the cursor goes on where the last call stopped
        res = prune_spenders(ledger, after, scan=2)
        assert res.scanned <= 2
        pruned += res.pruned
        calls += 1
        after = res.after
        if after is None:
            break
    assert calls >= (len(needed) + len(orphans)) // 2
    assert pruned == len(orphans) and _spenders(ledger) == needed
    assert prune_spenders(ledger).pruned == 0  # nothing more to drop
    # the balance rule: every published row names the same watermarks as before, but the
    # unregistered site's (0: the same as none at a site)
    assert before[(Table.CONTRACTS, CONTRACT)] == (Watermark("GONE", 0), Watermark("S1", 1), Watermark("S2", 1))
    assert published() == {k: tuple(w for w in v if w.site_id != "GONE") for k, v in before.items()}
    ingest_batch(ledger, one_sale_batch(s1, 2))  # and the pruned table goes on naming new spend
    assert rows_now(pub)[(Table.CONTRACTS, CONTRACT)].watermarks == (Watermark("S1", 2), Watermark("S2", 1))
    assert published()[(Table.FUEL_CARDS, CARD)] == (Watermark("S1", 2),)


def test_bad_prune_slices_are_refused(ledger: Ledger):
    from host.watermarks import prune_spenders
    for bad in (0, -1, 1.5, "10"):
        with pytest.raises(InvalidInput, match="scan"):
            prune_spenders(ledger, scan=bad)


def test_the_workers_housekeeping_prunes_a_slice_per_fold(ledger_url: str, ledger: Ledger):
    import asyncio

    from host.ledger_thread import LedgerThread
    from host.worker import Worker
    world(ledger)
    ingest_batch(ledger, one_sale_batch(Site("S1"), 1))
    needed = _spenders(ledger)
    ledger.db.run(lambda db: db.executemany("INSERT INTO replica_spenders (tbl, key, site_id) VALUES (?, ?, ?)",
                                            [("contracts", "999", "S1"), ("fuel_cards", "x", "S3")]))
    worker = Worker(ledger_url, SiteKeys({}, replica_signing=KEYS.replica_signing))
    worker.prune_scan = 1

    async def folds(n: int) -> None:
        lt = LedgerThread(ledger_url, name="test-publisher")
        try:
            for _ in range(n):
                await worker._housekeeping(lt)
        finally:
            await lt.close()
    asyncio.run(folds(len(needed) + 2))  # one row a fold: every row looked at once
    assert worker.stats.spenders_pruned == 2 and _spenders(ledger) == needed
