"""Deleting recordings never frees audio another stored recording still uses.

Many tasks delete recordings and re-ingest identical bytes at once while sweepers with no
grace period free what is unreferenced, on both databases and both blob backends: every
`stored` recording downloads byte-identical, and the bytes nothing uses are freed.

Sealed audio is one blob per recording (its key row refers to it); plain audio stored before
sealing may still be one blob shared by recordings with the same bytes (`legacy` seeds it).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from service.admin import Admin
from service.blobs.base import BlobInfo, BlobStore
from service.config import Settings, SyncSettings
from service.connectors.http import NetworkPolicy
from service.errors import AudioReclaimed, AudioRejected, RecordingNotFound
from service.processes import ProcessRegistry
from service.providers.store import ProviderStore
from service.recordings.blobrefs import BlobSweeper, hold
from service.recordings.store import NewUpload, RecordingStore
from service.sealing import Keyring, generate_key
from service.storage.db import Database
from service.storage.migrate import upgrade
from service.storage.models import Blob as BlobRow
from service.storage.models import Recording, RecordingKey
from service.sync.scheduler import Puller
from tests.fakes.httpserver import Blob
from tests.fakes.kazoo import FakeKazoo
from tests.support.blob_backends import Backend, source

pytest_plugins = ["tests.support.blob_backends"]

DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
# Contents shared by a few tasks each: a task deleting the last recording of some bytes races
# another task re-ingesting the same bytes.
AUDIO = [Blob(seed=4200 + i, size=9000 + i) for i in range(4)]
PAYLOADS = [audio.read() for audio in AUDIO]
PULLED_CALLS = 24
TASKS_PER_PAYLOAD = 2
POLICY = NetworkPolicy(allow_private=True, connect_timeout=2.0, read_timeout=1.0, total_timeout=5.0)
KEYRING = Keyring({1: generate_key()}, primary_id=1)
SYNC = replace(SyncSettings(), initial_lookback_days=1, retry_base_seconds=0.01, retry_cap_seconds=0.1)


@dataclass
class Env:
    db: Database
    store: RecordingStore
    sweeper: BlobSweeper
    backend: Backend
    business_id: str


@pytest.fixture(params=DATABASES)
async def env(request: pytest.FixtureRequest, blob_backend: Backend) -> AsyncIterator[Env]:
    make_url = cast(Callable[[str], str], request.getfixturevalue("database_url_factory"))
    url = make_url(request.param)
    upgrade(url)
    db = Database(url)
    admin = Admin(db)
    account = await admin.create_account("Acme")
    business = await admin.create_business(account, "Acme", slug=f"acme-{uuid.uuid4().hex[:12]}")
    store = RecordingStore(db, blob_backend.store, phone_region="TH", max_bytes=1024 * 1024, keyring=KEYRING)
    sweeper = BlobSweeper(db, blob_backend.store, grace_seconds=0)
    yield Env(db, store, sweeper, blob_backend, business)
    await db.dispose()


async def stored_rows(env: Env) -> list[Recording]:
    async with env.db.session() as session:
        query = select(Recording).where(col(Recording.processing_status) == "completed")
        return list((await session.exec(query)).all())


async def upload(env: Env, data: bytes) -> str:
    """Register and upload, sending again when told the reused bytes were being freed."""
    row, _ = await env.store.register_upload(
        env.business_id,
        NewUpload(data_id=uuid.uuid4().hex, call_at=datetime.now(UTC), direction="in"),
    )
    for _ in range(20):
        try:
            await env.store.store_upload(env.business_id, row.id, source(data))
            return row.id
        except AudioReclaimed:
            continue
    raise AssertionError("an upload lost to the sweeper 20 times in a row")


async def sweep_until(env: Env, done: asyncio.Event) -> int:
    swept = 0
    while not done.is_set():
        swept += await env.sweeper.sweep()
        await asyncio.sleep(0.1)  # SQLite's one writer must not be starved by sweeps
    return swept


async def download(env: Env, recording_id: str) -> bytes:
    _, _, chunks = await env.store.open_audio(env.business_id, recording_id, None)
    return b"".join([chunk async for chunk in chunks])


async def churn(env: Env, data: bytes, rounds: int) -> None:
    """Upload `data`, read it back, and delete that recording again, `rounds` times; keep the
    last one. A later put of the same bytes would heal a freed blob, so each is read at once."""
    for n in range(rounds):
        recording_id = await upload(env, data)
        assert await download(env, recording_id) == data
        if n < rounds - 1:
            await env.store.delete(env.business_id, recording_id)


async def blob_of(env: Env, recording_id: str) -> str:
    """The blob a sealed recording's audio is in."""
    async with env.db.session() as session:
        key = await session.get(RecordingKey, recording_id)
    assert key is not None, "a stored recording is sealed"
    return key.blob_sha256


