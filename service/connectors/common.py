"""Helpers the connectors share that have nothing to do with HTTP: config values, times,
windows and the shapes of provider JSON."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, overload

from service.connectors.base import CallRecord, UnexpectedAnswer, UnreadableAnswer


def required_text(config: Mapping[str, Any], key: str) -> str:
    """A non-blank string setting, stripped; ValueError naming the key otherwise."""
    value = config.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key} is required")
    return value.strip()


def utc(moment: datetime, *, naive_is_utc: bool = False) -> datetime:
    """``moment`` in UTC. A naive datetime is refused, its zone being a guess, unless
    ``naive_is_utc`` takes it as UTC (the only zone callvault stores)."""
    if moment.tzinfo is None:
        if not naive_is_utc:
            raise ValueError("a timezone-aware datetime is required")
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def floor_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def ceil_second(moment: datetime) -> datetime:
    floored = floor_second(moment)
    return floored if floored == moment else floored + timedelta(seconds=1)


@overload
def windows(since: datetime, until: datetime, size: timedelta) -> Iterator[tuple[datetime, datetime]]: ...
@overload
def windows(since: int, until: int, size: int) -> Iterator[tuple[int, int]]: ...
def windows(since: Any, until: Any, size: Any) -> Iterator[tuple[Any, Any]]:
    """[since, until) cut into consecutive [start, end) pieces no longer than ``size``, oldest
    first, for providers that cap the range one request may span."""
    if size <= size * 0:  # zero of size's own type; a non-positive size would never end
        raise ValueError("window size must be positive")
    while since < until:
        yield since, min(since + size, until)
        since += size


def halves(start: datetime, end: datetime) -> tuple[tuple[datetime, datetime], ...]:
    """[start, end) cut in two at a whole second near its middle, for a range the server
    answered only in part; none under two seconds, as second-granular servers take no finer."""
    if end - start < timedelta(seconds=2):
        return ()
    middle = floor_second(start + (end - start) / 2)
    return (start, middle), (middle, end)


def first_sighting(record: CallRecord, start: datetime, end: datetime, seen: set[str]) -> bool:
    """Whether ``record`` started in [start, end) and its id is not in ``seen`` (it joins it).

    Rows are placed by their own time, so a call on a window edge belongs to one window
    whatever the server's bounds; a row repeated across pages is yielded once.
    """
    if start <= record.started_at < end and record.external_id not in seen:
        seen.add(record.external_id)
        return True
    return False


def json_object(value: Any) -> dict[str, Any]:
    """A JSON object (a provider's answer envelope), else UnexpectedAnswer."""
    if not isinstance(value, dict):
        raise UnexpectedAnswer()
    return value


def object_list(value: Any) -> list[dict[str, Any]]:
    """A JSON array of objects (provider rows), else UnexpectedAnswer."""
    if not isinstance(value, list) or not all(isinstance(row, dict) for row in value):
        raise UnexpectedAnswer()
    return value


def finite_float(value: Any) -> float | None:
    """A finite JSON number, else None (bools are not numbers here)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def duration_field(row: Mapping[str, Any], key: str) -> float:
    """A row's duration in seconds: absent or empty is 0; anything that is not a finite
    number makes the answer unreadable, naming the field."""
    try:
        duration = float(row.get(key) or 0)
    except (TypeError, ValueError):
        raise UnreadableAnswer(key) from None
    if not math.isfinite(duration):
        raise UnreadableAnswer(key)
    return duration
