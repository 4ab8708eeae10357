"""Two workers racing one site's batches (duplicates, overlapping cuts, out of order, some in
groups) leave the ledger a single serial ingest of the batches leaves, on SQLite and on
PostgreSQL. Ingest builds each record's row and effects before it takes the site's lock and,
on PostgreSQL, stores the rows before it (host.ingest); what was built and found stale under
the lock (a batch the other worker stored meanwhile) must be discarded, never applied twice."""

from __future__ import annotations

import random
import secrets
import threading
from collections.abc import Callable, Iterator

import pytest

from authz import sample
from authz.club_model import ClubPayment, SaleLine
from authz.reference import ReferenceClubEvaluator
from host import ingest as ingest_mod
from host import master
from host.ingest import ingest_batch, ingest_site_batches
from host.ledger import Ledger
from wire import Batch, Rejection

from .edge import CARD, CONTRACT, T0, Site, club_world, contract, fuel_card

CLUB = club_world(5)

#: What a ledger holds after ingest, each table as a sorted list of the columns that do not
#: depend on the order of delivery (a record in two overlapping batches is stored with the
#: seq of the one that came first, so ``records.batch_seq`` and ``batches.new_records`` do).
_TABLES = {
    "records": "record_id, site_id, lane, txn_id, kind, at_utc_s, body, flag, contract_id, card_no, product, "
               "amount_kop, volume_ml",
    "batches": "site_id, batch_seq, status, reason, records",
    "sites": "site_id, status, up_to_seq, max_seq, records",  # its batches: deliveries
    "contracts": "contract_id, balance_kop",
    "contract_entries": "contract_id, at_utc_s, amount_kop, kind, record_id, note",
    "fuel_counters": "card_no, limit_id, period_start, spent",
    "card_tc": "card_no, txn_counter, write_id, site_id, txn_id, record_id, at_utc_s",
    "card_tc_state": "card_no, max_tc, max_tc_at_utc_s, max_tc_record_id, max_tc_site_id",
    "card_corrections": "record_id, site_id, card_no, why, status, reserved_txn_counter, excess, "
                        "resolved_by_record_id",
    "clone_alerts": "card_no, kind, txn_counter, record_id, site_id, detail",
    "ledger_issues": "record_id, site_id, kind, detail",
    "club_accounts": "account_id, balance_kop, turnover_month, turnover_kop, points_debt",
    "club_lots": "account_id, lot_id, points, matures_at_s, expires_at_s",
    "replica_dirty": "tbl, key",
    "replica_spenders": "tbl, key, site_id",
}


def state(led: Ledger) -> dict[str, list[tuple]]:
    out = {t: sorted(tuple(r) for r in led.db.fetchall(f"SELECT {cols} FROM {t}")) for t, cols in _TABLES.items()}
    out["new_records"] = [(led.db.scalar("SELECT sum(new_records) FROM batches"),)]
    return out


def seed(led: Ledger) -> Ledger:
    master.put_products(led, sample.PRODUCTS)
    master.create_contract(led, contract(balance_kop=10_000_000))
    master.issue_fuel_card(led, fuel_card())
    master.import_club_model(led, CLUB)
    return led


def journal() -> tuple[Site, list[Batch]]:
    """One site's journal cut into batches: fuel sales (with an unknown card, an unknown
    contract, an unknown kind and a body the ledger cannot read among them) four records a
    batch, each club card's top-up, sale and return (of all of it, or a third) in one batch, and a resend after
    a restart that re-cut the records (a batch overlapping two others)."""
    s = Site("S1")
    for i in range(24):
        s.fuel_sale(tc=10 + 3 * i, at=T0 + 600 * i, delivered_ml=10_000 + i)
    s.fuel_sale(card_no="7005000000000999", tc=5, at=T0 + 30)  # unknown card: flagged when applied
    s.fuel_sale(contract_id=999_999, card_no="7005000000000998", tc=5, at=T0 + 40)  # unknown contract
    s.other("fuel.nozzle_polished", {"how": "gently"})  # unknown kind: flagged when read
    s.other("fuel.completed", {"amount_kop": "lots", "card_no": CARD})  # a bad body
    batches = s.batches(4)
    ev = ReferenceClubEvaluator(CLUB)
    t = T0 + 86_400
    for k, c in enumerate(CLUB.cards[:3]):
        first = len(s.records)
        s.club_topup(ev, c.card_no, 200_000, t + 100 * k)
        sale = s.club_commit(ev, c.card_no, (SaleLine("SKU1", "shoes", 150_000),), t + 100 * k + 10,
                             ClubPayment(card_balance_kop=150_000), txn_no=7000 + k)
        s.club_return(ev, sale, 150_000 if k == 0 else 50_000, t + 100 * k + 20, return_id=7100 + k)  # all, a third
        batches.append(Batch("S1", len(batches) + 1, tuple(s.records[first:]), T0))
    batches.append(Batch("S1", len(batches) + 1, batches[3].records[2:] + batches[4].records[:3], T0))
    return s, batches


