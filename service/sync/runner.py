"""The pull runner: one provider's calls and recordings, brought into callvault's store.

A pull of one provider, under its lease:

1. list the window (state.py: from the cursor less an overlap, reaching back the
   provider's trailing window for late rows, or beyond its highest stored position) and
   upsert each call into Recording; a listing that fails is retried from the start of the
   window, since upserts are idempotent and an async iterator cannot be resumed;
2. move the cursor to the window's end (and the stored position to the highest listed),
   only once every listed call is upserted; an answer the connector cannot read
   (UnreadableAnswer) fails the pull before this, so it never moves the cursor;
3. stream every pending recording of the provider (this pull's and earlier ones') into the
   blob store while hashing it, and only then mark the row stored (download.py).

So a crash anywhere resumes from the cursor with nothing lost and nothing twice: rows are
unique by (business, provider, external id), blobs are content-addressed, and a row is
"completed" only after its blob exists. The job a crash leaves running is not lost either:
once its process is gone (service/processes.py), the scheduler puts it back in the queue,
the lease is free at once, and the next pull of the provider continues that same job to
its real outcome (queue.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.exc import StatementError
from sqlmodel import col, select

from service import metrics
from service.blobs.base import BlobError, BlobStore
from service.config import Settings
from service.connectors.base import CallRecord, Connector, ConnectorError, LearnsHints
from service.errors import KindNotSupported, ProviderNotFound
from service.kinds import KINDS
from service.kinds.base import LATE_ROWS_HOURS
from service.processes import ProcessRegistry
from service.providers.store import ProviderStore
from service.recordings.retry import RetryPolicy, retrying
from service.recordings.sealed import SealedAudio
from service.sealing import SealingError
from service.storage.db import Database
from service.storage.models import JobState, Provider, SyncJob, as_utc, utcnow
from service.sync import queue
from service.sync.download import Downloader, retry_logger
from service.sync.ingest import Origin, is_storable, unique_rows, upsert_statement
from service.sync.lease import Lease
from service.sync.state import LeaseLost, ProviderGone, PullState, Window, ensure_state, highest, read

log = logging.getLogger("callvault.sync")

DELETED = queue.DELETED
INACTIVE = "provider inactive"
LEASE_LOST = "lease lost to another process"
INTERNAL = "internal error"
# Failures that say nothing about the provider's health, so they leave its sync state alone.
NOT_THE_PROVIDERS = frozenset({DELETED, INACTIVE, LEASE_LOST})
UPSERT_BATCH = 100  # calls per upsert statement (and transaction)


class ProviderBusy(Exception):
    """Another process holds the provider's lease; a given job stays queued."""


class PullFailed(Exception):
    """A pull stopped for a reason that is not the provider's answer."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


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
    if isinstance(error, LeaseLost):
        return LEASE_LOST
    if isinstance(error, ProviderGone | ProviderNotFound):
        return DELETED
    if isinstance(error, KindNotSupported):
        return "provider kind not supported"
    if isinstance(error, SealingError):
        return "credentials cannot be opened"
    if isinstance(error, BlobError):
        return "blob store unavailable"
    return None


def interval_of(provider: Provider, default_minutes: float) -> timedelta:
    """How often the provider is pulled: its kind's poll interval setting, if set."""
    kind = KINDS.get(provider.kind)
    minutes = kind.poll_interval_minutes(provider.settings) if kind else None
    return timedelta(minutes=minutes or default_minutes)


def late_rows_of(provider: Provider) -> timedelta:
    """How far back every pull re-reads for rows written late (lateRowsHours, every kind's)."""
    kind = KINDS.get(provider.kind)
    return timedelta(hours=kind.late_rows_hours(provider.settings) if kind else LATE_ROWS_HOURS)


@dataclass(slots=True)
class _Pull:
    """One pull in progress: what every step of it needs."""

    provider: Provider
    origin: Origin
    connector: Connector
    progress: queue.Progress
    position: str | None = None  # the highest listed so far

    @property
    def context(self) -> dict[str, object]:
        return {"provider_id": self.provider.id, "job_id": self.progress.job.id}


