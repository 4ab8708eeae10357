"""UTC-offset transition tables for the native evaluator, built from the IANA database.

The native evaluator cannot call zoneinfo without the GIL, so each time zone becomes a sorted
table of (first UTC second, offset in seconds) covering 1970..2200. The table is found by
probing zoneinfo every 7 days and bisecting to the second where the offset changed: a
change that is undone within 7 days would be missed (none exists in Russia's zones, and
tests/test_differential.py compares against zoneinfo on generated times).
"""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache

from authz.localtime import MAX_UTC_S, zone

_STEP_S = 7 * 86_400
#: The first row's start: earlier than any accepted time.
MIN_START = -(2**62)


def _offset(z, t: int) -> int:
    return int(datetime.fromtimestamp(t, timezone.utc).astimezone(z).utcoffset().total_seconds())


@lru_cache(maxsize=None)
def transitions(name: str) -> tuple[tuple[int, int], ...]:
    """Rows (first UTC second, UTC offset in seconds) of zone ``name``, oldest first."""
    z = zone(name)
    cur = _offset(z, 0)
    rows = [(MIN_START, cur)]
    t = 0
    while t < MAX_UTC_S:
        n = min(t + _STEP_S, MAX_UTC_S)
        if _offset(z, n) == cur:
            t = n
            continue
        lo, hi = t, n  # offset(lo) == cur, offset(hi) != cur
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _offset(z, mid) == cur:
                lo = mid
            else:
                hi = mid
        cur = _offset(z, hi)
        rows.append((hi, cur))
        t = hi
    return tuple(rows)