@pytest.fixture
def serial_url(ledger_url: str, tmp_path, request) -> Iterator[str]:
    """A second, empty database of the same kind as ``ledger_url``: the serial ingest's."""
    if ledger_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'serial.sqlite'}"
        return
    import psycopg
    base = request.getfixturevalue("postgres")
    schema = f"host_serial_{secrets.token_hex(6)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def assert_serial_ledger(world: Ledger, serial_url: str, clock, seeder: Callable[[Ledger], Ledger],
                         batches: list[Batch]) -> dict[str, list[tuple]]:
    """Assert that ``world`` holds, table by table, what one worker ingesting ``batches`` in
    order leaves in a ledger seeded by ``seeder``; that serial ledger's state."""
    with Ledger.open(serial_url, clock=clock) as serial:
        seeder(serial)
        for b in batches:
            ingest_batch(serial, b)
        want = state(serial)
    got = state(world)
    for table in want:
        assert got[table] == want[table], table
    return want


def race(workers: list[Ledger], shares: list[list[Batch]], draw_seed: int) -> list[BaseException]:
    """Each worker ingests its share of batches in a thread of its own, all starting at once,
    one batch or a run of 2-3 at a time (drawn from ``draw_seed``); the exceptions they raised."""
    start = threading.Barrier(len(workers))
    errors: list[BaseException] = []

    def work(led: Ledger, mine: list[Batch], r: random.Random) -> None:
        try:
            start.wait()
            i = 0
            while i < len(mine):
                n = r.choice((1, 1, 2, 3))
                group = mine[i:i + n]
                if len(group) > 1:
                    ingest_site_batches(led, group)
                else:
                    ingest_batch(led, group[0])
                i += n
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(led, mine, random.Random(draw_seed + k)))
               for k, (led, mine) in enumerate(zip(workers, shares))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


@pytest.mark.parametrize("seed_", [1, 2, 3])
def test_two_workers_racing_one_site_leave_the_serial_ledger(open_ledger: Callable[..., Ledger], serial_url: str,
                                                            clock, monkeypatch, seed_: int):
    site, batches = journal()
    rnd = random.Random(seed_)
    order = batches + rnd.sample(batches, 8)  # some delivered twice, to either worker
    rnd.shuffle(order)
    shares = [order[0::2], order[1::2]]
    world = seed(open_ledger())
    workers = [open_ledger(), open_ledger()]

    stale = []
    prepare = ingest_mod._prepare

    def counted(db, batches, now, tolerance, wide_checked, stored=frozenset()):
        if stored:
            stale.append(len(stored))
        return prepare(db, batches, now, tolerance, wide_checked, stored)
    monkeypatch.setattr(ingest_mod, "_prepare", counted)

    assert not (errors := race(workers, shares, seed_ * 10)), errors

    want = assert_serial_ledger(world, serial_url, clock, seed, batches)
    # the journal's effects are there at all (not two empty ledgers alike)
    assert world.site("S1").up_to_seq == len(batches)
    assert world.record_count() == len(site.records)
    assert {f for _, _, f in world.flagged()} == {"unknown_card", "unknown_contract", "unknown_kind", "bad_body"}
    assert world.balance_kop(CONTRACT) < 10_000_000
    assert len(want["club_lots"]) >= 3 and len(want["card_tc"]) >= 48
    # a duplicate's later delivery found its records stored and built its rows again
    assert stale


