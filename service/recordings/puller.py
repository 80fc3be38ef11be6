"""The puller: every active provider's calls and recordings, brought into callvault's store.

A pull of one provider, under its lease:

1. list the calls in [cursor - overlap, now) (the first pull looks `initial_lookback_days`
   back) and upsert each into Recording; a listing that fails is retried from the start
   of the window, since upserts are idempotent and an async iterator cannot be resumed;
2. move the cursor to `now`, only once every listed call is upserted;
3. stream every pending recording of the provider (this pull's and earlier ones') into the
   blob store while hashing it, and only then mark the row stored (download.py).

So a crash anywhere resumes from the cursor with nothing lost and nothing twice: rows are
unique by (business, provider, external id), blobs are content-addressed, and a row is
"stored" only after its blob exists. The job a crash leaves running is not lost either:
once its process is gone (service/processes.py), every scheduling pass and every sync
request puts it back in the queue, the lease is free at once, and the next pull of the
provider continues that same job to its real outcome (progress.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import not_, or_, update
from sqlalchemy.exc import StatementError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service import metrics
from service.blobs.base import BlobError, BlobStore
from service.config import Settings
from service.connectors.base import CallRecord, Connector, ConnectorError
from service.errors import KindNotSupported, ProviderNotFound
from service.ids import uuid7
from service.processes import ProcessRegistry
from service.providers.store import ProviderStore
from service.recordings import progress as jobs
from service.recordings.download import Downloader, retry_logger
from service.recordings.ingest import Origin, is_storable, unique_rows, upsert
from service.recordings.lease import Lease, ProviderGone, ensure_state, lease_free
from service.recordings.retry import RetryPolicy, retrying
from service.sealing import SealingError
from service.storage.db import Database
from service.storage.models import Provider, ProviderSync, SyncJob, as_utc, utcnow

log = logging.getLogger("callvault.sync")

DELETED = "provider deleted"
INACTIVE = "provider inactive"
LEASE_LOST = "lease lost to another process"
INTERNAL = "internal error"
# Failures that say nothing about the provider's health, so they leave its sync state alone.
NOT_THE_PROVIDERS = frozenset({DELETED, INACTIVE, LEASE_LOST})
UPSERT_BATCH = 100  # calls per upsert statement (and transaction)
FAILURE_BACKOFF_SECONDS = 60.0  # a failing provider waits 1, 2, 4... minutes, up to its interval


class ProviderBusy(Exception):
    """Another process holds the provider's lease; a given job stays queued."""


class PullFailed(Exception):
    """A pull stopped for a reason that is not the provider's answer."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class _Pull:
    """One pull in progress: what every step of it needs."""

    provider: Provider
    origin: Origin
    connector: Connector
    progress: jobs.Progress

    @property
    def context(self) -> dict[str, object]:
        return {"provider_id": self.provider.id, "job_id": self.progress.job.id}


def interval_of(provider: Provider, default_minutes: float) -> timedelta:
    minutes = provider.settings.get("pollIntervalMinutes")
    if isinstance(minutes, int) and not isinstance(minutes, bool) and minutes > 0:
        return timedelta(minutes=minutes)
    return timedelta(minutes=default_minutes)


def failure_backoff(failures: int, interval: timedelta) -> timedelta:
    """How long a provider rests after `failures` failed pulls in a row: doubling, capped."""
    seconds = FAILURE_BACKOFF_SECONDS * 2.0 ** min(max(failures - 1, 0), 32)
    return min(timedelta(seconds=seconds), interval)


def root_cause(error: BaseException) -> BaseException:
    """The first error inside (nested) task-group errors: the one that stopped the pull."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def failure_message(error: BaseException) -> str | None:
    """The short, secret-free reason a pull failed, or None for an unexpected error."""
    error = root_cause(error)
    if isinstance(error, ConnectorError | PullFailed):
        return error.message
    if isinstance(error, ProviderGone | ProviderNotFound):
        return DELETED
    if isinstance(error, KindNotSupported):
        return "provider kind not supported"
    if isinstance(error, SealingError):
        return "credentials cannot be opened"
    if isinstance(error, BlobError):
        return "blob store unavailable"
    return None


