"""The puller against real fake providers over loopback, a real blob store and a real database.

Every test checks the two promises that matter: each call lands exactly once, and a
recording is "completed" only when its blob is complete and byte-identical to the provider's.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from sqlmodel import col, func, select

from service.admin import Admin
from service.blobs.local import LocalBlobStore
from service.config import Settings, SyncSettings
from service.connectors.http import NetworkPolicy
from service.errors import ProviderNotFound
from service.ids import uuid7
from service.kinds import KINDS
from service.processes import ProcessRegistry
from service.providers.store import ProviderStore
from service.recordings.sealed import SealedAudio, read_row_and_key
from service.sealing import Keyring, generate_key
from service.storage.db import Database
from service.storage.migrate import upgrade
from service.storage.models import (
    JobState,
    Provider,
    ProviderSync,
    Recording,
    RecordingStatus,
    SyncJob,
    as_utc,
)
from service.sync.lease import Lease
from service.sync.queue import Progress, claim
from service.sync.runner import ProviderBusy, interval_of
from service.sync.scheduler import Puller
from service.sync.state import ensure_state, failure_backoff
from tests.fakes.antbuddy import FakeAntBuddy
from tests.fakes.dtac import FakeDtac
from tests.fakes.httpserver import Fault, Request
from tests.fakes.kazoo import FakeKazoo, FakeRecording
from tests.fakes.ledger import FakeLedger
from tests.fakes.threecx import FakeThreeCX
from tests.sixth_kind.kind import KIND as LEDGER

POLICY = NetworkPolicy(allow_private=True, connect_timeout=2.0, read_timeout=1.0, total_timeout=5.0)
SYNC = replace(
    SyncSettings(),
    tick_seconds=0.05,
    initial_lookback_days=3,
    retry_attempts=4,
    retry_base_seconds=0.01,
    retry_cap_seconds=0.2,
    recording_attempts=2,
    lease_seconds=1.5,
    concurrency=4,
    per_provider_concurrency=2,
)
NOW = datetime.now(UTC)
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@dataclass
class Env:
    db: Database
    providers: ProviderStore
    blobs: LocalBlobStore
    blob_dir: Path
    settings: Settings
    business_id: str
    heartbeats: list[asyncio.Task[None]] = field(default_factory=list)

    async def process(self, process_id: str | None = None, *, dead_after: float = 3.0) -> ProcessRegistry:
        """A registered process that keeps beating until the test ends, as a server's does."""
        registry = ProcessRegistry(
            self.db, heartbeat_seconds=0.1, dead_after_seconds=dead_after, process_id=process_id
        )
        await registry.beat()
        self.heartbeats.append(asyncio.create_task(registry.run()))
        return registry

    async def puller(self, *, owner: str | None = None, dead_after: float = 3.0, **sync: Any) -> Puller:
        settings = replace(self.settings, sync=replace(self.settings.sync, **sync))
        processes = await self.process(owner, dead_after=dead_after)
        return Puller(self.db, self.providers, self.blobs, settings, processes=processes)

    async def kazoo(self, fake: FakeKazoo, *, api_key: str | None = None, active: bool = True) -> str:
        config = {"baseUrl": fake.base_url, "accountId": fake.account_id, "apiKey": api_key or fake.api_key}
        return await self.providers.create(
            self.business_id, kind="kazoo", name="Kazoo PBX", config=config, is_active=active
        )

    async def rows(self, provider_id: str) -> list[Recording]:
        async with self.db.session() as session:
            query = select(Recording).where(col(Recording.origin) == provider_id).order_by(col(Recording.id))
            return list((await session.exec(query)).all())

    async def state(self, provider_id: str) -> ProviderSync:
        async with self.db.session() as session:
            state = await session.get(ProviderSync, provider_id, populate_existing=True)
        assert state is not None
        return state

    async def job(self, job_id: str) -> SyncJob:
        async with self.db.session() as session:
            job = await session.get(SyncJob, job_id, populate_existing=True)
        assert job is not None
        return job

    async def jobs(self, provider_id: str) -> list[SyncJob]:
        async with self.db.session() as session:
            query = select(SyncJob).where(col(SyncJob.provider_id) == provider_id).order_by(col(SyncJob.id))
            return list((await session.exec(query)).all())

    async def audio_sha256(self, row: Recording) -> str:
        """The sha256 of a stored recording's audio, read back through its sealed blob."""
        async with self.db.session() as session:
            found = await read_row_and_key(session, self.business_id, row.id)
        assert found is not None
        stored, key = found
        assert key is not None and stored.size is not None, "stored audio is sealed"
        assert await self.blobs.stat(key.blob_sha256) is not None
        digest = hashlib.sha256()
        sealed = SealedAudio(self.db, self.blobs, self.providers.keyring)
        async for chunk in await sealed.open(stored, key, 0, stored.size, chunk_size=1 << 20):
            digest.update(chunk)
        return digest.hexdigest()

    def temp_files(self) -> list[Path]:
        return list((self.blob_dir / "tmp").iterdir())


@pytest.fixture(params=["sqlite"])
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    make_url = cast(Callable[[str], str], request.getfixturevalue("database_url_factory"))
    url = make_url(request.param)
    upgrade(url)
    db = Database(url)
    admin = Admin(db)
    account = await admin.create_account("Acme")
    business = await admin.create_business(account, "Acme", slug=f"acme-{uuid.uuid4().hex[:12]}")
    providers = ProviderStore(db, Keyring({1: generate_key()}, primary_id=1), POLICY)
    blob_dir = tmp_path / "blobs"
    settings = Settings(data_dir=tmp_path, network=POLICY, sync=SYNC, blob_dir=blob_dir)
    env = Env(db, providers, LocalBlobStore(blob_dir), blob_dir, settings, business)
    yield env
    for task in env.heartbeats:
        task.cancel()
    await asyncio.gather(*env.heartbeats, return_exceptions=True)
    await db.dispose()


@pytest.fixture
def kazoo() -> Iterator[FakeKazoo]:
    with FakeKazoo(max_page_size=3) as fake:
        yield fake
        assert fake.handler_errors == []


def audio_requests(fake: FakeKazoo) -> list[Request]:
    prefix = f"/v2/accounts/{fake.account_id}/recordings/"
    return [r for r in fake.requests if r.path.startswith(prefix) and "audio" in r.headers.get("accept", "")]


def add_calls(fake: FakeKazoo, hours: list[float], *, audio_size: int = 4096) -> list[FakeRecording]:
    return [
        fake.add_recording(NOW - timedelta(hours=h), audio_size=audio_size + i, caller=f"08123456{i:02d}")
        for i, h in enumerate(hours)
    ]


