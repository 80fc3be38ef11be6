"""Invariant 5 on both transports and both databases: bad input is a 4xx (INVALID_ARGUMENT
on gRPC) naming the field, and changes nothing; no input is a 5xx. Each case here once
answered 500."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from callvault.v1 import providers_pb2 as ppb
from callvault.v1 import providers_pb2_grpc, recordings_pb2_grpc
from callvault.v1 import recordings_pb2 as rpb
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlmodel import col, select

from service.admin import AdminError
from service.sealing import Keyring, generate_key
from service.storage.models import Provider, ProviderSecret
from tests.support.grpc_errors import error_info
from tests.support.sealed import sealed_blob
from tests.support.server import RunningServer, Tenant
from tests.support.snapshot import business_rows

CALL_AT = "2026-05-20T08:14:00+07:00"
PROVIDER = {
    "kind": "threecx",
    "name": "Main PBX",
    "config": {"baseUrl": "https://pbx.example.com", "username": "apiuser", "password": "s3cret"},
}


def metadata(tenant: Tenant) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {tenant.business_key}")]


def refused(response: httpx.Response, field: str, status: int = 400) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["message"].startswith(field), body


def grpc_refused(error: grpc.RpcError, field: str) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    status = rpc_status.from_call(error)
    assert status is not None
    violations = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [v.field for v in bad.field_violations]
    assert violations == [field], (violations, error.details())


def seeded(server: RunningServer) -> tuple[Tenant, dict[str, Any], str]:
    """A tenant with a provider and a stored recording, so "unchanged" has rows to compare."""
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        provider = client.post("/api/v1/providers", json=PROVIDER).json()["id"]
        rec = client.post("/api/v1/recordings", json={"dataId": "d0", "callAt": CALL_AT, "direction": "in"})
        recording = rec.json()
        put = client.put(f"/api/v1/recordings/{recording['id']}/audio", content=os.urandom(1000))
        assert put.status_code == 200, put.text
    return tenant, recording, provider


def create_recording(client: httpx.Client, **fields: Any) -> httpx.Response:
    return client.post(
        "/api/v1/recordings", json={"dataId": "d1", "callAt": CALL_AT, "direction": "in", **fields}
    )


def snake(json_name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in json_name)


def deep(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/providers"),
        ("PATCH", "/api/v1/providers/{provider}"),
        ("POST", "/api/v1/recordings"),
    ],
)
@pytest.mark.parametrize("levels", [33, 5000, 100_000])
def test_deeply_nested_json_is_refused(server: RunningServer, method: str, path: str, levels: int) -> None:
    tenant, _, provider = seeded(server)
    before = business_rows(server, tenant.business_id)
    with server.http(tenant.business_key) as client:
        response = client.request(
            method,
            path.format(provider=provider),
            content=deep(levels),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert "nests deeper than 32" in response.json()["message"]
    assert business_rows(server, tenant.business_id) == before


def test_json_nested_within_the_bound_still_parses(server: RunningServer) -> None:
    tenant, _, provider = seeded(server)
    with server.http(tenant.business_key) as client:
        nested = '{"config": {"baseUrl": ' + "[" * 30 + "1" + "]" * 30 + "}}"
        response = client.patch(
            f"/api/v1/providers/{provider}", content=nested, headers={"Content-Type": "application/json"}
        )
        refused(response, "config.baseUrl")  # parsed, then refused by the field's own rule
        quoted = '{"name": "' + "[{" * 100 + '"}'  # brackets inside a string do not count
        ok = client.patch(
            f"/api/v1/providers/{provider}", content=quoted, headers={"Content-Type": "application/json"}
        )
        refused(ok, "name")  # too long: the depth check let it through


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"callDateFrom": "0001-01-01"}, "callDateFrom"),
        ({"callDateTo": "9999-12-31"}, "callDateTo"),
        ({"callDateFrom": "0001-01-01T00:00:00+07:00"}, "callDateFrom"),
        ({"callDateTo": "9999-12-31T23:59:59.999999"}, "callDateTo"),
        ({"callDateTo": "9999-12-31T23:59:59-05:00"}, "callDateTo"),
        ({"callDateFrom": "1899-12-31"}, "callDateFrom"),
        ({"search": "x" * 60_000}, "search"),  # past SQLite's 50,000-byte LIKE pattern limit
        ({"search": "x" * 201}, "search"),
        ({"scoreMin": "NaN"}, "scoreMin"),
        ({"scoreMax": "Infinity"}, "scoreMax"),
        ({"customerPhone": "0\x00"}, "customerPhone"),
        ({"providerId": "\x00"}, "providerId"),
    ],
)
def test_list_filters_out_of_range(server: RunningServer, params: dict[str, str], field: str) -> None:
    tenant, _, _ = seeded(server)
    with server.http(tenant.business_key) as client:
        refused(client.get("/api/v1/recordings", params=params), field)
        assert client.get("/api/v1/recordings", params={"search": "x" * 200}).status_code == 200
        assert client.get("/api/v1/recordings", params={"callDateFrom": "1900-01-02"}).status_code == 200
    grpc_fields: dict[str, Any] = {snake(k): v for k, v in params.items()}
    for name in ("score_min", "score_max"):
        if name in grpc_fields:
            grpc_fields[name] = float(grpc_fields[name])
    with server.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        recordings_pb2_grpc.RecordingServiceStub(channel).ListRecordings(
            rpb.ListRecordingsRequest(**grpc_fields), metadata=metadata(tenant)
        )
    grpc_refused(raised.value, field)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"callAt": "0001-01-01T00:00:00+07:00"}, "callAt"),
        ({"callAt": "9999-12-31T23:59:59-05:00"}, "callAt"),
        ({"callAt": "0001-01-01T00:00:00"}, "callAt"),  # read in the business's zone: +07:00
        ({"durationSeconds": "NaN"}, "durationSeconds"),
        ({"durationSeconds": "Infinity"}, "durationSeconds"),
        ({"durationSeconds": -1}, "durationSeconds"),
        ({"contentType": "audio/wav\r\nX-Injected: 1"}, "contentType"),
        ({"contentType": "audio/" + "x" * 95}, "contentType"),
        ({"contentType": "audio wav/x"}, "contentType"),
        ({"contentType": "audio/"}, "contentType"),
        ({"dataId": "a\x00b"}, "dataId"),
        ({"dataId": "d" * 201}, "dataId"),
        ({"note": "n\x00"}, "note"),
        ({"note": "n" * 2001}, "note"),
        ({"customerPhone": "0" * 101}, "customerPhone"),
        ({"customerPhone": "08\x001"}, "customerPhone"),
        ({"callcenterNumber": "1" * 101}, "callcenterNumber"),
        ({"callcenterName": "c" * 201}, "callcenterName"),
        ({"callcenterName": "Desk \x00"}, "callcenterName"),
        ({"tag": "\x00"}, "tag"),
    ],
)
def test_create_recording_refuses_and_stores_nothing(
    server: RunningServer, fields: dict[str, Any], field: str
) -> None:
    tenant, _, _ = seeded(server)
    before = business_rows(server, tenant.business_id)
    with server.http(tenant.business_key) as client:
        refused(create_recording(client, **fields), field)
    body: dict[str, Any] = {"data_id": "d1", "call_at": CALL_AT, "direction": "in"}
    for name, value in fields.items():
        body[snake(name)] = float(value) if name == "durationSeconds" else value
    with server.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        recordings_pb2_grpc.RecordingServiceStub(channel).CreateRecording(
            rpb.CreateRecordingRequest(**body), metadata=metadata(tenant)
        )
    grpc_refused(raised.value, field)
    assert business_rows(server, tenant.business_id) == before


def test_limits_at_the_column_lengths_are_accepted(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        response = create_recording(
            client,
            dataId="d" * 200,
            note="n" * 2000,
            customerPhone="0" * 100,
            callcenterNumber="1" * 100,
            callcenterName="c" * 200,
            contentType="audio/wav; codecs=1",
            callAt="1900-01-01T00:00:00Z",
        )
        assert response.status_code == 200, response.text
        got = client.get(f"/api/v1/recordings/{response.json()['id']}").json()
        assert (got["note"], got["callcenterName"]) == ("n" * 2000, "c" * 200)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Main\x00PBX"}, "name"),
        ({"name": "x" * 61}, "name"),
        ({"name": "\ud800 PBX"}, "name"),  # a lone surrogate, valid JSON, not encodable
        ({"config": {"username": "api\x00user"}}, "config.username"),
        ({"config": {"password": "s3\x00cret"}}, "config.password"),
        ({"config": {"baseUrl": "https://pbx.example.com/\x00"}}, "config.baseUrl"),
        ({"config": {"bad\x00key": "x"}}, "config.bad\x00key"),
        ({"config": {"baseUrl": "http://[::1"}}, "config.baseUrl"),  # urlsplit raised
    ],
)
def test_provider_text_is_refused_on_create_and_patch(
    server: RunningServer, body: dict[str, Any], field: str
) -> None:
    tenant, _, provider = seeded(server)
    before = business_rows(server, tenant.business_id)
    with server.http(tenant.business_key) as client:
        create = {**PROVIDER, **body}
        if "config" in body:
            create["config"] = {**PROVIDER["config"], **body["config"]}  # type: ignore[dict-item]
        # json.dumps escapes a lone surrogate as \ud800 (httpx's json= would not encode it).
        headers = {"Content-Type": "application/json"}
        refused(client.post("/api/v1/providers", content=json.dumps(create), headers=headers), field)
        patch = client.patch(f"/api/v1/providers/{provider}", content=json.dumps(body), headers=headers)
        refused(patch, field)
    assert business_rows(server, tenant.business_id) == before
    if body.get("name") == "\ud800 PBX":
        return  # protobuf strings over gRPC are UTF-8: a lone surrogate cannot be sent
    config = struct_pb2.Struct()
    config.update(body.get("config", {}))
    with server.channel() as channel:
        stub = providers_pb2_grpc.ProviderServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.UpdateProvider(
                ppb.UpdateProviderRequest(
                    id=provider, name=body.get("name"), config=config if "config" in body else None
                ),
                metadata=metadata(tenant),
            )
    grpc_refused(raised.value, field)
    assert business_rows(server, tenant.business_id) == before


@pytest.mark.parametrize(
    "path", ["/api/v1/providers/%00", "/api/v1/recordings/a%00b", "/api/v1/sync-jobs/%00"]
)
def test_nul_in_a_path_id_is_refused(server: RunningServer, path: str) -> None:
    tenant, _, _ = seeded(server)
    with server.http(tenant.business_key) as client:
        refused(client.get(path), "id")
    with server.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        providers_pb2_grpc.ProviderServiceStub(channel).GetProvider(
            ppb.GetProviderRequest(id="\x00"), metadata=metadata(tenant)
        )
    grpc_refused(raised.value, "id")


def test_upload_content_type_is_a_media_type(server: RunningServer) -> None:
    tenant, recording, _ = seeded(server)
    before = business_rows(server, tenant.business_id)
    with server.http(tenant.business_key) as client:
        long = client.put(
            f"/api/v1/recordings/{recording['id']}/audio",
            content=b"abc",
            headers={"Content-Type": "audio/" + "x" * 100},
        )
        refused(long, "contentType")

    def chunks(content_type: str) -> Iterator[rpb.UploadRecordingAudioRequest]:
        yield rpb.UploadRecordingAudioRequest(id=recording["id"], content_type=content_type, chunk=b"abc")

    with server.channel() as channel:
        stub = recordings_pb2_grpc.RecordingServiceStub(channel)
        for bad in ("audio/wav\r\nX-Injected: 1", "audio/wav\n", "audio/" + "x" * 100):
            with pytest.raises(grpc.RpcError) as raised:
                stub.UploadRecordingAudio(chunks(bad), metadata=metadata(tenant))
            grpc_refused(raised.value, "contentType")
    assert business_rows(server, tenant.business_id) == before


def test_range_follows_rfc_9110(server: RunningServer) -> None:
    tenant = server.new_tenant()
    audio = os.urandom(1000)
    with server.http(tenant.business_key) as client:
        rec = create_recording(client).json()
        client.put(f"/api/v1/recordings/{rec['id']}/audio", content=audio)
        url = f"/api/v1/recordings/{rec['id']}/audio"
        for unsatisfiable in ("bytes=1000-", "bytes=5000-", "bytes=1000-2000", "bytes=-0"):
            response = client.get(url, headers={"Range": unsatisfiable})
            assert response.status_code == 416, unsatisfiable
            assert response.json()["error"] == "range_not_satisfiable"
            assert response.headers["content-range"] == "bytes */1000"
        for invalid in (
            "bytes=5-1",
            "bytes=abc",
            "bytes=-",
            "bytes=1-2,5-6",
            "bytes=--1",
            "items=0-1",
            "bytes=1.5-",
        ):
            response = client.get(url, headers={"Range": invalid})
            assert response.status_code == 200, invalid
            assert response.content == audio and "content-range" not in response.headers
        last = client.get(url, headers={"Range": "bytes=999-"})
        assert last.status_code == 206 and last.content == audio[999:]
        assert last.headers["content-range"] == "bytes 999-999/1000"
    with server.channel() as channel:
        stub = recordings_pb2_grpc.RecordingServiceStub(channel)
        for offset in (1000, 10**12):
            with pytest.raises(grpc.RpcError) as raised:
                list(
                    stub.DownloadRecording(
                        rpb.DownloadRecordingRequest(id=rec["id"], offset=offset), metadata=metadata(tenant)
                    )
                )
            assert raised.value.code() == grpc.StatusCode.OUT_OF_RANGE
            assert error_info(raised.value).reason == "range_not_satisfiable"


def test_missing_blob_is_a_clear_error(server: RunningServer) -> None:
    tenant = server.new_tenant()
    audio = os.urandom(2000)
    with server.http(tenant.business_key) as client:
        rec = create_recording(client, dataId="lost").json()
        client.put(f"/api/v1/recordings/{rec['id']}/audio", content=audio)
        server.call(server.service.blobs.delete(server.call(sealed_blob(server.service.db, rec["id"]))))
        response = client.get(f"/api/v1/recordings/{rec['id']}/audio")
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "recording_audio_missing"
        assert client.get(f"/api/v1/recordings/{rec['id']}").json()["processingStatus"] == "completed"
    with server.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        list(
            recordings_pb2_grpc.RecordingServiceStub(channel).DownloadRecording(
                rpb.DownloadRecordingRequest(id=rec["id"]), metadata=metadata(tenant)
            )
        )
    assert raised.value.code() == grpc.StatusCode.DATA_LOSS
    assert error_info(raised.value).reason == "recording_audio_missing"


def test_secret_that_cannot_be_opened_is_a_clear_error(server: RunningServer) -> None:
    tenant, _, provider = seeded(server)
    other = Keyring({99: generate_key()}, primary_id=99)

    async def reseal_under_unknown_key() -> None:
        async with server.service.db.session() as session:
            row = (
                await session.exec(select(ProviderSecret).where(col(ProviderSecret.provider_id) == provider))
            ).one()
            from service.providers.store import seal_context, stored_kind

            stored = await session.get(Provider, provider)
            assert stored is not None
            ctx = seal_context(
                tenant.business_id,
                provider,
                row.field,
                kind=stored_kind(stored.kind),
                settings=stored.settings,
            )
            row.sealed = other.seal("s3cret", ctx)
            row.key_id = 99
            session.add(row)
            await session.commit()

    server.call(reseal_under_unknown_key())
    with server.http(tenant.business_key) as client:
        response = client.post(f"/api/v1/providers/{provider}/test")
        assert response.status_code == 409, response.text
        assert response.json()["error"] == "secret_unavailable"
        assert "password" not in response.text and "s3cret" not in response.text
        validate = client.patch(f"/api/v1/providers/{provider}", json={"validate": True, "isActive": False})
        assert validate.status_code == 409 and validate.json()["error"] == "secret_unavailable"
    with server.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        providers_pb2_grpc.ProviderServiceStub(channel).TestProvider(
            ppb.TestProviderRequest(id=provider), metadata=metadata(tenant)
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(raised.value).reason == "secret_unavailable"
    assert "password" not in (raised.value.details() or "")


def test_operator_names_follow_the_same_text_rule(server: RunningServer) -> None:
    admin = server.admin()
    for bad in ("Acme\x00", "x" * 201):
        with pytest.raises(AdminError):
            server.call(admin.create_account(bad))
    account = server.call(admin.create_account("Operator"))
    with pytest.raises(AdminError, match="NUL"):
        server.call(admin.create_business(account, "Branch\x00", slug=f"nul-{uuid.uuid4().hex[:8]}"))
    with pytest.raises(AdminError, match="at most 200"):
        server.call(admin.create_key(account_id=account, scopes=["manage_all"], name="k" * 201))


def test_huge_input_echoed_in_an_error_is_bounded(server: RunningServer) -> None:
    """Once, the status trailer went past gRPC's metadata limit: RESOURCE_EXHAUSTED, error lost."""
    tenant = server.new_tenant()
    config = struct_pb2.Struct()
    config.update({"k" * 50_000: "v"})
    with server.channel() as channel:
        stub = providers_pb2_grpc.ProviderServiceStub(channel)
        # An emoji is 4 bytes, 12 once percent-encoded in grpc-message.
        for kind in ("x" * 70_000, "\N{GRINNING FACE}" * 20_000):
            with pytest.raises(grpc.RpcError) as raised:
                stub.CreateProvider(
                    ppb.CreateProviderRequest(kind=kind, name="ab"), metadata=metadata(tenant)
                )
            assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert error_info(raised.value).reason == "provider_kind_not_supported"
        with pytest.raises(grpc.RpcError) as raised:
            stub.CreateProvider(
                ppb.CreateProviderRequest(kind="threecx", name="ab", config=config), metadata=metadata(tenant)
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (raised.value.details() or "").startswith("config.kkk")
    with server.http(tenant.business_key) as client:
        response = client.post("/api/v1/providers", json={"kind": "x" * 70_000, "name": "ab", "config": {}})
        assert response.status_code == 422 and len(response.json()["message"].encode()) <= 500
        assert client.get("/api/v1/providers").json()["items"] == []


@pytest.mark.parametrize("raw", [b"\xff\xff\xff", b"\x0a\x05ab", b"\x0a\x02\xff\xfe"])
def test_bytes_that_are_not_protobuf_are_invalid_argument(server: RunningServer, raw: bytes) -> None:
    """grpc itself answers UNKNOWN when a request does not decode."""
    tenant = server.new_tenant()
    identity = {"request_serializer": lambda b: b, "response_deserializer": lambda b: b}
    with server.channel() as channel:
        unary = channel.unary_unary("/callvault.v1.ProviderService/GetProvider", **identity)
        with pytest.raises(grpc.RpcError) as raised:
            unary(raw, metadata=metadata(tenant), timeout=10)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(raised.value).reason == "invalid_request"
        streaming = channel.stream_unary("/callvault.v1.RecordingService/UploadRecordingAudio", **identity)
        with pytest.raises(grpc.RpcError) as raised:
            streaming(iter([raw]), metadata=metadata(tenant), timeout=10)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_non_finite_numbers_in_a_config_are_refused(server: RunningServer) -> None:
    """A Struct holding Infinity (1e400 in JSON) cannot be turned back into JSON: once a 500."""
    tenant, _, provider = seeded(server)
    before = business_rows(server, tenant.business_id)
    body = b'{"kind": "dtac", "name": "Carrier", "config": {"pollIntervalMinutes": 1e400}}'
    with server.http(tenant.business_key) as client:
        headers = {"Content-Type": "application/json"}
        refused(client.post("/api/v1/providers", content=body, headers=headers), "config.pollIntervalMinutes")
        patch = b'{"config": {"headless": [1, -1e400]}}'
        refused(
            client.patch(f"/api/v1/providers/{provider}", content=patch, headers=headers),
            "config.headless[1]",
        )
    config = struct_pb2.Struct()
    config.update({"pollIntervalMinutes": float("nan")})
    with server.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        providers_pb2_grpc.ProviderServiceStub(channel).CreateProvider(
            ppb.CreateProviderRequest(kind="dtac", name="Carrier", config=config), metadata=metadata(tenant)
        )
    grpc_refused(raised.value, "config.pollIntervalMinutes")
    assert business_rows(server, tenant.business_id) == before
