"""Pending recordings of a provider, streamed into the blob store.

A recording becomes "completed" only after its blob is complete and verified (the blob store
checks the announced length while hashing), so a crash or a cut transfer never leaves a
row pointing at partial audio. One recording's failure is counted on that recording and
the rest go on; after `recording_attempts` failed pulls it is given up as "failed".
Audio the provider lists but cannot serve yet (AudioNotReady) is no failed attempt: the
recording stays pending, tried again on every pull, until `audio_wait_hours` after it
was first listed, then it fails with that reason. Errors that no recording can get past
(bad credentials) stop the whole batch instead.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service import metrics
from service.blobs.base import BlobInfo, BlobTooLarge, BlobVerificationFailed
from service.config import SyncSettings
from service.connectors.base import AudioNotReady, Connector, ConnectorError, RecordingNotFound
from service.recordings.blobrefs import BlobReclaimed
from service.recordings.retry import OnRetry, RetryPolicy, is_retryable, retrying
from service.recordings.sealed import SealedAudio, SealedPut
from service.storage.db import Database
from service.storage.models import Recording, RecordingStatus, as_utc, utcnow
from service.sync.queue import Progress
from service.validation import is_media_type

PENDING, COMPLETED, FAILED = RecordingStatus.PENDING, RecordingStatus.COMPLETED, RecordingStatus.FAILED

log = logging.getLogger("callvault.sync")

PENDING_BATCH = 200  # pending recordings read (and downloads started) at a time


class EmptyRecording(Exception):
    """The provider sent no bytes: nothing to store, and a zero-byte "recording" helps nobody."""


@dataclass(frozen=True, slots=True)
class Pending:
    id: str
    ref: str
    attempts: int
    listed_at: datetime  # when callvault first saw the call listed


def recording_failure(error: BaseException) -> tuple[str, bool] | None:
    """(message, final) when `error` is this recording's problem; None when it is the
    provider's (bad credentials, refused address) and the whole pull must stop."""
    if isinstance(error, ConnectorError):
        return (error.message, False) if error.retryable or isinstance(error, RecordingNotFound) else None
    if isinstance(error, BlobVerificationFailed):
        return "incomplete download", False
    if isinstance(error, BlobTooLarge):
        return "recording too large", True
    if isinstance(error, EmptyRecording):
        return "empty recording", False
    if isinstance(error, BlobReclaimed):
        return "audio freed while it was stored", False
    return None


def download_retryable(error: BaseException) -> bool:
    """A body cut short can surface as a short blob rather than a connector error; bytes
    swept before they were held are fetched again. Audio not ready waits for a later pull."""
    if isinstance(error, AudioNotReady):
        return False
    return is_retryable(error) or isinstance(error, BlobVerificationFailed | BlobReclaimed)


def retry_logger(context: Mapping[str, object], operation: str) -> OnRetry:
    """Log each retry with the error's fixed message only (never a URL or a ref)."""

    def note(error: BaseException, retry: int, wait: float) -> None:
        reason = error.message if isinstance(error, ConnectorError) else type(error).__name__
        extra = {**context, "operation": operation, "retry": retry, "wait_seconds": round(wait, 3)}
        log.info("retrying", extra={**extra, "error": reason})

    return note


