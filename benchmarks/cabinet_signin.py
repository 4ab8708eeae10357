"""Fleet cabinet sign-in latency with the production argon2id parameters; ``key: value`` lines.

    python -m benchmarks.cabinet_signin                 # 40 sign-ins
    python -m benchmarks.cabinet_signin --signins 100

What is timed: one sign-in POST (/fleet/login) over real HTTP on loopback, from the request
to the 303 answer: the rate-limit reads, the argon2id verify (the cost that dominates), the
new session written to the SQLite ledger, the device cookie. The CSRF page before each POST
is not timed. The hash alone is timed too (wall and CPU). A plain-HTTP client cannot keep
``Secure`` cookies, so the bench serves cookies without ``Secure``/``__Host-`` (the cost is
the same). Wall-clock figures on a shared 2-core machine are noisy: compare the CPU figure.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from host import fleet_users as fu
from host.ledger import Ledger
from host.passwords import PARAMETERS, Hasher
from host.web.app import create_app
from host.web.config import WebConfig

PASSWORD = "a long sign-in passphrase 2026"


def _p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


async def _run(n: int, url: str) -> list[float]:
    cfg = WebConfig(db_url=url, base_url="http://127.0.0.1", secure_cookies=False)
    runner = web.AppRunner(create_app(cfg), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    times = []
    try:
        for _ in range(n):
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
                async with s.get(f"http://127.0.0.1:{port}/fleet/login") as r:
                    csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text()).group(1)  # type: ignore[union-attr]
                t0 = time.perf_counter()
                async with s.post(f"http://127.0.0.1:{port}/fleet/login", allow_redirects=False,
                                  data={"csrf": csrf, "login": "fleetuser", "password": PASSWORD}) as r:
                    await r.read()
                    if r.status != 303:
                        raise SystemExit(f"sign-in answered {r.status}, not 303")
                times.append((time.perf_counter() - t0) * 1000)
    finally:
        await runner.cleanup()
    return times


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--signins", type=int, default=40)
    a = ap.parse_args(argv)
    h = Hasher(PARAMETERS)
    stored = h.hash(PASSWORD)
    wall, cpu = [], []
    for _ in range(20):
        t0, c0 = time.perf_counter(), time.process_time()
        h.verify(stored, PASSWORD)
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
        with Ledger.open(url) as led:
            fu.register(led, h, login="fleetuser", email="fleet@example.test", password=PASSWORD, company="",
                        base_url="http://127.0.0.1")
            led.db.execute("UPDATE web_fleet_users SET status = 'active'")  # the e-mailed link's effect
        times = asyncio.run(_run(a.signins, url))
    print(f"argon2id_parameters: {PARAMETERS}")
    print(f"argon2id_verify_p50_ms: {statistics.median(wall):.1f}")
    print(f"argon2id_verify_cpu_p50_ms: {statistics.median(cpu):.1f}")
    print(f"cabinet_signins: {len(times)}")
    print(f"cabinet_signin_p50_ms: {statistics.median(times):.1f}")
    print(f"cabinet_signin_p95_ms: {_p(times, 0.95):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
