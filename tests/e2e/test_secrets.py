"""Write-only secrets: never in an answer, a log line, or the database in plaintext."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest
from sqlmodel import col, select

from service.sealing import SealBroken
from service.storage.models import ProviderSecret
from tests.e2e.test_providers_rest import SEED_CREATE, create
from tests.support.server import RunningServer, server_settings

PASSWORD = "pw-4f9c1d7e-never-shown"


def test_no_secret_in_any_answer_or_log(server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tenant = server.new_tenant()
    body = {**SEED_CREATE, "config": {**SEED_CREATE["config"], "password": PASSWORD}}
    with server.http(tenant.business_key) as client:
        provider_id = create(client, body)
        answers = [
            client.get("/api/v1/providers"),
            client.get(f"/api/v1/providers/{provider_id}"),
            client.patch(f"/api/v1/providers/{provider_id}", json={"config": {"password": PASSWORD + "2"}}),
            client.patch(f"/api/v1/providers/{provider_id}", json={"config": {"password": 5}}),
            client.patch(f"/api/v1/providers/{provider_id}", json={"config": {"password": PASSWORD, "x": 1}}),
            client.post("/api/v1/providers", json={**body, "name": "x"}),
        ]
    for answer in answers:
        assert PASSWORD not in answer.text
    assert (
        answers[3].status_code == 400 and answers[3].json()["message"] == "config.password: must be a string"
    )
    everything_logged = caplog.text + "".join(str(vars(record)) for record in caplog.records)
    assert PASSWORD not in everything_logged
    methods = {getattr(record, "rpc_method", None) for record in caplog.records}
    assert "/callvault.v1.ProviderService/CreateProvider" in methods  # the call lines were there to read


def test_database_file_holds_no_plaintext(tmp_path: Path) -> None:
    db_path = tmp_path / "cv.db"
    running = RunningServer(server_settings(tmp_path, f"sqlite+aiosqlite:///{db_path}")).start()
    try:
        tenant = running.new_tenant()
        body = {**SEED_CREATE, "config": {**SEED_CREATE["config"], "password": PASSWORD}}
        with running.http(tenant.business_key) as client:
            create(client, body)
    finally:
        running.stop()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("cv.db*"))
    assert PASSWORD.encode() not in raw
    assert tenant.business_key.encode() not in raw
    assert b"apiuser" in raw  # the non-secret settings are there: the scan reads real data
    rows = (
        sqlite3.connect(db_path)
        .execute("SELECT field, key_id, length(sealed) FROM providersecret")
        .fetchall()
    )
    assert rows == [("password", 1, 1 + 4 + 12 + len(PASSWORD) + 16)]


def test_sealed_value_copied_to_another_row_does_not_open(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        first = create(client)
        second = create(client, {**SEED_CREATE, "name": "Second"})

    async def copy_secret() -> None:
        async with server.service.db.session() as session:
            query = select(ProviderSecret).where(col(ProviderSecret.provider_id) == first)
            source = (await session.exec(query)).one()
            target = (
                await session.exec(select(ProviderSecret).where(col(ProviderSecret.provider_id) == second))
            ).one()
            target.sealed = source.sealed
            session.add(target)
            await session.commit()

    server.call(copy_secret())
    with pytest.raises(SealBroken) as raised:
        server.call(server.service.providers.open_config(tenant.business_id, second))
    assert "password" in str(raised.value)
    _, config = server.call(server.service.providers.open_config(tenant.business_id, first))
    assert config["password"] == "s3cret"
