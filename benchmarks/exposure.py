"""Offline exposure across sites: ``python -m benchmarks.exposure``, ``key: value`` lines.

One contract, several stations (sites) selling on it, each of which loses its link. A real
host ledger (SQLite) shares the contract's offline exposure out as allowances
(:func:`host.watermarks.set_offline_exposure`) and publishes it with the balance and the
watermarks; each site runs its own journal and both evaluators side by side (their
decisions must agree, and are counted once). The sites sell online for a while (every sale's
batch ingested and the host's deltas delivered), then all of them go offline at once and sell
until their evaluators decline, then come back and sync.

Printed: ``sites``, ``balance_kop``, ``credit_line_kop``, ``exposure_kop``,
``approved_online_kop``, ``approved_offline_kop`` (every site's total while all were offline),
``approved_total_kop``, ``bound_kop`` (balance + credit line + exposure),
``within_bound`` (1/0), ``host_balance_after_kop``, and the same run without allowances:
``no_allowance_approved_total_kop`` and ``no_allowance_over_bound_kop`` (what the sites
would have approved past balance + credit line: the loss the allowances bound). The figures
are integers of kopecks, not times: the machine's load does not change them.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import tempfile
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from authz import sample
from authz.fuel_model import (
    Contract,
    FuelCard,
    FuelRequest,
    ProductGroup,
    Station,
    Tariff,
)
from host import master
from host.ingest import ingest_batch
from host.ledger import Ledger
from host.publisher import Publisher
from host.watermarks import set_offline_exposure
from terminal.follower import FullSnapshot
from terminal.fuel import write_id_of
from terminal.ids import new_id, new_txn_id
from terminal.journal import Journal, Record
from terminal.own_spend import JournalSpend
from terminal.replica import FUEL_TABLES, Replica, fuel_decision_body, fuel_request_body
from terminal.sync import _batch_key, _Range
from wire import Batch, Table, WireRecord

__all__ = ["Network", "main", "run"]

T0 = 1_795_000_000
CONTRACT = 7
STATION = 1000
PRICE = 6_000
IMPLS = ("reference", "native")


class _Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class _Site:
    site_id: str
    card_no: str
    journal: Journal
    replicas: dict[str, Replica] = field(default_factory=dict)
    versions: dict[Table, int] = field(default_factory=dict)
    online: bool = True
    batch_no: int = 0
    cursor: int = 0
    approved_kop: int = 0
    approved_offline_kop: int = 0
    declined: int = 0


class Network:
    """A host ledger and ``n_sites`` sites of one contract (see the module's docstring)."""

    def __init__(self, tmp: Path, *, n_sites: int, balance_kop: int, credit_line_kop: int,
                 exposure_kop: int | None) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger.open(f"sqlite:///{tmp / 'ledger.sqlite'}", clock=_Clock())
        led = self.ledger
        master.put_products(led, sample.PRODUCTS)
        master.put_stations(led, [Station(STATION, 0, frozenset(ProductGroup), {"AI95": PRICE})])
        master.create_contract(led, Contract(CONTRACT, "Europe/Moscow", 0, Tariff.REGIONAL, balance_kop, credit_line_kop))
        self.sites: list[_Site] = []
        for i in range(n_sites):
            sid, card_no = f"ST-{i + 1:03d}", f"70058300000{i + 1:05d}"
            master.add_site(led, sid)
            master.issue_fuel_card(led, FuelCard(card_no, CONTRACT, date(2030, 12, 31), frozenset(ProductGroup)))
            self.sites.append(_Site(sid, card_no, Journal.open(tmp / sid / "journal.sqlite", sid)))
        self.pub = Publisher(led)
        if exposure_kop is not None:
            set_offline_exposure(led, CONTRACT, exposure_kop)
        self.balance_kop, self.credit_line_kop, self.exposure_kop = balance_kop, credit_line_kop, exposure_kop
        for s in self.sites:
            self._provision(s)
        for d in self.pub.pending():
            self.pub.mark_sent(d)
        self.txn = itertools.count(1)

    def _provision(self, s: _Site) -> None:
        rows = {}
        for t in FUEL_TABLES:
            parts = self.pub.snapshot(t)
            rows[t] = [r for p in parts for r in p.rows]
            s.versions[t] = parts[0].version
        for impl in IMPLS:
            r = Replica.from_rows(rows, site_id=s.site_id, versions=s.versions, impl=impl, club=False)
            r.follow_own_spend(JournalSpend(s.site_id, s.journal))
            r.replay(())
            s.replicas[impl] = r

    # -- a site sells --

    async def sell(self, s: _Site, ml: int) -> int:
        """One sale of up to ``ml`` at site ``s``, decided by both evaluators (they must
        agree), completed at the volume allowed; returns the kopecks charged."""
        req = FuelRequest(s.card_no, STATION, "AI95", T0, preset_volume_ml=ml)
        decisions = {impl: r.fuel.authorize(req) for impl, r in s.replicas.items()}
        if len(set(decisions.values())) != 1:
            raise AssertionError(f"the evaluators disagree at {s.site_id}: {decisions}")
        dec = decisions["native"]
        if not dec.approved:
            s.declined += 1
            return 0
        rid = new_id(s.site_id)
        body = {"request": fuel_request_body(req), "decision": fuel_decision_body(dec),
                "delivered_volume_ml": dec.volume_ml, "amount_kop": dec.amount_kop, "delivery_reason": "preset_reached",
                "overrun_ml": 0, "sale_no": next(self.txn), "card_no": s.card_no, "contract_id": CONTRACT,
                "card_commit": {"write_id": write_id_of(rid).hex(), "expected_txn": 1, "counters": []}}
        await s.journal.append([Record(rid, s.site_id, "pump-1", new_txn_id(s.site_id, "pump-1"), "fuel.completed",
                                       T0, body)])
        for r in s.replicas.values():
            r.apply("fuel.completed", body)
        s.approved_kop += dec.amount_kop
        if not s.online:
            s.approved_offline_kop += dec.amount_kop
        return dec.amount_kop

    # -- links --

    async def sync(self, s: _Site) -> None:
        """An online site's unsent records go to the host as a batch (ingested), then the host
        folds and publishes; every online site takes the deltas (a site that missed some, a
        snapshot)."""
        if not s.online:
            return
        recs = s.journal.after(s.cursor, 10_000)
        if recs:
            s.batch_no += 1
            await s.journal.set_meta(_batch_key(s.batch_no), _Range(recs[0].seq, recs[-1].seq, len(recs), T0).to_meta())
            s.cursor = recs[-1].seq
            ingest_batch(self.ledger, Batch(s.site_id, s.batch_no, tuple(WireRecord.from_record(r) for r in recs), T0))
        self.publish()

    def publish(self) -> None:
        self.pub.flush_dirty()
        for d in self.pub.pending():
            for s in self.sites:
                if s.online:
                    self._deliver(s, d)
            self.pub.mark_sent(d)

    def _deliver(self, s: _Site, d) -> None:
        held = s.versions[d.table]
        if d.to_version <= held:
            return
        if d.from_version != held:
            self._snapshot(s, d.table)
            return
        for r in s.replicas.values():
            r.apply_update(d)
        s.versions[d.table] = d.to_version

    def _snapshot(self, s: _Site, table: Table) -> None:
        parts = self.pub.snapshot(table)
        snap = FullSnapshot(table, parts[0].version, tuple(r for p in parts for r in p.rows))
        for r in s.replicas.values():
            r.apply_update(snap)
        s.versions[table] = snap.version

    async def set_online(self, s: _Site, online: bool) -> None:
        if online and not s.online:
            s.online = True
            for t in (Table.CONTRACTS, Table.FUEL_CARDS):
                self._snapshot(s, t)
            await self.sync(s)
        s.online = online

    @property
    def approved_total_kop(self) -> int:
        return sum(s.approved_kop for s in self.sites)

    @property
    def bound_kop(self) -> int:
        return self.balance_kop + self.credit_line_kop + (self.exposure_kop or 0)

    def close(self) -> None:
        for s in self.sites:
            s.journal.close()
        self.ledger.close()


async def scenario(net: Network, *, seed: int, online_sales: int = 10, max_ml: int = 60_000) -> dict[str, int]:
    """Online sales with syncs, then every site offline selling until declined, then back."""
    rnd = random.Random(seed)
    online = 0
    for _ in range(online_sales):
        s = rnd.choice(net.sites)
        online += await net.sell(s, rnd.randint(1_000, max_ml // 3))
        await net.sync(s)
    for s in net.sites:
        await net.set_online(s, False)
    offline = 0
    for s in net.sites:  # each sells until its evaluators decline three times in a row
        misses = 0
        while misses < 3:
            got = await net.sell(s, rnd.randint(1_000, max_ml))
            offline += got
            misses = misses + 1 if got == 0 else 0
    for s in net.sites:
        await net.set_online(s, True)
    for s in net.sites:
        await net.sync(s)
    return {"approved_online_kop": online, "approved_offline_kop": offline}


def run(tmp: Path, *, n_sites: int = 5, balance_kop: int = 2_000_000, credit_line_kop: int = 500_000,
        exposure_kop: int | None = 1_000_000, seed: int = 1) -> dict[str, int]:
    """One network and its scenario; the figures by name."""
    net = Network(tmp, n_sites=n_sites, balance_kop=balance_kop, credit_line_kop=credit_line_kop,
                  exposure_kop=exposure_kop)
    try:
        figures = asyncio.run(scenario(net, seed=seed))
        figures.update(sites=n_sites, balance_kop=balance_kop, credit_line_kop=credit_line_kop,
                       exposure_kop=exposure_kop or 0, approved_total_kop=net.approved_total_kop,
                       bound_kop=net.bound_kop, within_bound=int(net.approved_total_kop <= net.bound_kop),
                       host_balance_after_kop=net.ledger.balance_kop(CONTRACT))
        return figures
    finally:
        net.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sites", type=int, default=5)
    ap.add_argument("--balance-kop", type=int, default=2_000_000)
    ap.add_argument("--credit-line-kop", type=int, default=500_000)
    ap.add_argument("--exposure-kop", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        figures = run(Path(d) / "with", n_sites=a.sites, balance_kop=a.balance_kop, credit_line_kop=a.credit_line_kop,
                      exposure_kop=a.exposure_kop, seed=a.seed)
        bare = run(Path(d) / "without", n_sites=a.sites, balance_kop=a.balance_kop,
                   credit_line_kop=a.credit_line_kop, exposure_kop=None, seed=a.seed)
    for k, v in figures.items():
        print(f"{k}: {v}")
    print(f"no_allowance_approved_total_kop: {bare['approved_total_kop']}")
    print(f"no_allowance_over_bound_kop: {max(0, bare['approved_total_kop'] - a.balance_kop - a.credit_line_kop)}")


if __name__ == "__main__":
    main()