def test_a_record_stored_between_the_check_and_the_copy_is_applied_once(pg_schema_url: str, clock, monkeypatch):
    """PostgreSQL stores the rows before the site's lock: another worker storing the same
    batch between this one's check for stored records and its COPY makes the COPY fail on
    the primary key; the transaction is rolled back and run again, and applies nothing twice."""
    from host.db import Database

    s = Site("S1")
    for i in range(3):
        s.fuel_sale(tc=10 + 3 * i, at=T0 + 600 * i)
    first, b = Batch("S1", 1, tuple(s.records[:5]), T0), Batch("S1", 2, tuple(s.records[5:]), T0)
    with Ledger.open(pg_schema_url, clock=clock) as led, Ledger.open(pg_schema_url, clock=clock) as other:
        seed(led)
        ingest_batch(led, first)  # the site's row exists (a new one would hold the other worker back)
        checks = []
        select_in = Database.select_in

        def check_then_race(self, sql, values, params=()):
            if self is led.db and sql.startswith("SELECT record_id FROM records"):
                checks.append(len(values))
                if len(checks) == 1:  # the other worker stores the batch right after this check
                    got = select_in(self, sql, values, params)
                    ingest_batch(other, b)
                    return got
            return select_in(self, sql, values, params)
        monkeypatch.setattr(Database, "select_in", check_then_race)
        ack = ingest_batch(led, b)
        monkeypatch.undo()
        assert ack.up_to_seq == 2
        assert len(checks) == 2  # the COPY failed once, the second run found the records stored
        assert led.record_count() == len(s.records)
        charged = sum(r.body["amount_kop"] for r in s.records if r.kind == "fuel.completed")
        assert led.balance_kop(CONTRACT) == 10_000_000 - charged
        assert led.db.fetchall("SELECT batch_seq, new_records FROM batches ORDER BY batch_seq") == [(1, 5), (2, 10)]
        assert led.site("S1").records == len(s.records)


def test_a_site_disabled_while_the_rows_are_stored_keeps_none_of_them(pg_schema_url: str, clock, monkeypatch):
    """PostgreSQL stores the rows before the site's lock: if an operator disables the site
    meanwhile, the rows stored are rolled back and the batch is refused as it was before."""
    from host.db import Database

    s = Site("S1")
    for i in range(2):
        s.fuel_sale(tc=10 + 3 * i, at=T0 + 600 * i)
    first, b = Batch("S1", 1, tuple(s.records[:5]), T0), Batch("S1", 2, tuple(s.records[5:]), T0)
    with Ledger.open(pg_schema_url, clock=clock) as led, Ledger.open(pg_schema_url, clock=clock) as operator:
        seed(led)
        ingest_batch(led, first)
        copies = []
        copy_rows = Database.copy_rows

        def copy_then_disable(self, table, *args, **kwargs):
            copy_rows(self, table, *args, **kwargs)
            if self is led.db and table == "records" and not copies:
                copies.append(table)
                master.set_site_status(operator, "S1", "disabled")  # commits before this one locks the site
        monkeypatch.setattr(Database, "copy_rows", copy_then_disable)
        ack = ingest_batch(led, b)
        monkeypatch.undo()
        assert copies == ["records"]
        assert ack.up_to_seq == 2 and ack.rejected == (Rejection(2, "site S1 is disabled on the host: batch refused"),)
        assert led.record_count() == 5  # batch 1's only
        charged = sum(r.body["amount_kop"] for r in s.records[:5] if r.kind == "fuel.completed")
        assert led.balance_kop(CONTRACT) == 10_000_000 - charged


#: Contracts and cards two sites share (issue 12, seventh pass): every sale of either site
#: charges one of three contracts and counts on one of six cards.
_SHARED_CONTRACTS = (CONTRACT, CONTRACT + 1, CONTRACT + 2)
_SHARED_CARDS = tuple(f"70050000000001{i:02d}" for i in range(6))


def seed_shared(led: Ledger) -> Ledger:
    master.put_products(led, sample.PRODUCTS)
    for cid in _SHARED_CONTRACTS:
        master.create_contract(led, contract(cid, balance_kop=10_000_000))
    for i, card in enumerate(_SHARED_CARDS):
        master.issue_fuel_card(led, fuel_card(card, _SHARED_CONTRACTS[i % 3]))
    return led


