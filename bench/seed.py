"""Data for the server under test, written with the project's own code before it starts:
tenants and keys (service.admin.Admin), providers (ProviderStore, secrets sealed as the
server seals them), and recordings in bulk (SQLAlchemy core executemany into SQLite)."""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, text

from service.admin import Admin
from service.auth import Scope
from service.config import Settings
from service.connectors.http import NetworkPolicy
from service.ids import uuid7
from service.keys import load_keyring
from service.providers.store import ProviderStore, kind_of, seal_context
from service.recordings.query import TAGS
from service.storage.db import Database, sync_url
from service.storage.migrate import upgrade
from service.storage.models import Provider, ProviderSecret, Recording

INSERT_BATCH = 20_000
ROWS_PER_PHONE = 100  # each customer number has about this many calls
SPAN_DAYS = 365  # calls spread over the last year


@dataclass(frozen=True, slots=True)
class Tenant:
    account_id: str
    business_id: str
    key: str  # a business key with every scope


@dataclass(frozen=True, slots=True)
class RecordingSet:
    """One business holding `rows` recordings, and values its filters can use."""

    tenant: Tenant
    rows: int
    phone: str  # a customer_phone_normalized with about ROWS_PER_PHONE calls
    day: str  # a calendar day (business time zone) inside the span


# A database other than the data dir's SQLite file for the provider figures (1, 2, 6, 7),
# e.g. a PostgreSQL URL; the same variable reaches the servers (bench/servers.py).
DATABASE_URL_VAR = "CALLVAULT_BENCH_DATABASE_URL"


def settings_for(data_dir: Path) -> Settings:
    env = {"CALLVAULT_DATA_DIR": str(data_dir)}
    if os.environ.get(DATABASE_URL_VAR):
        env["CALLVAULT_DATABASE_URL"] = os.environ[DATABASE_URL_VAR]
    return Settings.from_env(env)


