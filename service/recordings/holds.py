"""Legal hold: a held recording is never deleted, not by DELETE, not with its provider
(`deleteRecordings`), not by retention, and its stored audio is not replaced by an upload.

The hold is two columns of the recording row, so each delete path checks it under the
lock it deletes with (`RecordingStore.delete`). Placing a hold also locks the recording's
provider row first, as deleting the provider does, so a hold and a provider deletion
are ordered: the hold that comes first makes the deletion refuse whole, the deletion that
comes first makes the hold find the recording gone. A provider deleted with its
recordings leaves their provider_id pointing at it until each row is deleted, which is
how a late hold tells "being deleted with its provider" from "detached and kept".

`place` and `release` are the one place each change happens (the audit log's hook)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.audit.chain import record_in
from service.audit.events import Action, Actor, recording_target
from service.errors import InvalidArgument, RecordingNotFound, RecordingOnHold
from service.storage.db import Database
from service.storage.models import Provider, Recording, as_utc, utcnow
from service.validation import check_text

if TYPE_CHECKING:  # the list's rows (store.py imports this module)
    from service.recordings.store import ListedRecording


@dataclass(frozen=True, slots=True)
class Hold:
    reason: str
    placed_at: datetime


def hold_of(row: Recording | ListedRecording) -> Hold | None:
    """The recording's hold, or None when it is not held."""
    if row.held_at is None:
        return None
    return Hold(reason=row.hold_reason or "", placed_at=as_utc(row.held_at))


def check_reason(reason: str) -> str:
    reason = reason.strip()
    if not reason:
        raise InvalidArgument("reason", "is required")
    return check_text(reason, "reason", Recording.hold_reason)


def refuse_replacing_held(row: Recording) -> None:
    """Uploading again replaces a recording's audio, which would delete the held audio."""
    if row.held_at is not None and row.sha256 is not None:
        raise RecordingOnHold("the recording is on legal hold; its audio cannot be replaced")


async def refuse_if_provider_holds(session: AsyncSession, provider_id: str) -> None:
    """Within a provider's deletion, with its row locked: 409 if any of its recordings is held."""
    query = (
        select(func.count())
        .select_from(Recording)
        .where(col(Recording.provider_id) == provider_id, col(Recording.held_at).is_not(None))
    )
    held = int((await session.exec(query)).one())
    if held:
        raise RecordingOnHold(f"{held} recording(s) of this provider are on legal hold; nothing was deleted")


class LegalHolds:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def place(
        self, business_id: str, recording_id: str, reason: str, *, actor: Actor | None = None
    ) -> Hold:
        """Hold the recording. Holding a held one again keeps when it was placed and takes
        the new reason."""
        reason = check_reason(reason)
        async with self._db.session() as session:
            # The provider first, in one statement that writes (SQLite's write lock): the
            # same order as a provider deletion, so the two cannot deadlock.
            of_recording = (
                select(Recording.provider_id)
                .where(col(Recording.id) == recording_id, col(Recording.business_id) == business_id)
                .scalar_subquery()
            )
            provider_locked = (
                await session.exec(
                    update(Provider)
                    .where(col(Provider.id) == of_recording)
                    .values(is_active=col(Provider.is_active))
                )
            ).rowcount
            now = utcnow()
            held = await session.exec(
                update(Recording)
                .where(col(Recording.id) == recording_id, col(Recording.business_id) == business_id)
                .values(held_at=func.coalesce(Recording.held_at, now), hold_reason=reason, updated_at=now)
            )
            if not held.rowcount:
                raise RecordingNotFound()
            row = (await session.exec(select(Recording).where(col(Recording.id) == recording_id))).one()
            if row.provider_id is not None and not provider_locked:
                raise RecordingNotFound()  # its provider is gone: it is being deleted with it
            hold = hold_of(row)
            if actor is not None:
                await record_in(
                    session, business_id, actor, Action.HOLD_PLACE, recording_target(recording_id)
                )
            await session.commit()
        assert hold is not None
        return hold

    async def release(
        self, business_id: str, recording_id: str, *, actor: Actor | None = None
    ) -> Hold | None:
        """Lift the hold; the answer is the hold that was lifted (None if it was not held)."""
        async with self._db.session() as session:
            now = utcnow()
            locked = await session.exec(
                update(Recording)
                .where(col(Recording.id) == recording_id, col(Recording.business_id) == business_id)
                .values(updated_at=now)
            )
            if not locked.rowcount:
                raise RecordingNotFound()
            row = (await session.exec(select(Recording).where(col(Recording.id) == recording_id))).one()
            lifted = hold_of(row)
            if lifted is not None:
                row.held_at, row.hold_reason = None, None
                session.add(row)
                if actor is not None:  # a release of nothing changes nothing: no event
                    await record_in(
                        session, business_id, actor, Action.HOLD_RELEASE, recording_target(recording_id)
                    )
            await session.commit()
        return lifted
