"""Sync benchmark, edge side: a journal backlog flushed through a real mosquitto to an acking
host stand-in; ``key: value`` lines.

    python -m benchmarks.sync_edge                       # 100,000 records, default settings
    python -m benchmarks.sync_edge --records 1000000 --in-flight 16
    python -m benchmarks.sync_edge --baseline /tmp/before --rounds 3   # A/B: the code in that folder, then
                                                                       # this code, alternating; CPU ratio
    python -m benchmarks.sync_edge --profile /tmp/edge.txt             # py-spy of the flush (py-spy on PATH)

What is timed: from the moment the :class:`terminal.sync.SyncClient` enters, with the
whole backlog already journaled (an offline site coming back), until every record is
acknowledged and marked in the journal: read from the journal, cut into batches, encode
(every wire check), durable batch range, QoS 1 publish to mosquitto, the stand-in decodes
each batch (every wire check and the signature) and dedups its record ids, acks, and the
client marks the records acked. The stand-in runs in its own process, as the host would, so
the edge and the "host" share this machine's two cores with mosquitto. It is not ``host/``
(which lands separately): there is no ledger write, so this is the edge's ceiling, not the
end-to-end figure of the architecture's target.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from terminal.broker import embedded_broker
from terminal.ids import new_id, new_txn_id
from terminal.journal import Journal, Record
from terminal.sync import SyncClient, SyncSettings
from wire import Ack, Batch, SiteKeys, WireError, decode, encode, host_subscriptions, new_key, topic_of

SITE = "BENCH-001"


def progress(msg: str) -> None:
    """Progress on stderr, so stdout stays ``key: value`` lines."""
    print(f"[sync bench] {msg}", file=sys.stderr, flush=True)


def completion(i: int) -> Record:
    """A record the size of a fuel completion (about 20 values)."""
    lane = f"pump-{1 + i % 4}"
    return Record(new_id(SITE), SITE, lane, new_txn_id(SITE, lane), "fuel.completed", 1_760_000_000 + i,
                  {"card_no": "7005000000001234", "contract_id": 1000 + i % 5000, "station_id": 1001,
                   "pump": 1 + i % 4, "product": "AI95", "price_kop_per_l": 6150, "volume_ml": 40_000 + i % 997,
                   "amount_kop": 246_000 + i % 997, "preauth_ml": 50_000, "txn_counter": 1 + i,
                   "limits": {"day_ml": 200_000, "month_kop": 5_000_000}, "reason": "approved", "offline": True})


async def acker(port: int, site_key: bytes) -> None:
    """The host stand-in: decode every batch, dedup its record ids, ack cumulatively."""
    import aiomqtt
    keys = SiteKeys({SITE: site_key})
    seen: set[str] = set()
    settled: set[int] = set()
    up = 0
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-host", protocol=aiomqtt.ProtocolVersion.V5,
                              timeout=30) as c:
        await c.subscribe(list(host_subscriptions()))
        print("ready", flush=True)
        async for m in c.messages:
            try:
                msg = decode(bytes(m.payload), keys, topic=m.topic.value)
            except WireError as e:
                print(f"refused: {e}", file=sys.stderr, flush=True)
                continue
            if isinstance(msg, Batch):
                seen.update(r.record_id for r in msg.records)
                settled.add(msg.batch_seq)
                while up + 1 in settled:
                    up += 1
                ack = Ack(SITE, up)
                await c.publish(topic_of(ack), encode(ack, keys), qos=1)


async def run(args: argparse.Namespace, work: Path) -> dict[str, object]:
    site_key = new_key()
    journal_path = work / "journal.sqlite"
    with Journal.open(journal_path, SITE) as journal:
        t0 = time.perf_counter()
        for start in range(0, args.records, 5000):
            await journal.append([completion(i) for i in range(start, min(args.records, start + 5000))])
        progress(f"journaled {args.records} records in {time.perf_counter() - t0:.1f} s")
    broker = embedded_broker(work)
    with broker:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.sync_edge", "--acker", str(broker.port),
                                 site_key.hex()], stdout=subprocess.PIPE, text=True,
                                cwd=Path(__file__).resolve().parents[1],
                                env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
        try:
            assert proc.stdout.readline().strip() == "ready", "the acking stand-in did not start"
            settings = SyncSettings.from_url(broker.url, max_in_flight=args.in_flight, poll_interval_s=0.05,
                                             max_batch_records=args.batch_records)
            profiler = None
            if args.profile:
                from benchmarks.sync import Profiler  # py-spy on PATH
                profiler = Profiler(os.getpid(), args.profile)
                time.sleep(1.0)
            with Journal.open(journal_path, SITE) as journal:
                cpu0, t0 = time.process_time(), time.perf_counter()
                async with SyncClient(journal, SiteKeys({SITE: site_key}), settings) as sync:
                    st = await sync.wait_flushed(args.timeout)
                elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                if profiler is not None:
                    profiler.stop()
                    progress(profiler.summary(20))
                assert journal.counts().unacked == 0, "records left unacked"
        finally:
            proc.terminate()
            proc.wait(10)
    return {"sync_edge_records": args.records, "sync_edge_flush_s": round(elapsed, 2),
            "sync_edge_records_per_s": round(args.records / elapsed),
            "sync_edge_batches": st.last_batch, "sync_edge_records_per_batch": round(args.records / st.last_batch),
            "sync_edge_in_flight": args.in_flight, "sync_edge_resends": st.resends,
            "sync_edge_client_cpu_s": round(cpu, 2)}


def ab(args: argparse.Namespace, argv: list[str]) -> None:
    """``--baseline DIR``: this benchmark run from DIR's code (a checkout of the code before,
    its native modules built) and from this code, alternating ``--rounds`` times, each in a
    fresh process with the same arguments; prints each run and the ratio of the best client
    CPU figures (before / after) and of their medians."""
    here = Path(__file__).resolve().parents[1]
    rest: list[str] = []
    skip = False
    for a in argv:  # the arguments without --baseline and --rounds
        if skip:
            skip = False
            continue
        if a in ("--baseline", "--rounds"):
            skip = True
            continue
        if a.startswith(("--baseline=", "--rounds=")):
            continue
        rest.append(a)
    best: dict[str, dict[str, float]] = {"before": {}, "after": {}}
    cpus: dict[str, list[float]] = {"before": [], "after": []}
    for r in range(args.rounds):
        for tag, root in (("before", args.baseline.resolve()), ("after", here)):
            done = subprocess.run([sys.executable, "-m", "benchmarks.sync_edge", *rest], cwd=root, text=True,
                                  capture_output=True, env=dict(os.environ, PYTHONPATH=str(root)), check=True)
            got = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
            progress(f"round {r + 1} {tag}: client CPU {got['sync_edge_client_cpu_s']} s, "
                     f"{got['sync_edge_records_per_s']} records/s")
            cpus[tag].append(float(got["sync_edge_client_cpu_s"]))
            for k in ("sync_edge_client_cpu_s", "sync_edge_flush_s"):
                v = float(got[k])
                best[tag][k] = min(v, best[tag].get(k, v))
            print(f"{tag}_round{r + 1}_client_cpu_s: {got['sync_edge_client_cpu_s']}")
            print(f"{tag}_round{r + 1}_records_per_s: {got['sync_edge_records_per_s']}")
    n = args.records
    for tag in ("before", "after"):
        print(f"{tag}_client_cpu_us_per_record: {best[tag]['sync_edge_client_cpu_s'] * 1e6 / n:.1f}")
    print(f"client_cpu_ratio: {best['before']['sync_edge_client_cpu_s'] / best['after']['sync_edge_client_cpu_s']:.2f}")
    med = {tag: statistics.median(v) for tag, v in cpus.items()}
    for tag in ("before", "after"):
        print(f"{tag}_median_client_cpu_us_per_record: {med[tag] * 1e6 / n:.1f}")
    print(f"median_client_cpu_ratio: {med['before'] / med['after']:.2f}")


def main(argv: list[str] | None = None) -> None:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--acker":
        asyncio.run(acker(int(sys.argv[2]), bytes.fromhex(sys.argv[3])))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--in-flight", type=int, default=8)
    p.add_argument("--batch-records", type=int, default=10_000)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--dir", type=Path, help="work folder (default: a temporary one)")
    p.add_argument("--baseline", type=Path, help="A/B against the code in this folder (see ab())")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the A/B (default 3)")
    p.add_argument("--profile", type=Path, help="py-spy the client's flush into this file (raw stacks; "
                                                 "the top functions on stderr)")
    args = p.parse_args(argv)
    if args.baseline:
        ab(args, sys.argv[1:] if argv is None else argv)
        return
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        out = asyncio.run(run(args, args.dir))
    else:
        with tempfile.TemporaryDirectory(prefix="sync-bench-") as d:
            out = asyncio.run(run(args, Path(d)))
    for k, v in out.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
