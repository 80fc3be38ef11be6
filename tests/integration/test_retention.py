"""Retention per business and per provider deletes old recordings (and their unshared blobs)
only, and keeps held ones."""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from service.ids import uuid7
from service.recordings.retention import purge_expired, set_provider_retention, set_retention
from service.recordings.store import NewUpload
from service.storage.models import ProviderSettings, Recording
from tests.e2e.test_providers_rest import SEED_CREATE, create
from tests.support.server import RunningServer


def test_retention_purges_only_old_recordings_of_that_business(server: RunningServer) -> None:
    keeper = server.new_tenant("Keeper")
    pruned = server.new_tenant("Pruned")
    store = server.service.recordings
    now = datetime.now(UTC)

    async def chunks(data: bytes):  # type: ignore[no-untyped-def]
        yield data

    async def seed() -> dict[str, str]:
        made = {}
        for tenant in (keeper, pruned):
            for days in (1, 40):
                row, _ = await store.register_upload(
                    tenant.business_id,
                    NewUpload(data_id=f"d{days}", call_at=now - timedelta(days=days), direction="in"),
                )
                audio = f"{tenant.business_id}-{days}".encode() * 100
                await store.store_upload(tenant.business_id, row.id, chunks(audio))
                made[f"{tenant.business_id}:{days}"] = hashlib.sha256(audio).hexdigest()
        return made

    blobs = server.call(seed())
    server.call(set_retention(server.service.db, pruned.business_id, 30))
    assert server.call(purge_expired(server.service.db, store)).purged == 1
    with server.http(pruned.business_key) as client:
        assert [i["dataId"] for i in client.get("/api/v1/recordings").json()["items"]] == ["d1"]
    with server.http(keeper.business_key) as client:
        assert sorted(i["dataId"] for i in client.get("/api/v1/recordings").json()["items"]) == ["d1", "d40"]
    assert server.call(server.service.sweeper.sweep()) >= 1  # the purge released the old audio
    assert server.call(server.service.blobs.stat(blobs[f"{pruned.business_id}:40"])) is None
    assert server.call(server.service.blobs.stat(blobs[f"{keeper.business_id}:40"])) is not None
    server.call(set_retention(server.service.db, pruned.business_id, None))
    assert server.call(purge_expired(server.service.db, store)).purged == 0


def test_retention_rejects_bad_values(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with pytest.raises(ValueError, match="at least 1 day"):
        server.call(set_retention(server.service.db, tenant.business_id, 0))
    with pytest.raises(ValueError, match="no business"):
        server.call(set_retention(server.service.db, "nope", 7))


def _metric(server: RunningServer, name: str) -> float:
    lines = httpx.get(f"{server.http_base}/metrics").text.splitlines()
    return float(next(line.split()[1] for line in lines if line.startswith(name + " ")))


def test_a_provider_period_overrides_the_business_and_holds_are_kept(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Business 30 days; provider `short` 7 days, provider `long` 90 days, provider
    `plain` none of its own; uploads follow the business. Held recordings stay, counted."""
    tenant = server.new_tenant("Periods")
    db, store = server.service.db, server.service.recordings
    with server.http(tenant.business_key) as client:
        short, long, plain = (
            create(client, {**SEED_CREATE, "name": name}) for name in ("Short", "Long", "Plain")
        )
    now = datetime.now(UTC)
    ages = (3, 10, 40, 100)

    async def seed() -> dict[tuple[str, int], str]:
        made = {}
        async with db.session() as session:
            for provider_id in (short, long, plain, None):
                for days in ages:
                    origin = provider_id or "upload"
                    row = Recording(
                        id=uuid7(),
                        business_id=tenant.business_id,
                        origin=origin,
                        provider_id=provider_id,
                        source="threecx" if provider_id else "upload",
                        external_id=f"{origin}-{days}",
                        call_at=now - timedelta(days=days),
                        direction="in",
                    )
                    session.add(row)
                    made[(provider_id or "upload", days)] = row.id
            await session.commit()
        return made

    async def remaining(made: dict[tuple[str, int], str]) -> set[tuple[str, int]]:
        async with db.session() as session:
            return {key for key, recording_id in made.items() if await session.get(Recording, recording_id)}

    made = server.call(seed())
    held = [made[(short, 10)], made[(long, 100)], made[("upload", 40)]]
    for recording_id in held:
        server.call(server.service.holds.place(tenant.business_id, recording_id, "audit 2026"))
    server.call(set_retention(db, tenant.business_id, 30))
    server.call(set_provider_retention(db, short, 7))
    server.call(set_provider_retention(db, long, 90))
    try:
        held_before = _metric(server, "callvault_retention_held_total")
        purged_before = _metric(server, "callvault_retention_purged_total")
        with caplog.at_level(logging.INFO, logger="callvault.retention"):
            run = server.call(purge_expired(db, store))
        logged = [r for r in caplog.records if getattr(r, "business_id", None) == tenant.business_id]
        assert [(r.getMessage(), vars(r)["recordings"], vars(r)["held"]) for r in logged] == [
            ("retention purge", 5, 3)
        ]
        assert _metric(server, "callvault_retention_held_total") - held_before >= 3
        assert _metric(server, "callvault_retention_purged_total") - purged_before >= 5
        kept = server.call(remaining(made))
        assert kept == {
            (short, 3),
            (short, 10),  # 10 days: held
            (long, 3),
            (long, 10),
            (long, 40),
            (long, 100),  # 100 days: held
            (plain, 3),
            (plain, 10),
            ("upload", 3),
            ("upload", 10),
            ("upload", 40),  # 40 days: held
        }
        assert (run.purged, run.held) == (5, 3)
        # off: the provider follows its business again.
        server.call(set_provider_retention(db, long, None))
        run = server.call(purge_expired(db, store))
        assert (run.purged, run.held) == (1, 3)  # long's 40-day recording; the 100-day one is held
        server.call(server.service.holds.release(tenant.business_id, made[(long, 100)]))
        assert server.call(purge_expired(db, store)).purged == 1
    finally:
        server.call(set_retention(db, tenant.business_id, None))
        for provider_id in (short, long):
            server.call(set_provider_retention(db, provider_id, None))


def test_provider_retention_rejects_bad_values(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        provider_id = create(client)
    with pytest.raises(ValueError, match="at least 1 day"):
        server.call(set_provider_retention(server.service.db, provider_id, 0))
    with pytest.raises(ValueError, match="no provider"):
        server.call(set_provider_retention(server.service.db, "nope", 7))


def test_a_deleted_providers_period_goes_with_it(server: RunningServer) -> None:
    tenant = server.new_tenant()
    db = server.service.db
    with server.http(tenant.business_key) as client:
        provider_id = create(client)
        server.call(set_provider_retention(db, provider_id, 5))
        assert client.delete(f"/api/v1/providers/{provider_id}").status_code == 200

    async def period() -> ProviderSettings | None:
        async with db.session() as session:
            return await session.get(ProviderSettings, provider_id)

    assert server.call(period()) is None
