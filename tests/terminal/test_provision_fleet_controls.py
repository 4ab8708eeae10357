"""Issue 11: a card's fleet controls and its new limits, set at the host through host.master,
reach a running site's replica through the real host worker and the real Mosquitto: the
site's replica store holds the FuelCard with them (the rows it verified and applied), and its
model holds the card too. The pump lanes open their readers through pcscd: run under
``flock /tmp/edgepos-pcscd.lock``.

The site runs its default (native) evaluator; the test asserts on the replica data it holds
and on the decisions of the evaluator the lanes use: a purchase outside the card's time
windows is approved with an exception while the card alerts, and declined once it declines."""

from __future__ import annotations

import asyncio
import time

from authz.fuel_model import FuelRequest, Limit, LimitUnit, OnBreach, Period, RuleException, StationScope, TimeWindow
from authz.localtime import local_weekday_minute
from authz.reasons import Reason
from wire import Table

from .test_provision import _wait, provisioned_site

WEEKDAYS = TimeWindow(frozenset(range(5)), 7 * 60, 19 * 60)
SAT_NIGHT = TimeWindow(frozenset({5}), 22 * 60, 6 * 60)


def test_controls_set_at_the_host_reach_a_running_sites_replica(tmp_path):
    from host import master

    async def main() -> None:
        async with provisioned_site(tmp_path, fuel_cards=200, club_accounts=20) as site:
            host, d, sim = site.host, site.daemon, site.generated

            async def on_host(fn, *args, **kwargs):  # a host.master change, on its own connection
                ledger = host.ledger()
                try:
                    return await asyncio.to_thread(fn, ledger, *args, **kwargs)
                finally:
                    ledger.close()

            fuel = sim.fuel_model
            now = int(time.time())
            station = fuel.stations[0].station_id

            def ask(card_no, product):
                return d.replica.fuel.authorize(FuelRequest(card_no, station, product, now))
            card, product = next((c, p.code) for c in fuel.cards for p in fuel.products
                                 if p.group in c.groups and ask(c.card_no, p.code).approved)
            tz = fuel.contracts[fuel.contract_index[card.contract_id]].tz
            weekday, minute = local_weekday_minute(now, tz)
            elsewhen = TimeWindow(frozenset({(weekday + 3) % 7}), 10 * 60, 11 * 60)  # never now

            def stored():  # the site's replica store: the rows it verified and applied
                return next(r.card for r in d.store.rows(Table.FUEL_CARDS) if r.card.card_no == card.card_no)
            assert stored().products is None and stored().windows == ()
            await on_host(master.change_card_controls, card.card_no, products=frozenset({product}),
                          windows=(WEEKDAYS, SAT_NIGHT), station_scope=StationScope.LISTED,
                          station_ids=frozenset({station}), on_breach=OnBreach.ALERT)
            lid = max((lim.limit_id for lim in card.limits), default=0) + 1
            await on_host(master.set_limit, card.card_no,
                          Limit(lid, LimitUnit.PURCHASES, Period.QUARTER, 30, on_breach=OnBreach.ALERT))
            want = await on_host(lambda ledger: ledger.fuel_card(card.card_no))
            assert want.limits[-1].unit is LimitUnit.PURCHASES
            await _wait(lambda: stored() == want, "the card's controls and limit in the site's replica store")
            got = stored()
            assert (got.products, got.windows, got.station_scope, got.station_ids, got.on_breach) == (
                frozenset({product}), (WEEKDAYS, SAT_NIGHT), StationScope.LISTED, frozenset({station}),
                OnBreach.ALERT)
            assert got.limits[-1] == Limit(lid, LimitUnit.PURCHASES, Period.QUARTER, 30, on_breach=OnBreach.ALERT)
            assert d.replica.fuel_card(card.card_no) == want  # the card in the model it decides on
            # the card alerts: approved either way, with an exception when now is outside its windows
            inside = any(w.contains(weekday, minute) for w in (WEEKDAYS, SAT_NIGHT))
            decision = ask(card.card_no, product)
            assert decision.approved
            assert decision.exceptions == (() if inside else (RuleException(Reason.OUTSIDE_TIME_WINDOW),))
            # a window that excludes now: approved and alerted while the card alerts, then declined
            elsewhen_only = {"products": frozenset({product}), "windows": (elsewhen,),
                             "station_scope": StationScope.LISTED, "station_ids": frozenset({station})}
            await on_host(master.change_card_controls, card.card_no, **elsewhen_only, on_breach=OnBreach.ALERT)
            await _wait(lambda: ask(card.card_no, product).exceptions, "the alerting window at the evaluator")
            decision = ask(card.card_no, product)
            assert decision.approved and decision.exceptions == (RuleException(Reason.OUTSIDE_TIME_WINDOW),)
            await on_host(master.change_card_controls, card.card_no, **elsewhen_only, on_breach=OnBreach.DECLINE)
            await _wait(lambda: not ask(card.card_no, product).approved, "the declining window at the evaluator")
            assert ask(card.card_no, product).reason is Reason.OUTSIDE_TIME_WINDOW
            # and back: a card without controls is the row as before
            await on_host(master.change_card_controls, card.card_no, products=None, windows=(),
                          station_scope=StationScope.NETWORK, on_breach=OnBreach.DECLINE)
            await _wait(lambda: stored().products is None and stored().station_scope is StationScope.NETWORK,
                        "the controls removed at the site")
            assert stored().windows == () and stored().station_ids == frozenset()
    asyncio.run(asyncio.wait_for(main(), 180))