def shared_journals() -> list[tuple[Site, list[Batch]]]:
    """Two sites selling on the same contracts and cards, their journals cut into batches
    of four records. A card's transaction counters rise with time across both sites (each
    sale takes three values; the sites take turns), so the ledger's figures, the counters'
    state included, do not depend on which site's batches are applied first."""
    out = []
    for k, name in enumerate(("S1", "S2")):
        s = Site(name)
        for i in range(30):
            s.fuel_sale(card_no=_SHARED_CARDS[i % 6], contract_id=_SHARED_CONTRACTS[i % 3], tc=10 + 6 * i + 3 * k,
                        at=T0 + 600 * i + 300 * k, delivered_ml=10_000 + 7 * i + k)
        out.append((s, s.batches(4)))
    return out


@pytest.mark.parametrize("seed_", [1, 2, 3])
def test_two_workers_racing_two_sites_on_shared_contracts_leave_the_serial_ledger(
        open_ledger: Callable[..., Ledger], serial_url: str, clock, seed_: int):
    """Each worker ingests one site's batches (alone or in groups, in a random order), both
    at once; the two sites charge the same contracts and count on the same cards, whose rows
    each transaction locks last (host.effects' lock order). The ledger is the one a serial
    ingest of the two sites leaves, and no transaction failed (a deadlock would fail one)."""
    journals = shared_journals()
    world = seed_shared(open_ledger())
    workers = [open_ledger(), open_ledger()]
    shares = []
    for k, (_, batches) in enumerate(journals):
        mine = list(batches)
        random.Random(seed_ * 10 + k).shuffle(mine)
        shares.append(mine)
    assert not (errors := race(workers, shares, seed_ * 100)), errors

    want = assert_serial_ledger(world, serial_url, clock, seed_shared, [b for _, bs in journals for b in bs])
    # both sites' charges are on every shared contract, counted once each
    for cid in _SHARED_CONTRACTS:
        charged = sum(r.body["amount_kop"] for s, _ in journals for r in s.records
                      if r.kind == "fuel.completed" and r.body["contract_id"] == cid)
        assert charged > 0 and world.balance_kop(cid) == 10_000_000 - charged
    assert {s for (s,) in world.db.fetchall("SELECT DISTINCT site_id FROM replica_spenders")} == {"S1", "S2"}
    assert want["clone_alerts"] == [] and len(want["card_tc"]) == 2 * 30 * 2
    assert all(world.site(s.site_id).up_to_seq == len(b) for s, b in journals)


def _presence_mid_ingest(pg_schema_url: str, clock, monkeypatch, where: str) -> str:
    """Ingest a site's second batch while a presence of the site arrives from another worker,
    ``where``: ``effects`` as the ingest transaction starts its effects, ``site_row`` once it
    holds the site's row (just before the dirty marks); the presence is kept as it came (the
    replica versions the pruning of replica_spenders reads), and the ingest's watermark,
    counters and balances are those of the two applied one after the other. Returns whether
    the presence was ``kept`` while the ingest still ran, or was ``waiting`` for it."""
    import time

    import psycopg

    from host.ingest import record_presence
    from wire import Presence, Table

    s = Site("S1")
    for i in range(3):
        s.fuel_sale(tc=10 + 3 * i, at=T0 + 600 * i)
    first, b = Batch("S1", 1, tuple(s.records[:5]), T0), Batch("S1", 2, tuple(s.records[5:]), T0)
    presence = Presence("S1", True, T0 + 900, "0.7.1", {Table.CONTRACTS: 12, Table.FUEL_CARDS: 3})
    with Ledger.open(pg_schema_url, clock=clock) as led, Ledger.open(pg_schema_url, clock=clock) as other, \
            psycopg.connect(pg_schema_url.split("?")[0], autocommit=True) as watch:
        seed(led)
        ingest_batch(led, first)
        kept: list[bool] = []
        states: list[str] = []
        threads: list[threading.Thread] = []
        finish = ingest_mod._Shared.finish

        def presence_arrives() -> None:
            t = threading.Thread(target=lambda: kept.append(record_presence(other, presence)))
            t.start()
            threads.append(t)
            pid = other.db.conn.info.backend_pid
            for _ in range(1000):  # until the presence waits for this transaction, or is done
                row = watch.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                    (pid,)).fetchone()
                if kept or (row is not None and row[0] == "Lock"):
                    break
                time.sleep(0.005)
            states.append("kept" if kept else "waiting")

        def finish_with_presence(self, before_marks=None) -> None:
            if where == "effects":
                presence_arrives()
                finish(self, *([] if before_marks is None else [before_marks]))
                return

            def site_row_held() -> None:
                assert before_marks is not None  # PostgreSQL: the site's row is locked there
                before_marks()
                presence_arrives()
            finish(self, site_row_held)
        monkeypatch.setattr(ingest_mod._Shared, "finish", finish_with_presence)
        ack = ingest_batch(led, b)
        monkeypatch.undo()
        for t in threads:
            t.join()
        assert len(states) == 1 and kept == [True]
        assert ack.up_to_seq == 2
        site = led.site("S1")
        assert site is not None and (site.online, site.presence_at_utc_s, site.software_version) == \
            (True, T0 + 900, "0.7.1")
        assert site.replica_versions == {"contracts": 12, "fuel_cards": 3}
        assert (site.up_to_seq, site.records) == (2, len(s.records))
        charged = sum(r.body["amount_kop"] for r in s.records if r.kind == "fuel.completed")
        assert led.balance_kop(CONTRACT) == 10_000_000 - charged
        assert led.db.fetchall("SELECT batch_seq, new_records FROM batches ORDER BY batch_seq") == [(1, 5), (2, 10)]
        return states[0]


