"""Which blobs recordings still use, and reclaiming the bytes of those that none does.

Blobs are content-addressed: a put of bytes already stored reuses them. Sealed audio
(service/recordings/sealed.py) is distinct ciphertext per recording, so a sealed blob has one
reference, its recording's key row; a plain blob (stored before sealing) may serve several
recordings with the same bytes. "Recording" below means either reference. Counting a blob's
references and then deleting its bytes races a writer that reuses the blob after the count:
its row says stored and the bytes are gone. So deleting a recording never deletes bytes. The rules:

- Every blob has a `blob` row. A writer that points a recording at a blob does it in one
  transaction: it writes the recording row first, then upserts the blob row live
  (`unreferenced_since` NULL), then, holding that row, checks that the bytes are there
  (`hold`). If they are gone it rolls back and the recording is not marked stored (a pull
  downloads again; an upload is answered "send it again").
- Removing a reference (deleting a recording, replacing its audio) only stamps
  `unreferenced_since`, in the same transaction, after locking the blob row and finding that
  no recording refers to it any more (`release`).
- The sweeper deletes bytes only inside a transaction whose conditional DELETE removed the
  blob row (stamped before the cutoff, and no recording refers to it), and commits only after
  the bytes are deleted (`BlobSweeper`).

Why a stored recording never loses its bytes. Bytes are deleted only while a sweep holds the
blob row deleted but uncommitted (a row lock on PostgreSQL, the one write lock on SQLite). A
writer's upsert of that row waits for such a sweep to end, so the writer checks the bytes
either after the sweep has deleted them (it sees them missing and marks nothing) or before a
sweep can delete the row (the sweep's DELETE then waits for the writer and, re-reading the row
on PostgreSQL, finds it live, so it deletes nothing). Once the writer has committed, its
recording refers to the blob and the row stays live until a release stamps it, which needs
that recording gone. None of this depends on the grace period or on clocks: the grace period
only makes it rare that a writer meets bytes being swept, and leaves time to notice a
mistaken delete. Backends need nothing but a delete and a stat that see completed writes.

Why nothing leaks. A row is live only while some recording refers to it: a writer makes it
live in the transaction that adds the reference, and a release locks the row before it checks
that no reference is left, so it reads what every earlier release committed (two deletes of
the last two recordings of one blob cannot each still see the other's recording). Bytes put
for a recording that cannot take them (deleted meanwhile, empty audio) are released at once.
Only a crash (or a database failure) between a put and its transaction leaves bytes that no
row knows of.

Lock order, so PostgreSQL never deadlocks: the recording row first, then blob rows in sha256
order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, exists, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service.blobs.base import BlobError, BlobInfo, BlobStore
from service.storage.db import Database, insert_for
from service.storage.models import Blob, Recording, RecordingKey, utcnow

log = logging.getLogger("callvault.blobs")

SWEEP_BATCH = 200


class BlobReclaimed(Exception):
    """The blob's bytes were swept after they were put and before they were held."""

    def __init__(self, sha256: str) -> None:
        super().__init__(sha256)
        self.sha256 = sha256


def _referenced(sha256: str) -> ColumnElement[bool]:
    """A sealed recording refers to its blob by its key row (service/recordings/sealed.py); a
    recording without one is a plain (legacy) one, whose blob is named by its sha256."""
    sealed = exists().where(col(RecordingKey.blob_sha256) == sha256)
    plain = exists().where(
        col(Recording.sha256) == sha256, ~exists().where(col(RecordingKey.recording_id) == col(Recording.id))
    )
    return or_(sealed, plain)


async def hold(session: AsyncSession, blobs: BlobStore, blob: BlobInfo) -> None:
    """Mark the blob live in the caller's transaction (which has already written the recording
    row that refers to it), and check that its bytes are there while holding the row."""
    await hold_all(session, blobs, [blob])


