"""Every stored row of one business, to show that a refused call changed nothing."""

from __future__ import annotations

from typing import Any

from sqlmodel import SQLModel, col, select

from service.storage.models import AuditEvent, Provider, ProviderSecret, ProviderSync, Recording, SyncJob
from tests.support.server import RunningServer

# AuditEvent too: a refused call is never recorded as done.
TABLES: tuple[type[SQLModel], ...] = (Provider, ProviderSecret, ProviderSync, Recording, SyncJob, AuditEvent)


def business_rows(server: RunningServer, business_id: str) -> dict[str, list[dict[str, Any]]]:
    """Table name -> the business's rows as plain dicts, in primary-key order."""

    async def read() -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        async with server.service.db.session() as session:
            for table in TABLES:
                business = col(table.business_id)  # type: ignore[attr-defined]
                rows = (await session.exec(select(table).where(business == business_id))).all()
                dumped = [row.model_dump() for row in rows]
                out[table.__name__] = sorted(dumped, key=lambda row: str(row.get("id") or row))
        return out

    return server.call(read())
