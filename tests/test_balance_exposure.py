"""Offline exposure across sites (benchmarks/exposure.py's network: a real host ledger, each
site its own journal and both evaluators, whose decisions must agree): whatever the sites
sell, online or several offline at once, the contract never pays more than its balance, its
credit line and its configured exposure; a site's allowance refreshes as the host counts its
spend; the club's per-card offline redemption allowance does too."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.exposure import CONTRACT, Network, run

BALANCE, CREDIT, EXPOSURE = 600_000, 150_000, 240_000


plans = st.lists(st.one_of(
    st.tuples(st.just("sell"), st.integers(0, 2), st.integers(1_000, 80_000)),
    st.tuples(st.just("sync"), st.integers(0, 2)),
    st.tuples(st.just("down"), st.integers(0, 2)),
    st.tuples(st.just("up"), st.integers(0, 2)),
), min_size=1, max_size=40)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plans)
def test_sites_of_one_contract_never_pay_past_balance_credit_and_exposure(tmp_path_factory, plan):
    net = Network(tmp_path_factory.mktemp("exposure"), n_sites=3, balance_kop=BALANCE, credit_line_kop=CREDIT,
                  exposure_kop=EXPOSURE)

    async def go() -> None:
        for step in plan:
            s = net.sites[step[1]]
            if step[0] == "sell":
                await net.sell(s, step[2])
            elif step[0] == "sync":
                await net.sync(s)
            else:
                await net.set_online(s, step[0] == "up")
            assert net.approved_total_kop <= BALANCE + CREDIT + EXPOSURE
        for s in net.sites:  # then all offline at once, each selling until it is declined
            await net.set_online(s, False)
        for s in net.sites:
            while await net.sell(s, 80_000):
                pass
        assert net.approved_total_kop <= BALANCE + CREDIT + EXPOSURE
        for s in net.sites:
            await net.set_online(s, True)
        assert BALANCE - net.ledger.balance_kop(CONTRACT) == net.approved_total_kop  # the host counted it all
    try:
        asyncio.run(go())
    finally:
        net.close()


def test_the_figures_printed_hold_the_bound_and_without_allowances_they_do_not(tmp_path):
    kw = {"n_sites": 4, "balance_kop": 1_000_000, "credit_line_kop": 200_000, "seed": 3}
    fig = run(tmp_path / "with", exposure_kop=300_000, **kw)
    assert fig["within_bound"] == 1 and fig["approved_total_kop"] <= 1_500_000
    assert fig["approved_offline_kop"] > 0  # the offline sites did sell, within their allowances
    bare = run(tmp_path / "without", exposure_kop=None, **kw)
    assert bare["approved_total_kop"] > 1_200_000 + 300_000  # four offline sites each spend the whole balance


def test_a_sites_allowance_refreshes_as_the_host_counts_its_spend(tmp_path):
    net = Network(tmp_path, n_sites=2, balance_kop=BALANCE, credit_line_kop=CREDIT, exposure_kop=EXPOSURE)
    s = net.sites[0]
    allowance = s.replicas["native"].allowances[CONTRACT]  # 240,000 / 3 shares

    async def go() -> tuple[int, int]:
        await net.set_online(s, False)
        offline = 0
        while got := await net.sell(s, 5_000):
            offline += got
        await net.set_online(s, True)  # back: its spend is counted, the allowance is whole again
        online = 0
        for _ in range(30):
            online += await net.sell(s, 5_000)
            await net.sync(s)
        return offline, online
    try:
        offline, online = asyncio.run(go())
        assert 0 < offline <= allowance
        assert online > allowance  # online, the allowance bounds only what the host has not counted yet
        for r in s.replicas.values():
            assert r.fuel.balance_kop(CONTRACT) <= BALANCE - offline - online
    finally:
        net.close()
