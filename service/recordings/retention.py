"""Retention: recordings of calls older than their period go. The period is the
provider's own when it has one (`ProviderSettings`), else the business's
(`BusinessSettings`); uploads follow the business's. A recording on legal hold is kept
and counted (logged and in `callvault_retention_held_total`).

`set_retention` and `set_provider_retention` are the one place each change happens (the
audit log's hook)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_
from sqlmodel import col, select

from service.audit.chain import record_in
from service.audit.events import Action, Actor, Target, TargetKind, provider_target
from service.metrics import RETENTION_HELD, RETENTION_PURGED
from service.recordings.store import RecordingStore
from service.storage.db import Database
from service.storage.models import Business, BusinessSettings, Provider, ProviderSettings, Recording, utcnow

log = logging.getLogger("callvault.retention")


@dataclass(frozen=True, slots=True)
class RetentionRun:
    purged: int  # recordings deleted
    held: int  # recordings past their period kept for a legal hold


def _check_days(days: int | None) -> None:
    if days is not None and days < 1:
        raise ValueError("retention must be at least 1 day (or off)")


async def set_retention(
    db: Database, business_id: str, days: int | None, *, actor: Actor | None = None
) -> None:
    """The business's period (None: kept for ever, unless a provider's own period says otherwise)."""
    _check_days(days)
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


async def set_provider_retention(
    db: Database, provider_id: str, days: int | None, *, actor: Actor | None = None
) -> str:
    """The provider's own period, overriding its business's; None removes it, so the
    business's applies again. Answers the provider's business id."""
    _check_days(days)
    async with db.session() as session:
        provider = await session.get(Provider, provider_id)
        if provider is None:
            raise ValueError(f"no provider {provider_id}")
        row = await session.get(ProviderSettings, provider_id)
        if days is None:
            if row is not None:
                await session.delete(row)
        else:
            row = row or ProviderSettings(
                provider_id=provider_id, business_id=provider.business_id, retention_days=days
            )
            row.retention_days = days
            session.add(row)
        if actor is not None:
            await record_in(
                session, provider.business_id, actor, Action.RETENTION_SET, provider_target(provider_id)
            )
        await session.commit()
        return provider.business_id


@dataclass(frozen=True, slots=True)
class _Rule:
    cutoff: datetime
    where: tuple[Any, ...]


def _rules(now: datetime, default_days: int | None, overrides: dict[str, int]) -> list[_Rule]:
    """One rule per provider with its own period, and the business's for the rest."""
    rules = [
        _Rule(now - timedelta(days=days), (col(Recording.provider_id) == provider_id,))
        for provider_id, days in sorted(overrides.items())
    ]
    if default_days is not None:
        rest = (
            (or_(col(Recording.provider_id).is_(None), col(Recording.provider_id).not_in(sorted(overrides))),)
            if overrides
            else ()
        )
        rules.append(_Rule(now - timedelta(days=default_days), rest))
    return rules


async def _held(db: Database, business_id: str, rule: _Rule) -> int:
    query = (
        select(func.count())
        .select_from(Recording)
        .where(
            col(Recording.business_id) == business_id,
            col(Recording.call_at) < rule.cutoff,
            col(Recording.held_at).is_not(None),
            *rule.where,
        )
    )
    async with db.session() as session:
        return int((await session.exec(query)).one())


async def purge_expired(db: Database, recordings: RecordingStore) -> RetentionRun:
    async with db.session() as session:
        businesses = {
            b.business_id: b.retention_days
            for b in (
                await session.exec(
                    select(BusinessSettings).where(col(BusinessSettings.retention_days).is_not(None))
                )
            ).all()
        }
        providers = list((await session.exec(select(ProviderSettings))).all())
    overrides: dict[str, dict[str, int]] = {}
    for p in providers:
        overrides.setdefault(p.business_id, {})[p.provider_id] = p.retention_days
    now = utcnow()
    actor = Actor.system()  # each purged recording is an audit event, one request id a run
    purged_total = held_total = 0
    for business_id in sorted(set(businesses) | set(overrides)):
        purged = held = 0
        for rule in _rules(now, businesses.get(business_id), overrides.get(business_id, {})):
            purged += await recordings.purge_older_than(
                business_id, rule.cutoff, where=rule.where, actor=actor
            )
            held += await _held(db, business_id, rule)  # after the purge: holds placed during it count
        if purged or held:
            log.info(
                "retention purge", extra={"business_id": business_id, "recordings": purged, "held": held}
            )
        purged_total, held_total = purged_total + purged, held_total + held
    RETENTION_PURGED.inc(purged_total)
    RETENTION_HELD.inc(held_total)
    return RetentionRun(purged=purged_total, held=held_total)


async def run_retention(db: Database, recordings: RecordingStore, every_seconds: float = 3600.0) -> None:
    while True:
        try:
            await purge_expired(db, recordings)
        except Exception:
            log.exception("retention purge failed; will retry")
        await asyncio.sleep(every_seconds)
