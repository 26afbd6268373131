"""Calendar months (UTC), the periods usage is counted in: a period is the month's first day.

Pure arithmetic, no clock (:func:`app.tenancy.usage.now` is the metering clock, which
tests replace), so both the in-memory counting of :mod:`.usage` and the Redis totals of
:mod:`.usage_redis` name, parse and bound months the same way.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from .errors import InvalidPeriod

_MONTH = re.compile(r"(\d{4})-(\d{2})")


def period_of(moment: datetime) -> date:
    """The period (first day of the UTC month) ``moment`` falls in."""
    moment = moment.astimezone(UTC)
    return date(moment.year, moment.month, 1)


def next_period(period: date) -> date:
    return date(period.year + period.month // 12, period.month % 12 + 1, 1)


def period_start(period: date) -> datetime:
    """The first instant of ``period``, UTC."""
    return datetime(period.year, period.month, 1, tzinfo=UTC)


def period_end(period: date) -> datetime:
    """The first instant after ``period``, UTC: when its limits reset and it may be closed."""
    return period_start(next_period(period))


def format_period(period: date) -> str:
    return f"{period.year:04d}-{period.month:02d}"


def parse_period(raw: str, field: str = "period") -> date:
    """``YYYY-MM`` -> its period. :raise InvalidPeriod: anything else."""
    match = _MONTH.fullmatch(raw)
    if match is None or not 1 <= int(match[2]) <= 12 or int(match[1]) < 1970:
        raise InvalidPeriod(field, "must be a month written YYYY-MM, e.g. 2026-12")
    return date(int(match[1]), int(match[2]), 1)
