"""Where a new site's provisioning spends its CPU, stage by stage, in one process:
``python -m benchmarks.replica --provision-stages`` (or ``python -m benchmarks.replica_provision_stages``).

The host's signed snapshot parts are cut as ``benchmarks.replica --provision`` cuts them
(``--cards`` fuel cards, ``--stop-list`` numbers, ``--accounts`` club accounts), then the
site's path runs in this process without the broker: each part verified and decoded
(:func:`wire.decode` with ``raw_rows=True``: the big tables' rows stay the bytes received),
staged into a replica store (:meth:`ReplicaStore.stage_part`) and committed
(:class:`StagedSnapshot`), then the evaluators built from the store
(:func:`terminal.provision.build_replica`) twice: by the general path (each row read into
objects, ``_general``) and as the daemon builds them (fuel cards by the native loader,
:mod:`native._rowload`). ``key: value`` lines, CPU seconds of this process (not wall time):

- ``decode_verify_cpu_s``, ``store_stage_cpu_s``: the parts, every table;
- ``build_general_cpu_s``, ``build_cpu_s`` and ``build_ratio``: the evaluators from the store;
- ``filled_receive_cpu_s`` and ``filled_receive_wall_s``: the parts again, into a new store,
  as the daemon of a new site stages them (:class:`terminal.provision.EagerColumns`: the
  store writes each part in a worker thread while this thread fills the fuel columns), and
  ``filled_build_cpu_s``: the evaluators built from those columns and the store's other
  tables (``filled_build_ratio``: against ``build_cpu_s``);
- ``store_mb``: ``replica.sqlite``. The RSS of a real site is ``--provision``'s (this process
  holds every frame too).
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import tempfile
from pathlib import Path
from typing import Any


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def stage_figures(fuel_cards: int, stop_list: int, club_accounts: int, seed: int = 1) -> dict[str, float]:
    """The figures of the module docstring."""
    from host.keys import ensure_replica_keys
    from terminal.config import DEFAULT_SITE_TOML, parse_config
    from terminal.follower import StagedSnapshot
    from terminal.provision import build_replica, tables_needed
    from terminal.replica_store import ReplicaStore
    from wire import SiteKeys, decode, load_replica_signing_key, load_replica_verify_key, snapshot_topic

    from .replica import host_tables, snapshot_frames

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="edgepos-stages-") as tmp_name:
        tmp = Path(tmp_name)
        keys = ensure_replica_keys(tmp / "host-keys")
        signing = SiteKeys(replica_signing=load_replica_signing_key(keys.signing_key_file))
        verify = SiteKeys({}, replica_verify=load_replica_verify_key(keys.verify_key_file))
        text = DEFAULT_SITE_TOML.replace("port = 8780", "port = 0\nsimulation = true")
        cfg = parse_config(text)
        tables = host_tables(text, fuel_cards, stop_list, club_accounts, seed)
        frames = {t: snapshot_frames(t, rows, 1, signing) for t, rows in tables.items()}
        del tables
        gc.collect()
        decoding = staging = 0.0
        with ReplicaStore.open(tmp / "replica.sqlite") as store:
            for table, parts in frames.items():
                for k, frame in enumerate(parts):
                    a = _cpu()
                    part = decode(frame, verify, topic=snapshot_topic(table, k), raw_rows=True)  # as the site
                    b = _cpu()
                    store.stage_part(part, fresh=k == 0)  # type: ignore[arg-type]
                    decoding, staging = decoding + b - a, staging + _cpu() - b
                a = _cpu()
                store.apply(StagedSnapshot(table, 1, len(parts)))
                staging += _cpu() - a
            out["decode_verify_cpu_s"], out["store_stage_cpu_s"] = round(decoding, 2), round(staging, 2)
            needed = tables_needed(cfg)
            versions = store.versions()
            a = _cpu()
            general = {t: (r for r in store.iter_rows(t)) for t in needed}  # a generator: the general path
            replica = build_replica(cfg, general, versions=versions)
            out["build_general_cpu_s"] = round(_cpu() - a, 2)
            del replica, general
            gc.collect()
            a = _cpu()
            replica = build_replica(cfg, {t: store.iter_rows(t) for t in needed}, versions=versions)
            out["build_cpu_s"] = round(_cpu() - a, 2)
            assert replica.fuel_model is not None and len(replica.fuel_model.cards) == fuel_cards
            out["build_ratio"] = round(out["build_cpu_s"] / out["build_general_cpu_s"], 3)
        out["store_mb"] = round((tmp / "replica.sqlite").stat().st_size / 1e6)
        del replica
        gc.collect()
        out.update(_filled_figures(cfg, tmp / "filled.sqlite", frames, verify))
        out["filled_build_ratio"] = round(out["filled_build_cpu_s"] / out["build_cpu_s"], 3)
    return out


def _filled_figures(cfg: Any, path: Path, frames: dict[Any, list[bytes]], verify: Any) -> dict[str, float]:
    """The ``filled_*`` figures: the daemon's staging (terminal.daemon ``_stage_part``), one part at a time."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from terminal.follower import StagedSnapshot
    from terminal.provision import EagerColumns, build_replica, tables_needed
    from terminal.replica_store import ReplicaStore
    from wire import decode, snapshot_topic

    out: dict[str, float] = {}
    eager = EagerColumns()
    with ReplicaStore.open(path) as store, ThreadPoolExecutor(1) as pool:
        a, w = _cpu(), time.perf_counter()
        for table, parts in frames.items():
            for k, frame in enumerate(parts):
                part = decode(frame, verify, topic=snapshot_topic(table, k), raw_rows=True)
                fill = eager.plan(part, k == 0, store)  # type: ignore[arg-type]
                started = threading.Event()
                write = pool.submit(store.stage_part, part, fresh=k == 0, started=started)  # type: ignore[arg-type]
                if fill is not None:
                    started.wait(1.0)  # as the daemon: the fill once the write is in its statement
                    eager.fill(fill, part)  # type: ignore[arg-type]
                ok = write.result()
                if fill is not None:
                    eager.written(fill, ok, store.staging_generation(table))
            store.apply(StagedSnapshot(table, 1, len(parts)))
        out["filled_receive_cpu_s"], out["filled_receive_wall_s"] = round(_cpu() - a, 2), round(time.perf_counter() - w, 2)
        frames.clear()
        gc.collect()
        needed = tables_needed(cfg)
        a = _cpu()
        replica = build_replica(cfg, eager.rows(store, needed), versions=store.versions())
        out["filled_build_cpu_s"] = round(_cpu() - a, 2)
        assert replica.fuel_model is not None and len(replica.fuel_model.cards) > 0
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the figures."""
    from .replica_stall import add_size_arguments
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_size_arguments(p)
    args = p.parse_args(argv)
    for k, v in stage_figures(args.cards, args.stop_list, args.accounts).items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
