"""Collections: named groups of a business's recordings. A recording may be in several;
deleting a collection keeps its recordings, deleting a recording takes it out of every
collection (both by the item table's cascading foreign keys)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.errors import CollectionNotFound, CollectionRecordingsNotFound, InvalidArgument
from service.ids import uuid7
from service.storage.db import Database, insert_for
from service.storage.models import Collection, CollectionItem, Recording, utcnow

MAX_NAME, MAX_DESCRIPTION, MAX_IDS = 100, 1000, 1000
# The request fields that name recordings, as the mirrored API spells them.
ADD_FIELD, REMOVE_FIELD = "callRecordingIds", "callRecordingId"
_COLOR = re.compile(r"^#[0-9A-Fa-f]{6}$")


@dataclass(frozen=True, slots=True)
class CollectionView:
    row: Collection
    item_count: int


@dataclass(frozen=True, slots=True)
class Item:
    recording: Recording
    added_at: datetime


@dataclass(frozen=True, slots=True)
class ItemsChanged:
    """How many recordings an add or remove changed, and how many the collection holds now."""

    changed: int
    item_count: int


def check_name(value: str) -> str:
    name = value.strip()
    if not name:
        raise InvalidArgument("name", "is required")
    if len(name) > MAX_NAME:
        raise InvalidArgument("name", f"must be at most {MAX_NAME} characters")
    return name


def check_description(value: str) -> str:
    if len(value) > MAX_DESCRIPTION:
        raise InvalidArgument("description", f"must be at most {MAX_DESCRIPTION} characters")
    return value


def check_color(value: str) -> str | None:
    """#RRGGBB as sent; "" means no color."""
    if value == "":
        return None
    if not _COLOR.match(value):
        raise InvalidArgument("color", "must be #RRGGBB (six hex digits, e.g. #D6FF3A)")
    return value


def check_recording_ids(field: str, values: Sequence[str]) -> list[str]:
    """1-1000 UUIDs, in their canonical spelling, each once (first occurrence kept)."""
    if not values:
        raise InvalidArgument(field, f"name 1 to {MAX_IDS} recording ids")
    if len(values) > MAX_IDS:
        raise InvalidArgument(field, f"at most {MAX_IDS} recording ids per call, got {len(values)}")
    ids: dict[str, None] = {}
    for index, value in enumerate(values):
        try:
            ids[str(uuid.UUID(value.strip()))] = None
        except ValueError:
            raise InvalidArgument(field, f"entry {index} is not a recording id (a UUID)") from None
    return list(ids)


class CollectionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def list_page(self, business_id: str, limit: int, offset: int) -> tuple[list[CollectionView], int]:
        """Newest first, with the business's total (limit and offset checked by page_bounds)."""
        async with self._db.session() as session:
            rows = list(
                (
                    await session.exec(
                        select(Collection)
                        .where(col(Collection.business_id) == business_id)
                        .order_by(col(Collection.created_at).desc(), col(Collection.id).desc())
                        .offset(offset)
                        .limit(limit)
                    )
                ).all()
            )
            total = (
                await session.exec(
                    select(func.count())
                    .select_from(Collection)
                    .where(col(Collection.business_id) == business_id)
                )
            ).one()
            counts = await self._counts(session, [r.id for r in rows])
        return [CollectionView(r, counts.get(r.id, 0)) for r in rows], int(total)

    async def create(
        self, business_id: str, *, name: str, description: str, color: str | None
    ) -> CollectionView:
        row = Collection(
            id=uuid7(),
            business_id=business_id,
            name=check_name(name),
            description=check_description(description),
            color=check_color(color or ""),
        )
        async with self._db.session() as session:
            session.add(row)
            await session.commit()
        return CollectionView(row, 0)

    async def get(
        self, business_id: str, collection_id: str, limit: int, offset: int
    ) -> tuple[CollectionView, list[Item]]:
        """The collection and a page of its items, most recently added first."""
        async with self._db.session() as session:
            row = await self._row(session, business_id, collection_id)
            found = await session.exec(
                select(Recording, CollectionItem.added_at)
                .join(CollectionItem, col(CollectionItem.recording_id) == col(Recording.id))
                .where(
                    col(CollectionItem.collection_id) == row.id,
                    col(Recording.business_id) == business_id,
                )
                .order_by(col(CollectionItem.added_at).desc(), col(CollectionItem.recording_id).desc())
                .offset(offset)
                .limit(limit)
            )
            items = [Item(recording, added_at) for recording, added_at in found.all()]
            counts = await self._counts(session, [row.id])
        return CollectionView(row, counts.get(row.id, 0)), items

    async def update(
        self,
        business_id: str,
        collection_id: str,
        *,
        name: str | None,
        description: str | None,
        color: str | None,
    ) -> None:
        """Only what was sent changes; everything is checked before anything is written."""
        changes: dict[str, str | None] = {}
        if name is not None:
            changes["name"] = check_name(name)
        if description is not None:
            changes["description"] = check_description(description)
        if color is not None:
            changes["color"] = check_color(color)
        async with self._db.session() as session:
            row = await self._row(session, business_id, collection_id)
            if not changes:
                return
            for field, value in changes.items():
                setattr(row, field, value)
            row.updated_at = utcnow()
            session.add(row)
            await session.commit()

    async def delete(self, business_id: str, collection_id: str) -> None:
        """The items go with it (ON DELETE CASCADE); the recordings stay."""
        async with self._db.session() as session:
            row = await self._row(session, business_id, collection_id)
            await session.exec(delete(Collection).where(col(Collection.id) == row.id))
            await session.commit()

    async def add(self, business_id: str, collection_id: str, recording_ids: Sequence[str]) -> ItemsChanged:
        """All or nothing: every id must be a recording of this business. Adding one that is
        already there changes nothing (ON CONFLICT DO NOTHING), so retries are safe."""
        ids = check_recording_ids(ADD_FIELD, recording_ids)
        async with self._db.session() as session:
            row = await self._row(session, business_id, collection_id)
            await self._require_recordings(session, business_id, ids)
            now = utcnow()
            stmt = insert_for(self._db.dialect, CollectionItem).values(
                [{"collection_id": row.id, "recording_id": i, "added_at": now} for i in ids]
            )
            try:
                # RETURNING lists the rows inserted: a multi-row INSERT's rowcount is not
                # reliable across drivers (psycopg reports -1).
                result = await session.exec(
                    stmt.on_conflict_do_nothing(index_elements=["collection_id", "recording_id"]).returning(
                        col(CollectionItem.recording_id)
                    )
                )
            except IntegrityError:
                # A foreign key: the collection or a recording was deleted since it was read.
                await session.rollback()
                await self._row(session, business_id, collection_id)
                await self._require_recordings(session, business_id, ids)
                raise
            added = len(result.all())
            if added:
                row.updated_at = now
                session.add(row)
            counts = await self._counts(session, [row.id])
            await session.commit()
        return ItemsChanged(added, counts.get(row.id, 0))

    async def remove(
        self, business_id: str, collection_id: str, recording_ids: Sequence[str]
    ) -> ItemsChanged:
        """Ids not in the collection are no error: the answer says how many were."""
        ids = check_recording_ids(REMOVE_FIELD, recording_ids)
        async with self._db.session() as session:
            row = await self._row(session, business_id, collection_id)
            result = await session.exec(
                delete(CollectionItem).where(
                    col(CollectionItem.collection_id) == row.id, col(CollectionItem.recording_id).in_(ids)
                )
            )
            removed = int(result.rowcount)
            if removed:
                row.updated_at = utcnow()
                session.add(row)
            counts = await self._counts(session, [row.id])
            await session.commit()
        return ItemsChanged(removed, counts.get(row.id, 0))

    @staticmethod
    async def _require_recordings(session: AsyncSession, business_id: str, ids: list[str]) -> None:
        query = select(Recording.id).where(
            col(Recording.id).in_(ids), col(Recording.business_id) == business_id
        )
        known = set((await session.exec(query)).all())
        missing = [i for i in ids if i not in known]
        if missing:
            raise CollectionRecordingsNotFound(ADD_FIELD, missing)

    @staticmethod
    async def _counts(session: AsyncSession, collection_ids: list[str]) -> dict[str, int]:
        if not collection_ids:
            return {}
        found = await session.exec(
            select(CollectionItem.collection_id, func.count())
            .where(col(CollectionItem.collection_id).in_(collection_ids))
            .group_by(col(CollectionItem.collection_id))
        )
        return {collection_id: int(count) for collection_id, count in found.all()}

    @staticmethod
    async def _row(session: AsyncSession, business_id: str, collection_id: str) -> Collection:
        row = (
            await session.exec(
                select(Collection).where(
                    col(Collection.id) == collection_id, col(Collection.business_id) == business_id
                )
            )
        ).first()
        if row is None:
            raise CollectionNotFound()
        return row
