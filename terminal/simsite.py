"""The simulated site: the real daemon with simulated devices and simulated people.

``edgepos simulate`` runs this: the edge daemon (journal, replica, native evaluator, local
API on loopback) with barcode scanners on ptys for its tills and, when the site has pumps,
virtual fuel cards through the real pcscd and simulated dispensers; a traffic generator
plays shoppers (open a sale, scan or key the club card, quote, pay, sometimes redeem points,
return or top up) and drivers (insert the card, PIN, authorize, fill up) against the HTTP API
for a set simulated time. The network is created at an embedded host (:func:`_start_host`); the
daemon starts with no replica and provisions itself from the host's snapshots through the
broker (:func:`_provision`); :class:`HostChanges` changes master data at the host during the
run and sends a driver or shopper with each changed card. Progress goes to stderr; the summary,
checked against the journal and reconciled with the host ledger, to stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

import aiohttp

from authz.club_model import ClubStatus
from authz.fuel_model import mask_card_no
from authz.sample import SKU_CATEGORIES
from hw.sim.scanner import ScannerSim
from wire.bodies import FuelCompleted

from .apiauth import simulation_clients, simulation_token
from .config import SiteConfig, load_config
from .daemon import Daemon
from .replica import Replica

log = logging.getLogger("edgepos.sim")


@dataclass
class SiteReport:
    """What the simulated site did, counted by the traffic generator and by the journal."""

    sim_seconds: int = 0
    wall_seconds: float = 0.0
    requests: int = 0
    http_errors: Counter = field(default_factory=Counter)
    sales: Counter = field(default_factory=Counter)
    sales_kop: int = 0
    points_accrued: int = 0
    points_redeemed: int = 0
    returns: int = 0
    topups: Counter = field(default_factory=Counter)
    scans: int = 0
    fuel: Counter = field(default_factory=Counter)
    fuel_volume_ml: int = 0
    fuel_amount_kop: int = 0
    host_records: int = 0
    reconciliation: str = ""
    journal_records: int = 0
    journal_kinds: Counter = field(default_factory=Counter)
    checks: list[str] = field(default_factory=list)
    #: the changes made at the host during the run (:class:`HostChanges`), in order
    changes: list = field(default_factory=list)

    def render(self) -> str:
        """The summary for a terminal."""
        def num(x) -> str:
            return f"{x:,}".replace(",", " ")

        lines = [f"edgepos simulated site: {num(self.sim_seconds)} simulated seconds in "
                 f"{self.wall_seconds:.1f} s, {num(self.requests)} API requests", ""]
        lines.append(f"Store: {num(sum(self.sales.values()))} sales, {num(self.sales_kop // 100)} RUB, "
                     f"{num(self.scans)} scans")
        lines += [f"    {k:<24}{num(v):>8}" for k, v in sorted(self.sales.items())]
        lines.append(f"  points accrued {num(self.points_accrued)}, redeemed {num(self.points_redeemed)}, "
                     f"returns {num(self.returns)}")
        lines.append("  top-ups: " + ", ".join(f"{k} {num(v)}" for k, v in sorted(self.topups.items())))
        if self.fuel:
            lines.append(f"Fuel: {num(sum(self.fuel.values()))} pump transactions, "
                         f"{self.fuel_volume_ml / 1000:,.3f} L, {num(self.fuel_amount_kop // 100)} RUB".replace(",", " "))
            lines += [f"    {k:<24}{num(v):>8}" for k, v in sorted(self.fuel.items())]
        lines.append(f"Journal: {num(self.journal_records)} records: " +
                     ", ".join(f"{k} {num(v)}" for k, v in sorted(self.journal_kinds.items())))
        if self.http_errors:
            lines.append("HTTP errors: " + ", ".join(f"{k} {num(v)}" for k, v in sorted(self.http_errors.items())))
        if self.changes:
            lines.append("Changes at the host (host.master), each with the first decision at the site under it:")
            for change in self.changes:
                lines += change.render()
        if self.reconciliation:
            lines.append("Host ledger vs journal:")
            lines += ["  " + line for line in self.reconciliation.splitlines()]
        lines.append("Checks: " + ("; ".join(self.checks) if self.checks else "none"))
        return "\n".join(lines)


class Api:
    """The traffic generator's HTTP client: JSON, idempotency keys and each client's token
    (a till's for its till, the pump console's for the pumps, the operator's else), counted."""

    def __init__(self, session: aiohttp.ClientSession, base: str, report: SiteReport,
                 tokens: dict[str, str] | None = None) -> None:
        self.s, self.base, self.report = session, base, report
        self.tokens = tokens or {}
        self._keys = itertools.count(1)

    async def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """One request; POSTs get a fresh idempotency key (retried once on a dropped connection)."""
        headers = {"Idempotency-Key": f"sim-{next(self._keys):09d}"} if method == "POST" else {}
        token = simulation_token(self.tokens, path)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        for attempt in range(2):
            try:
                async with self.s.request(method, self.base + path, json=body, headers=headers) as r:
                    self.report.requests += 1
                    data = await r.json()
                    if r.status >= 400:
                        self.report.http_errors[f"{r.status} {data.get('error', {}).get('code', '?')}"] += 1
                    return r.status, data
            except aiohttp.ClientConnectionError:
                if attempt:
                    raise
        raise AssertionError("unreachable")


class Shoppers:
    """Shoppers at one till: one at a time, a new one every few simulated minutes."""

    def __init__(self, till_id: str, scanner: ScannerSim, replica: Replica, api: Api, report: SiteReport,
                 clock: "SimClock", rnd: random.Random) -> None:
        self.till_id, self.scanner, self.api, self.report, self.clock, self.rnd = till_id, scanner, api, report, clock, rnd
        self.replica = replica
        self.lock = asyncio.Lock()
        self.committed: list[tuple[str, int]] = []

    @property
    def club(self):
        """The club evaluator as the site holds it now (a replica update may replace it)."""
        return self.replica.club

    def _card(self) -> str:
        """A random active club card, by position (no object per card is built)."""
        while True:
            i = self.rnd.randrange(self.club.card_count)
            if self.club.card_at(i).status is ClubStatus.ACTIVE:
                return self.club.card_number(i)

    async def run(self) -> None:
        """Serve shoppers until the simulated time is up."""
        while not self.clock.over():
            await self.clock.sleep(self.rnd.uniform(30, 240))
            if self.clock.over():
                break
            await self.one_shopper()

    async def one_shopper(self) -> None:
        """One random shopper at this till."""
        async with self.lock:
            await self._one_shopper()

    async def shopper_with(self, card: str) -> str:
        """A shopper of the change scenario: one line of 999 RUB, ``card`` scanned, paid from
        the card's balance as far as it goes (the rest in money); returns what the till heard."""
        base = f"/v1/tills/{self.till_id}"
        async with self.lock:
            st, sale = await self.api.call("POST", f"{base}/sales", {"lines": [
                {"sku": "SKU000999", "category": SKU_CATEGORIES[0], "amount_kop": 99_900}]})
            if st != 201:
                return f"sale not opened: HTTP {st}"
            sid = sale["sale_id"]
            self.scanner.scan(card)
            self.report.scans += 1
            for _ in range(100):
                st, got = await self.api.call("GET", f"{base}/sales/{sid}")
                if got.get("card") or got.get("card_error") or got.get("notice"):
                    break
                await asyncio.sleep(0.01)
            st, q = await self.api.call("GET", f"{base}/sales/{sid}/quote")
            if st != 200 or q.get("reason") != "OK":
                await self.api.call("POST", f"{base}/sales/{sid}/void", {})
                self.report.sales["VOIDED"] += 1
                why = q.get("reason") if st == 200 else f"HTTP {st} {q.get('error', {}).get('code', '?')}"
                return f"refused: {why}"
            from_card = min(q["total_kop"], q["balance_kop"]) if q["payments_enabled"] else 0
            st, done = await self.api.call("POST", f"{base}/sales/{sid}/commit", {"payment": {
                "points": 0, "card_balance_kop": from_card, "money_kop": q["total_kop"] - from_card}})
            if st != 200:
                return f"commit: HTTP {st}"
            result = done["result"]
            self.report.sales[result["reason"]] += 1
            if result["approved"]:
                self.report.sales_kop += done["total_kop"]
                self.report.points_accrued += result["accrued_points"]
                self.report.points_redeemed += result["redeemed_points"]
                self.committed.append((sid, done["total_kop"]))
            return (f"{result['reason']}: balance {q['balance_kop'] / 100:.2f} RUB, "
                    f"{from_card / 100:.2f} RUB paid from it")

    async def _one_shopper(self) -> None:
        rnd, base = self.rnd, f"/v1/tills/{self.till_id}"
        if self.committed and rnd.random() < 0.04:
            sale_id, total = self.committed.pop(rnd.randrange(len(self.committed)))
            st, r = await self.api.call("POST", f"{base}/returns", {"sale_id": sale_id, "returned_kop": total})
            if st == 200:
                self.report.returns += 1
            return
        card = self._card()
        if rnd.random() < 0.05:
            st, r = await self.api.call("POST", f"{base}/topups",
                                        {"card_no": card, "amount_kop": rnd.choice((50_000, 200_000, 1_000_000))})
            if st == 200:
                self.report.topups[r["reason"]] += 1
            return
        lines = [{"sku": f"SKU{rnd.randrange(10**6):06d}", "category": rnd.choice(SKU_CATEGORIES),
                  "amount_kop": rnd.choice((29_900, 99_900, 249_900, 499_900))} for _ in range(rnd.randint(1, 4))]
        st, sale = await self.api.call("POST", f"{base}/sales", {"lines": lines})
        if st != 201:
            return
        sid = sale["sale_id"]
        if rnd.random() < 0.85:
            self.scanner.scan(card)
            self.report.scans += 1
            for _ in range(100):  # the scan reaches the sale through the pty and the driver
                st, got = await self.api.call("GET", f"{base}/sales/{sid}")
                if got.get("card"):
                    break
                await asyncio.sleep(0.01)
        else:
            await self.api.call("POST", f"{base}/sales/{sid}/card", {"card_no": card})
        st, q = await self.api.call("GET", f"{base}/sales/{sid}/quote")
        if st != 200 or q["reason"] != "OK":
            await self.api.call("POST", f"{base}/sales/{sid}/void", {})
            self.report.sales["VOIDED"] += 1
            return
        points = q["max_redeem_points"] if rnd.random() < 0.4 else 0
        rest = q["total_kop"] - points * 100
        from_card = min(rest, q["balance_kop"]) if q["payments_enabled"] and rnd.random() < 0.2 else 0
        st, done = await self.api.call("POST", f"{base}/sales/{sid}/commit",
                                       {"payment": {"points": points, "card_balance_kop": from_card,
                                                    "money_kop": rest - from_card}})
        if st == 200:
            result = done["result"]
            self.report.sales[result["reason"]] += 1
            if result["approved"]:
                self.report.sales_kop += done["total_kop"]
                self.report.points_accrued += result["accrued_points"]
                self.report.points_redeemed += result["redeemed_points"]
                self.committed.append((sid, done["total_kop"]))


class Drivers:
    """Drivers at one pump: insert a (virtual) fuel card, PIN, authorize, fill up, pull it."""

    PIN = "1234"

    def __init__(self, lane, reader_port: int, replica: Replica, api: Api, report: SiteReport,
                 clock: "SimClock", rnd: random.Random, keys, card_dir: Path) -> None:
        from authz.fuel_model import CardStatus, ProductGroup

        self.lane, self.port, self.api, self.report, self.clock, self.rnd = lane, reader_port, api, report, clock, rnd
        self.keys, self.card_dir = keys, card_dir
        self.replica = replica
        self._usable = lambda c: c.status is CardStatus.ACTIVE and ProductGroup.FUEL in c.groups
        self.path = f"/v1/pumps/{lane.pump_id}"
        self.lock = asyncio.Lock()

    async def run(self) -> None:
        """Serve drivers until the simulated time is up."""
        while not self.clock.over():
            await self.clock.sleep(self.rnd.uniform(60, 300))
            if self.clock.over():
                break
            await self.one_driver()

    async def _until(self, cond, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            view = self.lane.view()
            if cond(view) or time.monotonic() > deadline:
                return view
            await asyncio.sleep(0.01)

    def _virtual_card(self, card):
        from hw.sim.card import VirtualCard
        from hw.sim.personalise import personalise

        path = self.card_dir / f"{card.card_no}.json"
        if not path.exists():  # a card keeps its own counters from visit to visit
            personalise(card, self.PIN, self.keys).save(path)
        return VirtualCard(path, port=self.port)

    async def one_driver(self, card=None, body: dict | None = None) -> str:
        """One driver at this pump: ``card`` (else a random usable one) and the request
        ``body`` (else a random product and preset); returns what the site answered."""
        async with self.lock:  # the change scenario's drivers queue with the others
            return await self._one_driver(card, body)

    async def _one_driver(self, card, body: dict | None) -> str:
        from hw.sim.pcscd import settle_empty_reader

        rnd = self.rnd
        while card is None:  # a random card of the network, by position (no object per card is built)
            card = self.replica.fuel_model.cards[rnd.randrange(self.replica.fuel_card_count)]
            if not self._usable(card):
                card = None
        vcard = self._virtual_card(card)
        try:
            await asyncio.to_thread(settle_empty_reader, self.lane.config.reader)
        except TimeoutError:  # another PC/SC client holds a card in this reader
            self.report.fuel["reader busy"] += 1
            return "reader busy"
        before = self.lane.view()["notice"]
        vcard.insert()
        try:
            # pcscd notices the card at its next poll (<= 0.4 s); then the lane reads it
            view = await self._until(lambda v: v["state"] == "card_read"
                                     or (v["card_present"] and v["state"] == "idle" and v["notice"] != before))
            if view["state"] != "card_read":
                why = view["notice"].removeprefix("card refused: ")  # the lane's notice may say it already
                self.report.fuel[f"card refused: {why}"] += 1
                return f"card refused: {why}"
            if body is None and rnd.random() < 0.05:
                await self.api.call("POST", f"{self.path}/pin", {"pin": "0000"})
            st, ans = await self.api.call("POST", f"{self.path}/pin", {"pin": self.PIN})
            if st != 200:
                self.report.fuel["PIN refused"] += 1
                return "PIN refused"
            if body is None:
                product = rnd.choice(self.lane.config.products)
                body = {"product": product}
                kind = rnd.randrange(3)
                if kind == 1:
                    body["preset_volume_ml"] = rnd.choice((20_000, 40_000, 60_000))
                elif kind == 2:
                    body["preset_amount_kop"] = rnd.choice((100_000, 200_000, 300_000))
            product = body["product"]
            kind = 1 if "preset_volume_ml" in body else 2 if "preset_amount_kop" in body else 0
            st, ans = await self.api.call("POST", f"{self.path}/authorize", body)
            if st != 200:
                return f"HTTP {st} {ans.get('error', {}).get('code', '?')}"
            self.report.fuel[ans["reason"]] += 1
            if not ans["approved"]:
                return f"declined: {ans['reason']}"
            answer = (f"{ans['reason']}, {ans['volume_ml'] / 1000:.3f} L at "
                      f"{ans['unit_price_kop_per_l'] / 100:.2f} RUB/L (list {ans['list_price_kop_per_l'] / 100:.2f})")
            pump = self.lane.pump
            pump.lift_nozzle(product)
            if kind == 0:  # no preset: the driver hangs up when the tank is full
                want = rnd.randint(10_000, max(10_000, min(ans["volume_ml"], 80_000)))
                await self._until(lambda v: v["state"] != "dispensing" and v["state"] != "authorized"
                                  or (v["txn"] or {}).get("delivered_volume_ml", 0) >= want, 60)
            else:
                await self._until(lambda v: v["state"] not in ("authorized", "dispensing"), 60)
            pump.hang_up()
            await self._until(lambda v: v["state"] in ("card_read", "idle", "pin_ok"), 30)
            return answer
        finally:
            vcard.pull()
            await self._until(lambda v: not v["card_present"], 5)


@dataclass
class HostChange:
    """One change made at the host during the run, and the first decision the site made under it."""

    what: str
    at_sim_s: float = 0.0
    asked: str = ""
    answered: str = ""
    held_wall_s: float | None = None  #: real seconds until the site's replica held the change
    after_sim_s: float | None = None
    after_wall_s: float | None = None

    def render(self) -> list[str]:
        """Two lines for the summary."""
        head = f"  t={int(self.at_sim_s):>5} s  {self.what}"
        if self.after_wall_s is None:
            return [head, f"      first decision: {self.answered or 'none (the site never held the change)'}"]
        return [head, f"      held at the site {self.held_wall_s:.2f} s real later; first decision "
                      f"{self.after_sim_s:.0f} simulated s ({self.after_wall_s:.2f} s real) after the change: "
                      f"{self.asked} -> {self.answered}"]


class _FreePump:
    """The change scenario's driver goes to a pump no other driver is at, if there is one."""

    def __init__(self, drivers: list["Drivers"]) -> None:
        self.drivers = drivers

    async def one_driver(self, card, body: dict) -> str:
        """:meth:`Drivers.one_driver` at the first free pump (else the first pump)."""
        free = next((d for d in self.drivers if not d.lock.locked()), self.drivers[0])
        return await free.one_driver(card, body)


class HostChanges:
    """The loop "the host is the source of truth": changes made at the host through
    :mod:`host.master` at fixed simulated times (in a thread: they block on the ledger), each
    followed, once the site holds it, by a driver or shopper who uses the changed card."""

    NEW_FUEL_CARD = "7005839000000010"

    def __init__(self, daemon: Daemon, ledger_url: str, drivers: list["Drivers"], shoppers: list["Shoppers"],
                 clock: SimClock, report: SiteReport, tmp: Path, say) -> None:
        self.d, self.ledger_url, self.drivers, self.shoppers = daemon, ledger_url, drivers, shoppers
        self.clock, self.report, self.tmp, self.say = clock, report, tmp, say
        self.station_id = daemon.config.station_id

    def _master(self, fn, *args, **kwargs):
        """Call a host.master function on a ledger connection of this thread."""
        from host.ledger import Ledger

        ledger = Ledger.open(self.ledger_url)
        try:
            return fn(ledger, *args, **kwargs)
        finally:
            ledger.close()

    def _fuel_cards_that_buy(self, n: int):
        """``n`` fuel cards (not yet used this run) the site approves 10 L of a product for, with that product."""
        from authz.fuel_model import FuelRequest

        r, now, out = self.d.replica, int(time.time()), []
        products = self.drivers[0].lane.config.products
        for i in range(r.fuel_card_count):
            card = r.fuel_model.cards[i]
            if not self.drivers[0]._usable(card) or (self.drivers[0].card_dir / f"{card.card_no}.json").exists():
                continue
            for p in products:
                if r.fuel.authorize(FuelRequest(card.card_no, self.station_id, p, now,
                                                preset_volume_ml=40_000)).reason.name == "OK":
                    out.append((card, p))
                    break
            if len(out) == n:
                return out
        raise RuntimeError("the network has too few fuel cards that buy at this station")

    async def run(self) -> None:
        """Make every change at its time; return when the last decision is made."""
        from authz.fuel_model import Limit, LimitUnit, Period
        from host import master

        plan = []
        try:
            fuel_subjects = self._fuel_cards_that_buy(5) if self.drivers else None
        except RuntimeError as exc:  # a tiny network: the fuel changes are left out, said so
            self.say(f"host changes: no fuel changes ({exc})")
            fuel_subjects = None
        if fuel_subjects:
            (blocked, p1), (limited, p2), (topped, p3), (priced, p4), (template, p5) = fuel_subjects
            litre = next((lim for lim in limited.limits if lim.unit is LimitUnit.MILLILITRES), None)
            low = Limit(litre.limit_id if litre else 90, LimitUnit.MILLILITRES, Period.DAY, 15_000)
            contract = next(c for c in self.d.replica.fuel_model.contracts if c.contract_id == topped.contract_id)
            station = self.d.replica.fuel_model.stations[self.d.replica.fuel_model.station_index[cast(int, self.station_id)]]
            new_price = station.prices_kop_per_l[p4] + 1_000
            pump = _FreePump(self.drivers)
            m = mask_card_no
            plan += [
                (f"fuel card {m(blocked.card_no)} blocked (stolen)",
                 lambda: self._master(master.block_card, blocked.card_no, reason="stolen"),
                 lambda: self.d.replica.fuel.on_stop_list(blocked.card_no),
                 f"card {m(blocked.card_no)} inserted, 20 L of {p1}",
                 lambda: pump.one_driver(blocked, {"product": p1, "preset_volume_ml": 20_000})),
                (f"litre limit {low.limit_id} of fuel card {m(limited.card_no)} lowered "
                 f"{'from ' + str(litre.amount // 1000) + ' L/' + litre.period.name.lower() + ' ' if litre else ''}"
                 f"to 15 L/day",
                 lambda: self._master(master.set_limit, limited.card_no, low),
                 lambda: low in self.d.replica.fuel_card(limited.card_no).limits,
                 f"card {m(limited.card_no)}, 40 L of {p2}",
                 lambda: pump.one_driver(limited, {"product": p2, "preset_volume_ml": 40_000})),
                (f"contract {topped.contract_id} topped up by 50 000 RUB (was {contract.balance_kop // 100:,} RUB)"
                 .replace(",", " "),
                 lambda: self._master(master.top_up_contract, topped.contract_id, 5_000_000, note="simulated top-up"),
                 lambda: self._balance(topped.contract_id) > contract.balance_kop,
                 f"card {m(topped.card_no)} of the contract, 3 000 RUB of {p3}",
                 lambda: pump.one_driver(topped, {"product": p3, "preset_amount_kop": 300_000})),
                (f"price of {p4} at station {self.station_id} changed from "
                 f"{station.prices_kop_per_l[p4] / 100:.2f} to {new_price / 100:.2f} RUB/L",
                 lambda: self._master(master.set_price, self.station_id, p4, new_price),
                 lambda: self._price(p4) == new_price,
                 f"card {m(priced.card_no)}, 1 000 RUB of {p4}",
                 lambda: pump.one_driver(priced, {"product": p4, "preset_amount_kop": 100_000})),
                (f"new fuel card {m(self.NEW_FUEL_CARD)} issued on contract {template.contract_id} "
                 "and personalised (terminal/issuing.py)",
                 lambda: self._issue(template),
                 lambda: self.d.replica.has_fuel_card(self.NEW_FUEL_CARD),
                 f"new card {m(self.NEW_FUEL_CARD)} inserted, 30 L of {p5}",
                 lambda: pump.one_driver(self.d.replica.fuel_card(self.NEW_FUEL_CARD),
                                         {"product": p5, "preset_volume_ml": 30_000})),
            ]
        if self.shoppers:
            till = self.shoppers[0]
            club_blocked, replaced = till._card(), self._club_card_with_balance()
            while replaced == club_blocked:
                club_blocked = till._card()
            from authz.sample import club_card_number
            new_club = club_card_number(99_000_001)
            m = mask_card_no
            plan += [
                (f"club card {m(club_blocked)} blocked (lost)",
                 lambda: self._master(master.block_card, club_blocked, reason="lost"),
                 lambda: self._club_status(club_blocked) is ClubStatus.BLOCKED,
                 f"club card {m(club_blocked)} scanned at {till.till_id}",
                 lambda: till.shopper_with(club_blocked)),
                (lambda: f"club card {m(replaced)} replaced by {m(new_club)}, the account's balance "
                         f"({self._club_balance(replaced) / 100:.2f} RUB) carried over",
                 lambda: self._master(master.replace_club_card, replaced, new_club),
                 lambda: self._club_status(new_club) is ClubStatus.ACTIVE,
                 f"replacement card {m(new_club)} scanned at {till.till_id}, 999 RUB paid from its balance",
                 lambda: till.shopper_with(new_club)),
            ]
        # a change's description is a string, or a function read just before it is made
        self.report.changes = [HostChange(what if isinstance(what, str) else "") for what, *_ in plan]
        for i, (change, (what, make, held, asked, use)) in enumerate(zip(self.report.changes, plan)):
            await self.clock.sleep(self.clock.duration_s * (i + 1) / (len(plan) + 2) - self.clock.now())
            what = change.what = what if isinstance(what, str) else what()
            change.at_sim_s, wall0 = self.clock.now(), time.monotonic()
            await asyncio.to_thread(make)
            self.say(f"host: {what}")
            while not held():
                if time.monotonic() - wall0 > 30:
                    change.answered = "the site did not hold the change within 30 s"
                    break
                await asyncio.sleep(0.01)
            else:
                change.held_wall_s = time.monotonic() - wall0
                change.asked = asked
                change.answered = await use()
                change.after_sim_s, change.after_wall_s = self.clock.now() - change.at_sim_s, time.monotonic() - wall0
                self.say(f"site: {asked} -> {change.answered}")

    def _balance(self, contract_id: int) -> int:
        fm = self.d.replica.fuel_model
        return fm.contracts[fm.contract_index[contract_id]].balance_kop

    def _price(self, product: str) -> int:
        fm = self.d.replica.fuel_model
        return fm.stations[fm.station_index[cast(int, self.station_id)]].prices_kop_per_l.get(product)

    def _club_balance(self, card_no: str) -> int:
        """The money balance of the account of club card ``card_no``, as the site holds it."""
        m = self.d.replica.club_model
        return m.accounts[m.account_index[m.cards[m.card_index[card_no]].account_id]].balance_kop

    def _club_card_with_balance(self) -> str:
        """An active club card whose account holds money (else any active card)."""
        m = self.d.replica.club_model
        for card in m.cards:
            acct = m.accounts[m.account_index[card.account_id]]
            if card.status is ClubStatus.ACTIVE and acct.status is ClubStatus.ACTIVE and acct.balance_kop > 0:
                return card.card_no
        return self.shoppers[0]._card()

    def _club_status(self, card_no: str):
        m = self.d.replica.club_model
        i = m.card_index.get(card_no)
        return None if i is None else m.cards[i].status

    def _issue(self, template) -> None:
        """Issue the new card at the host and write its virtual card (the card the driver inserts)."""
        import argparse
        from datetime import date, timedelta

        from host.master import issue_fuel_card
        from .fuel import SIM_ISSUER_KEY
        from .issuing import VirtualCardWriter, write_private

        secrets = self.tmp / "issuing"
        secrets.mkdir(exist_ok=True)
        pin_file, key_file = secrets / "pin", secrets / "issuer.key"
        write_private(pin_file, Drivers.PIN + "\n", overwrite=True)
        write_private(key_file, SIM_ISSUER_KEY.hex() + "\n", overwrite=True)
        card = replace(template, card_no=self.NEW_FUEL_CARD, expires_on=date.today() + timedelta(days=700))
        args = argparse.Namespace(personalise=str(self.drivers[0].card_dir / f"{card.card_no}.json"),
                                  pin_file=str(pin_file), issuer_key_file=str(key_file), key_version=1,
                                  overwrite=False)
        write = VirtualCardWriter().prepare(card, args)
        issued = self._master(issue_fuel_card, card)
        write(issued)


class SimClock:
    """Simulated time: ``speed`` simulated seconds per real second, for ``duration`` of them."""

    def __init__(self, duration_s: int, speed: float) -> None:
        self.duration_s, self.speed = duration_s, speed
        self.t0 = time.monotonic()

    def now(self) -> float:
        """Simulated seconds since the start."""
        return (time.monotonic() - self.t0) * self.speed

    def over(self) -> bool:
        """Is the simulated time up?"""
        return self.now() >= self.duration_s

    async def sleep(self, sim_s: float) -> None:
        """Wait ``sim_s`` simulated seconds (or until the end)."""
        left = (self.duration_s - self.now()) / self.speed
        await asyncio.sleep(max(0.0, min(sim_s / self.speed, left)))


async def run_site(*, config: SiteConfig | None = None, sim_seconds: int = 3_600, speed: float = 120.0,
                   seed: int = 1, fuel_cards: int = 2_000, club_accounts: int = 2_000,
                   data_dir: Path | None = None, progress=None, cabinets=None) -> SiteReport:
    """Run the simulated site for ``sim_seconds`` simulated seconds; return the report.
    ``cabinets`` (a :class:`host.web.demo.DemoCabinets`) serves the web cabinets on the host's
    ledger from the start, and is given the report after the day while the host still runs."""
    say = progress or (lambda _m: None)
    report = SiteReport(sim_seconds=sim_seconds)
    rnd = random.Random(seed)
    t0 = time.perf_counter()
    base_cfg = config or load_config(None)
    with tempfile.TemporaryDirectory(prefix="edgepos-site-") as tmp:
        scanners = {t.till_id: ScannerSim(suffix=t.scanner_suffix) for t in base_cfg.tills}
        pcscd = None
        try:
            cfg = replace(base_cfg, data_dir=data_dir or Path(tmp) / "data",
                          tills=tuple(replace(t, scanner_port=scanners[t.till_id].link) for t in base_cfg.tills),
                          api=replace(base_cfg.api, host="127.0.0.1", port=0, simulation=True, tls_cert_file=None,
                                      tls_key_file=None, tls_client_ca_file=None))
            cfg, tokens = simulation_clients(cfg)  # fresh tokens, known only to this process
            if cfg.pumps:
                from hw.sim.pcscd import ensure_pcscd
                say("starting the PC/SC stack (pcscd with the vpcd virtual readers)")
                pcscd = await asyncio.to_thread(ensure_pcscd)
                readers = {name: 35963 + i for i, name in enumerate(sorted(pcscd.readers))}
                missing = [p.reader for p in cfg.pumps if p.reader not in readers]
                if missing:
                    raise RuntimeError(f"pcscd has no reader {missing[0]!r} (it has {sorted(readers)})")
            say(f"generating the network's master data: {fuel_cards:,} fuel cards, {club_accounts:,} club accounts")
            master = Replica.simulated(cfg, fuel_cards=fuel_cards, club_accounts=club_accounts, seed=seed)
            host = await _start_host(cfg, master, Path(tmp), say)
            if cabinets is not None:
                await cabinets.start(host.ledger_url)
            del master  # the site gets the network from the host only, through the broker
            cfg = host.site_config
            from hw.sim.pump import SimulatedPump
            from .fuel import sim_key_store
            keys = sim_key_store()
            pumps = {p.pump_id: SimulatedPump(p.pump_id, products=p.products, time_scale=speed) for p in cfg.pumps}
            daemon = Daemon(cfg, None, keys=keys, pumps=pumps, progress_interval_s=1.0)
            async with _serving(daemon, say):
                replica = daemon.replica
                for s in daemon.scanners.values():
                    await asyncio.wait_for(s.wait_connected(), 10)
                clock = SimClock(sim_seconds, speed)
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
                    api = Api(session, f"http://127.0.0.1:{daemon.port}", report, tokens)
                    people = [Shoppers(t.till_id, scanners[t.till_id], replica, api, report, clock,
                                       random.Random(rnd.random())) for t in cfg.tills]
                    card_dir = Path(tmp) / "cards"
                    card_dir.mkdir()
                    shoppers = list(people)
                    drivers = [Drivers(daemon.pumps[p.pump_id], readers[p.reader], replica, api, report, clock,
                                       random.Random(rnd.random()), keys, card_dir) for p in cfg.pumps]
                    people += drivers
                    say(f"site {cfg.site_id} up on port {daemon.port}: {len(cfg.tills)} till(s), "
                        f"{len(cfg.pumps)} pump(s); "
                        f"{sim_seconds:,} simulated seconds at {speed:g}x")
                    tasks = [asyncio.create_task(p.run()) for p in people]
                    changes = HostChanges(daemon, host.ledger_url, drivers, shoppers, clock, report, Path(tmp), say)
                    tasks.append(asyncio.create_task(changes.run(), name="changes at the host"))
                    while not all(t.done() for t in tasks):
                        await asyncio.wait(tasks, timeout=1.0)
                        say(f"t={int(min(clock.now(), sim_seconds)):>6} s  sales {sum(report.sales.values()):>5}  "
                            f"fuel {sum(report.fuel.values()):>4}  requests {report.requests:>6}  "
                            f"errors {sum(report.http_errors.values())}")
                    for t in tasks:
                        t.result()  # a crashed generator is an error of the run, not a quiet gap
                say("waiting for the host to acknowledge every journal record")
                await daemon.sync.wait_flushed(120)
                _check_against_journal(daemon, report)
                journal_path = daemon.journal_path
            if cabinets is not None:  # the host stays up while the cabinets show the day
                _reconcile(host, journal_path, report)
                report.wall_seconds = time.perf_counter() - t0
                cabinets.print_sign_ins()
                print(report.render(), flush=True)
                await cabinets.after_day()
            await host.stop()
            if cabinets is None:
                _reconcile(host, journal_path, report)
        finally:
            for s in scanners.values():
                s.close()
            if pcscd is not None:
                pcscd.stop()
            if "host" in locals():
                await host.stop()
    report.wall_seconds = time.perf_counter() - t0
    return report


@contextlib.asynccontextmanager
async def _serving(daemon: Daemon, say):
    """The daemon provisioned (:func:`_provision`) and serving, stopped at the end."""
    await _provision(daemon, say)
    try:
        yield daemon
    finally:
        await daemon.stop()


async def _provision(daemon: Daemon, say) -> None:
    """Start ``daemon`` with no replica: it provisions itself from the host's snapshots
    through the broker; say what it waits for every second, and when it serves."""
    from .provision import tables_needed

    say(f"site {daemon.config.site_id}: no replica; waiting for the host's snapshots of "
        + ", ".join(t.value for t in tables_needed(daemon.config)) + " through the broker")
    start = asyncio.create_task(daemon.start(), name="site start")
    while not start.done():
        await asyncio.wait([start], timeout=1.0)
        if not start.done() and daemon.store is not None:
            say(f"provisioning: {daemon.provision_status().text()}")
    start.result()
    say(f"site {daemon.config.site_id} provisioned from the host in {daemon.provisioned_in_s or 0:.2f} s "
        f"({daemon.replica.fuel_card_count:,} fuel cards): serving")


class SimHost:
    """The central host of the simulation: an embedded broker, a SQLite ledger loaded with the
    replica's master data, one host worker, and the keys of the site and the host."""

    def __init__(self, broker, ledger_url: str, worker, task: asyncio.Task, stop: asyncio.Event,
                 site_config: SiteConfig) -> None:
        self.broker, self.ledger_url, self.worker, self.task, self._stop = broker, ledger_url, worker, task, stop
        self.site_config = site_config
        self.stopped = False

    async def stop(self) -> None:
        """Stop the worker and the broker (idempotent)."""
        if self.stopped:
            return
        self.stopped = True
        self._stop.set()
        try:
            await asyncio.wait_for(self.task, 30)
        finally:
            await asyncio.to_thread(self.broker.stop)


async def _start_host(cfg: SiteConfig, replica: Replica, tmp: Path, say) -> SimHost:
    from host.keys import ensure_replica_keys
    from host.ledger import Ledger
    from host.master import import_club_model, import_fuel_model
    from host.worker import Worker, load_keys
    from wire import new_key, write_key

    from .broker import embedded_broker

    keys_dir = tmp / "host-keys"
    (keys_dir / "sites").mkdir(parents=True)
    replica_keys = ensure_replica_keys(keys_dir)  # a fresh pair for this run: the host signs, the site verifies
    write_key(keys_dir / "sites" / f"{cfg.site_id}.key", new_key())
    say("starting the host: an embedded MQTT broker (mosquitto), a SQLite ledger, a host worker")
    broker = embedded_broker(tmp / "broker")
    await asyncio.to_thread(broker.start)
    ledger_url = f"sqlite:///{tmp / 'host-ledger.sqlite'}"

    def load_master() -> None:
        ledger = Ledger.open(ledger_url)
        try:
            if replica.fuel_model is not None:
                import_fuel_model(ledger, replica.fuel_model)
            if replica.club_model is not None:
                import_club_model(ledger, replica.club_model)
        finally:
            ledger.close()
    await asyncio.to_thread(load_master)
    stop = asyncio.Event()
    worker = Worker(ledger_url, load_keys(keys_dir), hostname="127.0.0.1", port=broker.port)
    task = asyncio.create_task(worker.run(stop), name="host worker")
    site_cfg = replace(cfg, broker=replace(cfg.broker, url=broker.url),
                       keys=replace(cfg.keys, site_key_file=str(keys_dir / "sites" / f"{cfg.site_id}.key"),
                                    host_key_file=str(replica_keys.verify_key_file)))
    return SimHost(broker, ledger_url, worker, task, stop, site_cfg)


def _reconcile(host: SimHost, journal_path: Path, report: SiteReport) -> None:
    """Hold the host ledger against the site's journal: counts and sums must match exactly."""
    from host.ledger import Ledger
    from host.reconciliation import reconcile

    ledger = Ledger.open(host.ledger_url)
    try:
        result = reconcile(ledger, [journal_path])
    finally:
        ledger.close()
    report.host_records = result.records
    report.reconciliation = result.summary()
    report.checks.append(f"host ledger == journal: {'OK' if result.ok else 'MISMATCH'}")
    if not result.ok:
        raise AssertionError("the host ledger does not match the journal:\n" + report.render())


def _check_against_journal(daemon: Daemon, report: SiteReport) -> None:
    """Count the journal and hold it against what the generator saw."""
    kinds: Counter = Counter()
    accrued = redeemed = 0
    seq = 0
    while True:
        chunk = daemon.journal.after(seq, 10_000)
        if not chunk:
            break
        for r in chunk:
            kinds[r.kind] += 1
            if r.kind == "till.sale_committed":
                accrued += r.body["accrued_points"]
                redeemed += r.body["redeemed_points"]
            elif r.kind == FuelCompleted.KIND:
                done = FuelCompleted.from_json(r.body)
                report.fuel_volume_ml += done.delivered_volume_ml
                report.fuel_amount_kop += done.amount_kop
        seq = chunk[-1].seq
    report.journal_kinds = kinds
    report.journal_records = sum(kinds.values())
    committed = report.sales.get("OK", 0)
    ok = kinds["till.sale_committed"] == committed and accrued == report.points_accrued \
        and redeemed == report.points_redeemed
    report.checks.append(f"journal commits {kinds['till.sale_committed']} == approved sales {committed}, "
                         f"points accrued {accrued} and redeemed {redeemed} match: {'OK' if ok else 'MISMATCH'}")
    if report.fuel:
        approved = sum(v for k, v in report.fuel.items() if k in ("OK", "LIMIT", "BALANCE"))
        fuel_ok = kinds["fuel.completed"] == approved
        report.checks.append(f"fuel completions {kinds['fuel.completed']} == approved authorizations {approved}: "
                             f"{'OK' if fuel_ok else 'MISMATCH'}")
        ok = ok and fuel_ok
    if not ok:
        raise AssertionError("the journal does not match what the tills were told:\n" + report.render())


def stderr_progress(msg: str) -> None:
    """Progress on stderr (one line a second)."""
    print(f"edgepos: {msg}", file=sys.stderr, flush=True)
