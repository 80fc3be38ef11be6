"""Seed 000 over real HTTP: every endpoint, every documented answer and error."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx

from tests.support.server import RunningServer

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
SEED_CREATE: dict[str, Any] = {
    "kind": "threecx",
    "name": "Main PBX",
    "config": {"baseUrl": "https://pbx.example.com", "username": "apiuser", "password": "s3cret"},
    "isActive": True,
}


def create(client: httpx.Client, body: Mapping[str, Any] | None = None) -> str:
    response = client.post("/api/v1/providers", json=body or SEED_CREATE)
    assert response.status_code == 200, response.text
    provider_id: str = response.json()["id"]
    return provider_id


def test_seed_create_list_get_patch_delete(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        created = client.post("/api/v1/providers", json=SEED_CREATE)
        assert created.status_code == 200
        assert set(created.json()) == {"id"}
        provider_id = created.json()["id"]
        assert UUID7.match(provider_id)

        listed = client.get("/api/v1/providers").json()
        assert list(listed) == ["items"]
        (item,) = listed["items"]
        assert set(item) == {"id", "kind", "name", "isActive", "preview", "createdAt"}
        assert item["preview"] == "apiuser @ pbx.example.com"
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", item["createdAt"])
        assert (item["id"], item["kind"], item["name"], item["isActive"]) == (
            provider_id,
            "threecx",
            "Main PBX",
            True,
        )

        got = client.get(f"/api/v1/providers/{provider_id}")
        assert got.json() == {
            "id": provider_id,
            "kind": "threecx",
            "name": "Main PBX",
            "isActive": True,
            "baseUrl": "https://pbx.example.com",
            "username": "apiuser",
        }

        patched = client.patch(f"/api/v1/providers/{provider_id}", json={"config": {"password": "r0tated"}})
        assert patched.status_code == 200 and patched.json() == {"ok": True}
        # Merge: baseUrl and username survive a patch that sends only the password.
        assert client.get(f"/api/v1/providers/{provider_id}").json()["baseUrl"] == "https://pbx.example.com"
        _, config = server.call(server.service.providers.open_config(tenant.business_id, provider_id))
        assert config["password"] == "r0tated" and config["username"] == "apiuser"

        deleted = client.delete(f"/api/v1/providers/{provider_id}")
        assert deleted.status_code == 200 and deleted.json() == {"ok": True}
        missing = client.get(f"/api/v1/providers/{provider_id}")
        assert missing.status_code == 404
        assert missing.json() == {
            "error": "provider_not_found",
            "message": "no such provider in this business",
        }
        assert client.get("/api/v1/providers").json() == {"items": []}


def test_is_active_false_is_rendered_and_defaults_true(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        inactive = create(client, {**SEED_CREATE, "isActive": False})
        default = create(client, {k: v for k, v in SEED_CREATE.items() if k != "isActive"})
        assert client.get(f"/api/v1/providers/{inactive}").json()["isActive"] is False
        assert client.get(f"/api/v1/providers/{default}").json()["isActive"] is True
        client.patch(f"/api/v1/providers/{default}", json={"isActive": False, "name": "Renamed"})
        got = client.get(f"/api/v1/providers/{default}").json()
        assert (got["isActive"], got["name"]) == (False, "Renamed")


def test_dtac_fields_and_defaults(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        body = {
            "kind": "dtac",
            "name": "DTAC line",
            "config": {"username": "+66812345678", "password": "pw", "pollIntervalMinutes": 15},
        }
        provider_id = create(client, body)
        got = client.get(f"/api/v1/providers/{provider_id}").json()
        assert got["baseUrl"] == "https://onecallvoicerecord.dtac.co.th"
        assert got["username"] == "+66812345678"
        assert "password" not in got and "pollIntervalMinutes" not in got
        (item,) = client.get("/api/v1/providers").json()["items"]
        assert item["preview"] == "+66812345678 @ onecallvoicerecord.dtac.co.th"
        for bad in (4, 1441, 15.5, "15", True):
            response = client.patch(
                f"/api/v1/providers/{provider_id}", json={"config": {"pollIntervalMinutes": bad}}
            )
            assert response.status_code == 400, bad
            assert response.json()["error"] == "invalid_argument"
            assert "config.pollIntervalMinutes" in response.json()["message"]


def test_validation_names_the_field(server: RunningServer) -> None:
    tenant = server.new_tenant()
    cases = [
        ({**SEED_CREATE, "name": "x"}, "name"),
        ({**SEED_CREATE, "name": "x" * 61}, "name"),
        ({k: v for k, v in SEED_CREATE.items() if k != "kind"}, "kind"),
        ({**SEED_CREATE, "config": {"username": "u", "password": "p"}}, "config.baseUrl"),
        (
            {**SEED_CREATE, "config": {"baseUrl": "https://pbx.example.com", "password": "p"}},
            "config.username",
        ),
        (
            {**SEED_CREATE, "config": {"baseUrl": "https://pbx.example.com", "username": "u"}},
            "config.password",
        ),
        (
            {**SEED_CREATE, "config": {**SEED_CREATE["config"], "baseUrl": "ftp://pbx.example.com"}},
            "config.baseUrl",
        ),
        ({**SEED_CREATE, "config": {**SEED_CREATE["config"], "baseUrl": "not a url"}}, "config.baseUrl"),
        ({**SEED_CREATE, "config": {**SEED_CREATE["config"], "headless": "yes"}}, "config.headless"),
        ({**SEED_CREATE, "config": {**SEED_CREATE["config"], "colour": "red"}}, "config.colour"),
        ({**SEED_CREATE, "config": {**SEED_CREATE["config"], "username": "  "}}, "config.username"),
    ]
    with server.http(tenant.business_key) as client:
        for body, field in cases:
            response = client.post("/api/v1/providers", json=body)
            assert response.status_code == 400, (body, response.text)
            assert response.json()["error"] == "invalid_argument"
            assert response.json()["message"].startswith(field), response.json()
        assert client.get("/api/v1/providers").json() == {"items": []}


def test_patch_revalidates_merged_config_and_keeps_data_on_error(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        provider_id = create(client)
        bad = client.patch(f"/api/v1/providers/{provider_id}", json={"config": {"baseUrl": None}})
        assert bad.status_code == 400 and bad.json()["message"].startswith("config.baseUrl")
        bad_name = client.patch(f"/api/v1/providers/{provider_id}", json={"name": "", "isActive": False})
        assert bad_name.status_code == 400 and bad_name.json()["message"].startswith("name")
        kind = client.patch(f"/api/v1/providers/{provider_id}", json={"kind": "dtac"})
        assert kind.status_code == 400 and kind.json()["message"].startswith("kind")
        got = client.get(f"/api/v1/providers/{provider_id}").json()
        assert got["baseUrl"] == "https://pbx.example.com" and got["isActive"] is True
        _, config = server.call(server.service.providers.open_config(tenant.business_id, provider_id))
        assert config["password"] == "s3cret"


def test_unsupported_kind_is_422(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        response = client.post("/api/v1/providers", json={**SEED_CREATE, "kind": "avaya"})
        assert response.status_code == 422
        assert response.json()["error"] == "provider_kind_not_supported"


def test_stored_kind_no_longer_registered_is_422(server: RunningServer) -> None:
    from sqlalchemy import update
    from sqlmodel import col

    from service.storage.models import Provider

    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        provider_id = create(client)

        async def retire_kind() -> None:
            async with server.service.db.session() as session:
                await session.exec(
                    update(Provider).where(col(Provider.id) == provider_id).values(kind="legacy")
                )
                await session.commit()

        server.call(retire_kind())
        response = client.get(f"/api/v1/providers/{provider_id}")
        assert response.status_code == 422
        assert response.json()["error"] == "provider_kind_not_supported"
        patched = client.patch(f"/api/v1/providers/{provider_id}", json={"config": {"password": "x"}})
        assert patched.status_code == 422
        # Listing still works and shows the row, without a preview it cannot make.
        (item,) = client.get("/api/v1/providers").json()["items"]
        assert item["kind"] == "legacy" and item["preview"] == ""


def test_transport_errors(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        wrong_type = client.post(
            "/api/v1/providers", content=b'{"kind":"threecx"}', headers={"Content-Type": "text/plain"}
        )
        assert wrong_type.status_code == 415 and wrong_type.json()["error"] == "unsupported_media_type"
        malformed = client.post(
            "/api/v1/providers", content=b'{"kind": ', headers={"Content-Type": "application/json"}
        )
        assert malformed.status_code == 400 and malformed.json()["error"] == "invalid_request"
        not_object = client.post("/api/v1/providers", json=[1, 2])
        assert not_object.status_code == 400 and not_object.json()["error"] == "invalid_request"
        unknown = client.post("/api/v1/providers", json={**SEED_CREATE, "colour": "red"})
        assert unknown.status_code == 400 and unknown.json()["message"] == "colour: unknown field"
        wrong_json_type = client.post("/api/v1/providers", json={**SEED_CREATE, "name": 42})
        assert wrong_json_type.status_code == 400 and "name" in wrong_json_type.json()["message"]
        no_route = client.get("/api/v1/nothing-here")
        assert no_route.status_code == 404 and no_route.json()["error"] == "not_found"
        assert client.get("/api/v1/providers").json() == {"items": []}


def test_missing_provider_and_bad_ids_are_404(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        for provider_id in ("0192f0aa-0000-7000-8000-000000000000", "not-a-uuid"):
            for method in ("GET", "PATCH", "DELETE"):
                kwargs = {"json": {"name": "New name"}} if method == "PATCH" else {}
                response = client.request(method, f"/api/v1/providers/{provider_id}", **kwargs)  # type: ignore[arg-type]
                assert response.status_code == 404 and response.json()["error"] == "provider_not_found"


def test_openapi_document_comes_from_the_annotations(server: RunningServer) -> None:
    with server.http() as client:
        document = client.get("/openapi.json").json()
    assert set(document["paths"]) >= {"/api/v1/providers", "/api/v1/providers/{id}", "/api/v1/meta/whoami"}
    assert set(document["paths"]["/api/v1/providers/{id}"]) == {"get", "patch", "delete"}
    create_schema = document["components"]["schemas"]["callvault.v1.CreateProviderRequest"]
    assert set(create_schema["properties"]) == {"kind", "name", "config", "isActive", "validate"}
    assert "/api/v1/providers/{id}/test" in document["paths"]


def test_oversized_body_is_refused(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        huge = b'{"kind": "threecx", "name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
        response = client.post(
            "/api/v1/providers", content=huge, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400
        assert response.json() == {"error": "invalid_request", "message": "request body is over 1 MiB"}
        assert client.get("/api/v1/providers").json() == {"items": []}
