"""Per-business retention: recordings of calls older than the business's period go."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from sqlmodel import col, select

from service.audit.chain import record_in
from service.audit.events import Action, Actor, Target, TargetKind
from service.recordings.store import RecordingStore
from service.storage.db import Database
from service.storage.models import Business, BusinessSettings, utcnow

log = logging.getLogger("callvault.retention")


async def set_retention(
    db: Database, business_id: str, days: int | None, *, actor: Actor | None = None
) -> None:
    if days is not None and days < 1:
        raise ValueError("retention must be at least 1 day (or off)")
    async with db.session() as session:
        if await session.get(Business, business_id) is None:
            raise ValueError(f"no business {business_id}")
        row = await session.get(BusinessSettings, business_id) or BusinessSettings(business_id=business_id)
        row.retention_days = days
        session.add(row)
        if actor is not None:
            await record_in(
                session, business_id, actor, Action.RETENTION_SET, Target(TargetKind.BUSINESS, business_id)
            )
        await session.commit()


async def purge_expired(db: Database, recordings: RecordingStore) -> int:
    """Each purged recording is an audit event of the system actor, one request id a run."""
    actor = Actor.system()
    async with db.session() as session:
        query = select(BusinessSettings).where(col(BusinessSettings.retention_days).is_not(None))
        policies = list((await session.exec(query)).all())
    purged = 0
    for policy in policies:
        assert policy.retention_days is not None
        count = await recordings.purge_older_than(
            policy.business_id, utcnow() - timedelta(days=policy.retention_days), actor=actor
        )
        if count:
            log.info("retention purge", extra={"business_id": policy.business_id, "recordings": count})
        purged += count
    return purged


async def run_retention(db: Database, recordings: RecordingStore, every_seconds: float = 3600.0) -> None:
    while True:
        try:
            await purge_expired(db, recordings)
        except Exception:
            log.exception("retention purge failed; will retry")
        await asyncio.sleep(every_seconds)
