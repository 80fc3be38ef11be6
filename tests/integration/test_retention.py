"""Per-business retention deletes old recordings (and their unshared blobs) only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.recordings.retention import purge_expired, set_retention
from service.recordings.store import NewUpload
from service.storage.models import RecordingKey
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
                async with server.service.db.session() as session:
                    key = await session.get(RecordingKey, row.id)  # the sealed audio's blob
                assert key is not None
                made[f"{tenant.business_id}:{days}"] = key.blob_sha256
        return made

    blobs = server.call(seed())
    server.call(set_retention(server.service.db, pruned.business_id, 30))
    assert server.call(purge_expired(server.service.db, store)) == 1
    with server.http(pruned.business_key) as client:
        assert [i["dataId"] for i in client.get("/api/v1/recordings").json()["items"]] == ["d1"]
    with server.http(keeper.business_key) as client:
        assert sorted(i["dataId"] for i in client.get("/api/v1/recordings").json()["items"]) == ["d1", "d40"]
    assert server.call(server.service.sweeper.sweep()) >= 1  # the purge released the old audio
    assert server.call(server.service.blobs.stat(blobs[f"{pruned.business_id}:40"])) is None
    assert server.call(server.service.blobs.stat(blobs[f"{keeper.business_id}:40"])) is not None
    server.call(set_retention(server.service.db, pruned.business_id, None))
    assert server.call(purge_expired(server.service.db, store)) == 0


def test_retention_rejects_bad_values(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with pytest.raises(ValueError, match="at least 1 day"):
        server.call(set_retention(server.service.db, tenant.business_id, 0))
    with pytest.raises(ValueError, match="no business"):
        server.call(set_retention(server.service.db, "nope", 7))