def test_a_presence_arriving_while_the_site_row_is_held_waits_and_is_kept(pg_schema_url: str, clock, monkeypatch):
    """The site's row is locked only for the batch rows, the watermark and the dirty marks:
    a presence arriving then waits for the commit, and both are exact."""
    assert _presence_mid_ingest(pg_schema_url, clock, monkeypatch, "site_row") == "waiting"


def test_a_presence_arriving_while_the_effects_apply_is_kept_at_once(pg_schema_url: str, clock, monkeypatch):
    """PostgreSQL locks the site's row last (issue 12, eighth pass): a presence of the site
    arriving while an ingest applies its effects is kept at once, without waiting for that
    transaction (before, it waited for the whole ingest), and both are exact."""
    assert _presence_mid_ingest(pg_schema_url, clock, monkeypatch, "effects") == "kept"


def _sale_journal(case: str) -> list[Batch]:
    """A club card's top-up in batch 1, its sale in batch 2, then a return of all of the sale
    in batch 3; ``case`` ``two_returns``: a second return of all of it in batch 4 (beyond the
    sale)."""
    ev = ReferenceClubEvaluator(CLUB)
    s = Site("S1")
    card = CLUB.cards[0].card_no
    t = T0 + 86_400
    topup = s.club_topup(ev, card, 200_000, t)
    sale = s.club_commit(ev, card, (SaleLine("SKU1", "shoes", 150_000),), t + 10,
                         ClubPayment(card_balance_kop=150_000), txn_no=7000)
    batches = [Batch("S1", 1, (topup,), T0), Batch("S1", 2, (sale,), T0)]
    for k in range(1 if case == "sale_and_return" else 2):
        ret = s.club_return(ev, sale, 150_000, t + 20 + k, return_id=7100 + k)
        batches.append(Batch("S1", len(batches) + 1, (ret,), T0))
    return batches


