"""Replica benchmarks, printed as ``key: value`` lines: ``python -m benchmarks.replica``.

* ``delta_apply_per_s``: single-card fuel-card deltas (a changed limit, the host's counter)
  applied per second through ``Replica.apply_update`` on a replica of 1,000,000 cards, one
  authorization decided between every two deltas (included in the time);
  ``delta_apply_new_card_per_s``: the same with deltas that each add a new card;
  ``club_delta_apply_per_s``: single-account club deltas (balance, lots, cards) on a replica
  of 100,000 accounts, one quote between every two.
* ``replica_from_rows_1m_s``: ``Replica.from_rows`` of 1,000,000 fuel cards, a 1,000,000-entry
  stop list and 100,000 club accounts, the rows streamed from a file as a store would
  (unpickled in chunks of 10,000, standing for the decoding): the build alone, the time
  spent inside the unpickling taken off; ``rows_decode_1m_s`` is that decoding and
  ``replica_from_rows_1m_with_decode_s`` the whole;
  ``rss_mb_from_rows_1m``: the resident memory of that process after the build,
  ``rss_mb_before_rows``: the same process before it (the interpreter and imports), and
  ``peak_rss_mb_from_rows_1m``: its peak while building.

* ``provision_1m_cards_s`` (``--provision``): a new site's first snapshot part received to its
  evaluators built, provisioned through mosquitto from retained snapshots of 1,000,000 fuel
  cards, a 1,000,000-entry stop list and 100,000 club accounts (the daemon's own figure:
  receiving and verifying every part, the follower, the replica store's fsync'd writes, the
  evaluators built from the store); ``provision_1m_cards_to_serving_s``: the process started
  to its API serving sales; ``provision_1m_cards_rss_mb`` and ``provision_1m_cards_peak_rss_mb``:
  its resident memory once serving and its peak; ``provision_store_mb``: ``replica.sqlite``;
  ``restart_from_store_1m_cards_s`` and ``..._rss_mb``: the same site restarted with the
  broker down, from the process start to serving from its store (every row checked again);
  ``..._cpu_s``: the site process's CPU time (user + system) to that point, the figure to
  trust on a loaded machine. With ``--baseline DIR`` (a checkout of other code, e.g.
  ``git worktree add /tmp/base main``) the same site is first provisioned and restarted
  from the same retained snapshots by the code in DIR: each figure is printed for it as
  ``<key>_before`` and as ``<key>_ratio`` (this code's / DIR's), measured in one run.
* ``decode_verify_cpu_s``, ``store_stage_cpu_s``, ``build_general_cpu_s``, ``build_cpu_s``
  (``--provision-stages``): the same provisioning's CPU stage by stage, in this process, no
  broker (``benchmarks/replica_provision_stages.py``).
* ``snapshot_apply_loop_stall_ms`` (``--stall``): the longest the event loop went without
  turning (a task that sleeps 1 ms, the lanes' stand-in) while a whole fuel-card snapshot of
  1,000,000 cards was applied to a running site's replica: ``_before`` as
  ``Replica.apply_update`` on the loop (the rows already in memory, as the follower used to
  hand them over), and now as the daemon does it (``terminal.snapshot_swap.apply_snapshot``:
  the rows read from the store's staged snapshot and built in a thread, swapped on the
  loop); ``snapshot_apply_s`` and ``snapshot_apply_s_before``: how long each apply took.

* ``stop_list_snapshot_stall_ms`` and ``club_snapshot_stall_ms`` (``--stop-list-stall``): the
  longest loop stall while a whole stop list of 1,000,000 numbers (a club table of 100,000
  accounts) is applied to a running site, before and after: see benchmarks/replica_stall.py.

The rows are written by a child process from the generated network (``authz.sample`` via
``native.compact``), read back by another, so neither figure counts the generator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from authz.fuel_model import FuelRequest, LimitCounter
from authz.sample import DAY_START_UTC
from native import club_evaluator, fuel_evaluator
from native.compact import foreign_stop_keys, sample_club_columns, sample_fuel_columns
from terminal.apiauth import client_toml, new_token
from terminal.config import DEFAULT_SITE_TOML, ApiRole, parse_config
from terminal.replica import FUEL_TABLES, Replica
from wire.messages import (
    ClubAccountRow,
    FuelCardRow,
    ReplicaDelta,
    StopListEntry,
    Table,
    TariffRow,
)

CHUNK = 10_000

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _fuel_rows(ev) -> Iterator[FuelCardRow]:
    """Every card of a native fuel evaluator as a host row, its counters with it."""
    counters = ev.counter_items()
    pending = next(counters, None)
    for i in range(ev.card_count):
        card = ev.card_at(i)
        own = []
        while pending is not None and pending[0][0] == card.card_no:
            own.append((pending[0][1], pending[1]))
            pending = next(counters, None)
        yield FuelCardRow(card, tuple(own))


def write_rows(out: Path, n_cards: int, n_stop: int, n_accounts: int) -> None:
    """The generated network's tables as pickled row chunks, one file per table."""
    fuel = fuel_evaluator(sample_fuel_columns(n_cards=n_cards, seed=1))
    tariffs: dict = {}
    for d in fuel.discounts:
        tariffs.setdefault(d.tariff, []).append(d)
    club = club_evaluator(sample_club_columns(n_accounts=n_accounts, seed=2))
    cards_of: dict[int, list] = {}
    for i in range(club.card_count):
        c = club.card_at(i)
        cards_of.setdefault(c.account_id, []).append(c)
    stop = [StopListEntry(no, 1) for no in fuel.stop_list_numbers()]
    base = 1 + int("700584") * 10**10
    stop += [StopListEntry(str(base + i)[1:], 1) for i in range(max(0, n_stop - len(stop)))]
    tables = {
        Table.PRODUCTS: iter(fuel.products), Table.STATIONS: iter(fuel.stations),
        Table.TARIFFS: (TariffRow(t, tuple(v)) for t, v in tariffs.items()),
        Table.CONTRACTS: (fuel.contract_at(i) for i in range(fuel.contract_count)),
        Table.FUEL_CARDS: _fuel_rows(fuel), Table.STOP_LIST: iter(stop),
        Table.CLUB_RULES: iter([club.rules]),
        Table.CLUB_ACCOUNTS: (ClubAccountRow(club.account_at(i), tuple(cards_of.get(club.account_at(i).account_id, ())))
                              for i in range(club.account_count)),
    }
    for table, rows in tables.items():
        with open(out / f"{table.value}.pickle", "wb") as f:
            chunk = []
            for row in rows:
                chunk.append(row)
                if len(chunk) == CHUNK:
                    pickle.dump(chunk, f, protocol=pickle.HIGHEST_PROTOCOL)
                    chunk = []
            pickle.dump(chunk, f, protocol=pickle.HIGHEST_PROTOCOL)


