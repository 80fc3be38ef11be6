"""Write-only secrets: never in an answer, a log line, or the database in plaintext."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import httpx
import pytest
from callvault.v1 import recordings_pb2, recordings_pb2_grpc
from sqlalchemy import create_engine, text
from sqlmodel import col, select, update

from service.sealing import SealBroken
from service.storage.db import sync_url
from service.storage.models import Provider, ProviderSecret
from tests.conftest import BACKENDS
from tests.e2e.test_providers_rest import SEED_CREATE, create
from tests.e2e.test_recordings_api import register, upload
from tests.e2e.test_sync import eventually, finished
from tests.fakes.threecx import FakeThreeCX
from tests.support.process import ServerProcess
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


PULLED_PHONE = "0897654321"  # a caller the fake PBX reports
UPLOADED_PHONE = "0865551234"  # a customer an uploader names


def _sealed_values(database_url: str) -> list[bytes]:
    engine = create_engine(sync_url(database_url))
    try:
        with engine.connect() as conn:
            return [bytes(row[0]) for row in conn.execute(text("SELECT sealed FROM providersecret"))]
    finally:
        engine.dispose()


def _logged_text(raw: str) -> str:
    """The log as written, plus every JSON line's values decoded (a repr inside a JSON
    string has its backslashes doubled)."""
    decoded: list[str] = []
    for line in raw.splitlines():
        try:
            decoded.extend(str(v) for v in json.loads(line).values())
        except ValueError:
            continue
    return raw + "\n".join(decoded)


@pytest.mark.parametrize("backend", BACKENDS)
def test_debug_logs_hold_no_secret_or_call_data(
    tmp_path: Path, backend: str, database_url_factory: object
) -> None:
    """CALLVAULT_LOG_LEVEL=DEBUG, the real process: a provider's password, the API key,
    its hash, the sealed bytes and the phone numbers stored are nowhere in the log,
    while callvault's own call lines are."""
    url = database_url_factory(backend)  # type: ignore[operator]
    server = ServerProcess(
        tmp_path / "data",
        CALLVAULT_LOG_LEVEL="DEBUG",
        CALLVAULT_DATABASE_URL=url,
        CALLVAULT_ALLOW_PRIVATE_NETWORKS="1",
        CALLVAULT_SYNC_TICK_SECONDS="0.2",
    )
    (tmp_path / "data").mkdir()
    key = json.loads(server.cli("bootstrap", "--name", "Leak Check").stdout)["apiKey"]
    server.start()
    try:
        with (
            FakeThreeCX(client_secret=PASSWORD) as fake,
            httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}) as client,
        ):
            fake.add_call(datetime.now(UTC) - timedelta(hours=1), from_number=PULLED_PHONE, size=4000)
            config = {"baseUrl": fake.base_url, "username": fake.client_id, "password": PASSWORD}
            provider_id = create(client, {"kind": "threecx", "name": "Leak PBX", "config": config})
            assert client.post(f"/api/v1/providers/{provider_id}/test").json() == {"ok": True}
            job = client.post(f"/api/v1/providers/{provider_id}/sync").json()
            # The scheduled first pull may be the one that stores it: wait for the call to show.
            assert finished(client, job["id"])["state"] == "succeeded"
            listed = {"customerPhone": PULLED_PHONE}
            eventually(lambda: client.get("/api/v1/recordings", params=listed).json()["total"] == 1)
            rec = register(client, dataId="leak-1", customerPhone=UPLOADED_PHONE, note="call back")
            assert upload(client, rec["id"], b"RIFF-leak-check").status_code == 200
            with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
                found = recordings_pb2_grpc.RecordingServiceStub(channel).ListRecordings(
                    recordings_pb2.ListRecordingsRequest(customer_phone=UPLOADED_PHONE),
                    metadata=[("authorization", f"Bearer {key}")],
                )
            assert found.total == 1
    finally:
        assert server.stop() == 0
    sealed = _sealed_values(url)
    assert len(sealed) == 1
    logged = _logged_text(server.output())
    assert '"rpc_method": "/callvault.v1.ProviderService/TestProvider"' in logged  # the log was written
    forbidden = [
        PASSWORD,
        key,
        key[len("crk_") :],
        hashlib.sha256(key.encode()).hexdigest(),
        PULLED_PHONE,
        "+66" + PULLED_PHONE[1:],
        UPLOADED_PHONE,
        "+66" + UPLOADED_PHONE[1:],
        "Bearer",  # no header of ours or of the provider's, whoever's token it carried
    ]
    for value in sealed:
        forbidden += [value.hex(), base64.b64encode(value).decode(), repr(value), repr(value)[2:-1]]
    leaked = [item for item in forbidden if item.lower() in logged.lower()]
    assert leaked == []


