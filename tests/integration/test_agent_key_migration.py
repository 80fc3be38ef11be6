"""Recordings stored before agent keys existed get theirs from the migration that adds them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, select
from sqlmodel import col

from service.storage import models
from service.storage.db import sync_url
from service.storage.migrate import upgrade


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_existing_recordings_get_their_agent_key(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "postgres":
        url = request.getfixturevalue("pg_server").create_database()
    else:
        url = f"sqlite:///{tmp_path / 'm.db'}"
    upgrade(url, "0010")  # before agent keys
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
            for n, (number, name) in enumerate([("1001", "Alice"), ("", "Bob"), ("", "")]):
                conn.execute(
                    insert(models.Recording.__table__).values(  # type: ignore[attr-defined]
                        id=f"r{n}",
                        business_id="biz",
                        origin="upload",
                        source="upload",
                        external_id=f"d{n}",
                        call_at=now,
                        direction="in",
                        callcenter_number=number,
                        callcenter_name=name,
                    )
                )
        upgrade(url)
        with engine.connect() as conn:
            rows = conn.execute(
                select(col(models.Recording.id), col(models.Recording.agent_key)).order_by(
                    col(models.Recording.id)
                )
            )
            assert rows.all() == [("r0", "1001"), ("r1", "Bob"), ("r2", "")]
    finally:
        engine.dispose()
