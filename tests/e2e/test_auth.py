"""Keys, scopes and businesses over both transports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
import httpx
import pytest
from callvault.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    meta_pb2,
    meta_pb2_grpc,
    providers_pb2,
    providers_pb2_grpc,
    recordings_pb2_grpc,
)
from callvault.v1 import recordings_pb2 as rpb

from service.api.convert import dict_to_struct
from service.auth import Scope
from service.ids import uuid7
from service.storage.models import Recording
from tests.e2e.test_providers_rest import SEED_CREATE, create
from tests.e2e.test_recordings_api import register, upload
from tests.support.grpc_errors import error_info
from tests.support.server import RunningServer, Tenant


def test_business_key_ignores_header_account_key_needs_it(server: RunningServer) -> None:
    tenant = server.new_tenant()
    other = server.new_tenant("Other")
    with server.http(tenant.business_key, business=other.business_id) as client:
        provider_id = create(client)  # lands in the key's own business, header ignored
    with server.http(tenant.account_key) as client:
        response = client.get("/api/v1/providers")
        assert response.status_code == 400
        assert response.json() == {
            "error": "business_required",
            "message": "an account key must name a business with X-Business-Id",
        }
    with server.http(tenant.account_key, business=tenant.business_id) as client:
        assert [p["id"] for p in client.get("/api/v1/providers").json()["items"]] == [provider_id]


def test_two_businesses_cannot_see_each_other(server: RunningServer) -> None:
    a = server.new_tenant("Alpha")
    b = server.new_tenant("Beta")
    with server.http(a.business_key) as client:
        a_provider = create(client)
    with server.http(b.business_key) as client:
        assert client.get("/api/v1/providers").json() == {"items": []}
        for method in ("GET", "PATCH", "DELETE"):
            kwargs = {"json": {"name": "Stolen"}} if method == "PATCH" else {}
            response = client.request(method, f"/api/v1/providers/{a_provider}", **kwargs)  # type: ignore[arg-type]
            assert response.status_code == 404 and response.json()["error"] == "provider_not_found"
    # An account key naming another account's business is told it does not exist.
    with server.http(b.account_key, business=a.business_id) as client:
        response = client.get("/api/v1/providers")
        assert response.status_code == 404 and response.json()["error"] == "business_not_found"
    with server.http(a.business_key) as client:
        assert client.get(f"/api/v1/providers/{a_provider}").json()["name"] == "Main PBX"


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer crk_unknown", "Basic crk_x", "Bearer sk_live_123", "Token crk_abc"],
)
def test_bad_keys_are_401(server: RunningServer, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    with server.http() as client:
        response = client.get("/api/v1/providers", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"


def test_revoked_key_is_401(server: RunningServer) -> None:
    tenant = server.new_tenant()
    keys = server.call(server.admin().list_keys(tenant.account_id))
    business_key_id = next(k.id for k in keys if k.business_id)
    server.call(server.admin().revoke_key(business_key_id))
    with server.http(tenant.business_key) as client:
        assert client.get("/api/v1/providers").status_code == 401
    with server.http(tenant.account_key, business=tenant.business_id) as client:
        assert client.get("/api/v1/providers").status_code == 200


def test_missing_scope_is_403_and_manage_all_implies_all(server: RunningServer) -> None:
    viewer = server.new_tenant("Viewer", scopes=(Scope.VIEW_RECORDING_ALL,))
    with server.http(viewer.business_key) as client:
        for method, path in (("GET", "/api/v1/providers"), ("POST", "/api/v1/providers")):
            response = client.request(method, path, json=SEED_CREATE if method == "POST" else None)
            assert response.status_code == 403
            assert response.json()["error"] == "insufficient_scope"
        assert client.get("/api/v1/meta/whoami").status_code == 200
    manager = server.new_tenant("Manager", scopes=(Scope.MANAGE_PROVIDER_CONFIG,))
    with server.http(manager.business_key) as client:
        assert client.get("/api/v1/providers").status_code == 200


def test_whoami_business_key(server: RunningServer) -> None:
    tenant = server.new_tenant("Who Biz", scopes=(Scope.MANAGE_PROVIDER_CONFIG, Scope.VIEW_RECORDING_ALL))
    with server.http(tenant.business_key) as client:
        body = client.get("/api/v1/meta/whoami").json()
    assert set(body) == {"level", "business", "scopes"}
    assert body["level"] == "business"
    assert body["business"]["id"] == tenant.business_id
    assert body["business"]["name"] == "Who Biz"
    assert set(body["business"]) == {"id", "name", "slug"}
    assert body["scopes"] == ["manage_provider_config", "view_recording_all"]


def test_whoami_account_key_without_business_header(server: RunningServer) -> None:
    tenant = server.new_tenant("Who Acct")
    second = server.call(
        server.admin().create_business(
            tenant.account_id, "Second Shop", slug=f"second-{tenant.business_id[-6:]}"
        )
    )
    with server.http(tenant.account_key) as client:
        body = client.get("/api/v1/meta/whoami").json()
    assert set(body) == {"level", "userId", "scopes", "businesses"}
    assert body["level"] == "account" and body["userId"] == tenant.account_id
    assert {b["id"] for b in body["businesses"]} == {tenant.business_id, second}
    with server.channel() as channel:
        reply = meta_pb2_grpc.MetaServiceStub(channel).WhoAmI(
            meta_pb2.WhoAmIRequest(), metadata=[("authorization", f"Bearer {tenant.account_key}")]
        )
    assert reply.level == "account" and len(reply.businesses) == 2


def test_whoami_account_key_with_no_businesses_lists_none(server: RunningServer) -> None:
    """The account-key shape keeps "businesses" when it is empty; the business-key shape has none."""

    async def lone_key() -> str:
        account = await server.admin().create_account("Empty Account")
        return (await server.admin().create_key(account_id=account, scopes=[Scope.MANAGE_ALL])).plaintext

    key = server.call(lone_key())
    with server.http(key) as client:
        body = client.get("/api/v1/meta/whoami").json()
    assert body["level"] == "account" and body["businesses"] == []
    assert set(body) == {"level", "userId", "scopes", "businesses"}
    with server.channel() as channel:
        reply = meta_pb2_grpc.MetaServiceStub(channel).WhoAmI(
            meta_pb2.WhoAmIRequest(), metadata=[("authorization", f"Bearer {key}")]
        )
    assert reply.level == "account" and list(reply.businesses) == [] and not reply.HasField("business")


def test_whoami_grpc_rejects_unknown_key(server: RunningServer) -> None:
    with server.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        meta_pb2_grpc.MetaServiceStub(channel).WhoAmI(
            meta_pb2.WhoAmIRequest(), metadata=[("authorization", "Bearer crk_nope")]
        )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


# Every scope a key can hold but manage_all, which implies them all.
SCOPES = tuple(s for s in Scope if s is not Scope.MANAGE_ALL)
PROVIDER, VIEW, MANAGE = Scope.MANAGE_PROVIDER_CONFIG, Scope.VIEW_RECORDING_ALL, Scope.MANAGE_CALL_RECORDING
Metadata = list[tuple[str, str]]
# A scope that stands in for a needed one with less: view_recording_self reads what
# view_recording_all reads, limited to the key's agents (tests/e2e/test_agents.py).
STAND_INS = {VIEW: (Scope.VIEW_RECORDING_SELF,)}


@dataclass(frozen=True)
class World:
    """What one business holds, made with an all-scopes key: each call below reaches it."""

    tenant: Tenant
    provider_id: str
    recording_id: str
    job_id: str


def make_world(server: RunningServer) -> World:
    tenant = server.new_tenant("Scoped")
    with server.http(tenant.business_key) as client:
        # Loopback port 9 refuses at once: a test call answers {"ok": false} without waiting.
        config = {**SEED_CREATE["config"], "baseUrl": "https://127.0.0.1:9"}
        provider_id = create(client, {**SEED_CREATE, "config": config})
        recording = register(client, dataId="scoped-1", customerPhone="0812345678", note="VIP")
        assert upload(client, recording["id"], b"RIFF-scoped").status_code == 200
        job = client.post(f"/api/v1/providers/{provider_id}/sync")
        assert job.status_code == 200, job.text
    return World(tenant, provider_id, recording["id"], job.json()["id"])


def key_with(server: RunningServer, world: World, scopes: tuple[Scope, ...]) -> str:
    created = server.call(
        server.admin().create_key(
            account_id=world.tenant.account_id, business_id=world.tenant.business_id, scopes=scopes
        )
    )
    return created.plaintext


def snapshot(server: RunningServer, world: World) -> tuple[Any, ...]:
    """Everything a refused call might have changed."""
    with server.http(world.tenant.business_key) as client:
        return (
            client.get("/api/v1/providers").json(),
            client.get(f"/api/v1/providers/{world.provider_id}").json(),
            client.get("/api/v1/recordings").json(),
            client.get(f"/api/v1/recordings/{world.recording_id}/audio").content,
            client.get(f"/api/v1/sync-jobs/{world.job_id}").json(),
        )


NEW_RECORDING = {"dataId": "scoped-2", "callAt": "2026-05-01T00:00:00Z", "direction": "in"}


@dataclass(frozen=True)
class Rule:
    method: str
    scopes: tuple[Scope, ...]
    rest: Callable[[httpx.Client, World], httpx.Response]
    grpc: Callable[[grpc.Channel, Metadata, World], object]


def _providers(channel: grpc.Channel) -> providers_pb2_grpc.ProviderServiceStub:
    return providers_pb2_grpc.ProviderServiceStub(channel)


def _recordings(channel: grpc.Channel) -> recordings_pb2_grpc.RecordingServiceStub:
    return recordings_pb2_grpc.RecordingServiceStub(channel)


RULES = [
    Rule(
        "ListProviders",
        (PROVIDER,),
        lambda c, w: c.get("/api/v1/providers"),
        lambda ch, md, w: _providers(ch).ListProviders(providers_pb2.ListProvidersRequest(), metadata=md),
    ),
    Rule(
        "CreateProvider",
        (PROVIDER,),
        lambda c, w: c.post("/api/v1/providers", json=SEED_CREATE),
        lambda ch, md, w: _providers(ch).CreateProvider(
            providers_pb2.CreateProviderRequest(
                kind="threecx", name="Created PBX", config=dict_to_struct(SEED_CREATE["config"])
            ),
            metadata=md,
        ),
    ),
    Rule(
        "GetProvider",
        (PROVIDER,),
        lambda c, w: c.get(f"/api/v1/providers/{w.provider_id}"),
        lambda ch, md, w: _providers(ch).GetProvider(
            providers_pb2.GetProviderRequest(id=w.provider_id), metadata=md
        ),
    ),
    Rule(
        "UpdateProvider",
        (PROVIDER,),
        lambda c, w: c.patch(f"/api/v1/providers/{w.provider_id}", json={"name": "Renamed PBX"}),
        lambda ch, md, w: _providers(ch).UpdateProvider(
            providers_pb2.UpdateProviderRequest(id=w.provider_id, name="Renamed PBX"), metadata=md
        ),
    ),
    Rule(
        "DeleteProvider",
        (PROVIDER,),
        lambda c, w: c.delete(f"/api/v1/providers/{w.provider_id}"),
        lambda ch, md, w: _providers(ch).DeleteProvider(
            providers_pb2.DeleteProviderRequest(id=w.provider_id), metadata=md
        ),
    ),
    Rule(
        "DeleteProvider+deleteRecordings",
        (PROVIDER, MANAGE),
        lambda c, w: c.delete(f"/api/v1/providers/{w.provider_id}", params={"deleteRecordings": "true"}),
        lambda ch, md, w: _providers(ch).DeleteProvider(
            providers_pb2.DeleteProviderRequest(id=w.provider_id, delete_recordings=True), metadata=md
        ),
    ),
    Rule(
        "TestProvider",
        (PROVIDER,),
        lambda c, w: c.post(f"/api/v1/providers/{w.provider_id}/test"),
        lambda ch, md, w: _providers(ch).TestProvider(
            providers_pb2.TestProviderRequest(id=w.provider_id), metadata=md
        ),
    ),
    Rule(
        "SyncProvider",
        (PROVIDER,),
        lambda c, w: c.post(f"/api/v1/providers/{w.provider_id}/sync"),
        lambda ch, md, w: _recordings(ch).SyncProvider(
            rpb.SyncProviderRequest(id=w.provider_id), metadata=md
        ),
    ),
    Rule(
        "GetSyncJob",
        (PROVIDER,),
        lambda c, w: c.get(f"/api/v1/sync-jobs/{w.job_id}"),
        lambda ch, md, w: _recordings(ch).GetSyncJob(rpb.GetSyncJobRequest(id=w.job_id), metadata=md),
    ),
    Rule(
        "ListSyncJobs",
        (PROVIDER,),
        lambda c, w: c.get("/api/v1/sync-jobs"),
        lambda ch, md, w: _recordings(ch).ListSyncJobs(rpb.ListSyncJobsRequest(), metadata=md),
    ),
    Rule(
        "ListRecordings",
        (VIEW,),
        lambda c, w: c.get("/api/v1/recordings"),
        lambda ch, md, w: _recordings(ch).ListRecordings(rpb.ListRecordingsRequest(), metadata=md),
    ),
    Rule(
        "ListRecordingAgents",
        (VIEW,),
        lambda c, w: c.get("/api/v1/recordings/agents"),
        lambda ch, md, w: _recordings(ch).ListRecordingAgents(rpb.ListRecordingAgentsRequest(), metadata=md),
    ),
    Rule(
        "GetRecording",
        (VIEW,),
        lambda c, w: c.get(f"/api/v1/recordings/{w.recording_id}"),
        lambda ch, md, w: _recordings(ch).GetRecording(
            rpb.GetRecordingRequest(id=w.recording_id), metadata=md
        ),
    ),
    Rule(
        "DownloadRecording",
        (VIEW,),
        lambda c, w: c.get(f"/api/v1/recordings/{w.recording_id}/audio"),
        lambda ch, md, w: list(
            _recordings(ch).DownloadRecording(rpb.DownloadRecordingRequest(id=w.recording_id), metadata=md)
        ),
    ),
    Rule(
        "CreateAudioLink",
        (VIEW,),
        lambda c, w: c.post(f"/api/v1/recordings/{w.recording_id}/audio-link"),
        lambda ch, md, w: _recordings(ch).CreateAudioLink(
            rpb.CreateAudioLinkRequest(id=w.recording_id), metadata=md
        ),
    ),
    Rule(
        "CreateRecording",
        (MANAGE,),
        lambda c, w: c.post("/api/v1/recordings", json=NEW_RECORDING),
        lambda ch, md, w: _recordings(ch).CreateRecording(
            rpb.CreateRecordingRequest(data_id="scoped-2", call_at="2026-05-01T00:00:00Z", direction="in"),
            metadata=md,
        ),
    ),
    Rule(
        "UploadRecordingAudio",
        (MANAGE,),
        lambda c, w: upload(c, w.recording_id, b"RIFF-replaced"),
        lambda ch, md, w: _recordings(ch).UploadRecordingAudio(
            iter([rpb.UploadRecordingAudioRequest(id=w.recording_id, chunk=b"RIFF-replaced")]), metadata=md
        ),
    ),
    Rule(
        "DeleteRecording",
        (MANAGE,),
        lambda c, w: c.delete(f"/api/v1/recordings/{w.recording_id}"),
        lambda ch, md, w: _recordings(ch).DeleteRecording(
            rpb.DeleteRecordingRequest(id=w.recording_id), metadata=md
        ),
    ),
    Rule(
        "ListAuditEvents",
        (Scope.VIEW_AUDIT_LOG,),
        lambda c, w: c.get("/api/v1/audit-events"),
        lambda ch, md, w: audit_pb2_grpc.AuditServiceStub(ch).ListAuditEvents(
            audit_pb2.ListAuditEventsRequest(), metadata=md
        ),
    ),
    Rule(
        "PlaceRecordingHold",
        (Scope.MANAGE_LEGAL_HOLD,),
        lambda c, w: c.post(f"/api/v1/recordings/{w.recording_id}/hold", json={"reason": "scoped"}),
        lambda ch, md, w: _recordings(ch).PlaceRecordingHold(
            rpb.PlaceRecordingHoldRequest(id=w.recording_id, reason="scoped"), metadata=md
        ),
    ),
    Rule(
        "ReleaseRecordingHold",
        (Scope.MANAGE_LEGAL_HOLD,),
        lambda c, w: c.delete(f"/api/v1/recordings/{w.recording_id}/hold"),
        lambda ch, md, w: _recordings(ch).ReleaseRecordingHold(
            rpb.ReleaseRecordingHoldRequest(id=w.recording_id), metadata=md
        ),
    ),
    Rule(
        "WhoAmI",
        (),
        lambda c, w: c.get("/api/v1/meta/whoami"),
        lambda ch, md, w: meta_pb2_grpc.MetaServiceStub(ch).WhoAmI(meta_pb2.WhoAmIRequest(), metadata=md),
    ),
]


def _call(server: RunningServer, rule: Rule, transport: str, key: str, world: World) -> str:
    """'ok', or the error code the call was refused with."""
    if transport == "rest":
        with server.http(key) as client:
            response = rule.rest(client, world)
        return "ok" if response.status_code == 200 else f"{response.status_code} {response.json()['error']}"
    with server.channel() as channel:
        try:
            rule.grpc(channel, [("authorization", f"Bearer {key}")], world)
        except grpc.RpcError as error:
            return f"{error.code().name} {error_info(error).reason}"
    return "ok"


@pytest.mark.parametrize("transport", ["rest", "grpc"])
@pytest.mark.parametrize("rule", RULES, ids=[r.method for r in RULES])
def test_each_method_needs_exactly_its_scopes(server: RunningServer, rule: Rule, transport: str) -> None:
    """A key holding every scope but one the method needs is refused and changes nothing;
    a key holding exactly the method's scopes is served."""
    world = make_world(server)
    before = snapshot(server, world)
    refused = "403 insufficient_scope" if transport == "rest" else "PERMISSION_DENIED insufficient_scope"
    for needed in rule.scopes:
        dropped = (needed, *STAND_INS.get(needed, ()))
        key = key_with(server, world, tuple(s for s in SCOPES if s not in dropped))
        assert _call(server, rule, transport, key, world) == refused, needed
    assert snapshot(server, world) == before
    exact = rule.scopes or (Scope.VIEW_RECORDING_SELF,)  # a key names one scope at least
    assert _call(server, rule, transport, key_with(server, world, exact), world) == "ok"


