"""Edge daemon benchmarks, printed as ``key: value`` lines: ``python -m benchmarks.terminal``.

The daemon runs as its own process (``edgepos run``) and the client here talks to it over
loopback HTTP, as a till would; every answer that changes state was fsync'd to the journal
before it came back.

* ``till_quote_p99_ms``: ``GET .../quote`` on an open sale with a card, p99.
* ``till_commit_p99_ms``: ``POST .../commit`` (decide, journal with fsync, answer), p99.
* ``till_sale_p99_ms``: a whole sale (open, attach card, quote, commit), p99.
* ``fuel_preauth_p99_ms``: ``POST /v1/pumps/{pump}/authorize`` with a card in the reader and
  its PIN checked: decide, journal (fsync), reserve on the card through pcscd, preset the
  pump, answer; p99.
* ``card_to_preset_p99_ms``: a virtual card inserted into the reader (vpcd) to the pump
  preset: pcscd notices the card, the lane reads and checks it, the PIN and the authorization
  are sent at once; p99. ``card_insert_detect_p50_ms`` (benchmarks.hardware) is pcscd's share.
* ``card_read_to_preset_p99_ms``: the same without pcscd's insertion poll (from the lane
  showing the card read to the preset).
* ``start_s``: process start to the API answering, with the default replica.
* ``rss_mb_1m_cards``: resident memory of a daemon whose replica holds 1,000,000 fuel cards
  and a 1,000,000-entry stop list, after start; ``start_1m_cards_s``: its start-up time.
* ``rss_mb_1m_cards_with_100k_club``, ``start_1m_cards_with_100k_club_s``: the same with a
  100,000-account club replica added.
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

from terminal.apiauth import client_toml, new_token
from terminal.config import DEFAULT_SITE_TOML, ApiRole

ROOT = Path(__file__).resolve().parents[1]


def percentile(samples: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``samples``."""
    s = sorted(samples)
    return s[max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))]


class Daemon:
    """``edgepos run`` in a subprocess with a fresh data directory."""

    def __init__(self, *extra: str, env: dict | None = None, pumps: bool = False) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="edgepos-bench-")
        #: the bearer tokens of the benchmark's clients (the daemon's configuration has their hashes)
        self.tokens = {"till-1": new_token(), "console": new_token(), "operator": new_token()}
        clients = "\n" + "\n".join((client_toml("till-1", ApiRole.TILL, self.tokens["till-1"], till="till-1"),
                                     client_toml("console", ApiRole.PUMP_CONSOLE, self.tokens["console"]),
                                     client_toml("operator", ApiRole.OPERATOR, self.tokens["operator"])))
        if pumps:
            # a simulation: the virtual cards are made under the simulation's public test issuer key
            text = DEFAULT_SITE_TOML.replace("port = 8780", "port = 0\nsimulation = true") + clients
        else:
            text = (DEFAULT_SITE_TOML.split("[[pumps]]")[0] + '\n[[tills]]\nid = "till-1"\n\n[api]\nport = 0\n'
                    + clients)
        text = text.replace('data_dir = "var/sim"', f'data_dir = "{self.dir.name}/data"')
        cfg = Path(self.dir.name) / "site.toml"
        cfg.write_text(text)
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "terminal.cli", "run", "--simulated-replica",
                                      "--config", str(cfg), *extra],
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
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {d.tokens['till-1']}"}
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


