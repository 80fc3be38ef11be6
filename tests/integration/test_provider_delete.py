"""Deleting a provider: its queued jobs end, audio it can no longer fetch is marked."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import col, select

from service.ids import uuid7
from service.storage.models import Recording, SyncJob
from tests.e2e.test_providers_rest import create
from tests.support.server import RunningServer


def test_delete_ends_queued_jobs_and_pending_audio(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        provider_id = create(client)

    async def seed() -> tuple[str, str, str]:
        async with server.service.db.session() as session:
            pending = Recording(
                id=uuid7(),
                business_id=tenant.business_id,
                origin=provider_id,
                provider_id=provider_id,
                source="threecx",
                external_id="1",
                call_at=datetime.now(UTC),
                direction="in",
                recording_ref="1",
            )
            stored = Recording(
                id=uuid7(),
                business_id=tenant.business_id,
                origin=provider_id,
                provider_id=provider_id,
                source="threecx",
                external_id="2",
                call_at=datetime.now(UTC),
                direction="in",
                processing_status="completed",
                sha256="a" * 64,
                size=3,
            )
            job = SyncJob(
                id=uuid7(), business_id=tenant.business_id, provider_id=provider_id, trigger="manual"
            )
            session.add_all([pending, stored, job])
            await session.commit()
            return pending.id, stored.id, job.id

    pending_id, stored_id, job_id = server.call(seed())
    with server.http(tenant.business_key) as client:
        assert client.delete(f"/api/v1/providers/{provider_id}").json() == {"ok": True}
        job = client.get(f"/api/v1/sync-jobs/{job_id}").json()
        assert (job["state"], job["error"]) == ("failed", "provider deleted")

    async def states() -> dict[str, tuple[str, str | None, str | None]]:
        async with server.service.db.session() as session:
            rows = await session.exec(select(Recording).where(col(Recording.id).in_([pending_id, stored_id])))
            return {r.id: (r.processing_status, r.last_error, r.provider_id) for r in rows.all()}

    assert server.call(states()) == {
        pending_id: ("failed", "provider deleted", None),
        stored_id: ("completed", None, None),
    }
