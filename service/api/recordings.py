"""RecordingService: authenticate, call the recordings domain, shape the answer."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterable, AsyncIterator, Awaitable
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from callvault.v1 import recordings_pb2 as pb
from callvault.v1 import recordings_pb2_grpc
from google.api import httpbody_pb2

from service.api.convert import present, timestamp
from service.audit.events import Action, ByteSpan, Transport, provider_target, recording_target
from service.audit.log import AuditLog
from service.auth import Scope
from service.blobs.base import close_stream
from service.errors import AudioNotStored, InvalidArgument
from service.recordings.agents import AgentSummary
from service.recordings.holds import Hold, LegalHolds, hold_of
from service.recordings.listenlinks import ListenLinks
from service.recordings.query import build_query, page_bounds
from service.recordings.store import ListedRecording, NewUpload, RecordingStore
from service.recordings.uploadlinks import UploadLinks, audio_path
from service.storage.models import Recording, RecordingStatus, SyncJob, as_utc
from service.sync.queue import SyncJobs
from service.transport.bodies import ByteStream
from service.transport.calls import CallAuth, Caller, MetadataContext, metadata_value
from service.validation import check_media_type, is_media_type

VIEW = (Scope.VIEW_RECORDING_ALL,)
# Reading a recording: view_recording_all, or view_recording_self for the key's agents only
# (Principal.visible_agents); what it may not see is not found.
READ = ((Scope.VIEW_RECORDING_ALL, Scope.VIEW_RECORDING_SELF),)
MANAGE = (Scope.MANAGE_CALL_RECORDING,)
# Not manage_call_recording: the key that deletes must not be the one that lifts the hold.
HOLD = (Scope.MANAGE_LEGAL_HOLD,)
SYNC = (Scope.MANAGE_PROVIDER_CONFIG,)
# Every audio answer, with a key or a listen link (whose answer no Authorization keeps out
# of shared caches): cached by no shared cache, never sniffed as another type, and a page
# it plays in sends no Referer (which would carry a link's token).
AUDIO_POLICY = (
    ("cache-control", "private"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
)


class SyncRequester(Protocol):
    async def request_sync(self, business_id: str, provider_id: str) -> SyncJob: ...


class StreamingContext(MetadataContext, Protocol):
    async def send_initial_metadata(self, metadata: Any) -> None: ...


def recording_message(row: Recording | ListedRecording, tz: ZoneInfo) -> pb.Recording:
    """A recording as both transports show it; callAt carries the business's offset."""
    out = pb.Recording(
        id=row.id,
        data_id=row.external_id,
        call_at=as_utc(row.call_at).astimezone(tz).isoformat(timespec="seconds"),
        direction=row.direction,
        customer_phone=row.customer_phone,
        customer_phone_normalized=row.customer_phone_normalized,
        processing_status=row.processing_status,
        duration_seconds=row.duration_seconds,
        source_provider=row.source,
        caller=row.caller,
        callee=row.callee,
        outcome=row.outcome,
        callcenter_number=row.callcenter_number,
        callcenter_name=row.callcenter_name,
        note=row.note,
        content_type=row.content_type,
    )
    optional = (
        ("tag", row.tag),
        ("score", row.score),
        ("provider_id", row.provider_id),
        ("call_id", row.call_id),
    )
    for name, value in optional:
        if value is not None:
            setattr(out, name, value)
    if row.processing_status == RecordingStatus.COMPLETED and row.sha256 is not None:
        out.audio_url, out.sha256, out.size = audio_path(row.id), row.sha256, row.size or 0
    hold = hold_of(row)
    if hold is not None:
        out.legal_hold.CopyFrom(hold_message(hold))
    return out


def hold_message(hold: Hold) -> pb.LegalHold:
    return pb.LegalHold(reason=hold.reason, placed_at=timestamp(hold.placed_at))


async def _chunks(
    first: pb.UploadRecordingAudioRequest, rest: AsyncIterator[pb.UploadRecordingAudioRequest]
) -> AsyncIterator[bytes]:
    if first.chunk:
        yield first.chunk
    async for message in rest:
        yield message.chunk


