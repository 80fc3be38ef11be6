"""Agents: who took a call, as the mirrored API's agentKey names them.

A recording's agent key is `Recording.agent_key`, computed by the database from one
expression (`models.AGENT_KEY_SQL`: the callcenter number when non-empty, else the
callcenter name). The agentKey filter, the agents listing and the view_recording_self
restriction all read that column, so they cannot disagree."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import false, func
from sqlmodel import col, select

from service.errors import InvalidArgument
from service.storage.db import Database
from service.storage.models import ApiKeyAgent, Recording, as_utc
from service.validation import check_text

MAX_AGENT_KEYS = 500


def check_agent_keys(values: Iterable[str], field: str = "agentKey") -> tuple[str, ...]:
    """1-500 agent keys, each non-empty and plain text that fits the binding's column; the
    order kept and repeats dropped. An error names `field`."""
    given = list(values)
    if not given:
        raise InvalidArgument(field, "needs at least one value")
    if len(given) > MAX_AGENT_KEYS:  # counted as sent: repeats too
        raise InvalidArgument(field, f"takes at most {MAX_AGENT_KEYS} values")
    keys = tuple(dict.fromkeys(given))
    for key in keys:
        if not key.strip():
            raise InvalidArgument(field, "must not be empty")
        check_text(key, field, ApiKeyAgent.agent_key)
    return keys


def agent_filters(agent_keys: Sequence[str], visible: frozenset[str] | None) -> list[Any]:
    """The WHERE clauses for an agentKey filter and for what the caller may see (None:
    every recording; a set: only those agents' recordings, none when it is empty)."""
    where: list[Any] = []
    column = col(Recording.agent_key)
    if agent_keys:
        where.append(column.in_(agent_keys))
    if visible is not None:
        where.append(column.in_(sorted(visible)) if visible else false())
    return where


@dataclass(frozen=True, slots=True)
class AgentSummary:
    agent_key: str
    recordings: int
    latest_call_at: datetime


async def list_agents(
    db: Database, business_id: str, visible: frozenset[str] | None, *, limit: int, offset: int
) -> tuple[list[AgentSummary], int]:
    """A business's agent keys with their recording counts, the agent of the newest latest
    call first (ties by key); recordings with neither number nor name have no agent. One
    grouped pass over the business's rows, which ix_recording_business_agent (business_id,
    agent_key, call_at) can answer alone; a big business is still a full pass (about 0.3 s
    per million rows), as the counts are not kept anywhere else."""
    key = col(Recording.agent_key)
    where = [col(Recording.business_id) == business_id, key != "", *agent_filters((), visible)]
    latest = func.max(col(Recording.call_at))
    page = (
        select(key, func.count(), latest)
        .where(*where)
        .group_by(key)
        .order_by(latest.desc(), key.asc())
        .offset(offset)
        .limit(limit)
    )
    async with db.session() as session:
        rows = (await session.exec(page)).all()
        total = int((await session.exec(select(func.count(func.distinct(key))).where(*where))).one())
    return [AgentSummary(str(k), int(n), as_utc(at)) for k, n, at in rows], total