async def assert_stored_once(env: Env, provider_id: str, expected: list[FakeRecording]) -> None:
    """Exactly one row per call, each stored, its blob present, complete and byte-identical."""
    rows = await env.rows(provider_id)
    assert sorted(r.external_id for r in rows) == sorted(rec.id for rec in expected)
    by_id = {rec.id: rec for rec in expected}
    for row in rows:
        rec = by_id[row.external_id]
        assert row.processing_status == "completed", (row.external_id, row.last_error)
        assert row.sha256 == rec.audio.sha256() and row.size == rec.audio.size
        assert await env.audio_sha256(row) == row.sha256
    await eventually(lambda: not env.temp_files())


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every log record with its extra fields, as text."""
    return "\n".join(repr(vars(record)) for record in caplog.records)


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def wait_for(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


# -- the happy path --------------------------------------------------------------------


@pytest.mark.parametrize("env", BACKENDS, indirect=True)
async def test_pulls_store_every_recording_once_and_find_only_new_calls(
    env: Env, kazoo: FakeKazoo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="callvault")
    calls = add_calls(kazoo, [50, 30, 20, 10, 5, 3, 1])
    outbound = kazoo.add_recording(
        NOW - timedelta(hours=2), direction="outbound", caller="1001", callee="0898765432"
    )
    calls.append(outbound)
    provider_id = await env.kazoo(kazoo)
    puller = await env.puller()

    job = await puller.pull(provider_id)

    assert job.state == "succeeded" and job.trigger == "schedule" and job.error is None
    assert job.started_at is not None and job.finished_at is not None
    assert (job.calls_seen, job.recordings_stored, job.failures) == (8, 8, 0)
    assert job.bytes_stored == sum(c.audio.size for c in calls)
    stored = await env.job(job.id)  # what readers of the table see
    assert (stored.state, stored.calls_seen, stored.recordings_stored, stored.bytes_stored) == (
        "succeeded",
        8,
        8,
        job.bytes_stored,
    )
    await assert_stored_once(env, provider_id, calls)
    assert len(audio_requests(kazoo)) == 8

    rows = {r.external_id: r for r in await env.rows(provider_id)}
    inbound = rows[calls[0].id]
    assert (inbound.direction, inbound.source, inbound.provider_id) == ("in", "kazoo", provider_id)
    assert (inbound.customer_phone, inbound.customer_phone_normalized) == ("0812345600", "+66812345600")
    assert inbound.callcenter_number == "1001"
    assert as_utc(inbound.call_at) == datetime.fromtimestamp(
        int((NOW - timedelta(hours=50)).timestamp()), UTC
    )
    out = rows[outbound.id]
    assert (out.direction, out.customer_phone, out.customer_phone_normalized) == (
        "out",
        "0898765432",
        "+66898765432",
    )
    assert (out.callcenter_number, out.content_type) == ("1001", "audio/mpeg")

    state = await env.state(provider_id)
    assert state.cursor is not None and as_utc(state.cursor) >= NOW
    assert state.last_error is None and state.last_success_at is not None
    assert state.next_run_at is not None
    interval = as_utc(state.next_run_at) - as_utc(state.last_success_at)
    assert interval == timedelta(minutes=SYNC.default_interval_minutes)
    assert state.lease_owner is None and state.lease_until is None

    # A second pull: nothing new, nothing downloaded again.
    kazoo.clear_requests()
    again = await puller.pull(provider_id)
    assert again.state == "succeeded" and again.recordings_stored == 0
    assert audio_requests(kazoo) == []
    assert len(await env.rows(provider_id)) == 8

    # Calls that appear at the provider later land on the next pull, and only they download.
    late = [kazoo.add_recording(datetime.now(UTC) - timedelta(minutes=m), audio_size=999 + m) for m in (3, 1)]
    kazoo.clear_requests()
    third = await puller.pull(provider_id)
    # Every pull re-reads the trailing day for late rows: the six calls of the last day are
    # listed again (and left alone), the two new ones downloaded.
    assert (third.state, third.recordings_stored, third.calls_seen) == ("succeeded", 2, 2 + 6)
    assert len(audio_requests(kazoo)) == 2
    await assert_stored_once(env, provider_id, calls + late)
    text = logged(caplog)
    assert "pull finished" in text and kazoo.api_key not in text
    assert not any(rec.id in text for rec in calls + late)  # recording refs stay out of logs


async def test_antbuddy_calls_without_audio_are_kept_as_no_audio(env: Env) -> None:
    with FakeAntBuddy() as fake:
        with_audio = fake.add_call(NOW - timedelta(hours=5), caller="0811111111", direction="to_ab")
        fake.add_call(NOW - timedelta(hours=4), recording=False)
        config = {"baseUrl": fake.base_url, "appId": fake.app_id, "appSecret": fake.app_secret}
        provider_id = await env.providers.create(
            env.business_id, kind="antbuddy", name="AntBuddy", config=config, is_active=True
        )
        job = await (await env.puller()).pull(provider_id)
        assert fake.handler_errors == []

    assert (job.state, job.calls_seen, job.recordings_stored) == ("succeeded", 2, 1)
    rows = await env.rows(provider_id)
    statuses = sorted(r.processing_status for r in rows)
    assert statuses == ["completed", "no_audio"]
    stored = next(r for r in rows if r.processing_status == "completed")
    assert stored.sha256 == fake.media[with_audio["recording"]].sha256()
    assert stored.source == "antbuddy" and stored.customer_phone_normalized == "+66811111111"
    await eventually(lambda: not env.temp_files())


@pytest.mark.parametrize("env", BACKENDS, indirect=True)
async def test_kazoo_legs_of_one_call_are_kept_each_and_name_the_same_call(
    env: Env, kazoo: FakeKazoo
) -> None:
    legs = kazoo.add_call(NOW - timedelta(hours=2), call="inbound", legs=("a", "b"))
    [alone] = kazoo.add_call(NOW - timedelta(hours=1), call="outbound", legs=("a",))
    provider_id = await env.kazoo(kazoo)

    job = await (await env.puller()).pull(provider_id)

    assert (job.state, job.calls_seen, job.recordings_stored) == ("succeeded", 3, 3)
    await assert_stored_once(env, provider_id, [*legs, alone])
    by_id = {r.external_id: r for r in await env.rows(provider_id)}
    # Two rows, one per leg, both naming the call's interaction id; the other call its own.
    assert [by_id[leg.id].call_id for leg in legs] == [legs[0].interaction_id] * 2
    assert by_id[alone.id].call_id == alone.interaction_id != legs[0].interaction_id
    async with env.db.session() as session:
        query = select(Recording.id).where(
            col(Recording.business_id) == env.business_id, col(Recording.call_id) == legs[0].interaction_id
        )
        assert len((await session.exec(query)).all()) == 2


@pytest.mark.parametrize("env", BACKENDS, indirect=True)
async def test_kazoo_a_long_call_written_late_is_found_and_its_audio_waited_for(
    env: Env, kazoo: FakeKazoo
) -> None:
    """Kazoo writes a long call's document when it ends (well after its start and after the
    last pull), and saves the document before its audio: the trailing window finds it, and
    the audio stays pending until Kazoo serves it."""
    add_calls(kazoo, [2])
    provider_id = await env.kazoo(kazoo)
    puller = await env.puller()
    assert (await puller.pull(provider_id)).state == "succeeded"

    long_call = kazoo.add_recording(
        datetime.now(UTC) - timedelta(hours=6), duration=6 * 3600.0, created_after=timedelta(hours=6)
    )
    kazoo.hold_audio(long_call)  # every audio request 404s bad_identifier until released
    job = await puller.pull(provider_id)
    assert (job.state, job.calls_seen, job.recordings_stored, job.failures) == ("succeeded", 2, 0, 0)
    row = next(r for r in await env.rows(provider_id) if r.external_id == long_call.id)
    assert (row.processing_status, row.last_error) == (RecordingStatus.PENDING, "recording not ready yet")

    kazoo.hold_audio(long_call, requests=0)
    job = await puller.pull(provider_id)
    assert (job.state, job.recordings_stored) == ("succeeded", 1)
    row = next(r for r in await env.rows(provider_id) if r.external_id == long_call.id)
    assert row.processing_status == RecordingStatus.COMPLETED and row.sha256 == long_call.audio.sha256()


@pytest.mark.parametrize("env", BACKENDS, indirect=True)
async def test_antbuddy_remembers_the_hash_order_that_worked_across_pulls(env: Env) -> None:
    with FakeAntBuddy() as fake:
        fake.hash_order = "appIdLast"  # the other page's order: the seed's is refused with a 400
        fake.add_call(NOW - timedelta(hours=5), recording=False)
        config = {"baseUrl": fake.base_url, "appId": fake.app_id, "appSecret": fake.app_secret}
        provider_id = await env.providers.create(
            env.business_id, kind="antbuddy", name="AntBuddy", config=config, is_active=True
        )
        first = await (await env.puller()).pull(provider_id)
        refused_first = fake.hash_refusals
        assert (await env.state(provider_id)).hints == {"hashOrder": "appIdLast"}
        fake.add_call(NOW - timedelta(minutes=30), recording=False)
        fake.clear_requests()
        # Another puller, as after a restart: it starts from what the sync state kept.
        second = await (await env.puller()).pull(provider_id)
        assert fake.handler_errors == []

    assert (first.state, first.calls_seen) == ("succeeded", 1)
    assert refused_first >= 1  # the first pull paid for learning the order
    assert (second.state, second.calls_seen) == ("succeeded", 2)
    assert fake.hash_refusals == refused_first  # the second sent no refused request
    assert len(await env.rows(provider_id)) == 2


# -- faults ----------------------------------------------------------------------------

FAULTS = {
    "listing 500 twice": (Fault.status(500), "list", 2),
    "listing rate limited": (Fault.rate_limited(retry_after=0.1), "list", 1),
    "download 500 twice": (Fault.status(500), "audio", 2),
    "download rate limited": (Fault.rate_limited(retry_after=0.1), "audio", 2),
    "download reset mid-body": (Fault.reset(after=5000), "audio", 3),
    "download truncated": (Fault.truncate(after=5000), "audio", 3),
    "download slow": (Fault.slow(delay=0.2, trickle=0.002), "audio", None),
}


@pytest.mark.parametrize("name", list(FAULTS))
async def test_faults_end_with_every_recording_stored_once(
    env: Env, kazoo: FakeKazoo, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callvault.sync")
    fault, where, times = FAULTS[name]
    calls = add_calls(kazoo, [30, 20, 10, 2], audio_size=20_000)
    provider_id = await env.kazoo(kazoo)
    listing = f"/v2/accounts/{kazoo.account_id}/recordings"
    kazoo.faults.add(fault, path=listing if where == "list" else listing + "/", times=times)

    job = await (await env.puller()).pull(provider_id)

    assert job.state == "succeeded", job.error
    assert (job.recordings_stored, job.failures) == (4, 0)
    await assert_stored_once(env, provider_id, calls)
    # Only this provider's records: a server started by other tests may log from its own thread.
    mine = [r for r in caplog.records if getattr(r, "provider_id", None) == provider_id]
    retries = [r for r in mine if r.getMessage() == "retrying"]
    operation = "listing" if where == "list" else "download"
    # Each fault cost exactly one retry of its operation; a slow answer within the timeouts none.
    assert [getattr(r, "operation", None) for r in retries] == [operation] * (times or 0)


async def test_a_listing_that_fails_midway_restarts_from_the_window_start(env: Env) -> None:
    with FakeAntBuddy() as fake:
        for i in range(130):
            fake.add_call(NOW - timedelta(hours=30, minutes=-i), caller=f"0812{i:06d}", recording=i < 2)
        pages: list[int] = []

        def fail_the_next_page(server: FakeAntBuddy) -> None:
            pages.append(1)
            if len(pages) == 1:  # after page 1 is answered, page 2 fails once
                server.faults.add(Fault.status(500), path="/oapi/v1/call/histories")

        fake.on_history = fail_the_next_page
        config = {"baseUrl": fake.base_url, "appId": fake.app_id, "appSecret": fake.app_secret}
        provider_id = await env.providers.create(
            env.business_id, kind="antbuddy", name="AntBuddy", config=config, is_active=True
        )
        job = await (await env.puller()).pull(provider_id)
        pages_asked = [r.query["page"] for r in fake.history_requests()]
        assert fake.handler_errors == []

    assert pages_asked == ["1", "2", "1", "2"]
    assert (job.state, job.calls_seen, job.recordings_stored) == ("succeeded", 130, 2)
    rows = await env.rows(provider_id)
    assert len(rows) == len({r.external_id for r in rows}) == 130


async def test_a_recording_that_always_fails_ends_failed_and_the_rest_are_stored(
    env: Env, kazoo: FakeKazoo
) -> None:
    good = add_calls(kazoo, [10, 8, 6])
    [bad] = add_calls(kazoo, [7])
    kazoo.faults.add(
        Fault.status(500), path=f"/v2/accounts/{kazoo.account_id}/recordings/{bad.id}", times=None
    )
    provider_id = await env.kazoo(kazoo)
    puller = await env.puller()

    first = await puller.pull(provider_id)
    assert (first.state, first.recordings_stored, first.failures) == ("succeeded", 3, 1)
    [row] = [r for r in await env.rows(provider_id) if r.external_id == bad.id]
    assert (row.processing_status, row.attempts, row.last_error) == (
        "pending",
        1,
        "unexpected answer from provider",
    )

    second = await puller.pull(provider_id)  # pending recordings of earlier pulls are tried again
    assert (second.state, second.recordings_stored, second.failures) == ("succeeded", 0, 1)
    [row] = [r for r in await env.rows(provider_id) if r.external_id == bad.id]
    assert (row.processing_status, row.attempts, row.sha256) == ("failed", 2, None)

    kazoo.clear_requests()
    third = await puller.pull(provider_id)
    assert third.failures == 0 and audio_requests(kazoo) == []  # given up: not tried again
    stored = [r for r in await env.rows(provider_id) if r.external_id != bad.id]
    assert sorted(r.external_id for r in stored) == sorted(c.id for c in good)
    assert all(r.processing_status == "completed" for r in stored)
    await eventually(lambda: not env.temp_files())


async def test_bad_credentials_fail_the_pull_without_retrying(
    env: Env, kazoo: FakeKazoo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="callvault")
    calls = add_calls(kazoo, [3])
    provider_id = await env.kazoo(kazoo, api_key="not-the-key")
    puller = await env.puller()

    job = await puller.pull(provider_id)

    assert (job.state, job.error) == ("failed", "authentication failed")
    assert (await env.job(job.id)).error == "authentication failed"
    assert kazoo.auth_calls() == 1  # not retried
    state = await env.state(provider_id)
    assert (state.last_error, state.consecutive_failures, state.cursor) == ("authentication failed", 1, None)
    assert state.next_run_at is not None
    wait = as_utc(state.next_run_at) - datetime.now(UTC)
    assert timedelta(0) < wait <= timedelta(minutes=SYNC.default_interval_minutes)
    assert state.lease_owner is None
    assert await env.rows(provider_id) == []
    assert "not-the-key" not in logged(caplog) and "authentication failed" in logged(caplog)
    details = await env.providers.get(env.business_id, provider_id)
    assert details.last_sync_error == "authentication failed"

    await env.providers.update(
        env.business_id, provider_id, name=None, config={"apiKey": kazoo.api_key}, is_active=None
    )
    fixed = await puller.pull(provider_id)
    assert fixed.state == "succeeded"
    state = await env.state(provider_id)
    assert (state.last_error, state.consecutive_failures) == (None, 0)
    await assert_stored_once(env, provider_id, calls)


# -- leases, crashes, deletion ---------------------------------------------------------


@pytest.mark.parametrize("env", BACKENDS, indirect=True)
async def test_two_processes_never_pull_the_same_provider_at_once(env: Env, kazoo: FakeKazoo) -> None:
    calls = add_calls(kazoo, [9, 7, 5, 3])
    kazoo.faults.add(Fault.slow(delay=0.1), path=f"/v2/accounts/{kazoo.account_id}/recordings/", times=None)
    provider_id = await env.kazoo(kazoo)
    first, second = await env.puller(owner="process-a"), await env.puller(owner="process-b")

    results = await asyncio.gather(first.pull(provider_id), second.pull(provider_id), return_exceptions=True)

    busy = [r for r in results if isinstance(r, ProviderBusy)]
    jobs = [r for r in results if isinstance(r, SyncJob)]
    assert len(busy) == 1 and len(jobs) == 1, results
    assert jobs[0].state == "succeeded" and jobs[0].recordings_stored == 4
    assert len(audio_requests(kazoo)) == 4
    assert len(await env.jobs(provider_id)) == 1
    await assert_stored_once(env, provider_id, calls)
    assert (await env.state(provider_id)).lease_owner is None


async def crashed_mid_pull(env: Env, provider_id: str, registry: ProcessRegistry) -> SyncJob:
    """What a process killed mid-pull leaves: its lease (not lapsed for minutes) and its job
    running with some counters; `registry` is that process, and beats no more unless told to."""
    await ensure_state(env.db, provider_id, env.business_id)
    assert await Lease(env.db, registry, seconds=120).claim(provider_id)
    stale = await claim(env.db, provider_id, env.business_id, registry.id, None)
    assert stale is not None and stale.runner == registry.id
    stale.recordings_stored, stale.bytes_stored = 5, 5000
    await Progress(env.db, stale).save()
    return stale


@pytest.mark.parametrize("env", BACKENDS, indirect=True)
async def test_a_killed_holder_is_taken_over_in_seconds_and_its_job_continued(
    env: Env, kazoo: FakeKazoo
) -> None:
    calls = add_calls(kazoo, [4, 2])
    provider_id = await env.kazoo(kazoo)
    puller = await env.puller(owner="survivor", dead_after=1.0, tick_seconds=30.0)  # acts when woken
    killed = ProcessRegistry(env.db, heartbeat_seconds=0.1, dead_after_seconds=1.0, process_id="killed")
    await killed.beat()  # its last beat: from now on it is silent, as after kill -9
    stale = await crashed_mid_pull(env, provider_id, killed)
    loop = asyncio.create_task(puller.run())
    try:
        # While its last beat is fresh, the holder counts as live: its lease and job stand.
        assert (await puller.request_sync(env.business_id, provider_id)).id == stale.id
        with pytest.raises(ProviderBusy):
            await puller.pull(provider_id)

        await asyncio.sleep(1.1)  # silent past dead_after: gone, though its lease has minutes left
        answered = await puller.request_sync(env.business_id, provider_id)
        assert (answered.id, answered.state, answered.runner) == (stale.id, "queued", None)
        await wait_for(lambda: _finished(env, provider_id, 1), within=5)  # woken, not ticked
    finally:
        await puller.close()
    assert loop.done()

    job = await env.job(stale.id)
    assert (job.state, job.error, job.runner) == ("succeeded", None, "survivor")
    # The same job carried on: its counters add up, its start is the original one.
    assert (job.recordings_stored, job.calls_seen) == (5 + 2, 2)
    assert job.started_at == stale.started_at
    assert [j.id for j in await env.jobs(provider_id)] == [stale.id]  # no second job
    await assert_stored_once(env, provider_id, calls)
    # The killed process's writes, were it to wake, no longer land on the job.
    await Progress(env.db, stale).finish(JobState.FAILED, "lease lost to another process")
    assert (await env.job(stale.id)).state == "succeeded"


async def test_the_loop_continues_an_orphaned_job_without_being_asked(env: Env, kazoo: FakeKazoo) -> None:
    calls = add_calls(kazoo, [3, 1])
    provider_id = await env.kazoo(kazoo)
    killed = ProcessRegistry(env.db, heartbeat_seconds=0.1, dead_after_seconds=0.5, process_id="killed")
    await killed.beat()
    stale = await crashed_mid_pull(env, provider_id, killed)
    puller = await env.puller(dead_after=0.5)
    loop = asyncio.create_task(puller.run())
    try:
        await wait_for(lambda: _finished(env, provider_id, 1), within=5)
    finally:
        await puller.close()
    assert loop.done()
    job = await env.job(stale.id)
    assert (job.state, job.runner, job.recordings_stored) == ("succeeded", puller.owner, 7)
    assert len(await env.jobs(provider_id)) == 1
    await assert_stored_once(env, provider_id, calls)


async def test_an_orphaned_job_of_a_deleted_provider_ends_failed_not_running(
    env: Env, kazoo: FakeKazoo
) -> None:
    provider_id = await env.kazoo(kazoo)
    killed = ProcessRegistry(env.db, heartbeat_seconds=0.1, dead_after_seconds=0.5, process_id="killed")
    await killed.beat()
    stale = await crashed_mid_pull(env, provider_id, killed)
    await env.providers.delete(env.business_id, provider_id)
    puller = await env.puller(dead_after=0.5)
    loop = asyncio.create_task(puller.run())
    try:
        await wait_for(lambda: _finished(env, provider_id, 1), within=5)
    finally:
        await puller.close()
    assert loop.done()
    job = await env.job(stale.id)
    assert (job.state, job.error) == ("failed", "provider deleted")


async def test_a_lapsed_lease_is_taken_over_and_the_live_loser_cannot_overwrite_the_job(
    env: Env, kazoo: FakeKazoo
) -> None:
    calls = add_calls(kazoo, [4, 2])
    provider_id = await env.kazoo(kazoo)
    loser = await env.process("loser")  # alive, but it stopped renewing its lease
    await ensure_state(env.db, provider_id, env.business_id)
    assert await Lease(env.db, loser, seconds=0.5).claim(provider_id)
    stale = await claim(env.db, provider_id, env.business_id, loser.id, None)
    assert stale is not None
    puller = await env.puller(owner="survivor")

    with pytest.raises(ProviderBusy):
        await puller.pull(provider_id)
    await asyncio.sleep(0.6)
    job = await puller.pull(provider_id)

    assert (job.id, job.state, job.runner) == (stale.id, "succeeded", "survivor")
    await Progress(env.db, stale).finish(JobState.FAILED, "lease lost to another process")
    assert (await env.job(stale.id)).state == "succeeded"
    await assert_stored_once(env, provider_id, calls)


async def test_an_interrupted_pull_resumes_with_nothing_lost_or_doubled(env: Env, kazoo: FakeKazoo) -> None:
    calls = add_calls(kazoo, [20, 15, 10, 6, 3, 1], audio_size=30_000)
    slow = Fault.slow(delay=0.05, trickle=0.01)
    kazoo.faults.add(slow, path=f"/v2/accounts/{kazoo.account_id}/recordings/", times=None)
    provider_id = await env.kazoo(kazoo)
    puller = await env.puller()

    task = asyncio.create_task(puller.pull(provider_id))
    await eventually(lambda: len(audio_requests(kazoo)) >= 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    [interrupted] = await env.jobs(provider_id)
    # Back in the queue with its counters, for the next pull to continue; not failed.
    assert (interrupted.state, interrupted.error, interrupted.runner) == ("queued", None, None)
    assert (await env.state(provider_id)).lease_owner is None  # released, not left to lapse
    assert any(r.processing_status == "pending" for r in await env.rows(provider_id))

    kazoo.faults.clear()
    job = await (await env.puller()).pull(provider_id)
    assert (job.id, job.state, job.recordings_stored) == (interrupted.id, "succeeded", len(calls))
    await assert_stored_once(env, provider_id, calls)


async def test_a_provider_deleted_mid_pull_ends_the_job_failed(env: Env, kazoo: FakeKazoo) -> None:
    add_calls(kazoo, [8, 6, 4, 2])
    kazoo.faults.add(Fault.slow(delay=0.3), path=f"/v2/accounts/{kazoo.account_id}/recordings/", times=None)
    provider_id = await env.kazoo(kazoo)
    task = asyncio.create_task((await env.puller()).pull(provider_id))
    await eventually(lambda: len(audio_requests(kazoo)) >= 1)

    await env.providers.delete(env.business_id, provider_id)
    job = await asyncio.wait_for(task, timeout=10)

    assert (job.state, job.error) == ("failed", "provider deleted")
    assert (await env.job(job.id)).state == "failed"
    with pytest.raises(ProviderNotFound):
        await (await env.puller()).pull(provider_id)


# -- scheduling and on-demand ----------------------------------------------------------


@pytest.mark.parametrize("env", BACKENDS, indirect=True)
async def test_request_sync_wakes_the_loop_which_finishes_the_job(env: Env, kazoo: FakeKazoo) -> None:
    calls = add_calls(kazoo, [6, 3])
    provider_id = await env.kazoo(kazoo)
    inactive_id = await env.kazoo(kazoo, active=False)
    broken_id = await env.kazoo(kazoo, api_key="wrong-key")
    puller = await env.puller(tick_seconds=30.0)  # only wake() can make it act again soon
    loop = asyncio.create_task(puller.run())
    try:
        # The first pass pulls every due provider on schedule, but not the inactive one.
        await wait_for(lambda: _finished(env, provider_id, 1))
        await wait_for(lambda: _finished(env, broken_id, 1))  # its failure does not stop the loop
        [broken] = await env.jobs(broken_id)
        assert (broken.state, broken.error) == ("failed", "authentication failed")
        [scheduled] = await env.jobs(provider_id)
        assert (scheduled.trigger, scheduled.state) == ("schedule", "succeeded")
        await assert_stored_once(env, provider_id, calls)

        late = kazoo.add_recording(datetime.now(UTC) - timedelta(minutes=2))
        queued = await puller.request_sync(env.business_id, provider_id)
        assert (queued.trigger, queued.state) == ("manual", "queued")
        await wait_for(lambda: _finished(env, provider_id, 2), within=5)

        manual = await env.job(queued.id)
        # The two earlier calls are in the trailing day every pull re-reads: listed, not fetched.
        assert (manual.state, manual.recordings_stored, manual.calls_seen) == ("succeeded", 1, 1 + 2)
        assert manual.started_at is not None and manual.finished_at is not None
        await assert_stored_once(env, provider_id, [*calls, late])
        assert await env.jobs(inactive_id) == []
    finally:
        await puller.close()
    assert loop.done()


async def test_request_sync_answers_the_open_job_and_refuses_unknown_providers(
    env: Env, kazoo: FakeKazoo
) -> None:
    provider_id = await env.kazoo(kazoo)
    puller = await env.puller()
    first = await puller.request_sync(env.business_id, provider_id)
    again = await puller.request_sync(env.business_id, provider_id)
    assert again.id == first.id
    assert (await env.state(provider_id)).next_run_at is not None

    with pytest.raises(ProviderNotFound):
        await puller.request_sync(env.business_id, "0192f0aa-0000-7000-8000-000000000000")
    admin = Admin(env.db)
    other = await admin.create_business(await admin.create_account("Other"), "Other", slug="other-co")
    with pytest.raises(ProviderNotFound):
        await puller.request_sync(other, provider_id)

    job = await puller.pull(provider_id, first)  # what the loop does with the queued job
    assert (job.id, job.state, job.trigger) == (first.id, "succeeded", "manual")
    again = await puller.pull(provider_id, first)  # a job already run is not run twice
    assert (again.id, again.state) == (first.id, "succeeded")
    assert len(await env.jobs(provider_id)) == 1


async def _finished(env: Env, provider_id: str, count: int) -> bool:
    async with env.db.session() as session:
        query = (
            select(func.count())
            .select_from(SyncJob)
            .where(col(SyncJob.provider_id) == provider_id, col(SyncJob.state).in_(("succeeded", "failed")))
        )
        return int((await session.exec(query)).one()) >= count


def test_interval_comes_from_the_kinds_poll_interval_field_and_backoff_is_capped_by_it() -> None:
    dtac = Provider(id="p", business_id="b", kind="dtac", name="DTAC", settings={"pollIntervalMinutes": 30})
    kazoo = Provider(id="q", business_id="b", kind="kazoo", name="Kazoo", settings={})
    # A kind without a poll interval field: a stray setting of that name means nothing.
    stray = Provider(id="r", business_id="b", kind="kazoo", name="Kz", settings={"pollIntervalMinutes": 30})
    assert interval_of(dtac, 15) == timedelta(minutes=30)
    assert interval_of(kazoo, 15) == timedelta(minutes=15)
    assert interval_of(stray, 15) == timedelta(minutes=15)
    waits = [failure_backoff(n, timedelta(minutes=5)) for n in range(1, 6)]
    assert waits == [timedelta(minutes=m) for m in (1, 2, 4, 5, 5)]
    assert failure_backoff(10_000, timedelta(hours=1)) == timedelta(hours=1)


# -- late rows, audio not ready, unreadable answers (the sixth kind: tests/sixth_kind/) --


@pytest.fixture
def ledger(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLedger]:
    """The test-only sixth kind, registered the one way a kind is: its KIND in the registry."""
    monkeypatch.setitem(KINDS, LEDGER.name, LEDGER)
    with FakeLedger() as fake:
        yield fake
        assert fake.handler_errors == []


async def ledger_provider(env: Env, fake: FakeLedger) -> str:
    config = {"baseUrl": fake.base_url, "token": fake.token}
    return await env.providers.create(
        env.business_id, kind="ledger", name="Ledger", config=config, is_active=True
    )


async def statuses(env: Env, provider_id: str) -> dict[str, tuple[str, str | None]]:
    return {r.external_id: (r.processing_status, r.last_error) for r in await env.rows(provider_id)}


@pytest.mark.parametrize("env", BACKENDS, indirect=True)
async def test_rows_written_late_are_found_beyond_the_highest_position(env: Env, ledger: FakeLedger) -> None:
    """A call longer than any window is written when it ends, its start long before the
    last pull: the puller stores the highest position it listed and asks for rows beyond it."""
    first = [ledger.add_call(NOW - timedelta(hours=h)) for h in (5, 1)]
    provider_id = await ledger_provider(env, ledger)
    puller = await env.puller()
    job = await puller.pull(provider_id)
    assert (job.state, job.recordings_stored) == ("succeeded", 2)
    assert (await env.state(provider_id)).position == "2"

    # Eight more rows make ids reach 10, so "10" must count above "9" (not as text).
    late = [ledger.add_call(NOW - timedelta(days=2, hours=h)) for h in range(8)]
    ledger.clear_requests()
    job = await puller.pull(provider_id)
    assert (job.state, job.recordings_stored) == ("succeeded", 8)
    [listing] = [r for r in ledger.requests if r.path == "/calls"]
    assert listing.query["after"] == "2"
    assert (await env.state(provider_id)).position == "10"
    assert set(await statuses(env, provider_id)) == {str(c.id) for c in first + late}

    ledger.clear_requests()
    job = await puller.pull(provider_id)
    assert (job.state, job.calls_seen, job.recordings_stored) == ("succeeded", 0, 0)
    [listing] = [r for r in ledger.requests if r.path == "/calls"]
    assert listing.query["after"] == "10"


@pytest.mark.parametrize("env", BACKENDS, indirect=True)
async def test_audio_not_ready_stays_pending_then_is_stored(env: Env, ledger: FakeLedger) -> None:
    """Audio the provider lists but 404s "not ready" for a while: pending with the reason,
    tried again on each pull without spending its failed attempts, then stored."""
    call = ledger.add_call(NOW - timedelta(minutes=30))
    ledger.audio_not_ready(call.id, answers=SYNC.recording_attempts + 1)  # more than the attempt budget
    provider_id = await ledger_provider(env, ledger)
    puller = await env.puller()
    for _ in range(SYNC.recording_attempts + 1):
        job = await puller.pull(provider_id)
        assert (job.state, job.recordings_stored, job.failures) == ("succeeded", 0, 0)
        assert await statuses(env, provider_id) == {str(call.id): ("pending", "recording not ready yet")}
    [row] = await env.rows(provider_id)
    assert row.attempts == 0
    job = await puller.pull(provider_id)
    assert (job.state, job.recordings_stored) == ("succeeded", 1)
    assert await statuses(env, provider_id) == {str(call.id): ("completed", None)}


@pytest.mark.parametrize("env", BACKENDS, indirect=True)
async def test_audio_never_ready_fails_with_the_reason_after_the_age_limit(
    env: Env, ledger: FakeLedger
) -> None:
    call = ledger.add_call(NOW - timedelta(minutes=30))
    ledger.audio_not_ready(call.id, answers=1000)
    provider_id = await ledger_provider(env, ledger)
    puller = await env.puller(audio_wait_hours=0.0005)  # under two seconds
    job = await puller.pull(provider_id)
    assert await statuses(env, provider_id) == {str(call.id): ("pending", "recording not ready yet")}
    await asyncio.sleep(2.0)
    job = await puller.pull(provider_id)
    assert (job.state, job.failures) == ("succeeded", 1)
    [(status, reason)] = (await statuses(env, provider_id)).values()
    assert status == "failed"
    assert reason is not None and reason.startswith("recording not ready yet; gave up after")


@pytest.mark.parametrize("env", BACKENDS, indirect=True)
async def test_an_unreadable_answer_fails_the_pull_naming_the_field_and_keeps_the_cursor(
    env: Env, ledger: FakeLedger
) -> None:
    ledger.add_call(NOW - timedelta(hours=1))
    provider_id = await ledger_provider(env, ledger)
    puller = await env.puller()
    assert (await puller.pull(provider_id)).state == "succeeded"
    before = await env.state(provider_id)

    ledger.unreadable = True
    ledger.add_call(NOW - timedelta(minutes=5))
    job = await puller.pull(provider_id)
    assert (job.state, job.error) == ("failed", "unexpected answer from provider: calls")
    after = await env.state(provider_id)
    assert (after.cursor, after.position) == (before.cursor, before.position) == (before.cursor, "1")
    assert after.last_error == "unexpected answer from provider: calls"
    details = await env.providers.get(env.business_id, provider_id)
    assert details.last_sync_error == "unexpected answer from provider: calls"

    ledger.unreadable = False
    job = await puller.pull(provider_id)
    assert (job.state, job.recordings_stored) == ("succeeded", 1)
    assert (await env.providers.get(env.business_id, provider_id)).last_sync_error is None


@pytest.mark.parametrize("env", BACKENDS, indirect=True)
async def test_rows_listed_by_time_are_re_read_over_the_trailing_day(env: Env) -> None:
    """A provider listed by start time only (DTAC): a call written after the last pull with
    a start five hours before it is found, because every pull re-reads the last day."""
    with FakeDtac() as dtac:
        dtac.add_call(NOW - timedelta(hours=2))
        config = {"baseUrl": dtac.base_url, "username": dtac.username, "password": dtac.password}
        provider_id = await env.providers.create(
            env.business_id, kind="dtac", name="DTAC", config=config, is_active=True
        )
        puller = await env.puller()
        assert (await puller.pull(provider_id)).recordings_stored == 1
        assert (await env.state(provider_id)).position is None

        late = dtac.add_call(NOW - timedelta(hours=5))
        too_old = dtac.add_call(NOW - timedelta(hours=30))  # outside the day: not re-read
        job = await puller.pull(provider_id)
        assert (job.state, job.recordings_stored) == ("succeeded", 1)
        listed = {r.external_id for r in await env.rows(provider_id)}
        assert str(late.id) in listed and str(too_old.id) not in listed

        # The trailing window is a setting of every kind: two days reach the 30-hour-old call.
        await env.providers.update(
            env.business_id, provider_id, name=None, config={"lateRowsHours": 48}, is_active=None
        )
        job = await puller.pull(provider_id)
        assert (job.state, job.recordings_stored) == ("succeeded", 1)
        assert str(too_old.id) in {r.external_id for r in await env.rows(provider_id)}


@pytest.mark.parametrize("env", BACKENDS, indirect=True)
async def test_threecx_late_rows_by_id_and_audio_that_404s_for_a_while(env: Env) -> None:
    """3CX, as its fake behaves: a long call's row is written when it ends, with an Id above
    every earlier row and a start three days back; its audio 404s until it is released.
    The puller asks for Ids above the highest stored and keeps the audio pending meanwhile."""
    with FakeThreeCX() as pbx:
        first = pbx.add_call(NOW - timedelta(hours=2))
        config = {"baseUrl": pbx.base_url, "username": pbx.client_id, "password": pbx.client_secret}
        provider_id = await env.providers.create(
            env.business_id, kind="threecx", name="3CX", config=config, is_active=True
        )
        puller = await env.puller()
        assert (await puller.pull(provider_id)).recordings_stored == 1
        assert (await env.state(provider_id)).position == str(first.id)

        late = pbx.add_call(NOW - timedelta(days=3), audio_ready=False)
        job = await puller.pull(provider_id)
        assert (job.state, job.recordings_stored, job.failures) == ("succeeded", 0, 0)
        assert (await statuses(env, provider_id))[str(late.id)] == ("pending", "recording not ready yet")
        assert (await env.state(provider_id)).position == str(late.id)

        pbx.release_audio(late.id)
        job = await puller.pull(provider_id)
        assert (job.state, job.recordings_stored) == ("succeeded", 1)
        assert (await statuses(env, provider_id))[str(late.id)] == ("completed", None)


# -- answers a connector cannot read (issue 10, items 5 and 7) ---------------------------


@pytest.mark.parametrize("env", BACKENDS, indirect=True)
async def test_a_dtac_answer_without_objects_fails_the_pull_and_keeps_the_cursor(env: Env) -> None:
    """Today's clients read such an answer as an empty page; the pull would then move the
    cursor past the calls it never saw."""
    with FakeDtac() as dtac:
        calls = [dtac.add_call(NOW - timedelta(hours=h), size=4096 + h) for h in (30, 5, 2)]
        config = {"baseUrl": dtac.base_url, "username": dtac.username, "password": dtac.password}
        provider_id = await env.providers.create(
            env.business_id, kind="dtac", name="DTAC", config=config, is_active=True
        )
        puller = await env.puller()
        dtac.drop_objects = 1_000  # every listing answers HTTP 200 {"resultCount": 0}

        job = await puller.pull(provider_id)

        message = "unexpected answer from provider: objects"
        assert (job.state, job.error) == ("failed", message)
        state = await env.state(provider_id)
        assert (state.last_error, state.cursor) == (message, None)
        assert (await env.providers.get(env.business_id, provider_id)).last_sync_error == message
        assert await env.rows(provider_id) == []

        dtac.drop_objects = 0
        assert (await puller.pull(provider_id)).state == "succeeded"
        rows = await env.rows(provider_id)
        assert sorted(r.external_id for r in rows) == sorted(str(c.id) for c in calls)
        assert all(r.processing_status == "completed" for r in rows)
        assert dtac.handler_errors == []


# -- throughput: concurrent downloads over kept-alive connections -----------------------

FAST: dict[str, Any] = {"per_provider_concurrency": 8, "concurrency": 16}


def audio_path(fake: FakeKazoo, rec: FakeRecording | None = None) -> str:
    return f"/v2/accounts/{fake.account_id}/recordings/{rec.id if rec else ''}"


def fetched(fake: FakeKazoo) -> Counter[str]:
    """Audio requests per recording id."""
    return Counter(r.path.rsplit("/", 1)[1] for r in audio_requests(fake))


@pytest.mark.parametrize("env", BACKENDS, indirect=True)
async def test_concurrent_downloads_store_each_recording_once_over_reused_connections(
    env: Env, kazoo: FakeKazoo
) -> None:
    calls = add_calls(kazoo, [20 - i * 0.25 for i in range(40)])
    flaky, broken = calls[5], calls[17]
    kazoo.faults.add(Fault.status(500), path=audio_path(kazoo, flaky), times=2)  # retried within the pull
    kazoo.faults.add(Fault.status(500), path=audio_path(kazoo, broken), times=SYNC.retry_attempts)
    kazoo.faults.add(Fault.slow(delay=0.05), path=audio_path(kazoo), times=None)  # downloads overlap
    provider_id = await env.kazoo(kazoo)
    puller = await env.puller(**FAST)

    first = await puller.pull(provider_id)

    assert (first.state, first.recordings_stored, first.failures) == ("succeeded", 39, 1)
    counts = fetched(kazoo)
    assert (counts[flaky.id], counts[broken.id]) == (3, SYNC.retry_attempts)
    assert all(counts[c.id] == 1 for c in calls if c not in (flaky, broken))  # none fetched twice
    # Every request of the pull (login, 14 pages, 45 downloads) went over kept-alive
    # connections: more than one at once, no more than the provider's downloads at a time
    # and one for each error answer (closed with its body unread) in all.
    errors = 2 + SYNC.retry_attempts
    assert 1 < kazoo.connections <= FAST["per_provider_concurrency"] + errors
    [row] = [r for r in await env.rows(provider_id) if r.external_id == broken.id]
    assert (row.processing_status, row.attempts, row.sha256) == ("pending", 1, None)

    kazoo.clear_requests()
    second = await puller.pull(provider_id)  # the failed one is tried again, alone
    assert (second.state, second.recordings_stored, second.failures) == ("succeeded", 1, 0)
    assert fetched(kazoo) == Counter({broken.id: 1})
    await assert_stored_once(env, provider_id, calls)


@pytest.mark.parametrize("env", BACKENDS, indirect=True)
async def test_a_pull_stopped_mid_downloads_loses_nothing_and_fetches_nothing_twice(
    env: Env, kazoo: FakeKazoo
) -> None:
    calls = add_calls(kazoo, [20 - i * 0.25 for i in range(40)])
    kazoo.faults.add(Fault.slow(delay=0.2), path=audio_path(kazoo), times=None)
    provider_id = await env.kazoo(kazoo)
    puller = await env.puller(**FAST)

    pull = asyncio.create_task(puller.pull(provider_id))
    await eventually(lambda: len(audio_requests(kazoo)) >= 12)
    # The key is revoked mid-batch: the next login fails, which no recording can get past.
    kazoo.faults.add(Fault.status(401), path="/v2/api_auth", times=None)
    kazoo.expire_tokens()
    first = await pull

    assert (first.state, first.error) == ("failed", "authentication failed")
    rows = await env.rows(provider_id)
    done = {r.external_id for r in rows if r.processing_status == "completed"}
    assert len(rows) == 40 and 0 < len(done) < 40
    # The rest are pending, no attempt counted against them; the cursor moved past the
    # listing only, since every listed call was stored as a row.
    assert all(
        r.processing_status == "pending" and r.attempts == 0 for r in rows if r.external_id not in done
    )
    assert first.recordings_stored == len(done)
    state = await env.state(provider_id)
    assert state.cursor is not None and as_utc(state.cursor) >= NOW

    kazoo.faults.clear()
    kazoo.clear_requests()
    second = await puller.pull(provider_id)
    assert (second.state, second.recordings_stored) == ("succeeded", 40 - len(done))
    assert fetched(kazoo) == Counter({c.id: 1 for c in calls if c.id not in done})
    await assert_stored_once(env, provider_id, calls)


async def test_a_rate_limited_download_holds_back_the_providers_other_downloads(
    env: Env, kazoo: FakeKazoo
) -> None:
    calls = add_calls(kazoo, [20 - i * 0.25 for i in range(30)])
    wait = 0.15  # within SYNC's retry cap, so the download is retried after it
    kazoo.faults.add(Fault.rate_limited(retry_after=wait), path=audio_path(kazoo), times=1)
    provider_id = await env.kazoo(kazoo)
    workers = 4

    job = await (await env.puller(per_provider_concurrency=workers)).pull(provider_id)

    assert (job.state, job.recordings_stored, job.failures) == ("succeeded", 30, 0)
    audio = audio_requests(kazoo)
    limited = audio[0].received_at  # the first audio request was answered 429
    during = [r for r in audio[1:] if limited < r.received_at < limited + wait * 0.8]
    # Only requests already on their way when the answer came (one per other worker at most);
    # without the pause the 29 others would all go in that time.
    assert len(during) <= workers - 1
    await assert_stored_once(env, provider_id, calls)


@pytest.mark.parametrize("env", BACKENDS, indirect=True)
async def test_a_job_queued_while_its_providers_pull_runs_starts_when_that_pull_ends(
    env: Env, kazoo: FakeKazoo
) -> None:
    calls = add_calls(kazoo, [6, 3])
    kazoo.faults.add(Fault.slow(delay=0.3), path=audio_path(kazoo), times=None)
    provider_id = await env.kazoo(kazoo)
    puller = await env.puller(tick_seconds=30.0)  # only a wake can make it act again soon
    loop = asyncio.create_task(puller.run())
    try:
        running = await puller.request_sync(env.business_id, provider_id)
        await wait_for(lambda: _state_is(env, running.id, "running"))
        # A request that came as the pull was starting or ending: no open job to join, so it
        # queued one of its own, and the pass it woke skipped the busy provider.
        late = SyncJob(id=uuid7(), business_id=env.business_id, provider_id=provider_id, trigger="manual")
        async with env.db.session() as session:
            session.add(late)
            await session.commit()
        puller.wake()
        await wait_for(lambda: _state_is(env, late.id, "succeeded"), within=5)  # not after a tick
    finally:
        await puller.close()
    assert loop.done()
    assert (await env.job(running.id)).state == "succeeded"
    await assert_stored_once(env, provider_id, calls)


async def _state_is(env: Env, job_id: str, state: str) -> bool:
    return (await env.job(job_id)).state == state
