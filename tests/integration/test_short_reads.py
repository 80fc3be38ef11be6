"""The short-read path hot calls use (`Database.reads`), on both databases: what it reads
is what another process committed the moment it committed; a business sees only its own
providers; SQLite reads run on the loop without waiting for a writer, PostgreSQL reads
on psycopg's async connection without ever blocking the loop; the key cache still
refuses a revoked key within its bound when many calls find it due at once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import cast

import psycopg
import pytest
from sqlalchemy import create_engine, event, text, update
from sqlmodel import col

from service.admin import Admin
from service.auth import Authenticator, KeyCache, Scope, bump_revocations
from service.connectors.http import NetworkPolicy
from service.errors import ProviderNotFound, Unauthenticated
from service.providers.store import ProviderStore
from service.sealing import Keyring, generate_key
from service.storage.db import Database, ShortReads, sync_url
from service.storage.migrate import upgrade
from service.storage.models import ApiKey, ProviderSync

POLICY = NetworkPolicy(allow_private=True)
SECRET = "s3cret-short-reads"


@dataclass
class Env:
    backend: str
    url: str
    db: Database
    admin: Admin
    account: str
    business: str
    store: ProviderStore


@asynccontextmanager
async def open_env(request: pytest.FixtureRequest, backend: str) -> AsyncIterator[Env]:
    url = cast(Callable[[str], str], request.getfixturevalue("database_url_factory"))(backend)
    upgrade(url)
    db = Database(url)
    admin = Admin(db)
    account = await admin.create_account("Reads Co")
    business = await admin.create_business(account, "Reads Co", slug=f"reads-{uuid.uuid4().hex[:12]}")
    store = ProviderStore(db, Keyring({1: generate_key()}, primary_id=1), POLICY)
    try:
        yield Env(backend, url, db, admin, account, business, store)
    finally:
        await db.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    async with open_env(request, request.param) as opened:
        yield opened


# Behaviours of one database's driver: collected for that database only.
@pytest.fixture
async def sqlite_env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    async with open_env(request, "sqlite") as opened:
        yield opened


@pytest.fixture
async def postgres_env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    async with open_env(request, "postgres") as opened:
        yield opened


async def new_provider(env: Env, business: str | None = None, name: str = "PBX one") -> str:
    return await env.store.create(
        business or env.business,
        kind="threecx",
        name=name,
        config={"baseUrl": "https://pbx.example.com", "username": "apiuser", "password": SECRET},
        is_active=True,
    )


def rename_in_another_process(env: Env, provider_id: str, name: str) -> None:
    """A commit by another process, through its own driver: nothing here is told."""
    script = (
        "import sys\n"
        "from sqlalchemy import create_engine, text\n"
        "engine = create_engine(sys.argv[1])\n"
        "with engine.begin() as conn:\n"
        "    conn.execute(text('UPDATE provider SET name = :n WHERE id = :i'), {'n': sys.argv[2], 'i': sys.argv[3]})\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, sync_url(env.url), name, provider_id],
        check=True,
        timeout=60,
    )


async def test_hot_reads_take_the_path_of_their_database(env: Env) -> None:
    expected = {"sqlite": ShortReads.SQLITE, "postgres": ShortReads.POSTGRES}[env.backend]
    assert env.db.reads.mode == expected
    statements: list[str] = []
    event.listen(env.db.engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    provider_id = await new_provider(env)
    statements.clear()
    await env.store.get(env.business, provider_id)
    await env.store.summaries(env.business)
    assert statements == []  # not a session, not the async engine


async def test_a_read_sees_another_process_commit_at_once(env: Env) -> None:
    provider_id = await new_provider(env)
    assert (await env.store.get(env.business, provider_id)).name == "PBX one"
    second = await new_provider(env, name="PBX two")
    before = await env.store.summaries(env.business)
    assert [p.name for p in before] == ["PBX one", "PBX two"]
    rename_in_another_process(env, provider_id, "PBX renamed")
    assert (await env.store.get(env.business, provider_id)).name == "PBX renamed"
    # The list reuses what it built from unchanged rows, never from a changed one.
    after = await env.store.summaries(env.business)
    assert [p.name for p in after] == ["PBX renamed", "PBX two"]
    assert after[1] is before[1] and after[1].id == second
    assert after[0].preview == "apiuser @ pbx.example.com"


async def test_another_business_provider_is_not_found_and_no_secret_is_read(env: Env) -> None:
    other = await env.admin.create_business(env.account, "Other", slug=f"other-{uuid.uuid4().hex[:12]}")
    theirs = await new_provider(env, business=other, name="Their PBX")
    mine = await new_provider(env)
    with pytest.raises(ProviderNotFound):
        await env.store.get(env.business, theirs)
    assert [p.id for p in await env.store.summaries(env.business)] == [mine]
    found = await env.store.get(env.business, mine)
    assert SECRET not in repr(found) and "password" not in found.config
    assert (found.base_url, found.username, found.last_sync_error) == (
        "https://pbx.example.com",
        "apiuser",
        None,
    )


async def test_the_last_sync_error_comes_with_the_provider(env: Env) -> None:
    provider_id = await new_provider(env)
    async with env.db.session() as session:
        session.add(
            ProviderSync(provider_id=provider_id, business_id=env.business, last_error="login refused")
        )
        await session.commit()
    assert (await env.store.get(env.business, provider_id)).last_sync_error == "login refused"


async def test_sqlite_reads_do_not_wait_for_a_writer(sqlite_env: Env) -> None:
    env = sqlite_env
    provider_id = await new_provider(env)
    writer = create_engine(sync_url(env.url)).connect()
    try:
        writer.exec_driver_sql("BEGIN IMMEDIATE")
        writer.execute(text("UPDATE provider SET name = 'uncommitted' WHERE id = :i"), {"i": provider_id})
        started = time.perf_counter()
        assert (await env.store.get(env.business, provider_id)).name == "PBX one"
        assert time.perf_counter() - started < 0.5  # the writer's lock is not waited for
        writer.exec_driver_sql("COMMIT")
        assert (await env.store.get(env.business, provider_id)).name == "uncommitted"
    finally:
        writer.close()


async def test_postgres_reads_never_block_the_loop(postgres_env: Env) -> None:
    env = postgres_env
    provider_id = await new_provider(env)
    await env.store.get(env.business, provider_id)  # a connection is open and idle
    conninfo = env.url.replace("postgresql+psycopg://", "postgresql://")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async with await psycopg.AsyncConnection.connect(conninfo) as locker:
        await locker.execute("LOCK TABLE provider IN ACCESS EXCLUSIVE MODE")
        ticking = asyncio.create_task(ticker())
        reading = asyncio.create_task(env.store.get(env.business, provider_id))
        await asyncio.sleep(0.5)
        assert not reading.done()  # waits for the lock ...
        assert ticks >= 20  # ... while the loop goes on serving
        await locker.rollback()
    assert (await asyncio.wait_for(reading, 10)).id == provider_id
    ticking.cancel()


async def test_a_dropped_postgres_connection_is_replaced(postgres_env: Env) -> None:
    env = postgres_env
    provider_id = await new_provider(env)
    await env.store.get(env.business, provider_id)
    conninfo = env.url.replace("postgresql+psycopg://", "postgresql://")
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as admin:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    assert (await env.store.get(env.business, provider_id)).id == provider_id


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_calls_that_find_the_key_cache_due_share_one_counter_read(env: Env) -> None:
    clock = Clock()
    auth = Authenticator(env.db, KeyCache(clock=clock))
    created = await env.admin.create_key(
        account_id=env.account, business_id=env.business, scopes=[Scope.MANAGE_ALL]
    )
    bearer = f"Bearer {created.plaintext}"
    await auth.principal(bearer)
    statements: list[str] = []
    event.listen(env.db.engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    clock.now += 1.0
    found = await asyncio.gather(*(auth.principal(bearer) for _ in range(16)))
    assert {p.key_id for p in found} == {created.id}
    assert len([s for s in statements if "keyrevocation" in s.lower()]) == 1
    # Revoked elsewhere: refused by every call once the interval is up, not before.
    async with env.db.session() as session:
        await session.exec(
            update(ApiKey).where(col(ApiKey.id) == created.id).values(revoked_at=ApiKey.created_at)
        )
        await bump_revocations(session, env.db.dialect)
        await session.commit()
    clock.now += 1.0
    refused = await asyncio.gather(*(auth.principal(bearer) for _ in range(16)), return_exceptions=True)
    assert all(isinstance(r, Unauthenticated) for r in refused)


async def test_a_revocation_here_during_a_counter_read_is_refused_at_once(env: Env) -> None:
    clock = Clock()
    auth = Authenticator(env.db, KeyCache(clock=clock))
    created = await env.admin.create_key(
        account_id=env.account, business_id=env.business, scopes=[Scope.MANAGE_ALL]
    )
    bearer = f"Bearer {created.plaintext}"
    await auth.principal(bearer)
    clock.now += 1.0
    reading = asyncio.create_task(auth.principal(bearer))  # starts the counter read
    await asyncio.sleep(0)
    await env.admin.revoke_key(created.id)
    await asyncio.gather(reading, return_exceptions=True)
    with pytest.raises(Unauthenticated):
        await auth.principal(bearer)