_decode_s = [0.0]  # seconds spent decoding (unpickling) rows so far


def _stream(path: Path) -> Iterator:
    """The rows of one table file, chunk by chunk; the time spent unpickling counts in
    ``_decode_s``."""
    with open(path, "rb") as f:
        while True:
            t0 = time.perf_counter()
            try:
                chunk = pickle.load(f)
            except EOFError:
                return
            finally:
                _decode_s[0] += time.perf_counter() - t0
            yield from chunk


def load_rows(src: Path) -> dict[str, float]:
    """``Replica.from_rows`` over the row files of ``src``: time and memory."""
    before = _rss_mb()
    _decode_s[0] = 0.0
    t0 = time.perf_counter()
    replica = Replica.from_rows({t: _stream(src / f"{t.value}.pickle") for t in Table})
    took = time.perf_counter() - t0
    decode = _decode_s[0]
    assert replica.fuel is not None and replica.club is not None
    return {"replica_from_rows_1m_s": round(took - decode, 2), "replica_from_rows_1m_with_decode_s": round(took, 2),
            "rows_decode_1m_s": round(decode, 2), "rss_mb_from_rows_1m": round(_rss_mb(), 1),
            "rss_mb_before_rows": round(before, 1),
            "peak_rss_mb_from_rows_1m": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "from_rows_fuel_cards": replica.fuel_card_count, "from_rows_club_accounts": replica.club.account_count,
            "from_rows_stop_list": replica.fuel.stop_list_size}


def from_rows_figures(n_cards: int, n_stop: int, n_accounts: int) -> dict[str, float]:
    """Write the rows in one child process, build the replica from them in another."""
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="edgepos-rows-") as tmp:
        subprocess.run([sys.executable, "-m", "benchmarks.replica", "--write-rows", tmp, "--cards", str(n_cards),
                        "--stop-list", str(n_stop), "--accounts", str(n_accounts)], check=True, env=env)
        out = subprocess.run([sys.executable, "-m", "benchmarks.replica", "--load-rows", tmp],
                             check=True, env=env, capture_output=True, text=True)
    return json.loads(out.stdout)