class Downloader:
    """Downloads for every provider of this process, `concurrency` at a time in all."""

    def __init__(self, db: Database, sealed: SealedAudio, sync: SyncSettings, retry: RetryPolicy) -> None:
        self._db = db
        self._sealed = sealed
        self._sync = sync
        self._retry = retry
        self._slots = asyncio.Semaphore(sync.concurrency)

    async def download_pending(self, provider_id: str, connector: Connector, progress: Progress) -> None:
        """Every pending recording of the provider (this pull's and earlier ones'), a batch at
        a time, at most `per_provider_concurrency` at once."""
        own_slots = asyncio.Semaphore(self._sync.per_provider_concurrency)
        run = _Run(connector, progress, own_slots)
        after = ""
        while batch := await self._pending(provider_id, after):
            async with asyncio.TaskGroup() as group:
                for item in batch:
                    group.create_task(self._download(run, item))
            after = batch[-1].id

    async def _pending(self, provider_id: str, after: str) -> list[Pending]:
        query = (
            select(Recording.id, Recording.recording_ref, Recording.attempts, Recording.created_at)
            .where(
                col(Recording.provider_id) == provider_id,
                col(Recording.processing_status) == PENDING,
                col(Recording.recording_ref).is_not(None),
                col(Recording.id) > after,
            )
            .order_by(col(Recording.id))
            .limit(PENDING_BATCH)
        )
        async with self._db.session() as session:
            rows = (await session.exec(query)).all()
        return [Pending(rec_id, ref or "", attempts, as_utc(at)) for rec_id, ref, attempts, at in rows]

    async def _download(self, run: _Run, item: Pending) -> None:
        # The provider's own slot first, so waiting for it holds none of the shared ones.
        async with run.slots, self._slots:
            try:
                business_id = run.progress.job.business_id  # the provider's, so its recordings'
                fetch = functools.partial(self._fetch_and_store, run.connector, business_id, item)
                on_retry = retry_logger(run.context, "download")
                blob, stored = await retrying(
                    fetch, self._retry, retryable=download_retryable, on_retry=on_retry
                )
            except AudioNotReady as error:
                await self._not_ready(run, item, error.message)
                return
            except Exception as error:
                failure = recording_failure(error)
                if failure is None:
                    raise
                await self._record_attempt(run, item, *failure)
                return
        if stored:
            run.progress.job.recordings_stored += 1
            run.progress.job.bytes_stored += blob.size
            metrics.RECORDINGS_STORED.labels(run.progress.job.provider_id).inc()
            metrics.RECORDING_BYTES.labels(run.progress.job.provider_id).inc(blob.size)
        await run.progress.tick()

    async def _fetch_and_store(
        self, connector: Connector, business_id: str, item: Pending
    ) -> tuple[BlobInfo, bool]:
        """One download, then the row marked stored; a blob swept in between (BlobReclaimed)
        is downloaded again, like a cut transfer."""
        put, content_type = await self._fetch(connector, business_id, item)
        return put.plain, await self._mark_stored(item.id, put, content_type)

    async def _fetch(self, connector: Connector, business_id: str, item: Pending) -> tuple[SealedPut, str]:
        """One download, sealed into the blob store; the blob is only there if complete."""
        async with connector.open_recording(item.ref) as stream:
            put = await self._sealed.put(
                business_id,
                item.id,
                stream.chunks,
                expected_size=stream.length,
                max_size=self._sync.max_recording_bytes,
            )
            content_type = stream.content_type
        if put.plain.size == 0:
            await self._sealed.discard(put)
            raise EmptyRecording()
        return put, content_type

    async def _mark_stored(self, recording_id: str, put: SealedPut, content_type: str) -> bool:
        """Mark a still-pending recording stored and hold its blob, in one transaction
        (blobrefs.py); a recording deleted or stored meanwhile releases the blob instead."""
        values = {
            "sha256": put.plain.sha256,
            "size": put.plain.size,
            # The provider's header goes back out in ours: only a well-formed media type.
            "content_type": content_type if is_media_type(content_type) else "application/octet-stream",
            "processing_status": COMPLETED,
            "last_error": None,
            "updated_at": utcnow(),
        }
        async with self._db.session() as session:
            stored = await self._update_pending(session, recording_id, values)
            if stored:
                await self._sealed.keep(session, put)
            await session.commit()
        if not stored:
            await self._sealed.discard(put)
        return stored

    async def _record_attempt(self, run: _Run, item: Pending, message: str, final: bool) -> None:
        """Count a failed download; after `recording_attempts` of them the recording is failed."""
        attempts = item.attempts + 1
        gave_up = final or attempts >= self._sync.recording_attempts
        values = {
            "attempts": attempts,
            "last_error": message[:200],
            "processing_status": FAILED if gave_up else PENDING,
            "updated_at": utcnow(),
        }
        async with self._db.session() as session:
            await self._update_pending(session, item.id, values)
            await session.commit()
        run.progress.job.failures += 1
        metrics.RECORDING_FAILURES.labels(run.progress.job.provider_id).inc()
        extra = {**run.context, "recording_id": item.id, "attempts": attempts, "gave_up": gave_up}
        log.warning("recording download failed", extra={**extra, "error": message})
        await run.progress.tick()

    async def _not_ready(self, run: _Run, item: Pending, message: str) -> None:
        """The provider cannot serve the audio yet: pending for the next pull, with the reason,
        until it has waited `audio_wait_hours`; no attempt counted."""
        waited = utcnow() - item.listed_at
        gave_up = waited >= timedelta(hours=self._sync.audio_wait_hours)
        reason = f"{message}; gave up after {self._sync.audio_wait_hours:g} h" if gave_up else message
        values = {
            "last_error": reason[:200],
            "processing_status": FAILED if gave_up else PENDING,
            "updated_at": utcnow(),
        }
        async with self._db.session() as session:
            await self._update_pending(session, item.id, values)
            await session.commit()
        if gave_up:
            run.progress.job.failures += 1
            metrics.RECORDING_FAILURES.labels(run.progress.job.provider_id).inc()
        extra = {**run.context, "recording_id": item.id, "gave_up": gave_up}
        log.info("recording not ready yet", extra={**extra, "waited_seconds": int(waited.total_seconds())})
        await run.progress.tick()

    async def _update_pending(
        self, session: AsyncSession, recording_id: str, values: Mapping[str, object]
    ) -> bool:
        """Update a recording that is still pending (not deleted or stored meanwhile)."""
        result = await session.exec(
            update(Recording)
            .where(col(Recording.id) == recording_id, col(Recording.processing_status) == PENDING)
            .values(values)
        )
        return bool(result.rowcount == 1)


@dataclass(frozen=True, slots=True)
class _Run:
    """One provider's downloads in one pull."""

    connector: Connector
    progress: Progress
    slots: asyncio.Semaphore

    @property
    def context(self) -> dict[str, object]:
        return {"provider_id": self.progress.job.provider_id, "job_id": self.progress.job.id}
