"""Deleting recordings never frees audio another stored recording still uses.

Many tasks delete recordings and re-ingest identical bytes at once while sweepers with no
grace period free what is unreferenced, on both databases and both blob backends: every
`stored` recording downloads byte-identical, and the bytes nothing uses are freed.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

import pytest
from sqlmodel import col, select

from service.admin import Admin
from service.errors import AudioReclaimed
from service.recordings.blobrefs import BlobSweeper
from service.recordings.store import NewUpload, RecordingStore
from service.storage.db import Database
from service.storage.migrate import upgrade
from service.storage.models import Blob, Recording
from tests.support.blob_backends import Backend, source

pytest_plugins = ["tests.support.blob_backends"]

DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
# Contents shared by a few tasks each: a task deleting the last recording of some bytes races
# another task re-ingesting the same bytes.
PAYLOADS = [hashlib.sha256(b"%d" % i).digest() * (300 + i) for i in range(4)]
TASKS_PER_PAYLOAD = 3


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
    store = RecordingStore(db, blob_backend.store, phone_region="TH", max_bytes=1024 * 1024)
    sweeper = BlobSweeper(db, blob_backend.store, grace_seconds=0)
    yield Env(db, store, sweeper, blob_backend, business)
    await db.dispose()


async def stored_rows(env: Env) -> list[Recording]:
    async with env.db.session() as session:
        query = select(Recording).where(col(Recording.processing_status) == "stored")
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
        await asyncio.sleep(0.01)  # SQLite's one writer must not be starved by sweeps
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


async def assert_every_stored_readable(env: Env) -> None:
    for row in await stored_rows(env):
        assert row.sha256 is not None
        data = await download(env, row.id)
        assert hashlib.sha256(data).hexdigest() == row.sha256
        assert data in PAYLOADS


async def test_deletes_racing_identical_uploads_never_free_used_audio(env: Env) -> None:
    done = asyncio.Event()
    sweepers = [asyncio.create_task(sweep_until(env, done)) for _ in range(2)]
    tasks = [churn(env, data, rounds=30) for data in PAYLOADS for _ in range(TASKS_PER_PAYLOAD)]
    try:
        await asyncio.gather(*tasks)
    finally:
        done.set()
        swept = sum(await asyncio.gather(*sweepers))
    assert swept > 0, "the sweepers had unreferenced blobs to free"
    rows = await stored_rows(env)
    assert len(rows) == len(tasks)
    await assert_every_stored_readable(env)

    # Nothing leaks: once the last recordings go, a sweep frees every byte.
    await env.backend.assert_holds(*{row.sha256 for row in rows if row.sha256})
    await env.store.delete_many(env.business_id, [row.id for row in rows])
    await env.backend.assert_holds(*{row.sha256 for row in rows if row.sha256})  # only released
    await env.sweeper.sweep()
    await env.backend.assert_nothing_left()
    async with env.db.session() as session:
        assert (await session.exec(select(Blob))).all() == []
