"""AuditService: authenticate, list the business's audit events, shape the answer."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from callvault.v1 import audit_pb2 as pb
from callvault.v1 import audit_pb2_grpc
from google.protobuf import timestamp_pb2

from service.api.convert import present
from service.audit.log import AuditFilter, AuditLog
from service.auth import Scope
from service.recordings.query import _instant
from service.storage.models import AuditEvent, as_utc
from service.transport.calls import CallAuth, MetadataContext
from service.validation import check_text

VIEW = (Scope.VIEW_AUDIT_LOG,)


def event_message(row: AuditEvent) -> pb.AuditEvent:
    at = timestamp_pb2.Timestamp()
    at.FromDatetime(as_utc(row.at))  # to the microsecond: the hash covers it
    out = pb.AuditEvent(
        id=row.id,
        seq=row.seq,
        at=at,
        key_name=row.key_name,
        action=row.action,
        target_kind=row.target_kind,
        target_id=row.target_id,
        transport=row.transport,
        request_id=row.request_id,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )
    for name, value in (
        ("key_id", row.key_id),
        ("range_start", row.range_start),
        ("range_end", row.range_end),
    ):
        if value is not None:
            setattr(out, name, value)
    return out


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, auth: CallAuth, log: AuditLog, timezone: str) -> None:
        self._auth = auth
        self._log = log
        self._tz = ZoneInfo(timezone)

    async def ListAuditEvents(self, request: pb.ListAuditEventsRequest, context: MetadataContext) -> Any:
        business = await self._auth.business(context, *VIEW)
        wanted = AuditFilter(
            recording_id=check_text(request.recording_id, "recordingId", AuditEvent.target_id),
            key_id=check_text(request.key_id, "keyId", AuditEvent.key_id),
            action=check_text(request.action, "action", AuditEvent.action),
            since=_instant(request.since, "since", self._tz, end=False) if request.since else None,
            until=_instant(request.until, "until", self._tz, end=True) if request.until else None,
        )
        page = await self._log.page(
            business, wanted, page_size=present(request, "page_size"), page_token=request.page_token
        )
        return pb.ListAuditEventsResponse(
            items=[event_message(row) for row in page.events], next_page_token=page.next_token
        )
