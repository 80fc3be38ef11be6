"""Seed 000's /docs/providers examples, against the real server."""

from __future__ import annotations

from typing import Any

from tests.contract.shapes import ARRAY, BOOLEAN, STRING, assert_shape, client, error_code
from tests.support.server import RunningServer

# POST /providers, the docs' body (baseUrl moved to a closed loopback port: the test
# server must not reach the internet; the docs' host is pbx.example.com).
CREATE: dict[str, Any] = {
    "kind": "threecx",
    "name": "Main PBX",
    "config": {"baseUrl": "http://127.0.0.1:9", "username": "apiuser", "password": "s3cret"},
    "isActive": True,
}


def test_the_documented_provider_calls(server: RunningServer) -> None:
    tenant = server.new_tenant("Providers contract")
    with client(server, tenant.business_key) as api:
        # curl -X POST .../api/v1/providers -d '{"kind": "threecx", "name": "Main PBX", ...}'
        #   { "id": "0192f0..." }
        created = api.post("/providers", json=CREATE)
        assert created.status_code == 200, created.text
        assert_shape(created.json(), {"id": STRING})
        provider_id = created.json()["id"]

        # curl .../api/v1/providers
        #   {"items": [{"id": "0192f0...", "kind": "threecx", "name": "Main PBX", "isActive": true,
        #    "preview": "apiuser @ pbx.example.com", "createdAt": "2026-05-01T00:00:00Z"}]}
        listed = api.get("/providers")
        assert listed.status_code == 200
        assert_shape(listed.json(), {"items": ARRAY})
        (item,) = listed.json()["items"]
        assert_shape(
            item,
            {
                "id": STRING,
                "kind": STRING,
                "name": STRING,
                "isActive": BOOLEAN,
                "preview": STRING,
                "createdAt": STRING,
            },
        )
        assert (item["id"], item["kind"], item["name"], item["isActive"]) == (
            provider_id,
            "threecx",
            "Main PBX",
            True,
        )
        assert "s3cret" not in listed.text

        # GET /providers/{id}: "จะไม่คืน password มีแค่ baseUrl กับ username" (no password)
        #   {"id", "kind": "threecx", "name": "Main PBX", "isActive": true,
        #    "baseUrl": "https://pbx.example.com", "username": "apiuser"}
        got = api.get(f"/providers/{provider_id}")
        assert got.status_code == 200
        assert_shape(
            got.json(),
            {
                "id": STRING,
                "kind": STRING,
                "name": STRING,
                "isActive": BOOLEAN,
                "baseUrl": STRING,
                "username": STRING,
            },
        )
        assert got.json()["username"] == "apiuser"
        assert "password" not in got.json() and "s3cret" not in got.text

        # curl -X PATCH .../providers/$ID -d '{"config":{"password":"r0tated"}}'  ->  { "ok": true }
        patched = api.patch(f"/providers/{provider_id}", json={"config": {"password": "r0tated"}})
        assert patched.status_code == 200
        assert patched.json() == {"ok": True}
        assert api.get(f"/providers/{provider_id}").json()["baseUrl"] == "http://127.0.0.1:9"  # merged

        # POST /providers/{id}/test: "คืน 200 ทั้งสองกรณี" (200 either way; failure in the body)
        #   { "ok": false, "error": "authentication failed" }
        tested = api.post(f"/providers/{provider_id}/test")
        assert tested.status_code == 200
        assert_shape(tested.json(), {"ok": BOOLEAN, "error": STRING})
        assert tested.json()["ok"] is False

        # DELETE /providers/{id}  ->  { "ok": true }
        deleted = api.delete(f"/providers/{provider_id}")
        assert deleted.status_code == 200
        assert deleted.json() == {"ok": True}

        # GET /providers/{id}, "provider_not_found | 404 | ไม่มี provider นี้ใน business นี้"
        gone = api.get(f"/providers/{provider_id}")
        assert gone.status_code == 404
        assert error_code(gone) == "provider_not_found"