async def legacy(env: Env, data: bytes) -> str:
    """A recording stored the way callvault stored audio before sealing: plain, content-addressed."""
    row, _ = await env.store.register_upload(
        env.business_id, NewUpload(data_id=uuid.uuid4().hex, call_at=datetime.now(UTC), direction="in")
    )
    blob = await env.backend.store.put(source(data))
    async with env.db.session() as session:
        await session.exec(
            update(Recording)
            .where(col(Recording.id) == row.id)
            .values(sha256=blob.sha256, size=blob.size, processing_status="completed")
        )
        await hold(session, env.backend.store, blob)
        await session.commit()
    return row.id


async def assert_every_stored_readable(env: Env) -> None:
    for row in await stored_rows(env):
        assert row.sha256 is not None
        data = await download(env, row.id)
        assert hashlib.sha256(data).hexdigest() == row.sha256
        assert data in PAYLOADS


async def kazoo_provider(env: Env, kazoo: FakeKazoo) -> tuple[ProviderStore, str]:
    providers = ProviderStore(env.db, KEYRING, POLICY)
    provider_id = await providers.create(
        env.business_id,
        kind="kazoo",
        name="Kazoo PBX",
        config={"baseUrl": kazoo.base_url, "accountId": kazoo.account_id, "apiKey": kazoo.api_key},
        is_active=True,
    )
    return providers, provider_id


async def pull_and_reap(env: Env, kazoo: FakeKazoo, settings: Settings) -> None:
    """Pull calls whose audio is all PAYLOADS[0], and read and delete each as soon as it is
    stored, so that audio's references come and go under the pull too."""
    start = datetime.now(UTC) - timedelta(hours=2)
    with kazoo.lock:
        for n in range(PULLED_CALLS):
            call = kazoo.add_recording(start + timedelta(minutes=n), audio_size=AUDIO[0].size)
            kazoo.recordings[call.id] = replace(call, audio=AUDIO[0])
    providers, provider_id = await kazoo_provider(env, kazoo)
    pulling = asyncio.create_task(
        (await puller(env, providers, env.backend.store, settings)).pull(provider_id)
    )
    reaped = 0
    try:
        while True:
            finished = pulling.done()
            async with env.db.session() as session:
                query = select(Recording.id).where(
                    col(Recording.origin) == provider_id, col(Recording.processing_status) == "completed"
                )
                ready = list((await session.exec(query)).all())
            for recording_id in ready:
                assert await download(env, recording_id) == PAYLOADS[0]
                await env.store.delete(env.business_id, recording_id)
                reaped += 1
            if finished:
                break
            await asyncio.sleep(0.005)
    finally:
        if not pulling.done():  # a failed check: stop the pull with the test
            pulling.cancel()
    job = await pulling
    assert (job.state, job.failures, job.recordings_stored) == ("succeeded", 0, PULLED_CALLS)
    assert reaped == PULLED_CALLS