class Puller:
    """Schedules and runs pulls for this process; see the module docstring for a pull's steps."""

    def __init__(
        self,
        db: Database,
        providers: ProviderStore,
        blobs: BlobStore,
        settings: Settings,
        *,
        processes: ProcessRegistry,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        """`processes` is this process's registry (its id owns our leases and jobs);
        on_change(business_id) is told when a pull changed a business's recordings."""
        self._on_change = on_change
        self._db = db
        self._providers = providers
        self._settings = settings
        self._sync = settings.sync
        self._retry = RetryPolicy.from_settings(settings.sync)
        self._processes = processes
        self._lease = Lease(db, processes, settings.sync.lease_seconds)
        # A holder taken over because it went silent learns so at its next renewal.
        self._renew_every = min(settings.sync.lease_seconds / 3, processes.dead_after.total_seconds())
        self._downloader = Downloader(db, blobs, settings.sync, self._retry)
        self._wakeup = asyncio.Event()
        self._pulls: dict[str, asyncio.Task[None]] = {}
        self._runner: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def owner(self) -> str:
        return self._lease.owner

    # -- scheduling -------------------------------------------------------------------

    async def run(self) -> None:
        """Start due pulls every tick (or when woken) until cancelled; one provider's
        failure is logged and never stops the loop."""
        self._runner = asyncio.current_task()
        log.info("puller started", extra={"owner": self.owner})
        try:
            while not self._closed:
                self._wakeup.clear()
                try:
                    await self._schedule()
                except Exception:
                    log.exception("scheduling pass failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._sync.tick_seconds)
        finally:
            await self._cancel_pulls()

    def wake(self) -> None:
        self._wakeup.set()

    async def close(self) -> None:
        """Stop scheduling and cancel pulls in flight; each puts its job back in the queue
        and releases its lease, and the next pull of its provider (here after a restart, or
        in another process at once) continues the job from the cursor."""
        self._closed = True
        runner, self._runner = self._runner, None
        if runner is not None and runner is not asyncio.current_task():
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        await self._cancel_pulls()

    async def _cancel_pulls(self) -> None:
        tasks = list(self._pulls.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _schedule(self) -> None:
        now = utcnow()  # one instant, so "gone" means the same to the requeue and to _due
        await jobs.requeue_orphans(self._db, self._processes, now=now)
        await self._fail_orphaned_jobs()
        for provider_id, job in (await self._due(now)).items():
            if provider_id not in self._pulls and not self._closed:
                task = asyncio.create_task(self._pull_logged(provider_id, job), name=f"pull {provider_id}")
                self._pulls[provider_id] = task
                task.add_done_callback(functools.partial(self._forget, provider_id))

    def _forget(self, provider_id: str, _task: asyncio.Task[None]) -> None:
        self._pulls.pop(provider_id, None)

    async def _pull_logged(self, provider_id: str, job: SyncJob | None) -> None:
        try:
            await self.pull(provider_id, job)
        except ProviderBusy:
            log.debug("provider leased elsewhere", extra={"provider_id": provider_id})
        except ProviderNotFound:
            pass  # deleted since the scheduling pass
        except Exception:
            log.exception("pull crashed", extra={"provider_id": provider_id})

    async def _due(self, now: datetime) -> dict[str, SyncJob | None]:
        """Providers to pull now, with the oldest queued job of each (None: a scheduled run).
        Providers leased by another live process are left out."""
        free = lease_free(self._processes, now)
        joined = col(ProviderSync.provider_id) == col(Provider.id)
        queued = (
            select(SyncJob)
            .join(Provider, col(Provider.id) == col(SyncJob.provider_id))
            .outerjoin(ProviderSync, joined)
            .where(col(SyncJob.state) == jobs.QUEUED, free)
            .order_by(col(SyncJob.id))
        )
        scheduled = (
            select(Provider.id)
            .outerjoin(ProviderSync, joined)
            .where(
                col(Provider.is_active),
                free,
                or_(
                    col(ProviderSync.provider_id).is_(None),
                    col(ProviderSync.next_run_at).is_(None),
                    col(ProviderSync.next_run_at) <= now,
                ),
            )
        )
        due: dict[str, SyncJob | None] = {}
        async with self._db.session() as session:
            for job in (await session.exec(queued)).all():
                due.setdefault(job.provider_id, job)
            for provider_id in (await session.exec(scheduled)).all():
                due.setdefault(provider_id, None)
        return due

    async def _fail_orphaned_jobs(self) -> None:
        """Queued jobs of deleted providers would wait for ever: end them. (Jobs orphaned by
        their process are requeued instead, by jobs.requeue_orphans.)"""
        async with self._db.session() as session:
            await session.exec(
                update(SyncJob)
                .where(
                    col(SyncJob.state) == jobs.QUEUED, col(SyncJob.provider_id).not_in(select(Provider.id))
                )
                .values(state=jobs.FAILED, error=DELETED, finished_at=utcnow())
            )
            await session.commit()

    # -- on demand --------------------------------------------------------------------

    async def request_sync(self, business_id: str, provider_id: str) -> SyncJob:
        """Queue a manual pull (or answer the one already queued or running) and wake the loop.

        A job left running by a gone process is put back in the queue first and answered:
        the woken loop continues it, so the client's job id reaches the real outcome."""
        async with self._db.session() as session:
            provider = await self._provider(session, provider_id)
        if provider is None or provider.business_id != business_id:
            raise ProviderNotFound()
        try:
            await ensure_state(self._db, provider.id, provider.business_id)
        except ProviderGone:
            raise ProviderNotFound() from None
        await jobs.requeue_orphans(self._db, self._processes, provider.id)
        job = await self._open_job(provider.id) or await self._queue_job(provider)
        self.wake()
        return job

    async def _open_job(self, provider_id: str) -> SyncJob | None:
        """The provider's oldest queued job, or running one whose runner is live: never one
        whose runner is gone."""
        async with self._db.session() as session:
            found = await session.exec(
                select(SyncJob)
                .where(
                    col(SyncJob.provider_id) == provider_id,
                    col(SyncJob.state).in_((jobs.QUEUED, jobs.RUNNING)),
                    not_(jobs.orphaned(self._processes)),
                )
                .order_by(col(SyncJob.id))
                .limit(1)
            )
            return found.first()

    async def _queue_job(self, provider: Provider) -> SyncJob:
        job = SyncJob(id=uuid7(), business_id=provider.business_id, provider_id=provider.id, trigger="manual")
        async with self._db.session() as session:
            session.add(job)
            await session.exec(
                update(ProviderSync)
                .where(col(ProviderSync.provider_id) == provider.id)
                .values(next_run_at=utcnow())
            )
            await session.commit()
        log.info("sync requested", extra={"provider_id": provider.id, "job_id": job.id})
        return job

    # -- one pull ---------------------------------------------------------------------

    async def pull(self, provider_id: str, job: SyncJob | None = None) -> SyncJob:
        """Pull one provider under its lease and return the finished job.

        Raises ProviderBusy when another process holds the lease, and ProviderNotFound for
        an unknown provider when no job is given (a given job ends "provider deleted").
        """
        async with self._db.session() as session:
            provider = await self._provider(session, provider_id)
        try:
            if provider is None:
                raise ProviderGone()
            await ensure_state(self._db, provider.id, provider.business_id)
        except ProviderGone:
            if job is None:
                raise ProviderNotFound() from None
            return await jobs.fail_queued(self._db, job, DELETED)
        if not await self._lease.claim(provider.id):
            raise ProviderBusy(provider.id)
        try:
            started = await jobs.start_job(self._db, provider.id, provider.business_id, self.owner, job)
            if started is None:  # another process ran the queued job meanwhile
                assert job is not None
                return await jobs.reload(self._db, job)
            finished = await self._run_job(provider, jobs.Progress(self._db, started))
        finally:
            await self._lease.release(provider.id)
        await self._observe(provider, finished)
        return finished

    async def _observe(self, provider: Provider, job: SyncJob) -> None:
        """Pull metrics: how it ended, and how far behind the provider's cursor is."""
        provider_id = provider.id
        if self._on_change is not None and (job.calls_seen or job.recordings_stored or job.failures):
            self._on_change(provider.business_id)
        metrics.PULLS.labels(provider_id, job.state).inc()
        async with self._db.session() as session:
            state = await session.get(ProviderSync, provider_id)
        if state is not None and state.cursor is not None:
            metrics.PULL_LAG.labels(provider_id).set((utcnow() - as_utc(state.cursor)).total_seconds())

    async def _run_job(self, provider: Provider, progress: jobs.Progress) -> SyncJob:
        context = {"provider_id": provider.id, "job_id": progress.job.id, "kind": provider.kind}
        log.info("pull started", extra=context)
        try:
            await self._with_lease_kept(provider.id, self._pull_provider(provider, progress))
            await self._record_success(provider)
        except asyncio.CancelledError:
            await progress.requeue()
            log.info("pull interrupted; its job is queued to be continued", extra=context)
            raise
        except Exception as error:
            message = failure_message(error)
            if message is None:
                self._log_unexpected(error, context)
                message = INTERNAL
            if message not in NOT_THE_PROVIDERS:
                await self._record_failure(provider, message)
            job = await progress.finish(jobs.FAILED, message)
            log.warning("pull failed", extra={**context, "error": message, **self._counts(job)})
            return job
        job = await progress.finish(jobs.SUCCEEDED)
        log.info("pull finished", extra={**context, **self._counts(job)})
        return job

    @staticmethod
    def _log_unexpected(error: BaseException, context: Mapping[str, object]) -> None:
        """A bug or an outage: the traceback helps, except for SQL errors, whose text carries
        the statement's parameters (recording refs among them)."""
        cause = root_cause(error)
        if isinstance(cause, StatementError):
            log.error("pull failed on the database", extra={**context, "error_type": type(cause).__name__})
        else:
            log.error("pull failed unexpectedly", extra=context, exc_info=cause)

    @staticmethod
    def _counts(job: SyncJob) -> dict[str, object]:
        return {
            "calls_seen": job.calls_seen,
            "recordings_stored": job.recordings_stored,
            "bytes_stored": job.bytes_stored,
            "failures": job.failures,
        }

    async def _with_lease_kept(self, provider_id: str, work: Awaitable[None]) -> None:
        """Run `work` while renewing the lease; losing the lease stops it (as a task-group error)."""
        async with asyncio.TaskGroup() as group:
            keeper = group.create_task(self._keep_lease(provider_id))
            try:
                await work
            finally:
                keeper.cancel()

    async def _keep_lease(self, provider_id: str) -> None:
        while True:
            await asyncio.sleep(self._renew_every)
            if not await self._lease.renew(provider_id):
                raise await self._why_lease_lost(provider_id)

    async def _why_lease_lost(self, provider_id: str) -> Exception:
        """Our lease or sync row vanished: the provider was deleted, or another process took over."""
        async with self._db.session() as session:
            gone = await self._provider(session, provider_id) is None
        return ProviderGone() if gone else PullFailed(LEASE_LOST)

    async def _pull_provider(self, provider: Provider, progress: jobs.Progress) -> None:
        if not provider.is_active:
            raise PullFailed(INACTIVE)
        kind, config = await self._providers.open_config(provider.business_id, provider.id)
        try:
            connector = kind.connector(config, self._settings.network)
        except ValueError:
            raise PullFailed("invalid provider configuration") from None
        try:
            origin = Origin(provider.business_id, provider.id, provider.kind, self._settings.phone_region)
            await self._list_calls(_Pull(provider, origin, connector, progress))
            await self._downloader.download_pending(provider.id, connector, progress)
        finally:
            await connector.aclose()

    async def _record_success(self, provider: Provider) -> None:
        now = utcnow()
        values = {
            "last_error": None,
            "consecutive_failures": 0,
            "last_success_at": now,
            "next_run_at": now + interval_of(provider, self._sync.default_interval_minutes),
        }
        await self._update_state(provider.id, values)

    async def _record_failure(self, provider: Provider, message: str) -> None:
        async with self._db.session() as session:
            state = await session.get(ProviderSync, provider.id)
        failures = (state.consecutive_failures if state else 0) + 1
        wait = failure_backoff(failures, interval_of(provider, self._sync.default_interval_minutes))
        values = {
            "last_error": message[:200],
            "consecutive_failures": failures,
            "next_run_at": utcnow() + wait,
        }
        with contextlib.suppress(ProviderGone, PullFailed):  # deleted or taken over: nothing to mark
            await self._update_state(provider.id, values)

    async def _update_state(self, provider_id: str, values: Mapping[str, object]) -> None:
        """Write the provider's sync state, only while we hold its lease: a process that lost
        it must not move the cursor or overwrite the new holder's state."""
        async with self._db.session() as session:
            result = await session.exec(
                update(ProviderSync)
                .where(
                    col(ProviderSync.provider_id) == provider_id, col(ProviderSync.lease_owner) == self.owner
                )
                .values(values)
            )
            await session.commit()
        if result.rowcount != 1:
            raise await self._why_lease_lost(provider_id)

    @staticmethod
    async def _provider(session: AsyncSession, provider_id: str) -> Provider | None:
        return (await session.exec(select(Provider).where(col(Provider.id) == provider_id))).first()

    # -- listing ----------------------------------------------------------------------

    async def _list_calls(self, run: _Pull) -> None:
        """List and upsert the window, restarting the listing on a retryable failure, then
        move the cursor: only now is every call before `until` known to be in Recording."""
        since, until = await self._window(run.provider.id)
        on_retry = retry_logger(run.context, "listing")
        await retrying(lambda: self._list_once(run, since, until), self._retry, on_retry=on_retry)
        await self._update_state(run.provider.id, {"cursor": until})
        await run.progress.save()

    async def _window(self, provider_id: str) -> tuple[datetime, datetime]:
        async with self._db.session() as session:
            state = await session.get(ProviderSync, provider_id)
        until = utcnow()
        if state is None or state.cursor is None:
            return until - timedelta(days=self._sync.initial_lookback_days), until
        return as_utc(state.cursor) - timedelta(minutes=self._sync.overlap_minutes), until

    async def _list_once(self, run: _Pull, since: datetime, until: datetime) -> None:
        run.progress.job.calls_seen = 0  # a restarted listing counts from the start again
        batch: list[CallRecord] = []
        async for record in run.connector.list_calls(since, until):
            batch.append(record)
            if len(batch) >= UPSERT_BATCH:
                await self._upsert(run, batch)
                batch = []
        await self._upsert(run, batch)

    async def _upsert(self, run: _Pull, records: Sequence[CallRecord]) -> None:
        storable = [r for r in records if is_storable(r)]
        if len(storable) < len(records):
            log.warning(
                "calls with oversized ids skipped",
                extra={**run.context, "calls": len(records) - len(storable)},
            )
        if storable:
            async with self._db.session() as session:
                await self._hold_provider(session, run.provider.id)
                await session.exec(upsert(self._db.dialect, unique_rows(storable, run.origin, utcnow())))
                await session.commit()
        run.progress.job.calls_seen += len(records)
        await run.progress.tick()

    @staticmethod
    async def _hold_provider(session: AsyncSession, provider_id: str) -> None:
        """Within the upsert's transaction: the provider still exists, and (on PostgreSQL,
        FOR SHARE) cannot be deleted before the commit, so no row outlives its provider's
        deletion still pointing at it."""
        query = select(Provider.id).where(col(Provider.id) == provider_id).with_for_update(read=True)
        if (await session.exec(query)).first() is None:
            raise ProviderGone()