class RecordingServicer(recordings_pb2_grpc.RecordingServiceServicer):
    def __init__(
        self,
        auth: CallAuth,
        store: RecordingStore,
        jobs: SyncJobs,
        sync: SyncRequester,
        timezone: str,
        links: UploadLinks,
        listen: ListenLinks,
        holds: LegalHolds,
        audit: AuditLog,
    ) -> None:
        self._audit = audit
        self._auth = auth
        self._holds = holds
        self._links = links
        self._listen = listen
        self._store = store
        self._jobs = jobs
        self._sync = sync
        self._tz = ZoneInfo(timezone)

    def _recording(self, row: Recording | ListedRecording) -> pb.Recording:
        return recording_message(row, self._tz)

    @staticmethod
    def _receipt(row: Recording) -> pb.Recording:
        """What an upload settled, for a key that may upload but not read recordings: the
        call's details (phones, note, tag, score) stay with view_recording_all."""
        return pb.Recording(
            id=row.id,
            processing_status=row.processing_status,
            content_type=row.content_type,
            audio_url=audio_path(row.id),
            sha256=row.sha256 or "",
            size=row.size or 0,
        )

    @staticmethod
    def _job(job: SyncJob) -> pb.SyncJob:
        out = pb.SyncJob(
            id=job.id,
            provider_id=job.provider_id,
            trigger=job.trigger,
            state=job.state,
            calls_seen=job.calls_seen,
            recordings_stored=job.recordings_stored,
            bytes_stored=job.bytes_stored,
            failures=job.failures,
            created_at=timestamp(job.created_at),
        )
        if job.error:
            out.error = job.error
        if job.started_at:
            out.started_at.CopyFrom(timestamp(job.started_at))
        if job.finished_at:
            out.finished_at.CopyFrom(timestamp(job.finished_at))
        return out

    def _agent(self, agent: AgentSummary) -> pb.RecordingAgent:
        return pb.RecordingAgent(
            agent_key=agent.agent_key,
            recording_count=agent.recordings,
            latest_call_at=agent.latest_call_at.astimezone(self._tz).isoformat(timespec="seconds"),
        )

    async def ListRecordings(self, request: pb.ListRecordingsRequest, context: MetadataContext) -> Any:
        caller = await self._auth.caller(context, *READ)
        query = build_query(
            limit=present(request, "limit"),
            offset=request.offset,
            direction=request.direction,
            source_provider=request.source_provider,
            provider_id=request.provider_id,
            call_date_from=request.call_date_from,
            call_date_to=request.call_date_to,
            customer_phone=request.customer_phone,
            customer_phone_normalized=request.customer_phone_normalized,
            search=request.search,
            tag=request.tag,
            score_min=present(request, "score_min"),
            score_max=present(request, "score_max"),
            sort_by=request.sort_by,
            sort_dir=request.sort_dir,
            tz=self._tz,
            agent_key=request.agent_key,
        )
        query = dataclasses.replace(query, visible_agents=caller.principal.visible_agents())
        rows, total = await self._store.search(caller.business_id, query)
        return pb.ListRecordingsResponse(
            items=[self._recording(r) for r in rows], total=total, limit=query.limit, offset=query.offset
        )

    async def ListRecordingAgents(
        self, request: pb.ListRecordingAgentsRequest, context: MetadataContext
    ) -> Any:
        caller = await self._auth.caller(context, *READ)
        limit, offset = page_bounds(present(request, "limit"), request.offset)
        agents, total = await self._store.agents(
            caller.business_id, caller.principal.visible_agents(), limit=limit, offset=offset
        )
        return pb.ListRecordingAgentsResponse(
            items=[self._agent(a) for a in agents], total=total, limit=limit, offset=offset
        )

    async def GetRecording(self, request: pb.GetRecordingRequest, context: MetadataContext) -> Any:
        caller = await self._auth.caller(context, *READ)
        row = await self._store.get(caller.business_id, request.id, visible=caller.principal.visible_agents())
        return self._recording(row)

    async def DownloadRecordingBytes(
        self, request: pb.DownloadRecordingRequest, context: StreamingContext
    ) -> ByteStream:
        """DownloadRecording up to its first byte (service/transport/bodies.py)."""
        if request.link_token:
            caller = await self._link_caller(request, context)
        else:
            caller = await self._auth.caller(context, *READ)
        row, span, chunks = await self._store.open_audio(
            caller.business_id,
            request.id,
            metadata_value(context, "range"),
            request.offset,
            request.length,
            visible=caller.principal.visible_agents(),
        )
        headers = [
            ("content-length", str(span.end - span.start)),
            ("etag", f'"{row.sha256}"'),
            ("accept-ranges", "bytes"),
            *AUDIO_POLICY,
        ]
        if span.partial:
            headers += [
                ("content-range", f"bytes {span.start}-{span.end - 1}/{span.size}"),
                ("x-http-code", "206"),
            ]
        try:
            actor = caller.actor(Transport.LINK if request.link_token else None)
            await self._audit.audio_read(caller.business_id, actor, row.id, ByteSpan(span.start, span.end))
            await context.send_initial_metadata(headers)
        except BaseException:  # refused (audit_unavailable) or cancelled: the blob is let go now
            await close_stream(chunks)
            raise
        # Rows stored before media types were checked may hold one unfit for a header.
        content_type = row.content_type if is_media_type(row.content_type) else "application/octet-stream"
        return ByteStream(content_type, chunks)

    async def DownloadRecording(
        self, request: pb.DownloadRecordingRequest, context: StreamingContext
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        # One message per chunk the store reads (DOWNLOAD_CHUNK) and nothing else per
        # chunk; README, Benchmarks, says what sets the speed.
        body = await self.DownloadRecordingBytes(request, context)
        content_type = body.content_type
        async for chunk in body.chunks:
            yield httpbody_pb2.HttpBody(content_type=content_type, data=chunk)

    async def _link_caller(self, request: pb.DownloadRecordingRequest, context: MetadataContext) -> Caller:
        """A listen link's key, in place of one sent: each use is recorded under it."""
        caller, _ = await self._auth.listen(self._listen, request.link_token, request.id, *READ)
        return caller

    async def CreateAudioLink(self, request: pb.CreateAudioLinkRequest, context: MetadataContext) -> Any:
        caller = await self._auth.caller(context, *READ)
        seconds = self._listen.lifetime(present(request, "expires_in_seconds"))
        row = await self._store.get(caller.business_id, request.id, visible=caller.principal.visible_agents())
        if row.processing_status != RecordingStatus.COMPLETED or row.sha256 is None:
            raise AudioNotStored(row.processing_status)
        link = self._listen.mint(caller.business_id, row.id, caller.principal.key_id, seconds)
        await self._audit.record(
            caller.business_id, caller.actor(), Action.AUDIO_LINK_CREATE, recording_target(row.id)
        )
        return pb.AudioLink(url=link.url, expires_at=timestamp(link.expires_at), token=link.token)

    async def CreateRecording(self, request: pb.CreateRecordingRequest, context: MetadataContext) -> Any:
        business = await self._auth.business(context, *MANAGE)
        if not request.call_at:
            raise InvalidArgument("callAt", "is required")
        try:
            call_at = datetime.fromisoformat(request.call_at.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidArgument("callAt", "must be an ISO 8601 date-time with an offset") from None
        if call_at.tzinfo is None:
            call_at = call_at.replace(tzinfo=self._tz)
        row, created = await self._store.register_upload(
            business,
            NewUpload(
                data_id=request.data_id,
                call_at=call_at,
                direction=request.direction,
                customer_phone=request.customer_phone,
                callcenter_number=request.callcenter_number,
                callcenter_name=request.callcenter_name,
                tag=present(request, "tag"),
                score=present(request, "score"),
                note=request.note,
                content_type=request.content_type or "audio/wav",
                duration_seconds=request.duration_seconds,
            ),
        )
        answer = pb.CreateRecordingResponse(
            id=row.id, upload_url=audio_path(row.id), created=created, processing_status=row.processing_status
        )
        if request.audio_presigned_upload_url:
            link = self._links.mint(business, row.id)
            answer.upload_url, answer.upload_token = link.url, link.token
            answer.upload_url_expires_at.CopyFrom(timestamp(link.expires_at))
        return answer

    async def UploadRecordingAudio(
        self, request_iterator: AsyncIterator[pb.UploadRecordingAudioRequest], context: MetadataContext
    ) -> Any:
        if not self._auth.bearer_sent(context):
            return await self._signed_upload(request_iterator, context)
        caller = await self._auth.caller(context, *MANAGE)
        first = await anext(request_iterator, None)
        if first is None or not first.id:
            raise InvalidArgument("id", "the first message must name the recording")
        if first.content_type:
            check_media_type(first.content_type, "contentType")
        row = await self._store.store_upload(
            caller.business_id,
            first.id,
            _chunks(first, request_iterator),
            content_type=first.content_type or None,
            expected_sha256=first.sha256 or None,
        )
        if all(caller.principal.has(scope) for scope in VIEW):
            return self._recording(row)
        return self._receipt(row)

    async def _signed_upload(
        self, request_iterator: AsyncIterator[pb.UploadRecordingAudioRequest], context: MetadataContext
    ) -> pb.Recording:
        """No API key: the first message must carry a presigned upload URL's token, which
        names the business and the one recording it may upload, once."""
        first = await anext(request_iterator, None)
        if first is None or not first.upload_token:
            await self._auth.caller(context, *MANAGE)  # unauthenticated, as without a token
            raise AssertionError("unreachable: no key and no token")
        grant = self._auth.signed_upload(self._links, first.upload_token, first.id)

        def store(chunks: AsyncIterable[bytes]) -> Awaitable[Recording]:
            return self._store.store_upload(
                grant.business_id,
                grant.recording_id,
                chunks,
                content_type=first.content_type or None,
                expected_sha256=first.sha256 or None,
            )

        row = await self._links.upload_once(grant, _chunks(first, request_iterator), store)
        return self._receipt(row)

    async def DeleteRecording(self, request: pb.DeleteRecordingRequest, context: MetadataContext) -> Any:
        caller = await self._auth.caller(context, *MANAGE)
        await self._store.delete(caller.business_id, request.id, actor=caller.actor())
        return pb.DeleteRecordingResponse(ok=True)

    async def PlaceRecordingHold(
        self, request: pb.PlaceRecordingHoldRequest, context: MetadataContext
    ) -> Any:
        caller = await self._auth.caller(context, *HOLD)
        hold = await self._holds.place(caller.business_id, request.id, request.reason, actor=caller.actor())
        return hold_message(hold)

    async def ReleaseRecordingHold(
        self, request: pb.ReleaseRecordingHoldRequest, context: MetadataContext
    ) -> Any:
        caller = await self._auth.caller(context, *HOLD)
        lifted = await self._holds.release(caller.business_id, request.id, actor=caller.actor())
        return pb.ReleaseRecordingHoldResponse(ok=True, released=lifted is not None)

    async def SyncProvider(self, request: pb.SyncProviderRequest, context: MetadataContext) -> Any:
        caller = await self._auth.caller(context, *SYNC)
        job = await self._sync.request_sync(caller.business_id, request.id)
        await self._audit.record(
            caller.business_id, caller.actor(), Action.PROVIDER_SYNC, provider_target(request.id)
        )
        return self._job(job)

    async def GetSyncJob(self, request: pb.GetSyncJobRequest, context: MetadataContext) -> Any:
        business = await self._auth.business(context, *SYNC)
        return self._job(await self._jobs.get(business, request.id))

    async def ListSyncJobs(self, request: pb.ListSyncJobsRequest, context: MetadataContext) -> Any:
        business = await self._auth.business(context, *SYNC)
        jobs = await self._jobs.recent(business, request.provider_id or None, present(request, "limit"))
        return pb.ListSyncJobsResponse(items=[self._job(j) for j in jobs])
