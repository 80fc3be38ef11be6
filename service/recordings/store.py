"""Recordings of a business: list, read, register uploads, store uploaded audio, delete.
Audio never passes through memory whole: it streams to and from the blob store, sealed
under the recording's own data key (service/recordings/sealed.py)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Integer, Select, bindparam, func, inspect, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.audit.chain import audit_deletion
from service.audit.events import Actor
from service.blobs.base import BlobStore, BlobTooLarge, BlobVerificationFailed, is_sha256
from service.errors import (
    AudioNotStored,
    AudioReclaimed,
    AudioRejected,
    AudioTooLarge,
    InvalidArgument,
    RangeNotSatisfiable,
    RecordingNotFound,
    RecordingOnHold,
)
from service.ids import uuid7
from service.recordings.agents import AgentSummary, agent_filters, list_agents
from service.recordings.blobrefs import BlobReclaimed, release
from service.recordings.counts import CountCache
from service.recordings.holds import refuse_replacing_held
from service.recordings.phones import normalize
from service.recordings.query import TAGS, RecordingQuery
from service.recordings.sealed import SealedAudio, read_row_and_key
from service.sealing import Sealer
from service.storage.db import Database
from service.storage.models import Recording, RecordingStatus, RecordingTotal, utcnow
from service.validation import check_finite, check_instant, check_media_type, check_text

log = logging.getLogger("callvault.recordings")

UPLOAD = "upload"
# Big enough that per-chunk costs (a thread hop for the read, a gRPC message or an ASGI
# send) stay small against the copying; small enough to keep memory flat.
DOWNLOAD_CHUNK = 2 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class NewUpload:
    data_id: str
    call_at: datetime
    direction: str
    customer_phone: str = ""
    callcenter_number: str = ""
    callcenter_name: str = ""
    tag: str | None = None
    score: float | None = None
    note: str = ""
    content_type: str = "audio/wav"
    duration_seconds: float = 0.0


class ListedRecording(NamedTuple):
    """A recording as the list shows it: the columns its message is made of, read as a
    Core row (Recording's names, so either renders the same)."""

    id: str
    external_id: str
    call_at: datetime
    direction: str
    customer_phone: str
    customer_phone_normalized: str
    processing_status: str
    duration_seconds: float
    source: str
    caller: str
    callee: str
    outcome: str
    callcenter_number: str
    callcenter_name: str
    note: str
    content_type: str
    tag: str | None
    score: float | None
    provider_id: str | None
    call_id: str | None
    sha256: str | None
    size: int | None
    held_at: datetime | None
    hold_reason: str | None


_LISTED = tuple(Recording.__table__.c[name] for name in ListedRecording._fields)  # type: ignore[attr-defined]
_TOTAL = RecordingTotal.__table__.c  # type: ignore[attr-defined]
_STORED_TOTAL = sa_select(_TOTAL.total).where(_TOTAL.business_id == bindparam("business_id"))

# The filters whose values the list's statements take; every other field of a query shapes
# the statement itself (the sort, the order's direction, an untagged filter).
_BOUND_FIELDS = (
    "direction",
    "source",
    "provider_id",
    "call_from",
    "call_to",
    "customer_phone",
    "customer_phone_normalized",
    "tag",
    "score_min",
    "score_max",
)
# Filters walked row by row after an index: bounded only inside one phone's calls.
_RESIDUAL_FIELDS = ("direction", "source", "provider_id", "customer_phone", "tag", "score_min", "score_max")
SHORT_MAX_OFFSET = 1_000  # index entries a short page may skip: well under a millisecond
_SHORT_PAGES: dict[_Shape, Select[Any]] = {}  # by _shape; a few dozen in practice


def _value(_name: str, value: Any) -> Any:
    return value


# A query's sort column, order, whether it skips, the filters with a value, whether it
# asks for untagged calls, and whether it has no filter at all (the business alone).
_Shape = tuple[str, bool, bool, tuple[str, ...], bool, bool]


def _shape(q: RecordingQuery) -> _Shape:
    """What a page's statement depends on besides its values (as `_filters` builds it)."""
    untagged = q.tag == "none"
    present = tuple(
        f for f in _BOUND_FIELDS if getattr(q, f) not in (None, "") and not (f == "tag" and untagged)
    )
    unfiltered = (
        not present and not untagged and not q.search and not q.agent_keys and q.visible_agents is None
    )
    return q.sort_column, q.descending, bool(q.offset), present, untagged, unfiltered


def _page_statement(filters: list[Any], order: list[Any], offset: Any, limit: Any) -> Select[Any]:
    """A page of the listed columns. A deep page (an offset, or None for none) skips entries
    of the index alone, with no row read for each one skipped, then reads its rows by id."""
    if offset is None:
        return sa_select(*_LISTED).where(*filters).order_by(*order).limit(limit)
    ids = select(col(Recording.id)).where(*filters).order_by(*order)
    skipped = ids.offset(offset).limit(limit).subquery()
    return sa_select(*_LISTED).join(skipped, col(Recording.id) == skipped.c.id).order_by(*order)


def _split_total(rows: Sequence[Any]) -> tuple[list[ListedRecording], int | None]:
    """Rows that carry the stored total as their last column: the page, and the total (None
    when the page is empty, so there was no row to carry it)."""
    if not rows:
        return [], None
    return [ListedRecording._make(row[:-1]) for row in rows], int(rows[0][-1] or 0)


def _short_path(q: RecordingQuery, *, total_known: bool) -> bool:
    """Whether the list page runs on `Database.reads` (on SQLite synchronously on the event
    loop, so it must be bounded: an index walk of a few rows) rather than on an async
    connection. Short when all of these hold:

    - the order is callAt (either way): ix_recording_business_call_at, or the phone index,
      is already in that order. A duration or score sort sorts the whole business.
    - the filters are ones an index serves: the business, an exact normalised phone
      (ix_recording_business_phone), a callAt window (a range of either index). Other
      filters (direction, source, tag, score, ...) are checked row by row along the index,
      which for a filter few rows match is a walk of the whole business; inside one phone's
      calls the walk is bounded by them, so there they are short too. Search (LIKE over
      every row) and agent filters (IN lists) stay async.
    - the offset skips at most SHORT_MAX_OFFSET index entries.
    - the total needs no COUNT: unfiltered it is the stored total in the page's own
      statement, filtered it is in the count cache. A COUNT over a filter can read every
      row of the business, so the first page of a new filter, counted with it, is async."""
    if q.sort_column != "call_at" or q.search or q.agent_keys or q.visible_agents is not None:
        return False
    if q.offset > SHORT_MAX_OFFSET or not total_known:
        return False
    residual = any(getattr(q, f) not in (None, "") for f in _RESIDUAL_FIELDS)
    return not residual or bool(q.customer_phone_normalized)


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # exclusive
    size: int

    @property
    def partial(self) -> bool:
        return self.start > 0 or self.end < self.size


_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.IGNORECASE)


