"""The authenticated-key cache and its bound on revocation, on both databases: a key is
read once and then served from memory; a revocation in this process is refused at once;
one made elsewhere (it only moves the `keyrevocation` counter) within one check interval,
and not sooner than the counter is read."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import cast

import pytest
from sqlalchemy import event, update
from sqlmodel import col

from service.admin import Admin
from service.auth import Authenticator, KeyCache, Scope, bump_revocations, hash_key
from service.errors import Unauthenticated
from service.storage.db import Database
from service.storage.migrate import upgrade
from service.storage.models import ApiKey


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    db: Database
    admin: Admin
    account: str
    business: str
    clock: Clock
    auth: Authenticator
    statements: list[str]


@pytest.fixture(params=["sqlite", "postgres"])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    url = cast(Callable[[str], str], request.getfixturevalue("database_url_factory"))(request.param)
    upgrade(url)
    db = Database(url)
    admin = Admin(db)
    account = await admin.create_account("Cache Co")
    business = await admin.create_business(account, "Cache Co", slug=f"cache-{uuid.uuid4().hex[:12]}")
    clock = Clock()
    statements: list[str] = []
    event.listen(
        db.engine.sync_engine, "before_cursor_execute", lambda _c, _cur, sql, *_: statements.append(sql)
    )
    yield Env(db, admin, account, business, clock, Authenticator(db, KeyCache(clock=clock)), statements)
    await db.dispose()


async def new_key(env: Env, agents: tuple[str, ...] = ()) -> tuple[str, str]:
    created = await env.admin.create_key(
        account_id=env.account,
        business_id=env.business,
        scopes=[Scope.VIEW_RECORDING_SELF],
        agent_keys=agents,
    )
    return created.id, f"Bearer {created.plaintext}"


async def revoke_elsewhere(env: Env, key_id: str) -> None:
    """What another process's revocation looks like from here: the row and the counter
    change in the database; nothing in this process is told."""
    async with env.db.session() as session:
        await session.exec(
            update(ApiKey).where(col(ApiKey.id) == key_id).values(revoked_at=ApiKey.created_at)
        )
        await bump_revocations(session, env.db.dialect)
        await session.commit()


async def test_a_key_is_read_once_with_its_scopes_business_and_agents(env: Env) -> None:
    _, bearer = await new_key(env, agents=("agent-7", "agent-9"))
    first = await env.auth.principal(bearer)
    env.statements.clear()
    env.clock.now += 0.5
    again = await env.auth.principal(bearer)
    assert again == first
    assert env.statements == []  # no database statement at all
    assert first.bound_business_id == env.business
    assert first.scopes == {Scope.VIEW_RECORDING_SELF}
    assert first.visible_agents() == frozenset({"agent-7", "agent-9"})


async def test_a_revocation_in_this_process_is_refused_at_once(env: Env) -> None:
    key_id, bearer = await new_key(env)
    await env.auth.principal(bearer)
    await env.admin.revoke_key(key_id)  # no clock movement at all
    with pytest.raises(Unauthenticated):
        await env.auth.principal(bearer)


async def test_a_revocation_elsewhere_is_refused_within_the_check_interval(env: Env) -> None:
    key_id, bearer = await new_key(env)
    other_id, other = await new_key(env)
    await env.auth.principal(bearer)
    await env.auth.principal(other)
    await revoke_elsewhere(env, key_id)
    # Before the interval is up the cache may still answer (this is the stated bound,
    # and shows the cache is what answers) ...
    env.clock.now += 0.75
    assert (await env.auth.principal(bearer)).key_id == key_id
    # ... and at the interval the counter is read, the cache emptied, the key refused.
    env.clock.now += 0.25
    with pytest.raises(Unauthenticated):
        await env.auth.principal(bearer)
    assert (await env.auth.principal(other)).key_id == other_id  # read afresh, still good


async def test_the_counter_is_read_at_most_once_per_interval(env: Env) -> None:
    _, bearer = await new_key(env)
    await env.auth.principal(bearer)
    env.statements.clear()
    for _ in range(50):
        env.clock.now += 0.0625
        await env.auth.principal(bearer)
    counter_reads = [s for s in env.statements if "keyrevocation" in s.lower()]
    assert len(counter_reads) == 3  # 3.125 s of calls: reads at +1, +2 and +3 s


async def test_unknown_keys_are_not_cached_and_the_cache_is_bounded(env: Env) -> None:
    auth = Authenticator(env.db, KeyCache(clock=env.clock, max_entries=2))
    keys = [await new_key(env) for _ in range(3)]
    for _, bearer in keys:
        await auth.principal(bearer)
    assert len(auth.cache) == 2
    assert auth.cache.get(hash_key(keys[0][1].removeprefix("Bearer "))) is None  # oldest dropped
    for _ in range(3):
        with pytest.raises(Unauthenticated):
            await auth.principal("Bearer crk_" + uuid.uuid4().hex)
    assert len(auth.cache) == 2
