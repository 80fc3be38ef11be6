"""Every kind end to end against its fake: create, read without secrets, merge-patch,
and the connection test (good, bad credentials, unreachable, timeout) over REST and gRPC."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from callvault.v1 import providers_pb2 as pb
from callvault.v1 import providers_pb2_grpc

from service.kinds import KINDS
from tests.e2e.kinds import PROFILES, KindProfile
from tests.fakes.httpserver import FakeServer, Fault
from tests.support.postgres import free_port
from tests.support.server import RunningServer


@pytest.fixture(params=PROFILES, ids=[p.kind for p in PROFILES])
def profile(request: pytest.FixtureRequest) -> KindProfile:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def fake(profile: KindProfile) -> Iterator[FakeServer]:
    with profile.fake() as server:
        yield server


def assert_no_secret(secrets: list[str], *texts: str) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text


def logged(caplog: pytest.LogCaptureFixture) -> str:
    return caplog.text + "".join(str(vars(r)) for r in caplog.records)


def test_kind_end_to_end_over_rest(
    server: RunningServer, profile: KindProfile, fake: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    tenant = server.new_tenant()
    secrets = profile.secrets(fake)
    answers: list[httpx.Response] = []
    with server.http(tenant.business_key) as client:
        created = client.post(
            "/api/v1/providers",
            json={"kind": profile.kind, "name": f"{profile.kind} line", "config": profile.config(fake)},
        )
        answers.append(created)
        assert created.status_code == 200, created.text
        provider_id = created.json()["id"]

        got = client.get(f"/api/v1/providers/{provider_id}")
        answers.append(got)
        assert got.json() == {
            "id": provider_id,
            "kind": profile.kind,
            "name": f"{profile.kind} line",
            "isActive": True,
            **profile.read(fake),
        }
        listed = client.get("/api/v1/providers")
        answers.append(listed)
        assert listed.json()["items"][0]["preview"] == profile.preview(fake)

        test = client.post(f"/api/v1/providers/{provider_id}/test")
        answers.append(test)
        assert (test.status_code, test.json()) == (200, {"ok": True})

        # Merge: only the secret changes; everything else stays; the test now fails.
        broken = client.patch(
            f"/api/v1/providers/{provider_id}", json={"config": {profile.secret_field: "wrong-1"}}
        )
        assert broken.json() == {"ok": True}
        assert client.get(f"/api/v1/providers/{provider_id}").json() == got.json()
        failed = client.post(f"/api/v1/providers/{provider_id}/test")
        answers.append(failed)
        assert (failed.status_code, failed.json()) == (200, {"ok": False, "error": "authentication failed"})

        # validate refuses a bad patch and keeps what was stored.
        refused = client.patch(
            f"/api/v1/providers/{provider_id}",
            json={"config": {profile.secret_field: "wrong-2"}, "validate": True},
        )
        answers.append(refused)
        assert refused.status_code == 422
        assert refused.json() == {
            "error": "provider_test_failed",
            "message": "connection test failed: authentication failed",
        }
        right = profile.config(fake)[profile.secret_field]
        mended = client.patch(
            f"/api/v1/providers/{provider_id}",
            json={"config": {profile.secret_field: right}, "validate": True},
        )
        assert mended.json() == {"ok": True}
        assert client.post(f"/api/v1/providers/{provider_id}/test").json() == {"ok": True}

        # validate on create: nothing is stored when the credentials fail.
        bad = {**profile.config(fake), profile.secret_field: "wrong-3"}
        rejected = client.post(
            "/api/v1/providers", json={"kind": profile.kind, "name": "Bad", "config": bad, "validate": True}
        )
        answers.append(rejected)
        assert rejected.status_code == 422 and rejected.json()["error"] == "provider_test_failed"
        assert [p["id"] for p in client.get("/api/v1/providers").json()["items"]] == [provider_id]
    assert_no_secret([*secrets, right], *(a.text for a in answers), logged(caplog))


def test_connection_test_over_grpc(server: RunningServer, profile: KindProfile, fake: Any) -> None:
    tenant = server.new_tenant()
    md = [("authorization", f"Bearer {tenant.business_key}")]
    with server.http(tenant.business_key) as client:
        provider_id = client.post(
            "/api/v1/providers", json={"kind": profile.kind, "name": "Line", "config": profile.config(fake)}
        ).json()["id"]
    with server.channel() as channel:
        stub = providers_pb2_grpc.ProviderServiceStub(channel)
        ok = stub.TestProvider(pb.TestProviderRequest(id=provider_id), metadata=md)
        assert ok.ok is True and not ok.HasField("error")
        fake.faults.add(Fault.status(401), path="/", times=None)
        failed = stub.TestProvider(pb.TestProviderRequest(id=provider_id), metadata=md)
        assert failed.ok is False and failed.error
        assert all(s not in failed.error for s in profile.secrets(fake))


def test_unreachable_and_timeout(server: RunningServer, profile: KindProfile, fake: Any) -> None:
    tenant = server.new_tenant()
    closed = f"http://127.0.0.1:{free_port()}"
    with server.http(tenant.business_key) as client:
        provider_id = client.post(
            "/api/v1/providers",
            json={
                "kind": profile.kind,
                "name": "Line",
                "config": {**profile.config(fake), "baseUrl": closed},
            },
        ).json()["id"]
        assert client.post(f"/api/v1/providers/{provider_id}/test").json() == {
            "ok": False,
            "error": "host unreachable",
        }

        # A new host needs the secrets sent again.
        moved = {
            "baseUrl": fake.base_url,
            **{f: profile.config(fake)[f] for f in KINDS[profile.kind].secret_fields},
        }
        assert client.patch(f"/api/v1/providers/{provider_id}", json={"config": moved}).json() == {"ok": True}
        fake.faults.add(Fault.slow(delay=server.settings.network.read_timeout + 1.5), path="/", times=None)
        assert client.post(f"/api/v1/providers/{provider_id}/test").json() == {
            "ok": False,
            "error": "timed out",
        }


def test_kind_specific_validation(server: RunningServer) -> None:
    tenant = server.new_tenant()
    cases = [
        (
            {
                "kind": "kazoo",
                "config": {
                    "baseUrl": "https://k.example.com",
                    "accountId": "a",
                    "apiKey": "k",
                    "websocketUrl": "https://ws.example.com",
                },
            },
            "config.websocketUrl",
        ),
        (
            {"kind": "kazoo", "config": {"baseUrl": "https://k.example.com", "apiKey": "k"}},
            "config.accountId",
        ),
        (
            {"kind": "promptcall", "config": {"baseUrl": "https://p.example.com", "apiKey": "k"}},
            "config.apiSecret",
        ),
        ({"kind": "antbuddy", "config": {"appId": "1"}}, "config.appSecret"),
        (
            {
                "kind": "antbuddy",
                "config": {"appId": "1", "appSecret": "s", "baseUrl": "http://169.254.169.254"},
            },
            "config.baseUrl",
        ),
    ]
    with server.http(tenant.business_key) as client:
        for body, field in cases:
            response = client.post("/api/v1/providers", json={**body, "name": "Line"})
            assert response.status_code == 400, response.text
            assert response.json()["message"].startswith(field), response.json()
        default = client.post(
            "/api/v1/providers",
            json={"kind": "antbuddy", "name": "Ant", "config": {"appId": "1", "appSecret": "s"}},
        ).json()["id"]
        assert client.get(f"/api/v1/providers/{default}").json()["baseUrl"] == "https://openapi.antbuddy.com"