def _modes(*paths: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in paths}


def test_sqlite_files_are_owner_only(tmp_path: Path) -> None:
    """A fresh data dir: the database and its -wal/-shm files are 0600 and the folders
    made for them are not open to others; an existing database open to others is tightened."""
    data_dir = tmp_path / "fresh" / "data"
    db = data_dir / "callvault.db"
    side = [db.with_name("callvault.db-wal"), db.with_name("callvault.db-shm")]
    server = ServerProcess(data_dir, CALLVAULT_SYNC_ENABLED="0")
    server.log = tmp_path / "server.log"  # the log beside, not in, the folder under test
    old_umask = os.umask(0o022)  # what most hosts run with: files 0644 unless asked otherwise
    try:
        key = json.loads(server.cli("bootstrap", "--name", "Modes").stdout)["apiKey"]
        server.start()
        with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}) as client:
            create(client)  # a write through the server's own connections: WAL and SHM in use
            assert _modes(db, *side) == {db.name: 0o600, side[0].name: 0o600, side[1].name: 0o600}
            assert _modes(data_dir, data_dir.parent) == {"data": 0o750, "fresh": 0o750}
        assert server.stop() == 0

        for path in (db, *side):
            if path.exists():
                path.chmod(0o644)
        server.start()
        with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}) as client:
            assert len(client.get("/api/v1/providers").json()["items"]) == 1  # the same database
            assert {m for m in _modes(db, *side).values()} == {0o600}
    finally:
        server.stop()
        os.umask(old_umask)


def test_sealed_value_does_not_open_under_another_host(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        first = create(client)
        elsewhere = {**SEED_CREATE["config"], "baseUrl": "https://other.example.com"}
        second = create(client, {**SEED_CREATE, "name": "Second", "config": elsewhere})

    async def sealed_of(provider_id: str) -> bytes:
        async with server.service.db.session() as session:
            query = select(ProviderSecret).where(col(ProviderSecret.provider_id) == provider_id)
            return (await session.exec(query)).one().sealed

    async def write(provider_id: str, *, sealed: bytes | None = None, base_url: str | None = None) -> None:
        async with server.service.db.session() as session:
            if sealed is not None:
                await session.exec(
                    update(ProviderSecret)
                    .where(col(ProviderSecret.provider_id) == provider_id)
                    .values(sealed=sealed)
                )
            if base_url is not None:
                row = await session.get(Provider, provider_id)
                assert row is not None
                row.settings = {**row.settings, "baseUrl": base_url}
                session.add(row)
            await session.commit()

    providers = server.service.providers
    # Copied to a provider on another host: does not open.
    server.call(write(second, sealed=server.call(sealed_of(first))))
    with pytest.raises(SealBroken, match="password"):
        server.call(providers.open_config(tenant.business_id, second))
    # Left in place while the host is changed behind the API's back: does not open either,
    # and opens again once the provider points back where the secret was saved for.
    server.call(write(first, base_url="https://attacker.example.com"))
    with pytest.raises(SealBroken, match="wrong origin"):
        server.call(providers.open_config(tenant.business_id, first))
    with server.http(tenant.business_key) as client:
        answer = client.post(f"/api/v1/providers/{first}/test")
        assert answer.status_code != 200 and "s3cret" not in answer.text  # never tried at the new host
    server.call(write(first, base_url="https://pbx.example.com"))
    assert server.call(providers.open_config(tenant.business_id, first))[1]["password"] == "s3cret"
