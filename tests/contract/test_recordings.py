"""The docs' /docs/recordings and /docs/getting-started examples (list, create with a
presigned upload, upload, get, audio), against the real server."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.contract.shapes import ARRAY, INTEGER, NUMBER, STRING, assert_shape, client
from tests.support.server import RunningServer

# POST /recordings, the docs' body:
#   curl -X POST https://phone.mcloud.co.th/api/v1/recordings -H "Content-Type: application/json"
#     -d '{"dataId": "rec_2026_05_20_001", "callAt": "2026-05-20T08:14:00+07:00", "direction": "in",
#          "audioPresignedUploadUrl": true, ...}'
CREATE: dict[str, Any] = {
    "dataId": "rec_2026_05_20_001",
    "callAt": "2026-05-20T08:14:00+07:00",
    "direction": "in",
    "customerPhone": "+66812345678",
    "tag": "normal",
    "score": 86,
    "audioPresignedUploadUrl": True,
}
# GET /recordings, the docs' item:
#   {"id": "0192b9...", "dataId": "rec_2026_05_20_001", "callAt": "2026-05-20T08:14:00+07:00",
#    "direction": "in", "customerPhone": "+66812345678", "tag": "normal", "score": 86,
#    "processingStatus": "completed", "audioUrl": "/api/recording/audio/0192b9...", ...}
ITEM = {
    "id": STRING,
    "dataId": STRING,
    "callAt": STRING,
    "direction": STRING,
    "customerPhone": STRING,
    "tag": STRING,
    "score": NUMBER,
    "processingStatus": STRING,
    "audioUrl": STRING,
}
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 8


def _absolute_urls(body: dict[str, Any]) -> list[str]:
    return [v for v in body.values() if isinstance(v, str) and urlsplit(v).scheme in ("http", "https")]


def _ingest(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    """Getting started, steps 2 and 3: the metadata with audioPresignedUploadUrl: true, then
    a PUT of the audio to the presigned URL ("PUT ไฟล์เสียงขึ้น storage โดยตรง": directly,
    so with no API key)."""
    created = api.post("/recordings", json={**CREATE, **fields})
    assert created.status_code == 200, created.text
    body: dict[str, Any] = created.json()
    assert_shape(body, {"id": STRING})
    (url,) = _absolute_urls(body)
    with httpx.Client(timeout=30) as anonymous:
        put = anonymous.put(url, content=WAV, headers={"Content-Type": "audio/wav"})
    assert put.status_code == 200, put.text
    return body


def test_create_is_idempotent_on_data_id_and_answers_a_presigned_url(server: RunningServer) -> None:
    # "Ingest metadata + presigned upload (optional) — idempotent ด้วย dataId"
    tenant = server.new_tenant("Recordings contract create")
    with client(server, tenant.business_key) as api:
        first = _ingest(api)
        again = api.post("/recordings", json=CREATE)
        assert again.status_code == 200
        assert again.json()["id"] == first["id"]
        # dataId, callAt and direction are "required".
        for field in ("dataId", "callAt", "direction"):
            missing = api.post("/recordings", json={k: v for k, v in CREATE.items() if k != field})
            assert missing.status_code == 400, (field, missing.text)


def test_list_recordings_as_documented(server: RunningServer) -> None:
    # curl "https://phone.mcloud.co.th/api/v1/recordings?limit=10&direction=in"
    #   {"items": [...], "total": 1284, "limit": 10, "offset": 0}
    tenant = server.new_tenant("Recordings contract list")
    with client(server, tenant.business_key) as api:
        recording = _ingest(api)
        _ingest(api, dataId="rec_2026_05_20_002", direction="out")
        response = api.get("/recordings", params={"limit": 10, "direction": "in"})
    assert response.status_code == 200
    body = response.json()
    assert_shape(body, {"items": ARRAY, "total": INTEGER, "limit": INTEGER, "offset": INTEGER})
    assert (body["total"], body["limit"], body["offset"]) == (1, 10, 0)
    (item,) = body["items"]
    assert_shape(item, ITEM)
    assert item["id"] == recording["id"]
    assert (item["dataId"], item["callAt"], item["direction"]) == (
        "rec_2026_05_20_001",
        "2026-05-20T08:14:00+07:00",
        "in",
    )
    assert (item["customerPhone"], item["tag"]) == ("+66812345678", "normal")
    assert item["score"] == 86 and isinstance(item["score"], int)  # shown as 86, not 86.0
    assert item["processingStatus"] == "completed"


def test_get_a_recording_and_its_audio(server: RunningServer) -> None:
    # The item's audioUrl is where the audio is fetched ("audioUrl": "/api/recording/audio/...").
    tenant = server.new_tenant("Recordings contract audio")
    with client(server, tenant.business_key) as api:
        recording = _ingest(api)
        got = api.get(f"/recordings/{recording['id']}")
        assert got.status_code == 200
        assert_shape(got.json(), ITEM)
        audio = api.get(f"{server.http_base}{got.json()['audioUrl']}")
    assert audio.status_code == 200
    assert audio.headers["content-type"].startswith("audio/")
    assert audio.content == WAV


def test_the_documented_filters_and_sorting(server: RunningServer) -> None:
    # | tag | normal | short | wrong_or_spam | no_answer | other | none | none = ยังไม่ติด tag |
    # | scoreMin / scoreMax | int 0-100 | เฉพาะ row ที่มี score |
    # | search | string | ilike ครอบ dataId, customerPhone, customerPhoneNormalized,
    #   callcenterNumber, callcenterName |
    # | sortDir | asc | desc | default desc; null อยู่ท้ายสุด, tiebreak callAt desc |
    # | agentKey | ... COALESCE(callcenterNumber, callcenterName) ...
    #   เช่น ?agentKey=%2B66804972699&agentKey=Somchai |
    tenant = server.new_tenant("Recordings contract filters")
    rows: list[dict[str, Any]] = [
        {
            "dataId": "f-1",
            "callAt": "2026-05-20T08:00:00+07:00",
            "score": 50,
            "callcenterNumber": "+66804972699",
        },
        {"dataId": "f-2", "callAt": "2026-05-20T09:00:00+07:00", "score": 50, "callcenterName": "Somchai"},
        {"dataId": "f-3", "callAt": "2026-05-20T10:00:00+07:00", "tag": None, "callcenterName": "Other"},
    ]
    with client(server, tenant.business_key) as api:
        for row in rows:
            body = {**CREATE, "audioPresignedUploadUrl": False, "tag": "short", **row}
            if "score" not in row:
                body.pop("score")
            body = {k: v for k, v in body.items() if v is not None}
            assert api.post("/recordings", json=body).status_code == 200

        def ids(**params: Any) -> list[str]:
            response = api.get("/recordings", params=params)
            assert response.status_code == 200, response.text
            return [item["dataId"] for item in response.json()["items"]]

        assert ids(tag="none") == ["f-3"]
        assert ids(scoreMin=40, scoreMax=60) == ["f-2", "f-1"]  # rows with a score only
        assert ids(search="972699") == ["f-1"]  # callcenterNumber is searched
        assert ids(agentKey=["+66804972699", "Somchai"]) == ["f-2", "f-1"]
        # Equal scores tie on callAt desc; the row with no score is last both ways.
        assert ids(sortBy="score", sortDir="desc") == ["f-2", "f-1", "f-3"]
        assert ids(sortBy="score", sortDir="asc") == ["f-2", "f-1", "f-3"]
        assert api.get("/recordings", params={"scoreMin": 101}).status_code == 400
        assert api.get("/recordings", params={"limit": 201}).status_code == 400
