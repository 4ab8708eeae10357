"""Provisioning a new site, printed as ``key: value`` lines: ``python -m benchmarks.provision``.

A pump and till site (every table) with an empty data directory starts as ``edgepos run``
in its own process and is provisioned through mosquitto (the embedded broker) from retained
snapshots of 1,000,000 fuel cards, a 1,000,000-entry stop list and 100,000 club accounts.

The snapshots are cut and signed here the way ``host/publisher.py`` cuts them
(``wire.rows_that_fit``, ``ReplicaSnapshot``, ``wire.encode`` with the host's Ed25519 key) and
published retained before the site starts, so the figure is the site's alone: a host worker
loading a million cards into its ledger first would take minutes and measure the host. The
site path is the production one: the sync client receives and verifies every part, the
follower collects them, the replica store writes each table in one fsync'd transaction, and
the evaluators are built from the store (``Replica.from_rows``).

* ``provision_1m_cards_s``: the site's first snapshot part received to its evaluators built
  (the daemon's own figure, ``provisioned ... (X s from the first snapshot part ...)``).
* ``provision_1m_cards_to_serving_s``: the process started to its API serving sales.
* ``provision_1m_cards_rss_mb``: the site's resident memory once serving;
  ``provision_1m_cards_peak_rss_mb``: its peak (VmHWM).
* ``provision_store_mb``: the size of ``replica.sqlite``.

The site's lanes open their card readers through pcscd: run it under
``flock /tmp/edgepos-pcscd.lock``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from terminal.apiauth import client_toml, new_token
from terminal.config import DEFAULT_SITE_TOML, ApiRole, parse_config

ROOT = Path(__file__).resolve().parents[1]


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
    for (no, lid), c in sorted(fuel.counters.items()):
        counters.setdefault(no, []).append((lid, c))
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


def _rss_mb(pid: int) -> tuple[float, float]:
    text = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]
    hwm = int(re.search(r"VmHWM:\s+(\d+)", text).group(1)) / 1024  # type: ignore[union-attr]
    return rss, hwm


def bench_provision(fuel_cards: int = 1_000_000, stop_list: int = 1_000_000, club_accounts: int = 100_000,
                    seed: int = 1) -> dict[str, float]:
    """Provision a new site from retained snapshots of that size; the figures of the module docstring."""
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
            text = DEFAULT_SITE_TOML.replace("port = 8780", "port = 0")
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
            asyncio.run(publish_retained(broker.port, frames))
            del frames
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "terminal.cli", "run", "--config", str(cfg)],
                                    stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT,
                                    env=dict(os.environ, PYTHONPATH=str(ROOT)))
            out: dict[str, float] = {}
            try:
                assert proc.stderr is not None
                for line in proc.stderr:
                    if os.environ.get("BENCH_VERBOSE"):
                        print("# site: " + line.rstrip(), file=sys.stderr)
                    m = re.search(r"provisioned from the host in [\d.]+ s \(([\d.]+) s from the first snapshot part", line)
                    if m:
                        out["provision_1m_cards_s"] = float(m.group(1))
                    if "listening on http://" in line:
                        out["provision_1m_cards_to_serving_s"] = round(time.perf_counter() - t0, 2)
                        time.sleep(1.0)  # settled
                        rss, hwm = _rss_mb(proc.pid)
                        out["provision_1m_cards_rss_mb"] = round(rss)
                        out["provision_1m_cards_peak_rss_mb"] = round(hwm)
                        break
                    if "Traceback" in line or line.startswith("edgepos: "):
                        raise RuntimeError(f"the site did not start: {line.strip()}")
                else:
                    raise RuntimeError("the site exited before serving")
                out["provision_store_mb"] = round((tmp / "data" / "replica.sqlite").stat().st_size / 1e6)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fuel-cards", type=int, default=1_000_000)
    ap.add_argument("--stop-list", type=int, default=1_000_000)
    ap.add_argument("--club-accounts", type=int, default=100_000)
    a = ap.parse_args(argv)
    for k, v in bench_provision(a.fuel_cards, a.stop_list, a.club_accounts).items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