async def test_deletes_racing_identical_uploads_never_free_used_audio(env: Env, tmp_path: Path) -> None:
    done = asyncio.Event()
    sweepers = [asyncio.create_task(sweep_until(env, done)) for _ in range(2)]
    # SQLite's writers poll for its one write lock: with a blob per sealed recording (so a
    # file written and swept per round) twice the writers starve one past its busy timeout.
    per_payload = 1 if env.db.dialect == "sqlite" else TASKS_PER_PAYLOAD
    tasks = [churn(env, data, rounds=25) for data in PAYLOADS for _ in range(per_payload)]
    settings = Settings(data_dir=tmp_path, network=POLICY, sync=SYNC)
    try:
        with FakeKazoo() as kazoo:
            await asyncio.gather(pull_and_reap(env, kazoo, settings), *tasks)
            assert kazoo.handler_errors == []
    finally:
        done.set()
        swept = sum(await asyncio.gather(*sweepers))
    assert swept > 0, "the sweepers had unreferenced blobs to free"
    rows = await stored_rows(env)
    assert len(rows) == len(tasks)
    await assert_every_stored_readable(env)

    # A blob is live exactly while a recording uses it, or its bytes could never be freed.
    live = {sha for sha, blob in (await blob_rows(env)).items() if blob.unreferenced_since is None}
    used = {await blob_of(env, row.id) for row in rows}
    assert live == used and len(used) == len(rows)  # sealed: one blob per recording

    # Nothing leaks: a sweep frees what was released last, and once the last recordings go,
    # every byte.
    await env.sweeper.sweep()
    await env.backend.assert_holds(*used)
    await env.store.delete_many(env.business_id, [row.id for row in rows])
    await env.backend.assert_holds(*used)  # only released
    await env.sweeper.sweep()
    await env.backend.assert_nothing_left()
    async with env.db.session() as session:
        assert (await session.exec(select(BlobRow))).all() == []


async def blob_rows(env: Env) -> dict[str, BlobRow]:
    async with env.db.session() as session:
        return {row.sha256: row for row in (await session.exec(select(BlobRow))).all()}


async def test_released_audio_waits_out_the_grace_period(env: Env) -> None:
    data = PAYLOADS[0]
    first, second = await upload(env, data), await upload(env, data)
    first_blob, second_blob = await blob_of(env, first), await blob_of(env, second)
    assert first_blob != second_blob  # equal audio, distinct ciphertexts: no dedupe
    await env.store.delete(env.business_id, first)
    assert (await blob_rows(env))[first_blob].unreferenced_since is not None
    assert (await blob_rows(env))[second_blob].unreferenced_since is None

    patient = BlobSweeper(env.db, env.backend.store, grace_seconds=3600)
    assert await patient.sweep() == 0
    await env.backend.assert_holds(first_blob, second_blob)
    assert await env.sweeper.sweep() == 1
    await env.backend.assert_holds(second_blob)
    assert await download(env, second) == data

    await env.store.delete(env.business_id, second)
    assert await patient.sweep() == 0
    assert await env.sweeper.sweep() == 1
    await env.backend.assert_nothing_left()
    assert await blob_rows(env) == {}


async def test_shared_plain_audio_waits_for_its_last_recording(env: Env) -> None:
    """Plain audio stored before sealing is shared by equal recordings: freed after the last."""
    data = PAYLOADS[0]
    sha = hashlib.sha256(data).hexdigest()
    first, second = await legacy(env, data), await legacy(env, data)
    await env.store.delete(env.business_id, first)
    assert (await blob_rows(env))[sha].unreferenced_since is None  # the second still uses it
    assert await download(env, second) == data
    await env.store.delete(env.business_id, second)
    assert (await blob_rows(env))[sha].unreferenced_since is not None
    assert await env.sweeper.sweep() == 1
    await env.backend.assert_nothing_left()


async def test_replacing_audio_releases_the_old_audio(env: Env) -> None:
    old, new = PAYLOADS[0], PAYLOADS[1]
    recording_id = await upload(env, old)
    old_blob = await blob_of(env, recording_id)
    await env.store.store_upload(env.business_id, recording_id, source(new))
    new_blob = await blob_of(env, recording_id)
    rows = await blob_rows(env)
    assert rows[old_blob].unreferenced_since is not None
    assert rows[new_blob].unreferenced_since is None
    assert await env.sweeper.sweep() == 1
    await env.backend.assert_holds(new_blob)
    assert await download(env, recording_id) == new


async def test_replacing_plain_audio_releases_it(env: Env) -> None:
    old, new = PAYLOADS[0], PAYLOADS[1]
    recording_id = await legacy(env, old)
    await env.store.store_upload(env.business_id, recording_id, source(new))
    rows = await blob_rows(env)
    assert rows[hashlib.sha256(old).hexdigest()].unreferenced_since is not None
    assert await env.sweeper.sweep() == 1
    await env.backend.assert_holds(await blob_of(env, recording_id))
    assert await download(env, recording_id) == new


