"""List totals: this process's writes show at once; other processes' writes show after
the TTL and one background recount, and no caller waits for a recount of a known total."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from service.ids import uuid7
from service.recordings.counts import CountCache
from service.recordings.query import build_query
from service.recordings.store import NewUpload, RecordingStore
from service.storage.models import Recording
from tests.support.server import RunningServer

QUERY = dict(
    limit=None,
    offset=0,
    direction="",
    source_provider="",
    provider_id="",
    call_date_from="",
    call_date_to="",
    customer_phone="",
    customer_phone_normalized="",
    search="",
    tag="",
    score_min=None,
    score_max=None,
    sort_by="",
    sort_dir="",
    tz=ZoneInfo("UTC"),
)


def test_totals_follow_writes(server: RunningServer) -> None:
    tenant = server.new_tenant()
    service = server.service
    store = RecordingStore(
        service.db,
        service.blobs,
        phone_region="TH",
        max_bytes=1 << 20,
        keyring=service.keyring,
        counts=CountCache(ttl=0.2),
    )
    query = build_query(**QUERY)  # type: ignore[arg-type]

    async def scenario() -> list[int]:
        seen = []
        await store.register_upload(tenant.business_id, NewUpload("a", datetime.now(UTC), "in"))
        seen.append((await store.search(tenant.business_id, query))[1])  # 1
        await store.register_upload(tenant.business_id, NewUpload("b", datetime.now(UTC), "in"))
        seen.append((await store.search(tenant.business_id, query))[1])  # 2: our own write shows at once
        async with service.db.session() as session:  # a write by another process
            session.add(
                Recording(
                    id=uuid7(),
                    business_id=tenant.business_id,
                    origin="upload",
                    source="upload",
                    external_id="c",
                    call_at=datetime.now(UTC),
                    direction="in",
                )
            )
            await session.commit()
        seen.append((await store.search(tenant.business_id, query))[1])  # 2: still fresh
        await asyncio.sleep(0.3)
        seen.append((await store.search(tenant.business_id, query))[1])  # 2: stale, recount started
        await asyncio.sleep(0.2)
        seen.append((await store.search(tenant.business_id, query))[1])  # 3
        return seen

    assert server.call(scenario()) == [1, 2, 2, 2, 3]