def prepare(data_dir: Path) -> str:
    """The schema at its latest migration; returns the database URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    url = settings_for(data_dir).resolved_database_url
    upgrade(url)
    return url


async def _tenants(db: Database, names: list[str]) -> list[Tenant]:
    admin = Admin(db)
    account = await admin.create_account("Bench")
    made = []
    for name in names:
        business = await admin.create_business(account, name, slug=f"bench-{name.lower()}-{uuid7()[-12:]}")
        key = await admin.create_key(
            account_id=account, business_id=business, scopes=[Scope.MANAGE_ALL], name="bench"
        )
        made.append(Tenant(account, business, key.plaintext))
    return made


def make_tenants(data_dir: Path, names: list[str]) -> list[Tenant]:
    url = prepare(data_dir)

    async def run() -> list[Tenant]:
        db = Database(url)
        try:
            return await _tenants(db, names)
        finally:
            await db.dispose()

    return asyncio.run(run())


def seed_providers(data_dir: Path, count: int) -> tuple[Tenant, list[str]]:
    """A business with `count` 3CX providers, sealed with the data dir's dev key file
    (the one the server will load)."""
    url = prepare(data_dir)
    settings = settings_for(data_dir)
    keyring = load_keyring(settings)

    async def run() -> tuple[Tenant, list[str]]:
        db = Database(url)
        try:
            (tenant,) = await _tenants(db, ["Providers"])
            store = ProviderStore(db, keyring, NetworkPolicy())
            ids = [
                await store.create(
                    tenant.business_id,
                    kind="threecx",
                    name=f"PBX {i:04d}",
                    config={
                        "baseUrl": f"https://pbx{i}.example.com",
                        "username": f"apiuser{i}",
                        "password": f"s3cret-{i}",
                    },
                    is_active=True,
                )
                for i in range(count)
            ]
            return tenant, ids
        finally:
            await db.dispose()

    return asyncio.run(run())


def _rows(
    business_id: str, start: int, stop: int, n: int, base: datetime, rng: random.Random
) -> list[dict[str, Any]]:
    phones = max(1, n // ROWS_PER_PHONE)
    span = SPAN_DAYS * 86_400
    rows = []
    for i in range(start, stop):
        call_at = base + timedelta(seconds=rng.random() * span)
        phone = rng.randrange(phones)
        direction = "in" if rng.random() < 0.5 else "out"
        tag = rng.choice(TAGS) if rng.random() < 0.6 else None
        national = f"08{phone:08d}"
        rows.append(
            {
                "id": uuid7(),
                "business_id": business_id,
                "origin": "upload",
                "provider_id": None,
                "source": "upload",
                "external_id": f"bench-{i}",
                "call_at": call_at,
                "duration_seconds": round(rng.random() * 600, 1),
                "direction": direction,
                "outcome": "answered",
                "caller": national if direction == "in" else "1001",
                "callee": "1001" if direction == "in" else national,
                "customer_phone": national,
                "customer_phone_normalized": f"+668{phone:08d}",
                "callcenter_number": "1001",
                "callcenter_name": "Front desk",
                "tag": tag,
                "score": round(rng.random() * 100, 1) if tag else None,
                "note": "",
                "processing_status": "stored",
                "recording_ref": None,
                "content_type": "audio/wav",
                "size": 480_000 + i % 1000,
                "sha256": f"{i:064x}",
                "attempts": 0,
                "last_error": None,
                "created_at": call_at,
                "updated_at": call_at,
            }
        )
    return rows


def add_recordings(
    url: str, business_id: str, start: int, stop: int, n: int, base: datetime, rng: random.Random
) -> None:
    """Recordings start..stop of a business that will hold `n` (its phones and span), in
    bulk executemany batches on one connection, without fsync (a bench's scratch copy)."""
    engine = create_engine(sync_url(url))
    begun = time.monotonic()
    try:
        with engine.connect() as conn:
            conn.execute(text("PRAGMA synchronous=OFF"))
            conn.execute(text("PRAGMA cache_size=-262144"))
            for first in range(start, stop, INSERT_BATCH):
                last = min(stop, first + INSERT_BATCH)
                conn.execute(insert(Recording), _rows(business_id, first, last, n, base, rng))
                conn.commit()
                if stop - start >= 200_000 and ((first - start) // INSERT_BATCH) % 10 == 9:
                    print(
                        f"  seeded {last - start:,}/{stop - start:,} rows ({time.monotonic() - begun:.0f}s)",
                        flush=True,
                    )
            conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    finally:
        engine.dispose()


def span_start() -> datetime:
    """The first instant of the seeded calls' year."""
    return datetime.now(UTC).replace(microsecond=0) - timedelta(days=SPAN_DAYS)


def seed_recordings(data_dir: Path, sizes: list[int]) -> list[RecordingSet]:
    """One business per size, each holding that many recordings (bulk executemany)."""
    url = prepare(data_dir)
    tenants = make_tenants(data_dir, [f"Rows{n}" for n in sizes])
    base = span_start()
    sets = []
    for tenant, n in zip(tenants, sizes, strict=True):
        add_recordings(url, tenant.business_id, 0, n, n, base, random.Random(n))
        mid = base + timedelta(days=SPAN_DAYS // 2)
        sets.append(RecordingSet(tenant, n, phone="+66800000001", day=mid.date().isoformat()))
    return sets


def add_providers(data_dir: Path, tenant: Tenant, start: int, stop: int) -> list[str]:
    """3CX providers start..stop of the tenant's business, sealed as ProviderStore.create
    seals them (the same kind spec and keyring), inserted in bulk: 100,000 in seconds."""
    url = prepare(data_dir)
    keyring = load_keyring(settings_for(data_dir))
    spec, policy = kind_of("threecx"), NetworkPolicy()
    providers: list[dict[str, Any]] = []
    secrets: list[dict[str, Any]] = []
    now = datetime.now(UTC)
    for i in range(start, stop):
        clean = spec.validate(
            {"baseUrl": f"https://pbx{i}.example.com", "username": f"apiuser{i}", "password": f"s3cret-{i}"},
            policy=policy,
        )
        settings, secret_values = spec.split(clean)
        provider_id = uuid7()
        providers.append(
            {
                "id": provider_id,
                "business_id": tenant.business_id,
                "kind": spec.name,
                "name": f"PBX {i:06d}",
                "is_active": True,
                "settings": settings,
                "created_at": now,
                "updated_at": now,
            }
        )
        for field, value in secret_values.items():
            sealed = keyring.seal(
                str(value), seal_context(tenant.business_id, provider_id, field, kind=spec, settings=settings)
            )
            secrets.append(
                {
                    "provider_id": provider_id,
                    "business_id": tenant.business_id,
                    "field": field,
                    "key_id": keyring.key_id_of(sealed),
                    "sealed": sealed,
                }
            )
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            for batch in range(0, len(providers), INSERT_BATCH):
                conn.execute(insert(Provider), providers[batch : batch + INSERT_BATCH])
            for batch in range(0, len(secrets), INSERT_BATCH):
                conn.execute(insert(ProviderSecret), secrets[batch : batch + INSERT_BATCH])
    finally:
        engine.dispose()
    return [p["id"] for p in providers]