@pytest.mark.parametrize("ledger_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("case", ["sale_and_return", "two_returns"])
def test_two_workers_checking_one_sales_returns_take_turns(open_ledger: Callable[..., Ledger], serial_url: str,
                                                          clock, monkeypatch, case: str):
    """PostgreSQL checks a till return against its sale outside the site's lock (taken last,
    issue 12's eighth pass), under an advisory lock of the sale (host.ingest._lock_sales).
    Worker B ingests a batch that commits the sale (``sale_and_return``) or returns it
    (``two_returns``, the sale already in) and, right after its check of the sale's returns,
    holds on until worker A, ingesting a return of the same sale, has checked it too or
    waits for a lock. Without the sale's lock A checks against what B has not committed: the
    return waits for a sale that is there, or two full returns are both applied. With it, A
    waits for B's commit, and the ledger is the serial one (B's batch, then A's)."""
    import time

    import psycopg

    from host.effects import BatchEffects

    batches = _sale_journal(case)
    world = seed(open_ledger())
    a, b = open_ledger(), open_ledger()
    done = 1 if case == "sale_and_return" else 2  # the site's row is there (a new one holds A back)
    for batch in batches[:done]:
        ingest_batch(world, batch)
    b_batch, a_batch = batches[done], batches[done + 1]
    b_checked, a_checked = threading.Event(), threading.Event()
    check = BatchEffects._check_returns
    a_pid = a.db.conn.info.backend_pid

    def checked(self) -> None:
        check(self)
        if threading.current_thread().name == "a":
            a_checked.set()
            return
        b_checked.set()
        with psycopg.connect(serial_url.split("?")[0], autocommit=True) as watch:
            for _ in range(1000):  # until A has checked too, or waits for a lock (B's)
                row = watch.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                    (a_pid,)).fetchone()
                if a_checked.is_set() or (row is not None and row[0] == "Lock"):
                    break
                time.sleep(0.005)
    monkeypatch.setattr(BatchEffects, "_check_returns", checked)
    errors: list[BaseException] = []

    def work(led: Ledger, batch: Batch, wait: threading.Event | None) -> None:
        try:
            if wait is not None:
                assert wait.wait(30)
            ingest_batch(led, batch)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(b, b_batch, None), name="b"),
               threading.Thread(target=work, args=(a, a_batch, b_checked), name="a")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.undo()
    assert not errors, errors
    assert a_checked.is_set()
    want = assert_serial_ledger(world, serial_url, clock, seed, batches)
    flags = {rid: f for rid, _, f in world.flagged()}
    assert flags.get(a_batch.records[0].record_id) == (None if case == "sale_and_return" else "return_over_sale")
    assert want["club_accounts"]


def test_an_ingest_reaches_its_effects_while_another_holds_the_site_row(pg_schema_url: str, clock, monkeypatch):
    """Another worker's transaction has updated the site's row and not yet committed (an
    ingest in its last part: watermark, dirty marks): this worker's ingest of the site still
    stores its rows and applies its effects meanwhile, and waits only for the site's row
    (PostgreSQL; an ``INSERT ... ON CONFLICT DO NOTHING`` of the existing row would wait for
    that commit, so the row is read first). Both are exact afterwards."""
    import time

    import psycopg

    s = Site("S1")
    for i in range(3):
        s.fuel_sale(tc=10 + 3 * i, at=T0 + 600 * i)
    first, b = Batch("S1", 1, tuple(s.records[:5]), T0), Batch("S1", 2, tuple(s.records[5:]), T0)
    with Ledger.open(pg_schema_url, clock=clock) as led, \
            psycopg.connect(pg_schema_url.split("?")[0], autocommit=True) as watch, \
            psycopg.connect(pg_schema_url) as holder:
        seed(led)
        ingest_batch(led, first)
        holder.execute("UPDATE sites SET last_batch_at_utc_s = last_batch_at_utc_s WHERE site_id = 'S1'")  # open
        reached = threading.Event()
        finish = ingest_mod._Shared.finish

        def finish_noted(self, *args) -> None:
            reached.set()
            finish(self, *args)
        monkeypatch.setattr(ingest_mod._Shared, "finish", finish_noted)
        acks = []
        t = threading.Thread(target=lambda: acks.append(ingest_batch(led, b)))
        t.start()
        pid = led.db.conn.info.backend_pid
        waits = []
        for _ in range(1000):  # until the ingest reached its effects, or waits for a lock
            row = watch.execute("SELECT wait_event_type, left(query, 40) FROM pg_stat_activity WHERE pid = %s",
                                (pid,)).fetchone()
            if reached.is_set() or (row is not None and row[0] == "Lock"):
                waits.append(row)
                break
            time.sleep(0.005)
        at_effects = reached.is_set()
        holder.commit()
        t.join()
        monkeypatch.undo()
        assert at_effects, waits
        assert acks and acks[0].up_to_seq == 2
        charged = sum(r.body["amount_kop"] for r in s.records if r.kind == "fuel.completed")
        assert led.balance_kop(CONTRACT) == 10_000_000 - charged
        assert led.site("S1").records == len(s.records)
