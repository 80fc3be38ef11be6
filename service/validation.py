"""Field checks every writer and reader of input shares, so each rule is stated once:
text fits its column and holds no NUL (PostgreSQL refuses NUL in text; SQLite would keep
it), instants lie where date arithmetic and both databases stay sound, numbers are
finite, and media types are the RFC 9110 grammar (they end up in a response header)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from service.errors import InvalidArgument

# Far from datetime's year 1 and 9999, so a time zone shift or a day added never overflows.
MIN_INSTANT = datetime(1900, 1, 1, tzinfo=UTC)
MAX_INSTANT = datetime(9000, 1, 1, tzinfo=UTC)

MAX_MEDIA_TYPE = 100
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# RFC 9110 section 8.3.1: type "/" subtype *( OWS ";" OWS [ parameter ] ); quoted values
# are kept to printable ASCII without escapes (stricter than the RFC, never a header break).
_MEDIA_TYPE = re.compile(
    rf"{_TCHARS}/{_TCHARS}(?:[ \t]*;[ \t]*(?:{_TCHARS}=(?:{_TCHARS}|\"[\x20\x21\x23-\x5b\x5d-\x7e]*\"))?)*"
)


def max_length(column: Any) -> int:
    """The declared length of a model's string column (`Recording.note`): the one definition."""
    length = column.property.columns[0].type.length
    assert isinstance(length, int), f"{column} has no declared length"
    return length


def check_plain(value: str, field: str) -> str:
    """No NUL, and text that can be encoded (JSON may carry a lone surrogate, "\\ud800")."""
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(field, "must be valid Unicode text") from None
    return value


def check_text(value: str, field: str, column: Any) -> str:
    """A text value bound for `column`: plain, and no longer than the column allows."""
    check_plain(value, field)
    limit = max_length(column)
    if len(value) > limit:
        raise InvalidArgument(field, f"must be at most {limit} characters")
    return value


def check_instant(value: datetime, field: str) -> datetime:
    """An aware instant between MIN_INSTANT and MAX_INSTANT, in UTC."""
    try:
        utc = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except (OverflowError, ValueError):
        utc = None
    if utc is None or not MIN_INSTANT <= utc < MAX_INSTANT:
        raise InvalidArgument(
            field, f"must be between {MIN_INSTANT.year} and {MAX_INSTANT.year - 1} (a year AD)"
        )
    return utc


def check_finite(value: float, field: str, *, minimum: float | None = None) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(field, "must be a finite number")
    if minimum is not None and value < minimum:
        raise InvalidArgument(field, f"must not be below {minimum:g}")
    return value


def is_media_type(value: str) -> bool:
    return len(value) <= MAX_MEDIA_TYPE and _MEDIA_TYPE.fullmatch(value) is not None


def check_media_type(value: str, field: str) -> str:
    if not is_media_type(value):
        raise InvalidArgument(
            field, f"must be a media type like audio/wav (type/subtype, at most {MAX_MEDIA_TYPE} characters)"
        )
    return value
