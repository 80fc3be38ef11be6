"""The migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, insert, select
from sqlmodel import SQLModel, col

from service.storage import models  # registers the tables
from service.storage.db import sync_url
from service.storage.migrate import upgrade


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrations_match_models(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if backend == "postgres":
        url = request.getfixturevalue("pg_server").create_database()
    else:
        url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    upgrade(url)  # a second run is a no-op
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata
            )
    finally:
        engine.dispose()
    assert diff == []


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_blob_table_is_filled_from_stored_recordings(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Audio stored before blobs had rows of their own is live, so no sweep frees it."""
    if backend == "postgres":
        url = request.getfixturevalue("pg_server").create_database()
    else:
        url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url, "0006")  # just before blobs had rows of their own
    shared, alone = "a" * 64, "b" * 64
    now = datetime.now(UTC)
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(insert(models.Account).values(id="acc", name="Acme", created_at=now))
            conn.execute(
                insert(models.Business).values(
                    id="biz", account_id="acc", name="Acme", slug="acme", created_at=now
                )
            )
            for n, (sha, size) in enumerate([(shared, 10), (shared, 10), (alone, 7), (None, None)]):
                conn.execute(
                    insert(models.Recording).values(
                        id=f"r{n}",
                        business_id="biz",
                        origin="upload",
                        source="upload",
                        external_id=f"d{n}",
                        call_at=now,
                        direction="in",
                        sha256=sha,
                        size=size,
                        processing_status="stored" if sha else "pending",
                    )
                )
        upgrade(url)
        with engine.connect() as conn:
            rows = conn.execute(
                select(col(models.Blob.sha256), col(models.Blob.size), col(models.Blob.unreferenced_since))
            )
            assert sorted(rows.all()) == [(shared, 10, None), (alone, 7, None)]
            # 0013 renames the status of stored audio to the mirrored API's "completed".
            statuses = conn.execute(select(col(models.Recording.id), col(models.Recording.processing_status)))
            assert dict(statuses.all()) == {
                "r0": "completed",
                "r1": "completed",
                "r2": "completed",
                "r3": "pending",
            }
    finally:
        engine.dispose()
