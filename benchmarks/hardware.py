"""Hardware-path benchmarks, printed as ``key: value`` lines: ``python -m benchmarks.hardware``.

One function per figure, registered with :func:`figure`; ``main`` runs them in order (or
only the names given on the command line). Card figures go through the real PC/SC stack:
pyscard -> pcscd -> vpcd -> the virtual card over TCP (pcscd is started if it is not
running, as the test fixture does).

* ``apdu_roundtrip_p50_ms``: one SELECT exchanged with the card, median.
* ``card_session_p99_ms``: a fresh card session (connect, which powers/resets the card)
  to card data read and both MACs checked (SELECT, READ RECORDs, GET COUNTERS), p99.
* ``scan_to_event_p99_ms``: a scan written into the scanner's pty to the driver's Scan
  event, p99 (real pty, the pyserial driver's framing and EAN-13 check).
* ``card_insert_detect_p50_ms``: the virtual card connecting to vpcd to CardInserted
  delivered by the driver, median. This is pcscd's polling of vpcd (every 0.4 s), not our
  code; a physical reader with interrupt-driven presence (CCID) reports in milliseconds.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

__all__ = ["FIGURES", "figure", "percentile", "main"]

#: name -> coroutine function returning the figure's value
FIGURES: dict[str, Callable[[], Awaitable[float]]] = {}


def figure(name: str):
    """Register an async function as the benchmark of figure ``name``."""
    def register(fn: Callable[[], Awaitable[float]]) -> Callable[[], Awaitable[float]]:
        FIGURES[name] = fn
        return fn
    return register


def percentile(samples: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``samples``."""
    s = sorted(samples)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


# --- the card rig ----------------------------------------------------------------------
class _CardRig:
    """pcscd + one personalised virtual card in reader "Virtual PCD 00 00"."""

    def __init__(self) -> None:
        from hw.card.keys import SoftwareKeyStore, generate_master_key
        from hw.sim.card import VirtualCard
        from hw.sim.personalise import personalise
        from hw.sim.pcscd import READER, ensure_pcscd, settle_empty_reader

        self.pcscd = ensure_pcscd()
        self.reader_name = READER
        self.settle = settle_empty_reader
        self.keys = SoftwareKeyStore(generate_master_key())
        self._dir = tempfile.TemporaryDirectory(prefix="edgepos-bench-")
        path = Path(self._dir.name) / "card.json"
        personalise(_bench_card(), "1234", self.keys).save(path)
        self.settle()
        self.card = VirtualCard(path)

    def close(self) -> None:
        self.card.pull()
        self.settle()
        self.pcscd.stop()
        self._dir.cleanup()


def _bench_card():
    """A card with three limits of different shapes (as the card tests use)."""
    from datetime import date

    from authz.fuel_model import FuelCard, Limit, LimitUnit, Period, ProductGroup, Scope

    return FuelCard(
        "7005830000000017", 42, date(2027, 12, 31), frozenset({ProductGroup.FUEL, ProductGroup.CAR_WASH}),
        (Limit(1, LimitUnit.MILLILITRES, Period.DAY, 200_000),
         Limit(2, LimitUnit.KOPECKS, Period.MONTH, 5_000_000, Scope.GROUP, ProductGroup.FUEL),
         Limit(3, LimitUnit.KOPECKS, Period.TRANSACTION, 300_000, Scope.PRODUCT, None, "AI95")))


_rig: _CardRig | None = None


def _card_rig() -> _CardRig:
    global _rig
    if _rig is None:
        _rig = _CardRig()
    return _rig


async def _inserted(reader, card) -> None:
    from hw.card.reader import CardInserted

    it = reader.events()
    if not reader.card_present:
        card.insert()
    while not isinstance(await asyncio.wait_for(anext(it), 5.0), CardInserted):
        pass


@figure("apdu_roundtrip_p50_ms")
async def apdu_roundtrip_p50_ms(n: int = 1000) -> float:
    from hw.card.apdu import Command
    from hw.card.application import AID
    from hw.card.reader import CardReader

    rig = _card_rig()
    select = Command(0x00, 0xA4, 0x04, 0x00, AID, 256)
    async with CardReader(rig.reader_name) as r:
        await _inserted(r, rig.card)
        for _ in range(50):  # connect and warm up
            await r.transmit(select, timeout=2.0)
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            resp = await r.transmit(select, timeout=2.0)
            samples.append((time.perf_counter() - t0) * 1000)
            assert resp.ok
    return percentile(samples, 50)


@figure("card_session_p99_ms")
async def card_session_p99_ms(n: int = 300) -> float:
    from hw.card.application import FuelCardApplication
    from hw.card.reader import CardReader

    rig = _card_rig()
    async with CardReader(rig.reader_name) as r:
        await _inserted(r, rig.card)
        samples = []
        for _ in range(n):
            await r.reset()  # the next exchange connects afresh: a new card session
            t0 = time.perf_counter()
            data = await FuelCardApplication(r, rig.keys).read_card()
            samples.append((time.perf_counter() - t0) * 1000)
            assert data.state.txn_counter == 0
    return percentile(samples, 99)


@figure("card_insert_detect_p50_ms")
async def card_insert_detect_p50_ms(n: int = 8) -> float:
    from hw.card.reader import CardInserted, CardReader, CardRemoved

    rig = _card_rig()
    samples = []
    async with CardReader(rig.reader_name) as r:
        it = r.events()
        if r.card_present:
            rig.card.pull()
            while not isinstance(await asyncio.wait_for(anext(it), 5.0), CardRemoved):
                pass
        for _ in range(n):
            await asyncio.to_thread(rig.settle)
            t0 = time.perf_counter()
            rig.card.insert()
            while not isinstance(await asyncio.wait_for(anext(it), 5.0), CardInserted):
                pass
            samples.append((time.perf_counter() - t0) * 1000)
            rig.card.pull()
            while not isinstance(await asyncio.wait_for(anext(it), 5.0), CardRemoved):
                pass
    return percentile(samples, 50)


@figure("scan_to_event_p99_ms")
async def scan_to_event_p99_ms(n: int = 500) -> float:
    """A framed scan written into the pty to the Scan event delivered by the driver, p99.
    Each scan is a different club card (the repeat filter would drop a repeat)."""
    from authz.sample import club_card_number
    from hw.scanner import Scan, Scanner, ScannerConfig
    from hw.sim.scanner import ScannerSim

    samples = []
    with ScannerSim() as sim:
        async with Scanner(ScannerConfig(port=sim.link, repeat_window_s=0.0)) as scanner:
            await asyncio.wait_for(scanner.wait_connected(), 10)
            it = aiter(scanner)
            for i in range(n):
                code = club_card_number(i)
                t0 = time.perf_counter()
                sim.scan(code)
                ev = await asyncio.wait_for(anext(it), 5)
                samples.append((time.perf_counter() - t0) * 1000)
                assert isinstance(ev, Scan) and ev.code == code
    return percentile(samples, 99)


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(FIGURES)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        print(f"unknown figures: {', '.join(unknown)}; known: {', '.join(FIGURES)}", file=sys.stderr)
        return 2
    try:
        for name in names:
            value = asyncio.run(asyncio.wait_for(FIGURES[name](), 300))
            print(f"{name}: {value:.3f}", flush=True)
    finally:
        if _rig is not None:
            _rig.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
