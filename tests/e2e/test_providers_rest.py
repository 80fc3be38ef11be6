"""Seed 000 over real HTTP: every endpoint, every documented answer and error."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from service.kinds import KINDS
from tests.e2e.kinds import PROFILES, KindProfile
from tests.fakes.kazoo import FakeKazoo
from tests.fakes.threecx import FakeThreeCX
from tests.support.server import RunningServer

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
SEED_CREATE: dict[str, Any] = {
    "kind": "threecx",
    "name": "Main PBX",
    "config": {"baseUrl": "https://pbx.example.com", "username": "apiuser", "password": "s3cret"},
    "isActive": True,
}


THREECX, KAZOO = (next(p for p in PROFILES if p.kind == kind) for kind in ("threecx", "kazoo"))


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


# --- a stored secret goes only to the origin it was saved for -----------------------------


@pytest.mark.parametrize("profile", PROFILES, ids=[p.kind for p in PROFILES])
def test_moving_base_url_needs_every_secret_again(server: RunningServer, profile: KindProfile) -> None:
    tenant = server.new_tenant()
    secret_fields = KINDS[profile.kind].secret_fields
    with profile.fake() as old, profile.fake() as new, server.http(tenant.business_key) as client:
        provider_id = create(client, {"kind": profile.kind, "name": "Line", "config": profile.config(old)})
        before = client.get(f"/api/v1/providers/{provider_id}").json()
        expected = f"config.{secret_fields[0]}: must be sent again when config.baseUrl changes"
        if len(secret_fields) > 1:
            expected += f" (so must {', '.join(f'config.{f}' for f in secret_fields[1:])})"
        for validate in (False, True):  # validate must not test the stored secret at the new host
            moved = client.patch(
                f"/api/v1/providers/{provider_id}",
                json={"config": {"baseUrl": new.base_url}, "name": "Renamed", "validate": validate},
            )
            assert (moved.status_code, moved.json()) == (
                400,
                {"error": "invalid_argument", "message": expected},
            )
        assert client.get(f"/api/v1/providers/{provider_id}").json() == before
        old.clear_requests()
        assert client.post(f"/api/v1/providers/{provider_id}/test").json() == {"ok": True}
        assert old.requests and not new.requests

        # Sent again, the secrets go with the provider, and only there.
        again = {f: profile.config(new)[f] for f in secret_fields}
        moved = client.patch(
            f"/api/v1/providers/{provider_id}", json={"config": {"baseUrl": new.base_url, **again}}
        )
        assert moved.json() == {"ok": True}
        assert client.get(f"/api/v1/providers/{provider_id}").json()["baseUrl"] == new.base_url
        old.clear_requests()
        assert client.post(f"/api/v1/providers/{provider_id}/test").json() == {"ok": True}
        assert new.requests and not old.requests


def test_moved_provider_uses_the_secret_sent_with_the_move(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with (
        FakeThreeCX() as old,
        FakeThreeCX(client_secret="moved-secret") as new,
        server.http(tenant.business_key) as client,
    ):
        provider_id = create(client, {"kind": "threecx", "name": "PBX", "config": THREECX.config(old)})
        moved = client.patch(
            f"/api/v1/providers/{provider_id}",
            json={"config": {"baseUrl": new.base_url, "password": "moved-secret"}, "validate": True},
        )
        assert moved.json() == {"ok": True}
        assert client.post(f"/api/v1/providers/{provider_id}/test").json() == {"ok": True}
        # The old secret does not open the new host: the test passed on the new one.
        assert client.patch(
            f"/api/v1/providers/{provider_id}", json={"config": {"password": old.client_secret}}
        ).json() == {"ok": True}
        assert client.post(f"/api/v1/providers/{provider_id}/test").json() == {
            "ok": False,
            "error": "authentication failed",
        }
        assert old.requests == []  # neither secret was ever tried at the old host after the move


def test_same_origin_spelled_otherwise_is_not_a_move(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        provider_id = create(client)  # https://pbx.example.com
        for spelling in (
            "https://PBX.Example.com/",
            "https://pbx.example.com:443",
            "https://pbx.example.com/pbx/api",  # another path on the same origin
        ):
            same = client.patch(f"/api/v1/providers/{provider_id}", json={"config": {"baseUrl": spelling}})
            assert same.json() == {"ok": True}, spelling
            _, config = server.call(server.service.providers.open_config(tenant.business_id, provider_id))
            assert config["password"] == "s3cret"
        for elsewhere in (
            "http://pbx.example.com",
            "https://pbx.example.com:8443",
            "https://pbx2.example.com",
            "https://pbx.example.com.",
        ):
            moved = client.patch(f"/api/v1/providers/{provider_id}", json={"config": {"baseUrl": elsewhere}})
            assert moved.status_code == 400, elsewhere
            assert (
                moved.json()["message"] == "config.password: must be sent again when config.baseUrl changes"
            )


@pytest.mark.parametrize(
    ("kind", "config"),
    [
        ("dtac", {"username": "+66812345678", "password": "pw"}),
        ("antbuddy", {"appId": "app-1", "appSecret": "pw"}),
    ],
)
def test_default_base_url_counts_as_the_stored_one(
    server: RunningServer, kind: str, config: dict[str, Any]
) -> None:
    tenant = server.new_tenant()
    default = next(f.default for f in KINDS[kind].fields if f.name == "baseUrl")
    (secret_field,) = KINDS[kind].secret_fields
    with server.http(tenant.business_key) as client:
        provider_id = create(client, {"kind": kind, "name": "Line", "config": config})
        explicit = client.patch(
            f"/api/v1/providers/{provider_id}", json={"config": {"baseUrl": default.upper() + "/"}}
        )
        assert explicit.json() == {"ok": True}
        _, opened = server.call(server.service.providers.open_config(tenant.business_id, provider_id))
        assert opened[secret_field] == "pw"
        moved = client.patch(
            f"/api/v1/providers/{provider_id}", json={"config": {"baseUrl": "https://elsewhere.example.com"}}
        )
        assert moved.status_code == 400
        assert (
            moved.json()["message"]
            == f"config.{secret_field}: must be sent again when config.baseUrl changes"
        )
        assert client.get(f"/api/v1/providers/{provider_id}").json()["baseUrl"] == default.upper()


def test_kazoo_websocket_url_is_a_host_field(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with FakeKazoo() as fake, server.http(tenant.business_key) as client:
        provider_id = create(client, {"kind": "kazoo", "name": "Kazoo", "config": KAZOO.config(fake)})
        before = client.get(f"/api/v1/providers/{provider_id}").json()
        for websocket in ("wss://ws.attacker.example.com", None):
            moved = client.patch(
                f"/api/v1/providers/{provider_id}", json={"config": {"websocketUrl": websocket}}
            )
            assert (moved.status_code, moved.json()) == (
                400,
                {
                    "error": "invalid_argument",
                    "message": "config.apiKey: must be sent again when config.websocketUrl changes",
                },
            ), websocket
        both = client.patch(
            f"/api/v1/providers/{provider_id}",
            json={"config": {"websocketUrl": "wss://ws2.example.com", "baseUrl": "https://kz.example.com"}},
        )
        assert both.json()["message"] == (
            "config.apiKey: must be sent again when config.baseUrl and config.websocketUrl changes"
        )
        assert client.get(f"/api/v1/providers/{provider_id}").json() == before
        assert client.post(f"/api/v1/providers/{provider_id}/test").json() == {"ok": True}

        moved = client.patch(
            f"/api/v1/providers/{provider_id}",
            json={"config": {"websocketUrl": "wss://ws2.example.com", "apiKey": fake.api_key}},
        )
        assert moved.json() == {"ok": True}
        got = client.get(f"/api/v1/providers/{provider_id}").json()
        assert got["config"]["websocketUrl"] == "wss://ws2.example.com"
        assert client.post(f"/api/v1/providers/{provider_id}/test").json() == {"ok": True}
