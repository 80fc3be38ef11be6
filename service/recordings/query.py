"""The recordings list query: validated once, from the mirrored API's parameters."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from service.errors import InvalidArgument
from service.kinds import KINDS
from service.recordings.agents import check_agent_keys
from service.validation import check_instant

TAGS = ("normal", "short", "wrong_or_spam", "no_answer", "other")
SORTS = {"callAt": "call_at", "duration": "duration_seconds", "score": "score"}
MAX_LIMIT, DEFAULT_LIMIT = 200, 20
# SQLite refuses long LIKE patterns ("LIKE or GLOB pattern too complex", from 50,000 bytes);
# no phone, name or note search needs more than this.
MAX_SEARCH = 200


@dataclass(frozen=True, slots=True)
class RecordingQuery:
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    direction: str | None = None
    source: str | None = None
    provider_id: str | None = None
    call_from: datetime | None = None
    call_to: datetime | None = None  # exclusive
    customer_phone: str | None = None
    customer_phone_normalized: str | None = None
    search: str | None = None
    tag: str | None = None  # a tag, or "none" for untagged
    score_min: float | None = None
    score_max: float | None = None
    sort_column: str = "call_at"
    descending: bool = True
    agent_keys: tuple[str, ...] = ()  # the agentKey filter; empty for none
    # What the caller may see: None for every recording, else only these agents'.
    visible_agents: frozenset[str] | None = None


def _instant(value: str, field: str, tz: ZoneInfo, *, end: bool) -> datetime:
    """ISO 8601 instant, or a date meaning that whole day in the business's time zone."""
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            start = check_instant(datetime.combine(day, time(), tz), field)
            return start + timedelta(days=1) if end else start
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidArgument(field, "must be an ISO 8601 date or date-time") from None
    parsed = check_instant(parsed if parsed.tzinfo else parsed.replace(tzinfo=tz), field)
    # The upper bound is kept exclusive: an instant given as "to" is itself included.
    return parsed + timedelta(microseconds=1) if end else parsed


def page_bounds(limit: int | None, offset: int) -> tuple[int, int]:
    """The mirrored API's paging, for every list: limit 1-200 (default 20), offset from 0."""
    if limit is not None and not 1 <= limit <= MAX_LIMIT:
        raise InvalidArgument("limit", f"must be between 1 and {MAX_LIMIT}")
    if offset < 0:
        raise InvalidArgument("offset", "must not be negative")
    return limit or DEFAULT_LIMIT, offset


def build_query(
    *,
    limit: int | None,
    offset: int,
    direction: str,
    source_provider: str,
    provider_id: str,
    call_date_from: str,
    call_date_to: str,
    customer_phone: str,
    customer_phone_normalized: str,
    search: str,
    tag: str,
    score_min: float | None,
    score_max: float | None,
    sort_by: str,
    sort_dir: str,
    tz: ZoneInfo,
    agent_key: Sequence[str] = (),
) -> RecordingQuery:
    page_limit, offset = page_bounds(limit, offset)
    if direction and direction not in ("in", "out"):
        raise InvalidArgument("direction", "must be in or out")
    if source_provider and source_provider not in (*KINDS, "upload"):
        raise InvalidArgument("sourceProvider", f"must be one of {', '.join((*sorted(KINDS), 'upload'))}")
    if tag and tag not in (*TAGS, "none"):
        raise InvalidArgument("tag", f"must be one of {', '.join((*TAGS, 'none'))}")
    if sort_by and sort_by not in SORTS:
        raise InvalidArgument("sortBy", "must be callAt, duration or score")
    if sort_dir and sort_dir not in ("asc", "desc"):
        raise InvalidArgument("sortDir", "must be asc or desc")
    if len(search) > MAX_SEARCH:
        raise InvalidArgument("search", f"must be at most {MAX_SEARCH} characters")
    for name, score in (("scoreMin", score_min), ("scoreMax", score_max)):
        # Documented as an int 0-100 (scores themselves may have a fraction).
        if score is not None and not (math.isfinite(score) and score.is_integer() and 0 <= score <= 100):
            raise InvalidArgument(name, "must be a whole number between 0 and 100")
    if score_min is not None and score_max is not None and score_min > score_max:
        raise InvalidArgument("scoreMin", "must not be above scoreMax")
    call_from = _instant(call_date_from, "callDateFrom", tz, end=False) if call_date_from else None
    call_to = _instant(call_date_to, "callDateTo", tz, end=True) if call_date_to else None
    if call_from and call_to and call_from > call_to:
        raise InvalidArgument("callDateFrom", "must not be after callDateTo")
    return RecordingQuery(
        limit=page_limit,
        offset=offset,
        direction=direction or None,
        source=source_provider or None,
        provider_id=provider_id or None,
        call_from=call_from,
        call_to=call_to,
        customer_phone=customer_phone.strip() or None,
        customer_phone_normalized=customer_phone_normalized.strip() or None,
        search=search.strip() or None,
        tag=tag or None,
        score_min=score_min,
        score_max=score_max,
        sort_column=SORTS[sort_by or "callAt"],
        descending=(sort_dir or "desc") == "desc",
        agent_keys=check_agent_keys(agent_key) if agent_key else (),
    )
