"""Keys, scopes and businesses over both transports."""

from __future__ import annotations

import grpc
import pytest
from callvault.v1 import meta_pb2, meta_pb2_grpc

from service.auth import Scope
from tests.e2e.test_providers_rest import SEED_CREATE, create
from tests.support.server import RunningServer


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


def test_whoami_grpc_rejects_unknown_key(server: RunningServer) -> None:
    with server.channel() as channel, pytest.raises(grpc.RpcError) as raised:
        meta_pb2_grpc.MetaServiceStub(channel).WhoAmI(
            meta_pb2.WhoAmIRequest(), metadata=[("authorization", "Bearer crk_nope")]
        )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
