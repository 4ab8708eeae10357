"""Local calendar arithmetic on integers, for period roll-over in a contract's time zone.

Days are counted from 1970-01-01 (day 0) in *local* time; a limit's period is identified by
the local day it starts on. Weeks start on Monday, months on the 1st.
"""

from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ModelError

EPOCH = date(1970, 1, 1)
#: Largest UTC second the evaluator accepts (year 2200): keeps every table finite.
MAX_UTC_S = 7_258_118_400


@lru_cache(maxsize=None)
def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``, or a ModelError naming it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ModelError(f"unknown time zone {name!r}") from exc


def local_date(now_utc_s: int, tz: str) -> date:
    """The local calendar date at UTC second ``now_utc_s`` in zone ``tz``."""
    return datetime.fromtimestamp(now_utc_s, timezone.utc).astimezone(zone(tz)).date()


def local_weekday_minute(now_utc_s: int, tz: str) -> tuple[int, int]:
    """The local weekday (0 Monday .. 6 Sunday) and minute of the day (0..1439) at UTC
    second ``now_utc_s`` in zone ``tz``: what a card's time windows are checked against."""
    t = datetime.fromtimestamp(now_utc_s, timezone.utc).astimezone(zone(tz))
    return t.weekday(), t.hour * 60 + t.minute


def day_number(d: date) -> int:
    """Days from 1970-01-01 to ``d``."""
    return (d - EPOCH).days


def date_of_day(day: int) -> date:
    """The date ``day`` days after 1970-01-01."""
    return EPOCH + timedelta(days=day)


def week_start(d: date) -> date:
    """The Monday of the week of ``d``."""
    return d - timedelta(days=d.weekday())


def month_start(d: date) -> date:
    """The 1st of the month of ``d``."""
    return d.replace(day=1)


def quarter_start(d: date) -> date:
    """The 1st of the calendar quarter of ``d`` (January, April, July, October)."""
    return d.replace(month=(d.month - 1) // 3 * 3 + 1, day=1)


def year_start(d: date) -> date:
    """The 1st of January of the year of ``d``."""
    return d.replace(month=1, day=1)


def month_index(d: date) -> int:
    """Months since January 1970 (used for turnover months)."""
    return (d.year - 1970) * 12 + d.month - 1


def add_months_utc(at_utc_s: int, months: int) -> int:
    """The UTC second ``months`` calendar months after ``at_utc_s``.

    Calendar arithmetic in UTC; a day past the end of the target month is clamped to its
    last day (30 November + 3 months = 28/29 February), the time of day is kept.
    """
    t = datetime.fromtimestamp(at_utc_s, timezone.utc)
    m = t.month - 1 + months
    year, month = t.year + m // 12, m % 12 + 1
    last = (date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)).day
    return int(t.replace(year=year, month=month, day=min(t.day, last)).timestamp())
