"""Calls a connector listed, as Recording rows: mapped once, upserted idempotently.

A call is keyed by (business, origin = provider id, external id), so listing the same
call again (overlapping windows, a listing restarted after a failure, a pull resumed
after a crash) updates one row and never adds a second.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col

from service.connectors.base import CallRecord, Direction
from service.ids import uuid7
from service.recordings.phones import normalize
from service.storage.db import insert_for
from service.storage.models import Recording, RecordingStatus

PENDING, NO_AUDIO = RecordingStatus.PENDING, RecordingStatus.NO_AUDIO
KEY = ("business_id", "origin", "external_id")
MAX_EXTERNAL_ID = 200
MAX_CALL_ID = 200
MAX_REF = 2000
MAX_PARTY = 100


@dataclass(frozen=True, slots=True)
class Origin:
    """Whose calls these are: the same for every row of one pull."""

    business_id: str
    provider_id: str
    kind: str
    region: str


def parties(record: CallRecord) -> tuple[str, str]:
    """(customer, call-center number): the customer is the external party, the callee of
    an outbound call and the caller otherwise (internal calls have no better choice)."""
    if record.direction is Direction.OUTBOUND:
        return record.callee, record.caller
    return record.caller, record.callee


def is_storable(record: CallRecord) -> bool:
    """Whether the record's key and ref fit their columns; truncating either would merge calls."""
    ref = record.recording_ref
    return 0 < len(record.external_id) <= MAX_EXTERNAL_ID and (ref is None or len(ref) <= MAX_REF)


def row_values(record: CallRecord, origin: Origin, now: datetime) -> dict[str, Any]:
    """The columns a listing sets, for one call. Free-text parties are clipped to their columns."""
    customer, callcenter = (p[:MAX_PARTY] for p in parties(record))
    return {
        "id": uuid7(),
        "business_id": origin.business_id,
        "origin": origin.provider_id,
        "provider_id": origin.provider_id,
        "source": origin.kind,
        "external_id": record.external_id,
        # Bounded like the external id; a longer one only loses the grouping, never a row.
        "call_id": record.call_id if record.call_id and len(record.call_id) <= MAX_CALL_ID else None,
        "call_at": record.started_at,
        "duration_seconds": record.duration_seconds,
        "direction": record.direction.value,
        "outcome": record.outcome.value,
        "caller": record.caller[:MAX_PARTY],
        "callee": record.callee[:MAX_PARTY],
        "customer_phone": customer,
        "customer_phone_normalized": normalize(customer, origin.region),
        "callcenter_number": callcenter,
        "processing_status": PENDING if record.recording_ref else NO_AUDIO,
        "recording_ref": record.recording_ref or None,
        "created_at": now,
        "updated_at": now,
    }


def unique_rows(records: Iterable[CallRecord], origin: Origin, now: datetime) -> list[dict[str, Any]]:
    """One row per external id (the last listed wins): PostgreSQL refuses a statement
    that would update the same row twice."""
    rows = {r.external_id: row_values(r, origin, now) for r in records}
    return list(rows.values())


def upsert(dialect: str, rows: Sequence[dict[str, Any]]) -> postgresql.Insert | sqlite.Insert:
    """`upsert_statement` with `rows` in it, as one multi-row statement."""
    return _on_conflict(insert_for(dialect, Recording).values(list(rows)))


@functools.cache
def upsert_statement(dialect: str) -> postgresql.Insert | sqlite.Insert:
    """The upsert of one call, to execute with a batch of rows (executemany). Made once, so
    it is compiled once: building a multi-row statement of a hundred rows costs more than
    the database takes to run it."""
    return _on_conflict(insert_for(dialect, Recording))


def _on_conflict(stmt: postgresql.Insert | sqlite.Insert) -> postgresql.Insert | sqlite.Insert:
    """Insert new calls; for known ones refresh what the provider says about the call, and
    never touch what callvault owns (stored audio, tags, notes). A call whose recording
    appears later goes from no_audio to pending."""
    new = stmt.excluded
    status = col(Recording.processing_status)
    refreshed = (
        "call_id",
        "call_at",
        "duration_seconds",
        "direction",
        "outcome",
        "caller",
        "callee",
        "customer_phone",
        "customer_phone_normalized",
        "callcenter_number",
        "updated_at",
    )
    changes: dict[str, Any] = {name: new[name] for name in refreshed}
    changes["recording_ref"] = func.coalesce(new.recording_ref, col(Recording.recording_ref))
    changes["processing_status"] = case(
        ((status == NO_AUDIO) & new.recording_ref.is_not(None), PENDING), else_=status
    )
    return stmt.on_conflict_do_update(index_elements=list(KEY), set_=changes)
