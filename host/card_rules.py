"""The fleet controls of a fuel card (issue 11) as people type and read them: the admin command
line (``edgepos host set-controls``) and the fleet cabinet parse and show them here, so both
accept the same text and say the same thing about a mistake.

- a time window: ``DAYS,HH:MM-HH:MM``; days are ``mon`` .. ``sun``, ranges (``mon-fri``,
  ``fri-mon`` wraps) and lists (``mon,wed,sat``); ``24:00`` ends a day; an end before the
  start crosses midnight (``sat,22:00-06:00``: Saturday 22:00 to Sunday 06:00);
- stations: ``network``, ``home-region``, or a list of station ids ``1000,1001``;
- products: product codes, comma separated (``DT,AI95``), or ``all``;
- on breach: ``decline`` or ``alert``;
- a limit's unit: ``rub``, ``litres`` or ``purchases``.

Parsing checks the form only (InvalidInput naming the text); whether the rules make sense
together and against the network is :func:`host.master._check_rules`'s, the one rules check.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from authz.fuel_model import (
    DAY_MINUTES,
    FuelCard,
    LimitUnit,
    OnBreach,
    StationScope,
    TimeWindow,
)

from .checks import parse_litres, parse_rub
from .errors import InvalidInput

__all__ = ["DAYS", "controls_lines", "parse_amount", "parse_on_breach", "parse_products", "parse_stations",
           "parse_window", "products_text", "stations_text", "window_text"]

#: Day names, Monday first (authz.fuel_model.TimeWindow: 0 is Monday).
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"([01][0-9]|2[0-4]):([0-5][0-9])")
_WINDOW_HELP = "a time window is DAYS,HH:MM-HH:MM (mon-fri,07:00-19:00; sat,22:00-06:00)"


def _day(text: str) -> int:
    t = text.strip().lower()
    if t not in DAYS:
        raise InvalidInput(f"unknown day {text.strip()[:20]!r}: {', '.join(DAYS)}")
    return DAYS.index(t)


def _minute(text: str, *, end: bool) -> int:
    m = _TIME.fullmatch(text.strip())
    if not m:
        raise InvalidInput(f"a time is HH:MM (07:00, 24:00), got {text.strip()[:20]!r}")
    minute = int(m.group(1)) * 60 + int(m.group(2))
    if minute > DAY_MINUTES or (minute == DAY_MINUTES and not end):
        raise InvalidInput(f"{text.strip()} is past the end of a day (24:00 only ends a window)")
    return minute


def parse_window(text: str) -> TimeWindow:
    """``mon-fri,07:00-19:00`` as a TimeWindow (InvalidInput for text not of that form)."""
    *day_parts, span = [p.strip() for p in text.split(",")]
    if not day_parts or "-" not in span:
        raise InvalidInput(f"{_WINDOW_HELP}, got {text[:60]!r}")
    days: set[int] = set()
    for part in day_parts:
        first, dash, last = part.partition("-")
        a = _day(first)
        if not dash:
            days.add(a)
            continue
        b = _day(last)
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    start_text, _, end_text = span.partition("-")
    start, end = _minute(start_text, end=False), _minute(end_text, end=True)
    if end == 0:
        end = DAY_MINUTES  # 00:00 as an end is midnight at the end of the day
    return TimeWindow(frozenset(days), start, end)


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def window_text(w: TimeWindow) -> str:
    """A TimeWindow as :func:`parse_window` reads it (runs of days as ranges)."""
    days = sorted(w.days)
    runs: list[list[int]] = []
    for d in days:
        if runs and runs[-1][-1] == d - 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    parts = [DAYS[r[0]] if len(r) == 1 else f"{DAYS[r[0]]}-{DAYS[r[-1]]}" for r in runs]
    return f"{','.join(parts)},{_hhmm(w.start_min)}-{_hhmm(w.end_min)}"


def parse_stations(text: str) -> tuple[StationScope, frozenset[int]]:
    """``network``, ``home-region`` or ``1000,1001`` as a station restriction and its list."""
    t = text.strip().lower().replace("_", "-")
    if t == "network":
        return StationScope.NETWORK, frozenset()
    if t in ("home-region", "home"):
        return StationScope.HOME_REGION, frozenset()
    ids = [p.strip() for p in t.split(",") if p.strip()]
    if not ids or not all(re.fullmatch(r"[0-9]{1,18}", p) for p in ids):
        raise InvalidInput(f"stations are network, home-region or station ids (1000,1001), got {text[:60]!r}")
    return StationScope.LISTED, frozenset(int(p) for p in ids)


def stations_text(card: FuelCard) -> str:
    """A card's station restriction as :func:`parse_stations` reads it."""
    if card.station_scope is StationScope.LISTED:
        return ",".join(str(s) for s in sorted(card.station_ids))
    return "home-region" if card.station_scope is StationScope.HOME_REGION else "network"


def parse_products(text: str) -> frozenset[str] | None:
    """``DT,AI95`` as a product list, ``all`` as None (every product of the card's groups)."""
    t = text.strip()
    if t.lower() == "all":
        return None
    codes = [p.strip() for p in t.split(",") if p.strip()]
    if not codes:
        raise InvalidInput("give product codes (DT,AI95), or all for every product of the card's groups")
    return frozenset(codes)


def products_text(products: Iterable[str] | None) -> str:
    """A product list as :func:`parse_products` reads it."""
    return "all" if products is None else ",".join(sorted(products))


def parse_on_breach(text: str) -> OnBreach:
    """``decline`` or ``alert``."""
    try:
        return OnBreach[text.strip().upper()]
    except KeyError:
        raise InvalidInput(f"on breach is decline or alert, got {text.strip()[:20]!r}") from None


_UNITS = {"rub": LimitUnit.KOPECKS, "litres": LimitUnit.MILLILITRES, "purchases": LimitUnit.PURCHASES}


def parse_amount(unit: str, text: str) -> tuple[LimitUnit, int]:
    """A limit's amount typed in ``unit`` (``rub``, ``litres``, ``purchases``) as its unit and
    integer amount (kopecks, millilitres, a count)."""
    u = _UNITS.get(unit.strip().lower())
    if u is None:
        raise InvalidInput(f"a limit's unit is rub, litres or purchases, got {unit.strip()[:20]!r}")
    if u is LimitUnit.KOPECKS:
        return u, parse_rub(text)
    if u is LimitUnit.MILLILITRES:
        return u, parse_litres(text)
    if not re.fullmatch(r"[0-9]{1,9}", text.strip()):
        raise InvalidInput(f"a count of purchases is a whole number 0 or more, got {text.strip()[:20]!r}")
    return u, int(text.strip())


def controls_lines(card: FuelCard) -> list[str]:
    """The card's controls in words, one line each (``show-card``, the cabinet)."""
    return [f"products {products_text(card.products)}",
            f"time windows {'; '.join(window_text(w) for w in card.windows) if card.windows else 'any time'}",
            f"stations {stations_text(card)}",
            f"on breach {card.on_breach.name.lower()}"]
