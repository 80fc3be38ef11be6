"""Recordings at rest: each recording's audio sealed under a data key of its own.

Envelope encryption. A recording's audio is stored as ``service.audiocrypt.stream``
ciphertext under a random 256-bit data key; the data key is sealed by the master keyring
(``Keyring.seal``, bound to business and recording) in its ``RecordingKey`` row, with the
blob the ciphertext lives in. So:

- rotating master keys re-wraps the data keys (``rewrap_all``); the audio is never rewritten;
- deleting a recording deletes its key row first, in the transaction that deletes the row
  (``forget``): a copy of the blob left anywhere (a backup, a bucket version, a crashed
  multipart upload) no longer opens;
- there is no dedupe across recordings: equal audio makes distinct ciphertexts, each blob
  referenced by one key row (blobrefs.py counts key rows as references; a recording without
  a key row is a legacy plain one, whose blob is named by its sha256).

``Recording.sha256`` and ``size`` stay those of the plaintext (the ETag, the Range
arithmetic). Recordings stored before sealing are served plain until ``seal_legacy``
(``callvault recordings seal``) seals them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, exists, update
from sqlalchemy import delete as sa_delete
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from service import metrics
from service.audiocrypt.stream import (
    FORMAT_VERSION,
    HEADER_SIZE,
    SEGMENT_SIZE,
    TAG_SIZE,
    SealedAudioError,
    SegmentOpener,
    associated_data,
    decrypt_segments,
    encrypt_stream,
    new_data_key,
)
from service.blobs.base import BlobError, BlobInfo, BlobStore, BlobTooLarge, BlobVerificationFailed
from service.errors import AudioSealBroken
from service.recordings.blobrefs import BlobReclaimed, hold, hold_all, release, release_now
from service.sealing import Keyring, SealContext, Sealer, SealingError
from service.storage.db import Database, insert_for
from service.storage.models import Recording, RecordingKey, RecordingStatus

log = logging.getLogger("callvault.recordings")

PLAIN_READ_CHUNK = 2 * 1024 * 1024  # what `recordings seal` reads of a plain blob at a time


def key_context(business_id: str, recording_id: str) -> SealContext:
    return SealContext(
        purpose="recording-audio", business_id=business_id, row_id=recording_id, field="data-key"
    )


@dataclass(frozen=True, slots=True)
class SealedPut:
    """Audio sealed into the blob store, not yet taken by its recording (``keep``)."""

    business_id: str
    recording_id: str
    plain: BlobInfo  # sha256 and size of the audio itself
    blob: BlobInfo  # the ciphertext's blob
    wrapped: bytes
    key_id: int


class _Plain:
    """The plaintext on its way to the cipher, hashed and counted, with the blob store's own
    checks: raising here makes the put remove what it wrote."""

    def __init__(self, expected_sha256: str | None, expected_size: int | None, max_size: int | None) -> None:
        self._hasher = hashlib.sha256()
        self._expected = (expected_sha256, expected_size, max_size)
        self.size = 0

    @property
    def sha256(self) -> str:
        return self._hasher.hexdigest()

    async def stream(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        expected_sha256, expected_size, max_size = self._expected
        async for chunk in chunks:
            if not chunk:
                continue
            self.size += len(chunk)
            if max_size is not None and self.size > max_size:
                raise BlobTooLarge(f"blob exceeds {max_size} bytes")
            if expected_size is not None and self.size > expected_size:
                raise BlobVerificationFailed(f"more than the expected {expected_size} bytes")
            self._hasher.update(chunk)
            yield chunk
        if expected_size is not None and self.size != expected_size:
            raise BlobVerificationFailed(f"got {self.size} bytes, expected {expected_size}")
        if expected_sha256 is not None and self.sha256 != expected_sha256:
            raise BlobVerificationFailed(f"sha256 is {self.sha256}, expected {expected_sha256}")


AHEAD = 4  # sealed segments (1 MiB) produced ahead of the blob store's writes


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


async def _ahead(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """``chunks`` run in a task of their own, ``AHEAD`` items ahead of the consumer, so the
    plaintext's hashing and sealing (here) overlap the blob store hashing and writing the
    ciphertext (in its worker thread): a put costs about what a plain put does, not twice."""
    queue: asyncio.Queue[bytes | _Failed | None] = asyncio.Queue(maxsize=AHEAD)

    async def produce() -> None:
        try:
            async for chunk in chunks:
                await queue.put(chunk)
        except Exception as error:  # the consumer raises it, unchanged
            await queue.put(_Failed(error))
            return
        await queue.put(None)

    task = asyncio.create_task(produce())
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


class SealedAudio:
    """Puts, keeps, opens and forgets sealed audio; one per process, shared by every path."""

    def __init__(self, db: Database, blobs: BlobStore, keyring: Sealer) -> None:
        self._db = db
        self._blobs = blobs
        self._keyring = keyring

    @property
    def blobs(self) -> BlobStore:
        return self._blobs

    # -- writing -------------------------------------------------------------------------

    async def put(
        self,
        business_id: str,
        recording_id: str,
        chunks: AsyncIterable[bytes],
        *,
        expected_sha256: str | None = None,
        expected_size: int | None = None,
        max_size: int | None = None,
    ) -> SealedPut:
        """Seal ``chunks`` under a fresh data key into the blob store. The checks of
        ``BlobStore.put`` apply to the plaintext, with its exceptions."""
        data_key = new_data_key()
        plain = _Plain(expected_sha256, expected_size, max_size)
        aad = associated_data(business_id, recording_id)
        blob = await self._blobs.put(_ahead(encrypt_stream(data_key, aad, plain.stream(chunks))))
        ctx = key_context(business_id, recording_id)
        wrapped = self._keyring.seal(base64.b64encode(data_key).decode("ascii"), ctx)
        return SealedPut(
            business_id=business_id,
            recording_id=recording_id,
            plain=BlobInfo(sha256=plain.sha256, size=plain.size),
            blob=blob,
            wrapped=wrapped,
            key_id=self._keyring.key_id_of(wrapped),
        )

    @staticmethod
    async def _record_keys(session: AsyncSession, puts: Sequence[SealedPut]) -> None:
        """Each put's data key and blob on its recording (replacing any earlier ones), in one
        statement."""
        rows = [
            {
                "recording_id": put.recording_id,
                "business_id": put.business_id,
                "key_id": put.key_id,
                "wrapped": put.wrapped,
                "format": FORMAT_VERSION,
                "blob_sha256": put.blob.sha256,
                "blob_size": put.blob.size,
            }
            for put in puts
        ]
        upsert = insert_for(session.get_bind().dialect.name, RecordingKey).values(rows)
        replaced = {name: upsert.excluded[name] for name in rows[0] if name != "recording_id"}
        await session.exec(upsert.on_conflict_do_update(index_elements=["recording_id"], set_=replaced))

    async def keep(self, session: AsyncSession, put: SealedPut, replaced: BlobInfo | None = None) -> None:
        """In the caller's transaction, which holds the recording row: record the data key and
        the blob (replacing any earlier ones), then hold the new blob and release ``replaced``
        (the one the recording used before), in the lock order of blobrefs.py."""
        await self._record_keys(session, [put])
        others = (
            {replaced.sha256: replaced} if replaced is not None and replaced.sha256 != put.blob.sha256 else {}
        )
        for sha in sorted({put.blob.sha256, *others}):
            if sha == put.blob.sha256:
                await hold(session, self._blobs, put.blob)
            else:
                await release(session, sha, others[sha].size)

    async def keep_all(self, session: AsyncSession, puts: Sequence[SealedPut]) -> None:
        """`keep` of recordings that had no audio before (a pull's batch): every data key in
        one statement, then every blob held at once (`hold_all`)."""
        if puts:
            await self._record_keys(session, puts)
            await hold_all(session, self._blobs, [put.blob for put in puts])

    async def discard(self, put: SealedPut) -> None:
        """A put that no recording took: its blob is released at once."""
        await release_now(self._db, put.blob)

    @staticmethod
    async def blob_of(session: AsyncSession, row: Recording) -> BlobInfo | None:
        """The blob a recording's audio is in now: its sealed blob, or (legacy) its plain one."""
        key = await session.get(RecordingKey, row.id, populate_existing=True)
        if key is not None:
            return BlobInfo(sha256=key.blob_sha256, size=key.blob_size)
        if row.sha256 is None:
            return None
        return BlobInfo(sha256=row.sha256, size=row.size or 0)

    @classmethod
    async def forget(cls, session: AsyncSession, row: Recording) -> BlobInfo | None:
        """Crypto-shred: delete the recording's data key, in the caller's transaction (which
        holds the row and deletes it next). Answers the blob to release once the row is gone."""
        blob = await cls.blob_of(session, row)
        await session.exec(sa_delete(RecordingKey).where(col(RecordingKey.recording_id) == row.id))
        return blob

    # -- reading -------------------------------------------------------------------------

    async def open(
        self, row: Recording, key: RecordingKey | None, start: int, end: int, *, chunk_size: int
    ) -> AsyncIterator[bytes]:
        """Plaintext [start, end) of a stored recording. A sealed one fetches only the segments
        the range touches, and the first is decrypted before this returns, so a recording
        that does not open is answered with an error rather than a broken stream."""
        assert row.sha256 is not None and row.size is not None
        if key is None:  # stored before sealing: served plain until `recordings seal`
            return await self._blobs.open(row.sha256, start=start, end=end, chunk_size=chunk_size)
        if start >= end:
            return _empty()
        # Whole segments per blob read, about chunk_size of them: the caller's pace, flat memory.
        per_read = max(1, chunk_size // (SEGMENT_SIZE + TAG_SIZE)) * (SEGMENT_SIZE + TAG_SIZE)
        try:
            data_key = self._data_key(key)
            aad = associated_data(key.business_id, row.id)
            # The header, then whole segments per read from the first one the range touches.
            header = b"".join([c async for c in await self._blobs.open(key.blob_sha256, end=HEADER_SIZE)])
            opener = SegmentOpener(data_key, aad, header, row.size)
            self._check_size(opener, key)
            _, _, lo, hi = opener.layout.span(start, end)
            rest = await self._blobs.open(key.blob_sha256, start=lo, end=hi, chunk_size=per_read)
            plain = _counted(opener, decrypt_segments(opener, rest, start, end), row.id)
            first = await anext(plain)
        except (SealedAudioError, SealingError, ValueError) as exc:
            _log_broken(row.id, exc)
            raise AudioSealBroken() from None
        return _Prefixed(first, plain)

    def _data_key(self, key: RecordingKey) -> bytes:
        text = self._keyring.open(key.wrapped, key_context(key.business_id, key.recording_id))
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise SealedAudioError("the wrapped data key is not a key") from None

    @staticmethod
    def _check_size(opener: SegmentOpener, key: RecordingKey) -> None:
        if opener.layout.sealed_size != key.blob_size:
            raise SealedAudioError(
                f"the sealed blob is recorded as {key.blob_size} bytes, its header and the "
                f"recording's size make {opener.layout.sealed_size}"
            )


def _log_broken(recording_id: str, exc: BaseException) -> None:
    # The messages name segments, sizes and key ids: never key bytes or audio.
    log.error("sealed audio does not open", extra={"recording_id": recording_id, "error": str(exc)})


async def _counted(
    opener: SegmentOpener, plain: AsyncIterator[bytes], recording_id: str
) -> AsyncGenerator[bytes, None]:
    """Count decrypted segments (the bench checks a Range reads at most two), and turn a
    segment that fails mid-stream into the domain error: the stream stops, nothing wrong is sent."""
    try:
        async for chunk in plain:
            yield chunk
    except SealedAudioError as exc:
        _log_broken(recording_id, exc)
        raise AudioSealBroken() from None
    finally:
        metrics.AUDIO_SEGMENTS_DECRYPTED.inc(opener.decrypted)


class _Prefixed:
    """``first``, then the rest of a stream already started. Closing it closes that stream
    (and the blob it reads) even when it was never iterated, which an async generator not
    yet started would not do."""

    def __init__(self, first: bytes, rest: AsyncGenerator[bytes, None]) -> None:
        self._first: bytes | None = first
        self._rest = rest

    def __aiter__(self) -> _Prefixed:
        return self

    async def __anext__(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return await anext(self._rest)

    async def aclose(self) -> None:
        self._first = None
        await self._rest.aclose()


async def read_row_and_key(
    session: AsyncSession, business_id: str, recording_id: str, *also: Any
) -> tuple[Recording, RecordingKey | None] | None:
    """A recording and its data key as one statement sees them (never a new key with an old size)."""
    query = (
        select(Recording, RecordingKey)
        .outerjoin(RecordingKey, col(RecordingKey.recording_id) == col(Recording.id))
        .where(col(Recording.id) == recording_id, col(Recording.business_id) == business_id, *also)
    )
    found = (await session.exec(query)).first()
    return None if found is None else (found[0], found[1])


# -- rotation --------------------------------------------------------------------------------

_TABLE = RecordingKey.__table__  # type: ignore[attr-defined]
# Write the new wrap only where the row still holds the one read: compare-and-set.
_SWAP = (
    update(_TABLE)
    .where(_TABLE.c.recording_id == bindparam("row"), _TABLE.c.wrapped == bindparam("read"))
    .values(wrapped=bindparam("new"), key_id=bindparam("key"))
)


async def rewrap_all(db: Database, keyring: Keyring, *, batch: int = 200) -> int:
    """Re-wrap every data key not under the primary master key; the audio is not touched.
    Walks the keys in recording order, a committed batch at a time, so an interrupted run
    is simply run again. Each write is a compare-and-set on the wrap it read: an upload that
    replaced the key meanwhile is never undone (it is read again, and may need nothing)."""
    done, after = 0, ""
    primary = keyring.primary_id
    while True:
        async with db.session() as session:
            rows = list(
                (
                    await session.exec(
                        select(RecordingKey.recording_id, RecordingKey.business_id, RecordingKey.wrapped)
                        .where(col(RecordingKey.key_id) != primary, col(RecordingKey.recording_id) > after)
                        .order_by(col(RecordingKey.recording_id))
                        .limit(batch)
                    )
                ).all()
            )
            if not rows:
                return done
            connection = await session.connection()
            for recording_id, business_id, read in rows:
                wrapped: bytes | None = read
                while wrapped is not None and keyring.needs_reseal(wrapped):
                    new = keyring.reseal(wrapped, key_context(business_id, recording_id))
                    swap = {"row": recording_id, "read": wrapped, "new": new, "key": keyring.key_id_of(new)}
                    if (await connection.execute(_SWAP, swap)).rowcount == 1:
                        done += 1
                        break
                    wrapped = (
                        await session.exec(
                            select(RecordingKey.wrapped).where(col(RecordingKey.recording_id) == recording_id)
                        )
                    ).first()
            await session.commit()
            after = rows[-1][0]


# -- sealing what was stored plain -------------------------------------------------------


async def seal_legacy(
    db: Database, sealed: SealedAudio, *, say: Callable[[str], None], batch: int = 50
) -> int:
    """Seal every recording stored before sealing (``callvault recordings seal``); answers
    how many. Resumable and safe beside running servers: a recording is taken only if, under
    its row lock, it still holds the plain audio that was sealed and has no key yet; one
    deleted, replaced or sealed meanwhile keeps what it has and the new blob is released."""
    done, after, seen = 0, "", 0
    while True:
        async with db.session() as session:
            query = (
                select(Recording.id, Recording.business_id, Recording.sha256, Recording.size)
                .where(
                    col(Recording.processing_status) == RecordingStatus.COMPLETED,
                    col(Recording.sha256).is_not(None),
                    col(Recording.id) > after,
                    ~exists().where(col(RecordingKey.recording_id) == col(Recording.id)),
                )
                .order_by(col(Recording.id))
                .limit(batch)
            )
            rows = list((await session.exec(query)).all())
        if not rows:
            say(f"sealed {done} recordings; none is left plain")
            return done
        for recording_id, business_id, sha256, size in rows:
            assert sha256 is not None and size is not None
            try:
                done += await _seal_one(db, sealed, recording_id, business_id, BlobInfo(sha256, size))
            except (BlobError, BlobReclaimed) as exc:
                say(f"recording {recording_id}: left plain ({type(exc).__name__}); run again later")
        seen += len(rows)
        after = rows[-1][0]
        say(f"looked at {seen} plain recordings, sealed {done}")


async def _seal_one(
    db: Database, sealed: SealedAudio, recording_id: str, business_id: str, plain: BlobInfo
) -> int:
    source = await sealed.blobs.open(plain.sha256, chunk_size=PLAIN_READ_CHUNK)
    put = await sealed.put(
        business_id, recording_id, source, expected_sha256=plain.sha256, expected_size=plain.size
    )
    async with db.session() as session:
        # The row lock, and only if the row still holds this plain audio.
        still = await session.exec(
            update(Recording)
            .where(
                col(Recording.id) == recording_id,
                col(Recording.sha256) == plain.sha256,
                col(Recording.size) == plain.size,
                col(Recording.processing_status) == RecordingStatus.COMPLETED,
            )
            .values(size=col(Recording.size))
        )
        # A statement of its own, after the lock: it sees a key an upload committed meanwhile.
        keyed = (
            await session.exec(select(exists().where(col(RecordingKey.recording_id) == recording_id)))
        ).one()
        if still.rowcount != 1 or keyed:
            await session.rollback()
            await sealed.discard(put)
            return 0
        await sealed.keep(session, put, replaced=plain)
        await session.commit()
    return 1