def parse_range(header: str | None, size: int) -> ByteRange:
    """One RFC 9110 (section 14) byte range: "bytes=0-99", "bytes=100-", "bytes=-500".

    A range that is well formed but starts at or past the end (or a zero-length suffix) is
    unsatisfiable: 416. Anything else that is not one valid range is ignored and the whole
    body sent, as section 14.2 lets a server do: several ranges, other units, garbage
    ("bytes=abc"), and a last position before the first ("bytes=5-1", invalid per 14.1.1)."""
    whole = ByteRange(0, size, size)
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None or match.group(1) == match.group(2) == "":
        return whole
    first, last = match.group(1), match.group(2)
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(size)
        return ByteRange(max(size - suffix, 0), size, size)
    start = int(first)
    if last and int(last) < start:
        return whole
    if start >= size:
        raise RangeNotSatisfiable(size)
    return ByteRange(start, min(int(last) + 1, size) if last else size, size)


def check_upload(upload: NewUpload) -> None:
    """Every field of a registration, against the rules and the column it is stored in."""
    if not upload.data_id.strip():
        raise InvalidArgument("dataId", "is required")
    check_text(upload.data_id, "dataId", Recording.external_id)
    check_instant(upload.call_at, "callAt")
    if upload.direction not in ("in", "out"):
        raise InvalidArgument("direction", "must be in or out")
    for field, value, column in (
        ("customerPhone", upload.customer_phone, Recording.customer_phone),
        ("callcenterNumber", upload.callcenter_number, Recording.callcenter_number),
        ("callcenterName", upload.callcenter_name, Recording.callcenter_name),
        ("note", upload.note, Recording.note),
    ):
        check_text(value, field, column)
    if upload.tag is not None and upload.tag not in TAGS:
        raise InvalidArgument("tag", f"must be one of {', '.join(TAGS)}")
    if upload.score is not None and not 0 <= upload.score <= 100:
        raise InvalidArgument("score", "must be between 0 and 100")
    check_finite(upload.duration_seconds, "durationSeconds", minimum=0)
    check_media_type(upload.content_type, "contentType")


