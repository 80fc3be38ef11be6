"""The docs' /docs/collections calls, against the real server. The page shows the create
body only; the answers' shapes are callvault's (README, "Collections")."""

from __future__ import annotations

from tests.contract.shapes import ARRAY, STRING, assert_shape, client, error_code
from tests.support.server import RunningServer


def test_the_documented_collection_calls(server: RunningServer) -> None:
    tenant = server.new_tenant("Collections contract")
    with client(server, tenant.business_key) as api:
        recordings = []
        for n in range(2):
            body = {"dataId": f"col-{n}", "callAt": "2026-05-20T08:14:00+07:00", "direction": "in"}
            created = api.post("/recordings", json=body)
            assert created.status_code == 200
            recordings.append(created.json()["id"])

        # curl -X POST https://phone.mcloud.co.th/api/v1/collections
        #   -d '{"name":"QA Q2","color":"#D6FF3A"}'   (name required, description, color #RRGGBB)
        made = api.post("/collections", json={"name": "QA Q2", "color": "#D6FF3A"})
        assert made.status_code == 200, made.text
        assert_shape(made.json(), {"id": STRING, "name": STRING, "color": STRING})
        collection = made.json()["id"]
        assert api.post("/collections", json={"color": "#D6FF3A"}).status_code == 400  # name required

        # GET /collections: "List collection"
        listed = api.get("/collections")
        assert listed.status_code == 200
        assert [c["id"] for c in listed.json()["items"]] == [collection]

        # POST /collections/{id}/items: callRecordingIds array<uuid>, required (1-1000)
        added = api.post(f"/collections/{collection}/items", json={"callRecordingIds": recordings})
        assert added.status_code == 200, added.text
        assert api.post(f"/collections/{collection}/items", json={"callRecordingIds": []}).status_code == 400

        # GET /collections/{id}: "ดึง collection + items"
        got = api.get(f"/collections/{collection}")
        assert got.status_code == 200
        assert_shape(got.json(), {"id": STRING, "name": STRING, "items": ARRAY})
        assert len(got.json()["items"]) == 2

        # PATCH /collections/{id}: "แก้ name / description / color"
        patched = api.patch(f"/collections/{collection}", json={"name": "QA Q3", "description": "d"})
        assert patched.status_code == 200
        assert api.get(f"/collections/{collection}").json()["name"] == "QA Q3"

        # DELETE /collections/{id}/items: "?callRecordingId=A&callRecordingId=B"
        removed = api.delete(f"/collections/{collection}/items", params={"callRecordingId": recordings})
        assert removed.status_code == 200
        assert api.get(f"/collections/{collection}").json()["items"] == []

        # DELETE /collections/{id}: "item rows ถูก cascade, recording ยังอยู่" (recordings kept)
        assert (
            api.post(
                f"/collections/{collection}/items", json={"callRecordingIds": recordings[:1]}
            ).status_code
            == 200
        )
        deleted = api.delete(f"/collections/{collection}")
        assert deleted.status_code == 200
        gone = api.get(f"/collections/{collection}")
        assert gone.status_code == 404
        assert error_code(gone) == "collection_not_found"
        assert api.get(f"/recordings/{recordings[0]}").status_code == 200