def delta_figures(n_cards: int, n_deltas: int) -> dict[str, float]:
    """Single-card and single-account deltas applied while decisions run between them."""
    cols = sample_fuel_columns(n_cards=n_cards, seed=1).with_stop_keys(foreign_stop_keys(n_cards))
    replica = Replica(cols, sample_club_columns(n_accounts=100_000, seed=2))
    del cols
    replica.table_versions = {t: 1 for t in Table}
    ev, club = replica.fuel, replica.club
    assert ev is not None and club is not None
    st = ev.stations[0]
    product = next(iter(st.prices_kop_per_l))
    step = max(1, ev.card_count // n_deltas)
    rows = []
    for k in range(n_deltas):
        card = ev.card_at((k * step) % ev.card_count)
        limits = tuple(replace(lim, amount=lim.amount + 1000) for lim in card.limits)
        rows.append(FuelCardRow(replace(card, limits=limits),
                                tuple((lim.limit_id, LimitCounter(500, 0)) for lim in limits[:1])))
    requests = [FuelRequest(r.card.card_no, st.station_id, product, DAY_START_UTC) for r in rows]
    out: dict[str, float] = {}
    v = 1
    t0 = time.perf_counter()
    for row, req in zip(rows, requests):
        replica.apply_update(ReplicaDelta(Table.FUEL_CARDS, v, v + 1, (row,)))
        v += 1
        ev.authorize(req)
    out["delta_apply_per_s"] = round(n_deltas / (time.perf_counter() - t0))
    new_rows = [FuelCardRow(replace(r.card, card_no=f"70059{k:011d}"), r.counters) for k, r in enumerate(rows)]
    t0 = time.perf_counter()
    for row, req in zip(new_rows, requests):
        replica.apply_update(ReplicaDelta(Table.FUEL_CARDS, v, v + 1, (row,)))
        v += 1
        ev.authorize(req)
    out["delta_apply_new_card_per_s"] = round(n_deltas / (time.perf_counter() - t0))
    assert replica.fuel_card_count == n_cards + n_deltas
    accounts = [club.account_at((k * 7) % club.account_count) for k in range(n_deltas)]
    cards_of: dict[int, list] = {}
    for i in range(club.card_count):
        c = club.card_at(i)
        cards_of.setdefault(c.account_id, []).append(c)
    crow = [ClubAccountRow(replace(a, balance_kop=a.balance_kop + 100), tuple(cards_of.get(a.account_id, ())))
            for a in accounts]
    from authz.club_model import ClubSale, SaleLine
    sales = [ClubSale(r.cards[0].card_no, (SaleLine("x", "shoes", 100_000),), DAY_START_UTC) for r in crow if r.cards]
    cv = 1
    t0 = time.perf_counter()
    for account_row, sale in zip(crow, sales):
        replica.apply_update(ReplicaDelta(Table.CLUB_ACCOUNTS, cv, cv + 1, (account_row,)))
        cv += 1
        club.quote(sale)
    out["club_delta_apply_per_s"] = round(len(sales) / (time.perf_counter() - t0))
    return out


def host_tables(site_toml: str, fuel_cards: int, stop_list: int, club_accounts: int, seed: int) -> dict:
    """Every table of the host's replica for the site of ``site_toml``: the generated network
    (``Replica.simulated`` without columns: the host holds objects) with the site's station."""
    from terminal.replica import Replica
    from wire import (
        CLUB_RULES_KEY,
        ClubAccountRow,
        FuelCardRow,
        StopListEntry,
        Table,
        TariffRow,
    )

    del CLUB_RULES_KEY
    cfg = parse_config(site_toml)
    r = Replica.simulated(cfg, fuel_cards=fuel_cards, club_accounts=club_accounts, stop_list=stop_list, seed=seed,
                          compact=False)
    fuel, club = r.fuel_model, r.club_model
    assert fuel is not None and club is not None
    counters: dict[str, list] = {}
    for (no, lid), counter in sorted(fuel.counters.items()):
        counters.setdefault(no, []).append((lid, counter))
    tariffs: dict[int, list] = {}
    for d in fuel.discounts:
        tariffs.setdefault(int(d.tariff), []).append(d)
    cards_of: dict[int, list] = {}
    for c in club.cards:
        cards_of.setdefault(c.account_id, []).append(c)
    return {
        Table.PRODUCTS: tuple(fuel.products),
        Table.STATIONS: tuple(fuel.stations),
        Table.TARIFFS: tuple(TariffRow(ds[0].tariff, tuple(ds)) for ds in tariffs.values()),
        Table.CONTRACTS: tuple(fuel.contracts),
        Table.FUEL_CARDS: tuple(FuelCardRow(c, tuple(counters.get(c.card_no, ()))) for c in fuel.cards),
        Table.STOP_LIST: tuple(StopListEntry(no, 1_700_000_000) for no in sorted(fuel.stop_list)),
        Table.CLUB_RULES: (club.rules,),
        Table.CLUB_ACCOUNTS: tuple(ClubAccountRow(a, tuple(cards_of.get(a.account_id, ()))) for a in club.accounts),
    }


def snapshot_frames(table: Any, rows: Sequence[Any], version: int, keys: Any) -> list[bytes]:
    """The signed retained parts of ``table`` at ``version``, cut as the host's publisher cuts them."""
    from wire import ReplicaSnapshot, encode, rows_that_fit

    parts: list[tuple] = []
    i = 0
    while i < len(rows) or not parts:
        n = rows_that_fit(table, rows[i:i + 100_000]) if i < len(rows) else 0
        parts.append(tuple(rows[i:i + n]))
        i += n
    return [encode(ReplicaSnapshot(table, version, k, len(parts), p), keys) for k, p in enumerate(parts)]


async def publish_retained(port: int, frames: dict) -> None:
    """Every frame retained on its snapshot topic (QoS 1, PUBACK awaited)."""
    import aiomqtt

    from wire import snapshot_topic
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-host") as c:
        for table, parts in frames.items():
            for k, frame in enumerate(parts):
                await c.publish(snapshot_topic(table, k), frame, qos=1, retain=True, timeout=60)


def _proc_rss_mb(pid: int) -> tuple[float, float]:
    text = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]
    hwm = int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]
    return rss, hwm


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _serve_once(cfg: Path, root: Path = ROOT) -> tuple[float, float, float, list[str]]:
    """``edgepos run --config cfg`` (the code in ``root``) until it serves, then SIGTERM:
    seconds from the process start to serving, RSS and peak RSS (MB) once serving, and its
    log lines (the last one ``# cpu_s: N``, its CPU time to serving)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "terminal.cli", "run", "--config", str(cfg)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=root,
                            env=dict(os.environ, PYTHONPATH=str(root)))
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if os.environ.get("BENCH_VERBOSE"):
                print("# site: " + line.rstrip(), file=sys.stderr)
            if "listening on http://" in line:
                took = round(time.perf_counter() - t0, 2)
                lines.append(f"# cpu_s: {_cpu_s(proc.pid):.2f}")
                time.sleep(1.0)  # settled
                rss, hwm = _proc_rss_mb(proc.pid)
                return took, round(rss), round(hwm), lines
            if "Traceback" in line or line.startswith("edgepos: "):
                raise RuntimeError(f"the site did not start: {line.strip()}")
        raise RuntimeError("the site exited before serving")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def provision_figures(fuel_cards: int = 1_000_000, stop_list: int = 1_000_000, club_accounts: int = 100_000,
                      seed: int = 1, baseline: Path | None = None) -> dict[str, float]:
    """A new pump and till site (every table) with an empty data directory started as
    ``edgepos run`` in its own process and provisioned through mosquitto (the embedded broker)
    from retained snapshots of that size. The snapshots are cut and signed here as
    ``host/publisher.py`` cuts them (``wire.rows_that_fit``, ``ReplicaSnapshot``, ``wire.encode``
    with the host's Ed25519 key) and published retained before the site starts, so the figure
    is the site's alone (a host worker loading a million cards into its ledger first would
    measure the host); the site's path is the production one. The figures are in the module
    docstring (``provision_1m_cards_s`` ...). The site's pump lanes open their card readers
    through pcscd: run ``--provision`` under ``flock /tmp/edgepos-pcscd.lock``."""
    from host.keys import ensure_replica_keys
    from terminal.broker import embedded_broker
    from wire import SiteKeys, load_replica_signing_key, new_key, write_key

    with tempfile.TemporaryDirectory(prefix="edgepos-provision-") as tmp_name:
        tmp = Path(tmp_name)
        keys = ensure_replica_keys(tmp / "host-keys")
        site_key = tmp / "site.key"
        write_key(site_key, new_key())
        token = new_token()
        with embedded_broker(tmp / "broker") as broker:
            # a simulation: its pumps' virtual cards use the public test issuer key
            text = DEFAULT_SITE_TOML.replace("port = 8780", "port = 0\nsimulation = true")
            text = text.replace('data_dir = "var/sim"', f'data_dir = "{tmp / "data"}"')
            text += ("\n" + client_toml("operator", ApiRole.OPERATOR, token)
                     + f'\n[broker]\nurl = "{broker.url}"\n\n[keys]\nsite_key_file = "{site_key}"\n'
                     f'host_key_file = "{keys.verify_key_file}"\n')
            cfg = tmp / "site.toml"
            cfg.write_text(text)
            t = time.perf_counter()
            tables = host_tables(text, fuel_cards, stop_list, club_accounts, seed)
            signing = SiteKeys(replica_signing=load_replica_signing_key(keys.signing_key_file))
            frames = {table: snapshot_frames(table, rows, 1, signing) for table, rows in tables.items()}
            del tables
            print(f"# host side: {sum(len(f) for f in frames.values())} parts, "
                  f"{sum(len(x) for f in frames.values() for x in f) / 1e6:.0f} MB, made in "
                  f"{time.perf_counter() - t:.0f} s", file=sys.stderr)
            assert broker.port is not None
            asyncio.run(publish_retained(broker.port, frames))
            del frames
            runs = [(baseline, "_before"), (ROOT, "")] if baseline is not None else [(ROOT, "")]
            out: dict[str, float] = {}
            for root, suffix in runs:
                shutil.rmtree(tmp / "data", ignore_errors=True)  # a new site each time
                print(f"# provisioning with the code in {root}", file=sys.stderr)
                for k, v in _provision_and_restart(cfg, tmp, broker, root).items():
                    out[k + suffix] = v
            if baseline is not None:
                for k in [k for k in out if not k.endswith("_before")]:
                    if out.get(k + "_before"):
                        out[k + "_ratio"] = round(out[k] / out[k + "_before"], 3)
    return out


def _provision_and_restart(cfg: Path, tmp: Path, broker: Any, root: Path) -> dict[str, float]:
    """One new site provisioned from the retained snapshots, then restarted with the broker
    down (the broker is started again after)."""
    out: dict[str, float] = {}
    took, rss, hwm, lines = _serve_once(cfg, root)
    out["provision_1m_cards_to_serving_s"] = took
    out["provision_1m_cards_rss_mb"], out["provision_1m_cards_peak_rss_mb"] = rss, hwm
    for line in lines:
        m = re.search(r"provisioned from the host in [\d.]+ s \(([\d.]+) s from the first snapshot part", line)
        if m:
            out["provision_1m_cards_s"] = float(m.group(1))
        if line.startswith("# cpu_s: "):
            out["provision_1m_cards_cpu_s"] = float(line.split()[-1])
    out["provision_store_mb"] = round((tmp / "data" / "replica.sqlite").stat().st_size / 1e6)
    broker.stop()  # the host unreachable: the site restarts on its store
    try:
        took, rss, hwm, lines = _serve_once(cfg, root)
    finally:
        broker.start()
    out["restart_from_store_1m_cards_s"], out["restart_from_store_1m_cards_rss_mb"] = took, rss
    out["restart_from_store_1m_cards_cpu_s"] = next(float(x.split()[-1]) for x in lines if x.startswith("# cpu_s: "))
    return out


def stall_figures(n_cards: int = 1_000_000) -> dict[str, float]:
    """``snapshot_apply_loop_stall_ms`` before and after (module docstring)."""
    from terminal.follower import FullSnapshot, StagedSnapshot
    from terminal.replica_store import ReplicaStore
    from terminal.snapshot_swap import apply_snapshot
    from wire import ReplicaSnapshot

    replica = Replica(sample_fuel_columns(n_cards=n_cards, seed=1), None)
    replica.table_versions = {t: 1 for t in Table}
    assert replica.fuel is not None
    rows = tuple(_fuel_rows(replica.fuel))  # the same cards, as the host sends them
    out: dict[str, float] = {}

    from .replica_stall import _stall

    async def stalls(work: Any) -> tuple[float, float]:
        stall, took, _ = await _stall(work)
        return stall, took

    async def before() -> None:
        replica.apply_update(FullSnapshot(Table.FUEL_CARDS, 2, rows))

    stall, took = asyncio.run(stalls(before))
    out["snapshot_apply_loop_stall_ms_before"], out["snapshot_apply_s_before"] = round(stall, 1), round(took, 2)
    with tempfile.TemporaryDirectory(prefix="edgepos-stall-") as tmp, ReplicaStore.open(Path(tmp) / "r.sqlite") as store:
        n = 10_000
        parts = (len(rows) + n - 1) // n
        for k in range(parts):
            store.stage_part(ReplicaSnapshot(Table.FUEL_CARDS, 3, k, parts, rows[k * n:(k + 1) * n]))
        staged = store.stage(StagedSnapshot(Table.FUEL_CARDS, 3, parts))

        async def after() -> None:
            await apply_snapshot(replica, Table.FUEL_CARDS, 3, staged.iter_rows, replica.apply_update)

        stall, took = asyncio.run(stalls(after))
        staged.commit()
    assert replica.table_versions[Table.FUEL_CARDS] == 3 and replica.fuel_card_count == n_cards
    out["snapshot_apply_loop_stall_ms"], out["snapshot_apply_s"] = round(stall, 1), round(took, 2)
    out["snapshot_apply_loop_stall_ratio"] = round(out["snapshot_apply_loop_stall_ms"]
                                                   / max(out["snapshot_apply_loop_stall_ms_before"], 0.1), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the figures (or, with --write-rows / --load-rows, one half of from_rows)."""
    from .replica_stall import add_size_arguments
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_arguments(p)
    p.add_argument("--deltas", type=int, default=20_000)
    p.add_argument("--write-rows", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--load-rows", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--provision", action="store_true",
                   help="only the provisioning of a new site (run under flock /tmp/edgepos-pcscd.lock)")
    p.add_argument("--baseline", type=Path, metavar="DIR",
                   help="with --provision: first the same with the code in DIR (figures _before and _ratio)")
    p.add_argument("--stall", action="store_true", help="only snapshot_apply_loop_stall_ms (before and after)")
    p.add_argument("--provision-stages", action="store_true",
                   help="only the CPU of provisioning's stages, in this process (benchmarks/replica_provision_stages.py)")
    p.add_argument("--stop-list-stall", action="store_true",
                   help="only stop_list_snapshot_stall_ms and club_snapshot_stall_ms (benchmarks/replica_stall.py)")
    p.add_argument("--latency", type=int, metavar="CHANGES",
                   help="only host_change_to_enforced_*: CHANGES blocks/unblocks at a real host worker, timed to "
                        "the first decision at a running site that applies each (benchmarks/replica_latency.py)")
    args = p.parse_args(argv)
    if args.latency:
        from .replica_latency import main as latency_main
        return latency_main(["--changes", str(args.latency)])
    if args.stop_list_stall:
        from .replica_stall import main as stall_main
        return stall_main(["--cards", str(args.cards), "--stop-list", str(args.stop_list),
                           "--accounts", str(args.accounts)])
    if args.provision_stages:
        from .replica_provision_stages import main as stages_main
        return stages_main(["--cards", str(args.cards), "--stop-list", str(args.stop_list),
                            "--accounts", str(args.accounts)])
    if args.provision:
        for k, v in provision_figures(args.cards, args.stop_list, args.accounts, baseline=args.baseline).items():
            print(f"{k}: {v}")
        return 0
    if args.stall:
        for k, v in stall_figures(args.cards).items():
            print(f"{k}: {v}")
        return 0
    if args.write_rows:
        write_rows(args.write_rows, args.cards, args.stop_list, args.accounts)
        return 0
    if args.load_rows:
        print(json.dumps(load_rows(args.load_rows)))
        return 0
    figures = delta_figures(args.cards, args.deltas)
    figures.update(from_rows_figures(args.cards, args.stop_list, args.accounts))
    for k, v in figures.items():
        print(f"{k}: {v}")
    return 0


assert FUEL_TABLES  # the tables a pump site follows: every one of them is written above

if __name__ == "__main__":
    sys.exit(main())
