"""Legal hold over REST and gRPC: a held recording is not deleted by any path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import httpx
import pytest
from callvault.v1 import providers_pb2, providers_pb2_grpc, recordings_pb2_grpc
from callvault.v1 import recordings_pb2 as pb

from service.auth import Scope
from service.ids import uuid7
from service.storage.models import Recording
from tests.e2e.test_providers_rest import create
from tests.e2e.test_recordings_api import register, upload
from tests.support.grpc_errors import error_info
from tests.support.server import RunningServer, Tenant

REASON = "litigation hold: Acme v. Example, case 2026-17"


def pulled(server: RunningServer, tenant: Tenant, provider_id: str, count: int) -> list[str]:
    """Recordings pulled from the provider (rows as the puller writes them)."""

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
                    external_id=f"pulled-{n}",
                    call_at=datetime.now(UTC) - timedelta(days=n),
                    direction="in",
                    recording_ref=str(n),
                )
                session.add(row)
                ids.append(row.id)
            await session.commit()
        return ids

    return server.call(seed())


def hold(client: httpx.Client, recording_id: str, reason: str = REASON) -> httpx.Response:
    return client.post(f"/api/v1/recordings/{recording_id}/hold", json={"reason": reason})


def test_a_held_recording_is_not_deleted_over_rest(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        recording = register(client, dataId="held-1")
        assert upload(client, recording["id"], b"RIFF-held-audio").status_code == 200
        placed = hold(client, recording["id"])
        assert placed.status_code == 200, placed.text
        assert placed.json()["reason"] == REASON
        placed_at = placed.json()["placedAt"]
        assert placed_at.endswith("Z")
        got = client.get(f"/api/v1/recordings/{recording['id']}").json()
        assert got["legalHold"] == {"reason": REASON, "placedAt": placed_at}
        assert client.get("/api/v1/recordings").json()["items"][0]["legalHold"]["reason"] == REASON

        refused = client.delete(f"/api/v1/recordings/{recording['id']}")
        assert refused.status_code == 409
        assert refused.json() == {
            "error": "recording_on_hold",
            "message": "the recording is on legal hold; release the hold to delete it",
        }
        assert client.get(f"/api/v1/recordings/{recording['id']}/audio").content == b"RIFF-held-audio"

        # Holding it again takes the new reason and keeps when the hold began.
        again = hold(client, recording["id"], "  second matter  ")
        assert again.json() == {"reason": "second matter", "placedAt": placed_at}

        released = client.delete(f"/api/v1/recordings/{recording['id']}/hold")
        assert released.status_code == 200 and released.json() == {"ok": True, "released": True}
        assert client.delete(f"/api/v1/recordings/{recording['id']}/hold").json() == {
            "ok": True,
            "released": False,
        }
        assert "legalHold" not in client.get(f"/api/v1/recordings/{recording['id']}").json()
        assert client.delete(f"/api/v1/recordings/{recording['id']}").status_code == 200
        assert client.get(f"/api/v1/recordings/{recording['id']}").status_code == 404


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({}, "reason: is required"),
        ({"reason": ""}, "reason: is required"),
        ({"reason": " \t "}, "reason: is required"),
        ({"reason": "x" * 501}, "reason: must be at most 500 characters"),
        ({"reason": "a\x00b"}, "reason:"),
    ],
)
def test_a_hold_needs_a_bounded_reason(server: RunningServer, body: dict[str, str], problem: str) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        recording = register(client, dataId="reasoned")
        response = client.post(f"/api/v1/recordings/{recording['id']}/hold", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"] in ("invalid_argument", "invalid_request")
        assert response.json()["message"].startswith(problem)
        assert "legalHold" not in client.get(f"/api/v1/recordings/{recording['id']}").json()
        assert hold(client, recording["id"], "y" * 500).status_code == 200


def test_another_business_cannot_hold_or_release(server: RunningServer) -> None:
    owner, other = server.new_tenant("Owner"), server.new_tenant("Other")
    with server.http(owner.business_key) as client:
        recording = register(client, dataId="mine")
        assert hold(client, recording["id"]).status_code == 200
    with server.http(other.business_key) as client:
        for response in (
            hold(client, recording["id"]),
            client.delete(f"/api/v1/recordings/{recording['id']}/hold"),
            hold(client, "no-such-recording"),
        ):
            assert response.status_code == 404 and response.json()["error"] == "recording_not_found"
    with server.http(owner.business_key) as client:
        assert client.get(f"/api/v1/recordings/{recording['id']}").json()["legalHold"]["reason"] == REASON


def test_the_deleting_scope_cannot_lift_a_hold(server: RunningServer) -> None:
    tenant = server.new_tenant()
    deleter = server.call(
        server.admin().create_key(
            account_id=tenant.account_id,
            business_id=tenant.business_id,
            scopes=(Scope.MANAGE_CALL_RECORDING, Scope.VIEW_RECORDING_ALL),
        )
    ).plaintext
    with server.http(tenant.business_key) as client:
        recording = register(client, dataId="guarded")
        assert hold(client, recording["id"]).status_code == 200
    with server.http(deleter) as client:
        response = client.delete(f"/api/v1/recordings/{recording['id']}/hold")
        assert response.status_code == 403
        assert response.json()["message"] == "this key lacks the manage_legal_hold scope"
        assert client.delete(f"/api/v1/recordings/{recording['id']}").status_code == 409


def test_a_held_recording_is_not_deleted_over_grpc(server: RunningServer) -> None:
    tenant = server.new_tenant()
    md = [("authorization", f"Bearer {tenant.business_key}")]
    with server.channel() as channel:
        stub = recordings_pb2_grpc.RecordingServiceStub(channel)
        created = stub.CreateRecording(
            pb.CreateRecordingRequest(
                data_id="grpc-held", call_at="2026-05-20T08:14:00+07:00", direction="in"
            ),
            metadata=md,
        )
        placed = stub.PlaceRecordingHold(
            pb.PlaceRecordingHoldRequest(id=created.id, reason=REASON), metadata=md
        )
        assert placed.reason == REASON and placed.placed_at.seconds > 0
        got = stub.GetRecording(pb.GetRecordingRequest(id=created.id), metadata=md)
        assert got.HasField("legal_hold") and got.legal_hold == placed
        with pytest.raises(grpc.RpcError) as refused:
            stub.DeleteRecording(pb.DeleteRecordingRequest(id=created.id), metadata=md)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(refused.value).reason == "recording_on_hold"
        with pytest.raises(grpc.RpcError) as missing:
            stub.PlaceRecordingHold(pb.PlaceRecordingHoldRequest(id=created.id), metadata=md)
        assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert missing.value.details() == "reason: is required"

        released = stub.ReleaseRecordingHold(pb.ReleaseRecordingHoldRequest(id=created.id), metadata=md)
        assert released.ok and released.released
        got = stub.GetRecording(pb.GetRecordingRequest(id=created.id), metadata=md)
        assert not got.HasField("legal_hold")
        assert stub.DeleteRecording(pb.DeleteRecordingRequest(id=created.id), metadata=md).ok


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_deleting_a_provider_with_a_held_recording_deletes_nothing(
    server: RunningServer, transport: str
) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        provider_id = create(client)
        recordings = pulled(server, tenant, provider_id, 3)
        assert hold(client, recordings[1]).status_code == 200

    def delete_provider() -> str:
        if transport == "rest":
            with server.http(tenant.business_key) as client:
                response = client.delete(
                    f"/api/v1/providers/{provider_id}", params={"deleteRecordings": "true"}
                )
                return (
                    "ok"
                    if response.status_code == 200
                    else f"{response.status_code} {response.json()['error']}"
                )
        with server.channel() as channel:
            try:
                providers_pb2_grpc.ProviderServiceStub(channel).DeleteProvider(
                    providers_pb2.DeleteProviderRequest(id=provider_id, delete_recordings=True),
                    metadata=[("authorization", f"Bearer {tenant.business_key}")],
                )
            except grpc.RpcError as error:
                return f"{error.code().name} {error_info(error).reason}"
        return "ok"

    assert delete_provider() in ("409 recording_on_hold", "FAILED_PRECONDITION recording_on_hold")
    with server.http(tenant.business_key) as client:
        assert client.get(f"/api/v1/providers/{provider_id}").status_code == 200
        for recording_id in recordings:
            assert client.get(f"/api/v1/recordings/{recording_id}").json()["providerId"] == provider_id
        assert client.delete(f"/api/v1/recordings/{recordings[1]}/hold").json()["released"] is True
    assert delete_provider() == "ok"
    with server.http(tenant.business_key) as client:
        assert client.get(f"/api/v1/providers/{provider_id}").status_code == 404
        for recording_id in recordings:
            assert client.get(f"/api/v1/recordings/{recording_id}").status_code == 404


def test_a_provider_deleted_without_its_recordings_keeps_the_held_one_held(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        provider_id = create(client)
        kept, other = pulled(server, tenant, provider_id, 2)
        assert hold(client, kept).status_code == 200
        assert client.delete(f"/api/v1/providers/{provider_id}").status_code == 200
        detached = client.get(f"/api/v1/recordings/{kept}").json()
        assert "providerId" not in detached and detached["legalHold"]["reason"] == REASON
        assert client.delete(f"/api/v1/recordings/{kept}").status_code == 409
        # A detached recording can be held as well.
        assert hold(client, other).status_code == 200
        assert client.delete(f"/api/v1/recordings/{other}").status_code == 409


def test_openapi_describes_the_hold_and_its_refusals(server: RunningServer) -> None:
    with server.http() as client:
        document = client.get("/openapi.json").json()
    paths, schemas = document["paths"], document["components"]["schemas"]
    hold_path = paths["/api/v1/recordings/{id}/hold"]
    assert set(hold_path) >= {"post", "delete"}
    assert "reason" in schemas["callvault.v1.PlaceRecordingHoldRequest"]["required"]
    assert "legalHold" in schemas["callvault.v1.Recording"]["properties"]
    for path in ("/api/v1/recordings/{id}", "/api/v1/providers/{id}"):
        assert "`recording_on_hold`" in paths[path]["delete"]["responses"]["409"]["description"]


def test_a_held_recordings_audio_is_not_replaced(server: RunningServer) -> None:
    """Uploading again replaces the audio, which would delete the held audio; the first
    upload of a held recording that has none deletes nothing and is taken."""
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        stored, empty = register(client, dataId="evidence"), register(client, dataId="awaited")
        assert upload(client, stored["id"], b"RIFF-original").status_code == 200
        for recording in (stored, empty):
            assert hold(client, recording["id"]).status_code == 200
        replaced = upload(client, stored["id"], b"RIFF-overwritten")
        assert replaced.status_code == 409 and replaced.json() == {
            "error": "recording_on_hold",
            "message": "the recording is on legal hold; its audio cannot be replaced",
        }
        assert client.get(f"/api/v1/recordings/{stored['id']}/audio").content == b"RIFF-original"
        assert upload(client, empty["id"], b"RIFF-first").status_code == 200
        assert client.get(f"/api/v1/recordings/{empty['id']}/audio").content == b"RIFF-first"
