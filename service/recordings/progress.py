"""Writing sync jobs: start, progress while running, end.

Counters live on the in-memory job and reach the database at most about once a second
(and at the end): a progress bar needs no more, and a busy pull should not spend its
time writing counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import update
from sqlmodel import col

from service.ids import uuid7
from service.storage.db import Database
from service.storage.models import SyncJob, utcnow

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
INTERRUPTED = "interrupted"
MAX_ERROR = 200


async def start_job(db: Database, provider_id: str, business_id: str, job: SyncJob | None) -> SyncJob | None:
    """The job this pull runs as: `job` taken from the queue, or a new scheduled one.

    None when `job` is no longer queued (another process took it). Any other job of the
    provider still "running" was left by a holder that lost its lease (we hold it now),
    so it is closed as interrupted.
    """
    now = utcnow()
    async with db.session() as session:
        if job is None:
            job = SyncJob(
                id=uuid7(),
                business_id=business_id,
                provider_id=provider_id,
                trigger="schedule",
                state=RUNNING,
                started_at=now,
            )
            session.add(job)
        else:
            taken = await session.exec(
                update(SyncJob)
                .where(col(SyncJob.id) == job.id, col(SyncJob.state) == QUEUED)
                .values(state=RUNNING, started_at=now)
            )
            if taken.rowcount != 1:
                return None
        await session.exec(
            update(SyncJob)
            .where(
                col(SyncJob.provider_id) == provider_id,
                col(SyncJob.state) == RUNNING,
                col(SyncJob.id) != job.id,
            )
            .values(state=FAILED, error=INTERRUPTED, finished_at=now)
        )
        await session.commit()
        return await session.get(SyncJob, job.id, populate_existing=True)


async def fail_queued(db: Database, job: SyncJob, error: str) -> SyncJob:
    """End a job that never started (its provider is gone); returns it as stored."""
    async with db.session() as session:
        await session.exec(
            update(SyncJob)
            .where(col(SyncJob.id) == job.id, col(SyncJob.state) == QUEUED)
            .values(state=FAILED, error=error[:MAX_ERROR], finished_at=utcnow())
        )
        await session.commit()
        return await session.get(SyncJob, job.id, populate_existing=True) or job


async def reload(db: Database, job: SyncJob) -> SyncJob:
    async with db.session() as session:
        return await session.get(SyncJob, job.id, populate_existing=True) or job


class Progress:
    """A running job's counters and end state; `job` is updated in place."""

    def __init__(
        self, db: Database, job: SyncJob, *, every: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._db = db
        self.job = job
        self._every = every
        self._clock = clock
        self._saved_at = clock()

    async def tick(self) -> None:
        """Persist the counters if the last write is at least `every` seconds old."""
        if self._clock() - self._saved_at >= self._every:
            await self.save()

    async def save(self) -> None:
        self._saved_at = self._clock()  # before the await, so concurrent ticks write once
        await self._write(self._counters())

    async def finish(self, state: str, error: str | None = None) -> SyncJob:
        job = self.job
        job.state, job.error, job.finished_at = state, error[:MAX_ERROR] if error else None, utcnow()
        self._saved_at = self._clock()
        await self._write(
            {**self._counters(), "state": state, "error": job.error, "finished_at": job.finished_at}
        )
        return job

    def _counters(self) -> dict[str, object]:
        job = self.job
        return {
            "calls_seen": job.calls_seen,
            "recordings_stored": job.recordings_stored,
            "bytes_stored": job.bytes_stored,
            "failures": job.failures,
        }

    async def _write(self, values: dict[str, object]) -> None:
        async with self._db.session() as session:
            await session.exec(update(SyncJob).where(col(SyncJob.id) == self.job.id).values(values))
            await session.commit()
