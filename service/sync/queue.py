"""The sync job queue, its only writer: request, claim, progress, finish; reading jobs;
and what deleting a provider does to its sync jobs and state.

A running job names its runner, the process pulling it. A job never fails because of a
process: when its runner is gone (killed, or it lost the lease, or it shut down) the job
goes back to the queue with its counters, and the next pull of its provider continues it
under the same id, so a client holding the id sees the real outcome. Only the runner
writes to a running job, so a process that was taken over cannot overwrite it.

Counters live on the in-memory job and reach the database at most about once a second
(and at the end): a progress bar needs no more, and a busy pull should not spend its
time writing counters.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import ColumnElement, and_, delete, func, not_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.errors import InvalidArgument, SyncJobNotFound
from service.ids import uuid7
from service.processes import ProcessRegistry
from service.storage.db import Database
from service.storage.models import (
    JobState,
    Provider,
    ProviderSync,
    Recording,
    RecordingStatus,
    SyncJob,
    utcnow,
)

log = logging.getLogger("callvault.sync")

QUEUED, RUNNING, SUCCEEDED, FAILED = JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED
MAX_ERROR = 200
DELETED = "provider deleted"


class Trigger(enum.StrEnum):
    """SyncJob.trigger: who asked for the pull."""

    MANUAL = "manual"
    SCHEDULE = "schedule"


def orphaned(processes: ProcessRegistry, now: datetime | None = None) -> ColumnElement[bool]:
    """SQL: a job that says it is running, but whose runner is gone."""
    return and_(col(SyncJob.state) == RUNNING, processes.gone(col(SyncJob.runner), now))


async def requeue_orphans(
    db: Database, processes: ProcessRegistry, provider_id: str | None = None, now: datetime | None = None
) -> int:
    """Put every orphaned job (of one provider, or all) back in the queue to be continued;
    the number requeued. Looks before it writes: this runs every tick, and on SQLite even
    an UPDATE of no rows takes the write lock."""
    found = orphaned(processes, now)
    if provider_id is not None:
        found = and_(found, col(SyncJob.provider_id) == provider_id)
    async with db.session() as session:
        ids = list((await session.exec(select(SyncJob.id).where(found))).all())
        if not ids:
            return 0
        result = await session.exec(
            update(SyncJob).where(col(SyncJob.id).in_(ids), found).values(state=QUEUED, runner=None)
        )
        await session.commit()
    return int(result.rowcount)


async def claim(
    db: Database, provider_id: str, business_id: str, runner: str, job: SyncJob | None
) -> SyncJob | None:
    """The job this pull runs as, now running under `runner`; call it holding the lease.

    `job` is the one taken from the queue; without it, the provider's oldest queued job
    (one left by a gone runner, or requested meanwhile) or else a new scheduled one. None
    when `job` is no longer queued (another process took it). Any other job of the
    provider still running was left by a runner that lost the lease (we hold it now): it
    goes back to the queue, to be continued next.
    """
    now = utcnow()
    async with db.session() as session:
        await session.exec(
            update(SyncJob)
            .where(
                col(SyncJob.provider_id) == provider_id,
                col(SyncJob.state) == RUNNING,
                col(SyncJob.runner).is_distinct_from(runner),
            )
            .values(state=QUEUED, runner=None)
        )
        if job is None:
            oldest = select(SyncJob.id).where(
                col(SyncJob.provider_id) == provider_id, col(SyncJob.state) == QUEUED
            )
            job_id = (await session.exec(oldest.order_by(col(SyncJob.id)).limit(1))).first()
        else:
            job_id = job.id
        taken = 0
        if job_id is not None:
            result = await session.exec(
                update(SyncJob)
                .where(col(SyncJob.id) == job_id, col(SyncJob.state) == QUEUED)
                .values(state=RUNNING, runner=runner, started_at=func.coalesce(col(SyncJob.started_at), now))
            )
            taken = result.rowcount
        if not taken:
            if job is not None:
                await session.commit()
                return None
            job_id = uuid7()
            session.add(
                SyncJob(
                    id=job_id,
                    business_id=business_id,
                    provider_id=provider_id,
                    trigger=Trigger.SCHEDULE,
                    state=RUNNING,
                    runner=runner,
                    started_at=now,
                )
            )
        await session.commit()
        return await session.get(SyncJob, job_id, populate_existing=True)


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
        self._runner = job.runner
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

    async def requeue(self) -> None:
        """This process stops pulling (it is shutting down): the job, with its counters, goes
        back to the queue, and whichever process pulls the provider next continues it."""
        self.job.state, self.job.runner = QUEUED, None
        await self._write({**self._counters(), "state": QUEUED, "runner": None})

    async def finish(self, state: JobState, error: str | None = None) -> SyncJob:
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
        """Only while the job is still ours: once requeued or continued elsewhere it is not."""
        mine = and_(col(SyncJob.id) == self.job.id, col(SyncJob.runner) == self._runner)
        async with self._db.session() as session:
            await session.exec(update(SyncJob).where(mine).values(values))
            await session.commit()


async def open_job(db: Database, processes: ProcessRegistry, provider_id: str) -> SyncJob | None:
    """The provider's oldest queued job, or running one whose runner is live: never one
    whose runner is gone."""
    async with db.session() as session:
        found = await session.exec(
            select(SyncJob)
            .where(
                col(SyncJob.provider_id) == provider_id,
                col(SyncJob.state).in_((QUEUED, RUNNING)),
                not_(orphaned(processes)),
            )
            .order_by(col(SyncJob.id))
            .limit(1)
        )
        return found.first()


async def request(db: Database, processes: ProcessRegistry, provider: Provider) -> SyncJob:
    """A manual pull of the provider: the job already queued or running, else a new one,
    and the provider due now. A job left running by a gone process is put back in the
    queue first and answered, so the client's job id reaches the real outcome."""
    await requeue_orphans(db, processes, provider.id)
    job = await open_job(db, processes, provider.id)
    if job is not None:
        return job
    job = SyncJob(
        id=uuid7(), business_id=provider.business_id, provider_id=provider.id, trigger=Trigger.MANUAL
    )
    async with db.session() as session:
        session.add(job)
        await session.exec(
            update(ProviderSync)
            .where(col(ProviderSync.provider_id) == provider.id)
            .values(next_run_at=utcnow())
        )
        await session.commit()
    log.info("sync requested", extra={"provider_id": provider.id, "job_id": job.id})
    return job


