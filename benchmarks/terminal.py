"""Edge daemon benchmarks, printed as ``key: value`` lines: ``python -m benchmarks.terminal``.

The daemon runs as its own process (``edgepos run``) and the client here talks to it over
loopback HTTP, as a till would; every answer that changes state was fsync'd to the journal
before it came back.

* ``till_quote_p99_ms``: ``GET .../quote`` on an open sale with a card, p99.
* ``till_commit_p99_ms``: ``POST .../commit`` (decide, journal with fsync, answer), p99.
* ``till_sale_p99_ms``: a whole sale (open, attach card, quote, commit), p99.
* ``start_s``: process start to the API answering, with the default replica.
* ``rss_mb_1m_cards``: resident memory of a daemon whose replica holds 1,000,000 fuel cards
  and a 1,000,000-entry stop list (plus 100,000 club accounts), after start.
* ``start_1m_cards_s``: start-up time of that daemon.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from terminal.config import DEFAULT_SITE_TOML

ROOT = Path(__file__).resolve().parents[1]


def percentile(samples: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``samples``."""
    s = sorted(samples)
    return s[max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))]


class Daemon:
    """``edgepos run`` in a subprocess with a fresh data directory."""

    def __init__(self, *extra: str, env: dict | None = None, pumps: bool = False) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="edgepos-bench-")
        if pumps:
            text = DEFAULT_SITE_TOML.replace("port = 8780", "port = 0")
        else:
            text = DEFAULT_SITE_TOML.split("[[pumps]]")[0] + '\n[[tills]]\nid = "till-1"\n\n[api]\nport = 0\n'
        text = text.replace('data_dir = "var/sim"', f'data_dir = "{self.dir.name}/data"')
        cfg = Path(self.dir.name) / "site.toml"
        cfg.write_text(text)
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "terminal.cli", "run", "--config", str(cfg), *extra],
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT,
                                     env=dict(os.environ, **(env or {})))
        self.port = None
        for line in self.proc.stderr:
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if self.port is None:
            raise RuntimeError("the daemon did not start")
        # keep draining its log, or a full pipe would block the daemon
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()
        self.start_s = time.perf_counter() - self.t0

    def rss_mb(self) -> float:
        """Resident memory of the daemon process."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.dir.cleanup()


def till_figures(n: int) -> dict[str, float]:
    """Quote, commit and whole-sale latencies over loopback HTTP (keep-alive connection)."""
    import http.client

    from authz.sample import club_card_number

    d = Daemon("--club-accounts", "5000", "--fuel-cards", "10")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
        keys = iter(range(10**9))

        def call(method, path, body=None):
            headers = {"Content-Type": "application/json"}
            if method == "POST":
                headers["Idempotency-Key"] = f"bench-{next(keys):010d}"
            conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            r = conn.getresponse()
            data = json.loads(r.read())
            if r.status >= 400:
                raise RuntimeError(f"{method} {path}: {r.status} {data}")
            return data

        lines = [{"sku": "A1", "category": "shoes", "amount_kop": 499_900},
                 {"sku": "T1", "category": "toys", "amount_kop": 99_900}]
        quote, commit, whole = [], [], []
        for i in range(n + 50):
            t0 = time.perf_counter()
            sale = call("POST", "/v1/tills/till-1/sales", {"lines": lines})
            sid = sale["sale_id"]
            call("POST", f"/v1/tills/till-1/sales/{sid}/card", {"card_no": club_card_number(i % 5000)})
            t1 = time.perf_counter()
            q = call("GET", f"/v1/tills/till-1/sales/{sid}/quote")
            t2 = time.perf_counter()
            if q["reason"] != "OK":
                call("POST", f"/v1/tills/till-1/sales/{sid}/void", {})
                continue
            call("POST", f"/v1/tills/till-1/sales/{sid}/commit", {"payment": {"money_kop": q["total_kop"]}})
            t3 = time.perf_counter()
            if i >= 50:  # warm-up excluded
                quote.append((t2 - t1) * 1000)
                commit.append((t3 - t2) * 1000)
                whole.append((t3 - t0) * 1000)
        return {"till_quote_p50_ms": percentile(quote, 50), "till_quote_p99_ms": percentile(quote, 99),
                "till_commit_p50_ms": percentile(commit, 50), "till_commit_p99_ms": percentile(commit, 99),
                "till_sale_p99_ms": percentile(whole, 99), "start_s": d.start_s}
    finally:
        d.close()


def footprint_figures() -> dict[str, float]:
    """RSS and start-up time with 1,000,000 fuel cards and a 1,000,000-entry stop list."""
    d = Daemon("--fuel-cards", "1000000", "--club-accounts", "100000", "--stop-list", "1000000", pumps=True)
    try:
        time.sleep(1.0)
        with urllib.request.urlopen(f"http://127.0.0.1:{d.port}/v1/health", timeout=30) as r:
            health = json.loads(r.read())
        assert health["replica"]["fuel_cards"] == 1_000_000, health
        return {"rss_mb_1m_cards": d.rss_mb(), "start_1m_cards_s": d.start_s}
    finally:
        d.close()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print their figures."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.terminal", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sales", type=int, default=1000, help="sales for the till latencies (default 1000)")
    ap.add_argument("--skip-footprint", action="store_true", help="skip the 1,000,000-card daemon")
    args = ap.parse_args(argv)
    figures = till_figures(args.sales)
    if not args.skip_footprint:
        figures |= footprint_figures()
    for k, v in figures.items():
        print(f"{k}: {v:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