def _detached_recording(server: RunningServer, world: World) -> str:
    """A call pulled from the world's provider (pending: its audio not fetched yet)."""

    async def seed() -> str:
        async with server.service.db.session() as session:
            row = Recording(
                id=uuid7(),
                business_id=world.tenant.business_id,
                origin=world.provider_id,
                provider_id=world.provider_id,
                source="threecx",
                external_id="pulled-1",
                call_at=datetime.now(UTC),
                direction="in",
                recording_ref="1",
            )
            session.add(row)
            await session.commit()
            return row.id

    return server.call(seed())


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_delete_provider_with_recordings_needs_manage_call_recording(
    server: RunningServer, transport: str
) -> None:
    world = make_world(server)
    pulled = _detached_recording(server, world)
    rule = next(r for r in RULES if r.method == "DeleteProvider+deleteRecordings")
    config_only = key_with(server, world, (PROVIDER,))
    refused = _call(server, rule, transport, config_only, world)
    assert refused.endswith("insufficient_scope") and refused.split()[0] in ("403", "PERMISSION_DENIED")
    with server.http(world.tenant.business_key) as client:
        assert client.get(f"/api/v1/providers/{world.provider_id}").status_code == 200  # it stays
        assert client.get(f"/api/v1/recordings/{pulled}").json()["providerId"] == world.provider_id
    with server.http(config_only) as client:
        response = client.delete(
            f"/api/v1/providers/{world.provider_id}", params={"deleteRecordings": "true"}
        )
        assert response.json()["message"] == "this key lacks the manage_call_recording scope"
    both = key_with(server, world, (PROVIDER, MANAGE))
    assert _call(server, rule, transport, both, world) == "ok"
    with server.http(world.tenant.business_key) as client:
        assert client.get(f"/api/v1/providers/{world.provider_id}").status_code == 404
        assert client.get(f"/api/v1/recordings/{pulled}").status_code == 404


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_upload_without_view_scope_answers_a_receipt(server: RunningServer, transport: str) -> None:
    """An uploader may replace a recording's audio but not read the call's details back."""
    world = make_world(server)
    uploader = key_with(server, world, (MANAGE,))
    both = key_with(server, world, (MANAGE, VIEW))
    audio = b"RIFF-receipt"
    if transport == "rest":
        with server.http(uploader) as client:
            receipt = upload(client, world.recording_id, audio).json()
        with server.http(both) as client:
            full = upload(client, world.recording_id, audio).json()
        assert full["customerPhone"] == "0812345678" and full["note"] == "VIP"
        assert receipt["customerPhone"] == "" and receipt["note"] == "" and receipt["callAt"] == ""
        assert (receipt["id"], receipt["processingStatus"], receipt["size"]) == (
            world.recording_id,
            "completed",
            12,
        )
        assert receipt["sha256"] == full["sha256"] and receipt["audioUrl"] == full["audioUrl"]
        return
    with server.channel() as channel:
        stub = _recordings(channel)
        request = rpb.UploadRecordingAudioRequest(id=world.recording_id, chunk=audio)
        receipt_pb = stub.UploadRecordingAudio(
            iter([request]), metadata=[("authorization", f"Bearer {uploader}")]
        )
        full_pb = stub.UploadRecordingAudio(iter([request]), metadata=[("authorization", f"Bearer {both}")])
    assert full_pb.customer_phone == "0812345678" and full_pb.customer_phone_normalized == "+66812345678"
    assert (receipt_pb.customer_phone, receipt_pb.customer_phone_normalized, receipt_pb.note) == ("", "", "")
    assert (receipt_pb.id, receipt_pb.sha256, receipt_pb.size) == (world.recording_id, full_pb.sha256, 12)
