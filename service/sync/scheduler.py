"""The scheduler: which providers to pull now, one task per provider, in this process.

Every tick (or when woken by a sync request) it puts back in the queue the jobs whose
process is gone, ends the queued jobs of deleted providers, and starts a pull
(runner.py) of every provider that is due, or has a queued job, and whose lease nobody
live holds. One provider's failure is logged and never stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import or_
from sqlmodel import col, select

from service.blobs.base import BlobStore
from service.config import Settings
from service.errors import ProviderNotFound
from service.processes import ProcessRegistry
from service.providers.store import ProviderStore
from service.storage.db import Database
from service.storage.models import Provider, ProviderSync, SyncJob, utcnow
from service.sync import queue
from service.sync.lease import lease_free
from service.sync.runner import ProviderBusy, PullRunner
from service.sync.state import ProviderGone, ensure_state

log = logging.getLogger("callvault.sync")

__all__ = ["ProviderBusy", "Puller"]


class Puller:
    """Schedules pulls for this process, and answers sync requests."""

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
        self._db = db
        self._sync = settings.sync
        self._processes = processes
        self._runner = PullRunner(db, providers, blobs, settings, processes=processes, on_change=on_change)
        self._wakeup = asyncio.Event()
        self._pulls: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def owner(self) -> str:
        return self._runner.owner

    async def run(self) -> None:
        """Start due pulls every tick (or when woken) until cancelled."""
        self._loop = asyncio.current_task()
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
        loop, self._loop = self._loop, None
        if loop is not None and loop is not asyncio.current_task():
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
        await self._cancel_pulls()

    async def request_sync(self, business_id: str, provider_id: str) -> SyncJob:
        """Queue a manual pull (or answer the one already queued or running) and wake the loop."""
        async with self._db.session() as session:
            provider = (await session.exec(select(Provider).where(col(Provider.id) == provider_id))).first()
        if provider is None or provider.business_id != business_id:
            raise ProviderNotFound()
        try:
            await ensure_state(self._db, provider.id, provider.business_id)
        except ProviderGone:
            raise ProviderNotFound() from None
        job = await queue.request(self._db, self._processes, provider)
        self.wake()
        return job

    async def pull(self, provider_id: str, job: SyncJob | None = None) -> SyncJob:
        """One pull now, in this task (runner.py)."""
        return await self._runner.pull(provider_id, job)

    async def _cancel_pulls(self) -> None:
        tasks = list(self._pulls.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _schedule(self) -> None:
        now = utcnow()  # one instant, so "gone" means the same to the requeue and to _due
        await queue.requeue_orphans(self._db, self._processes, now=now)
        await queue.fail_orphaned_by_deletion(self._db)
        for provider_id, job in (await self._due(now)).items():
            if provider_id not in self._pulls and not self._closed:
                task = asyncio.create_task(self._pull_logged(provider_id, job), name=f"pull {provider_id}")
                self._pulls[provider_id] = task
                task.add_done_callback(functools.partial(self._forget, provider_id))

    def _forget(self, provider_id: str, _task: asyncio.Task[None]) -> None:
        self._pulls.pop(provider_id, None)
        # A sync requested while this pull was starting or ending found no open job to join
        # and was skipped by the pass it woke (the provider was busy here): look again now,
        # not a tick later.
        if not self._closed:
            self.wake()

    async def _pull_logged(self, provider_id: str, job: SyncJob | None) -> None:
        try:
            await self._runner.pull(provider_id, job)
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
            .where(col(SyncJob.state) == queue.QUEUED, free)
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