async def fail_orphaned_by_deletion(db: Database) -> None:
    """Queued jobs of deleted providers would wait for ever: end them. (Jobs orphaned by
    their process are requeued instead, by requeue_orphans.)"""
    async with db.session() as session:
        await session.exec(
            update(SyncJob)
            .where(col(SyncJob.state) == QUEUED, col(SyncJob.provider_id).not_in(select(Provider.id)))
            .values(state=FAILED, error=DELETED, finished_at=utcnow())
        )
        await session.commit()


async def forget_provider(session: AsyncSession, provider_id: str) -> None:
    """Within the deletion's transaction: audio not fetched yet never can be now, queued
    jobs will never run, and the sync state (with its lease) goes. A job running
    elsewhere finds its lease gone at its next renewal and ends "provider deleted"."""
    await session.exec(
        update(Recording)
        .where(
            col(Recording.provider_id) == provider_id,
            col(Recording.processing_status) == RecordingStatus.PENDING,
        )
        .values(processing_status=RecordingStatus.FAILED, last_error=DELETED)
    )
    await session.exec(
        update(SyncJob)
        .where(col(SyncJob.provider_id) == provider_id, col(SyncJob.state) == QUEUED)
        .values(state=FAILED, error=DELETED, finished_at=utcnow())
    )
    await session.exec(delete(ProviderSync).where(col(ProviderSync.provider_id) == provider_id))


class SyncJobs:
    """Reading sync jobs, for the API."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, business_id: str, job_id: str) -> SyncJob:
        async with self._db.session() as session:
            query = select(SyncJob).where(col(SyncJob.id) == job_id, col(SyncJob.business_id) == business_id)
            job = (await session.exec(query)).first()
        if job is None:
            raise SyncJobNotFound()
        return job

    async def recent(self, business_id: str, provider_id: str | None, limit: int | None) -> list[SyncJob]:
        if limit is not None and not 1 <= limit <= 200:
            raise InvalidArgument("limit", "must be between 1 and 200")
        query = select(SyncJob).where(col(SyncJob.business_id) == business_id)
        if provider_id:
            query = query.where(col(SyncJob.provider_id) == provider_id)
        async with self._db.session() as session:
            rows = await session.exec(query.order_by(col(SyncJob.id).desc()).limit(limit or 20))
            return list(rows.all())