async def test_audio_nobody_took_is_released(env: Env) -> None:
    """Audio of a recording deleted while it streamed in, and empty audio, are freed too."""
    row, _ = await env.store.register_upload(
        env.business_id, NewUpload(data_id="gone", call_at=datetime.now(UTC), direction="in")
    )

    async def deleted_midway() -> AsyncIterator[bytes]:
        yield PAYLOADS[0][:100]
        await env.store.delete(env.business_id, row.id)
        yield PAYLOADS[0][100:]

    with pytest.raises(RecordingNotFound):
        await env.store.store_upload(env.business_id, row.id, deleted_midway())
    empty, _ = await env.store.register_upload(
        env.business_id, NewUpload(data_id="empty", call_at=datetime.now(UTC), direction="in")
    )
    with pytest.raises(AudioRejected):
        await env.store.store_upload(env.business_id, empty.id, source())
    assert all(row.unreferenced_since is not None for row in (await blob_rows(env)).values())
    assert await env.sweeper.sweep() == 2
    await env.backend.assert_nothing_left()


class SweepsAfterPut:
    """The store under test, with a sweep right after its next put returns: the moment a
    writer has found its bytes stored but not yet made the blob live."""

    def __init__(self, inner: BlobStore, sweeper: BlobSweeper) -> None:
        self._inner = inner
        self._sweeper = sweeper
        self.swept: list[int] = []

    async def put(
        self,
        chunks: AsyncIterable[bytes],
        *,
        expected_sha256: str | None = None,
        expected_size: int | None = None,
        max_size: int | None = None,
    ) -> BlobInfo:
        info = await self._inner.put(
            chunks, expected_sha256=expected_sha256, expected_size=expected_size, max_size=max_size
        )
        if not self.swept:
            self.swept.append(await self._sweeper.sweep())
        return info

    async def open(
        self, sha256: str, *, start: int = 0, end: int | None = None, chunk_size: int = 256 * 1024
    ) -> AsyncIterator[bytes]:
        return await self._inner.open(sha256, start=start, end=end, chunk_size=chunk_size)

    async def stat(self, sha256: str) -> BlobInfo | None:
        return await self._inner.stat(sha256)

    async def delete(self, sha256: str) -> bool:
        return await self._inner.delete(sha256)

    async def ping(self) -> bool:
        return await self._inner.ping()


async def released(env: Env, data: bytes) -> None:
    """`data` stored once and its recording deleted: the blob is due for sweeping."""
    await env.store.delete(env.business_id, await upload(env, data))


async def test_a_sweep_between_put_and_hold_frees_only_the_released_audio(env: Env) -> None:
    """Plain audio put again was reused, and a sweep in between refused the upload; sealed
    audio is a new blob every time, so the sweep frees the released copy and nothing else."""
    data = PAYLOADS[2]
    await released(env, data)
    racing = SweepsAfterPut(env.backend.store, env.sweeper)
    store = RecordingStore(env.db, racing, phone_region="TH", max_bytes=1024 * 1024, keyring=KEYRING)
    row, _ = await store.register_upload(
        env.business_id, NewUpload(data_id="late", call_at=datetime.now(UTC), direction="in")
    )
    await store.store_upload(env.business_id, row.id, source(data))
    assert racing.swept == [1]
    assert (await store.get(env.business_id, row.id)).processing_status == "completed"
    assert await download(env, row.id) == data
    await env.backend.assert_holds(await blob_of(env, row.id))


async def puller(env: Env, providers: ProviderStore, blobs: BlobStore, settings: Settings) -> Puller:
    """A puller of a process that has said it lives, as a server's has."""
    processes = ProcessRegistry(env.db)
    await processes.beat()
    return Puller(env.db, providers, blobs, settings, processes=processes)