async def hold_all(session: AsyncSession, blobs: BlobStore, held: Sequence[BlobInfo]) -> None:
    """`hold` of several blobs: every row made live in one statement (in sha256 order, the
    lock order), then every blob's bytes checked at once, still holding the rows; the first
    missing raises BlobReclaimed."""
    ordered = sorted({blob.sha256: blob for blob in held}.values(), key=lambda blob: blob.sha256)
    if not ordered:
        return
    dialect = session.get_bind().dialect.name
    rows = [{"sha256": b.sha256, "size": b.size, "unreferenced_since": None} for b in ordered]
    upsert = insert_for(dialect, Blob).values(rows)
    await session.exec(
        upsert.on_conflict_do_update(
            index_elements=["sha256"], set_={"size": upsert.excluded.size, "unreferenced_since": None}
        )
    )
    found = await asyncio.gather(*(blobs.stat(blob.sha256) for blob in ordered))
    for blob, info in zip(ordered, found, strict=True):
        if info is None or info.size != blob.size:
            raise BlobReclaimed(blob.sha256)


async def release(session: AsyncSession, sha256: str, size: int, now: datetime | None = None) -> None:
    """In the caller's transaction (which has already removed its recording's reference):
    stamp the blob unreferenced if no recording refers to it any more."""
    # FOR UPDATE is PostgreSQL's row lock; SQLite renders none, and needs none: the caller's
    # write already holds the database's one write lock.
    lock = select(Blob.sha256, Blob.unreferenced_since).where(col(Blob.sha256) == sha256).with_for_update()
    row = (await session.exec(lock)).first()
    # A statement of its own, after the lock: it sees every release committed before ours.
    if (await session.exec(select(_referenced(sha256)))).one():
        return
    stamp = now or utcnow()
    if row is None:  # bytes no row knew of (put, then their recording went): adopt them
        dialect = session.get_bind().dialect.name
        adopt = insert_for(dialect, Blob).values(sha256=sha256, size=size, unreferenced_since=stamp)
        await session.exec(adopt.on_conflict_do_nothing(index_elements=["sha256"]))
    elif row[1] is None:
        await session.exec(update(Blob).where(col(Blob.sha256) == sha256).values(unreferenced_since=stamp))


async def release_now(db: Database, blob: BlobInfo) -> None:
    """Release bytes that were put but that no recording took."""
    async with db.session() as session:
        await release(session, blob.sha256, blob.size)
        await session.commit()


class BlobSweeper:
    """Deletes the bytes of blobs unreferenced for longer than `grace_seconds`. Any number of
    sweepers (processes, replicas, the CLI) may run at once: each blob goes in a conditional
    DELETE that only one of them wins."""

    def __init__(self, db: Database, blobs: BlobStore, *, grace_seconds: float) -> None:
        if grace_seconds < 0:
            raise ValueError("grace_seconds must not be negative")
        self._db = db
        self._blobs = blobs
        self.grace_seconds = grace_seconds

    async def sweep(self) -> int:
        """One pass over the blobs due; returns how many were deleted."""
        cutoff = utcnow() - timedelta(seconds=self.grace_seconds)
        swept, after = 0, ""
        while True:
            async with self._db.session() as session:
                due = select(Blob.sha256).where(
                    col(Blob.unreferenced_since) <= cutoff, col(Blob.sha256) > after
                )
                batch = list((await session.exec(due.order_by(col(Blob.sha256)).limit(SWEEP_BATCH))).all())
            if not batch:
                return swept
            for sha256 in batch:
                try:
                    swept += await self._reclaim(sha256, cutoff)
                except BlobError:
                    log.warning(
                        "could not delete a blob; the next sweep tries again", extra={"sha256": sha256}
                    )
            after = batch[-1]

    async def _reclaim(self, sha256: str, cutoff: datetime) -> int:
        async with self._db.session() as session:
            gone = await session.exec(
                delete(Blob).where(
                    col(Blob.sha256) == sha256,
                    col(Blob.unreferenced_since) <= cutoff,
                    ~_referenced(sha256),
                )
            )
            if gone.rowcount != 1:
                return 0  # taken again, or another sweeper won
            # Still inside the transaction: a writer of this blob waits until the bytes are gone.
            await self._blobs.delete(sha256)
            await session.commit()
        return 1

    async def run(self, every_seconds: float) -> None:
        while True:
            try:
                swept = await self.sweep()
                if swept:
                    log.info("blob sweep", extra={"blobs": swept})
            except Exception:
                log.exception("blob sweep failed; will retry")
            await asyncio.sleep(every_seconds)
