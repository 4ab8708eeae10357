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

The rows are written by a child process from the generated network (``authz.sample`` via
``native.compact``), read back by another, so neither figure counts the generator.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from authz.fuel_model import FuelRequest, LimitCounter
from authz.sample import DAY_START_UTC
from native import club_evaluator, fuel_evaluator
from native.compact import foreign_stop_keys, sample_club_columns, sample_fuel_columns
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


def main(argv: list[str] | None = None) -> int:
    """Print the figures (or, with --write-rows / --load-rows, one half of from_rows)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cards", type=int, default=1_000_000)
    p.add_argument("--stop-list", type=int, default=1_000_000)
    p.add_argument("--accounts", type=int, default=100_000)
    p.add_argument("--deltas", type=int, default=20_000)
    p.add_argument("--write-rows", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--load-rows", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
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
