"""Reading sync jobs (the puller writes them)."""

from __future__ import annotations

from sqlmodel import col, select

from service.errors import InvalidArgument, SyncJobNotFound
from service.storage.db import Database
from service.storage.models import SyncJob


class SyncJobs:
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
