"""The access audit log end to end, on both databases: every audited action appears once,
over REST and gRPC, with its key, range, transport and request id; listing filters and
pages; scope and tenancy hold; no key material is ever in an event; a read or change whose
event cannot be written is refused and changes nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from callvault.v1 import audit_pb2, audit_pb2_grpc, providers_pb2, providers_pb2_grpc, recordings_pb2_grpc
from callvault.v1 import recordings_pb2 as rpb
from sqlalchemy import create_engine, text
from sqlmodel import col, select

from service.audit.chain import verify_all
from service.auth import Scope, hash_key
from service.ids import uuid7
from service.recordings.retention import purge_expired, set_retention
from service.storage.db import sync_url
from service.storage.models import AuditEvent, Recording
from tests.e2e.test_cli import base_env, run
from tests.e2e.test_recordings_api import register, upload
from tests.support.grpc_errors import error_info
from tests.support.server import RunningServer, Tenant

PROVIDER = {
    "kind": "threecx",
    "name": "Main PBX",
    "config": {"baseUrl": "https://pbx.example.com", "username": "apiuser", "password": "s3cret"},
}


def named_key(server: RunningServer, tenant: Tenant, name: str, *scopes: Scope) -> tuple[str, str]:
    """A business key with a name: (its id, its plaintext)."""
    created = server.call(
        server.admin().create_key(
            account_id=tenant.account_id,
            business_id=tenant.business_id,
            scopes=scopes or (Scope.MANAGE_ALL,),
            name=name,
        )
    )
    return created.id, created.plaintext


def events(server: RunningServer, key: str, **params: Any) -> list[dict[str, Any]]:
    """Every page of GET /api/v1/audit-events, newest first."""
    found: list[dict[str, Any]] = []
    token = ""
    with server.http(key) as client:
        while True:
            answer = client.get("/api/v1/audit-events", params={**params, "pageToken": token})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            found.extend(body["items"])
            token = body["nextPageToken"]
            if not token:
                return found


def md(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def stored_recording(server: RunningServer, key: str, audio: bytes, data_id: str = "call-1") -> str:
    with server.http(key) as client:
        created = register(client, dataId=data_id)
        assert upload(client, created["id"], audio).status_code == 200
    return str(created["id"])


def test_audio_reads_are_recorded_on_both_transports_with_their_range(server: RunningServer) -> None:
    tenant = server.new_tenant()
    key_id, key = named_key(server, tenant, "QA listener")
    audio = os.urandom(50_000)
    recording = stored_recording(server, tenant.business_key, audio)
    with server.http(key) as client:
        whole = client.get(f"/api/v1/recordings/{recording}/audio")
        part = client.get(f"/api/v1/recordings/{recording}/audio", headers={"Range": "bytes=100-199"})
        assert (whole.status_code, part.status_code) == (200, 206)
    with server.channel() as channel:
        stub = recordings_pb2_grpc.RecordingServiceStub(channel)
        stream = stub.DownloadRecording(
            rpb.DownloadRecordingRequest(id=recording, offset=1000, length=500), metadata=md(key)
        )
        assert b"".join(c.data for c in stream) == audio[1000:1500]
        grpc_request_id = dict(stream.trailing_metadata())["x-request-id"]

    reads = events(server, tenant.business_key, action="recording.audio.read")
    assert [(e["transport"], e["rangeStart"], e["rangeEnd"]) for e in reads] == [
        ("grpc", 1000, 1500),
        ("rest", 100, 200),
        ("rest", 0, len(audio)),
    ]
    assert [e["requestId"] for e in reads] == [
        grpc_request_id,
        part.headers["x-request-id"],
        whole.headers["x-request-id"],
    ]
    for event in reads:
        assert (event["keyId"], event["keyName"]) == (key_id, "QA listener")
        assert (event["targetKind"], event["targetId"]) == ("recording", recording)
    assert server.call(verify_all(server.service.db, tenant.business_id))[0].broken is None


def test_provider_changes_and_syncs_are_recorded_on_both_transports(server: RunningServer) -> None:
    tenant = server.new_tenant()
    key_id, key = named_key(server, tenant, "ops")
    with server.http(key) as client:
        rest_id = client.post("/api/v1/providers", json=PROVIDER).json()["id"]
        assert client.patch(f"/api/v1/providers/{rest_id}", json={"name": "Renamed"}).json() == {"ok": True}
        assert client.post(f"/api/v1/providers/{rest_id}/sync").status_code == 200
        assert client.delete(f"/api/v1/providers/{rest_id}").json() == {"ok": True}
        # A refused change is no event.
        assert client.patch(f"/api/v1/providers/{rest_id}", json={"name": "x"}).status_code == 404
    with server.channel() as channel:
        stub = providers_pb2_grpc.ProviderServiceStub(channel)
        config = providers_pb2.CreateProviderRequest(kind="threecx", name="gRPC PBX")
        config.config.update(PROVIDER["config"])  # type: ignore[arg-type]
        grpc_id = stub.CreateProvider(config, metadata=md(key)).id
        stub.UpdateProvider(providers_pb2.UpdateProviderRequest(id=grpc_id, name="Again"), metadata=md(key))
        recordings_pb2_grpc.RecordingServiceStub(channel).SyncProvider(
            rpb.SyncProviderRequest(id=grpc_id), metadata=md(key)
        )
        stub.DeleteProvider(providers_pb2.DeleteProviderRequest(id=grpc_id), metadata=md(key))

    seen = [
        (e["action"], e["targetId"], e["transport"])
        for e in reversed(events(server, key))
        if e["targetKind"] == "provider"
    ]
    assert seen == [
        ("provider.create", rest_id, "rest"),
        ("provider.update", rest_id, "rest"),
        ("provider.sync", rest_id, "rest"),
        ("provider.delete", rest_id, "rest"),
        ("provider.create", grpc_id, "grpc"),
        ("provider.update", grpc_id, "grpc"),
        ("provider.sync", grpc_id, "grpc"),
        ("provider.delete", grpc_id, "grpc"),
    ]
    assert {e["keyId"] for e in events(server, key) if e["targetKind"] == "provider"} == {key_id}


def _provider_recordings(server: RunningServer, tenant: Tenant, provider_id: str, count: int) -> list[str]:
    async def seed() -> list[str]:
        ids = []
        async with server.service.db.session() as session:
            for n in range(count):
                row = Recording(
                    id=uuid7(),
                    business_id=tenant.business_id,
                    origin=provider_id,
                    provider_id=provider_id,
                    source="threecx",
                    external_id=str(n),
                    call_at=datetime.now(UTC),
                    direction="in",
                )
                session.add(row)
                ids.append(row.id)
            await session.commit()
        return ids

    return server.call(seed())


def test_every_recording_deletion_is_recorded(server: RunningServer) -> None:
    tenant = server.new_tenant()
    key = tenant.business_key
    rest_gone = stored_recording(server, key, b"a" * 1000, "rest")
    grpc_gone = stored_recording(server, key, b"b" * 1000, "grpc")
    with server.http(key) as client:
        assert client.delete(f"/api/v1/recordings/{rest_gone}").json() == {"ok": True}
        provider_id = client.post("/api/v1/providers", json=PROVIDER).json()["id"]
    pulled = _provider_recordings(server, tenant, provider_id, 2)
    with server.channel() as channel:
        recordings_pb2_grpc.RecordingServiceStub(channel).DeleteRecording(
            rpb.DeleteRecordingRequest(id=grpc_gone), metadata=md(key)
        )
    with server.http(key) as client:
        gone = client.delete(f"/api/v1/providers/{provider_id}", params={"deleteRecordings": "true"})
        assert gone.status_code == 200
        old = register(client, dataId="old", callAt="2020-01-01T00:00:00+07:00")["id"]
    server.call(set_retention(server.service.db, tenant.business_id, 30))
    try:
        assert server.call(purge_expired(server.service.db, server.service.recordings)).purged >= 1
    finally:
        server.call(set_retention(server.service.db, tenant.business_id, None))

    deleted = {(e["targetId"], e["transport"]) for e in events(server, key, action="recording.delete")}
    assert deleted == {
        (rest_gone, "rest"),
        (grpc_gone, "grpc"),
        (pulled[0], "rest"),
        (pulled[1], "rest"),
        (old, "system"),
    }
    purge = next(e for e in events(server, key, action="recording.delete") if e["transport"] == "system")
    assert "keyId" not in purge and purge["keyName"] == ""


def test_api_key_events_and_no_key_material_in_any_event(server: RunningServer) -> None:
    tenant = server.new_tenant()
    made = server.call(
        server.admin().create_key(
            account_id=tenant.account_id,
            business_id=tenant.business_id,
            scopes=["view_audit_log"],
            name="auditor",
        )
    )
    server.call(server.admin().revoke_key(made.id))
    keyed = [
        (e["action"], e["transport"])
        for e in events(server, tenant.business_key, recordingId="")
        if e["targetId"] == made.id
    ]
    assert keyed == [("api_key.revoke", "cli"), ("api_key.create", "cli")]

    # Something of every family, then no event anywhere holds a key or its hash.
    audio_id = stored_recording(server, tenant.business_key, b"c" * 100)
    with server.http(tenant.business_key) as client:
        client.get(f"/api/v1/recordings/{audio_id}/audio")
        client.post("/api/v1/providers", json=PROVIDER)

    async def every_event() -> list[AuditEvent]:
        async with server.service.db.session() as session:
            return list((await session.exec(select(AuditEvent))).all())

    dumped = "\n".join(repr(row.model_dump()) for row in server.call(every_event()))
    answered = repr(events(server, tenant.business_key))
    for where in (dumped, answered):
        assert "s3cret" not in where
        for secret in (tenant.business_key, tenant.account_key, made.plaintext):
            assert secret[4:20] not in where and hash_key(secret) not in where


def test_filters_and_pages(server: RunningServer) -> None:
    tenant = server.new_tenant()
    first_id, first = named_key(server, tenant, "first")
    _, second = named_key(server, tenant, "second")
    one = stored_recording(server, tenant.business_key, b"1" * 500, "one")
    two = stored_recording(server, tenant.business_key, b"2" * 500, "two")
    started = datetime.now(UTC)
    for key, recording in ((first, one), (first, two), (second, one), (first, one), (second, two)):
        with server.http(key) as client:
            assert client.get(f"/api/v1/recordings/{recording}/audio").status_code == 200
    reads = {"action": "recording.audio.read"}

    assert len(events(server, first, **reads)) == 5
    assert len(events(server, first, **reads, recordingId=one)) == 3
    assert len(events(server, first, **reads, keyId=first_id)) == 3
    assert len(events(server, first, recordingId=one, keyId=first_id)) == 2
    assert events(server, first, **reads, since=(started + timedelta(hours=1)).isoformat()) == []
    assert len(events(server, first, **reads, since=started.isoformat())) == 5
    assert events(server, first, **reads, until=started.isoformat()) == []

    with server.http(first) as client:
        page = client.get("/api/v1/audit-events", params={**reads, "pageSize": 2}).json()
        assert len(page["items"]) == 2 and page["nextPageToken"]
        paged = events(server, first, **reads, pageSize=2)
        assert [e["seq"] for e in paged] == sorted((e["seq"] for e in paged), reverse=True)
        assert [e["id"] for e in paged] == [e["id"] for e in events(server, first, **reads)]
        token = page["nextPageToken"]
        bad_params: tuple[dict[str, str | int], ...] = (
            {**reads, "pageToken": token, "recordingId": one},  # another listing's token
            {**reads, "pageToken": token[:-2] + ("AA" if token[-2:] != "AA" else "BB")},  # tampered
            {**reads, "pageToken": "nonsense"},
            {**reads, "pageToken": "djEuOTkuNS5hYmM.AAAA"},  # "v1.99.5.abc": a key not in the ring
            {**reads, "pageSize": 201},
            {**reads, "since": "yesterday"},
        )
        for bad in bad_params:
            refused = client.get("/api/v1/audit-events", params=bad)
            assert refused.status_code == 400 and refused.json()["error"] == "invalid_argument", bad
    with server.channel() as channel:
        stub = audit_pb2_grpc.AuditServiceStub(channel)
        got = stub.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(action="recording.audio.read", page_size=2), metadata=md(first)
        )
        assert [e.seq for e in got.items] == [e["seq"] for e in paged[:2]] and got.next_page_token
        rest = stub.ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(
                action="recording.audio.read", page_size=2, page_token=got.next_page_token
            ),
            metadata=md(first),
        )
        assert [e.seq for e in rest.items] == [e["seq"] for e in paged[2:4]]


def test_listing_needs_view_audit_log_and_sees_only_its_business(server: RunningServer) -> None:
    tenant, other = server.new_tenant("Mine"), server.new_tenant("Theirs")
    _, no_scope = named_key(server, tenant, "reader", Scope.VIEW_RECORDING_ALL, Scope.MANAGE_CALL_RECORDING)
    _, auditor = named_key(server, tenant, "auditor", Scope.VIEW_AUDIT_LOG)
    theirs = stored_recording(server, other.business_key, b"t" * 300)
    with server.http(other.business_key) as client:
        client.get(f"/api/v1/recordings/{theirs}/audio")
    with server.http(no_scope) as client:
        refused = client.get("/api/v1/audit-events")
        assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope"
    with server.channel() as channel, pytest.raises(grpc.RpcError) as denied:
        audit_pb2_grpc.AuditServiceStub(channel).ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(), metadata=md(no_scope)
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(denied.value).reason == "insufficient_scope"

    mine = events(server, auditor)
    assert mine and all(e["targetId"] != theirs for e in mine)
    assert events(server, auditor, recordingId=theirs) == []
    # An account key sees the business it names, and nothing of another account's.
    with server.http(tenant.account_key, business=tenant.business_id) as client:
        assert {e["id"] for e in client.get("/api/v1/audit-events").json()["items"]} <= {
            e["id"] for e in mine
        }
    with server.http(tenant.account_key, business=other.business_id) as client:
        assert client.get("/api/v1/audit-events").json()["error"] == "business_not_found"


@contextmanager
def audit_refused(server: RunningServer) -> Iterator[None]:
    """Every audit insert fails while inside: a full disk, a lost grant."""
    if server.service.db.dialect == "sqlite":
        create = [
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON auditevent BEGIN SELECT RAISE(ABORT, 'no audit'); END"
        ]
        drop = ["DROP TRIGGER refuse_audit"]
    else:
        create = [
            "CREATE FUNCTION refuse_audit() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'no audit'; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON auditevent FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
        ]
        drop = ["DROP TRIGGER refuse_audit ON auditevent", "DROP FUNCTION refuse_audit()"]

    async def run(statements: list[str]) -> None:
        async with server.service.db.session() as session:
            for statement in statements:
                await session.exec(text(statement))  # type: ignore[call-overload]
            await session.commit()

    server.call(run(create))
    try:
        yield
    finally:
        server.call(run(drop))


def test_a_read_or_change_that_cannot_be_recorded_is_refused(server: RunningServer) -> None:
    tenant = server.new_tenant()
    key = tenant.business_key
    recording = stored_recording(server, key, b"r" * 2000)
    with server.http(key) as client:
        provider_id = client.post("/api/v1/providers", json=PROVIDER).json()["id"]
    with audit_refused(server), server.http(key) as client:
        read = client.get(f"/api/v1/recordings/{recording}/audio")
        assert read.status_code == 503 and read.json()["error"] == "audit_unavailable"
        assert b"r" * 10 not in read.content
        with server.channel() as channel, pytest.raises(grpc.RpcError) as failed:
            list(
                recordings_pb2_grpc.RecordingServiceStub(channel).DownloadRecording(
                    rpb.DownloadRecordingRequest(id=recording), metadata=md(key)
                )
            )
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        for refused in (
            client.delete(f"/api/v1/recordings/{recording}"),
            client.delete(f"/api/v1/providers/{provider_id}"),
            client.patch(f"/api/v1/providers/{provider_id}", json={"name": "Unrecorded"}),
        ):
            assert refused.status_code == 503 and refused.json()["error"] == "audit_unavailable"
    with server.http(key) as client:  # nothing changed
        assert client.get(f"/api/v1/recordings/{recording}").status_code == 200
        assert client.get(f"/api/v1/providers/{provider_id}").json()["name"] == "Main PBX"

    async def count() -> int:
        async with server.service.db.session() as session:
            rows = await session.exec(
                select(AuditEvent.id).where(col(AuditEvent.chain) == tenant.business_id)
            )
            return len(rows.all())

    before = server.call(count())
    with server.http(key) as client:
        assert client.get(f"/api/v1/recordings/{recording}/audio").status_code == 200
    assert server.call(count()) == before + 1
    assert server.call(verify_all(server.service.db, tenant.business_id))[0].broken is None


def test_openapi_documents_the_listing(server: RunningServer) -> None:
    doc = httpx.get(f"{server.http_base}/openapi.json").json()
    operation = doc["paths"]["/api/v1/audit-events"]["get"]
    names = {p["name"] for p in operation["parameters"]}
    assert {"recordingId", "keyId", "action", "since", "until", "pageSize", "pageToken"} <= names
    assert "403" in operation["responses"] and "200" in operation["responses"]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_operator_commands_are_recorded(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """keys create/revoke and retention on the business's chain; master-keys add, reseal and
    retire, and account keys, on the system chain; `audit verify` passes over them all."""
    env = base_env(tmp_path)
    if backend == "postgres":
        env["CALLVAULT_DATABASE_URL"] = request.getfixturevalue("database_url_factory")("postgres")
    run(env, "migrate")
    run(env, "master-keys", "init")
    account = run(env, "accounts", "create", "--name", "Ops").stdout.strip()
    business = run(env, "businesses", "create", "--account", account, "--name", "Ops Shop").stdout.strip()
    key = run(
        env, "keys", "create", "--account", account, "--business", business, "--scopes", "view_audit_log"
    )
    account_key = run(env, "keys", "create", "--account", account, "--scopes", "manage_all")
    key_id = key.stderr.split("key id: ")[1].split()[0]
    account_key_id = account_key.stderr.split("key id: ")[1].split()[0]
    run(env, "keys", "revoke", key_id)
    run(env, "businesses", "retention", "--business", business, "--days", "90")
    run(env, "master-keys", "add")
    run(env, "master-keys", "reseal", "--wait", "0")
    run(env, "master-keys", "retire", "1")

    engine = create_engine(
        sync_url(env.get("CALLVAULT_DATABASE_URL") or f"sqlite:///{tmp_path / 'var' / 'callvault.db'}")
    )
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT chain, seq, action, target_id, transport, key_id FROM auditevent ORDER BY chain, seq"
                )
            ).all()
    finally:
        engine.dispose()
    mine = [(r.action, r.target_id) for r in rows if r.chain == business]
    assert mine == [("api_key.create", key_id), ("api_key.revoke", key_id), ("retention.set", business)]
    system = [(r.action, r.target_id) for r in rows if r.chain == "system"]
    assert system == [
        ("api_key.create", account_key_id),
        ("master_key.add", "2"),
        ("master_key.reseal", "2"),
        ("master_key.retire", "1"),
    ]
    assert {r.transport for r in rows} == {"cli"} and {r.key_id for r in rows} == {None}
    verified = run(env, "audit", "verify")
    assert "all 2 audit chains are intact" in verified.stdout


def test_holds_and_listen_links_are_recorded(server: RunningServer) -> None:
    """A hold placed and lifted over both transports; a listen link's reads are recorded
    under the key that minted it, with the link's transport and the range served."""
    tenant = server.new_tenant()
    key_id, key = named_key(server, tenant, "legal")
    audio = os.urandom(4000)
    recording = stored_recording(server, tenant.business_key, audio)
    with server.http(key) as client:
        assert (
            client.post(f"/api/v1/recordings/{recording}/hold", json={"reason": "case 7"}).status_code == 200
        )
        assert client.delete(f"/api/v1/recordings/{recording}/hold").json()["released"] is True
        assert client.delete(f"/api/v1/recordings/{recording}/hold").json()["released"] is False  # no event
        link = client.post(f"/api/v1/recordings/{recording}/audio-link", json={}).json()
    with server.channel() as channel:
        stub = recordings_pb2_grpc.RecordingServiceStub(channel)
        stub.PlaceRecordingHold(
            rpb.PlaceRecordingHoldRequest(id=recording, reason="case 8"), metadata=md(key)
        )
        stub.ReleaseRecordingHold(rpb.ReleaseRecordingHoldRequest(id=recording), metadata=md(key))
    played = httpx.get(link["url"], headers={"Range": "bytes=10-19"})
    assert played.status_code == 206 and played.content == audio[10:20]

    seen = [
        (e["action"], e["transport"], e.get("rangeStart"), e.get("rangeEnd"))
        for e in reversed(events(server, key, recordingId=recording))
        if e["action"] != "recording.delete"
    ]
    assert seen == [
        ("recording.hold.place", "rest", None, None),
        ("recording.hold.release", "rest", None, None),
        ("recording.audio_link.create", "rest", None, None),
        ("recording.hold.place", "grpc", None, None),
        ("recording.hold.release", "grpc", None, None),
        ("recording.audio.read", "link", 10, 20),
    ]
    assert {e["keyId"] for e in events(server, key, recordingId=recording)} == {key_id}
    link_read = events(server, key, action="recording.audio.read")[0]
    assert link_read["requestId"] == played.headers["x-request-id"] and link_read["keyName"] == "legal"
    assert link["token"] not in str(events(server, key))