async def test_pull_with_a_sweep_between_put_and_hold_stores_once(env: Env, tmp_path: Path) -> None:
    with FakeKazoo() as kazoo:
        call = kazoo.add_recording(datetime.now(UTC) - timedelta(hours=1), audio_size=5000)
        data = call.audio.read()
        await released(env, data)
        providers, provider_id = await kazoo_provider(env, kazoo)
        racing = SweepsAfterPut(env.backend.store, env.sweeper)
        settings = Settings(data_dir=tmp_path, network=POLICY, sync=SYNC)
        job = await Puller(env.db, providers, racing, settings, processes=ProcessRegistry(env.db)).pull(
            provider_id
        )
        audio_fetches = [r for r in kazoo.requests if "audio" in r.headers.get("accept", "")]
        assert kazoo.handler_errors == []

    assert racing.swept == [1]
    assert (job.state, job.recordings_stored, job.failures) == ("succeeded", 1, 0)
    assert len(audio_fetches) == 1  # the sweep freed the released copy, never the new blob
    (row,) = await stored_rows(env)
    assert row.sha256 == hashlib.sha256(data).hexdigest()
    assert await download(env, row.id) == data
    assert (await blob_rows(env))[await blob_of(env, row.id)].unreferenced_since is None


async def test_concurrent_deletes_of_the_last_users_release_the_blob(env: Env) -> None:
    """Two deletes of the last two recordings of a (plain, shared) blob, at once: each must not
    count the other's recording as still there, or the blob stays live for ever (a leak)."""
    pairs = [(await legacy(env, data), await legacy(env, data)) for data in PAYLOADS]
    await asyncio.gather(*(env.store.delete(env.business_id, rec) for pair in pairs for rec in pair))
    assert [row.unreferenced_since is not None for row in (await blob_rows(env)).values()] == [True] * 4
    assert await env.sweeper.sweep() == len(PAYLOADS)
    await env.backend.assert_nothing_left()


class SweepsAfterPutNumber(SweepsAfterPut):
    """A sweep right after one put of a batch (the `number`-th), while the others are in flight."""

    def __init__(self, inner: BlobStore, sweeper: BlobSweeper, number: int) -> None:
        super().__init__(inner, sweeper)
        self._left = number

    async def put(
        self,
        chunks: AsyncIterable[bytes],
        *,
        expected_sha256: str | None = None,
        expected_size: int | None = None,
        max_size: int | None = None,
    ) -> BlobInfo:
        info = await self._inner.put(
            chunks, expected_sha256=expected_sha256, expected_size=expected_size, max_size=max_size
        )
        self._left -= 1
        if self._left == 0:
            self.swept.append(await self._sweeper.sweep())
        return info


async def test_a_sweep_in_the_middle_of_a_pulls_batch_frees_only_released_audio(
    env: Env, tmp_path: Path
) -> None:
    """Plain audio was content-addressed, so a pulled call could reuse (and lose to a sweep) a
    released copy of its own bytes; sealed audio is a new blob every time, so a sweep while a
    batch is being stored frees the released copy and nothing the batch wrote."""
    with FakeKazoo(max_page_size=100) as kazoo:
        now = datetime.now(UTC)
        calls = [
            kazoo.add_recording(now - timedelta(hours=1, minutes=i), audio_size=5000 + i) for i in range(12)
        ]
        await released(env, calls[3].audio.read())
        providers, provider_id = await kazoo_provider(env, kazoo)
        racing = SweepsAfterPutNumber(env.backend.store, env.sweeper, 4)
        settings = Settings(data_dir=tmp_path, network=POLICY, sync=SYNC)  # 8 downloads at a time
        job = await (await puller(env, providers, racing, settings)).pull(provider_id)
        fetches = Counter(
            r.path.rsplit("/", 1)[1] for r in kazoo.requests if "audio" in r.headers.get("accept", "")
        )
        assert kazoo.handler_errors == []

    assert racing.swept == [1]
    assert (job.state, job.recordings_stored, job.failures) == ("succeeded", 12, 0)
    assert fetches == Counter({c.id: 1 for c in calls})
    rows = await stored_rows(env)
    assert sorted(r.sha256 or "" for r in rows) == sorted(c.audio.sha256() for c in calls)
    by_sha = {c.audio.sha256(): c for c in calls}
    for row in rows:
        assert await download(env, row.id) == by_sha[row.sha256 or ""].audio.read()