def fuel_figures(n: int) -> dict[str, float]:
    """Authorization latency and card-to-preset time through pcscd and a virtual card."""
    import http.client

    from authz import sample
    from authz.fuel_model import CardStatus, ProductGroup
    from hw.sim.card import VirtualCard
    from hw.sim.pcscd import ensure_pcscd, settle_empty_reader
    from hw.sim.personalise import personalise
    from terminal.fuel import sim_key_store

    pcscd = ensure_pcscd()
    d = Daemon("--fuel-cards", "2000", "--club-accounts", "10", pumps=True)
    tmp = tempfile.TemporaryDirectory(prefix="edgepos-bench-cards-")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
        keys = iter(range(10**9))

        def call(method, path, body=None):
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {d.tokens['console']}"}
            if method == "POST":
                headers["Idempotency-Key"] = f"fuel-bench-{next(keys):010d}"
            conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            r = conn.getresponse()
            return r.status, json.loads(r.read())

        def wait_state(states, timeout=5.0):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                st, v = call("GET", "/v1/pumps/1")
                if v["state"] in states:
                    return v
                time.sleep(0.0005)
            raise RuntimeError(f"pump never reached {states}: {v}")

        model = sample.fuel_model(n_cards=2000, seed=1)
        contracts = {c.contract_id: c for c in model.contracts}
        card = next(c for c in model.cards if c.status is CardStatus.ACTIVE and ProductGroup.FUEL in c.groups
                    and not c.limits and c.card_no not in model.stop_list
                    and contracts[c.contract_id].balance_kop >= 50_000_000)
        path = Path(tmp.name) / "card.json"
        personalise(card, "1234", sim_key_store()).save(path)
        vcard = VirtualCard(path)
        preauth, to_preset, read_to_preset = [], [], []
        settle_empty_reader()
        vcard.insert()
        wait_state(("card_read",))
        for _ in range(n):
            assert call("POST", "/v1/pumps/1/pin", {"pin": "1234"})[0] == 200
            t0 = time.perf_counter()
            st, ans = call("POST", "/v1/pumps/1/authorize", {"product": "AI92", "preset_volume_ml": 1_000})
            preauth.append((time.perf_counter() - t0) * 1000)
            assert st == 200 and ans["approved"], ans
            assert call("POST", "/v1/pumps/1/void", {})[0] == 200
            wait_state(("card_read",))
        vcard.pull()
        for _ in range(max(10, n // 10)):
            settle_empty_reader()
            t0 = time.perf_counter()
            vcard.insert()
            wait_state(("card_read",))
            t1 = time.perf_counter()
            call("POST", "/v1/pumps/1/pin", {"pin": "1234"})
            st, ans = call("POST", "/v1/pumps/1/authorize", {"product": "AI92", "preset_volume_ml": 1_000})
            t2 = time.perf_counter()
            assert st == 200 and ans["approved"], ans
            to_preset.append((t2 - t0) * 1000)
            read_to_preset.append((t2 - t1) * 1000)
            call("POST", "/v1/pumps/1/void", {})
            vcard.pull()
        return {"fuel_preauth_p50_ms": percentile(preauth, 50), "fuel_preauth_p99_ms": percentile(preauth, 99),
                "card_to_preset_p99_ms": percentile(to_preset, 99),
                "card_read_to_preset_p99_ms": percentile(read_to_preset, 99)}
    finally:
        d.close()
        tmp.cleanup()
        pcscd.stop()


def footprint_figures() -> dict[str, float]:
    """RSS and start-up time with 1,000,000 fuel cards and a 1,000,000-entry stop list (the
    target's configuration), and the same with a 100,000-account club replica added."""
    out = {}
    for suffix, club in (("", "10"), ("_with_100k_club", "100000")):
        d = Daemon("--fuel-cards", "1000000", "--club-accounts", club, "--stop-list", "1000000", pumps=True)
        try:
            time.sleep(1.0)
            req = urllib.request.Request(f"http://127.0.0.1:{d.port}/v1/health",
                                         headers={"Authorization": f"Bearer {d.tokens['operator']}"})
            with urllib.request.urlopen(req, timeout=30) as r:
                health = json.loads(r.read())
            assert health["replica"]["fuel_cards"] == 1_000_000, health
            out[f"rss_mb_1m_cards{suffix}"] = d.rss_mb()
            out[f"start_1m_cards{suffix}_s"] = d.start_s
        finally:
            d.close()
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print their figures."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.terminal", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sales", type=int, default=1000, help="sales for the till latencies (default 1000)")
    ap.add_argument("--authorizations", type=int, default=300, help="fuel authorizations (default 300)")
    ap.add_argument("--skip-footprint", action="store_true", help="skip the 1,000,000-card daemon")
    ap.add_argument("--skip-fuel", action="store_true", help="skip the figures that need pcscd")
    args = ap.parse_args(argv)
    figures = till_figures(args.sales)
    if not args.skip_fuel:
        figures |= fuel_figures(args.authorizations)
    if not args.skip_footprint:
        figures |= footprint_figures()
    for k, v in figures.items():
        print(f"{k}: {v:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
