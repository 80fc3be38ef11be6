"""Crashes and replicas, with real processes: a server killed mid-sync and restarted
finds every recording exactly once, and the sync job it was running ends succeeded under
its own id in seconds, not after the dead holder's lease; two servers on one PostgreSQL
and one S3 store pull a provider together exactly once, and killing one mid-sync loses
nothing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import col, func, select

from service.admin import Admin
from service.auth import Scope
from service.storage.db import Database
from service.storage.models import ProviderSync, Recording, SyncJob
from tests.fakes.httpserver import Fault
from tests.fakes.kazoo import FakeKazoo
from tests.support import postgres, seaweed
from tests.support.process import ServerProcess

CALLS = 24
AUDIO = 48_000


def master_keys() -> str:
    return "1:" + base64.b64encode(os.urandom(32)).decode()


def sync_env(**extra: str) -> dict[str, str]:
    return {
        "CALLVAULT_ALLOW_PRIVATE_NETWORKS": "1",
        "CALLVAULT_SYNC_TICK_SECONDS": "0.2",
        "CALLVAULT_SYNC_LEASE_SECONDS": "3",
        "CALLVAULT_RATE_LIMIT_PER_MINUTE": "0",
        "CALLVAULT_LOG_LEVEL": "WARNING",
        **extra,
    }


def tenant_key(database_url: str) -> str:
    async def make() -> str:
        db = Database(database_url)
        try:
            admin = Admin(db)
            account = await admin.create_account("Crash Co")
            business = await admin.create_business(
                account, "Crash Co", slug=f"crash-{os.getpid()}-{time.monotonic_ns()}"
            )
            return (
                await admin.create_key(account_id=account, business_id=business, scopes=[Scope.MANAGE_ALL])
            ).plaintext
        finally:
            await db.dispose()

    return asyncio.run(make())


async def _query(database_url: str, statement: Any) -> list[Any]:
    db = Database(database_url)
    try:
        async with db.session() as session:
            return list((await session.exec(statement)).all())
    finally:
        await db.dispose()


def query(database_url: str, statement: Any) -> list[Any]:
    return asyncio.run(_query(database_url, statement))


def stored_count(database_url: str, provider_id: str) -> int:
    rows = query(
        database_url,
        select(func.count())
        .select_from(Recording)
        .where(col(Recording.provider_id) == provider_id, col(Recording.processing_status) == "completed"),
    )
    return int(rows[0])


def wait_until(check: Any, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.2)


@pytest.fixture
def kazoo() -> Iterator[FakeKazoo]:
    with FakeKazoo() as fake:
        now = datetime.now(UTC)
        for i in range(CALLS):
            fake.add_recording(now - timedelta(hours=1, minutes=i), audio_size=AUDIO + i)
        # Slow audio so the sync is still going when a server is killed.
        fake.faults.add(
            Fault.slow(delay=0.0, trickle=0.01),
            path=f"/v2/accounts/{fake.account_id}/recordings/",
            times=None,
        )
        yield fake


def create_provider(server: ServerProcess, key: str, fake: FakeKazoo) -> str:
    config = {"baseUrl": fake.base_url, "accountId": fake.account_id, "apiKey": fake.api_key}
    response = httpx.post(
        f"{server.base_url}/api/v1/providers",
        json={"kind": "kazoo", "name": "Kazoo", "config": config},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    provider_id: str = response.json()["id"]
    return provider_id


def assert_exactly_once(
    database_url: str, server: ServerProcess, key: str, fake: FakeKazoo, provider_id: str
) -> None:
    rows = query(database_url, select(Recording).where(col(Recording.provider_id) == provider_id))
    assert len(rows) == CALLS
    assert len({r.external_id for r in rows}) == CALLS  # no duplicates
    expected = {rec.id: rec.audio.sha256() for rec in fake.recordings.values()}
    headers = {"Authorization": f"Bearer {key}"}
    for row in rows:
        assert row.processing_status == "completed"
        assert row.sha256 == expected[row.external_id]
        body = httpx.get(f"{server.base_url}/api/v1/recordings/{row.id}/audio", headers=headers).content
        assert hashlib.sha256(body).hexdigest() == row.sha256  # the visible blob is whole


def test_killed_mid_sync_resumes_exactly_once(tmp_path: Path, kazoo: FakeKazoo) -> None:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'cv.db'}"
    env = sync_env(CALLVAULT_DATABASE_URL=database_url, CALLVAULT_MASTER_KEYS=master_keys())
    server = ServerProcess(tmp_path, **env)
    server.cli("migrate")
    key = tenant_key(database_url)
    server.start()
    provider_id = create_provider(server, key, kazoo)
    httpx.post(
        f"{server.base_url}/api/v1/providers/{provider_id}/sync", headers={"Authorization": f"Bearer {key}"}
    )
    wait_until(lambda: stored_count(database_url, provider_id) >= 3)
    server.kill()
    assert stored_count(database_url, provider_id) < CALLS, (
        "the sync finished before the kill: slow the fake down"
    )

    restarted = ServerProcess(tmp_path, **env).start()
    try:
        wait_until(lambda: stored_count(database_url, provider_id) == CALLS)
        assert_exactly_once(database_url, restarted, key, kazoo, provider_id)
        blob_tmp = tmp_path / "blobs" / "tmp"
        assert not blob_tmp.exists() or not any(
            p.stat().st_mtime > time.time() - 1 for p in blob_tmp.iterdir()
        )
    finally:
        restarted.stop()


@pytest.mark.skipif(
    not (postgres.available() and seaweed.available()), reason="needs PostgreSQL and SeaweedFS"
)
def test_two_replicas_one_postgres_one_s3(
    tmp_path: Path, kazoo: FakeKazoo, pg_server: postgres.PostgresServer
) -> None:
    s3 = seaweed.SeaweedS3()
    s3.start()
    try:
        database_url = pg_server.create_database()
        env = sync_env(
            CALLVAULT_DATABASE_URL=database_url,
            CALLVAULT_MASTER_KEYS=master_keys(),
            CALLVAULT_BLOB_BACKEND="s3",
            CALLVAULT_S3_ENDPOINT=s3.endpoint_url,
            CALLVAULT_S3_BUCKET="recordings",
            CALLVAULT_S3_ACCESS_KEY=s3.access_key,
            CALLVAULT_S3_SECRET_KEY=s3.secret_key,
            CALLVAULT_S3_CREATE_BUCKET="1",
        )
        first = ServerProcess(tmp_path / "a", **env)
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        first.cli("migrate")
        key = tenant_key(database_url)
        first.start()
        second = ServerProcess(tmp_path / "b", **env).start()
        servers = {first.pid: first, second.pid: second}
        try:
            provider_id = create_provider(first, key, kazoo)
            for server in servers.values():  # both are asked; the lease lets one pull
                httpx.post(
                    f"{server.base_url}/api/v1/providers/{provider_id}/sync",
                    headers={"Authorization": f"Bearer {key}"},
                )
            wait_until(lambda: stored_count(database_url, provider_id) >= 3)
            (lease,) = query(
                database_url,
                select(ProviderSync.lease_owner).where(col(ProviderSync.provider_id) == provider_id),
            )
            assert lease is not None
            holder = servers.pop(int(lease.split(":")[1]))
            holder.kill()
            assert stored_count(database_url, provider_id) < CALLS
            (survivor,) = servers.values()
            wait_until(lambda: stored_count(database_url, provider_id) == CALLS)
            assert_exactly_once(database_url, survivor, key, kazoo, provider_id)
            assert "Traceback" not in survivor.output()
        finally:
            for server in (first, second):
                server.stop()
    finally:
        s3.stop()


def sync_job(server: ServerProcess, key: str, job_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{server.base_url}/api/v1/sync-jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


def request_sync(server: ServerProcess, key: str, provider_id: str) -> dict[str, Any]:
    response = httpx.post(
        f"{server.base_url}/api/v1/providers/{provider_id}/sync", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    job: dict[str, Any] = response.json()
    return job


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_sync_killed_mid_pull_ends_succeeded_under_its_own_id_after_a_restart(
    tmp_path: Path, kazoo: FakeKazoo, backend: str, database_url_factory: Any
) -> None:
    database_url: str = database_url_factory(backend)
    # The lease, heartbeat and tick are left at their defaults (120 s, 2 s / 10 s, 5 s).
    env = {
        "CALLVAULT_DATABASE_URL": database_url,
        "CALLVAULT_MASTER_KEYS": master_keys(),
        "CALLVAULT_ALLOW_PRIVATE_NETWORKS": "1",
        "CALLVAULT_RATE_LIMIT_PER_MINUTE": "0",
        "CALLVAULT_LOG_LEVEL": "WARNING",
    }
    server = ServerProcess(tmp_path, **env)
    server.cli("migrate")
    key = tenant_key(database_url)
    server.start()
    provider_id = create_provider(server, key, kazoo)
    original = request_sync(server, key, provider_id)["id"]
    wait_until(lambda: stored_count(database_url, provider_id) >= 3)
    server.kill()
    stored_before = stored_count(database_url, provider_id)
    assert stored_before < CALLS, "the sync finished before the kill: slow the fake down"
    (counted_before,) = query(
        database_url, select(SyncJob.recordings_stored).where(col(SyncJob.id) == original)
    )

    restarted = ServerProcess(tmp_path, **env).start()
    try:
        started = time.monotonic()
        answered = request_sync(restarted, key, provider_id)
        assert answered["state"] != "failed"
        wait_until(lambda: sync_job(restarted, key, answered["id"])["state"] in ("succeeded", "failed"), 60)
        took = time.monotonic() - started
        job = sync_job(restarted, key, answered["id"])
        assert (job["state"], job.get("error")) == ("succeeded", None)
        assert took < 30, f"{took:.1f} s: the dead holder's lease was waited out"
        assert_exactly_once(database_url, restarted, key, kazoo, provider_id)

        # The client holding the original id sees the same end: it is the same job, carried on.
        assert answered["id"] == original
        assert sync_job(restarted, key, original)["state"] == "succeeded"
        assert int(job["recordingsStored"]) == counted_before + CALLS - stored_before
        listed = httpx.get(
            f"{restarted.base_url}/api/v1/sync-jobs",
            params={"providerId": provider_id},
            headers={"Authorization": f"Bearer {key}"},
        ).json()["items"]
        assert [j["id"] for j in listed] == [original]  # nothing failed "interrupted", no stand-in job
        assert "Traceback" not in restarted.output()
    finally:
        restarted.stop()
