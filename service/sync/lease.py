"""The lease on a provider's ProviderSync row: one process at a time pulls a provider.

Every step is a single conditional UPDATE whose row count says whether it took, so it is
atomic on SQLite and PostgreSQL alike and needs no locks held across a pull. The owner is
the holder's process id (service/processes.py): a lease whose holder is gone (killed, its
heartbeat silent for dead_after_seconds) is free at once, and one that is never renewed
expires after lease_seconds in any case.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, update
from sqlmodel import col

from service.processes import ProcessRegistry
from service.storage.db import Database
from service.storage.models import ProviderSync, utcnow


def lease_free(processes: ProcessRegistry, now: datetime) -> ColumnElement[bool]:
    """SQL: the provider's lease may be claimed: nobody holds it, it lapsed, or its holder is gone."""
    until = col(ProviderSync.lease_until)
    return or_(until.is_(None), until < now, processes.gone(col(ProviderSync.lease_owner), now))


class Lease:
    """Claims, renews and releases leases for one owner: this process, as registered."""

    def __init__(self, db: Database, processes: ProcessRegistry, seconds: float) -> None:
        self._db = db
        self._processes = processes
        self.owner = processes.id
        self.seconds = seconds

    async def claim(self, provider_id: str) -> bool:
        """Take the lease if nobody live holds it; True if we got it."""
        now = utcnow()
        return await self._update(
            provider_id, lease_free(self._processes, now), owner=self.owner, until=self._until(now)
        )

    async def renew(self, provider_id: str) -> bool:
        """Extend our lease; False if it is no longer ours (taken over, or the row deleted)."""
        mine = col(ProviderSync.lease_owner) == self.owner
        return await self._update(provider_id, mine, owner=self.owner, until=self._until(utcnow()))

    async def release(self, provider_id: str) -> None:
        """Let others pull the provider now rather than when the lease would lapse."""
        mine = col(ProviderSync.lease_owner) == self.owner
        await self._update(provider_id, mine, owner=None, until=None)

    def _until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.seconds)

    async def _update(
        self, provider_id: str, condition: ColumnElement[bool], *, owner: str | None, until: datetime | None
    ) -> bool:
        stmt = (
            update(ProviderSync)
            .where(col(ProviderSync.provider_id) == provider_id, condition)
            .values(lease_owner=owner, lease_until=until)
        )
        async with self._db.session() as session:
            result = await session.exec(stmt)
            await session.commit()
        return bool(result.rowcount == 1)
