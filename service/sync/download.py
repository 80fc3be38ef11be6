"""Pending recordings of a provider, streamed into the blob store.

A recording becomes "completed" only after its blob is complete and verified (the blob store
checks the announced length while hashing), so a crash or a cut transfer never leaves a
row pointing at partial audio. One recording's failure is counted on that recording and
the rest go on; after `recording_attempts` failed pulls it is given up as "failed".
Audio the provider lists but cannot serve yet (AudioNotReady) is no failed attempt: the
recording stays pending, tried again on every pull, until `audio_wait_hours` after it
was first listed, then it fails with that reason. Errors that no recording can get past
(bad credentials) stop the whole batch instead.

Throughput: each provider's downloads run `per_provider_concurrency` at a time over the
pull's one HTTP client (kept-alive connections), fed from the pending rows a page at a time,
so one slow recording holds up no other. A recording is marked stored only after its blob
is complete, as before, but the marks of recordings that finish together share one
transaction (`MarkBatches`: group commit), since on either database the commit, not the
statements, is what a mark costs. A crash before that commit loses no recording: it is still
pending and is downloaded again (sealed afresh; the unheld blob is swept).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Case, Update, case, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service import metrics
from service.blobs.base import BlobInfo, BlobTooLarge, BlobVerificationFailed
from service.config import SyncSettings
from service.connectors.base import (
    AudioNotReady,
    Connector,
    ConnectorError,
    RateLimited,
    RecordingNotFound,
)
from service.recordings.blobrefs import BlobReclaimed
from service.recordings.retry import OnRetry, RetryPolicy, is_retryable, retrying
from service.recordings.sealed import SealedAudio, SealedPut
from service.storage.db import Database
from service.storage.models import Recording, RecordingStatus, as_utc, utcnow
from service.sync.queue import Progress
from service.validation import is_media_type

PENDING, COMPLETED, FAILED = RecordingStatus.PENDING, RecordingStatus.COMPLETED, RecordingStatus.FAILED

log = logging.getLogger("callvault.sync")

PENDING_BATCH = 200  # pending recordings read at a time
MARK_BATCH = 64  # recordings marked stored in one transaction, at most


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
        self._marks = MarkBatches(self._mark_batch)

    async def download_pending(self, provider_id: str, connector: Connector, progress: Progress) -> None:
        """Every pending recording of the provider (this pull's and earlier ones'), at most
        `per_provider_concurrency` at once: that many workers take the next pending one."""
        run = _Run(connector, progress)
        pending = _PendingFeed(functools.partial(self._pending, provider_id))
        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, self._sync.per_provider_concurrency)):
                group.create_task(self._worker(run, pending))

    async def _worker(self, run: _Run, pending: _PendingFeed) -> None:
        while (item := await pending.next()) is not None:
            await self._download(run, item)

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
        # The worker is the provider's own slot; the shared one is taken per recording, and
        # not while the provider has asked us to wait.
        await run.pause.wait()
        async with self._slots:
            try:
                fetch = functools.partial(self._fetch_and_store, run, item)
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

    async def _fetch_and_store(self, run: _Run, item: Pending) -> tuple[BlobInfo, bool]:
        """One download, then the row marked stored; a blob swept in between (BlobReclaimed)
        is downloaded again, like a cut transfer."""
        await run.pause.wait()
        business_id = run.progress.job.business_id  # the provider's, so its recordings'
        try:
            put, content_type = await self._fetch(run.connector, business_id, item)
        except RateLimited as error:
            # The provider asked this client to slow down: its other downloads wait too.
            run.pause.hold(min(error.retry_after or self._retry.base_seconds, self._retry.cap_seconds))
            raise
        return put.plain, await self._marks.mark(_Stored(item.id, put, content_type))

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

    async def _mark_batch(self, items: Sequence[_Stored]) -> list[bool | BaseException]:
        """Mark recordings stored together; if the batch fails as a whole (a deadlock with a
        delete on PostgreSQL, say), each is marked on its own, as without batching."""
        try:
            return await self._mark_all(items)
        except Exception:
            if len(items) == 1:
                raise
        answers: list[bool | BaseException] = []
        for item in items:
            try:
                answers += await self._mark_all([item])
            except Exception as error:
                answers.append(error)
        return answers

    async def _mark_all(self, items: Sequence[_Stored]) -> list[bool | BaseException]:
        """`_mark_together`; one whose bytes were swept before they were held gets
        BlobReclaimed (to be downloaded again), and the rest are marked without it."""
        outcome: dict[int, bool | BaseException] = {}
        left = list(range(len(items)))
        while left:
            try:
                stored = await self._mark_together([items[i] for i in left])
            except _Swept as swept:
                for i in left:
                    if items[i].put.blob.sha256 == swept.sha256:
                        outcome[i] = BlobReclaimed(swept.sha256)
                left = [i for i in left if i not in outcome]
                continue
            outcome.update(zip(left, stored, strict=True))
            break
        return [outcome[i] for i in range(len(items))]

    async def _mark_together(self, items: Sequence[_Stored]) -> list[bool]:
        """Mark still-pending recordings stored, record their data keys and hold their blobs,
        in one transaction (blobrefs.py); a recording deleted or stored meanwhile releases its
        blob instead, once the transaction is over. Recording rows first (one UPDATE, in id
        order), then blob rows in sha256 order: blobrefs.py's lock order. Each recording's
        audio is sealed under its own key, so no two items share a blob."""
        async with self._db.session() as session:
            result = await session.exec(_mark_stored(items))
            taken = {row[0] for row in result.all()}
            stored = [it.recording_id in taken for it in items]
            try:
                await self._sealed.keep_all(
                    session, [it.put for it, ok in zip(items, stored, strict=True) if ok]
                )
            except BlobReclaimed as error:
                raise _Swept(error.sha256) from None
            await session.commit()
        for it, ok in zip(items, stored, strict=True):
            if not ok:
                await self._sealed.discard(it.put)
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
class _Stored:
    """A recording whose blob is complete, to be marked stored."""

    recording_id: str
    put: SealedPut  # the sealed blob and the plain audio's sha256 and size
    content_type: str


def _mark_stored(items: Sequence[_Stored]) -> Update:
    """One UPDATE marking the still-pending recordings of `items` stored, each with its own
    blob; it returns the ids it marked (a recording deleted or stored meanwhile is not)."""
    ids = sorted(it.recording_id for it in items)
    by_id = col(Recording.id)

    def each(value: Callable[[_Stored], object]) -> Case[Any]:
        return case({it.recording_id: value(it) for it in items}, value=by_id)

    return (
        update(Recording)
        .where(by_id.in_(ids), col(Recording.processing_status) == PENDING)
        .values(
            sha256=each(lambda it: it.put.plain.sha256),
            size=each(lambda it: it.put.plain.size),
            # The provider's header goes back out in ours: only a well-formed media type.
            content_type=each(
                lambda it: it.content_type if is_media_type(it.content_type) else "application/octet-stream"
            ),
            processing_status=COMPLETED,
            last_error=None,
            updated_at=utcnow(),
        )
        .returning(by_id)
        .execution_options(synchronize_session=False)
    )


class _Swept(Exception):
    """A blob of the batch was reclaimed before it was held: the batch is rolled back."""

    def __init__(self, sha256: str) -> None:
        super().__init__(sha256)
        self.sha256 = sha256


class MarkBatches:
    """Group commit: marks asked for while a batch is being written go in the next one.

    `write` gets up to MARK_BATCH items and answers each (True/False, or the exception for
    that item); a failure of the whole write is every item's. Nothing waits for a batch to
    fill: with one recording at a time, each is written at once, alone.
    """

    def __init__(self, write: Callable[[Sequence[_Stored]], Awaitable[list[bool | BaseException]]]) -> None:
        self._write = write
        self._waiting: deque[tuple[_Stored, asyncio.Future[bool]]] = deque()
        self._writer: asyncio.Task[None] | None = None

    async def mark(self, item: _Stored) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain(), name="mark recordings stored")
        return await future

    async def _drain(self) -> None:
        # Its own task, so a pull cancelled meanwhile cannot cut another pull's batch short;
        # the blobs of a batch are complete, so marking them is right whoever still waits.
        batch: list[tuple[_Stored, asyncio.Future[bool]]] = []
        try:
            while self._waiting:
                batch = [self._waiting.popleft() for _ in range(min(MARK_BATCH, len(self._waiting)))]
                try:
                    answers = await self._write([item for item, _ in batch])
                except Exception as error:
                    answers = [error] * len(batch)
                for (_, future), answer in zip(batch, answers, strict=True):
                    if future.done():
                        continue
                    if isinstance(answer, BaseException):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)
                batch = []
        finally:
            self._writer = None
            for _, future in [*batch, *self._waiting]:
                future.cancel()  # only if this task itself was cancelled (loop shutdown)
            self._waiting.clear()


class _PendingFeed:
    """The provider's pending recordings, read a page at a time, handed out one at a time
    to the workers (oldest id first; each once per pull)."""

    def __init__(self, read: Callable[[str], Awaitable[list[Pending]]]) -> None:
        self._read = read
        self._buffer: deque[Pending] = deque()
        self._after = ""
        self._exhausted = False
        self._lock = asyncio.Lock()

    async def next(self) -> Pending | None:
        async with self._lock:
            if not self._buffer and not self._exhausted:
                page = await self._read(self._after)
                self._buffer.extend(page)
                self._exhausted = not page
                if page:
                    self._after = page[-1].id
            return self._buffer.popleft() if self._buffer else None


@dataclass(slots=True)
class _Pause:
    """Until when a provider that answered "rate limited" gets no new download request."""

    until: float = 0.0
    clock: Callable[[], float] = time.monotonic

    def hold(self, seconds: float) -> None:
        self.until = max(self.until, self.clock() + seconds)

    async def wait(self) -> None:
        while (left := self.until - self.clock()) > 0:  # noqa: ASYNC110  # `until` can move meanwhile
            await asyncio.sleep(left)


@dataclass(frozen=True, slots=True)
class _Run:
    """One provider's downloads in one pull."""

    connector: Connector
    progress: Progress
    pause: _Pause = field(default_factory=_Pause)

    @property
    def context(self) -> dict[str, object]:
        return {"provider_id": self.progress.job.provider_id, "job_id": self.progress.job.id}
