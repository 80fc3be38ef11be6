"""The live keyring against a real key file and database: what it takes, what it refuses,
and that it says so once rather than at every look."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
from sqlmodel import select

from service.admin import Admin
from service.connectors.http import NetworkPolicy
from service.livekeys import LiveKeyring
from service.processes import ProcessRegistry
from service.providers.store import ProviderStore
from service.sealing import (
    Keyring,
    SealContext,
    UnknownKey,
    add_key,
    create_key_file,
    generate_key,
    load_key_file,
    retire_key,
)
from service.sealing import write_key_file as write
from service.storage.db import Database
from service.storage.migrate import upgrade
from service.storage.models import ProviderSecret

POLICY = NetworkPolicy(allow_private=True)


@dataclass
class Env:
    db: Database
    registry: ProcessRegistry
    key_file: Path
    business: str

    def live(self) -> LiveKeyring:
        return LiveKeyring(
            load_key_file(self.key_file), db=self.db, registry=self.registry, path=self.key_file
        )

    async def key_ids(self) -> list[int]:
        async with self.db.session() as session:
            return sorted((await session.exec(select(ProviderSecret.key_id))).all())


@pytest.fixture(params=["sqlite", "postgres"])
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    url = cast(Callable[[str], str], request.getfixturevalue("database_url_factory"))(request.param)
    upgrade(url)
    db = Database(url)
    admin = Admin(db)
    account = await admin.create_account("Acme")
    business = await admin.create_business(account, "Acme", slug=f"acme-{uuid.uuid4().hex[:12]}")
    key_file = tmp_path / "master-keys.json"
    create_key_file(key_file)
    yield Env(db, ProcessRegistry(db, heartbeat_seconds=0.1, dead_after_seconds=5), key_file, business)
    await db.dispose()


def threecx(password: str = "pw-1") -> dict[str, object]:
    return {"baseUrl": "http://127.0.0.1:9", "username": "u", "password": password}


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "refused key file" in r.getMessage()]


async def test_a_drop_refused_while_needed_is_taken_once_it_is_not(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callvault.keys")
    live = env.live()
    await live.start()
    store = ProviderStore(env.db, live, POLICY)
    provider = await store.create(env.business, kind="threecx", name="Old", config=threecx(), is_active=True)

    write(env.key_file, add_key(load_key_file(env.key_file)))
    assert await live.reload()
    assert (live.primary_id, live.ids) == (2, (1, 2))
    await env.registry.beat()
    (me,) = [p for p in await env.registry.live() if p.id == env.registry.id]
    assert (me.primary_key_id, me.key_ids) == (2, (1, 2))

    write(env.key_file, retire_key(load_key_file(env.key_file), 1))
    assert not await live.reload()
    assert not await live.reload()  # looked at again, but said once
    assert live.ids == (1, 2)
    (refusal,) = refusals(caplog)
    assert "drops keys [1], but key 1 still seals 1 stored secrets" in refusal

    await store.update(env.business, provider, name=None, config={"password": "pw-2"}, is_active=None)
    assert await env.key_ids() == [2]
    assert await live.reload()  # the same file, taken now that nothing needs key 1
    assert list(live.ids) == [2]
    _, config = await store.open_config(env.business, provider)
    assert config["password"] == "pw-2"


async def test_a_missing_file_is_said_once_and_the_keys_are_kept(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callvault.keys")
    live = env.live()
    await live.start()
    store = ProviderStore(env.db, live, POLICY)
    provider = await store.create(env.business, kind="threecx", name="PBX", config=threecx(), is_active=True)
    kept = load_key_file(env.key_file)
    env.key_file.unlink()
    assert not await live.reload()
    assert not await live.reload(force=True)
    assert [r.getMessage() for r in caplog.records].count(
        f"cannot read key file {env.key_file} (No such file or directory); keeping keys [1], primary 1"
    ) == 1
    assert (await store.open_config(env.business, provider))[1]["password"] == "pw-1"
    write(env.key_file, add_key(kept))
    assert await live.reload()
    assert live.primary_id == 2


async def test_a_value_under_an_unloaded_key_takes_the_file_only_if_it_adds_keys(env: Env) -> None:
    ahead, behind = env.live(), env.live()
    await ahead.start()
    store_ahead = ProviderStore(env.db, ahead, POLICY)
    store_behind = ProviderStore(env.db, behind, POLICY)
    provider = await store_ahead.create(
        env.business, kind="threecx", name="PBX", config=threecx(), is_active=True
    )
    write(env.key_file, add_key(load_key_file(env.key_file)))
    assert await ahead.reload()
    await store_ahead.update(env.business, provider, name=None, config={"password": "pw-2"}, is_active=None)
    assert await env.key_ids() == [2]

    assert (await store_behind.open_config(env.business, provider))[1]["password"] == "pw-2"
    assert (behind.primary_id, behind.ids) == (2, (1, 2))  # and new writes use key 2 at once

    # A value under a key the file does not hold: refused, and the keyring is unchanged.
    stranger = Keyring({9: generate_key()}, 9)
    sealed = stranger.seal("x", _ctx())
    with pytest.raises(UnknownKey):
        behind.open(sealed, _ctx())
    assert behind.ids == (1, 2)

    # A file that drops a key is never taken this way, even when it holds the value's key.
    write(env.key_file, retire_key(add_key(load_key_file(env.key_file)), 1))
    lagging = LiveKeyring(ahead.current.only(1), db=env.db, registry=env.registry, path=env.key_file)
    with pytest.raises(UnknownKey):
        lagging.open(ahead.seal("y", _ctx()), _ctx())
    assert lagging.ids == (1,)


def _ctx() -> SealContext:
    return SealContext(purpose="test", business_id="b", row_id="r", field="f")
