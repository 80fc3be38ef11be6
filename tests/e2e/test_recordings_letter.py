"""The recordings API to the letter of the docs it mirrors: integers are JSON numbers,
processingStatus says "completed", scores are 0-100, ties sort by callAt desc with nulls
last, and search covers the documented columns. Over REST and gRPC, on both databases."""

from __future__ import annotations

import json
from typing import Any

import grpc
import httpx
import pytest
from callvault.v1 import recordings_pb2 as pb
from callvault.v1 import recordings_pb2_grpc
from sqlalchemy import update
from sqlmodel import col

from service.storage.models import Recording
from tests.e2e.test_recordings_api import register, upload
from tests.support.server import RunningServer

TOO_BIG = 2**53 + 1


def listed(client: httpx.Client, **params: Any) -> list[str]:
    response = client.get("/api/v1/recordings", params=params)
    assert response.status_code == 200, response.text
    return [item["dataId"] for item in response.json()["items"]]


def refused(response: httpx.Response, field: str) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith(f"{field}:"), response.json()


def test_integers_are_json_numbers_and_whole_scores_have_no_fraction(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        whole = register(client, dataId="whole", score=86, durationSeconds=125)
        register(client, dataId="half", score=87.5, durationSeconds=2.5)
        stored = upload(client, whole["id"], b"RIFF-audio")
        assert stored.status_code == 200, stored.text
        assert '"size":"' not in stored.text.replace(" ", "") and stored.json()["size"] == 10

        page = client.get("/api/v1/recordings", params={"limit": 5, "offset": 0})
        body = page.json()
        for name, value in (("total", 2), ("limit", 5), ("offset", 0)):
            assert type(body[name]) is int and body[name] == value, name
        items = {i["dataId"]: i for i in body["items"]}
        assert type(items["whole"]["size"]) is int and items["whole"]["size"] == 10
        assert type(items["whole"]["score"]) is int and items["whole"]["score"] == 86
        assert type(items["whole"]["durationSeconds"]) is int and items["whole"]["durationSeconds"] == 125
        assert items["half"]["score"] == 87.5 and items["half"]["durationSeconds"] == 2.5
        assert "86.0" not in page.text and '"total":"' not in page.text.replace(" ", "")

        one = client.get(f"/api/v1/recordings/{whole['id']}")
        assert json.loads(one.text)["score"] == 86 and type(one.json()["score"]) is int

        agents = client.get("/api/v1/recordings/agents").json()
        assert type(agents["total"]) is int


def test_openapi_types_int64_as_integer(server: RunningServer) -> None:
    with server.http() as client:
        document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    total = schemas["callvault.v1.ListRecordingsResponse"]["properties"]["total"]
    assert (total["type"], total["format"], total["maximum"]) == ("integer", "int64", 2**53)
    size = schemas["callvault.v1.Recording"]["properties"]["size"]
    assert size["type"] == "integer"
    job = schemas["callvault.v1.SyncJob"]["properties"]
    assert {job[name]["type"] for name in ("callsSeen", "recordingsStored", "bytesStored", "failures")} == {
        "integer"
    }


def test_integers_beyond_two_to_the_53_are_refused(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        rec = register(client)
        upload(client, rec["id"], b"RIFF-audio")
        audio = f"/api/v1/recordings/{rec['id']}/audio"
        refused(client.get(audio, params={"offset": TOO_BIG}), "offset")
        refused(client.get(audio, params={"length": str(TOO_BIG)}), "length")
        refused(client.get(audio, params={"offset": -TOO_BIG}), "offset")
        # 2^53 itself is a valid integer: past the audio's end, so a 416, not a 400.
        assert client.get(audio, params={"offset": 2**53}).status_code == 416
        refused(client.get("/api/v1/recordings", params={"limit": TOO_BIG}), "limit")
        refused(client.get("/api/v1/recordings", params={"offset": TOO_BIG}), "offset")


@pytest.mark.parametrize("score", [-1, -0.5, 100.5, 101, 1e300])
def test_score_out_of_range_is_refused_on_create(server: RunningServer, score: float) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        body = {"dataId": "s", "callAt": "2026-05-20T08:14:00+07:00", "direction": "in", "score": score}
        refused(client.post("/api/v1/recordings", json=body), "score")
        assert client.get("/api/v1/recordings").json()["total"] == 0


def test_score_bounds_are_accepted_and_grpc_refuses_out_of_range(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        assert register(client, dataId="low", score=0)["created"] is True
        assert register(client, dataId="high", score=100)["created"] is True
    md = [("authorization", f"Bearer {tenant.business_key}")]
    with server.channel() as channel:
        stub = recordings_pb2_grpc.RecordingServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.CreateRecording(
                pb.CreateRecordingRequest(
                    data_id="g", call_at="2026-05-20T01:14:00Z", direction="in", score=100.5
                ),
                metadata=md,
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "score" in (raised.value.details() or "")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"scoreMin": "50.5"}, "scoreMin"),
        ({"scoreMin": "-1"}, "scoreMin"),
        ({"scoreMax": "101"}, "scoreMax"),
        ({"scoreMax": "NaN"}, "scoreMax"),
        ({"scoreMin": "many"}, "scoreMin"),
    ],
)
def test_score_min_and_max_are_whole_numbers_0_to_100(
    server: RunningServer, params: dict[str, str], field: str
) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        refused(client.get("/api/v1/recordings", params=params), field)
        assert (
            client.get("/api/v1/recordings", params={"scoreMin": "0", "scoreMax": "100"}).status_code == 200
        )
    md = [("authorization", f"Bearer {tenant.business_key}")]
    with server.channel() as channel:
        stub = recordings_pb2_grpc.RecordingServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ListRecordings(pb.ListRecordingsRequest(score_min=0.5), metadata=md)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_stored_audio_is_completed_on_both_transports(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        rec = register(client)
        assert rec["processingStatus"] == "pending"
        assert upload(client, rec["id"], b"RIFF-audio").json()["processingStatus"] == "completed"
        assert client.get(f"/api/v1/recordings/{rec['id']}").json()["processingStatus"] == "completed"
        assert [i["processingStatus"] for i in client.get("/api/v1/recordings").json()["items"]] == [
            "completed"
        ]
        assert client.get(f"/api/v1/recordings/{rec['id']}/audio").content == b"RIFF-audio"
    md = [("authorization", f"Bearer {tenant.business_key}")]
    with server.channel() as channel:
        stub = recordings_pb2_grpc.RecordingServiceStub(channel)
        assert (
            stub.GetRecording(pb.GetRecordingRequest(id=rec["id"]), metadata=md).processing_status
            == "completed"
        )
        page = stub.ListRecordings(pb.ListRecordingsRequest(), metadata=md)
        assert [r.processing_status for r in page.items] == ["completed"]


# Registered in this order, so creation order runs against callAt order: a tie broken on
# creation (newest first) comes out oldest call first.
TIES = [
    ("p", "2026-05-05T09:00:00Z", 50, 10),
    ("q", "2026-05-04T09:00:00Z", None, 10),
    ("r", "2026-05-03T09:00:00Z", 50, 10),
    ("s", "2026-05-02T09:00:00Z", None, 20),
    ("t", "2026-05-01T09:00:00Z", 50, 10),
    ("u", "2026-05-06T09:00:00Z", 20, 5),
]


def seed_ties(server: RunningServer) -> str:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        for data_id, call_at, score, duration in TIES:
            extra = {} if score is None else {"score": score}
            register(client, dataId=data_id, callAt=call_at, durationSeconds=duration, **extra)
    return tenant.business_key


def test_ties_sort_by_call_at_desc_with_nulls_last_both_ways(server: RunningServer) -> None:
    key = seed_ties(server)
    with server.http(key) as client:
        assert listed(client) == ["u", "p", "q", "r", "s", "t"]
        assert listed(client, sortDir="asc") == ["t", "s", "r", "q", "p", "u"]
        assert listed(client, sortBy="score") == ["p", "r", "t", "u", "q", "s"]
        assert listed(client, sortBy="score", sortDir="asc") == ["u", "p", "r", "t", "q", "s"]
        assert listed(client, sortBy="duration") == ["s", "p", "q", "r", "t", "u"]
        assert listed(client, sortBy="duration", sortDir="asc") == ["u", "p", "q", "r", "t", "s"]
        for params in ({"sortBy": "score"}, {"sortBy": "score", "sortDir": "asc"}, {"sortBy": "duration"}):
            whole = listed(client, **params)
            paged = [d for offset in range(0, 6, 2) for d in listed(client, limit=2, offset=offset, **params)]
            assert paged == whole, params
    md = [("authorization", f"Bearer {key}")]
    with server.channel() as channel:
        stub = recordings_pb2_grpc.RecordingServiceStub(channel)
        page = stub.ListRecordings(pb.ListRecordingsRequest(sort_by="score", sort_dir="asc"), metadata=md)
        assert [r.data_id for r in page.items] == ["u", "p", "r", "t", "q", "s"]


async def only_in_callcenter_number(server: RunningServer, recording_id: str) -> None:
    """An upload copies callcenterNumber into caller or callee; clear those so that only
    the callcenterNumber column holds it, as the search must find it there."""
    async with server.service.db.session() as session:
        await session.exec(
            update(Recording).where(col(Recording.id) == recording_id).values(caller="", callee="")
        )
        await session.commit()


def test_search_covers_the_documented_columns(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        number = register(client, dataId="by-number", customerPhone="0811111111", callcenterNumber="7788")
        server.call(only_in_callcenter_number(server, number["id"]))
        register(client, dataId="by-name", customerPhone="0822222222", callcenterName="Khun Somchai")
        register(client, dataId="DATA-42", customerPhone="0833333333")
        assert listed(client, search="7788") == ["by-number"]
        assert listed(client, search="somchai") == ["by-name"]
        assert listed(client, search="data-42") == ["DATA-42"]
        assert listed(client, search="0822222222") == ["by-name"]
        assert listed(client, search="+66833333333") == ["DATA-42"]
    md = [("authorization", f"Bearer {tenant.business_key}")]
    with server.channel() as channel:
        stub = recordings_pb2_grpc.RecordingServiceStub(channel)
        page = stub.ListRecordings(pb.ListRecordingsRequest(search="778"), metadata=md)
        assert [r.data_id for r in page.items] == ["by-number"]