class PullRunner:
    """Runs one pull at a time per call, for this process; see the module docstring."""

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
        self._db = db
        self._providers = providers
        self._settings = settings
        self._sync = settings.sync
        self._on_change = on_change
        self._retry = RetryPolicy.from_settings(settings.sync)
        self._lease = Lease(db, processes, settings.sync.lease_seconds)
        self._state = PullState(db, settings.sync, self._lease.owner)
        # A holder taken over because it went silent learns so at its next renewal.
        self._renew_every = min(settings.sync.lease_seconds / 3, processes.dead_after.total_seconds())
        self._downloader = Downloader(
            db, SealedAudio(db, blobs, providers.keyring), settings.sync, self._retry
        )

    @property
    def owner(self) -> str:
        return self._lease.owner

    async def pull(self, provider_id: str, job: SyncJob | None = None) -> SyncJob:
        """Pull one provider under its lease and return the finished job.

        Raises ProviderBusy when another process holds the lease, and ProviderNotFound for
        an unknown provider when no job is given (a given job ends "provider deleted").
        """
        provider = await self._provider(provider_id)
        try:
            if provider is None:
                raise ProviderGone()
            await ensure_state(self._db, provider.id, provider.business_id)
        except ProviderGone:
            if job is None:
                raise ProviderNotFound() from None
            return await queue.fail_queued(self._db, job, DELETED)
        if not await self._lease.claim(provider.id):
            raise ProviderBusy(provider.id)
        try:
            started = await queue.claim(self._db, provider.id, provider.business_id, self.owner, job)
            if started is None:  # another process ran the queued job meanwhile
                assert job is not None
                return await queue.reload(self._db, job)
            finished = await self._run_job(provider, queue.Progress(self._db, started))
        finally:
            await self._lease.release(provider.id)
        await self._observe(provider, finished)
        return finished

    async def _observe(self, provider: Provider, job: SyncJob) -> None:
        """Pull metrics: how it ended, and how far behind the provider's cursor is."""
        if self._on_change is not None and (job.calls_seen or job.recordings_stored or job.failures):
            self._on_change(provider.business_id)
        metrics.PULLS.labels(provider.id, job.state).inc()
        state = await read(self._db, provider.id)
        if state is not None and state.cursor is not None:
            metrics.PULL_LAG.labels(provider.id).set((utcnow() - as_utc(state.cursor)).total_seconds())

    async def _run_job(self, provider: Provider, progress: queue.Progress) -> SyncJob:
        context = {"provider_id": provider.id, "job_id": progress.job.id, "kind": provider.kind}
        interval = interval_of(provider, self._sync.default_interval_minutes)
        log.info("pull started", extra=context)
        try:
            await self._with_lease_kept(provider.id, self._pull_provider(provider, progress))
            await self._state.succeeded(provider.id, interval)
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
                await self._state.failed(provider.id, message, interval)
            job = await progress.finish(JobState.FAILED, message)
            log.warning("pull failed", extra={**context, "error": message, **self._counts(job)})
            return job
        job = await progress.finish(JobState.SUCCEEDED)
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
                raise await self._state.why_lost(provider_id)

    async def _pull_provider(self, provider: Provider, progress: queue.Progress) -> None:
        if not provider.is_active:
            raise PullFailed(INACTIVE)
        kind, config = await self._providers.open_config(provider.business_id, provider.id)
        state = await read(self._db, provider.id)
        hints = (state.hints if state else None) or {}
        try:
            # What earlier pulls learned goes in under the settings: a setting wins.
            connector = kind.connector({**hints, **config}, self._settings.network)
        except ValueError:
            raise PullFailed("invalid provider configuration") from None
        try:
            origin = Origin(provider.business_id, provider.id, provider.kind, self._settings.phone_region)
            await self._list_calls(_Pull(provider, origin, connector, progress))
            await self._downloader.download_pending(provider.id, connector, progress)
        finally:
            try:
                # Kept whether or not the pull succeeded: what worked still works next time.
                if isinstance(connector, LearnsHints):
                    await self._state.learned(provider.id, hints, connector.hints)
            finally:
                await connector.aclose()

    async def _provider(self, provider_id: str) -> Provider | None:
        async with self._db.session() as session:
            return (await session.exec(select(Provider).where(col(Provider.id) == provider_id))).first()

    # -- listing ----------------------------------------------------------------------

    async def _list_calls(self, run: _Pull) -> None:
        """List and upsert the window, restarting the listing on a retryable failure, then
        move the cursor: only now is every call before the window's end known to be in
        Recording."""
        window = await self._state.window(run.provider.id, late_rows_of(run.provider))
        on_retry = retry_logger(run.context, "listing")
        await retrying(lambda: self._list_once(run, window), self._retry, on_retry=on_retry)
        await self._state.listed(run.provider.id, window, run.position)
        await run.progress.save()

    async def _list_once(self, run: _Pull, window: Window) -> None:
        run.progress.job.calls_seen = 0  # a restarted listing counts from the start again
        batch: list[CallRecord] = []
        async for record in run.connector.list_calls(window.since, window.until, after=window.after):
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
                # Within the upsert's transaction: the provider still exists, and (on
                # PostgreSQL, FOR SHARE) cannot be deleted before the commit, so no row
                # outlives its provider's deletion still pointing at it.
                query = (
                    select(Provider.id).where(col(Provider.id) == run.provider.id).with_for_update(read=True)
                )
                if (await session.exec(query)).first() is None:
                    raise ProviderGone()
                rows = unique_rows(storable, run.origin, utcnow())
                await (await session.connection()).execute(upsert_statement(self._db.dialect), rows)
                await session.commit()
            for record in storable:
                run.position = highest(run.position, record.position)
        run.progress.job.calls_seen += len(records)
        await run.progress.tick()
