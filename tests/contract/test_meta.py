"""The docs' /docs/meta and /docs/getting-started examples (whoami), against the real server."""

from __future__ import annotations

from service.auth import Scope
from tests.contract.shapes import ARRAY, OBJECT, STRING, assert_shape, client, error_code
from tests.support.server import RunningServer

BUSINESS_REF = {"id": STRING, "name": STRING, "slug": STRING}


def test_whoami_with_a_business_key(server: RunningServer) -> None:
    # /docs/meta, "Business key":
    #   curl https://phone.mcloud.co.th/api/v1/meta/whoami -H "Authorization: Bearer crk_..."
    #   {"level": "business", "business": {"id": "0192...", "name": "Acme Co", "slug": "acme"},
    #    "scopes": ["view_recording_all", "manage_recording_review"]}
    tenant = server.new_tenant("Acme Co", scopes=(Scope.VIEW_RECORDING_ALL, Scope.MANAGE_RECORDING_REVIEW))
    with client(server, tenant.business_key) as api:
        response = api.get("/meta/whoami")
    # /docs/getting-started: "ถ้าได้ 200 พร้อม business + scopes กลับมา" (200 with business + scopes).
    assert response.status_code == 200
    body = response.json()
    assert_shape(body, {"level": STRING, "business": OBJECT, "scopes": ARRAY})
    assert body["level"] == "business"
    assert_shape(body["business"], BUSINESS_REF)
    assert body["business"]["name"] == "Acme Co"
    assert sorted(body["scopes"]) == ["manage_recording_review", "view_recording_all"]
    assert "businesses" not in body and "userId" not in body


def test_whoami_with_an_account_key(server: RunningServer) -> None:
    # /docs/meta, "Account key" (called without X-Business-Id):
    #   {"level": "account", "userId": "0192...", "scopes": ["manage_all"],
    #    "businesses": [{"id": "0192...", "name": "Acme Co", "slug": "acme"}, ...]}
    tenant = server.new_tenant("Acme Co")
    with client(server, tenant.account_key) as api:
        response = api.get("/meta/whoami")
    assert response.status_code == 200
    body = response.json()
    assert_shape(body, {"level": STRING, "userId": STRING, "scopes": ARRAY, "businesses": ARRAY})
    assert body["level"] == "account"
    assert body["scopes"] == ["manage_all"]
    assert [b["id"] for b in body["businesses"]] == [tenant.business_id]
    assert_shape(body["businesses"][0], BUSINESS_REF)


def test_an_account_key_must_name_the_business(server: RunningServer) -> None:
    # /docs/recordings: "Account key: ทุก request ด้านล่างต้องส่ง X-Business-Id: <business id>
    # ... (ถ้าไม่ส่งจะได้ 400 business_required)" (without it: 400 business_required).
    tenant = server.new_tenant("Acme Co")
    with client(server, tenant.account_key) as api:
        refused = api.get("/recordings")
    with client(server, tenant.account_key, business=tenant.business_id) as api:
        allowed = api.get("/recordings")
    assert refused.status_code == 400
    assert error_code(refused) == "business_required"
    assert allowed.status_code == 200