class RecordingStore:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        *,
        phone_region: str,
        max_bytes: int,
        keyring: Sealer,
        counts: CountCache | None = None,
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._sealed = SealedAudio(db, blobs, keyring)
        self._region = phone_region
        self._max_bytes = max_bytes
        self.counts = counts or CountCache()
        self._recounts: dict[tuple[str, RecordingQuery], asyncio.Task[int]] = {}

    async def search(self, business_id: str, query: RecordingQuery) -> tuple[list[ListedRecording], int]:
        """A page and the filter's `total`, on one connection, as Core rows (no ORM
        session or entities: the list is the hottest read). The unfiltered total is the
        business's trigger-kept RecordingTotal row, read in the page's own statement and
        exact across processes; any other total is counted once and cached (counts.py).
        A bounded page runs as one short read (`_short_path` says which)."""
        shape = _shape(query)
        unfiltered = shape[5]
        # The total depends on the filters only, not on the page or the order.
        count_key = dataclasses.replace(query, limit=0, offset=0, sort_column="", descending=False)
        total, fresh = (None, True) if unfiltered else self.counts.get(business_id, count_key)
        if _short_path(query, total_known=unfiltered or total is not None):
            listed, stored = await self._short_page(business_id, query, shape)
            if unfiltered:
                return listed, stored
            assert total is not None
            if not fresh:
                self._recount_later(business_id, count_key, self._filters(business_id, query))
            return listed, total
        filters = self._filters(business_id, query)
        page = _page_statement(filters, self._order(query), query.offset or None, query.limit)
        generation = self.counts.generation(business_id)  # before the connection's snapshot
        async with self._db.engine.connect() as conn:
            if unfiltered:
                ours = {"business_id": business_id}
                with_total = page.add_columns(_STORED_TOTAL.scalar_subquery())
                listed, carried = _split_total((await conn.execute(with_total, ours)).all())
                if carried is not None:
                    return listed, carried
                return [], int((await conn.execute(_STORED_TOTAL, ours)).scalar() or 0)
            listed = [ListedRecording._make(row) for row in (await conn.execute(page)).all()]
            total, fresh = self.counts.get(business_id, count_key)
            if total is None:
                total = await self._count_in(conn, business_id, count_key, filters, generation)
                fresh = True
        if not fresh:
            self._recount_later(business_id, count_key, filters)
        return listed, total

    async def _short_page(
        self, business_id: str, q: RecordingQuery, shape: _Shape
    ) -> tuple[list[ListedRecording], int]:
        """The page on `Database.reads`, one statement; with the stored total when unfiltered
        (else 0: the caller has the total)."""
        unfiltered = shape[5]
        page = _SHORT_PAGES.get(shape)
        if page is None:
            page = _SHORT_PAGES[shape] = self._short_statement(q, unfiltered)
        params = {name: getattr(q, name) for name in shape[3]}
        if q.offset:
            params["offset"] = q.offset
        rows = await self._db.reads.all(page, business_id=business_id, limit=q.limit, **params)
        if not unfiltered:
            return [ListedRecording._make(row) for row in rows], 0
        listed, carried = _split_total(rows)
        if carried is not None:
            return listed, carried
        stored = await self._db.reads.first(_STORED_TOTAL, business_id=business_id)
        return [], int(stored[0] or 0) if stored else 0

    def _short_statement(self, q: RecordingQuery, unfiltered: bool) -> Select[Any]:
        """`search`'s statement for q's shape, every value a bind parameter named after its
        field (so it is compiled once per shape, whatever the values)."""
        filters = self._filters(bindparam("business_id"), q, bind=lambda name, _value: bindparam(name))
        offset = bindparam("offset", type_=Integer) if q.offset else None
        page = _page_statement(filters, self._order(q), offset, bindparam("limit", type_=Integer))
        return page.add_columns(_STORED_TOTAL.scalar_subquery()) if unfiltered else page

    async def _count(self, business_id: str, key: RecordingQuery, filters: list[Any]) -> int:
        generation = self.counts.generation(business_id)
        async with self._db.engine.connect() as conn:
            return await self._count_in(conn, business_id, key, filters, generation)

    async def _count_in(
        self,
        conn: AsyncConnection,
        business_id: str,
        key: RecordingQuery,
        filters: list[Any],
        generation: int,
    ) -> int:
        """The COUNT, cached unless this process wrote to the business since `generation`
        was read (before the snapshot the count reads)."""
        counted = await conn.execute(sa_select(func.count()).select_from(Recording).where(*filters))
        total = int(counted.scalar_one())
        self.counts.put(business_id, key, total, generation)
        return total

    def _recount_later(self, business_id: str, key: RecordingQuery, filters: list[Any]) -> None:
        """An expired total is served once more while one recount runs in the background,
        so no caller waits for the COUNT except the first, or after this process wrote."""
        if (business_id, key) in self._recounts:
            return
        task = asyncio.create_task(self._count(business_id, key, filters))
        self._recounts[(business_id, key)] = task
        task.add_done_callback(lambda done: self._forget_recount(business_id, key, done))

    def _forget_recount(self, business_id: str, key: RecordingQuery, task: asyncio.Task[int]) -> None:
        self._recounts.pop((business_id, key), None)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background recount failed", extra={"business_id": business_id})

    @staticmethod
    def _order(q: RecordingQuery) -> list[Any]:
        """The documented order: the sort column, nulls last either way, then callAt desc; id
        last keeps paging stable. The null key is a plain `IS NULL` term (not NULLS LAST) so
        that it reads the same on every database, and only a nullable column gets one, so
        sorting by callAt still walks ix_recording_business_call_at without sorting."""
        column = col(getattr(Recording, q.sort_column))
        order: list[Any] = [column.is_(None)] if inspect(Recording).columns[q.sort_column].nullable else []
        order.append(column.desc() if q.descending else column.asc())
        if q.sort_column != "call_at":
            order.append(col(Recording.call_at).desc())
        elif not q.descending:  # equal calls in index order, so callAt asc walks it forward
            return [*order, col(Recording.id).asc()]
        order.append(col(Recording.id).desc())
        return order

    @staticmethod
    def _filters(business_id: Any, q: RecordingQuery, bind: Callable[[str, Any], Any] = _value) -> list[Any]:
        """The WHERE clauses of q; `bind` makes each value what the clause compares with (the
        value itself, or a bind parameter named after the field: _short_statement)."""
        where: list[Any] = [col(Recording.business_id) == business_id]
        if q.direction:
            where.append(col(Recording.direction) == bind("direction", q.direction))
        if q.source:
            where.append(col(Recording.source) == bind("source", q.source))
        if q.provider_id:
            where.append(col(Recording.provider_id) == bind("provider_id", q.provider_id))
        if q.call_from:
            where.append(col(Recording.call_at) >= bind("call_from", q.call_from))
        if q.call_to:
            where.append(col(Recording.call_at) < bind("call_to", q.call_to))
        if q.customer_phone:
            where.append(col(Recording.customer_phone) == bind("customer_phone", q.customer_phone))
        if q.customer_phone_normalized:
            phone = bind("customer_phone_normalized", q.customer_phone_normalized)
            where.append(col(Recording.customer_phone_normalized) == phone)
        if q.tag == "none":
            where.append(col(Recording.tag).is_(None))
        elif q.tag:
            where.append(col(Recording.tag) == bind("tag", q.tag))
        if q.score_min is not None:
            where.append(col(Recording.score) >= bind("score_min", q.score_min))
        if q.score_max is not None:
            where.append(col(Recording.score) <= bind("score_max", q.score_max))
        where.extend(agent_filters(q.agent_keys, q.visible_agents))
        if q.search:
            pattern = "%" + q.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append(
                or_(
                    *(
                        col(c).ilike(pattern, escape="\\")
                        for c in (
                            Recording.customer_phone,
                            Recording.customer_phone_normalized,
                            Recording.caller,
                            Recording.callee,
                            Recording.callcenter_number,
                            Recording.callcenter_name,
                            Recording.note,
                            Recording.external_id,
                        )
                    )
                )
            )
        return where

    async def get(
        self, business_id: str, recording_id: str, *, visible: frozenset[str] | None = None
    ) -> Recording:
        """The recording; one the caller may not see (`visible`: its agents) is not found."""
        async with self._db.session() as session:
            return await self._row(session, business_id, recording_id, *agent_filters((), visible))

    async def agents(
        self, business_id: str, visible: frozenset[str] | None, *, limit: int, offset: int
    ) -> tuple[list[AgentSummary], int]:
        return await list_agents(self._db, business_id, visible, limit=limit, offset=offset)

    async def register_upload(self, business_id: str, upload: NewUpload) -> tuple[Recording, bool]:
        """Idempotent on dataId: a second registration answers the first recording."""
        check_upload(upload)
        phone = upload.customer_phone.strip()
        row = Recording(
            id=uuid7(),
            business_id=business_id,
            origin=UPLOAD,
            source=UPLOAD,
            external_id=upload.data_id,
            call_at=upload.call_at,
            duration_seconds=upload.duration_seconds,
            direction=upload.direction,
            customer_phone=phone,
            customer_phone_normalized=normalize(phone, self._region),
            caller=phone if upload.direction == "in" else upload.callcenter_number,
            callee=upload.callcenter_number if upload.direction == "in" else phone,
            callcenter_number=upload.callcenter_number,
            callcenter_name=upload.callcenter_name,
            tag=upload.tag,
            score=upload.score,
            note=upload.note,
            content_type=upload.content_type,
            processing_status=RecordingStatus.PENDING,
        )
        async with self._db.session() as session:
            existing = await self._by_data_id(session, business_id, upload.data_id)
            if existing is not None:
                return existing, False
            session.add(row)
            try:
                await session.commit()
                self.counts.invalidate(business_id)
            except IntegrityError:  # a concurrent registration of the same dataId won
                await session.rollback()
                existing = await self._by_data_id(session, business_id, upload.data_id)
                if existing is None:
                    raise
                return existing, False
        return row, True

    async def store_upload(
        self,
        business_id: str,
        recording_id: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str | None = None,
        expected_sha256: str | None = None,
    ) -> Recording:
        """Stream the audio into the blob store; the row points at it only once it is
        complete and verified. Uploading again replaces the audio."""
        async with self._db.session() as session:
            row = await self._row(session, business_id, recording_id)
        if row.origin != UPLOAD:
            raise InvalidArgument("id", "only uploaded recordings take audio uploads")
        if expected_sha256 is not None and not is_sha256(expected_sha256):
            raise InvalidArgument("sha256", "must be 64 lower-case hex characters")
        refuse_replacing_held(row)
        try:
            put = await self._sealed.put(
                business_id, recording_id, chunks, expected_sha256=expected_sha256, max_size=self._max_bytes
            )
        except BlobVerificationFailed:
            raise AudioRejected("the audio does not match its sha256", field="sha256") from None
        except BlobTooLarge:
            raise AudioTooLarge(f"the audio is over {self._max_bytes} bytes", field="chunk") from None
        if put.plain.size == 0:
            await self._sealed.discard(put)
            raise AudioRejected("the audio is empty", field="chunk")
        try:
            async with self._db.session() as session:
                row = await self._locked_row(session, business_id, recording_id)
                refuse_replacing_held(row)  # held since the upload began
                previous = await self._sealed.blob_of(session, row)
                row.sha256, row.size = put.plain.sha256, put.plain.size
                row.content_type = content_type or row.content_type
                row.processing_status, row.last_error, row.updated_at = (
                    RecordingStatus.COMPLETED,
                    None,
                    utcnow(),
                )
                session.add(row)
                await session.flush()
                await self._sealed.keep(session, put, replaced=previous)
                await session.commit()
        except (RecordingNotFound, RecordingOnHold):  # deleted, or held, while its audio streamed in
            await self._sealed.discard(put)
            raise
        except BlobReclaimed:
            raise AudioReclaimed() from None
        self.counts.invalidate(business_id)
        return row

    async def open_audio(
        self,
        business_id: str,
        recording_id: str,
        range_header: str | None,
        offset: int = 0,
        length: int = 0,
        *,
        visible: frozenset[str] | None = None,
    ) -> tuple[Recording, ByteRange, AsyncIterator[bytes]]:
        async with self._db.session() as session:
            found = await read_row_and_key(session, business_id, recording_id, *agent_filters((), visible))
        if found is None:
            raise RecordingNotFound()
        row, key = found
        if row.processing_status != RecordingStatus.COMPLETED or row.sha256 is None or row.size is None:
            raise AudioNotStored(row.processing_status)
        if range_header:
            span = parse_range(range_header, row.size)
        else:
            if offset < 0 or length < 0 or (offset >= row.size and row.size > 0):
                raise RangeNotSatisfiable(row.size)
            span = ByteRange(offset, min(row.size, offset + length) if length else row.size, row.size)
        chunks = await self._sealed.open(row, key, span.start, span.end, chunk_size=DOWNLOAD_CHUNK)
        return row, span, chunks

    async def delete(self, business_id: str, recording_id: str, *, actor: Actor | None = None) -> None:
        """Delete the row, its data key first (crypto-shredding: no copy of the audio opens
        after the commit); the audio's bytes are only released (blobrefs.py): the sweeper frees
        them after the grace period, once no recording refers to them. With an actor, the
        audit event is written in the same transaction."""
        async with self._db.session() as session:
            row = await self._locked_row(session, business_id, recording_id)
            if row.held_at is not None:  # checked under the lock a hold is placed with
                raise RecordingOnHold()
            blob = await self._sealed.forget(session, row)
            await session.delete(row)
            await session.flush()
            if blob is not None:
                await release(session, blob.sha256, blob.size)
            if actor is not None:
                await audit_deletion(session, business_id, actor, recording_id)
            await session.commit()
        self.counts.invalidate(business_id)

    async def delete_many(
        self, business_id: str, recording_ids: list[str], *, actor: Actor | None = None
    ) -> int:
        """How many were deleted: one gone already, or held, is skipped."""
        deleted = 0
        for recording_id in recording_ids:
            with contextlib.suppress(RecordingNotFound, RecordingOnHold):
                await self.delete(business_id, recording_id, actor=actor)
                deleted += 1
        return deleted

    async def purge_older_than(
        self,
        business_id: str,
        cutoff: datetime,
        *,
        batch: int = 500,
        where: Sequence[Any] = (),
        actor: Actor | None = None,
    ) -> int:
        """Retention: delete the business's recordings of calls before `cutoff` (and `where`),
        except held ones."""
        purged = 0
        while True:
            async with self._db.session() as session:
                query = select(Recording.id).where(
                    col(Recording.business_id) == business_id,
                    col(Recording.call_at) < cutoff,
                    col(Recording.held_at).is_(None),
                    *where,
                )
                ids = list((await session.exec(query.limit(batch))).all())
            if not ids:
                return purged
            purged += await self.delete_many(business_id, ids, actor=actor)

    @staticmethod
    async def _row(session: AsyncSession, business_id: str, recording_id: str, *also: Any) -> Recording:
        row = (
            await session.exec(
                select(Recording).where(
                    col(Recording.id) == recording_id, col(Recording.business_id) == business_id, *also
                )
            )
        ).first()
        if row is None:
            raise RecordingNotFound()
        return row

    @classmethod
    async def _locked_row(cls, session: AsyncSession, business_id: str, recording_id: str) -> Recording:
        """The row, locked for the rest of the transaction, as it is now: a write first (it
        takes the row lock on PostgreSQL and the write lock on SQLite), then the read."""
        await session.exec(
            update(Recording)
            .where(col(Recording.id) == recording_id, col(Recording.business_id) == business_id)
            .values(updated_at=utcnow())
        )
        return await cls._row(session, business_id, recording_id)

    @staticmethod
    async def _by_data_id(session: AsyncSession, business_id: str, data_id: str) -> Recording | None:
        query = select(Recording).where(
            col(Recording.business_id) == business_id,
            col(Recording.origin) == UPLOAD,
            col(Recording.external_id) == data_id,
        )
        return (await session.exec(query)).first()
