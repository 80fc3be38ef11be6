"""List totals. A filtered total: this process's writes show at once; other processes'
writes show after the TTL and one background recount, and no caller waits for a recount
of a known total. The unfiltered total is the business's trigger-kept row: every write,
from any process, shows at once, and no COUNT runs."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import event

from service.ids import uuid7
from service.recordings.counts import CountCache
from service.recordings.query import build_query
from service.recordings.store import NewUpload, RecordingStore
from service.storage.models import Recording
from tests.support.server import RunningServer

QUERY = dict(
    limit=None,
    offset=0,
    direction="in",
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
        service.db, service.blobs, phone_region="TH", max_bytes=1 << 20, counts=CountCache(ttl=0.2)
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


def test_unfiltered_total_follows_every_write_at_once_without_counting(server: RunningServer) -> None:
    tenant = server.new_tenant()
    service = server.service
    store = RecordingStore(service.db, service.blobs, phone_region="TH", max_bytes=1 << 20)
    query = build_query(**{**QUERY, "direction": ""})  # type: ignore[arg-type]
    statements: list[str] = []

    def seen_sql(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    async def scenario() -> list[int]:
        seen = []
        seen.append((await store.search(tenant.business_id, query))[1])  # 0: no row yet
        first, _ = await store.register_upload(tenant.business_id, NewUpload("a", datetime.now(UTC), "in"))
        seen.append((await store.search(tenant.business_id, query))[1])  # 1
        async with service.db.session() as session:  # a write by another process
            session.add(
                Recording(
                    id=uuid7(),
                    business_id=tenant.business_id,
                    origin="upload",
                    source="upload",
                    external_id="c",
                    call_at=datetime.now(UTC),
                    direction="out",
                )
            )
            await session.commit()
        seen.append((await store.search(tenant.business_id, query))[1])  # 2 at once
        await store.delete(tenant.business_id, first.id)
        seen.append((await store.search(tenant.business_id, query))[1])  # 1
        return seen

    engine = service.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen_sql)
    try:
        assert server.call(scenario()) == [0, 1, 2, 1]
    finally:
        event.remove(engine, "before_cursor_execute", seen_sql)
    counts = [s for s in statements if re.search(r"count\(.*\bfrom recording\b", s, re.I | re.S)]
    assert statements and not counts
