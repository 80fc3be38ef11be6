"""Sealed secrets on a live database: reseal never undoes a concurrent PATCH and
upgrades format 1 values (sealed before origins were bound); PATCHes racing a move keep
the secrets openable."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import cast

import pytest
from sqlmodel import col, select, update

from service.admin import Admin, AdminError, reseal_all
from service.connectors.http import NetworkPolicy
from service.kinds import KINDS
from service.providers.store import ProviderStore, seal_context
from service.sealing import Keyring, SealBroken, add_key, generate_key
from service.storage.db import Database
from service.storage.migrate import upgrade
from service.storage.models import Provider, ProviderSecret
from tests.conftest import BACKENDS
from tests.support.seals import seal_v1

POLICY = NetworkPolicy(allow_private=True)
KEY1 = generate_key()


@dataclass
class Env:
    db: Database
    business: str
    ring: Keyring

    def store(self, ring: Keyring | None = None) -> ProviderStore:
        return ProviderStore(self.db, ring or self.ring, POLICY)

    async def create(self, n: int) -> list[str]:
        return [
            await self.store().create(
                self.business,
                kind="threecx",
                name=f"PBX {i}",
                config={"baseUrl": f"https://pbx-{i}.example.com", "username": "u", "password": f"pw-{i}-0"},
                is_active=True,
            )
            for i in range(n)
        ]

    async def secrets(self) -> list[ProviderSecret]:
        async with self.db.session() as session:
            return list((await session.exec(select(ProviderSecret).order_by(col(ProviderSecret.id)))).all())

    async def set_base_url(self, provider_id: str, base_url: str) -> None:
        """A host change written to the database directly, past the API's rules."""
        async with self.db.session() as session:
            row = await session.get(Provider, provider_id)
            assert row is not None
            await session.exec(
                update(Provider)
                .where(col(Provider.id) == provider_id)
                .values(settings={**row.settings, "baseUrl": base_url})
            )
            await session.commit()


@pytest.fixture(params=BACKENDS)
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    """A database of its own: reseal walks every row, so no other test's rows may be in it."""
    make_url = cast(Callable[[str], str], request.getfixturevalue("database_url_factory"))
    url = make_url(request.param)
    upgrade(url)
    db = Database(url)
    admin = Admin(db)
    account = await admin.create_account("Acme")
    business = await admin.create_business(account, "Acme", slug=f"acme-{uuid.uuid4().hex[:12]}")
    yield Env(db, business, Keyring({1: KEY1}, primary_id=1))
    await db.dispose()


@pytest.mark.parametrize("batch", [1, 8], ids=["row-by-row", "batched"])
async def test_reseal_never_undoes_a_racing_patch(env: Env, batch: int) -> None:
    providers, rounds = 24, 12
    ids = await env.create(providers)
    rotated = add_key(env.ring)
    # A rolling fleet: servers not yet given the new key keep sealing under the old one, so
    # rows keep coming back to the re-seal while their PATCHes land.
    patcher = env.store()
    rng = random.Random(7)

    async def patch_often(i: int, provider_id: str) -> None:
        for k in range(1, rounds + 1):
            await asyncio.sleep(rng.random() * 0.002)
            await patcher.update(
                env.business, provider_id, name=None, config={"password": f"pw-{i}-{k}"}, is_active=None
            )

    resealing = asyncio.create_task(reseal_all(env.db, rotated, batch=batch))
    await asyncio.gather(*(patch_often(i, p) for i, p in enumerate(ids)))
    await resealing
    await reseal_all(env.db, rotated, batch=1)  # whatever the race left behind, if anything

    for i, provider_id in enumerate(ids):
        _, config = await env.store(rotated).open_config(env.business, provider_id)
        assert config["password"] == f"pw-{i}-{rounds}", provider_id
    assert {(s.key_id, rotated.needs_reseal(s.sealed)) for s in await env.secrets()} == {(2, False)}


async def test_reseal_upgrades_format_1_values_and_binds_the_origin(env: Env) -> None:
    (first, second) = await env.create(2)
    kind = KINDS["threecx"]
    async with env.db.session() as session:
        row = (
            await session.exec(select(ProviderSecret).where(col(ProviderSecret.provider_id) == first))
        ).one()
        provider = await session.get(Provider, first)
        assert provider is not None
        ctx = seal_context(env.business, first, "password", kind=kind, settings=provider.settings)
        row.sealed = seal_v1(1, KEY1, "old-format-pw", ctx)
        session.add(row)
        await session.commit()
    store = env.store()
    assert (await store.open_config(env.business, first))[1]["password"] == "old-format-pw"

    # Format 1 bound no origin; until resealed it opens after a host change made past the API.
    await env.set_base_url(first, "https://moved.example.com")
    assert (await store.open_config(env.business, first))[1]["password"] == "old-format-pw"
    await env.set_base_url(first, "https://pbx-0.example.com")

    # The key is already primary: only the format makes it due, and the key id stays.
    assert await reseal_all(env.db, env.ring, batch=1) == 1
    assert await reseal_all(env.db, env.ring) == 0  # resumable: nothing left
    upgraded = {s.provider_id: s for s in await env.secrets()}
    assert upgraded[first].sealed[0] == 2 and upgraded[first].key_id == 1
    assert (await store.open_config(env.business, first))[1]["password"] == "old-format-pw"
    assert (await store.open_config(env.business, second))[1]["password"] == "pw-1-0"

    await env.set_base_url(first, "https://moved.example.com")
    with pytest.raises(SealBroken, match="password"):
        await store.open_config(env.business, first)


async def test_a_move_racing_another_patch_leaves_secrets_that_open(env: Env) -> None:
    """A move re-seals the secrets for the new origin; a PATCH of another setting that read
    the provider before the move committed must not write the old host back under them."""
    ids = await env.create(6)
    store = env.store()

    async def move(i: int, provider_id: str) -> None:
        for k in range(1, 6):
            config = {"baseUrl": f"https://pbx-{i}-{k}.example.com", "password": f"pw-{i}-{k}"}
            await store.update(env.business, provider_id, name=None, config=config, is_active=None)

    async def toggle(provider_id: str) -> None:
        for k in range(1, 11):
            config = {"headless": k % 2 == 0}
            await store.update(env.business, provider_id, name=None, config=config, is_active=None)

    await asyncio.gather(*(move(i, p) for i, p in enumerate(ids)), *(toggle(p) for p in ids))
    for i, provider_id in enumerate(ids):
        _, config = await store.open_config(env.business, provider_id)
        assert (config["baseUrl"], config["password"]) == (f"https://pbx-{i}-5.example.com", f"pw-{i}-5")
        assert config["headless"] is True


async def test_reseal_stops_with_a_clear_error_at_a_kind_it_does_not_know(env: Env) -> None:
    known, legacy = await env.create(2)
    async with env.db.session() as session:
        await session.exec(update(Provider).where(col(Provider.id) == legacy).values(kind="legacy"))
        await session.commit()
    rotated = add_key(env.ring)
    with pytest.raises(AdminError, match=f"provider {legacy} is of kind 'legacy'"):
        await reseal_all(env.db, rotated, batch=1)
    # What came before it is done, and stays done on the next run.
    assert {s.provider_id: s.key_id for s in await env.secrets()} == {known: 2, legacy: 1}
